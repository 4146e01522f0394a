"""Engines, sessions, health check and schema migration for the storage layer.

Two backends are supported: SQLite (the embedded default, one file, WAL) and
PostgreSQL (production, shared by many API worker processes).
"""

from __future__ import annotations

import ast
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from nextbest.limits import PG_CONNECT_TIMEOUT_S
from nextbest.settings import without_password

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Arbitrary but fixed key of the PostgreSQL advisory lock that serializes migrations
# run by several worker processes at start-up ("nextbest" in ASCII, fits a bigint).
_PG_MIGRATION_LOCK_KEY = 0x6E65787462657374

SQLITE_BUSY_TIMEOUT_MS = 10_000

# How long a migration statement waits for a table lock on PostgreSQL (its
# ``lock_timeout``). ALTER TABLE needs the table to itself: behind one open
# transaction that read the table (a BI tool's, an extract job's, a pg_dump), it
# waits, and every query on the table that comes after it waits behind it, the
# service's included. Past this long the migration gives up and rolls back instead.
PG_MIGRATION_LOCK_TIMEOUT_S = 5
# SQLSTATE of "canceling statement due to lock timeout".
_PG_LOCK_NOT_AVAILABLE = "55P03"

T = TypeVar("T")

# Connections of a serving worker's live-history pool on PostgreSQL (make_reader).
READER_POOL_SIZE = 2
READER_MAX_OVERFLOW = 6
# How long a request waits for a connection of the asyncio pool (make_async_reader),
# and how long once the pool has failed to connect since its last good connection.
ASYNC_READER_TIMEOUT_S = 2.0
ASYNC_READER_UNREACHABLE_WAIT_S = 0.1
# How long the asyncio pool keeps retrying one lost connection before it gives up
# on it. psycopg_pool retries after 1, 2, 4, 8 ... seconds with no cap, so after a
# 45-second outage its next try could come half a minute after the database was
# back, every request meanwhile a 503. Given up after this long, the connection is
# replaced by the next request that finds the pool empty, which tries at once.
ASYNC_READER_RECONNECT_S = 2.0
# How long a readiness probe waits for a connection of the asyncio pool.
ASYNC_READER_PROBE_S = 1.0


# What a database that is down, restarting or out of connections raises: worth
# trying again later, unlike an error in what was asked of it.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
)


# PostgreSQL answering reads but refusing this process every write: a read-only
# transaction (a standby after a failover, default_transaction_read_only) or a
# privilege revoked. Like an outage it lasts until an operator acts, and the rows
# refused are not at fault: what failed is kept and tried again, not dropped.
WRITES_REFUSED_SQLSTATES = frozenset({"25006", "42501"})


