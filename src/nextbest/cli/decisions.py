"""``evaluate``, ``promote`` and ``rollback``: the champion decided."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nextbest.cli.options import (
    ChallengerVersionOpt,
    GateConfigOpt,
    RunsDeletedOpt,
    SinceOpt,
    parse_since,
    read_gate_config,
    read_settings,
    refuse_missing_models_dir,
    say_gate_config,
)
from nextbest.cli.output import console, fail, minute, note, say_finished, working
from nextbest.cli.process import interruptible_as_ctrl_c, said_if_stopped
from nextbest.settings import Settings
from nextbest.wording import plural

if TYPE_CHECKING:  # the gate is imported by the commands that run it
    from nextbest.loop.gate import Judging


# What a --since in the future leaves evaluate and promote (as retrain and
# uplift-report refuse it): no logged decision to judge on.
SINCE_TOO_LATE = (
    "no logged decision is that new for the gate to judge on (--since is when decisions "
    "were logged); leave it out to judge on all the decisions the gate may use"
)

# What evaluate, promote and rollback stopped before they said what they decided left,
# when the registry did not say it (a stop within the champion's move it says itself).
_STOPPED_LEFT = {
    "evaluate": "it moves no alias, so the champion and the challenger are as they were; "
    "its verdict (a run of the evaluation experiment, the challenger's gate tag) may be "
    "recorded in part or not at all: run it again",
    "promote": "`nextbest models --history` says whether the champion moved; run it "
    "again if it did not",
    "rollback": "`nextbest models --history` says whether the champion moved; run it "
    "again only if it did not, as a second rollback goes one more version back",
}


def _said_if_stopped(command: str) -> contextlib.AbstractContextManager[None]:
    """Say what ``command`` (evaluate, promote, rollback) stopped by Ctrl-C or a
    scheduler's SIGTERM left, unless the registry said it (a decision stopped as it
    moved the champion). Stopped judging the evidence, they exited 130 or 143 without
    a word, a job's log ending on `evaluating challenger vs champion ...`."""
    from rich.markup import escape

    return said_if_stopped(
        lambda how: (
            f"{command} was stopped ({how}) before it said what it decided: "
            f"{escape(_STOPPED_LEFT[command])}"
        )
    )


def _judged(settings: Settings, version: int | None) -> Judging:
    """The versions evaluate and promote compare, read once and passed to the gate
    (``version``: --version's): what they say they judge is what is judged. With
    nothing to judge (no champion, no challenger, the challenger is the champion) it
    stops here, before any line of a gate that would not run."""
    from nextbest import registry
    from nextbest.loop.gate import GateError, versions_judged

    try:
        return versions_judged(settings, None if version is None else str(version))
    except (GateError, registry.RegistryError) as exc:
        raise fail(str(exc)) from None


def _refuse_missing_log(settings: Settings) -> None:
    """Stop evaluate and promote, once there is something to judge, when
    ``NEXTBEST_DATABASE_URL`` is unset and the models directory holds no log: the
    gate's evidence is what the log holds, and it would make an empty one there and
    find no evidence (a job of a deployment whose servers log to PostgreSQL, run
    without the variable)."""
    refuse_missing_models_dir(settings, "log", answers_from_log=True)


