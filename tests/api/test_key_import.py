"""`nextbest keys import`: a key per row of a CSV, added in one change of the key file."""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nextbest.service import apikeys
from nextbest.service.apikeys import KeyStore
from nextbest.settings import Settings, get_settings

from .conftest import Keys, keys_cli


@pytest.fixture
def served(api_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The commands' settings name the served model's models directory (their notes
    check territories and channels against it)."""
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(api_settings.resolved_models_dir))
    get_settings.cache_clear()
    yield api_settings
    get_settings.cache_clear()


def _csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


def _keys_in(out: Path) -> dict[str, dict[str, str]]:
    with out.open(newline="") as file:
        return {row["name"]: row for row in csv.DictReader(file)}


def _hcp(client: TestClient, *, inside: bool, territory: str) -> str:
    hcps = client.app.state.runtime.recommender.model.hcps
    return str(hcps.loc[(hcps["territory_id"] == territory) == inside, "hcp_id"].iat[0])


def test_imported_keys_are_accepted_at_once_each_bound_as_its_row_says(
    served: Settings, client: TestClient, keys: Keys, tmp_path: Path
) -> None:
    source = _csv(
        tmp_path / "reps.csv",
        [
            ["name", "role", "territory_id", "purpose", "channels"],
            ["rep-new", "rep", keys.territory, "", ""],
            ["rep-typo", "rep", "T-typo", "", ""],
            ["sms-gw", "channel", "", "", "SMS; email"],
        ],
    )
    out = tmp_path / "handout" / "keys.csv"
    key_file = served.api_keys_file
    assert key_file is not None
    added = keys_cli("import", str(source), "--out", str(out), "--file", str(key_file))
    assert added.exit_code == 0, added.output
    said = " ".join(added.output.split())
    assert f"3 keys added in {key_file}; they are in {out} (mode 600)" in said
    # Checked against the served model, as `keys add` checks one key.
    assert "has no HCP in territory T-typo: the requests of rep key 'rep-typo' are" in said
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    handed = _keys_in(out)
    assert list(handed) == ["rep-new", "rep-typo", "sms-gw"]
    assert handed["rep-new"]["territory_id"] == keys.territory
    assert not any(row["key"] in key_file.read_text() for row in handed.values())
    assert [p.name for p in out.parent.iterdir()] == ["keys.csv"]  # nothing staged left

    rep = {"Authorization": f"Bearer {handed['rep-new']['key']}"}
    inside = _hcp(client, inside=True, territory=keys.territory)
    outside = _hcp(client, inside=False, territory=keys.territory)
    asked = client.post("/v1/recommendations", json={"hcp_id": inside}, headers=rep)
    assert asked.status_code == 200, asked.text
    assert (
        client.post("/v1/recommendations", json={"hcp_id": outside}, headers=rep).status_code == 403
    )
    [sms] = [p for p in KeyStore.load(path=key_file, env={}).principals if p.name == "sms-gw"]
    assert sms.channels == ("sms", "email")
    # A script checking the roster against the keys reads them as JSON.
    listed = keys_cli("list", "--json", "--file", str(key_file))
    assert listed.exit_code == 0, listed.output
    by_name = {k["name"]: k for k in json.loads(listed.stdout)}
    assert by_name["sms-gw"]["channels"] == ["sms", "email"]
    assert by_name["rep-new"] == {
        "name": "rep-new",
        "role": "rep",
        "territory_id": keys.territory,
        "purpose": "promotional",
        "channels": None,
        "old_key_until": None,
    }
    assert set(by_name) == {p.name for p in KeyStore.load(path=key_file, env={}).principals}
    gateway = {"Authorization": f"Bearer {handed['sms-gw']['key']}"}
    other = client.post(
        "/v1/recommendations", json={"hcp_id": inside, "channel": "rep_visit"}, headers=gateway
    )
    assert other.status_code == 403, other.text


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        (
            [["rep-a", "rep", "T001"], ["rep-b", "rep", ""]],
            "reps.csv, row 2 (rep-b): a rep key needs 'territory_id'",
        ),
        (
            [["rep-a", "rep", "T001"], ["rep-a", "rep", "T002"]],
            "reps.csv, row 2: the name 'rep-a' is given already in {source}, row 1: each key "
            "needs a name of its own",
        ),
        (
            [["rep-a", "rep", "T001"], ["ops-admin", "admin", ""]],
            "reps.csv, row 2: {key_file} has a key named 'ops-admin' already; add the others "
            "without it, and rotate it with `nextbest keys add ops-admin --role admin --replace`",
        ),
        (
            [["rep-a", "rep", "T001"], ["rep-b", "reps", "T002"]],
            "reps.csv, row 2 (rep-b): 'role' must be one of admin, channel, rep, monitor "
            "(did you mean 'rep'?)",
        ),
    ],
)
def test_one_refused_row_adds_no_key(
    api_settings: Settings, tmp_path: Path, rows: list[list[str]], said: str
) -> None:
    source = _csv(tmp_path / "reps.csv", [["name", "role", "territory_id"], *rows])
    key_file = api_settings.api_keys_file
    assert key_file is not None
    before = key_file.read_text()
    out = tmp_path / "keys.csv"
    refused = keys_cli("import", str(source), "--out", str(out), "--file", str(key_file))
    assert refused.exit_code == 2, refused.output
    expected = said.format(source=source, key_file=key_file)
    assert f"error: {source}{expected.removeprefix('reps.csv')}" in " ".join(refused.output.split())
    assert key_file.read_text() == before
    assert not [p.name for p in tmp_path.iterdir() if "keys.csv" in p.name]  # nor staged


def test_a_column_a_key_does_not_take_is_named_with_the_one_meant(
    api_settings: Settings, tmp_path: Path
) -> None:
    source = _csv(tmp_path / "reps.csv", [["name", "role", "territory"], ["rep-a", "rep", "T1"]])
    refused = keys_cli(
        "import",
        str(source),
        "--out",
        str(tmp_path / "k.csv"),
        "--file",
        str(api_settings.api_keys_file),
    )
    assert refused.exit_code == 2
    assert (
        f"{source}: column 'territory' is not one a key takes (did you mean 'territory_id'?)"
        in " ".join(refused.output.split())
    )


def test_an_existing_out_file_is_left_as_it_was(api_settings: Settings, tmp_path: Path) -> None:
    """It may hold the keys of an earlier import, handed out nowhere else yet."""
    source = _csv(tmp_path / "reps.csv", [["name", "role", "territory_id"], ["rep-a", "rep", "T1"]])
    out = tmp_path / "keys.csv"
    out.write_text("name,role,territory_id,key\nrep-0,rep,T0,nb_earlier\n")
    key_file = api_settings.api_keys_file
    assert key_file is not None
    before = key_file.read_text()
    refused = keys_cli("import", str(source), "--out", str(out), "--file", str(key_file))
    assert refused.exit_code == 2 and f"--out: {out} exists" in refused.output, refused.output
    assert out.read_text().endswith("nb_earlier\n") and key_file.read_text() == before


def test_a_key_file_that_cannot_be_written_leaves_no_keys_file(
    api_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys are written before the key file is: they would not work."""

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(api_settings.api_keys_file))

    monkeypatch.setattr(apikeys, "_write_entries", full)
    source = _csv(tmp_path / "reps.csv", [["name", "role", "territory_id"], ["rep-a", "rep", "T1"]])
    out = tmp_path / "handout" / "keys.csv"
    refused = keys_cli(
        "import", str(source), "--out", str(out), "--file", str(api_settings.api_keys_file)
    )
    assert refused.exit_code == 2 and "No space left on device" in refused.output, refused.output
    assert list(out.parent.iterdir()) == []


