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
from datetime import datetime
from pathlib import Path

from nextbest.contract.dataset import load_id_list
from nextbest.registry import VersionHolding, versions_holding
from nextbest.service.feedback_file import file_requester
from nextbest.settings import Settings
from nextbest.storage.db import store_session
from nextbest.storage.repository import (
    MAX_LENGTHS,
    Erasure,
    ErasureError,
    HcpRows,
    count_hcp_rows,
    erase_hcps,
    erased_already,
    hcps_with_rows,
)

__all__ = [
    "Erasure",
    "ErasureError",
    "HcpRows",
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
) -> tuple[HcpRows, dict[str, datetime], set[str]]:
    """What an erasure of ``hcp_ids`` would delete, per table; the HCPs already
    erased (when their suppression was stored); and the HCPs some row names."""
    with store_session(settings.resolved_database_url) as session:
        return (
            count_hcp_rows(session, hcp_ids=hcp_ids),
            erased_already(session, hcp_ids=hcp_ids),
            hcps_with_rows(session, hcp_ids=hcp_ids),
        )


def erase(settings: Settings, hcp_ids: Sequence[str]) -> tuple[Erasure, bool]:
    """Erase ``hcp_ids`` from the store ``settings`` names, in one transaction; the
    suppressions say ``nextbest erase (<user>)`` sent them.

    On SQLite, the deleting connection overwrites what it deletes (``secure_delete``)
    and the write-ahead log is checkpointed and emptied afterwards, so the deleted
    rows are not left readable in the files. The second value is False when the log
    could not be emptied (a server's connection was reading): it still holds them.
    """
    with store_session(settings.resolved_database_url) as session:
        sqlite = session.get_bind().dialect.name == "sqlite"
        if sqlite:
            session.connection().exec_driver_sql("PRAGMA secure_delete = ON")
        done = erase_hcps(session, hcp_ids=hcp_ids, requester=file_requester("erase"))
        if not sqlite:
            return done, True
        busy, pages, moved = (
            session.connection().exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        )
        session.commit()
        return done, not busy and pages in (0, moved)