def refuses_writes(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing writes as a whole (read-only, or no
    privilege), as opposed to refusing these rows (SQLite says so with an
    ``OperationalError``, one of ``UNAVAILABLE_ERRORS`` already)."""
    cause = getattr(exc, "orig", None)
    return getattr(cause, "sqlstate", None) in WRITES_REFUSED_SQLSTATES


def describe_database_error(exc: BaseException) -> str:
    """The driver's error class and the first line of its message.

    For logs and operators: the driver's message names the server, never the
    statement's parameters (engines hide them), so it carries no HCP data.
    """
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line}"


# What PostgreSQL says of the row a statement failed on: its values (an HCP id, a
# feedback reason), whatever the engines' hide_parameters. In a DETAIL line of the
# driver's message, up to what follows that message in SQLAlchemy's text or in a
# traceback, so that a value holding line breaks is left out whole.
_ROW_VALUES = re.compile(
    r"^(DETAIL:\s+)(?:Failing row contains|Key \().*?"
    r"(?=\n\[SQL: |\n\nThe above exception|\n\nDuring handling of the above|\n?\Z)",
    re.MULTILINE | re.DOTALL,
)


def without_row_values(text: str) -> str:
    """``text`` without the values of the row a PostgreSQL error names (a failing
    row, a key's values), the line saying they were left out."""
    if "DETAIL:" not in text:
        return text
    return _ROW_VALUES.sub(r"\1(the row's values are left out of the log)", text)


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory / URI databases."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def sqlite_damage(url: str) -> str | None:
    """What SQLite's ``PRAGMA quick_check`` finds wrong in a SQLite database file, in
    a line (the first problems, then how many more); None when it finds nothing, and
    for PostgreSQL, in-memory databases and a file not yet made.

    A file restored from a backup beside a ``-wal`` file of a later state (or half
    copied) opens without a word: SQLite replays that WAL onto the older pages, and
    the damage shows only when a write lands on it, after answers were served. The
    check reads every page once (about a second per few hundred MB).
    """
    parsed = make_url(url)
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is None or not path.exists():
        return None
    # Read only, so that a -wal file beside it is left as found (no checkpoint).
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = [str(row[0]) for row in connection.execute("PRAGMA quick_check(6)")]
    except sqlite3.DatabaseError as exc:  # not a database at all, or its header broken
        return str(exc)
    finally:
        connection.close()
    if found == ["ok"]:
        return None
    problems = [line for text in found for line in text.splitlines() if not line.startswith("***")]
    shown = "; ".join(problems[:3])
    return shown + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")


def _switch_to_wal(cursor: Any) -> None:
    """Put the database file in WAL mode (a lasting setting of the file).

    Processes that open a new file at once (API workers migrating at start-up)
    race to switch it, and SQLite answers the loser "database is locked" at once,
    without waiting out ``busy_timeout``; so the switch is retried for as long as
    that timeout. A file already in WAL mode needs no switch, and no lock.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.2)


def _on_sqlite_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    """Per-connection SQLite settings (PRAGMAs are not persistent, bar journal_mode)."""
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL: readers never block the writer, and many API workers read at once.
        _switch_to_wal(cursor)
        # FULL: fsync the WAL on every commit, so an acknowledged event survives a
        # power loss (NORMAL would only survive a crash of the process).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _make_sqlite_directory(path: Path) -> None:
    """Create the directory of the SQLite database file ``path`` if it is missing,
    with a warning: most likely the setting's path is mistyped, and the feedback and
    answers then go to a new, empty database while the one kept is not read."""
    directory = path.parent
    if directory.is_dir():
        return
    try:
        directory.mkdir(parents=True)
    except FileExistsError:  # made meanwhile by another process (or a file: it says)
        if directory.is_dir():
            return
        raise
    logger.warning(
        "the directory %s of the SQLite database %s did not exist and was created, with "
        "a new, empty database in it: check NEXTBEST_DATABASE_URL (NEXTBEST_MODELS_DIR "
        "when it is not set) if the database was kept elsewhere",
        directory,
        path,
        extra={"event": "database_dir_created"},
    )


def make_engine(url: str, *, lock_timeout_ms: int = 0, statement_timeout_ms: int = 0) -> Engine:
    """Create the engine for a database URL (SQLite file or PostgreSQL).

    SQLite: the file's parent directory is created (with a warning, event
    ``database_dir_created``: a mistyped path), and every new connection gets
    ``journal_mode=WAL``, ``synchronous=FULL``, ``busy_timeout=10000`` and
    ``foreign_keys=ON``. PostgreSQL: pooled connections are pinged before use, and a
    bare ``postgresql://`` URL uses psycopg 3 (the driver this project installs);
    sessions are named ``nextbest`` in ``pg_stat_activity`` unless the URL sets an
    ``application_name``; ``lock_timeout_ms`` and ``statement_timeout_ms`` (0: none)
    bound every statement of its sessions (and of the readers made from it), as
    libpq ``options`` added to any the URL has.
    Errors never show the statement's parameters (HCP ids among them), so a logged
    database error carries no HCP data.

    Raises:
        ValueError: the URL names another backend.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            _make_sqlite_directory(path)
        engine = create_engine(parsed, hide_parameters=True)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if "connect_timeout" not in parsed.query:  # the readers' pools inherit it
            parsed = parsed.update_query_dict({"connect_timeout": str(PG_CONNECT_TIMEOUT_S)})
        if "application_name" not in parsed.query:
            parsed = parsed.update_query_dict({"application_name": "nextbest"})
        bounds = [
            f"-c {name}={ms}"
            for name, ms in (
                ("lock_timeout", lock_timeout_ms),
                ("statement_timeout", statement_timeout_ms),
            )
            if ms > 0
        ]
        if bounds:
            given = parsed.query.get("options")
            given = " ".join(given) if isinstance(given, tuple) else given
            parsed = parsed.update_query_dict(
                {"options": " ".join([*([given] if given else []), *bounds])}
            )
        return create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    raise ValueError(
        f"unsupported database backend {backend!r} in database URL "
        f"{without_password(parsed.render_as_string(hide_password=False))!r}: use sqlite:/// "
        "or postgresql://"
    )


def make_reader(engine: Engine) -> Engine:
    """The engine for the serving routes' live-history reads: one round trip each.

    SQLite: ``engine`` itself (a read is a local file access). PostgreSQL: a second
    pool on the same URL in autocommit with no ping on checkout, so that a read is
    its one query: no ``BEGIN``, no ``ROLLBACK`` on check-in, no ping first. That
    is a quarter of the round trips of ``engine``'s default, which is what a
    recommendation waits for when the database is across a network. A connection
    the server dropped meanwhile fails its query and is invalidated together with
    the pool; :func:`with_reconnect` runs the read once more on a fresh connection.

    The pool keeps ``READER_POOL_SIZE`` connections and opens at most
    ``READER_MAX_OVERFLOW`` more under load: the single route reads one at a time
    on the event loop, batches and rep plans from the thread pool.
    """
    if engine.dialect.name != "postgresql":
        return engine
    return create_engine(
        engine.url,
        hide_parameters=True,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=False,
        pool_size=READER_POOL_SIZE,
        max_overflow=READER_MAX_OVERFLOW,
    )


class _HistoryPool(AsyncConnectionPool):
    """An asyncio pool that stops making requests wait while the database is down.

    Once the pool has failed to connect since it last handed out a connection,
    a request waits ``ASYNC_READER_UNREACHABLE_WAIT_S`` for one instead of the
    full timeout, so that callers get their 503 at once rather than after
    seconds each. A busy pool (every connection in use, none failing) still
    makes requests wait the full timeout.
    """

    _errors_when_last_served = 0

    async def getconn(self, timeout: float | None = None) -> Any:
        errors = int(self.get_stats().get("connections_errors", 0))
        if timeout is None and errors > self._errors_when_last_served:
            timeout = ASYNC_READER_UNREACHABLE_WAIT_S
        connection = await super().getconn(timeout)
        self._errors_when_last_served = errors
        return connection


def make_async_reader(engine: Engine) -> AsyncConnectionPool | None:
    """An asyncio pool for the single-recommendation route's history read, or None.

    PostgreSQL only (SQLite reads a local file: nothing to wait for). Same
    database and sizes as :func:`make_reader`, autocommit; created closed: open it
    with ``await pool.open()`` on the event loop that will use it (the app's
    start-up) and close it there. A request waits at most
    ``ASYNC_READER_TIMEOUT_S`` for a connection, and only
    ``ASYNC_READER_UNREACHABLE_WAIT_S`` while the database cannot be reached.
    """
    if engine.dialect.name != "postgresql":
        return None
    # As libpq parameters, not the URL rendered: it writes spaces as '+' (the
    # options' "-c lock_timeout=..."), which libpq does not read back as spaces.
    url = engine.url
    given = {
        "host": url.host,
        "port": url.port,
        "dbname": url.database,
        "user": url.username,
        "password": url.password,
    }
    given.update({k: " ".join(v) if isinstance(v, tuple) else v for k, v in url.query.items()})
    conninfo = make_conninfo("", **{k: v for k, v in given.items() if v is not None})
    return _HistoryPool(
        conninfo,
        min_size=READER_POOL_SIZE,
        max_size=READER_POOL_SIZE + READER_MAX_OVERFLOW,
        kwargs={"autocommit": True},
        timeout=ASYNC_READER_TIMEOUT_S,
        reconnect_timeout=ASYNC_READER_RECONNECT_S,
        name="nextbest-history",
        open=False,
    )


async def ping_async(pool: AsyncConnectionPool) -> bool:
    """True if a connection of ``pool`` answers ``SELECT 1`` within
    ``ASYNC_READER_PROBE_S``; False on any error (never raises).

    The pool first drops the idle connections the server closed (a restart closes
    them all) and starts replacing them, so that the probe tries a live one; and an
    empty pool is asked for a connection, so the probe starts its reconnection.
    """
    try:
        await pool.check()
        async with pool.connection(timeout=ASYNC_READER_PROBE_S) as connection:
            await connection.execute("SELECT 1")
    except Exception:
        return False
    return True


def with_reconnect(engine: Engine, read: Callable[[Connection], T]) -> T:
    """``read`` on a connection of ``engine``, once more if the first was found dead.

    For engines without a ping on checkout (:func:`make_reader`). A read that
    failed because its connection was lost (a database restart drops them all)
    empties the pool and runs again on a new connection; any other error is
    raised as it is.
    """
    try:
        with engine.connect() as connection:
            return read(connection)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        engine.dispose()  # the other pooled connections went with it
    with engine.connect() as connection:
        return read(connection)


class HeldReader:
    """A connection of a SQLite ``engine`` kept open for the reads of one thread: the
    single-recommendation route's history reads, on the event loop.

    Checking a connection out of the pool and back in for each read, with SQLAlchemy's
    ``Connection`` made and closed around it, was about a fifth of the CPU of that
    read (docs/serving.md). Reads only, and none leaves a transaction open, so each
    sees every commit made before it, as a connection from the pool would. The
    thread that reads first keeps it; a read from any other thread goes through the
    pool (:func:`with_reconnect`). A read that finds the connection dead drops it
    and runs once more on a new one, as :func:`with_reconnect` does.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None
        self._owner: int | None = None
        self._lock = threading.Lock()  # only against a close() from another thread

    def run(self, read: Callable[[Connection], T]) -> T:
        """``read`` on the held connection (opened at the first read)."""
        if self._owner is None:
            self._owner = threading.get_ident()
        elif self._owner != threading.get_ident():
            return with_reconnect(self.engine, read)
        with self._lock:
            try:
                return self._read(read)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                self._drop()
            return self._read(read)

    def _read(self, read: Callable[[Connection], T]) -> T:
        connection = self._connection
        if connection is None:
            connection = self._connection = self.engine.connect()
        try:
            return read(connection)
        finally:
            if connection.in_transaction():  # a read through SQLAlchemy began one
                connection.rollback()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Give the connection back to the engine's pool (the next read opens another)."""
        with self._lock:
            self._drop()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``.

    ``expire_on_commit=False`` because the repository returns plain records, and the
    caller may still read what it just wrote after the commit.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def store_session(url: str, *, upgrade: bool = False) -> Iterator[Session]:
    """One session on the store at ``url``; the engine is closed after.

    For commands that read or write the store once (reports, retraining, the gate,
    file picks), not for the server, which keeps its engine for its lifetime. An
    empty database gets the schema; one at an older revision is upgraded only with
    ``upgrade``, else :class:`SchemaBehindError` is raised (see :func:`migrate`).
    """
    engine = make_engine(url)
    try:
        migrate(engine, upgrade=upgrade)
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


# An empty store of this release's schema, in memory and gone with its engine.
_EMPTY_STORE_URL = "sqlite://"


@contextmanager
def history_session(url: str) -> Iterator[Session]:
    """A session to read the contact history at ``url`` from, for a command that
    writes no log (``explain``, ``picks`` without ``--log``): a SQLite file that does
    not exist is read as an empty log (a store in memory), not made with its
    directory, where :func:`store_session` would make it (a mistyped path then
    becomes a new database that nothing else reads). See :func:`missing_sqlite_file`
    to say so."""
    with store_session(url if missing_sqlite_file(url) is None else _EMPTY_STORE_URL) as session:
        yield session


def ping(engine: Engine) -> bool:
    """True if the database answers ``SELECT 1``; False on any error (never raises)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def alembic_config() -> Config:
    """Alembic configuration pointing at the migrations shipped in this package.

    Built in code, without an ini file, so it works from any working directory and
    from an installed wheel.
    """
    config = Config()
    # ConfigParser interpolation would choke on a '%' in the install path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def set_migration_lock_timeout(connection: Connection) -> None:
    """Bound how long each statement of the current transaction waits for a lock, on
    PostgreSQL, to ``PG_MIGRATION_LOCK_TIMEOUT_S`` (``SET LOCAL``: it ends with the
    transaction, and begins one if none is open). Nothing on SQLite."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            f"SET LOCAL lock_timeout = '{int(PG_MIGRATION_LOCK_TIMEOUT_S * 1000)}ms'"
        )
        # A serving worker's sessions bound every statement (make_engine): not its
        # migration, which may take longer and gives up on locks by the line above.
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")


