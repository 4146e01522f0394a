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
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "version": self.version,
            "decision": self.decision,
            "previous": self.previous,
            "by": self.by,
            "reason": self.reason,
            "run_id": self.run_id,
        }


def champion_changes(settings: Settings) -> list[ChampionChange]:
    """Every change of champion, oldest first; [] when nothing is registered."""
    if not registry.registry_exists(settings):
        return []
    client = registry.client(settings)
    experiment = client.get_experiment_by_name(settings.experiment + registry.DECISIONS_SUFFIX)
    changes = []
    if experiment is not None:
        changes = [
            change
            for run in _all_runs(client, experiment.experiment_id)
            if (change := _change(run)) is not None
        ]
    first = _first_champion_unrecorded(settings, changes)
    return ([first] if first is not None else []) + changes


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
    moved = tags.get(registry.ALIAS_MOVED_TAG)
    if version is None or moved == "false" or (run.info.status == "FAILED" and moved != "true"):
        return None  # recorded, but the alias did not move
    reason = tags.get("reason")
    return ChampionChange(
        at=datetime.fromtimestamp((run.info.end_time or run.info.start_time) / 1000, UTC),
        version=str(version),
        decision=decision,
        previous=None if previous in (None, "", "none") else str(previous),
        # Runs before decided_by was recorded name MLflow's user (LOGNAME, USER).
        by=tags.get(registry.DECIDED_BY_TAG) or tags.get("mlflow.user"),
        reason=None if reason in (None, "", _NO_REASON) else reason,
        run_id=str(run.info.run_id),
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
