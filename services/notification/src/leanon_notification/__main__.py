"""python -m leanon_notification: run the notification service."""

from leanon_notification.app import create_app
from leanon_notification.settings import NotificationSettings
from leanon_shared.runtime import serve
from leanon_shared.settings import SettingsError
from leanon_shared.telemetry import setup_logging


def main() -> None:
    settings = NotificationSettings()
    setup_logging(settings.log_level)
    try:
        app = create_app(settings)
    except SettingsError as exc:
        raise SystemExit(f"leanon-notification: {exc}") from exc
    serve(app, settings.service_host, settings.notification_port)


if __name__ == "__main__":
    main()
