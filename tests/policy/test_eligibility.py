"""Request-level eligibility: approval windows, purpose and channel, without a model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from nextbest.policy.eligibility import EligibilityIndex


def _index() -> EligibilityIndex:
    def moments(values: list[str]) -> pd.DatetimeIndex:
        return pd.to_datetime(values, format="ISO8601")

    return EligibilityIndex(
        consent=np.ones((1, 5), dtype=bool),
        specialty_ok=np.ones((1, 5), dtype=bool),
        approved_from=moments(
            ["2025-01-01", "2025-01-01", "2025-07-01", "2025-03-15 12:00", "2025-01-01"]
        ).to_numpy(dtype="datetime64[ns]"),
        approved_until=moments(["", "2025-06-30", "", "2025-03-20", "2025-03-15 12:00"]).to_numpy(
            dtype="datetime64[ns]"
        ),
        content_type=np.array(["promotional"] * 4 + ["medical"], dtype=object),
        channel=np.array(["email", "email", "rep_visit", "webinar", "email"], dtype=object),
    )


def _expected(index: EligibilityIndex, on: datetime, purpose: str, channel: str | None):
    """The rules read straight off the windows with pandas, not through the index."""
    at = pd.Timestamp(on).tz_localize(None) if pd.Timestamp(on).tzinfo else pd.Timestamp(on)
    start, until = pd.Series(index.approved_from), pd.Series(index.approved_until)
    approved = ((start <= at) & (until.isna() | (until >= at))).to_numpy()
    mask = approved & (index.content_type == purpose)
    return mask & (index.channel == channel) if channel is not None else mask


def test_masks_kept_per_approval_period_match_the_windows_at_every_moment() -> None:
    index = _index()
    # Every window edge, a nanosecond either side (until is inclusive), and between.
    edges = [pd.Timestamp(t) for t in ("2025-01-01", "2025-06-30", "2025-07-01")]
    edges += [pd.Timestamp("2025-03-15 12:00"), pd.Timestamp("2025-03-20")]
    one_ns = pd.Timedelta(1, "ns")
    moments = [e + d for e in edges for d in (-one_ns, pd.Timedelta(0), one_ns)]
    moments += [pd.Timestamp("2024-06-01"), pd.Timestamp("2025-05-01"), pd.Timestamp("2030-01-01")]
    rng = np.random.default_rng(0)
    for on in rng.permutation(np.array(moments, dtype=object)):  # cache filled in any order
        for purpose in ("promotional", "medical"):
            for channel in (None, "email", "webinar"):
                got = index.action_mask(on=on, purpose=purpose, channel=channel)
                assert got.tolist() == _expected(index, on, purpose, channel).tolist(), (
                    on,
                    purpose,
                    channel,
                )
    # The until day itself is inside the window, a nanosecond after it is not.
    until = pd.Timestamp("2025-06-30")
    assert index.action_mask(on=until, purpose="promotional")[1]
    assert not index.action_mask(on=until + one_ns, purpose="promotional")[1]


def test_python_datetimes_read_like_timestamps_and_masks_are_read_only() -> None:
    index = _index()
    naive = datetime(2025, 3, 15, 12, 0)
    for on in (naive, naive - timedelta(microseconds=1), naive.replace(tzinfo=UTC)):
        got = index.action_mask(on=on, purpose="promotional")
        assert got.tolist() == _expected(index, pd.Timestamp(on), "promotional", None).tolist()
    mask = index.action_mask(on=naive, purpose="promotional")
    with pytest.raises(ValueError, match="read-only"):
        mask[0] = False
    # Callers combine it with per-HCP rules into new arrays; the shared mask is untouched.
    combined = index.consent[[0]] & mask
    combined[0, 0] = False
    assert index.action_mask(on=naive, purpose="promotional")[0]


def test_a_time_with_another_offset_is_read_at_its_utc_instant() -> None:
    # Approval windows are UTC: 20:00 in New York on the last approved day is 01:00
    # UTC the next day, after the window; 00:30 in Berlin on the next day is still
    # inside it. Python datetimes and pandas Timestamps alike.
    index = _index()
    until = pd.Timestamp("2025-06-30")  # action 1's last approved moment
    new_york, berlin = timezone(timedelta(hours=-5)), timezone(timedelta(hours=1))
    after = datetime(2025, 6, 29, 20, 0, 0, 1, tzinfo=new_york)  # 01:00 UTC on the 30th
    before = datetime(2025, 6, 30, 0, 30, tzinfo=berlin)  # 23:30 UTC on the 29th
    for on in (after, pd.Timestamp(after)):
        assert not index.action_mask(on=on, purpose="promotional")[1], on
    for on in (before, pd.Timestamp(before)):
        assert index.action_mask(on=on, purpose="promotional")[1], on
    assert index.approved(before)[1] and not index.approved(after)[1]
    assert until.tz_localize("UTC") < pd.Timestamp(after)


def test_an_approval_given_until_a_date_includes_that_whole_day() -> None:
    # "approved until 2025-06-30" is read from a catalog as that day's last moment; a
    # time of day is kept as written.
    hcps = pd.DataFrame({"hcp_id": ["H1"], "specialty": ["gp"], "territory_id": ["T1"]})
    catalog = pd.DataFrame(
        {
            "action_id": ["A1", "A2"],
            "channel": ["email", "email"],
            "content_type": ["promotional", "promotional"],
            "approved_from": pd.to_datetime(["2025-01-01", "2025-01-01"]),
            "approved_until": pd.to_datetime(["2025-06-30", "2025-06-30 12:00"], format="ISO8601"),
            "specialties": ["", ""],
        }
    )
    index = EligibilityIndex._from_frames(hcps, catalog)
    evening = pd.Timestamp("2025-06-30 23:59:59")
    assert index.action_mask(on=evening, purpose="promotional").tolist() == [True, False]
    after = pd.Timestamp("2025-07-01 00:00:00")
    assert index.action_mask(on=after, purpose="promotional").tolist() == [False, False]


def test_an_action_outside_its_approval_window_says_when_it_opens_or_what_opens_it() -> None:
    """A window that opens later gives its time, as a history rule's reason does; one
    that has closed, and consent the hcps file does not give, say what lifts them."""
    hcps = pd.DataFrame(
        {"hcp_id": ["H1"], "specialty": ["gp"], "territory_id": ["T1"], "consent_email": [False]}
    )
    catalog = pd.DataFrame(
        {
            "action_id": ["A1", "A2", "A3", "A4"],
            "channel": ["webinar", "webinar", "webinar", "email"],
            "content_type": ["promotional"] * 4,
            "approved_from": pd.to_datetime(
                ["2027-01-10", "2026-12-04 15:30", "2025-01-01", "2025-01-01"], format="ISO8601"
            ),
            "approved_until": pd.to_datetime(["", "", "2026-11-15", ""], format="ISO8601"),
            "specialties": ["", "", "", ""],
        }
    )
    index = EligibilityIndex._from_frames(hcps, catalog)
    on = datetime(2026, 12, 4, 9, tzinfo=UTC)
    assert index.reasons_excluded(0, on=on, purpose="promotional") == [
        ["outside its approval window (approved_from 2027-01-10), lifts 2027-01-10 00:00 UTC"],
        [
            "outside its approval window (approved_from 2026-12-04 15:30 UTC), "
            "lifts 2026-12-04 15:30 UTC"
        ],
        [
            "outside its approval window (approved_until 2026-11-15), "
            "until the catalog approves it again"
        ],
        ["no consent for email (consent_email in the hcps file), until the hcps file gives it"],
    ]
