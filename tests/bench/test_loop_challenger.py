"""bench/loop.py with a challenger share: the challenger serves a round beside the
champion before the gate judges it, and the truth of what was served follows the
version that answered each HCP."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from nextbest.settings import Settings
from nextbest.simulate import SimulatedWorld, simulate_world

from .fakes import DayClock, FakeServer
from .scripts import load_bench

loop = load_bench("loop")

PERIODS = 8


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate_world(n_hcps=300, periods=PERIODS, seed=3)


def test_each_hcp_is_recorded_with_the_version_that_answered_it(world: SimulatedWorld) -> None:
    hcps = world.hcps["hcp_id"]
    theirs = frozenset(hcps.iloc[::3])
    clock = DayClock()
    server = FakeServer(world, clock, challenger="2", challenger_hcps=theirs)
    answered_by: list[np.ndarray] = []
    with httpx.Client(base_url="http://bench", transport=httpx.MockTransport(server.handle)) as c:
        served = loop.serve_round(
            c,
            loop.Timeline(world, PERIODS),
            clock,
            np.random.default_rng(0),
            1,
            decisions_per_hcp=2,
            answered_by=answered_by,
        )
    # A result that names no version was answered by its batch's.
    expected = np.where(hcps.isin(theirs), "2", "1").tolist()
    assert [by.tolist() for by in answered_by] == [expected, expected]
    assert served["served_by"] == {"1": 2 * (len(hcps) - len(theirs)), "2": 2 * len(theirs)}


def test_the_policy_as_served_is_each_hcps_versions_greedy_choice(
    world: SimulatedWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Stand-in models, their greedy choices every week: the champion touches no one,
    # the challenger chooses as the oracle of the end-of-history state.
    timeline = loop.Timeline(world, PERIODS)
    state = timeline.state()
    nothing = np.full(world.n_hcps, -1, dtype=np.int64)
    oracle = state.oracle_choice(purpose=loop.SERVED_PURPOSE)

    def greedy_choices(
        world: SimulatedWorld, model: np.ndarray, times: list[pd.Timestamp], contacts: Any
    ) -> list[np.ndarray]:
        return [model for _ in times]

    monkeypatch.setattr(loop, "greedy_choices", greedy_choices)
    champion, challenger = loop.ModelVersion("1", nothing), loop.ModelVersion("2", oracle)
    theirs = np.arange(world.n_hcps) % 2 == 1
    by = np.where(theirs, "2", "1").astype(object)

    def truth(answered: np.ndarray, judged: Any = challenger) -> Any:
        return loop.round_truth(
            timeline,
            Settings(models_dir=tmp_path / "models"),
            states=[state, state],
            answered_by=[answered, answered],
            passes=2,
            champion=champion,
            challenger=judged,
            fresh=False,
        )

    mixed = truth(by)
    assert mixed.champion.next_week == mixed.champion.over_evaluated_weeks == 0.0
    assert mixed.challenger.next_week == pytest.approx(mixed.oracle_next_week)
    assert mixed.served_over_round == pytest.approx(
        loop.per_hcp(state, np.where(theirs, oracle, nothing))
    )
    assert 0 < mixed.served_over_round < mixed.oracle_over_round
    # Judged without serving (a share of 0): what was served is the champion's policy.
    alone = truth(np.full(world.n_hcps, "1", dtype=object))
    assert alone.served_over_round == alone.champion.over_evaluated_weeks == 0.0
    assert truth(np.full(world.n_hcps, "1", dtype=object), judged=None).challenger is None
    with pytest.raises(
        RuntimeError, match=r"versions \['9'\] answered HCPs in week 0 after the history, where "
    ):
        truth(np.where(theirs, "9", "1").astype(object))


class Registry:
    """The aliases as retrain and the gate move them, with each step the loop takes."""

    def __init__(self, promote_in: set[int]) -> None:
        self.champion, self.challenger = "1", None
        self.versions = 1
        self.promote_in = promote_in
        self.round = 0
        self.steps: list[str] = []

    def serve(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.round += 1
        serving = [self.champion, *([self.challenger] if self.challenger and self.share else [])]
        self.steps.append(f"{self.round}: serve v{'+v'.join(serving)}")
        return {"served_by": {v: 10 for v in serving}}

    def retrain(self, *args: Any, **kwargs: Any) -> Any:
        self.versions += 1
        self.challenger = str(self.versions)
        self.steps.append(f"{self.round}: retrain v{self.challenger}")
        feedback = SimpleNamespace(interactions=[], n_reserved=0)
        return SimpleNamespace(
            version=self.challenger, result=SimpleNamespace(model=None), feedback=feedback
        )

    def promote(self, *args: Any, **kwargs: Any) -> Any:
        assert self.challenger is not None
        judged = SimpleNamespace(
            champion_version=self.champion,
            challenger_version=self.challenger,
            promoted=self.round in self.promote_in,
            decision=SimpleNamespace(champion={}),
        )
        if judged.promoted:
            self.champion, self.challenger = self.challenger, None
        self.steps.append(f"{self.round}: gate v{judged.challenger_version}")
        return judged

    def health(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/admin/reload":
            self.steps.append(f"{self.round}: reload")
            return httpx.Response(200, json={})
        served = self.challenger if self.share else None
        return httpx.Response(
            200, json={"model_version": self.champion, "challenger_version": served}
        )


def play(
    monkeypatch: pytest.MonkeyPatch, share: float, *, rounds: int, promote_in: set[int]
) -> tuple[Registry, list[dict[str, Any]]]:
    """Play ``rounds`` rounds with every step but the order stood in for."""
    registry = Registry(promote_in)
    registry.share = share  # type: ignore[attr-defined]

    def round_truth(*args: Any, challenger: Any, **kwargs: Any) -> Any:
        policy = loop.PolicyTruth(next_week=0.5, over_evaluated_weeks=0.5, weeks=[])
        return loop.RoundTruth(1.0, 1.0, policy, policy if challenger else None, 0.5)

    monkeypatch.setattr(loop, "serve_round", registry.serve)
    monkeypatch.setattr(loop, "retrain", registry.retrain)
    monkeypatch.setattr(loop.gate, "promote", registry.promote)
    monkeypatch.setattr(loop, "round_truth", round_truth)
    monkeypatch.setattr(loop, "gate_record", lambda *args, **kwargs: {})
    args = argparse.Namespace(
        challenger_share=share,
        rounds=rounds,
        serve_only=False,
        decisions_per_hcp=1,
        frozen_history=True,
    )
    server = loop.Server({}, Path("server.log"))
    server.reload = lambda client: "hot reload" if client.post("/v1/admin/reload") else ""
    bench = loop.ClosedLoop(
        args=args,
        timeline=SimpleNamespace(next_week=0),
        clock=None,
        server=server,
        settings=None,
        dataset=None,
        config=None,
        gate_config=None,
        rng=None,
        baseline=0.0,
        champion=loop.ModelVersion("1", None),
    )
    transport = httpx.MockTransport(registry.health)
    with httpx.Client(base_url="http://bench", transport=transport) as client:
        records = [bench.play(client, n) for n in range(1, rounds + 1)]
    return registry, records


def test_with_a_share_a_challenger_serves_a_round_before_it_is_judged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, records = play(monkeypatch, 0.5, rounds=3, promote_in={2})
    assert registry.steps == [
        "1: serve v1",
        "1: retrain v2",
        "1: reload",
        "2: serve v1+v2",
        "2: gate v2",
        "2: retrain v3",
        "2: reload",
        "3: serve v2+v3",
        "3: gate v3",
        # None retrained after the last round: no round would serve or judge it.
    ]
    assert [r["challenger_version"] for r in records] == [None, "2", "3"]
    assert [r["promoted"] for r in records] == [False, True, False]
    assert [r["champion_after_round"] for r in records] == ["1", "2", "2"]
    assert [r["retrained_version"] for r in records] == ["2", "3", None]
    assert [r["challenger_served_next"] for r in records] == ["2", "3", None]
    assert [r["served_share"] for r in records] == [
        {"1": 1.0},
        {"1": 0.5, "2": 0.5},
        {"2": 0.5, "3": 0.5},
    ]
    # Round 1 judged no challenger: no gate, no challenger figures.
    assert "challenger_true_value_per_hcp" not in records[0]
    assert "challenger_true_value_per_hcp" in records[1]


def test_without_a_share_each_challenger_is_judged_as_soon_as_it_is_retrained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, records = play(monkeypatch, 0.0, rounds=3, promote_in={2})
    assert registry.steps == [
        "1: serve v1",
        "1: retrain v2",
        "1: gate v2",
        "2: serve v1",
        "2: retrain v3",
        "2: gate v3",
        "2: reload",  # on the promotion only
        "3: serve v3",
        "3: retrain v4",
        "3: gate v4",
    ]
    assert [r["challenger_version"] for r in records] == ["2", "3", "4"]
    assert [r["champion_after_round"] for r in records] == ["1", "3", "3"]
    assert [r["challenger_served_next"] for r in records] == [None, None, None]


def test_a_server_that_does_not_serve_the_new_challenger_stops_the_bench(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unloaded(self: Registry, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/admin/reload":
            return httpx.Response(200, json={})
        return httpx.Response(
            200,
            json={
                "model_version": self.champion,
                "challenger_version": None,
                "challenger_error": "no such model",
            },
        )

    monkeypatch.setattr(Registry, "health", unloaded)
    with pytest.raises(
        RuntimeError,
        match=r"challenger_version None \(challenger_error: no such model\): the bench expects "
        r"champion v1 and challenger 2 ",
    ):
        play(monkeypatch, 0.5, rounds=2, promote_in=set())
