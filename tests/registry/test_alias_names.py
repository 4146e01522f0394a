"""The alias names `train` and `retrain` refuse before their work are those MLflow
refuses when the alias is set at the end: checked here against a real MLflow registry,
which the registry says without importing MLflow (1.2 to 2.2 s before a first line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

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


@pytest.fixture(scope="module")
def mlflow_registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """A real MLflow registry (SQLite) holding model 'm' with one version, to set
    aliases on: its own checks, whatever MLflow release, not its private helpers."""
    store = f"sqlite:///{tmp_path_factory.mktemp('alias_registry') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model("m")
    client.create_model_version("m", source=str(Path(store.removeprefix("sqlite:///")).parent))
    return client


def _mlflow_refuses(client: MlflowClient, alias: str) -> bool:
    try:
        client.set_registered_model_alias("m", alias, "1")
    except MlflowException:
        return True
    client.delete_registered_model_alias("m", alias)
    return False


@pytest.mark.parametrize("alias", NAMES)
def test_an_alias_is_refused_as_mlflow_refuses_it(
    alias: str, mlflow_registry: MlflowClient
) -> None:
    problem = registry.alias_problem(alias)
    assert (problem is not None) == _mlflow_refuses(mlflow_registry, alias), problem


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
