"""Rules that decide which actions may be offered to which HCP, vectorised.

Checked before ranking: channel consent, the content's approval window on the
decision date, specialty fit, and the separation of medical from promotional
content by the purpose of the request.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from nextbest.contract.schema import (
    CONSENT_PREFIX,
    allowed_specialties,
    consent_column,
)
from nextbest.learning.scoring import ScoringModel
from nextbest.policy.rules import lifting

_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
# The catalog columns eligibility reads (channel and content_type must agree with
# the model's: scores are for the action the model was trained on).
ACTION_RULE_COLUMNS: tuple[str, ...] = (
    "channel",
    "content_type",
    "approved_from",
    "approved_until",
    "specialties",
)


@dataclass
class EligibilityIndex:
    """Precomputed per-model arrays so each request's mask is a few gathers."""

    consent: np.ndarray  # (n_hcps, n_actions) bool
    specialty_ok: np.ndarray  # (n_hcps, n_actions) bool
    approved_from: np.ndarray  # (n_actions,) datetime64[ns]
    approved_until: np.ndarray  # (n_actions,) datetime64[ns], NaT = open-ended
    content_type: np.ndarray  # (n_actions,) str
    channel: np.ndarray  # (n_actions,) str
    # Actions the model has no estimate for (ActionEvidence), never served, and why.
    unscored: np.ndarray | None = None  # (n_actions,) bool; None: every action scored
    unscored_why: tuple[str, ...] = ()
    # Channels whose consent the hcps frames record (a consent_<channel> column); for
    # the others every HCP consents, unless the serving rules require consent on file.
    consent_on_file: frozenset[str] = frozenset()
    # Request-level masks by (approval windows open, closed, purpose, channel):
    _masks: dict[tuple[int, int, str, str | None], np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # Actions on a set of channels (a channel-bound API key's), by the set.
    _channel_masks: dict[frozenset[str], np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Whether an action is approved changes only where a window opens or closes,
        # so how many have opened and closed by a moment names its approval mask.
        self._opens = _sorted_ns(self.approved_from)
        self._closes = _sorted_ns(self.approved_until)

    @classmethod
    def build(
        cls,
        model: ScoringModel,
        *,
        hcps: pd.DataFrame | None = None,
        catalog: pd.DataFrame | None = None,
    ) -> EligibilityIndex:
        """The rules of ``model``'s training-time snapshot, made stricter by ``hcps`` and
        ``catalog`` when given (contract frames read at decision time: a send's files).

        Given frames only take away, never add: consent must hold in both the
        snapshot and ``hcps`` (per HCP and channel), the specialty must fit in
        both, and an action is approved only inside both windows. An action the
        model knows that ``catalog`` does not list, or lists on another channel or
        for another purpose, is never eligible. HCPs missing from ``hcps`` and
        consent columns it lacks keep the snapshot's rules; rows of either frame
        the model does not know are ignored (they cannot be scored).
        """
        snapshot = cls._from_frames(model.hcps, model.catalog)
        evidence = model.evidence
        snapshot.unscored, snapshot.unscored_why = evidence.unscored, evidence.why
        if hcps is None and catalog is None:
            return snapshot
        now = cls._from_frames(
            _overlaid(model.hcps, hcps, key="hcp_id", columns=_hcp_rule_columns(hcps)),
            _overlaid(model.catalog, catalog, key="action_id", columns=ACTION_RULE_COLUMNS),
        )
        listed = np.ones(len(model.catalog), dtype=bool)
        if catalog is not None:
            rows = _rows_of(model.catalog, catalog, key="action_id")
            listed[:] = False
            listed[rows[rows >= 0]] = True
            listed &= now.channel == snapshot.channel
            listed &= now.content_type == snapshot.content_type
        opens = np.maximum(snapshot.approved_from, now.approved_from)
        a, b = snapshot.approved_until, now.approved_until
        closes = np.where(np.isnat(a), b, np.where(np.isnat(b), a, np.minimum(a, b)))
        return cls(
            consent_on_file=snapshot.consent_on_file | now.consent_on_file,
            consent=snapshot.consent & now.consent,
            specialty_ok=snapshot.specialty_ok & now.specialty_ok,
            # NaT: a window that never opens (approved() compares it as False).
            approved_from=np.where(listed, opens, np.datetime64("NaT", "ns")),
            approved_until=closes,
            content_type=snapshot.content_type,
            channel=snapshot.channel,
            unscored=evidence.unscored,
            unscored_why=evidence.why,
        )

    @classmethod
    def _from_frames(cls, hcps: pd.DataFrame, catalog: pd.DataFrame) -> EligibilityIndex:
        channels = catalog["channel"].to_numpy(dtype=object)
        consent = np.ones((len(hcps), len(catalog)), dtype=bool)
        on_file = set()
        for j, channel in enumerate(channels):
            column = consent_column(channel)
            if column in hcps:
                consent[:, j] = hcps[column].to_numpy(dtype=bool)
                on_file.add(str(channel))
        # As specialty_spelling spells them, the catalog's allowed lists too.
        specialty = (
            hcps["specialty"]
            .astype(str)
            .str.strip()
            .str.lower()
            .str.replace(r"[\s_-]+", "_", regex=True)
            .to_numpy()
        )
        specialty_ok = np.ones((len(hcps), len(catalog)), dtype=bool)
        for j, allowed in enumerate(catalog["specialties"].astype(str)):
            names = allowed_specialties(allowed)
            if names:
                specialty_ok[:, j] = np.isin(specialty, list(names))
        return cls(
            consent_on_file=frozenset(on_file),
            consent=consent,
            specialty_ok=specialty_ok,
            approved_from=catalog["approved_from"].to_numpy(dtype="datetime64[ns]"),
            approved_until=_through_the_day(
                catalog["approved_until"].to_numpy(dtype="datetime64[ns]")
            ),
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
            if self.unscored is not None:
                mask &= ~self.unscored
            if channel is not None:
                mask &= self.channel == channel
            mask.flags.writeable = False
            self._masks[key] = mask
        return mask

    def channels_mask(self, channels: Collection[str]) -> np.ndarray:
        """Actions on one of ``channels``, shape ``(n_actions,)``; read-only, cached."""
        key = frozenset(channels)
        mask = self._channel_masks.get(key)
        if mask is None:
            mask = np.isin(self.channel, list(key))
            mask.flags.writeable = False
            self._channel_masks[key] = mask
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
                why.append(self._outside_approval(j, on))
            if not self.consent[hcp_row, j]:
                why.append(
                    f"no consent for {self.channel[j]} ({consent_column(str(self.channel[j]))} "
                    "in the hcps file), until the hcps file gives it"
                )
            if not self.specialty_ok[hcp_row, j]:
                why.append("not approved for this HCP's specialty")
            if self.unscored is not None and self.unscored[j]:
                why.append(self.unscored_why[j])
            out.append(why)
        return out

    def _outside_approval(self, j: int, on: datetime | date) -> str:
        """Why action ``j`` is outside its approval window at ``on``: when it opens (a
        window to come), or what opens it (one that has closed; one the catalog read
        for this decision does not list)."""
        opens = self.approved_from[j]
        if np.isnat(opens):
            return (
                "outside its approval window (not listed in the catalog given, as the model "
                "knows it), until the catalog lists it"
            )
        if opens > np.datetime64(_ns(on), "ns"):
            at = _utc(opens)
            return f"outside its approval window (approved_from {_moment(at)}){lifting(at)}"
        closed = _utc(self.approved_until[j])
        return (
            f"outside its approval window (approved_until {_moment(closed)}), "
            "until the catalog approves it again"
        )


def _utc(moment: np.datetime64) -> datetime:
    """A catalog time (naive UTC, datetime64[ns]) as an aware datetime."""
    return pd.Timestamp(moment).floor("us").to_pydatetime().replace(tzinfo=UTC)


def _moment(at: datetime) -> str:
    """A catalog time as its file gives it: a date alone for a whole day (its start, or
    the last moment of ``approved_until``), else the date and UTC time."""
    if (at.hour, at.minute, at.second) in ((0, 0, 0), (23, 59, 59)) and (
        at.microsecond in (0, 999_999)
    ):
        return f"{at:%Y-%m-%d}"
    return f"{at:%Y-%m-%d %H:%M} UTC"


def _through_the_day(until: np.ndarray) -> np.ndarray:
    """``approved_until`` as a window's last moment: a date alone (midnight) is that
    whole day ("approved until 2026-11-15" includes the 15th; it closed at 00:00)."""
    midnight = ~np.isnat(until) & (until == until.astype("datetime64[D]"))
    last = until.astype("datetime64[D]") + np.timedelta64(1, "D") - np.timedelta64(1, "ns")
    return np.where(midnight, last.astype("datetime64[ns]"), until)


def _rows_of(known: pd.DataFrame, given: pd.DataFrame, *, key: str) -> np.ndarray:
    """Row of ``known`` holding each row of ``given`` by ``key``, -1 where none does."""
    return pd.Index(known[key].astype(str)).get_indexer(pd.Index(given[key].astype(str)))


def _hcp_rule_columns(hcps: pd.DataFrame | None) -> tuple[str, ...]:
    """The columns of an hcps frame that eligibility reads: specialty and consent."""
    if hcps is None:
        return ()
    return tuple(c for c in hcps.columns if c == "specialty" or c.startswith(CONSENT_PREFIX))


def _overlaid(
    known: pd.DataFrame, given: pd.DataFrame | None, *, key: str, columns: tuple[str, ...]
) -> pd.DataFrame:
    """``known`` with the ``columns`` of the rows it shares with ``given`` by ``key``
    replaced by ``given``'s; rows of ``given`` that ``known`` does not hold are left out.

    A column ``known`` lacks (a consent column) is added, True for the rows
    ``given`` does not name, as a missing consent column means.
    """
    if given is None:
        return known
    rows = _rows_of(known, given, key=key)
    found = rows >= 0
    out = known.copy()
    for column in columns:
        if column not in given:
            continue
        values = (
            out[column].to_numpy(dtype=object, copy=True)
            if column in out
            else np.full(len(out), True, dtype=object)
        )
        sent = given[column].to_numpy(dtype=object)
        said = found & ~pd.isna(sent) & (sent != "")  # an empty cell leaves the known value
        values[rows[said]] = sent[said]
        out[column] = pd.Series(values, index=out.index).infer_objects()
    return out


def _sorted_ns(moments: np.ndarray) -> list[int]:
    """The set moments of a datetime64[ns] array as sorted integers (NaT left out)."""
    return sorted(moments[~np.isnat(moments)].astype("int64").tolist())


def _ns(on: datetime | date) -> int:
    """Nanoseconds since the epoch of ``on`` as :meth:`approved` reads it: a time
    with a zone at its UTC instant (approval dates are UTC), one without as UTC."""
    if isinstance(on, pd.Timestamp):
        return int(on.value)  # the UTC instant, zone or not
    if not isinstance(on, datetime):
        return int(pd.Timestamp(on).value)
    naive = on.astimezone(UTC).replace(tzinfo=None) if on.tzinfo else on
    return (naive - _EPOCH) // _MICROSECOND * 1000
