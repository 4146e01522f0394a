"""The closed loop, simulated: serve -> outcomes -> feedback -> gate -> retrain -> reload.

A simulated world provides the history (logged by its traditional policy) and the
ground truth. The first champion is trained on that history. Each round then:

1. serve every HCP ``--decisions-per-hcp`` times (passes, default 4) through a real
   ``nextbest serve`` process (``POST /v1/recommendations/batch``, epsilon-greedy
   with holdout drawn per request, all logged). With ``--challenger-share`` above 0
   (default 0.5, ``NEXTBEST_CHALLENGER_SHARE``) the server answers that share of the
   HCPs (a keyed hash of HCP and version picks them) with the challenger the round
   before retrained, the rest with the champion, each answer logged under the
   version that gave it, with its propensity (the results' ``model_version``). Each
   pass is a simulated week after the one before, as the history's decisions are:
   the server reads a simulated clock (``bench/simclock``, :class:`SimulatedClock`),
   so its answers and the feedback are logged on their week, and the world moves on
   with them: every delivered touch weighs on its HCP's engagement on that channel
   for ``FATIGUE_WINDOW`` weeks, as the history's touches do (:class:`Timeline`), so
   each pass's responses are drawn from the state the touches before it left;
2. draw each answer's outcome from the simulator's ground truth at its week (a
   holdout or empty answer gets the no-touch outcome) and send it through
   ``POST /v1/feedback`` (``outcome`` events, ``delivered`` for each touch the world
   delivered, plus ``opened`` when the HCP engaged);
3. evaluate the challenger served in the round (none in round 1) vs the champion
   off-policy on the reserved share of every round's logged decisions (whichever
   version served them) and promote it when the gate (``training/gate.yaml`` unless
   ``--gate``) passes;
4. retrain on history + the logged decisions with their outcomes, except the share
   reserved for the gate -> ``challenger``, the next round's (none after the last
   round: no round would serve or judge it);
5. hot-reload the server (``POST /v1/admin/reload``; a restart if the route is
   missing), which loads the champion and the new challenger (alias ``challenger``
   moved), and check that ``GET /healthz`` names them (:meth:`ClosedLoop.reload`).

Why a challenger serves before it is judged. With ``--challenger-share 0`` the
order is the one before 2026-12-07: serve -> feedback -> retrain -> gate, the
challenger judged as soon as it is trained, on decisions only the champion served
(and the server reloaded only on a promotion). The gate then sees a challenger's
own choices only where the champion's exploration happened to serve them
(propensity about epsilon / the number of actions), so its intervals are far too
wide: in the run of 2026-12-07 04:35 every challenger was truly better than its
champion and none was promoted. Served to a share of the HCPs for a round, the
challenger's choices are logged with its own propensities (1 - epsilon and more
for its greedy choice), so the gate judges it on evidence it served itself.

Fresh history. The server, the retrain and the gate run with
``NEXTBEST_FRESH_HISTORY=true`` (``--frozen-history``: off, as before): the served
model's history features (days since a touch, touches in the last 7 and 30 days)
move on to each simulated day by the contacts the store holds since its cut-off, the
``delivered`` events of the touches served. After moving the clock to a pass's week
the bench waits until ``GET /healthz`` says the served history is as of that day
(00:00 UTC) before serving it (:func:`wait_for_history`), and each version's true
value is that of its greedy policy with the history moved as it is served: to the
day it is evaluated at, by the store's contacts (:func:`greedy_choices`). The server
applies no serving rules (an empty rules file): with the touches stored as contacts,
the default rules' caps (two rep visits in 28 days) would bind on weekly passes, and
the policy served would not be the greedy policy whose truth is measured (before the
touches were stored, nothing counted against the caps).

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
the last ``FATIGUE_WINDOW`` weeks), the true value of the greedy policies of the
champion that served the round (``served_*``) and of the challenger judged
(``challenger_*``; with a share, the one that served beside it; none in round 1),
net NRx per HCP from the ground truth, the oracle of that state and their ratios to
it, the OPE estimates with intervals and how far they are from the truth (the
policy's mean true value over the weeks the evaluated decisions were served in), and
the decision; for a promoted challenger, its true value, its OPE estimates and their
relative errors (``promoted``); the share of the round's decisions each version
served (``served_share``, and the gate's ``evidence_served_by``), and how many of the
evaluated decisions a random split chose the answering version of, valued with both
versions' probabilities (``split_mixed``), and how many were evaluated from outside
the reserved share, served after both versions' cut-offs (``unseen``). Before the first
round it also scores the Bayes-optimal policy of the world given the history
(:mod:`nextbest.simulate.posterior`): the most any learner could reach at the first
decision, the ceiling the target is read against (not after the last round: the
posterior models draws from the end-of-history state, which the rounds' are not).
With ``--frozen-history`` a version scores from the snapshot of its training cut-off,
which does not count the touches served since: its greedy choice stays the same week
after week while its own touches tire the HCPs it keeps choosing. Either way each round
also records the mean true value over the round's weeks of the policy as served, HCP
by HCP the greedy choice of the version that answered it
(``served_true_value_over_round``).
The oracle and the Bayes-optimal policy choose among promotional actions only, as
the served policy does (the bench's requests name no purpose, so the service
answers them as promotional: no medical content). Writes ``bench/results/loop.json``
with the machine load.

Run: ``make bench-loop`` or ``python bench/loop.py --hcps 5000 --rounds 6``
(``--frozen-history`` to compare with the history frozen at each cut-off,
``--challenger-share 0`` with the order before 2026-12-07).
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
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from nextbest import registry
from nextbest.api.process import free_port, start_server, stop_server
from nextbest.contract import Dataset, load_dataset
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.scoring import ScoringModel
from nextbest.learning.train import train
from nextbest.limits import Purpose
from nextbest.loop import gate
from nextbest.loop.evidence import action_codes, greedy_actions
from nextbest.loop.retrain import RetrainResult, retrain
from nextbest.settings import Settings, drop_environment_settings
from nextbest.simulate import SimulatedWorld, simulate_world
from nextbest.simulate.posterior import posterior_values
from nextbest.simulate.response import FATIGUE_WINDOW, engagement_probability, static_logit
from nextbest.simulate.vocabulary import CHANNELS
from nextbest.storage.db import history_session
from nextbest.storage.repository import contacts_between

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_KEY = "bench-loop-admin-key"
SERVE_BATCH = 500
# The bench's requests name no purpose, so the service serves them as promotional:
# no medical content. The oracle and the Bayes-optimal policy are scored on the same
# actions, or the ratios would be read against what the served policy may never serve.
SERVED_PURPOSE: Purpose = "promotional"
FEEDBACK_BATCH = 5000
# How long a server moving its history on to a new day may take to swap it in.
HISTORY_WAIT_S = 120.0


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
    answered_by: list[np.ndarray] | None = None,
    history_from: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """Serve every HCP ``decisions_per_hcp`` times (passes, a simulated week each),
    draw outcomes from each week's state, send them as feedback; counts and timings.
    Each pass's state (the world its responses were drawn from) is appended to
    ``states``, and the version that answered each HCP ``(n,)`` (in the order of
    ``world.hcps``; a result's ``model_version``, else its batch's) to ``answered_by``.
    ``history_from``: the served model's cut-off when the server moves its
    history (``NEXTBEST_FRESH_HISTORY``, a model that can advance): each pass waits
    for the history of its day (:func:`wait_for_history`); None: no wait."""
    world = timeline.world
    hcp_ids = world.hcps["hcp_id"].tolist()
    hcp_index = pd.Index(world.hcps["hcp_id"])
    action_index = pd.Index(world.catalog["action_id"])
    all_results: list[dict[str, Any]] = []
    all_versions: list[str] = []
    all_actions: list[np.ndarray] = []
    all_outcomes: list[np.ndarray] = []
    serve_s = feedback_s = history_s = 0.0
    accepted = 0
    for pass_no in range(decisions_per_hcp):
        state = timeline.state()
        if states is not None:
            states.append(state)
        at = pass_time(world, timeline.next_week)
        clock.set(at)
        day = at.tz_localize("UTC").normalize()
        if history_from is not None and day > pd.Timestamp(history_from).tz_localize("UTC"):
            history_s += wait_for_history(client, day)
        results: list[dict[str, Any]] = []
        versions: list[str] = []
        started = time.perf_counter()
        for start in range(0, len(hcp_ids), SERVE_BATCH):
            response = client.post(
                "/v1/recommendations/batch",
                json={"hcp_ids": hcp_ids[start : start + SERVE_BATCH], "k": 1},
            )
            response.raise_for_status()
            answer = response.json()
            results.extend(answer["results"])
            # Each result names its version once a challenger answers a share of the HCPs.
            versions.extend(
                r.get("model_version", answer["model_version"]) for r in answer["results"]
            )
        serve_s += time.perf_counter() - started
        hcps = hcp_index.get_indexer([r["hcp_id"] for r in results])
        if answered_by is not None:
            by = np.full(world.n_hcps, None, dtype=object)
            by[hcps] = versions
            answered_by.append(by)
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
        for r, e, value, reached in zip(results, engaged, outcome, delivered, strict=True):
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
            if reached:  # a contact, as the send's feed reports it (dated by the clock)
                events.append(
                    {
                        "event_id": f"{prefix}-delivered",
                        "event_type": "delivered",
                        "hcp_id": r["hcp_id"],
                        "recommendation_id": rid,
                        "action_id": r["items"][0]["action_id"],
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
        all_versions.extend(versions)
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
        # The round's decisions by the version that served them.
        "served_by": {str(v): n for v, n in sorted(Counter(all_versions).items())},
        "serve_s": round(serve_s, 2),
        "feedback_s": round(feedback_s, 2),
        # Waiting for the server to move its history on to each pass's day.
        "history_wait_s": round(history_s, 2),
        "mean_outcome_served": float(outcome[actions >= 0].mean())
        if (actions >= 0).any()
        else None,
    }


def wait_for_history(
    client: httpx.Client, day: pd.Timestamp, *, timeout_s: float = HISTORY_WAIT_S
) -> float:
    """Wait until ``GET /healthz`` says the served history is as of ``day`` (00:00 UTC,
    tz-aware): a server moving its history (``NEXTBEST_FRESH_HISTORY``) moves on in
    the background once a request (this one included) finds its clock on a later day.
    Returns the seconds waited.

    Raises:
        RuntimeError: not so within ``timeout_s``, naming what the server said.
    """
    started = time.monotonic()
    while True:
        response = client.get("/healthz")
        response.raise_for_status()
        said = response.json().get("features_as_of")
        if said is not None and pd.Timestamp(said) == day:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(
                f"the server's history is as of {said} (GET /healthz features_as_of) "
                f"{timeout_s:.0f} s after its clock moved to {day:%Y-%m-%d}, not "
                f"{day.isoformat()}: does it move its history (NEXTBEST_FRESH_HISTORY, "
                "server.log in the --work directory)? --frozen-history runs without"
            )
        time.sleep(0.05)


def greedy_choices(
    world: SimulatedWorld,
    model: ScoringModel,
    times: list[pd.Timestamp],
    contacts: pd.DataFrame | None = None,
) -> list[np.ndarray]:
    """``model``'s greedy policy on every HCP at each of ``times``: ``(n,)`` catalog rows
    (-1: none) each. ``contacts`` (the store's since the model's cut-off,
    :func:`store_contacts`): its history moved on to each day as a server moving it
    serves it; None: the snapshot's history."""
    n = world.n_hcps
    decisions = pd.DataFrame(
        {
            "hcp_id": np.tile(world.hcps["hcp_id"].to_numpy(), len(times)),
            "timestamp": np.repeat(pd.DatetimeIndex(times).to_numpy(), n),
            "purpose": SERVED_PURPOSE,
            "channel_filter": None,
        }
    )
    codes = action_codes(
        greedy_actions(model, decisions, contacts), pd.Index(world.catalog["action_id"])
    )
    return [codes[i * n : (i + 1) * n] for i in range(len(times))]


