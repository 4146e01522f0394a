"""Ctrl-C and a scheduler's SIGTERM: held off for the moment a piece of work must not be
cut in two, and said in one line when they stop the ``nextbest`` command before it
started (this module loads nothing but the standard library's ``signal``)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(SystemExit):
    """A scheduler's SIGTERM, raised in the command as Ctrl-C's KeyboardInterrupt is:
    exit code 143. Said as what it is where a command records why its work stopped
    (``prune``'s ``maintenance_runs``), where a bare SystemExit read '143'."""

    def __str__(self) -> str:
        return "stopped by SIGTERM"


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held (delivered on leaving, unless ignored meanwhile) in
    the main thread of a POSIX process; elsewhere nothing is held. For steps of a
    fraction of a second (files renamed into place, a batch's held log rows committed),
    never for work that may wait long."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not (
        threading.main_thread()
    ):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


# Python's own handlers of the two signals, put back as the command starts; the signals
# :func:`say_stops_until_started` replaced (None: it has not, or they are back); and the
# signal that stopped the command before it started (None: none did). (No ``typing``:
# this module loads before the command line, and the less it loads the sooner a stop
# is said.)
_DEFAULT: dict[signal.Signals, Callable[[int, FrameType | None], object] | signal.Handlers] = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
}
_BEFORE_START: set[signal.Signals] | None = None
_STOPPED_BEFORE_START: int | None = None


def say_stops_until_started() -> None:
    """Until :func:`command_started`, a Ctrl-C or a SIGTERM ends the ``nextbest`` command
    with one line on stderr saying it was stopped before it started and changed
    nothing, then exit code 130 or 143 (raised as KeyboardInterrupt or
    :class:`Terminated`, as during the command). Called first thing by the command's
    entry point: loading the command line (Typer, Rich, pydantic) takes half a second,
    seconds on a busy machine, and a scheduler's SIGTERM then ended it without a
    word (Ctrl-C with a traceback). A signal ignored when the process started (a
    background job's SIGINT) stays ignored."""
    global _BEFORE_START
    if threading.current_thread() is not threading.main_thread():
        return
    _BEFORE_START = set()
    for each, default in _DEFAULT.items():
        if signal.getsignal(each) is default:  # not ignored, nor set by an embedding program
            _BEFORE_START.add(each)
            signal.signal(each, _stopped_before_start)


def command_started() -> None:
    """The command's own code runs from here: Python's own handlers, which
    :func:`say_stops_until_started` replaced, are put back, for the command to set its
    own (a no-op when it replaced none, or they are back already)."""
    global _BEFORE_START
    replaced, _BEFORE_START = _BEFORE_START, None
    if replaced is None or threading.current_thread() is not threading.main_thread():
        return
    for each in replaced:
        signal.signal(each, _DEFAULT[each])


def stopped_before_start() -> int | None:
    """The signal that stopped the command before it started (said already), or None."""
    return _STOPPED_BEFORE_START


def _stopped_before_start(signum: int, frame: FrameType | None) -> None:
    global _STOPPED_BEFORE_START
    _STOPPED_BEFORE_START = signum
    how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    first = sys.argv[1] if len(sys.argv) > 1 else ""
    # An option first (--help, --version) names no command.
    command = f"nextbest {first}" if first and not first.startswith("-") else "nextbest"
    # Written at once and whole, not through sys.stderr, which the code the signal
    # interrupted may be in the middle of writing to.
    os.write(
        2,
        f"error: `{command}` was stopped ({how}) before it started: nothing was changed\n".encode(
            errors="replace"
        ),
    )
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(128 + signum)
