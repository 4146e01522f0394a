"""The champion's timeline: which version was served when, how it got there, who and why.

Read back from the decision runs of the experiment ``<experiment>-evaluation``
(:data:`nextbest.registry.DECISIONS_SUFFIX`), which nothing edits: the champion
training set first (``decision`` = ``train``), each promotion (``promote``; forced
when its ``gate_passed`` tag is ``False``) and each rollback. The registry's
aliases and tags keep only the present state; the runs keep the history. Each
decision is recorded before its alias moves, which its run does last, so a
change's time is when the run ended, just after the alias moved (a run whose
alias move failed ended FAILED, tagged ``alias_moved`` = ``false``, and is left
out; so is one interrupted before the champion moved, KILLED with the same tag,
while one interrupted after it is kept, ``alias_moved`` = ``true``), and its
``decided_by`` tag the account that ran the command (by its user
id; older runs have only MLflow's ``mlflow.user``, the ``LOGNAME`` or ``USER``
variable).

A run that says neither (RUNNING: its process was killed outright, by SIGKILL or a
power cut, or is still at work; or KILLED by a process that could not read the
store to tell) is judged at each read by what came after it: the decision is made
when the champion just after it (the version the next made decision replaced, or
the champion now when none followed) is its version. Nothing is written to the run
by reading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from nextbest import registry
from nextbest.settings import Settings

Decision = Literal["train", "promote", "forced promote", "rollback"]
# The reason a rollback without one was recorded with.
_NO_REASON = "not given"


@dataclass(frozen=True)
class ChampionChange:
    """``version`` became champion at ``at`` (UTC) by ``decision``, replacing
    ``previous`` (None: the first champion). ``run_id``: the decision's MLflow run;
    None for a first champion trained before training recorded it (``at`` is then
    its registration time)."""

    at: datetime
    version: str
    decision: Decision
    previous: str | None
    by: str | None  # the user who ran the command, as MLflow recorded it
    reason: str | None
    run_id: str | None
    # How the decision was interrupted once the champion had moved: its run's
    # ``interrupted`` tag (Ctrl-C, SIGTERM), or NOT_ENDED; None when it was not.
    interrupted: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return _as_json(self)


def _as_json(record: ChampionChange | InterruptedDecision) -> dict[str, Any]:
    """Its fields in order, times in ISO 8601 (as `nextbest models --json` gives them)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(record).items()}


# ``ChampionChange.interrupted`` of a decision whose run reads RUNNING, judged made.
NOT_ENDED = "run not ended"


@dataclass(frozen=True)
class InterruptedDecision:
    """A decision to make ``version`` champion in place of ``previous``, recorded as
    run ``run_id`` (started at ``started``, UTC) and interrupted before the champion
    moved: not made. ``run_status``: KILLED (its process said so, ``alias_moved`` =
    ``false``) or RUNNING (it never ended, and the champion did not move to it)."""

    started: datetime
    version: str
    decision: Decision
    previous: str | None
    by: str | None
    reason: str | None
    run_id: str
    run_status: str

    def as_dict(self) -> dict[str, Any]:
        return _as_json(self)


@dataclass(frozen=True)
class ChampionTimeline:
    """Every change of champion, oldest first, and the decisions interrupted before
    the champion moved (left out of ``changes``), oldest first."""

    changes: list[ChampionChange]
    interrupted: list[InterruptedDecision]


def champion_changes(settings: Settings) -> list[ChampionChange]:
    """Every change of champion, oldest first; [] when nothing is registered."""
    return champion_timeline(settings).changes


