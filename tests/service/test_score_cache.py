"""The per-worker score cache: cached answers equal fresh ones, and hits skip the model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import lightgbm as lgb
import numpy as np
import pytest

from nextbest import registry
from nextbest.learning import scoring
from nextbest.learning.reasons import explain
from nextbest.learning.scoring import Scores, ScoringModel
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.service import score_cache
from nextbest.service.recommend import Recommendation, Recommender


@pytest.fixture
def model(trained) -> ScoringModel:
    loaded, _ = registry.load_alias(trained.settings)
    return loaded


# Every answer compared is decided at this moment. On the clock, the days since the
# cut-off its reasons count ("no e-mail in 19 weeks") go up by one once a day, and
# answers compared across that instant would differ.
DECIDED = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def _recommender(model: ScoringModel, cache_hcps: int) -> Recommender:
    return Recommender(
        model=model,
        version="1",
        exploration=EpsilonGreedy(epsilon=0.0, holdout_rate=0.0, seed=0),
        cache_pairs=cache_hcps * model.n_actions,
        clock=lambda: DECIDED,
    )


def _answer(rec: Recommendation) -> list[tuple[object, ...]]:
    return [
        (i.action_id, i.score, i.expected_uplift, i.p_engage, tuple(i.reasons)) for i in rec.items
    ]


class CountingScore:
    """Counts the pairs the model is asked to score."""

    def __init__(self, model: ScoringModel) -> None:
        self.score = model.score
        self.pairs = 0

    def __call__(self, hcp_rows: np.ndarray, action_rows: np.ndarray) -> Scores:
        self.pairs += len(action_rows)
        return self.score(hcp_rows, action_rows)


def test_cached_answers_equal_fresh_ones_through_eviction(model: ScoringModel) -> None:
    fresh = _recommender(model, 0)
    cached = _recommender(model, 25)  # far fewer HCPs than asked about: evictions
    assert fresh.cache.capacity == 0 and cached.cache.capacity == 25
    hcps = list(fresh.hcp_ids[:60])
    compared = 0
    for _ in range(2):
        for h in hcps + hcps[::-1]:
            for channel in ("email", None):  # a channel's pairs first, then the rest
                want = fresh.recommend(hcp_id=h, k=5, channel=channel)
                got = cached.recommend(hcp_id=h, k=5, channel=channel)
                assert _answer(got) == _answer(want)
                compared += len(got.items)
    assert compared > 1000  # items with reasons, not empty answers
    assert len(cached.cache) == 25


def test_a_repeated_request_does_not_call_the_model(model: ScoringModel, monkeypatch) -> None:
    rec = _recommender(model, 50)
    counting = CountingScore(model)
    monkeypatch.setattr(model, "score", counting)
    h = str(rec.hcp_ids[3])
    first = rec.recommend(hcp_id=h, k=5, channel="email")
    asked = counting.pairs
    assert asked == first.n_candidates > 0
    again = rec.recommend(hcp_id=h, k=5, channel="email")
    assert counting.pairs == asked  # every pair known
    assert _answer(again) == _answer(first)
    # The other channels' pairs are new: only they are scored.
    whole = rec.recommend(hcp_id=h, k=5)
    assert counting.pairs == asked + whole.n_candidates - first.n_candidates


def test_a_new_hcp_costs_one_lightgbm_call(model: ScoringModel, monkeypatch) -> None:
    """Scores and the served items' reasons come from one leaf lookup, in the trees of
    every model at once."""
    assert model.uplift_model is not None
    calls: list[bool] = []
    predict = lgb.Booster.predict

    def counting(self: lgb.Booster, *args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("pred_leaf")))
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", counting)
    for cache_hcps in (0, 10):  # cache off, and a cache that has not seen the HCP
        calls.clear()
        answer = _recommender(model, cache_hcps).recommend(hcp_id=str(model.hcps.hcp_id[3]), k=5)
        assert len(answer.items) >= 2 and all(item.reasons for item in answer.items)
        assert calls == [True]


def test_a_new_hcp_s_model_rows_are_built_once(model: ScoringModel, monkeypatch) -> None:
    """The served items' reasons read the rows their scores were computed from, and say
    what reasons from rows built afresh say."""
    built: list[int] = []
    rows = ScoringModel.rows

    def counting(self: ScoringModel, hcp_rows: np.ndarray, action_rows: np.ndarray) -> np.ndarray:
        built.append(len(action_rows))
        return rows(self, hcp_rows, action_rows)

    monkeypatch.setattr(ScoringModel, "rows", counting)
    for cache_hcps in (0, 10):  # cache off, and a cache that has not seen the HCP
        built.clear()
        rec = _recommender(model, cache_hcps)
        # At the cut-off: reasons speak of the snapshot as it is.
        answer = rec.recommend(hcp_id=str(model.hcps.hcp_id[3]), k=5, on=rec.as_of)
        assert len(answer.items) >= 2
        assert built == [answer.n_candidates]
        h = np.full(len(answer.items), 3)
        a = model.action_index.get_indexer([i.action_id for i in answer.items])
        scores = model.score(h, a)
        again = explain(model, rows(model, h, a), a, h, scores)
        assert [i.reasons for i in answer.items] == again


def test_small_blocks_keep_their_leaves_and_score_as_lightgbm_does(
    model: ScoringModel, monkeypatch
) -> None:
    assert model.uplift_model is not None
    hcps = np.repeat(np.arange(3), model.n_actions)
    actions = np.tile(np.arange(model.n_actions), 3)
    X = model.rows(hcps, actions)
    kept = model.score_rows(X, actions)
    plain = model.score_rows(X, actions, keep_paths=False)
    assert kept.paths is not None and plain.paths is None
    assert kept.paths.engagement.shape == (len(X), model.engagement.n_trees_)
    for ours, lightgbm in ((kept.uplift, plain.uplift), (kept.p_engage, plain.p_engage)):
        np.testing.assert_allclose(ours, lightgbm, rtol=0, atol=1e-12)
    # A block with more leaves than the limit (a batch) predicts without keeping them.
    monkeypatch.setattr(scoring, "PATH_CELLS", len(X) * model.uplift_model.n_path_trees - 1)
    assert model.score_rows(X, actions).paths is None


def test_batches_larger_than_the_cache_bypass_it(model: ScoringModel) -> None:
    fresh = _recommender(model, 0)
    small = _recommender(model, 10)
    hcps = list(fresh.hcp_ids[:40])
    want, _ = fresh.recommend_many(hcp_ids=hcps, k=2)
    got, _ = small.recommend_many(hcp_ids=hcps, k=2)
    assert [_answer(r) for r in got] == [_answer(r) for r in want]
    assert len(small.cache) == 0
    got, _ = small.recommend_many(hcp_ids=hcps[:10], k=2)  # fits: kept
    assert [_answer(r) for r in got] == [_answer(r) for r in want[:10]]
    assert len(small.cache) == 10


def test_concurrent_requests_with_evictions_get_fresh_answers(model: ScoringModel) -> None:
    fresh = _recommender(model, 0)
    cached = _recommender(model, 8)
    hcps = [str(h) for h in fresh.hcp_ids[:30]]
    want = {h: _answer(fresh.recommend(hcp_id=h, k=5)) for h in hcps}
    asks = [hcps[(7 * i) % len(hcps)] for i in range(600)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda h: (h, _answer(cached.recommend(hcp_id=h, k=5))), asks))
    wrong = [h for h, answer in got if answer != want[h]]
    assert not wrong


def test_a_cached_list_of_reasons_is_not_shared_with_the_answer(model: ScoringModel) -> None:
    rec = _recommender(model, 10)
    h = str(rec.hcp_ids[0])
    first = rec.recommend(hcp_id=h, k=1)
    first.items[0].reasons.append("changed by a caller")
    assert "changed by a caller" not in rec.recommend(hcp_id=h, k=1).items[0].reasons


def test_values_computed_for_an_evicted_hcp_are_not_stored_in_its_old_slot(
    model: ScoringModel, monkeypatch
) -> None:
    """While one request's pairs are scored (outside the lock), others evict its HCP."""
    cache = _recommender(model, 2).cache
    actions = np.arange(model.n_actions, dtype=np.int64)
    pair_h = np.zeros(model.n_actions, dtype=np.int64)
    score = model.score
    others = iter([np.array([1], dtype=np.int64), np.array([2], dtype=np.int64)])

    def evicting_score(hcp_rows: np.ndarray, action_rows: np.ndarray) -> Scores:
        for rows in others:  # only on the first call: ask about two other HCPs
            cache.scores(rows, pair_h, actions)
        return score(hcp_rows, action_rows)

    monkeypatch.setattr(model, "score", evicting_score)
    cache.scores(np.array([0], dtype=np.int64), pair_h, actions)
    for h in (1, 2):
        got = cache.scores(np.array([h], dtype=np.int64), pair_h, actions)
        want = score(np.full(len(actions), h), actions)
        np.testing.assert_array_equal(got.uplift, want.uplift)
        np.testing.assert_array_equal(got.p_engage, want.p_engage)


