"""What the API and the CLI call to serve: read live history, decide, log.

Each function takes the database and the caller's name (the API key's name,
logged as ``requester``; never the key) and returns plain dataclasses. The
database is an ORM session, a Core connection, or an engine: with an engine the
history read checks a plain connection out for that one query and back in at
once (no ORM session per request, and no transaction left open while the
model scores). On SQLite the single-recommendation route reads through a
connection it keeps (:class:`~nextbest.storage.db.HeldReader`); on PostgreSQL it
awaits its read (:func:`live_history_async`) and hands the result to
:func:`recommend_one`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.orm import Session

from nextbest.policy.rules import LiveHistory, ServingRules
from nextbest.service.reclog import RecommendationLog
from nextbest.service.recommend import (
    Recommendation,
    Recommender,
    RepPlan,
    check_day,
    decision_time,
)
from nextbest.storage.db import HeldReader, with_reconnect
from nextbest.storage.repository import (
    FUTURE_TOLERANCE,
    ServingHistory,
    serving_history,
    serving_history_async,
)

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

Database = Session | Connection | Engine | HeldReader


def live_history(
    db: Database,
    *,
    rules: ServingRules,
    hcp_ids: Sequence[str],
    now: datetime,
    contact_times: bool = False,
) -> LiveHistory:
    """Contacts, dismissals and consent events of ``hcp_ids`` the rules need, as of ``now`` (UTC):
    nothing reported as happening after ``now`` counts, but for the clock skew that
    feedback is allowed (``FUTURE_TOLERANCE``): an event the service acknowledged
    counts at once. Serving reads it as of :func:`history_time` of its decision.

    One indexed query for every cap window, the dismissals and the consent events
    together (consent is read whatever the rules: an HCP who opted out of a channel
    is not contacted on it). ``contact_times``, for an explanation: the same query
    also gives when each contact in the longest window was (when a cap lifts), the
    very contacts counted, bounded as every read is (the statement timeout).
    """
    windows, starts, dismissed_since, repeated_since = _lookbacks(rules, now)

    def read(reader: Session | Connection) -> ServingHistory:
        return serving_history(
            reader,
            hcp_ids=list(hcp_ids),
            windows=starts,
            dismissed_since=dismissed_since,
            until=now + FUTURE_TOLERANCE,
            contact_times=contact_times,
            repeated_since=repeated_since,
        )

    if isinstance(db, HeldReader):
        found = db.run(read)
    else:
        found = with_reconnect(db, read) if isinstance(db, Engine) else read(db)
    return _live(found, windows, now, rules)


async def live_history_async(
    pool: AsyncConnectionPool, dialect: Dialect, *, rules: ServingRules, hcp_id: str, now: datetime
) -> LiveHistory:
    """:func:`live_history` of one HCP from PostgreSQL through an asyncio pool.

    For the single-recommendation route, which runs on the event loop: the worker
    goes on serving other requests while the query is on its way.
    """
    windows, starts, dismissed_since, repeated_since = _lookbacks(rules, now)
    found = await serving_history_async(
        pool,
        dialect,
        hcp_id=hcp_id,
        windows=starts,
        dismissed_since=dismissed_since,
        until=now + FUTURE_TOLERANCE,
        repeated_since=repeated_since,
    )
    return _live(found, windows, now, rules)


def history_time(decided: datetime, now: datetime) -> datetime:
    """When the contact history is read for a decision at ``decided``: then, or
    ``now`` (the reading of the clock the decision is served by, which
    :func:`decision_time` resolved it with) if that is later. A decision dated in the
    past (a send file for yesterday, made after midnight) is acted on now, so the
    contacts reported since count against its caps and cool-downs, as its holdout
    week and consent are today's: read as of its date, an e-mail delivered this
    morning would not stop a second."""
    return max(decided, now)


@dataclass(frozen=True)
class _Spans:
    """How far back the history read of ``rules`` looks, worked out once per rules
    object (rules are replaced, never changed, on a reload), not once per request."""

    rules: ServingRules
    windows: tuple[float, ...]  # days, longest first (shared by every request: no list)
    back: tuple[timedelta, ...]  # the same as durations
    dismissals: timedelta | None  # the longer of the dismissal and snooze windows
    repeats: timedelta | None = None  # the longest repeat_days


_spans: _Spans | None = None  # of the rules read with last


def _lookbacks(
    rules: ServingRules, now: datetime
) -> tuple[tuple[float, ...], list[datetime], datetime | None, datetime | None]:
    """The rules' windows in days (longest first: its latest contact serves every
    cool-down), their starts, where dismissals start counting and where the contacts
    ``repeat_days`` reads start (None: not read). The windows are the tuple every
    request under ``rules`` shares; the starts a list of the caller's own."""
    global _spans
    spans = _spans
    if spans is None or spans.rules is not rules:
        windows = tuple(rules.lookbacks())
        suppressed = [d for d in (rules.dismissal_days, rules.snooze_window) if d is not None]
        spans = _spans = _Spans(
            rules,
            windows,
            tuple(timedelta(days=w) for w in windows),
            timedelta(days=max(suppressed)) if suppressed else None,
            None if rules.repeat_window is None else timedelta(days=rules.repeat_window),
        )
    dismissed_since = None if spans.dismissals is None else now - spans.dismissals
    repeated_since = None if spans.repeats is None else now - spans.repeats
    return spans.windows, [now - back for back in spans.back], dismissed_since, repeated_since


