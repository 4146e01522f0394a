"""bench/loop.py serves each pass on its own simulated week, and the world moves with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.simulate import simulate_world
from nextbest.simulate.response import FATIGUE_WINDOW

from .scripts import ROOT, load_bench

loop = load_bench("loop")


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return simulate_world(n_hcps=300, periods=8, seed=3)


def test_a_touch_tires_its_hcp_of_its_channel_for_the_fatigue_window(world) -> None:  # type: ignore[no-untyped-def]
    timeline = loop.Timeline(world, 8)
    assert np.array_equal(timeline.state().p_engage, world.p_engage)
    hcp = int(np.argmax(world.traits.fatigue_sensitivity))
    # Week 0: one HCP touched on channel 0, no one else.
    timeline.record(np.array([hcp]), np.array([0]))
    touched, quiet = timeline.state().p_engage, _untouched(world, weeks=1)
    on_channel = world.codes.channel == 0
    others = np.arange(world.n_hcps) != hcp
    assert (touched[hcp, on_channel] < quiet[hcp, on_channel]).all()
    assert np.array_equal(touched[hcp, ~on_channel], quiet[hcp, ~on_channel])
    assert np.array_equal(touched[others], quiet[others])
    # FATIGUE_WINDOW weeks on, the touch weighs no more.
    for _ in range(FATIGUE_WINDOW):
        timeline.record(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert np.array_equal(timeline.state().p_engage, _untouched(world, weeks=FATIGUE_WINDOW + 1))


def _untouched(world, *, weeks: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """P(engaged) after ``weeks`` weeks in which no HCP was touched."""
    timeline = loop.Timeline(world, 8)
    for _ in range(weeks):
        timeline.record(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    return timeline.state().p_engage


def test_the_history_leaves_the_fatigue_window_as_the_weeks_pass(world) -> None:  # type: ignore[no-untyped-def]
    # With no touch served, the end-of-history fatigue fades: engagement only rises.
    start = world.p_engage
    later = _untouched(world, weeks=FATIGUE_WINDOW)
    assert (later >= start - 1e-12).all()
    assert (later > start).any()


def test_each_pass_is_served_a_week_after_the_last(world) -> None:  # type: ignore[no-untyped-def]
    first, second = loop.pass_time(world, 0), loop.pass_time(world, 1)
    assert first >= pd.Timestamp(world.decision_time)
    assert second - first == pd.Timedelta(days=7)


def test_the_server_reads_the_simulated_clock(tmp_path: Path) -> None:
    clock = loop.SimulatedClock(tmp_path / "clock")
    clock.set(pd.Timestamp("2026-03-02 12:00"))
    env = {**os.environ, **clock.env()}
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(ROOT / "src")])
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "from nextbest.service import recommend; print(recommend.utc_now().isoformat())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    at = pd.Timestamp(read.stdout.strip())
    assert (
        pd.Timestamp("2026-03-02 12:00", tz="UTC")
        <= at
        < pd.Timestamp("2026-03-02 12:05", tz="UTC")
    )
    # Back to the real time.
    clock.set(None)
    read = subprocess.run(
        [sys.executable, "-c", "from nextbest.clock import utc_now; print(utc_now().isoformat())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert abs(pd.Timestamp(read.stdout.strip()) - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(
        minutes=5
    )
