"""`train` and `retrain` say their first line (the config they read) before they import
the training code: a job's log got it after 4 to 7 s, nothing said meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FAST

HEAVY = ("sklearn", "lightgbm", "mlflow")


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["train"], id="train"),
        pytest.param(["train", "--alias", "challenger"], id="train-alias"),
        pytest.param(["retrain"], id="retrain"),  # its alias: challenger
    ],
)
def test_the_config_is_said_before_the_training_code_is_imported(
    env_settings: Path, tmp_path: Path, args: list[str]
) -> None:
    command = [*args, "--data", str(tmp_path / "none"), "--config", str(FAST)]
    ran = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nextbest", *command],
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200"},
        timeout=300,
    )
    lines = ran.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("train config: "))
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines[:first] if "|" in line]
    assert not [name for name in imported if name.split(".")[0] in HEAVY], imported
    assert "No such file or directory" in ran.stderr and ran.returncode == 2, ran.stderr[-2000:]