class CountingExplain:
    """Counts the items whose reasons are computed."""

    def __init__(self, explain) -> None:
        self.explain = explain
        self.items = 0

    def __call__(self, model, X, action_rows, hcp_rows, scores):
        self.items += len(action_rows)
        return self.explain(model, X, action_rows, hcp_rows, scores)


def _ask(rec: Recommender, hcps: list[str]) -> list[Recommendation]:
    """Requests as reps and e-mail systems mix them: some HCPs for e-mail only."""
    return [
        rec.recommend(hcp_id=h, k=3, channel="email" if n % 3 else None) for n, h in enumerate(hcps)
    ]


def test_a_reload_warms_what_the_old_cache_was_asked(model: ScoringModel, monkeypatch) -> None:
    old = _recommender(model, 50)
    hcps = [str(h) for h in old.hcp_ids[:30]]
    before = _ask(old, hcps)
    old.recommend(hcp_id=hcps[0], k=3, channel="email")  # the most recently asked now
    new = _recommender(model, 50)
    assert len(old.cache) > 20  # HCPs with no allowed action are never scored
    assert new.warm_from(old, seconds=60, block=4) == len(old.cache)
    held, scored, explained = old.cache.asked()
    held_new, scored_new, explained_new = new.cache.asked()
    np.testing.assert_array_equal(held_new, held)  # same HCPs, same order of recency
    np.testing.assert_array_equal(scored_new, scored)
    assert [sorted(e) for e in explained_new] == [sorted(e) for e in explained]
    # After the swap, the same requests need neither the model nor reasons computed.
    counting = CountingScore(model)
    monkeypatch.setattr(model, "score", counting)
    explaining = CountingExplain(score_cache.explain)
    monkeypatch.setattr(score_cache, "explain", explaining)
    after = _ask(new, hcps)
    assert counting.pairs == 0 and explaining.items == 0
    assert [_answer(r) for r in after] == [_answer(r) for r in before]
    assert sum(len(r.items) for r in after) > 30


