"""Exclusive locks taken without blocking, tried again until a deadline: the lock of a
model's champion decisions (:func:`nextbest.registry.deciding_alone`, a file, a
PostgreSQL advisory lock or a MySQL named lock) and the lock of an API key file's changes
(``nextbest.service.apikeys``). A blocking ``flock`` would wait for ever, with
nothing said; each caller says whom it waits for, and gives up past its deadline
naming it. Nothing is imported at import time (``fcntl`` exists on POSIX only).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def try_flock(fd: int) -> bool:
    """Take an exclusive ``flock`` on open file ``fd`` if no other holds it; whether
    it was taken. It is released when every descriptor of that open file is closed
    (however its process ends)."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def take_within(
    take: Callable[[], bool],
    wait_s: float,
    *,
    every_s: float,
    waiting: Callable[[], None] | None = None,
) -> bool:
    """Call ``take`` (which tries a lock without blocking: whether it took it) until
    it takes it or ``wait_s`` seconds have passed, every ``every_s`` seconds; whether
    it was taken. ``waiting`` is called once, when the lock is found held and will be
    tried again (not when ``wait_s`` is 0: then it is tried once)."""
    deadline = time.monotonic() + wait_s
    said = False
    while not take():
        if time.monotonic() >= deadline:
            return False
        if not said and waiting is not None:
            waiting()
        said = True
        time.sleep(every_s)
    return True
