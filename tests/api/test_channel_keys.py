"""Channel keys bound to channels (``channels: [sms]``): the key file, ``nextbest
keys``, and what such a key may send and get."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from nextbest.contract.schema import channel_spelling as catalog_spelling
from nextbest.service.apikeys import ApiKeyError, KeyStore, add_key_to_file, channel_spelling

CHANNEL = {"name": "sms-gateway", "role": "channel", "key": "s" * 20}


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        pytest.param(
            {**CHANNEL, "role": "admin", "channels": ["sms"]},
            "'channels' binds a channel key to the channels it speaks for; a key of role "
            "admin takes none",
            id="admin",
        ),
        pytest.param(
            {
                "name": "r",
                "role": "rep",
                "territory_id": "T1",
                "key": "r" * 20,
                "channels": ["sms"],
            },
            "'channels' binds a channel key",
            id="rep",
        ),
        pytest.param(
            {**CHANNEL, "channels": []}, "'channels' must be a non-empty list", id="empty"
        ),
        pytest.param(
            {**CHANNEL, "channels": "sms"}, "'channels' must be a non-empty list", id="not-a-list"
        ),
        pytest.param(
            {**CHANNEL, "channels": ["sms", 7]},
            "'channels' must be a non-empty list of channel names",
            id="number",
        ),
        pytest.param(
            {**CHANNEL, "channels": ["sms", " "]},
            "'channels' must be a non-empty list of channel names",
            id="blank",
        ),
        pytest.param(
            {**CHANNEL, "channels": None},
            "'channels' must be a non-empty list of channel names",
            id="null",
        ),
        pytest.param(
            {**CHANNEL, "channels": [f"c{i}" * 10 for i in range(4)]},
            "'channels' joined with ',' must fit in 64 characters",
            id="too-long-to-log",
        ),
    ],
)
def test_bad_channels_name_the_entry_and_line(tmp_path: Path, entry: dict, match: str) -> None:
    ok = {"name": "ops", "role": "admin", "key": "a" * 20}
    said = f"({entry['name']}): {match}"
    with pytest.raises(ApiKeyError, match=re.escape(f"NEXTBEST_API_KEYS: keys[1] {said}")):
        KeyStore.load(path=None, env={"NEXTBEST_API_KEYS": json.dumps([ok, entry])})
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [entry]}, sort_keys=False))
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    line = 1 + next(i for i, t in enumerate(path.read_text().splitlines()) if "channels:" in t)
    assert str(refused.value).startswith(f"{path}, line {line}: keys[0] {said}"), str(refused.value)


def test_channels_are_spelled_as_the_catalog_spells_them() -> None:
    entry = {**CHANNEL, "channels": ["SMS", " Rep visit", "rep-visit", "e_mail"]}
    (principal,) = KeyStore.load(
        path=None, env={"NEXTBEST_API_KEYS": json.dumps([entry])}
    ).principals
    assert principal.channels == ("sms", "rep_visit", "e_mail")
    for name in ["SMS", " Rep  Visit ", "rep-visit", "E_Mail", "remote-detail\t"]:
        assert channel_spelling(name) == catalog_spelling(name)
    unbound = KeyStore.load(path=None, env={"NEXTBEST_API_KEYS": json.dumps([CHANNEL])})
    assert unbound.principals[0].channels is None


def _keys_cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from nextbest.cli import app

    return CliRunner().invoke(app, ["keys", *args])


def test_keys_add_writes_channels_and_list_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    added = _keys_cli(
        "add",
        "gw",
        "--role",
        "channel",
        "--channel",
        "SMS",
        "--channel",
        "email",
        "--file",
        str(path),
    )
    assert added.exit_code == 0, added.output
    assert "channels sms, email only" in added.output
    key = added.stdout.strip().splitlines()[-1]
    (entry,) = yaml.safe_load(path.read_text())["keys"]
    assert entry["channels"] == ["sms", "email"]
    principal = KeyStore.load(path=path, env={}).identify(key)
    assert principal is not None and principal.channels == ("sms", "email")
    add_key_to_file(path, name="crm", role="channel")
    listed = _keys_cli("list", "--file", str(path))
    assert listed.exit_code == 0, listed.output
    lines = {
        line.split()[1]: line
        for line in listed.stdout.splitlines()
        if "│ gw" in line or "│ crm" in line
    }
    assert "channels" in listed.stdout
    assert "sms, email" in lines["gw"] and "sms" not in lines["crm"]


def test_keys_add_refuses_channels_for_other_roles(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    add_key_to_file(path, name="ops", role="admin")
    before = path.read_text()
    refused = _keys_cli("add", "x", "--role", "admin", "--channel", "sms", "--file", str(path))
    assert refused.exit_code == 2
    assert "new key (x): 'channels' binds a channel key" in refused.output
    assert path.read_text() == before
