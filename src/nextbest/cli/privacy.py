"""``erase`` and ``prune``: HCPs erased on request, and rows past their retention period
deleted."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from nextbest.cli.options import (
    check_rules_file,
    parse_date,
    read_settings,
    refuse_missing_models_dir,
)
from nextbest.cli.output import (
    confirmed,
    console,
    fail,
    note,
    on_a_terminal,
    plural,
    stdout,
    steps,
    unknown_ids,
)
from nextbest.cli.process import interruption, stop_within
from nextbest.settings import Settings, without_password

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from nextbest.storage.repository import RowCounts


def print_cleanup(cleanup: Any, store: str, *, rerun: str = "") -> None:
    """What an erasure or a prune left of the deleted rows, and where: on SQLite a
    write-ahead log a server kept from being emptied (``rerun``: what to run again
    then), on PostgreSQL what VACUUM did."""
    from nextbest.service.erasure import VACUUM

    if cleanup.backend != "postgresql":
        if not cleanup.log_emptied:
            note(
                "the database's write-ahead log could not be emptied "
                f"({store}-wal: a server was reading): the deleted rows stay readable in that "
                "file until every server using the database stops or the log is next "
                f"emptied{rerun}"
            )
        return
    kept = {table for table, n in cleanup.dead_left.items() if n}
    if cleanup.vacuumed:
        gone = (
            "the deleted rows and their index entries are gone from the tables' live "
            "data, except the dead rows noted below"
            if kept
            else "the deleted rows and their index entries are gone from the tables' live data"
        )
        stdout.print(
            f"vacuumed {', '.join(cleanup.vacuumed)}: {gone}; copies remain in PostgreSQL's "
            "write-ahead log and its archive, in backups, and on replicas until they "
            "replay the deletes (docs/operations.md, 'Erasure and retention')",
            highlight=False,
        )
    # One note per table and what is left of it; the reasons are the server's words.
    notes = [
        *(
            f"{table} could not be vacuumed ({why}): the deleted rows stay on disk as dead "
            f"rows until it is; have the table's owner run {VACUUM} {table}"
            for table, why in cleanup.not_vacuumed.items()
        ),
        *(
            f"the planner's statistics of {table} could not be refreshed ({why}): they may "
            "still hold values sampled from the deleted rows (pg_stats) until it is "
            f"analyzed; have the table's owner run ANALYZE {table}"
            for table, why in cleanup.not_analyzed.items()
        ),
        *(
            f"{n:,} dead rows of {table} could not be removed yet: "
            "another session's open transaction (a BI tool's, a backup) may still see "
            f"them; run {VACUUM} {table} in {store} once it has ended"
            for table, n in cleanup.dead_left.items()
            if n
        ),
    ]
    for said in notes:
        note(said)


def erase(
    hcp_ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="HCP ids to erase, exactly as the hcps file spells them.", show_default=False
        ),
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            metavar="FILE",  # one file per --file: not Typer's `<list[Path]>`
            help="CSV or Parquet with an hcp_id column: more ids to erase (other columns "
            "are ignored); give it once per file.",
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Erase without asking (required where no one can answer: a job)."
        ),
    ] = False,
) -> None:
    """Erase HCPs (right to erasure): delete every row naming them, keep one suppression.

    In one transaction: their logged recommendations and items and every feedback
    event about them or their recommendations are deleted, and each HCP gets one
    opted_out event of every channel (the only row kept: their id, the time, who
    erased), so serving stops contacting them at once. Then it names the model
    versions that still hold their attributes. Rerun safely: what was logged since
    goes, the suppression stays as it was. Exit code 2 when nothing was erased (no
    id, a bad file, no --yes off a terminal, not confirmed); 1 when erased but the
    model registry, or one registered version's artifacts, could not be read (the
    versions that may still hold the HCPs are not all known), or when an id it never
    saw differs only in case or leading zeros from one it knows (named, not erased).
    """
    from nextbest.contract import ContractError
    from nextbest.registry import registry_exists
    from nextbest.service.erasure import (
        ErasureError,
        check_ids,
        finish_cleanup,
        read_ids,
        rows_naming,
    )
    from nextbest.service.erasure import erase as run_erase

    settings = read_settings()
    given = list(hcp_ids or [])
    for file in files or []:
        try:
            given += read_ids(file)
        except ContractError as exc:
            raise fail(f"--file {file}: {exc}") from None
    try:
        ids = check_ids(given)
    except ValueError as exc:
        raise fail(str(exc)) from None
    refuse_missing_models_dir(
        settings,
        "log",
        writes_for_others="the suppressions would be recorded in a new recommendation log "
        "there that no server reads, and these HCPs would still be contacted",
    )
    registry_exists(settings)  # an MLflow store that cannot be read stops here, before any work
    store = without_password(settings.resolved_database_url)
    rows, erased, named = rows_naming(settings, ids)
    stdout.print(
        f"{plural(len(ids), 'HCP')} to erase; rows naming them in {store}:", highlight=False
    )
    for table, n in (
        ("recommendations", rows.recommendations),
        ("recommendation_items", rows.recommendation_items),
        ("feedback_events", rows.feedback_events),
    ):
        stdout.print(f"  {table:<22}{n:>10,}", highlight=False)
    for hcp_id, when in list(erased.items())[:10]:
        stdout.print(
            f"  '{hcp_id}' was erased on {when:%Y-%m-%d %H:%M} UTC: its suppression is kept",
            highlight=False,
        )
    if len(erased) > 10:
        stdout.print(f"  ... and {len(erased) - 10:,} more erased before", highlight=False)
    erased_now: list[Any] = []  # the erasure once committed; None: all erased before
    rerun = "; run `nextbest erase` with the same ids again when the servers are idle or stopped"
    if rows.total == 0 and len(erased) == len(ids):
        stdout.print(
            "nothing to delete: every one of these HCPs is erased already and has its "
            "suppression (opted_out, every channel)",
            highlight=False,
        )
        erased_now.append(None)
        # What the erasure before may have left of the deleted rows (its note asks for
        # this rerun when a server kept the write-ahead log from being emptied): cleared
        # here, where a rerun with nothing to delete left it as it was.
        with _said_if_stopped_after(erased_now, ids, store, cleaning=True):
            cleanup = finish_cleanup(settings)
        with _said_if_stopped_after(erased_now, ids, store, cleaning=False):
            if cleanup.backend != "postgresql" and cleanup.log_emptied:
                stdout.print(
                    f"emptied the database's write-ahead log ({store}-wal): nothing an "
                    "earlier erasure deleted is left readable in it",
                    highlight=False,
                )
            print_cleanup(cleanup, store, rerun=rerun)
    else:
        if not yes:
            if not on_a_terminal():
                raise fail("not on a terminal: pass --yes to erase (nothing was erased)")
            if not confirmed(
                "Delete these rows and keep one opt-out of every channel per HCP? This "
                "cannot be undone"
            ):
                raise fail("not confirmed: nothing was erased")

        def say_erased(done: Any) -> None:
            # Said as soon as it is committed: a signal in the clean-up or the registry
            # read after it must not leave a job's log without it.
            erased_now.append(done)
            deleted = done.deleted
            stdout.print(
                f"erased {plural(len(ids), 'HCP')} in {store}: deleted "
                f"{plural(deleted.recommendations, 'recommendation')}, "
                f"{plural(deleted.recommendation_items, 'recommendation item')} and "
                f"{plural(deleted.feedback_events, 'feedback event')}; stored "
                f"{plural(len(done.suppressed), 'suppression')} (opted_out, every channel)"
                + (
                    f", {len(done.already_suppressed):,} kept from before"
                    if done.already_suppressed
                    else ""
                ),
                highlight=False,
            )

        try:
            with _said_if_stopped_after(erased_now, ids, store, cleaning=True):
                _, cleanup = run_erase(settings, ids, committed=say_erased)
        except ErasureError as exc:
            raise fail(f"nothing was erased: {exc}") from None
        with _said_if_stopped_after(erased_now, ids, store, cleaning=False):
            print_cleanup(cleanup, store, rerun=rerun)
    with _said_if_stopped_after(erased_now, ids, store, cleaning=False):
        _name_what_holds(settings, ids, named, erased)


def _name_what_holds(
    settings: Settings, ids: list[str], named: set[str], erased: dict[str, Any]
) -> None:
    """The end of ``erase``: the registered versions that still hold ``ids``, the ids
    nextbest never saw (of those neither ``named`` by a row nor ``erased`` before), and
    the exit code 1 where that is not all known."""
    from nextbest.service.erasure import versions_holding

    alike: set[str] = set()
    try:
        holding = versions_holding(settings, ids, spelled_alike=alike)
    except Exception as exc:  # erased all the same: say what is left to check
        if (stop := stop_within(exc)) is not None:
            raise stop from None  # a stop, said as one (below), not an unreadable registry
        console.print(
            f"[red]error:[/red] the model registry "
            f"{without_password(settings.resolved_registry_uri)} could not be read "
            f"({type(exc).__name__}: {exc}): check every version of model "
            f"'{settings.model_name}' for these HCPs yourself",
            highlight=False,
        )
        _erasure_reminder()
        raise typer.Exit(code=1) from None
    _print_versions_holding(settings, holding, len(ids))
    held = {h for v in holding for h in v.hcp_ids}
    unchecked = [v for v in holding if v.unreadable]
    never = [h for h in ids if h not in named and h not in erased and h not in held]
    if never:
        shown = ", ".join(f"'{h}'" for h in never[:10]) + (" ..." if len(never) > 10 else "")
        where = (
            "in no registered version that could be read"
            if unchecked
            else "in no registered version"
        )
        note(
            f"{plural(len(never), 'id')} nextbest never saw (no "
            f"logged answer or feedback, {where}): {shown}; check them "
            "for typos (a suppression was stored for each all the same)"
        )
        meant = _meant_instead(settings, ids, never, alike)
    else:
        meant = {}
    _erasure_reminder()
    if meant:
        # Erasing the id nextbest knows is the operator's call: erasure names exactly
        # what it erases. A job must still see that the request may not be done.
        console.print(
            f"[red]error:[/red] {plural(len(meant), 'id')} nextbest never saw "
            f"{'differs' if len(meant) == 1 else 'differ'} only in case or leading zeros "
            f"from one it knows: {unknown_ids(list(meant), set(meant), known=alike)}; "
            f"{'that HCP was' if len(meant) == 1 else 'those HCPs were'} NOT erased: if "
            "it is the one asked for, erase it as nextbest spells it: `nextbest erase "
            f"{' '.join(list(meant.values())[:5])}{' ...' if len(meant) > 5 else ''}`",
            highlight=False,
        )
    if unchecked:
        # Erased all the same; a GDPR job must still see that the versions are not all known.
        shown = ", ".join(f"v{v.version}" for v in unchecked)
        console.print(
            f"[red]error:[/red] {plural(len(unchecked), 'registered version')} of model "
            f"'{settings.model_name}' could not be checked for these HCPs ({shown}: "
            "artifacts not readable, see above) and may still hold them: restore "
            "the artifacts and run `nextbest erase` with the same ids again (nothing is "
            "erased twice), or delete those versions with MLflow's client as said above",
            highlight=False,
        )
        raise typer.Exit(code=1)
    if meant:
        raise typer.Exit(code=1)


@contextmanager
def _said_if_stopped_after(
    erased_now: list[Any], ids: list[str], store: str, *, cleaning: bool
) -> Iterator[None]:
    """Say what an erasure a signal (Ctrl-C, a scheduler's SIGTERM) stopped once it was
    committed (``erased_now`` holds it then) left: ``ids`` erased in ``store``, and
    what it did not get to (``cleaning``: the clean-up of the deleted rows, then the
    registered versions that hold them). It ended with exit code 143 and no word, a
    job's log not saying whether the HCPs were erased. Before the commit nothing was
    erased (one transaction), and that is said too."""
    try:
        yield
    except BaseException as exc:
        how = interruption(exc)
        if how is None:
            raise
        if not erased_now:
            # Its one transaction was rolled back, unless the signal came as the commit
            # returned: not known to be erased, which a rerun settles either way.
            console.print(
                f"[red]error:[/red] erase was interrupted ({how}) before it could say its "
                "transaction was committed: these HCPs may not be erased; run `nextbest "
                "erase` with the same ids again (it erases what is left, nothing twice)",
                highlight=False,
            )
            raise
        not_done = (
            f"it was stopped cleaning up after the deletes: {_LEFT_READABLE}; and it did "
            if cleaning
            else "it did "
        )
        done = (
            "these HCPs were erased already, as said above"
            if erased_now == [None]
            else f"the erasure was committed: {plural(len(ids), 'HCP')} erased in {store} "
            "(their rows deleted and one suppression per HCP stored, as said above)"
        )
        console.print(
            f"[red]error:[/red] erase was interrupted ({how}) once {done}; {not_done}not "
            "name the registered model versions that still hold them: run `nextbest "
            "erase` with the same ids again (nothing is erased twice) to "
            + ("finish the clean-up and have them named" if cleaning else "have them named"),
            highlight=False,
        )
        raise


def _meant_instead(
    settings: Settings, ids: list[str], never: list[str], alike: set[str]
) -> dict[str, str]:
    """The ids of ``never`` that differ only in case or leading zeros from an id
    nextbest knows and was not asked to erase (of ``ids``): one of ``alike`` (held by
    a registered version), or one the store's rows name. ``alike`` is left holding
    those known ids. Each such id -> the known id."""
    import pandas as pd

    from nextbest.contract.validate import LookAlikes
    from nextbest.service.erasure import spelled_alike

    alike |= spelled_alike(settings, never)
    alike -= set(ids)
    twins = LookAlikes(pd.Index(sorted(alike)))
    return {h: twin for h in never if (twin := twins.of(h)) is not None}


def _print_versions_holding(settings: Settings, holding: list[Any], n_ids: int) -> None:
    """Which registered versions still keep the erased HCPs' attributes, and what to do."""
    if not holding:
        stdout.print(
            f"no registered version of model '{settings.model_name}' holds these HCPs",
            highlight=False,
        )
        return
    stdout.print(
        f"registered versions of model '{settings.model_name}' that still hold these HCPs' "
        "attributes and history features:",
        highlight=False,
    )
    for v in holding:
        aliases = f" ({', '.join(v.aliases)})" if v.aliases else ""
        held = (
            f"could not be read, check it: {v.unreadable}"
            if v.unreadable
            else f"{len(v.hcp_ids):,} of {plural(n_ids, 'HCP')}"
        )
        run = f" (run {v.run_id})" if v.run_id else ""
        stdout.print(f"  v{v.version}{aliases}{run}: {held}", highlight=False)
    stdout.print(
        "retrain without these HCPs in the hcps and interactions files (`nextbest train` or "
        "`retrain`, `evaluate`, `promote`, then a reload of the servers), then delete these "
        "versions, their runs and logged models: MLflow's MlflowClient().delete_model_version"
        f"('{settings.model_name}', version), delete_run(run_id), delete_logged_model(model_id), "
        "then `mlflow gc` (docs/operations.md, 'Erasure and retention')",
        highlight=False,
    )


def _erasure_reminder() -> None:
    stdout.print(
        "remove these HCPs from your own files too (hcps, interactions, send lists, "
        "feedback exports): nextbest does not own them, and a model trained on an hcps "
        "file that still lists them holds them again",
        highlight=False,
    )


MAX_RETENTION_DAYS = 36_500
_RETENTION_DAYS = re.compile(r"(\d+)\s*d?", re.IGNORECASE)


def _retention_days(text: str) -> int:
    """The days of ``--older-than`` (``730``, or ``730d`` as ``--keep-old`` spells days)."""
    matched = _RETENTION_DAYS.fullmatch(text.strip())
    if matched is None:
        # 2y, 24m or 17520h: a year or a month is no fixed number of days, and
        # a retention period is set in days by those who set it.
        raise fail(
            f"--older-than {text!r} is not a number of days: give whole days, such as "
            "--older-than 730 for two years"
        )
    days = int(matched[1])
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise fail(f"--older-than {days}: give 1 to {MAX_RETENTION_DAYS:,} days")
    return days


def prune(
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help="Delete what is older than this date (YYYY-MM-DD: 00:00 UTC) or time (ISO "
            "8601; without an offset, UTC).",
            show_default=False,
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            help="Delete what is older than this many days (730 or 730d), counted from now.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Delete without asking (required where no one can answer: cron)."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
) -> None:
    """Delete the recommendation log and feedback older than a retention period.

    Deleted: the recommendations made before the cutoff with their items and
    feedback, and the feedback events about no recommendation that occurred
    before it. Kept: consent events (opted_out, opted_in) and erasure
    suppressions, which decide whether an HCP may be contacted at all, and the
    recommendations an opt-out or an event from the cutoff on names. A cutoff in the
    future or inside the history the serving rules read (caps, cool-downs,
    dismissals: NEXTBEST_RULES_FILE) is refused. Deletes in batches, each its
    own transaction, so a running server is not held up. Exit code 2 when
    nothing was deleted (a bad or refused cutoff, no --yes off a terminal, not
    confirmed), and when it stopped part way (a database error, feedback that kept
    arriving about the answers being pruned): the batches before stay deleted, the
    run is recorded as interrupted (if the database can still be written), and
    running it again finishes the work.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from nextbest.service.erasure import (
        CutoffError,
        PruneStoppedError,
        PruneTrail,
        RunNotRecordedError,
        check_cutoff,
        record_nothing_pruned,
        rows_before,
    )
    from nextbest.service.erasure import prune as run_prune
    from nextbest.storage.db import describe_database_error
    from nextbest.storage.repository import RowCounts

    settings = read_settings()
    if (before is None) == (older_than is None):
        raise fail("give the cutoff as --before DATE or --older-than DAYS (exactly one)")
    now = datetime.now(UTC).replace(microsecond=0)
    if before is not None:
        when = cast(datetime, parse_date(before, "--before"))
        cutoff = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        given = f"--before {before}"
    else:
        days = _retention_days(cast(str, older_than))
        cutoff = now - timedelta(days=days)
        given = f"--older-than {days}"
    shown = f"{cutoff:%Y-%m-%d %H:%M:%S} UTC"
    rules = check_rules_file(settings)
    try:
        check_cutoff(cutoff, rules, now=now)
    except CutoffError as exc:
        latest = ""
        if exc.latest is not None and exc.days is not None:
            latest = (
                f"; the latest cutoff allowed is {exc.latest:%Y-%m-%d %H:%M:%S} UTC "
                f"(--older-than {math.ceil(exc.days)} or more)"
            )
        raise fail(f"{given} ({shown}) {exc}{latest}; nothing was deleted") from None
    refuse_missing_models_dir(settings, "log", answers_from_log=True)
    store = without_password(settings.resolved_database_url)
    rows, kept = rows_before(settings, cutoff)
    stdout.print(f"rows from before {shown} in {store}:", highlight=False)
    for table, n in (
        ("recommendations", rows.recommendations),
        ("recommendation_items", rows.recommendation_items),
        ("feedback_events", rows.feedback_events),
    ):
        stdout.print(f"  {table:<22}{n:>10,}", highlight=False)
    stdout.print(
        f"kept: {plural(kept.consent_events, 'consent event')} (opted_out, opted_in) from "
        f"before then, {kept.suppressions:,} of them erasure suppressions: they decide whether "
        "an HCP may be contacted at all and are the record of consent; consent events are "
        "never pruned",
        highlight=False,
    )
    if kept.recommendations:
        stdout.print(
            f"kept: {plural(kept.recommendations, 'recommendation')} an opt-out names (the "
            "send an HCP unsubscribed from) or with feedback from then on (a delivery or a "
            "dismissal the serving rules still count), with their items and feedback",
            highlight=False,
        )
    # What maintenance_runs records the run was given (a dry run records nothing).
    arguments = given + (" --yes" if yes else "")
    if rows.total == 0:
        if not dry_run:
            record_nothing_pruned(settings, cutoff, arguments=arguments)
        stdout.print(
            f"nothing to delete from before {shown}"
            + (
                ""
                if dry_run
                else " (recorded in maintenance_runs: `nextbest lookup --maintenance`)"
            ),
            highlight=False,
        )
        return
    stdout.print(
        "once deleted, the uplift report, the gate (evaluate, promote) and retrain no longer "
        "see these answers and their feedback",
        highlight=False,
    )
    if dry_run:
        stdout.print("dry run: nothing was deleted", highlight=False)
        return
    if not yes:
        if not on_a_terminal():
            raise fail("not on a terminal: pass --yes to prune (nothing was deleted)")
        if not confirmed("Delete these rows? This cannot be undone"):
            raise fail("not confirmed: nothing was deleted")
    done = RowCounts()
    trail = PruneTrail()  # what its row in maintenance_runs says, if a signal stops it
    with steps() as progress:
        task = progress.add_task("pruning rows", total=rows.total)

        def advance(batch: RowCounts) -> None:
            nonlocal done
            done += batch
            # Rows deleted meanwhile (an erasure) or logged late count too: never past 100%.
            progress.update(task, completed=done.total, total=max(rows.total, done.total))

        try:
            deleted, cleanup = run_prune(
                settings, cutoff, arguments=arguments, progress=advance, trail=trail
            )
        except PruneStoppedError as exc:
            recorded = (
                f"recorded as interrupted in maintenance_runs (run {exc.run_id})"
                if exc.recorded
                else f"its run {exc.run_id} in maintenance_runs could not be marked "
                "interrupted and says 'running', with the rows deleted"
            )
            if isinstance(exc.__cause__, SQLAlchemyError):
                raise fail(
                    "prune stopped by a database error after deleting "
                    f"{plural(exc.deleted.total, 'row')} (those batches are committed; "
                    f"{recorded}): {describe_database_error(exc.__cause__)}; run it again "
                    "once the database answers"
                ) from None
            raise fail(f"{exc} ({recorded})") from None
        except RunNotRecordedError as exc:
            raise fail(
                f"{exc} (the role nextbest connects as needs SELECT, INSERT and UPDATE on "
                "maintenance_runs: docs/database.md, 'A read-only role for BI')"
            ) from None
        except BaseException as exc:
            how = interruption(exc)
            if how is not None:  # a scheduler's timeout: what is done, and what to do
                console.print(
                    f"[red]error:[/red] {_prune_stopped(how, done, trail, shown)}",
                    highlight=False,
                )
            raise
    stdout.print(
        f"pruned {store} of what is older than {shown}: deleted "
        f"{plural(deleted.recommendations, 'recommendation')}, "
        f"{plural(deleted.recommendation_items, 'recommendation item')} and "
        f"{plural(deleted.feedback_events, 'feedback event')}; consent events and erasure "
        "suppressions kept; recorded in maintenance_runs (`nextbest lookup --maintenance`)",
        highlight=False,
    )
    print_cleanup(cleanup, store)


# What a clean-up a signal stopped (after an erasure's or a prune's deletes) leaves.
_LEFT_READABLE = (
    "the deleted rows may stay readable in the database's files until the write-ahead "
    "log is emptied (SQLite: once every server using the database has stopped) or the "
    "tables are vacuumed (PostgreSQL: have their owner run VACUUM (INDEX_CLEANUP ON, "
    "ANALYZE) on recommendations, recommendation_items and feedback_events; "
    "docs/operations.md, 'Erasure and retention')"
)


def _prune_stopped(how: str, done: RowCounts, trail: Any, shown: str) -> str:
    """What a prune a signal stopped (``how``: Ctrl-C, SIGTERM) left, as its run's row
    in maintenance_runs says (``trail``: a :class:`~nextbest.service.erasure.PruneTrail`),
    with ``done`` deleted; ``shown``: its cutoff. It said "marked interrupted" even where
    the mark could not be written (a database gone or locked), the row then reading
    'running'."""
    if trail.run_id is None:
        return (
            f"prune was interrupted ({how}) before it recorded its run in maintenance_runs: "
            "nothing was deleted; run it again"
        )
    deleted = f"deleting {plural(done.total, 'row')}"
    if trail.outcome == "finished":
        return (
            f"prune was interrupted ({how}) after {deleted}, everything from before {shown}, "
            f"and recording its run {trail.run_id} as finished in maintenance_runs, while "
            f"it cleaned up after the deletes: {_LEFT_READABLE}"
        )
    marked = (
        "its run is marked interrupted in maintenance_runs (`nextbest lookup --maintenance`)"
        if trail.outcome == "interrupted"
        else f"its run {trail.run_id} in maintenance_runs could not be marked interrupted "
        "and says 'running', with the rows deleted"
    )
    return (
        f"prune was interrupted ({how}) after {deleted}: those batches are committed "
        f"and stay deleted, and {marked}; run it again to delete the rest"
    )
