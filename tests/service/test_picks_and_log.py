"""Picks under the serving rules, and the batched recommendation log."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from nextbest import registry
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.policy.rules import LiveHistory, ServingRules
from nextbest.service.picks import picks_frame
from nextbest.service.reclog import RecommendationLog
from nextbest.service.recommend import Recommender
from nextbest.storage.db import make_engine, make_session_factory, migrate
from nextbest.storage.repository import get_recommendation
from nextbest.storage.tables import Recommendation

RULES = ServingRules.from_mapping(
    {"channels": {"email": {"cooldown_days": 3}}, "max_items_per_channel": 1}
)


@pytest.fixture(scope="module")
def model(trained):
    return registry.load_alias(trained.settings)[0]


def test_picks_whose_blocks_end_without_a_pick_say_nothing_of_pandas(model, monkeypatch) -> None:
    """A block of HCPs none of whom gets a pick (every one capped, say) made pandas
    warn on the console of `nextbest picks`, FutureWarning and all, when the blocks
    were put together; the picks are the same whatever the blocks."""
    import warnings

    from nextbest.service import picks

    ids = [str(h) for h in model.hcps["hcp_id"][:150]]
    # Both decided at one moment: the days since the cut-off that reasons count go up
    # once a day, which two clock readings may straddle.
    on = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    whole = picks_frame(model, hcp_ids=ids, k=1, channel="email", on=on)
    assert 0 < whole["hcp_id"].nunique() < len(ids)  # some HCPs get no pick
    monkeypatch.setattr(picks, "BLOCK_PAIRS", 1)  # a block per HCP
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        by_hcp = picks_frame(model, hcp_ids=ids, k=1, channel="email", on=on)
    pd.testing.assert_frame_equal(by_hcp, whole)


def _emailed_yesterday(picked: pd.DataFrame) -> tuple[list[str], LiveHistory]:
    """The first 10 HCPs of ``picked`` and a live history where each was e-mailed a
    day ago (inside the rules' e-mail cool-down)."""
    cooled = list(picked["hcp_id"][:10])
    now = datetime.now(UTC)
    return cooled, LiveHistory(
        now=now,
        counts={3.0: {(h, "email"): 1 for h in cooled}},
        last={(h, "email"): now - timedelta(days=1) for h in cooled},
    )


def test_picks_honour_cooldowns_and_the_channel_limit(model) -> None:
    ids = [str(h) for h in model.hcps["hcp_id"][:150]]
    plain = picks_frame(model, hcp_ids=ids, k=1, channel="email")
    assert len(plain) > 20
    cooled, history = _emailed_yesterday(plain)
    ruled = picks_frame(model, hcp_ids=ids, k=1, channel="email", rules=RULES, history=history)
    assert not set(cooled) & set(ruled["hcp_id"])
    assert set(ruled["hcp_id"]) == set(plain["hcp_id"]) - set(cooled)
    limited = picks_frame(model, hcp_ids=ids, k=5, rules=RULES)
    assert limited.groupby(["hcp_id", "channel"]).size().max() == 1
    assert limited.groupby("hcp_id").size().max() > 1


@pytest.fixture
def log_store(tmp_path):
    """A migrated SQLite log store's engine."""
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _greedy(model) -> Recommender:
    return Recommender(
        model=model, version="1", exploration=EpsilonGreedy(epsilon=0, holdout_rate=0)
    )


def _logged_ids(store) -> set[str]:
    with make_session_factory(store)() as session:
        return {r for (r,) in session.query(Recommendation.recommendation_id)}


def test_background_log_commits_on_flush_and_close(model, trained, log_store) -> None:
    sessions = make_session_factory(log_store)
    recommender = Recommender(
        model=model,
        version=trained.version,
        exploration=EpsilonGreedy(epsilon=0.1, holdout_rate=0.1, seed=0),
    )
    log = RecommendationLog(log_store, flush_ms=20)
    assert log.background
    recs, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:50]), k=2)
    for rec in recs:
        log.write([rec], recommender=recommender, requester="test")
    assert log.flush(timeout=10)
    with sessions() as session:
        assert session.query(Recommendation).count() == 50
    more, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[50:60]), k=1)
    log.write(more, recommender=recommender, requester="test")
    log.close()  # shutdown flushes what is queued
    with sessions() as session:
        assert session.query(Recommendation).count() == 60
    assert log.written == 60 and log.dropped == 0


