"""The simulated tables: arguments, determinism, shapes, and the logged history's honesty."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.simulate import CHANNELS, SPECIALTIES, TOPICS, SimulatedWorld, simulate_world
from nextbest.simulate.catalog import eligibility
from nextbest.simulate.logging_policy import HOLDOUT_SHARE, logging_policy_probabilities
from nextbest.simulate.response import recent_touches

HCP_COLUMNS = [
    "hcp_id",
    "specialty",
    "territory_id",
    "decile",
    "region",
    "years_in_practice",
    "practice_type",
    "consent_rep_visit",
    "consent_rep_phone",
    "consent_email",
    "consent_webinar",
]
CATALOG_COLUMNS = [
    "action_id",
    "channel",
    "content_id",
    "topic",
    "content_type",
    "approved_from",
    "approved_until",
    "specialties",
    "cost",
]
INTERACTION_COLUMNS = [
    "hcp_id",
    "timestamp",
    "action_id",
    "channel",
    "content_id",
    "engaged",
    "outcome",
    "propensity",
    "holdout",
]


def _action_index(world: SimulatedWorld) -> np.ndarray:
    """Catalog row index of each interaction, -1 for no touch."""
    codes = pd.Index(world.catalog["action_id"])
    return np.asarray(codes.get_indexer(world.interactions["action_id"]))


def _time_ns(world: SimulatedWorld) -> np.ndarray:
    return world.interactions["timestamp"].to_numpy().astype("datetime64[ns]").astype(np.int64)


# -- arguments -------------------------------------------------------------------------

BAD_ARGUMENTS = [
    ({"n_hcps": 0, "periods": 4, "seed": 1}, "n_hcps must be >= 1"),
    ({"n_hcps": 10, "periods": 0, "seed": 1}, "periods must be >= 1"),
    ({"n_hcps": 10, "periods": 4, "seed": -1}, "seed must be >= 0"),
    ({"n_hcps": 2.5, "periods": 4, "seed": 1}, "n_hcps must be an integer"),
    ({"n_hcps": True, "periods": 4, "seed": 1}, "n_hcps must be an integer"),
    ({"n_hcps": 10, "periods": "4", "seed": 1}, "periods must be an integer"),
    ({"n_hcps": 10, "periods": 4, "seed": 1, "start": "2026-06-01"}, "start must be"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_ARGUMENTS)
def test_invalid_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_world(**kwargs)  # type: ignore[arg-type]


def test_smallest_world_runs() -> None:
    world = simulate_world(n_hcps=1, periods=1, seed=0)
    assert len(world.interactions) == 1
    assert len(world.truth) == len(world.catalog)
    assert world.hcps["territory_id"].tolist() == ["T001"]


# -- determinism -----------------------------------------------------------------------


def test_same_seed_gives_identical_frames_and_files(tmp_path: Path) -> None:
    first = simulate_world(n_hcps=400, periods=6, seed=3)
    second = simulate_world(n_hcps=400, periods=6, seed=3)
    for name in ("hcps", "catalog", "interactions", "truth"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    paths_a = first.write(tmp_path / "a", fmt="csv")
    paths_b = second.write(tmp_path / "b", fmt="csv")
    for name in ("hcps", "catalog", "interactions", "truth"):
        assert paths_a[name].read_bytes() == paths_b[name].read_bytes(), name


def test_different_seed_differs() -> None:
    first = simulate_world(n_hcps=400, periods=6, seed=3)
    other = simulate_world(n_hcps=400, periods=6, seed=4)
    assert not first.interactions["action_id"].equals(other.interactions["action_id"])
    assert not np.allclose(first.truth["uplift"], other.truth["uplift"])


def test_start_date_moves_timestamps_only() -> None:
    june = simulate_world(n_hcps=50, periods=3, seed=5)
    july = simulate_world(n_hcps=50, periods=3, seed=5, start=date(2026, 7, 1))
    shift = july.interactions["timestamp"] - june.interactions["timestamp"]
    assert (shift == pd.Timedelta(days=30)).all()
    pd.testing.assert_series_equal(june.truth["uplift"], july.truth["uplift"])


# -- shapes and dtypes -----------------------------------------------------------------


def test_hcps_table(small_world: SimulatedWorld) -> None:
    hcps = small_world.hcps
    assert list(hcps.columns) == HCP_COLUMNS
    assert len(hcps) == 2_000 and hcps["hcp_id"].is_unique
    assert hcps["hcp_id"].iloc[0] == "H000001"
    assert set(hcps["specialty"]) == set(SPECIALTIES)
    shares = hcps["specialty"].value_counts(normalize=True)
    assert shares.index[0] == "primary_care" and shares.iloc[0] > 0.3  # skewed
    assert hcps["territory_id"].nunique() == 8  # ~1 per 250 HCPs
    assert hcps.groupby("territory_id")["region"].nunique().max() == 1
    assert hcps["region"].nunique() <= 4
    assert set(hcps["decile"]) == set(range(1, 11))
    assert hcps["years_in_practice"].between(1, 45).all()
    assert set(hcps["practice_type"]) == {"hospital", "clinic", "solo"}
    for column, rate in (
        ("consent_email", 0.80),
        ("consent_rep_visit", 0.95),
        ("consent_webinar", 0.90),
    ):
        assert hcps[column].dtype == bool
        assert abs(hcps[column].mean() - rate) < 0.04, column
    assert pd.api.types.is_integer_dtype(hcps["decile"])


def test_catalog_table(small_world: SimulatedWorld) -> None:
    catalog = small_world.catalog
    assert list(catalog.columns) == CATALOG_COLUMNS
    assert 35 <= len(catalog) <= 45 and catalog["action_id"].is_unique
    assert set(catalog["channel"]) == set(CHANNELS)
    assert set(catalog["topic"]) == set(TOPICS)
    medical = catalog["content_type"] == "medical"
    assert set(catalog.loc[medical, "channel"]) == {"email", "webinar"}
    assert 0.2 <= medical.mean() <= 0.3
    assert 0.25 <= (catalog["specialties"] != "").mean() <= 0.35
    for allowed in catalog["specialties"]:
        assert allowed == "" or set(allowed.split(";")) <= set(SPECIALTIES)
    mean_cost = catalog.groupby("channel")["cost"].mean()
    assert mean_cost["rep_visit"] > mean_cost["rep_phone"] > mean_cost["webinar"]
    assert mean_cost["webinar"] > mean_cost["email"]
    assert 0.5 < mean_cost["rep_visit"] < 0.7 and 0.01 < mean_cost["email"] < 0.03
    assert pd.api.types.is_datetime64_any_dtype(catalog["approved_from"])
    assert pd.api.types.is_datetime64_any_dtype(catalog["approved_until"])


def test_catalog_approval_windows(small_world: SimulatedWorld) -> None:
    catalog = small_world.catalog
    start = pd.Timestamp("2026-06-01")
    end = small_world.decision_time
    expired = catalog["approved_until"] < end
    assert 2 <= expired.sum() <= 3
    assert (catalog.loc[expired, "approved_until"] > start).all()  # expire *during* history
    late = catalog["approved_from"] > start
    assert late.sum() in (1, 2)
    # Everything else is open-ended or approved well beyond the history.
    rest = catalog.loc[~expired, "approved_until"]
    assert (rest.isna() | (rest > end + pd.Timedelta(days=180))).all()
    assert not small_world.eligible[:, expired.to_numpy()].any()


def test_approval_windows_mean_what_the_service_reads_from_the_catalog(
    tiny_world: SimulatedWorld, tmp_path: Path
) -> None:
    """A date alone in ``approved_until`` includes that whole day (the contract): the
    history was drawn under the same windows the written catalog gives the service."""
    from nextbest.contract import load_dataset
    from nextbest.policy.eligibility import EligibilityIndex

    tiny_world.write(tmp_path, fmt="parquet")
    catalog = (
        load_dataset(tmp_path).catalog.set_index("action_id").loc[tiny_world.catalog["action_id"]]
    )
    index = EligibilityIndex._from_frames(tiny_world.hcps, catalog.reset_index())
    codes = tiny_world.codes
    closing = catalog["approved_until"].notna().to_numpy()
    days = pd.to_datetime(catalog["approved_until"][closing]).dt.normalize()
    moments = [day + pd.Timedelta(hours=h) for day in days for h in (12, 36)]
    moments += list(pd.to_datetime(tiny_world.interactions["timestamp"].unique()))
    consent = np.ones((len(moments), len(CHANNELS)), dtype=bool)
    at_ns = np.array([pd.Timestamp(m).value for m in moments], dtype=np.int64)
    # Approved: eligible for some specialty (every action allows one), with consent.
    simulated = np.zeros((len(moments), codes.n_actions), dtype=bool)
    for s in range(len(SPECIALTIES)):
        simulated |= eligibility(codes, np.full(len(moments), s), consent, at_ns)
    served = np.stack([index.approved(pd.Timestamp(m).to_pydatetime()) for m in moments])
    np.testing.assert_array_equal(simulated, served)
    # The last day an item is approved is the day the catalog names, all of it.
    for k, a in enumerate(np.flatnonzero(closing)):
        assert simulated[2 * k, a] and not simulated[2 * k + 1, a]


def test_interactions_table(small_world: SimulatedWorld) -> None:
    interactions = small_world.interactions
    assert list(interactions.columns) == INTERACTION_COLUMNS
    assert len(interactions) == 2_000 * 26
    assert (interactions.groupby("hcp_id").size() == 26).all()
    assert pd.api.types.is_datetime64_any_dtype(interactions["timestamp"])
    assert interactions["engaged"].isin([0, 1]).all()
    assert interactions["outcome"].dtype == np.float64 and (interactions["outcome"] >= 0).all()
    assert interactions["holdout"].dtype == bool
    touched = interactions["action_id"].notna()
    assert interactions.loc[~touched, ["channel", "content_id"]].isna().all().all()
    assert (interactions.loc[~touched, "engaged"] == 0).all()
    merged = interactions.loc[touched].merge(small_world.catalog, on="action_id")
    assert (merged["channel_x"] == merged["channel_y"]).all()
    assert (merged["content_id_x"] == merged["content_id_y"]).all()


def test_timestamps_fall_on_weekday_working_hours(tiny_world: SimulatedWorld) -> None:
    stamps = tiny_world.interactions["timestamp"]
    period = np.repeat(np.arange(8), 300)
    offset = stamps - (pd.Timestamp("2026-06-01") + pd.to_timedelta(7 * period, unit="D"))
    assert offset.min() >= pd.Timedelta(hours=9)
    assert offset.max() < pd.Timedelta(days=4, hours=17)
    assert stamps.dt.hour.between(9, 16).all()
    assert stamps.dt.dayofweek.isin(range(5)).all()  # 2026-06-01 is a Monday


def test_truth_covers_every_hcp_action_pair(small_world: SimulatedWorld) -> None:
    truth = small_world.truth
    n_actions = len(small_world.catalog)
    assert list(truth.columns) == ["hcp_id", "action_id", "p_engage", "uplift", "eligible"]
    assert len(truth) == 2_000 * n_actions
    assert not truth.duplicated(["hcp_id", "action_id"]).any()
    assert set(truth["hcp_id"]) == set(small_world.hcps["hcp_id"])
    assert set(truth["action_id"]) == set(small_world.catalog["action_id"])
    assert truth["p_engage"].between(0, 1, inclusive="neither").all()
    assert (truth["uplift"] >= 0).all()
    np.testing.assert_allclose(truth["uplift"].to_numpy(), small_world.uplift.ravel())


# -- the logging policy ----------------------------------------------------------------


def test_propensities_are_probabilities(small_world: SimulatedWorld) -> None:
    propensity = small_world.interactions["propensity"]
    assert propensity.gt(0).all() and propensity.le(1).all()
    probs = small_world.logging_policy_probabilities()
    assert probs.shape == (2_000, 1 + len(small_world.catalog))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs[:, 0] >= HOLDOUT_SHARE).all()
    # Exploration: every eligible action has positive probability, no ineligible one has.
    assert (probs[:, 1:][small_world.eligible] > 0).all()
    assert (probs[:, 1:][~small_world.eligible] == 0).all()


def test_logged_propensity_is_the_exact_policy_probability(tiny_world: SimulatedWorld) -> None:
    traits, codes = tiny_world.traits, tiny_world.codes
    at_ns = _time_ns(tiny_world)
    hcp = np.tile(np.arange(300), 8)
    eligible = eligibility(codes, traits.specialty[hcp], traits.consent[hcp], at_ns)
    probs = logging_policy_probabilities(traits.decile[hcp], eligible, codes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    option = _action_index(tiny_world) + 1
    np.testing.assert_allclose(
        tiny_world.interactions["propensity"].to_numpy(), probs[np.arange(len(hcp)), option]
    )


def test_only_eligible_actions_are_chosen(small_world: SimulatedWorld) -> None:
    traits, codes = small_world.traits, small_world.codes
    action = _action_index(small_world)
    hcp = np.tile(np.arange(2_000), 26)
    touched = action >= 0
    assert touched.mean() > 0.5
    at_ns = _time_ns(small_world)[touched]
    eligible = eligibility(
        codes, traits.specialty[hcp[touched]], traits.consent[hcp[touched]], at_ns
    )
    assert eligible[np.arange(touched.sum()), action[touched]].all()
    # and, spelled out on the table itself: consent per channel
    merged = small_world.interactions.merge(small_world.hcps, on="hcp_id")
    for channel in CHANNELS:
        rows = merged["channel"] == channel
        assert merged.loc[rows, f"consent_{channel}"].all(), channel


def test_holdout_share_and_rows(small_world: SimulatedWorld) -> None:
    interactions = small_world.interactions
    n = len(interactions)
    share = interactions["holdout"].mean()
    assert abs(share - HOLDOUT_SHARE) < 4 * np.sqrt(0.1 * 0.9 / n)
    holdout = interactions.loc[interactions["holdout"]]
    assert holdout["action_id"].isna().all() and (holdout["engaged"] == 0).all()
    assert (holdout["propensity"] >= HOLDOUT_SHARE).all()
    # The traditional policy also leaves some HCPs untouched outside the holdout.
    untouched = interactions["action_id"].isna() & ~interactions["holdout"]
    assert 0.05 < untouched.mean() < 0.4


def test_logging_policy_is_biased_towards_high_deciles(small_world: SimulatedWorld) -> None:
    merged = small_world.interactions.merge(small_world.hcps, on="hcp_id")
    visit_rate = (merged["channel"] == "rep_visit").groupby(merged["decile"]).mean()
    assert visit_rate[10] > 5 * visit_rate[3]
    phone_rate = (merged["channel"] == "rep_phone").groupby(merged["decile"]).mean()
    assert phone_rate[5] > 2 * phone_rate[10]
    email_rate = (merged["channel"] == "email").groupby(merged["consent_email"]).mean()
    assert email_rate[True] > 0.3 and email_rate[False] == 0


def test_ips_recovers_baseline_from_logged_propensities(small_world: SimulatedWorld) -> None:
    """Mean outcome under "always no touch" by IPS equals the true baseline (unbiased)."""
    interactions = small_world.interactions
    no_touch = interactions["action_id"].isna().to_numpy()
    weights = no_touch / interactions["propensity"].to_numpy()
    estimate = float((weights * interactions["outcome"].to_numpy()).mean())
    truth = float(small_world.baseline.mean())
    assert abs(estimate - truth) < 0.05 * truth


def test_recent_touches_counts_the_last_four_periods() -> None:
    touched = np.array([[0, 2], [0, -1], [1, 2], [-1, 2], [0, 3], [3, 3]])  # (periods, n)
    np.testing.assert_array_equal(recent_touches(touched, 0), np.zeros((2, 4)))
    np.testing.assert_array_equal(recent_touches(touched, 4), [[2, 1, 0, 0], [0, 0, 3, 0]])
    np.testing.assert_array_equal(recent_touches(touched, 6), [[1, 1, 0, 1], [0, 0, 2, 2]])
