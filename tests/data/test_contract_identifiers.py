"""Identifier-like text (ids, zip codes) stays text, exactly as written, end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest

from nextbest.contract import ContractError, Dataset, load_dataset, write_dataset
from nextbest.contract.parse import feature
from nextbest.contract.schema import is_identifier_column

Tables = dict[str, pd.DataFrame]
WriteTables = Callable[..., Path]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_leading_zeros_survive_loading(tables: Tables, write_tables: WriteTables, fmt: str) -> None:
    ids = {"H1": "00123", "H2": "0042", "H3": "7"}
    tables["hcps"]["hcp_id"] = tables["hcps"]["hcp_id"].map(ids)
    tables["interactions"]["hcp_id"] = tables["interactions"]["hcp_id"].map(ids)
    tables["hcps"]["territory_id"] = ["007", "007", "010"]
    tables["hcps"]["zip"] = ["02134", "10001", ""]
    tables["hcps"]["area"] = ["02134", "10001", "94105"]  # no id-like name, but a leading zero
    tables["catalog"]["sku_code"] = ["1042", "1043", "1044"]  # no leading zero, an id-like name
    tables["interactions"]["visit_id"] = ["0001", "0002", "", "0004", "0005"]
    dataset = load_dataset(write_tables(tables, fmt=fmt))
    hcps = dataset.hcps
    assert hcps["hcp_id"].tolist() == ["00123", "0042", "7"]
    assert hcps["territory_id"].tolist() == ["007", "007", "010"]
    assert hcps["zip"].tolist() == ["02134", "10001", ""]
    assert hcps["area"].tolist() == ["02134", "10001", "94105"]
    assert hcps["decile"].dtype == np.int64  # a plain number column is still a number
    assert dataset.catalog["sku_code"].tolist() == ["1042", "1043", "1044"]
    # Interactions come back sorted by hcp_id as text ("00123" < "0042" < "7"), the
    # reverse of their order as numbers.
    assert list(dict.fromkeys(dataset.interactions["hcp_id"])) == ["00123", "0042", "7"]
    assert "0001" in set(dataset.interactions["visit_id"])
    assert dataset.interactions["visit_id"].map(type).eq(str).all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_identifier_text_round_trips_through_write_dataset(
    tables: Tables, write_tables: WriteTables, tmp_path: Path, fmt: Literal["csv", "parquet"]
) -> None:
    tables["hcps"]["zip"] = ["02134", "00501", "10001"]
    first = load_dataset(write_tables(tables))
    again = load_dataset(write_dataset(first, tmp_path / "again", fmt=fmt))
    assert again.hcps["zip"].tolist() == ["02134", "00501", "10001"]
    assert again.fingerprint() == first.fingerprint()


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["02134", "10001"], ["02134", "10001"]),  # a leading zero: text
        (["-007", "3"], ["-007", "3"]),
        (["12345678901234567", "1"], ["12345678901234567", "1"]),  # float64 would round it
        (["0", "5", "10"], [0, 5, 10]),  # a lone 0 is a number
        (["0.5", "", "2"], [0.5, np.nan, 2.0]),  # so is 0.5
        (["a", "1"], ["a", "1"]),
    ],
)
def test_feature_keeps_identifier_like_text(cells: list[str], expected: list[object]) -> None:
    got = feature(pd.Series(cells, dtype=object))
    if all(isinstance(e, str) for e in expected):
        assert got.dtype == object and got.tolist() == expected
    else:
        np.testing.assert_array_equal(got.to_numpy(dtype=float), np.array(expected, dtype=float))


def test_identifier_columns_from_typed_files_become_text() -> None:
    # A Parquet writer may have stored a zip as a number; it still reads as an id.
    assert feature(pd.Series([2134, 10001]), identifier=True).tolist() == ["2134", "10001"]
    # A float column (nulls forced it) reads as whole numbers, not "2134.0".
    assert feature(pd.Series([2134.0, np.nan]), identifier=True).tolist() == ["2134", ""]


@pytest.mark.parametrize(
    ("name", "identifier"),
    [
        ("zip", True),
        ("ZIP", True),
        ("postal_code", True),
        ("practice_id", True),
        ("npi", True),
        ("decile", False),
        ("years_in_practice", False),
        ("spend", False),
    ],
)
def test_identifier_column_names(name: str, identifier: bool) -> None:
    assert is_identifier_column(name) is identifier


def test_declared_numeric_columns_still_parse_and_still_fail_clearly(
    tables: Tables, write_tables: WriteTables
) -> None:
    tables["catalog"].loc[1, "cost"] = "0150.5"  # declared numeric: a leading zero is fine
    dataset = load_dataset(write_tables(tables, name="ok"))
    assert dataset.catalog["cost"].tolist() == [0.0, 150.5, 0.0]
    tables["catalog"].loc[1, "cost"] = "02134x"
    with pytest.raises(ContractError, match=r"catalog.csv, row 2, column 'cost': '02134x' is not"):
        load_dataset(write_tables(tables, name="bad"))


def _zero_padded_world(out: Path) -> tuple[Dataset, dict[str, str]]:
    """A small simulated world whose hcp_ids are zero-padded digits, written as CSV."""
    from nextbest.simulate import simulate_world

    simulate_world(n_hcps=120, periods=8, seed=7).write(out, fmt="csv")
    hcps = pd.read_csv(out / "hcps.csv", dtype=str, keep_default_na=False)
    interactions = pd.read_csv(out / "interactions.csv", dtype=str, keep_default_na=False)
    ids = {old: f"{n + 100:05d}" for n, old in enumerate(hcps["hcp_id"])}
    hcps["hcp_id"] = hcps["hcp_id"].map(ids)
    interactions["hcp_id"] = interactions["hcp_id"].map(ids)
    hcps.to_csv(out / "hcps.csv", index=False)
    interactions.to_csv(out / "interactions.csv", index=False)
    return load_dataset(out), ids


def test_zero_padded_hcp_ids_are_trained_and_served_under_the_same_id(tmp_path: Path) -> None:
    from nextbest.errors import NotFoundError
    from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
    from nextbest.learning.train import train
    from nextbest.policy.exploration import EpsilonGreedy
    from nextbest.service.picks import picks_frame
    from nextbest.service.recommend import Recommender

    dataset, ids = _zero_padded_world(tmp_path / "world")
    assert "00123" in set(dataset.hcps["hcp_id"])
    assert set(dataset.interactions["hcp_id"]) <= set(ids.values())
    config = TrainConfig(
        engagement=EngagementParams(n_estimators=10, num_leaves=7),
        uplift=UpliftParams(n_estimators=10),
    )
    model = train(dataset, config=config).model
    assert model.hcp_row("00123") == dataset.hcps["hcp_id"].tolist().index("00123")
    assert model.hcp_row("123") is None
    recommender = Recommender(
        model=model, version="1", exploration=EpsilonGreedy(epsilon=0.0, holdout_rate=0.0)
    )
    assert recommender.recommend(hcp_id="00123", k=3).hcp_id == "00123"
    with pytest.raises(NotFoundError):
        recommender.recommend(hcp_id="123", k=3)
    picks = picks_frame(model, hcp_ids=["00123", "00124", "00125"], k=2)
    assert set(picks["hcp_id"]) <= {"00123", "00124", "00125"}
    assert len(picks)


def test_an_id_that_differs_only_in_its_unicode_encoding_is_said_so(tables, write_tables) -> None:
    """'Ärztin-1' typed on one system (one code point for Ä) and exported by another
    (A + a combining diaeresis) look the same: the refusal says what differs."""
    import unicodedata

    import pytest

    from nextbest.contract import load_dataset
    from nextbest.contract.errors import ContractError

    changed = {name: frame.copy() for name, frame in tables.items()}
    first = changed["hcps"]["hcp_id"].iloc[0]
    composed = unicodedata.normalize("NFC", f"Ärztin-{first}")
    changed["hcps"].loc[0, "hcp_id"] = composed
    rows = changed["interactions"]["hcp_id"] == first
    changed["interactions"].loc[rows, "hcp_id"] = unicodedata.normalize("NFD", composed)
    with pytest.raises(ContractError) as refused:
        load_dataset(write_tables(changed, name="nfd"))
    said = str(refused.value)
    assert f"unknown hcp_id {unicodedata.normalize('NFD', composed)!r} (not in hcps)" in said
    assert f"it looks like {composed!r} there, but its accented letters are encoded" in said


def test_integer_ids_with_nulls_from_a_warehouse_parquet_file_keep_every_digit(
    tables: Tables, write_tables: WriteTables
) -> None:
    """A Parquet file written by Spark or pyarrow (no pandas metadata) stores an
    ``action_id`` of 18-digit integers with nulls on its no-touch rows: it was read as
    float64, '123456789012345678' as '1.2345678901234568e+17', and every touch refused
    as an unknown action in scientific notation, with the advice to export ids as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    big = {"A1": 123456789012345678, "A2": 123456789012345679, "A3": 123456789012345680}
    out = write_tables(tables, fmt="parquet")
    catalog = tables["catalog"].assign(action_id=tables["catalog"]["action_id"].map(big))
    catalog.to_parquet(out / "catalog.parquet", index=False)
    history = tables["interactions"]
    written = pa.Table.from_pandas(history.drop(columns="action_id"), preserve_index=False)
    action = pa.array([big.get(a) for a in history["action_id"]], type=pa.int64())
    pq.write_table(
        written.append_column("action_id", action).replace_schema_metadata(None),
        out / "interactions.parquet",
    )
    dataset = load_dataset(out)
    assert set(dataset.interactions["action_id"].dropna()) == {str(v) for v in big.values()}
    assert dataset.interactions["action_id"].isna().sum() == 1  # the no-touch row


