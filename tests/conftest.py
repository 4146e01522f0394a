"""Shared fixtures: a small simulated world and a model trained and registered from it."""

from __future__ import annotations

import contextlib
import os
import threading

# Two xdist workers share the machine's cores: LightGBM's OpenMP threads (one per
# core by default) in both workers at once spin against each other, and a fit took
# six times as long as with one thread each. One thread per test process unless the
# developer says otherwise; servers and subprocesses the tests start inherit it
# (`nextbest serve` sets the same for its workers). Set before numpy or LightGBM
# load, which read it once.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.settings import Settings, drop_environment_settings, get_settings
from nextbest.storage.testing import (
    POSTGRES_URL_ENV,
    temporary_mysql_database,
    temporary_postgres_database,
)

# A MySQL or MariaDB server where the user may CREATE DATABASE
# (`mysql+pymysql://root@127.0.0.1:3306/test`): its tests are skipped without it.
MYSQL_URL_ENV = "NEXTBEST_TEST_MYSQL_URL"

# The suite must never touch a developer's own stores: Settings read NEXTBEST_*
# from the environment (a NEXTBEST_DATABASE_URL naming a real database included),
# so every such variable but the test PostgreSQL server's is dropped before any
# test runs, in every worker and in the servers the tests start.
# The real data sets' paths are kept too: the tests that read them take another
# file from these (they skip, saying so, when the file is absent).
drop_environment_settings(
    keep=(POSTGRES_URL_ENV, MYSQL_URL_ENV, "NEXTBEST_HILLSTROM_CSV", "NEXTBEST_DETAILING_CSV")
)


@pytest.fixture(autouse=True)
def _signal_handlers_put_back() -> Iterator[None]:
    """Put SIGINT and SIGTERM's handlers back after each test, and forget that a test
    ran ``nextbest.cli.main()`` in-process: marked as the command's own process, a
    later in-process ``picks --log`` left both signals ignored, and every server a
    later test started inherited that (ignored signals survive exec) and ended with
    0 where SIGTERM gives 143."""
    import signal

    from nextbest.cli import process

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    own = process.OWN_PROCESS
    yield
    process.OWN_PROCESS, process.DONE = own, False
    for sig, handler in before.items():
        if signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _environment_put_back() -> Iterator[None]:
    """Put the process environment back after each test: commands run in-process
    (``nextbest serve`` sets ``NEXTBEST_GC_FREEZE`` and more for its workers) must
    not leave settings behind for the next test in the same worker."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)
        get_settings.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def _new_mlflow_stores_copied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A new SQLite MLflow store made in this process is a copy of one MLflow made.

    MLflow makes each new store by running all its migrations: about 2 s of CPU, in
    every test that trains into a fresh models directory (hundreds of them). Here
    the first new store of the worker is made by MLflow itself, into a store of the
    session's own, and every later one, where MLflow would make it (at the same
    point, and only where MLflow would: a command that must leave no store behind
    still leaves none), is filled with a copy of it through SQLite's backup API:
    the same tables, indexes and schema revision. So is a new SQLite store made by a
    command the test runs as a process, once the template is there (its
    sitecustomize, tests/subprocess_site, reads the template's path from the
    environment; MLflow's migrations took 2 s of CPU in each such command). An
    upgrade of an older store is made by MLflow as before (that is not a new one).
    Should the copy fail (a read-only directory, a damaged file), MLflow makes the
    store, failing as it would have.

    A new store on a PostgreSQL or MySQL server (an empty database a test made) is
    filled alike from a dump (pg_dump, mysqldump) of one MLflow made on that server
    once per worker: its migrations ran there for 7-17 s a store (the server's DDL),
    the dump is replayed in 2-4 s. Without the server's client programs (or where they
    cannot dump it), and in a database holding tables already, MLflow makes the store.
    """
    import sqlite3

    import mlflow.store.db.utils as db_utils
    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    from sqlalchemy import create_engine
    from sqlalchemy.engine import Engine
    from sqlalchemy.exc import DBAPIError

    made_by_mlflow = db_utils._initialize_tables
    template: list[Path] = []
    # Where the template goes once made: the commands the tests run as processes copy
    # it too (tests/subprocess_site/sitecustomize.py), once it is there.
    template_path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    dumps: dict[tuple[object, ...], str | None] = {}
    replayed: list[str] = []  # the databases filled from a dump, for the test of it

    def server_dump(engine: Engine) -> str | None:
        """The dump of a store MLflow made on a server of ``engine``'s kind and version,
        made once (not once per port: a test's proxy to the server has a port of its own);
        None where the dump program cannot dump it (a pg_dump older than the server)."""
        import subprocess

        url = engine.url
        key = (url.get_backend_name(), engine.dialect.server_version_info)
        if key not in dumps:
            with _scratch_database(url) as scratch:
                first = create_engine(scratch)
                try:
                    made_by_mlflow(first)
                finally:
                    first.dispose()
                try:
                    dumps[key] = _database_dump(scratch)
                except subprocess.CalledProcessError:
                    dumps[key] = None
        return dumps[key]

    def initialize_tables(engine: Engine) -> None:
        path = engine.url.database
        if engine.dialect.name in _SERVER_CLIENTS:
            dump = None
            if _server_clients_installed(engine.dialect.name) and not _has_tables(engine):
                dump = server_dump(engine)  # not over tables of another's (a lock's)
            if dump is None:
                made_by_mlflow(engine)
                return
            _database_restore(engine.url, dump)
            replayed.append(str(engine.url.database))
            return
        if engine.dialect.name != "sqlite" or not path or path == ":memory:":
            made_by_mlflow(engine)
            return
        if not template:
            # Made beside its place and renamed there whole: a command running
            # meanwhile copies no half-made store.
            making = template_path.with_name("making.db")
            first = create_engine(f"sqlite:///{making}")
            try:
                made_by_mlflow(first)
            finally:
                first.dispose()
            making.replace(template_path)
            template.append(template_path)
        try:
            raw = engine.raw_connection()
            try:
                with contextlib.closing(sqlite3.connect(template[0])) as source:
                    source.backup(raw.driver_connection)
            finally:
                raw.close()
        except (sqlite3.Error, DBAPIError, OSError):
            made_by_mlflow(engine)

    initialize_tables.replayed = replayed  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(db_utils, "_initialize_tables", initialize_tables)
        patch.setattr(registry_store, "_initialize_tables", initialize_tables)
        patch.setenv(SUBPROCESS_TEMPLATE_ENV, str(template_path))
        patch.setenv("PYTHONPATH", str(SUBPROCESS_SITE), prepend=os.pathsep)
        yield


