"""NEXTBEST_CHALLENGER_SHARE: the challenger answers its share of HCPs beside the champion.

So that the gate judges a challenger on choices it made itself: without it, the
champion's exploration serves a challenger's choice to an HCP with a probability of
about epsilon / N, and the gate's interval for the challenger is too wide to pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from nextbest import registry
from nextbest.api.app import create_app
from nextbest.cli import app
from nextbest.contract import Dataset
from nextbest.learning.scoring import PREFERENCE_X_VALUE, UPLIFT_MODEL, ScoringModel
from nextbest.learning.train import train
from nextbest.loop import gate
from nextbest.loop.evidence import load_decisions
from nextbest.loop.gate import GateConfig
from nextbest.policy.exploration import challenger_draw
from nextbest.policy.rules import ServingRules
from nextbest.service.picks import logged_picks
from nextbest.service.runtime import ServingRuntime
from nextbest.service.serving import recommend_batch
from nextbest.settings import Settings
from nextbest.storage.db import make_engine, make_session_factory, store_session
from nextbest.storage.repository import get_recommendation

from .conftest import (
    FAST_CONFIG,
    LoopWorld,
    admin_server,
    do_nothing,
    outcome_events,
    register,
)

pytestmark = [pytest.mark.xdist_group("loop")]

SHARE = 0.5


def _store(tmp_path: Path, *, share: float = SHARE) -> Settings:
    # No exploration, no holdout: each answer is its version's greedy choice.
    return Settings(
        models_dir=tmp_path / "models",
        seed=3,
        epsilon=0.0,
        holdout_rate=0.0,
        challenger_share=share,
    )


def _alter(settings: Settings, version: str) -> None:
    """Edit a registered version's artifacts: its digest no longer matches, it fails to load."""
    with registry._model_dir(settings, version) as (root, _):
        mlmodel = next(Path(root).rglob("MLmodel"))
    mlmodel.write_text(mlmodel.read_text() + "\n# edited\n")


def test_the_challenger_answers_its_share_of_hcps_and_is_logged_as_it(
    loop_world: LoopWorld, tmp_path: Path
) -> None:
    settings = _store(tmp_path)
    first = register(loop_world.honest, settings)
    second = register(do_nothing(loop_world.honest), settings, alias="challenger")
    runtime = ServingRuntime.start(settings)
    try:
        assert runtime.model_version == first
        assert runtime.challenger_version == second
        hcps = loop_world.world.hcps["hcp_id"].astype(str).tolist()
        theirs = {h for h in hcps if challenger_draw(h, second) < SHARE}
        assert 0.35 < len(theirs) / len(hcps) < 0.65  # a fair draw over the HCPs

        recs, unknown, _ = recommend_batch(
            runtime.recommender,
            runtime.reader,
            runtime.reclog,
            requester="test",
            hcp_ids=hcps,
            k=1,
        )
        assert unknown == [] and [r.hcp_id for r in recs] == hcps  # in the order asked
        assert {r.hcp_id for r in recs if r.model_version == second} == theirs
        assert {r.hcp_id for r in recs if r.model_version == first} == set(hcps) - theirs
        # Each answered as its version chooses: the do-nothing challenger never acts.
        assert all(not r.items for r in recs if r.hcp_id in theirs)
        champion_acts = [bool(r.items) for r in recs if r.hcp_id not in theirs]
        assert sum(champion_acts) > 0.5 * len(champion_acts)

        # A single request of an HCP goes to the same version, every time.
        mine = next(h for h in hcps if h not in theirs)
        challenged = next(iter(theirs))
        for _ in range(3):
            assert runtime.recommender.recommend(hcp_id=challenged).model_version == second
            assert runtime.recommender.recommend(hcp_id=mine).model_version == first

        # Logged under the version that answered, with its own propensities, and the
        # random split that chose it: the other version, and its chance of being chosen.
        assert runtime.reclog.flush()
        with runtime.sessions() as session:
            for rec in recs[:60]:
                logged = get_recommendation(session, recommendation_id=rec.recommendation_id)
                assert logged is not None and logged.model_version == rec.model_version
                assert [i.propensity for i in logged.items] == [i.propensity for i in rec.items]
                split = (first, SHARE) if rec.hcp_id in theirs else (second, 1 - SHARE)
                assert (logged.split_with, logged.split_share) == split
        day = recs[0].created_at
        assert runtime.recommender.split(challenged, second, day) == (first, SHARE)
        assert runtime.recommender.split(mine, first, day) == (second, 1 - SHARE)
        # Without a challenger, no draw chose.
        assert runtime.recommender.with_challenger(None, 0.0).split(mine, first, day) is None
    finally:
        runtime.close()

    # A worker starting on this log warms each version's cache with the HCPs it answers.
    restarted = ServingRuntime.start(settings)
    try:
        assert restarted.wait_warm(timeout=60)
        champion = restarted.recommender
        challenger = champion.challenger
        assert challenger is not None
        warmed = set(champion.hcp_ids[champion.cache.asked()[0]].tolist())
        warmed_by_challenger = set(challenger.hcp_ids[challenger.cache.asked()[0]].tolist())
        assert warmed == set(hcps) - theirs
        assert warmed_by_challenger == theirs
    finally:
        restarted.close()