def champion_timeline(settings: Settings) -> ChampionTimeline:
    """Every change of champion and every decision interrupted before the champion
    moved, each oldest first; both empty when nothing is registered."""
    if not registry.registry_exists(settings):
        return ChampionTimeline([], [])
    client = registry.client(settings)
    experiment = client.get_experiment_by_name(settings.experiment + registry.DECISIONS_SUFFIX)
    recorded = []
    if experiment is not None:
        recorded = [
            (run, change)
            for run in _all_runs(client, experiment.experiment_id)
            if (change := _change(run)) is not None
        ]
    changes: list[ChampionChange] = []
    interrupted: list[InterruptedDecision] = []
    # Newest first, so each unsaid run is judged by the champion just after it.
    after = registry.alias_version(settings, registry.CHAMPION_ALIAS)
    # This process's own decision run is at work, not interrupted.
    own = registry.active_run_id(settings)
    for run, change in reversed(recorded):
        if _moved(run, change.version, champion_after=after):
            changes.append(replace(change, interrupted=None) if run.info.run_id == own else change)
            after = change.previous
        elif run.info.status in ("RUNNING", "KILLED") and run.info.run_id != own:
            interrupted.append(_interrupted(run, change))
    changes.reverse()
    interrupted.reverse()
    first = _first_champion_unrecorded(settings, changes)
    return ChampionTimeline(([first] if first is not None else []) + changes, interrupted)


def champion_at(changes: list[ChampionChange], when: datetime) -> ChampionChange | None:
    """The change that made the champion of ``when`` (naive: UTC) champion; None
    before the first."""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    current = None
    for change in changes:
        if change.at > when:
            break
        current = change
    return current


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            order_by=["attributes.start_time ASC"],
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _change(run: Any) -> ChampionChange | None:
    tags, params = run.data.tags, run.data.params
    decision = tags.get("decision")
    if decision == "promote":
        version, previous = params.get("challenger_version"), params.get("champion_version")
        if tags.get("gate_passed") == "False":
            decision = "forced promote"
    elif decision in ("train", "rollback"):
        version, previous = params.get("to_version"), params.get("from_version")
    else:
        return None  # an evaluation that kept the champion
    if version is None:
        return None
    reason = tags.get("reason")
    interrupted = tags.get(registry.INTERRUPTED_TAG)
    return ChampionChange(
        # A run that never ended: when it started, moments before the alias moved.
        at=datetime.fromtimestamp((run.info.end_time or run.info.start_time) / 1000, UTC),
        version=str(version),
        decision=decision,
        previous=None if previous in (None, "", "none") else str(previous),
        # Runs before decided_by was recorded name MLflow's user (LOGNAME, USER).
        by=tags.get(registry.DECIDED_BY_TAG) or tags.get("mlflow.user"),
        reason=None if reason in (None, "", _NO_REASON) else reason,
        run_id=str(run.info.run_id),
        interrupted=interrupted or (NOT_ENDED if run.info.status == "RUNNING" else None),
    )


def _moved(run: Any, version: str, *, champion_after: str | None) -> bool:
    """Whether the decision recorded by ``run`` (making ``version`` champion) moved the
    champion: what its run says (``alias_moved``; FAILED without it: refused;
    FINISHED: made), else, for a run that never said (RUNNING, or KILLED by a process
    that could not read the store), whether ``champion_after``, the champion just
    after it, is its version."""
    said = run.data.tags.get(registry.ALIAS_MOVED_TAG)
    if said is not None:
        return said == "true"
    if run.info.status in ("FINISHED", "FAILED"):
        return run.info.status == "FINISHED"
    return version == champion_after


def _interrupted(run: Any, change: ChampionChange) -> InterruptedDecision:
    return InterruptedDecision(
        started=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
        version=change.version,
        decision=change.decision,
        previous=change.previous,
        by=change.by,
        reason=change.reason,
        run_id=str(run.info.run_id),
        run_status=str(run.info.status),
    )


def _first_champion_unrecorded(
    settings: Settings, changes: list[ChampionChange]
) -> ChampionChange | None:
    """The first champion when training set it before it was recorded as a decision:
    the version the first recorded change replaced (or, with none, the champion),
    at its registration time."""
    if changes and (changes[0].decision == "train" or changes[0].previous is None):
        return None
    first = (
        changes[0].previous
        if changes
        else registry.alias_version(settings, registry.CHAMPION_ALIAS)
    )
    if first is None:
        return None
    found = registry.client(settings).get_model_version(settings.model_name, first)
    return ChampionChange(
        at=datetime.fromtimestamp(found.creation_timestamp / 1000, UTC),
        version=first,
        decision="train",
        previous=None,
        by=None,
        reason=None,
        run_id=None,
    )