def greedy_choice(
    world: SimulatedWorld,
    model: ScoringModel,
    at: pd.Timestamp,
    contacts: pd.DataFrame | None = None,
) -> np.ndarray:
    """``(n,)`` catalog rows (-1: none) of ``model``'s greedy policy on every HCP at ``at``
    (``contacts``: as :func:`greedy_choices` takes them)."""
    return greedy_choices(world, model, [at], contacts)[0]


def store_contacts(
    settings: Settings, models: list[ScoringModel], until: pd.Timestamp, *, fresh: bool
) -> pd.DataFrame | None:
    """The bench store's contacts from the earliest cut-off of ``models`` to the end of
    ``until``'s day (naive UTC): what the server moved their history by; None when it
    does not move it (``fresh`` off)."""
    if not fresh:
        return None
    start = pd.to_datetime([m.as_of for m in models], utc=True).min()
    end = pd.Timestamp(until).tz_localize("UTC").normalize() + pd.Timedelta(days=1)
    with history_session(settings.resolved_database_url) as session:  # none made: empty
        return contacts_between(session, start=start.to_pydatetime(), end=end.to_pydatetime())


def per_hcp(state: SimulatedWorld, choice: np.ndarray) -> float:
    """True net value per HCP (NRx) of ``choice`` in the world ``state``."""
    return state.true_value(choice) / state.n_hcps


