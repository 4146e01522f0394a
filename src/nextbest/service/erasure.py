"""Erasure of HCPs on request (GDPR article 17), and retention by age (article
5(1)(e), storage limitation): what nextbest stores goes.

The recommendation log and the feedback store are nextbest's own: their rows naming
the HCPs are deleted and one suppression per HCP is kept (an all-channel
``opted_out`` event, see :func:`~nextbest.storage.repository.erase_hcps`), so serving
stops contacting them at once. Registered model versions keep the HCPs' attributes
until they are retrained without them and deleted; the user's own input files are
theirs to clean. :func:`versions_holding` names those versions.

:func:`prune` deletes the rows from before a cutoff, in batches, consent events
and erasure suppressions kept (:func:`~nextbest.storage.repository.prune_batch`);
:func:`check_cutoff` refuses a cutoff inside the history the serving rules read.

Each prune and erasure leaves one ``maintenance_runs`` row: who ran it, when, what
it was asked, what it deleted and how it ended (:func:`runs` lists them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from nextbest.contract.dataset import load_id_list
from nextbest.registry import VersionHolding, versions_holding
from nextbest.service.requester import file_requester
from nextbest.settings import Settings
from nextbest.storage.db import describe_database_error, store_session
from nextbest.storage.repository import (
    MAX_LENGTHS,
    Erasure,
    ErasureError,
    MaintenanceRecord,
    PruneKept,
    RowCounts,
    count_hcp_rows,
    count_rows_before,
    end_run,
    erase_hcps,
    erased_already,
    hcps_spelled_alike,
    hcps_with_rows,
    insert_run,
    maintenance_runs,
    prune_batch,
    start_run,
)

if TYPE_CHECKING:
    from nextbest.policy.rules import ServingRules

__all__ = [
    "VACUUM",
    "Cleanup",
    "CutoffError",
    "Erasure",
    "ErasureError",
    "MaintenanceRecord",
    "PruneKept",
    "PruneStoppedError",
    "RowCounts",
    "RunNotRecordedError",
    "VersionHolding",
    "check_cutoff",
    "check_ids",
    "erase",
    "finish_cleanup",
    "prune",
    "read_ids",
    "record_nothing_pruned",
    "rows_before",
    "rows_naming",
    "runs",
    "spelled_alike",
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


def spelled_alike(settings: Settings, hcp_ids: Sequence[str]) -> set[str]:
    """The HCP ids the store's rows name that differ from one of ``hcp_ids`` only in
    case or leading zeros (``hcp_ids`` themselves included when named): what a
    mistyped erasure request meant."""
    with store_session(settings.resolved_database_url) as session:
        return hcps_spelled_alike(session, hcp_ids=hcp_ids)


@dataclass(frozen=True)
class Cleanup:
    """What became of the deleted rows in the database's own files.

    SQLite: ``log_emptied`` False when the write-ahead log could not be emptied (a
    server's connection was reading): it still holds them. PostgreSQL: the tables
    ``VACUUM`` ran on, those it could not (table -> why), and per table the dead rows
    it could not remove yet (another session's open transaction may still see them),
    and the tables whose planner statistics could not be refreshed (table -> why:
    they may hold values sampled from the deleted rows).
    """

    backend: str
    log_emptied: bool = True
    vacuumed: tuple[str, ...] = ()
    not_vacuumed: dict[str, str] = field(default_factory=dict)
    dead_left: dict[str, int] = field(default_factory=dict)
    not_analyzed: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Nothing of the deleted rows is left that this command could have cleared."""
        return (
            self.log_emptied
            and not self.not_vacuumed
            and not any(self.dead_left.values())
            and not self.not_analyzed
        )


def erase(
    settings: Settings,
    hcp_ids: Sequence[str],
    *,
    committed: Callable[[Erasure], None] | None = None,
) -> tuple[Erasure, Cleanup]:
    """Erase ``hcp_ids`` from the store ``settings`` names, in one transaction; the
    suppressions say ``nextbest erase (<user>)`` sent them. ``committed`` is told
    what was erased as soon as the transaction is committed, before the clean-up
    below, so that what a signal stopping it there left can be said: erased.

    On SQLite, the deleting connection overwrites what it deletes (``secure_delete``)
    and the write-ahead log is checkpointed and emptied afterwards, so the deleted
    rows are not left readable in the files. On PostgreSQL a DELETE leaves each row
    in its table as a dead row until it is vacuumed (autovacuum may take hours to
    get there): each table rows were deleted from is vacuumed at once, index entries
    included. The :class:`Cleanup` says how that went.
    """
    with store_session(settings.resolved_database_url) as session:
        _overwrite_deletes(session)
        done = erase_hcps(session, hcp_ids=hcp_ids, requester=file_requester("erase"))
        if committed is not None:
            committed(done)
        # HCPs erased before: that erasure's clean-up may be unfinished (a server kept
        # the write-ahead log from being emptied, a signal stopped it), and this run,
        # which its note tells to run, finishes it whatever it deletes itself.
        return done, _clean_up(session, done.deleted, earlier=bool(done.already_suppressed))


def finish_cleanup(settings: Settings) -> Cleanup:
    """The clean-up of an earlier erasure, for a rerun that has nothing left to delete
    (every HCP erased before, nothing logged since): what that erasure may have left
    of its deleted rows in the database's files goes, as :func:`erase` clears its
    own. Which tables it deleted from is not known, so on PostgreSQL all three an
    erasure deletes from are vacuumed."""
    with store_session(settings.resolved_database_url) as session:
        return _clean_up(session, RowCounts(), earlier=True)


def _overwrite_deletes(session: Session) -> None:
    """On SQLite, have the session's connection overwrite what it deletes
    (``secure_delete``, a setting of the connection: set again per transaction,
    which may get another connection from the pool). Nothing on PostgreSQL."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("PRAGMA secure_delete = ON")


def _clean_up(session: Session, deleted: RowCounts, *, earlier: bool = False) -> Cleanup:
    """After committed deletes: on SQLite, checkpoint and empty the write-ahead log;
    on PostgreSQL, :func:`vacuum` each table rows were deleted from, or, ``earlier``
    (what an earlier run deleted may be left), each table an erasure deletes from."""
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    if engine.dialect.name != "sqlite":
        tables = [
            table
            for table, n in (
                ("feedback_events", deleted.feedback_events),
                ("recommendation_items", deleted.recommendation_items),
                ("recommendations", deleted.recommendations),
            )
            if n or earlier
        ]
        return vacuum(engine, tables)
    busy, pages, moved = (
        session.connection().exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    )
    session.commit()
    return Cleanup("sqlite", log_emptied=not busy and pages in (0, moved))


# How often a batch is tried when feedback about one of its recommendations arrives
# as it runs (each try selects the batch afresh, a little later each time).
PRUNE_TRIES = 10


class PruneInterruptedError(RuntimeError):
    """A batch failed on every try: feedback kept arriving about its answers."""


def _prune_batch_retried(session: Session, before: datetime, run_id: str) -> RowCounts:
    for attempt in range(1, PRUNE_TRIES + 1):
        _overwrite_deletes(session)
        try:
            return prune_batch(session, before=before, run_id=run_id)
        except IntegrityError:
            time.sleep(0.05 * attempt)
    raise PruneInterruptedError(
        f"feedback kept arriving about the answers being pruned ({PRUNE_TRIES} tries of one "
        "batch failed on it): the batches before were deleted and committed; run prune "
        "again, at a quieter time if it recurs"
    )


@dataclass
class PruneTrail:
    """What a prune's row in ``maintenance_runs`` says, kept up as it goes, so that
    its caller can say what a signal (Ctrl-C, SIGTERM) stopping it left: ``run_id``
    once the row is committed (None: nothing deleted), ``outcome`` once its end is
    written (``finished``, or ``interrupted`` when the mark was stored; None: the row
    still says ``running``)."""

    run_id: str | None = None
    outcome: str | None = None


class PruneStoppedError(RuntimeError):
    """A prune that stopped before the end (``__cause__``: a
    :class:`PruneInterruptedError` or the database's error); the batches before
    were deleted and committed.

    ``deleted``: what they deleted. ``recorded``: its ``maintenance_runs`` row says
    ``interrupted`` and why; False when that could not be written (the database
    gone), the row then saying ``running``, with the counts of those batches.
    """

    def __init__(self, message: str, *, deleted: RowCounts, run_id: str, recorded: bool) -> None:
        super().__init__(message)
        self.deleted, self.run_id, self.recorded = deleted, run_id, recorded


class RunNotRecordedError(RuntimeError):
    """A prune's ``maintenance_runs`` row could not be stored (the role may not
    insert into the table, the database is gone): nothing was deleted."""


class CutoffError(ValueError):
    """A prune's cutoff refused: in the future, or inside the history the serving
    rules read. ``latest``: the latest cutoff allowed (None: the cutoff is in the
    future); ``days`` and ``rule``: the rules' longest window and the rule, when
    they refused it."""

    def __init__(
        self,
        message: str,
        *,
        latest: datetime | None = None,
        days: float | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.latest, self.days, self.rule = latest, days, rule


def check_cutoff(before: datetime, rules: ServingRules, *, now: datetime) -> None:
    """Refuse a prune at ``before`` (timezone-aware) that would delete what serving
    still reads at ``now``.

    Frequency caps, cool-downs, the all-channel budget and dismissal and snooze
    windows count feedback events back from each decision: pruning inside the
    longest of them (:meth:`ServingRules.history_reach`) would let serving contact
    HCPs again too soon. Consent events are never pruned, so they set no limit.

    Raises:
        CutoffError: ``before`` is after ``now``, or after ``now`` less the rules'
            longest window (the message names the rule and its file; the error
            holds the latest cutoff allowed).
    """
    if before > now:
        raise CutoffError("is in the future: nothing logged is that new yet")
    reach = rules.history_reach()
    if reach is None:
        return
    days, rule = reach
    latest = now - timedelta(days=days)
    if before > latest:
        raise CutoffError(
            f"is inside the history serving reads: {rule} is {days:g} days in "
            f"{rules.source}, and deleting what it counts would let serving contact HCPs "
            "again too soon",
            latest=latest,
            days=days,
            rule=rule,
        )


def rows_before(settings: Settings, before: datetime) -> tuple[RowCounts, PruneKept]:
    """What a prune at ``before`` would delete, per table, and what it keeps from
    before then (consent events, erasure suppressions, answers an opt-out names)."""
    with store_session(settings.resolved_database_url) as session:
        return count_rows_before(session, before=before)


def prune(
    settings: Settings,
    before: datetime,
    *,
    arguments: str | None = None,
    progress: Callable[[RowCounts], None] | None = None,
    trail: PruneTrail | None = None,
) -> tuple[RowCounts, Cleanup]:
    """Delete the rows from before ``before`` in the store ``settings`` names, in
    batches of ``PRUNE_BATCH`` recommendations (then untied feedback events), each
    its own transaction; ``progress`` is told each batch's counts as it commits, and
    ``trail`` what its row in ``maintenance_runs`` says.

    Recorded in ``maintenance_runs`` (``arguments``: the options the command was
    given): the run's row is committed before the first delete, sent by ``nextbest
    prune (<user>)``, and each batch adds its counts in its own transaction; at the
    end it says ``finished``, or ``interrupted`` and why. A row that cannot be
    inserted stops the prune before it deletes anything (RunNotRecordedError).

    Deleted and cleaned up as :func:`erase` does (``secure_delete`` and an emptied
    write-ahead log on SQLite, ``VACUUM`` on PostgreSQL, once, after the last
    batch). What it deletes and keeps:
    :func:`~nextbest.storage.repository.prune_batch`. The caller checks ``before``
    first (:func:`check_cutoff`).

    Raises:
        RunNotRecordedError: the run's row could not be inserted; nothing deleted.
        PruneStoppedError: a batch failed (feedback kept arriving, a database
            error), or the run's end could not be recorded; what was deleted
            before stays deleted.
    """
    before = before.astimezone(UTC)
    deleted = RowCounts()
    with store_session(settings.resolved_database_url) as session:
        try:
            run_id = start_run(
                session,
                command="prune",
                requester=file_requester("prune"),
                cutoff=before,
                arguments=arguments,
            )
        except SQLAlchemyError as exc:
            session.rollback()
            raise RunNotRecordedError(
                "the run could not be recorded in maintenance_runs, so nothing was deleted: "
                f"{describe_database_error(exc)}"
            ) from exc
        trail = trail if trail is not None else PruneTrail()
        trail.run_id = run_id
        try:
            while True:
                batch = _prune_batch_retried(session, before, run_id)
                if not batch.total:
                    break
                deleted += batch
                if progress is not None:
                    progress(batch)
            end_run(session, run_id=run_id, outcome="finished")
            trail.outcome = "finished"
        except BaseException as exc:  # Ctrl-C too: recorded, then raised as it is
            why = describe_database_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
            recorded = _record_end(session, run_id, why or type(exc).__name__)
            if recorded:
                trail.outcome = "interrupted"
            if not isinstance(exc, PruneInterruptedError | SQLAlchemyError):
                raise
            raise PruneStoppedError(
                str(exc), deleted=deleted, run_id=run_id, recorded=recorded
            ) from exc
        return deleted, _clean_up(session, deleted)


def _record_end(session: Session, run_id: str, why: str) -> bool:
    """Record a run as interrupted, ``why``; False when the database refused."""
    try:
        end_run(session, run_id=run_id, outcome="interrupted", detail=why)
    except SQLAlchemyError:
        session.rollback()
        return False
    return True


def record_nothing_pruned(
    settings: Settings, before: datetime, *, arguments: str | None = None
) -> None:
    """Record a prune at ``before`` that found nothing to delete: a finished run, no
    row deleted, so the trail shows the retention job ran and what it covered."""
    with store_session(settings.resolved_database_url) as session:
        now = datetime.now(UTC)
        insert_run(
            session,
            command="prune",
            requester=file_requester("prune"),
            started_at=now,
            ended_at=now,
            outcome="finished",
            cutoff=before.astimezone(UTC),
            arguments=arguments,
        )
        session.commit()


def runs(settings: Settings, *, limit: int) -> tuple[list[MaintenanceRecord], int]:
    """The newest ``limit`` prunes and erasures, newest first, and how many there are."""
    with store_session(settings.resolved_database_url) as session:
        return maintenance_runs(session, limit=limit)


# What an erasure or a prune runs on each table it deleted from (see :func:`vacuum`).
VACUUM = "VACUUM (INDEX_CLEANUP ON, ANALYZE)"


def vacuum(engine: Engine, tables: Sequence[str]) -> Cleanup:
    """``VACUUM (INDEX_CLEANUP ON)``, then ``ANALYZE``, each of ``tables`` on
    PostgreSQL, outside any transaction, reading how many dead rows each still has
    between the two (:data:`VACUUM` says both in one statement, for a person to run).

    ``INDEX_CLEANUP ON``: by default VACUUM may skip the indexes when few pages have
    dead rows, and index entries hold the deleted HCP ids too. ``ANALYZE``: the
    planner's statistics (``pg_stats``: most common values, histogram bounds) keep
    values sampled from the rows when the table was last analyzed, HCP ids among
    them, until it is analyzed again. A table the role may
    not vacuum (only its owner may, or from PostgreSQL 17 a role granted
    ``MAINTAIN``) is skipped by the server with a warning, reported here; so is a
    failed VACUUM, the erasure being committed already.
    """
    vacuumed: list[str] = []
    not_vacuumed: dict[str, str] = {}
    dead_left: dict[str, int] = {}
    not_analyzed: dict[str, str] = {}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        notices: list[str] = []
        driver: Any = connection.connection.driver_connection

        def heard(notice: Any) -> None:
            notices.append(str(notice.message_primary or ""))

        driver.add_notice_handler(heard)
        try:
            for table in tables:
                why = _run_skippable(connection, notices, f"VACUUM (INDEX_CLEANUP ON) {table}")
                if why is not None:
                    not_vacuumed[table] = why
                    continue
                vacuumed.append(table)
                # VACUUM records the dead rows it had to leave as it ends (read before
                # ANALYZE, which records its own estimate).
                connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
                dead_left[table] = int(
                    connection.exec_driver_sql(
                        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %(t)s::regclass",
                        {"t": table},
                    ).scalar_one()
                )
                why = _run_skippable(connection, notices, f"ANALYZE {table}")
                if why is not None:
                    not_analyzed[table] = why
        finally:
            driver.remove_notice_handler(heard)
    return Cleanup("postgresql", True, tuple(vacuumed), not_vacuumed, dead_left, not_analyzed)


def _run_skippable(connection: Any, notices: list[str], statement: str) -> str | None:
    """Run a VACUUM or ANALYZE; why it did nothing (an error, or the server's warning
    that it skipped the table: "skipping ..." up to PostgreSQL 15, "permission
    denied to vacuum ..., skipping it" from 16), else None."""
    notices.clear()
    try:
        connection.exec_driver_sql(statement)
    except DBAPIError as exc:
        return describe_database_error(exc)
    skipped = [n for n in notices if "skipping" in n]
    return skipped[0] if skipped else None
