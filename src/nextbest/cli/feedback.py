"""``feedback`` and ``uplift-report``: outcomes stored from a file, and served against
holdout outcomes reported."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nextbest.cli.options import (
    SinceOpt,
    check_dir_to_write,
    parse_since,
    read_settings,
    refuse_missing_models_dir,
)
from nextbest.cli.output import console, fail, note, plural, stdout, steps, working
from nextbest.cli.process import interruption, stop_within
from nextbest.settings import Settings, without_password

if TYPE_CHECKING:  # the report is built by the command as it runs
    from nextbest.loop.report import UpliftReport


def uplift_report(
    since: SinceOpt = None,
    out: Annotated[Path, typer.Option(help="Directory for the HTML page and PNGs.")] = Path(
        "reports/uplift"
    ),
    segment: Annotated[str, typer.Option(help="HCP attribute to segment by.")] = "specialty",
    min_per_arm: Annotated[
        int,
        typer.Option(
            "--min-per-arm", min=2, help="HCPs with an outcome in each arm before concluding."
        ),
    ] = 30,
    max_groups: Annotated[
        int,
        typer.Option(
            "--max-groups",
            help="Groups of a dimension shown one by one (the most requests; by week the "
            "newest), the rest as one; 0 shows every group.",
        ),
    ] = 20,
) -> Path:
    """Served vs holdout outcomes by channel, action group, segment, requester, version, week."""
    from nextbest.errors import InvalidRequestError
    from nextbest.loop.report import chance_said, folded_said, max_groups_problem
    from nextbest.loop.report import uplift_report as build

    settings = read_settings()
    start = parse_since(
        since,
        "no request is logged that late (--since is when requests were logged, not the "
        "week a plan was asked for)",
    )
    check_dir_to_write(out, "--out")  # made once the report is written
    if (problem := max_groups_problem(max_groups)) is not None:
        raise fail(f"--max-groups: {problem}")
    # After the options: --out named first.
    refuse_missing_models_dir(settings, "log", answers_from_log=True)
    try:
        with working("building the uplift report"):
            report = build(
                settings,
                out_dir=out,
                since=start,
                segment=segment,
                min_per_arm=min_per_arm,
                max_groups=max_groups,
            )
    except InvalidRequestError as exc:
        raise fail(f"--{exc.field}: {exc.message}") from None
    except BaseException as raised:
        # Stopped (Ctrl-C, a scheduler's SIGTERM): it exited 130 or 143 without a word.
        how = interruption(stop_within(raised) or raised)
        if how is not None:
            from rich.markup import escape

            console.print(
                f"[red]error:[/red] uplift-report was stopped ({how}) before it said its "
                f"report was written: no file in {escape(str(out))} is cut short or mixed "
                "with an earlier report's (the files are put in place together once all "
                "are written); run it again",
                highlight=False,
            )
        raise
    console.print(report_table(report))
    console.print(report.conclusion)
    for said in (chance_said(report), folded_said(report)):
        if said is not None:
            console.print(said)
    console.print(f"report: {report.files['html']}  run: {report.run_id}")
    return report.files["html"]


def report_table(report: UpliftReport) -> Table:
    """The uplift report's rows as the terminal shows them. A group with too few
    outcomes says only that, and the caption says once how many HCPs an arm needs:
    repeated on every row, "not enough data (need outcomes from 30 HCPs per arm)" was
    the widest column, and wrapped each row of a new deployment's table in two."""
    from nextbest.loop import report as report_cells

    table = Table(title="served vs holdout")
    for column in (
        "dimension",
        "group",
        *report_cells.COUNT_COLUMNS,
        "uplift",
        "95% CI",
        "verdict",
    ):
        table.add_column(column)
    rows = [report.overall, *report.rows]
    for row in rows:
        table.add_row(
            row.dimension,
            row.group,
            report_cells.counted(row.n_served, row.hcps_served),
            report_cells.counted(row.n_holdout, row.hcps_holdout),
            report_cells.figure(row.uplift),
            report_cells.interval(row),
            report_cells.verdict(row),
        )
    table.caption = report_cells.too_few_said(rows, report.min_per_arm)
    return table


