"""Throw-away databases, and log rows to put in them, for test suites (storage,
API, CLI, loop, durability tests).

Kept in the package, not in a conftest, so any test package or script can use it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

from nextbest.storage.repository import RecommendationRecord, ServedItem

POSTGRES_URL_ENV = "NEXTBEST_TEST_POSTGRES_URL"
# When the rows below were logged unless a test says otherwise.
T0 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
TEST_DATABASE_PREFIX = "nextbest_t_"


@contextmanager
def temporary_postgres_database(server_url: str, *, template: str | None = None) -> Iterator[str]:
    """Create a uniquely named PostgreSQL database, yield its URL, drop it afterwards.

    ``server_url`` names any existing database on the server (used only to run
    CREATE / DROP DATABASE); the user needs the CREATEDB privilege. ``template``
    names a database to copy (``CREATE DATABASE ... TEMPLATE``; nobody may be
    connected to it) instead of making an empty one. The database is dropped WITH
    (FORCE) (PostgreSQL 13+), so connections a test left open do not keep it
    alive. The yielded URL keeps the password, for use by other processes.
    """
    server = make_url(server_url)
    if server.drivername == "postgresql":
        server = server.set(drivername="postgresql+psycopg")
    name = f"{TEST_DATABASE_PREFIX}{uuid.uuid4().hex[:8]}"
    copied = f' TEMPLATE "{template}"' if template else ""
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"{copied}')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            # Dropped at once, not left for later: a database dropped soon after it was
            # made has its pages thrown away, where one left standing has them written
            # out by the checkpoint each DROP DATABASE forces (PostgreSQL up to 15).
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@contextmanager
def temporary_mysql_database(server_url: str, *, prefix: str = "nextbest_test_") -> Iterator[str]:
    """Create a uniquely named MySQL or MariaDB database (named ``prefix`` and a random
    suffix), yield its URL, drop it afterwards. ``server_url`` is a user allowed to
    CREATE / DROP DATABASE; the yielded URL keeps the password, for other processes."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    finally:
        admin.dispose()


class TcpProxy:
    """A loopback TCP proxy to a database server that a test takes down and brings back.

    ``stop()`` closes the listening socket and every connection through it (the
    database is unreachable: refused, and dropped mid-session); ``start()``
    listens again on the same port. ``hang()`` keeps listening but answers nothing,
    as a server that hangs or a network that drops packets does. Clients connect to
    ``127.0.0.1:port``.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._hanging = False
        self.accepted = 0  # connections passed on to the server since the proxy was made
        self.held = 0  # connections accepted and left unanswered (hang) since it was made

    @classmethod
    def to_database(cls, url: str, *, port: int) -> tuple[TcpProxy, str]:
        """A proxy (not started yet) to database ``url``'s server, and the URL through it."""
        real = make_url(url)
        proxy = cls(real.host or "127.0.0.1", real.port or 5432, port=port)
        through = real.set(host="127.0.0.1", port=port)
        return proxy, through.render_as_string(hide_password=False)

    def start(self) -> None:
        """Listen, passing connections on to the server; after ``hang()``, pass the new
        ones on again (those it holds stay unanswered, as a packet lost for good)."""
        self._hanging = False
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def hang(self) -> None:
        """Close every connection through the proxy (the server is gone) and, from now
        on, accept connections and hold them open without a byte of answer, until
        ``stop()``: a client waits for its own timeout, as behind a firewall that
        drops packets or on a server that hangs."""
        self._hanging = True
        self._close_open()

    def stop(self) -> None:
        self._hanging = False
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._close_open()

    def _close_open(self) -> None:
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # stopped
                return
            if self._hanging:
                with self._lock:
                    if self._listener is not listener:  # stopped meanwhile
                        client.close()
                        return
                    self._open.add(client)
                    self.held += 1
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


def served_item(
    rank: int, action_id: str, channel: str = "email", **overrides: object
) -> ServedItem:
    """A served item with plausible defaults; override any field by name."""
    fields: dict[str, object] = {
        "rank": rank,
        "action_id": action_id,
        "channel": channel,
        "content_id": f"content-{action_id}",
        "score": 1.0 / rank,
        "expected_uplift": 0.1 / rank,
        "p_engage": 0.3,
        "propensity": 0.9 if rank == 1 else 0.05,
        "explored": False,
    }
    fields.update(overrides)
    return ServedItem(**fields)  # type: ignore[arg-type]


def recommendation_record(
    recommendation_id: str,
    hcp_id: str,
    *,
    items: tuple[ServedItem, ...] = (),
    holdout: bool = False,
    created_at: datetime = T0,
    **overrides: object,
) -> RecommendationRecord:
    """A logged recommendation with plausible defaults; override any field by name."""
    fields: dict[str, object] = {
        "recommendation_id": recommendation_id,
        "created_at": created_at,
        "hcp_id": hcp_id,
        "requester": "crm-eu",
        "purpose": "promotional",
        "channel_filter": None,
        "model_version": "nextbest/7",
        "holdout": holdout,
        "policy": "epsilon_greedy",
        "epsilon": 0.05,
        "holdout_rate": 0.1,
        "n_candidates": 200,
        "items": items,
    }
    fields.update(overrides)
    return RecommendationRecord(**fields)  # type: ignore[arg-type]


@contextmanager
def statements_sent(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The statements sent on ``engine`` while the block runs, with their parameters:
    what a read asks the database, to look at its plans (tests, bench/logscale.py)."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", keep)
