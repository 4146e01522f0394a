"""Picks for many HCPs at once (e-mail sends, whole files): vectorised by block."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nextbest.clock import Clock, utc_now
from nextbest.contract.schema import (
    REP_CHANNELS_FILTER,
    allowed_specialties,
    filter_channels,
    is_rep_channel,
    specialty_spelling,
)
from nextbest.errors import NotFoundError
from nextbest.learning.reasons import Lapse, explain
from nextbest.learning.scoring import ScoringModel, listed
from nextbest.policy.eligibility import EligibilityIndex
from nextbest.policy.ranking import top_k
from nextbest.policy.rules import HistoryRules, LiveHistory, ServingRules
from nextbest.service.recommend import (
    MAX_BATCH,
    Recommender,
    check_day,
    check_options,
    cutoff,
    decision_time,
    history_day,
    history_moved_to,
    lapses,
)
from nextbest.settings import Settings
from nextbest.signals import signals_held
from nextbest.yamlfile import near_hint, near_word

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

PICK_COLUMNS = [
    "hcp_id",
    "rank",
    "action_id",
    "channel",
    "content_id",
    "score",
    "expected_uplift",
    "p_engage",
    "reason",
]
# Pairs scored per LightGBM call: large enough to amortise the call, small
# enough to keep memory flat for any number of HCPs.
BLOCK_PAIRS = 400_000


@dataclass
class HistoryMove:
    """The history a picks run scored with (filled as the run goes): with
    ``fresh_history`` on (``NEXTBEST_FRESH_HISTORY``), the model's history moved on to
    ``day`` (00:00 UTC of the picks' day) by ``contacts`` contacts since its cut-off,
    ``engaged`` of them counted engaged (before it, within the engagement wait of the
    contact), as a server moving its history each day
    serves that day; ``day`` None: the
    history as the model has it. ``cannot``: why the setting could not move it (a
    model that cannot advance)."""

    day: datetime | None = None
    contacts: int = 0
    engaged: int = 0
    cannot: str | None = None


def history_for_picks(
    settings: Settings,
    model: ScoringModel,
    session: Session,
    *,
    decided: datetime,
    version: str,
    move: HistoryMove | None = None,
) -> ScoringModel:
    """``model`` as a server moving its history each day would serve the day of
    ``decided`` (a UTC decision time) with.

    With ``fresh_history`` on, its history moved on to that day's start (00:00 UTC)
    by every HCP's contacts since its cut-off that ``session``'s store holds
    (:meth:`~nextbest.learning.scoring.ScoringModel.advanced`); else, for a day not
    after the one its history is as of, or for a model that cannot advance, ``model``
    itself. ``move``, when given, gets what was done (``version``: ``model``'s, named
    in why it could not move).
    """
    if not settings.fresh_history:
        return model
    if not model.advances:
        if move is not None:
            move.cannot = (
                f"model version {version}'s artifact does not keep its snapshot's recent "
                "touches (trained before they were kept), so its history cannot move on: "
                "the picks use its cut-off's history; retrain it to move it"
            )
        return model
    day = pd.Timestamp(decision_time(decided)).normalize().to_pydatetime()
    moved, read, engaged = history_moved_to(model, session, day)
    if move is not None and moved is not model:
        move.day, move.contacts, move.engaged = day, read, engaged
    return moved


@dataclass
class NoPick:
    """The HCPs a picks run gave no row, by why (filled as the run goes): every action
    ruled out for them (consent, specialty, approval, purpose, channel, the serving
    rules), or some allowed and none worth its cost. Held-out and unknown HCPs are in
    neither."""

    none_allowed: list[str] = field(default_factory=list)
    none_worth: list[str] = field(default_factory=list)


def picks_frame(
    model: ScoringModel,
    *,
    hcp_ids: Sequence[str],
    k: int = 1,
    channel: str | None = None,
    purpose: str = "promotional",
    on: datetime | date | None = None,
    eligibility: EligibilityIndex | None = None,
    progress: Callable[[int], None] | None = None,
    skip_unknown: bool = False,
    rules: ServingRules | None = None,
    history: LiveHistory | None = None,
    no_pick: NoPick | None = None,
) -> pd.DataFrame:
    """Best ``k`` actions per HCP with positive expected net value, one row each.

    ``channel`` may be :data:`~nextbest.contract.schema.REP_CHANNELS_FILTER` (every
    rep channel: how a rep plan's answers are logged, for their replay), or several
    channels joined with ',' (how a channel-bound key's answers are logged).

    Returns a frame with :data:`PICK_COLUMNS`; an HCP with nothing worth doing
    gets no row. ``progress`` is called with the number of HCPs done per block.
    Unknown ``hcp_ids`` raise :class:`NotFoundError` unless ``skip_unknown``.
    ``rules`` adds the per-list channel limit and, with ``history`` (live
    contacts and dismissals), frequency caps, cool-downs and suppression.
    ``no_pick``, when given, collects the HCPs that got no row, by why.
    """
    # No day check here: the gate and the report replay past decisions with models
    # whose history ends later (the CLI checks the day a user asks for).
    rep_only = channel == REP_CHANNELS_FILTER
    several = filter_channels(channel) if channel is not None else None
    channel = None if rep_only or several is not None else channel
    check_picks(model, k=k, channel=channel, purpose=purpose)
    rows = model.hcp_index.get_indexer(list(hcp_ids))
    if (rows < 0).any():
        if not skip_unknown:
            raise NotFoundError("hcp_id", str(np.asarray(hcp_ids)[rows < 0][0]))
        rows = rows[rows >= 0]
    eligibility = eligibility or EligibilityIndex.build(model)
    now, as_of = decision_time(on), cutoff(model)
    # Approval at the UTC moment decided for, as a single recommendation's.
    mask = eligibility.action_mask(on=now, purpose=purpose, channel=channel)
    if rep_only:
        mask = mask & np.array([is_rep_channel(str(c)) for c in model.catalog["channel"]])
    if several is not None:
        mask = mask & eligibility.channels_mask(several)
    history_rules = (
        HistoryRules(
            rules,
            channels=model.catalog["channel"].astype(str).to_numpy(dtype=object),
            action_ids=model.catalog["action_id"].astype(str).to_numpy(dtype=object),
            consent_on_file=eligibility.consent_on_file,
        )
        if rules is not None
        else None
    )
    if history_rules is not None:
        mask = mask & ~history_rules.ruled_out
    actions = np.flatnonzero(mask)
    frames: list[pd.DataFrame] = []
    all_ids = model.hcps["hcp_id"].astype(str).to_numpy(dtype=object)
    if len(actions) == 0:
        if no_pick is not None:
            no_pick.none_allowed += all_ids[rows].tolist()
        return pd.DataFrame(columns=PICK_COLUMNS)
    max_per_channel = rules.max_items_per_channel if rules is not None else None
    block = max(1, BLOCK_PAIRS // len(actions))
    for start in range(0, len(rows), block):
        hcp_block = rows[start : start + block]
        blocked = None
        if history_rules is not None and history is not None:
            blocked = history_rules.blocked(all_ids[hcp_block].tolist(), history)[:, actions]
        # Gaps counted from the day a moved history is as of, as a recommender's.
        lapse = lapses(as_of, all_ids[hcp_block].tolist(), now, history, history_day(model))
        picked = _block_picks(
            model, eligibility, hcp_block, actions, k, blocked, max_per_channel, lapse, no_pick
        )
        # A block without a pick is left out: concatenated, its empty object columns
        # made pandas warn on the console (FutureWarning) that they will decide dtypes.
        if len(picked):
            frames.append(picked)
        if progress is not None:
            progress(len(hcp_block))
    if not frames:
        return pd.DataFrame(columns=PICK_COLUMNS)
    return pd.concat(frames, ignore_index=True)[PICK_COLUMNS]


def _block_picks(
    model: ScoringModel,
    eligibility: EligibilityIndex,
    hcp_rows: np.ndarray,
    actions: np.ndarray,
    k: int,
    blocked: np.ndarray | None = None,
    max_per_channel: int | None = None,
    lapse: list[Lapse] | None = None,
    no_pick: NoPick | None = None,
) -> pd.DataFrame:
    """Picks for one block of HCPs; ``lapse``, one per HCP, as :func:`explain` takes
    them; ``no_pick`` (:func:`picks_frame`) gets the block's HCPs without a pick."""
    n_h, n_a = len(hcp_rows), len(actions)
    pair_hcp = np.repeat(hcp_rows, n_a)
    pair_action = np.tile(actions, n_h)
    # Copies of content ride on their original's model row (ScoringModel.score).
    scores = model.score(pair_hcp, pair_action)
    score = model.net_value(scores.uplift, pair_action).reshape(n_h, n_a)
    allowed = (
        eligibility.consent[hcp_rows][:, actions] & eligibility.specialty_ok[hcp_rows][:, actions]
    )
    if blocked is not None:
        allowed &= ~blocked
    chosen = top_k(
        score,
        allowed,
        k=k,
        channel_code=model.action_channel_code[actions],
        max_per_channel=max_per_channel,
    )
    counts = np.array([len(c) for c in chosen])
    if no_pick is not None:
        ids = model.hcps["hcp_id"].astype(str).to_numpy(dtype=object)[hcp_rows]
        some_allowed = allowed.any(axis=1)
        no_pick.none_allowed += ids[~some_allowed].tolist()
        no_pick.none_worth += ids[some_allowed & (counts == 0)].tolist()
    if counts.sum() == 0:
        return pd.DataFrame(columns=PICK_COLUMNS)
    local_h = np.repeat(np.arange(n_h), counts)
    local_a = np.concatenate(chosen).astype(np.int64)
    rank = np.concatenate([np.arange(1, c + 1) for c in counts])
    pair = local_h * n_a + local_a
    action_rows = actions[local_a]
    item = scores.take(pair)
    uplift, p_engage = item.uplift, item.p_engage
    item_lapse = None if lapse is None else [lapse[i] for i in local_h.tolist()]
    # Model rows for the reasons of the picks only: k per HCP, not one per candidate.
    X = model.rows(hcp_rows[local_h], action_rows)
    said = explain(model, X, action_rows, hcp_rows[local_h], item, item_lapse)
    reason = ["; ".join(r) for r in said]
    c = model.catalog
    return pd.DataFrame(
        {
            "hcp_id": model.hcps["hcp_id"].to_numpy()[hcp_rows[local_h]],
            "rank": rank,
            "action_id": c["action_id"].to_numpy()[action_rows],
            "channel": c["channel"].to_numpy()[action_rows],
            "content_id": c["content_id"].to_numpy()[action_rows],
            "score": score[local_h, local_a],
            "expected_uplift": uplift,
            "p_engage": p_engage,
            "reason": reason,
        }
    )


def check_picks(
    model: ScoringModel,
    *,
    k: int,
    channel: str | None,
    purpose: str,
    on: datetime | date | None = None,
    check_on: bool = False,
) -> None:
    """Refuse picks the model cannot make, naming the field (InvalidRequestError):
    options no pick satisfies and, with ``check_on``, a day ``on`` before the model's
    history (``as-of``)."""
    channels = frozenset(model.catalog["channel"].astype(str))
    check_options(channels, k=k, channel=channel, purpose=purpose, max_k=None)
    if check_on:
        check_day(decision_time(on), cutoff(model), field="as-of", location="option")


def catalog_notes(model: ScoringModel, version: str, *, catalog: pd.DataFrame) -> list[str]:
    """What a send's ``catalog`` and the model's disagree on, one sentence each.

    Under :meth:`EligibilityIndex.build` none of these actions is picked: actions
    the model does not know cannot be scored, and those the catalog no longer
    lists, or lists on another channel or for another purpose, are not served.
    """
    known = model.catalog[["action_id", "channel", "content_type"]].astype(str)
    given = catalog[["action_id", "channel", "content_type"]].astype(str)
    both = known.merge(given, on="action_id", suffixes=("", "_given"))
    changed = both["action_id"][
        (both["channel"] != both["channel_given"])
        | (both["content_type"] != both["content_type_given"])
    ]
    differences = (
        (
            set(given["action_id"]) - set(known["action_id"]),
            f"not in model version {version}'s catalog, so they cannot be scored "
            "(retrain to include them)",
        ),
        (set(known["action_id"]) - set(given["action_id"]), "no longer in the catalog"),
        (
            set(changed),
            f"on another channel or content type than when version {version} was trained",
        ),
    )
    notes = [
        f"{len(ids):,} action(s) get no picks, {why}: {listed(sorted(ids))}"
        for ids, why in differences
        if ids
    ]
    # A specialty no HCP has (a typo: 'cardiolgy') narrows its action to the others
    # named, or to nobody, with nothing else to say so.
    have = sorted({specialty_spelling(str(s)) for s in model.hcps["specialty"]})
    cells = catalog["specialties"] if "specialties" in catalog.columns else ()
    for action_id, cell in zip(catalog["action_id"], cells, strict=True):
        wanted = allowed_specialties("" if pd.isna(cell) else str(cell))
        unknown = sorted(wanted - set(have))
        if not unknown:
            continue
        said = []
        for name in unknown:
            said.append(f"'{name}'" + near_hint(name, have))
        whom = "no HCP gets it" if len(unknown) == len(wanted) else "only HCPs of the others do"
        notes.append(
            f"action {action_id}: specialties {', '.join(said)} of the catalog given: no HCP "
            f"of model version {version} has them, so {whom}"
        )
    return notes


def unread_column_notes(hcps: pd.DataFrame) -> list[str]:
    """A note naming the send list's columns that are not read (``attrs`` of
    :func:`~nextbest.contract.validate.validate_send_list`): a ``content_id`` or
    ``channel`` column given to choose each HCP's e-mail changed no pick, silently."""
    ignored = [str(c) for c in hcps.attrs.get("ignored_columns", [])]
    if not ignored:
        return []
    one = len(ignored) == 1
    return [
        f"send list: {'column' if one else 'columns'} not read: {listed(ignored, shown=10)}; "
        "a send list gives each HCP's hcp_id, specialty and consent_<channel> only, and "
        "picks are ranked among every action the catalog and rules allow (--channel "
        "keeps one channel's)"
    ]


def specialty_notes(model: ScoringModel, version: str, *, hcps: pd.DataFrame) -> list[str]:
    """A note on the send list's ``specialty`` values that no catalog action names and
    no HCP of the model has (a typo such as 'Onkology'); none when the catalog has no
    action approved for some specialties only, where a specialty changes no pick.

    Under :meth:`EligibilityIndex.build` the file's specialty and the model's must
    both fit, so such an HCP silently loses every specialty-bound action.
    """
    if "specialty" not in hcps.columns:
        return []
    bound = [allowed_specialties(str(cell)) for cell in model.catalog["specialties"]]
    n_bound = sum(1 for names in bound if names)
    if not n_bound:
        return []
    known = sorted(
        set().union(*bound) | {specialty_spelling(str(s)) for s in model.hcps["specialty"]}
    )
    given = hcps["specialty"].dropna().astype(str)
    given = given[given.str.strip() != ""]  # an empty cell leaves the model's
    counts = given.value_counts(sort=False)
    unknown = [
        (str(value), int(n))
        for value, n in counts.items()
        if specialty_spelling(str(value)) not in known
    ]
    if not unknown:
        return []
    said = []
    for value, n in unknown[:10]:
        near = near_word(specialty_spelling(value), known)
        meant = f"; did you mean '{near}'?" if near is not None else ""
        said.append(f"'{value}' ({n:,} HCP{'' if n == 1 else 's'}{meant})")
    more = f" and {len(unknown) - 10:,} more" if len(unknown) > 10 else ""
    return [
        f"send list: specialt{'y' if len(unknown) == 1 else 'ies'} that no catalog action "
        f"names and no HCP of model version {version} has: {', '.join(said)}{more}; these "
        f"HCPs get none of the {n_bound:,} actions approved for some specialties only (such an "
        "action must fit both the file's specialty and the model's for the HCP); known "
        "specialties: "
        f"{listed(known, shown=10)}"
    ]


def file_picks(
    settings: Settings,
    model: ScoringModel,
    *,
    version: str,
    hcp_ids: Sequence[str],
    k: int = 1,
    channel: str | None = None,
    purpose: str = "promotional",
    on: datetime | date | None = None,
    progress: Callable[[int], None] | None = None,
    hcps: pd.DataFrame | None = None,
    catalog: pd.DataFrame | None = None,
    rules: ServingRules | None = None,
    no_pick: NoPick | None = None,
    history_move: HistoryMove | None = None,
) -> pd.DataFrame:
    """Picks for a whole file of HCPs under the serving rules and live contact history.

    Reads the rules file and the feedback store named by ``settings`` (one query
    per 10,000 HCPs and cap window; a SQLite file not made yet is read as an empty
    log, not made: see :func:`~nextbest.storage.db.history_session`), so e-mail
    picks honour the same caps, cool-downs and dismissals as the API. Unknown HCPs
    are skipped. ``hcps`` and ``catalog``, the send's own contract frames, make the
    model's consent, specialty and approval rules stricter (see
    :meth:`EligibilityIndex.build`). ``rules``: the serving rules as the caller read
    them (None: read here), so that the rules it names are those applied.
    ``no_pick``: as :func:`picks_frame` takes it. With ``fresh_history`` on, the model
    scores with its history moved on to the picks' day by the store's contacts
    (:func:`history_for_picks`; ``history_move`` gets what was done).
    ``version`` is ``model``'s, named in the warning about a stale model that
    serving logs too: here measured at the picks' decision date, not at today (see
    :func:`~nextbest.service.runtime.warn_if_stale`).
    """
    from nextbest.service.runtime import warn_if_stale
    from nextbest.service.serving import history_time, live_history
    from nextbest.storage.db import history_session

    # Read once: today's date read again after midnight is a day gone, its start.
    now = utc_now()
    decided = decision_time(on, now=now)
    warn_if_stale(settings.model_name, version, model.as_of, now=now, decided=decided)

    if rules is None:
        rules = ServingRules.configured(settings)
    known = [h for h in hcp_ids if h in model.hcp_index]
    with history_session(settings.resolved_database_url) as session:  # a log not made: empty
        history = live_history(session, rules=rules, hcp_ids=known, now=history_time(decided, now))
        model = history_for_picks(
            settings, model, session, decided=decided, version=version, move=history_move
        )
    return picks_frame(
        model,
        hcp_ids=known,
        k=k,
        channel=channel,
        purpose=purpose,
        on=decided,
        eligibility=EligibilityIndex.build(model, hcps=hcps, catalog=catalog),
        progress=progress,
        skip_unknown=True,
        rules=rules,
        history=history,
        no_pick=no_pick,
    )


LOGGED_COLUMNS = [*PICK_COLUMNS, "model_version", "recommendation_id", "propensity", "explored"]


@dataclass(frozen=True)
class LoggedPicks:
    """Picks served and logged as the batch endpoint serves them (see :func:`logged_picks`)."""

    frame: pd.DataFrame  # LOGGED_COLUMNS, one row per served item
    model_version: str  # the served version's
    n_logged: int  # answers logged: one per known HCP, holdout included
    n_holdout: int  # of them, drawn into the randomized holdout (no row in ``frame``)
    # HCPs erased while the picks were made: left out of ``frame`` and the log.
    erased: tuple[str, ...] = ()
    # The serving rules the answers were made under (their logged rules_fingerprint).
    rules_fingerprint: str = ""
    # The HCPs answered with no item (not held out), by why: no_pick of picks_frame.
    no_pick: NoPick = field(default_factory=NoPick)
    # The history the answers were scored with (see history_for_picks).
    history_move: HistoryMove = field(default_factory=HistoryMove)
    # The challenger version that answered its share of the HCPs beside the served one
    # (NEXTBEST_CHALLENGER_SHARE; None: none), and how many answers it gave.
    challenger_version: str | None = None
    n_by_challenger: int = 0
    # The HCPs asked for that no version knows: no answer, no row.
    unknown: tuple[str, ...] = ()


def _erased_since(runtime: Any, hcp_ids: Sequence[str], since: datetime) -> set[str]:
    """The HCPs of ``hcp_ids`` whose erasure suppression was stored at or after ``since``."""
    from nextbest.storage.repository import erased_already

    with runtime.sessions() as session:
        erased = erased_already(session, hcp_ids=hcp_ids)
    return {hcp for hcp, at in erased.items() if at >= since}


def logged_picks(
    settings: Settings,
    *,
    hcp_ids: Sequence[str],
    k: int = 1,
    channel: str | None = None,
    purpose: str = "promotional",
    on: datetime | date | None = None,
    requester: str | None = None,
    progress: Callable[[int], None] | None = None,
    hcps: pd.DataFrame | None = None,
    catalog: pd.DataFrame | None = None,
    before_logging: Callable[[pd.DataFrame], None] | None = None,
    after_logging: Callable[[], None] | None = None,
    clock: Clock = utc_now,
) -> LoggedPicks:
    """Picks for a file that will be sent, served exactly as the batch endpoint serves.

    Each known HCP gets its own answer with its exploration and holdout draw, logged
    to the recommendation log with its propensities under a ``recommendation_id``
    (in the returned rows), so the sends' feedback and outcomes join the loop:
    uplift report, retraining and the off-policy gate (a stale model is warned about
    at the decision date, as :func:`file_picks` warns). ``clock``: what the answers
    are decided and served by. HCPs drawn into the holdout
    get no row. Blocks of ``MAX_BATCH`` HCPs, each scored; the answers are logged
    at the end, all in one transaction, after ``before_logging`` (the caller writing
    its file) returns: an interrupted run, or one whose file cannot be written,
    logs nothing. The commit and ``after_logging`` (the caller giving the file its
    name) run with SIGINT and SIGTERM held, so no interruption falls between them. ``hcps``
    and ``catalog`` make the served model's eligibility stricter, as in :func:`file_picks`.
    ``requester`` (logged with each answer) defaults to the command and the user
    running it (:func:`~nextbest.service.requester.file_requester`). With
    ``fresh_history`` on, the answers are scored with the served model's history moved
    on to their day (the date's, else today's) by the store's contacts
    (:func:`history_for_picks`; said in the result's ``history_move``). With
    ``challenger_share`` above 0, the challenger answers its share of the HCPs as it
    does at the batch endpoint, prepared as the served version is (its history moved,
    the send's files applied), and the HCPs only it knows; each row names the version
    that answered it. HCPs no version knows get no answer (the result's ``unknown``).
    """
    from nextbest.service.requester import file_requester
    from nextbest.service.runtime import ServingRuntime, make_recommender, warn_if_stale
    from nextbest.service.serving import recommend_batch

    requester = requester or file_requester("picks")

    # One process, one pass: no score cache to fill or warm, every block committed.
    # The history is moved here, to the picks' day rather than the clock's.
    config = settings.model_copy(
        update={
            "score_cache_pairs": 0,
            "start_warm_s": 0.0,
            "log_flush_ms": 0.0,
            "fresh_history": False,
        }
    )
    # Only this thread predicts (no warming, no reload watcher): every core for
    # each block's LightGBM calls, about a fifth faster than one thread.
    runtime = ServingRuntime.start(
        config,
        predict_threads=None,
        check_holdout_rate=False,
        upgrade_schema=False,
        retries=False,
        warn_stale=False,  # at the decision date, below
        clock=clock,
    )
    try:
        served = runtime.recommender
        now = served.clock()
        # A date is resolved once for the whole send: today's, read again by a block
        # served after midnight, would be a day gone, and that block logged as decided
        # for its start. (No date: each block is decided when it is served.)
        decided = decision_time(on, now=now) if on is not None else None
        history_move = HistoryMove()

        def for_send(one: Recommender, move: HistoryMove | None) -> Recommender:
            """``one`` (the served version, or its challenger) as this send serves it:
            its history moved to the picks' day, the send's files applied."""
            with runtime.sessions() as session:
                model = history_for_picks(
                    settings,
                    one.model,
                    session,
                    decided=decided or now,
                    version=one.version,
                    move=move,
                )
            ready = (
                copy.copy(one)
                if model is one.model
                else make_recommender(
                    config, model, one.version, one.rules, one.alignment, clock=clock
                )
            )
            # The send's files, not only the model's snapshot, decide who may be sent what.
            ready.eligibility = EligibilityIndex.build(ready.model, hcps=hcps, catalog=catalog)
            # A consent column of the send's files puts an opt-in channel's consent on
            # file (consent_required), as for plain picks: the rules are applied again
            # over it (only then, as that says their notes again).
            if ready.eligibility.consent_on_file != one.eligibility.consent_on_file:
                ready = ready.with_rules(ready.rules)
            return ready

        recommender = for_send(served.with_challenger(None, 0.0), history_move)
        warn_if_stale(
            settings.model_name,
            recommender.version,
            recommender.model.as_of,
            now=now,
            decided=decided,
        )
        if served.challenger is not None:
            recommender = recommender.with_challenger(
                for_send(served.challenger, None), served.challenger_share
            )
        rows: list[dict[str, object]] = []
        n_logged = 0
        held_out: set[str] = set()
        by_challenger: set[str] = set()
        answered: list[str] = []
        unknown: list[str] = []
        no_pick = NoPick()
        started = datetime.now(UTC)
        runtime.reclog.hold()
        for start in range(0, len(hcp_ids), MAX_BATCH):
            block = hcp_ids[start : start + MAX_BATCH]
            recs, unknown_here, _ = recommend_batch(
                recommender,
                runtime.reader,
                runtime.reclog,
                requester=requester,
                hcp_ids=block,
                k=k,
                channel=channel,
                purpose=purpose,
                on=decided,
            )
            n_logged += len(recs)
            unknown += unknown_here
            by_challenger.update(
                rec.hcp_id for rec in recs if rec.model_version != recommender.version
            )
            held_out.update(rec.hcp_id for rec in recs if rec.holdout)
            answered += [rec.hcp_id for rec in recs]
            for rec in recs:
                if not rec.holdout and not rec.items:
                    # No candidate at all: every action was ruled out for the HCP.
                    empty = no_pick.none_allowed if not rec.n_candidates else no_pick.none_worth
                    empty.append(rec.hcp_id)
            rows += [
                {
                    "hcp_id": rec.hcp_id,
                    "rank": item.rank,
                    "action_id": item.action_id,
                    "channel": item.channel,
                    "content_id": item.content_id,
                    "score": item.score,
                    "expected_uplift": item.expected_uplift,
                    "p_engage": item.p_engage,
                    "reason": "; ".join(item.reasons),
                    "model_version": rec.model_version,
                    "recommendation_id": rec.recommendation_id,
                    "propensity": item.propensity,
                    "explored": item.explored,
                }
                for rec in recs
                for item in rec.items
            ]
            if progress is not None:
                progress(len(block))
        # An HCP erased while the run went on (its suppression came too late for the
        # history read) is neither sent nor logged: its logged answer would bring
        # the HCP back into the log the erasure just emptied. Asked again once the
        # file is written, which it is once more without them if that finds others.
        erased = _erased_since(runtime, answered, started)
        frame = pd.DataFrame([r for r in rows if r["hcp_id"] not in erased], columns=LOGGED_COLUMNS)
        if before_logging is not None:
            before_logging(frame)
            later = _erased_since(runtime, answered, started)
            if later - erased:
                erased = later
                frame = frame[~frame["hcp_id"].isin(erased)].reset_index(drop=True)
                before_logging(frame)
        with signals_held():
            runtime.reclog.commit_held(leaving_out=erased)
            if after_logging is not None:
                after_logging()
        return LoggedPicks(
            frame=frame,
            model_version=recommender.version,
            n_logged=n_logged - len(erased),
            n_holdout=len(held_out - erased),
            erased=tuple(sorted(erased)),
            rules_fingerprint=recommender.rules.fingerprint,
            no_pick=NoPick(
                none_allowed=[h for h in no_pick.none_allowed if h not in erased],
                none_worth=[h for h in no_pick.none_worth if h not in erased],
            ),
            history_move=history_move,
            challenger_version=(
                recommender.challenger.version if recommender.challenger is not None else None
            ),
            n_by_challenger=len(by_challenger - erased),
            unknown=tuple(unknown),
        )
    finally:
        runtime.close()
