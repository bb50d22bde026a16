"""Run a real Apache Kafka (KRaft) cluster on 127.0.0.1 for development and tests, without Docker.

Contract
--------
* Jars: ``ensure_libs`` fetches ``org.apache.kafka:kafka_2.13:<version>`` plus a log4j2 backend
  from Maven Central (``devtools/kafka/pom.xml``, run with ``mvn``) into
  ``<repo>/.kafka/libs/<version>/``. A ``.complete`` marker is written last; without it the
  directory is treated as an interrupted fetch and fetched again. The Kafka version is the
  argument, else the ``KAFKA_VERSION`` environment variable, else ``DEFAULT_KAFKA_VERSION``.
* ``KafkaCluster`` runs 1 or 3 nodes, each a combined broker+controller
  (``process.roles=broker,controller``) with a static ``controller.quorum.voters``. Node ids are
  ``1..N``. Every listener binds 127.0.0.1.
* Ports: with ``broker_port=P`` node ``i`` serves clients on ``P + 2*(i-1)`` and its controller on
  ``P + 2*(i-1) + 1``; P=9092 gives 9092/9093, 9094/9095, 9096/9097, so the dev broker is
  exactly 127.0.0.1:9092. ``broker_port=None`` picks free loopback ports below the ephemeral
  range (so a client's outgoing connection cannot take a stopped node's port before it restarts).
* State lives in ``workdir`` only, so another process can ``KafkaCluster.load(workdir)`` and
  stop, kill or restart nodes of a cluster this process started::

      cluster.json               version, node count, ports, cluster id, settings
      node<N>/server.properties  the broker configuration
      node<N>/data/              log.dirs (formatted once; kept across restarts)
      node<N>/kafka.log          stdout+stderr of the current JVM (previous run: kafka.log.1)
      node<N>/pid                pid of the JVM; present while the node is meant to run

  Starting again in a workdir that already holds a cluster of the same size reuses its cluster
  id and data. A pid file whose process is gone (or is not this node's JVM) counts as stopped.
* JVMs run in their own session: a Ctrl-C in the terminal reaches this code, not the brokers,
  and this code decides how to stop them (SIGTERM, then SIGKILL after a bounded wait).
* Ready means: every node that should run has logged "Kafka Server started" (in KRaft this is
  logged after the broker is unfenced) AND a Kafka metadata request sent to each live node that
  has started lists every node that should run. The metadata check uses aiokafka in a
  short-lived worker thread, so the synchronous API also works from the thread of a running
  asyncio loop (e.g. called from an async test).
* Timing (Kafka behaviour, not this tool's): a node restarted soon after it was killed can
  only register once its previous session expired, so ``start_node`` then takes about
  ``broker.session.timeout.ms`` (9 s by default; after a graceful ``stop_node`` it is usually
  ~2 s but can take as long); the same timeout delays leader fail-over after a kill.
  Pass ``extra_properties={"broker.session.timeout.ms": "3000",
  "broker.heartbeat.interval.ms": "500"}`` for quicker fault tests. Stopping a whole 3-node
  cluster takes about 5 s: the last KRaft leader waits that long to resign gracefully.
* Secured listeners (opt-in, ``secure=SecureListeners(users={...})``): besides the plaintext
  listener every node serves SASL_SSL (and, if asked, SASL_PLAINTEXT) for clients, both with
  SCRAM-SHA-256 and SCRAM-SHA-512. The users are created when the storage is formatted
  (``kafka-storage format --add-scram``), so only on the first start of a workdir. TLS uses a
  throwaway CA and a server certificate for 127.0.0.1 and localhost, generated with trustme into
  ``<workdir>/tls`` on the first start and kept across restarts; clients trust
  ``KafkaCluster.ca_file``. The broker reads them as PEM files (``ssl.keystore.type=PEM``):
  ``tls/server.pem`` holds the key (unencrypted PKCS#8) and the certificate chain. Brokers and
  controllers still talk to each other in plaintext. With ``broker_port=P`` the secured ports
  follow all the plaintext ones: node i's SASL_SSL port is ``P + 2*N + k*(i-1)`` (N nodes, k = 1
  or 2 secured listeners), its SASL_PLAINTEXT port the next one. Ready then also means each
  node's SASL_SSL listener answers a metadata request as the first user.
* Proxied clusters (opt-in, ``proxied=True``, free ports only, no secured listeners): every
  connection to a node goes through an address that the caller serves, e.g. with a TCP fault
  proxy, so that faults can cut or slow one route at a time. ``KafkaCluster.links()`` lists
  them, each a ``Link`` from the address to serve to the node's own listener:

  - ``client-<x>``: clients reach node x there (advertised for the ``PLAINTEXT`` listener;
    ``broker_address``/``bootstrap_servers`` give these addresses);
  - ``broker-<y>-to-<x>``: node y's inter-broker connections (replica fetches, transaction
    markers) to node x. Node y uses the listener name ``FROM_<y>``, which every node serves
    on a port of its own and advertises at this link's address (its own ``FROM_<x>`` direct);
  - ``controller-<y>-to-<x>``: node y's KRaft connections (votes, metadata fetches, broker
    heartbeats) to node x's controller: node y's ``controller.quorum.voters`` lists x there.

  A node reaches itself directly. The links must be served before ``start`` (the quorum forms
  through them) and while nodes restart. Readiness probes use each node's own client listener
  (``direct_address``), so a cut client route does not hold up a restart.
* Every wait is bounded and polls with short sleeps. Expected failures raise ``KafkaToolError``
  subclasses; the first line of the message is a one-line summary, further lines (if any) are
  details such as the tail of a node's log.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

__all__ = [
    "CLIENT_LINK",
    "DEFAULT_KAFKA_VERSION",
    "DEFAULT_LIBS_ROOT",
    "KAFKA_VERSION_ENV",
    "REPO_ROOT",
    "KafkaCluster",
    "KafkaClusterError",
    "KafkaFetchError",
    "KafkaToolError",
    "Link",
    "NodeStatus",
    "SecureListeners",
    "ensure_libs",
    "new_cluster_id",
    "resolve_version",
]

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.4.0"
KAFKA_VERSION_ENV = "KAFKA_VERSION"

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parents[1]
POM_PATH = _HERE / "pom.xml"
LOG4J_CONFIG = _HERE / "log4j2.properties"
DEFAULT_LIBS_ROOT = REPO_ROOT / ".kafka" / "libs"

READY_LINE = "Kafka Server started"
SUPPORTED_NODE_COUNTS = (1, 3)
MIN_HEAP_MB = 128  # -Xms128m is fixed; a smaller -Xmx would make the JVM refuse to start
MAX_HEAP_MB = 512  # hard cap: several clusters may run side by side on a dev machine / CI runner
FETCH_TIMEOUT_S = 600.0
FORMAT_TIMEOUT_S = 120.0
KILL_WAIT_S = 15.0  # after SIGKILL the kernel frees a process quickly; longer means trouble

_STATE_FILE = "cluster.json"
_STATE_FORMAT = 1
_COMPLETE_MARKER = ".complete"
_POLL_S = 0.2
_LOG_TAIL_LINES = 40
_PROBE_TIMEOUT_S = 5.0  # one metadata round trip to a local broker; generous on a loaded machine
_HOST = "127.0.0.1"
_VERSION_RE = re.compile(r"[0-9][0-9A-Za-z.\-]*")
# kafka-storage's --add-scram value is "MECHANISM=[name=...,password=...]": keep both plain.
_CREDENTIAL_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_TLS_DIR = "tls"
CLIENT_LINK, BROKER_LINK, CONTROLLER_LINK = "client", "broker", "controller"

_T = TypeVar("_T")


class KafkaToolError(RuntimeError):
    """Expected failure of the Kafka dev tooling (missing tool, bad input, broker trouble)."""


class KafkaFetchError(KafkaToolError):
    """The broker jars could not be fetched from Maven Central."""


class KafkaClusterError(KafkaToolError):
    """A cluster could not be started, stopped or queried as asked."""


@dataclass(frozen=True)
class NodeStatus:
    """Snapshot of one node, as reported by ``KafkaCluster.status``."""

    node_id: int
    running: bool
    pid: int | None
    address: str
    controller_address: str


@dataclass(frozen=True)
class SecureListeners:
    """Client listeners with SASL/SCRAM besides the plaintext one (see the module docstring).

    ``users`` maps SCRAM user names to passwords (1-64 of ``A-Z a-z 0-9 . _ -``); each user
    gets SCRAM-SHA-256 and SCRAM-SHA-512 credentials. SASL_SSL is always served;
    SASL_PLAINTEXT only with ``sasl_plaintext=True``.
    """

    users: Mapping[str, str]
    sasl_plaintext: bool = False

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("secured listeners need at least one SCRAM user")
        for name, password in self.users.items():
            if not (_CREDENTIAL_RE.fullmatch(name) and _CREDENTIAL_RE.fullmatch(password)):
                raise ValueError(
                    f"SCRAM user {name!r}: names and passwords are 1-64 of A-Z a-z 0-9 . _ -"
                )

    @property
    def listener_count(self) -> int:
        return 2 if self.sasl_plaintext else 1


@dataclass(frozen=True)
class Link:
    """One route to a node of a proxied cluster: serve ``listen`` and forward to ``upstream``.

    ``kind`` is ``"client"``, ``"broker"`` (inter-broker listener) or ``"controller"``;
    ``source`` is the node that connects (None for clients), ``target`` the node reached.
    """

    name: str
    kind: str
    source: int | None
    target: int
    listen: str
    upstream: str


@dataclass(frozen=True)
class _NodeSpec:
    node_id: int
    broker_port: int
    controller_port: int
    sasl_ssl_port: int | None = None
    sasl_plaintext_port: int | None = None
    # Proxied clusters only. client_proxy_port: the address clients are told (link client-x).
    # Each tuple maps a peer node y to a port: from_ports, this node's FROM_y listener;
    # broker_link_ports / controller_link_ports, the links y -> this node (y != this node).
    client_proxy_port: int | None = None
    from_ports: tuple[tuple[int, int], ...] = ()
    broker_link_ports: tuple[tuple[int, int], ...] = ()
    controller_link_ports: tuple[tuple[int, int], ...] = ()

    @property
    def proxied(self) -> bool:
        return self.client_proxy_port is not None

    def ports_json(self) -> dict[str, Any]:
        """The proxied ports, for ``cluster.json`` (empty when not proxied)."""
        if not self.proxied:
            return {}
        return {
            "client_proxy_port": self.client_proxy_port,
            "from_ports": {str(y): p for y, p in self.from_ports},
            "broker_link_ports": {str(y): p for y, p in self.broker_link_ports},
            "controller_link_ports": {str(y): p for y, p in self.controller_link_ports},
        }

    @classmethod
    def from_json(cls, node: Mapping[str, Any]) -> _NodeSpec:
        def pairs(name: str) -> tuple[tuple[int, int], ...]:
            return tuple(sorted((int(y), int(p)) for y, p in node.get(name, {}).items()))

        return cls(
            int(node["node_id"]),
            int(node["broker_port"]),
            int(node["controller_port"]),
            sasl_ssl_port=_optional_int(node.get("sasl_ssl_port")),
            sasl_plaintext_port=_optional_int(node.get("sasl_plaintext_port")),
            client_proxy_port=_optional_int(node.get("client_proxy_port")),
            from_ports=pairs("from_ports"),
            broker_link_ports=pairs("broker_link_ports"),
            controller_link_ports=pairs("controller_link_ports"),
        )


def _proxied_specs(plain: Sequence[_NodeSpec], ports: Sequence[int]) -> list[_NodeSpec]:
    """``plain`` with the ports of a proxied cluster taken from ``ports`` (enough of them)."""
    ids = [s.node_id for s in plain]
    free = iter(ports)
    specs = []
    for spec in plain:
        peers = [y for y in ids if y != spec.node_id]
        specs.append(
            dataclasses.replace(
                spec,
                client_proxy_port=next(free),
                from_ports=tuple((y, next(free)) for y in ids),
                broker_link_ports=tuple((y, next(free)) for y in peers),
                controller_link_ports=tuple((y, next(free)) for y in peers),
            )
        )
    return specs


def _proxied_port_count(nodes: int) -> int:
    # per node: the client link, a FROM_y listener per node, two links from each peer
    return nodes * (1 + nodes + 2 * (nodes - 1))


# --------------------------------------------------------------------------------------------
# versions, tools, jars


def resolve_version(version: str | None = None) -> str:
    """The Kafka version to use: ``version``, else ``$KAFKA_VERSION``, else the default."""
    chosen = (version or os.environ.get(KAFKA_VERSION_ENV) or DEFAULT_KAFKA_VERSION).strip()
    # The version becomes a directory name and a Maven property: refuse anything odd.
    if not _VERSION_RE.fullmatch(chosen):
        raise KafkaToolError(f"invalid Kafka version {chosen!r} (expected e.g. 4.4.0)")
    return chosen


def _require_executable(name: str, purpose: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise KafkaToolError(
            f"`{name}` not found on PATH; it is needed to {purpose} "
            "(install a JDK 17+ and Maven 3.8+)"
        )
    return path


def _libs_complete(libs: Path) -> bool:
    return (libs / _COMPLETE_MARKER).is_file()


def ensure_libs(
    version: str | None = None,
    root: Path = DEFAULT_LIBS_ROOT,
    *,
    timeout: float = FETCH_TIMEOUT_S,
) -> Path:
    """Return ``<root>/<version>/`` holding the broker jars, fetching them first if needed.

    The fetch runs ``mvn`` on ``devtools/kafka/pom.xml`` (bounded by ``timeout`` seconds) and
    is skipped when the directory already carries the completion marker. Concurrent callers
    (e.g. parallel test processes) are serialised with a lock file.
    """
    ver = resolve_version(version)
    root = root.expanduser().resolve()
    libs = root / ver
    if _libs_complete(libs):
        return libs
    mvn = _require_executable("mvn", "fetch the Kafka jars from Maven Central")
    root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with (root / f".{ver}.lock").open("a") as lock_file:
        _lock_bounded(lock_file.fileno(), deadline, what=f"the fetch lock of Kafka {ver}")
        if _libs_complete(libs):  # another process finished the fetch while we waited
            return libs
        if libs.exists():  # leftovers of an interrupted fetch: start clean
            shutil.rmtree(libs)
        libs.mkdir(parents=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM_PATH),
            f"-Dkafka.version={ver}",
            f"-Dkafka.libs.dir={libs}",
            "package",
        ]
        log.info("fetching Kafka %s jars from Maven Central into %s", ver, libs)
        started = time.monotonic()
        try:
            ((code, output),) = _run_all_bounded(
                [cmd],
                max(1.0, deadline - time.monotonic()),
                what=f"fetching the Kafka {ver} jars with mvn",
                error=KafkaFetchError,
            )
            if code != 0:
                raise KafkaFetchError(
                    f"mvn failed (exit {code}) fetching Kafka {ver}; is that version published "
                    f"on Maven Central and is Maven Central reachable?\n{_tail_text(output)}"
                )
            for pattern in (f"kafka_2.13-{ver}.jar", "kafka-clients-*.jar", "log4j-core-*.jar"):
                if not any(libs.glob(pattern)):
                    raise KafkaFetchError(f"mvn succeeded but {libs} has no {pattern}")
        except BaseException:
            # No half-filled directory left behind (the next call would redo it anyway).
            shutil.rmtree(libs, ignore_errors=True)
            raise
        # Written last: its presence is what makes a later call skip the fetch.
        (libs / _COMPLETE_MARKER).write_text(
            json.dumps({"version": ver, "fetched_at": time.time()}) + "\n"
        )
        log.info("fetched Kafka %s jars in %.1fs", ver, time.monotonic() - started)
    return libs


def _lock_bounded(fd: int, deadline: float, *, what: str) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise KafkaToolError(f"timed out waiting for {what}") from None
            time.sleep(_POLL_S)
        else:
            return


def _run_all_bounded(
    cmds: Sequence[Sequence[str]],
    timeout: float,
    *,
    what: str,
    error: type[KafkaToolError] = KafkaToolError,
) -> list[tuple[int, str]]:
    """Run commands in parallel; return (exit code, combined output) of each.

    Each runs in its own session so that on timeout or interruption the whole process group
    (``mvn`` is a shell script around a JVM) can be killed; output goes to temporary files
    rather than pipes so that a chatty command cannot block on a full pipe.
    """
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as stack:
        outputs = [stack.enter_context(tempfile.TemporaryFile()) for _ in cmds]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for cmd, out in zip(cmds, outputs, strict=True):
                # argv built by this module from validated values, no shell involved (hence
                # the S603 exemption for devtools in pyproject.toml).
                procs.append(
                    subprocess.Popen(
                        list(cmd),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            for proc, out in zip(procs, outputs, strict=True):
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise error(
                        f"{what} timed out after {timeout:.0f}s; its output so far:\n" + _tail(out)
                    ) from None
        finally:
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=KILL_WAIT_S)
        results = []
        for proc, out in zip(procs, outputs, strict=True):
            out.seek(0)
            results.append((proc.returncode, out.read().decode("utf-8", "replace")))
        return results


# --------------------------------------------------------------------------------------------
# small helpers


def _tail(output: IO[bytes], limit: int = 4000) -> str:
    """The last `limit` bytes written to `output` so far, as text (for an error message)."""
    output.flush()
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - limit))
    return output.read().decode("utf-8", "replace") or "(none)"


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID as 22 characters of unpadded base64url.

    Never starting with "-" (as Kafka's own `Uuid.randomUuid()` ensures), so no command line
    can mistake it for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail_text(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


_JAVA_EXCEPTION_RE = re.compile(
    r"^(?:Exception in thread \"[^\"]*\" |Caused by: )?"
    r"((?:[a-z_][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error)\b.*)$"
)


def _java_failure(text: str) -> str:
    """``": <first Java exception line>"`` found in a JVM's output, or ``""``.

    Makes the one-line summary of an error useful (the full output follows it).
    """
    for line in text.splitlines():
        match = _JAVA_EXCEPTION_RE.match(line.strip())
        if match:
            return f": {match.group(1)[:300]}"
    return ""


def _tail_file(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return _tail_text(data.decode("utf-8", "replace"), lines) or f"({path} is empty)"


def _file_contains(path: Path, needle: bytes) -> bool:
    """Stream the file: a long-running dev broker's log can grow large."""
    try:
        with path.open("rb") as f:
            carry = b""
            while chunk := f.read(1 << 20):
                if needle in carry + chunk:
                    return True
                carry = chunk[-len(needle) :]
    except FileNotFoundError:
        return False
    return False


