"""`python -m app`: validate the settings, check that Kafka accepts the client, then serve
the API with uvicorn, bounded as `app.server` describes (`SERVER__*`).

Before serving, the soft descriptor limit (RLIMIT_NOFILE) is raised to `SERVER__NOFILE` or to
the hard limit, and logged; worker processes inherit it, and `SERVER__MAX_CONNECTIONS` is
kept under it.

Exit status: 2 for invalid settings, 1 when Kafka refuses the client (authentication, TLS
verification), each with a one-line message on stderr; 3 when the application fails to start
(its lifespan raised, in any worker process: e.g. the store cannot be opened), after uvicorn
has logged why. Brokers that do not answer do not stop the start-up: the API starts degraded
and connects in the background.

With `API__WORKERS=N` (N > 1) uvicorn runs N worker processes on one listening socket. Each
builds its own application from `app.main:create_app`: it loads the settings itself, and its
lifespan starts and stops its own producers (one per policy), relay, reply reader and rate
limiter. Metrics then run in prometheus-client's multiprocess mode, so that `GET /metrics`,
whichever worker answers it, reports the sum over all of them. SIGTERM to this process stops
the workers gracefully (in-flight requests finish, then each lifespan flushes and closes its
producers) and it exits with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from app import logs, metrics, server
from app.config import env_names
from app.supervisor import WorkerSupervisor
from kafka_events import AccessRefused, access

logger = logging.getLogger("app.server")


def main() -> int:
    settings = logs.start("api")  # exits with status 2 when the settings are invalid
    # The lifespan checks too, but a refusal there reaches uvicorn, which logs a traceback.
    try:
        asyncio.run(access.check(settings.kafka, client_id=settings.kafka.producer.client_id))
    except AccessRefused as error:
        print(env_names(str(error), ("kafka",)), file=sys.stderr)
        return 1
    # several processes: metrics in multiprocess mode, in a private directory unless one is given
    private = metrics.multiprocess_dir() is None
    metrics_dir = metrics.enter_multiprocess_mode() if settings.api.workers > 1 else None
    before, nofile, hard = server.raise_nofile_limit(settings.server.nofile)
    limits = server.edge_limits(settings.server, nofile)
    logger.info(
        "descriptor limit %d (was %d, hard limit %d); at most %d connections per process",
        nofile,
        before,
        hard,
        limits.max_connections,
    )
    config = server.EdgeConfig(
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
        timeout_keep_alive=settings.server.keep_alive_timeout_s,
        # a worker process has this long to import the app and answer the supervisor's pings
        # (uvicorn's 5 s killed workers that started slowly on a busy machine)
        timeout_worker_healthcheck=30,
        # httptools, its head bounded in time, size and field count by app.server
        limits=limits,
    )
    try:
        return _serve(config)
    finally:
        if metrics_dir is not None and private:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(config: uvicorn.Config) -> int:
    """Serve until stopped; the exit status."""
    # What uvicorn.run does, keeping hold of the server or supervisor to tell a failed start.
    if config.workers == 1:
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        return 0 if server.started else STARTUP_FAILURE
    # When a worker fails to start (its lifespan raised), the supervisor stops them all; it
    # notices a dead worker at its next ping (`app.supervisor`).
    supervisor = WorkerSupervisor(config, sockets=[config.bind_socket()])
    with contextlib.suppress(KeyboardInterrupt):
        supervisor.run()
    failed = any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


if __name__ == "__main__":
    sys.exit(main())