def mean_true(
    states: list[SimulatedWorld], choices: list[np.ndarray], weights: Sequence[float] | None = None
) -> float:
    """The mean over weeks of the true net value per HCP of each week's choice in that
    week's state, each week weighing ``weights`` (None: the same)."""
    values = [per_hcp(w, c) for w, c in zip(states, choices, strict=True)]
    return float(np.average(values, weights=weights))


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


@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Record in ``seconds[step]`` how long the block took (s, to 0.1)."""
    started = time.perf_counter()
    yield
    seconds[step] = round(time.perf_counter() - started, 1)


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """A registered version and its model, as the bench trained it."""

    version: str
    model: ScoringModel


@dataclasses.dataclass(frozen=True)
class PolicyTruth:
    """A version's greedy policy against the ground truth, net NRx per HCP."""

    # At the state the next round is served in (the touches of the last FATIGUE_WINDOW weeks).
    next_week: float
    # The mean over the weeks served so far, each at its state, weighted as the gate's
    # evidence (the reserved share of every week's decisions, all of those served after
    # both versions' cut-offs): what the gate's OPE estimates.
    over_evaluated_weeks: float
    # Its choices at each week served so far, ``(n,)`` catalog rows (-1: none) each.
    weeks: list[np.ndarray]


@dataclasses.dataclass(frozen=True)
class RoundTruth:
    """What a round's policies were truly worth (:func:`round_truth`)."""

    oracle_next_week: float
    oracle_over_round: float
    champion: PolicyTruth
    # None: no challenger was judged this round.
    challenger: PolicyTruth | None
    # The policy as served over the round's weeks: each HCP's greedy choice of the
    # version that answered it.
    served_over_round: float