def test_warming_skips_ids_the_new_model_lacks_and_keeps_to_its_budget(
    model: ScoringModel,
) -> None:
    old = _recommender(model, 50)
    hcps = [str(h) for h in old.hcp_ids[:20]]
    _ask(old, hcps)
    # The old model knew an HCP and an action under ids the new one lacks.
    old.hcp_ids = old.hcp_ids.copy()
    held, scored, _ = old.cache.asked()
    old.hcp_ids[held[0]] = "retired-hcp"
    gone = int(np.flatnonzero(scored.any(axis=0))[0])
    old.action_ids = old.action_ids.copy()
    old.action_ids[gone] = "retired-action"
    new = _recommender(model, 50)
    assert new.warm_from(old, seconds=60) == len(held) - 1
    held_new, scored_new, _ = new.cache.asked()
    np.testing.assert_array_equal(held_new, held[1:])
    assert not scored_new[:, gone].any()
    np.testing.assert_array_equal(
        np.delete(scored_new, gone, axis=1), np.delete(scored[1:], gone, axis=1)
    )
    # Out of time after the first block: only the most recently asked block is warmed.
    hurried = _recommender(model, 50)
    assert hurried.warm_from(old, seconds=1e-9, block=4) == 4
    np.testing.assert_array_equal(hurried.cache.asked()[0], held[-4:])
    assert _recommender(model, 50).warm_from(old, seconds=0) == 0
    assert _recommender(model, 0).warm_from(old, seconds=60) == 0


