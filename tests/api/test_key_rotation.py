"""Key rotation with an overlap (``keys add --replace --keep-old``): the replaced key
is accepted as the same principal until its time, then refused, file change or not."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nextbest.service.apikeys import (
    ApiKeyError,
    KeyMatch,
    KeyStore,
    ReloadingKeyStore,
    add_key,
    add_key_to_file,
    hash_key,
)

from .conftest import keys_cli, keys_cli_refused

# In the past: a file written at START holds old keys that are expired by now.
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand: what the key store reads as 'now'."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _status(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def test_the_old_key_is_the_same_principal_until_its_time_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    old = add_key_to_file(path, name="crm", role="channel", channels=["sms", "email"])
    clock = Clock(START)
    store = ReloadingKeyStore(path=path, env={}, clock=clock)
    before = store.identify(old)
    assert before is not None

    added = add_key(
        path,
        name="crm",
        role="channel",
        channels=["sms", "email"],
        replace=True,
        keep_old=timedelta(hours=24),
        now=START,
    )
    until = START + timedelta(hours=24)
    assert (added.replaced, added.old_until, added.ended_until) == (True, until, None)
    (entry,) = yaml.safe_load(path.read_text())["keys"]
    assert entry["previous_key_sha256"] == hash_key(old)
    assert entry["previous_valid_until"] == "2025-01-07T09:00:00Z"
    assert old not in path.read_text() and added.key not in path.read_text()

    # Both keys work during the window, as the same principal; only the old one
    # is reported as retiring.
    assert store.identify(added.key) == before
    assert store.identify(old) == before
    matched = store.match(old)
    assert matched is not None and matched.retiring_until == until
    assert store.match(added.key) == KeyMatch(before)  # not retiring

    # The time passes; nothing writes the file: the old key is refused from its
    # time on, the new one still works.
    written = _status(path)
    clock.now = until - timedelta(seconds=1)
    assert store.identify(old) == before
    clock.now = until
    assert store.identify(old) is None
    assert store.match(old) is None
    assert store.identify(added.key) == before
    assert _status(path) == written


@pytest.mark.parametrize(
    ("keep_old", "second_kept"),
    [
        pytest.param(None, False, id="without-keep-old-stops-both-at-once"),
        pytest.param(timedelta(days=2), True, id="with-keep-old-keeps-only-the-key-it-replaces"),
    ],
)
def test_a_second_rotation_ends_the_first_ones_old_key(
    tmp_path: Path, keep_old: timedelta | None, second_kept: bool
) -> None:
    """A rotation within an earlier one's window stops the key that one kept (first)
    at once; the key it replaces (second) is kept only with keep_old."""
    path = tmp_path / "keys.yaml"
    first = add_key_to_file(path, name="crm", role="channel")
    second = add_key(
        path, name="crm", role="channel", replace=True, keep_old=timedelta(days=7), now=START
    )
    later = START + timedelta(hours=1)
    third = add_key(path, name="crm", role="channel", replace=True, keep_old=keep_old, now=later)
    assert third.replaced
    assert third.ended_until == START + timedelta(days=7)  # first's time, ended now
    assert third.old_until == (later + keep_old if keep_old else None)
    # Read while first's own time (7 days) has not run out: only the rotation stops it.
    store = KeyStore.load(path=path, env={}, clock=lambda: later)
    assert store.identify(first) is None
    assert (store.identify(second.key) is not None) == second_kept
    assert store.identify(third.key) is not None
    assert store.retiring == ({"crm": later + keep_old} if keep_old else {})
    (entry,) = yaml.safe_load(path.read_text())["keys"]
    old_fields = {"previous_key_sha256", "previous_valid_until"}
    assert old_fields & set(entry) == (old_fields if second_kept else set())


def test_a_rep_keeps_its_territory_and_purpose_under_its_old_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    rep = {"name": "msl-t001", "role": "rep", "territory_id": "T001", "purpose": "medical"}
    old = add_key_to_file(path, **rep)
    new = add_key_to_file(path, **rep, replace=True, keep_old=timedelta(minutes=90))
    store = KeyStore.load(path=path, env={})
    as_old, as_new = store.identify(old), store.identify(new)
    assert as_old is not None and as_old == as_new
    assert (as_old.name, as_old.territory_id, as_old.purpose) == ("msl-t001", "T001", "medical")


def test_keep_old_needs_a_rotation_and_a_sane_length(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    add_key_to_file(path, name="crm", role="channel")
    before = path.read_text()
    with pytest.raises(ApiKeyError, match="keeping the old key is for a rotation"):
        add_key(path, name="crm2", role="channel", keep_old=timedelta(days=1))
    for too in (timedelta(0), timedelta(days=30, seconds=1)):
        with pytest.raises(ApiKeyError, match="at most 30 days"):
            add_key(path, name="crm", role="channel", replace=True, keep_old=too)
    assert path.read_text() == before


def test_remove_drops_the_key_and_its_old_one(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    old = add_key_to_file(path, name="crm", role="channel")
    new = add_key_to_file(path, name="crm", role="channel", replace=True, keep_old=timedelta(1))
    add_key_to_file(path, name="ops", role="admin")
    removed = keys_cli("remove", "crm", "--file", str(path))
    assert removed.exit_code == 0, removed.output
    assert "with the old key a rotation kept" in removed.output
    store = KeyStore.load(path=path, env={})
    assert store.identify(old) is None and store.identify(new) is None
    assert [p.name for p in store.principals] == ["ops"]
    assert "previous_" not in path.read_text()


def test_an_expired_old_key_is_ignored_and_dropped_at_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    old = add_key_to_file(path, name="crm", role="channel")
    new = add_key(
        path, name="crm", role="channel", replace=True, keep_old=timedelta(hours=1), now=START
    )
    after = START + timedelta(hours=2)
    # Harmless: loaded without a word, refused as any unknown key.
    store = KeyStore.load(path=path, env={}, clock=lambda: after)
    assert store.identify(old) is None and store.identify(new.key) is not None
    listed = keys_cli("list", "--file", str(path))
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.stdout.splitlines() if "│ crm" in line]
    assert "expired" in row and "2025" not in row
    # The next `keys add`, of any key, drops it.
    add_key_to_file(path, name="ops", role="admin")
    entries = {e["name"]: e for e in yaml.safe_load(path.read_text())["keys"]}
    assert set(entries["crm"]) == {"name", "role", "key_sha256"}
    assert entries["crm"]["key_sha256"] == hash_key(new.key)


def test_keys_add_keep_old_and_list_show_the_time(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.yaml")
    first = keys_cli("add", "crm", "--role", "channel", "--file", path)
    assert first.exit_code == 0, first.output
    rotated = keys_cli(
        "add", "crm", "--role", "channel", "--replace", "--keep-old", "7d", "--file", path
    )
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.stdout.strip().splitlines()[-1]
    until = yaml.safe_load(Path(path).read_text())["keys"][0]["previous_valid_until"]
    said = " ".join(rotated.output.split())
    assert f"the replaced key of 'crm' is accepted until {until} (7d), then refused" in said
    assert "key 'crm' (role channel) replaced in" in said
    assert datetime.fromisoformat(until) - datetime.now(UTC) > timedelta(days=6, hours=23)
    listed = keys_cli("list", "--file", path)
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.stdout.splitlines() if "│ crm" in line]
    shown = until[:16].replace("T", " ") + " UTC"  # 2026-12-10 08:00 UTC
    assert shown in row and "expired" not in row
    assert "old key until" in listed.stdout
    # Again, within the window: the first key stops now, and the command says so.
    again = keys_cli(
        "add", "crm", "--role", "channel", "--replace", "--keep-old", "24h", "--file", path
    )
    assert again.exit_code == 0, again.output
    said = " ".join(again.output.split())
    assert f"the old key 'crm' kept from an earlier rotation (accepted until {until}) " in said
    assert "stops working now" in said
    store = KeyStore.load(path=Path(path), env={})
    assert store.identify(first.stdout.strip().splitlines()[-1]) is None
    assert store.identify(new_key) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--keep-old", "7d"],
            "--keep-old keeps the old key of a rotation: give it with --replace",
            id="without-replace",
        ),
        *(
            pytest.param(
                ["--replace", "--keep-old", given],
                f"--keep-old {given!r} is not a duration; give a whole number of minutes, "
                "hours or days: 90m, 24h, 7d (at most 30d)",
                id=f"form-{given}",
            )
            for given in ("7", "1w", "1.5d", "-2h", "d", "")
        ),
        pytest.param(
            ["--replace", "--keep-old", "31d"],
            "--keep-old '31d' is longer than the 30 days an old key may be kept",
            id="too-long",
        ),
        pytest.param(
            ["--replace", "--keep-old", "43201m"],
            "--keep-old '43201m' is longer than the 30 days",
            id="too-long-in-minutes",
        ),
        pytest.param(
            ["--replace", "--keep-old", "0h"],
            "--keep-old '0h' keeps the old key for no time; to stop it at once, leave the "
            "option out",
            id="zero",
        ),
    ],
)
def test_keys_add_refuses_a_bad_keep_old_and_leaves_the_file(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "keys.yaml"
    add_key_to_file(path, name="crm", role="channel")
    said = keys_cli_refused(path, "add", "crm", "--role", "channel", *args)
    assert message in " ".join(said.split())


def test_keys_add_with_keep_old_for_a_new_name_says_nothing_was_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    added = keys_cli(
        "add", "crm", "--role", "channel", "--replace", "--keep-old", "1d", "--file", str(path)
    )
    assert added.exit_code == 0, added.output
    assert "there was no key 'crm' to keep: nothing replaced" in added.output
    assert "key 'crm' (role channel) added in" in " ".join(added.output.split())
    assert "previous_" not in path.read_text()


GOOD_HASH = hash_key("old-key-0123456789abcdef")
ZONE = (
    "'previous_valid_until' must be a date and time in ISO 8601 with its zone, "
    "e.g. 2026-12-10T08:00:00Z"
)


@pytest.mark.parametrize(
    ("fields", "field", "said"),
    [
        pytest.param(
            '    previous_key_sha256: "abc"\n    previous_valid_until: "2026-12-10T08:00:00Z"\n',
            "previous_key_sha256",
            "'previous_key_sha256' must be 64 hex characters",
            id="short-hash",
        ),
        pytest.param(
            f'    previous_key_sha256: "{"g" * 64}"\n'
            '    previous_valid_until: "2026-12-10T08:00:00Z"\n',
            "previous_key_sha256",
            "'previous_key_sha256' must be 64 hex characters",
            id="not-hex",
        ),
        pytest.param(
            f'    previous_key_sha256: "{GOOD_HASH}"\n    previous_valid_until: "next week"\n',
            "previous_valid_until",
            ZONE,
            id="not-a-time",
        ),
        pytest.param(
            f'    previous_key_sha256: "{GOOD_HASH}"\n'
            '    previous_valid_until: "2026-12-10T08:00:00"\n',
            "previous_valid_until",
            ZONE,
            id="no-zone",
        ),
        pytest.param(
            f'    previous_key_sha256: "{GOOD_HASH}"\n    previous_valid_until: 2026-12-10\n',
            "previous_valid_until",
            ZONE,
            id="a-date-alone",
        ),
        pytest.param(
            f'    previous_key_sha256: "{GOOD_HASH}"\n    previous_valid_until: 1765353600\n',
            "previous_valid_until",
            ZONE,
            id="a-number",
        ),
        pytest.param(
            f'    previous_key_sha256: "{GOOD_HASH}"\n',
            "previous_key_sha256",
            "'previous_key_sha256' needs 'previous_valid_until' (a retiring key is kept with "
            "the time it stops being accepted)",
            id="hash-without-time",
        ),
        pytest.param(
            '    previous_valid_until: "2026-12-10T08:00:00Z"\n',
            "previous_valid_until",
            "'previous_valid_until' needs 'previous_key_sha256' (a retiring key is kept with "
            "the time it stops being accepted)",
            id="time-without-hash",
        ),
    ],
)
def test_bad_old_key_fields_name_the_file_entry_and_line(
    tmp_path: Path, fields: str, field: str, said: str
) -> None:
    path = tmp_path / "keys.yaml"
    first = "keys:\n  - name: ops\n    role: admin\n    key: " + "k" * 20 + "\n"
    crm = "  - name: crm\n    role: channel\n    key_sha256: " + hash_key("n" * 20) + "\n"
    path.write_text(first + crm + fields)
    line = 1 + next(i for i, t in enumerate(path.read_text().splitlines()) if f"{field}:" in t)
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    assert str(refused.value) == f"{path}, line {line}: keys[1] (crm): {said}"
    # The same entry in NEXTBEST_API_KEYS is refused with the same words.
    entry = yaml.safe_load(crm + fields)[0]
    with pytest.raises(ApiKeyError, match=re.escape(f"NEXTBEST_API_KEYS: keys[0] (crm): {said}")):
        KeyStore.load(path=None, env={"NEXTBEST_API_KEYS": json.dumps([entry], default=str)})


@pytest.mark.parametrize(
    "written",
    [
        pytest.param("2099-12-10T08:00:00Z", id="unquoted-utc"),
        pytest.param("'2099-12-10T09:00:00+01:00'", id="another-zone"),
        pytest.param("2099-12-10 08:00:00+00:00", id="space"),
    ],
)
def test_the_old_keys_time_may_be_written_by_hand_in_any_zone(tmp_path: Path, written: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "keys:\n  - name: crm\n    role: channel\n    key: " + "n" * 20 + "\n"
        f"    previous_key_sha256: {hash_key('o' * 20)}\n    previous_valid_until: {written}\n"
    )
    until = datetime(2099, 12, 10, 8, 0, tzinfo=UTC)
    store = KeyStore.load(path=path, env={}, clock=lambda: until - timedelta(microseconds=1))
    assert store.retiring == {"crm": until}
    assert store.identify("o" * 20) is not None
    assert KeyStore.load(path=path, env={}, clock=lambda: until).identify("o" * 20) is None
    # A later write keeps it, in a form a server reads back as the same time.
    add_key_to_file(path, name="ops", role="admin")
    assert KeyStore.load(path=path, env={}).retiring == {"crm": until}


def _retiring_requests(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "nextbest_retiring_key_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("name") == name:
                    return sample.value
    return 0.0


def _hcp(client: TestClient) -> str:
    return str(client.app.state.runtime.recommender.hcp_ids[0])


def test_a_request_with_the_old_key_is_counted_and_warned_of_once(
    client: TestClient, api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(api_settings.api_keys_file)
    rotated = keys_cli(
        "add", "crm-email", "--role", "channel", "--replace", "--keep-old", "2d", "--file", path
    )
    assert rotated.exit_code == 0, rotated.output
    new = {"Authorization": f"Bearer {rotated.stdout.strip().splitlines()[-1]}"}
    entries = {e["name"]: e for e in yaml.safe_load(Path(path).read_text())["keys"]}
    until = entries["crm-email"]["previous_valid_until"]
    counted = _retiring_requests(client, "crm-email")
    body = {"hcp_id": _hcp(client)}
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            ok = client.post("/v1/recommendations", json=body, headers=keys.channel)
            assert ok.status_code == 200, ok.text
        assert client.post("/v1/recommendations", json=body, headers=new).status_code == 200
    assert _retiring_requests(client, "crm-email") == counted + 2  # the new key is not counted
    warnings = [r for r in caplog.records if r.name == "nextbest.api.auth"]
    assert len(warnings) == 1
    [warning] = warnings
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert "'crm-email'" in message and until in message
    assert keys.channel_key not in caplog.text and hash_key(keys.channel_key) not in caplog.text
    # The requester of the old key's requests is the key's name, as for the new one.
    access = [getattr(r, "requester", None) for r in caplog.records if r.name == "nextbest.access"]
    assert access == ["crm-email"] * 3


def test_a_rep_keys_old_key_is_counted_without_its_name_on_metrics(
    client: TestClient, api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A rep key's name is a person's user id, and /metrics may be served without a
    key: its old key's requests count under "(rep)"; the log, which names it, is the
    operator's."""
    path = str(api_settings.api_keys_file)
    rotated = keys_cli(
        "add", keys.rep_name, "--role", "rep", "--territory-id", keys.territory,
        "--replace", "--keep-old", "2d", "--file", path,
    )  # fmt: skip
    assert rotated.exit_code == 0, rotated.output
    counted = _retiring_requests(client, "(rep)")
    hcp = next(
        str(h)
        for h in client.app.state.runtime.recommender.hcp_ids
        if client.app.state.runtime.recommender.territory_of(str(h)) == keys.territory
    )
    with caplog.at_level(logging.WARNING, logger="nextbest.api.auth"):
        ok = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.rep)
    assert ok.status_code == 200, ok.text
    assert _retiring_requests(client, "(rep)") == counted + 1
    assert keys.rep_name not in client.get("/metrics").text
    assert f"'{keys.rep_name}'" in caplog.text


def test_a_running_server_refuses_the_old_key_at_its_time_without_a_file_change(
    client: TestClient, api_settings, keys
) -> None:
    path: Path = api_settings.api_keys_file
    added = add_key(path, name="crm-email", role="channel", replace=True, keep_old=timedelta(1))
    assert added.old_until is not None
    clock = Clock(added.old_until - timedelta(seconds=1))
    client.app.state.api_keys = ReloadingKeyStore(path=path, clock=clock)
    new = {"Authorization": f"Bearer {added.key}"}
    body = {"hcp_id": _hcp(client)}
    assert client.post("/v1/recommendations", json=body, headers=keys.channel).status_code == 200
    written = _status(path)
    clock.now = added.old_until
    refused = client.post("/v1/recommendations", json=body, headers=keys.channel)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/recommendations", json=body, headers=new).status_code == 200
    assert _status(path) == written
