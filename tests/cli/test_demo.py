"""`make demo`'s last step: a local admin key and a curl that works as printed."""

from __future__ import annotations

import shlex
from pathlib import Path

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

    words = shlex.split(curl)
    assert words[:4] == ["curl", "-s", "-X", "POST"]
    url = words[4]
    assert url == "http://127.0.0.1:8765/v1/recommendations"
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    body = words[words.index("-d") + 1]
    key = headers["Authorization"].removeprefix("Bearer ")
    # Only the key's hash is kept.
    stored = key_file.read_text()
    assert key not in stored and hash_key(key) in stored
    with TestClient(create_app(get_settings())) as client:
        answer = client.post("/v1/recommendations", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"], answer.json()  # an HCP with something to do
        # A second demo run gives a new key; the first no longer opens the API.
        again = demo.main(["--port", "8765"])
        assert again != curl
        refused = client.post("/v1/recommendations", content=body, headers=headers)
        assert refused.status_code == 401, refused.text