def round_truth(
    timeline: Timeline,
    settings: Settings,
    *,
    states: list[SimulatedWorld],
    answered_by: list[np.ndarray],
    passes: int,
    champion: ModelVersion,
    challenger: ModelVersion | None,
    fresh: bool,
    reserved_share: float = 1.0,
) -> RoundTruth:
    """The true value of ``champion``'s and ``challenger``'s greedy policies (None: no
    challenger judged) at the week the next round is served in and over the weeks
    served so far (``states``), each week with the history it is served with (moved on
    to its day by the store's contacts; ``fresh`` off: the snapshot's); and of the
    policy served over the round's last ``passes`` weeks, HCP by HCP the greedy choice
    of the version ``answered_by`` names (``(n,)`` versions a week, as
    :func:`serve_round` records them). The weeks weigh as the gate's evidence does:
    ``reserved_share`` of a week's decisions, all of them from the week served after
    both versions' cut-offs (``gate.served_since``); 1 (or 0: no share reserved, every
    decision the gate's): every week alike.

    Raises:
        RuntimeError: a version other than these two answered an HCP this round.
    """
    world = timeline.world
    at = pass_time(world, timeline.next_week)
    state = timeline.state()
    times = [*(pass_time(world, week) for week in range(len(states))), at]
    judged = [v for v in (champion, challenger) if v is not None]
    contacts = store_contacts(settings, [v.model for v in judged], at, fresh=fresh)
    weights = None
    if 0 < reserved_share < 1:
        cut_off = max(pd.Timestamp(v.model.as_of) for v in judged)
        weights = [1.0 if t >= cut_off else reserved_share for t in times[:-1]]
    truths: dict[str, PolicyTruth] = {}
    for v in judged:
        *weeks, choice = greedy_choices(world, v.model, times, contacts)
        truths[v.version] = PolicyTruth(
            per_hcp(state, choice), mean_true(states, weeks, weights), weeks
        )
    this_round = states[-passes:]
    served: list[np.ndarray] = []
    for offset, by in enumerate(answered_by[-passes:]):
        week = len(states) - passes + offset
        strangers = set(by) - set(truths)
        if strangers:
            raise RuntimeError(
                f"versions {sorted(map(str, strangers))} answered HCPs in week {week} "
                f"after the history, where only champion v{champion.version}"
                f"{f' and challenger v{challenger.version}' if challenger else ''} should have "
                "(serve_round's answered_by: a result's model_version, else its batch's)"
            )
        choice = np.full(world.n_hcps, -1, dtype=np.int64)
        for version, truth in truths.items():
            choice = np.where(by == version, truth.weeks[week], choice)
        served.append(choice)
    return RoundTruth(
        oracle_next_week=oracle_per_hcp(state),
        oracle_over_round=float(np.mean([oracle_per_hcp(w) for w in this_round])),
        champion=truths[champion.version],
        challenger=None if challenger is None else truths[challenger.version],
        served_over_round=mean_true(this_round, served),
    )


