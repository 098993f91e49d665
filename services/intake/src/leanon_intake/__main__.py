"""python -m leanon_intake: run the intake service."""

from fastapi import FastAPI

from leanon_intake.app import create_app
from leanon_intake.settings import IntakeSettings
from leanon_shared.runtime import serve, tune_gc
from leanon_shared.settings import SettingsError
from leanon_shared.telemetry import setup_logging


def worker_app() -> FastAPI:
    """Each worker process's app, when LEANON_INTAKE_WORKERS > 1."""
    settings = IntakeSettings()
    setup_logging(settings.log_level)
    tune_gc()
    return create_app(settings)


def main() -> None:
    settings = IntakeSettings()
    setup_logging(settings.log_level)
    try:
        app = create_app(settings)  # also checks the settings before any worker starts
    except SettingsError as exc:
        raise SystemExit(f"leanon-intake: {exc}") from exc
    serve(
        app,
        settings.service_host,
        settings.intake_port,
        workers=settings.intake_workers,
        factory="leanon_intake.__main__:worker_app",
    )


if __name__ == "__main__":
    main()
