"""LightGBM predictions from several threads at once, as a serving worker makes them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Run in a child process: without a fixed thread count LightGBM corrupts its memory,
# and the crash must fail this test, not take pytest down with it.
SCRIPT = """
import sys, threading, time
import joblib, numpy as np
from nextbest.learning.attribution import fix_predict_threads

model = joblib.load(sys.argv[1])
if sys.argv[2] == "fixed":
    fix_predict_threads(1)
n_hcps, n_actions = len(model.hcp_index), len(model.action_index)
stop = time.monotonic() + float(sys.argv[3])

def work(i):
    # Even threads score one request's candidates, odd ones batch blocks: the two
    # sizes LightGBM would otherwise run with different thread counts.
    rng = np.random.default_rng(i)
    size = 200 if i % 2 == 0 else 5000
    while time.monotonic() < stop:
        hcps = rng.integers(0, n_hcps, size // n_actions + 1)
        pairs = (np.repeat(hcps, n_actions)[:size], np.tile(np.arange(n_actions), len(hcps))[:size])
        model.score(*pairs)

threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok")
"""


def _scoring_artifact(models_dir: Path) -> Path:
    found = sorted(models_dir.rglob("scoring_model.joblib"))
    assert found, f"no scoring_model.joblib under {models_dir}"
    return found[0]


@pytest.mark.parametrize("seconds", [4.0])
def test_scoring_from_several_threads_with_the_thread_count_fixed(
    trained, tmp_path: Path, seconds: float
) -> None:
    # Without fix_predict_threads the same run crashed (SIGSEGV or "double free")
    # in 1 of 3 runs on this small test model, and in most runs on the serving
    # benchmark's model.
    artifact = _scoring_artifact(trained.settings.models_dir)
    script = tmp_path / "hammer.py"
    script.write_text(SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(artifact), "fixed", str(seconds)],
        # LightGBM's own thread count (every core), under which the crash happened.
        env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.strip() == "ok"


def test_the_serving_runtime_fixes_the_thread_count(trained, tmp_path: Path) -> None:
    from nextbest.learning import attribution
    from nextbest.service.runtime import ServingRuntime
    from nextbest.storage.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{tmp_path / 'threads.db'}")
    before = attribution._fixed_threads
    try:
        attribution.fix_predict_threads(None)
        ServingRuntime(trained.settings, engine, make_session_factory(engine))
        assert attribution.predict_threads(10) == {"num_threads": 1}
        assert attribution.predict_threads(100_000) == {"num_threads": 1}
    finally:
        attribution.fix_predict_threads(before)
        engine.dispose()


def test_a_runtime_whose_one_thread_predicts_uses_every_core(trained, tmp_path: Path) -> None:
    # nextbest picks --log: no server, no warming, no watcher; big blocks get
    # LightGBM's default thread count, a request-sized one still a single thread.
    from nextbest.learning import attribution
    from nextbest.service.runtime import ServingRuntime
    from nextbest.storage.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{tmp_path / 'threads.db'}")
    before = attribution._fixed_threads
    try:
        attribution.fix_predict_threads(1)
        ServingRuntime(trained.settings, engine, make_session_factory(engine), predict_threads=None)
        assert attribution.predict_threads(100_000) == {}
        assert attribution.predict_threads(10) == {"num_threads": 1}
    finally:
        attribution.fix_predict_threads(before)
        engine.dispose()
