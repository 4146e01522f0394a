"""bench/feedback.py refuses what it cannot measure, before it builds anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fewer_events_than_a_batch_per_client_is_refused_by_name(tmp_path: Path) -> None:
    # Each of the two clients posts whole batches of 5,000: 5,000 events in all posted
    # nothing, and the figures' median of no latencies ended in an IndexError.
    out = tmp_path / "feedback.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "feedback.py"),
            "--events",
            "5000",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "--events 5000: at least 10,000" in done.stderr
    assert not out.exists()
