"""Commands a signal stops (Ctrl-C, a scheduler's SIGTERM) at the moments a job's log
said nothing of: what each leaves, and that it says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.settings import get_settings

ROOT = Path(__file__).parents[2]
FAST = Path(__file__).parent / "fast_train.yaml"
runner = CliRunner()


def _said(result) -> str:  # type: ignore[no-untyped-def]
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    ("sent", "at", "how", "code"),
    [
        (signal.SIGTERM, "train config: ", "SIGTERM", 143),
        (signal.SIGINT, "features", "Ctrl-C", 130),
    ],
    ids=["sigterm-as-it-starts", "ctrl-c-in-features"],
)
def test_a_training_stopped_before_its_run_says_no_version_was_registered(
    world_dir: Path, tmp_path: Path, sent: signal.Signals, at: str, how: str, code: int
) -> None:
    """Stopped before it logged its MLflow run (loading its code, reading the data,
    building features), `train` ended with exit code 143 (or 130) and not a word: a
    job's log ended on its config line or a step, as if still at work. It says it was
    stopped, where, and that no version was registered; and none was."""
    models = tmp_path / "models"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env |= {"NEXTBEST_MODELS_DIR": str(models), "PYTHONPATH": str(ROOT / "src")}
    args = ["train", "--data", str(world_dir), "--config", str(FAST), "--alias", "challenger"]
    run = subprocess.Popen(
        [sys.executable, "-m", "nextbest", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None
    said: list[str] = []
    deadline = time.monotonic() + 300
    for line in run.stderr:  # off a terminal: a line per step
        said.append(line)
        if line.startswith(at):
            run.send_signal(sent)
            break
        assert time.monotonic() < deadline, "".join(said)
    else:
        raise AssertionError("".join(said))
    out, err = run.communicate(timeout=300)
    said_all = " ".join(("".join(said) + err).split())
    assert run.returncode == code, (run.returncode, said_all)
    assert "Traceback" not in said_all and not out, (out, said_all)
    where = "as it started" if at.startswith("train config") else "at step 'features"
    assert f"error: train was stopped ({how}) {where}" in said_all, said_all
    assert "before it logged an MLflow run: no version was registered; run it again" in said_all
    listed = subprocess.run(
        [sys.executable, "-m", "nextbest", "models", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # No version: no models directory at all, or a registry with none in it.
    assert listed.returncode == 2 or '"version"' not in listed.stdout, listed


def test_a_first_training_stopped_after_its_run_says_its_version_is_registered(
    world_dir: Path, env_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first `train` stopped once its run registered the version in full, before it
    made it champion (waiting for the decision lock, say): the registry's word was
    missing, the version registered and nothing served. It says so, and how to mend it."""
    from nextbest import registry

    def stopped(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(registry, "_log_trained_champion", stopped)
    result = runner.invoke(app, ["train", "--data", str(world_dir), "--config", str(FAST)])
    said = _said(result)
    assert result.exit_code == 143, said
    assert "error: training was interrupted (SIGTERM) after MLflow run " in said, said
    assert (
        "registered version 1 in full, as the first champion, before it was made champion: "
        "`nextbest models` says whether it is, and `nextbest models --repair` makes it "
        "champion if no version is"
    ) in said, said
    assert "before it logged an MLflow run" not in said, said
    settings = get_settings()
    assert [v.version for v in registry.list_versions(settings)] == ["1"]
    assert registry.alias_version(settings, registry.CHAMPION_ALIAS) is None
