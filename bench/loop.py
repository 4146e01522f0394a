"""The closed loop, simulated: serve -> outcomes -> feedback -> retrain -> gate -> promote.

A simulated world provides the history (logged by its traditional policy) and the
ground truth. The first champion is trained on that history. Each round then:

1. serve every HCP ``--decisions-per-hcp`` times (passes, default 4) through a real
   ``nextbest serve`` process (``POST /v1/recommendations/batch``, epsilon-greedy
   with holdout drawn per request, all logged). Each pass is a simulated week after
   the one before, as the history's decisions are: the server reads a simulated
   clock (``bench/simclock``, :class:`SimulatedClock`), so its answers and the
   feedback are logged on their week, and the world moves on with them: every
   delivered touch weighs on its HCP's engagement on that channel for
   ``FATIGUE_WINDOW`` weeks, as the history's touches do (:class:`Timeline`), so
   each pass's responses are drawn from the state the touches before it left;
2. draw each answer's outcome from the simulator's ground truth at its week (a
   holdout or empty answer gets the no-touch outcome) and send it through
   ``POST /v1/feedback`` (``outcome`` events, plus ``opened`` when the HCP engaged);
3. retrain on history + the logged decisions with their outcomes, except the share
   reserved for the gate -> ``challenger``;
4. evaluate challenger vs champion off-policy on the reserved share of every
   round's logged decisions (whichever version served them) and promote when the
   gate (``training/gate.yaml`` unless ``--gate``) passes;
5. on promotion, hot-reload the server (``POST /v1/admin/reload``; a restart if
   the route is missing).

Why simulated weeks. Until 2026-12-06 every pass was an independent draw from the
end-of-history state, served within seconds of the others: the world forgot each
touch, while the recommendation log, and so the retrained model, saw every HCP
touched 4 times a round within a minute. The features read that burst as it would
read it in any deployment (touches in the last 7 and 30 days, days since, per-HCP
engagement effects), but the outcomes showed none of the fatigue such touches bring,
and the challenger's snapshot carried the burst into scoring where the truth did
not: the more rounds, the worse the challenger (at 5,000 HCPs with one pass a round,
challengers at +0.0761, +0.0731, +0.0728, +0.0692 against the champion's +0.0732).
No deployment serves like that; a clock and a world that move together do. The
history now ends ``rounds x decisions-per-hcp`` weeks (and one) before today, so that
every simulated week is in the past.

Per round it records, at the state the next round is served in (the touches of
the last ``FATIGUE_WINDOW`` weeks), the true value of the champion's and the
challenger's greedy policies (net NRx per HCP, from the ground truth), the oracle
of that state and their ratios to it, the OPE estimates with intervals and how far
they are from the truth (the policy's mean true value over the weeks the evaluated
decisions were served in), and the decision; for a promoted challenger, its true
value, its OPE estimates and their relative errors (``promoted``). Before the first
round it also scores the Bayes-optimal policy of the world given the history
(:mod:`nextbest.simulate.posterior`): the most any learner could reach at the first
decision, the ceiling the target is read against (not after the last round: the
posterior models draws from the end-of-history state, which the rounds' are not).
A version scores from the snapshot of its training cut-off, which does not count the
touches served since: its greedy choice stays the same week after week while its own
touches tire the HCPs it keeps choosing, so each round also records the served
version's mean true value over the round's weeks (``served_true_value_over_round``).
The oracle and the Bayes-optimal policy choose among promotional actions only, as
the served policy does (the bench's requests name no purpose, so the service
answers them as promotional: no medical content). Writes ``bench/results/loop.json``
with the machine load.

Run: ``make bench-loop`` or ``python bench/loop.py --hcps 5000 --rounds 6``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from nextbest import registry
from nextbest.api.process import free_port, start_server, stop_server
from nextbest.contract import load_dataset
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.scoring import ScoringModel
from nextbest.learning.train import train
from nextbest.limits import Purpose
from nextbest.loop import gate
from nextbest.loop.evidence import action_codes, greedy_actions
from nextbest.loop.retrain import retrain
from nextbest.settings import Settings, drop_environment_settings
from nextbest.simulate import SimulatedWorld, simulate_world
from nextbest.simulate.posterior import posterior_values
from nextbest.simulate.response import FATIGUE_WINDOW, engagement_probability, static_logit
from nextbest.simulate.vocabulary import CHANNELS

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_KEY = "bench-loop-admin-key"
SERVE_BATCH = 500
# The bench's requests name no purpose, so the service serves them as promotional:
# no medical content. The oracle and the Bayes-optimal policy are scored on the same
# actions, or the ratios would be read against what the served policy may never serve.
SERVED_PURPOSE: Purpose = "promotional"
FEEDBACK_BATCH = 5000


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


class Server:
    """A real ``nextbest serve`` process on 127.0.0.1."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.env = env
        self.log_file = log_file
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = start_server(port=self.port, env=self.env, log_file=self.log_file)

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)

    def reload(self, client: httpx.Client) -> str:
        """Hot reload through the admin route; restart when the route does not exist."""
        response = client.post("/v1/admin/reload")
        if response.status_code == 404:
            self.stop()
            self.start()
            self.restarts += 1
            return "restart"
        response.raise_for_status()
        return "hot reload"


