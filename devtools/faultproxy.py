"""A TCP fault proxy on loopback for fault tests: Shopify's toxiproxy, built from its Go module.

Contract
--------
* Binary: ``ensure_toxiproxy`` builds ``github.com/Shopify/toxiproxy/v2/cmd/server@<version>``
  with the machine's ``go`` (``go install`` through the Go module proxy) into
  ``<repo>/.tools/toxiproxy/<version>/server``, once: a ``.complete`` marker is written last
  and a lock file serialises concurrent callers. The build is bounded (``BUILD_TIMEOUT_S``);
  it needs Go 1.23 or later.
* ``FaultProxy(workdir)`` runs one toxiproxy server, its HTTP API on a free 127.0.0.1 port,
  its log in ``<workdir>/toxiproxy.log``. ``start``/``stop``, or use it as a context manager.
  The server runs in its own session and is stopped with SIGTERM, then SIGKILL.
* Routes: ``add(name, listen, upstream)`` serves ``listen`` and forwards each connection to
  ``upstream``. Both must be loopback addresses (127.0.0.0/8 or ::1).
* Faults, each on a set of routes and undone by ``heal``:

  - ``cut(names, REFUSE)``: the route stops listening and its connections are closed: a peer
    gets "connection refused" at once.
  - ``cut(names, BLACKHOLE)``: connections stay open and new ones are accepted, but no byte
    passes in either direction: the peer sees silence, not an error, until its own timeouts
    (the harsher and more realistic partition). Healing closes the blackholed connections
    (toxiproxy ends a connection when its timeout toxic is removed); new ones then pass.
  - ``slow(names, latency_ms=, jitter_ms=, rate_kb_s=)``: latency added to each direction, and
    optionally a bandwidth cap per direction and connection.
  - ``reset(names, after_ms=, toxicity=)``: a share ``toxicity`` of the connections are reset
    (TCP RST) ``after_ms`` after they next carry data, and so are new ones.
  - ``heal(names)``: every fault removed from those routes (from all when None).
* Every HTTP call is bounded (``API_TIMEOUT_S``); failures raise ``FaultProxyError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

__all__ = [
    "BLACKHOLE",
    "REFUSE",
    "TOXIPROXY_VERSION",
    "CutMode",
    "FaultProxy",
    "FaultProxyError",
    "ensure_toxiproxy",
]

log = logging.getLogger(__name__)

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
TOXIPROXY_VERSION = "v2.12.0"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO_ROOT / ".tools" / "toxiproxy"
BUILD_TIMEOUT_S = 600.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
API_TIMEOUT_S = 10.0
_POLL_S = 0.05
_COMPLETE = ".complete"

CutMode = Literal["refuse", "blackhole"]
REFUSE: CutMode = "refuse"
BLACKHOLE: CutMode = "blackhole"
_STREAMS = ("upstream", "downstream")


class FaultProxyError(RuntimeError):
    """The fault proxy could not be built, started or told what to do."""


def ensure_toxiproxy(
    version: str = TOXIPROXY_VERSION, root: Path = DEFAULT_ROOT, *, timeout: float = BUILD_TIMEOUT_S
) -> Path:
    """The toxiproxy server binary of ``version``, built first if needed (see the contract)."""
    directory = root / version
    binary = directory / "server"
    if (directory / _COMPLETE).is_file() and binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise FaultProxyError(
            "`go` not found on PATH; it is needed once to build toxiproxy (Go 1.23 or later)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with (root / f".{version}.lock").open("a") as lock:
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FaultProxyError("timed out waiting for the build lock") from None
                time.sleep(0.2)
        if (directory / _COMPLETE).is_file() and binary.is_file():
            return binary
        log.info("building toxiproxy %s with %s", version, go)
        started = time.monotonic()
        env = {**os.environ, "GOBIN": str(directory), "GOFLAGS": "-buildvcs=false"}
        try:
            done = subprocess.run(
                [go, "install", f"{TOXIPROXY_MODULE}@{version}"],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise FaultProxyError(f"building toxiproxy timed out after {timeout:.0f}s") from None
        if done.returncode != 0 or not binary.is_file():
            output = (done.stdout + done.stderr).decode("utf-8", "replace")[-4000:]
            raise FaultProxyError(f"go install {TOXIPROXY_MODULE}@{version} failed\n{output}")
        (directory / _COMPLETE).write_text(json.dumps({"version": version}) + "\n")
        log.info("built toxiproxy %s in %.1fs", version, time.monotonic() - started)
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_loopback(address: str) -> None:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback and port.isdigit()
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{address!r} is not a loopback address (127.0.0.0/8 or [::1]) and port")


class FaultProxy:
    """One toxiproxy server and its routes; see the module docstring."""

    def __init__(self, workdir: Path, *, version: str = TOXIPROXY_VERSION) -> None:
        self._workdir = workdir
        self._version = version
        self._process: subprocess.Popen[bytes] | None = None
        self._api: httpx.Client | None = None
        self.routes: dict[str, tuple[str, str]] = {}  # name -> (listen, upstream)

    @property
    def log_path(self) -> Path:
        return self._workdir / "toxiproxy.log"

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self._process is not None:
            raise FaultProxyError("the fault proxy is already running")
        binary = ensure_toxiproxy(self._version)
        self._workdir.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                [str(binary), "-host", "127.0.0.1", "-port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LOG_LEVEL": "warn"},
                start_new_session=True,
            )
        self._api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=API_TIMEOUT_S)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise FaultProxyError(f"toxiproxy exited with {code}; see {self.log_path}")
            with contextlib.suppress(httpx.TransportError):
                if self._api.get("/version").status_code == 200:
                    return
            if time.monotonic() >= deadline:
                self.stop()
                raise FaultProxyError(f"toxiproxy did not answer within {timeout:.0f}s")
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Stop the server (idempotent): its routes close with it."""
        if self._api is not None:
            self._api.close()
            self._api = None
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)

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

    # ---- routes ---------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, ok: Iterable[int]
    ) -> Any:
        if self._api is None:
            raise FaultProxyError("the fault proxy is not running")
        try:
            response = self._api.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise FaultProxyError(f"{method} {path}: {type(error).__name__}: {error}") from error
        if response.status_code not in set(ok):
            raise FaultProxyError(
                f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    def add(self, name: str, listen: str, upstream: str) -> None:
        """Serve ``listen`` (loopback) and forward every connection to ``upstream``."""
        _check_loopback(listen)
        _check_loopback(upstream)
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        self._call("POST", "/proxies", body, ok=(201,))
        self.routes[name] = (listen, upstream)

    def _names(self, names: Iterable[str] | None) -> list[str]:
        chosen = list(self.routes) if names is None else list(names)
        unknown = [n for n in chosen if n not in self.routes]
        if unknown:
            raise FaultProxyError(f"no route(s) {unknown}; routes are {sorted(self.routes)}")
        return chosen

    def _toxic(
        self, name: str, kind: str, stream: str, attributes: Mapping[str, int], toxicity: float
    ) -> None:
        body = {
            "name": f"{kind}-{stream}",
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": dict(attributes),
        }
        self._call("POST", f"/proxies/{name}/toxics", body, ok=(200,))

    def cut(self, names: Iterable[str], mode: CutMode = REFUSE) -> None:
        """Partition the routes: refuse connections, or accept them and pass nothing."""
        for name in self._names(names):
            if mode == REFUSE:
                self._call("POST", f"/proxies/{name}", {"enabled": False}, ok=(200,))
            elif mode == BLACKHOLE:
                for stream in _STREAMS:
                    self._toxic(name, "timeout", stream, {"timeout": 0}, 1.0)
            else:
                raise ValueError(f"unknown cut mode {mode!r}")

    def slow(
        self,
        names: Iterable[str],
        *,
        latency_ms: int = 0,
        jitter_ms: int = 0,
        rate_kb_s: int | None = None,
    ) -> None:
        """Add latency (each direction) and optionally cap the bandwidth of the routes."""
        for name in self._names(names):
            for stream in _STREAMS:
                if latency_ms or jitter_ms:
                    attributes = {"latency": latency_ms, "jitter": jitter_ms}
                    self._toxic(name, "latency", stream, attributes, 1.0)
                if rate_kb_s is not None:
                    self._toxic(name, "bandwidth", stream, {"rate": rate_kb_s}, 1.0)

    def reset(self, names: Iterable[str], *, after_ms: int = 0, toxicity: float = 1.0) -> None:
        """Reset (RST) a share ``toxicity`` of the connections once they carry data."""
        if not 0.0 < toxicity <= 1.0:
            raise ValueError("toxicity is a share of the connections, within (0, 1]")
        for name in self._names(names):
            self._toxic(name, "reset_peer", "downstream", {"timeout": after_ms}, toxicity)

    def heal(self, names: Iterable[str] | None = None) -> None:
        """Remove every fault from the routes (all routes when ``names`` is None)."""
        for name in self._names(names):
            for toxic in self._call("GET", f"/proxies/{name}/toxics", ok=(200,)) or []:
                self._call("DELETE", f"/proxies/{name}/toxics/{toxic['name']}", ok=(204, 404))
            self._call("POST", f"/proxies/{name}", {"enabled": True}, ok=(200,))

    def faults(self) -> dict[str, list[str]]:
        """Route name -> the faults on it now ("refuse", "timeout-upstream", ...)."""
        found: dict[str, list[str]] = {}
        for name, proxy in (self._call("GET", "/proxies", ok=(200,)) or {}).items():
            active: list[str] = [] if proxy.get("enabled", True) else [REFUSE]
            active += [t["name"] for t in proxy.get("toxics", [])]
            if active:
                found[name] = active
        return found
