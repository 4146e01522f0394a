"""Off-policy gate: evaluate challenger against champion on logged data, promote, roll back.

The evidence is every logged decision with an outcome, whichever model version
served it: each carries the probability its logging policy had of what it served
(the rank-1 propensity, or the logged probability of a no-action answer; for a
holdout answer logged before that was recorded, found by re-scoring it with the
version that served it), and off-policy estimates with
the logging propensities are valid whatever policy logged the data. Each model is
a deterministic target policy (its greedy rank-1 action per decision, or no
action; with ``NEXTBEST_FRESH_HISTORY`` on, chosen with its history moved on to the
day the decision was served, as the server serves it: :func:`replay_contacts`); its
value per decision is ``outcome - cost of the action taken``,
estimated by IPS, self-normalised IPS and doubly robust estimators
(:mod:`nextbest.evaluation.ope`), with a paired interval for challenger minus
champion. Intervals are cluster-robust by HCP: one HCP's decisions are not
independent; and their critical value is Student's t on the HCPs less one, not the
normal's 1.96 (:func:`nextbest.evaluation.ope.critical_value`): with a dozen HCPs
the error is itself uncertain, and the normal's interval let a challenger pass on
evidence that does not support it. The difference's (IPS, DR) rests on the HCPs
where the two choose differently, less one: elsewhere its terms are 0 whatever the
outcome (:func:`nextbest.evaluation.ope.difference`).

The evidence is the share of logged decisions reserved for evaluation
(``evaluation_share``, by a hash of the recommendation id), which ``retrain`` never
trains on: a challenger judged on the outcomes it learned from would look better
than it is. The reserved decisions of every round are never trained on, so they all
count; and so does every decision served since both versions' cut-offs, which
neither learned from, reserved or not (:func:`served_since`): with a challenger
share, all of the challenger's own answers since it was trained.

The gate (``training/gate.yaml``, :class:`GateConfig`) passes when there are enough
decisions, the challenger's importance weights leave enough effective sample, and
either the lower 95% bound of (challenger - champion) is above zero
(``criterion: lower_bound``) or the challenger's value is at least the champion's
plus ``margin`` x |champion's| (``criterion: margin``).

Promotion moves alias ``champion`` to the challenger and remembers the old one
(alias ``previous_champion`` and the registered model tag ``champion_history``);
``rollback`` restores it. Every evaluation is an MLflow run in the experiment
``<experiment>-evaluation`` with the decision, the estimates and the config; so is
every rollback, and the champion training set first (see
:mod:`nextbest.loop.lineage`, which reads them back as the champion's timeline).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Concatenate, Literal, ParamSpec, TypeVar, get_args

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)

from nextbest import registry
from nextbest.evaluation import ope
from nextbest.evaluation.ope import Estimator
from nextbest.evaluation.plots import gate_figure
from nextbest.learning.scoring import ScoringModel, utc_timestamp
from nextbest.loop.evidence import (
    NO_ACTION,
    action_codes,
    greedy_actions,
    load_decisions,
    no_action_probability,
    replay_contacts,
    reserved_for_gate,
    serving_greedy_empty,
    split_probability,
    split_versions,
    version_loader,
)
from nextbest.loop.report import json_safe
from nextbest.settings import Settings, without_password
from nextbest.storage.db import store_session
from nextbest.yamlfile import read_settings_file, validated, word_of

CHAMPION = registry.CHAMPION_ALIAS
CHALLENGER = registry.CHALLENGER_ALIAS
PREVIOUS_CHAMPION = registry.PREVIOUS_CHAMPION_ALIAS
HISTORY_TAG = registry.HISTORY_TAG
# Version tag: the evaluation_share its retrain left out of training (retrain sets it).
SHARE_TAG = "evaluation_share"
# Version tag: how it last became champion, "gate passed" or "forced" (promote --force).
PROMOTION_TAG = "promotion"
# Shrinks each action's mean reward toward the overall mean in the DR reward model,
# so a rarely served action is not judged on a handful of outcomes.
REWARD_PRIOR_WEIGHT = 20.0
# History feature holding each HCP's mean outcome before the snapshot (DR baseline).
BASELINE_FEATURE = "all__outcome_mean"


P = ParamSpec("P")
R = TypeVar("R")


class GateError(RuntimeError):
    """The gate cannot be evaluated (no challenger, no logged evidence, bad config)."""


class NoEvidenceError(GateError):
    """Champion and challenger exist but no logged decision can judge them."""

    def __init__(self, message: str, *, champion_version: str, challenger_version: str) -> None:
        super().__init__(message)
        self.champion_version = champion_version
        self.challenger_version = challenger_version


class ChampionUnloadableError(GateError):
    """The champion's model cannot be loaded (its artifacts damaged or missing, written
    by an incompatible nextbest): the gate cannot value it, and only a forced
    promotion (or a rollback) replaces it."""

    def __init__(
        self, message: str, *, champion_version: str, challenger_version: str, why: str
    ) -> None:
        super().__init__(message)
        self.champion_version = champion_version
        self.challenger_version = challenger_version
        self.why = why


@contextlib.contextmanager
def _deciding_alone(settings: Settings, decision: str) -> Iterator[None]:
    """:func:`nextbest.registry.deciding_alone` for ``decision``, a lock held by another
    (past its wait) or unusable refused with a :class:`GateError` naming it."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(registry.deciding_alone(settings, decision))
        except registry.RegistryError as exc:  # held by another, or unusable
            raise GateError(str(exc)) from exc
        yield