# The commands the tests start as processes read the template's path from here, and
# their sitecustomize from this directory (put first on their PYTHONPATH).
SUBPROCESS_TEMPLATE_ENV = "PYTEST_NEXTBEST_MLFLOW_TEMPLATE"
SUBPROCESS_SITE = Path(__file__).parent / "subprocess_site"


# The programs that dump a database and replay a dump, by SQLAlchemy dialect.
_SERVER_CLIENTS = {"postgresql": ("pg_dump", "psql"), "mysql": ("mysqldump", "mysql")}


def _server_clients_installed(dialect: str) -> bool:
    import shutil

    return all(shutil.which(program) for program in _SERVER_CLIENTS[dialect])


def _has_tables(engine: Any) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(engine).get_table_names())


def _client_call(url: Any) -> tuple[list[str], dict[str, str]]:
    """The connection arguments of ``url`` for its server's client programs, and their
    environment (the password in it, not on the command line)."""
    env = dict(os.environ)
    if url.get_backend_name() == "postgresql":
        if url.password is not None:
            env["PGPASSWORD"] = str(url.password)
        # libpq reads the URI (connect_timeout and options included); no password in it.
        plain = url.set(drivername="postgresql", password=None)
        return ["--dbname", plain.render_as_string(hide_password=False)], env
    if url.password is not None:
        env["MYSQL_PWD"] = str(url.password)
    args = ["--protocol=TCP", f"--host={url.host or '127.0.0.1'}", f"--port={url.port or 3306}"]
    if url.username:
        args.append(f"--user={url.username}")
    return args, env


def _database_dump(url_text: str) -> str:
    """The SQL that makes database ``url_text`` again: its tables, indexes, rows."""
    import subprocess

    from sqlalchemy.engine import make_url

    url = make_url(url_text)
    args, env = _client_call(url)
    if url.get_backend_name() == "postgresql":
        command = ["pg_dump", "--no-owner", "--no-privileges", *args]
    else:
        command = [
            "mysqldump", "--skip-comments", "--single-transaction", "--no-tablespaces",
            *args, str(url.database),
        ]  # fmt: skip
    return subprocess.run(
        command, env=env, capture_output=True, text=True, check=True, timeout=300
    ).stdout


