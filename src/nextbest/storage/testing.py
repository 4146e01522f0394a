"""Throw-away databases for test suites (storage, API, durability tests).

Kept in the package, not in a conftest, so any test package or script can use it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

POSTGRES_URL_ENV = "NEXTBEST_TEST_POSTGRES_URL"
TEST_DATABASE_PREFIX = "nextbest_t_"


@contextmanager
def temporary_postgres_database(server_url: str) -> Iterator[str]:
    """Create a uniquely named PostgreSQL database, yield its URL, drop it afterwards.

    ``server_url`` names any existing database on the server (used only to run
    CREATE / DROP DATABASE); the user needs the CREATEDB privilege. The database is
    dropped WITH (FORCE) (PostgreSQL 13+), so connections a test left open do not
    keep it alive. The yielded URL keeps the password, for use by other processes.
    """
    server = make_url(server_url)
    if server.drivername == "postgresql":
        server = server.set(drivername="postgresql+psycopg")
    name = f"{TEST_DATABASE_PREFIX}{uuid.uuid4().hex[:8]}"
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