def _one_at_a_time(
    decision: str,
) -> Callable[[Callable[Concatenate[Settings, P], R]], Callable[Concatenate[Settings, P], R]]:
    """The decorated decision (``promotion``, ``rollback``; the settings its first
    argument) runs holding the model's decision lock (:func:`_deciding_alone`), from
    its first check to the end of the champion's move: a second one started
    meanwhile waits for it, or is refused with a :class:`GateError` naming it, and
    writes nothing."""

    def decorate(
        decide: Callable[Concatenate[Settings, P], R],
    ) -> Callable[Concatenate[Settings, P], R]:
        @functools.wraps(decide)
        def alone(settings: Settings, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with _deciding_alone(settings, decision):
                return decide(settings, *args, **kwargs)

        return alone

    return decorate


Criterion = Literal["lower_bound", "margin"]


class GateConfig(BaseModel):
    """When a challenger may replace the champion (``training/gate.yaml``)."""

    # Strict, as the training config is: "500" in quotes is a mistake, not a number.
    # And finite: a margin or an effective n of .inf is a gate that never passes.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # Read in any case, as written by hand: `estimator: DR`.
    estimator: Annotated[Estimator, BeforeValidator(word_of(get_args(Estimator)))] = "dr"
    criterion: Annotated[Criterion, BeforeValidator(word_of(get_args(Criterion)))] = "lower_bound"
    margin: float = Field(default=0.0, ge=0.0)
    min_decisions: int = Field(default=500, ge=1)
    min_effective_n: float = Field(default=100.0, ge=0.0)
    # Where the two differ, the decisions that tried each one's choice: a challenger that
    # mostly agrees has a large effective n of its own while its difference from the
    # champion rests on a few large weighted corrections, whose t interval is too short.
    min_differing_effective_n: float = Field(default=20.0, ge=0.0)
    evaluation_share: float = Field(default=0.3, ge=0.0, lt=1.0)
    # The file it was read from, kept with the runs that read it (``config/``).
    _source: str = PrivateAttr(default="built-in defaults")

    @property
    def source(self) -> str:
        """The gate config file read, or "built-in defaults"."""
        return self._source

    def as_params(self) -> dict[str, Any]:
        """The settings as MLflow run parameters, ``gate.<key>``, and ``gate.file``
        naming the file read. A count or share written whole is logged whole
        (``gate.min_differing_effective_n: 20``), as the integer settings are."""
        return {
            **{
                f"gate.{key}": int(value)
                if isinstance(value, float) and value.is_integer()
                else value
                for key, value in self.model_dump().items()
            },
            "gate.file": self.source,
        }

    @field_validator("margin")
    @classmethod
    def _margin_of_the_margin_criterion(cls, value: float, info: ValidationInfo) -> float:
        """A margin under ``criterion: lower_bound`` was read and ignored: the gate a
        data scientist asked for (at least 2% better) was not the one applied."""
        criterion = info.data.get("criterion")  # None: refused itself
        if value != 0 and criterion not in (None, "margin"):
            raise ValueError(
                f"margin {value:g} applies only with criterion: margin, and the criterion "
                f"is {criterion}: write criterion: margin, or margin: 0"
            )
        return value


def load_gate_config(path: Path | None) -> GateConfig:
    """Read and validate a gate config; None gives the defaults (the CLI passes None for
    a default file that does not exist: ``cli.options._config``). A named file that does
    not exist is refused."""
    if path is None:
        return GateConfig()
    raw, lines = read_settings_file(path, f"gate config {path}", GateError)
    config = validated(GateConfig, raw, f"gate config {path}", lines, GateError)
    config._source = str(path)
    return config


@dataclass(frozen=True)
class LoggedBandit:
    """Logged decisions in the off-policy vocabulary, arrays of length ``n``.

    ``action``: logged action code (``-1`` no action); ``outcome``: NRx that came
    back; ``pscore``: probability of the logged action; ``cost``: ``(A,)`` cost per
    action code, so the reward of taking action ``a`` is ``outcome - cost[a]``;
    ``baseline``: the HCP's mean outcome in the history before the model's snapshot
    (NaN when unknown), which the DR reward model starts from; ``group``: the HCP
    of each decision (intervals are cluster-robust over it), None when every
    decision is its own.
    """

    action: np.ndarray
    outcome: np.ndarray
    pscore: np.ndarray
    cost: np.ndarray
    baseline: np.ndarray | None = None
    group: np.ndarray | None = None

    @property
    def reward(self) -> np.ndarray:
        return self.outcome - _cost_of(self.cost, self.action)


def _cost_of(cost: np.ndarray, action: np.ndarray) -> np.ndarray:
    return np.where(action == NO_ACTION, 0.0, cost[np.where(action == NO_ACTION, 0, action)])


@dataclass(frozen=True)
class RewardModel:
    """``q(x, a) = baseline(x) + effect[a + 1]``: the DR estimator's reward model.

    Deliberately simple and policy-neutral (it favours neither candidate), and DR
    stays unbiased whatever its quality; the HCP baseline removes most of the
    between-HCP spread of outcomes from the estimator's variance.
    """

    baseline: np.ndarray
    effect: np.ndarray

    def __call__(self, action: np.ndarray) -> np.ndarray:
        return self.baseline + self.effect[action + 1]


def reward_model(data: LoggedBandit) -> RewardModel:
    """Fit :class:`RewardModel`: per-action mean of ``reward - baseline``, shrunk.

    Each action's mean residual is shrunk toward the no-action mean minus the
    action's cost (``REWARD_PRIOR_WEIGHT`` pseudo-decisions), so a rarely served
    action is not judged on a handful of outcomes.
    """
    reward = data.reward
    n = len(reward)
    if data.baseline is None:
        baseline = np.full(n, float(reward.mean()) if n else 0.0)
    else:
        baseline = np.asarray(data.baseline, dtype=np.float64)
        known = np.isfinite(baseline)
        fill = float(baseline[known].mean()) if known.any() else float(reward.mean())
        baseline = np.where(known, baseline, fill)
    residual = reward - baseline
    n_actions = len(data.cost)
    slot = data.action + 1
    sums = np.bincount(slot, weights=residual, minlength=n_actions + 1)
    counts = np.bincount(slot, minlength=n_actions + 1).astype(np.float64)
    no_action = float(sums[0] / counts[0]) if counts[0] else float(residual.mean())
    prior = np.concatenate([[no_action], no_action - data.cost])
    effect = (sums + REWARD_PRIOR_WEIGHT * prior) / (counts + REWARD_PRIOR_WEIGHT)
    return RewardModel(baseline=baseline, effect=effect)


def policy_estimates(data: LoggedBandit, target: np.ndarray) -> dict[str, ope.PolicyValue]:
    """IPS, SNIPS and DR value per decision of a deterministic ``target`` ``(n,)``."""
    q = reward_model(data)
    reward = data.reward
    out: dict[str, ope.PolicyValue] = {}
    for name in ope.ESTIMATORS:
        try:
            out[name] = ope.estimate(
                name,
                data.action,
                reward,
                data.pscore,
                target,
                q_target=q(target),
                q_logged=q(data.action),
                groups=data.group,
            )
        except ValueError:
            continue  # SNIPS without a single agreeing decision: reported as missing
    return out


@dataclass
class GateDecision:
    """The gate's verdict and the evidence behind it.

    ``champion`` / ``challenger``: each estimator's value per decision (the no-touch
    outcome included); ``difference``: challenger - champion by the gate's
    estimator (paired); ``vs_no_action``: each policy minus "no action" on the same
    decisions (paired, the gate's estimator), i.e. its estimated incremental value.
    Below ``min_decisions`` both are still estimated and shown, and
    ``difference_not_decided_on`` says why the verdict did not rest on them.
    """

    passed: bool
    reasons: list[str]
    estimator: str
    n_decisions: int
    champion: dict[str, dict[str, Any]] = field(default_factory=dict)
    challenger: dict[str, dict[str, Any]] = field(default_factory=dict)
    difference: dict[str, Any] | None = None
    agreement: float = 0.0
    vs_no_action: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Why ``difference`` is shown but was not decided on ("below min_decisions: ..."):
    # too few decisions for the gate, yet how far the evidence is from a decision.
    difference_not_decided_on: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_json(self) -> str:
        """``decision.json``: :meth:`as_dict` with a bound that does not exist (no
        interval: evidence from one HCP) as null, not ``Infinity``, which is no JSON
        (a JavaScript or strict reader of the artifact stopped on it)."""
        return json.dumps(json_safe(self.as_dict()), indent=1, allow_nan=False)


def decide(
    data: LoggedBandit,
    *,
    champion_target: np.ndarray,
    challenger_target: np.ndarray,
    config: GateConfig,
    judged: str = CHALLENGER,
) -> GateDecision:
    """Apply the gate to the challenger and champion target actions ``(n,)``.

    ``judged``: what the reasons call the challenger (:func:`judged_as`), "challenger"
    or "version 3" for one ``--version`` named that the alias does not; the verdict's
    keys keep the name ``challenger``.
    """
    the = _the(judged)
    n = len(data.action)
    if data.group is not None:
        # The HCPs as integer codes, found once: an interval only asks which decisions
        # share one, and each of its np.unique calls sorted the HCP ids as strings again
        # (two thirds of the gate's time on 6,000 decisions). Codes in the ids' order.
        data = replace(data, group=np.unique(data.group, return_inverse=True)[1])
    champion = policy_estimates(data, champion_target)
    challenger = policy_estimates(data, challenger_target)
    decision = GateDecision(
        passed=False,
        reasons=[],
        estimator=config.estimator,
        n_decisions=n,
        champion={k: v.as_dict() for k, v in champion.items()},
        challenger={k: v.as_dict() for k, v in challenger.items()},
        agreement=float((champion_target == challenger_target).mean()) if n else 0.0,
    )
    # Too few decisions keep the champion whatever they show; the difference is still
    # estimated and said (not decided on), so the user sees how far it is from a decision.
    enough = n >= config.min_decisions
    if not enough:
        decision.reasons.append(
            f"not enough evidence: {n} logged decisions with an outcome in the share "
            f"reserved for the gate (evaluation_share {config.evaluation_share:g}) or "
            f"served since both versions' cut-offs, the gate needs {config.min_decisions}"
        )
        if not n:
            return decision
    if config.estimator not in challenger or config.estimator not in champion:
        decision.reasons.append(
            f"{config.estimator} is undefined: a policy never agrees with the logged actions"
        )
        return decision
    q = reward_model(data)
    nothing = np.full(n, NO_ACTION, dtype=np.int64)
    # Doing nothing is valued on the decisions that did nothing (a holdout, an empty
    # answer). With none, IPS valued it at 0 and DR at its reward model's guess, with
    # intervals that hold only the policy's own noise: a champion worth 0.45 over
    # doing nothing read +2.42 [+1.92, +2.92] by IPS. No evidence, no figure.
    did_nothing = bool((data.action == NO_ACTION).any())
    for role, target in (("champion", champion_target), ("challenger", challenger_target)):
        if not did_nothing:
            break
        try:
            decision.vs_no_action[role] = _paired(
                config.estimator, data, q, target, nothing
            ).as_dict()
        except ValueError:
            continue  # SNIPS without a single no-action decision: reported as missing
    if decision.agreement == 1.0:
        # Both values are then the same numbers and their difference is 0 by
        # construction, not an estimate: no difference, no interval (decision.json,
        # the run's metrics and its plot have none), and the reason says why.
        why = (
            "a challenger retrained without new feedback repeats the champion"
            if judged == CHALLENGER
            else "a version trained on the champion's data repeats it"
        )
        decision.reasons.append(
            f"{the} and the champion choose the same action on every one of the "
            f"{n:,} evaluated decisions: there is nothing to compare ({why})"
        )
        return decision
    diff = _paired(config.estimator, data, q, challenger_target, champion_target)
    decision.difference = diff.as_dict()
    if not enough:
        decision.difference_not_decided_on = (
            f"below min_decisions: {n:,} decisions, the gate needs {config.min_decisions:,}"
        )
        said = _difference_said(diff, data, judged)
        if config.criterion == "lower_bound":
            said += _against_zero(diff)
        decision.reasons.append(f"not decided on, below min_decisions: {said}")
        _say_more_evidence(decision, diff, config)
        return decision
    ess = challenger[config.estimator].effective_n
    ok = True
    if ess < config.min_effective_n:
        ok = False
        decision.reasons.append(
            f"{judged}'s effective sample size {ess:.0f} is below {config.min_effective_n:.0f}: "
            "the logged exploration covers too little of what it would do"
        )
    differing = ope.disagreement(
        data.action, data.pscore, challenger_target, champion_target, data.group
    )
    if differing.effective_n < config.min_differing_effective_n:
        ok = False
        decision.reasons.append(_differing_said(differing, data, config, judged))
    value_ch = challenger[config.estimator].value
    value_c = champion[config.estimator].value
    if config.criterion == "lower_bound":
        ok = ok and bool(diff.ci_low > 0)
        decision.reasons.append(_difference_said(diff, data, judged) + _against_zero(diff))
        _say_more_evidence(decision, diff, config)
    else:
        needed = value_c + config.margin * abs(value_c)
        ok = ok and value_ch >= needed
        threshold = (
            f"champion {value_c:.4f} + margin {config.margin:g} x |champion| = {needed:.4f}"
            if config.margin
            else f"champion {value_c:.4f} (margin 0)"
        )
        decision.reasons.append(
            f"{judged} {value_ch:.4f} {'>=' if value_ch >= needed else '<'} {threshold}"
        )
    decision.passed = ok
    return decision


def _difference_said(diff: ope.PolicyValue, data: LoggedBandit, judged: str) -> str:
    """The paired difference and its interval, as the reasons give it: "challenger -
    champion = +0.2179 per decision, 95% CI [-0.0097, +0.4455] (Student's t ...)"."""
    return (
        f"{judged} - champion = {diff.value:+.4f} per decision, 95% CI "
        f"[{diff.ci_low:+.4f}, {diff.ci_high:+.4f}] ({_critical_said(diff, data, judged)})"
    )


def _against_zero(diff: ope.PolicyValue) -> str:
    """What the lower-bound criterion reads in :func:`_difference_said`'s interval, to
    follow it: " lies above zero", or " does not lie above zero (on this evidence a true
    gain of 0.3181 per decision would pass 80% of the time)"."""
    if diff.ci_low > 0:
        return " lies above zero"
    detectable = _detectable(diff)
    if not np.isfinite(detectable):
        return ": no gain can be confirmed on it"
    return (
        f" does not lie above zero (on this evidence a true gain of {detectable:.4f} "
        "per decision would pass 80% of the time)"
    )


def _say_more_evidence(decision: GateDecision, diff: ope.PolicyValue, config: GateConfig) -> None:
    """Add to ``decision``'s reasons, when the lower-bound criterion does not confirm
    ``diff``, how many evaluated decisions would: ``n x (detectable / observed)^2``
    (:func:`_detectable`), the decisions at which a true gain equal to the observed
    difference passes 80% of the time, if each decision varies as much as these (the
    error shrinks as one over the square root of the decisions, the HCPs growing with
    them: more decisions of the same few HCPs shrink a clustered error less).
    Nothing when there is no interval, or the criterion is the margin."""
    if config.criterion != "lower_bound" or diff.ci_low > 0:
        return
    detectable = _detectable(diff)
    if not np.isfinite(detectable):
        return
    n = decision.n_decisions
    if diff.value <= 0:
        decision.reasons.append(
            f"more evidence: the observed difference, {diff.value:+.4f} per decision, is "
            "no gain; more decisions like these would confirm none"
        )
        return
    needed = max(n * (detectable / diff.value) ** 2, float(config.min_decisions))
    # Served from now on, after both versions' cut-offs, every decision is the gate's
    # (served_since), reserved or not.
    decision.reasons.append(
        f"more evidence: a true gain of the observed {diff.value:+.4f} per decision would "
        f"pass 80% of the time on about {_about(needed)} evaluated decisions, "
        f"{_times(needed / n)} the {n:,} here: about {_about(needed - n)} more with an "
        "outcome, served from now on (neither version learned from them: each counts), "
        "assuming the same variance per decision (its error shrinking as 1 / "
        "sqrt(decisions), the HCPs growing with them)"
    )


def _about(count: float) -> str:
    """``count`` to two significant digits, whole: "370,000", "1,500", "48"."""
    return f"{float(f'{count:.2g}'):,.0f}"


def _times(ratio: float) -> str:
    """A multiple as said: "1.4 times", "26 times", "1,100 times"."""
    return f"{ratio:.1f} times" if ratio < 10 else f"{_about(ratio)} times"


def _the(judged: str) -> str:
    """``judged`` (:func:`judged_as`) as a sentence's subject: "the challenger", "version 3"."""
    return f"the {judged}" if judged == CHALLENGER else judged


def _the_version(judged: str, version: str) -> str:
    """The version judged (``judged``: :func:`judged_as`) named with its number, as a
    sentence's subject: "the challenger, version 3," when the alias names it, else
    "version 3" (one ``--version`` named that the alias does not)."""
    return f"the {CHALLENGER}, version {version}," if judged == CHALLENGER else judged


def judged_as(settings: Settings, version: str | None) -> str:
    """What the gate calls the version it judges against the champion: "challenger"
    when it is the one alias ``challenger`` names (``version`` None: that one), else
    "version N" (``--version`` naming one the alias does not: one rolled back)."""
    if version is None:
        return CHALLENGER
    try:
        aliased = registry.alias_version(settings, CHALLENGER)
    except registry.RegistryError:
        aliased = None  # the gate itself says what is wrong with the registry
    return _called(str(version), aliased)


def _called(version: str, aliased: str | None) -> str:
    """:func:`judged_as` of ``version``, the challenger alias naming ``aliased``."""
    return CHALLENGER if aliased == version else f"version {version}"


def _differing_said(
    differing: ope.Disagreement, data: LoggedBandit, config: GateConfig, judged: str = CHALLENGER
) -> str:
    """Why the decisions where the two differ are too few to judge the difference on."""
    the = _the(judged)
    where = f"{differing.decisions:,} decision{'s' if differing.decisions != 1 else ''}"
    if data.group is not None:
        where += f" of {differing.groups:,} HCP{'s' if differing.groups != 1 else ''}"
    return (
        f"{the} differs from the champion on only {where}, where the logged "
        f"exploration tried {the}'s choice with an effective sample size of "
        f"{differing.target_effective_n:.0f} and the champion's with "
        f"{differing.baseline_effective_n:.0f}: the gate needs at least "
        f"{config.min_differing_effective_n:g} of each (min_differing_effective_n)"
    )


def _critical_said(diff: ope.PolicyValue, data: LoggedBandit, judged: str = CHALLENGER) -> str:
    """Which critical value ``diff``'s interval took, and why: "Student's t on 11
    degrees of freedom, the 12 HCPs less one", or, when its error rests on the HCPs
    where the two policies choose differently (:func:`nextbest.evaluation.ope.difference`),
    "..., the 8 of 2,000 HCPs where the challenger and the champion choose
    differently, less one"."""
    units = "decisions" if data.group is None else "HCPs"
    total = len(data.action) if data.group is None else len(np.unique(data.group))
    if diff.dof < 1:  # one unit: its error cannot be estimated
        if total < 2:
            return f"no interval: every decision is of one {units[:-1]}, an error needs two"
        # The gate has returned before when they choose differently nowhere.
        of_one = "on one decision" if data.group is None else "on the decisions of one HCP"
        return (
            f"no interval: {_the(judged)} and the champion choose differently {of_one} "
            f"of {total:,} only, an error needs two"
        )
    # "on 1 degree of freedom", as a reader says it.
    on = f"Student's t on {diff.dof:,.0f} degree{'' if diff.dof == 1 else 's'} of freedom"
    if diff.dof + 1 < total:
        return (
            f"{on}, the {diff.dof + 1:,.0f} of {total:,} {units} where {_the(judged)} and "
            "the champion choose differently, less one"
        )
    return f"{on}, the {diff.dof + 1:,.0f} {units} less one"


def _detectable(diff: ope.PolicyValue, power: float = 0.8) -> float:
    """The true difference the lower-bound criterion passes with probability ``power``.

    With standard error ``se`` on ``dof`` degrees of freedom the estimate passes when
    it exceeds ``t_0.975 se``, so a true difference ``(t_0.975 + t_power) se`` passes
    with probability about ``power`` (Student's t's quantiles on those degrees of
    freedom, as the interval's: ``(1.96 + 0.84) se`` with many HCPs, ``(2.20 + 0.88)
    se`` with 12). Infinite when the interval is (evidence from one HCP).
    """
    critical = ope.critical_value(diff.dof)
    if not np.isfinite(critical) or not np.isfinite(diff.ci_high - diff.ci_low):
        return float("inf")
    se = (diff.ci_high - diff.ci_low) / (2 * critical)
    return float((critical + ope.critical_value(diff.dof, 1.0 - power)) * se)


def _paired(
    estimator: str, data: LoggedBandit, q: RewardModel, target: np.ndarray, baseline: np.ndarray
) -> ope.PolicyValue:
    """``target`` minus ``baseline`` on the same decisions, paired, cluster-robust."""
    return ope.difference(
        estimator,
        data.action,
        data.reward,
        data.pscore,
        target,
        baseline,
        q_target=q(target),
        q_baseline=q(baseline),
        q_logged=q(data.action),
        groups=data.group,
    )


@dataclass
class Evaluation:
    """One run of the gate on the registry's champion and challenger."""

    champion_version: str
    challenger_version: str
    decision: GateDecision
    run_id: str | None = None
    promoted: bool = False
    served_by: dict[str, int] = field(default_factory=dict)
    unresolved_holdout: int = 0
    # Why the champion could not be loaded, when a forced promotion replaced it unvalued.
    champion_unloadable: str | None = None
    # A decision killed after the champion moved, finished before this one was made.
    finished: registry.UnfinishedDecision | None = None
    # What the reasons call the challenger (:func:`judged_as`): "version 3" for one
    # --version named that alias challenger does not.
    judged: str = CHALLENGER
    # The contacts since the cut-offs the two were replayed with, their history moved
    # on to each day a decision was served (NEXTBEST_FRESH_HISTORY, as the server
    # served them); None: replayed with their snapshots' history.
    history_contacts: int | None = None
    # The decisions a challenger share's random split chose the answering version of,
    # valued with both versions' probabilities of their action (split_probability).
    split_mixed: int = 0
    # The evaluated decisions outside the reserved share, served since both versions'
    # cut-offs (served_since): neither was trained on them.
    unseen: int = 0


def action_space(
    models: Sequence[ScoringModel],
    decisions: pd.DataFrame,
    load_model: Callable[[str], ScoringModel | None] | None = None,
) -> tuple[pd.Index, np.ndarray]:
    """Every action the evaluation names, and its cost: the actions of ``models``'
    catalogs (the first that lists one gives its cost), then those logged decisions
    served that none of them lists (content retired since), each costed by the
    catalog of a version that served it (``load_model``; 0 when none that served
    it can be loaded: neither policy can choose such an action, so its cost enters only the
    reward model's fit on those decisions).

    A challenger retrained on a catalog with new content, or a champion trained
    after content was retired, names actions the other's catalog lacks.
    """
    costs: dict[str, float] = {}
    unpriced: set[str] = set()
    for model in models:
        for action_id, cost in zip(
            model.catalog["action_id"].astype(str), model.action_cost, strict=True
        ):
            costs.setdefault(action_id, float(cost))
    served = decisions.loc[decisions["action_id"].notna(), ["action_id", "model_version"]]
    served = served.astype(str).drop_duplicates()
    for action_id, version in served.itertuples(index=False):
        if action_id in costs and action_id not in unpriced:
            continue
        costs.setdefault(action_id, 0.0)
        unpriced.add(action_id)  # until a version that served it is loaded and lists it
        serving = load_model(version) if load_model is not None else None
        if serving is not None:
            listed = serving.catalog["action_id"].astype(str).to_numpy() == action_id
            if listed.any():
                costs[action_id] = float(serving.action_cost[np.argmax(listed)])
                unpriced.discard(action_id)
    return pd.Index(list(costs), dtype=object), np.array(list(costs.values()), dtype=np.float64)


def bandit_from_decisions(
    decisions: pd.DataFrame,
    *,
    champion: ScoringModel,
    greedy_empty: np.ndarray,
    space: tuple[pd.Index, np.ndarray] | None = None,
) -> LoggedBandit:
    """Logged decisions (served by any version) as a :class:`LoggedBandit`.

    ``champion`` gives the HCP baselines, and the action vocabulary and costs unless
    ``space`` (:func:`action_space`) gives them; ``greedy_empty`` ``(n,)`` says
    whether the serving model's greedy list was empty
    (:func:`~nextbest.loop.evidence.serving_greedy_empty`), for the holdout answers
    logged without their probability of no action.
    """
    vocabulary, cost = (
        space
        if space is not None
        else (pd.Index(champion.catalog["action_id"].astype(str)), champion.action_cost)
    )
    action = action_codes(decisions["action_id"], vocabulary)
    p_none = no_action_probability(decisions, greedy_empty)
    pscore = np.where(
        action == NO_ACTION, p_none, decisions["propensity"].to_numpy(dtype=np.float64)
    )
    return LoggedBandit(
        action=action,
        outcome=decisions["outcome"].to_numpy(dtype=np.float64),
        pscore=np.clip(pscore, 1e-12, 1.0),
        cost=cost,
        baseline=history_baseline(champion, decisions["hcp_id"]),
        group=decisions["hcp_id"].astype(str).to_numpy(),
    )


def served_since(decisions: pd.DataFrame, models: Sequence[ScoringModel]) -> np.ndarray:
    """``(n,)`` bool: the logged ``decisions`` served at or after every one of
    ``models``' cut-offs (:attr:`~nextbest.learning.scoring.ScoringModel.as_of`).

    A version learns from the interactions before its cut-off only, and a logged
    decision joins retraining at the time it was served, so none of ``models``
    learned from these: they are fair evidence for judging them, reserved for the
    gate or not. (The next retrain learns from those not reserved: a later
    challenger, whose cut-off is after them, is judged on their reserved share
    only.)"""
    if not len(decisions) or not models:
        return np.zeros(len(decisions), dtype=bool)
    cut_off = max(utc_timestamp(m.as_of) for m in models)
    served = pd.to_datetime(decisions["timestamp"], utc=True)
    return (served >= cut_off).to_numpy(dtype=bool)


def history_baseline(model: ScoringModel, hcp_ids: pd.Series) -> np.ndarray | None:
    """Each HCP's mean outcome in the model's history snapshot (NaN if unknown).

    None when the model's features carry no such column.
    """
    names = list(model.space.history_feature_names)
    if BASELINE_FEATURE not in names:
        return None
    rows = model.hcp_index.get_indexer(list(hcp_ids))
    values = model.hcp_history[np.where(rows >= 0, rows, 0), names.index(BASELINE_FEATURE)]
    return np.where(rows >= 0, values, np.nan).astype(np.float64)


@dataclass(frozen=True)
class Judging:
    """The versions a gate compares, as the registry's aliases named them when read
    (:func:`versions_judged`): read once per command and passed on, so that what it
    says it judges is what it judges, and a remote registry is asked once."""

    champion: str
    challenger: str
    # What the gate calls the challenger (:func:`judged_as`).
    judged: str = CHALLENGER


def versions_judged(settings: Settings, version: str | None = None) -> Judging:
    """The champion's version and the one the gate judges against it: the challenger
    alias's, or ``version`` (``--version``), and what the gate calls that one.

    Raises:
        GateError: no champion, no challenger (or no such version), or the challenger
            is the champion itself: nothing to compare.
    """
    champion_version = registry.alias_version(settings, CHAMPION)
    if champion_version is None:
        raise _no_champion(settings, "; train one with `nextbest train --data DIR`")
    aliased = registry.alias_version(settings, CHALLENGER)
    if version is not None:
        challenger_version = _registered(settings, version)
        if challenger_version == champion_version:
            raise GateError(
                f"version {challenger_version} of model '{settings.model_name}' is the "
                "champion already: nothing to compare (`nextbest models` lists the versions)"
            )
        return Judging(champion_version, challenger_version, _called(challenger_version, aliased))
    if aliased is None:
        raise GateError(
            f"model '{settings.model_name}' has no '{CHALLENGER}' version; "
            "train one with `nextbest retrain --data DIR`, or name a registered version "
            "with --version (`nextbest models` lists them)"
        )
    elif aliased == champion_version:
        raise GateError(
            f"the '{CHALLENGER}' alias of model '{settings.model_name}' names the champion "
            f"itself (version {champion_version}): nothing to compare; train a new challenger "
            "with `nextbest retrain --data DIR`"
        )
    return Judging(champion_version, aliased)


def evaluate(
    settings: Settings,
    *,
    config: GateConfig,
    since: datetime | None = None,
    log: bool = True,
    version: str | None = None,
    runs_deleted: bool = False,
    judging: Judging | None = None,
) -> Evaluation:
    """Evaluate the registry's challenger against its champion on the logged decisions.

    Every logged decision with an outcome (at or after ``since``) in the reserved
    share counts, whichever version served it. ``version``: a registered version
    to evaluate as the challenger instead of the one alias ``challenger`` names (a
    version rolled back, an earlier one); no alias changes. ``judging``: the two
    versions as the caller read them (:func:`versions_judged` of ``version``), to
    judge those rather than read the aliases again; None: read here. With
    ``fresh_history`` on, both are replayed with their history moved on to each day a
    decision was served by the store's contacts (:func:`replay_contacts`; how many in
    the result's ``history_contacts``).

    ``log``: record the verdict (an MLflow run of the evaluation experiment and the
    challenger's ``gate`` tag) as a promotion records its own: not in a tracking
    store other than the one the two were trained in (:func:`check_tracking_store`,
    checked first; ``runs_deleted``), and holding the decision lock while it writes
    (not while it evaluates), once the champion is seen still the one it judged
    against. Without it, nothing is written, and neither is needed.

    Raises:
        ChampionUnloadableError: the champion's model cannot be loaded (the challenger's can).
        GateError: no champion or challenger (no such version), or no logged decision
            with an outcome; with ``log``, the tracking store is not the one the
            versions were trained in, another process held the decision lock as long
            as this one waits (``NEXTBEST_DECISION_WAIT_S``), or another decision
            moved the champion while it evaluated: nothing is written.
    """
    if log:  # before the registry is read through MLflow: that opens the tracking store
        check_tracking_store(settings, "evaluation", version=version, runs_deleted=runs_deleted)
    if judging is None:
        judging = versions_judged(settings, version)
    champion_version, challenger_version = judging.champion, judging.challenger
    judged = judging.judged
    check_evaluation_share(
        settings,
        config,
        {CHAMPION: champion_version, CHALLENGER: challenger_version},
        judged=judged,
    )
    champion, why = _loaded(settings, champion_version)
    if champion is None:
        raise _champion_unloadable(
            settings, champion_version, challenger_version, why or "", judged=judged
        )
    challenger = registry.load_version(settings, challenger_version)
    with store_session(settings.resolved_database_url) as session:
        decisions = load_decisions(session, since=since)
    logged = len(decisions)
    unseen = 0
    if config.evaluation_share > 0:
        reserved = reserved_for_gate(decisions["recommendation_id"], config.evaluation_share)
        # Served since both versions' cut-offs: neither learned from them (a version
        # learns from nothing at or after its cut-off), reserved or not.
        after = served_since(decisions, [champion, challenger])
        unseen = int((after & ~reserved).sum())
        decisions = decisions[reserved | after].reset_index(drop=True)
    if not len(decisions):
        store = without_password(settings.resolved_database_url)
        if logged:
            cut_off = max(utc_timestamp(m.as_of) for m in (champion, challenger))
            why = (
                f"none of the {logged} logged decisions with an outcome in {store} falls in "
                f"the share reserved for the gate (evaluation_share {config.evaluation_share:g})"
                f" or was served since both versions' cut-offs ({_moment(cut_off)}), which "
                "neither learned from: collect more outcome feedback, then evaluate"
            )
        elif since is not None:
            why = (
                f"no logged decisions with an outcome since {_moment(since)} in {store} "
                "(--since): choose an earlier date, or collect more outcome feedback"
            )
        else:
            why = (
                f"no logged decisions have an outcome yet in {store}: "
                "serve, collect outcome feedback, then evaluate"
            )
        raise NoEvidenceError(
            why, champion_version=champion_version, challenger_version=challenger_version
        )
    judged_models = {champion_version: champion, challenger_version: challenger}
    load_model = version_loader(settings, judged_models)
    # The other versions the random splits of a challenger share could have chosen
    # (earlier challengers, an earlier champion): replayed as well, from their cut-offs.
    split_models = [
        m for v in split_versions(decisions) if v not in judged_models and (m := load_model(v))
    ]
    contacts = replay_contacts(
        settings, [champion, challenger, *split_models], decisions, load_model
    )
    greedy_empty, unresolved = serving_greedy_empty(decisions, load_model, contacts)
    champion_actions = greedy_actions(champion, decisions, contacts)
    challenger_actions = greedy_actions(challenger, decisions, contacts)
    space = action_space([champion, challenger], decisions, load_model)
    data = bandit_from_decisions(
        decisions, champion=champion, greedy_empty=greedy_empty, space=space
    )
    vocabulary = space[0]
    champion_target = action_codes(champion_actions, vocabulary)
    challenger_target = action_codes(challenger_actions, vocabulary)
    targets = {champion_version: champion_target, challenger_version: challenger_target}

    def greedy_of(version: str, rows: np.ndarray) -> tuple[np.ndarray, pd.Index] | None:
        model = load_model(version)
        if model is None:
            return None
        if version in targets:
            greedy = targets[version][rows]
        else:
            chosen = greedy_actions(model, decisions.iloc[rows], contacts)
            greedy = action_codes(chosen, vocabulary, unlisted=NO_ACTION - 1)
        return greedy, pd.Index(model.catalog["action_id"].astype(str))

    split = split_probability(decisions, data.action, data.pscore, vocabulary, greedy_of)
    data = replace(data, pscore=split.pscore)
    decision = decide(
        data,
        champion_target=champion_target,
        challenger_target=challenger_target,
        config=config,
        judged=judged,
    )
    if (unlogged := _never_logged_first(challenger_actions, decisions, judged)) is not None:
        decision.reasons.append(unlogged)
    versions = (champion_version, challenger_version)
    decision.reasons += _hcps_one_knows(champion, challenger, versions, decisions, judged=judged)
    served_by = decisions["model_version"].astype(str).value_counts().sort_index()
    evaluation = Evaluation(
        champion_version,
        challenger_version,
        decision,
        served_by={str(k): int(v) for k, v in served_by.items()},
        unresolved_holdout=unresolved,
        judged=judged,
        history_contacts=None if contacts is None else len(contacts),
        split_mixed=split.mixed,
        unseen=unseen,
    )
    if split.unmixed:
        decision.reasons.append(
            f"{split.unmixed} decisions a challenger share's random split chose the answering "
            "version of name another version that could not be loaded: they are valued with "
            "the answering version's probabilities alone"
        )
    if unresolved:
        decision.reasons.append(
            f"{unresolved} holdout answers, logged without their probability of no action "
            "(before schema revision 0004), were served by versions that could not be "
            "loaded: their probability of no action is taken as the holdout rate (a lower "
            "bound)"
        )
    if log:
        with _deciding_alone(settings, "evaluation"):
            # Judged against a champion a decision replaced meanwhile, the verdict would
            # be recorded against the new one (and tag a version promoted meanwhile).
            now = registry.alias_version(settings, CHAMPION)
            if now != champion_version:
                raise GateError(
                    f"the champion of model '{settings.model_name}' moved from version "
                    f"{champion_version} to {'version ' + now if now else 'none'} while the "
                    f"gate judged {_the(judged)} against it (a promotion or rollback "
                    "decided meanwhile): this verdict was not recorded; evaluate again"
                )
            evaluation.run_id = _log_evaluation(settings, evaluation, config, promoted=False)
    return evaluation


def _moment(when: datetime) -> str:
    """'2026-12-01' for a day's start, '2026-12-02T03:37:00+00:00' for a time within one."""
    if (when.hour, when.minute, when.second, when.microsecond) == (0, 0, 0, 0):
        return f"{when:%Y-%m-%d}"
    return when.isoformat()


def check_evaluation_share(
    settings: Settings, config: GateConfig, versions: dict[str, str], *, judged: str = CHALLENGER
) -> None:
    """Refuse evidence a version was trained on: ``config.evaluation_share`` must not
    reach past the share each retrained version left out of its training.

    ``versions``: role -> version. The reserved decisions of a share are those whose
    hash falls below it, so a smaller share is a subset of a larger one and is
    sound (it only uses less evidence); a larger one, or 0 (every decision), takes
    in decisions the version learned from. A version retrained with share 0 learned
    from every logged decision: no share leaves it any evidence. Versions without
    the tag (from ``nextbest train``, or retrained before it was recorded) are not
    checked. ``judged``: what the errors call the challenger (:func:`judged_as`).

    Raises:
        NoEvidenceError: a version was retrained with share 0 (``promote --force``
            may still promote).
        GateError: naming the version, the share it was retrained with and the way out.
    """
    client = registry.client(settings)
    wanted = config.evaluation_share
    named = judged != CHALLENGER  # --version N: a retrain makes another version
    for role, version in versions.items():
        recorded = client.get_model_version(settings.model_name, version).tags.get(SHARE_TAG)
        if recorded is None:
            continue
        used = float(recorded)
        who = (
            _the_version(judged, version)
            if role == CHALLENGER
            else f"the {role}, version {version},"
        )
        retrained = role == CHALLENGER and not named  # a new challenger is the way out
        if used == 0:
            # Evaluated with share 0 too, it used to pass this check and be judged on
            # the very outcomes it was fitted to.
            raise NoEvidenceError(
                f"{who} was retrained with evaluation_share 0: it "
                "was trained on every logged decision with an outcome, so none is left to "
                "judge it by: "
                + (
                    "retrain with --gate naming a gate config whose evaluation_share is "
                    "above 0, or "
                    if retrained
                    else ""
                )
                + "promote "
                + (f"--version {versions[CHALLENGER]} " if named else "")
                + "--force --reason TEXT (it skips the gate)",
                champion_version=versions.get(CHAMPION, ""),
                challenger_version=versions.get(CHALLENGER, ""),
            )
        if wanted == used or 0 < wanted < used:
            continue
        evidence = wanted if wanted > 0 else 1.0  # 0: every logged decision
        trained_on = (evidence - used) / evidence
        raise GateError(
            f"the gate config's evaluation_share is {wanted:g} but {who} was retrained with "
            f"evaluation_share {used:g}: it was trained on about {trained_on:.0%} of the "
            f"decisions it would be evaluated on. Evaluate with evaluation_share {used:g} "
            "(or less) in the gate config (--config)"
            + (", or retrain with --gate naming this one" if retrained else "")
        )


@_one_at_a_time("promotion")
def promote(
    settings: Settings,
    *,
    config: GateConfig,
    since: datetime | None = None,
    force: bool = False,
    reason: str | None = None,
    version: str | None = None,
    runs_deleted: bool = False,
    judging: Judging | None = None,
) -> Evaluation:
    """Evaluate, and move ``champion`` to the challenger if the gate passes (or ``force``).

    ``version``: a registered version to judge and promote instead of the one
    alias ``challenger`` names (a version rolled back, an earlier one), by the same
    gate; the ``challenger`` alias then stays where it is. ``judging``: the versions
    as the caller read them (:func:`versions_judged`), holding the decision lock
    (:func:`nextbest.registry.deciding_alone`) after any unfinished decision was
    finished, as this would read them; None: read here.

    The old champion keeps alias ``previous_champion`` and stays in the
    ``champion_history`` tag, so ``rollback`` can restore it; the promoted version
    loses alias ``challenger``. Serving processes pick
    the new champion up on their next reload (``POST /v1/admin/reload`` or polling).
    A decision killed after the champion moved is finished first
    (:func:`nextbest.registry.finish_unfinished`, ``Evaluation.finished``).
    ``reason`` (why, for the record) is a tag of the decision's run; a forced
    promotion must give one. Forced, the challenger replaces a champion without
    evidence to judge them by, or one whose model cannot be loaded (why is recorded:
    the run's ``champion_unloadable`` tag and its reasons). Forced or not, it is
    not recorded in a tracking store other than the one the champion and the
    challenger were trained in (:func:`check_tracking_store`; ``runs_deleted``).

    Raises:
        GateError: ``force`` without a ``reason`` (nothing is evaluated or moved), the
            gate cannot be evaluated (without ``force``), or, forced, the challenger
            cannot be loaded; or another process on this host is at work on a
            decision, or held the decision lock as long as this one waits
            (``NEXTBEST_DECISION_WAIT_S``): nothing is evaluated or moved; or the
            tracking store is not the one the versions were trained in (nothing is
            written).
    """
    reason = (reason or "").strip() or None
    if force and reason is None:
        raise GateError(
            "a forced promotion needs a reason (--reason TEXT): it skips the gate, and "
            "its record must say why; nothing was promoted"
        )
    if not registry.registry_exists(settings):  # nothing to decide; no empty store made
        raise _no_champion(settings, "; train one with `nextbest train --data DIR`")
    check_tracking_store(settings, "promotion", version=version, runs_deleted=runs_deleted)
    _evaluation_experiment(settings)  # a decision that cannot be logged is not made
    # A decision killed after the champion moved is finished first: this one starts
    # from the registry it left (a promoted challenger no longer named challenger).
    finished = _finish_unfinished(settings)
    # A mark left by a decision killed before the champion moved goes (one the store
    # refuses to take off stays, read as not made: the champion is not its version).
    with contextlib.suppress(registry.RegistryError):
        registry.take_off_not_made(settings)
    try:
        evaluation = evaluate(
            settings, config=config, since=since, log=False, version=version, judging=judging
        )
    except (NoEvidenceError, ChampionUnloadableError) as exc:
        if not force:
            raise
        evaluation = _unevaluated(settings, config, exc, named=version is not None)
    promote_it = evaluation.decision.passed or force
    if force and not evaluation.decision.passed:
        evaluation.decision.reasons.append("promoted anyway: --force")

    evaluation.finished = finished
    new, old = evaluation.challenger_version, evaluation.champion_version
    before = _history_before(settings, old)
    end = registry.DecisionEnd(
        kind="promotion",
        champion=new,
        replaces=old,
        history=tuple(before if before and before[-1] == new else [*before, new]),
        aliases={PREVIOUS_CHAMPION: old} if old != new else {},
        # Promoted, it is no longer a challenger: the next evaluation waits for a new one
        # rather than comparing the champion with itself.
        released=(CHALLENGER,),
        version_tags={
            new: {
                "promoted_at": datetime.now(UTC).isoformat(),
                PROMOTION_TAG: "gate passed" if evaluation.decision.passed else "forced",
            }
        },
    )
    try:
        evaluation.run_id = _log_evaluation(
            settings,
            evaluation,
            config,
            promoted=promote_it,
            reason=reason,
            move=(lambda: _set_champion(settings, new, before)) if promote_it else None,
            end=end,
        )
    except (registry.AliasNotMovedError, registry.DecisionUnfinishedError) as exc:
        raise GateError(str(exc)) from exc
    evaluation.promoted = promote_it
    return evaluation


def _unevaluated(
    settings: Settings,
    config: GateConfig,
    exc: NoEvidenceError | ChampionUnloadableError,
    *,
    named: bool = False,
) -> Evaluation:
    """The record of a forced promotion the gate could not evaluate: an operator's call
    (a champion that must go now, one that cannot even be loaded), made and logged as
    made without evidence.

    Raises:
        GateError: the challenger cannot be loaded either: promoted, it would leave
            the servers nothing to load.
    """
    champion_version, challenger_version = exc.champion_version, exc.challenger_version
    judged = judged_as(settings, challenger_version if named else None)
    challenger, why_not = _loaded(settings, challenger_version)
    if challenger is None:
        raise GateError(
            f"{_the_version(judged, challenger_version)} cannot be loaded, so it is not "
            f"promoted, forced or not (servers could not load it): {why_not}. The champion "
            f"stays version {champion_version}"
        )
    why: str | None
    reasons: list[str] = []
    if isinstance(exc, ChampionUnloadableError):
        champion, why = None, exc.why
    else:
        champion, why = _loaded(settings, champion_version)
        reasons.append(f"no evidence: {exc}")
    if champion is None:
        reasons.append(
            f"the champion, version {champion_version}, could not be evaluated: it cannot "
            f"be loaded: {why}"
        )
    else:  # compared when both load
        versions = (champion_version, challenger_version)
        reasons += _hcps_one_knows(champion, challenger, versions, judged=judged)
    return Evaluation(
        champion_version,
        challenger_version,
        GateDecision(passed=False, reasons=reasons, estimator=config.estimator, n_decisions=0),
        champion_unloadable=why if champion is None else None,
        judged=judged,
    )


def _registered(settings: Settings, version: str) -> str:
    """``version`` when model ``settings.model_name`` has it registered.

    Raises:
        GateError: it has no such version (deleted, never registered, not a number).
    """
    from mlflow.exceptions import MlflowException

    if not version.isdigit():
        raise GateError(f"--version {version}: a version is a number (`nextbest models`)")
    version = str(int(version))
    try:
        registry.client(settings).get_model_version(settings.model_name, version)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise GateError(
            f"model '{settings.model_name}' has no version {version} in "
            f"{without_password(settings.resolved_registry_uri)} (deleted, or never "
            "registered): `nextbest models` lists the versions there are"
        ) from None
    return version


def _champion_unloadable(
    settings: Settings,
    champion_version: str,
    challenger_version: str,
    why: str,
    *,
    judged: str = CHALLENGER,
) -> GateError:
    """The gate's error for a champion that cannot be loaded: a
    :class:`ChampionUnloadableError` saying how to replace it, or, when the challenger
    cannot be loaded either, a :class:`GateError` saying so (forcing would not help).
    ``judged``: what it calls the challenger (:func:`judged_as`)."""
    said = (
        f"the champion, version {champion_version}, cannot be loaded, so the gate cannot value it"
    )
    who = _the_version(judged, challenger_version)
    challenger, why_not = _loaded(settings, challenger_version)
    if challenger is None:
        return GateError(
            f"{said}: {why}; and {who} cannot be loaded either: {why_not}. `nextbest "
            "rollback` returns to an earlier champion that loads"
        )
    return ChampionUnloadableError(
        f"{said}: {why}. `nextbest promote "
        + (f"--version {challenger_version} " if judged != CHALLENGER else "")
        + f"--force --reason TEXT` replaces it with {who} without the gate (or `nextbest "
        "rollback` returns to the previous champion)",
        champion_version=champion_version,
        challenger_version=challenger_version,
        why=why,
    )


def _never_logged_first(
    target: np.ndarray, decisions: pd.DataFrame, judged: str = CHALLENGER
) -> str | None:
    """Said when the challenger would serve first an action no evaluated decision
    served first (a channel the champion could not score, content new since): how
    often, and which. Those decisions are valued by the reward model alone."""
    logged = set(decisions["action_id"].dropna().astype(str))
    unseen = pd.Series([a for a in target if a is not None and str(a) not in logged], dtype=object)
    if unseen.empty:
        return None
    counts = unseen.astype(str).value_counts()
    named = ", ".join(f"{a} ({n:,})" for a, n in counts.head(5).items())
    more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
    return (
        f"on {len(unseen):,} of the {len(target):,} evaluated decisions "
        f"({len(unseen) / len(target):.0%}) {_the(judged)} would serve first an action no "
        f"logged decision served first: {named}{more}; IPS and SNIPS give them no weight "
        "and DR values them by its reward model alone, so the estimates say little about "
        "them (serve them to a share first: a pilot, or exploration by a champion that "
        "scores them)"
    )


def unknown_after(current: ScoringModel, replacement: ScoringModel) -> list[str]:
    """The HCPs ``current`` knows (its ``hcps`` snapshot) that ``replacement`` does
    not, in ``current``'s order: served by ``replacement``, the API answers 404
    (unknown ``hcp_id``) for them."""
    missing = ~current.hcp_index.isin(replacement.hcp_index)
    return [str(h) for h in current.hcp_index[missing]]


def _first_named(hcp_ids: list[str]) -> str:
    """The first five of ``hcp_ids``, and how many more."""
    more = len(hcp_ids) - 5
    return ", ".join(hcp_ids[:5]) + (f" and {more:,} more" if more > 0 else "")


def _unknown_hcps_said(missing: list[str], known: int, *, who: str, whose: str) -> str:
    """``who`` does not know ``missing``, of the ``known`` HCPs ``whose`` knows."""
    return (
        f"{who} does not know {len(missing):,} of the {known:,} HCPs {whose} knows "
        f"({_first_named(missing)}): they were not in the hcps it was trained on, and once "
        "it is served the API answers 404 (unknown hcp_id) for them"
    )


def _hcps_one_knows(
    champion: ScoringModel,
    challenger: ScoringModel,
    versions: tuple[str, str],
    decisions: pd.DataFrame | None = None,
    *,
    judged: str = CHALLENGER,
) -> list[str]:
    """What the gate says of the HCPs only one of the two versions knows, with how many
    of the evaluated ``decisions`` are theirs:

    - those the challenger lacks (a retrain on a partial hcps export): the gate values
      their decisions as no action, and a server would refuse them once it is served;
    - those only the challenger knows (added to the hcps since the champion was
      trained): the champion answers them 404 until a version that knows them is
      served, unless the challenger answers them beside it
      (NEXTBEST_CHALLENGER_SHARE), and only then does the evidence hold their decisions.
    """

    def evaluated(hcp_ids: list[str]) -> int:
        if decisions is None or not len(decisions):
            return 0
        return int(decisions["hcp_id"].astype(str).isin(set(hcp_ids)).sum())

    notes = []
    if missing := unknown_after(champion, challenger):
        said = _unknown_hcps_said(
            missing,
            len(champion.hcp_index),
            who=_the_version(judged, versions[1]),
            whose=f"the champion, version {versions[0]},",
        )
        if n := evaluated(missing):
            said += f"; the gate valued their {n:,} evaluated decisions as no action"
        notes.append(said + "; retrain with them in hcps, or promote knowing it")
    if added := unknown_after(challenger, champion):
        said = (
            f"{_the_version(judged, versions[1])} knows {len(added):,} HCPs the champion, "
            f"version {versions[0]}, lacks ({_first_named(added)}): added to the hcps since "
            "the champion was trained, they get 404 (unknown hcp_id) from the API until a "
            "version that knows them is served, or the challenger answers them beside the "
            "champion (NEXTBEST_CHALLENGER_SHARE)"
        )
        n = evaluated(added)
        notes.append(
            said
            + (
                f"; {n:,} evaluated decisions are theirs, where the champion's choice is no action"
                if n
                else "; no evaluated decision is theirs, so the evidence says nothing of them"
            )
        )
    return notes


def already_promoted(settings: Settings) -> tuple[str, str] | None:
    """``(version, promoted_at)`` when there is nothing to promote because the last
    promotion is done: no challenger, and the champion, the newest version, was
    promoted (a retried ``promote`` after one that succeeded). None otherwise."""
    if registry.alias_version(settings, CHALLENGER) is not None:
        return None
    champion = registry.alias_version(settings, CHAMPION)
    if champion is None:
        return None
    mlflow_client = registry.client(settings)
    newest = max(
        int(v.version) for v in mlflow_client.search_model_versions(f"name='{settings.model_name}'")
    )
    promoted_at = mlflow_client.get_model_version(settings.model_name, champion).tags.get(
        "promoted_at"
    )
    if promoted_at is None or int(champion) != newest:
        return None
    return champion, promoted_at


# Kept in the registry, where `nextbest models` reads it without loading the gate.
champion_history = registry.champion_history


def _history_before(settings: Settings, old: str | None) -> list[str]:
    """``champion_history`` as a promotion from ``old`` writes it before the alias moves:
    with ``old`` last."""
    history = champion_history(settings)
    if old is not None and (not history or history[-1] != old):
        history.append(old)
    return history


def _set_champion(settings: Settings, new: str, history: list[str]) -> None:
    """Move ``champion`` to ``new``, keeping ``champion_history`` true to the alias
    should this stop at any step: ``history`` (:func:`_history_before`, the champion
    it replaces last) is written before the alias moves (a rollback that finds the
    champion last takes it off), ``new`` added after, with the rest of what the
    promotion leaves (its :class:`~nextbest.registry.DecisionEnd`)."""
    client = registry.client(settings)
    if history != champion_history(settings):
        client.set_registered_model_tag(settings.model_name, HISTORY_TAG, ",".join(history))
    client.set_registered_model_alias(settings.model_name, CHAMPION, new)


@dataclass(frozen=True)
class Rollback:
    from_version: str
    to_version: str
    run_id: str = ""  # the MLflow run that records it
    # Earlier champions passed over, newest first: (version, why it cannot be served).
    skipped: tuple[tuple[str, str], ...] = ()
    # What the operator should know of the version returned to (HCPs it does not know).
    notes: tuple[str, ...] = ()
    # A decision killed after the champion moved, finished first: when it was a
    # rollback, this is that rollback, finished, and no other is made.
    finished: registry.UnfinishedDecision | None = None


@_one_at_a_time("rollback")
def rollback(
    settings: Settings, *, reason: str | None = None, runs_deleted: bool = False
) -> Rollback:
    """Make the previous champion the champion again, recorded as an MLflow run of
    the evaluation experiment (``decision`` = ``rollback``, both versions, ``reason``)
    beside the promotions: the registered model's tags keep only the state.

    An earlier champion deleted from the registry, or whose model cannot be loaded
    (:func:`nextbest.registry.load_version`), is passed over for the one before it
    (``Rollback.skipped``, and the run's ``skipped`` tag): the alias never names a
    version the server cannot load. The run is written first, the alias moved last.

    A decision killed after the champion moved is finished first
    (``Rollback.finished``); when that was a rollback, it is the one returned and
    no other is made (a retried rollback does not go one champion further back).
    Nor is it recorded in a tracking store other than the one the champion and the
    previous champion were trained in (:func:`check_tracking_store`; ``runs_deleted``).

    Raises:
        GateError: there is no earlier champion to return to (or none that loads),
            the registry refused the alias move (the run is marked failed), or another
            process on this host is at work on a decision, or held the decision lock as
            long as this one waits (``NEXTBEST_DECISION_WAIT_S``): nothing is moved; or
            the tracking store is not the one the versions were trained in (nothing is
            written).
    """
    if not registry.registry_exists(settings):  # nothing to decide; no empty store made
        raise _no_champion(settings, ": nothing to roll back")
    check_tracking_store(settings, "rollback", runs_deleted=runs_deleted)
    _evaluation_experiment(settings)  # a decision that cannot be logged is not made
    finished = _finish_unfinished(settings)
    # A mark left by a decision killed before the champion moved goes (one the store
    # refuses to take off stays, read as not made: the champion is not its version).
    with contextlib.suppress(registry.RegistryError):
        registry.take_off_not_made(settings)
    if finished is not None and finished.end.kind == "rollback":
        # A rollback killed after the champion moved, run again (a retried job): it is
        # finished, not made twice, which would go one champion further back.
        return Rollback(
            from_version=finished.end.replaces or "",
            to_version=finished.end.champion,
            run_id=finished.end.run_id,
            finished=finished,
        )
    client = registry.client(settings)
    current = registry.alias_version(settings, CHAMPION)
    recorded = champion_history(settings)
    history = _earlier_champions(recorded, current)
    if not history and current is None:
        raise _no_champion(settings, ": nothing to roll back")
    if not history:
        raise GateError(
            f"model '{settings.model_name}' has no previous champion to roll back to "
            f"(current champion: {current}){_rolled_back_said(client, settings, current)}"
        )
    returned_to, skipped = _walk_back(settings, history)
    passed_over = "; ".join(f"version {v}: {why}" for v, why in skipped)
    if not history:
        raise GateError(
            f"model '{settings.model_name}' has no previous champion that can be served: "
            f"{passed_over}. Nothing was rolled back (current champion: {current}); "
            "register a version with `nextbest retrain` or `nextbest train`, then promote it"
        )
    target = history[-1]
    notes = (
        []
        if current is None or returned_to is None
        else _unknown_to_rollback(settings, current, target, returned_to)
    )

    def move() -> None:
        client.set_registered_model_tag(settings.model_name, HISTORY_TAG, ",".join(history))
        try:
            client.set_registered_model_alias(settings.model_name, CHAMPION, target)
        except BaseException:  # a store's refusal, or a signal (Ctrl-C, SIGTERM)
            # The champion did not move: neither does the list rollback walks back. (A
            # signal may come just after the store took the move: then it did.)
            try:
                moved = registry.alias_version(settings, CHAMPION) == target
            except registry.RegistryError:  # the store fails: it did not take the move
                moved = False
            if not moved:
                client.set_registered_model_tag(
                    settings.model_name, HISTORY_TAG, ",".join(recorded)
                )
            raise

    end = registry.DecisionEnd(
        kind="rollback",
        champion=target,
        replaces=current,
        history=tuple(history),
        aliases={PREVIOUS_CHAMPION: history[-2] if len(history) >= 2 else None},
        version_tags=(
            {current: {"rolled_back_at": datetime.now(UTC).isoformat()}}
            if current is not None
            else {}
        ),
    )

    mlflow = registry._mlflow(settings)
    try:
        with mlflow.start_run(
            experiment_id=_evaluation_experiment(settings),
            run_name=f"rollback v{current or '-'} -> v{target}",
        ) as run:
            run_id = str(run.info.run_id)
            mlflow.log_params({"from_version": current or "none", "to_version": target})
            mlflow.set_tags(
                {
                    "decision": "rollback",
                    "reason": reason or "not given",
                    registry.DECIDED_BY_TAG: registry.decided_by(),
                    # MLflow keeps at most 8000 characters of a tag's value.
                    **({"skipped": passed_over[:8000]} if skipped else {}),
                }
            )
            registry.move_recorded(
                settings,
                run_id,
                move,
                end=end,
                stays=f"the champion stays version {current or 'none'}",
            )
    except (registry.AliasNotMovedError, registry.DecisionUnfinishedError) as exc:
        raise GateError(str(exc)) from exc
    return Rollback(
        from_version=current or "",
        to_version=target,
        run_id=run_id,
        skipped=tuple(skipped),
        notes=tuple(notes),
        finished=finished,
    )


@_one_at_a_time("withdrawal")
def withdraw(settings: Settings, *, reason: str | None = None) -> str:
    """Take alias ``challenger`` off its version, which is returned: servers answering a
    share of HCPs with it (``NEXTBEST_CHALLENGER_SHARE``) answer every HCP with the
    champion from their next reload or alias poll, and ``evaluate`` / ``promote`` have
    no challenger until ``retrain`` registers one. The version stays registered (its
    logged answers are evidence still, and ``promote --version`` can judge it), tagged
    when and by whom it was withdrawn and why; tagged first, so a withdrawal stopped
    half-way leaves it the challenger, and running it again finishes it.

    Raises:
        GateError: no version has the alias, or another decision holds the model's lock.
    """
    version = registry.alias_version(settings, CHALLENGER)
    if version is None:
        raise GateError(
            f"no challenger to withdraw: {registry.no_alias_said(settings, CHALLENGER)}"
        )
    client = registry.client(settings)
    tags = {
        registry.WITHDRAWN_TAG: datetime.now(UTC).isoformat(),
        registry.WITHDRAWN_REASON_TAG: reason or "not given",
        registry.WITHDRAWN_BY_TAG: registry.decided_by(),
    }
    for key, value in tags.items():
        client.set_model_version_tag(settings.model_name, version, key, value)
    client.delete_registered_model_alias(settings.model_name, CHALLENGER)
    return version


def _rolled_back_said(mlflow_client: Any, settings: Settings, current: str | None) -> str:
    """How the version rolled back last (``rolled_back_at``), other than ``current``, is
    served again, for a refused rollback: a second rollback does not return to it, it
    goes further back. "" when no version was rolled back."""
    rolled = [
        v
        for v in mlflow_client.search_model_versions(f"name='{settings.model_name}'")
        if v.tags.get("rolled_back_at") and str(v.version) != current
    ]
    if not rolled:
        return ""
    last = max(rolled, key=lambda v: str(v.tags["rolled_back_at"]))
    at = str(last.tags["rolled_back_at"])[:16].replace("T", " ") + " UTC"
    return (
        f"; version {last.version}, rolled back {at}, "
        f"is served again by `nextbest promote --version {last.version}` (through the gate, "
        "or with --force --reason TEXT)"
    )


def _earlier_champions(history: Sequence[str], current: str | None) -> list[str]:
    """The champions a rollback returns through, oldest first: ``history`` (the
    ``champion_history`` tag) without ``current``, the champion, when it is last."""
    earlier = list(history)
    if current is not None and earlier and earlier[-1] == current:
        earlier.pop()
    return earlier


def _walk_back(
    settings: Settings, history: list[str]
) -> tuple[ScoringModel | None, list[tuple[str, str]]]:
    """Take off the end of ``history`` (:func:`_earlier_champions`) the champions that
    cannot be served (deleted, their model not loadable), until the last is one that
    loads: the version a rollback returns to. ``(its model, those passed over)``,
    newest first, each ``(version, why)``; ``(None, all of them)`` when none loads."""
    skipped: list[tuple[str, str]] = []
    while history:
        model, why = _loaded(settings, history[-1])
        if model is not None:
            return model, skipped
        skipped.append((history.pop(), why or ""))
    return None, skipped


def _unknown_to_rollback(
    settings: Settings, current: str, target: str, model: ScoringModel
) -> list[str]:
    """Said when ``target`` (its ``model``), the version rolled back to, does not know
    HCPs the ``current`` champion serves (added to hcps since it was trained); []
    when the champion cannot be loaded to compare."""
    champion, _ = _loaded(settings, current)
    missing = [] if champion is None else unknown_after(champion, model)
    if champion is None or not missing:
        return []
    said = _unknown_hcps_said(
        missing, len(champion.hcp_index), who=f"version {target}", whose=f"version {current}"
    )
    return [said + ", until a version that knows them is promoted"]


def _loaded(settings: Settings, version: str) -> tuple[ScoringModel | None, str | None]:
    """``(model, None)`` when ``version`` loads, else ``(None, why)``: why it cannot
    be served (deleted from the registry, its model not loadable)."""
    from mlflow.exceptions import MlflowException

    try:
        return registry.load_version(settings, version), None
    except registry.RegistryError as exc:
        return None, str(exc)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None, "deleted from the registry"


def check_tracking_store(
    settings: Settings,
    decision: Literal["promotion", "rollback", "evaluation"],
    *,
    version: str | None = None,
    runs_deleted: bool = False,
) -> None:
    """Refuse a ``decision`` the tracking store would record apart from the decisions
    before it: one that does not have the training runs of the versions it moves
    between, the champion and the challenger (``version`` instead, when given) or,
    for a rollback, the earlier champion it returns to (the newest that loads, as
    :func:`rollback` finds it: each one passed over is loaded, only when the tracking
    store is not the registry). Before anything is written, a decision
    killed earlier finished included; ``runs_deleted``: those runs were collected
    from this store on purpose (:func:`nextbest.registry.check_decision_store`).
    An ``evaluation`` records its verdict (:func:`evaluate` with ``log``) beside the
    decisions, and is checked as a promotion of the same versions is.

    Raises:
        GateError: naming both stores, the versions and what to do.
    """

    def involved() -> list[str | None]:
        champion = registry.alias_version(settings, CHAMPION)
        if decision == "rollback":  # the one it returns to, as rollback finds it
            history = _earlier_champions(champion_history(settings), champion)
            _walk_back(settings, history)
            return [champion, history[-1] if history else None]
        made = version if version is not None else registry.alias_version(settings, CHALLENGER)
        return [champion, made]

    try:
        registry.check_decision_store(
            settings,
            decision=decision,
            versions=involved,
            runs_deleted=runs_deleted,
        )
    except registry.DecisionStoreError as exc:
        raise GateError(str(exc)) from exc


def _finish_unfinished(settings: Settings) -> registry.UnfinishedDecision | None:
    """:func:`nextbest.registry.finish_unfinished`, a decision another process is at
    work on refused: two decisions at once would each move the champion and write
    what it leaves over the other's."""
    try:
        return registry.finish_unfinished(settings)
    except registry.DecisionInProgressError as exc:
        raise GateError(str(exc)) from exc


def _no_champion(settings: Settings, then: str) -> GateError:
    return GateError(
        f"model '{settings.model_name}' has no '{CHAMPION}' version in "
        f"{without_password(settings.resolved_registry_uri)}{then}"
    )


def _evaluation_experiment(settings: Settings) -> str:
    """The id of the experiment holding the gate's decisions (made if missing)."""
    return registry.experiment_id(settings, registry.DECISIONS_SUFFIX)


def _log_evaluation(
    settings: Settings,
    evaluation: Evaluation,
    config: GateConfig,
    *,
    promoted: bool,
    reason: str | None = None,
    move: Callable[[], None] | None = None,
    end: registry.DecisionEnd | None = None,
) -> str:
    """One MLflow run with the decision, the estimates and the gate config; then,
    the decision recorded, ``move`` (a promotion's move of ``champion``) and ``end``
    (what it leaves beside) within the run (:func:`nextbest.registry.move_recorded`).

    Raises:
        registry.AliasNotMovedError: ``move`` failed (the run is marked so).
    """
    mlflow = registry._mlflow(settings)
    decision = evaluation.decision
    with mlflow.start_run(experiment_id=_evaluation_experiment(settings)) as run:
        mlflow.log_params(
            {
                "champion_version": evaluation.champion_version,
                "challenger_version": evaluation.challenger_version,
                "evidence_served_by": json.dumps(evaluation.served_by),
                "replayed_history": "snapshots"
                if evaluation.history_contacts is None
                else f"moved each day served, by {evaluation.history_contacts} contacts",
                **config.as_params(),
            }
        )
        if Path(config.source).is_file():  # kept as read: it may be edited after the run
            mlflow.log_artifact(config.source, "config")
        metrics: dict[str, float] = {
            "n_decisions": float(decision.n_decisions),
            "split_mixed": float(evaluation.split_mixed),
            "unseen": float(evaluation.unseen),
            "agreement": decision.agreement,
            "passed": float(decision.passed),
            "promoted": float(promoted),
        }
        for role, estimates in (
            ("champion", decision.champion),
            ("challenger", decision.challenger),
        ):
            for estimator, values in estimates.items():
                for key in ("value", "ci_low", "ci_high", "effective_n"):
                    metrics[f"{role}.{estimator}.{key}"] = float(values[key])
        if decision.difference is not None:
            for key in ("value", "ci_low", "ci_high", "effective_n", "dof"):
                metrics[f"difference.{key}"] = float(decision.difference[key])
        for role, values in decision.vs_no_action.items():
            for key in ("value", "ci_low", "ci_high"):
                metrics[f"{role}.vs_no_action.{key}"] = float(values[key])
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.set_tags(
            {
                "decision": "promote" if promoted else "keep",
                "gate_passed": str(decision.passed),
                registry.DECIDED_BY_TAG: registry.decided_by(),
                **({"reason": reason} if reason else {}),
                # The difference.* metrics logged below min_decisions, not decided on.
                **(
                    {"difference_not_decided_on": decision.difference_not_decided_on}
                    if decision.difference_not_decided_on
                    else {}
                ),
                # MLflow keeps at most 8000 characters of a tag's value.
                **(
                    {"champion_unloadable": evaluation.champion_unloadable[:8000]}
                    if evaluation.champion_unloadable
                    else {}
                ),
            }
        )
        mlflow.log_text(decision.as_json(), "decision.json")
        if decision.n_decisions:  # a forced promotion without evidence has no plot
            mlflow.log_figure(
                gate_figure(
                    decision.as_dict(),
                    champion=evaluation.champion_version,
                    challenger=evaluation.challenger_version,
                    judged=evaluation.judged,
                ),
                "plots/gate.png",
            )
        run_id = str(run.info.run_id)
        verdict = "passed" if decision.passed else "failed"
        # The challenger's gate tag is written within the run: a promotion's with what
        # it leaves once the champion moved (so `nextbest models --repair` finishes it
        # after a kill), any other's before the run ends.
        gate_tag = {"gate": f"{verdict} vs v{evaluation.champion_version} (run {run_id})"}
        challenger = evaluation.challenger_version
        if move is not None and end is not None:
            tags = {**end.version_tags.get(challenger, {}), **gate_tag}
            registry.move_recorded(
                settings,
                run_id,
                move,
                end=replace(end, version_tags={**end.version_tags, challenger: tags}),
                stays=f"the champion stays version {evaluation.champion_version}",
            )
        else:
            registry.client(settings).set_model_version_tag(
                settings.model_name, challenger, "gate", gate_tag["gate"]
            )
    return run_id