class SimulatedClock:
    """The server's simulated time (``bench/simclock``): the offset from the real time
    in a file its clock reads at every reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(None)

    def env(self) -> dict[str, str]:
        """What the server's environment needs to read this clock."""
        here = str(Path(__file__).resolve().parent / "simclock")
        paths = [here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        # Absolute: the server may resolve a relative entry against another directory.
        return {
            "BENCH_LOOP_CLOCK_FILE": str(self.path),
            "PYTHONPATH": os.pathsep.join(str(Path(p).resolve()) for p in paths),
        }

    def set(self, at: pd.Timestamp | None) -> None:
        """From now on the server's clock reads ``at`` (naive UTC) and runs on from
        there in real time; None: the real time."""
        offset = 0.0
        if at is not None:
            offset = (at - pd.Timestamp.now(tz="UTC").tz_localize(None)).total_seconds()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset:.6f}")
        tmp.replace(self.path)  # atomic: a reading never sees half a number


class Timeline:
    """The simulated weeks after the history: which channel touched each HCP in each
    week, and the world as the next week finds it.

    The world's ground truth (``SimulatedWorld.p_engage``) is the end-of-history
    state: the history's last ``FATIGUE_WINDOW`` weeks of touches weigh on it. Each
    served pass is the next week; its delivered touches weigh on the
    ``FATIGUE_WINDOW`` weeks after it, as the history's do, and the history's own
    touches leave the window as the weeks pass.
    """

    def __init__(self, world: SimulatedWorld, periods: int) -> None:
        self.world = world
        n = world.n_hcps
        actions = pd.Index(world.catalog["action_id"]).get_indexer(world.interactions["action_id"])
        channel = np.where(actions >= 0, world.codes.channel[np.maximum(actions, 0)], -1)
        # The history is period-major, its HCPs in the order of world.hcps.
        weekly = channel.reshape(periods, n)
        self.weeks: list[np.ndarray] = [weekly[t] for t in range(periods)]
        self.history_weeks = periods
        self.logit = static_logit(world.traits, world.codes)
        start = self.state()
        if not np.allclose(start.p_engage, world.p_engage):
            raise AssertionError("the timeline does not rebuild the end-of-history state")

    def state(self) -> SimulatedWorld:
        """The world at the next week: engagement under the touches of the last
        ``FATIGUE_WINDOW`` weeks (the rest of the truth does not change)."""
        n = self.world.n_hcps
        recent = np.zeros((n, len(CHANNELS)))
        for touched in self.weeks[-FATIGUE_WINDOW:]:
            rows = np.flatnonzero(touched >= 0)
            np.add.at(recent, (rows, touched[rows]), 1.0)
        p_engage = engagement_probability(self.logit, self.world.traits, self.world.codes, recent)
        return dataclasses.replace(self.world, p_engage=p_engage)

    @property
    def next_week(self) -> int:
        """The week the next pass is served in (0: the first after the history)."""
        return len(self.weeks) - self.history_weeks

    def record(self, hcps: np.ndarray, channel: np.ndarray) -> None:
        """One week passed: HCPs ``hcps`` ``(m,)`` were touched on ``channel`` ``(m,)``
        (codes in the order of CHANNELS), every other HCP not at all."""
        touched = np.full(self.world.n_hcps, -1, dtype=np.int64)
        touched[hcps] = channel
        self.weeks.append(touched)


