"""A live territory alignment (NEXTBEST_TERRITORIES_FILE): rep keys and rep plans follow
the file at each reload, whichever model version is served."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from nextbest import registry
from nextbest.api.app import create_app
from nextbest.service.apikeys import hash_key
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings

NEW_REP_KEY = "rep-key-0123456789abcdef-new"
NOT_TRAINED = "H-NOT-TRAINED"


@dataclass(frozen=True)
class Field:
    """The served model's HCPs and territories, and the HCPs the tests move."""

    hcps: pd.DataFrame  # hcp_id, territory_id as the model has them
    moved: str  # an HCP of rep-1's territory with a rep action worth planning
    unlisted: str  # another HCP of rep-1's territory, left out of the file


def _write_alignment(path: Path, field: Field, **moves: str) -> None:
    """The model's own alignment, minus ``field.unlisted``, plus an HCP the model does
    not know, with ``moves`` (hcp_id -> territory) applied."""
    frame = field.hcps[field.hcps["hcp_id"] != field.unlisted].copy()
    frame["territory_id"] = [moves.get(h, t) for h, t in frame.itertuples(index=False)]
    extra = pd.DataFrame({"hcp_id": [NOT_TRAINED], "territory_id": [frame["territory_id"].iat[0]]})
    pd.concat([frame, extra]).to_csv(path, index=False)


def _plan_ids(client: TestClient, rep: str, headers: dict[str, str], **params: str) -> list[str]:
    answer = client.get(f"/v1/reps/{rep}/suggestions", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return [s["hcp_id"] for s in answer.json()["suggestions"]]


@pytest.fixture
def field(own_registry: Settings, keys) -> Field:
    model, _ = registry.load_alias(own_registry)
    hcps = model.hcps[["hcp_id", "territory_id"]].astype(str).reset_index(drop=True)
    # Which HCPs of the territory a plan suggests: asked of the model's alignment.
    settings = own_registry.model_copy(update={"holdout_rate": 0.0, "epsilon": 0.0})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        capacity = str(client.app.state.runtime.recommender.rules.rep_max_capacity)
        planned = _plan_ids(client, "rep-1", keys.admin, capacity=capacity)
    ours = hcps.loc[hcps["territory_id"] == keys.territory, "hcp_id"].tolist()
    moved = planned[0]
    unlisted = next(h for h in ours if h != moved)
    return Field(hcps=hcps, moved=moved, unlisted=unlisted)


@pytest.fixture
def aligned(own_registry: Settings, keys, field: Field, tmp_path: Path) -> Settings:
    """Settings with a territory alignment file, and two more rep keys: rep-new (of
    territory T-NEW, which the file has no HCP in yet) and rep-gone (T-GONE)."""
    key_file = own_registry.resolved_api_keys_file
    entries = yaml.safe_load(key_file.read_text())["keys"]
    entries += [
        {"name": "rep-new", "role": "rep", "territory_id": "T-NEW", "key": NEW_REP_KEY},
        {
            "name": "rep-gone",
            "role": "rep",
            "territory_id": "T-GONE",
            "key_sha256": hash_key("rep-key-0123456789abcdef-gone"),
        },
    ]
    key_file.write_text(yaml.safe_dump({"keys": entries}))
    path = tmp_path / "territories.csv"
    _write_alignment(path, field)
    return own_registry.model_copy(
        update={"territories_file": path, "holdout_rate": 0.0, "epsilon": 0.0}
    )


@pytest.fixture
def client(aligned: Settings, keys) -> Iterator[TestClient]:
    with TestClient(create_app(aligned), headers=dict(keys.admin)) as c:
        yield c


NEW_REP = {"Authorization": f"Bearer {NEW_REP_KEY}"}


def _asks(client: TestClient, hcp: str, headers: dict[str, str]) -> int:
    return client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=headers).status_code


