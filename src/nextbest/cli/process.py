"""The command's own process: a scheduler's SIGTERM handled as Ctrl-C, and signals
ignored once the work is done. This module holds the process's state
(``OWN_PROCESS``, ``DONE``); other modules read it through the module."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


# Set by main(): this process is the `nextbest` command, and ends with the command.
OWN_PROCESS = False
DONE = False  # the command's work is complete: see ignore_signals_from_now_on


def ignore_signals_from_now_on() -> None:
    """The work is complete (a logged file published): SIGINT and SIGTERM are ignored
    until the process exits, a second or so of shutting down, so that a scheduler's
    late signal does not turn a done run into a failed one it would run again."""
    global DONE
    DONE = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def interruptible_as_ctrl_c() -> Iterator[None]:
    """A scheduler's SIGTERM interrupts as Ctrl-C does, so the work's cleanup runs
    (``picks --log`` removes its partial file; exit code 143). On leaving, the
    handlers before are put back, unless the work is done and this process ends
    with it (in another caller's process, such as a test's, ignored signals would
    outlive the command and pass to every child it starts)."""
    global DONE
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        if not (DONE and OWN_PROCESS):
            signal.signal(signal.SIGINT, before[0])
            signal.signal(signal.SIGTERM, before[1])
        DONE = False
