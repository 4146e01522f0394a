"""``models`` (a module named for what it lists: a bare ``models`` could mean ML models,
tables or artifacts): the registered versions listed with their figures, the champion's
timeline, and (``--repair``) what a decision or training killed midway left unfinished."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nextbest.cli.options import read_settings, refuse_missing_models_dir
from nextbest.cli.output import (
    console,
    edits_said,
    fail,
    minute,
    plural,
    say_finished,
    stdout,
    versions_said,
)
from nextbest.settings import without_password

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from nextbest.registry import VersionSummary


def models(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON instead: the versions, champion_history (the champions "
            "`rollback` returns through, the current one last; a rollback takes its "
            "version off) and champion_changes (every change of champion, oldest first, "
            "rollbacks included: the audit trail that --history prints) and "
            "decisions_interrupted (decisions stopped before the champion moved: not made).",
        ),
    ] = False,
    history_table: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Print every change of champion instead: when, which version, by which "
            "decision (train, promote, forced promote, rollback), who and why; then the "
            "decisions interrupted before the champion moved (not made).",
        ),
    ] = False,
    champion_at: Annotated[
        str | None,
        typer.Option(
            "--champion-at",
            help="Print which version was champion at this time (ISO 8601, e.g. "
            "2026-11-30T12:00; UTC unless it has an offset); before the first champion, "
            "that none was and when the first came (exit code 0); a time still to come, "
            "the champion as of now. With --json: at, champion (null before the first) "
            "and first_champion.",
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Finish a promotion, rollback or training that moved the champion and "
            "was killed before it wrote what it leaves beside it (previous_champion, "
            "challenger, champion_history, version tags, the gate's verdict), as `nextbest "
            "models` says; take off the mark of one killed before the champion moved (not "
            "made); give a version that train or retrain registered in full, then was "
            "killed before it set its alias (challenger, or the first champion), that alias; "
            "then list the versions. A decision whose process still runs on this host is in "
            "progress, and left alone.",
        ),
    ] = False,
) -> Any:
    """The registered versions, newest first: aliases, training data, held-out figures, gate.

    AUC, policy value (DR) and its gain over the logged policy are each version's
    own, measured at training on its held-out slice (the newest eval_fraction of the
    history; the gain "-" for a version trained before it was recorded); the gate's
    estimates, on the logged decisions reserved for it, are in `nextbest evaluate`
    and its MLflow run. With --history or --champion-at, the champion's timeline instead,
    read from the decision runs of the evaluation experiment.
    """
    import json
    from dataclasses import asdict

    from rich.markup import escape

    from nextbest import registry
    from nextbest.loop.lineage import ChampionTimeline, champion_timeline

    settings = read_settings()
    when = _parse_time(champion_at, "--champion-at") if champion_at is not None else None
    refuse_missing_models_dir(settings, "registry")
    runs_missing: registry.TrainingRunsMissingError | None = None
    try:
        # Nothing registered: said once, as without --repair, before repair says anything.
        versions = registry.list_versions(settings)
    except registry.TrainingRunsMissingError as exc:
        # Listed with what the registry holds, then said (exit 2). Not repaired, nor
        # the timeline read: both are in the tracking store, and this one is not it.
        if repair or history_table or when is not None:
            raise fail(str(exc)) from None
        versions, runs_missing = exc.versions, exc
    except registry.RegistryError as exc:
        raise fail(str(exc)) from None
    if repair:
        left_alone = False
        try:
            # It moves aliases and writes tags as a decision does: not beside one at work
            # (it waits for it, then repairs what it left).
            with registry.deciding_alone(
                settings,
                "repair",
                then="run `nextbest models --repair` again once it has ended",
                afterwards="repairs what it left",
                nothing="repaired nothing",
            ):
                try:
                    finished = registry.finish_unfinished(settings)
                except registry.DecisionInProgressError:
                    # Left alone (a registry with no lock): said with the versions below.
                    finished, left_alone = None, True
                not_made = registry.take_off_not_made(settings)
                named = registry.name_unnamed(settings)
        except registry.RegistryError as exc:
            raise fail(str(exc)) from None
        if finished is None and not_made is None and not named and not left_alone:
            console.print(
                "nothing to repair: no decision or training was left unfinished", highlight=False
            )
        say_finished(finished)
        if not_made is not None:
            console.print(
                f"[yellow]taken off:[/yellow] the mark ({registry.PENDING_TAG}) of the "
                f"{not_made.named} (MLflow run {not_made.run_id}), killed before the champion "
                "moved: it was not made",
                highlight=False,
            )
        for done in named:
            console.print(f"[yellow]finished:[/yellow] {done.said()}", highlight=False)
        if named or finished is not None:
            versions = registry.list_versions(settings)  # as repaired
    unfinished = registry.unfinished_decision(settings)
    in_progress = unfinished if unfinished is not None and unfinished.in_progress else None
    if in_progress is not None:
        unfinished = None
    # The timeline is read from every decision run: only when it is shown.
    shown = when is not None or history_table or as_json
    timeline = champion_timeline(settings) if shown else ChampionTimeline([], [])
    changes = timeline.changes
    if when is not None:
        return _print_champion_at(changes, when, as_json=as_json)
    if history_table and not as_json:
        _print_champion_changes(timeline)
        return changes
    history = registry.champion_history(settings)
    # The first champion got its alias at training, before any promotion wrote the history.
    current = next((v.version for v in versions if "champion" in v.aliases), None)
    if current is not None and (not history or history[-1] != current):
        history.append(current)
    if as_json:
        rows = [{**asdict(v), "registered_at": v.registered_at.isoformat()} for v in versions]
        typer.echo(
            json.dumps(
                {
                    "model": settings.model_name,
                    "champion_history": history,
                    "champion_changes": [c.as_dict() for c in changes],
                    "decisions_interrupted": [d.as_dict() for d in timeline.interrupted],
                    "decision_unfinished": (
                        None
                        if unfinished is None
                        else {
                            **asdict(unfinished.end),
                            "unwritten": list(unfinished.unwritten),
                        }
                    ),
                    "decision_in_progress": (
                        None if in_progress is None else asdict(in_progress.end)
                    ),
                    "versions": rows,
                },
                indent=1,
            )
        )
        if runs_missing is not None:
            raise fail(str(runs_missing))
        return versions
    # Two lines per version, not a table: readable at any terminal width.
    stdout.print(
        f"model '{settings.model_name}' in {without_password(settings.resolved_registry_uri)}"
    )
    for v in versions:
        aliases = f" [bold]{', '.join(v.aliases)}[/bold]" if v.aliases else ""
        fed_back = (
            "" if v.feedback_rows is None else f" ({v.feedback_rows:,} from the recommendation log)"
        )
        run_missing = runs_missing is not None and v.run_id in runs_missing.run_ids
        # Without its training run, what the registry alone holds: no row of dashes.
        stdout.print(
            f"v{v.version}{aliases}  registered {v.registered_at:%Y-%m-%d %H:%M} UTC"
            if run_missing
            else f"v{v.version}{aliases}  trained {v.registered_at:%Y-%m-%d %H:%M} UTC on "
            f"{_count(v.n_decisions, 'decision')}{fed_back} of {_count(v.n_hcps, 'HCP')} "
            f"up to {(v.data_as_of or '-')[:10]}"
        )
        figures = [
            f"training run {v.run_id} is not in this tracking store: the version's training "
            "data and held-out figures are unknown"
            if run_missing
            else None,
            "no uplift model: scores are P(engaged) x value (no outcomes to learn from)"
            if v.uplift_source == "preference_x_value"
            else None,
            held_out_figures(v),
            f"gate {v.gate.split(' (run ')[0]}" if v.gate else None,
            f"promoted{' by --force' if v.promotion == 'forced' else ''} {minute(v.promoted_at)}"
            if v.promoted_at
            else None,
            f"rolled back {minute(v.rolled_back_at)}" if v.rolled_back_at else None,
            f"withdrawn as challenger {minute(v.withdrawn_at)} ({v.withdrawn_reason})"
            if v.withdrawn_at
            else None,
            _training_run_said(v),
            edits_said(v),
            f"feedback without engagement events on {', '.join(v.feedback_engagement_missing)}"
            if v.feedback_engagement_missing
            else None,
            f"{v.history_rows_logged:,} history rows naming the recommendation_id of a logged "
            "decision left out (learned from the recommendation log)"
            if v.history_rows_logged
            else None,
            f"{v.history_repeats_logged:,} history touches look like logged sends without a "
            "recommendation_id (kept: maybe learned twice)"
            if v.history_repeats_logged
            else None,
        ]
        stdout.print("    " + escape("; ".join(f for f in figures if f)), highlight=False)
    if (caution := not_comparable(versions)) is not None:
        stdout.print(caution)
    elif any(v.policy_value_dr for v in versions):
        stdout.print(HELD_OUT_NOT_THE_GATE)
    if len(history) == 1:
        # Rolled back since: listed above as promoted, then rolled back, and no longer in it.
        gone = [
            v.version for v in reversed(versions) if v.rolled_back_at and v.version not in history
        ]
        taken_off = (
            f" left in the champion history ({versions_said(gone)} rolled back, which "
            "takes a version off it; "
            if gone
            else " in the champion history ("
        )
        stdout.print(
            f"no earlier champion to roll back to: version {history[0]} is the only one"
            f"{taken_off}`nextbest rollback` has one to return to once another version is "
            "promoted)"
        )
    elif history:
        stdout.print(
            f"champions to roll back through, the current one last: {', '.join(history)} "
            "(`nextbest rollback` returns to the one before it; each version's own line "
            "keeps when it was promoted and rolled back)"
        )
    if unfinished is not None and unfinished.unwritten:
        stdout.print(
            f"[bold red]unfinished:[/bold red] {escape(unfinished.said())}", highlight=False
        )
    if in_progress is not None:
        stdout.print(escape(in_progress.said()), highlight=False)
    if runs_missing is not None:
        raise fail(str(runs_missing))
    return versions


def _training_run_said(v: VersionSummary) -> str | None:
    """Of a version whose training run did not end FINISHED: how it ended, and whether
    the version is registered in full (its artifact_sha256 tag, written last);
    of a first champion whose training stopped before it set the alias, that."""
    if v.alias_unset == "champion" and v.training_run_status is None:
        return (
            "registered in full as the first champion, but no version is champion (its "
            "training stopped before it set the alias): `nextbest models --repair` makes it "
            "champion"
        )
    if v.training_run_status is None:
        return None
    how = (
        "never ended (its process was killed outright, or is still at work)"
        if v.training_run_status == "RUNNING"
        else f"was interrupted ({v.training_interrupted or 'killed'}) and marked killed"
    )
    if v.alias_unset is not None:
        return (
            f"its training run {how}: the version is registered in full, but it "
            f"is not the {v.alias_unset} it was registered as (the run stopped before it "
            f"set the alias): `nextbest models --repair` makes it {v.alias_unset}"
        )
    return f"its training run {how}: " + (
        "the version is registered in full"
        if v.artifact_sha256 is not None
        else "the version was registered without all of its tags (no artifact_sha256: "
        "loaded unverified); register a new one with `nextbest retrain` or `nextbest train`"
    )


def _parse_time(value: str, option: str) -> datetime:
    """An ISO 8601 time given to ``option``, in UTC (naive: taken as UTC)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(
            f"{option} '{value}' is not a time: use ISO 8601, e.g. 2026-11-30T12:00 "
            "(UTC unless it has an offset such as +01:00)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _print_champion_changes(timeline: Any) -> None:
    """The champion's timeline (a :class:`~nextbest.loop.lineage.ChampionTimeline`)
    as a table, oldest first, then the decisions interrupted before the champion moved."""
    from rich.markup import escape

    from nextbest.loop.lineage import NOT_ENDED

    changes = timeline.changes
    if not changes:
        stdout.print("no champion yet: `nextbest train --data DIR` sets the first")
    else:
        table = Table(title="champion changes, oldest first (times in UTC)")
        for column in ("time", "version", "decision", "replaced", "by", "reason"):
            table.add_column(column)
        for c in changes:
            decision = c.decision if c.run_id is not None else f"{c.decision}*"
            table.add_row(
                f"{c.at:%Y-%m-%d %H:%M:%S}",
                c.version,
                f"{decision}, interrupted" if c.interrupted else decision,
                c.previous or "-",
                escape(c.by or "-"),
                escape(c.reason or "-"),
            )
        stdout.print(table)
    if any(c.run_id is None for c in changes):
        stdout.print(
            "* not recorded as a decision (trained as the first champion by a nextbest "
            "that did not record it): the time is the version's registration"
        )
    for c in changes:
        if c.interrupted == NOT_ENDED:
            stdout.print(
                f"interrupted after the champion moved: {c.decision} of version {c.version} "
                f"(MLflow run {c.run_id}): its run never ended (the process was killed "
                "outright, or is still at work) and is counted as made because the champion "
                "moved to it; the time is when the run started",
                highlight=False,
            )
        elif c.interrupted:
            stdout.print(
                f"interrupted after the champion moved: {c.decision} of version {c.version} "
                f"(MLflow run {c.run_id}, {escape(c.interrupted)}): made; the time is when "
                "the run was marked killed",
                highlight=False,
            )
    for d in timeline.interrupted:
        why = (
            "its run never ended and the champion is not version "
            f"{d.version} after it (the process was killed outright, or is still at work)"
            if d.run_status == "RUNNING"
            else "its run was marked killed and the champion did not move to it"
        )
        stdout.print(
            f"interrupted before the champion moved, not made: {d.decision} of version "
            f"{d.version} (replacing {d.previous or 'none'}; MLflow run {d.run_id}, started "
            f"{d.started:%Y-%m-%d %H:%M:%S} UTC by {escape(d.by or '-')}): {why}",
            highlight=False,
        )


def _print_champion_at(changes: list[Any], when: datetime, *, as_json: bool) -> str | None:
    """Which version was champion at ``when``; None before the first, said as a plain
    answer naming the first champion and when it came (the history answers that too).
    A time still to come is answered with the champion as of now ("is"), which a
    promotion or rollback before then would change."""
    import json

    from nextbest.loop.lineage import champion_at

    change = champion_at(changes, when)
    first = changes[0] if changes else None
    future = when > datetime.now(UTC)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "at": when.isoformat(),
                    "champion": None if change is None else change.as_dict(),
                    "first_champion": None if first is None else first.as_dict(),
                },
                indent=1,
            )
        )
    elif change is not None:
        by = f" by {change.by}" if change.by else ""
        why = f" ({change.reason})" if change.reason else ""
        said = f"{change.decision} at {change.at.isoformat()}{by}{why}"
        stdout.print(
            f"at {when.isoformat()}, in the future, the champion is version {change.version} "
            f"as of now ({said}), unless a promotion or rollback changes it before then"
            if future
            else f"at {when.isoformat()} the champion was version {change.version}: {said}",
            highlight=False,
        )
    elif first is not None:
        by = f" by {first.by}" if first.by else ""
        stdout.print(
            f"at {when.isoformat()} no version was champion yet: the first, version "
            f"{first.version}, became champion later, at {first.at.isoformat()} "
            f"({first.decision}{by})",
            highlight=False,
        )
    else:
        stdout.print(
            f"at {when.isoformat()}, in the future, no version is champion as of now: none "
            "has been yet (`nextbest train --data DIR` sets the first)"
            if future
            else f"at {when.isoformat()} no version was champion: none has been yet "
            "(`nextbest train --data DIR` sets the first)",
            highlight=False,
        )
    return None if change is None else change.version