def _lock_for_migration(connection: Connection) -> None:
    """Open the PostgreSQL migration transaction holding a lock that serializes
    migrators (SQLite's is :func:`sqlite_migration_transaction`).

    Several API workers call ``migrate`` at start-up. Without a lock two of them
    would both see an empty database and both try to create the tables. The second
    one now waits, then finds the schema at head and does nothing.
    """
    # A serving worker's session gives up on a lock after its lock_timeout
    # (make_engine); one waiting for another worker's migration must not.
    connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
    connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    # Released automatically at commit or rollback; PostgreSQL DDL is
    # transactional, so the whole upgrade commits or nothing does.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
    # Only after the advisory lock: a worker waiting for another's migration
    # must keep waiting.
    set_migration_lock_timeout(connection)


@contextmanager
def sqlite_migration_transaction(connection: Connection) -> Iterator[None]:
    """Run the body (a migration) in one SQLite transaction, foreign keys unenforced,
    checked before it commits; on any error it rolls back whole.

    SQLite drops or retypes a column by rebuilding the table (alembic's batch mode:
    copy, drop the old one, rename the copy). With foreign keys enforced, as
    make_engine sets them, dropping ``recommendations`` would delete every item (ON
    DELETE CASCADE) or fail on the feedback naming an answer. SQLite's own procedure
    for such changes turns enforcement off first, which it allows only outside a
    transaction, and runs ``PRAGMA foreign_key_check`` before committing: a row
    left pointing at nothing raises RuntimeError and the migration rolls back.

    The transaction is SQLite's own, begun IMMEDIATE: pysqlite would only BEGIN
    before DML, leaving DDL unprotected, and taking the write lock up front makes
    concurrent migrators wait for it (busy_timeout), then find the work done.
    Enforcement is set back as it was on the way out, error or not: the connection
    goes back to its engine's pool, shared with the service's writes.
    """
    connection.execution_options(isolation_level="AUTOCOMMIT")
    enforced = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(
                    "the migration would leave rows pointing at nothing (table, row, "
                    f"parent table): {[tuple(row)[:3] for row in broken]}; rolled back"
                )
            connection.exec_driver_sql("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (some errors end the transaction).
            if connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                connection.exec_driver_sql("ROLLBACK")
            raise
    finally:
        # A no-op inside a transaction: only reached once it has ended.
        connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if enforced else 'OFF'}")


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer release than this one."""

    def __init__(self, found: str, head: str | None) -> None:
        super().__init__(
            f"the database's schema is at revision {found}, which this release does not "
            f"know (its newest is {head}): a newer nextbest migrated it. Run that release, "
            f"or downgrade the schema with it first (`nextbest db downgrade {head}`; "
            "docs/operations.md, 'Upgrading and rolling back')"
        )
        self.found = found
        self.head = head


class UnversionedSchemaError(RuntimeError):
    """The database holds tables named as nextbest's but no schema revision, so
    migrating it would stop on the first table it creates."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(
            f"the database holds tables of nextbest's ({', '.join(tables)}) but no schema "
            "revision (no alembic_version table): a restore that left that table out, or "
            "another application's database. Restore the whole backup into an empty "
            "database (docs/operations.md, 'Backup and restore'), or name an empty one; "
            "nothing was changed"
        )
        self.tables = tables