@pytest.mark.parametrize("flush_ms", [0, 5])
def test_the_log_writes_on_the_engines_connections_without_a_session(
    model, tmp_path, flush_ms: float
) -> None:
    """The log commits each batch on a plain connection of the store's engine: an ORM
    session per commit cost a sixth of a worker's CPU at 300 answers a second. Rows and
    items are as a session wrote them, synchronous or batched."""
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    log = RecommendationLog(engine, flush_ms=flush_ms)
    recommender = _greedy(model)
    recs, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:6]), k=2)
    for rec in recs:
        log.write([rec], recommender=recommender, requester="test")
    log.close()
    assert log.written == 6 and log.dropped == 0
    assert _logged_ids(engine) == {r.recommendation_id for r in recs}
    with make_session_factory(engine)() as session:
        for rec in recs:
            logged = get_recommendation(session, recommendation_id=rec.recommendation_id)
            assert logged is not None and logged.requester == "test"
            assert [item.action_id for item in logged.items] == [i.action_id for i in rec.items]
            assert [item.propensity for item in logged.items] == [i.propensity for i in rec.items]
    engine.dispose()


def test_a_caller_that_may_block_returns_once_its_answers_are_committed(model, log_store) -> None:
    # A batch answered before its rows were committed: feedback sent the moment it
    # came back, to another worker, was refused as unknown once the in-flight hold ran out.
    log = RecommendationLog(log_store, flush_ms=300, max_wait_s=10)
    recommender = _greedy(model)
    recs, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:20]), k=1)
    log.write(recs[:10], recommender=recommender, requester="single")
    assert len(_logged_ids(log_store)) == 0  # queued: committed within 300 ms
    started = time.monotonic()
    log.write(recs[10:], recommender=recommender, requester="batch", may_wait=True)
    assert time.monotonic() - started >= 0.2
    assert {r.recommendation_id for r in recs[10:]} <= _logged_ids(log_store)
    log.close()
    assert len(_logged_ids(log_store)) == 20


def _wait_until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {timeout:g} s"
        time.sleep(0.02)


def test_a_failing_store_keeps_what_it_refused_and_writes_it_once_it_answers(
    model, trained, tmp_path
) -> None:
    """Answers the store refused as unavailable are retried, not dropped; new ones are
    refused meanwhile (nothing served unlogged), and accepted again once it answers."""
    from nextbest.errors import LogBacklogFullError

    # A store whose tables do not exist yet: every commit fails (OperationalError)
    # until it is migrated below, as a database that is down fails until it is back.
    engine = make_engine(f"sqlite:///{tmp_path / 'late.db'}")
    log = RecommendationLog(engine, flush_ms=1, max_backlog=100)
    recommender = _greedy(model)
    recs, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:8]), k=1)
    log.write(recs[:5], recommender=recommender, requester="test")
    _wait_until(lambda: log.failing, "failing")
    assert not log.flush(timeout=10, while_failing=False)  # no waiting out an outage
    with pytest.raises(LogBacklogFullError, match=r"store is failing: .* answers: 5;"):
        log.write(recs[5:6], recommender=recommender, requester="test")
    assert log.dropped == 0 and log.written == 0
    migrate(engine)  # the store answers
    assert log.flush(timeout=60)
    assert not log.failing
    log.write(recs[5:8], recommender=recommender, requester="test")  # accepted again
    log.close()
    assert _logged_ids(engine) == {r.recommendation_id for r in recs}
    assert log.written == 8 and log.dropped == 0
    engine.dispose()
    with pytest.raises(ValueError, match="flush_ms"):
        RecommendationLog(engine, flush_ms=-1)


