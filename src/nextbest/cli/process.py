"""The command's own process: a scheduler's SIGTERM handled as Ctrl-C, and signals
ignored once the work is done. This module holds the process's state
(``OWN_PROCESS``, ``DONE``); other modules read it through the module."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from nextbest.signals import Terminated


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def interruption(stopped: BaseException) -> str | None:
    """``Ctrl-C`` or ``SIGTERM`` when ``stopped`` is one of them, else None."""
    if isinstance(stopped, KeyboardInterrupt):
        return "Ctrl-C"
    return "SIGTERM" if isinstance(stopped, Terminated) else None


def stop_within(exc: BaseException) -> BaseException | None:
    """The Ctrl-C or SIGTERM ``exc`` was raised from, if any (its causes and contexts):
    a signal that came while Python was building a class (MLflow's, as it is imported)
    reaches the code as a RuntimeError about ``__set_name__``, and a handler of errors
    took the stop for a failure (`erase`: "the model registry could not be read", exit
    code 1, where a scheduler's SIGTERM is 143)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if interruption(link) is not None:
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


@contextmanager
def said_if_stopped(what_it_left: Callable[[str], str]) -> Iterator[None]:
    """On a Ctrl-C or a scheduler's SIGTERM (also one Python wrapped in another error,
    see :func:`stop_within`), print ``what_it_left(how)`` as the command's error line,
    ``how`` being "Ctrl-C" or "SIGTERM", unless the registry has said what the stop left
    (a run it ended KILLED, a champion's move); then the stop goes on. A command
    stopped without a word left a job's log ending on a step, as if it were still at
    work or died of itself."""
    import sys

    try:
        yield
    except BaseException as raised:
        stopped = stop_within(raised) or raised
        how = interruption(stopped)
        registry = sys.modules.get("nextbest.registry")
        if how is not None and not (registry is not None and registry.interruption_said(stopped)):
            from nextbest.cli.output import console

            console.print(f"[red]error:[/red] {what_it_left(how)}", highlight=False)
        raise


# Set by main(): this process is the `nextbest` command, and ends with the command.
OWN_PROCESS = False
DONE = False  # the command's work is complete: see ignore_signals_from_now_on
_DEPTH = 0  # interruptible_as_ctrl_c blocks entered and not left (the command's own, a step's)


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
    outlive the command and pass to every child it starts). Blocks nest: every
    command but ``serve`` runs in one (see :func:`nextbest.cli._main`), and a step
    in its own; the work is done until the outermost is left. Outside the main
    thread (a command run by a test's thread), where no handler can be set, a
    no-op."""
    global DONE, _DEPTH
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _DEPTH += 1
    try:
        yield
    finally:
        _DEPTH -= 1
        if not (DONE and OWN_PROCESS):
            signal.signal(signal.SIGINT, before[0])
            signal.signal(signal.SIGTERM, before[1])
        if not _DEPTH:
            DONE = False
