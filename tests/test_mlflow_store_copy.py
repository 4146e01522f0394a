"""The suite's new MLflow stores (copies of one MLflow made: tests/conftest.py) are the
stores MLflow itself makes: in a SQLite file, and on PostgreSQL and MySQL servers."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import mlflow.store.db.utils as db_utils
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from nextbest import registry
from nextbest.settings import Settings
from nextbest.storage.testing import temporary_mysql_database, temporary_postgres_database

MAKE_STORE = """
import sys
from mlflow.tracking import MlflowClient

uri = sys.argv[1] if "://" in sys.argv[1] else f"sqlite:///{sys.argv[1]}"
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


def _made_by_mlflow(uri: str) -> None:
    """A new store at ``uri``, made by MLflow in a process of its own."""
    subprocess.run(
        [sys.executable, "-c", MAKE_STORE, uri], check=True, capture_output=True, timeout=300
    )


def _server_schema(uri: str) -> tuple[list[list[str]], list[tuple[str, ...]], list[str]]:
    """A server store's tables, indexes and constraints as its server's dump program
    writes them (no rows), its schema revision and experiments."""
    url = make_url(uri)
    env = dict(os.environ)
    if url.get_backend_name() == "postgresql":
        command = ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "--dbname"]
        command.append(url.set(drivername="postgresql").render_as_string(hide_password=False))
    else:
        command = ["mysqldump", "--no-data", "--skip-comments", "--protocol=TCP"]
        command += [f"--host={url.host}", f"--port={url.port or 3306}", f"--user={url.username}"]
        command.append(str(url.database))
        if url.password is not None:
            env["MYSQL_PWD"] = str(url.password)
    dump = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return _statements(dump), *_contents(uri)


def _statements(dump: str) -> list[list[str]]:
    """The dump's statements, each as its lines in order of their text: MySQL lists a
    table's indexes in the order they were made (MLflow's migrations add some late),
    a dump's replay in the order the dump wrote them. PostgreSQL reads a CHECK of a
    column among values back with its casts moved inside the array; both are said one
    way here. pg_dump guards each dump with a key of its own (\\restrict ...), no part
    of the schema."""
    statements: list[list[str]] = [[]]
    for line in dump.splitlines():
        if line.startswith(("\\restrict", "\\unrestrict")):
            continue
        line = re.sub(r"\('([^']*)'::character varying\)::text", r"'\1'::character varying", line)
        line = re.sub(r"\(\(ARRAY\[([^\]]*)\]\)::text\[\]\)", r"(ARRAY[\1])", line)
        statements[-1].append(line.strip().rstrip(","))
        if line.rstrip().endswith(";"):
            statements.append([])
    return [sorted(statement) for statement in statements]


def _contents(uri: str) -> tuple[list[tuple[str, ...]], list[str]]:
    """A store's schema revision and experiments."""
    engine = create_engine(uri)
    try:
        with engine.connect() as connection:
            revision = [tuple(r) for r in connection.execute(text("SELECT * FROM alembic_version"))]
            experiments = [r[0] for r in connection.execute(text("SELECT name FROM experiments"))]
    finally:
        engine.dispose()
    return revision, experiments


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres_url", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql_url", id="mysql", marks=pytest.mark.mysql),
    ],
)
def test_a_new_store_on_a_database_server_in_the_suite_is_the_one_mlflow_makes(
    request: pytest.FixtureRequest, server: str, tmp_path: Path
) -> None:
    """On a server, the suite's new store is a replayed dump of one MLflow made there:
    the same tables, columns, indexes, constraints and sequences, schema revision and
    default experiment as MLflow makes in an empty database."""
    made_here: str = request.getfixturevalue(server)
    programs = ("pg_dump",) if server == "postgres_url" else ("mysqldump",)
    if not all(shutil.which(program) for program in programs):
        pytest.skip(f"{programs[0]} is not installed: the suite's stores are MLflow's own")
    another = (
        temporary_postgres_database(made_here)
        if server == "postgres_url"
        else temporary_mysql_database(made_here)
    )
    with another as by_mlflow:
        _made_by_mlflow(by_mlflow)
        settings = Settings(models_dir=tmp_path / "models", tracking_uri=made_here)
        registry.client(settings).search_experiments()  # a new store, made here
        # ... from the dump (tests/conftest.py), not by MLflow's migrations.
        assert make_url(made_here).database in db_utils._initialize_tables.replayed
        lines, revision, experiments = _server_schema(made_here)
        theirs = _server_schema(by_mlflow)
    # The lines that differ, where they do: a dump is a thousand lines.
    differ = [
        "\n".join(difflib.unified_diff(b, a, lineterm=""))
        for a, b in zip(lines, theirs[0], strict=False)
        if a != b
    ]
    assert lines == theirs[0], "\n".join(differ)
    assert (revision, experiments) == theirs[1:]
    assert sum("CREATE TABLE" in line for statement in lines for line in statement) > 20
    assert revision and experiments == ["Default"]
