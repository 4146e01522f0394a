"""Run ``nextbest serve`` as a real process on loopback: for end-to-end tests,
benchmarks and anything else that must talk to the server over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx


class ServerNotReadyError(RuntimeError):
    """The server process exited or did not answer ``/readyz`` in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    *,
    port: int,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    log_file: Path | None = None,
    timeout_s: float = 120.0,
) -> subprocess.Popen[bytes]:
    """Start ``nextbest serve --port PORT [args]`` in its own process group and
    return once ``/readyz`` answers 200.

    Output goes to ``log_file`` (appended) or is discarded. Raises
    :class:`ServerNotReadyError`, with the end of the log when there is one, if
    the process exits or is not ready within ``timeout_s``; the process is then
    killed.
    """
    log = log_file.open("ab") if log_file is not None else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "nextbest.cli", "serve", "--port", str(port), *args],
        env=dict(env),
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if log is not None:
        log.close()  # the child holds its own descriptor
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerNotReadyError(
                f"server exited with {proc.returncode} before it was ready{_tail(log_file)}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(proc, sig=signal.SIGKILL)
    raise ServerNotReadyError(f"server not ready in {timeout_s:.0f} s{_tail(log_file)}")


def stop_server(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout_s: float = 30.0
) -> None:
    """Send ``sig`` to the server's whole process group (its workers too) and wait."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    proc.wait(timeout=timeout_s)


def _tail(log_file: Path | None) -> str:
    if log_file is None or not log_file.exists():
        return ""
    return ":\n" + log_file.read_text(errors="replace")[-3000:]
