"""``evaluate``, ``promote``, ``rollback`` and ``models``: the champion decided, and
the registered versions listed with their history."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nextbest.cli.options import (
    ChallengerVersionOpt,
    GateConfigOpt,
    RunsDeletedOpt,
    SinceOpt,
    _gate_config,
    _parse_date,
    _say_gate_config,
    _settings,
)
from nextbest.cli.output import _fail, _minute, _note, _working, console, stdout
from nextbest.cli.process import _interruptible_as_ctrl_c
from nextbest.settings import Settings, without_password

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from nextbest.registry import VersionSummary


def _say_finished(finished: Any) -> None:
    """Say what was written of a decision killed after the champion moved (a
    :class:`~nextbest.registry.UnfinishedDecision`, its ``unwritten`` now written)."""
    if finished is None:
        return
    end = finished.end
    console.print(
        f"[yellow]finished:[/yellow] the {end.named} (replacing {end.replaces or 'none'}; "
        f"MLflow run {end.run_id}) had moved the champion and stopped before it finished: "
        + ("; ".join(finished.unwritten) or "nothing but its mark was left")
        + (" (written now)" if finished.unwritten else " (taken off)"),
        highlight=False,
    )


def _judged(settings: Settings, version: int | None) -> str | None:
    """The version evaluate and promote judge as the challenger, named, when it is
    not the one alias 'challenger' names (``version``: --version's); None when it is
    that one ("challenger" then says which). With nothing to judge (no champion, no
    challenger, the challenger is the champion) it stops here, before any line of a
    gate that would not run."""
    from nextbest import registry
    from nextbest.loop.gate import CHALLENGER, GateError, judged_as, versions_judged

    named = None if version is None else str(version)
    try:
        versions_judged(settings, named)
    except (GateError, registry.RegistryError) as exc:
        raise _fail(str(exc)) from None
    judged = judged_as(settings, named)
    return None if judged == CHALLENGER else judged


def _judging(judged: str | None) -> str:
    """What evaluate and promote say while the gate works (``judged``: :func:`_judged`)."""
    if judged:
        return f"evaluating {judged} against the champion"
    return "evaluating challenger vs champion"


def _print_evaluation(evaluation: Any) -> None:
    """``evaluation``'s table and verdict: the challenger named as the gate's reasons
    name it (``evaluation.judged``: "challenger", or "version 3" for one --version
    named that the alias does not)."""
    decision = evaluation.decision
    if not decision.n_decisions:  # forced without evidence: the reasons say so
        for reason in decision.reasons:
            console.print(f"- {reason}")
        return
    judged = evaluation.judged
    versus = f"challenger v{evaluation.challenger_version}" if judged == "challenger" else judged
    table = Table(
        title=f"champion v{evaluation.champion_version} vs {versus} on "
        f"{decision.n_decisions:,} logged decisions reserved for the gate"
    )
    for column in ("estimator", "champion", judged, f"{judged} ESS"):
        table.add_column(column, justify="right")
    for name in ("ips", "snips", "dr"):
        c, ch = decision.champion.get(name), decision.challenger.get(name)
        if c is None or ch is None:
            continue
        table.add_row(
            name,
            f"{c['value']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}]",
            f"{ch['value']:.4f} [{ch['ci_low']:.4f}, {ch['ci_high']:.4f}]",
            f"{ch['effective_n']:,.0f}",
        )
    console.print(table)
    for reason in decision.reasons:
        console.print(f"- {reason}")
    verdict = "[green]passed[/green]" if decision.passed else "[red]not passed[/red]"
    console.print(f"gate ({decision.estimator}): {verdict}  evaluation run: {evaluation.run_id}")


def evaluate(
    since: SinceOpt = None,
    config: GateConfigOpt = None,
    version: ChallengerVersionOpt = None,
    runs_deleted: RunsDeletedOpt = False,
) -> bool:
    """Estimate challenger and champion off-policy (IPS, SNIPS, DR) and apply the gate.

    Moves no alias: the verdict is recorded (an MLflow run, the challenger's gate
    tag), exit code 0 whether the gate passes or not (read the verdict printed
    last); `nextbest promote` acts on it and exits 1 when it does not pass. 2 when
    it cannot be evaluated (no challenger, no logged outcomes yet, a gate config
    whose evaluation_share exceeds the one retrain left out, a version retrained
    with evaluation_share 0, a champion that cannot be loaded) or recorded (a
    tracking store without the versions' training runs, a decision that moved the
    champion meanwhile or held the decision lock past NEXTBEST_DECISION_WAIT_S)."""
    from nextbest import registry
    from nextbest.loop.gate import GateError, check_tracking_store
    from nextbest.loop.gate import evaluate as run_evaluate

    gate = _gate_config(config, said=False)
    since_at = _parse_date(since, "--since")  # a bad option is refused before all else
    settings = _settings()
    named = None if version is None else str(version)
    try:
        # Before any line of a gate that would not run.
        check_tracking_store(settings, "evaluation", version=named, runs_deleted=runs_deleted)
    except (GateError, registry.RegistryError) as exc:
        raise _fail(str(exc)) from None
    if version is None:
        _note_challenger_unset(settings)
    judged = _judged(settings, version)
    _say_gate_config(gate, config)
    try:
        with _working(_judging(judged)):
            evaluation = run_evaluate(
                settings,
                config=gate,
                since=since_at,
                version=named,
                runs_deleted=runs_deleted,
            )
    except GateError as exc:
        raise _fail(str(exc)) from None
    _print_evaluation(evaluation)
    return bool(evaluation.decision.passed)


def _note_challenger_unset(settings: Settings) -> None:
    """Say, before the challenger is judged, that a newer version was registered in
    full as challenger by a training run stopped before it set the alias: the gate
    would judge an older challenger, or find none."""
    from nextbest import registry

    if not registry.registry_exists(settings):
        return
    try:
        versions = registry.list_versions(settings)
    except registry.RegistryError:
        return  # the command itself says what is wrong with the registry
    for v in versions:
        if v.alias_unset == "challenger":
            held = next((w.version for w in versions if "challenger" in w.aliases), None)
            _note(
                f"version {v.version} was registered in full as challenger by a training run "
                "stopped before it set the alias, so the challenger here is "
                + (f"version {held}" if held else "none")
                + f": `nextbest models --repair` makes version {v.version} the challenger"
            )


def promote(
    since: SinceOpt = None,
    config: GateConfigOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Promote even if the gate does not pass, or cannot be evaluated for want "
            "of logged outcomes or because the champion cannot be loaded (logged as "
            "forced, without evidence); needs --reason.",
        ),
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why, for the record (a tag of the decision's MLflow run, shown by "
            "`nextbest models --history`); required with --force."
        ),
    ] = None,
    version: ChallengerVersionOpt = None,
    runs_deleted: RunsDeletedOpt = False,
) -> bool:
    """Promote the challenger to champion when the gate passes (exit code 1 when not).

    Run again after a promotion (a retried job), it says the champion is already the
    newest version, promoted, and exits 0. With --version N, version N is the
    challenger: a version rolled back (or any earlier one) promoted again, by the
    same gate.
    """
    from nextbest import registry
    from nextbest.loop.gate import GateError, already_promoted, check_tracking_store
    from nextbest.loop.gate import promote as run_promote

    if force and not (reason or "").strip():
        raise _fail(
            "--force needs --reason TEXT: a forced promotion skips the gate, and its "
            "record must say why; nothing was promoted"
        )
    gate = _gate_config(config, said=False)  # said once the gate runs, below
    since_at = _parse_date(since, "--since")  # a bad option is refused before all else
    settings = _settings()
    # Before a decision killed earlier is finished below: nothing written on refusal.
    try:
        check_tracking_store(
            settings,
            "promotion",
            version=None if version is None else str(version),
            runs_deleted=runs_deleted,
        )
    except (GateError, registry.RegistryError) as exc:
        raise _fail(str(exc)) from None
    with contextlib.ExitStack() as alone:
        # One decision at a time, from these checks on: a promotion that waited for
        # another one to end reads the registry it left ("nothing to promote" below
        # when that one promoted the same challenger).
        try:
            alone.enter_context(registry.deciding_alone(settings, "promotion"))
            # A promotion killed after the champion moved, run again (a retried job):
            # finished, then "nothing to promote" below. One another process is at work
            # on: refused.
            _say_finished(registry.finish_unfinished(settings))
        except registry.RegistryError as exc:
            raise _fail(str(exc)) from None
        done = (
            already_promoted(settings)
            if version is None and registry.registry_exists(settings)
            else None
        )
        if done is not None:
            console.print(
                f"nothing to promote: version {done[0]}, the newest, is champion already "
                f"(promoted {done[1]}); train a new challenger with `nextbest retrain`",
                highlight=False,
            )
            return True
        if version is None:
            _note_challenger_unset(settings)
        judged = _judged(settings, version)
        _say_gate_config(gate, config)
        try:
            # A scheduler's SIGTERM stops it as Ctrl-C does, so a decision run caught
            # moving the champion ends KILLED, saying whether it moved, not RUNNING.
            with _interruptible_as_ctrl_c(), _working(_judging(judged)):
                evaluation = run_promote(
                    settings,
                    config=gate,
                    since=since_at,
                    force=force,
                    reason=reason,
                    version=None if version is None else str(version),
                    runs_deleted=runs_deleted,
                )
        except GateError as exc:
            raise _fail(str(exc)) from None
    _say_finished(evaluation.finished)
    _print_evaluation(evaluation)
    if not evaluation.promoted:
        console.print(f"champion stays version {evaluation.champion_version}")
        raise typer.Exit(code=1)
    console.print(
        f"[green]promoted[/green] version {evaluation.challenger_version} to champion "
        f"(previous champion: {evaluation.champion_version}); servers pick it up on "
        "their next reload"
    )
    return True


def rollback(
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why, for the record (a tag of the rollback's MLflow run in the evaluation "
            "experiment, shown by `nextbest models --history`)."
        ),
    ] = None,
    runs_deleted: RunsDeletedOpt = False,
) -> str:
    """Make the previous champion the champion again.

    Run again after a rollback killed once the champion moved (a retried job), it
    finishes that rollback and goes no further back."""
    from nextbest.loop.gate import GateError
    from nextbest.loop.gate import rollback as run_rollback

    try:
        with _interruptible_as_ctrl_c():  # see promote
            done = run_rollback(_settings(), reason=reason, runs_deleted=runs_deleted)
    except GateError as exc:
        raise _fail(str(exc)) from None
    _say_finished(done.finished)
    if done.finished is not None and done.finished.end.kind == "rollback":
        console.print(
            f"champion is version {done.to_version} (was {done.from_version}), by that "
            "rollback; not rolled back further: run `nextbest rollback` again to return to "
            "the champion before it",
            highlight=False,
        )
        return done.to_version
    for version, why in done.skipped:
        _note(f"version {version}, an earlier champion, was passed over: {why}")
    for said in done.notes:
        _note(said)
    console.print(
        f"champion is version {done.to_version} again (was {done.from_version}); "
        f"servers pick it up on their next reload (recorded: MLflow run {done.run_id})",
        highlight=False,
    )
    return done.to_version


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
            "that none was and when the first came (exit code 0). With --json: at, "
            "champion (null before the first) and first_champion.",
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

    AUC and policy value (DR) are each version's own, measured at training on its
    held-out slice (the newest eval_fraction of the history); the gate's estimates,
    on the logged decisions reserved for it, are in `nextbest evaluate` and its
    MLflow run. With --history or --champion-at, the champion's timeline instead,
    read from the decision runs of the evaluation experiment.
    """
    import json
    from dataclasses import asdict

    from rich.markup import escape

    from nextbest import registry
    from nextbest.loop.gate import champion_history
    from nextbest.loop.lineage import ChampionTimeline, champion_timeline

    settings = _settings()
    when = _parse_time(champion_at, "--champion-at") if champion_at is not None else None
    runs_missing: registry.TrainingRunsMissingError | None = None
    try:
        # Nothing registered: said once, as without --repair, before repair says anything.
        versions = registry.list_versions(settings)
    except registry.TrainingRunsMissingError as exc:
        # Listed with what the registry holds, then said (exit 2). Not repaired, nor
        # the timeline read: both are in the tracking store, and this one is not it.
        if repair or history_table or when is not None:
            raise _fail(str(exc)) from None
        versions, runs_missing = exc.versions, exc
    except registry.RegistryError as exc:
        raise _fail(str(exc)) from None
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
            raise _fail(str(exc)) from None
        if finished is None and not_made is None and not named and not left_alone:
            console.print(
                "nothing to repair: no decision or training was left unfinished", highlight=False
            )
        _say_finished(finished)
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
    history = champion_history(settings)
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
            raise _fail(str(runs_missing))
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
            f"{_count(v.n_decisions)} decisions{fed_back} of {_count(v.n_hcps)} HCPs "
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
            _held_out_figures(v),
            f"gate {v.gate.split(' (run ')[0]}" if v.gate else None,
            f"promoted{' by --force' if v.promotion == 'forced' else ''} {_minute(v.promoted_at)}"
            if v.promoted_at
            else None,
            f"rolled back {_minute(v.rolled_back_at)}" if v.rolled_back_at else None,
            _training_run_said(v),
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
    if (caution := _not_comparable(versions)) is not None:
        stdout.print(caution)
    if len(history) == 1:
        stdout.print(
            f"no earlier champion to roll back to: version {history[0]} is the only one in "
            "the champion history (`nextbest rollback` has one to return to once another "
            "version is promoted)"
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
        raise _fail(str(runs_missing))
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
        raise _fail(
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
    answer naming the first champion and when it came (the history answers that too)."""
    import json

    from nextbest.loop.lineage import champion_at

    change = champion_at(changes, when)
    first = changes[0] if changes else None
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
        stdout.print(
            f"at {when.isoformat()} the champion was version {change.version}: "
            f"{change.decision} at {change.at.isoformat()}{by}{why}",
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
            f"at {when.isoformat()} no version was champion: none has been yet "
            "(`nextbest train --data DIR` sets the first)",
            highlight=False,
        )
    return None if change is None else change.version


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _not_comparable(versions: list[VersionSummary]) -> str | None:
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


def _held_out_figures(v: VersionSummary) -> str | None:
    """'on its held-out slice (the newest 10% of its history, 5,200 decisions): AUC
    0.710, policy value (DR) 2.020 [1.740, 2.299]' for a ``VersionSummary``."""
    figures = [f"AUC {v.eval_auc:.3f}"] if v.eval_auc is not None else []
    if v.policy_value_dr is not None:
        figures.append("policy value (DR) {:.3f} [{:.3f}, {:.3f}]".format(*v.policy_value_dr))
    if not figures:
        return None
    where = [f"the newest {v.eval_fraction:.0%} of its history"] if v.eval_fraction else []
    if v.eval_decisions is not None:
        where.append(f"{v.eval_decisions:,} decisions")
    slice_ = f"on its held-out slice ({', '.join(where)})" if where else "on its held-out slice"
    return f"{slice_}: {', '.join(figures)}"
