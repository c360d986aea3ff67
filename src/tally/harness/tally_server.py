"""A real ``tally serve`` process on loopback, started and stopped by Tally's tools (bench, drills).

``start_tally`` runs the ``tally`` console script installed next to the running interpreter, in a
given directory, on a free 127.0.0.1 port, with an explicit environment: the caller's variables
minus every ``TALLY_*`` one, plus exactly the ``TALLY_*`` settings it is given, so that a setting
exported in the caller's shell cannot skew a measurement or a drill. It returns once ``/healthz``
answers 200. ``TallyServer.stop`` sends SIGTERM (uvicorn's graceful shutdown), then SIGKILL if the
process has not exited in time. The server's standard output and error go to a log file.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0  # seconds; a first start on PostgreSQL creates the schema
STOP_TIMEOUT = 15.0  # seconds of graceful shutdown before SIGKILL


class TallyServerError(RuntimeError):
    """The server exited or did not become healthy in time; the message ends with its last log lines."""


@dataclass
class TallyServer:
    """One running ``tally serve``: its process, base URL (``http://127.0.0.1:PORT``) and log file."""

    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    log_path: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit status. Again: a no-op."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL, as a crash: no graceful shutdown; return the exit status."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def start_tally(
    directory: Path,
    env: Mapping[str, str],
    *,
    args: Sequence[str] = (),
    port: int | None = None,
    log_path: Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> TallyServer:
    """Start ``tally serve --port PORT [args]`` in ``directory`` and wait until it is healthy.

    ``env`` holds the ``TALLY_*`` settings (any other name is refused: the rest of the environment
    is the caller's). Without ``TALLY_DATABASE_URL`` the server uses ``directory/tally.db``.
    ``args`` are extra ``tally serve`` options, such as ``("--workers", "2")``. The log goes to
    ``log_path`` (default ``directory/tally-PORT.log``), appended to if it exists.
    """
    strangers = sorted(name for name in env if not name.startswith("TALLY_"))
    if strangers:
        raise ValueError(f"only TALLY_* settings are passed this way, not {strangers}")
    port = port or free_port()
    log_path = log_path or directory / f"tally-{port}.log"
    full_env = {name: value for name, value in os.environ.items() if not name.startswith("TALLY_")}
    full_env.update(env)
    tally = Path(sys.executable).parent / "tally"
    command = [str(tally), "serve", "--host", HOST, "--port", str(port), *args]
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own console script, no shell
            command, env=full_env, cwd=directory, stdout=log, stderr=subprocess.STDOUT
        )
    server = TallyServer(process, f"http://{HOST}:{port}", port, log_path)
    try:
        _wait_until_healthy(server, ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def running_tally(
    directory: Path,
    env: Mapping[str, str],
    *,
    args: Sequence[str] = (),
    port: int | None = None,
    log_path: Path | None = None,
) -> Iterator[TallyServer]:
    """``start_tally`` for a ``with`` block, stopped at its end."""
    server = start_tally(directory, env, args=args, port=port, log_path=log_path)
    try:
        yield server
    finally:
        server.stop()


def _wait_until_healthy(server: TallyServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not server.running():
            raise TallyServerError(
                f"tally serve exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        if _healthy(server.port):
            return
        if time.monotonic() > deadline:
            raise TallyServerError(f"tally serve not healthy after {timeout} s:\n{server.log_tail()}")
        time.sleep(0.05)


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