def _count(n: int | None, one: str) -> str:
    """``n`` with its noun, "- decisions" when the training run did not say."""
    return f"- {one}s" if n is None else plural(n, one)


# Under a listing whose figures compare: they are still not the gate's, and may
# rank two versions the other way round (a different slice of different decisions).
HELD_OUT_NOT_THE_GATE = (
    "held-out figures: each version on its own training history's newest decisions; "
    "the gate judges on logged decisions neither version learned from (`nextbest evaluate`)"
)


def not_comparable(versions: list[VersionSummary]) -> str | None:
    """A caution when versions with held-out figures measured them on different
    slices (different histories): then the figures do not rank them. A retrained
    version holds out the history's newest decisions as the champion did, so the two
    compare."""

    def held_out_slice(v: VersionSummary) -> tuple[Any, ...]:
        if v.eval_from is not None:
            return (v.eval_from, v.eval_until, v.eval_decisions)
        # Recorded before the slice's dates were: the history it was cut from.
        return (v.n_decisions - (v.feedback_rows or 0) if v.n_decisions else None,)

    measured = [v for v in versions if v.eval_auc is not None or v.policy_value_dr]
    if len({held_out_slice(v) for v in measured}) < 2:
        return None
    return (
        "AUC and policy value are each measured on the version's own held-out slice, "
        "and these versions learned from different histories: the figures do not rank "
        "them. `nextbest evaluate` compares challenger and champion on the same logged "
        "decisions."
    )