def gate_record(
    evaluation: gate.Evaluation, truth: RoundTruth, *, baseline: float
) -> dict[str, Any]:
    """What the gate said of a round's challenger, beside the truth it estimated."""
    decision = evaluation.decision
    champion, challenger = truth.champion, truth.challenger
    assert challenger is not None  # a gate ran: a challenger was judged
    return {
        "gate_reasons": decision.reasons,
        "n_decisions_evaluated": decision.n_decisions,
        "agreement": round(decision.agreement, 4),
        "ope_champion": ope_summary(decision.champion, baseline + champion.over_evaluated_weeks),
        "ope_challenger": ope_summary(
            decision.challenger, baseline + challenger.over_evaluated_weeks
        ),
        "difference": decision.difference,
        "true_difference_per_decision": round(challenger.next_week - champion.next_week, 4),
        # What the gate's difference estimates: over the evaluated weeks.
        "true_difference_over_evaluated_weeks": round(
            challenger.over_evaluated_weeks - champion.over_evaluated_weeks, 4
        ),
        "vs_no_action": decision.vs_no_action,
        # Every evaluated decision by the version that served it: with a challenger
        # share, the judged challenger's own among them.
        "evidence_served_by": evaluation.served_by,
        # The stored contacts the gate moved both versions' history by (None:
        # replayed with their snapshots').
        "gate_history_contacts": evaluation.history_contacts,
        # The evaluated decisions a random split chose the answering version of, valued
        # with both versions' probabilities of their action.
        "split_mixed": evaluation.split_mixed,
        # The evaluated decisions outside the reserved share: served after both versions'
        # cut-offs, neither learned from them.
        "unseen": evaluation.unseen,
        "promoted_policy": promoted_record(
            decision, true_incremental=challenger.over_evaluated_weeks, baseline=baseline
        )
        if evaluation.promoted
        else None,
    }