def _unversioned_tables(connection: Connection) -> list[str]:
    """nextbest's tables the database holds, read when it has no schema revision."""
    from sqlalchemy import inspect

    from nextbest.storage.tables import Base

    return sorted(set(Base.metadata.tables) & set(inspect(connection).get_table_names()))


# What lists the sessions holding a lock on a table, for an operator to run.
HOLDERS_SQL = (
    "SELECT a.pid, a.usename, a.application_name, a.state, a.xact_start, a.query "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.relation = '{table}'::regclass AND l.granted"
)


class SchemaBehindError(RuntimeError):
    """The database's schema is older than this release's, and the command may not
    upgrade it (only ``nextbest db upgrade`` and ``nextbest serve`` do)."""

    def __init__(self, found: str, head: str | None) -> None:
        super().__init__(
            f"the database's schema is at revision {found}, older than this release's "
            f"{head}: `nextbest db upgrade` upgrades it, as starting `nextbest serve` does. "
            "Upgrade it once the servers sharing it run this release: a worker of an older "
            "release cannot start on a newer schema (docs/operations.md, 'Upgrading and "
            "rolling back')"
        )
        self.found = found
        self.head = head


class MigrationLockTimeoutError(RuntimeError):
    """A PostgreSQL migration gave up waiting for a table another session holds.

    Nothing was changed: the migration's transaction rolled back whole.
    """

    def __init__(self, tables: list[str], holders: list[str]) -> None:
        on = " or ".join(tables) if tables else "a table"
        by = f" ({'; '.join(holders)})" if holders else ""
        example = HOLDERS_SQL.format(table=tables[0] if tables else "recommendations")
        super().__init__(
            f"a schema migration waited {PG_MIGRATION_LOCK_TIMEOUT_S} s for a lock on {on}, "
            f"held by another session's open transaction{by}, and gave up: nothing was "
            "changed (the migration rolled back). Run it again when those sessions have "
            "ended, and stop BI and extract jobs that read nextbest's tables during "
            f"upgrades; to see who holds it: {example} (docs/operations.md, 'Upgrading and "
            "rolling back')"
        )
        self.tables = tables
        self.holders = holders