def _database_restore(url: Any, dump: str) -> None:
    """Replay ``dump`` (:func:`_database_dump`) into the empty database ``url``: on
    PostgreSQL in one transaction, all or nothing; an error fails the test, saying it."""
    import subprocess

    args, env = _client_call(url)
    if url.get_backend_name() == "postgresql":
        command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", *args]
    else:
        command = ["mysql", *args, str(url.database)]
    done = subprocess.run(command, input=dump, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the MLflow store's dump did not replay: {done.stderr[-2000:]}")


@contextmanager
def _scratch_database(url: Any) -> Iterator[str]:
    """A new empty database on ``url``'s server, dropped after: its URL."""
    server = url.render_as_string(hide_password=False)
    if url.get_backend_name() == "postgresql":
        with temporary_postgres_database(server) as made:
            yield made
    else:
        with temporary_mysql_database(server, prefix="nextbest_tpl_") as made:
            yield made


FAST_CONFIG = TrainConfig(
    engagement=EngagementParams(n_estimators=40, num_leaves=15),
    uplift=UpliftParams(n_estimators=60, learning_rate=0.08),
)


@dataclass(frozen=True)
class TrainedWorld:
    data_dir: Path
    settings: Settings
    version: str


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nextbest.simulate import simulate_world

    out = tmp_path_factory.mktemp("world")
    simulate_world(n_hcps=400, periods=12, seed=3).write(out, fmt="csv")
    return out


@pytest.fixture(scope="session")
def trained(world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedWorld:
    """A model trained on ``world_dir`` and registered as champion in a fresh MLflow store."""
    from nextbest import registry
    from nextbest.contract import load_dataset
    from nextbest.learning.train import train

    settings = Settings(models_dir=tmp_path_factory.mktemp("models"), seed=11)
    result = train(load_dataset(world_dir), config=FAST_CONFIG)
    info = registry.log_training_run(result, settings)
    return TrainedWorld(data_dir=world_dir, settings=settings, version=info.version)


@dataclass(frozen=True)
class GitCheckout:
    """A git repository with one commit of a package ``pkg`` (``module``, ``pkg/module.py``:
    the file whose checkout :func:`nextbest.registry.source_commit` names)."""

    root: Path
    module: Path

    def git(self, *args: str) -> str:
        import subprocess

        done = subprocess.run(
            ["git", "-C", str(self.root), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()


@pytest.fixture
def git_checkout(tmp_path: Path) -> GitCheckout:
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "checkout"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "module.py").write_text("x = 1\n")
    checkout = GitCheckout(root, root / "pkg" / "module.py")
    checkout.git("init", "-q")
    checkout.git("add", ".")
    checkout.git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "one")
    return checkout


@pytest.fixture
def env_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Point the process settings (what the CLI reads) at a fresh models directory."""
    models = tmp_path / "models"
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    get_settings.cache_clear()
    yield models
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def _migrated_postgres_template() -> Iterator[str]:
    """A PostgreSQL database migrated to the newest revision, made once per worker: the
    database of a test that asks for a migrated ``engine`` is a copy of it (CREATE
    DATABASE ... TEMPLATE) rather than an empty one migrated for that test. Its name."""
    from sqlalchemy.engine import make_url

    from nextbest.storage import migrate

    with temporary_postgres_database(os.environ[POSTGRES_URL_ENV]) as url:
        migrate(url)  # its engine disposed after: nobody stays connected to the template
        name = make_url(url).database
        assert name is not None
        yield name


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty (unmigrated) database on SQLite and on PostgreSQL; on
    PostgreSQL, migrated already where the test asks for the storage tests' ``engine``.

    PostgreSQL needs ``NEXTBEST_TEST_POSTGRES_URL`` (a server where the user may
    CREATE DATABASE; each test gets its own database, dropped after) and is
    skipped, saying so, without it.
    """
    if request.param == "sqlite":
        # A directory that does not exist yet: make_engine must create it.
        yield f"sqlite:///{tmp_path / 'store' / 'nextbest.db'}"
        return
    server_url = os.environ.get(POSTGRES_URL_ENV)
    if not server_url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set: PostgreSQL tests skipped")
    # The storage tests' ``engine`` migrates the database: on PostgreSQL, a copy of one
    # migrated already, where ``migrate`` finds nothing to do.
    template = (
        request.getfixturevalue("_migrated_postgres_template")
        if "engine" in request.fixturenames
        else None
    )
    with temporary_postgres_database(server_url, template=template) as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, for what only PostgreSQL does (its
    table locks, VACUUM); skipped, saying so, without ``NEXTBEST_TEST_POSTGRES_URL``."""
    server_url = os.environ.get(POSTGRES_URL_ENV)
    if not server_url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set: PostgreSQL tests skipped")
    with temporary_postgres_database(server_url) as url:
        yield url


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """URL of a fresh, empty MySQL (or MariaDB) database, dropped after; skipped,
    saying so, without ``NEXTBEST_TEST_MYSQL_URL``."""
    server_url = os.environ.get(MYSQL_URL_ENV)
    if not server_url:
        pytest.skip(f"{MYSQL_URL_ENV} is not set: MySQL tests skipped")
    with temporary_mysql_database(server_url) as url:
        yield url


@contextmanager
def _decision_in_another_thread(settings: Settings, decision: str) -> Iterator[None]:
    taken, go = threading.Event(), threading.Event()

    def hold() -> None:
        from nextbest import registry

        with registry.deciding_alone(settings, decision):
            taken.set()
            assert go.wait(120)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(120)
        yield
    finally:
        go.set()
        holder.join(120)


@pytest.fixture
def decision_elsewhere() -> Callable[..., AbstractContextManager[None]]:
    """``decision_elsewhere(settings, decision="promotion")``: a context manager in
    which a ``decision`` (``rollback``, ...) holds model ``settings.model_name``'s
    decision lock in another thread of this process."""

    def held(settings: Settings, decision: str = "promotion") -> AbstractContextManager[None]:
        return _decision_in_another_thread(settings, decision)

    return held
