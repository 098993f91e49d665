"""python -m leanon_matching: run the matching service."""

from leanon_matching.app import create_app
from leanon_matching.settings import MatchingSettings
from leanon_shared.runtime import serve
from leanon_shared.telemetry import setup_logging


def main() -> None:
    settings = MatchingSettings()
    setup_logging(settings.log_level)
    serve(create_app(settings), settings.service_host, settings.matching_port)


if __name__ == "__main__":
    main()