def _challenger_beside(settings: Settings, served: str) -> Any:
    """The model of alias ``challenger`` when servers answer beside the ``served``
    version with it (NEXTBEST_CHALLENGER_SHARE): the HCPs only it knows are answered,
    so their events are known too. None without a share or a challenger, or when it does
    not load (said: servers leave it out too)."""
    from nextbest import registry

    wanted = registry.challenger_beside(settings, served)
    if wanted is None:
        return None
    try:
        model = registry.load_version(settings, wanted, alias=registry.CHALLENGER_ALIAS)
    except registry.RegistryError as exc:
        note(
            f"the challenger, version {wanted}, cannot be loaded: only the HCPs of version "
            f"{served} are known ({exc})"
        )
        return None
    console.print(
        f"and the HCPs of the challenger, version {wanted}, which servers answer beside it "
        f"(NEXTBEST_CHALLENGER_SHARE {settings.challenger_share:g})",
        highlight=False,
    )
    return model


def feedback(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV or Parquet, one event per row, with the fields of POST /v1/feedback: "
            "event_id, event_type, hcp_id and optionally recommendation_id, action_id, "
            "channel, occurred_at, reason, value."
        ),
    ],
    rejected: Annotated[
        Path | None,
        typer.Option(
            "--rejected",
            help="Write the rejected rows here (.csv or .parquet) with their row number "
            "and why, to fix and send again as is (written, header only, when none was "
            "rejected).",
        ),
    ] = None,
) -> None:
    """Store feedback events from a file (outcome feeds, e-mail platform exports).

    Idempotent by event_id, as the API: a file sent again stores nothing twice.
    Exit code 1 when rows were rejected (the others are stored); 2 when the file,
    an option or a setting is invalid (nothing is stored) or the --rejected file
    cannot be written. A run that ends before writing --rejected (refused, failed,
    interrupted) removes the file an earlier run left there, saying so.
    """
    if rejected is not None and rejected.suffix.lower() not in (".csv", ".parquet"):
        raise fail(f"--rejected must end in .csv or .parquet, got '{rejected}'")
    if rejected is not None:
        # Before any event is stored: a place that cannot be written stops here. Made
        # as the file is written: a refused run leaves no directory behind.
        check_dir_to_write(rejected.parent, "--rejected")
        if rejected.is_dir():
            raise fail(f"--rejected: {rejected} is a directory; name the file to write")
    done = _Done()
    try:
        n_rejected = _store_events(file, rejected, done)
    except BaseException as exc:
        how = interruption(exc)
        if how is not None and done.rows is not None:
            from rich.markup import escape

            # What a scheduler's log needs to know of a timeout: the events of the rows
            # before it are stored, and the file sent again stores the rest.
            some = done.committed < done.rows
            console.print(
                f"[red]error:[/red] feedback was interrupted ({how}) with "
                f"{'at least ' if some else ''}{done.committed:,} of "
                f"{plural(done.rows, 'row')} of {escape(str(file))} done: their events are "
                "stored (each batch is committed as it is done)"
                + (
                    "; send the file again to store the rest (an event_id already "
                    "stored is not stored twice)"
                    if some
                    else ""
                ),
                highlight=False,
            )
        # A job that sends what the last run rejected must not find an earlier
        # run's rows there and take them for this run's (the feed itself, given as
        # --rejected to send its rows again, is kept).
        if rejected is not None and rejected.is_file() and rejected.resolve() != file.resolve():
            with contextlib.suppress(OSError):
                rejected.unlink()
                console.print(
                    f"removed {rejected}: this run ended without writing its rejected rows "
                    "there, and an earlier run's must not be taken for them",
                    highlight=False,
                )
        raise
    if n_rejected:
        raise typer.Exit(code=1)


@dataclass
class _Done:
    """How far a ``feedback`` run got: the file's rows once read, and how many of them
    are done (their events stored, each batch committed; rejected rows counted)."""

    rows: int | None = None
    committed: int = 0


