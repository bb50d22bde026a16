"""`python -m app.worker`: validate the settings, then send verification emails until stopped.

SIGTERM or SIGINT stops it gracefully (the record in hand finishes, its offset is committed,
the worker leaves its consumer group); exit status 0. Status 2: invalid settings; 1: it could
not start (Kafka refused it, or did not answer within WORKER__START_TIMEOUT_MS), or its loop
failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from sqlalchemy.exc import SQLAlchemyError

from app import logs, metrics
from app.config import Settings, env_names
from app.worker.consumer import VerificationEmailWorker
from kafka_events import AccessRefused

logger = logging.getLogger("app.worker")


async def run(settings: Settings) -> int:
    """Run a worker until SIGTERM/SIGINT; returns the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as serving:
        if settings.metrics.worker_port:
            try:
                stop_serving = metrics.serve(
                    settings.metrics.worker_host, settings.metrics.worker_port
                )
                serving.push_async_callback(asyncio.to_thread, stop_serving)  # joins a thread
            except OSError as error:
                logger.error("metrics cannot be served: %s", error)
                return 1
        return await _run_worker(VerificationEmailWorker(settings), stop)


async def _run_worker(worker: VerificationEmailWorker, stop: asyncio.Event) -> int:
    try:
        await worker.start()
    except AccessRefused as error:
        logger.error("the worker could not start: %s", env_names(str(error), ("kafka",)))
        return 1
    except (TimeoutError, KafkaError, SQLAlchemyError, OSError) as error:
        logger.error("the worker could not start: %r", error)
        return 1
    stopped = asyncio.create_task(stop.wait())
    finished = asyncio.create_task(worker.wait())
    await asyncio.wait({stopped, finished}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed = finished.done() and not stopped.done()
    if failed:
        logger.error("the worker loop ended unexpectedly: %r", finished.exception())
    else:
        logger.info("stop requested")
        finished.cancel()
    await worker.stop()
    return 1 if failed else 0


def main() -> int:
    settings = logs.start("worker")  # exits with status 2 when the settings are invalid
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