def test_a_write_the_store_rejects_for_good_is_dropped_not_retried(model, log_store) -> None:
    """Not an outage (here the same recommendation logged twice): retrying could never
    succeed and would stop the log, so it is counted as dropped and the log goes on."""
    log = RecommendationLog(log_store, flush_ms=1)
    recommender = _greedy(model)
    recs, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:3]), k=1)
    log.write(recs[:1], recommender=recommender, requester="test")
    assert log.flush(timeout=10)
    log.write(recs[:1], recommender=recommender, requester="again")  # a duplicate id
    assert log.flush(timeout=10)
    assert log.dropped == 1 and not log.failing
    log.write(recs[1:3], recommender=recommender, requester="test")
    log.close()
    assert _logged_ids(log_store) == {r.recommendation_id for r in recs}


def test_a_row_the_store_rejects_costs_only_its_own_answer(model, log_store) -> None:
    """Answers written together (one transaction per requester and flush) are written
    one by one when that write fails for good: a duplicate id loses only itself."""
    log = RecommendationLog(log_store, flush_ms=1)
    recommender = _greedy(model)
    recs, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:4]), k=1)
    log.write(recs[:1], recommender=recommender, requester="test")
    assert log.flush(timeout=10) and log.written == 1
    log.flush_ms = 500  # the next three are queued within one flush
    for rec in (recs[1], recs[0], recs[2]):  # recs[0]: logged already
        log.write([rec], recommender=recommender, requester="test")
    assert log.flush(timeout=10)
    assert log.dropped == 1 and log.written == 3 and not log.failing
    log.write(recs[3:], recommender=recommender, requester="test")
    log.close()
    assert _logged_ids(log_store) == {r.recommendation_id for r in recs}


def test_unknown_hcps_and_batch_limit(model) -> None:
    from nextbest.errors import InvalidRequestError

    recommender = Recommender(
        model=model, version="1", exploration=EpsilonGreedy(epsilon=0, holdout_rate=0)
    )
    recs, unknown = recommender.recommend_many(hcp_ids=["H000001", "ZZZ"], k=1)
    assert unknown == ["ZZZ"] and [r.hcp_id for r in recs] == ["H000001"]
    with pytest.raises(InvalidRequestError, match="at most 1000"):
        recommender.recommend_many(hcp_ids=["H000001"] * 1001)
    assert np.all(
        recommender.rep_actions == [c.startswith("rep_") for c in recommender.action_channels]
    )


class GatedStore:
    """A store whose connections wait at ``gate`` before working: a stalled store."""

    def __init__(self, engine) -> None:
        import threading

        self.engine = engine
        self.gate = threading.Event()

    def connect(self):
        self.gate.wait(timeout=30)
        return self.engine.connect()


