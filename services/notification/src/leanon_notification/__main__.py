"""python -m leanon_notification: run the notification service."""

from starlette.applications import Starlette

from leanon_notification.app import create_app
from leanon_notification.settings import NotificationSettings
from leanon_shared.runtime import serve, tune_gc
from leanon_shared.settings import SettingsError
from leanon_shared.telemetry import setup_logging


def worker_app() -> Starlette:
    """Each worker process's app, when LEANON_NOTIFICATION_WORKERS > 1: each joins the same
    consumer groups, so the partitions of {prefix}events and the retry topics split between
    them."""
    settings = NotificationSettings()
    setup_logging(settings.log_level)
    tune_gc()
    return create_app(settings)


def main() -> None:
    settings = NotificationSettings()
    setup_logging(settings.log_level)
    try:
        app = create_app(settings)  # also checks the settings before any worker starts
    except SettingsError as exc:
        raise SystemExit(f"leanon-notification: {exc}") from exc
    serve(
        app,
        settings.service_host,
        settings.notification_port,
        workers=settings.notification_workers,
        factory="leanon_notification.__main__:worker_app",
    )


if __name__ == "__main__":
    main()
