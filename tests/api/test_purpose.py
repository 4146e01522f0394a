"""Medical and commercial requesters: a key bound to a purpose, and MSL call plans.

The world here is the shared one with one rep-visit and one rep-phone action
relabelled medical in the catalog, as a medical affairs team's catalog would list
MSL content, and a model trained on it: every plan below is scored and served for
real, through a real SQLite file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from nextbest.api.app import create_app
from nextbest.service.apikeys import ApiKeyError, KeyStore, hash_key

from .conftest import keys_cli

MSL_KEY = "msl-key-0123456789abcdef-t1"
MEDICAL_CHANNEL_KEY = "medinfo-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef-2"


@pytest.fixture(scope="module")
def medical_world(trained, tmp_path_factory: pytest.TempPathFactory):
    from nextbest import registry
    from nextbest.contract import load_dataset
    from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
    from nextbest.learning.train import train

    fast = TrainConfig(  # as the shared fixture's model is trained
        engagement=EngagementParams(n_estimators=40, num_leaves=15),
        uplift=UpliftParams(n_estimators=60, learning_rate=0.08),
    )

    data = tmp_path_factory.mktemp("medical_world")
    for table in trained.data_dir.iterdir():
        shutil.copy(table, data / table.name)
    catalog = pd.read_csv(data / "catalog.csv", dtype=str, keep_default_na=False)
    msl = [catalog.index[catalog["channel"] == rep][0] for rep in ("rep_visit", "rep_phone")]
    catalog.loc[msl, "content_type"] = "medical"
    catalog.to_csv(data / "catalog.csv", index=False)
    settings = trained.settings.model_copy(
        update={"models_dir": tmp_path_factory.mktemp("medical_models"), "tracking_uri": None}
    )
    registry.log_training_run(train(load_dataset(data), config=fast), settings)
    return settings, set(catalog.loc[msl, "action_id"])


@pytest.fixture
def client(medical_world, territory: str, tmp_path: Path):
    settings, _ = medical_world
    keys = tmp_path / "api_keys.yaml"
    entries = [
        {"name": "ops-admin", "role": "admin", "key_sha256": hash_key(ADMIN_KEY)},
        {
            "name": "msl-1",
            "role": "rep",
            "territory_id": territory,
            "purpose": "medical",
            "key_sha256": hash_key(MSL_KEY),
        },
        {
            "name": "medinfo",
            "role": "channel",
            "purpose": "medical",
            "key_sha256": hash_key(MEDICAL_CHANNEL_KEY),
        },
    ]
    keys.write_text(yaml.safe_dump({"keys": entries}))
    settings = settings.model_copy(
        update={"api_keys_file": keys, "database_url": f"sqlite:///{tmp_path / 'serve.db'}"}
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


MSL = {"Authorization": f"Bearer {MSL_KEY}"}
MEDINFO = {"Authorization": f"Bearer {MEDICAL_CHANNEL_KEY}"}


def _territory_hcps(client: TestClient, territory: str) -> list[str]:
    recommender = client.app.state.runtime.recommender
    return [str(h) for h in recommender.hcp_ids[recommender.territories[territory]]]


def test_a_key_bound_to_medical_gets_medical_content_and_may_not_ask_for_promotional(
    client: TestClient, territory: str
) -> None:
    types: set[str] = set()
    for hcp in _territory_hcps(client, territory)[:20]:
        answer = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 10}, headers=MSL)
        assert answer.status_code == 200, answer.text
        types |= {item["content_type"] for item in answer.json()["items"]}
    assert types == {"medical"}  # no purpose sent: the key's
    asked = {"hcp_id": _territory_hcps(client, territory)[0], "purpose": "promotional"}
    refused = client.post("/v1/recommendations", json=asked, headers=MSL)
    assert refused.status_code == 403, refused.text
    assert "this key is for medical requests" in refused.json()["detail"]
    # Saying its own purpose is fine; an unbound key (admin) asks for either.
    own = client.post("/v1/recommendations", json={**asked, "purpose": "medical"}, headers=MSL)
    assert own.status_code == 200, own.text
    assert client.post("/v1/recommendations", json=asked).status_code == 200

    batch = {"hcp_ids": _territory_hcps(client, territory)[:50], "k": 3}
    answer = client.post("/v1/recommendations/batch", json=batch, headers=MEDINFO)
    assert answer.status_code == 200, answer.text
    served = {i["content_type"] for r in answer.json()["results"] for i in r["items"]}
    assert served == {"medical"}
    promo = client.post(
        "/v1/recommendations/batch", json={**batch, "purpose": "promotional"}, headers=MEDINFO
    )
    assert promo.status_code == 403, promo.text


def test_an_msl_plan_holds_medical_rep_content_and_a_reps_plan_none(
    client: TestClient, medical_world, territory: str
) -> None:
    _, medical_rep_actions = medical_world
    plan = client.get("/v1/reps/msl-1/suggestions?capacity=30", headers=MSL)
    assert plan.status_code == 200, plan.text
    body = plan.json()
    assert body["purpose"] == "medical"
    assert body["suggestions"], body  # medical rep content worth a visit exists
    assert {s["content_type"] for s in body["suggestions"]} == {"medical"}
    assert {s["action_id"] for s in body["suggestions"]} <= medical_rep_actions

    # An admin planning for the MSL's name makes the MSL's plan: medical, and a
    # promotional one filed under the MSL is refused as the MSL's own key is.
    by_admin = client.get("/v1/reps/msl-1/suggestions?capacity=30")
    assert by_admin.status_code == 200 and by_admin.json()["purpose"] == "medical"
    assert {s["content_type"] for s in by_admin.json()["suggestions"]} == {"medical"}
    for headers, says in (
        ({}, "rep key 'msl-1' plans medical visits"),  # the admin's: the binding is the MSL's
        (MSL, "this key is for medical requests"),
    ):
        refused = client.get("/v1/reps/msl-1/suggestions?purpose=promotional", headers=headers)
        assert refused.status_code == 403 and says in refused.json()["detail"], refused.text
    # Under a name no rep key has, an admin plans either purpose for a territory.
    asked = f"/v1/reps/field-team/suggestions?capacity=30&territory_id={territory}"
    sales = client.get(f"{asked}&purpose=promotional")
    assert sales.status_code == 200, sales.text
    assert sales.json()["purpose"] == "promotional"
    assert not {s["action_id"] for s in sales.json()["suggestions"]} & medical_rep_actions
    # As a CRM's picklist sends it: read in any case.
    capital = client.get("/v1/reps/msl-1/suggestions?purpose=Medical", headers=MSL)
    assert capital.status_code == 200 and capital.json()["purpose"] == "medical", capital.text

    # Each suggestion is logged with the purpose it was planned for.
    from sqlalchemy import select

    from nextbest.storage.tables import Recommendation

    assert client.app.state.runtime.reclog.flush()
    ids = [s["recommendation_id"] for s in body["suggestions"]]
    with client.app.state.runtime.sessions() as session:
        logged = session.scalars(
            select(Recommendation.purpose).where(Recommendation.recommendation_id.in_(ids))
        ).all()
    assert len(logged) == len(ids) and set(logged) == {"medical"}
    # ... and the rep it was planned for, whoever's key fetched it (here an admin's).
    assert client.app.state.runtime.reclog.flush()
    fetched = [s["recommendation_id"] for s in by_admin.json()["suggestions"]]
    with client.app.state.runtime.sessions() as session:
        rows = session.execute(
            select(
                Recommendation.requester, Recommendation.rep_id, Recommendation.k_requested
            ).where(Recommendation.recommendation_id.in_(fetched))
        ).all()
    # One call suggestion asked per HCP of the plan.
    assert len(rows) == len(fetched) and set(rows) == {("ops-admin", "msl-1", 1)}


def test_a_key_purpose_must_be_one_of_the_two(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    entry = {"name": "x", "role": "channel", "purpose": "msl", "key": "k" * 20}
    path.write_text(yaml.safe_dump({"keys": [entry]}))
    with pytest.raises(ApiKeyError, match=r"keys\[0\] \(x\): 'purpose' must be one of"):
        KeyStore.load(path=path, env={})


def test_a_rep_key_without_a_purpose_is_a_sales_reps(client: TestClient, territory: str) -> None:
    """Medical content must not reach a sales rep because nobody bound the key: a rep
    key is promotional unless the file says medical (an MSL's)."""
    entry = {"name": "r", "role": "rep", "territory_id": "T1", "key": "k" * 20}
    [principal] = KeyStore.from_entries([entry], source="test", env={}).principals
    assert principal.purpose == "promotional"
    path = client.app.state.runtime.settings.resolved_api_keys_file
    entries = yaml.safe_load(path.read_text())["keys"]
    sales_key = "sales-key-0123456789abcdef"
    entries.append({"name": "sales-1", "role": "rep", "territory_id": territory, "key": sales_key})
    path.write_text(yaml.safe_dump({"keys": entries}))
    sales = {"Authorization": f"Bearer {sales_key}"}
    hcp = _territory_hcps(client, territory)[0]
    asked = {"hcp_id": hcp, "purpose": "medical"}
    assert client.post("/v1/recommendations", json=asked, headers=sales).status_code == 403
    plan = client.get("/v1/reps/sales-1/suggestions?purpose=medical", headers=sales)
    assert plan.status_code == 403, plan.text
    own = client.get("/v1/reps/sales-1/suggestions", headers=sales)
    assert own.status_code == 200 and own.json()["purpose"] == "promotional", own.text


def test_keys_add_binds_a_purpose_that_a_running_server_applies(
    client: TestClient, territory: str
) -> None:
    path = str(client.app.state.runtime.settings.resolved_api_keys_file)
    run = keys_cli("add", "medinfo-2", "--role", "channel", "--purpose", "medical", "--file", path)
    assert run.exit_code == 0, run.output
    assert "medical requests only" in " ".join(run.output.split())
    key = run.stdout.strip().splitlines()[-1]
    hcp = _territory_hcps(client, territory)[0]
    asked = {"hcp_id": hcp, "purpose": "promotional"}
    refused = client.post(
        "/v1/recommendations", json=asked, headers={"Authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 403, refused.text
    listed = keys_cli("list", "--file", path)
    row = next(line for line in listed.stdout.splitlines() if "medinfo-2" in line)
    assert "medical" in row
    bad = keys_cli("add", "x-3", "--role", "channel", "--purpose", "msl", "--file", path)
    said = " ".join(bad.output.split())
    assert bad.exit_code == 2, said
    assert "new key (x-3): --purpose must be one of promotional, medical, not 'msl' (or" in said


def test_keys_bound_to_a_purpose_the_catalog_has_no_content_for_are_noted() -> None:
    from nextbest.service.apikeys import Principal, key_purpose_notes

    offered = {("rep_visit", "promotional"), ("email", "medical"), ("email", "promotional")}
    keys = [
        Principal("msl-1", "rep", territory_id="T1", purpose="medical"),
        Principal("rep-1", "rep", territory_id="T1", purpose="promotional"),
        Principal("medinfo", "channel", purpose="medical"),  # medical e-mail: served
        Principal("medinfo-visits", "channel", purpose="medical", channels=("rep_visit",)),
        Principal("medinfo-sms", "channel", purpose="medical", channels=("sms",)),
        Principal("ops", "admin"),
    ]
    assert key_purpose_notes(keys, offered) == [
        "API key 'msl-1' is for medical requests, but the served catalog has no medical "
        "content on rep channels (rep_visit): its rep plans suggest nothing until it has some",
        "API key 'medinfo-visits' is for medical requests, but the served catalog has no "
        "medical content on channel(s) rep_visit: it gets no recommendation until it has some",
    ]  # medinfo-sms: no sms in the catalog at all, which the channel notes say
    assert key_purpose_notes(keys[:1], {("email", "medical")}) == [
        "API key 'msl-1' is for medical requests, but the served catalog has no medical "
        "content on rep channels (it has none): its rep plans suggest nothing until it has some"
    ]
    assert key_purpose_notes(keys, offered | {("rep_visit", "medical")}) == []


def test_an_msls_key_before_the_catalog_has_medical_visits_is_noted_where_keys_are(
    api_settings, own_registry, keys, territory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared world's catalog, as many a commercial one, has medical content by
    e-mail and webinar only: an MSL's key is no error, but its plans are empty until
    the catalog has medical content for visits. `nextbest keys add` and the reload's
    answer say so; the medical world above, which has it, names no key."""
    from nextbest.service.apikeys import add_key_to_file
    from nextbest.settings import get_settings

    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(own_registry.resolved_models_dir))
    path = api_settings.api_keys_file
    said = (
        "is for medical requests, but the served catalog has no medical content on rep "
        "channels (rep_phone, rep_visit): its rep plans suggest nothing until it has some"
    )
    get_settings.cache_clear()
    try:
        msl = keys_cli(
            "add", "msl-2", "--role", "rep", "--territory-id", territory,
            "--purpose", "medical", "--file", str(path),
        )  # fmt: skip
        rep = keys_cli("add", "rep-2", "--role", "rep", "--territory-id", territory,
                       "--file", str(path))  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert msl.exit_code == 0 and rep.exit_code == 0, (msl.output, rep.output)
    assert f"API key 'msl-2' {said}" in " ".join(msl.stderr.split()), msl.stderr
    assert "requests, but the served catalog" not in rep.stderr, rep.stderr

    add_key_to_file(path, name="msl-3", role="rep", territory_id=territory, purpose="medical")
    with TestClient(create_app(api_settings), headers=dict(keys.admin)) as client:
        answer = client.post("/v1/admin/reload")
    assert answer.status_code == 200, answer.text
    assert answer.json()["key_notes"] == [f"API key 'msl-2' {said}", f"API key 'msl-3' {said}"]


def test_the_reload_answer_names_no_key_whose_purpose_the_catalog_serves(
    client: TestClient,
) -> None:
    answer = client.post("/v1/admin/reload")
    assert answer.status_code == 200 and answer.json()["key_notes"] == [], answer.text