def pass_time(world: SimulatedWorld, week: int) -> pd.Timestamp:
    """When pass ``week`` (0: the first after the history) is served: midday of the
    first day of its week, ``week`` weeks after the end-of-history decision."""
    return pd.Timestamp(world.decision_time) + pd.Timedelta(days=7 * week, hours=12)


def serve_round(
    client: httpx.Client,
    timeline: Timeline,
    clock: SimulatedClock,
    rng: np.random.Generator,
    round_no: int,
    *,
    decisions_per_hcp: int = 1,
    states: list[SimulatedWorld] | None = None,
) -> dict[str, Any]:
    """Serve every HCP ``decisions_per_hcp`` times (passes, a simulated week each),
    draw outcomes from each week's state, send them as feedback; counts and timings.
    Each pass's state (the world its responses were drawn from) is appended to
    ``states``."""
    world = timeline.world
    hcp_ids = world.hcps["hcp_id"].tolist()
    hcp_index = pd.Index(world.hcps["hcp_id"])
    action_index = pd.Index(world.catalog["action_id"])
    all_results: list[dict[str, Any]] = []
    all_actions: list[np.ndarray] = []
    all_outcomes: list[np.ndarray] = []
    serve_s = feedback_s = 0.0
    accepted = 0
    for pass_no in range(decisions_per_hcp):
        state = timeline.state()
        if states is not None:
            states.append(state)
        clock.set(pass_time(world, timeline.next_week))
        results: list[dict[str, Any]] = []
        started = time.perf_counter()
        for start in range(0, len(hcp_ids), SERVE_BATCH):
            response = client.post(
                "/v1/recommendations/batch",
                json={"hcp_ids": hcp_ids[start : start + SERVE_BATCH], "k": 1},
            )
            response.raise_for_status()
            results.extend(response.json()["results"])
        serve_s += time.perf_counter() - started
        hcps = hcp_index.get_indexer([r["hcp_id"] for r in results])
        actions = np.array(
            [
                action_index.get_loc(r["items"][0]["action_id"]) if r["items"] else -1
                for r in results
            ]
        )
        engaged, outcome = state.draw_response(hcps, actions, rng)
        delivered = (actions >= 0) & world.eligible[hcps, np.maximum(actions, 0)]
        channel = world.codes.channel[np.maximum(actions, 0)]
        timeline.record(hcps[delivered], channel[delivered])
        events: list[dict[str, Any]] = []
        for r, e, value in zip(results, engaged, outcome, strict=True):
            rid = r["recommendation_id"]
            prefix = f"loop{round_no}.{pass_no}-{rid}"
            events.append(
                {
                    "event_id": f"{prefix}-outcome",
                    "event_type": "outcome",
                    "hcp_id": r["hcp_id"],
                    "recommendation_id": rid,
                    "value": float(value),
                }
            )
            if e:
                events.append(
                    {
                        "event_id": f"{prefix}-opened",
                        "event_type": "opened",
                        "hcp_id": r["hcp_id"],
                        "recommendation_id": rid,
                        "action_id": r["items"][0]["action_id"],
                    }
                )
        started = time.perf_counter()
        for start in range(0, len(events), FEEDBACK_BATCH):
            response = client.post(
                "/v1/feedback", json={"events": events[start : start + FEEDBACK_BATCH]}
            )
            if response.status_code != 200:
                raise RuntimeError(
                    f"feedback answered {response.status_code}: {response.text[:500]}"
                )
            accepted += int(response.json()["accepted"])
        feedback_s += time.perf_counter() - started
        all_results.extend(results)
        all_actions.append(actions)
        all_outcomes.append(outcome)
    actions = np.concatenate(all_actions)
    outcome = np.concatenate(all_outcomes)
    return {
        "requests": len(all_results),
        "holdout": int(sum(r["holdout"] for r in all_results)),
        "empty": int(sum((not r["holdout"]) and not r["items"] for r in all_results)),
        "explored": int(sum(bool(r["items"]) and r["items"][0]["explored"] for r in all_results)),
        "feedback_events": accepted,
        "serve_s": round(serve_s, 2),
        "feedback_s": round(feedback_s, 2),
        "mean_outcome_served": float(outcome[actions >= 0].mean())
        if (actions >= 0).any()
        else None,
    }


