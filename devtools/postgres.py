"""Run a throwaway PostgreSQL server on 127.0.0.1 for development and tests, without Docker.

Library use::

    from devtools.postgres import PostgresServer

    with PostgresServer(workdir, port=54329) as server:
        url = server.create_database("store")  # postgresql+asyncpg://postgres@127.0.0.1:54329/store

Command line (serves until Ctrl-C)::

    python -m devtools.postgres .postgres --port 54329 --database store

Contract
--------
* Binaries: ``initdb``, ``postgres``, ``pg_isready`` and ``psql`` from ``pg_config --bindir``,
  else the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout), else ``PATH``.
  Debian's ``postgresql`` package has them (``devtools/system-deps.sh`` installs it).
* State lives in ``directory`` only: ``data/`` (the cluster, created by ``initdb`` on first
  start and reused afterwards; its unix socket is there too) and ``postgres.log``.
* Authentication: ``trust``, superuser ``postgres``, no password. The server listens on
  127.0.0.1 only, so only this machine's users reach it: a development server, never a
  production one. ``fsync`` is off (a crashed test server is thrown away, not recovered).
  ``create_role`` adds a login role that must give its password (SCRAM), for tests of code
  that handles a database password.
* PostgreSQL refuses to run as root. Run as root, this tool hands ``directory`` to the OS user
  ``postgres`` (created by Debian's package) or else ``nobody``, and runs ``initdb`` and
  ``postgres`` as that user. Every folder above ``directory`` must then be traversable by it
  (``/tmp/<something>`` is; a 0700 folder of root's is not).
* The server runs in its own session: a Ctrl-C in the terminal reaches this code, not the
  server. ``stop`` asks for PostgreSQL's *fast* shutdown (SIGINT: disconnect clients, write a
  checkpoint; SIGTERM would wait for every client to log out) and SIGKILLs the whole process
  group after a bounded wait.
* Every wait is bounded. Expected failures raise ``PostgresError``; the first line of its
  message is a one-line summary, further lines (if any) are the tail of the server's log.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from devtools.processes import stop_server

__all__ = ["PostgresError", "PostgresServer", "find_bindir"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
REQUIRED = ("initdb", "postgres", "pg_isready", "psql")
INITDB_TIMEOUT_S = 120.0
COMMAND_TIMEOUT_S = 30.0
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, NUL included
_POLL_S = 0.1
_LOG_TAIL_LINES = 30
_DATABASE_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresError(RuntimeError):
    """Expected failure of the PostgreSQL dev tooling (missing binaries, server trouble)."""


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in REQUIRED)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path:
    """The folder holding the PostgreSQL server binaries; PostgresError when there is none."""
    tried: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            output = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=COMMAND_TIMEOUT_S,
            ).stdout.strip()
            if output and _has_server(Path(output)):
                return Path(output)
            tried.append(f"{output} (pg_config --bindir)")
    candidates = sorted(DEBIAN_ROOT.glob("*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if _has_server(candidate):
            return candidate
    tried.append(f"{DEBIAN_ROOT}/*/bin")
    on_path = shutil.which("postgres")
    if on_path is not None and _has_server(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    tried.append("PATH")
    raise PostgresError(
        f"PostgreSQL server binaries ({', '.join(REQUIRED)}) not found in: {'; '.join(tried)}. "
        "Install Debian's `postgresql` package (bash devtools/system-deps.sh does)"
    )


def _os_user(name: str | None) -> pwd.struct_passwd | None:
    """The user to run the server as: None to run as ourselves (we are not root)."""
    if os.geteuid() != 0:
        if name is not None and name != pwd.getpwuid(os.geteuid()).pw_name:
            raise PostgresError(f"running as user {name!r} needs root")
        return None
    for candidate in [name] if name is not None else ["postgres", "nobody"]:
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(candidate)
            if user.pw_uid != 0:
                return user
    raise PostgresError(
        f"PostgreSQL refuses to run as root and no other OS user was found "
        f"(tried {name or 'postgres, nobody'})"
    )


def _clean_env() -> dict[str, str]:
    # PG* variables of the caller (PGHOST, PGDATA...) must not redirect the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC")
    return env


@dataclass(frozen=True)
class _Run:
    """Who runs the server binaries: ourselves (None), or the user root hands them to."""

    user: pwd.struct_passwd | None

    @property
    def uid(self) -> int | None:
        return self.user.pw_uid if self.user is not None else None

    @property
    def gid(self) -> int | None:
        return self.user.pw_gid if self.user is not None else None

    @property
    def groups(self) -> list[int] | None:
        return [] if self.user is not None else None

    def __str__(self) -> str:
        return self.user.pw_name if self.user is not None else pwd.getpwuid(os.geteuid()).pw_name


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1:`port` whose state lives in `directory`.

    ``with PostgresServer(...) as server:`` starts it and stops it; ``start``/``stop`` do the
    same by hand (``stop`` is idempotent).
    """

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        os_user: str | None = None,
        bindir: Path | None = None,
    ) -> None:
        self.directory = directory.resolve()
        self.port = port
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self._bindir = bindir
        self._os_user = os_user
        self._process: subprocess.Popen[bytes] | None = None

    # --- addresses -------------------------------------------------------------------------

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        """SQLAlchemy URL of `database` (trust authentication: no password)."""
        return f"{driver}://{SUPERUSER}@{HOST}:{self.port}/{database}"

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def version(self) -> str:
        """`postgres --version`, e.g. ``postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)``."""
        return self._tool("postgres", ["--version"]).strip()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster if needed, start the server, wait until it accepts connections.

        Bounded by `timeout` seconds (initdb included); on failure the server is stopped again
        and PostgresError says why, with the tail of its log.
        """
        if self.running:
            return
        deadline = time.monotonic() + timeout
        run = _Run(_os_user(self._os_user))
        socket_path = self.data_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_path)) > SOCKET_PATH_MAX:
            raise PostgresError(
                f"unix socket path too long (pick a shorter directory): {socket_path}"
            )
        self._prepare_directory(run)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(run, min(INITDB_TIMEOUT_S, deadline - time.monotonic()))
        command = [
            str(self.bindir / "postgres"),
            "-D", str(self.data_dir),
            "-h", HOST,
            "-p", str(self.port),
            "-k", str(self.data_dir),
            "-F",  # fsync off: a throwaway server
            "-c", "logging_collector=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        log.info("starting PostgreSQL on %s:%d as %s (%s)", HOST, self.port, run, self.data_dir)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=_clean_env(),
                start_new_session=True,
                user=run.uid,
                group=run.gid,
                extra_groups=run.groups,
            )
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop(timeout=5.0)
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), then SIGKILL of the process group after `timeout`."""
        process, self._process = self._process, None
        if process is None:
            return
        # Backends outlive a killed postmaster: the group goes, whatever is left of it.
        stop_server(
            process,
            "PostgreSQL",
            timeout_s=timeout,
            signals=(signal.SIGINT,),
            kill_group=True,
            error=PostgresError,
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- databases -------------------------------------------------------------------------

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create an empty database `name` (lower-case letters, digits, _); returns its URL."""
        if not _DATABASE_RE.fullmatch(name):
            raise PostgresError(f"invalid database name {name!r}: use [a-z_][a-z0-9_]*")
        try:
            self.psql(f'CREATE DATABASE "{name}"')
        except PostgresError as error:
            if not (exist_ok and "already exists" in str(error)):
                raise
        return self.url(name)

    def create_role(self, name: str, password: str) -> str:
        """A login role `name` that must authenticate with `password` (SCRAM-SHA-256) over TCP,
        owning a new database of the same name; returns that database's URL, password included.

        Other roles keep ``trust``: a line for this role goes first in ``pg_hba.conf``, and the
        server reloads it.
        """
        if not _DATABASE_RE.fullmatch(name):
            raise PostgresError(f"invalid role name {name!r}: use [a-z_][a-z0-9_]*")
        if "'" in password or "\\" in password:
            raise PostgresError("the password must not contain quotes or backslashes")
        self.psql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        self.psql(f'CREATE DATABASE "{name}" OWNER "{name}"')
        hba = self.data_dir / "pg_hba.conf"
        rule = f"host all {name} {HOST}/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())
        self.psql("SELECT pg_reload_conf()")
        return f"postgresql+asyncpg://{name}:{password}@{HOST}:{self.port}/{name}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql as the superuser (bounded); returns psql's output."""
        if not self.running:
            raise PostgresError("PostgreSQL is not running")
        return self._tool(
            "psql",
            [
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                *self._connection(database),
                "-c",
                sql,
            ],
        )

    # --- internals -------------------------------------------------------------------------

    def _connection(self, database: str) -> list[str]:
        return ["-h", HOST, "-p", str(self.port), "-U", SUPERUSER, "-d", database]

    def _tool(self, name: str, args: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> str:
        try:
            result = subprocess.run(
                [str(self.bindir / name), *args],
                capture_output=True,
                text=True,
                env=_clean_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise PostgresError(f"{name} timed out after {timeout:.0f}s") from error
        if result.returncode != 0:
            raise PostgresError(f"{name} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def _prepare_directory(self, run: _Run) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if run.user is None:
            return
        os.chown(self.directory, run.user.pw_uid, run.user.pw_gid)
        # The kernel walks every folder above: test the whole path as that user.
        probe = subprocess.run(
            ["test", "-w", str(self.directory)],
            env=_clean_env(),
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            user=run.uid,
            group=run.gid,
            extra_groups=run.groups,
        )
        if probe.returncode != 0:
            raise PostgresError(
                f"user {run} cannot reach {self.directory}: a folder above it is closed to "
                "other users (e.g. mode 0700); use a folder under /tmp"
            )

    def _initdb(self, run: _Run, timeout: float) -> None:
        command = [
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        log.info("initdb %s as %s", self.data_dir, run)
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                cwd=self.directory,
                env=_clean_env(),
                timeout=max(1.0, timeout),
                check=False,
                user=run.uid,
                group=run.gid,
                extra_groups=run.groups,
            )
        except subprocess.TimeoutExpired as error:
            raise PostgresError(f"initdb timed out after {timeout:.0f}s") from error
        if result.returncode != 0:
            raise PostgresError(
                f"initdb failed ({result.returncode})\n{result.stdout}{result.stderr}".strip()
            )

    def _wait_ready(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        while True:
            if process.poll() is not None:
                raise PostgresError(
                    f"PostgreSQL exited with {process.returncode} while starting\n"
                    f"{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PostgresError(
                    f"PostgreSQL did not accept connections on {HOST}:{self.port} in time\n"
                    f"{self._log_tail()}"
                )
            with contextlib.suppress(PostgresError):
                self._tool(
                    "pg_isready",
                    [*self._connection("postgres"), "-t", "1"],
                    timeout=min(remaining, 5.0),
                )
                return
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


@contextlib.contextmanager
def _quiet_interrupt() -> Iterator[None]:
    with contextlib.suppress(KeyboardInterrupt):
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.postgres",
        description="Serve a throwaway PostgreSQL on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("directory", type=Path, help="state folder (created; reused next time)")
    parser.add_argument("--port", type=int, default=54329)
    parser.add_argument("--database", help="create this database if it does not exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    database: str = args.database or "postgres"
    if not _DATABASE_RE.fullmatch(database):
        parser.error(f"invalid database name {database!r}: use [a-z_][a-z0-9_]*")
    try:
        with PostgresServer(args.directory, args.port) as server, _quiet_interrupt():
            server.create_database(database, exist_ok=True)
            log.info(
                "%s\nready: STORE__URL=%s (Ctrl-C stops)", server.version(), server.url(database)
            )
            while server.running:
                time.sleep(1.0)
    except PostgresError as error:
        log.error("error: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
