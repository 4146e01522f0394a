"""The simulated clock of the closed-loop bench's server (bench/loop.py).

bench/loop.py puts this directory on its server's ``PYTHONPATH`` with
``BENCH_LOOP_CLOCK_FILE`` naming a file that holds an offset in seconds. Before
nextbest is imported, its clock (``nextbest.clock.utc_now``: what the service decides,
logs its answers and receives feedback by) is replaced by the real time plus that
offset, the file read at every reading, so the bench moves the server's time by
writing the file: each pass of the loop is served on its own simulated week. Without
the variable nothing is changed (and nothing imported).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

_FILE = os.environ.get("BENCH_LOOP_CLOCK_FILE")

if _FILE:
    import nextbest.clock as _clock

    def _simulated_now(path: str = _FILE) -> datetime:
        with open(path, encoding="utf-8") as file:
            offset = float(file.read().strip() or 0.0)
        return datetime.now(UTC) + timedelta(seconds=offset)

    _clock.utc_now = _simulated_now