def test_a_stalled_store_refuses_answers_beyond_the_backlog_and_loses_none(
    model, log_store
) -> None:
    from nextbest.errors import LogBacklogFullError

    store = log_store
    gated = GatedStore(store)
    log = RecommendationLog(gated, flush_ms=1, max_backlog=20)  # type: ignore[arg-type]
    recommender = _greedy(model)
    recs, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:40]), k=1)
    for rec in recs[:20]:
        log.write([rec], recommender=recommender, requester="test")
    with pytest.raises(LogBacklogFullError, match="waiting to be logged: 20 "):
        log.write([recs[20]], recommender=recommender, requester="test")
    with pytest.raises(LogBacklogFullError):  # refused whole: nothing of it queued
        log.write(recs[21:23], recommender=recommender, requester="test")
    gated.gate.set()  # the store answers again
    assert log.flush(timeout=10)
    log.write(recs[20:40], recommender=recommender, requester="test")  # room again
    log.close()
    assert _logged_ids(store) == {r.recommendation_id for r in recs}
    assert log.written == 40 and log.dropped == 0
    # An empty queue takes one call bigger than the whole backlog.
    big = RecommendationLog(store, flush_ms=1, max_backlog=5)
    more, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:40]), k=1)
    big.write(more, recommender=recommender, requester="again")
    big.close()
    assert big.written == 40
    with pytest.raises(ValueError, match="max_backlog"):
        RecommendationLog(store, flush_ms=1, max_backlog=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        RecommendationLog(store, flush_ms=1, max_wait_s=-1)


def test_a_call_that_may_wait_is_slowed_to_the_stores_pace_not_refused(model, log_store) -> None:
    import threading

    from nextbest.errors import LogBacklogFullError

    store = log_store
    gated = GatedStore(store)
    log = RecommendationLog(gated, flush_ms=1, max_backlog=20, max_wait_s=30)  # type: ignore[arg-type]
    recommender = _greedy(model)
    recs, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:30]), k=1)
    log.write(recs[:20], recommender=recommender, requester="test")
    outcome: list[object] = []

    def batch() -> None:
        try:
            log.write(recs[20:30], recommender=recommender, requester="test", may_wait=True)
            outcome.append("queued")
        except LogBacklogFullError as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=batch)
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive() and not outcome  # waits for room instead of refusing
    with pytest.raises(LogBacklogFullError):  # a caller that may not wait is refused at once
        log.write(recs[20:21], recommender=recommender, requester="test")
    gated.gate.set()  # the store catches up: the waiting call gets its room
    waiting.join(timeout=30)
    assert outcome == ["queued"]
    log.close()
    assert _logged_ids(store) == {r.recommendation_id for r in recs}

    # A store that does not catch up in time: refused after the wait, nothing queued.
    stalled = GatedStore(store)
    short = RecommendationLog(stalled, flush_ms=1, max_backlog=5, max_wait_s=0.3)  # type: ignore[arg-type]
    more, _ = recommender.recommend_many(hcp_ids=list(recommender.hcp_ids[:6]), k=1)
    short.write(more[:5], recommender=recommender, requester="again")
    start = time.monotonic()
    with pytest.raises(LogBacklogFullError, match=r"at most 5\) after waiting 0.3 s"):
        short.write(more[5:], recommender=recommender, requester="again", may_wait=True)
    assert time.monotonic() - start >= 0.3
    stalled.gate.set()
    short.close()
    assert short.written == 5


def test_files_given_at_decision_time_only_make_eligibility_stricter(model) -> None:
    from nextbest.policy.eligibility import EligibilityIndex

    snapshot = EligibilityIndex.build(model)
    hcps = model.hcps.copy()
    catalog = model.catalog.copy()
    day = pd.Timestamp("2026-01-01")
    email = np.flatnonzero((catalog["channel"].to_numpy() == "email") & snapshot.approved(day))
    allowed = np.flatnonzero(snapshot.consent[:, email[0]])
    refused = np.flatnonzero(~snapshot.consent[:, email[0]])
    assert len(allowed) > 2 and len(refused) > 0
    hcps.loc[hcps.index[allowed[0]], "consent_email"] = False  # withdrawn since training
    hcps.loc[hcps.index[refused[0]], "consent_email"] = True  # the snapshot's refusal stands
    hcps["consent_fax"] = False  # a channel the catalog has not: nothing changes
    hcps = hcps.drop(index=hcps.index[allowed[1]])  # not in the file: the snapshot's rules
    catalog["approved_from"] = pd.Timestamp("2020-01-01")
    catalog["approved_until"] = pd.NaT
    closed, dropped = catalog.index[email[0]], catalog.index[email[1]]
    catalog.loc[closed, "approved_until"] = day - pd.Timedelta(days=1)
    catalog = catalog.drop(index=dropped)
    new = catalog.iloc[[0]].assign(action_id="unknown-to-the-model")
    catalog = pd.concat([catalog, new], ignore_index=True)

    given = EligibilityIndex.build(model, hcps=hcps, catalog=catalog)
    assert given.consent.shape == snapshot.consent.shape
    assert not given.consent[allowed[0], email].any()
    assert not given.consent[refused[0], email[0]]
    assert (given.consent[allowed[1]] == snapshot.consent[allowed[1]]).all()
    assert (given.consent <= snapshot.consent).all()
    assert (given.specialty_ok == snapshot.specialty_ok).all()
    # Closed in the file, or no longer listed: not approved; elsewhere the file's
    # open-ended windows leave the snapshot's own ends in force.
    expected = snapshot.approved(day)
    expected[email[:2]] = False
    assert given.approved(day).tolist() == expected.tolist()


