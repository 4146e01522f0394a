"""Stand-ins for what bench/loop.py talks to: a server (httpx.MockTransport) and a clock."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pandas as pd

from nextbest.simulate import SimulatedWorld


class FakeServer:
    """What serve_round asks of a server: /healthz (its history moved on to the clock's
    day once ``lag`` readings found it behind), the batch endpoint (the first action
    for everyone, from version ``model_version``; each HCP of ``challenger_hcps`` from
    version ``challenger``, said on its result) and /v1/feedback (kept)."""

    def __init__(
        self,
        world: SimulatedWorld,
        clock: Any,
        lag: int = 2,
        *,
        model_version: str = "1",
        challenger: str | None = None,
        challenger_hcps: frozenset[str] = frozenset(),
    ) -> None:
        self.world, self.clock, self.lag = world, clock, lag
        self.model_version = model_version
        self.challenger, self.challenger_hcps = challenger, challenger_hcps
        self.history: str | None = None
        self.readings = 0
        self.behind = 0
        self.asked: list[tuple[str, str | None]] = []  # (path, history when asked)
        self.events: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked.append((request.url.path, self.history))
        if request.url.path == "/healthz":
            self.readings += 1
            today = self.clock.day().isoformat()
            if self.history != today:
                self.behind += 1
                if self.behind > self.lag:  # moved on in the background
                    self.history, self.behind = today, 0
            return httpx.Response(200, json={"status": "ok", "features_as_of": self.history})
        body = json.loads(request.content)
        if request.url.path == "/v1/feedback":
            self.events += body["events"]
            return httpx.Response(200, json={"accepted": len(body["events"])})
        action = str(self.world.catalog["action_id"].iat[0])
        results = [
            {
                "hcp_id": h,
                "recommendation_id": f"r-{h}-{len(self.asked)}",
                "holdout": False,
                "items": [{"action_id": action, "explored": False}],
                **({"model_version": self.challenger} if h in self.challenger_hcps else {}),
            }
            for h in body["hcp_ids"]
        ]
        return httpx.Response(200, json={"model_version": self.model_version, "results": results})


class DayClock:
    """A SimulatedClock's ``set``, remembering the day."""

    at: pd.Timestamp | None = None

    def set(self, at: pd.Timestamp | None) -> None:
        self.at = at

    def day(self) -> pd.Timestamp:
        assert self.at is not None
        return self.at.tz_localize("UTC").normalize()