def test_start_up_warming_keeps_the_logs_order_of_recency(model: ScoringModel) -> None:
    rec = _recommender(model, 50)
    newest_first = [str(h) for h in rec.hcp_ids[:11]]
    # Blocks of 3 are filled newest first; the cache must still hold the newest as
    # the most recently asked, so that it is evicted last.
    assert rec.warm_hcps(newest_first, seconds=60, block=3) == 11
    held = [str(rec.hcp_ids[h]) for h in rec.cache.asked()[0]]
    assert held == newest_first[::-1]  # least recently asked first
    # Told to stop after the first block: only the newest block is warmed.
    stopped = _recommender(model, 50)
    assert stopped.warm_hcps(newest_first, seconds=60, block=3, stop=lambda: True) == 3
    assert [str(stopped.hcp_ids[h]) for h in stopped.cache.asked()[0]] == newest_first[2::-1]


def test_hcps_asked_about_again_survive_a_batch_of_new_ones(
    model: ScoringModel, monkeypatch
) -> None:
    """A rep's HCPs (asked twice) stay while an e-mail batch sweeps through new HCPs."""
    rec = _recommender(model, 20)
    ids = [str(h) for h in rec.hcp_ids]
    reps = ids[:8]
    for _ in range(2):
        for h in reps:
            rec.recommend(hcp_id=h, k=3)
    for start in range(8, 68, 6):  # ten batches of 6 new HCPs, 60 in all
        rec.recommend_many(hcp_ids=ids[start : start + 6], k=1, channel="email")
    assert len(rec.cache) == 20
    counting = CountingScore(model)
    monkeypatch.setattr(model, "score", counting)
    for h in reps:
        rec.recommend(hcp_id=h, k=3)
    assert counting.pairs == 0  # all eight still held
    # The batches' HCPs were asked once: only the latest ones are still held.
    rec.recommend(hcp_id=ids[8], k=3)
    assert counting.pairs > 0


def test_every_call_gets_distinct_slots_owned_by_its_hcps(model: ScoringModel) -> None:
    """Random calls (single HCPs, batches up to the whole cache, repeats) on a small cache."""
    rng = np.random.default_rng(5)
    for capacity in (1, 2, 5, 12):
        cache = _recommender(model, capacity).cache
        for _ in range(300):
            size = int(rng.integers(1, capacity + 1))
            hcps = rng.choice(40, size=size, replace=False)
            with cache._lock:
                slots = cache._claim(hcps)
            assert len(set(slots.tolist())) == size
            assert (cache._owner[slots] == hcps).all()
            held = [*cache._probation, *cache._protected]
            assert len(held) == len(set(held)) == len(cache) <= capacity
            assert len(cache._protected) <= capacity * 4 // 5
            assert set(hcps.tolist()) <= set(held)


def test_an_hcp_twice_in_one_batch_is_not_asked_again(model: ScoringModel) -> None:
    cache = _recommender(model, 5).cache
    with cache._lock:
        slots = cache._claim(np.array([3, 4, 3]))
    assert slots[0] == slots[2] != slots[1]
    assert list(cache._probation) == [3, 4] and not cache._protected
    with cache._lock:
        cache._claim(np.array([3]))  # a later call: asked again
    assert list(cache._protected) == [3]


def test_the_pair_counters_are_written_only_when_they_change(
    model: ScoringModel, monkeypatch
) -> None:
    """With several workers each increment writes the worker's metrics file: a request
    whose pairs are all scored by the model (the cache off) or all found adds nothing
    to the other counter, and the counts stay right."""
    written: list[tuple[str, float]] = []
    for result, child in (("hit", score_cache._HITS), ("miss", score_cache._MISSES)):
        inc = child.inc

        def spying(amount: float = 1, result: str = result, inc=inc) -> None:
            written.append((result, amount))
            inc(amount)

        monkeypatch.setattr(child, "inc", spying)
    counts = (score_cache._HITS._value.get(), score_cache._MISSES._value.get())
    h = str(model.hcps.hcp_id[5])
    off = _recommender(model, 0).recommend(hcp_id=h, k=5)
    assert written == [("miss", off.n_candidates)]
    cached = _recommender(model, 10)
    cached.recommend(hcp_id=h, k=5)
    written.clear()
    again = cached.recommend(hcp_id=h, k=5)
    assert written == [("hit", again.n_candidates)]
    assert score_cache._HITS._value.get() == counts[0] + again.n_candidates
    assert score_cache._MISSES._value.get() == counts[1] + 2 * off.n_candidates