def test_a_send_lists_specialty_is_spelled_as_any_and_an_empty_cell_keeps_the_models(
    model,
) -> None:
    from nextbest.policy.eligibility import EligibilityIndex

    snapshot = EligibilityIndex.build(model)
    restricted = np.flatnonzero(~snapshot.specialty_ok.all(axis=0))
    assert len(restricted) > 0, "some content is for some specialties only"
    hcps = model.hcps[["hcp_id", "specialty"]].copy()
    # "Primary Care" for primary_care, and so on: the same specialty, the same content.
    hcps["specialty"] = hcps["specialty"].str.replace("_", " ").str.title()
    spelled = EligibilityIndex.build(model, hcps=hcps)
    assert (spelled.specialty_ok == snapshot.specialty_ok).all()
    # An empty cell says nothing: the model's specialty holds.
    hcps["specialty"] = ""
    empty = EligibilityIndex.build(model, hcps=hcps)
    assert (empty.specialty_ok == snapshot.specialty_ok).all()


def test_a_send_lists_specialty_nothing_knows_is_named_with_the_one_it_resembles(
    model,
) -> None:
    """'Onkology' fits no specialty-bound action, so its HCP silently loses them all:
    said, with the specialty it is near and those known; nothing said of known ones."""
    from nextbest.policy.eligibility import EligibilityIndex
    from nextbest.service.picks import specialty_notes

    snapshot = EligibilityIndex.build(model)
    bound = np.flatnonzero(~snapshot.specialty_ok.all(axis=0))
    oncologists = np.flatnonzero(model.hcps["specialty"].to_numpy() == "oncology")
    ids = model.hcps["hcp_id"].astype(str).to_numpy()
    send = pd.DataFrame(
        {
            "hcp_id": ids[[oncologists[0], oncologists[1], 0, 1, 2]],
            "specialty": ["Onkology", "Onkology", "dermatology", "Primary Care", ""],
        }
    )
    (note,) = specialty_notes(model, "7", hcps=send)
    assert note.startswith(
        "send list: specialties that no catalog action names and no HCP of model version 7 "
        "has: 'Onkology' (2 HCPs; did you mean 'oncology'?), 'dermatology' (1 HCP); these "
        f"HCPs get none of the {len(bound)} actions approved for some specialties only"
    ), note
    assert note.endswith(
        "known specialties: cardiology, endocrinology, nephrology, oncology, primary_care"
    ), note
    # What the note warns of: the oncologist's oncology-only content is gone.
    given = EligibilityIndex.build(model, hcps=send)
    row = oncologists[0]
    assert snapshot.specialty_ok[row, bound].any()
    assert not given.specialty_ok[row, bound].any()
    # Known specialties, however spelled, empty cells or no column: nothing to say.
    assert specialty_notes(model, "7", hcps=send.iloc[3:]) == []
    assert specialty_notes(model, "7", hcps=send[["hcp_id"]]) == []


