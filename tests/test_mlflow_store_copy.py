"""The suite's new MLflow stores (copies of one MLflow made: tests/conftest.py) are the
stores MLflow itself makes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from nextbest import registry
from nextbest.settings import Settings

MAKE_STORE = """
import sys
from mlflow.tracking import MlflowClient

uri = f"sqlite:///{sys.argv[1]}"
MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
"""


def _schema(store: Path) -> tuple[list[tuple[str, str, list[str]]], list[tuple[str]], list[str]]:
    """The store's tables and indexes (each with the lines of its SQL: MLflow itself
    writes a table's constraints in any order), schema revision and experiments."""
    with closing(sqlite3.connect(store)) as db:
        objects = [
            (kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
            for kind, name, sql in db.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                "ORDER BY type, name"
            )
        ]
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = [row[0] for row in db.execute("SELECT name FROM experiments")]
    return objects, revision, experiments


def test_a_new_store_in_the_suite_is_the_one_mlflow_makes(tmp_path: Path) -> None:
    # MLflow makes one in a process of its own, where no conftest reaches.
    made_by_mlflow = tmp_path / "mlflow" / "mlflow.db"
    made_by_mlflow.parent.mkdir()
    subprocess.run(
        [sys.executable, "-c", MAKE_STORE, str(made_by_mlflow)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    settings = Settings(models_dir=tmp_path / "models")
    assert not (tmp_path / "models" / "mlflow.db").exists()
    registry.client(settings).search_experiments()  # a new store, made here
    made_here = tmp_path / "models" / "mlflow.db"

    objects, revision, experiments = _schema(made_here)
    assert (objects, revision, experiments) == _schema(made_by_mlflow)
    assert len(objects) > 20 and revision and experiments == ["Default"]
