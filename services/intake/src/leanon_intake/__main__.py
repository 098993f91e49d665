"""python -m leanon_intake: run the intake service."""

from leanon_intake.app import create_app
from leanon_intake.settings import IntakeSettings
from leanon_shared.runtime import serve
from leanon_shared.settings import SettingsError
from leanon_shared.telemetry import setup_logging


def main() -> None:
    settings = IntakeSettings()
    setup_logging(settings.log_level)
    try:
        app = create_app(settings)
    except SettingsError as exc:
        raise SystemExit(f"leanon-intake: {exc}") from exc
    serve(app, settings.service_host, settings.intake_port)


if __name__ == "__main__":
    main()
