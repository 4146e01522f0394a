"""The alias names `train` and `retrain` refuse before their work are those MLflow
refuses when the alias is set at the end: checked here against MLflow's own rules,
which the registry says without importing MLflow (1.2 to 2.2 s before a first line)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    _validate_model_alias_name,
    _validate_model_alias_name_reserved,
)

from nextbest import registry

NAMES = [
    "challenger",
    "champion",
    "previous_champion",
    "shadow-2",
    "Ünïcode_naïve",  # letters of any script are letters to MLflow too
    "chámpion٣",  # so are digits
    "a" * registry.ALIAS_AT_MOST,
    "a" * (registry.ALIAS_AT_MOST + 1),
    "",
    "bad alias!",
    "a.b",
    "a/b",
    "tab\there",
    "latest",
    "LaTeSt",
    "latest2",
    "v2",
    "V10",
    "v",
    "v2a",
    "version2",
]


def _mlflow_refuses(alias: str) -> bool:
    try:
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    except MlflowException:
        return True
    return False


@pytest.mark.parametrize("alias", NAMES)
def test_an_alias_is_refused_as_mlflow_refuses_it(alias: str) -> None:
    problem = registry.alias_problem(alias)
    assert (problem is not None) == _mlflow_refuses(alias), problem


@pytest.mark.parametrize(
    ("alias", "said"),
    [
        ("", "an alias cannot be empty"),
        (
            "bad alias!",
            "'bad alias!' holds ' ', '!': an alias may only hold letters, digits, "
            "underscores (_) and dashes (-)",
        ),
        ("a" * 256, "an alias is at most 255 characters long; this one has 256"),
        ("Latest", "'latest' (in any case) is reserved: MLflow names the latest version so"),
        ("v2", "'v2' is reserved: MLflow names version 2 so"),
    ],
)
def test_a_refused_alias_says_why(alias: str, said: str) -> None:
    assert registry.alias_problem(alias) == said


def test_checking_an_alias_imports_neither_mlflow_nor_the_training_code() -> None:
    """`train --alias challenger` said nothing for 4 to 6 s: the registry imported
    sklearn and LightGBM (learning.scoring, learning.train), and the alias check MLflow."""
    code = (
        "import sys\n"
        "from nextbest import registry\n"
        "assert registry.alias_problem('challenger') is None\n"
        "print(sorted(m for m in ('mlflow', 'sklearn', 'lightgbm') if m in sys.modules))\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]", ran.stdout + ran.stderr