@dataclasses.dataclass
class ClosedLoop:
    """The loop's parts and where it stands: the versions the server serves, and every
    week served so far (the world each was drawn from, the version that answered each
    HCP), from which the gate's evidence was drawn."""

    args: argparse.Namespace
    timeline: Timeline
    clock: SimulatedClock
    server: Server
    settings: Settings
    dataset: Dataset
    config: TrainConfig
    gate_config: gate.GateConfig
    rng: np.random.Generator
    # The no-touch outcome per decision, which the OPE estimates include.
    baseline: float
    champion: ModelVersion
    # What alias challenger names until it is judged; with a share, served beside the
    # champion to that share of the HCPs.
    challenger: ModelVersion | None = None
    states: list[SimulatedWorld] = dataclasses.field(default_factory=list)
    answered_by: list[np.ndarray] = dataclasses.field(default_factory=list)
    reload_mode: str = "none"

    @property
    def share(self) -> float:
        return float(self.args.challenger_share)

    @property
    def fresh(self) -> bool:
        return not self.args.frozen_history

    def play(self, client: httpx.Client, round_no: int) -> dict[str, Any] | None:
        """One round, in the order ``--challenger-share`` sets (the module's docstring):
        its record; None with ``--serve-only`` (served and fed back only)."""
        seconds: dict[str, float] = {}
        with timed(seconds, "serve_and_feedback"):
            served = self.serve(client, round_no)
        if self.args.serve_only:
            log(f"round {round_no}: served and sent feedback in {seconds['serve_and_feedback']}s")
            return None
        retrained = None
        if not self.share:  # judged as soon as trained, on what the champion served
            with timed(seconds, "retrain"):
                retrained = self.train_challenger()
        served_champion, judged = self.champion, self.challenger
        evaluation = None
        if judged is not None:
            with timed(seconds, "gate"):
                evaluation = self.judge()
        truth = round_truth(
            self.timeline,
            self.settings,
            states=self.states,
            answered_by=self.answered_by,
            passes=self.args.decisions_per_hcp,
            champion=served_champion,
            challenger=judged,
            fresh=self.fresh,
            reserved_share=1.0 if self.gate_config is None else self.gate_config.evaluation_share,
        )
        promoted = evaluation is not None and evaluation.promoted
        self.challenger = None  # judged: the champion now, or replaced by the next retrain
        # A challenger retrained after the last round would never be served or judged.
        if self.share and round_no < self.args.rounds:
            with timed(seconds, "retrain"):
                retrained = self.train_challenger()
        reload = None
        if promoted or (self.share and retrained is not None):
            with timed(seconds, "reload"):
                reload = self.reload(client)
        record = {
            "round": round_no,
            "next_week": self.timeline.next_week,
            **self.served_record(served, truth, served_champion),
            "challenger_version": None if judged is None else judged.version,
            "promoted": promoted,
            **self.judged_record(evaluation, truth),
            "champion_after_round": self.champion.version,
            **self.after_record(truth, promoted=promoted),
            "retrained_version": None if retrained is None else retrained.version,
            "feedback_rows_in_training": None
            if retrained is None
            else len(retrained.feedback.interactions),
            "feedback_rows_reserved_for_gate": None
            if retrained is None
            else retrained.feedback.n_reserved,
            "reload": reload,
            # What the server serves beside its champion from the next round on.
            "challenger_served_next": self.served_challenger(),
            "serving": served,
            "seconds": seconds,
        }
        log_round(record, evaluation, truth, baseline=self.baseline)
        return record

    def serve(self, client: httpx.Client, round_no: int) -> dict[str, Any]:
        """Serve the round's passes and send their feedback (:func:`serve_round`)."""
        model = self.champion.model
        return serve_round(
            client,
            self.timeline,
            self.clock,
            self.rng,
            round_no,
            decisions_per_hcp=self.args.decisions_per_hcp,
            states=self.states,
            answered_by=self.answered_by,
            history_from=model.as_of if self.fresh and model.advances else None,
        )

    def train_challenger(self) -> RetrainResult:
        """Retrain on the history and the logged decisions but the gate's share: the
        version alias challenger names from now on."""
        trained = retrain(
            self.settings,
            dataset=self.dataset,
            config=self.config,
            gate=self.gate_config,  # its evaluation_share left out, its file kept
        )
        self.challenger = ModelVersion(trained.version, trained.result.model)
        return trained

    def judge(self) -> gate.Evaluation:
        """The gate on the challenger against the champion; on a pass, the challenger
        is promoted and is the bench's champion from now on.

        Raises:
            RuntimeError: it judged other versions than the bench holds as those two.
        """
        assert self.challenger is not None
        evaluation = gate.promote(self.settings, config=self.gate_config)
        judged = (evaluation.champion_version, evaluation.challenger_version)
        if judged != (self.champion.version, self.challenger.version):
            raise RuntimeError(
                f"the gate judged v{judged[1]} against champion v{judged[0]}, not the bench's "
                f"challenger v{self.challenger.version} against v{self.champion.version}: "
                f"the registry's aliases moved under the bench ({self.settings.models_dir})"
            )
        if evaluation.promoted:
            self.champion = self.challenger
        return evaluation

    def served_challenger(self) -> str | None:
        """The version the server serves beside the champion (None: none)."""
        return self.challenger.version if self.share and self.challenger else None

    def reload(self, client: httpx.Client) -> str:
        """Hot reload the server (a restart without the route) and check it now serves
        the bench's champion and, with a share, its challenger beside it.

        Raises:
            RuntimeError: ``GET /healthz`` names other versions.
        """
        self.reload_mode = self.server.reload(client)
        response = client.get("/healthz")
        response.raise_for_status()
        health = response.json()
        said = (health.get("model_version"), health.get("challenger_version"))
        if said != (self.champion.version, self.served_challenger()):
            why = health.get("challenger_error")
            raise RuntimeError(
                f"after a {self.reload_mode}, GET /healthz says model_version {said[0]}, "
                f"challenger_version {said[1]}"
                f"{f' (challenger_error: {why})' if why else ''}: the bench expects champion "
                f"v{self.champion.version} and challenger {self.served_challenger()} "
                f"(--challenger-share {self.share:g}, NEXTBEST_CHALLENGER_SHARE; server.log "
                "in the --work directory)"
            )
        return self.reload_mode

    def served_record(
        self, served: dict[str, Any], truth: RoundTruth, champion: ModelVersion
    ) -> dict[str, Any]:
        """The round as served: the champion that served it, and what was served."""
        oracle = truth.oracle_next_week
        decisions = sum(served["served_by"].values())
        return {
            "oracle_per_hcp": round(oracle, 4),
            "served_version": champion.version,
            # The champion that served the round, at the week the next is served in.
            "served_true_value_per_hcp": round(truth.champion.next_week, 4),
            "served_ratio_to_oracle": round(truth.champion.next_week / oracle, 4),
            # As served, over the round's weeks: each HCP's version's greedy choice.
            "served_true_value_over_round": round(truth.served_over_round, 4),
            "served_ratio_over_round": round(truth.served_over_round / truth.oracle_over_round, 4),
            # The round's decisions by the version that served them.
            "served_share": {v: round(n / decisions, 4) for v, n in served["served_by"].items()},
        }

    def judged_record(
        self, evaluation: gate.Evaluation | None, truth: RoundTruth
    ) -> dict[str, Any]:
        """The judged challenger's truth and the gate's verdict; nothing when none was
        judged (round 1 with a share)."""
        challenger = truth.challenger
        if evaluation is None or challenger is None:
            return {}
        oracle = truth.oracle_next_week
        return {
            "challenger_true_value_per_hcp": round(challenger.next_week, 4),
            "challenger_ratio_to_oracle": round(challenger.next_week / oracle, 4),
            **gate_record(evaluation, truth, baseline=self.baseline),
        }

    @staticmethod
    def after_record(truth: RoundTruth, *, promoted: bool) -> dict[str, Any]:
        """The champion after the round's gate, at the week the next round is served in."""
        after = truth.challenger if promoted and truth.challenger else truth.champion
        return {
            "champion_true_after_round": round(after.next_week, 4),
            "champion_ratio_after_round": round(after.next_week / truth.oracle_next_week, 4),
        }