def _is_lock_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return isinstance(exc, DBAPIError) and getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE


def _tables_named(statement: str | None) -> list[str]:
    """The storage tables a SQL statement names, itself or by one of its indexes (a
    ``DROP INDEX`` names no table), in schema order."""
    from nextbest.storage.tables import Base

    names = {
        name: [name, *(index.name for index in table.indexes)]
        for name, table in Base.metadata.tables.items()
    }
    names["alembic_version"] = ["alembic_version"]
    return [
        table
        for table, spelt in names.items()
        if any(re.search(rf"\b{name}\b", statement or "") for name in spelt)
    ]


def _lock_holders(connection: Connection, tables: list[str]) -> list[str]:
    """Who holds a lock on ``tables`` now, one short description per session (no
    query text: a BI query may name HCPs); [] if that cannot be read."""
    if not tables:
        return []
    try:
        rows = connection.execute(
            text(
                "SELECT DISTINCT a.pid, a.usename, a.application_name, a.state "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.granted AND l.pid <> pg_backend_pid() AND l.relation IN "
                "(SELECT to_regclass(t)::oid FROM unnest(CAST(:tables AS text[])) t) "
                "ORDER BY a.pid"
            ),
            {"tables": tables},
        ).all()
        connection.rollback()
    except DBAPIError:
        return []
    said = []
    for pid, user, application, state in rows:
        parts = [f"pid {pid}"]
        parts += [f"user {user}"] if user else []
        parts += [f"application '{application}'"] if application else []
        parts += [str(state)] if state else []
        said.append(", ".join(parts))
    return said


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist (connecting would make it and
    its directory), else None."""
    parsed = make_url(url)
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    return path if path is not None and not path.exists() else None


def schema_revisions(url: str) -> tuple[str | None, str | None]:
    """The database's schema revision (None: no schema yet) and this release's newest.

    Only reads: nothing is created or migrated. Raises :class:`SchemaTooNewError`
    for a revision this release does not know, :class:`UnversionedSchemaError` for
    nextbest's tables without a revision.
    """
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if missing_sqlite_file(url) is not None:
        return None, head  # connecting would create the file (and its directory)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = MigrationContext.configure(connection).get_current_revision()
            if found is None and (tables := _unversioned_tables(connection)):
                raise UnversionedSchemaError(tables)
    finally:
        engine.dispose()
    if found is not None:
        try:
            script.get_revision(found)
        except CommandError:
            raise SchemaTooNewError(found, head) from None
    return found, head


@dataclass(frozen=True)
class MissingIndex:
    """An index of this release's schema that the database lacks: its ``name``, its
    ``table`` and ``create``, the statement that makes it again, in the database's SQL."""

    name: str
    table: str
    create: str