def _store_events(file: Path, rejected: Path | None, done_so_far: _Done) -> int:
    """``feedback``'s run once its options are checked: the events of ``file``
    stored, what was rejected written to ``rejected``; how many rows were rejected.
    ``done_so_far`` follows the rows as their batches are committed."""
    from nextbest import registry
    from nextbest.contract import ContractError, write_table
    from nextbest.contract.files import row_numbers
    from nextbest.service.feedback_file import ingest_events, read_events
    from nextbest.storage.db import migrate

    try:
        frame = read_events(file)
    except ContractError as exc:
        raise fail(str(exc)) from None
    done_so_far.rows = len(frame)
    settings = read_settings()
    refuse_missing_models_dir(
        settings,
        "log",
        writes_for_others="these events, opt-outs included, would be stored in a new "
        "recommendation log there that no server or retrain reads",
    )
    # The store first: a schema to upgrade is refused before the model is read and
    # a "storing events: 0/N" is shown, read as the work begun.
    migrate(settings.resolved_database_url, upgrade=False)
    model = challenger = None
    if (
        registry.registry_exists(settings)
        and registry.alias_version(settings, settings.serve_alias) is not None
    ):
        model, version = registry.load_alias(settings)
        console.print(f"checking HCPs and actions against model version {version}")
        challenger = _challenger_beside(settings, version)
    else:
        console.print(
            "[yellow]note:[/yellow] no served model: HCPs and actions are not checked "
            "(the API does the same before a model is loaded)"
        )
    from nextbest.policy.rules import RulesError, ServingRules

    try:
        codes: tuple[str, ...] | None = ServingRules.configured(settings).dismiss_reasons
    except RulesError as exc:
        codes = None
        console.print(
            f"[yellow]note:[/yellow] dismissal reason codes are not checked: {exc}",
            highlight=False,
        )
    with steps() as progress:
        task = progress.add_task("storing events", total=len(frame))

        def _advance(n: int) -> None:
            done_so_far.committed += n
            progress.advance(task, n)

        done = ingest_events(
            settings,
            frame,
            model=model,
            challenger=challenger,
            progress=_advance,
            dismiss_reasons=codes,
        )
    # The outcome (what was stored, which rows were rejected) on stdout, notes on stderr.
    stdout.print(
        f"stored {done.accepted:,} of {plural(done.rows, 'event')} in "
        f"{without_password(settings.resolved_database_url)}; {done.duplicates:,} already stored; "
        f"{len(done.rejected):,} rejected",
        highlight=False,
    )
    for row, event_id, why in done.rejected[:10]:
        stdout.print(f"  row {row} (event_id '{event_id}'): {why}", highlight=False)
    if len(done.rejected) > 10:
        stdout.print(f"  ... and {len(done.rejected) - 10:,} more", highlight=False)
    import pandas as pd

    timed = frame["occurred_at"] if "occurred_at" in frame.columns else None
    undated = (
        pd.Series(True, index=frame.index)
        if timed is None
        else timed.isna() | (timed.astype(str).str.strip() == "")
    )
    numbers = row_numbers(frame)  # rows as the file numbers them, blank lines counted
    undated.iloc[[numbers.position(row) for row, _, _ in done.rejected]] = False  # kept count
    untimed = int(undated.sum())
    if untimed:
        console.print(
            f"[yellow]note:[/yellow] {untimed:,} row{'s' if untimed != 1 else ''} not "
            "rejected had no occurred_at: stored with the time of the run that first stored "
            "them (UTC), which caps, cool-downs and the uplift report then use; send when "
            "each event happened"
        )
    if done.uncounted:
        one = len(done.uncounted) == 1
        console.print(
            f"[yellow]note:[/yellow] {len(done.uncounted):,} stored "
            f"event{'' if one else 's'} {'was' if one else 'were'} not taken as sent (a "
            "contact that binds no channel's cap or reached a held-out HCP, a consent event "
            "read otherwise or for an HCP the model does not know yet, a dismissal or snooze "
            "naming no action it holds back, a value on an event other than an outcome):",
        )
        for row, event_id, why in done.uncounted[:5]:
            console.print(f"  row {row} (event_id '{event_id}'): {why}", highlight=False)
    if rejected is not None:
        # Written even when empty: a job that sends what the last run rejected must
        # not find the rows of an earlier run there.
        rows = [row for row, _, _ in done.rejected]
        bad = frame.iloc[[numbers.position(row) for row in rows]].copy()
        bad.insert(0, "row", rows)
        bad["rejected_because"] = [why for _, _, why in done.rejected]
        try:
            rejected.parent.mkdir(parents=True, exist_ok=True)
            write_table(bad, rejected)
        except OSError as exc:
            raise fail(f"--rejected: {exc}") from None
        stdout.print(
            f"wrote {len(rows):,} rejected row{'' if len(rows) == 1 else 's'} to {rejected}",
            highlight=False,
        )
    return len(done.rejected)