def log_round(
    record: dict[str, Any],
    evaluation: gate.Evaluation | None,
    truth: RoundTruth,
    *,
    baseline: float,
) -> None:
    """A line on what the round served and what the gate made of its challenger."""
    oracle = truth.oracle_next_week
    shares = ", ".join(f"v{v} {s:.0%}" for v, s in record["served_share"].items())
    said = (
        f"round {record['round']}: served {shares}, as served "
        f"{record['served_ratio_over_round']:.2f} of oracle over the round; champion "
        f"v{record['served_version']} true {truth.champion.next_week:+.4f} "
        f"({truth.champion.next_week / oracle:.2f} of oracle {oracle:+.4f}); "
    )
    if evaluation is None or truth.challenger is None:
        said += "no challenger to judge; "
    else:
        dr = evaluation.decision.champion.get("dr", {}).get("value", float("nan"))
        said += (
            f"challenger v{record['challenger_version']} true "
            f"{truth.challenger.next_week:+.4f} ({truth.challenger.next_week / oracle:.2f}); "
            f"{'PROMOTED' if record['promoted'] else 'kept champion'}; DR champion {dr:.3f} "
            f"vs true {baseline + truth.champion.over_evaluated_weeks:.3f}; "
        )
    if record["retrained_version"] is not None:
        said += f"retrained v{record['retrained_version']}; "
    log(said + ", ".join(f"{step} {s:.0f}s" for step, s in record["seconds"].items()))


def summarize(
    rounds: list[dict[str, Any]],
    *,
    oracle: float,
    logging_value: float,
    baseline: float,
    first_true: float,
    bayes: dict[str, Any],
) -> dict[str, Any]:
    """The run's verdicts: where the champion ends, what was promoted, how far OPE
    was from the truth. ``rounds``: round 0 (the logging policy) and the played ones."""
    played = rounds[1:]
    final_ratio = played[-1]["champion_ratio_after_round"] if played else None
    judged = [r for r in played if r["challenger_version"] is not None]
    promoted = [r for r in judged if r["promoted"]]
    promoted_errors = {
        name: max(r["promoted_policy"]["ope"][name]["relative_error"] for r in promoted)
        for name in ("ips", "snips", "dr")
        if promoted and all(name in r["promoted_policy"]["ope"] for r in promoted)
    }
    # Every challenger judged is a candidate for promotion: how well OPE valued each of
    # them (and the champion) says how far a promotion's evidence can be trusted, even in
    # a run that promoted nothing.
    candidate_errors = {
        who: {
            name: max(abs(r[f"ope_{who}"][name]["relative_error"]) for r in judged)
            for name in ("ips", "snips", "dr")
        }
        for who in ("champion", "challenger")
        if judged
    }
    incremental_errors = [
        r["promoted_policy"]["ope_incremental"]["relative_error"]
        for r in promoted
        if r["promoted_policy"]["ope_incremental"] is not None
    ]
    return {
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
        # With a challenger share, round 1 has none to judge.
        "challengers_judged": len(judged),
        "promotions": len(promoted),
        "max_relative_error_of_promoted_ope": promoted_errors,
        "ope_within_10pct_of_truth": (
            {k: bool(v <= 0.10) for k, v in promoted_errors.items()} if promoted_errors else None
        ),
        "max_relative_error_of_ope_per_round": candidate_errors,
        "max_relative_error_of_promoted_incremental_ope": max(incremental_errors)
        if incremental_errors and None not in incremental_errors
        else None,
    }


