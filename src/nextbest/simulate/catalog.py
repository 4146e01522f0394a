"""The simulated action catalog (channel x content) and who may receive what, when.

The layout is fixed (so calibration does not drift with the seed); the seed only
jitters costs, approval dates and which items are restricted to some specialties.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from nextbest.simulate.vocabulary import CHANNELS, SPECIALTIES, TOPICS

DAY_NS = 86_400 * 10**9
# Cost of one touch in outcome units (NRx): rep time dominates, e-mail is nearly free.
CHANNEL_COST = np.array([0.6, 0.25, 0.02, 0.1])  # order of CHANNELS

# (topic, medical?) per item, per channel. The first two items of each channel are
# "core": open-ended, unrestricted, so every channel always has something to send.
_LAYOUT: dict[str, tuple[tuple[str, bool], ...]] = {
    "rep_visit": tuple(
        (t, False)
        for t in (
            "efficacy",
            "safety",
            "dosing",
            "access",
            "patient_support",
            "new_indication",
            "efficacy",
            "safety",
            "dosing",
            "access",
        )
    ),
    "rep_phone": tuple(
        (t, False)
        for t in (
            "efficacy",
            "dosing",
            "access",
            "patient_support",
            "safety",
            "new_indication",
            "dosing",
            "access",
        )
    ),
    # Medical (scientific) content is only ever sent by e-mail or shown in webinars.
    "email": (
        ("efficacy", False),
        ("access", False),
        ("safety", True),
        ("dosing", False),
        ("patient_support", False),
        ("new_indication", True),
        ("efficacy", True),
        ("access", False),
        ("dosing", True),
        ("patient_support", False),
        ("safety", False),
        ("new_indication", True),
        ("efficacy", False),
        ("safety", True),
    ),
    "webinar": (
        ("efficacy", True),
        ("dosing", False),
        ("new_indication", True),
        ("safety", True),
        ("patient_support", False),
        ("access", False),
        ("efficacy", False),
        ("new_indication", True),
    ),
}
_CORE_PER_CHANNEL = 2
# (channel, position in channel) of items whose approval ends during the history,
# and of items approved only from mid-history on.
_EXPIRING = (("rep_visit", 9), ("email", 13), ("webinar", 7))
_LATE_APPROVED = (("email", 12), ("rep_phone", 7))
N_RESTRICTED = 12  # about 30% of the 40 items
# Restricted items mostly target specialists.
_RESTRICTION_WEIGHTS = np.array([0.25, 0.2, 0.1, 0.2, 0.25])  # order of SPECIALTIES
_OPEN_ENDED_SHARE = 0.6


@dataclass(frozen=True, eq=False)
class ActionCodes:
    """The catalog as arrays, in catalog row order (``A`` actions, ``S`` specialties).

    Attributes:
        channel: ``(A,)`` int code into ``CHANNELS``.
        topic: ``(A,)`` int code into ``TOPICS``.
        medical: ``(A,)`` bool, medical (not promotional) content.
        cost: ``(A,)`` float, NRx per touch.
        approved_from_ns: ``(A,)`` int64 epoch nanoseconds (int64 min when open).
        approved_until_ns: ``(A,)`` int64 epoch nanoseconds, inclusive (int64 max when open):
            the last moment of the day ``approved_until`` names, as the contract reads
            a date alone.
        allowed: ``(S, A)`` bool, specialty ``s`` may receive action ``a``.
    """

    channel: np.ndarray
    topic: np.ndarray
    medical: np.ndarray
    cost: np.ndarray
    approved_from_ns: np.ndarray
    approved_until_ns: np.ndarray
    allowed: np.ndarray

    @property
    def n_actions(self) -> int:
        """Number of actions ``A``."""
        return int(self.channel.shape[0])


def build_catalog(
    start: date, periods: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, ActionCodes]:
    """Build the catalog for a history of ``periods`` weeks from ``start``.

    Returns:
        ``(catalog, codes)``: the contract table (``action_id``, ``channel``,
        ``content_id``, ``topic``, ``content_type``, ``approved_from``,
        ``approved_until``, ``specialties``, ``cost``) and the same as arrays.
    """
    channel_code: list[int] = []
    position: list[int] = []
    topic_code: list[int] = []
    medical: list[bool] = []
    for c, channel in enumerate(CHANNELS):
        for k, (topic, is_medical) in enumerate(_LAYOUT[channel]):
            channel_code.append(c)
            position.append(k)
            topic_code.append(TOPICS.index(topic))
            medical.append(is_medical)
    n_actions = len(channel_code)
    channel_arr = np.array(channel_code)
    position_arr = np.array(position)
    core = position_arr < _CORE_PER_CHANNEL

    def index_of(channel: str, k: int) -> int:
        return int(
            np.flatnonzero((channel_arr == CHANNELS.index(channel)) & (position_arr == k))[0]
        )

    start_ts = pd.Timestamp(start)
    end_ts = start_ts + pd.Timedelta(days=7 * periods)
    approved_from = start_ts - pd.to_timedelta(rng.integers(30, 720, n_actions), unit="D")
    far_future = pd.Timestamp(year=end_ts.year + 1, month=12, day=31)
    open_ended = core | (rng.random(n_actions) < _OPEN_ENDED_SHARE)
    approved_from_arr = approved_from.to_numpy().copy()
    approved_until_arr = np.where(
        open_ended, np.datetime64("NaT", "ns"), far_future.to_datetime64()
    ).astype("datetime64[ns]")
    for channel, k in _EXPIRING:
        a = index_of(channel, k)
        # Expires strictly inside the history, so the end-of-history decision excludes it:
        # approved through the day before ``start + days`` (a date includes its whole day).
        days = int(7 * periods * rng.uniform(0.3, 0.8))
        approved_until_arr[a] = (start_ts + pd.Timedelta(days=days - 1)).to_datetime64()
    for channel, k in _LATE_APPROVED:
        a = index_of(channel, k)
        approved_from_arr[a] = (start_ts + pd.Timedelta(days=7 * (periods // 2))).to_datetime64()

    allowed = np.ones((len(SPECIALTIES), n_actions), dtype=bool)
    specialties = np.full(n_actions, "", dtype=object)
    restricted = rng.choice(np.flatnonzero(~core), size=N_RESTRICTED, replace=False)
    for a in np.sort(restricted):
        chosen = rng.choice(
            len(SPECIALTIES), size=int(rng.integers(1, 3)), replace=False, p=_RESTRICTION_WEIGHTS
        )
        allowed[:, a] = False
        allowed[chosen, a] = True
        specialties[a] = ";".join(SPECIALTIES[s] for s in sorted(chosen))

    cost = np.round(CHANNEL_COST[channel_arr] * rng.uniform(0.85, 1.15, n_actions), 3)
    numbers = np.arange(1, n_actions + 1)
    catalog = pd.DataFrame(
        {
            "action_id": [f"A{i:03d}" for i in numbers],
            "channel": np.array(CHANNELS, dtype=object)[channel_arr],
            "content_id": [f"C{i:03d}" for i in numbers],
            "topic": np.array(TOPICS, dtype=object)[topic_code],
            "content_type": np.where(medical, "medical", "promotional").astype(object),
            "approved_from": pd.DatetimeIndex(approved_from_arr),
            "approved_until": pd.DatetimeIndex(approved_until_arr),
            "specialties": specialties,
            "cost": cost,
        }
    )
    nat = np.iinfo(np.int64).min  # NaT's integer value
    from_ns = catalog["approved_from"].to_numpy().astype(np.int64)
    until_ns = catalog["approved_until"].to_numpy().astype(np.int64)
    # Every date here is a midnight: approved until the end of that day, as the service
    # reads the written catalog (the history must be drawn under the same windows).
    until_ns = np.where(until_ns == nat, nat, until_ns + DAY_NS - 1)
    codes = ActionCodes(
        channel=channel_arr,
        topic=np.array(topic_code),
        medical=np.array(medical),
        cost=cost,
        approved_from_ns=np.where(from_ns == nat, np.iinfo(np.int64).min, from_ns),
        approved_until_ns=np.where(until_ns == nat, np.iinfo(np.int64).max, until_ns),
        allowed=allowed,
    )
    return catalog, codes


def eligibility(
    codes: ActionCodes, specialty: np.ndarray, consent: np.ndarray, at_ns: np.ndarray
) -> np.ndarray:
    """Which actions each HCP may receive at a given time.

    Args:
        codes: the catalog as arrays (``A`` actions).
        specialty: ``(n,)`` int codes into ``SPECIALTIES``.
        consent: ``(n, C)`` bool consent per channel.
        at_ns: ``(n,)`` int64 epoch nanoseconds of each HCP's decision.

    Returns:
        ``(n, A)`` bool: consent for the action's channel, specialty allowed, and
        ``approved_from <= at <= approved_until``.
    """
    at = at_ns[:, None]
    approved = (codes.approved_from_ns[None, :] <= at) & (at <= codes.approved_until_ns[None, :])
    return consent[:, codes.channel] & codes.allowed[specialty] & approved
