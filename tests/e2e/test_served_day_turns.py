"""End to end: `nextbest serve` with NEXTBEST_FRESH_HISTORY on, its clock moved as the
closed-loop bench moves it (bench/simclock): each worker moves its served HCP history
on to the new day, and /healthz says the day."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from nextbest import registry
from nextbest.api.process import free_port, start_server, stop_server

pytestmark = pytest.mark.e2e

KEY = "e2e-admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
# What replaces the server's clock (nextbest.clock.utc_now) by the real time plus the
# offset in a file, read at every reading.
SIMCLOCK = Path(__file__).resolve().parents[2] / "bench" / "simclock"


def _set_clock(path: Path, at: datetime) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{(at - datetime.now(at.tzinfo)).total_seconds():.6f}")
    tmp.replace(path)


def _moves(log: Path, day: datetime) -> set[int]:
    """The worker pids that logged moving their history on to ``day``."""
    said = f"HCP history moved on to {day.date().isoformat()} "
    pids = set()
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if said in entry.get("message", ""):
                pids.add(int(entry["pid"]))
    return pids


def test_each_worker_moves_its_history_on_when_the_served_day_turns(
    trained, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    model = registry.load_alias(trained.settings)[0]
    cut_off = pd.Timestamp(model.as_of).tz_localize("UTC")
    day0 = (cut_off + pd.Timedelta(days=40)).normalize().to_pydatetime()
    day1 = day0 + timedelta(days=1)
    clock = tmp_path / "clock"
    _set_clock(clock, day0 + timedelta(hours=9))
    paths = [SIMCLOCK, *(Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env = {
        **os.environ,
        "BENCH_LOOP_CLOCK_FILE": str(clock),
        "PYTHONPATH": os.pathsep.join(str(p.resolve()) for p in paths),
        "NEXTBEST_MODELS_DIR": str(models),
        "NEXTBEST_FRESH_HISTORY": "true",
        "NEXTBEST_START_WARM_S": "0",
        "NEXTBEST_API_KEYS": json.dumps([{"name": "e2e", "role": "admin", "key": KEY}]),
    }
    log = models / "server.log"
    port = free_port()
    proc = start_server(port=port, env=env, args=["--workers", "2"], log_file=log)
    base = f"http://127.0.0.1:{port}"
    try:
        health = httpx.get(f"{base}/healthz", timeout=10).json()
        assert health["features_as_of"] == day0.isoformat(), health
        hcp = str(model.hcps["hcp_id"].iat[0])
        contact = {
            "event_id": "fresh-e2e-1",
            "event_type": "delivered",
            "hcp_id": hcp,
            "channel": "email",
            "occurred_at": (day0 + timedelta(hours=1)).isoformat(),
        }
        # Opened an hour later (a send nextbest did not suggest: its open names no
        # recommendation either, and belongs to the HCP's latest e-mail).
        opened = {
            **contact,
            "event_id": "fresh-e2e-2",
            "event_type": "opened",
            "occurred_at": (day0 + timedelta(hours=2)).isoformat(),
        }
        stored = httpx.post(
            f"{base}/v1/feedback", json={"events": [contact, opened]}, headers=AUTH, timeout=10
        )
        assert stored.status_code == 200, stored.text

        # Both workers loaded (each moved at its load) before the day turns: the one that
        # answered /healthz first may be the only one up yet on a busy machine.
        deadline = time.monotonic() + 30
        while len(_moves(log, day0)) < 2:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        _set_clock(clock, day1 + timedelta(hours=1))
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/healthz", timeout=10).json()["features_as_of"] != (
            day1.isoformat()
        ):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        # The other worker moves its own at its next request or watcher poll.
        while len(_moves(log, day1)) < 2:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        stop_server(proc)
    said = [line for line in log.read_text().splitlines() if "moved on to" in line]
    # The day's move read the contact and its engagement, as the store has them.
    on_day1 = [line for line in said if f"moved on to {day1.date().isoformat()}" in line]
    assert on_day1 and all("(1 read, 1 engaged;" in line for line in on_day1), said