def _live(
    found: ServingHistory, windows: Sequence[float], now: datetime, rules: ServingRules
) -> LiveHistory:
    counts = dict(zip(windows, found.counts, strict=True))
    # The store was read back over the longer of the two windows: each dismissal or
    # snooze suppresses only within its own, until its time + its days, exclusive.
    windows_of = {False: rules.dismissal_days, True: rules.snooze_window}
    dismissed: dict[tuple[str, str], str] = {}
    for pair, reason in found.dismissed.items():
        at, is_snooze = found.dismissed_at[pair]
        days = windows_of[is_snooze]
        if days is not None and at > now - timedelta(days=days):
            dismissed[pair] = reason
    snoozed = frozenset(pair for pair in dismissed if found.dismissed_at[pair][1])
    return LiveHistory(
        now=now,
        counts=counts,
        last=found.last,
        dismissed=dismissed,
        snoozed=snoozed,
        consent=found.consent,
        consent_unmatched=found.consent_unmatched,
        dismissed_at={pair: found.dismissed_at[pair][0] for pair in dismissed},
        contact_times=found.contact_times,
        sent=found.sent,
    )


def recommend_one(
    recommender: Recommender,
    db: Database | None,
    log: RecommendationLog | None,
    *,
    requester: str,
    hcp_id: str,
    k: int = 5,
    channel: str | None = None,
    purpose: str = "promotional",
    on: datetime | date | None = None,
    explain_exclusions: bool = False,
    history: LiveHistory | None = None,
    channels: Collection[str] | None = None,
    blind: bool = False,
) -> Recommendation:
    """Rules, ranking, exploration and reasons for one HCP; the answer is logged.
    ``channels``: the only channels it may hold (a channel-bound API key's), None: any.
    ``blind``: the explanation as a caller kept blind to the holdout is given it
    (:meth:`Recommender.recommend`); the answer is returned as logged, for
    :func:`~nextbest.service.blinding.as_told` to tell.

    ``db`` is only read (the live history); the log writes through ``log`` (None:
    nothing is logged, for ``nextbest explain``). With ``db`` None, ``history`` is
    the HCP's live history, already read (as of ``on``). "Now" is the recommender's
    clock.
    """
    reading = recommender.clock()
    now = decision_time(on, now=reading)
    recommender.check_request(k=k, channel=channel, purpose=purpose, now=now)
    if db is not None:
        history = (
            live_history(
                db,
                rules=recommender.rules,
                hcp_ids=[hcp_id],
                now=history_time(now, reading),
                contact_times=explain_exclusions,  # when a binding cap lifts
            )
            if recommender.knows(hcp_id)
            else None
        )
    rec = recommender.recommend(
        hcp_id=hcp_id,
        k=k,
        channel=channel,
        purpose=purpose,
        on=now,
        explain_exclusions=explain_exclusions,
        history=history,
        channels=channels,
        blind=blind,
    )
    if log is not None:
        log.write([rec], recommender=recommender, requester=requester)
    return rec


def recommend_batch(
    recommender: Recommender,
    db: Database,
    log: RecommendationLog,
    *,
    requester: str,
    hcp_ids: Sequence[str],
    k: int = 1,
    channel: str | None = None,
    purpose: str = "promotional",
    on: datetime | date | None = None,
    channels: Collection[str] | None = None,
) -> tuple[list[Recommendation], list[str], list[str]]:
    """Recommendations for up to 1,000 HCPs, each logged; also the unknown ids, and
    the ids listed more than once (each HCP gets one answer: an e-mail system that
    sent an id twice must not send two e-mails). ``channels`` as :func:`recommend_one`."""
    reading = recommender.clock()
    now = decision_time(on, now=reading)
    recommender.check_request(k=k, channel=channel, purpose=purpose, now=now)
    unique = list(dict.fromkeys(hcp_ids))
    repeated = (
        [h for h, n in Counter(hcp_ids).items() if n > 1] if len(unique) < len(hcp_ids) else []
    )
    known = [h for h in unique if recommender.knows(h)]
    history = live_history(
        db, rules=recommender.rules, hcp_ids=known, now=history_time(now, reading)
    )
    recs, unknown = recommender.recommend_many(
        hcp_ids=unique,
        k=k,
        channel=channel,
        purpose=purpose,
        on=now,
        history=history,
        channels=channels,
    )
    # Batch calls run in the thread pool: one may wait for room in the log.
    log.write(recs, recommender=recommender, requester=requester, may_wait=True)
    return recs, unknown, repeated


def rep_call_plan(
    recommender: Recommender,
    db: Database,
    log: RecommendationLog,
    *,
    requester: str,
    rep_id: str,
    territory_id: str,
    capacity: int | None = None,
    on: date | None = None,
    purpose: str = "promotional",
    explain: bool = False,
    blind: bool = False,
) -> RepPlan:
    """A rep's (or, medical, an MSL's) ranked call plan; suggestions and holdout
    draws are logged. With ``explain`` the plan also says why the territory's other
    HCPs are left out (``RepPlan.left_out``; ``blind``, for a caller kept blind to the
    holdout, says held-out HCPs as those with nothing worth doing); that adds
    nothing to the log."""
    reading = recommender.clock()
    now = decision_time(on, now=reading)
    check_day(now, recommender.as_of, location="query")  # before the history is read
    rows = recommender.territories.get(territory_id)
    ids = recommender.hcp_ids[rows].tolist() if rows is not None else []
    # With explain, when each contact was too: left_out says when a binding cap lifts.
    history = live_history(
        db,
        rules=recommender.rules,
        hcp_ids=ids,
        now=history_time(now, reading),
        contact_times=explain,
    )
    plan = recommender.rep_plan(
        rep_id=rep_id,
        territory_id=territory_id,
        capacity=capacity,
        on=now,
        purpose=purpose,
        history=history,
        explain_left_out=explain,
        served_at=reading,
        blind=blind,
    )
    log.write(
        [*plan.suggestions, *plan.held_out],
        recommender=recommender,
        requester=requester,
        may_wait=True,
    )
    return plan