@pytest.mark.parametrize(
    ("kind", "ids", "said"),
    [
        # One id past 2**53 alone, not repeated: loaded as '1.2345678901234568e+17',
        # in the hcps and interactions files alike, matching whatever it was rounded from.
        pytest.param(
            "float64",
            {"H1": 123456789012345678.0, "H2": 2.0, "H3": 3.0},
            "123456789012345680 is read from a column of floats (float64), which holds no "
            "whole number from 2**53 (9,007,199,254,740,992) up exactly",
            id="float64",
        ),
        pytest.param(
            "float32",
            {"H1": 16777217.0, "H2": 2.0, "H3": 3.0},
            "16777216 is read from a column of floats (float32), which holds no whole "
            "number from 2**24 (16,777,216) up exactly",
            id="float32",
        ),
    ],
)
def test_ids_a_float_column_holds_rounded_are_refused_by_row(
    tables: Tables, write_tables: WriteTables, kind: str, ids: dict[str, float], said: str
) -> None:
    out = write_tables(tables, fmt="parquet")
    for name in ("hcps", "interactions"):
        frame = tables[name].assign(hcp_id=tables[name]["hcp_id"].map(ids).astype(kind))
        frame.to_parquet(out / f"{name}.parquet", index=False)
    with pytest.raises(ContractError) as refused:
        load_dataset(out)
    message = str(refused.value)
    assert f"hcps.parquet, row 1, column 'hcp_id': {said}" in message, message
    assert "hint: hcps.parquet, column 'hcp_id': write hcp_id as text or as integers" in message
    # Every row of the history naming it: rows 2, 3 and 5 are H1's.
    for row in (2, 3, 5):
        assert f"interactions.parquet, row {row}, column 'hcp_id': {said}" in message
    assert "interactions.parquet, row 1," not in message  # H2's id, 2, is held exactly


