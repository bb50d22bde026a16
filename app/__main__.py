"""`python -m app`: validate the settings, then serve the API with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from app import logs
from app.main import create_app


def main() -> int:
    settings = logs.start("api")  # exits with status 2 when the settings are invalid
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        # uvicorn's own loggers (start-up, access log, errors) get the same handler and format
        log_config=logs.logging_config(settings, "api"),
        # in-flight requests finish within their policy's deadline; then the lifespan stops
        timeout_graceful_shutdown=settings.kafka.policies.longest_deadline_ms() // 1000 + 5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