def greedy_choice(world: SimulatedWorld, model: ScoringModel, at: pd.Timestamp) -> np.ndarray:
    """``(n,)`` catalog rows (-1: none) of ``model``'s greedy policy on every HCP at ``at``."""
    decisions = pd.DataFrame(
        {
            "hcp_id": world.hcps["hcp_id"],
            "timestamp": at,
            "purpose": SERVED_PURPOSE,
            "channel_filter": None,
        }
    )
    return action_codes(greedy_actions(model, decisions), pd.Index(world.catalog["action_id"]))


def per_hcp(state: SimulatedWorld, choice: np.ndarray) -> float:
    """True net value per HCP (NRx) of ``choice`` in the world ``state``."""
    return state.true_value(choice) / state.n_hcps


def oracle_per_hcp(state: SimulatedWorld) -> float:
    """The oracle's true net value per HCP in ``state``, among the served actions."""
    return per_hcp(state, state.oracle_choice(purpose=SERVED_PURPOSE))


def bayes_ceiling(world: SimulatedWorld, samples: int, oracle: float) -> dict[str, float]:
    """Ratio to the oracle of the Bayes-optimal policy given the history.

    A finite sample understates the exact posterior's value, the more so the more
    evidence concentrates it (fewer effective samples), so read it as a lower bound
    of the ceiling that tightens with ``samples``.
    """
    post = posterior_values(
        world,
        samples=samples,
        seed=0,
        progress=lambda done: log(f"  Bayes-optimal policy: {done}"),
    )
    value = world.true_value(post.choice(world.eligible_for(SERVED_PURPOSE))) / world.n_hcps
    return {
        "ratio": round(value / oracle, 4),
        "effective_samples_median": round(float(np.median(post.effective_samples)), 1),
    }


def ope_summary(
    estimates: dict[str, dict[str, Any]], true_absolute: float
) -> dict[str, dict[str, float]]:
    """OPE estimates (value per decision incl. the no-touch baseline) vs the truth."""
    out: dict[str, dict[str, float]] = {}
    for name, e in estimates.items():
        out[name] = {
            "value": round(float(e["value"]), 4),
            "ci_low": round(float(e["ci_low"]), 4),
            "ci_high": round(float(e["ci_high"]), 4),
            "effective_n": round(float(e["effective_n"]), 1),
            "relative_error": round(abs(float(e["value"]) - true_absolute) / abs(true_absolute), 4),
        }
    return out


def relative_error(estimate: float, truth: float) -> float | None:
    """``|estimate - truth| / |truth|``; None when the truth is 0."""
    return round(abs(estimate - truth) / abs(truth), 4) if truth else None


