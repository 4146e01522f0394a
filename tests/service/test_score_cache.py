"""The per-worker score cache: cached answers equal fresh ones, and hits skip the model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nextbest import registry
from nextbest.learning.scoring import Scores, ScoringModel
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.service.recommend import Recommendation, Recommender


@pytest.fixture
def model(trained) -> ScoringModel:
    loaded, _ = registry.load_alias(trained.settings)
    return loaded


def _recommender(model: ScoringModel, cache_hcps: int) -> Recommender:
    return Recommender(
        model=model,
        version="1",
        exploration=EpsilonGreedy(epsilon=0.0, holdout_rate=0.0, seed=0),
        cache_pairs=cache_hcps * model.n_actions,
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