def parse_args() -> argparse.Namespace:
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
        "--challenger-share",
        type=float,
        default=0.5,
        help="Share of the HCPs the challenger serves for a round before the gate judges "
        "it (NEXTBEST_CHALLENGER_SHARE), 0 <= share < 1; 0: no challenger serves, and "
        "each is judged as soon as it is retrained, on what the champion served (the "
        "order before 2026-12-07).",
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
    parser.add_argument(
        "--frozen-history",
        action="store_true",
        help="Serve, retrain and gate with NEXTBEST_FRESH_HISTORY off, as before: every "
        "version scores from its cut-off's history (to compare with a default run).",
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
    if not 0 <= args.challenger_share < 1:
        parser.error(
            f"--challenger-share must be at least 0 and below 1, not {args.challenger_share}"
        )
    if args.work is not None and (args.work / "models").exists():
        parser.error(f"{args.work / 'models'} already exists: use a new --work directory")
    return args


def write_admin_key(settings: Settings) -> Path:
    """The API key file a server on ``settings.models_dir`` reads, with the bench's
    admin key (which may reload it)."""
    # Where a server started with NEXTBEST_MODELS_DIR=<work>/models looks by default.
    keys = settings.resolved_api_keys_file
    keys.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    # Mode 600 from its creation, as `nextbest keys` writes it: a server started on
    # this directory (the README's loop demo) warns of a key file others may read.
    with os.fdopen(os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(f"keys:\n  - name: bench-loop\n    role: admin\n    key_sha256: {digest}\n")
    return keys


def server_env(
    args: argparse.Namespace, settings: Settings, clock: SimulatedClock, *, keys: Path
) -> dict[str, str]:
    """The server's environment: the bench's registry, store and serving settings."""
    return {
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
        "NEXTBEST_RULES_FILE": str(settings.rules_file),
        "NEXTBEST_FRESH_HISTORY": "true" if settings.fresh_history else "false",
        "NEXTBEST_CHALLENGER_SHARE": str(args.challenger_share),
        **clock.env(),
    }


def main() -> int:
    drop_environment_settings(say=print)
    args = parse_args()
    load_at_start = os.getloadavg()
    gate_config = gate.load_gate_config(args.gate if args.gate.exists() else None)
    config = TrainConfig(
        engagement=EngagementParams(n_estimators=120, num_leaves=31),
        uplift=UpliftParams(),
    )
    began = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="nextbest-loop-"))
    # The history ends as many weeks before today as the rounds will be served in
    # (and one more): every pass's simulated week is then in the past, as retrain
    # takes a logged decision dated after now for a mistake.
    weeks = args.rounds * args.decisions_per_hcp
    start = date.today() - timedelta(days=7 * (args.periods + weeks + 1))
    log(f"simulating {args.hcps:,} HCPs x {args.periods} periods (seed {args.seed}) in {work}")
    world = simulate_world(n_hcps=args.hcps, periods=args.periods, seed=args.seed, start=start)
    world.write(work / "world", fmt="parquet")
    dataset = load_dataset(work / "world")
    fresh = not args.frozen_history
    # No serving rules (see the module's docstring), for the server and in process.
    rules = work / "rules.yaml"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text("# bench/loop.py: no serving rules\n")
    settings = Settings(
        models_dir=work / "models",
        epsilon=args.epsilon,
        holdout_rate=args.holdout_rate,
        rules_file=rules,
        fresh_history=fresh,
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
    champion = ModelVersion(registry.log_training_run(first, settings).version, first.model)
    keys = write_admin_key(settings)
    server = Server(server_env(args, settings, clock, keys=keys), work / "server.log")
    # Started on the first pass's time: a server moving its history on to today's
    # would not move it back to the simulated weeks.
    clock.set(pass_time(world, 0))
    server.start()
    rounds: list[dict[str, Any]] = [
        {
            "round": 0,
            "policy": "logging policy (history)",
            "true_value_per_hcp": round(logging_value, 4),
            "ratio_to_oracle": round(logging_value / oracle, 4),
        }
    ]
    first_at = pass_time(world, 0)
    first_contacts = store_contacts(settings, [champion.model], first_at, fresh=fresh)
    first_true = per_hcp(world, greedy_choice(world, champion.model, first_at, first_contacts))
    log(
        f"round 0: first champion v{champion.version} true {first_true:+.4f} "
        f"({first_true / oracle:.2f} of oracle)"
    )
    loop = ClosedLoop(
        args=args,
        timeline=timeline,
        clock=clock,
        server=server,
        settings=settings,
        dataset=dataset,
        config=config,
        gate_config=gate_config,
        rng=np.random.default_rng(args.seed + 1),
        baseline=baseline,
        champion=champion,
    )
    try:
        with httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
        ) as client:
            for round_no in range(1, args.rounds + 1):
                record = loop.play(client, round_no)
                if record is not None:
                    rounds.append(record)
    finally:
        server.stop()
    if args.serve_only:
        log(f"served {args.rounds} round(s); registry and feedback in {settings.models_dir}")
        return 0
    summary = {
        **summarize(
            rounds,
            oracle=oracle,
            logging_value=logging_value,
            baseline=baseline,
            first_true=first_true,
            bayes=bayes,
        ),
        "reload": loop.reload_mode,
        "server_restarts": server.restarts,
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    payload = {
        "benchmark": "loop",
        "command": " ".join(["python", "bench/loop.py", *sys.argv[1:]]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        # The share of HCPs a challenger serves for a round before it is judged; 0: the
        # order before 2026-12-07, each judged on what the champion served.
        "challenger_share": args.challenger_share,
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
            "challenger_share": args.challenger_share,
            # What every request is served as; the oracle chooses among the same actions.
            "purpose": SERVED_PURPOSE,
            # Each pass a simulated week; every delivered touch weighs on its HCP's
            # engagement for FATIGUE_WINDOW weeks, as the history's do.
            "days_per_pass": 7,
            "fatigue_advanced": True,
            # The served, retrained and judged versions' history features moved on to each
            # day by the stored contacts (NEXTBEST_FRESH_HISTORY); false: --frozen-history.
            "fresh_history": fresh,
            # Each delivered touch is stored as a contact (a delivered event); no serving
            # rules apply (their caps would bind on the stored contacts).
            "contacts_stored": True,
            "serving_rules": None,
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