def test_keys_that_cannot_be_put_in_place_are_said_where_they_are(
    api_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their hashes are in the key file: the keys must not be lost."""
    key_file = api_settings.api_keys_file
    assert key_file is not None

    def taken(src: object, dst: object) -> None:
        raise FileExistsError(17, "File exists", str(dst))

    monkeypatch.setattr(os, "link", taken)
    source = _csv(tmp_path / "reps.csv", [["name", "role", "territory_id"], ["rep-a", "rep", "T1"]])
    out = tmp_path / "keys.csv"
    failed = keys_cli("import", str(source), "--out", str(out), "--file", str(key_file))
    assert failed.exit_code == 2
    said = " ".join(failed.output.split())
    assert f"the keys were added in {key_file} but not put in {out}" in said, said
    [staged] = [p for p in tmp_path.iterdir() if p.name.startswith(".keys.csv.")]
    assert f"they are in {staged}, the only place they are" in said
    [row] = _keys_in(staged).values()
    assert KeyStore.load(path=key_file, env={}).identify(row["key"]) is not None


def test_several_keys_are_removed_in_one_change_or_none(
    api_settings: Settings, tmp_path: Path
) -> None:
    """Offboarding a team: one rewrite of the file; a name mistyped removes none."""
    key_file = api_settings.api_keys_file
    assert key_file is not None
    rows = [["name", "role", "territory_id"], *([f"rep-{i:02d}", "rep", "T1"] for i in range(12))]
    source = _csv(tmp_path / "reps.csv", rows)
    imported = keys_cli(
        "import", str(source), "--out", str(tmp_path / "k.csv"), "--file", str(key_file)
    )
    assert imported.exit_code == 0, imported.output
    before = key_file.read_text()
    refused = keys_cli("remove", "rep-00", "rep-05x", "--file", str(key_file))
    assert refused.exit_code == 2
    said = " ".join(refused.output.split())
    # 16 keys: not all listed; the one meant is named.
    assert (
        f"{key_file}: no key named 'rep-05x' (did you mean 'rep-05'?) (keys: 16 of them; "
        "`nextbest keys list` shows them); none was removed"
    ) in said, said
    assert key_file.read_text() == before
    removed = keys_cli("remove", "rep-00", "rep-01", "rep-00", "--file", str(key_file))
    assert removed.exit_code == 0, removed.output
    assert removed.output.count(f"removed from {key_file}") == 2
    left = {p.name for p in KeyStore.load(path=key_file, env={}).principals}
    assert {"rep-00", "rep-01"}.isdisjoint(left) and "rep-02" in left and len(left) == 14


def test_a_rep_moved_to_another_territory_keeps_its_key(
    served: Settings, client: TestClient, keys: Keys, tmp_path: Path
) -> None:
    """Moving a rep was an edit of the key file by hand (a typo locked the rep out
    without a word); the key its CRM holds must keep working."""
    key_file = served.api_keys_file
    assert key_file is not None
    hcps = client.app.state.runtime.recommender.model.hcps
    other = str(hcps.loc[hcps["territory_id"] != keys.territory, "territory_id"].iat[0])
    inside = _hcp(client, inside=True, territory=keys.territory)
    there = str(hcps.loc[hcps["territory_id"] == other, "hcp_id"].iat[0])
    rep = dict(keys.rep)
    assert (
        client.post("/v1/recommendations", json={"hcp_id": there}, headers=rep).status_code == 403
    )

    moved = keys_cli("edit", keys.rep_name, "--territory-id", other, "--file", str(key_file))
    assert moved.exit_code == 0, moved.output
    assert (
        f"key '{keys.rep_name}' in {key_file}: territory {keys.territory} -> {other}; its key "
        "stays the same"
    ) in " ".join(moved.output.split())
    asked = client.post("/v1/recommendations", json={"hcp_id": there}, headers=rep)
    assert asked.status_code == 200, asked.text
    assert (
        client.post("/v1/recommendations", json={"hcp_id": inside}, headers=rep).status_code == 403
    )

    # A typo is told against the served model, as `keys add` tells it.
    typo = keys_cli("edit", keys.rep_name, "--territory-id", "T-typo", "--file", str(key_file))
    assert typo.exit_code == 0, typo.output
    assert "has no HCP in territory T-typo: this rep's requests are refused" in " ".join(
        typo.stderr.split()
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["rep-2", "--territory-id", "T1"], "no key named 'rep-2' (did you mean 'rep-1'?)"),
        (["prometheus", "--territory-id", "T1"], "a monitor key reads /metrics only, so it "),
        (["rep-1", "--purpose", "medicl"], "--purpose must be one of promotional, medical, not "),
        (["rep-1"], "nothing to change: give --territory-id, --purpose or --channel"),
    ],
)
def test_an_edit_that_cannot_be_made_leaves_the_key_file(
    api_settings: Settings, args: list[str], said: str
) -> None:
    key_file = api_settings.api_keys_file
    assert key_file is not None
    before = key_file.read_text()
    refused = keys_cli("edit", *args, "--file", str(key_file))
    assert refused.exit_code == 2, refused.output
    assert said in " ".join(refused.output.split()), refused.output
    assert key_file.read_text() == before


def test_a_roster_is_read_as_every_data_file_is(api_settings: Settings, tmp_path: Path) -> None:
    """Parquet as well as CSV, and a CSV file's rows numbered as its lines are (a blank
    line counted), as the hcps and territory files are."""
    import pandas as pd

    key_file = api_settings.api_keys_file
    assert key_file is not None
    roster = tmp_path / "reps.parquet"
    pd.DataFrame(
        {"name": ["rep-p1", "rep-p2"], "role": "rep", "territory_id": ["T1", None]}
    ).to_parquet(roster)
    refused = keys_cli(
        "import", str(roster), "--out", str(tmp_path / "k.csv"), "--file", str(key_file)
    )
    assert refused.exit_code == 2
    assert f"{roster}, row 2 (rep-p2): a rep key needs 'territory_id'" in " ".join(
        refused.output.split()
    )
    source = tmp_path / "reps.csv"
    source.write_text("name,role,territory_id\nrep-c1,rep,T1\n\nrep-c2,rep,\n")
    refused = keys_cli(
        "import", str(source), "--out", str(tmp_path / "k.csv"), "--file", str(key_file)
    )
    assert f"{source}, row 3 (rep-c2): a rep key needs 'territory_id'" in " ".join(
        refused.output.split()
    ), refused.output
    pd.DataFrame({"name": ["rep-p1"], "role": ["rep"], "territory_id": ["T1"]}).to_parquet(roster)
    added = keys_cli(
        "import", str(roster), "--out", str(tmp_path / "k.csv"), "--file", str(key_file)
    )
    assert added.exit_code == 0, added.output
    assert list(_keys_in(tmp_path / "k.csv")) == ["rep-p1"]
