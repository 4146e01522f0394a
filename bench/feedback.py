"""Feedback ingest through the real API: events/s on SQLite and PostgreSQL, zero loss.

For each backend a real ``nextbest serve`` process (one uvicorn worker) takes
``POST /v1/feedback`` batches of 5,000 events from two client threads; half of the
events refer to a recommendation served just before (so the reference check runs).
Afterwards every acknowledged ``event_id`` is looked up in the database. The
baseline, measured in the same run on the same database, is ``record_feedback``
called in-process (no HTTP, no JSON): the ratio shows what the HTTP layer costs.

PostgreSQL is measured when ``NEXTBEST_TEST_POSTGRES_URL`` (or ``--postgres``) names
a server where the user may create databases; a throw-away database is used.
Writes ``bench/results/feedback.json``. Run: ``make bench-feedback``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from nextbest import registry
from nextbest.api.process import free_port, start_server, stop_server
from nextbest.contract import load_dataset
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.train import train
from nextbest.settings import Settings, drop_environment_settings
from nextbest.simulate import simulate_world
from nextbest.storage import make_engine, make_session_factory, migrate
from nextbest.storage.repository import FeedbackRecord, record_feedback
from nextbest.storage.testing import POSTGRES_URL_ENV, temporary_postgres_database

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_KEY = "bench-feedback-admin-key"
BATCH = 5000
CLIENTS = 2
TARGET_EVENTS_PER_S = 5000


def make_events(
    prefix: str, n: int, hcps: list[str], served: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """``n`` events; every second one names a served recommendation of its HCP."""
    events: list[dict[str, Any]] = []
    for i in range(n):
        if i % 2 and served:
            rid, hcp = served[i % len(served)]
            events.append(
                {
                    "event_id": f"{prefix}-{i}",
                    "event_type": "outcome",
                    "hcp_id": hcp,
                    "recommendation_id": rid,
                    "value": float(i % 5),
                }
            )
        else:
            events.append(
                {
                    "event_id": f"{prefix}-{i}",
                    "event_type": "opened",
                    "hcp_id": hcps[i % len(hcps)],
                    "channel": "email",
                }
            )
    return events


def in_process_baseline(url: str, events: list[dict[str, Any]]) -> float:
    """Events/s of ``record_feedback`` called directly, in batches of ``BATCH``."""
    engine = make_engine(url)
    records = [
        FeedbackRecord(occurred_at=datetime.now(UTC), **{k: v for k, v in e.items()})
        for e in events
    ]
    started = time.perf_counter()
    with make_session_factory(engine)() as session:
        for start in range(0, len(records), BATCH):
            result = record_feedback(session, events=records[start : start + BATCH])
            if result.rejected:
                raise RuntimeError(f"baseline rejected events: {result.rejected[:3]}")
    elapsed = time.perf_counter() - started
    engine.dispose()
    return len(records) / elapsed


def measure(
    backend: str, url: str, settings: Settings, hcps: list[str], events_total: int
) -> dict[str, Any]:
    keys = settings.models_dir / "api_keys.yaml"
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    keys.write_text(f"keys:\n  - name: bench-feedback\n    role: admin\n    key_sha256: {digest}\n")
    env = {
        **os.environ,
        "NEXTBEST_MODELS_DIR": str(settings.models_dir),
        "NEXTBEST_DATABASE_URL": url,
        "NEXTBEST_API_KEYS_FILE": str(keys),
    }
    port = free_port()
    proc = start_server(port=port, env=env)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            response = client.post("/v1/recommendations/batch", json={"hcp_ids": hcps, "k": 1})
            response.raise_for_status()
            served = [(r["recommendation_id"], r["hcp_id"]) for r in response.json()["results"]]
            # Warm-up batch (connection pool, first statements), not counted.
            warm = make_events(f"{backend}-warm", BATCH, hcps, served)
            client.post("/v1/feedback", json={"events": warm}).raise_for_status()
        per_client = events_total // CLIENTS
        batches = [
            [
                make_events(f"{backend}-c{c}-b{b}", BATCH, hcps, served)
                for b in range(per_client // BATCH)
            ]
            for c in range(CLIENTS)
        ]
        acknowledged: list[list[str]] = [[] for _ in range(CLIENTS)]
        latencies: list[float] = []
        errors: list[str] = []

        def run(c: int) -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
                for events in batches[c]:
                    t = time.perf_counter()
                    response = client.post("/v1/feedback", json={"events": events})
                    latencies.append(time.perf_counter() - t)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:300]}")
                        return
                    acknowledged[c].extend(e["event_id"] for e in events)

        threads = [threading.Thread(target=run, args=(c,)) for c in range(CLIENTS)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        stop_server(proc)
    if errors:
        raise RuntimeError(f"{backend}: feedback failed: {errors[:2]}")
    acked = {e for part in acknowledged for e in part}
    engine = make_engine(url)
    with engine.connect() as connection:
        stored = set(connection.execute(sa.text("SELECT event_id FROM feedback_events")).scalars())
    engine.dispose()
    missing = len(acked - stored)
    baseline_events = make_events(f"{backend}-baseline", len(acked), hcps, served)
    baseline = in_process_baseline(url, baseline_events)
    rate = len(acked) / elapsed
    latencies.sort()
    return {
        "backend": backend,
        "events_acknowledged": len(acked),
        "seconds": round(elapsed, 2),
        "events_per_s": round(rate),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "target_met": bool(rate >= TARGET_EVENTS_PER_S and missing == 0),
        "acknowledged_missing": missing,
        "batch_latency_p50_s": round(latencies[len(latencies) // 2], 3),
        "batch_latency_max_s": round(latencies[-1], 3),
        "baseline_in_process_events_per_s": round(baseline),
        "http_vs_in_process_ratio": round(rate / baseline, 3),
    }


def main() -> int:
    drop_environment_settings(keep=(POSTGRES_URL_ENV,), say=print)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="Events per backend.")
    parser.add_argument("--postgres", default=os.environ.get(POSTGRES_URL_ENV))
    parser.add_argument("--out", type=Path, default=RESULTS / "feedback.json")
    args = parser.parse_args()
    if args.events < BATCH * CLIENTS:
        # Each client posts whole batches: fewer events than one batch per client
        # would post none and measure nothing.
        parser.error(
            f"--events {args.events}: at least {BATCH * CLIENTS:,} ({CLIENTS} clients each "
            f"posting whole batches of {BATCH:,} events)"
        )
    work = Path(tempfile.mkdtemp(prefix="nextbest-feedback-"))
    world = simulate_world(n_hcps=500, periods=8, seed=0)
    world.write(work / "world", fmt="parquet")
    settings = Settings(models_dir=work / "models")
    fast = TrainConfig(
        engagement=EngagementParams(n_estimators=30, num_leaves=15),
        uplift=UpliftParams(n_estimators=30, learning_rate=0.08),
    )
    registry.log_training_run(train(load_dataset(work / "world"), config=fast), settings)
    hcps = world.hcps["hcp_id"].tolist()
    results: list[dict[str, Any]] = []
    sqlite_url = f"sqlite:///{work / 'feedback.db'}"
    migrate(sqlite_url)
    results.append(measure("sqlite", sqlite_url, settings, hcps, args.events))
    print(json.dumps(results[-1]), flush=True)
    if args.postgres:
        with temporary_postgres_database(args.postgres) as url:
            migrate(url)
            results.append(measure("postgresql", url, settings, hcps, args.events))
            print(json.dumps(results[-1]), flush=True)
    else:
        print(f"PostgreSQL not measured: set {POSTGRES_URL_ENV} or --postgres", flush=True)
    payload = {
        "benchmark": "feedback",
        "command": " ".join(["python", "bench/feedback.py", *sys.argv[1:]]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": {"batch": BATCH, "client_threads": CLIENTS, "server_workers": 1},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out}")
    from plots import draw  # bench/plots.py: the figure, beside the JSON

    draw(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
