"""Ctrl-C and a scheduler's SIGTERM held off for the moment a piece of work must not be
cut in two."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
