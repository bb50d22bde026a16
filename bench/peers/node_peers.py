"""Peers on the Node.js stack the project started from: NestJS 11 with kafkajs 2.2.4.

The TypeScript project in `bench/peers/node/` (pinned by its `package-lock.json`) serves the
same HTTP contract as the Python peers, against the same broker, in one of three modes:

- `nest_emit`: `@nestjs/microservices`' `ClientKafka` (producer-only) `emit`s the record;
- `nest_send`: `ClientKafka` request-reply: the route `send`s the record and answers `200`
  with the reply of a Nest Kafka microservice that `main.js` runs as its child process;
- `kafkajs`: a raw kafkajs `Producer` from an async Nest provider `send`s the record.

Run one with `command(mode)` and the environment `BENCH_BOOTSTRAP_SERVERS`, `BENCH_TOPIC`,
`BENCH_ACKS` (`0`, `1`, `all`), `BENCH_HOST`, `BENCH_PORT`, `BENCH_WORKERS` (`1` or `2`).
`install()` installs Node.js (Debian's packages, when missing) and the peers, and builds them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

__all__ = ["MODES", "NODE_DIR", "command", "install", "versions"]

NODE_DIR = Path(__file__).resolve().parent / "node"
MODES = ("nest_emit", "nest_send", "kafkajs")

_INSTALL_TIMEOUT_S = 1800.0
_TAIL_LINES = 30
_PACKAGES = ("@nestjs/core", "@nestjs/microservices", "kafkajs")


def install() -> str:
    """Run `install.sh`; return its last line (the versions). RuntimeError on failure."""
    script = NODE_DIR / "install.sh"
    try:
        # A fixed script of this repository, no shell.
        done = subprocess.run(  # noqa: S603
            ["bash", str(script)],  # noqa: S607
            cwd=NODE_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{script} did not finish in {_INSTALL_TIMEOUT_S:.0f}s") from exc
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-_TAIL_LINES:])
        raise RuntimeError(f"{script} exited with {done.returncode}:\n{tail}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{script} printed no versions:\n{output}")
    return lines[-1]


def command(mode: str) -> list[str]:
    """The argv of one peer; the harness adds the environment."""
    if mode not in MODES:
        raise ValueError(f"unknown Node peer {mode!r}: one of {', '.join(MODES)}")
    return ["node", str(NODE_DIR / "dist" / "main.js"), mode]


def _tool_version(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed: run install()")
    # A program found on PATH with a fixed argument, no shell.
    done = subprocess.run(  # noqa: S603
        [path, "--version"], capture_output=True, text=True, timeout=60.0, check=True
    )
    return done.stdout.strip().removeprefix("v")


def _package_version(name: str) -> str:
    manifest = NODE_DIR / "node_modules" / name / "package.json"
    try:
        data = json.loads(manifest.read_text())
    except OSError as exc:
        raise RuntimeError(f"{name} is not installed in {NODE_DIR}: run install()") from exc
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str):
        raise RuntimeError(f"{manifest} names no version")
    return version


def versions() -> dict[str, str]:
    """What runs the peers: node, npm and the installed versions of the Kafka packages."""
    found = {"node": _tool_version("node"), "npm": _tool_version("npm")}
    found.update({name: _package_version(name) for name in _PACKAGES})
    return found