def _judging(judging: Judging) -> str:
    """What evaluate and promote say while the gate works (``judging``: :func:`_judged`):
    the version judged named when it is not the one alias 'challenger' names."""
    from nextbest.loop.gate import CHALLENGER

    if judging.judged != CHALLENGER:
        return f"evaluating {judging.judged} against the champion"
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
    unseen = (
        f" ({evaluation.unseen:,} of them outside the reserved share, served since both "
        "versions' cut-offs)"
        if evaluation.unseen
        else ""
    )
    table = Table(
        title=f"champion v{evaluation.champion_version} vs {versus} on "
        f"{plural(decision.n_decisions, 'logged decision')} reserved for the gate or "
        f"new to both{unseen}"
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
    served = evaluation.served_by
    if served:
        # With NEXTBEST_CHALLENGER_SHARE the challenger answers too: how much of the
        # evidence is its own choices, served with its own propensities.
        own = served.get(evaluation.challenger_version, 0)
        console.print(
            "evidence served by "
            + ", ".join(f"v{v} {n:,}" for v, n in served.items())
            + f": {own / sum(served.values()):.0%} by the {judged} itself"
            + (
                f"; {evaluation.split_mixed:,} valued with both versions' probabilities "
                "(a random split chose who answered)"
                if evaluation.split_mixed
                else ""
            ),
            highlight=False,
        )
        if not own and not decision.passed and judged == "challenger":
            note(
                "the challenger served none of this evidence: its choices count only where "
                "the champion's exploration served them, with importance weights near the "
                "number of allowed actions / epsilon; "
                "servers with NEXTBEST_CHALLENGER_SHARE answer a share of HCPs with it "
                '(docs/loop.md, "A share of traffic for the challenger"): evaluate again '
                "once those answers have outcomes"
            )
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

    gate = read_gate_config(config, said=False)
    since_at = parse_since(since, SINCE_TOO_LATE)  # a bad option is refused before all else
    settings = read_settings()
    # The gate's evidence is the log's exploration: a mistyped log is refused, not made.
    refuse_missing_models_dir(settings, "registry", "log")
    named = None if version is None else str(version)
    try:
        # Before any line of a gate that would not run.
        check_tracking_store(settings, "evaluation", version=named, runs_deleted=runs_deleted)
    except (GateError, registry.RegistryError) as exc:
        raise fail(str(exc)) from None
    if version is None:
        _note_challenger_unset(settings)
    judging = _judged(settings, version)
    _refuse_missing_log(settings)
    say_gate_config(gate, config)
    try:
        with _said_if_stopped("evaluate"), working(_judging(judging)):
            evaluation = run_evaluate(
                settings,
                config=gate,
                since=since_at,
                version=named,
                runs_deleted=runs_deleted,
                judging=judging,
            )
    except GateError as exc:
        raise fail(str(exc)) from None
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
            note(
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
        raise fail(
            "--force needs --reason TEXT: a forced promotion skips the gate, and its "
            "record must say why; nothing was promoted"
        )
    gate = read_gate_config(config, said=False)  # said once the gate runs, below
    since_at = parse_since(  # a bad option is refused before all else
        since, SINCE_TOO_LATE + "; nothing was promoted"
    )
    settings = read_settings()
    # The gate reads the log's exploration (a forced promotion reads none).
    refuse_missing_models_dir(settings, "registry", *(() if force else ("log",)))
    # Before a decision killed earlier is finished below: nothing written on refusal.
    try:
        check_tracking_store(
            settings,
            "promotion",
            version=None if version is None else str(version),
            runs_deleted=runs_deleted,
        )
    except (GateError, registry.RegistryError) as exc:
        raise fail(str(exc)) from None
    with contextlib.ExitStack() as alone:
        # One decision at a time, from these checks on: a promotion that waited for
        # another one to end reads the registry it left ("nothing to promote" below
        # when that one promoted the same challenger).
        try:
            alone.enter_context(registry.deciding_alone(settings, "promotion"))
            # A promotion killed after the champion moved, run again (a retried job):
            # finished, then "nothing to promote" below. One another process is at work
            # on: refused.
            say_finished(registry.finish_unfinished(settings))
        except registry.RegistryError as exc:
            raise fail(str(exc)) from None
        done = (
            already_promoted(settings)
            if version is None and registry.registry_exists(settings)
            else None
        )
        if done is not None:
            console.print(
                f"nothing to promote: version {done[0]}, the newest, is champion already "
                f"(promoted {minute(done[1])}); train a new challenger with `nextbest retrain`",
                highlight=False,
            )
            return True
        if version is None:
            _note_challenger_unset(settings)
        judging = _judged(settings, version)
        if not force:
            _refuse_missing_log(settings)
        say_gate_config(gate, config)
        try:
            # A scheduler's SIGTERM stops it as Ctrl-C does, so a decision run caught
            # moving the champion ends KILLED, saying whether it moved, not RUNNING.
            with (
                _said_if_stopped("promote"),
                interruptible_as_ctrl_c(),
                working(_judging(judging)),
            ):
                evaluation = run_promote(
                    settings,
                    config=gate,
                    since=since_at,
                    force=force,
                    reason=reason,
                    version=None if version is None else str(version),
                    runs_deleted=runs_deleted,
                    judging=judging,
                )
        except GateError as exc:
            raise fail(str(exc)) from None
    say_finished(evaluation.finished)
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

    settings = read_settings()
    refuse_missing_models_dir(settings, "registry")
    try:
        with _said_if_stopped("rollback"), interruptible_as_ctrl_c():  # see promote
            done = run_rollback(settings, reason=reason, runs_deleted=runs_deleted)
    except GateError as exc:
        raise fail(str(exc)) from None
    say_finished(done.finished)
    if done.finished is not None and done.finished.end.kind == "rollback":
        console.print(
            f"champion is version {done.to_version} (was {done.from_version}), by that "
            "rollback; not rolled back further: run `nextbest rollback` again to return to "
            "the champion before it",
            highlight=False,
        )
        return done.to_version
    for version, why in done.skipped:
        note(f"version {version}, an earlier champion, was passed over: {why}")
    for said in done.notes:
        note(said)
    console.print(
        f"champion is version {done.to_version} again (was {done.from_version}); "
        f"servers pick it up on their next reload (recorded: MLflow run {done.run_id})",
        highlight=False,
    )
    return done.to_version


def withdraw(
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why, for the record (the version's withdrawn_reason tag, shown by "
            "`nextbest models`)."
        ),
    ] = None,
) -> str:
    """Stop serving the challenger: take alias challenger off its version.

    Servers answering a share of HCPs with it (NEXTBEST_CHALLENGER_SHARE) answer every
    HCP with the champion from their next reload or alias poll. The version stays
    registered, and its logged answers stay evidence."""
    from nextbest import registry
    from nextbest.loop.gate import GateError
    from nextbest.loop.gate import withdraw as run_withdraw

    settings = read_settings()
    refuse_missing_models_dir(settings, "registry")
    try:
        with interruptible_as_ctrl_c():
            version = run_withdraw(settings, reason=reason)
    except (GateError, registry.RegistryError) as exc:
        raise fail(str(exc)) from None
    console.print(
        f"withdrew version {version}: alias 'challenger' names no version; servers answer "
        "every HCP with the champion from their next reload (`POST /v1/admin/reload`, or "
        "the alias poll)",
        highlight=False,
    )
    return version
