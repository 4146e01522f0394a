"""The Hillstrom e-mail experiment through the contract, checked against published rates."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from nextbest.contract import ContractError, Dataset
from nextbest.contract.adapters import load_hillstrom

HILLSTROM = Path(os.environ.get("NEXTBEST_HILLSTROM_CSV", "/work/shared/data/hillstrom.csv"))

pytestmark = pytest.mark.skipif(not HILLSTROM.is_file(), reason=f"{HILLSTROM} not present")

# Visit rates by arm published with the data set (README: Womens 15.14%, Mens 18.28%,
# No E-Mail 10.62%).
PUBLISHED_VISIT_RATE = {"womens_email": 0.1514, "mens_email": 0.1828, None: 0.1062}


@pytest.fixture(scope="module")
def hillstrom() -> Dataset:
    return load_hillstrom(HILLSTROM)


def test_every_customer_is_one_hcp_and_one_decision(hillstrom: Dataset) -> None:
    assert len(hillstrom.hcps) == 64_000
    assert len(hillstrom.interactions) == 64_000
    assert hillstrom.hcps["hcp_id"].iat[0] == "C00001"
    assert hillstrom.hcps["hcp_id"].is_unique
    assert hillstrom.hcps["consent_email"].all()
    assert "purchase_channel" in hillstrom.hcps.columns
    assert hillstrom.hcps["history"].dtype == "float64"
    assert hillstrom.channels == ["email"]
    assert hillstrom.catalog["action_id"].tolist() == ["mens_email", "womens_email"]


def test_three_arms_of_about_a_third(hillstrom: Dataset) -> None:
    shares = hillstrom.interactions["action_id"].value_counts(normalize=True, dropna=False)
    assert len(shares) == 3
    assert ((shares - 1 / 3).abs() < 0.01).all()
    assert hillstrom.has_propensity
    assert (hillstrom.interactions["propensity"] == 1 / 3).all()


def test_holdout_rows_have_no_action(hillstrom: Dataset) -> None:
    inter = hillstrom.interactions
    assert inter["holdout"].sum() > 20_000
    assert inter.loc[inter["holdout"], "action_id"].isna().all()
    assert inter.loc[~inter["holdout"], "action_id"].notna().all()
    assert (inter.loc[inter["holdout"], "engaged"] == 0).all()


def test_visit_rates_match_the_published_ones(hillstrom: Dataset) -> None:
    inter = hillstrom.interactions
    for action, published in PUBLISHED_VISIT_RATE.items():
        arm = inter["action_id"].isna() if action is None else inter["action_id"] == action
        assert inter.loc[arm, "outcome"].mean() == pytest.approx(published, abs=0.0005)
        if action is not None:
            # For mailed customers `engaged` is the visit itself.
            assert (inter.loc[arm, "engaged"] == inter.loc[arm, "outcome"]).all()


def test_spend_outcome() -> None:
    spend = load_hillstrom(HILLSTROM, outcome="spend").interactions["outcome"]
    assert spend.dtype == "float64"
    assert spend.max() > 100 and (spend >= 0).all()


def test_unknown_outcome_names_the_choices() -> None:
    with pytest.raises(ValueError, match="visit, conversion, spend; got 'revenue'"):
        load_hillstrom(HILLSTROM, outcome="revenue")


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hillstrom.csv"
    pd.read_csv(HILLSTROM, nrows=5).drop(columns="segment").to_csv(path, index=False)
    with pytest.raises(ContractError, match=r"hillstrom\.csv, column 'segment': missing"):
        load_hillstrom(path)


def test_unknown_arm_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hillstrom.csv"
    frame = pd.read_csv(HILLSTROM, nrows=5)
    frame.loc[3, "segment"] = "SMS"
    frame.to_csv(path, index=False)
    with pytest.raises(ContractError, match=r"hillstrom\.csv, row 4, column 'segment': 'SMS'"):
        load_hillstrom(path)


def test_a_mapped_cell_refused_names_the_row_as_the_file_numbers_it(tmp_path: Path) -> None:
    """Under a blank line, the adapter's own checks named row 9 and the contract's
    checks of the mapped tables row 8: those numbered the tables' rows, not the file's."""
    lines = HILLSTROM.read_text().splitlines()[:21]
    spend = lines[0].split(",").index("spend")
    cells = lines[8].split(",")  # data row 8, on line 10 once a blank line is above it
    cells[spend] = "abc"
    lines[8] = ",".join(cells)
    path = tmp_path / "hillstrom.csv"
    path.write_text("\n".join([lines[0], lines[1], "", *lines[2:]]) + "\n")
    with pytest.raises(ContractError, match=r"\(as interactions\), row 9, column 'outcome'"):
        load_hillstrom(path, outcome="spend")


def test_a_column_saved_as_the_parquet_index_is_read_as_the_column(tmp_path: Path) -> None:
    """``df.set_index("segment").to_parquet(...)``: the arm is still read, customer by
    customer, as from the CSV (it was refused as a missing column)."""
    frame = pd.read_csv(HILLSTROM, nrows=200)
    path = tmp_path / "hillstrom.parquet"
    frame.set_index(["segment", "zip_code"]).to_parquet(path)
    from_csv = tmp_path / "hillstrom.csv"
    frame.to_csv(from_csv, index=False)
    got, expected = load_hillstrom(path), load_hillstrom(from_csv)
    pd.testing.assert_frame_equal(
        got.interactions.reset_index(drop=True), expected.interactions.reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(
        got.hcps.sort_index(axis=1).reset_index(drop=True),
        expected.hcps.sort_index(axis=1).reset_index(drop=True),
    )