def test_a_realignment_applies_at_a_reload_without_a_new_model_version(
    client: TestClient, aligned: Settings, field: Field, keys
) -> None:
    runtime = client.app.state.runtime
    version = runtime.model_version
    moved, unlisted = field.moved, field.unlisted
    # The file's alignment from the start: an HCP it leaves out is in no territory,
    # whatever the model's hcps file said; admin and channel keys still see it.
    assert runtime.recommender.territory_of(unlisted) is None
    assert _asks(client, unlisted, keys.rep) == 403
    assert _asks(client, unlisted, keys.channel) == 200
    assert _asks(client, moved, keys.rep) == 200
    assert client.get("/v1/reps/rep-new/suggestions", headers=NEW_REP).status_code == 404

    _write_alignment(aligned.territories_file, field, **{moved: "T-NEW"})
    answer = client.post("/v1/admin/reload")
    assert answer.status_code == 200, answer.text
    reloaded = answer.json()
    assert (reloaded["version"], reloaded["changed"]) == (version, False)
    assert reloaded["territories_changed"] is True and reloaded["rules_changed"] is False
    assert reloaded["territory_notes"] == [
        f"1 HCP of {aligned.territories_file} is not known to the served model "
        f"(e.g. '{NOT_TRAINED}'): it is served once a model trained with it is",
        f"1 HCP of the served model is in no territory of {aligned.territories_file}: "
        "no rep key sees it (admin and channel keys do)",
        f"rep keys of territories T-GONE have no HCP of the served model in "
        f"{aligned.territories_file}: their requests are refused until it lists some",
    ]
    # The rep of the old territory: refused, and the HCP is out of its plan.
    assert _asks(client, moved, keys.rep) == 403
    capacity = str(runtime.recommender.rules.rep_max_capacity)
    assert moved not in _plan_ids(client, "rep-1", keys.rep, capacity=capacity)
    event = {"event_id": "old-rep", "event_type": "opened", "hcp_id": moved}
    assert client.post("/v1/feedback", json=event, headers=keys.rep).status_code == 403
    # The rep of the new territory: plans it and may send feedback on it.
    assert _plan_ids(client, "rep-new", NEW_REP) == [moved]
    assert _asks(client, moved, NEW_REP) == 200
    event = {"event_id": "new-rep", "event_type": "opened", "hcp_id": moved}
    assert client.post("/v1/feedback", json=event, headers=NEW_REP).status_code == 200
    assert client.get("/healthz").json()["model_version"] == version

    # Re-read unchanged: nothing to apply.
    assert client.post("/v1/admin/reload").json()["territories_changed"] is False

    # An HCP in two territories: the reload fails, naming the file, row and values,
    # and the alignment before it keeps serving.
    text = aligned.territories_file.read_text()
    aligned.territories_file.write_text(text + f"{moved},T-OTHER\n")
    row = len(text.splitlines())  # the data rows before it, plus the header
    failed = client.post("/v1/admin/reload")
    assert failed.status_code == 500
    detail = failed.json()["detail"]
    assert f"still serving version {version}: TerritoriesError: territory alignment " in detail
    assert (
        f"territories.csv, row {row}, column 'territory_id': its HCP is in territory "
        "'T-OTHER' here but in 'T-NEW' in row" in detail
    )
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and "TerritoriesError" in ready["last_reload_error"]
    # /readyz needs no key, and the error is logged: the rows say which HCP it is.
    assert moved not in ready["last_reload_error"] and moved not in detail
    assert _plan_ids(client, "rep-new", NEW_REP) == [moved]
    assert _asks(client, moved, keys.rep) == 403
    # Fixed, it applies; the error is gone.
    aligned.territories_file.write_text(text)
    assert client.post("/v1/admin/reload").status_code == 200
    assert "last_reload_error" not in client.get("/readyz").json()


def test_a_new_model_and_a_rollback_keep_the_files_alignment(
    client: TestClient, aligned: Settings, field: Field, keys
) -> None:
    _write_alignment(aligned.territories_file, field, **{field.moved: "T-NEW"})
    assert client.post("/v1/admin/reload").json()["territories_changed"] is True
    mlflow = registry.client(aligned)
    current = mlflow.get_model_version(aligned.model_name, "1")
    new = mlflow.create_model_version(aligned.model_name, current.source, run_id=current.run_id)
    for version in (str(new.version), "1"):  # promoted, then rolled back
        registry.set_alias(aligned, "champion", version)
        answer = client.post("/v1/admin/reload").json()
        assert (answer["version"], answer["changed"]) == (version, True)
        assert answer["territories_changed"] is False
        assert _plan_ids(client, "rep-new", NEW_REP) == [field.moved]
        assert _asks(client, field.moved, keys.rep) == 403
        assert _asks(client, field.unlisted, keys.rep) == 403


