"""Serving profile: CPU of the event loop per cache-off single recommendation, in process.

bench/serve_ab.py compares two source trees over HTTP, where uvicorn, the kernel's
sockets and the load generator add their own spread; a change worth 1% of a
request is lost in it on a shared machine. This script calls the app itself
through ASGI (no HTTP, no sockets): each run is a child process that builds the
app of one source tree (`create_app`, its lifespan run as uvicorn runs it) on the
serving benchmark's world (bench/serve.py's: 200 actions, a month of contacts in
a real SQLite file, auth on, the recommendation log batched every 5 ms, score
cache off), answers `--warm` requests, freezes the heap (as `nextbest serve`
does), then answers `--blocks` blocks of `--block` requests, one at a time,
each for the next HCP of a fixed shuffled order, and reports the CPU time of
the event loop's thread per request (the median block). The log writer thread's
CPU is not in it.

    git worktree add --detach /tmp/base main
    python bench/serve_profile.py --workdir /tmp/profile-world base=/tmp/base/src new=src

Trees run alternately, round after round (`--rounds`), in the reverse order every
other round (an A/A run on a busy machine put the same tree's second run of each
round 5-18% above its first, three rounds out of three); the script prints a line
per run and, per tree, the median and how many rounds went its way against the
first tree named. The answers of every run are compared with the first tree's
first run (without `recommendation_id` and `created_at`; after each block, outside
its CPU time): exploration and
holdout draws are seeded, and every request is dated `--date` (default: tomorrow,
UTC; a decision dated ahead is made as of that day's start, so the contacts'
cool-downs and windows do not run out between runs as the clock moves on), so
the same code gives the same answers, byte for byte, and a change that should
not change an answer is checked on thousands.

`--parts` adds, per run, the CPU per request of the main parts of a request
(the model's scores, the reasons, the history read, exploration, the rules, the
key check, the answer's JSON; each function timed where it is called, so the
parts nest). `--workdir` keeps the world (built on the first run, about a
minute) for later runs. `--rules NAME=FILE` serves a tree under a rules file of its
own (default: training/rules.yaml), to measure a rule the tree brings in against a
base that cannot read it. Nothing is written under bench/results/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHIPPED_RULES = HERE.parent / "training" / "rules.yaml"
# The parts --parts times: (module, attribute path), each wrapped where it is looked up.
PARTS = (
    ("nextbest.api.routes.recommendations", "recommend_one"),
    ("nextbest.service.serving", "live_history"),
    ("nextbest.service.recommend", "Recommender._decide"),
    ("nextbest.service.score_cache", "PairCache.scores"),
    ("nextbest.service.score_cache", "PairCache.explain"),
    ("nextbest.policy.exploration", "Exploration.serve"),
    ("nextbest.service.recommend", "Recommender.allowed"),
    ("nextbest.service.recommend", "lapses"),
    ("nextbest.service.reclog", "RecommendationLog.write"),
    ("nextbest.api.bodies", "refused_before_validation"),
    ("nextbest.api.routes.recommendations", "_json"),
    ("nextbest.api.routes.recommendations", "record_served"),
)


def build_world(workdir: Path, hcps: int, periods: int) -> None:
    """bench/serve.py's world and contact history, once per ``workdir``."""
    sys.path.insert(0, str(HERE))
    import pandas as pd

    import serve  # bench/serve.py
    from nextbest.settings import Settings

    if (workdir / "order.json").exists():
        return
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"building a {hcps}-HCP world in {workdir} ...", flush=True)
    models, _ = serve.build(workdir, hcps, periods)
    hcp_ids = pd.read_parquet(workdir / "wide" / "hcps.parquet")["hcp_id"].tolist()
    catalog = pd.read_parquet(workdir / "wide" / "catalog.parquet")
    serve.seed_contacts(
        Settings(models_dir=models).resolved_database_url, hcp_ids, catalog, 3, 0.05
    )
    order = [str(h) for h in np.random.default_rng(1).permutation(hcp_ids)]
    (workdir / "order.json").write_text(json.dumps(order))


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One run in this process: the app of the tree on PYTHONPATH, driven through ASGI."""
    import asyncio
    import gc
    import logging
    import time

    import uvloop

    sys.path.insert(0, str(HERE))
    import serve  # bench/serve.py

    workdir = Path(args.workdir)
    os.environ.update(
        {
            "NEXTBEST_MODELS_DIR": str(workdir / "models"),
            "NEXTBEST_API_KEYS": json.dumps(
                [{"name": "bench", "role": "admin", "key": serve.BENCH_KEY}]
            ),
            "NEXTBEST_LOG_FLUSH_MS": "5",
            "NEXTBEST_RULES_FILE": str(Path(args.rules_file).resolve()),
            "NEXTBEST_SEED": "1",
            "NEXTBEST_SCORE_CACHE_PAIRS": "0",
            "OMP_NUM_THREADS": "1",
        }
    )
    logging.disable(logging.WARNING)
    spent: dict[str, int] = {}
    if args.parts:
        _time_parts(spent)
    from nextbest.api.app import create_app

    order: list[str] = json.loads((workdir / "order.json").read_text())
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {serve.BENCH_KEY}".encode()),
    ]

    async def main() -> dict[str, Any]:
        app = create_app()
        to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        await to_app.put({"type": "lifespan.startup"})
        life = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        lifespan = asyncio.create_task(app(life, to_app.get, from_app.put))
        started = await from_app.get()
        if started["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app did not start: {started}")

        async def one(n: int, hcp_id: str) -> tuple[int, bytes]:
            body = json.dumps({"hcp_id": hcp_id, "k": 5, "date": args.date}).encode()
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1",
                "server": ("127.0.0.1", 8000),
                "client": ("127.0.0.1", 40000 + n % 32),
                "scheme": "http",
                "method": "POST",
                "root_path": "",
                "path": "/v1/recommendations",
                "raw_path": b"/v1/recommendations",
                "query_string": b"",
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
                "state": {},
            }
            given = False

            async def receive() -> dict[str, Any]:
                nonlocal given
                if not given:
                    given = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.sleep(3600)  # no disconnect while answering
                raise AssertionError

            sent: list[MutableMapping[str, Any]] = []

            async def send(message: MutableMapping[str, Any]) -> None:
                sent.append(message)

            await app(scope, receive, send)
            return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

        n = 0
        for _ in range(args.warm):
            await one(n, order[n % len(order)])
            n += 1
        gc.collect()
        gc.freeze()
        spent.clear()
        digest = hashlib.sha256()
        blocks = []
        for _ in range(args.blocks):
            answers = []
            start = time.thread_time()
            for _ in range(args.block):
                answers.append(await one(n, order[n % len(order)]))
                n += 1
                await asyncio.sleep(0)  # as a server's loop turns between requests
            blocks.append((time.thread_time() - start) / args.block * 1000)
            # Compared once the clock has stopped: the app's CPU, not the check's.
            for status, body in answers:
                answer = json.loads(body)
                answer.pop("recommendation_id", None)
                answer.pop("created_at", None)
                digest.update(f"{status} {json.dumps(answer, sort_keys=True)}\n".encode())
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await lifespan
        measured = args.blocks * args.block
        return {
            "cpu_ms_per_request": round(float(np.median(blocks)), 4),
            "blocks_ms": [round(b, 4) for b in blocks],
            "answers_sha256": digest.hexdigest()[:16],
            "parts_us": {k: round(v / measured / 1000, 1) for k, v in spent.items()},
        }

    return uvloop.run(main())


def _time_parts(spent: dict[str, int]) -> None:
    """Wrap each of PARTS to add the CPU time of its calls to ``spent`` (ns)."""
    import functools
    import importlib
    import inspect
    import time

    for module_name, path in PARTS:
        owner: Any = importlib.import_module(module_name)
        *outer, name = path.split(".")
        for attr in outer:
            owner = getattr(owner, attr)
        function = getattr(owner, name, None)
        if function is None:
            continue  # not in this tree
        if inspect.iscoroutinefunction(function):
            continue

        def timed(*a: Any, __f: Any = function, __k: str = path, **kw: Any) -> Any:
            start = time.thread_time_ns()
            try:
                return __f(*a, **kw)
            finally:
                spent[__k] = spent.get(__k, 0) + time.thread_time_ns() - start

        setattr(owner, name, functools.wraps(function)(timed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", help="NAME=SRC_DIR, the first the base")
    parser.add_argument("--workdir", type=Path, help="where the world is kept (default: a new one)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--block", type=int, default=1000)
    parser.add_argument("--hcps", type=int, default=4000)
    parser.add_argument("--periods", type=int, default=16)
    parser.add_argument("--parts", action="store_true", help="time the main parts too")
    parser.add_argument("--date", help="the requests' decision date (default: tomorrow, UTC)")
    parser.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="serve tree NAME under this rules file (default: training/rules.yaml), to "
        "measure a rule a tree's code brings in; repeat per tree",
    )
    parser.add_argument("--rules-file", default=str(SHIPPED_RULES), help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    from nextbest.settings import drop_environment_settings

    drop_environment_settings(say=print)
    trees: dict[str, Path] = {}
    for given in args.trees or [f"this={HERE.parent / 'src'}"]:
        name, _, src = given.partition("=")
        if not name or not src or not (Path(src) / "nextbest").is_dir():
            parser.error(f"{given!r}: expected NAME=SRC_DIR, a directory holding nextbest/")
        trees[name] = Path(src).resolve()
    rules_of: dict[str, Path] = {}
    for given in args.rules:
        name, _, path = given.partition("=")
        if name not in trees or not Path(path).is_file():
            parser.error(f"--rules {given!r}: expected NAME=FILE, NAME a tree, FILE a rules file")
        rules_of[name] = Path(path).resolve()
    if args.rounds < 1 or args.blocks < 1 or args.block < 1:
        parser.error("--rounds, --blocks and --block must be 1 or more")
    if args.date is None:
        from datetime import UTC, datetime, timedelta

        args.date = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    if args.workdir is None:
        import tempfile

        args.workdir = Path(tempfile.mkdtemp(prefix="nextbest-serve-profile-"))
    build_world(args.workdir.resolve(), args.hcps, args.periods)
    rows: list[dict[str, Any]] = []
    first_answers = None
    for round_ in range(args.rounds):
        # Every other round the other way round: no tree always runs first, or right
        # after the same other one.
        for name, src in list(trees.items())[:: -1 if round_ % 2 else 1]:
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "--workdir",
                str(args.workdir.resolve()),
                "--warm",
                str(args.warm),
                "--blocks",
                str(args.blocks),
                "--block",
                str(args.block),
                "--date",
                args.date,
                "--rules-file",
                str(rules_of.get(name, SHIPPED_RULES)),
                *(["--parts"] if args.parts else []),
            ]
            env = {**os.environ, "PYTHONPATH": str(src)}
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, check=False, cwd=HERE.parent
            )
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            row = {"round": round_, "tree": name, **json.loads(done.stdout.splitlines()[-1])}
            row["load_average_1m"] = round(os.getloadavg()[0], 2)
            first_answers = first_answers or row["answers_sha256"]
            row["answers_as_first"] = row["answers_sha256"] == first_answers
            print(json.dumps(row), flush=True)
            rows.append(row)
    base = next(iter(trees))
    for name in trees:
        mine = [r["cpu_ms_per_request"] for r in rows if r["tree"] == name]
        said = f"{name}: median {np.median(mine):.3f} ms of CPU per request"
        same = all(r["answers_as_first"] for r in rows if r["tree"] == name)
        said += ", answers " + ("the same as the first run's" if same else "DIFFERENT")
        if name != base:
            theirs = [r["cpu_ms_per_request"] for r in rows if r["tree"] == base]
            ratios = [m / b for m, b in zip(mine, theirs, strict=True)]
            lower = sum(m < b for m, b in zip(mine, theirs, strict=True))
            said += (
                f"; lower than {base} in {lower} of {len(mine)} rounds, single rounds "
                f"{min(ratios):.2f}-{max(ratios):.2f} of {base}'s"
            )
        print(said)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
