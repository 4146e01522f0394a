"""`make demo`'s last step: a local admin key and a curl that works as printed."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nextbest import demo
from nextbest.api.app import create_app
from nextbest.service.apikeys import hash_key
from nextbest.settings import get_settings

from .conftest import FAST, run_ok


def test_the_demo_prints_a_curl_that_a_server_answers(
    env_settings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = tmp_path / "world"
    run_ok("simulate", "--out", str(world), "--hcps", "120", "--periods", "6", "--seed", "2")
    run_ok("train", "--data", str(world), "--config", str(FAST))
    capsys.readouterr()
    curl = demo.main(["--port", "8765"])
    printed = capsys.readouterr().out
    # The key file's path and the addresses are whole on their lines, to be copied,
    # whatever the width (Rich wrapped them at 80 columns off a terminal).
    key_file = get_settings().resolved_api_keys_file
    lines = printed.splitlines()
    assert any(str(key_file) in line for line in lines), printed
    assert curl in lines
    assert any("http://127.0.0.1:8765/docs" in line for line in lines), printed
    # The README's examples read the key from $KEY: the line to set it, whole.
    exported = [line for line in lines if line.startswith("export KEY=")]
    assert len(exported) == 1, printed

    words = shlex.split(curl)
    assert words[:4] == ["curl", "-s", "-X", "POST"]
    url = words[4]
    assert url == "http://127.0.0.1:8765/v1/recommendations"
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    body = words[words.index("-d") + 1]
    key = headers["Authorization"].removeprefix("Bearer ")
    assert shlex.split(exported[0]) == ["export", f"KEY={key}"]
    # Only the key's hash is kept.
    stored = key_file.read_text()
    assert key not in stored and hash_key(key) in stored
    with TestClient(create_app(get_settings())) as client:
        answer = client.post("/v1/recommendations", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"], answer.json()  # an HCP with something to do
        assert client.get("/metrics", headers=headers).status_code == 200
        # A second demo run gives a new key; the first no longer opens the API.
        again = demo.main(["--port", "8765"])
        assert again != curl
        refused = client.post("/v1/recommendations", content=body, headers=headers)
        assert refused.status_code == 401, refused.text


def test_the_demo_names_an_hcp_the_live_history_leaves_something_for(
    env_settings: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run again after the README's opt-out of the HCP it named (or any contact
    history that rules its actions out), the demo named the same HCP, chosen by the
    model alone, and its curl answered `items: []`; nor may it name an HCP in this
    week's randomized holdout."""
    world = tmp_path / "world"
    run_ok("simulate", "--out", str(world), "--hcps", "120", "--periods", "6", "--seed", "2")
    run_ok("train", "--data", str(world), "--config", str(FAST))
    capsys.readouterr()

    def call(curl: str, client: TestClient) -> tuple[str, dict[str, Any]]:
        words = shlex.split(curl)
        headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
        body = words[words.index("-d") + 1]
        answer = client.post("/v1/recommendations", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return headers["Authorization"], answer.json()

    with TestClient(create_app(get_settings())) as client:
        auth, first = call(demo.main(["--port", "8765"]), client)
        assert first["items"] and not first["holdout"], first
        withdrawn = {"event_id": "demo-stop", "event_type": "opted_out", "hcp_id": first["hcp_id"]}
        stored = client.post("/v1/feedback", json=withdrawn, headers={"Authorization": auth})
        assert stored.status_code == 200, stored.text
        _, again = call(demo.main(["--port", "8765"]), client)
    assert again["hcp_id"] != first["hcp_id"]
    assert again["items"] and not again["holdout"], again

    # A rules file that cannot be read is `nextbest serve`'s to refuse, next: the
    # demo still makes its key and curl, naming an HCP by the model alone.
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(tmp_path / "missing.yaml"))
    get_settings.cache_clear()
    assert '"hcp_id": "H' in demo.main(["--port", "8765"])
