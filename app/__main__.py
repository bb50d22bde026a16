"""`python -m app`: validate the settings, then serve the API with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from app.config import SettingsError, load_settings
from app.main import create_app


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.api.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.api.log_level,
        log_config=None,
        # in-flight requests finish within their policy's deadline; then the lifespan stops
        timeout_graceful_shutdown=settings.kafka.policies.longest_deadline_ms() // 1000 + 5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