def missing_indexes(url: str) -> list[MissingIndex]:
    """The indexes of this release's schema (``storage.tables``, the newest revision's)
    that the database at ``url`` lacks, named with their table; [] when it has them all
    (or is a SQLite file not made yet, or in memory). For a database at the newest
    revision.

    Read by name from the database's catalog (``sqlite_master``, ``pg_indexes``), not
    by SQLAlchemy's reflection, which skips an index on an expression on SQLite. That
    is also why a SQLite migration rebuilding a table (alembic's batch mode copies what
    it reflects) would drop 0013's indexes of the folded HCP id without a word, and
    erasures would read the log whole again. A missing index loses no data: reads that
    used it scan the table instead.
    """
    from sqlalchemy.schema import CreateIndex

    from nextbest.storage.tables import Base

    parsed = make_url(url)
    in_memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")
    if in_memory or missing_sqlite_file(url) is not None:
        return []  # a new connection would see another, empty database; or none at all
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                found = connection.exec_driver_sql(
                    "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'"
                )
            else:
                found = connection.exec_driver_sql(
                    "SELECT indexname, tablename FROM pg_indexes "
                    "WHERE schemaname = current_schema()"
                )
            present = {(str(name), str(table)) for name, table in found}
        dialect = engine.dialect
    finally:
        engine.dispose()
    return [
        MissingIndex(
            str(index.name), table.name, str(CreateIndex(index).compile(dialect=dialect)).strip()
        )
        for table in Base.metadata.sorted_tables
        for index in sorted(table.indexes, key=lambda index: str(index.name))
        if (str(index.name), table.name) not in present
    ]


class MissingIndexError(RuntimeError):
    """The database, at this release's schema revision, lacks indexes that revision has."""

    def __init__(self, missing: list[MissingIndex], *, postgresql: bool) -> None:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        named = ", ".join(f"index {index.name} on table {index.table}" for index in missing)
        statements = "; ".join(
            index.create.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1)
            if postgresql
            else index.create
            for index in missing
        )
        it = "it" if len(missing) == 1 else "them"
        how = " (CONCURRENTLY: the service's writes go on meanwhile)" if postgresql else ""
        super().__init__(
            f"the database's schema is at revision {head}, this release's, but lacks {named}, "
            "which that revision has (dropped by hand, left out of a restore, or by a "
            f"migration rebuilding the table): no row is lost, but the reads that use {it} "
            f"read the table whole. Recreate {it}{how}, then run the command again: "
            f"{statements} (docs/operations.md, 'Upgrading and rolling back')"
        )
        self.missing = missing


def check_indexes(url: str) -> None:
    """Raise :class:`MissingIndexError` naming each index of this release's schema that
    the database at ``url`` lacks (see :func:`missing_indexes`), with the statements
    that recreate them; nothing when it has them all."""
    missing = missing_indexes(url)
    if missing:
        raise MissingIndexError(missing, postgresql=make_url(url).get_backend_name() != "sqlite")


def _migrate_in_transaction(
    connection: Connection,
    revision: str,
    *,
    upgrade: bool,
    down: bool = False,
    planned_from: str | None = None,
) -> tuple[str | None, str | None]:
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    before = MigrationContext.configure(connection).get_current_revision()
    if planned_from is not None and before != planned_from:
        # Read under the lock: what the operator was shown is what is run, or nothing.
        raise DowngradeTargetError(
            f"the database's schema moved from revision {planned_from}, which the "
            f"downgrade was planned from, to {before} since (another operator, or a "
            "server upgrading it at start): run the downgrade again to see what it "
            "undoes now"
        )
    if before is None and (tables := _unversioned_tables(connection)):
        raise UnversionedSchemaError(tables)
    if before is not None:
        try:
            script.get_revision(before)
        except CommandError:
            raise SchemaTooNewError(before, script.get_current_head()) from None
        if not upgrade and before != script.get_current_head():
            raise SchemaBehindError(before, script.get_current_head())
    if down:
        _check_downgrade(script, before, revision)
        if revision == before:
            return before, before
    # env.py runs on this connection, inside the locked transaction.
    config.attributes["connection"] = connection
    (command.downgrade if down else command.upgrade)(config, revision)
    after = MigrationContext.configure(connection).get_current_revision()
    return before, after