def _write_atomic(path: Path, text: str) -> None:
    # Another process may read these files at any time (load/status): never show half a file.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def _properties_text(props: Mapping[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n")

    lines = ["# Written by devtools/kafka/cluster.py; rewritten on every cluster start."]
    lines += [f"{key}={escape(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like the JVM's server sockets: TIME_WAIT leftovers of a killed node must
        # not count as "in use", only a live listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _ephemeral_port_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux default; macOS uses 49152 and up


def _pick_free_ports(count: int) -> list[int]:
    """Free loopback ports outside the ephemeral range (see the module docstring for why)."""
    low, high = 15000, min(_ephemeral_port_low(), 32768)
    picked: list[int] = []
    if high - low >= 1000:
        for _ in range(50 * count):
            port = low + secrets.randbelow(high - low)
            if port not in picked and _port_is_free(port):
                picked.append(port)
                if len(picked) == count:
                    return picked
    # Odd port range configuration: let the kernel choose.
    with contextlib.ExitStack() as stack:
        while len(picked) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((_HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in picked:
                picked.append(port)
    return picked


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _pid_is_kafka_node(pid: int, properties: Path) -> bool:
    """Is ``pid`` a live JVM running ``kafka.Kafka`` with this node's properties file?

    Guards against stale pid files whose pid was reused by an unrelated process. Zombies (exited
    but not yet reaped by their parent) have an empty cmdline and count as gone.
    """
    proc_root = Path("/proc")
    if proc_root.is_dir():
        try:
            argv = (proc_root / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in argv and os.fsencode(str(properties)) in argv
    try:  # no /proc (macOS): existence is the best cheap signal
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _run_in_worker_thread(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion in a fresh event loop on a short-lived thread.

    ``asyncio.run`` refuses to run in a thread that already runs a loop (e.g. a sync call made
    from an async test); a worker thread always works. The coroutine bounds itself.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def _probe_brokers(
    addresses: Sequence[str], limit_s: float, client_options: Mapping[str, Any] | None = None
) -> dict[str, set[int] | str]:
    """Ask each address (separately) for cluster metadata: broker ids seen, or an error text.

    ``client_options``: aiokafka's security arguments, for a secured listener.
    """
    # Imported here: fetching jars or reading status must not need aiokafka.
    from aiokafka import AIOKafkaClient  # type: ignore[import-untyped]
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

    async def probe(address: str) -> set[int] | str:
        client: Any = AIOKafkaClient(
            bootstrap_servers=address,
            request_timeout_ms=int(limit_s * 1000),
            **(client_options or {}),
        )
        try:
            async with asyncio.timeout(limit_s):
                await client.bootstrap()
            # Before the first real answer aiokafka lists placeholder "bootstrap-N" ids.
            return {b.nodeId for b in client.cluster.brokers() if isinstance(b.nodeId, int)}
        # A failure here only means "not ready yet"; the text ends up in the timeout message.
        except (OSError, TimeoutError, KafkaError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await client.close()

    results = await asyncio.gather(*(probe(a) for a in addresses))
    return dict(zip(addresses, results, strict=True))


def _write_tls_material(directory: Path) -> None:
    """A throwaway CA (``ca.pem``) and a server certificate for 127.0.0.1 and localhost.

    ``server.pem`` holds the key as unencrypted PKCS#8 (what Kafka's PEM key store reads)
    followed by the certificate chain. Written atomically, so a half-written set never exists.
    """
    # Imported here: only secured clusters need them (dev dependencies).
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA(organization_name="kafka-events test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(directory / "server.pem", (pkcs8 + chain).decode("ascii"))
    _write_atomic(directory / "ca.pem", ca.cert_pem.bytes().decode("ascii"))


# --------------------------------------------------------------------------------------------
# the cluster


class KafkaCluster:
    """A local KRaft Kafka cluster of 1 or 3 combined broker+controller nodes.

    Construct it to describe a cluster (nothing is written until ``start``), or ``load`` one
    that some process started in ``workdir``. Use as a context manager to start and stop it.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int = 1,
        version: str | None = None,
        broker_port: int | None = None,
        heap_mb: int = 384,
        min_insync_replicas: int | None = None,
        extra_properties: Mapping[str, str] | None = None,
        libs_root: Path = DEFAULT_LIBS_ROOT,
        secure: SecureListeners | None = None,
        proxied: bool = False,
    ) -> None:
        if nodes not in SUPPORTED_NODE_COUNTS:
            raise ValueError(f"nodes must be one of {SUPPORTED_NODE_COUNTS}, not {nodes}")
        if not MIN_HEAP_MB <= heap_mb <= MAX_HEAP_MB:
            raise ValueError(f"heap_mb must be within {MIN_HEAP_MB}..{MAX_HEAP_MB}, not {heap_mb}")
        min_isr = min_insync_replicas if min_insync_replicas is not None else min(2, nodes)
        if not 1 <= min_isr <= nodes:
            raise ValueError(f"min_insync_replicas must be within 1..{nodes}, not {min_isr}")
        secured = secure.listener_count if secure is not None else 0
        if proxied and (broker_port is not None or secure is not None):
            raise ValueError("a proxied cluster takes free ports and has no secured listeners")
        proxy_ports: list[int] = []
        if broker_port is None:
            count = (2 + secured) * nodes
            ports = _pick_free_ports(count + (_proxied_port_count(nodes) if proxied else 0))
            plain, extra, proxy_ports = ports[: 2 * nodes], ports[2 * nodes : count], ports[count:]
        else:
            if not 1024 <= broker_port <= 65535 - (2 + secured) * nodes:
                raise ValueError(f"broker_port {broker_port} out of range")
            plain = list(range(broker_port, broker_port + 2 * nodes))
            extra = list(range(broker_port + 2 * nodes, broker_port + (2 + secured) * nodes))
        specs = [
            _NodeSpec(
                i + 1,
                plain[2 * i],
                plain[2 * i + 1],
                sasl_ssl_port=extra[secured * i] if secured else None,
                sasl_plaintext_port=extra[secured * i + 1] if secured == 2 else None,
            )
            for i in range(nodes)
        ]
        if proxied:
            specs = _proxied_specs(specs, proxy_ports)
        self._workdir = workdir.expanduser().resolve()
        self._version = resolve_version(version)
        self._specs = {spec.node_id: spec for spec in specs}
        self._heap_mb = heap_mb
        self._min_isr = min_isr
        self._extra = {str(k): str(v) for k, v in (extra_properties or {}).items()}
        self._libs_root = libs_root.expanduser().resolve()
        self._secure = secure
        self._cluster_id = new_cluster_id()
        # JVMs this process started: used to reap them and to read their exit codes. Nodes
        # started by other processes are tracked through their pid files only.
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        # Pids of JVMs seen to log READY_LINE: their logs need no rescanning while polling.
        self._ready_pids: set[int] = set()

    # ---- persisted state ------------------------------------------------------------------

    @classmethod
    def load(cls, workdir: Path) -> Self:
        """The cluster described by ``<workdir>/cluster.json`` (running or not)."""
        workdir = workdir.expanduser().resolve()
        path = workdir / _STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise KafkaClusterError(f"no Kafka cluster in {workdir} ({path} missing)") from None
        except (OSError, ValueError) as exc:
            raise KafkaClusterError(f"cannot read {path}: {exc}") from None
        try:
            if state["format"] != _STATE_FORMAT:
                raise KafkaClusterError(f"{path} has unknown format {state['format']!r}")
            specs = [_NodeSpec.from_json(n) for n in state["nodes"]]
            secure = state.get("secure")  # absent unless the cluster has secured listeners
            cluster = cls(
                workdir,
                nodes=len(specs),
                version=str(state["version"]),
                broker_port=specs[0].broker_port,  # placeholder; replaced by the stored ports
                heap_mb=int(state["heap_mb"]),
                min_insync_replicas=int(state["min_insync_replicas"]),
                extra_properties={str(k): str(v) for k, v in state["extra_properties"].items()},
                libs_root=Path(state["libs_root"]),
                secure=(
                    SecureListeners(
                        users={str(k): str(v) for k, v in secure["users"].items()},
                        sasl_plaintext=bool(secure["sasl_plaintext"]),
                    )
                    if secure
                    else None
                ),
            )
            cluster._specs = {spec.node_id: spec for spec in specs}
            cluster._cluster_id = str(state["cluster_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KafkaClusterError(f"{path} is malformed: {exc!r}") from None
        return cluster

    def _state(self) -> dict[str, Any]:
        # Secured listeners only add keys, so older states stay readable and plain ones unchanged.
        secured: dict[str, Any] = {}
        if self._secure is not None:
            secured["secure"] = {
                "users": dict(self._secure.users),
                "sasl_plaintext": self._secure.sasl_plaintext,
            }
        return {
            "format": _STATE_FORMAT,
            "version": self._version,
            "node_count": len(self._specs),
            "cluster_id": self._cluster_id,
            "heap_mb": self._heap_mb,
            "min_insync_replicas": self._min_isr,
            "extra_properties": self._extra,
            "libs_root": str(self._libs_root),
            **secured,
            "nodes": [
                {
                    "node_id": s.node_id,
                    "broker_port": s.broker_port,
                    "controller_port": s.controller_port,
                    **{
                        name: port
                        for name, port in (
                            ("sasl_ssl_port", s.sasl_ssl_port),
                            ("sasl_plaintext_port", s.sasl_plaintext_port),
                        )
                        if port is not None
                    },
                    **s.ports_json(),
                }
                for s in self._specs.values()
            ],
        }

    def _prepare_workdir(self) -> None:
        state_path = self._workdir / _STATE_FILE
        if state_path.exists():
            previous = type(self).load(self._workdir)
            if len(previous._specs) != len(self._specs):
                raise KafkaClusterError(
                    f"{self._workdir} holds a {len(previous._specs)}-node cluster, not "
                    f"{len(self._specs)} nodes; remove that directory (CLI: --reset) or use "
                    "another one"
                )
            # Its data directories were formatted with that id; a new id would be refused.
            self._cluster_id = previous._cluster_id
        if self._secure is not None and not (self.tls_dir / "server.pem").is_file():
            # Kept across restarts: clients keep trusting the same CA.
            _write_tls_material(self.tls_dir)
        for node_id in self.node_ids:
            self.data_dir(node_id).mkdir(parents=True, exist_ok=True)
            _write_atomic(
                self.properties_path(node_id), _properties_text(self.node_properties(node_id))
            )
        _write_atomic(state_path, json.dumps(self._state(), indent=2) + "\n")

    # ---- description ----------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def version(self) -> str:
        return self._version

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(self._specs)

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:p1,127.0.0.1:p2,..."``: the client listeners of all nodes."""
        return ",".join(self.broker_address(n) for n in self.node_ids)

    def _spec(self, node_id: int) -> _NodeSpec:
        try:
            return self._specs[node_id]
        except KeyError:
            raise KafkaClusterError(
                f"no node {node_id}; this cluster has nodes {list(self.node_ids)}"
            ) from None

    def broker_address(self, node_id: int) -> str:
        """Where clients reach the node (through its ``client`` link when proxied)."""
        spec = self._spec(node_id)
        return f"{_HOST}:{spec.client_proxy_port or spec.broker_port}"

    def direct_address(self, node_id: int) -> str:
        """The node's own client listener (the same as ``broker_address`` unless proxied)."""
        return f"{_HOST}:{self._spec(node_id).broker_port}"

    @property
    def proxied(self) -> bool:
        return any(s.proxied for s in self._specs.values())

    def links(self) -> list[Link]:
        """Every route a proxied cluster's caller must serve (see the module docstring)."""
        found = []
        for spec in self._specs.values():
            if spec.client_proxy_port is None:
                continue
            x = spec.node_id
            found.append(
                Link(
                    f"client-{x}",
                    CLIENT_LINK,
                    None,
                    x,
                    f"{_HOST}:{spec.client_proxy_port}",
                    self.direct_address(x),
                )
            )
            from_ports = dict(spec.from_ports)
            for y, port in spec.broker_link_ports:
                found.append(
                    Link(
                        f"broker-{y}-to-{x}",
                        BROKER_LINK,
                        y,
                        x,
                        f"{_HOST}:{port}",
                        f"{_HOST}:{from_ports[y]}",
                    )
                )
            for y, port in spec.controller_link_ports:
                found.append(
                    Link(
                        f"controller-{y}-to-{x}",
                        CONTROLLER_LINK,
                        y,
                        x,
                        f"{_HOST}:{port}",
                        self.controller_address(x),
                    )
                )
        return found

    @property
    def secure(self) -> SecureListeners | None:
        return self._secure

    def _secured_port(self, node_id: int, protocol: str) -> int:
        spec = self._spec(node_id)
        port = spec.sasl_ssl_port if protocol == "SASL_SSL" else spec.sasl_plaintext_port
        if port is None:
            raise KafkaClusterError(f"this cluster has no {protocol} listener")
        return port

    def sasl_ssl_address(self, node_id: int) -> str:
        return f"{_HOST}:{self._secured_port(node_id, 'SASL_SSL')}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """The SASL_SSL client listeners of all nodes (KafkaClusterError if there are none)."""
        return ",".join(self.sasl_ssl_address(n) for n in self.node_ids)

    @property
    def sasl_plaintext_bootstrap_servers(self) -> str:
        """The SASL_PLAINTEXT client listeners (KafkaClusterError if there are none)."""
        return ",".join(f"{_HOST}:{self._secured_port(n, 'SASL_PLAINTEXT')}" for n in self.node_ids)

    @property
    def tls_dir(self) -> Path:
        return self._workdir / _TLS_DIR

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the brokers' certificates."""
        return self.tls_dir / "ca.pem"

    def controller_address(self, node_id: int) -> str:
        return f"{_HOST}:{self._spec(node_id).controller_port}"

    def node_dir(self, node_id: int) -> Path:
        return self._workdir / f"node{self._spec(node_id).node_id}"

    def data_dir(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "data"

    def properties_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def log_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.log"

    def _pid_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "pid"

    def node_properties(self, node_id: int) -> dict[str, str]:
        """The broker configuration of a node (``extra_properties`` applied last)."""
        spec = self._spec(node_id)
        count = len(self._specs)
        voters = ",".join(f"{s.node_id}@{_HOST}:{s.controller_port}" for s in self._specs.values())
        internal_isr = str(min(2, count))
        # name -> port of the client listeners; the controller's is added to `listeners` only
        clients = {"PLAINTEXT": spec.broker_port}
        if spec.sasl_ssl_port is not None:
            clients["SASL_SSL"] = spec.sasl_ssl_port
        if spec.sasl_plaintext_port is not None:
            clients["SASL_PLAINTEXT"] = spec.sasl_plaintext_port
        advertised = ",".join(f"{name}://{_HOST}:{port}" for name, port in clients.items())
        props = {
            "process.roles": "broker,controller",
            "node.id": str(spec.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"{advertised},CONTROLLER://{_HOST}:{spec.controller_port}",
            "advertised.listeners": advertised,
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(
                ["CONTROLLER:PLAINTEXT", *(f"{name}:{name}" for name in clients)]
            ),
            "log.dirs": str(self.data_dir(node_id)),
            "num.partitions": "1" if count == 1 else "3",
            "default.replication.factor": str(count),
            "min.insync.replicas": str(self._min_isr),
            # Internal topics must fit the cluster, or groups/transactions never work on 1 node.
            "offsets.topic.replication.factor": str(count),
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": str(count),
            "transaction.state.log.min.isr": internal_isr,
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": str(count),
            "share.coordinator.state.topic.min.isr": internal_isr,
            "share.coordinator.state.topic.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",  # consumer groups form at once in tests
            # The default, made explicit: fault tests rely on no acknowledged write being lost.
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "true",
            # Small footprint: several brokers share one machine.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "num.replica.fetchers": "1",
            "background.threads": "2",
            "group.coordinator.threads": "1",
            "share.coordinator.threads": "1",
            "log.cleaner.threads": "1",
            # The cleaner's dedupe buffer (128 MiB by default) lives on the heap.
            "log.cleaner.dedupe.buffer.size": "16777216",
        }
        if self._secure is not None:
            props.update(self._secure_properties([name for name in clients if name != "PLAINTEXT"]))
        if spec.proxied:
            props.update(self._proxied_properties(spec))
        props.update(self._extra)
        return props

    def _proxied_properties(self, spec: _NodeSpec) -> dict[str, str]:
        """Listeners and voters of a proxied node: peers are reached through their links."""
        x = spec.node_id
        from_ports = dict(spec.from_ports)
        link_in = dict(spec.broker_link_ports)  # y -> the link y -> x of our FROM_y listener
        names = [f"FROM_{y}" for y in from_ports]
        listeners = [f"PLAINTEXT://{_HOST}:{spec.broker_port}"] + [
            f"FROM_{y}://{_HOST}:{port}" for y, port in from_ports.items()
        ]
        advertised = [f"PLAINTEXT://{_HOST}:{spec.client_proxy_port}"] + [
            f"FROM_{y}://{_HOST}:{link_in.get(y, port)}" for y, port in from_ports.items()
        ]
        voters = []
        for peer in self._specs.values():
            # node x reaches peer v's controller through the link x -> v
            port = dict(peer.controller_link_ports).get(x, peer.controller_port)
            voters.append(f"{peer.node_id}@{_HOST}:{port}")
        return {
            "listeners": ",".join([*listeners, f"CONTROLLER://{_HOST}:{spec.controller_port}"]),
            "advertised.listeners": ",".join(advertised),
            "inter.broker.listener.name": f"FROM_{x}",
            "listener.security.protocol.map": ",".join(
                ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT", *(f"{n}:PLAINTEXT" for n in names)]
            ),
            "controller.quorum.voters": ",".join(voters),
        }

    def _secure_properties(self, listeners: Sequence[str]) -> dict[str, str]:
        """SCRAM on the secured listeners, TLS from the PEM files in ``tls_dir``."""
        props = {"sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS)}
        for listener in listeners:
            for mechanism in SCRAM_MECHANISMS:
                # The server side of SCRAM needs a login module; the credentials themselves
                # come from the cluster metadata (created at format time).
                props[f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        props.update(
            {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.tls_dir / "server.pem"),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.ca_file),
                "ssl.client.auth": "none",
            }
        )
        return props

    def _scram_arguments(self) -> list[str]:
        """``--add-scram`` arguments of kafka-storage format: every user, every mechanism."""
        if self._secure is None:
            return []
        return [
            f"--add-scram={mechanism}=[name={name},password={password}]"
            for name, password in self._secure.users.items()
            for mechanism in SCRAM_MECHANISMS
        ]

    def _probe_options(self) -> dict[str, Any]:
        """aiokafka arguments to reach the SASL_SSL listener as the first SCRAM user."""
        assert self._secure is not None
        name, password = next(iter(self._secure.users.items()))
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": ssl.create_default_context(cafile=self.ca_file),
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": name,
            "sasl_plain_password": password,
        }

    # ---- processes ------------------------------------------------------------------------

    def _read_pid(self, node_id: int) -> int | None:
        try:
            return int(self._pid_path(node_id).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def pid(self, node_id: int) -> int | None:
        """Pid of the node's live JVM, or None (no pid file, stale pid file, or exited)."""
        pid = self._read_pid(node_id)
        proc = self._procs.get(node_id)
        if proc is not None and (proc.poll() is not None or proc.pid != pid):
            # Exited (poll() reaped it) or replaced by a JVM another process started.
            if proc.poll() is not None:
                del self._procs[node_id]
            proc = None
        if pid is None:
            return None
        if proc is not None:
            return pid
        return pid if _pid_is_kafka_node(pid, self.properties_path(node_id)) else None

    def is_running(self, node_id: int) -> bool:
        return self.pid(node_id) is not None

    def status(self) -> list[NodeStatus]:
        result = []
        for node_id in self.node_ids:
            pid = self.pid(node_id)
            result.append(
                NodeStatus(
                    node_id=node_id,
                    running=pid is not None,
                    pid=pid,
                    address=self.broker_address(node_id),
                    controller_address=self.controller_address(node_id),
                )
            )
        return result

    def _java_command(self, java: str, libs: Path, node_id: int, *args: str) -> list[str]:
        return [
            java,
            "-Xms128m",
            f"-Xmx{self._heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            # A broker out of heap should die visibly (and be reported), not limp along.
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.node_dir(node_id)}",
            "-cp",
            f"{libs}{os.sep}*",  # the JVM expands "dir/*" itself; no shell is involved
            *args,
        ]

    def _check_ports_free(self, node_id: int) -> None:
        spec = self._spec(node_id)
        ports = [
            (spec.broker_port, "client"),
            (spec.controller_port, "controller"),
            (spec.sasl_ssl_port, "SASL_SSL"),
            (spec.sasl_plaintext_port, "SASL_PLAINTEXT"),
            *((port, f"FROM_{y}") for y, port in spec.from_ports),
        ]
        for port, role in ports:
            if port is None:
                continue
            if not _port_is_free(port):
                raise KafkaClusterError(
                    f"port {_HOST}:{port} (node {node_id} {role} listener) is already in use; "
                    "stop whatever listens there or choose other ports"
                )

    def _format_storage(
        self, java: str, libs: Path, node_ids: Iterable[int], timeout: float
    ) -> None:
        ids = list(node_ids)
        cmds = [
            self._java_command(
                java,
                libs,
                n,
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",  # keeps the data of a previous run in this workdir
                # one argument, so even an id starting with "-" (from an older state) is a value
                f"--cluster-id={self._cluster_id}",
                *self._scram_arguments(),
                "-c",
                str(self.properties_path(n)),
            )
            for n in ids
        ]
        results = _run_all_bounded(
            cmds, timeout, what="formatting the Kafka storage", error=KafkaClusterError
        )
        for node_id, (code, output) in zip(ids, results, strict=True):
            if code != 0:
                raise KafkaClusterError(
                    f"formatting the storage of node {node_id} failed (exit {code})"
                    f"{_java_failure(output)}\n{_tail_text(output)}"
                )

    def _launch(self, java: str, libs: Path, node_id: int) -> None:
        log_path = self.log_path(node_id)
        if log_path.exists():
            # Readiness looks for READY_LINE in the current log only: keep one previous log.
            log_path.replace(log_path.with_name(log_path.name + ".1"))
        cmd = self._java_command(
            java, libs, node_id, "kafka.Kafka", str(self.properties_path(node_id))
        )
        with log_path.open("ab") as out:
            # argv built here from validated values, no shell (S603 exempted for devtools).
            # start_new_session: the JVM must not receive the terminal's Ctrl-C; this code
            # stops it deliberately.
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.node_dir(node_id),
                start_new_session=True,
            )
        self._procs[node_id] = proc
        _write_atomic(self._pid_path(node_id), f"{proc.pid}\n")
        log.debug("node %d started: pid %d, log %s", node_id, proc.pid, log_path)

    def _died_error(self, node_id: int, during: str) -> KafkaClusterError:
        proc = self._procs.get(node_id)
        code = (
            f" (exit code {proc.returncode})"
            if proc is not None and proc.returncode is not None
            else ""
        )
        log_path = self.log_path(node_id)
        tail = _tail_file(log_path)
        return KafkaClusterError(
            f"Kafka node {node_id} exited {during}{code}{_java_failure(tail)}; see {log_path}\n"
            f"--- last lines of {log_path} ---\n{tail}"
        )

    # ---- readiness ------------------------------------------------------------------------

    def _expected_nodes(self) -> set[int]:
        """Nodes meant to run: those with a pid file (removed only by stop/kill)."""
        return {n for n in self.node_ids if self._pid_path(n).exists()}

    def _logged_ready(self, node_id: int, pid: int) -> bool:
        if pid not in self._ready_pids and _file_contains(
            self.log_path(node_id), READY_LINE.encode()
        ):
            self._ready_pids.add(pid)
        return pid in self._ready_pids

    def _wait_ready(self, required: set[int], deadline: float, *, during: str) -> None:
        """Poll until every node in ``required`` is ready (see module docstring) or fail."""
        if not required:
            raise KafkaClusterError(f"no node of the cluster in {self._workdir} is running")
        while True:
            for node_id in sorted(required):
                if self.pid(node_id) is None:
                    raise self._died_error(node_id, during)
            # Every live node that has finished starting answers the metadata probe; nodes
            # still starting (e.g. restarted by another process) cannot answer yet.
            started = [
                n for n in self.node_ids if (pid := self.pid(n)) and self._logged_ready(n, pid)
            ]
            not_started = sorted(required.difference(started))
            if not_started:
                waiting_for = f"node(s) {not_started} to log {READY_LINE!r}"
            else:
                addresses = [self.direct_address(n) for n in started]
                probe_timeout = min(_PROBE_TIMEOUT_S, max(0.5, deadline - time.monotonic()))
                seen = _run_in_worker_thread(
                    functools.partial(_probe_brokers, addresses, probe_timeout)
                )
                if self._secure is not None:
                    secured = [self.sasl_ssl_address(n) for n in started]
                    seen |= _run_in_worker_thread(
                        functools.partial(
                            _probe_brokers, secured, probe_timeout, self._probe_options()
                        )
                    )
                problems = []
                for address, answer in seen.items():
                    if isinstance(answer, str):
                        problems.append(f"{address}: {answer}")
                    elif not required <= answer:
                        problems.append(f"{address} lists brokers {sorted(answer)}")
                if not problems:
                    return
                waiting_for = f"brokers {sorted(required)} to be registered ({'; '.join(problems)})"
            if time.monotonic() >= deadline:
                raise KafkaClusterError(
                    f"Kafka not ready {during}: timed out waiting for {waiting_for}; "
                    f"logs: {self._workdir}/node*/kafka.log"
                )
            time.sleep(_POLL_S)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until every node meant to run (pid file present) is up and registered."""
        self._wait_ready(self._expected_nodes(), time.monotonic() + timeout, during="while waiting")

    # ---- lifecycle ------------------------------------------------------------------------

    def _java_and_libs(self) -> tuple[str, Path]:
        java = _require_executable("java", "run the Kafka broker")
        return java, ensure_libs(self._version, self._libs_root)

    def start(self, timeout: float = 90.0) -> None:
        """Format (once) and start every node, then wait until the cluster is ready.

        Fetching the jars (first use of a version) is bounded separately and not counted in
        ``timeout``. On any failure or interruption every node started here is stopped again.
        """
        running = [n for n in self.node_ids if self.is_running(n)]
        if running:
            raise KafkaClusterError(
                f"node(s) {running} of the cluster in {self._workdir} already running; "
                "stop it first"
            )
        java, libs = self._java_and_libs()
        started = time.monotonic()
        deadline = started + timeout
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._prepare_workdir()
        for node_id in self.node_ids:
            self._check_ports_free(node_id)
        self._format_storage(
            java, libs, self.node_ids, min(FORMAT_TIMEOUT_S, max(1.0, deadline - time.monotonic()))
        )
        try:
            # All at once: each node blocks until a majority of controllers is up.
            for node_id in self.node_ids:
                self._launch(java, libs, node_id)
            self._wait_ready(set(self.node_ids), deadline, during="during start-up")
        except BaseException:
            # Also on KeyboardInterrupt: never leave half a cluster behind.
            with contextlib.suppress(KafkaToolError):
                self._terminate(self.node_ids, timeout=10.0)
            raise
        count = len(self._specs)
        log.info(
            "%d node%s ready in %.1fs", count, "" if count == 1 else "s", time.monotonic() - started
        )

    def start_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Restart a stopped node with its configuration and data; wait until it is registered."""
        self._spec(node_id)
        pid = self.pid(node_id)
        if pid is not None:
            raise KafkaClusterError(f"node {node_id} is already running (pid {pid})")
        if not self.properties_path(node_id).is_file():
            raise KafkaClusterError(
                f"node {node_id} in {self._workdir} was never started; start the cluster first"
            )
        java, libs = self._java_and_libs()
        started = time.monotonic()
        self._check_ports_free(node_id)
        self._launch(java, libs, node_id)
        try:
            self._wait_ready(
                {node_id}, started + timeout, during=f"while restarting node {node_id}"
            )
        except BaseException:
            with contextlib.suppress(KafkaToolError):
                self._terminate([node_id], timeout=10.0)
            raise
        log.info("node %d ready in %.1fs", node_id, time.monotonic() - started)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node: SIGTERM all, wait up to ``timeout``, SIGKILL the rest. Idempotent."""
        self._terminate(self.node_ids, timeout=timeout)

    def stop_node(self, node_id: int, timeout: float = 30.0) -> bool:
        """SIGTERM one node, SIGKILL it after ``timeout``; False if it was not running."""
        self._spec(node_id)
        return bool(self._terminate([node_id], timeout=timeout))

    def kill_node(self, node_id: int) -> bool:
        """SIGKILL one node (a crash) and wait for it to exit; False if it was not running."""
        self._spec(node_id)
        return bool(self._terminate([node_id], timeout=0.0, sig=signal.SIGKILL))

    def _terminate(
        self, node_ids: Iterable[int], *, timeout: float, sig: signal.Signals = signal.SIGTERM
    ) -> list[int]:
        """Signal the live nodes among ``node_ids`` and wait for them; return those signalled."""
        ids = list(node_ids)
        targets = {n: pid for n in ids if (pid := self.pid(n)) is not None}
        for node_id, pid in targets.items():
            log.debug("node %d (pid %d): sending %s", node_id, pid, sig.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        remaining = self._wait_exited(targets, time.monotonic() + timeout)
        if remaining and sig != signal.SIGKILL:
            log.warning("node(s) %s did not stop within %.0fs: killing", sorted(remaining), timeout)
            for pid in remaining.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        remaining = self._wait_exited(remaining, time.monotonic() + KILL_WAIT_S)
        if remaining:
            raise KafkaClusterError(
                f"node(s) {sorted(remaining)} survived SIGKILL (pids {remaining})"
            )
        for node_id in ids:
            # Stopped on purpose (or was stale): the node is no longer meant to run.
            self._pid_path(node_id).unlink(missing_ok=True)
        return sorted(targets)

    def _wait_exited(self, pids: Mapping[int, int], deadline: float) -> dict[int, int]:
        pending = dict(pids)
        while pending:
            pending = {n: pid for n, pid in pending.items() if self.pid(n) == pid}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return pending

    # ---- context manager ------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"KafkaCluster(workdir={str(self._workdir)!r}, nodes={len(self._specs)}, "
            f"version={self._version!r}, bootstrap_servers={self.bootstrap_servers!r})"
        )
