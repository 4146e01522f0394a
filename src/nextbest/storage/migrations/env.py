"""Alembic environment of the nextbest storage schema.

Called by ``nextbest.storage.db.migrate`` with an open, locked connection in
``config.attributes["connection"]``; run from the alembic command line it makes its
own engine from ``sqlalchemy.url`` or, failing that, the service settings. Either
way, on PostgreSQL every migration of a run is one transaction, and a statement
waits at most ``PG_MIGRATION_LOCK_TIMEOUT_S`` for a table lock.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from nextbest.storage.tables import Base

config = context.config
target_metadata = Base.metadata

# Only the alembic command line has an ini file with logging settings; the service's
# own logging must not be reconfigured by a programmatic migrate().
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from nextbest.settings import get_settings

    return get_settings().resolved_database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later migrations rebuild tables in batch mode.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the caller's connection if there is one, else on a new engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from nextbest.storage.db import make_engine, set_migration_lock_timeout

    engine = make_engine(_database_url())
    try:
        with engine.connect() as own_connection:
            if own_connection.dialect.name == "sqlite":
                _run_on_sqlite(own_connection)
                return
            # A downgrade's DROP COLUMN waits for the table like an upgrade's ALTER:
            # bounded the same way. The SET opens the transaction the migrations run
            # in (alembic then leaves it to us), committed only if they all succeed.
            set_migration_lock_timeout(own_connection)
            _run(own_connection)
            own_connection.commit()
    finally:
        engine.dispose()


def _run_on_sqlite(connection: Connection) -> None:
    """Run the migrations as ``migrate`` does: in one transaction, foreign keys
    unenforced and checked before it commits (a rebuilt ``recommendations`` would
    otherwise take its items with it; see sqlite_migration_transaction)."""
    from nextbest.storage.db import sqlite_migration_transaction

    with sqlite_migration_transaction(connection):
        _run(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
