"""What the CLI tests share: a Typer runner, the fast training config, and a command
run in-process that must succeed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.settings import get_settings

runner = CliRunner()
FAST = Path(__file__).parent / "fast_train.yaml"


def run_ok(*args: str) -> str:
    """Run ``nextbest *args`` in-process; its output, once it exited 0 (else fail with it)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


# Commands that write the recommendation log for others (a server, a report, a
# retrain) to read, and what each would leave in a log made by a mistyped setting:
# `pytest.mark.parametrize(("command", "lost"), LOG_WRITERS, ids=...)`.
LOG_WRITERS = [
    # An erasure job: the suppressions went to a new log there, "erased" was said,
    # and the served log kept contacting the HCP.
    (["erase", "H000001", "--yes"], "the suppressions would be recorded in a new "),
    # An outcome feed: the events, opt-outs too, went to a new log that no server
    # or retrain reads, and "stored" was said.
    (["feedback", "{events}"], "these events, opt-outs included, would be stored in a new "),
]


def explained_on_a_copy(trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings for `nextbest explain` on a copy of the trained registry (a test may
    move its aliases) with a database of its own; an HCP of the trained world."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    for name, value in {
        "NEXTBEST_MODELS_DIR": str(models),
        "NEXTBEST_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "NEXTBEST_AUTH_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return str(pd.read_csv(trained.data_dir / "hcps.csv", dtype=str)["hcp_id"].iat[3])


def stopped_at(
    run: subprocess.Popen[str], said_first: str, sent: signal.Signals
) -> tuple[str, str]:
    """Read ``run``'s stderr until a line starts with ``said_first``, send it ``sent``,
    and wait for it to end: its stdout, and all it wrote on stderr with white space
    collapsed (Rich wraps lines). A command that ends, or takes five minutes, before
    saying that line fails the test with what it said."""
    assert run.stderr is not None
    said: list[str] = []
    deadline = time.monotonic() + 300
    for line in run.stderr:  # off a terminal: a line per step or batch
        said.append(line)
        if line.startswith(said_first):
            run.send_signal(sent)
            break
        assert time.monotonic() < deadline, "".join(said)
    else:
        raise AssertionError("".join(said))
    out, err = run.communicate(timeout=300)
    return out, " ".join(("".join(said) + err).split())
