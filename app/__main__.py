"""`python -m app`: validate the settings, then serve the API with uvicorn.

With `API__WORKERS=N` (N > 1) uvicorn runs N worker processes on one listening socket. Each
builds its own application from `app.main:create_app`: it loads the settings itself, and its
lifespan starts and stops its own producers (one per policy), relay, reply reader and rate
limiter. SIGTERM to this process stops the workers gracefully (in-flight requests finish, then
each lifespan flushes and closes its producers) and it exits with status 0.
"""

from __future__ import annotations

import sys

import uvicorn

from app import logs


def main() -> int:
    settings = logs.start("api")  # exits with status 2 when the settings are invalid
    uvicorn.run(
        # an import string: each worker process builds its own app (and its own producers)
        "app.main:create_app",
        factory=True,
        workers=settings.api.workers,
        host=settings.api.host,
        port=settings.api.port,
        # applied by uvicorn in this process and in each worker process it spawns
        log_config=logs.logging_config(settings, "api"),
        # in-flight requests finish within their policy's deadline; then the lifespan stops
        timeout_graceful_shutdown=settings.kafka.policies.longest_deadline_ms() // 1000 + 5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