def held_out_figures(v: VersionSummary) -> str | None:
    """'on its held-out slice (the newest 10% of its history, 5,200 decisions): AUC
    0.710, policy value (DR) 2.020 [1.740, 2.299] (gain over logged +0.310 [+0.120,
    +0.500])' for a ``VersionSummary``; the gain '-' for a version trained before it
    was recorded; 'its --data history' for one that logged decisions joined."""
    figures = [f"AUC {v.eval_auc:.3f}"] if v.eval_auc is not None else []
    if v.policy_value_dr is not None:
        gain = (
            "-"
            if v.gain_over_logged_dr is None
            # Signed, as the gate and the uplift report sign theirs.
            else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*v.gain_over_logged_dr)
        )
        figures.append(
            "policy value (DR) {:.3f} [{:.3f}, {:.3f}]".format(*v.policy_value_dr)
            + f" (gain over logged {gain})"
        )
    if not figures:
        return None
    # A retrained version's slice is cut from its --data history alone: the logged
    # decisions that joined it are all fitted, so "10% of its history, 5,200 decisions"
    # of 57,581 read as a miscount.
    history = "--data history" if v.feedback_rows else "history"
    where = [f"the newest {v.eval_fraction:.0%} of its {history}"] if v.eval_fraction else []
    if v.eval_decisions is not None:
        where.append(plural(v.eval_decisions, "decision"))
    slice_ = f"on its held-out slice ({', '.join(where)})" if where else "on its held-out slice"
    return f"{slice_}: {', '.join(figures)}"