def promoted_record(
    decision: gate.GateDecision, *, true_incremental: float, baseline: float
) -> dict[str, Any]:
    """The promoted policy: its true value and its OPE estimates, with their errors.

    Two scales: the value per decision including the no-touch outcome (what IPS,
    SNIPS and DR estimate, the scale of the issue's 10% target) and the incremental
    value over no action (the paired DR estimate of policy minus "no action"),
    which is much smaller and so much harder to hit within 10%.
    """
    absolute = baseline + true_incremental
    estimates = {
        name: {
            "value": round(float(e["value"]), 4),
            "relative_error": relative_error(float(e["value"]), absolute),
        }
        for name, e in decision.challenger.items()
    }
    incremental = decision.vs_no_action.get("challenger")
    return {
        "true_value_per_decision": round(absolute, 4),
        "true_incremental_per_decision": round(true_incremental, 4),
        "ope": estimates,
        "ope_incremental": None
        if incremental is None
        else {
            "estimator": decision.estimator,
            "value": round(float(incremental["value"]), 4),
            "ci_low": round(float(incremental["ci_low"]), 4),
            "ci_high": round(float(incremental["ci_high"]), 4),
            "relative_error": relative_error(float(incremental["value"]), true_incremental),
        },
    }


def main() -> int:
    drop_environment_settings(say=print)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hcps", type=int, default=5000)
    parser.add_argument("--periods", type=int, default=26)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--holdout-rate", type=float, default=0.05)
    parser.add_argument(
        "--exploration",
        choices=("epsilon_greedy", "softmax"),
        default="epsilon_greedy",
        help="Serving exploration policy (NEXTBEST_EXPLORATION); softmax uses --temperature.",
    )
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument(
        "--decisions-per-hcp",
        type=int,
        default=4,
        help="Decisions served per HCP per round: passes, each a simulated week after "
        "the one before.",
    )
    parser.add_argument(
        "--bayes-samples",
        type=int,
        default=2000,
        help="trait samples per HCP for the Bayes-optimal policy at the start (0: skip)",
    )
    parser.add_argument(
        "--serve-only",
        action="store_true",
        help="Serve and send feedback each round but never retrain, evaluate or promote: "
        "leaves the loop's commands to run by hand on the logged evidence (README).",
    )
    parser.add_argument("--gate", type=Path, default=Path("training/gate.yaml"))
    parser.add_argument("--out", type=Path, default=RESULTS / "loop.json")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="Keep the world, models and database here (default: a temporary directory).",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.decisions_per_hcp < 1:
        parser.error("--decisions-per-hcp must be at least 1")
    load_at_start = os.getloadavg()
    gate_config = gate.load_gate_config(args.gate if args.gate.exists() else None)
    config = TrainConfig(
        engagement=EngagementParams(n_estimators=120, num_leaves=31),
        uplift=UpliftParams(),
    )
    began = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="nextbest-loop-"))
    if (work / "models").exists():
        parser.error(f"{work / 'models'} already exists: use a new --work directory")
    # The history ends as many weeks before today as the rounds will be served in
    # (and one more): every pass's simulated week is then in the past, as retrain
    # takes a logged decision dated after now for a mistake.
    weeks = args.rounds * args.decisions_per_hcp
    start = date.today() - timedelta(days=7 * (args.periods + weeks + 1))
    log(f"simulating {args.hcps:,} HCPs x {args.periods} periods (seed {args.seed}) in {work}")
    world = simulate_world(n_hcps=args.hcps, periods=args.periods, seed=args.seed, start=start)
    world.write(work / "world", fmt="parquet")
    dataset = load_dataset(work / "world")
    settings = Settings(
        models_dir=work / "models", epsilon=args.epsilon, holdout_rate=args.holdout_rate
    )
    oracle = world.true_value(world.oracle_choice(purpose=SERVED_PURPOSE)) / world.n_hcps
    logging_value = world.policy_value(world.logging_policy_probabilities()) / world.n_hcps
    baseline = float(world.baseline.mean())
    log(f"oracle {oracle:+.4f}, logging policy {logging_value:+.4f} NRx per HCP (net of cost)")

    bayes_samples = 0 if args.serve_only else args.bayes_samples
    bayes: dict[str, Any] = {"samples_per_hcp": bayes_samples} if bayes_samples else {}
    if bayes_samples:
        bayes["history_only"] = bayes_ceiling(world, bayes_samples, oracle)
        log(f"Bayes-optimal policy from the history: {bayes['history_only']}")
    timeline = Timeline(world, args.periods)
    clock = SimulatedClock(work / "clock")

    log("training the first champion on the history")
    first = train(dataset, config=config)
    champion_version = registry.log_training_run(first, settings).version
    champion_model = first.model
    # Where a server started with NEXTBEST_MODELS_DIR=<work>/models looks by default.
    keys = settings.resolved_api_keys_file
    keys.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    # Mode 600 from its creation, as `nextbest keys` writes it: a server started on
    # this directory (the README's loop demo) warns of a key file others may read.
    with os.fdopen(os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(f"keys:\n  - name: bench-loop\n    role: admin\n    key_sha256: {digest}\n")
    env = {
        **os.environ,
        "NEXTBEST_MODELS_DIR": str(settings.models_dir),
        "NEXTBEST_API_KEYS_FILE": str(keys),
        "NEXTBEST_EPSILON": str(args.epsilon),
        "NEXTBEST_HOLDOUT_RATE": str(args.holdout_rate),
        # A draw per request: each pass (its own simulated week) its own holdout.
        "NEXTBEST_HOLDOUT_DAYS": "0",
        "NEXTBEST_EXPLORATION": args.exploration,
        "NEXTBEST_TEMPERATURE": str(args.temperature),
        "NEXTBEST_SEED": str(args.seed),
        **clock.env(),
    }
    server = Server(env, work / "server.log")
    server.start()
    rng = np.random.default_rng(args.seed + 1)
    rounds: list[dict[str, Any]] = [
        {
            "round": 0,
            "policy": "logging policy (history)",
            "true_value_per_hcp": round(logging_value, 4),
            "ratio_to_oracle": round(logging_value / oracle, 4),
        }
    ]
    champion_choice = greedy_choice(world, champion_model, pass_time(world, 0))
    champion_true = first_true = per_hcp(world, champion_choice)
    log(
        f"round 0: first champion v{champion_version} true {champion_true:+.4f} "
        f"({champion_true / oracle:.2f} of oracle)"
    )
    reload_mode = "none"
    # The world at each pass served so far: what the gate's evidence was drawn from.
    served_states: list[SimulatedWorld] = []
    try:
        with httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
        ) as client:
            for round_no in range(1, args.rounds + 1):
                t0 = time.perf_counter()
                served = serve_round(
                    client,
                    timeline,
                    clock,
                    rng,
                    round_no,
                    decisions_per_hcp=args.decisions_per_hcp,
                    states=served_states,
                )
                t1 = time.perf_counter()
                if args.serve_only:
                    log(f"round {round_no}: served and sent feedback in {t1 - t0:.0f}s")
                    continue
                trained = retrain(
                    settings,
                    dataset=dataset,
                    config=config,
                    gate=gate_config,  # its evaluation_share left out, its file kept
                )
                t2 = time.perf_counter()
                # Both policies at the week the next round is served in (the state this
                # round's touches left), and, for their OPE, over the weeks the gate's
                # evidence was served in (each pass serves every HCP once).
                at = pass_time(world, timeline.next_week)
                state = timeline.state()
                oracle_now = oracle_per_hcp(state)
                challenger_choice = greedy_choice(world, trained.result.model, at)
                evaluation = gate.promote(settings, config=gate_config)
                t3 = time.perf_counter()
                decision = evaluation.decision
                served_true = per_hcp(state, champion_choice)
                challenger_true = per_hcp(state, challenger_choice)
                served_mean = float(np.mean([per_hcp(w, champion_choice) for w in served_states]))
                # What the served version's greedy policy was worth over this round's weeks,
                # each week's state tired by the touches before it (its snapshot is not).
                this_round = served_states[-args.decisions_per_hcp :]
                served_in_round = float(np.mean([per_hcp(w, champion_choice) for w in this_round]))
                oracle_in_round = float(np.mean([oracle_per_hcp(w) for w in this_round]))
                challenger_mean = float(
                    np.mean([per_hcp(w, challenger_choice) for w in served_states])
                )
                if evaluation.promoted:
                    reload_mode = server.reload(client)
                    champion_version = evaluation.challenger_version
                    champion_choice = challenger_choice
                champion_true = per_hcp(state, champion_choice)
                record = {
                    "round": round_no,
                    "next_week": timeline.next_week,
                    "oracle_per_hcp": round(oracle_now, 4),
                    "served_version": evaluation.champion_version,
                    "served_true_value_per_hcp": round(served_true, 4),
                    "served_ratio_to_oracle": round(served_true / oracle_now, 4),
                    "served_true_value_over_round": round(served_in_round, 4),
                    "served_ratio_over_round": round(served_in_round / oracle_in_round, 4),
                    "challenger_version": evaluation.challenger_version,
                    "challenger_true_value_per_hcp": round(challenger_true, 4),
                    "challenger_ratio_to_oracle": round(challenger_true / oracle_now, 4),
                    "promoted": evaluation.promoted,
                    "gate_reasons": decision.reasons,
                    "n_decisions_evaluated": decision.n_decisions,
                    "agreement": round(decision.agreement, 4),
                    "ope_champion": ope_summary(decision.champion, baseline + served_mean),
                    "ope_challenger": ope_summary(decision.challenger, baseline + challenger_mean),
                    "difference": decision.difference,
                    "true_difference_per_decision": round(challenger_true - served_true, 4),
                    # What the gate's difference estimates: over the evaluated weeks.
                    "true_difference_over_evaluated_weeks": round(challenger_mean - served_mean, 4),
                    "vs_no_action": decision.vs_no_action,
                    "evidence_served_by": evaluation.served_by,
                    "promoted_policy": promoted_record(
                        decision, true_incremental=challenger_mean, baseline=baseline
                    )
                    if evaluation.promoted
                    else None,
                    "champion_after_round": champion_version,
                    "champion_true_after_round": round(champion_true, 4),
                    "champion_ratio_after_round": round(champion_true / oracle_now, 4),
                    "feedback_rows_in_training": len(trained.feedback.interactions),
                    "feedback_rows_reserved_for_gate": trained.feedback.n_reserved,
                    "serving": served,
                    "seconds": {
                        "serve_and_feedback": round(t1 - t0, 1),
                        "retrain": round(t2 - t1, 1),
                        "gate": round(t3 - t2, 1),
                    },
                }
                rounds.append(record)
                log(
                    f"round {round_no}: served v{evaluation.champion_version} "
                    f"true {served_true:+.4f} ({served_true / oracle_now:.2f} of oracle "
                    f"{oracle_now:+.4f}); challenger v{evaluation.challenger_version} true "
                    f"{challenger_true:+.4f} ({challenger_true / oracle_now:.2f}); "
                    f"{'PROMOTED' if evaluation.promoted else 'kept champion'}; "
                    f"DR champion {decision.champion.get('dr', {}).get('value', float('nan')):.3f} "
                    f"vs true {baseline + served_mean:.3f}; "
                    f"{t1 - t0:.0f}s serve+feedback, {t2 - t1:.0f}s retrain"
                )
    finally:
        server.stop()
    if args.serve_only:
        log(f"served {args.rounds} round(s); registry and feedback in {settings.models_dir}")
        return 0
    final_ratio = rounds[-1]["champion_ratio_after_round"] if len(rounds) > 1 else None
    promoted = [r for r in rounds[1:] if r["promoted"]]
    promoted_errors = {
        name: max(r["promoted_policy"]["ope"][name]["relative_error"] for r in promoted)
        for name in ("ips", "snips", "dr")
        if promoted and all(name in r["promoted_policy"]["ope"] for r in promoted)
    }
    # Every challenger is a candidate for promotion: how well OPE valued each of them
    # (and the champion) says how far a promotion's evidence can be trusted, even in a
    # run that promoted nothing.
    candidate_errors = {
        who: {
            name: max(abs(r[f"ope_{who}"][name]["relative_error"]) for r in rounds[1:])
            for name in ("ips", "snips", "dr")
        }
        for who in ("champion", "challenger")
        if len(rounds) > 1
    }
    incremental_errors = [
        r["promoted_policy"]["ope_incremental"]["relative_error"]
        for r in promoted
        if r["promoted_policy"]["ope_incremental"] is not None
    ]
    summary = {
        "oracle_per_hcp": round(oracle, 4),
        "logging_policy_per_hcp": round(logging_value, 4),
        "no_touch_outcome_per_hcp": round(baseline, 4),
        # At the first decision after the history (the state the first round is served in).
        "first_champion_ratio": round(first_true / oracle, 4),
        "final_champion_ratio_to_oracle": None if final_ratio is None else round(final_ratio, 4),
        "target_final_ratio": 0.9,
        # The most any learner could reach from the history at the first decision:
        # what the target is measured against.
        "bayes_optimal_ratio_to_oracle": bayes or None,
        "final_ratio_met": bool(final_ratio is not None and final_ratio >= 0.9),
        # Whether the loop ends above where it began: the champion after the last round
        # against the first at the first decision, each as a ratio to the oracle of its
        # week (the values themselves move with the state the touches leave).
        "served_value_rises": bool(final_ratio is not None and final_ratio > first_true / oracle),
        "promotions": len(promoted),
        "max_relative_error_of_promoted_ope": promoted_errors,
        "ope_within_10pct_of_truth": (
            {k: bool(v <= 0.10) for k, v in promoted_errors.items()} if promoted_errors else None
        ),
        "max_relative_error_of_ope_per_round": candidate_errors,
        "max_relative_error_of_promoted_incremental_ope": max(incremental_errors)
        if incremental_errors and None not in incremental_errors
        else None,
        "reload": reload_mode,
        "server_restarts": server.restarts,
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    payload = {
        "benchmark": "loop",
        "command": " ".join(["python", "bench/loop.py", *sys.argv[1:]]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1_5_15_at_start": [round(x, 2) for x in load_at_start],
            "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": {
            "hcps": args.hcps,
            "periods": args.periods,
            "rounds": args.rounds,
            "seed": args.seed,
            "epsilon": args.epsilon,
            "holdout_rate": args.holdout_rate,
            "exploration": args.exploration,
            "temperature": args.temperature if args.exploration == "softmax" else None,
            "decisions_per_hcp_per_round": args.decisions_per_hcp,
            # What every request is served as; the oracle chooses among the same actions.
            "purpose": SERVED_PURPOSE,
            # Each pass a simulated week; every delivered touch weighs on its HCP's
            # engagement for FATIGUE_WINDOW weeks, as the history's do.
            "days_per_pass": 7,
            "fatigue_advanced": True,
            "gate": gate_config.model_dump(),
            "train_config": config.model_dump(mode="json"),
            "value_unit": "NRx per HCP per decision; 'true value' is net of cost and "
            "relative to no touch; OPE values include the no-touch outcome",
        },
        "summary": summary,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=str))
    log(json.dumps(summary, indent=1))
    log(f"wrote {args.out}")
    from plots import draw  # bench/plots.py: the figure, beside the JSON

    draw(args.out, say=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