class DowngradeTargetError(ValueError):
    """A downgrade asked for a revision this release does not know, or not below the
    database's, or planned from a revision the database has left since; nothing was
    changed."""


def _check_downgrade(script: ScriptDirectory, before: str | None, revision: str) -> None:
    """Refuse, naming both revisions, a downgrade target this release does not know or
    that is not at or below the database's revision (alembic's own words for these
    are a traceback from its command line)."""
    known = [step.revision for step in script.walk_revisions()]  # newest first
    if revision not in known:
        raise DowngradeTargetError(
            f"there is no schema revision {revision!r}: this release knows {known[-1]} to "
            f"{known[0]} (`nextbest --version` names its newest)"
        )
    if before is None:
        raise DowngradeTargetError("the database has no schema yet: there is nothing to downgrade")
    if revision not in known[known.index(before) :]:
        raise DowngradeTargetError(
            f"the database's schema is at revision {before}, below {revision}: a downgrade "
            "goes to an older revision (`nextbest db upgrade` upgrades)"
        )


def _at_revision(engine: Engine, revision: str) -> str | None:
    """``revision`` (``head``: the newest) when the database's schema is at it already,
    read without a lock; else None, for the locked path to check and migrate.

    Every command and every serving worker starts by migrating. Under the lock, on
    SQLite, that took the write lock and ran ``PRAGMA foreign_key_check`` over the
    whole log each time, a check with nothing to find when no step ran: seconds on a
    year of log, during which no answer or feedback event could be written. A schema
    read at the target is committed there (a migration in progress is read as the
    revision before it, and waited for under the lock)."""
    with engine.connect() as connection:
        found = MigrationContext.configure(connection).get_current_revision()
    if found is None:
        return None
    target = revision
    if revision == "head":
        target = ScriptDirectory.from_config(alembic_config()).get_current_head() or ""
    return found if found == target else None


def _migrate_locked(
    engine: Engine,
    revision: str,
    *,
    upgrade: bool = True,
    down: bool = False,
    planned_from: str | None = None,
) -> tuple[str | None, str | None]:
    def migrating(connection: Connection) -> tuple[str | None, str | None]:
        return _migrate_in_transaction(
            connection, revision, upgrade=upgrade, down=down, planned_from=planned_from
        )

    if not down and planned_from is None and (at := _at_revision(engine, revision)) is not None:
        return at, at
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            with sqlite_migration_transaction(connection):
                return migrating(connection)
        _lock_for_migration(connection)
        try:
            revisions = migrating(connection)
        except BaseException as exc:
            connection.rollback()
            if _is_lock_timeout(exc):
                tables = _tables_named(getattr(exc, "statement", None))
                raise MigrationLockTimeoutError(tables, _lock_holders(connection, tables)) from None
            raise
        connection.commit()
    return revisions


def migrate(
    url_or_engine: str | Engine, *, revision: str = "head", upgrade: bool = True
) -> tuple[str | None, str | None]:
    """Upgrade the database schema to ``revision`` (default: the newest migration);
    returns the revision before and after (None: an empty database).

    ``upgrade=False`` creates the schema of an empty database but refuses to change
    an existing one at another revision (:class:`SchemaBehindError`): what every
    command but ``serve`` and ``db upgrade`` does, so that a new release's command
    run against a shared database does not strand the servers of the previous one.

    Idempotent, and safe to call from several processes at once (SQLite: the write
    lock, PostgreSQL: an advisory lock); a database at ``revision`` already is only
    read, no lock taken. Given a URL, the engine made for it is
    disposed afterwards; a given engine is left open. Raises
    :class:`SchemaTooNewError` for a database a newer release migrated, and on
    PostgreSQL :class:`MigrationLockTimeoutError` when a statement waited
    ``PG_MIGRATION_LOCK_TIMEOUT_S`` for a table another session holds (the whole
    migration rolled back).
    """
    if isinstance(url_or_engine, Engine):
        return _migrate_locked(url_or_engine, revision, upgrade=upgrade)
    engine = make_engine(url_or_engine)
    try:
        return _migrate_locked(engine, revision, upgrade=upgrade)
    finally:
        engine.dispose()