@pytest.mark.parametrize("column", ["hcp_id", "territory_id"])
def test_a_boolean_id_column_is_refused(
    tables: Tables, write_tables: WriteTables, column: str
) -> None:
    """A boolean column was read as the ids 'True' and 'False'."""
    out = write_tables(tables, fmt="parquet")
    hcps = tables["hcps"].assign(**{column: [True, False, True]})
    hcps.to_parquet(out / "hcps.parquet", index=False)
    with pytest.raises(ContractError) as refused:
        load_dataset(out)
    assert (
        f"hcps.parquet, column '{column}': is a column of true/false values (a boolean "
        "column), which would be read as the text 'True' and 'False'"
    ) in str(refused.value)


@pytest.mark.parametrize("column", ["hcp_id", "action_id"])
def test_ids_a_float_column_rounds_to_one_are_said_once_each(
    tables: Tables, write_tables: WriteTables, column: str
) -> None:
    """Two ids a float column rounds to the same number were each refused as rounded,
    and the second again as a duplicate of the first: one fault, two lines."""
    table = "hcps" if column == "hcp_id" else "catalog"
    out = write_tables(tables, fmt="parquet")
    written = [123456789012345678.0, 123456789012345679.0, 3.0]
    tables[table].assign(**{column: written}).to_parquet(out / f"{table}.parquet", index=False)
    with pytest.raises(ContractError) as refused:
        load_dataset(out)
    lines = [line for line in str(refused.value).splitlines() if f"{table}.parquet, row" in line]
    said = "123456789012345680 is read from a column of floats (float64)"
    assert [line.strip().split(": ", 1)[0] for line in lines] == [
        f"{table}.parquet, row 1, column '{column}'",
        f"{table}.parquet, row 2, column '{column}'",
    ], lines
    assert all(said in line for line in lines), lines
    assert "duplicate" not in str(refused.value)
