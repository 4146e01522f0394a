"""A running server picks up a promotion, and a rollback, through the hot reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextbest.loop import gate
from nextbest.loop.gate import GateConfig
from nextbest.settings import Settings

from .conftest import LoopWorld, admin_server, do_nothing, outcome_events, register

pytestmark = [pytest.mark.xdist_group("loop"), pytest.mark.e2e, pytest.mark.slow]


def test_promotion_and_rollback_reach_the_running_server(
    loop_world: LoopWorld, tmp_path: Path
) -> None:
    settings = Settings(models_dir=tmp_path / "models", seed=3)
    first = register(loop_world.honest, settings)
    # No exploration: what is served is exactly the champion's greedy choice.
    with admin_server(settings, tmp_path, NEXTBEST_EPSILON="0", NEXTBEST_SEED="3") as (
        client,
        proc,
    ):
        hcps = loop_world.world.hcps["hcp_id"].tolist()[:300]
        answer = client.post("/v1/recommendations/batch", json={"hcp_ids": hcps, "k": 1})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == first
        events = outcome_events(answer.json()["results"], 1.0)
        assert client.post("/v1/feedback", json={"events": events}).status_code == 200

        second = register(do_nothing(loop_world.honest), settings, alias="challenger")
        promoted = gate.promote(
            settings, config=GateConfig(), force=True, reason="serve the do-nothing policy"
        )
        assert promoted.promoted and promoted.challenger_version == second
        # Promotion alone does not change what a running server serves...
        one = client.post("/v1/recommendations", json={"hcp_id": hcps[0]})
        assert one.json()["model_version"] == first
        # ...the hot reload does, without a restart.
        reload = client.post("/v1/admin/reload")
        assert reload.status_code == 200, reload.text
        one = client.post("/v1/recommendations", json={"hcp_id": hcps[0]})
        assert one.json()["model_version"] == second
        assert one.json()["items"] == []  # the do-nothing policy is what is served now

        assert gate.rollback(settings).to_version == first
        assert client.post("/v1/admin/reload").status_code == 200
        one = client.post("/v1/recommendations", json={"hcp_id": hcps[0]})
        assert one.json()["model_version"] == first
        assert proc.poll() is None


def test_a_forced_promotion_needs_no_evidence(loop_world: LoopWorld, tmp_path: Path) -> None:
    """A champion that must go now, before any outcome was logged: --force promotes,
    and the run says it was forced without evidence."""
    from nextbest import registry

    settings = Settings(models_dir=tmp_path / "models", seed=3)
    first = register(loop_world.honest, settings)
    second = register(do_nothing(loop_world.honest), settings, alias="challenger")
    with pytest.raises(gate.NoEvidenceError, match="no logged decisions have an outcome yet"):
        gate.promote(settings, config=GateConfig())
    assert registry.alias_version(settings, "champion") == first
    # Forced, it must say why: refused before anything moves or is logged.
    for reason in (None, " "):
        with pytest.raises(gate.GateError, match=r"needs a reason \(--reason TEXT\)"):
            gate.promote(settings, config=GateConfig(), force=True, reason=reason)
    assert registry.alias_version(settings, "champion") == first
    assert registry.alias_version(settings, "challenger") == second
    forced = gate.promote(
        settings, config=GateConfig(), force=True, reason="withdrawn content in the champion"
    )
    assert forced.promoted and forced.decision.n_decisions == 0
    assert forced.decision.reasons[0].startswith("no evidence: no logged decisions")
    assert forced.decision.reasons[-1] == "promoted anyway: --force"
    assert registry.alias_version(settings, "champion") == second
    assert forced.run_id is not None
