"""Erasure of HCPs on request (GDPR article 17): what nextbest stores about them goes.

The recommendation log and the feedback store are nextbest's own: their rows naming
the HCPs are deleted and one suppression per HCP is kept (an all-channel
``opted_out`` event, see :func:`~nextbest.storage.repository.erase_hcps`), so serving
stops contacting them at once. Registered model versions keep the HCPs' attributes
until they are retrained without them and deleted; the user's own input files are
theirs to clean. :func:`versions_holding` names those versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from nextbest.contract.dataset import load_id_list
from nextbest.registry import VersionHolding, versions_holding
from nextbest.service.feedback_file import file_requester
from nextbest.settings import Settings
from nextbest.storage.db import describe_database_error, store_session
from nextbest.storage.repository import (
    MAX_LENGTHS,
    Erasure,
    ErasureError,
    RowCounts,
    count_hcp_rows,
    erase_hcps,
    erased_already,
    hcps_with_rows,
)

__all__ = [
    "Cleanup",
    "Erasure",
    "ErasureError",
    "RowCounts",
    "VersionHolding",
    "check_ids",
    "erase",
    "read_ids",
    "rows_naming",
    "versions_holding",
]


def read_ids(path: Path) -> list[str]:
    """The HCP ids of a CSV or Parquet file's ``hcp_id`` column, each once, in order.

    Raises:
        ContractError: no such file or column, no rows, or an empty cell (named).
    """
    return load_id_list(path)


def check_ids(hcp_ids: Sequence[str]) -> list[str]:
    """``hcp_ids`` stripped, each once, in order.

    Raises:
        ValueError: none given, or one empty or longer than any stored id can be.
    """
    ids = list(dict.fromkeys(h.strip() for h in hcp_ids))
    if not ids:
        raise ValueError("no HCP id given: name them as arguments or in --file")
    limit = MAX_LENGTHS["hcp_id"]
    for hcp_id in ids:
        if not hcp_id or len(hcp_id) > limit:
            raise ValueError(
                f"HCP id {hcp_id!r} is not an id nextbest can store (1 to {limit} characters)"
            )
    return ids


def rows_naming(
    settings: Settings, hcp_ids: Sequence[str]
) -> tuple[RowCounts, dict[str, datetime], set[str]]:
    """What an erasure of ``hcp_ids`` would delete, per table; the HCPs already
    erased (when their suppression was stored); and the HCPs some row names."""
    with store_session(settings.resolved_database_url) as session:
        return (
            count_hcp_rows(session, hcp_ids=hcp_ids),
            erased_already(session, hcp_ids=hcp_ids),
            hcps_with_rows(session, hcp_ids=hcp_ids),
        )


@dataclass(frozen=True)
class Cleanup:
    """What became of the deleted rows in the database's own files.

    SQLite: ``log_emptied`` False when the write-ahead log could not be emptied (a
    server's connection was reading): it still holds them. PostgreSQL: the tables
    ``VACUUM`` ran on, those it could not (table -> why), and per table the dead rows
    it could not remove yet (another session's open transaction may still see them).
    """

    backend: str
    log_emptied: bool = True
    vacuumed: tuple[str, ...] = ()
    not_vacuumed: dict[str, str] = field(default_factory=dict)
    dead_left: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Nothing of the deleted rows is left that this command could have cleared."""
        return self.log_emptied and not self.not_vacuumed and not any(self.dead_left.values())


def erase(settings: Settings, hcp_ids: Sequence[str]) -> tuple[Erasure, Cleanup]:
    """Erase ``hcp_ids`` from the store ``settings`` names, in one transaction; the
    suppressions say ``nextbest erase (<user>)`` sent them.

    On SQLite, the deleting connection overwrites what it deletes (``secure_delete``)
    and the write-ahead log is checkpointed and emptied afterwards, so the deleted
    rows are not left readable in the files. On PostgreSQL a DELETE leaves each row
    in its table as a dead row until it is vacuumed (autovacuum may take hours to
    get there): each table rows were deleted from is vacuumed at once, index entries
    included. The :class:`Cleanup` says how that went.
    """
    with store_session(settings.resolved_database_url) as session:
        sqlite = session.get_bind().dialect.name == "sqlite"
        if sqlite:
            session.connection().exec_driver_sql("PRAGMA secure_delete = ON")
        done = erase_hcps(session, hcp_ids=hcp_ids, requester=file_requester("erase"))
        if not sqlite:
            deleted = done.deleted
            tables = [
                table
                for table, n in (
                    ("feedback_events", deleted.feedback_events),
                    ("recommendation_items", deleted.recommendation_items),
                    ("recommendations", deleted.recommendations),
                )
                if n
            ]
            engine = session.get_bind()
            assert isinstance(engine, Engine)
            return done, vacuum(engine, tables)
        busy, pages, moved = (
            session.connection().exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        )
        session.commit()
        return done, Cleanup("sqlite", log_emptied=not busy and pages in (0, moved))


def vacuum(engine: Engine, tables: Sequence[str]) -> Cleanup:
    """``VACUUM (INDEX_CLEANUP ON)`` each of ``tables`` on PostgreSQL, outside any
    transaction, and read how many dead rows each still has.

    ``INDEX_CLEANUP ON``: by default VACUUM may skip the indexes when few pages have
    dead rows, and index entries hold the deleted HCP ids too. A table the role may
    not vacuum (only its owner may, or from PostgreSQL 17 a role granted
    ``MAINTAIN``) is skipped by the server with a warning, reported here; so is a
    failed VACUUM, the erasure being committed already.
    """
    vacuumed: list[str] = []
    not_vacuumed: dict[str, str] = {}
    dead_left: dict[str, int] = {}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        notices: list[str] = []
        driver: Any = connection.connection.driver_connection

        def heard(notice: Any) -> None:
            notices.append(str(notice.message_primary or ""))

        driver.add_notice_handler(heard)
        try:
            for table in tables:
                notices.clear()
                try:
                    connection.exec_driver_sql(f"VACUUM (INDEX_CLEANUP ON) {table}")
                except DBAPIError as exc:
                    not_vacuumed[table] = describe_database_error(exc)
                    continue
                skipped = [n for n in notices if n.startswith("skipping")]
                if skipped:
                    not_vacuumed[table] = skipped[0]
                    continue
                vacuumed.append(table)
                # VACUUM records the dead rows it had to leave as it ends.
                connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
                dead_left[table] = int(
                    connection.exec_driver_sql(
                        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %(t)s::regclass",
                        {"t": table},
                    ).scalar_one()
                )
        finally:
            driver.remove_notice_handler(heard)
    return Cleanup("postgresql", True, tuple(vacuumed), not_vacuumed, dead_left)
