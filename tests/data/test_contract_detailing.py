"""The physician detailing panel through the contract, checked against the file itself."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from nextbest.contract import ContractError, Dataset, load_dataset, write_dataset
from nextbest.contract.adapters import load_detailing
from nextbest.contract.notes import unread_column_notes
from nextbest.contract.schema import OPTIONAL_INTERACTION_COLUMNS, REQUIRED_INTERACTION_COLUMNS

DETAILING = Path(os.environ.get("NEXTBEST_DETAILING_CSV", "/work/shared/data/detailing.csv"))

needs_file = pytest.mark.skipif(not DETAILING.is_file(), reason=f"{DETAILING} not present")


@pytest.fixture(scope="module")
def detailing() -> Dataset:
    return load_detailing(DETAILING)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return pd.read_csv(DETAILING)


@needs_file
def test_every_physician_is_one_hcp_with_24_monthly_decisions(detailing: Dataset) -> None:
    assert len(detailing.hcps) == 183
    assert len(detailing.interactions) == 4_392
    assert detailing.hcps["hcp_id"].tolist()[:2] == ["P001", "P002"]
    assert detailing.hcps["hcp_id"].iat[-1] == "P183"
    assert (detailing.interactions.groupby("hcp_id").size() == 24).all()
    assert (detailing.hcps["territory_id"] == "T001").all()
    # DRG, MedicalCPI and the monthly counts change over time: none is an attribute.
    assert detailing.hcps.columns.tolist() == ["hcp_id", "specialty", "territory_id"]


@needs_file
def test_specialty_comes_from_psych(detailing: Dataset, raw: pd.DataFrame) -> None:
    psychiatrists = {f"P{n:03d}" for n in raw.loc[raw["Psych"] == 1, "Physician"]}
    specialty = detailing.hcps.set_index("hcp_id")["specialty"]
    assert set(specialty[specialty == "psychiatry"].index) == psychiatrists
    assert len(psychiatrists) == 3
    assert set(specialty) == {"psychiatry", "other"}


@needs_file
def test_one_promotional_rep_visit_approved_before_the_panel(detailing: Dataset) -> None:
    catalog = detailing.catalog
    assert catalog["action_id"].tolist() == ["detail_visit"]
    assert detailing.channels == ["rep_visit"]
    assert catalog["content_type"].iat[0] == "promotional"
    assert catalog["approved_from"].iat[0] < detailing.interactions["timestamp"].min()


@needs_file
def test_each_month_maps_to_one_decision(detailing: Dataset, raw: pd.DataFrame) -> None:
    inter = detailing.interactions
    expected = pd.DataFrame(
        {
            "hcp_id": [f"P{n:03d}" for n in raw["Physician"]],
            "timestamp": [
                pd.Timestamp(2020, 1, 1) + pd.DateOffset(months=m - 1) for m in raw["Date"]
            ],
            "details": raw["Details"],
            "new_rx": raw["NewPrescription"],
            "took_samples": raw["Samples"] > 0,
        }
    )
    merged = inter.merge(expected, on=["hcp_id", "timestamp"], how="outer", validate="1:1")
    assert len(merged) == len(raw)
    touched = merged["details"] > 0
    assert (merged["action_id"].notna() == touched).all()
    assert (merged.loc[touched, "engaged"] == merged.loc[touched, "took_samples"]).all()
    assert 0.2 < merged.loc[touched, "engaged"].mean() < 0.5  # both 0s and 1s to learn from
    assert (merged.loc[~touched, "engaged"] == 0).all()
    assert (merged["outcome"] == merged["new_rx"]).all()
    assert inter["timestamp"].min() == pd.Timestamp("2020-01-01")
    assert inter["timestamp"].max() == pd.Timestamp("2021-12-01")
    assert int(touched.sum()) == 2_925


@needs_file
def test_observational_history_has_no_propensity_or_holdout(detailing: Dataset) -> None:
    assert not detailing.has_propensity
    assert not detailing.has_holdout
    assert detailing.interactions["propensity"].isna().all()
    assert detailing.has_outcome


# -- small written files: these run without the data set --------------------------------

HEADER = "Physician,Date,NewPrescription,Samples,Details,CompetitorNew,MedicalCPI,DRG,Psych"
GOOD_ROWS = [
    "1,1,10,0,0,11,245.2,389.85,1",
    "2,1,11,0,2,2,245.2,389.85,0",
    "1,2,9,0,1,9,246.6,390.86,1",
    "2,2,12,4,3,1,246.6,390.86,0",
]


def _write(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "detailing.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_a_small_file_maps_with_any_start_month(tmp_path: Path) -> None:
    data = load_detailing(_write(tmp_path, GOOD_ROWS), start="2019-07-01")
    inter = data.interactions
    assert inter["hcp_id"].tolist() == ["P001", "P001", "P002", "P002"]
    assert (
        inter["timestamp"].tolist() == [pd.Timestamp("2019-07-01"), pd.Timestamp("2019-08-01")] * 2
    )
    assert inter["action_id"].tolist() == [None, "detail_visit", "detail_visit", "detail_visit"]
    assert inter["outcome"].tolist() == [10.0, 9.0, 11.0, 12.0]
    assert inter["engaged"].tolist()[1:] == [0.0, 0.0, 1.0]  # samples taken in the last
    assert data.hcps["specialty"].tolist() == ["psychiatry", "other"]


def test_written_out_it_holds_only_columns_validate_reads(tmp_path: Path) -> None:
    """`validate` on the directory written from the panel has no column to call unread
    (details, samples and competitor_new were written and named so)."""
    written = write_dataset(load_detailing(_write(tmp_path, GOOD_ROWS)), tmp_path / "data")
    assert unread_column_notes(load_dataset(written)) == []
    header = (written / "interactions.csv").read_text().splitlines()[0].split(",")
    contract = {*REQUIRED_INTERACTION_COLUMNS, *OPTIONAL_INTERACTION_COLUMNS}
    assert set(header) <= contract, header


def test_start_must_open_a_month(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"first day of a month .*; got 2019-07-15"):
        load_detailing(_write(tmp_path, GOOD_ROWS), start="2019-07-15")


def _with(row: int, column: str, value: str) -> list[str]:
    """GOOD_ROWS with the cell at (0-based data ``row``, ``column``) replaced."""
    names = HEADER.split(",")
    rows = [line.split(",") for line in GOOD_ROWS]
    rows[row][names.index(column)] = value
    return [",".join(cells) for cells in rows]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (_with(2, "Psych", "2"), r"detailing\.csv, row 3, column 'Psych': '2' is not 0 or 1"),
        (
            _with(2, "Psych", "0"),
            r"detailing\.csv, row 3, column 'Psych': 0 but 1 in row 1 for physician 1: "
            "Psych must not change",
        ),
        (
            _with(1, "Details", "-1"),
            r"detailing\.csv, row 2, column 'Details': -1 is not a whole number >= 0",
        ),
        (
            _with(3, "Details", "1.5"),
            r"detailing\.csv, row 4, column 'Details': 1.5 is not a whole number",
        ),
        (_with(0, "NewPrescription", "many"), r"row 1, column 'NewPrescription': 'many' is not"),
        (_with(1, "Physician", ""), r"detailing\.csv, row 2, column 'Physician': empty value"),
        (
            _with(2, "Date", "1"),
            r"detailing\.csv, row 3, column 'Date': month 1 of physician 1 again",
        ),
    ],
    ids=["psych-2", "psych-changes", "details-negative", "details-fraction", "nrx-text",
         "physician-empty", "month-twice"],
)  # fmt: skip
def test_bad_values_are_named_by_file_row_and_column(
    tmp_path: Path, rows: list[str], match: str
) -> None:
    with pytest.raises(ContractError, match=match):
        load_detailing(_write(tmp_path, rows))


def test_missing_column_is_named(tmp_path: Path) -> None:
    header = HEADER.replace(",Details", "")
    rows = [",".join(c for i, c in enumerate(r.split(",")) if i != 4) for r in GOOD_ROWS]
    with pytest.raises(ContractError, match=r"detailing\.csv, column 'Details': missing"):
        load_detailing(_write(tmp_path, rows, header=header))


def test_every_bad_row_is_counted(tmp_path: Path) -> None:
    rows = _with(0, "Details", "-1")
    rows = [*rows[:1], *_with(1, "Details", "-2")[1:]]
    with pytest.raises(ContractError) as caught:
        load_detailing(_write(tmp_path, rows))
    assert caught.value.total == 2
    assert [p.row for p in caught.value.problems] == [1, 2]
    assert all(p.column == "Details" for p in caught.value.problems)


@needs_file
def test_the_panel_validates_and_trains_saying_its_uplift_cannot_be_measured(
    detailing: Dataset, env_settings: Path, tmp_path: Path
) -> None:
    """The whole pipeline on real monthly history: validate passes, train registers a
    version whose engagement model learns who takes samples, and both say that
    observational history cannot measure what a visit adds (the fallback)."""
    from typer.testing import CliRunner

    from nextbest.cli import app
    from nextbest.contract.dataset import write_dataset

    data = write_dataset(detailing, tmp_path / "panel")
    runner = CliRunner()
    checked = runner.invoke(app, ["validate", "--data", str(data)])
    said = " ".join(checked.output.split())
    assert checked.exit_code == 0, said
    assert "ok: 183 HCPs, 1 action, 4,392 interactions" in said, said
    assert "engaged on 1,031 of them" in said and "falls back to preference x value" in said
    fast = Path(__file__).parents[1] / "cli" / "fast_train.yaml"
    trained = runner.invoke(app, ["train", "--data", str(data), "--config", str(fast)])
    said = " ".join(trained.output.split())
    assert trained.exit_code == 0, said
    assert "uplift falls back to preference x value" in said
    assert "observational history" in said, said
    assert "nextbest version 1 aliases: champion" in said, said


@needs_file
def test_the_documented_commands_take_the_raw_file_to_a_data_directory(
    env_settings: Path, tmp_path: Path
) -> None:
    """docs/data.md's commands for a file of another shape, run as written beside
    the file (``detailing.csv``): the adapter's directory validates. They were
    named, not written: a data engineer had to find the functions' arguments."""
    import re
    import subprocess
    import sys

    from typer.testing import CliRunner

    from nextbest.cli import app

    doc = (Path(__file__).parents[2] / "docs" / "data.md").read_text(encoding="utf-8")
    section = doc.split("## Data in other shapes", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no bash block under 'Data in other shapes'"
    lines = block.group(1).splitlines()
    writes = [line for line in lines if line.startswith("python -c ") and "detailing" in line]
    assert len(writes) == 1, lines
    (tmp_path / "detailing.csv").symlink_to(DETAILING)
    command = writes[0].removeprefix("python -c ").strip()
    assert command[0] == command[-1] == '"', command
    import nextbest

    # The package this test runs, wherever the shell's python would find it.
    package = str(Path(nextbest.__file__).parents[1])
    done = subprocess.run(
        [sys.executable, "-c", command[1:-1]],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": package},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "nextbest validate --data data/detailing" in lines
    checked = CliRunner().invoke(app, ["validate", "--data", str(tmp_path / "data/detailing")])
    assert checked.exit_code == 0, checked.output
    assert "ok: 183 HCPs, 1 action, 4,392 interactions" in checked.output
