"""`python -m app`: validate the settings, check that Kafka accepts the client, then serve
the API with uvicorn.

Exit status: 2 for invalid settings, 1 when Kafka refuses the client (authentication, TLS
verification), each with a one-line message on stderr. Brokers that do not answer do not stop
the start-up: the API starts degraded and connects in the background.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn

from app.config import SettingsError, load_settings
from app.kafka import access
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
    # The lifespan checks too, but a refusal there reaches uvicorn, which logs a traceback.
    try:
        asyncio.run(access.check(settings.kafka, client_id=settings.kafka.producer.client_id))
    except access.AccessRefused as error:
        print(error, file=sys.stderr)
        return 1
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