def test_logged_picks_log_nothing_until_their_file_is_written(trained, tmp_path) -> None:
    """picks --log writes its send file, then logs every answer in one transaction:
    stopped while writing (Ctrl-C, a full disk), it has logged no answer that no
    file holds."""
    from sqlalchemy import func, select

    from nextbest.service.picks import logged_picks

    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}", "holdout_rate": 0.1}
    )
    ids = [str(h) for h in registry.load_alias(settings)[0].hcps["hcp_id"][:120]]
    engine = make_engine(settings.resolved_database_url)

    def logged() -> int:
        migrate(engine)
        with make_session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(Recommendation)) or 0)

    def interrupted(frame: pd.DataFrame) -> None:
        assert len(frame) > 0  # every block was served before the file is written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        logged_picks(settings, hcp_ids=ids, before_logging=interrupted)
    assert logged() == 0

    written: list[pd.DataFrame] = []
    done = logged_picks(settings, hcp_ids=ids, before_logging=written.append)
    assert done.n_logged == len(ids) == logged()  # one answer per HCP, holdout included
    assert written[0]["recommendation_id"].tolist() == done.frame["recommendation_id"].tolist()
    engine.dispose()


def test_logged_picks_name_the_rules_they_were_picked_under(trained, tmp_path) -> None:
    import hashlib

    from sqlalchemy import select

    from nextbest.service.picks import logged_picks

    rules = tmp_path / "rules.yaml"
    rules.write_text("withdrawn_actions: [A999]\n")
    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}", "rules_file": rules}
    )
    ids = [str(h) for h in registry.load_alias(settings)[0].hcps["hcp_id"][:20]]
    done = logged_picks(settings, hcp_ids=ids)
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            found = session.scalars(select(Recommendation.rules_fingerprint)).all()
    finally:
        engine.dispose()
    assert len(found) == done.n_logged == len(ids)
    assert set(found) == {hashlib.sha256(rules.read_bytes()).hexdigest()[:12]}


def test_an_hcp_erased_while_picks_are_made_is_neither_sent_nor_logged(trained, tmp_path) -> None:
    """erase ran during a `picks --log` run: the send file still held a pick for the
    HCP, and its logged answer brought the HCP back into the log the erasure had
    emptied. Erased before the file is written, or while it is, it is in neither."""
    from sqlalchemy import select

    from nextbest.service.picks import logged_picks
    from nextbest.storage.repository import erase_hcps

    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}", "holdout_rate": 0.0}
    )
    ids = [str(h) for h in registry.load_alias(settings)[0].hcps["hcp_id"][:60]]
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    first, second = ids[3], ids[7]

    def erase(hcp: str) -> None:
        with sessions() as session:
            erase_hcps(session, hcp_ids=[hcp], requester="dpo")

    written: list[pd.DataFrame] = []

    def write(frame: pd.DataFrame) -> None:
        if not written:
            erase(second)  # while the file is being written
        written.append(frame)

    done = logged_picks(
        settings, hcp_ids=ids, progress=lambda _: erase(first), before_logging=write
    )
    try:
        with sessions() as session:
            logged = set(session.scalars(select(Recommendation.hcp_id)))
    finally:
        engine.dispose()
    assert done.erased == tuple(sorted([first, second]))
    assert first not in set(written[0]["hcp_id"]) and second in set(written[0]["hcp_id"])
    assert len(written) == 2 and not {first, second} & set(written[1]["hcp_id"])
    assert not {first, second} & set(done.frame["hcp_id"])
    assert logged == set(ids) - {first, second} and done.n_logged == len(ids) - 2


