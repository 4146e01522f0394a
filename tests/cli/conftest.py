"""What the CLI tests share: a Typer runner, the fast training config, and a command
run in-process that must succeed."""

from __future__ import annotations

import shutil
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
