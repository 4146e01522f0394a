"""The closed loop, simulated: serve -> outcomes -> feedback -> retrain -> gate -> promote.

A simulated world provides the history (logged by its traditional policy) and the
ground truth. The first champion is trained on that history. Each round then:

1. serve every HCP ``--decisions-per-hcp`` times (default 4) through a real
   ``nextbest serve`` process (``POST /v1/recommendations/batch``, epsilon-greedy
   with holdout drawn per request, all logged); each draw is an independent response from the same
   end-of-history state (fatigue not advanced), so the true value stays exact and
   every round logs four times the evidence a single pass would;
2. draw each answer's outcome from the simulator's ground truth (a holdout or
   empty answer gets the no-touch outcome) and send it through ``POST /v1/feedback``
   (``outcome`` events, plus ``opened`` when the HCP engaged);
3. retrain on history + the logged decisions with their outcomes, except the share
   reserved for the gate -> ``challenger``;
4. evaluate challenger vs champion off-policy on the reserved share of every
   round's logged decisions (whichever version served them) and promote when the
   gate (``training/gate.yaml`` unless ``--gate``) passes;
5. on promotion, hot-reload the server (``POST /v1/admin/reload``; a restart if
   the route is missing).

Per round it records the true value of the champion's and the challenger's greedy
policies (net NRx per HCP, from the ground truth), their ratio to the oracle, the
OPE estimates with intervals and how far they are from the truth, and the decision;
for a promoted challenger, its true value, its OPE estimates and their relative
errors (``promoted``). Before the first round and after the last it also scores
the Bayes-optimal policy of the world given the evidence so far
(:mod:`nextbest.simulate.posterior`): the most any learner could reach, the
ceiling the target is read against. The oracle and the Bayes-optimal policy choose
among promotional actions only, as the served policy does (the bench's requests
name no purpose, so the service answers them as promotional: no medical content).
Writes ``bench/results/loop.json`` with the machine load.

Run: ``make bench-loop`` or ``python bench/loop.py --hcps 5000 --rounds 6``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import fields
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
from nextbest.simulate.posterior import Responses, posterior_values
from nextbest.simulate.response import FATIGUE_WINDOW
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


class ContactWindow:
    """Touches per HCP and channel in the last ``FATIGUE_WINDOW`` passes (``--fatigue``)."""

    def __init__(self, n_hcps: int) -> None:
        self.passes: deque[np.ndarray] = deque(maxlen=FATIGUE_WINDOW)
        self.n_hcps = n_hcps

    def counts(self, hcps: np.ndarray) -> np.ndarray:
        """``(m, C)`` touches per channel of the HCPs ``hcps`` over the window."""
        total = np.zeros((self.n_hcps, len(CHANNELS)))
        for touched in self.passes:
            rows = np.flatnonzero(touched >= 0)
            np.add.at(total, (rows, touched[rows]), 1.0)
        return total[hcps]

    def record(self, hcps: np.ndarray, channel: np.ndarray) -> None:
        touched = np.full(self.n_hcps, -1, dtype=np.int64)
        touched[hcps] = channel
        self.passes.append(touched)


def serve_round(
    client: httpx.Client,
    world: SimulatedWorld,
    rng: np.random.Generator,
    round_no: int,
    *,
    decisions_per_hcp: int = 1,
    contacts: ContactWindow | None = None,
    evidence: list[Responses] | None = None,
) -> dict[str, Any]:
    """Serve every HCP ``decisions_per_hcp`` times (passes), draw outcomes, send them as
    feedback; counts and timings. Each pass's draws are appended to ``evidence``.

    With ``contacts``, each delivered touch is also sent as a ``delivered`` event (so
    the service's frequency caps see it) and weighs on the HCP's later draws as
    fatigue (``draw_response(extra_touches=...)``) for ``FATIGUE_WINDOW`` passes.
    """
    hcp_ids = world.hcps["hcp_id"].tolist()
    hcp_index = pd.Index(world.hcps["hcp_id"])
    action_index = pd.Index(world.catalog["action_id"])
    all_results: list[dict[str, Any]] = []
    all_actions: list[np.ndarray] = []
    all_outcomes: list[np.ndarray] = []
    serve_s = feedback_s = 0.0
    accepted = 0
    for pass_no in range(decisions_per_hcp):
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
        extra = None if contacts is None else contacts.counts(hcps)
        engaged, outcome = world.draw_response(hcps, actions, rng, extra_touches=extra)
        if evidence is not None:
            evidence.append(Responses(hcps, actions, engaged, outcome))
        delivered = (actions >= 0) & world.eligible[hcps, np.maximum(actions, 0)]
        if contacts is not None:
            channel = world.codes.channel[np.maximum(actions, 0)]
            contacts.record(hcps[delivered], channel[delivered])
        events: list[dict[str, Any]] = []
        for r, e, d, value in zip(results, engaged, delivered, outcome, strict=True):
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
            for kind, happened in (("delivered", contacts is not None and d), ("opened", e)):
                if happened:
                    events.append(
                        {
                            "event_id": f"{prefix}-{kind}",
                            "event_type": kind,
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


def true_per_hcp(world: SimulatedWorld, model: ScoringModel) -> float:
    """True net value per HCP (NRx) of ``model``'s greedy policy at the end of history."""
    decisions = pd.DataFrame(
        {
            "hcp_id": world.hcps["hcp_id"],
            # naive UTC, as the served answers' timestamps (not the machine's zone)
            "timestamp": pd.Timestamp.now(tz="UTC").tz_localize(None),
            "purpose": SERVED_PURPOSE,
            "channel_filter": None,
        }
    )
    codes = action_codes(greedy_actions(model, decisions), pd.Index(world.catalog["action_id"]))
    return world.true_value(codes) / world.n_hcps


def bayes_ceiling(
    world: SimulatedWorld, samples: int, evidence: list[Responses] | None, oracle: float
) -> dict[str, float]:
    """Ratio to the oracle of the Bayes-optimal policy given the history and ``evidence``.

    A finite sample understates the exact posterior's value, the more so the more
    evidence concentrates it (fewer effective samples), so read it as a lower bound
    of the ceiling that tightens with ``samples``.
    """
    responses = None
    if evidence:
        responses = Responses(
            *(np.concatenate([getattr(r, f.name) for r in evidence]) for f in fields(Responses))
        )
    post = posterior_values(
        world,
        samples=samples,
        seed=0,
        responses=responses,
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
        help="Decisions served per HCP per round (independent draws from the same state).",
    )
    parser.add_argument(
        "--fatigue",
        action="store_true",
        help="Advance the simulated fatigue with every delivered touch and send it as a "
        "'delivered' event (frequency caps then apply); true values stay those of the "
        "end-of-history state, so they are approximate in this mode.",
    )
    parser.add_argument(
        "--bayes-samples",
        type=int,
        default=2000,
        help="trait samples per HCP for the Bayes-optimal policy at the start and after "
        "the last round (0: skip; not computed with --fatigue)",
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
    start = date.today() - timedelta(days=7 * args.periods)
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

    bayes_samples = 0 if args.fatigue or args.serve_only else args.bayes_samples
    bayes: dict[str, Any] = {"samples_per_hcp": bayes_samples} if bayes_samples else {}
    if bayes_samples:
        bayes["history_only"] = bayes_ceiling(world, bayes_samples, None, oracle)
        log(f"Bayes-optimal policy from the history: {bayes['history_only']}")
    evidence: list[Responses] | None = [] if bayes_samples else None

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
        # Every pass of every round runs within minutes, standing for decisions
        # weeks apart: a holdout per HCP and week would hold the same HCPs out of
        # the whole run. A draw per request gives each pass its own holdout.
        "NEXTBEST_HOLDOUT_DAYS": "0",
        "NEXTBEST_EXPLORATION": args.exploration,
        "NEXTBEST_TEMPERATURE": str(args.temperature),
        "NEXTBEST_SEED": str(args.seed),
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
    champion_true = true_per_hcp(world, champion_model)
    log(
        f"round 0: first champion v{champion_version} true {champion_true:+.4f} "
        f"({champion_true / oracle:.2f} of oracle)"
    )
    reload_mode = "none"
    contacts = ContactWindow(world.n_hcps) if args.fatigue else None
    try:
        with httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
        ) as client:
            for round_no in range(1, args.rounds + 1):
                t0 = time.perf_counter()
                served = serve_round(
                    client,
                    world,
                    rng,
                    round_no,
                    decisions_per_hcp=args.decisions_per_hcp,
                    contacts=contacts,
                    evidence=evidence,
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
                challenger_true = true_per_hcp(world, trained.result.model)
                evaluation = gate.promote(settings, config=gate_config)
                t3 = time.perf_counter()
                decision = evaluation.decision
                served_true = champion_true
                if evaluation.promoted:
                    reload_mode = server.reload(client)
                    champion_version = evaluation.challenger_version
                    champion_model = trained.result.model
                    champion_true = challenger_true
                record = {
                    "round": round_no,
                    "served_version": evaluation.champion_version,
                    "served_true_value_per_hcp": round(served_true, 4),
                    "served_ratio_to_oracle": round(served_true / oracle, 4),
                    "challenger_version": evaluation.challenger_version,
                    "challenger_true_value_per_hcp": round(challenger_true, 4),
                    "challenger_ratio_to_oracle": round(challenger_true / oracle, 4),
                    "promoted": evaluation.promoted,
                    "gate_reasons": decision.reasons,
                    "n_decisions_evaluated": decision.n_decisions,
                    "agreement": round(decision.agreement, 4),
                    "ope_champion": ope_summary(decision.champion, baseline + served_true),
                    "ope_challenger": ope_summary(decision.challenger, baseline + challenger_true),
                    "difference": decision.difference,
                    "true_difference_per_decision": round(challenger_true - served_true, 4),
                    "vs_no_action": decision.vs_no_action,
                    "evidence_served_by": evaluation.served_by,
                    "promoted_policy": promoted_record(
                        decision, true_incremental=challenger_true, baseline=baseline
                    )
                    if evaluation.promoted
                    else None,
                    "champion_after_round": champion_version,
                    "champion_true_after_round": round(champion_true, 4),
                    "champion_ratio_after_round": round(champion_true / oracle, 4),
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
                    f"true {served_true:+.4f} ({served_true / oracle:.2f} of oracle); "
                    f"challenger v{evaluation.challenger_version} true {challenger_true:+.4f}; "
                    f"{'PROMOTED' if evaluation.promoted else 'kept champion'}; "
                    f"DR champion {decision.champion.get('dr', {}).get('value', float('nan')):.3f} "
                    f"vs true {baseline + served_true:.3f}; "
                    f"{t1 - t0:.0f}s serve+feedback, {t2 - t1:.0f}s retrain"
                )
    finally:
        server.stop()
    if args.serve_only:
        log(f"served {args.rounds} round(s); registry and feedback in {settings.models_dir}")
        return 0
    if evidence:
        bayes["after_last_round"] = bayes_ceiling(world, bayes_samples, evidence, oracle)
        log(f"Bayes-optimal policy after round {args.rounds}: {bayes['after_last_round']}")
    final_ratio = champion_true / oracle
    served_values = [r["served_true_value_per_hcp"] for r in rounds[1:]]
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
        "first_champion_ratio": rounds[1]["served_ratio_to_oracle"] if len(rounds) > 1 else None,
        "final_champion_ratio_to_oracle": round(final_ratio, 4),
        "target_final_ratio": 0.9,
        # The most any learner could reach from the same evidence (history only, and
        # with every round's draws): what the target is measured against.
        "bayes_optimal_ratio_to_oracle": bayes or None,
        "final_ratio_met": bool(final_ratio >= 0.9),
        "served_value_rises": bool(len(served_values) > 1 and served_values[-1] > served_values[0]),
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
            "fatigue_advanced": bool(args.fatigue),
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