def test_an_hcp_of_the_holdout_erased_while_picks_are_made_is_not_counted_held_out(
    trained, tmp_path
) -> None:
    """`picks --log` says "logged N answers as served (M held out)": an erased HCP of
    the week's holdout was taken out of N but still counted in M, which could then
    exceed N."""
    from sqlalchemy import select

    from nextbest.service.picks import logged_picks
    from nextbest.storage.repository import erase_hcps

    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}", "holdout_rate": 0.5}
    )
    ids = [str(h) for h in registry.load_alias(settings)[0].hcps["hcp_id"][:60]]
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    # The holdout draw is one hash per HCP and week: the same HCPs are held out again.
    before = logged_picks(settings, hcp_ids=ids)
    with sessions() as session:
        held = sorted(session.scalars(select(Recommendation.hcp_id).where(Recommendation.holdout)))
    assert before.n_holdout == len(held) > 1

    def erase(_: int) -> None:
        with sessions() as session:
            erase_hcps(session, hcp_ids=[held[0]], requester="dpo")

    try:
        done = logged_picks(settings, hcp_ids=ids, progress=erase)
    finally:
        engine.dispose()
    assert done.erased == (held[0],)
    assert done.n_logged == len(ids) - 1
    assert done.n_holdout == len(held) - 1


def test_logged_picks_say_each_rules_note_once(trained, tmp_path, caplog) -> None:
    """A rules note (here: catalog channels no rule names) is said once by a `picks --log`
    run, where the send's files change no consent on file."""
    from nextbest.service.picks import logged_picks

    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  email: {cooldown_days: 3}\n")
    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}", "rules_file": rules}
    )
    ids = [str(h) for h in registry.load_alias(settings)[0].hcps["hcp_id"][:10]]
    with caplog.at_level("WARNING", logger="nextbest.policy.rules"):
        logged_picks(settings, hcp_ids=ids, hcps=pd.DataFrame({"hcp_id": ids}))
    notes = [r for r in caplog.records if "no rules for channel(s)" in r.getMessage()]
    assert len(notes) == 1, [r.getMessage() for r in notes]


def test_a_misspelt_specialty_in_a_given_catalog_is_noted_with_the_one_meant(model) -> None:
    """`picks --data`: a catalog specialty no HCP has ('cardiolgy') narrows its action
    silently (the file's and the model's specialties must both fit): said, naming the
    specialty it likely meant."""
    from nextbest.service.picks import catalog_notes

    catalog = model.catalog.copy()
    specialty = str(sorted(set(model.hcps["specialty"]))[0])
    typo = specialty[:-2] + specialty[-1]  # one letter dropped
    first, second = catalog["action_id"].iloc[0], catalog["action_id"].iloc[1]
    catalog.loc[catalog.index[0], "specialties"] = typo
    catalog.loc[catalog.index[1], "specialties"] = f"{typo};{specialty}"
    assert catalog_notes(model, "1", catalog=model.catalog) == []
    assert catalog_notes(model, "1", catalog=catalog) == [
        f"action {first}: specialties '{typo}' (did you mean '{specialty}'?) of the catalog "
        "given: no HCP of model version 1 has them, so no HCP gets it",
        f"action {second}: specialties '{typo}' (did you mean '{specialty}'?) of the catalog "
        "given: no HCP of model version 1 has them, so only HCPs of the others do",
    ]


def _without_email_consent(model, ids: list[str]) -> set[str]:
    """The HCPs of ``ids`` the model's snapshot gives no e-mail consent."""
    hcps = model.hcps.set_index("hcp_id")
    refused = hcps.index[~hcps["consent_email"].astype(bool)]
    return set(ids) & {str(h) for h in refused}