def downgrade(
    url: str, revision: str, *, planned_from: str | None = None
) -> tuple[str | None, str | None]:
    """Downgrade the database schema at ``url`` to ``revision`` (an older one), to roll
    the code back past a migration; returns the revision before and after.
    ``planned_from``: the revision :func:`downgrade_plan` found, whose undoing an
    operator confirmed; a database at another one by the time the migration lock is
    held is refused (:class:`DowngradeTargetError` naming both, nothing changed).

    Run as upgrades are: one transaction under the migration lock, foreign keys
    checked on SQLite before it commits, and on PostgreSQL each statement waits at
    most ``PG_MIGRATION_LOCK_TIMEOUT_S`` for a table (:class:`MigrationLockTimeoutError`,
    nothing changed). What the migrations undone added is deleted, with its data.
    Raises :class:`DowngradeTargetError` naming the revisions for a target this
    release does not know or that is not at or below the database's, and
    :class:`SchemaTooNewError` for a database a newer release migrated (downgrade it
    with that release)."""
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise DowngradeTargetError(f"there is no database file {missing}: nothing to downgrade")
    engine = make_engine(url)
    try:
        return _migrate_locked(engine, revision, down=True, planned_from=planned_from)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class UndoneMigration:
    """A migration a downgrade undoes: its ``revision``, its ``description`` (the
    first line of its docstring) and what its downgrade drops, with the data in it
    (``table maintenance_runs``, ``column recommendations.temperature``, ``index
    ix_recommendations_decided_for on recommendations``)."""

    revision: str
    description: str
    drops: tuple[str, ...]


def downgrade_plan(url: str, revision: str) -> tuple[str | None, list[UndoneMigration]]:
    """The database's schema revision and the migrations a downgrade of it to
    ``revision`` would undo, newest first (none: it is at ``revision`` already), for
    an operator to confirm before :func:`downgrade`. Only reads; raises as
    :func:`downgrade` does for a target it would refuse."""
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise DowngradeTargetError(f"there is no database file {missing}: nothing to downgrade")
    before, _ = schema_revisions(url)
    script = ScriptDirectory.from_config(alembic_config())
    _check_downgrade(script, before, revision)
    undone: list[UndoneMigration] = []
    for step in script.walk_revisions():  # newest first
        if step.revision == revision:
            break
        if undone or step.revision == before:
            undone.append(UndoneMigration(step.revision, step.doc, _dropped_by(Path(step.path))))
    return before, undone


def _dropped_by(migration: Path) -> tuple[str, ...]:
    """What the ``downgrade()`` of the migration file ``migration`` drops, read from its
    source: ``op.drop_table``, ``op.drop_index`` and ``drop_column`` (on ``op`` or in
    ``op.batch_alter_table``). The migrations are written by hand in these forms;
    another statement is not named (the migration's description still is)."""
    tree = ast.parse(migration.read_text(encoding="utf-8"))
    body = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "downgrade"), None
    )
    if body is None:
        return ()
    drops: list[str] = []
    _collect_drops(body.body, {}, drops)
    return tuple(drops)


def _collect_drops(statements: list[ast.stmt], batches: dict[str, str], drops: list[str]) -> None:
    """Append to ``drops`` what ``statements`` drop; ``batches`` maps the name of each
    ``with op.batch_alter_table("t") as batch`` they are in to its table."""
    for statement in statements:
        if isinstance(statement, ast.With):
            inner = dict(batches)
            for item in statement.items:
                call, name = item.context_expr, item.optional_vars
                if (
                    isinstance(call, ast.Call)
                    and _called(call) == "batch_alter_table"
                    and isinstance(name, ast.Name)
                    and call.args
                ):
                    inner[name.id] = _text(call.args[0])
            _collect_drops(statement.body, inner, drops)
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Call):
                dropped = _dropped(node, batches)
                if dropped is not None:
                    drops.append(dropped)


def _dropped(call: ast.Call, batches: dict[str, str]) -> str | None:
    """What ``call`` drops (``table t``, ``column t.c``, ``index i on t``), if it drops."""
    called, args = _called(call), [_text(arg) for arg in call.args]
    table = next((_text(k.value) for k in call.keywords if k.arg == "table_name"), None)
    if not args:
        return None
    if called == "drop_table":
        return f"table {args[0]}"
    if called == "drop_index":
        return f"index {args[0]}" + (f" on {table}" if table else "")
    if called == "drop_column" and isinstance(call.func, ast.Attribute):
        owner = call.func.value
        if isinstance(owner, ast.Name) and owner.id in batches:
            return f"column {batches[owner.id]}.{args[0]}"
        if len(args) >= 2:
            return f"column {args[0]}.{args[1]}"
    return None


def _called(call: ast.Call) -> str | None:
    """The name of the method or function ``call`` calls (``drop_table`` of
    ``op.drop_table(...)``)."""
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _text(node: ast.expr) -> str:
    """A string argument's value, ``op.f("name")``'s too; else its source."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Call) and _called(node) == "f" and node.args:
        return _text(node.args[0])
    return ast.unparse(node)
