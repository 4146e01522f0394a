"""Serving A/B: the cache-off single recommendation of two source trees, alternated.

A change that saves a few percent of a request's CPU is lost in the spread between
two `make bench-serve` runs, which minutes and the machine's state apart also move.
This script builds one world (as bench/serve.py does), then starts the same
cache-off server (`NEXTBEST_SCORE_CACHE_PAIRS=0`, two workers) from each source tree
in turn, round after round, and drives each with bench/serve.py's load generator:
one idle connection, then 1,000 requests/s offered on 32 connections. It prints a
line per run and, per tree, the medians and how many rounds went its way against
the first tree named.

    git worktree add --detach /tmp/base main
    python bench/serve_ab.py --rounds 12 base=/tmp/base/src new=src

Each tree's `src` directory is put first on the servers' PYTHONPATH, so the trees
must read the model artifacts this checkout writes (a change to the artifact format
cannot be compared this way). Nothing is written under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbest.api.process import free_port, stop_server
from nextbest.settings import Settings, drop_environment_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve  # bench/serve.py, beside this file

FIGURES = ("idle_p50_ms", "idle_cpu_ms", "fixed_cpu_ms", "fixed_p99_ms")


def one_run(models: Path, src: Path, requests: list[bytes]) -> dict[str, Any]:
    """The cache-off server of tree ``src``, idle then at 1,000 requests/s."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    port = free_port()
    try:
        loop_us = serve.python_loop_us()
        server = serve.run_server(models, port, 2, 5.0, cache_pairs=0)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    try:
        serve.drive(port, requests[:500], connections=4, seconds=3)  # warm-up
        idle = serve.drive(port, requests, connections=1, seconds=6, server_pid=server.pid)
        fixed = serve.drive(
            port, requests, connections=32, seconds=10, rate=1000, server_pid=server.pid
        )
    finally:
        stop_server(server)
    return {
        "python_loop_us": round(loop_us, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "idle_p50_ms": round(idle["p50_ms"], 3),
        "idle_cpu_ms": round(idle["server_cpu_ms_per_request"], 3),
        "fixed_cpu_ms": round(fixed["server_cpu_ms_per_request"], 3),
        "fixed_p99_ms": round(fixed["p99_ms"], 1),
        "fixed_requests_per_s": round(fixed["requests_per_s"]),
        "connections_by_worker": fixed["connections_by_worker"],
    }


def main() -> int:
    drop_environment_settings(say=print)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="NAME=SRC_DIR, two or more; the first is the base")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--hcps", type=int, default=4000)
    parser.add_argument("--periods", type=int, default=16)
    args = parser.parse_args()
    trees: dict[str, Path] = {}
    for given in args.trees:
        name, _, src = given.partition("=")
        if not name or not src or not (Path(src) / "nextbest").is_dir():
            parser.error(f"{given!r}: expected NAME=SRC_DIR, a directory holding nextbest/")
        trees[name] = Path(src).resolve()
    if len(trees) < 2 or args.rounds < 1:
        parser.error("two or more trees of different names, and --rounds of 1 or more")

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nextbest-serve-ab-") as tmp:
        workdir = Path(tmp)
        print(f"building a {args.hcps}-HCP world ...", flush=True)
        models, _ = serve.build(workdir, args.hcps, args.periods)
        hcp_ids = pd.read_parquet(workdir / "wide" / "hcps.parquet")["hcp_id"].tolist()
        catalog = pd.read_parquet(workdir / "wide" / "catalog.parquet")
        database = Settings(models_dir=models).resolved_database_url
        serve.seed_contacts(database, hcp_ids, catalog, 3, 0.05)
        order = list(np.random.default_rng(1).permutation(hcp_ids))
        requests = [serve._post("/v1/recommendations", {"hcp_id": h, "k": 5}) for h in order]
        for round_ in range(args.rounds):
            for name, src in trees.items():
                row = {"round": round_, "tree": name, **one_run(models, src, requests)}
                print(json.dumps(row), flush=True)
                rows.append(row)

    base = next(iter(trees))
    for name in trees:
        mine = [r for r in rows if r["tree"] == name]
        medians = {f: float(np.median([r[f] for r in mine])) for f in FIGURES}
        said = ", ".join(f"{f} {v:g}" for f, v in medians.items())
        if name != base:
            theirs = [r for r in rows if r["tree"] == base]
            ahead = {
                f: sum(m[f] < b[f] for m, b in zip(mine, theirs, strict=True)) for f in FIGURES
            }
            said += (
                "; rounds lower than "
                + base
                + ": "
                + ", ".join(f"{f} {n} of {len(mine)}" for f, n in ahead.items())
            )
        print(f"{name}: medians {said}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