def test_picks_say_which_hcps_got_none_and_why(model) -> None:
    """`nextbest picks` wrote 148 picks for 300 HCPs and said nothing of the other
    152: every HCP without a pick is counted, either every action ruled out (no
    consent for the channel, a cool-down) or none allowed worth its cost."""
    from nextbest.service.picks import NoPick

    ids = [str(h) for h in model.hcps["hcp_id"][:150]]
    on = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    plain = picks_frame(model, hcp_ids=ids, k=1, channel="email", on=on)
    cooled, history = _emailed_yesterday(plain)
    no_pick = NoPick()
    ruled = picks_frame(
        model, hcp_ids=ids, k=1, channel="email", on=on, rules=RULES, history=history,
        no_pick=no_pick,
    )  # fmt: skip
    picked, none_allowed, none_worth = (
        set(ruled["hcp_id"]),
        set(no_pick.none_allowed),
        set(no_pick.none_worth),
    )
    # Every HCP once: picked, or in one of the two.
    assert len(no_pick.none_allowed) + len(no_pick.none_worth) + len(picked) == len(ids)
    assert picked | none_allowed | none_worth == set(ids)
    # Cooled down on e-mail, or without e-mail consent: nothing allowed.
    no_consent = _without_email_consent(model, ids)
    assert no_consent, "the world gives some HCPs no e-mail consent"
    assert set(cooled) | no_consent <= none_allowed
    # Allowed but not worth it: the HCPs plain picks gave nothing that are neither.
    assert none_worth == set(ids) - set(plain["hcp_id"]) - no_consent - none_allowed
    assert none_worth, "some HCPs have nothing worth an e-mail"


def test_logged_picks_say_which_hcps_got_none_and_why(trained, tmp_path) -> None:
    """picks --log: the answers with no item, the holdout's aside, by why."""
    from nextbest.service.picks import logged_picks

    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}", "holdout_rate": 0.1}
    )
    model = registry.load_alias(settings)[0]
    ids = [str(h) for h in model.hcps["hcp_id"][:150]]
    done = logged_picks(settings, hcp_ids=ids, channel="email")
    none_allowed, none_worth = done.no_pick.none_allowed, done.no_pick.none_worth
    picked = set(done.frame["hcp_id"])
    assert len(none_allowed) + len(none_worth) + len(picked) + done.n_holdout == len(ids)
    assert not (set(none_allowed) | set(none_worth)) & picked
    assert none_allowed and none_worth
    # Without e-mail consent and not held out: nothing allowed.
    assert set(none_allowed) <= _without_email_consent(model, ids)


def test_a_send_file_returned_with_its_events_is_told_what_to_keep(trained, tmp_path) -> None:
    """The e-mail run's file of `picks --log`, returned by the platform with each row's
    event added (event_id, event_type), was refused column by column as unknown; with
    those columns dropped, its `reason` column (each pick's explanation) was read as
    each event's reason, and rows whose explanation ran past the 256 characters stored
    were rejected. The refusal names the picks' columns once and that reason column;
    done as it says, every delivery is stored."""
    from nextbest.contract.errors import ContractError
    from nextbest.service.feedback_file import (
        COLUMNS,
        PICKS_ONLY_COLUMNS,
        ingest_events,
        read_events,
    )
    from nextbest.service.picks import LOGGED_COLUMNS, logged_picks

    assert set(PICKS_ONLY_COLUMNS) == set(LOGGED_COLUMNS) - set(COLUMNS)
    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}", "holdout_rate": 0.0}
    )
    model = registry.load_alias(settings)[0]
    ids = [str(h) for h in model.hcps["hcp_id"][:300]]
    sent = logged_picks(settings, hcp_ids=ids, k=1, channel="email").frame
    assert len(sent) > 20 and (sent["reason"].str.len() > 256).any()
    returned = sent.assign(event_id="dlv-" + sent["recommendation_id"], event_type="delivered")
    path = tmp_path / "delivered.csv"
    returned.to_csv(path, index=False)
    with pytest.raises(ContractError) as refused:
        read_events(path)
    (problem,) = refused.value.problems
    assert problem.column is None
    assert problem.message.startswith(
        "columns 'rank', 'content_id', 'score', 'expected_uplift', 'p_engage', "
        "'model_version', 'propensity', 'explored' are of a `nextbest picks` file, not of "
        "events: "
    )
    assert "drop the picks' own columns and its reason column (each pick's explanation" in (
        problem.message
    )
    kept = returned.drop(columns=[*PICKS_ONLY_COLUMNS, "reason"])
    kept.to_csv(path, index=False)
    done = ingest_events(settings, read_events(path), model=model)
    assert done.rejected == [] and done.accepted == len(sent)
