"""End to end: a real `nextbest serve` process (uvicorn) answering over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_server_serves_the_champion(trained) -> None:
    port = _free_port()
    env = {**os.environ, "NEXTBEST_MODELS_DIR": str(trained.settings.models_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nextbest.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (
                proc.stdout.read().decode() if proc.stdout else "server died"
            )
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("server did not become ready in 90 s")
        response = httpx.post(
            f"{base}/v1/recommendations", json={"hcp_id": "H000002", "k": 3}, timeout=10
        )
        assert response.status_code == 200
        body = response.json()
        assert body["model_version"] == trained.version
        assert body["hcp_id"] == "H000002"
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
        assert (
            httpx.post(
                f"{base}/v1/recommendations", json={"hcp_id": "nobody"}, timeout=5
            ).status_code
            == 404
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