def test_without_the_setting_the_models_territories_apply(
    own_registry: Settings, field: Field, keys
) -> None:
    assert own_registry.territories_file is None
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as client:
        runtime = client.app.state.runtime
        assert runtime.alignment is None and runtime.recommender.alignment is None
        assert runtime.recommender.territory_of(field.unlisted) == keys.territory
        assert _asks(client, field.unlisted, keys.rep) == 200
        answer = client.post("/v1/admin/reload").json()
        assert answer["territories_changed"] is False and answer["territory_notes"] == []


def test_a_worker_started_with_a_bad_file_serves_all_but_rep_territories_until_it_is_fixed(
    aligned: Settings, field: Field, keys
) -> None:
    """A rejected edit left in place, then a restart (SIGHUP, a crash): the worker
    served nothing at all, e-mail traffic included. It now serves every request that
    needs no territory; rep keys and rep plans get 503 (no path in the answer), and
    /readyz says why until the file is fixed."""
    good = aligned.territories_file.read_text()
    aligned.territories_file.write_text("hcp_id,territory\nH1,T1\n")
    with TestClient(create_app(aligned), headers=dict(keys.admin)) as client:
        assert client.post("/v1/recommendations", json={"hcp_id": field.moved}).status_code == 200
        assert _asks(client, field.moved, keys.channel) == 200
        refused = client.post("/v1/recommendations", json={"hcp_id": field.moved}, headers=keys.rep)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "10"
        detail = refused.json()["detail"]
        assert detail.startswith("rep territories are unavailable: the territory alignment")
        assert str(aligned.territories_file) not in detail
        plan = client.get("/v1/reps/rep-1/suggestions", params={"territory_id": keys.territory})
        assert plan.status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        said = ready.json()
        assert said["last_reload_error"].startswith("TerritoriesError: territory alignment ")
        assert "column 'territory_id': missing required column" in said["last_reload_error"]
        assert said.get("territories_fingerprint") is None
        aligned.territories_file.write_text(good)
        client.app.state.runtime.reload()  # what the watcher does every 10 s
        ready = client.get("/readyz").json()
        assert (
            ready.get("last_reload_error") is None and len(ready["territories_fingerprint"]) == 12
        )
        assert _asks(client, field.moved, keys.rep) == 200


def test_an_edited_file_reaches_the_other_workers(aligned: Settings, field: Field) -> None:
    a, b = ServingRuntime.start(aligned), ServingRuntime.start(aligned)
    try:
        b.start_watcher()
        assert b.recommender.territory_of(field.moved) != "T-NEW"
        _write_alignment(aligned.territories_file, field, **{field.moved: "T-NEW"})
        assert a.reload(broadcast=True).territories_changed
        deadline = time.monotonic() + 15
        while b.recommender.territory_of(field.moved) != "T-NEW" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b.recommender.territory_of(field.moved) == "T-NEW", "b re-reads the file"
        assert b.alignment == a.alignment
    finally:
        a.close()
        b.close()