def test_a_rep_gets_the_served_versions_answer_as_its_plan_does(
    loop_world: LoopWorld, tmp_path: Path
) -> None:
    """The challenger answers the channel systems; a rep, whose call plan ranks the
    territory by the served version, gets that version's answer about one HCP too."""
    settings = _store(tmp_path)
    first = register(loop_world.honest, settings)
    # Ranking by preference x value, as one trained without outcomes would: each batch
    # result says what its own version ranks by.
    fallback = replace(do_nothing(loop_world.honest), uplift_source=PREFERENCE_X_VALUE)
    second = register(fallback, settings, alias="challenger")
    hcps = loop_world.world.hcps.astype({"hcp_id": str, "territory_id": str})
    theirs = hcps[[challenger_draw(h, second) < SHARE for h in hcps["hcp_id"]]].iloc[0]
    keys = tmp_path / "api_keys.yaml"
    keys.write_text(
        "keys:\n"
        f"  - {{name: ops, role: admin, key_sha256: {hashlib.sha256(b'admin-key').hexdigest()}}}\n"
        f"  - {{name: rep-1, role: rep, territory_id: '{theirs['territory_id']}', "
        f"key_sha256: {hashlib.sha256(b'rep-key').hexdigest()}}}\n"
    )
    keys.chmod(0o600)
    served = settings.model_copy(update={"api_keys_file": keys})
    runtime = ServingRuntime.start(served)
    try:
        with TestClient(create_app(served, runtime)) as client:

            def asked(key: str) -> str:
                answer = client.post(
                    "/v1/recommendations",
                    json={"hcp_id": theirs["hcp_id"]},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert answer.status_code == 200, answer.text
                return str(answer.json()["model_version"])

            assert asked("admin-key") == second
            assert asked("rep-key") == first
            plan = client.get(
                "/v1/reps/rep-1/suggestions", headers={"Authorization": "Bearer rep-key"}
            )
            assert plan.status_code == 200, plan.text
            assert plan.json()["model_version"] == first

            # /metrics counts each version's answers and items, a batch under both.
            before = {v: _answers(v) for v in (first, second)}
            items_before = {v: _items(v) for v in (first, second)}
            batch = client.post(
                "/v1/recommendations/batch",
                json={"hcp_ids": hcps["hcp_id"].tolist()[:200], "k": 2},
                headers={"Authorization": "Bearer admin-key"},
            )
            assert batch.status_code == 200, batch.text
            results = batch.json()["results"]
            body = batch.json()
            assert (body["model_version"], body["uplift_source"]) == (first, UPLIFT_MODEL)
            assert {(r["model_version"], r["uplift_source"]) for r in results} == {
                (first, UPLIFT_MODEL),
                (second, PREFERENCE_X_VALUE),
            }
            for version in (first, second):
                answered = sum(r["model_version"] == version for r in results)
                assert 0 < answered < len(results)
                assert _answers(version) - before[version] == answered
            # The do-nothing challenger served no item; the champion's are its own.
            assert _items(second) == items_before[second]
            assert _items(first) - items_before[first] == sum(len(r["items"]) for r in results)
            assert _items(first) > items_before[first]
    finally:
        runtime.close()


def _answers(version: str) -> float:
    return sum(
        REGISTRY.get_sample_value("nextbest_answers_total", {"holdout": held, "version": version})
        or 0.0
        for held in ("true", "false")
    )


def _items(version: str) -> float:
    """Items served by ``version``, over every channel."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "nextbest_recommendations"
        for sample in metric.samples
        if sample.name == "nextbest_recommendations_total"
        and sample.labels.get("version") == version
    )


def _marked(version: str) -> float | None:
    return REGISTRY.get_sample_value("nextbest_challenger_info", {"version": version})


def test_reloads_follow_the_challenger_alias_and_a_broken_challenger_is_left_out(
    loop_world: LoopWorld, tmp_path: Path
) -> None:
    settings = _store(tmp_path)
    first = register(loop_world.honest, settings)
    second = register(do_nothing(loop_world.honest), settings, alias="challenger")

    off = ServingRuntime.start(settings.model_copy(update={"challenger_share": 0.0}))
    try:  # no share: the alias is not loaded
        assert off.model_version == first and off.challenger_version is None
    finally:
        off.close()

    runtime = ServingRuntime.start(settings)
    try:
        assert runtime.challenger_version == second
        # New rules reach the challenger too.
        rules = ServingRules(max_items_per_channel=1)
        assert runtime.recommender.with_rules(rules).challenger.rules is rules  # type: ignore[union-attr]

        # Another challenger: loaded beside the champion, which is not reloaded.
        third = register(do_nothing(loop_world.honest), settings, alias="challenger")
        champion = runtime.recommender
        moved = runtime.reload()
        assert not moved.changed and moved.challenger_changed and moved.challenger == third
        assert runtime.recommender.model is champion.model
        assert runtime.challenger_version == third
        assert _marked(third) == 1 and _marked(second) == 0  # nextbest_challenger_info
        assert not runtime.reload().challenger_changed  # nothing moved: nothing loaded

        # Promoted (alias champion moved to it, alias challenger taken off, as `promote`
        # does): the challenger's recommender answers every HCP, not loaded again.
        held = runtime.recommender.challenger
        assert held is not None
        registry.set_alias(settings, "champion", third)
        registry.client(settings).delete_registered_model_alias(settings.model_name, "challenger")
        promoted = runtime.reload()
        assert promoted.changed and promoted.version == third and promoted.challenger is None
        assert runtime.recommender.model is held.model and runtime.recommender.cache is held.cache
        assert runtime.challenger_version is None and runtime.challenger_error is None
        assert _marked(third) == 0

        # A challenger that fails to load: the champion answers every HCP, said once.
        fourth = register(do_nothing(loop_world.honest), settings, alias="challenger")
        _alter(settings, fourth)
        result = runtime.reload()  # the champion's service does not fail with it
        assert result.challenger is None and runtime.challenger_version is None
        error = runtime.challenger_error or ""
        assert error.startswith("ArtifactAlteredError") and f"version {fourth}" in error
        assert "alias 'challenger'" in error
        assert runtime.last_reload_error is None
        assert not _marked(fourth)  # never loaded
        hcp = str(runtime.recommender.hcp_ids[0])
        assert runtime.recommender.recommend(hcp_id=hcp).model_version == third
        # Not loaded again at every poll; a forced reload tries it again.
        polled = runtime.reload(polled=True)
        assert not polled.challenger_changed and polled.challenger is None  # none answers
        assert runtime.reload(force=True).challenger is None
    finally:
        runtime.close()


def test_new_strict_rules_that_do_not_fit_the_challenger_leave_it_out(
    loop_world: LoopWorld, tmp_path: Path
) -> None:
    """A challenger retrained on a catalog without an action the champion's lists, and
    strict rules withdrawing that action: they fit the champion, not the challenger. The
    new rules serve, and the challenger it held is left out, said, not a failed reload."""
    data = loop_world.dataset
    dropped = str(loop_world.honest.catalog["action_id"].iloc[0])
    catalog = data.catalog[data.catalog["action_id"] != dropped].reset_index(drop=True)
    history = data.interactions[data.interactions["action_id"] != dropped]
    smaller = train(
        Dataset(data.hcps, catalog, history.reset_index(drop=True)), config=FAST_CONFIG
    ).model
    shipped = (Path(__file__).parents[2] / "training" / "rules.yaml").read_text()
    assert "\nwithdrawn_actions: []" in shipped
    rules = tmp_path / "rules.yaml"
    rules.write_text("strict: true\n" + shipped)  # fits both catalogs
    settings = _store(tmp_path).model_copy(update={"rules_file": rules})
    first = register(loop_world.honest, settings)
    second = register(smaller, settings, alias="challenger")
    runtime = ServingRuntime.start(settings)
    try:
        assert runtime.challenger_version == second and runtime.challenger_error is None
        before = runtime.recommender.rules.fingerprint
        withdrawing = f"\nwithdrawn_actions: ['{dropped}']"
        rules.write_text(rules.read_text().replace("\nwithdrawn_actions: []", withdrawing, 1))
        result = runtime.reload()
        assert result.rules_changed and result.version == first and not result.changed
        assert result.challenger is None and result.challenger_changed
        assert runtime.last_reload_error is None  # the champion serves the new rules
        assert runtime.recommender.rules.fingerprint != before
        assert runtime.challenger_version is None
        error = runtime.challenger_error or ""
        assert error.startswith(
            f"RulesError: model 'nextbest' version {second} (alias 'challenger'): "
        ), error
        assert "strict: true" in error and dropped in error, error
        hcps = loop_world.world.hcps["hcp_id"].astype(str).tolist()
        theirs = next(h for h in hcps if challenger_draw(h, second) < SHARE)
        assert runtime.recommender.recommend(hcp_id=theirs).model_version == first
        # Rules that fit it again: loaded once more at the next reload.
        rules.write_text(rules.read_text().replace(withdrawing, "\nwithdrawn_actions: []", 1))
        again = runtime.reload()
        assert again.challenger == second and runtime.challenger_error is None
        assert runtime.recommender.recommend(hcp_id=theirs).model_version == second
    finally:
        runtime.close()


def test_picks_logged_for_a_send_answer_the_challengers_share_as_the_batch_does(
    loop_world: LoopWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`picks --log` serves as the batch endpoint serves: the challenger answers its
    share of HCPs, prepared as the served version is (the send's catalog applies to
    both), and each row names the version that chose it. Plain picks, logged nowhere,
    rank by the served version alone, and say so."""
    settings = _store(tmp_path)
    first = register(loop_world.honest, settings)
    second = register(loop_world.honest, settings, alias="challenger")  # acts as it does
    hcps = loop_world.world.hcps["hcp_id"].astype(str).tolist()
    theirs = {h for h in hcps if challenger_draw(h, second) < SHARE}
    before = logged_picks(settings, hcp_ids=hcps, k=1)
    assert before.challenger_version == second and before.n_by_challenger == len(theirs)
    chosen = before.frame.set_index("hcp_id")
    assert set(chosen.index[chosen["model_version"] == second]) <= theirs
    assert set(chosen.index[chosen["model_version"] == first]).isdisjoint(theirs)
    assert (chosen["model_version"] == second).sum() > 0.3 * len(chosen)
    engine = make_engine(settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        for row in before.frame.head(40).itertuples():
            logged = get_recommendation(session, recommendation_id=row.recommendation_id)
            assert logged is not None and logged.model_version == row.model_version
    engine.dispose()

    # The send's catalog ends the approval of the action picked most: neither version
    # may send it (the challenger kept its model's own approval window before).
    dropped = str(before.frame["action_id"].value_counts().index[0])
    catalog = loop_world.dataset.catalog.copy()
    ended = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=1)
    catalog["approved_until"] = pd.to_datetime(catalog["approved_until"], utc=True).where(
        catalog["action_id"].astype(str) != dropped, ended
    )
    assert (before.frame[before.frame["hcp_id"].isin(theirs)]["action_id"] == dropped).any()
    after = logged_picks(settings, hcp_ids=hcps, k=1, catalog=catalog)
    assert dropped not in set(after.frame["action_id"])
    assert set(after.frame["model_version"]) == {first, second}

    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    monkeypatch.setenv("NEXTBEST_CHALLENGER_SHARE", str(SHARE))
    runner = CliRunner()
    for log in (False, True):
        out = tmp_path / f"picks-{log}.csv"
        args = ["picks", "--data", str(loop_world.data_dir), "--out", str(out)]
        ran = runner.invoke(app, args + (["--log", "--new-holdout-rate"] if log else []))
        assert ran.exit_code == 0, ran.output
        said = " ".join(ran.output.split())
        assert ("of them by the challenger, version " + second in said) is log, said
        assert (f"(model version {first} and challenger {second} for its share," in said) is log
        assert ("ranked by the served version alone" in said) is (not log), said
        assert ("model_version" in pd.read_csv(out).columns) is log


def test_explain_follows_the_share_and_withdraw_takes_the_challenger_out_of_service(
    loop_world: LoopWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _store(tmp_path)
    first = register(loop_world.honest, settings)
    second = register(do_nothing(loop_world.honest), settings, alias="challenger")
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    runner = CliRunner()
    runtime = ServingRuntime.start(settings)
    try:
        assert runtime.challenger_version == second
        # `nextbest explain` answers an HCP with the version a server answers it with.
        monkeypatch.setenv("NEXTBEST_CHALLENGER_SHARE", str(SHARE))
        hcps = loop_world.world.hcps["hcp_id"].astype(str).tolist()
        theirs = next(h for h in hcps if challenger_draw(h, second) < SHARE)
        mine = next(h for h in hcps if challenger_draw(h, second) >= SHARE)
        for hcp, version in ((theirs, second), (mine, first)):
            explained = runner.invoke(app, ["explain", hcp, "--json"])
            assert explained.exit_code == 0, explained.output
            said = " ".join(explained.output.split())
            assert f'"model_version": "{version}"' in said, said
            assert ("is in the challenger's share of HCPs" in said) is (version == second)
        asked = runner.invoke(app, ["explain", theirs, "--json", "--model", "champion"])
        assert f'"model_version": "{first}"' in " ".join(asked.output.split())

        done = runner.invoke(app, ["withdraw", "--reason", "odd picks in the field"])
        assert done.exit_code == 0, done.output
        said = " ".join(done.output.split())
        assert f"withdrew version {second}: alias 'challenger' names no version" in said
        assert registry.alias_version(settings, "challenger") is None
        tags = registry.client(settings).get_model_version(settings.model_name, second).tags
        assert tags[registry.WITHDRAWN_REASON_TAG] == "odd picks in the field"
        assert tags[registry.WITHDRAWN_TAG] and tags[registry.WITHDRAWN_BY_TAG]
        # A server drops it at its next reload: the champion answers every HCP.
        dropped = runtime.reload()
        assert dropped.challenger_changed and runtime.challenger_version is None
        listed = " ".join(runner.invoke(app, ["models"]).output.split())
        assert "withdrawn as challenger" in listed and "(odd picks in the field)" in listed
        again = runner.invoke(app, ["withdraw"])
        assert again.exit_code == 2, again.output
        assert "no challenger to withdraw: model 'nextbest' has no alias 'challenger'" in (
            " ".join(again.output.split())
        )
    finally:
        runtime.close()

    # A challenger whose history ends after the day asked about cannot answer it: the
    # served version does, there as in a server (Recommender.answering).
    honest = loop_world.honest
    earlier = pd.Timedelta(days=14)
    older = register(replace(honest, as_of=honest.as_of - earlier), settings)
    registry.set_alias(settings, "champion", older)
    later = register(do_nothing(honest), settings, alias="challenger")
    theirs = next(h for h in hcps if challenger_draw(h, later) < SHARE)
    between = (honest.as_of - earlier / 2).date().isoformat()
    for when, version in ((between, older), (None, later)):
        asked = ["explain", theirs] + (["--as-of", when] if when else [])
        explained = runner.invoke(app, asked)
        assert explained.exit_code == 0, explained.output
        said = " ".join(explained.output.split())
        assert f"what model version {version} (" in said, said
        assert ("(the challenger, for its share)" in said) is (version == later), said
        assert ("(served)" in said) is (version == older), said


@pytest.mark.e2e
@pytest.mark.slow
def test_a_server_serves_both_and_the_gate_sees_both_in_its_evidence(
    loop_world: LoopWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _store(tmp_path)
    first = register(loop_world.honest, settings)
    second = register(do_nothing(loop_world.honest), settings, alias="challenger")
    # No exploration, no holdout: each answer is its version's greedy choice.
    with admin_server(
        settings,
        tmp_path,
        NEXTBEST_EPSILON="0",
        NEXTBEST_HOLDOUT_RATE="0",
        NEXTBEST_SEED="3",
        NEXTBEST_CHALLENGER_SHARE=str(SHARE),
    ) as (client, proc):
        health = client.get("/healthz").json()
        assert health["model_version"] == first and health["challenger_version"] == second
        hcps = loop_world.world.hcps["hcp_id"].astype(str).tolist()[:400]
        answer = client.post("/v1/recommendations/batch", json={"hcp_ids": hcps, "k": 1})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert answer.json()["model_version"] == first
        for r in results:
            theirs = challenger_draw(r["hcp_id"], second) < SHARE
            assert r["model_version"] == (second if theirs else first)
        events = outcome_events(results, 1.0)
        assert client.post("/v1/feedback", json={"events": events}).status_code == 200
        evaluation = gate.evaluate(settings, config=GateConfig(evaluation_share=0.0))
        served = evaluation.served_by
        assert set(served) == {first, second} and sum(served.values()) == len(results)
        # `nextbest evaluate` says how much of its evidence the challenger served itself.
        config = tmp_path / "gate.yaml"
        config.write_text("evaluation_share: 0\n")
        monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
        said = CliRunner().invoke(app, ["evaluate", "--config", str(config)])
        assert said.exit_code == 0, said.output
        own = served[second] / len(results)
        # Every decision was the draw's, and is valued with both versions' probabilities.
        assert evaluation.split_mixed == len(results)
        assert (
            f"evidence served by v{first} {served[first]:,}, v{second} {served[second]:,}: "
            f"{own:.0%} by the challenger itself; {len(results):,} valued with both "
            "versions' probabilities (a random split chose who answered)"
        ) in " ".join(said.output.split())
        assert "served none of this evidence" not in said.output

        promoted = gate.promote(settings, config=GateConfig(), force=True, reason="test")
        assert promoted.promoted
        reload = client.post("/v1/admin/reload")
        assert reload.status_code == 200, reload.text
        assert reload.json()["version"] == second and reload.json()["challenger"] is None
        assert "challenger_version" not in client.get("/healthz").json()  # absent: none
        again = client.post("/v1/recommendations/batch", json={"hcp_ids": hcps[:50], "k": 1})
        assert {r["model_version"] for r in again.json()["results"]} == {second}
        assert proc.poll() is None


def _trained_before(model: ScoringModel, added: int) -> ScoringModel:
    """``model`` as trained before its last ``added`` HCPs joined the hcps file."""
    return replace(
        model,
        hcps=model.hcps.iloc[:-added].reset_index(drop=True),
        hcp_attrs=model.hcp_attrs[:-added],
        hcp_history=model.hcp_history[:-added],
    )


def test_hcps_only_the_challenger_knows_are_its_to_answer_and_their_feedback_is_taken(
    loop_world: LoopWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HCPs added to the hcps since the served version was trained got 404 until a
    version trained with them was promoted, which the gate may not do for long. With a
    share for the challenger, the challenger that knows them answers them whatever its
    draw, as servers, `picks --log` and `explain` do; their feedback is taken (it was
    refused as about an unknown HCP) and their contacts count against their caps."""
    settings = _store(tmp_path)
    added = 40
    first = register(_trained_before(loop_world.honest, added), settings)
    second = register(loop_world.honest, settings, alias="challenger")  # acts as it does
    hcps = loop_world.world.hcps["hcp_id"].astype(str).tolist()
    new = hcps[-added:]
    beyond_share = [h for h in new if challenger_draw(h, second) >= SHARE]
    assert beyond_share  # answered by the challenger for being new, not for their draw
    keys = tmp_path / "api_keys.yaml"
    digest = hashlib.sha256(b"admin-key").hexdigest()
    keys.write_text(f"keys:\n  - {{name: ops, role: admin, key_sha256: {digest}}}\n")
    keys.chmod(0o600)
    served = settings.model_copy(update={"api_keys_file": keys})
    admin = {"Authorization": "Bearer admin-key"}
    runtime = ServingRuntime.start(served)
    try:
        with TestClient(create_app(served, runtime)) as client:
            batch = client.post("/v1/recommendations/batch", json={"hcp_ids": hcps}, headers=admin)
            assert batch.status_code == 200, batch.text
            assert batch.json()["unknown_hcp_ids"] == []
            by_hcp = {r["hcp_id"]: r for r in batch.json()["results"]}
            events = outcome_events(batch.json()["results"], 1.0)
            fed = client.post("/v1/feedback", json={"events": events}, headers=admin)
            assert fed.status_code == 200 and fed.json()["accepted"] == len(hcps), fed.text
            assert {by_hcp[h]["model_version"] for h in new} == {second}
            assert {by_hcp[h]["model_version"] for h in hcps[:-added]} == {first, second}
            nobody = client.post("/v1/recommendations", json={"hcp_id": "H-NOBODY"}, headers=admin)
            assert nobody.status_code == 404, nobody.text

            # A send to a new HCP, reported: taken, and counted as its contact.
            hcp = next(h for h in beyond_share if by_hcp[h]["items"])
            one = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=admin)
            assert one.status_code == 200 and one.json()["model_version"] == second
            item = one.json()["items"][0]
            sent = client.post(
                "/v1/feedback",
                json={
                    "event_id": f"sent-{hcp}",
                    "event_type": "delivered",
                    "hcp_id": hcp,
                    "recommendation_id": one.json()["recommendation_id"],
                    "action_id": item["action_id"],
                },
                headers=admin,
            )
            assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
            outcome = client.post(
                "/v1/feedback",
                json={"event_id": f"nrx-{hcp}", "event_type": "outcome", "hcp_id": hcp, "value": 1},
                headers=admin,
            )
            assert outcome.status_code == 200 and outcome.json()["accepted"] == 1, outcome.text
            again = client.post(
                "/v1/recommendations", json={"hcp_id": hcp, "explain": True}, headers=admin
            )
            assert again.status_code == 200, again.text
            assert item["action_id"] not in [i["action_id"] for i in again.json()["items"]]
            excluded = again.json()["excluded"][item["action_id"]]
            assert any(f"{item['channel']}" in why for why in excluded), excluded
    finally:
        runtime.close()

    # The gate counts their decisions, on which the champion's choice is no action.
    evaluation = gate.evaluate(settings, config=GateConfig(evaluation_share=0.0), log=False)
    (said,) = [r for r in evaluation.decision.reasons if " lacks (" in r]
    with store_session(settings.resolved_database_url) as session:
        decisions = load_decisions(session)
    is_new = decisions["hcp_id"].astype(str).isin(set(new))
    theirs = int(is_new.sum())
    assert theirs > added  # the batch's and the single requests'
    # No draw chose the challenger for them: no split is logged, and the gate values
    # them with the challenger's probabilities alone; the others with both.
    assert decisions.loc[is_new, "split_with"].isna().all()
    drawn = decisions[~is_new]
    other = drawn["model_version"].map({first: second, second: first})
    assert (drawn["split_with"] == other).all() and (drawn["split_share"] == SHARE).all()
    assert evaluation.split_mixed == len(drawn)
    assert said.startswith(
        f"the challenger, version {second}, knows {added} HCPs the champion, version {first}, "
        f"lacks ({', '.join(new[:5])} and {added - 5} more)"
    ), said
    assert said.endswith(
        f"; {theirs:,} evaluated decisions are theirs, where the champion's choice is no action"
    ), said

    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    monkeypatch.setenv("NEXTBEST_CHALLENGER_SHARE", str(SHARE))
    runner = CliRunner()
    explained = runner.invoke(app, ["explain", beyond_share[-1], "--json"])
    assert explained.exit_code == 0, explained.output
    said = " ".join(explained.output.split())
    assert f'"model_version": "{second}"' in said, said
    assert (
        f"is not known to the served version, {first}, and known to the challenger "
        f"(NEXTBEST_CHALLENGER_SHARE {SHARE:g}): servers answer it with version {second}"
    ) in said, said

    out = tmp_path / "picks.csv"
    picks = ["picks", "--data", str(loop_world.data_dir), "--out", str(out)]
    ran = runner.invoke(app, [*picks, "--log", "--new-holdout-rate"])
    assert ran.exit_code == 0, ran.output
    said = " ".join(ran.output.split())
    assert f"{added} HCPs are not in model version {first}'s snapshot: " in said, said
    assert (
        f"{added} HCPs not in version {first}'s snapshot were answered by the challenger, "
        "which knows them; 0 HCPs no version knows got no picks"
    ) in said, said
    picked = pd.read_csv(out, dtype={"hcp_id": str, "model_version": str})
    assert set(picked[picked["hcp_id"].isin(new)]["model_version"]) == {second}
    fed = tmp_path / "feedback.csv"
    pd.DataFrame(
        {"event_id": ["nrx-file"], "event_type": ["outcome"], "hcp_id": [new[0]], "value": [2.0]}
    ).to_csv(fed, index=False)
    stored = runner.invoke(app, ["feedback", str(fed)])
    assert stored.exit_code == 0, stored.output
    assert "stored 1 of 1 event" in " ".join(stored.output.split()), stored.output
