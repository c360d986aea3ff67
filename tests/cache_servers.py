"""Real Redis and Memcached servers, started by the tests themselves on 127.0.0.1.

``CacheServer.start()`` runs Debian's ``redis-server`` or ``memcached`` on a free loopback port,
in a fresh temporary directory, with nothing persisted; ``stop()`` kills it (``kill -9`` when asked,
for the fault tests) and ``start()`` brings it back on the same port. Servers still up at exit are
stopped. A missing binary skips the test, and fails it in CI (``CI=true``).

``cache_url(name, server)`` is the ``TALLY_CACHE_URL`` of a backend: ``memory://`` needs no server.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST = "127.0.0.1"
BINARIES = {"redis": "redis-server", "memcached": "memcached"}
BACKENDS = ("memory", "redis", "memcached")
START_TIMEOUT = 10.0  # seconds until the port answers

_running: list[CacheServer] = []


def require_binary(kind: str) -> str:
    """The server's path; otherwise skip the test, or fail it in CI (CI=true)."""
    found = shutil.which(BINARIES[kind]) or shutil.which(BINARIES[kind], path="/usr/sbin:/usr/bin")
    if found is not None:
        return found
    reason = f"{BINARIES[kind]} not found (install the Debian package {BINARIES[kind].split('-')[0]})"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class CacheServer:
    kind: str  # "redis" or "memcached"
    port: int = field(default_factory=lambda: _free_port())  # noqa: PLW0108 (defined below)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tally-cache-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.kind}://{HOST}:{self.port}"

    def command(self) -> list[str]:
        binary = require_binary(self.kind)
        if self.kind == "redis":
            return [
                binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.directory),
                "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
                "--logfile", str(self.directory / "redis.log"),
            ]  # fmt: skip
        command = [binary, "-l", HOST, "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # memcached refuses to run as root without -u
        return command

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until the port accepts connections."""
        with (self.directory / f"{self.kind}.out").open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.directory)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {(self.directory / f'{self.kind}.out').read_text()}")
            with suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.2):
                if self not in _running:
                    _running.append(self)
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.kind} did not listen on {self.port} within {START_TIMEOUT} s")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server; ``kill`` sends SIGKILL (a crash) instead of SIGTERM."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def remove(self) -> None:
        self.stop(kill=True)
        if self in _running:
            _running.remove(self)
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def cache_server(kind: str) -> Iterator[CacheServer]:
    server = CacheServer(kind)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def cache_url(kind: str) -> Iterator[str]:
    """``TALLY_CACHE_URL`` of a backend, with its server running for the block."""
    if kind == "memory":
        yield "memory://"
        return
    with cache_server(kind) as server:
        yield server.url


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@atexit.register
def _stop_all() -> None:
    while _running:
        _running[-1].remove()  # remove() takes it off the list
