"""An acknowledged feedback event is never lost, even when the server is SIGKILLed.

A real ``nextbest serve`` process (uvicorn) takes a stream of feedback batches from a
client thread; the process is killed with SIGKILL in the middle of the stream, then
restarted on the same database. Every event whose batch was answered 200 must be in
the database, on SQLite (WAL, synchronous=FULL) and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from nextbest.api.process import free_port, start_server, stop_server
from nextbest.storage.db import make_engine

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN_KEY = "durability-test-admin-key"
BATCH = 200


def write_admin_key(path: Path, key: str) -> None:
    """An API key file with one admin key (ignored by servers without auth)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    path.write_text(f"keys:\n  - name: test-admin\n    role: admin\n    key_sha256: {digest}\n")


def test_acknowledged_feedback_survives_sigkill(trained, database_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "api_keys.yaml"
    write_admin_key(keys, ADMIN_KEY)
    env = {
        **os.environ,
        "NEXTBEST_MODELS_DIR": str(trained.settings.models_dir),
        "NEXTBEST_DATABASE_URL": database_url,
        "NEXTBEST_API_KEYS_FILE": str(keys),
    }
    hcps = [f"H{i:06d}" for i in range(1, 401)]
    port = free_port()
    proc = start_server(port=port, env=env, timeout_s=90)
    acknowledged: list[str] = []
    sent: dict[str, dict[str, object]] = {}  # the acknowledged events, as sent
    failures: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        # One client, batch after batch; a batch counts only once answered 200.
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=10,
        ) as client:
            batch_no = 0
            while not stop.is_set():
                events = [
                    {
                        "event_id": f"kill-{batch_no}-{i}",
                        "event_type": "delivered" if i % 2 else "outcome",
                        "hcp_id": hcps[(batch_no * BATCH + i) % len(hcps)],
                        "channel": "email",
                        **({} if i % 2 else {"value": float(i % 7)}),
                    }
                    for i in range(BATCH)
                ]
                try:
                    response = client.post("/v1/feedback", json={"events": events})
                except httpx.TransportError:
                    return  # the server is gone: this batch was never acknowledged
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:300]}")
                    return
                body = response.json()
                if body["accepted"] + body["duplicates"] != BATCH:
                    failures.append(json.dumps(body)[:300])
                    return
                acknowledged.extend(e["event_id"] for e in events)
                sent.update((e["event_id"], e) for e in events)
                batch_no += 1

    writer = threading.Thread(target=stream)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 20 * BATCH and time.monotonic() < deadline and not failures:
            time.sleep(0.05)
        stop_server(proc, sig=signal.SIGKILL, timeout_s=10)  # mid-stream: the writer sends more
    finally:
        stop.set()
        writer.join(timeout=30)
        stop_server(proc, sig=signal.SIGKILL, timeout_s=10)
    assert not failures, failures
    assert len(acknowledged) >= 20 * BATCH, f"only {len(acknowledged)} events acknowledged"

    # Restart on the same database: it must open (WAL recovery) and hold every event.
    proc = start_server(port=port, env=env, timeout_s=90)
    try:
        engine = make_engine(database_url)
        try:
            with engine.connect() as connection:
                stored = set(
                    connection.execute(sa.text("SELECT event_id FROM feedback_events")).scalars()
                )
        finally:
            engine.dispose()
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
        # The restarted server answers, and a retried acknowledged batch is all duplicates.
        retry = [sent[e] for e in acknowledged[:BATCH]]
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/feedback",
            json={"events": retry},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["duplicates"] == BATCH
    finally:
        stop_server(proc)
