"""Several worker processes, each accepting connections on its own socket.

uvicorn's supervisor binds one listening socket and hands it to every worker, so
all workers wait on one accept queue and the kernel gives most new connections
to whichever worker waited last. Keep-alive clients (a CRM back end's connection
pool, an e-mail system's batch client) then stay pinned to few workers while
other cores idle: in ``make bench-serve`` (32 connections, 1,000 requests/s
offered, two workers) one worker used twice the CPU of the other and queued
requests for seconds while the other had time to spare.

On Linux, ``SO_REUSEPORT`` lets each worker bind a socket of its own to the same
address; the kernel then spreads connections over the sockets by a hash of the
connection's addresses. uvicorn's supervisor passes its "sockets" to each worker
it starts (and restarts) by pickling them; :class:`OwnListener` stands in for the
shared socket and unpickles, in each worker, as a freshly bound socket of that
worker's own.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class AddressInUseError(OSError):
    """Another process already listens on the address."""


def balanced_listeners_supported() -> bool:
    """True where the kernel balances connections across ``SO_REUSEPORT`` sockets."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    """IPv6 for an address with a colon, IPv4 otherwise (names such as "localhost"
    included), the rule uvicorn applies to its own socket."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_own_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``(host, port)`` that other workers' sockets may share."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class OwnListener:
    """Pickles as an instruction to bind: each worker unpickles its own socket."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return bind_own_socket, (self.host, self.port)


def check_address_free(host: str, port: int) -> None:
    """Raise :class:`AddressInUseError` if anything listens on ``(host, port)``.

    A plain bind (without ``SO_REUSEPORT``) fails whenever a socket is bound to the
    address, so a second ``nextbest serve`` on the same port is refused here, once,
    instead of silently sharing the port with the first.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            what = (
                "the address is in use (another server on this port?): stop it, or serve "
                "on another port (--port, NEXTBEST_PORT)"
                if exc.errno == errno.EADDRINUSE
                else exc.strerror
            )
            raise AddressInUseError(exc.errno, f"cannot listen on {host}:{port}: {what}") from None


def run_balanced(config: Any, *, before_restart: Callable[[], str | None] | None = None) -> None:
    """Run ``config.workers`` uvicorn workers, each on its own ``SO_REUSEPORT`` socket.

    A worker that fails to start makes uvicorn's supervisor stop every worker and
    return normally; the process then exits with the worker's start-up failure
    code, as a single-worker ``uvicorn.run`` does, not 0: a service manager that
    restarts on failure, or a script, must see that the server did not run.

    ``before_restart`` is asked before a SIGHUP replaces the workers: when it
    returns a reason, the workers serving are kept and the reason is logged as an
    error (``event: restart_refused``).
    """
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from nextbest.api.logs import ServeLogFilter

    class Supervisor(Multiprocess):
        def keep_subprocess_alive(self) -> None:
            for worker in self.processes:
                close_workers_end(worker)
            before = list(self.processes)
            running = {worker.pid for worker in before if worker.exitcode is None}
            started = time.monotonic()
            super().keep_subprocess_alive()
            # uvicorn kills a running worker that does not answer its health check
            # in time: that SIGKILL is the supervisor's, not the kernel's.
            limit = float(getattr(self.config, "timeout_worker_healthcheck", 5))
            unanswered = time.monotonic() - started >= limit
            for worker in before:
                if worker not in self.processes:  # it died and was replaced
                    code = worker.exitcode
                    how = (
                        f"it did not answer the supervisor's health check within {limit:g} s "
                        "and was killed"
                        if unanswered and worker.pid in running
                        else describe_exit(code)
                    )
                    logger.warning(
                        "Child process [%s] died: %s; a new worker replaces it",
                        worker.pid,
                        how,
                        extra={"event": "worker_died", "exit_code": code},
                    )

        def restart_all(self) -> None:
            problem = before_restart() if before_restart is not None else None
            if problem is not None:
                logger.error(
                    "SIGHUP: the workers serving are kept, not replaced: %s; fix it and "
                    "send SIGHUP again",
                    problem,
                    extra={"event": "restart_refused"},
                )
                return
            super().restart_all()

    ServeLogFilter.deaths_said_by_supervisor = True  # uvicorn's own line says less
    check_address_free(config.host, config.port)
    listener: Any = OwnListener(config.host, config.port)
    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before 0.52
        from uvicorn import Server

        supervisor = Supervisor(config, target=Server(config).run, sockets=[listener])  # type: ignore[call-arg]
    else:
        supervisor = Supervisor(config, sockets=[listener])
    supervisor.run()
    if any(getattr(worker, "exitcode", None) == STARTUP_FAILURE for worker in supervisor.processes):
        raise SystemExit(STARTUP_FAILURE)


def describe_exit(code: int | None) -> str:
    """A worker's exit code as an operator reads it: the signal that killed it, and
    for SIGKILL who usually sends it."""
    if code is None:
        return "exit code unknown"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if name == "SIGKILL":
        return "killed by SIGKILL (the kernel's out-of-memory killer sends it, as does kill -9)"
    return f"killed by {name}"


def close_workers_end(worker: Any) -> None:
    """Close the supervisor's copy of a started worker's end of its health-check pipe.

    uvicorn's supervisor pings each worker over a pipe and waits up to its
    health-check time (60 s, set by `nextbest serve`) for the answer, keeping both
    ends of the pipe open. A worker that died while a ping was pending (a stop's
    SIGTERM reaching a worker still starting or busy warming its cache) therefore
    never closed the pipe: the supervisor waited the whole minute before it noticed,
    and a stop hung that long. With the supervisor's copy closed, the worker's death
    closes the pipe and the wait ends at once. The worker has its own copy from
    when it was started; the supervisor only ever uses the other end.
    """
    end = getattr(worker, "child_conn", None)
    if end is not None and getattr(worker, "pid", None) is not None:
        end.close()


# Set by `nextbest serve` for its workers: the process that started them.
SUPERVISOR_ENV = "NEXTBEST_SUPERVISOR_PID"


def die_with_supervisor(supervisor_pid: str | None) -> bool:
    """Ask the kernel to send this worker SIGTERM when its supervisor dies (Linux).

    A supervisor killed outright (SIGKILL, the kernel's out-of-memory killer)
    cannot stop its workers: they went on serving as orphans, holding the port, so
    the restarted server was refused it. ``supervisor_pid`` is the process that
    started the workers (``NEXTBEST_SUPERVISOR_PID``, set by ``nextbest serve``);
    a worker whose parent is already another process (the supervisor died before
    this ran) stops at once. False where there is no such kernel facility.
    """
    if supervisor_pid is None or not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    if str(os.getppid()) != supervisor_pid:
        os.kill(os.getpid(), signal.SIGTERM)
    return True
