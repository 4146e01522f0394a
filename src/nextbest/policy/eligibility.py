"""Rules that decide which actions may be offered to which HCP, vectorised.

Checked before ranking: channel consent, the content's approval window on the
decision date, specialty fit, and the separation of medical from promotional
content by the purpose of the request.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from nextbest.learning.scoring import ScoringModel

Purpose = Literal["promotional", "medical"]
PURPOSES: tuple[str, ...] = ("promotional", "medical")
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass
class EligibilityIndex:
    """Precomputed per-model arrays so each request's mask is a few gathers."""

    consent: np.ndarray  # (n_hcps, n_actions) bool
    specialty_ok: np.ndarray  # (n_hcps, n_actions) bool
    approved_from: np.ndarray  # (n_actions,) datetime64[ns]
    approved_until: np.ndarray  # (n_actions,) datetime64[ns], NaT = open-ended
    content_type: np.ndarray  # (n_actions,) str
    channel: np.ndarray  # (n_actions,) str
    # Request-level masks by (approval windows open, closed, purpose, channel):
    _masks: dict[tuple[int, int, str, str | None], np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Whether an action is approved changes only where a window opens or closes,
        # so how many have opened and closed by a moment names its approval mask.
        self._opens = _sorted_ns(self.approved_from)
        self._closes = _sorted_ns(self.approved_until)

    @classmethod
    def build(cls, model: ScoringModel) -> EligibilityIndex:
        hcps, catalog = model.hcps, model.catalog
        channels = catalog["channel"].to_numpy(dtype=object)
        consent = np.ones((len(hcps), len(catalog)), dtype=bool)
        for j, channel in enumerate(channels):
            column = f"consent_{channel}"
            if column in hcps:
                consent[:, j] = hcps[column].to_numpy(dtype=bool)
        specialty = hcps["specialty"].astype(str).str.strip().str.lower().to_numpy()
        specialty_ok = np.ones((len(hcps), len(catalog)), dtype=bool)
        for j, allowed in enumerate(catalog["specialties"].astype(str)):
            names = {s.strip().lower() for s in allowed.split(";") if s.strip()}
            if names:
                specialty_ok[:, j] = np.isin(specialty, list(names))
        return cls(
            consent=consent,
            specialty_ok=specialty_ok,
            approved_from=catalog["approved_from"].to_numpy(dtype="datetime64[ns]"),
            approved_until=catalog["approved_until"].to_numpy(dtype="datetime64[ns]"),
            content_type=catalog["content_type"].to_numpy(dtype=object),
            channel=channels,
        )

    def approved(self, on: datetime | date) -> np.ndarray:
        """Actions whose approval window contains ``on``, shape ``(n_actions,)``."""
        day = np.datetime64(_ns(on), "ns")
        until_ok = np.isnat(self.approved_until) | (self.approved_until >= day)
        return (self.approved_from <= day) & until_ok

    def action_mask(
        self, *, on: datetime | date, purpose: str, channel: str | None = None
    ) -> np.ndarray:
        """Request-level rules (approval, purpose, channel filter), shape ``(n_actions,)``.

        Read-only: computed once per approval period, purpose and channel, then
        shared by every request that falls in the same period.
        """
        at = _ns(on)
        # Opened: approved_from <= on; closed: approved_until < on (until is inclusive).
        key = (bisect_right(self._opens, at), bisect_left(self._closes, at), purpose, channel)
        mask = self._masks.get(key)
        if mask is None:
            mask = self.approved(on) & (self.content_type == purpose)
            if channel is not None:
                mask &= self.channel == channel
            mask.flags.writeable = False
            self._masks[key] = mask
        return mask

    def mask(
        self, hcp_rows: np.ndarray, *, on: datetime | date, purpose: str, channel: str | None = None
    ) -> np.ndarray:
        """Eligible actions per HCP, shape ``(len(hcp_rows), n_actions)``."""
        per_action = self.action_mask(on=on, purpose=purpose, channel=channel)
        return self.consent[hcp_rows] & self.specialty_ok[hcp_rows] & per_action[None, :]

    def reasons_excluded(
        self, hcp_row: int, *, on: datetime | date, purpose: str, channel: str | None = None
    ) -> list[list[str]]:
        """For one HCP, why each action is excluded (empty list = eligible)."""
        approved = self.approved(on)
        out: list[list[str]] = []
        for j in range(len(self.channel)):
            why = []
            if channel is not None and self.channel[j] != channel:
                why.append(f"channel is {self.channel[j]}, request asked for {channel}")
            if self.content_type[j] != purpose:
                why.append(f"{self.content_type[j]} content is not served to a {purpose} request")
            if not approved[j]:
                why.append("outside its approval window")
            if not self.consent[hcp_row, j]:
                why.append(f"no consent for {self.channel[j]}")
            if not self.specialty_ok[hcp_row, j]:
                why.append("not approved for this HCP's specialty")
            out.append(why)
        return out


def _sorted_ns(moments: np.ndarray) -> list[int]:
    """The set moments of a datetime64[ns] array as sorted integers (NaT left out)."""
    return sorted(moments[~np.isnat(moments)].astype("int64").tolist())


def _ns(on: datetime | date) -> int:
    """Nanoseconds since the epoch of the wall time ``on``, as :meth:`approved` reads it."""
    if isinstance(on, pd.Timestamp):
        return int((on.tz_localize(None) if on.tzinfo else on).value)
    if not isinstance(on, datetime):
        return int(pd.Timestamp(on).value)
    naive = on.replace(tzinfo=None) if on.tzinfo else on
    return (naive - _EPOCH) // _MICROSECOND * 1000