def test_keys_add_checks_a_territory_against_the_file(
    aligned: Settings, field: Field, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from nextbest.cli import app
    from nextbest.settings import get_settings

    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(aligned.resolved_models_dir))
    monkeypatch.setenv("NEXTBEST_TERRITORIES_FILE", str(aligned.territories_file))
    path = str(tmp_path / "keys.yaml")

    def add(name: str, territory: str) -> str:
        get_settings.cache_clear()
        try:
            args = ["keys", "add", name, "--role", "rep", "--territory-id", territory]
            done = CliRunner().invoke(app, [*args, "--file", path])
        finally:
            get_settings.cache_clear()
        assert done.exit_code == 0, done.output
        return " ".join(done.stderr.split())

    # The model has HCPs in T-NEW only once the file moves one there.
    assert (
        f"has no HCP in the territory alignment {aligned.territories_file} in territory "
        "T-NEW" in add("rep-a", "T-NEW")
    )
    _write_alignment(aligned.territories_file, field, **{field.moved: "T-NEW"})
    assert "has no HCP" not in add("rep-b", "T-NEW")
    aligned.territories_file.write_text("hcp_id,territory_id\nH1,\n")
    said = add("rep-c", "T-NEW")
    assert "refuse every reload until the territory alignment file is fixed" in said
    assert "row 1, column 'territory_id': empty value" in said


def test_a_territory_the_file_does_not_hold_is_named_as_the_files(client: TestClient, keys) -> None:
    plan = client.get("/v1/reps/ops-view/suggestions", params={"territory_id": "T-NOPE"})
    assert plan.status_code == 404
    assert plan.json()["detail"].startswith(
        "territory_id 'T-NOPE' is not known to the territory alignment file: none of its "
        "HCPs is in that territory"
    )


def test_an_admin_planning_for_no_rep_key_is_told_to_name_the_territory(
    client: TestClient, keys
) -> None:
    plan = client.get("/v1/reps/ops-view/suggestions")
    assert plan.status_code == 422
    (error,) = plan.json()["detail"]
    assert error["loc"] == ["query", "territory_id"]
    assert error["msg"] == (
        "no rep key is named 'ops-view', so an admin names the territory to plan: ?territory_id="
    )


def test_an_unchanged_file_is_not_parsed_again_at_each_reload(
    client: TestClient, aligned: Settings, field: Field, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alias poll every few seconds reloads: a file of 100,000 HCPs unchanged since
    is not read again; an edit (its time or size) is."""
    import os

    from nextbest.service.territories import TerritoryAlignment

    runtime = client.app.state.runtime
    loads: list[Path] = []
    real_load = TerritoryAlignment.load

    def counted(path: Path) -> TerritoryAlignment:
        loads.append(path)
        return real_load(path)

    monkeypatch.setattr(TerritoryAlignment, "load", counted)
    for _ in range(3):
        assert not runtime.reload(polled=True).territories_changed
    assert loads == []
    path = aligned.territories_file
    assert path is not None
    _write_alignment(path, field, **{field.moved: "T-NEW"})
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later edit
    assert runtime.reload(polled=True).territories_changed and loads == [path]
    assert runtime.recommender.territory_of(field.moved) == "T-NEW"
    # An edit keeping the size and the time (a tool restoring it, a file system of
    # whole seconds): a poll does not see it, a reload someone asks for does.
    stat = path.stat()
    _write_alignment(path, field, **{field.moved: "T-OLD"})
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert not runtime.reload(polled=True).territories_changed
    answer = client.post("/v1/admin/reload")
    assert answer.status_code == 200 and answer.json()["territories_changed"] is True
    assert runtime.recommender.territory_of(field.moved) == "T-OLD"


def test_a_fixed_file_applies_without_a_second_reload(
    aligned: Settings, field: Field, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload refused for a bad file left /readyz saying so on every worker until
    someone reloaded again after the fix; the watcher now tries it again itself."""
    import nextbest.service.runtime as runtime_module
    from nextbest.service.territories import TerritoriesError

    monkeypatch.setattr(runtime_module, "RETRY_INTERVAL_S", 1.0)
    worker = ServingRuntime.start(aligned)
    try:
        worker.start_watcher()
        path = aligned.territories_file
        assert path is not None
        path.write_text("hcp_id,territory\nH1,T1\n")
        with pytest.raises(TerritoriesError):
            worker.reload()
        assert (worker.last_reload_error or "").startswith("TerritoriesError")
        _write_alignment(path, field, **{field.moved: "T-NEW"})
        deadline = time.monotonic() + 15
        while worker.last_reload_error is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert worker.last_reload_error is None
        assert worker.recommender.territory_of(field.moved) == "T-NEW"
    finally:
        worker.close()
