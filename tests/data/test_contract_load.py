"""Valid inputs load into exactly the normalised frames the rest of nextbest relies on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextbest.contract import (
    CONTENT_TYPES,
    Dataset,
    allowed_specialties,
    consent_column,
    is_rep_channel,
    load_catalog,
    load_dataset,
    load_hcps,
    load_interactions,
    load_territories,
    write_dataset,
    write_table,
)
from nextbest.contract.errors import ContractError, Problem, ProblemLog
from nextbest.contract.files import EMPTY_ROWS, ROW_NUMBERS, read_table, row_numbers
from nextbest.contract.notes import (
    consent_notes,
    data_notes,
    empty_row_notes,
    territory_notes,
)
from nextbest.contract.validate import validate_interactions, without_unnamed_columns

Tables = dict[str, pd.DataFrame]
WriteTables = Callable[..., Path]


@pytest.fixture
def dataset(tables: Tables, write_tables: WriteTables) -> Dataset:
    return load_dataset(write_tables(tables))


def test_hcps_are_normalised(dataset: Dataset) -> None:
    hcps = dataset.hcps
    assert list(hcps.columns) == [
        "hcp_id",
        "specialty",
        "territory_id",
        "region",
        "decile",
        "consent_email",
        "consent_rep_visit",
    ]
    assert hcps["hcp_id"].tolist() == ["H1", "H2", "H3"]  # file order kept
    assert hcps["hcp_id"].dtype == object
    assert hcps["decile"].dtype == np.int64  # numeric text became a number
    assert hcps["region"].dtype == object
    # An empty cell is consent not known, so not given.
    assert hcps["consent_email"].tolist() == [True, False, False]
    assert hcps.attrs["consent_blanks"] == {"consent_email": 1}
    assert hcps["consent_rep_visit"].tolist() == [True, False, True]
    assert hcps["consent_email"].dtype == bool


def test_catalog_is_normalised(dataset: Dataset) -> None:
    catalog = dataset.catalog
    assert list(catalog.columns[:9]) == [
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
    assert catalog["channel"].tolist() == ["email", "rep_visit", "email"]
    assert catalog["content_type"].tolist() == ["promotional", "medical", "medical"]
    assert set(catalog["content_type"]) <= set(CONTENT_TYPES)
    assert catalog["approved_from"].dtype == "datetime64[ns]"
    assert catalog["approved_from"].iat[2] == pd.Timestamp("2024-02-01")  # 'Z' dropped
    assert catalog["approved_until"].isna().tolist() == [True, False, True]
    assert catalog["specialties"].tolist() == ["cardiology;oncology", "", "oncology"]
    assert catalog["cost"].tolist() == [0.0, 150.5, 0.0]
    assert catalog["cost"].dtype == np.float64
    assert dataset.channels == ["email", "rep_visit"]


# The times of :func:`_shuffled_history`, each with its UTC instant.
_SHUFFLED_TIMES = {
    "2024-03-01": pd.Timestamp("2024-03-01"),
    "2024-03-01T02:00:00+02:00": pd.Timestamp("2024-03-01"),
    "2024-03-02T09:00:00": pd.Timestamp("2024-03-02 09:00"),
    "2024-03-03": pd.Timestamp("2024-03-03"),
}


def _shuffled_history(tables: Tables, n: int) -> pd.DataFrame:
    """``n`` interactions of the fixture's HCPs and actions at a few times (date-only and
    with offsets), in random order: many rows share an HCP and a time with others."""
    rng = np.random.default_rng(11)
    times = list(_SHUFFLED_TIMES)
    action = rng.choice(["A1", "A2", "A3", ""], n)
    return pd.DataFrame(
        {
            "hcp_id": rng.choice(tables["hcps"]["hcp_id"].to_numpy(), n),
            "timestamp": rng.choice(times, n),
            "action_id": action,
            "engaged": np.where(action == "", "", rng.choice(["0", "1"], n)),
        }
    )


def test_rows_sharing_an_hcp_and_a_time_keep_their_file_order(
    tables: Tables, write_tables: WriteTables
) -> None:
    """Sorted by (hcp_id, timestamp) as pandas' stable sort orders them: rows of one HCP
    at one time (2024-03-01 and 02:00+02:00 are one) stay in the order of the file."""
    raw = _shuffled_history(tables, 2_000)
    raw["line"] = np.arange(len(raw))  # an extra column, kept as a feature
    tables["interactions"] = raw
    got = load_dataset(write_tables(tables)).interactions
    expected = raw.assign(timestamp=raw["timestamp"].map(_SHUFFLED_TIMES)).sort_values(
        ["hcp_id", "timestamp"], kind="stable"
    )
    assert got["line"].tolist() == expected["line"].tolist()
    assert got["timestamp"].tolist() == expected["timestamp"].tolist()


def test_repeated_rows_are_counted_wherever_the_file_holds_them(
    tables: Tables, write_tables: WriteTables
) -> None:
    """Repeats of a row far apart in the file, and rows of other HCPs at the same time,
    counted as a comparison of every row with every other counts them."""
    from nextbest.learning.readiness import interaction_notes

    tables["interactions"] = _shuffled_history(tables, 300)
    got = load_dataset(write_tables(tables)).interactions
    repeats = int(got.duplicated(keep="first").sum())
    assert repeats > 100
    said = [note for note in interaction_notes(got) if "repeat another row" in note]
    assert said and said[0].startswith(f"{repeats:,} interactions repeat another row exactly")


def test_interactions_are_normalised_and_sorted(dataset: Dataset) -> None:
    got = dataset.interactions
    assert list(got.columns) == [
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
    # File rows 2 and 5 share (H1, 2024-03-01): the stable sort keeps 2 before 5.
    assert got["hcp_id"].tolist() == ["H1", "H1", "H1", "H2", "H3"]
    assert got["action_id"].tolist() == ["A2", "A1", None, "A1", "A3"]
    assert got["timestamp"].tolist() == [
        pd.Timestamp("2024-03-01"),
        pd.Timestamp("2024-03-01"),
        pd.Timestamp("2024-03-01 10:00"),  # 12:00+02:00 in UTC
        pd.Timestamp("2024-03-02 09:00"),
        pd.Timestamp("2024-03-05"),
    ]
    assert got["channel"].tolist() == ["rep_visit", "email", None, "email", "email"]
    assert got["content_id"].tolist() == ["C2", "C1", None, "C1", "C3"]
    assert got["engaged"].tolist() == [0, 1, 0, 1, 0]
    assert got["holdout"].tolist() == [False, False, True, False, False]
    assert got["outcome"].iloc[:4].tolist() == [0.0, 3.0, 1.0, 2.5]
    assert got["outcome"].isna().tolist() == [False, False, False, False, True]
    assert got.index.equals(pd.RangeIndex(5))
    expected_dtypes: dict[str, Any] = {
        "hcp_id": object,
        "timestamp": "datetime64[ns]",
        "action_id": object,
        "channel": object,
        "content_id": object,
        "engaged": np.int8,
        "outcome": np.float64,
        "propensity": np.float64,
        "holdout": bool,
    }
    assert {c: got[c].dtype for c in expected_dtypes} == {
        c: np.dtype(t) for c, t in expected_dtypes.items()
    }
    assert dataset.has_outcome and dataset.has_holdout and dataset.has_propensity


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_engaged_written_as_a_boolean_reads_as_1_or_0(
    tables: Tables, write_tables: WriteTables, fmt: str
) -> None:
    # As holdout and consent columns take them; file row 3 is the no-touch row.
    expected = load_dataset(write_tables(tables, name="digits")).interactions
    tables["interactions"]["engaged"] = ["True", " no ", "F", "N", "y"]
    got = load_dataset(write_tables(tables, fmt=fmt)).interactions
    assert got["engaged"].tolist() == [0, 1, 0, 1, 0]
    assert got["engaged"].dtype == np.int8
    pd.testing.assert_frame_equal(got, expected)


def test_typed_parquet_equals_csv(tables: Tables, write_tables: WriteTables) -> None:
    """The same data written natively typed to Parquet loads to the same frames."""
    from_csv = load_dataset(write_tables(tables))
    typed = {name: frame.copy() for name, frame in tables.items()}
    typed["hcps"]["decile"] = typed["hcps"]["decile"].astype(int)
    typed["hcps"]["consent_email"] = [True, None, False]
    typed["catalog"]["approved_from"] = pd.to_datetime(
        ["2024-01-01", "2024-01-01", "2024-02-01T00:00:00Z"], utc=True, format="ISO8601"
    )
    typed["catalog"]["approved_until"] = pd.to_datetime(["", "2025-12-31", ""])
    typed["catalog"]["cost"] = [0.0, 150.5, None]
    inter = typed["interactions"]
    inter["timestamp"] = pd.to_datetime(
        [
            "2024-03-02T09:00:00+00:00",
            "2024-03-01T00:00:00+00:00",
            "2024-03-01T12:00:00+02:00",
            "2024-03-05T00:00:00+00:00",
            "2024-03-01T00:00:00+00:00",
        ],
        utc=True,
    ).tz_convert("Europe/Berlin")  # a tz-aware column in another zone
    inter["action_id"] = ["A1", "A2", None, "A3", "A1"]
    inter["engaged"] = pd.array([1, 0, None, 0, 1], dtype="Int8")
    inter["outcome"] = [2.5, 0.0, 1.0, None, 3.0]
    inter["propensity"] = [0.5, 0.25, 0.25, 0.5, 0.25]
    inter["holdout"] = [False, None, True, False, False]
    from_parquet = load_dataset(write_tables(typed, fmt="parquet", name="typed"))
    for name in ("hcps", "catalog", "interactions"):
        pd.testing.assert_frame_equal(getattr(from_parquet, name), getattr(from_csv, name))
    assert from_parquet.fingerprint() == from_csv.fingerprint()


@pytest.mark.parametrize(
    ("sep", "encoding", "line_end"),
    [(";", "utf-8", "\n"), ("\t", "utf-8", "\n"), (";", "utf-8-sig", "\r\n")],
    ids=["semicolon", "tab", "semicolon-bom-crlf"],
)
def test_spreadsheet_exports_load_as_the_comma_csv(
    tables: Tables,
    write_tables: WriteTables,
    tmp_path: Path,
    sep: str,
    encoding: str,
    line_end: str,
) -> None:
    """';' or tab as separator (spreadsheets in many locales), a byte-order mark and
    Windows line ends: the same data as the comma CSV."""
    expected = load_dataset(write_tables(tables))
    out = tmp_path / "export"
    out.mkdir()
    for name, frame in tables.items():
        # The catalog's specialties hold ';' lists: quoted in a ';' file.
        text = frame.to_csv(sep=sep, index=False, lineterminator=line_end)
        (out / f"{name}.csv").write_bytes(text.encode(encoding))
    got = load_dataset(out)
    for name in ("hcps", "catalog", "interactions"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(expected, name))


def test_a_row_with_too_few_fields_names_the_row(tmp_path: Path) -> None:
    # "...,2025-08-13,,0.616" for "...,2025-08-13,,,0.616": the cost would land in
    # specialties and the row load without a word. Quoted values, blank lines and a
    # value over two lines do not count as short; the blank line counts as a line.
    path = tmp_path / "catalog.csv"
    path.write_text(
        'action_id,specialties,cost\nA1,"gp,oncology",0.5\n\nA2,0.616\nA3,"two\nlines",1\nA4,,\n'
    )
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).splitlines()[1:] == [
        "  catalog.csv, row 3: 2 fields where the header has 3: every row needs every "
        "separator, empty cells included (the values after a missing one would land in "
        "the wrong columns)"
    ]
    path.write_text('action_id,specialties,cost\nA1,"gp,oncology",0.5\nA4,,\n')
    assert read_table(path)["cost"].tolist() == ["0.5", ""]


# A CSV file with one bad row, for each way a row is refused: (name, header, the row
# before it, the bad row, the row after it, how it is read, the column named, the
# message's start). "NOTE" is a free-text value, "@" a byte that is not UTF-8, "#" a
# NUL byte.
_HCPS = "hcp_id,specialty,territory_id,consent_email,note"
_CATALOG = "action_id,channel,content_id,topic,content_type,approved_from,cost,note"
ROW_KINDS = [
    pytest.param(
        "hcps.csv",
        _HCPS,
        "H1,oncology,T1,true,NOTE",
        "H2,oncology,T1,maybe,x",
        "H3,oncology,T1,no,x",
        load_hcps,
        "consent_email",
        "'maybe' is not a boolean",
        id="a-bad-value",
    ),
    pytest.param(
        "catalog.csv",
        _CATALOG,
        "A1,email,C1,dosing,medical,2024-01-01,0,NOTE",
        "A2,email,C2,dosing,medical,2024-01-01,cheap,x",
        "A3,email,C3,dosing,medical,2024-01-01,1,x",
        load_catalog,
        "cost",
        "'cheap' is not a number",
        id="a-wrong-type",
    ),
    pytest.param(
        "hcps.csv",
        _HCPS,
        "H1,oncology,T1,true,NOTE",
        'H2,"oncology,T1,true,x',
        "H3,oncology,T1,no,x",
        read_table,
        "specialty",
        "a double quote opens this value on line",
        id="an-unclosed-quote",
    ),
    pytest.param(
        "hcps.csv",
        _HCPS,
        "H1,oncology,T1,true,NOTE",
        "H2,K@ln,T1,true,x",
        "H3,oncology,T1,no,x",
        read_table,
        "specialty",
        "not UTF-8 text (byte 0xf6",
        id="a-byte-not-utf8",
    ),
    pytest.param(
        "hcps.csv",
        _HCPS,
        "H1,oncology,T1,true,NOTE",
        "H2,onc#ology,T1,true,x",
        "H3,oncology,T1,no,x",
        read_table,
        "specialty",
        "holds a NUL byte (0x00)",
        id="a-nul-byte",
    ),
    pytest.param(
        "hcps.csv",
        _HCPS,
        "H1,oncology,T1,true,NOTE",
        "H2,oncology,T1,true,x,y",
        "H3,oncology,T1,no,x",
        read_table,
        None,
        "6 fields where the header has 5",
        id="a-row-too-long",
    ),
    pytest.param(
        "hcps.csv",
        _HCPS,
        "H1,oncology,T1,true,NOTE",
        "H2,oncology,T1,x",
        "H3,oncology,T1,no,x",
        read_table,
        None,
        "4 fields where the header has 5",
        id="a-row-too-short",
    ),
    pytest.param(
        "hcps.csv",
        _HCPS,
        "H1,oncology,T1,true,NOTE",
        _HCPS,
        "H3,oncology,T1,no,x",
        read_table,
        None,
        "row",  # "row N repeats the header line": N checked below
        id="a-repeated-header",
    ),
]


@pytest.mark.parametrize(
    ("blank", "endings", "note"),
    [
        pytest.param(False, "\n", "a note", id="no-blank-line"),
        pytest.param(True, "\n", "a note", id="blank-lines"),
        pytest.param(True, "\r\n", '"a note\nover two lines"', id="blank-lines-crlf-bom-quoted"),
    ],
)
@pytest.mark.parametrize(
    ("name", "header", "before", "bad", "after", "read", "column", "message"), ROW_KINDS
)
def test_a_bad_row_is_named_by_the_line_an_editor_shows(
    tmp_path: Path,
    blank: bool,
    endings: str,
    note: str,
    name: str,
    header: str,
    before: str,
    bad: str,
    after: str,
    read: Callable[[Path], object],
    column: str | None,
    message: str,
) -> None:
    # Row N is on line N + 1, the header being line 1, as an editor and `sed -n` count:
    # blank lines (a spreadsheet's, or a CRLF file's), the byte-order mark and a
    # value's second line do not shift the rows below them.
    gap = [""] if blank else []
    lines = [header, *gap, before.replace("NOTE", note), *gap, *gap, bad, after]
    text = "\n".join(lines) + "\n"
    line = text[: text.index(f"\n{bad}\n")].count("\n") + 2
    data = text.replace("\n", endings).encode()
    if endings == "\r\n":
        data = b"\xef\xbb\xbf" + data
    path = tmp_path / name
    path.write_bytes(data.replace(b"@", b"\xf6").replace(b"#", b"\x00"))
    with pytest.raises(ContractError) as caught:
        read(path)
    problem = caught.value.problems[0]
    assert (problem.row, problem.column) == (line - 1, column), str(caught.value)
    assert problem.message.startswith(message), problem.message
    if not blank:
        assert line == 3  # the second data row, numbered as it always was
    if bad == header:
        assert problem.message.startswith(f"row {line - 1} repeats the header line")


def test_rows_named_in_messages_and_notes_count_blank_lines_too(tmp_path: Path) -> None:
    # The row a duplicate was first seen in, and the empty rows skipped at the end,
    # are numbered as the file's lines too. A double quote inside an unquoted value
    # (12" screen) is text, and opens no value over several lines.
    path = tmp_path / "hcps.csv"
    path.write_text(
        "hcp_id,specialty,territory_id,device\n"
        'H1,oncology,T1,12" screen\n'
        "\n"
        "H2,oncology,T1,tablet\n"
        "\n"
        "H1,oncology,T1,phone\n"
    )
    with pytest.raises(ContractError) as caught:
        load_hcps(path)
    assert caught.value.problems == [
        Problem("hcps.csv", 5, "hcp_id", "duplicate hcp_id 'H1' (first in row 1)")
    ]
    territories = tmp_path / "territories.csv"
    territories.write_bytes(b"hcp_id,territory_id\r\rH1,T1\r\rH1,T2\r")  # old Mac endings
    with pytest.raises(ContractError) as caught:
        load_territories(territories)
    assert [(p.row, p.message) for p in caught.value.problems] == [
        (4, "its HCP is in territory 'T2' here but in 'T1' in row 2: an HCP is in one territory")
    ]
    path.write_text("hcp_id,specialty,territory_id\nH1,oncology,T1\n\n,,\n\n,,\n")
    hcps = load_hcps(path)
    assert len(hcps) == 1 and hcps.attrs[EMPTY_ROWS] == (3, 5)


def test_how_a_csv_file_numbered_its_rows_is_not_taken_for_a_parquet_files(
    tmp_path: Path,
) -> None:
    # pandas writes a frame's attrs into a Parquet file, and pyarrow reads them back:
    # a file written from a CSV file's table would have its rows numbered as that
    # CSV file's lines (and empty rows noted that it never had).
    path = tmp_path / "hcps.csv"
    path.write_text("hcp_id,specialty,territory_id\n\n\nH1,oncology,T1\n,,\n")
    frame = read_table(path)
    assert set(frame.attrs) == {EMPTY_ROWS, ROW_NUMBERS} and row_numbers(frame)(0) == 3
    written = tmp_path / "hcps.parquet"
    frame.to_parquet(written)
    assert row_numbers(read_table(written))(0) == 1
    assert read_table(written).attrs == {}
    write_table(frame, tmp_path / "again.parquet")
    assert pq.read_schema(tmp_path / "again.parquet").metadata.get(b"PANDAS_ATTRS") is None


def test_text_read_from_a_csv_file_is_written_back_as_text(tmp_path: Path) -> None:
    # Repeated text is read dictionary-encoded (categoricals); a table written from
    # it (the rows `feedback --rejected` writes) holds the values, which a user reads
    # back with pandas as text to fix, not as categories that refuse a new value.
    path = tmp_path / "events.csv"
    path.write_text("event_id,event_type\n" + "".join(f"e{i},opend\n" for i in range(50)))
    frame = read_table(path)
    assert frame["event_type"].tolist() == ["opend"] * 50
    write_table(frame, tmp_path / "rejected.parquet")
    again = pd.read_parquet(tmp_path / "rejected.parquet")
    assert again["event_type"].dtype == object
    again.loc[0, "event_type"] = "opened"
    assert again["event_type"].tolist() == ["opened"] + ["opend"] * 49


def test_a_separator_inside_an_unquoted_value_names_the_row(tmp_path: Path) -> None:
    # A spreadsheet's semicolon export of "cardiology;oncology" without quotes.
    path = tmp_path / "catalog.csv"
    path.write_text("action_id;specialties\nA1;gp\nA2;cardiology;oncology\n")
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).endswith(
        "catalog.csv, row 2: 3 fields where the header has 2: a semicolon inside a value? "
        "put such values in double quotes"
    ), str(caught.value)


def test_a_separator_ending_data_lines_only_is_an_empty_field_dropped(tmp_path: Path) -> None:
    # Some exports end each data line with the separator but not the header: one
    # empty field beyond the header's, nothing lost by dropping it. pandas read it
    # with the first column as the index, each value one column off.
    path = tmp_path / "catalog.csv"
    ends = [";", ";", ";"]
    rows = ["A1;gp;0.5", "A2;;1", 'A3;"a;b";2']
    path.write_bytes(
        (
            "\ufeffaction_id;specialties;cost\r\n"
            + "".join(f"{row}{end}\r\n" for row, end in zip(rows, ends, strict=True))
        ).encode()
    )
    got = read_table(path)
    assert list(got.columns) == ["action_id", "specialties", "cost"]
    assert got.to_dict("list") == {
        "action_id": ["A1", "A2", "A3"],
        "specialties": ["gp", "", "a;b"],
        "cost": ["0.5", "1", "2"],
    }
    # A value in that extra field is not an empty one: refused, as before, and only
    # that row is named (the others only end with the separator).
    path.write_text("action_id;specialties;cost\nA1;gp;0.5;\nA2;gp;1;x\nA3;gp;2;\n")
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).splitlines()[1:] == [
        "  catalog.csv, row 2: 4 fields where the header has 3: a semicolon inside a value? "
        "put such values in double quotes"
    ]


def test_a_row_ending_with_a_separator_among_rows_that_fit_is_a_misfit(tmp_path: Path) -> None:
    # Among rows that fit the header, a row with one field more, the last empty, is
    # more likely a separator inside a value with the last value empty: dropping
    # the empty field shifted "Praxis Mueller, Berlin" into the next column, silently.
    path = tmp_path / "hcps.csv"
    path.write_text(
        "hcp_id,practice,notes\nH1,Praxis A,\nH2,Praxis Mueller, Berlin,\nH3,Praxis C,x\n"
    )
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).splitlines()[1:] == [
        "  hcps.csv, row 2: 4 fields where the header has 3: a comma inside a value? "
        "put such values in double quotes"
    ]


def test_every_row_with_a_wrong_number_of_fields_is_named_at_once(tmp_path: Path) -> None:
    # pandas stops at the first row with too many fields: the file would be fixed
    # and re-run once per bad row.
    path = tmp_path / "catalog.csv"
    path.write_text("action_id;specialties\nA1;gp\nA2;gp;x\nA3\nA4;ok\nA5;a;b;c\n")
    with pytest.raises(ContractError) as caught:
        read_table(path)
    lines = str(caught.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "catalog.csv, row 2",
        "catalog.csv, row 3",
        "catalog.csv, row 5",
    ]
    assert "3 fields where the header has 2: a semicolon inside" in lines[0]
    assert "1 field where the header has 2: every row needs every separator" in lines[1]
    assert "4 fields where the header has 2" in lines[2]
    # Beyond the first 20, the error says how many more.
    path.write_text("action_id;specialties\n" + "A;b;c\n" * 25)
    with pytest.raises(ContractError) as caught:
        read_table(path)
    said = str(caught.value)
    assert said.startswith("input data break the contract (25 problems)")
    assert "... and 5 more" in said


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_dataset_round_trips(
    dataset: Dataset, tmp_path: Path, fmt: Literal["csv", "parquet"]
) -> None:
    out = write_dataset(dataset, tmp_path / fmt, fmt=fmt)
    again = load_dataset(out)
    for name in ("hcps", "catalog", "interactions"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(dataset, name))
    assert again.fingerprint() == dataset.fingerprint()


def test_csv_round_trip_keeps_full_float_and_time_precision(
    dataset: Dataset, tmp_path: Path
) -> None:
    inter = dataset.interactions
    inter["propensity"] = [0.04180205746705827, 1 / 3, 0.1, 0.2, 1.0]
    inter["timestamp"] += pd.to_timedelta([0, 1, 500, 123_456_789, 0], unit="ns")
    again = load_dataset(write_dataset(dataset, tmp_path / "precise"))
    pd.testing.assert_frame_equal(again.interactions, inter)


def test_write_dataset_refuses_a_mixed_directory(dataset: Dataset, tmp_path: Path) -> None:
    write_dataset(dataset, tmp_path, fmt="csv")
    with pytest.raises(FileExistsError, match=r"hcps\.csv exists"):
        write_dataset(dataset, tmp_path, fmt="parquet")


def test_fingerprint_follows_the_data(dataset: Dataset) -> None:
    before = dataset.fingerprint()
    assert len(before) == 64
    assert dataset.fingerprint() == before
    dataset.interactions.loc[0, "outcome"] = 99.0
    assert dataset.fingerprint() != before


def test_optional_columns_may_be_absent(tables: Tables, write_tables: WriteTables) -> None:
    for column in ("approved_until", "specialties", "cost"):
        del tables["catalog"][column]
    for column in ("channel", "content_id", "outcome", "propensity", "holdout"):
        del tables["interactions"][column]
    tables["interactions"].loc[2, "engaged"] = "0"
    dataset = load_dataset(write_tables(tables))
    assert dataset.catalog["specialties"].tolist() == ["", "", ""]
    assert dataset.catalog["cost"].tolist() == [0.0, 0.0, 0.0]
    assert dataset.catalog["approved_until"].isna().all()  # open-ended, as documented
    assert dataset.catalog["approved_until"].dtype == "datetime64[ns]"
    got = dataset.interactions
    assert got["channel"].tolist() == ["rep_visit", "email", None, "email", "email"]
    assert got["outcome"].isna().all() and got["propensity"].isna().all()
    assert not got["holdout"].any()
    assert not (dataset.has_outcome or dataset.has_propensity or dataset.has_holdout)


def test_header_only_interactions_are_allowed(tables: Tables, write_tables: WriteTables) -> None:
    tables["interactions"] = tables["interactions"].iloc[0:0]
    dataset = load_dataset(write_tables(tables))
    assert len(dataset.interactions) == 0
    assert dataset.interactions["timestamp"].dtype == "datetime64[ns]"
    assert dataset.interactions["engaged"].dtype == np.int8
    assert not dataset.has_propensity


def test_extra_columns_are_kept_as_features(tables: Tables, write_tables: WriteTables) -> None:
    tables["interactions"]["campaign"] = ["q1", "q1", "", "q2", "q1"]
    tables["interactions"]["spend"] = ["1.5", "", "2", "0", "3"]
    tables["catalog"]["brand"] = ["X", "X", "Y"]
    dataset = load_dataset(write_tables(tables))
    assert dataset.interactions["campaign"].tolist() == ["q1", "q1", "", "q1", "q2"]
    assert dataset.interactions["spend"].dtype == np.float64
    assert dataset.catalog["brand"].tolist() == ["X", "X", "Y"]


def test_a_recommendation_id_is_read_as_an_id_and_an_empty_one_as_none(
    tables: Tables, write_tables: WriteTables
) -> None:
    """The id of the answer a touch was made under (a send the service recommended,
    exported back from the CRM): a column of the contract, retrain's way to learn that
    decision once, not an extra column kept unread."""
    tables["interactions"]["recommendation_id"] = ["4bda03e1", "", "", "00123", ""]
    dataset = load_dataset(write_tables(tables))
    got = dataset.interactions["recommendation_id"].tolist()
    assert got == [None, None, None, "4bda03e1", "00123"]  # rows sorted by HCP and time


def test_single_table_loaders(tables: Tables, write_tables: WriteTables) -> None:
    path = write_tables(tables)
    hcps = load_hcps(path / "hcps.csv")
    catalog = load_catalog(str(path / "catalog.csv"))
    interactions = load_interactions(path / "interactions.csv", hcps=hcps, catalog=catalog)
    pd.testing.assert_frame_equal(interactions, load_dataset(path).interactions)


def test_schema_helpers() -> None:
    assert consent_column("rep_visit") == "consent_rep_visit"
    assert is_rep_channel("rep_phone") and not is_rep_channel("email")
    assert allowed_specialties(" Oncology;cardiology ;;") == {"oncology", "cardiology"}
    assert allowed_specialties("") == frozenset()


def test_consent_columns_are_spelled_as_channels_and_must_name_one(tables, write_tables) -> None:
    # 'Consent_Email' was read as a plain feature: HCPs who opted out of e-mail got
    # e-mail picks. It is consent_email; and 'Rep Visit' in the catalog is rep_visit.
    tables["hcps"] = tables["hcps"].rename(
        columns={"consent_email": "Consent-Email", "consent_rep_visit": "consent_Rep-Visit"}
    )
    tables["catalog"].loc[1, "channel"] = "Rep Visit"
    tables["interactions"].loc[1, "channel"] = "rep visit"
    dataset = load_dataset(write_tables(tables))
    assert dataset.hcps["consent_email"].tolist() == [True, False, False]  # empty: not given
    assert dataset.hcps["consent_rep_visit"].tolist() == [True, False, True]
    assert "Consent-Email" not in dataset.hcps.columns
    assert set(dataset.catalog["channel"]) == {"email", "rep_visit"}
    assert "rep_visit" in set(dataset.interactions["channel"].dropna())


def test_a_consent_column_for_no_catalog_channel_is_refused(tables, write_tables) -> None:
    tables["hcps"] = tables["hcps"].rename(columns={"consent_email": "consent_e-mail"})
    tables["hcps"]["consent_fax"] = "no"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    said = str(caught.value)
    assert "column 'consent_e-mail': consent for channel 'e_mail'" in said, said
    assert "did you mean 'consent_email'?" in said
    assert "column 'consent_fax': consent for channel 'fax'" in said
    assert "catalog channels: email, rep_visit" in said


def test_a_consent_column_naming_one_word_of_a_channel_is_told_the_channel(
    tables, write_tables
) -> None:
    # Read as a request's channel is (near_channel): one word of a channel's name
    # ("remote" for remote_detailing) names it.
    tables["catalog"]["channel"] = tables["catalog"]["channel"].replace(
        "rep_visit", "remote_detailing"
    )
    tables["interactions"]["channel"] = tables["interactions"]["channel"].replace(
        "rep_visit", "remote_detailing"
    )
    tables["hcps"] = tables["hcps"].rename(columns={"consent_rep_visit": "consent_remote"})
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    said = " ".join(str(caught.value).split())
    assert (
        "column 'consent_remote': consent for channel 'remote', which the catalog does not "
        "have, would never apply; did you mean 'consent_remote_detailing'?" in said
    ), said


@pytest.mark.parametrize(
    "header",
    [
        "ConsentEmail",
        "email_consent",
        "Email Consent",
        "Consent:Email",
        "opt_in_email",
        "opted_out_email",
        "do_not_email",
        "email_unsubscribed",
    ],
)
def test_consent_written_otherwise_is_refused_not_read_as_an_attribute(
    tables, write_tables, header: str
) -> None:
    tables["hcps"] = tables["hcps"].rename(columns={"consent_email": header})
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, name=header.replace(" ", "_").replace(":", "_")))
    said = str(caught.value)
    assert (
        f"column '{header}': reads as consent for channel 'email' but would be read as a "
        "plain attribute: give it as consent_email"
    ) in said
    # One that says who opted out must have its values turned round.
    withdrawn = any(w in header.lower() for w in ("out", "not", "unsub"))
    assert ("with its values inverted" in said) is withdrawn


def test_columns_about_consent_that_are_not_consent_stay_attributes(tables, write_tables) -> None:
    for header in ("email_consent_date", "email_unsubscribe_rate", "email_open_rate"):
        tables["hcps"][header] = "1"
    hcps = load_dataset(write_tables(tables)).hcps
    assert {"email_consent_date", "email_unsubscribe_rate", "email_open_rate"} <= set(hcps.columns)


def test_a_send_lists_consent_written_otherwise_is_refused_not_left_out(
    tables, write_tables, tmp_path: Path
) -> None:
    from nextbest.contract import load_send_list

    catalog = load_dataset(write_tables(tables)).catalog
    send = tmp_path / "send.csv"
    send.write_text("hcp_id,Email Consent,segment\nH1,false,a\n")
    with pytest.raises(ContractError) as caught:
        load_send_list(send, catalog=catalog)
    assert "column 'Email Consent': reads as consent for channel 'email' but would be left out" in (
        str(caught.value)
    )
    send.write_text("hcp_id,consent_email,segment\nH1,false,a\n")
    assert load_send_list(send, catalog=catalog)["consent_email"].tolist() == [False]


def test_territory_spellings_of_one_territory_and_lists_in_a_cell_are_noted() -> None:
    hcps = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(9)],
            "territory_id": ["T001"] * 3 + ["T005"] * 2 + ["t005", "T 001", "T001;T002", "T002"],
        }
    )
    assert territory_notes(hcps) == [
        "hcps: territory_id spellings that differ only in case, spaces or punctuation: "
        "'T001' (3 HCPs) and 'T 001' (1 HCP); 'T005' (2 HCPs) and 't005' (1 HCP). "
        "Territories are matched exactly, so each is a territory of its own and a rep key "
        "names only one: write each territory one way",
        "hcps: territory_id 'T001;T002' holds a ';', ',' or '|': an HCP is in one "
        "territory, and such a value is a territory of its own",
    ]
    # Territories each written one way: nothing to say.
    assert territory_notes(hcps.iloc[[0, 3, 8]]) == []


def test_a_channel_without_a_consent_column_among_others_is_noted(tables, write_tables) -> None:
    # SMS added to the catalog after the consent columns were set up: everyone counts
    # as consenting to it, which the contract allows but the user should hear.
    sms = tables["catalog"].iloc[[0, 0]].assign(action_id=["A4", "A5"], channel=["SMS", "sms"])
    tables["catalog"] = pd.concat([tables["catalog"], sms], ignore_index=True)
    dataset = load_dataset(write_tables(tables))
    assert consent_notes(dataset.hcps, dataset.catalog) == [
        "hcps: no consent_sms column, so every HCP counts as consenting to sms (catalog "
        "actions A4, A5), while the file has consent columns for email, rep_visit: add "
        "consent_sms if sms needs consent"
    ]
    # Without any consent column the default is relied on plainly: nothing to say.
    unconsented = dataset.hcps.drop(columns=["consent_email", "consent_rep_visit"])
    assert consent_notes(unconsented, dataset.catalog) == []
    # One consent column is enough for the others to be noted.
    said = consent_notes(dataset.hcps.drop(columns=["consent_email"]), dataset.catalog)
    assert [note.split(",")[0] for note in said] == [
        "hcps: no consent_email column",
        "hcps: no consent_sms column",
    ]


def test_two_consent_columns_for_one_channel_are_refused(tables, write_tables) -> None:
    tables["hcps"]["Consent_Email"] = "yes"
    with pytest.raises(ContractError, match="a second consent column for the channel"):
        load_dataset(write_tables(tables))


def test_a_trailing_separator_and_a_header_in_capitals(tables, write_tables) -> None:
    # A spreadsheet's trailing comma: an empty column without a name, dropped (it
    # became a feature "Unnamed: 9" of empty strings).
    data = write_tables(tables)
    text = (data / "hcps.csv").read_text().splitlines()
    (data / "hcps.csv").write_text("\n".join(line + "," for line in text) + "\n")
    assert "Unnamed: 7" not in load_dataset(data).hcps.columns
    # A value in that column is no feature "Unnamed: 7": its row is named.
    lines = (data / "hcps.csv").read_text().splitlines()
    lines[2] += "stray"
    (data / "hcps.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError) as stray:
        load_dataset(data)
    said = str(stray.value)
    assert "hcps.csv, row 2: column 8 has no name in the header but holds 'stray'" in said
    # HCP_ID for hcp_id: the error says which column was meant.
    tables["hcps"] = tables["hcps"].rename(
        columns={"hcp_id": "HCP_ID", "territory_id": " Territory ID "}
    )
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, name="capitals"))
    for meant, there in (("hcp_id", "HCP_ID"), ("territory_id", "Territory ID")):
        assert (
            f"column '{meant}': missing required column (there is '{there}': column names are "
            f"lower-case, words joined by '_'; rename it to '{meant}')"
        ) in str(caught.value)


@pytest.mark.parametrize(
    ("table", "meant", "there"),
    [
        ("catalog", "specialties", "Specialties"),
        ("catalog", "approved_until", "APPROVED_UNTIL"),
        ("catalog", "approved_until", "Approved Until"),
        ("catalog", "approved_until", "approvedUntil"),
        ("catalog", "cost", "COST"),
        ("interactions", "outcome", "OUTCOME"),
        ("interactions", "propensity", "PROPENSITY"),
        ("interactions", "holdout", "HOLDOUT"),
        ("interactions", "channel", "CHANNEL"),
        ("interactions", "content_id", "CONTENT_ID"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_optional_column_written_otherwise_is_refused_naming_the_column_meant(
    tables: Tables, write_tables: WriteTables, table: str, meant: str, there: str, fmt: str
) -> None:
    # 'Specialties' was an extra column and every action open to every specialty:
    # promotional content for oncologists picked for cardiologists, without a word.
    tables[table] = tables[table].rename(columns={meant: there})
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, fmt=fmt))
    problems = [str(problem) for problem in caught.value.problems]
    assert problems == [
        f"{table}.{fmt}, column '{meant}': optional column written otherwise: it would be "
        f"read as an extra column and {meant} left at its default (there is '{there}': "
        f"column names are lower-case, words joined by '_'; rename it to '{meant}')"
    ]


def test_a_column_written_twice_in_two_spellings_is_refused(tables, write_tables) -> None:
    tables["catalog"]["Specialties"] = "cardiology"
    with pytest.raises(ContractError, match=r"column 'specialties': written twice, once as"):
        load_dataset(write_tables(tables))


def test_a_send_lists_specialty_written_otherwise_is_refused(
    tables, write_tables, tmp_path: Path
) -> None:
    from nextbest.contract import load_send_list

    catalog = load_dataset(write_tables(tables)).catalog
    path = tmp_path / "send.csv"
    path.write_text("hcp_id,Specialty\nH1,cardiology\n")
    with pytest.raises(ContractError, match=r"rename it to 'specialty'"):
        load_send_list(path, catalog=catalog)


def test_specialties_compare_whatever_their_case_spaces_or_hyphens() -> None:
    from nextbest.contract import allowed_specialties
    from nextbest.contract.schema import normalise_specialties, specialty_spelling

    assert specialty_spelling(" Primary Care ") == "primary_care"
    assert specialty_spelling("primary-care") == "primary_care"
    assert normalise_specialties("Primary Care; cardiology;primary_care") == (
        "cardiology;primary_care"
    )
    assert allowed_specialties("Primary  Care") == frozenset({"primary_care"})


def test_columns_that_name_or_reach_a_person_are_not_read(tables, write_tables) -> None:
    hcps = tables["hcps"]
    hcps["Full Name"] = [f"Dr. Person {i}" for i in range(len(hcps))]
    hcps["email_address"] = [f"p{i}@clinic.example" for i in range(len(hcps))]
    hcps["email_open_rate"] = "0.5"  # a feature, though it says "email"
    dataset = load_dataset(write_tables(tables))
    assert "Full Name" not in dataset.hcps.columns
    assert "email_address" not in dataset.hcps.columns
    assert "email_open_rate" in dataset.hcps.columns
    assert dataset.hcps.attrs["personal_columns"] == ["Full Name", "email_address"]


def test_columns_holding_personal_data_under_other_names_are_not_read(tables, write_tables) -> None:
    hcps = tables["hcps"]
    n = len(hcps)
    hcps["hcp_email"] = [f"p{i}@clinic.example" for i in range(n)]
    hcps["contact"] = [f"p{i}@clinic.example" for i in range(n)]
    hcps["mobile_number"] = [f"+1-555-01{i:04d}" for i in range(n)]
    hcps["physician_name"] = [f"Dr Alice{i} Smith" for i in range(n)]
    hcps["practice_name_size"] = ["small"] * n  # a word of name, but a category
    hcps["phone_calls_90d"] = [str(i) for i in range(n)]  # a count, not a number to call
    hcps_read = load_dataset(write_tables(tables)).hcps
    assert hcps_read.attrs["personal_columns"] == [
        "hcp_email",
        "contact",
        "mobile_number",
        "physician_name",
    ]
    assert {"practice_name_size", "phone_calls_90d"} <= set(hcps_read.columns)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_column_named_twice_is_refused_naming_both_places(tmp_path: Path, fmt: str) -> None:
    # pandas read the second as "decile.1", a feature nobody named, or took the first
    # of two hcp_id columns as the id; both silently.
    path = tmp_path / f"hcps.{fmt}"
    if fmt == "csv":
        path.write_text("hcp_id,decile,region,decile ,hcp_id\nH1,3,north,clinic,V1\n")
    else:
        pa_table = pa.table(
            [["H1"], ["3"], ["north"], ["clinic"], ["V1"]],
            names=["hcp_id", "decile", "region", "decile", "hcp_id"],
        )
        pq.write_table(pa_table, path)
    with pytest.raises(ContractError) as caught:
        read_table(path)
    said = str(caught.value)
    assert f"hcps.{fmt}, column 'hcp_id': appears 2 times in the header (columns 1 and 5)" in said
    assert "column 'decile': appears 2 times in the header (columns 2 and 4)" in said


def test_a_file_not_in_utf8_names_the_row_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "hcps.csv"
    path.write_bytes("hcp_id,city\nH1,Berlin\nH2,Köln\n".encode("latin-1"))
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).splitlines()[1:] == [
        "  hcps.csv, row 2, column 'city': not UTF-8 text (byte 0xf6, 'ö' in Latin-1 or "
        "Windows-1252?): save it as UTF-8 (in Excel: 'CSV UTF-8')"
    ]
    # Rows as the file's lines number them (H2 on line 5 is row 4, after a value over
    # two lines and a blank line), the column among ';'-separated ones, after a UTF-8
    # header.
    header = "\ufeffhcp_id;spécialité;territory_id\n".encode()
    path.write_bytes(header + 'H1;"two\nlines";T1\n\nH2;Pédiatrie;T2\n'.encode("cp1252"))
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert caught.value.problems == [
        Problem(
            "hcps.csv",
            4,
            "spécialité",
            "not UTF-8 text (byte 0xe9, 'é' in Latin-1 or Windows-1252?): save it as UTF-8 "
            "(in Excel: 'CSV UTF-8')",
        )
    ]
    path.write_bytes("hcp_id,spécialité\nH1,GP\n".encode("cp1252"))
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).splitlines()[1:] == [
        "  hcps.csv: the header's column 2 is not UTF-8 text (byte 0xe9, 'é' in Latin-1 or "
        "Windows-1252?): save it as UTF-8 (in Excel: 'CSV UTF-8')"
    ]
    # A Japanese export (Shift-JIS): no Western guess sends its user the wrong way.
    path.write_bytes("hcp_id,city\nH1,東京\n".encode("shift_jis"))
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).splitlines()[1:] == [
        "  hcps.csv, row 1, column 'city': not UTF-8 text (byte 0x93): save it as UTF-8 (in "
        "Excel: 'CSV UTF-8')"
    ]
    path.write_bytes("hcp_id\tcity\nH1\tKöln\n".encode("utf-16"))
    with pytest.raises(ContractError, match="the file is UTF-16 text, not UTF-8: save it"):
        read_table(path)


def test_a_table_under_a_near_file_name_is_pointed_at(tables, write_tables) -> None:
    import gzip

    data = write_tables(tables)
    csv_file = data / "interactions.csv"
    (data / "interactions.csv.gz").write_bytes(gzip.compress(csv_file.read_bytes()))
    csv_file.unlink()
    (data / "catalog.csv").rename(data / "Catalog.CSV")
    with pytest.raises(ContractError) as caught:
        load_dataset(data)
    said = " ".join(str(caught.value).split())
    assert "found interactions.csv.gz: decompress it" in said
    assert "found Catalog.CSV: rename it to catalog.csv or catalog.parquet (lower case)" in said


def test_a_comma_in_a_header_of_a_semicolon_file_does_not_make_it_comma_separated(
    tmp_path: Path,
) -> None:
    # Excel writes "Potential, EUR" unquoted; the comma made every row one field short.
    path = tmp_path / "hcps.csv"
    path.write_text('hcp_id;specialty;Potential, EUR\nH1;gp;1200\nH2;"a;b";900\n')
    got = read_table(path)
    assert got.to_dict("list") == {
        "hcp_id": ["H1", "H2"],
        "specialty": ["gp", "a;b"],
        "Potential, EUR": ["1200", "900"],
    }
    # A comma file whose values hold semicolons stays a comma file.
    path.write_text("hcp_id,note\nH1,a;b\nH2,c\n")
    assert read_table(path)["note"].tolist() == ["a;b", "c"]


def test_a_parquet_directory_of_parts_loads_as_its_table(
    tables: Tables, write_tables: WriteTables
) -> None:
    """Spark, Dask and pyarrow write a table as a directory of parts (with _SUCCESS or
    .crc files beside them): ``interactions.parquet/`` loads as the single file would."""
    whole = load_dataset(write_tables(tables, fmt="parquet", name="whole"))
    parted = write_tables(tables, fmt="parquet", name="parted")
    single = parted / "interactions.parquet"
    frame = pd.read_parquet(single)
    single.unlink()
    single.mkdir()
    for i, (a, b) in enumerate([(0, 2), (2, 3), (3, 5)]):
        frame.iloc[a:b].to_parquet(single / f"part-{i:05d}.parquet", index=False)
    (single / "_SUCCESS").touch()
    (single / ".part-00000.parquet.crc").write_bytes(b"\x00")
    loaded = load_dataset(parted)
    pd.testing.assert_frame_equal(loaded.interactions, whole.interactions)
    assert loaded.fingerprint() == whole.fingerprint()

    # A part written with another type is named, with the column.
    assert frame["outcome"].dtype == object  # the raw tables are text
    bad = frame.iloc[3:5].assign(outcome=[1.0, 2.0])
    bad.to_parquet(single / "part-00002.parquet", index=False)
    with pytest.raises(ContractError, match=r"part part-00002.parquet differs.*outcome \(double"):
        load_dataset(parted)
    # A column only some parts have (added later): named, with what to do.
    frame.iloc[3:5].drop(columns="outcome").to_parquet(single / "part-00002.parquet", index=False)
    with pytest.raises(ContractError, match=r"outcome \(only in part-00000.parquet\): write every"):
        load_dataset(parted)
    for part in single.iterdir():
        part.unlink()
    with pytest.raises(ContractError, match="holds no Parquet file"):
        load_dataset(parted)
    # A directory of parts without the extension is pointed at the name that works.
    single.rmdir()
    (parted / "interactions").mkdir()
    found = r"found a directory interactions/.*interactions\.parquet"
    with pytest.raises(ContractError, match=found):
        load_dataset(parted)


@pytest.mark.parametrize("parted", [False, True], ids=["file", "parts"])
def test_an_index_pandas_saved_in_parquet_is_no_column(
    tables: Tables, write_tables: WriteTables, parted: bool
) -> None:
    """``df.to_parquet(path)`` without ``index=False`` saves the index: an unnamed one
    as ``__index_level_0__``, a named one under its name. Neither is a column of the
    table (in parts they were read as one: a feature of every HCP, an unknown column
    of a feedback file); an index named for a column of the contract (``hcp_id`` set
    as the index) is that column, in a file as in parts."""
    whole = load_dataset(write_tables(tables, fmt="parquet", name="whole"))
    saved = write_tables(tables, fmt="parquet", name="saved")
    writes = {
        "hcps": tables["hcps"].set_index("hcp_id"),
        "catalog": tables["catalog"].set_axis([10, 11, 12]),  # __index_level_0__
        "interactions": tables["interactions"].set_axis([5, 6, 7, 8, 9]).rename_axis("row"),
    }
    for name, frame in writes.items():
        path = saved / f"{name}.parquet"
        path.unlink()
        if parted:
            path.mkdir()
            frame.iloc[:2].to_parquet(path / "part-0.parquet")
            frame.iloc[2:].to_parquet(path / "part-1.parquet")
        else:
            frame.to_parquet(path)
    catalog = saved / "catalog.parquet"
    assert (
        "__index_level_0__"
        in pq.read_schema(catalog / "part-0.parquet" if parted else catalog).names
    )
    loaded = load_dataset(saved)
    for name in ("hcps", "catalog", "interactions"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(whole, name), obj=name)

    from nextbest.service.feedback_file import read_events

    events = pd.DataFrame({"event_id": ["e1", "e2"], "event_type": "opened", "hcp_id": "H1"})
    feed = saved / "feed.parquet"
    if parted:
        feed.mkdir()
        events.set_axis([3, 4]).to_parquet(feed / "part-0.parquet")
    else:
        events.set_axis([3, 4]).rename_axis("n").to_parquet(feed)
    assert read_events(feed).columns.tolist() == ["event_id", "event_type", "hcp_id"]


@pytest.mark.parametrize("parted", [False, True], ids=["file", "parts"])
@pytest.mark.parametrize(
    "index", [["region"], ["consent_email"], ["region", "decile"]], ids=["one", "consent", "two"]
)
def test_an_hcps_attribute_saved_as_the_index_is_refused_naming_it(
    tables: Tables, write_tables: WriteTables, parted: bool, index: list[str]
) -> None:
    """``hcps.set_index("region").to_parquet(path)``: the index is no column, so
    region was dropped from every HCP without a word (a consent column so dropped
    gave every HCP the default, consent). Every other column of hcps is read, and an
    index cannot be told from row numbers saved under a name, so it is refused,
    naming it and how to write it."""
    saved = write_tables(tables, fmt="parquet", name="saved")
    path = saved / "hcps.parquet"
    path.unlink()
    frame = tables["hcps"].set_index(index)
    if parted:
        path.mkdir()
        frame.iloc[:2].to_parquet(path / "part-0.parquet")
        frame.iloc[2:].to_parquet(path / "part-1.parquet")
    else:
        frame.to_parquet(path)
    with pytest.raises(ContractError) as refused:
        load_dataset(saved)
    said = [(p.file, p.row, p.column, p.message) for p in refused.value.problems]
    assert said == [
        (
            "hcps.parquet",
            None,
            name,
            "is the table's index as pandas saved it (to_parquet without index=False), "
            "not a column, and would be lost: write it as a column, "
            "df.reset_index().to_parquet(path, index=False)",
        )
        for name in index
    ]


def test_an_hcps_file_indexed_by_a_contract_column_or_by_row_numbers_loads(
    tables: Tables, write_tables: WriteTables
) -> None:
    """The index refused above is one that may hold an attribute: a contract column
    (``specialty``) set as the index is read as it, and pandas' row numbers, named
    or not, hold no value of the table; nor is one kept as a column too lost."""
    whole = load_dataset(write_tables(tables, fmt="parquet", name="whole"))
    saved = write_tables(tables, fmt="parquet", name="saved")
    for frame in (
        tables["hcps"].set_index("specialty"),
        tables["hcps"].rename_axis("row"),
        tables["hcps"].set_index("region", drop=False),
    ):
        frame.to_parquet(saved / "hcps.parquet")
        hcps = load_dataset(saved).hcps
        pd.testing.assert_frame_equal(hcps[whole.hcps.columns], whole.hcps)
        assert sorted(hcps.columns) == sorted(whole.hcps.columns)


@pytest.mark.parametrize("parted", [False, True], ids=["file", "parts"])
def test_a_send_lists_column_saved_as_the_index_is_read_as_the_column(
    tables: Tables, write_tables: WriteTables, tmp_path: Path, parted: bool
) -> None:
    """``send.set_index("consent_email").to_parquet(path)``: the index is no column,
    so the list's consent was dropped without a word and its HCPs took the model's
    (who opted out on the list was e-mailed). A send list reads only ``hcp_id``,
    ``specialty`` and consent columns, each by its header, so an index saved under
    a name is read as the column it was: consent read, a header the list refuses
    refused, any other left out as its columns are."""
    from nextbest.contract import load_send_list

    catalog = load_dataset(write_tables(tables)).catalog
    path = tmp_path / "send.parquet"

    def saved(frame: pd.DataFrame) -> Path:
        if parted:
            path.mkdir(exist_ok=True)
            for part in path.iterdir():
                part.unlink()
            frame.iloc[:1].to_parquet(path / "part-0.parquet")
            frame.iloc[1:].to_parquet(path / "part-1.parquet")
        else:
            frame.to_parquet(path)
        return path

    send = pd.DataFrame(
        {
            "hcp_id": ["H1", "H2", "H3"],
            "consent_email": [False, True, False],
            "region": ["n", "s", "n"],
        }
    )
    for index in (["consent_email"], ["hcp_id", "consent_email"], ["region", "consent_email"]):
        read = load_send_list(saved(send.set_index(index)), catalog=catalog)
        assert read.columns.tolist() == ["hcp_id", "consent_email"], index
        assert read["hcp_id"].tolist() == ["H1", "H2", "H3"], index
        assert read["consent_email"].tolist() == [False, True, False], index
    # As a column, 'Email Consent' is refused, naming the header to use: so as the index.
    other = send.rename(columns={"consent_email": "Email Consent"}).set_index("Email Consent")
    with pytest.raises(ContractError, match="column 'Email Consent': reads as consent for"):
        load_send_list(saved(other), catalog=catalog)
    # Row numbers pandas saved, named or not, are no column of the list.
    for frame in (send.rename_axis("row"), send.set_axis([7, 8, 9]).rename_axis("row")):
        read = load_send_list(saved(frame), catalog=catalog)
        assert read.columns.tolist() == ["hcp_id", "consent_email"]


@pytest.mark.parametrize("parted", [False, True], ids=["file", "parts"])
def test_a_catalog_column_saved_as_the_index_is_read_as_the_column(
    tables: Tables, write_tables: WriteTables, parted: bool
) -> None:
    """``catalog.set_index("priority").to_parquet(path)``: the index is no column, so
    priority was dropped without a word (as a column, validate and train name it
    among the catalog's columns not read), and a contract column spelled otherwise
    (``Specialties``) was dropped too, leaving content for one specialty open to
    every specialty where, as a column, it is refused. The catalog reads its columns
    by their header, so an index saved under a name is read as the column it was."""
    from nextbest.contract.notes import unread_column_notes

    whole = load_dataset(write_tables(tables, fmt="parquet", name="whole"))
    saved = write_tables(tables, fmt="parquet", name="saved")
    path = saved / "catalog.parquet"

    def save(frame: pd.DataFrame) -> None:
        if path.is_file():
            path.unlink()
        if parted:  # the same two parts rewritten
            path.mkdir(exist_ok=True)
            frame.iloc[:2].to_parquet(path / "part-0.parquet")
            frame.iloc[2:].to_parquet(path / "part-1.parquet")
        else:
            frame.to_parquet(path)

    catalog = tables["catalog"].assign(priority=["1", "2", "3"])
    for index in (["priority"], ["action_id", "priority"]):
        save(catalog.set_index(index))
        loaded = load_dataset(saved)
        pd.testing.assert_frame_equal(loaded.catalog[whole.catalog.columns], whole.catalog)
        assert loaded.catalog["priority"].tolist() == [1, 2, 3], index
        assert unread_column_notes(loaded) == [
            "catalog column not read: priority; only the data contract's columns of "
            "catalog are used (docs/data.md)"
        ]
    # As a column, 'Specialties' is refused, naming the column meant: so as the index.
    save(tables["catalog"].rename(columns={"specialties": "Specialties"}).set_index("Specialties"))
    with pytest.raises(ContractError) as refused:
        load_dataset(saved)
    said = [(p.file, p.column, p.message) for p in refused.value.problems]
    assert said == [
        (
            "catalog.parquet",
            "specialties",
            "optional column written otherwise: it would be read as an extra column and "
            "specialties left at its default (there is 'Specialties': column names are "
            "lower-case, words joined by '_'; rename it to 'specialties')",
        )
    ]


@pytest.mark.parametrize("parted", [False, True], ids=["file", "parts"])
@pytest.mark.parametrize(
    ("index", "column", "said"),
    [
        (
            "Outcome",
            "outcome",
            "optional column written otherwise: it would be read as an extra column and "
            "outcome left at its default",
        ),
        ("HCP ID", "hcp_id", "missing required column"),
        (
            "recommendationId",
            "recommendation_id",
            "optional column written otherwise: it would be read as an extra column and "
            "recommendation_id left at its default",
        ),
    ],
    ids=["optional", "required", "recommendation_id"],
)
def test_an_interactions_column_spelled_otherwise_and_saved_as_the_index_is_refused(
    tables: Tables,
    write_tables: WriteTables,
    parted: bool,
    index: str,
    column: str,
    said: str,
) -> None:
    """``interactions.set_index("Outcome").to_parquet(path)``: an index under a name
    the contract does not read is left out, as such a column is not read, but this
    one spells a contract column otherwise, and was dropped with every outcome
    (the uplift model then fell back without a word) where, as a column, it is
    refused naming the column meant. So it is as the index too."""
    saved = write_tables(tables, fmt="parquet", name="saved")
    path = saved / "interactions.parquet"
    path.unlink()
    history = tables["interactions"].assign(recommendation_id=["r1", "r2", "", "r4", "r5"])
    frame = history.rename(columns={column: index}).set_index(index)
    if parted:
        path.mkdir()
        frame.iloc[:2].to_parquet(path / "part-0.parquet")
        frame.iloc[2:].to_parquet(path / "part-1.parquet")
    else:
        frame.to_parquet(path)
    with pytest.raises(ContractError) as refused:
        load_dataset(saved)
    problems = [(p.file, p.column, p.message) for p in refused.value.problems]
    assert problems == [
        (
            "interactions.parquet",
            column,
            f"{said} (there is '{index}': column names are lower-case, words joined by "
            f"'_'; rename it to '{column}')",
        )
    ], problems


@pytest.mark.parametrize("parted", [False, True], ids=["file", "parts"])
@pytest.mark.parametrize(
    "index",
    [["hcp_id"], ["timestamp"], ["recommendation_id"], ["hcp_id", "timestamp"]],
    ids=["hcp_id", "timestamp", "recommendation_id", "two"],
)
def test_an_interactions_column_saved_as_the_index_is_read_as_the_column(
    tables: Tables, write_tables: WriteTables, parted: bool, index: list[str]
) -> None:
    """``interactions.set_index("hcp_id").to_parquet(path)`` (a history exported from
    a frame indexed by HCP, by time, or by the recommendation a touch was made under):
    the index is read as the contract column it is named for, so the history loads as
    it does with the column written as one, typed times included; row numbers pandas
    saved, named or not, are no column."""
    history = tables["interactions"].assign(recommendation_id=["r1", "r2", "", "r4", "r5"])
    history["timestamp"] = pd.to_datetime(history["timestamp"], utc=True, format="ISO8601")
    whole = write_tables({**tables, "interactions": history}, fmt="parquet", name="whole")
    expected = load_dataset(whole).interactions
    assert expected["recommendation_id"].tolist() == ["r2", "r5", None, "r1", "r4"]
    saved = write_tables(tables, fmt="parquet", name="saved")
    path = saved / "interactions.parquet"

    def save(frame: pd.DataFrame) -> None:
        if path.is_file():
            path.unlink()
        if parted:
            path.mkdir(exist_ok=True)
            frame.iloc[:2].to_parquet(path / "part-0.parquet")
            frame.iloc[2:].to_parquet(path / "part-1.parquet")
        else:
            frame.to_parquet(path)

    for frame in (
        history.set_index(index),
        history.set_axis([5, 6, 7, 8, 9]),  # unnamed: __index_level_0__
        history.rename_axis("row"),  # a named range
    ):
        save(frame)
        loaded = load_dataset(saved).interactions
        pd.testing.assert_frame_equal(loaded, expected, obj=str(frame.index.names))


def test_text_different_for_nearly_every_hcp_is_not_read() -> None:
    """A name under a neutral header ('doctor') was a feature, and the model stored
    every name; a per-HCP code teaches nothing that carries to another HCP either."""
    from nextbest.contract.validate import validate_hcps

    n = 120
    raw = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(n)],
            "specialty": ["cardiology"] * n,
            "territory_id": ["T1"] * n,
            "doctor": [f"Dr Alice{i} Smith" for i in range(n)],
            "practice": [f"clinic {i % 12}" for i in range(n)],  # shared: a trait
            "panel_size": [str(100 + i) for i in range(n)],  # numbers: a feature
        }
    )
    hcps = validate_hcps(raw, file="hcps.csv")
    assert hcps.attrs["identifier_columns"] == ["doctor"]
    assert "doctor" not in hcps.columns
    assert {"practice", "panel_size"} <= set(hcps.columns)
    from types import SimpleNamespace

    from nextbest.contract.notes import personal_notes  # what validate and train say

    said = " ".join(personal_notes(SimpleNamespace(hcps=hcps)))
    assert "hcps columns doctor identify an HCP" in said
    # Too few HCPs to tell a unique column from a coincidence: read as before.
    few = validate_hcps(raw.head(20), file="hcps.csv")
    assert "doctor" in few.columns and few.attrs["identifier_columns"] == []


def test_text_unique_per_hcp_is_not_read_whatever_its_shape(tmp_path: Path) -> None:
    """Birth dates (2.7.1951), IP addresses and positions written as text were taken
    for numbers by their digits and dots, skipped the uniqueness check, and became
    features a reason quoted; a surname under a header in another language is caught
    by its values alone."""
    from types import SimpleNamespace

    from nextbest.contract.notes import personal_notes
    from nextbest.contract.validate import validate_hcps

    n = 120
    rng = np.random.default_rng(3)
    raw = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(n)],
            "specialty": ["cardiology"] * n,
            "territory_id": ["T1"] * n,
            "doctor": [f"Dr. Anna{i} Fischer" for i in range(n)],
            "nachname": [f"Fischer{i}" for i in range(n)],
            "birthday": [f"{1 + i % 28}.{1 + i % 12}.{1940 + i % 50}" for i in range(n)],
            "ip": [f"10.0.{i // 100}.{i % 100}" for i in range(n)],
            "geo": [f"{v:.4f},{w:.4f}" for v, w in rng.uniform(47, 55, (n, 2))],
            "kundennummer": [f"{i:06d}" for i in range(n)],  # a code with leading zeros
            "gender": [("f", "m")[i % 2] for i in range(n)],  # a trait: few values
            "region": [f"region {i % 9}" for i in range(n)],
            # Numbers, nearly unique: features, however they are written.
            "patients_per_week": [f"{v:.1f}" for v in rng.uniform(20, 200, n)],
            "years_in_practice": [str(1 + i % 40) for i in range(n)],
            "revenue": [f"{v:,.0f}" for v in rng.uniform(1e6, 9e6, n)],  # "4,512,345"
            "score": [f"{v:.3f}".replace(".", ",") for v in rng.uniform(0, 1, n)],  # "0,512"
        }
    )
    unique = ["doctor", "nachname", "birthday", "ip", "geo", "kundennummer"]
    kept = ["gender", "region", "patients_per_week", "years_in_practice", "revenue", "score"]
    for read in (
        validate_hcps(raw, file="hcps.csv"),
        validate_hcps(  # typed columns: numbers written as numbers
            raw.assign(
                patients_per_week=raw["patients_per_week"].astype(float) * 1e-7,
                years_in_practice=raw["years_in_practice"].astype(int),
            ),
            file="hcps.parquet",
        ),
    ):
        assert read.attrs["identifier_columns"] == unique
        assert not set(unique) & set(read.columns)
        assert set(kept) <= set(read.columns)
    said = " ".join(personal_notes(SimpleNamespace(hcps=read)))
    assert f"hcps columns {', '.join(unique)} identify an HCP" in said, said
    assert "a name, a date, an address or a code" in said, said


def _grouped(value: float, mark: str, decimal: str = ".", places: int = 0) -> str:
    """``value`` as a spreadsheet in some locale writes it: ``mark`` between thousands,
    ``decimal`` before ``places`` decimals (4512345.6, '.', ',', 1 -> '4.512.345,6')."""
    whole, _, fraction = f"{value:,.{places}f}".partition(".")
    return whole.replace(",", mark) + (decimal + fraction if places else "")


def _indian(value: float, places: int = 0) -> str:
    """``value`` as India writes it: commas between twos before the last three digits
    (4512345.6, 1 -> '45,12,345.6')."""
    whole, _, fraction = f"{value:.{places}f}".partition(".")
    head, last = whole[:-3], whole[-3:]
    pairs = [head[max(0, end - 2) : end] for end in range(len(head), 0, -2)][::-1]
    return ",".join([*pairs, last]) + (f".{fraction}" if places else "")


_AMOUNTS = [1_000_000 + 48_611.37 * i for i in range(60)]  # distinct, 1,000,000 up


@pytest.mark.parametrize(
    ("values", "identifies"),
    [
        pytest.param([_grouped(v, ".") for v in _AMOUNTS], False, id="dot-thousands"),
        pytest.param(
            [_grouped(v / 100, ".", ",", 2) for v in _AMOUNTS],
            False,
            id="dot-thousands-comma-decimals",
        ),
        pytest.param([_grouped(v, " ") for v in _AMOUNTS], False, id="space-thousands"),
        pytest.param(
            [_grouped(v, "\u202f") for v in _AMOUNTS], False, id="narrow-no-break-space-thousands"
        ),
        pytest.param(
            [_grouped(v, "\u00a0", ",", 1) for v in _AMOUNTS],
            False,
            id="no-break-space-thousands-comma-decimals",
        ),
        pytest.param([_grouped(v, ",") for v in _AMOUNTS], False, id="comma-thousands"),
        pytest.param([_grouped(v, "'") for v in _AMOUNTS], False, id="swiss-apostrophe-thousands"),
        pytest.param(
            [_grouped(v, "\u2019", ".", 2) for v in _AMOUNTS],
            False,
            id="swiss-right-quote-thousands-dot-decimals",
        ),
        pytest.param([_indian(v) for v in _AMOUNTS], False, id="indian-lakhs"),
        pytest.param(
            [_indian(v * 100, places=2) for v in _AMOUNTS], False, id="indian-crores-decimals"
        ),
        pytest.param(
            [_grouped(v, ",", ".", 2) for v in _AMOUNTS], False, id="comma-thousands-dot-decimals"
        ),
        pytest.param(  # 999, 1.234 (a decimal or thousands: a number either way), 4.512.345
            [_grouped(10 ** (2 + i % 6) + i, ".") for i in range(60)],
            False,
            id="dot-thousands-mixed",
        ),
        pytest.param(
            [f"{1 + i % 28}.{1 + i % 12}.{1940 + i}" for i in range(60)], True, id="birth-dates"
        ),
        pytest.param(
            [f"{1 + i % 28:02d}.{1 + i % 12:02d}.{1940 + i}" for i in range(60)],
            True,
            id="zero-padded-birth-dates",
        ),
        pytest.param([f"10.0.{i // 10}.{i % 10 + 1}" for i in range(60)], True, id="ip-addresses"),
        pytest.param(
            [f"192.168.{100 + i}.{200 + i % 50}" for i in range(60)],
            True,
            id="ip-three-digit-groups",
        ),
        pytest.param(
            [f"{52 + i / 997:.4f},{13 + i / 991:.4f}" for i in range(60)], True, id="positions"
        ),
        pytest.param(
            [f"{52 + i / 97:.3f},{13 + i / 91:.3f}" for i in range(60)],
            True,
            id="positions-3-places",
        ),
        pytest.param([f"{i:06d}" for i in range(60)], True, id="zero-padded-codes"),
        pytest.param(
            [f"+49 301 {100 + i} {(7 * i) % 1000:03d}" for i in range(60)], True, id="phone-numbers"
        ),
        pytest.param(
            [f"{1 + i}.{i % 100:02d}.{i:03d}" for i in range(60)], True, id="groups-of-two-digits"
        ),
    ],
)
def test_numbers_with_thousands_are_no_identifier_but_dates_addresses_codes_are(
    values: list[str], identifies: bool
) -> None:
    """Text different for nearly every HCP identifies one, unless it is numbers written
    as some locale writes them: an amount column from a German or French export
    ('4.512.345', '1.234,56', '1 234 567') was dropped as a name, date or code."""
    from nextbest.contract.validate import validate_hcps

    n = len(values)
    assert len(set(values)) == n
    raw = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(n)],
            "specialty": ["cardiology"] * n,
            "territory_id": ["T1"] * n,
            "umsatz": values,
        }
    )
    hcps = validate_hcps(raw, file="hcps.csv")
    assert hcps.attrs["identifier_columns"] == (["umsatz"] if identifies else [])
    assert ("umsatz" in hcps.columns) is not identifies


def _dotted(value: int) -> str:
    """``value`` as a German spreadsheet writes it: 1234 -> '1.234', 980 -> '980'."""
    return f"{value:,}".replace(",", ".")


# Patients per month, 45 to 12,345, as a German export writes them.
_PATIENTS = [1234, 2500, 980, 12345, 45, 3100, 7002, 610, 1999, 0, 15000, 4321]


@pytest.mark.parametrize(
    ("values", "said"),
    [
        pytest.param(
            [_dotted(v) for v in _PATIENTS], ["1.234", "2.500", "980"], id="dotted-thousands"
        ),
        pytest.param(
            [_dotted(-v if v in (2500, 610) else v) for v in _PATIENTS],
            ["1.234", "-2.500", "980"],
            id="negative-dotted-thousands",
        ),
        pytest.param([f"0.{125 + i}" for i in range(12)], None, id="rates"),
        pytest.param(
            [f"0.{125 + i}" if i % 3 else str(i % 2) for i in range(12)],
            None,
            id="rates-with-whole-ones",
        ),
        pytest.param([f"{12 + i}.50" for i in range(12)], None, id="prices"),
        pytest.param([f"{12 + i}.5" if i % 2 else str(12 + i) for i in range(12)], None, id="1.5"),
        pytest.param(
            ["1.234", "2.345", "3.456", "4.567", "5.678", "2.5", "980"],
            None,
            id="mixed-precision",
        ),
        pytest.param(  # 1234 and 1.234 in one column: not what one spreadsheet writes
            [*[_dotted(v) for v in _PATIENTS], "1234"], None, id="a-thousand-without-a-dot"
        ),
        pytest.param([*[_dotted(v) for v in _PATIENTS], "0.500"], None, id="a-decimal-below-one"),
        pytest.param(  # a fixed three decimals: whole numbers written '980.000'
            [f"{v / 1000:.3f}" for v in _PATIENTS], None, id="three-decimals-fixed"
        ),
        pytest.param(  # a decimal or a thousand each: nothing says which
            [_dotted(v) for v in _PATIENTS if v >= 1000], None, id="dotted-values-only"
        ),
        pytest.param(
            ["1.234", "2.500", "12.345", "3.100", "980", "45"], None, id="too-few-dotted-values"
        ),
    ],
)
def test_decimals_that_look_like_thousands_written_with_a_dot_are_said(
    values: list[str], said: list[str] | None
) -> None:
    """'1.234', '2.500', '980' from a German spreadsheet read as 1.234, 2.5 and 980,
    every value over 999 a thousand times too small, and nothing said it."""
    from nextbest.contract.validate import DOTTED_THOUSANDS, validate_hcps

    n = len(values)
    raw = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(n)],
            "specialty": ["cardiology"] * n,
            "territory_id": ["T1"] * n,
            "patients": values,
        }
    )
    hcps = validate_hcps(raw, file="hcps.csv")
    assert hcps["patients"].dtype == "float64"  # read as decimals, as before
    assert hcps.attrs[DOTTED_THOUSANDS] == ({"patients": said} if said else {})


def test_dotted_thousands_are_said_of_text_only_not_of_typed_numbers(
    tables: Tables, write_tables: WriteTables
) -> None:
    """A Parquet column of floats 1.234, 2.5, 980 is what it is: no text says how it
    was written. Text is text in either format, and outcome and cost are read so too."""
    from nextbest.contract.validate import DOTTED_THOUSANDS

    more = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(4, 4 + len(_PATIENTS))],
            "specialty": "oncology",
            "territory_id": "T1",
        }
    )
    hcps = pd.concat([tables["hcps"], more], ignore_index=True).fillna("")
    patients = [_dotted(v) for v in (_PATIENTS * 2)[: len(hcps)]]
    tables["hcps"] = hcps.assign(patients=patients)
    tables["interactions"] = tables["interactions"].assign(
        outcome=["1.500", "2.250", "3", "12.000", "4.125"]
    )
    parquet = dict(tables, hcps=tables["hcps"].assign(patients=[float(p) for p in patients]))
    floats = load_dataset(write_tables(parquet, "parquet", name="floats"))
    assert floats.hcps["patients"].iloc[0] == 1.234
    assert floats.hcps.attrs[DOTTED_THOUSANDS] == {}
    assert floats.interactions.attrs[DOTTED_THOUSANDS] == {}  # a string column: too few
    for fmt in ("csv", "parquet"):
        text = load_dataset(write_tables(tables, fmt, name=f"text-{fmt}"))
        assert text.hcps.attrs[DOTTED_THOUSANDS] == {"patients": ["1.234", "2.500", "980"]}
        assert text.catalog.attrs[DOTTED_THOUSANDS] == {}  # costs 150.5 and 0
    tables["interactions"] = pd.concat([tables["interactions"]] * 2, ignore_index=True).assign(
        outcome=["1.500", "2.250", "3", "12.000", "4.125", "7.010", "0", "", "", ""]
    )
    tables["interactions"]["timestamp"] = [f"2024-03-{1 + i:02d}" for i in range(10)]
    dataset = load_dataset(write_tables(tables, name="outcome"))
    assert dataset.interactions.attrs[DOTTED_THOUSANDS] == {"outcome": ["1.500", "2.250", "3"]}


def test_codes_that_identify_a_person_or_licence_are_not_read(tmp_path: Path) -> None:
    """Ten-digit NPIs and integer licence numbers were read as numbers, features the
    model stored, with no note; prefixed with a letter the same codes were dropped."""
    from types import SimpleNamespace

    from nextbest.contract.notes import personal_notes
    from nextbest.contract.validate import validate_hcps

    n = 120
    rng = np.random.default_rng(7)
    raw = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(n)],
            "specialty": ["cardiology"] * n,
            # A territory per HCP: unique integers under an id header, but the
            # contract's own column, which rep plans need.
            "territory_id": [str(1000 + i) for i in range(n)],
            "npi": [str(1_234_567_890 + 7919 * i) for i in range(n)],
            "license_no": [str(40_000 + 13 * i) for i in range(n)],  # unique integers
            "customer_code": [str(700 + i) for i in range(n)],
            # Continuous and nearly unique: a feature, whatever its uniqueness.
            "patients_per_month": [f"{v:.2f}" for v in rng.uniform(50, 400, n)],
            "panel_size": [str(100 + i) for i in range(n)],  # integers, no id word
            "region_code": [str(i % 4) for i in range(n)],  # a code many HCPs share
            "npi_type": [str(1 + i % 2) for i in range(n)],  # a trait, not the number
        }
    )
    hcps = validate_hcps(raw, file="hcps.csv")
    assert hcps.attrs["identifier_columns"] == ["npi", "license_no", "customer_code"]
    assert not {"npi", "license_no", "customer_code"} & set(hcps.columns)
    assert {"patients_per_month", "panel_size", "region_code", "npi_type"} <= set(hcps.columns)
    assert hcps["territory_id"].tolist() == raw["territory_id"].tolist()
    said = " ".join(personal_notes(SimpleNamespace(hcps=hcps)))  # validate and train say so
    assert "hcps columns npi, license_no, customer_code identify an HCP" in said, said

    # A person's or licence's code is one by its header, in any spelling and however
    # few HCPs; a number ending in id is only by its values, from 50 HCPs on.
    few = raw.head(20).rename(
        columns={"npi": "NPI Number", "license_no": "State-License-No", "customer_code": "dea"}
    )
    few["gmcNumber"] = [str(7_000_000 + i) for i in range(20)]
    few["account_id"] = [str(i) for i in range(20)]
    read = validate_hcps(few, file="hcps.csv")
    assert read.attrs["identifier_columns"] == [
        "NPI Number",
        "State-License-No",
        "dea",
        "gmcNumber",
    ]
    assert "account_id" in read.columns

    # Typed (Parquet) integer columns, one with missing cells, are read the same way.
    typed = raw.assign(
        npi=raw["npi"].astype("int64"),
        license_no=pd.array([None, *raw["license_no"].astype(int)[1:]], dtype="Int64"),
        customer_code=raw["customer_code"].astype(float).where(raw.index > 0),
    )
    path = tmp_path / "hcps.parquet"
    typed.to_parquet(path)
    read = validate_hcps(read_table(path), file="hcps.parquet")
    assert read.attrs["identifier_columns"] == ["npi", "license_no", "customer_code"]


@pytest.mark.parametrize(
    ("cells", "utc"),
    [
        # A time without an offset after one with: it keeps its own reading (UTC).
        (["2026-11-30T23:30:00+09:00", "2026-11-30T23:30:00"], ["14:30", "23:30"]),
        # Berlin's change to summer time, then a UTC time of that night.
        (["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00"], ["00:30", "03:30"]),
        (["2026-07-03 12:16:28", "2026-07-03T21:00:00+09:00"], ["12:16:28", "12:00"]),
        (
            ["2026-11-30T08:00:00-05:00", "2026-11-30", "2026-11-30T08:00:00Z"],
            ["13:00", "00:00", "08:00"],
        ),
    ],
    ids=["offset-then-naive", "dst-night", "naive-then-offset", "negative-date-z"],
)
def test_times_with_and_without_an_offset_mix_in_one_column(
    cells: list[str], utc: list[str]
) -> None:
    from nextbest.contract.parse import timestamps

    parsed = timestamps(pd.Series(cells, dtype=object))
    day = [c[:10] for c in cells]
    assert parsed.values.tolist() == [
        pd.Timestamp(f"{d} {u}") for d, u in zip(day, utc, strict=True)
    ]
    assert not parsed.bad.any()


def test_a_file_mixing_offsets_and_naive_times_loads_each_as_written(
    tables: Tables, write_tables: WriteTables
) -> None:
    """A CRM export with the Tokyo team's rows stamped +09:00 and the rest in UTC
    without an offset: every row keeps its own time, whatever the row before it."""
    mixed = {name: frame.copy() for name, frame in tables.items()}
    stamps = ["2024-03-02T18:00:00+09:00", "2024-03-01 09:00:00", "2024-03-01T12:00:00+02:00",
              "2024-03-05 07:30:00", "2024-03-01T00:00:00Z"]  # fmt: skip
    mixed["interactions"]["timestamp"] = stamps
    got = load_dataset(write_tables(mixed, name="mixed")).interactions["timestamp"]
    assert sorted(got.tolist()) == sorted(
        pd.Timestamp(s).tz_localize(None)
        if "T" not in s
        else pd.Timestamp(s).tz_convert("UTC").tz_localize(None)
        for s in stamps
    )


def _interaction_part(n: int, **types: pa.DataType) -> pa.Table:
    """``n`` interactions (H1, action A1, engaged 0) from 2024-03-0{1..n}, each
    column stored as ``types`` says (the type an incremental write happened to give)."""
    values = {
        "hcp_id": ["H1"] * n,
        "timestamp": [pd.Timestamp(f"2024-03-0{i + 1}T08:00:00") for i in range(n)],
        "action_id": ["A1"] * n,
        "engaged": [0] * n,
        "outcome": [i + 1 for i in range(n)],
        "propensity": [0.5] * n,
    }
    columns = {}
    for name, cells in values.items():
        kind = types.get(name)
        if kind is not None and pa.types.is_null(kind):
            columns[name] = pa.nulls(n)
        elif kind is not None and pa.types.is_dictionary(kind):
            columns[name] = pa.array(cells).dictionary_encode()
        elif kind is not None and pa.types.is_timestamp(kind) and kind.tz:
            columns[name] = pa.array([t.tz_localize("UTC") for t in cells]).cast(kind)
        else:
            columns[name] = pa.array(cells, type=kind)
    return pa.table(columns)


def test_parquet_parts_of_compatible_types_load_as_one_table(
    tables: Tables, write_tables: WriteTables
) -> None:
    """Incremental writes store a column in other types from one part to the next:
    int32 then int64, timestamps in ns then in us with a zone, strings dictionary-
    encoded then plain, a column all null in one part. They were refused."""
    data = write_tables(tables)
    (data / "interactions.csv").unlink()
    parts = data / "interactions.parquet"
    parts.mkdir()
    pq.write_table(
        _interaction_part(
            2,
            hcp_id=pa.dictionary(pa.int32(), pa.string()),
            timestamp=pa.timestamp("ns"),
            outcome=pa.int32(),
            propensity=pa.null(),
        ),
        parts / "part-00000.parquet",
    )
    pq.write_table(
        _interaction_part(3, timestamp=pa.timestamp("us", tz="UTC"), outcome=pa.int64()),
        parts / "part-00001.parquet",
    )
    got = load_dataset(data).interactions
    # A naive time is UTC, as everywhere in the contract: no instant moved.
    assert got["timestamp"].tolist() == [
        pd.Timestamp(s)
        for s in [
            "2024-03-01 08:00",
            "2024-03-01 08:00",
            "2024-03-02 08:00",
            "2024-03-02 08:00",
            "2024-03-03 08:00",
        ]
    ]
    assert got["outcome"].tolist() == [1.0, 1.0, 2.0, 2.0, 3.0]
    assert got["propensity"].isna().tolist() == [True, False, True, False, False]
    assert set(got["hcp_id"]) == {"H1"}
    # Text among numbers does not combine: the part, both types and the fix are named.
    pq.write_table(
        _interaction_part(1).set_column(4, "outcome", pa.array(["many"])),
        parts / "part-00002.parquet",
    )
    with pytest.raises(ContractError) as caught:
        load_dataset(data)
    assert str(caught.value).splitlines()[1:] == [
        "  interactions.parquet: part part-00002.parquet differs from part-00000.parquet: "
        "outcome (string there, int32 in part-00000.parquet), types that do not combine: "
        "cast the column to one type and rewrite the part"
    ]


def test_values_written_in_directory_names_are_read_as_text_columns(
    tables: Tables, write_tables: WriteTables
) -> None:
    """Spark's ``partitionBy("territory_id")`` writes the value only in directory
    names (territory_id=007/part-0.parquet): read as the column, zeros kept."""
    data = write_tables(tables)
    (data / "hcps.csv").unlink()
    hcps = tables["hcps"].assign(territory_id=["007", "007", "010"])
    root = data / "hcps.parquet"
    for territory, group in hcps.groupby("territory_id"):
        where = root / f"territory_id={territory}"
        where.mkdir(parents=True)
        group.drop(columns="territory_id").to_parquet(where / "part-0.parquet", index=False)
    got = load_dataset(data).hcps
    assert got[["hcp_id", "territory_id"]].values.tolist() == [
        ["H1", "007"],
        ["H2", "007"],
        ["H3", "010"],
    ]
    # A part outside the key=value directories is named: its territory is nowhere.
    hcps.iloc[[0]].drop(columns="territory_id").to_parquet(root / "part-9.parquet", index=False)
    with pytest.raises(ContractError, match=r"part-9.parquet lies under no key=value directory"):
        load_dataset(data)


def test_csv_parts_in_a_directory_or_in_daily_files_are_pointed_at(tables, write_tables) -> None:
    # Spark's CSV output is a directory of part-*.csv; a daily export is one file a day.
    data = write_tables(tables)
    whole = (data / "interactions.csv").read_text()
    (data / "interactions.csv").unlink()
    (data / "interactions.csv").mkdir()
    (data / "interactions.csv" / "part-00000.csv").write_text(whole)
    with pytest.raises(ContractError) as caught:
        load_dataset(data)
    said = " ".join(str(caught.value).split())
    assert (
        "found a directory interactions.csv/: only Parquet may be a directory of parts; "
        "concatenate the CSV parts into one interactions.csv (one header line), or write "
        "interactions.parquet" in said
    ), said
    for part in (data / "interactions.csv").iterdir():
        part.unlink()
    (data / "interactions.csv").rmdir()
    for day in ("2026-06-01", "2026-06-02"):
        (data / f"interactions_{day}.csv").write_text(whole)
    with pytest.raises(ContractError) as caught:
        load_dataset(data)
    said = " ".join(str(caught.value).split())
    assert (
        "found interactions_2026-06-01.csv, interactions_2026-06-02.csv, which look like parts "
        "of interactions: the table is read from one file, interactions.csv (the parts "
        "concatenated, one header line) or interactions.parquet" in said
    ), said


def test_files_concatenated_with_their_headers_are_named_once(tmp_path: Path) -> None:
    # `cat day1.csv day2.csv > interactions.csv`: every header line after the first
    # was a row, refused as "unknown hcp_id 'hcp_id'" once per column and file.
    path = tmp_path / "interactions.csv"
    day = "hcp_id,timestamp,action_id,engaged\nH1,2024-03-01,A1,0\n"
    path.write_text(day * 4)
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).splitlines()[1:] == [
        "  interactions.csv, row 2: row 2 repeats the header line (3 rows do): files "
        "concatenated with their headers? keep the first header line only"
    ]
    # Warehouse unloads with only the first header lower-cased: the same.
    path.write_text(day + day.upper().replace("H1,", " H1 ,"))
    with pytest.raises(ContractError, match="row 2 repeats the header line: files"):
        read_table(path)


def test_trailing_separators_beyond_one_are_said_to_be_empty(tmp_path: Path) -> None:
    # Two trailing commas on every data line: not "a comma inside a value?".
    path = tmp_path / "catalog.csv"
    path.write_text("action_id,specialties,cost\nA1,gp,0.5,,\nA2,,1,,\n")
    with pytest.raises(ContractError) as caught:
        read_table(path)
    assert str(caught.value).splitlines()[1:] == [
        f"  catalog.csv, row {row}: 5 fields where the header has 3: the last 2 are empty, "
        "commas ending the line that the header lacks (trailing separators): remove them, "
        "or name those columns in the header"
        for row in (1, 2)
    ]


def test_empty_rows_a_spreadsheet_saves_at_the_end_are_skipped_and_noted(
    tables: Tables, write_tables: WriteTables
) -> None:
    # Excel saves rows it once formatted as ',,,,' lines: refused before, as an
    # "empty value" in every required column of every such row.
    data = write_tables(tables)
    before = load_dataset(data)
    with (data / "hcps.csv").open("a") as file:
        file.write(",,,,,,\r\n, ,,,,,\r\n,,,,,,\r\n")
    with (data / "interactions.csv").open("a") as file:
        file.write(",,,,,,,,\n")
    got = load_dataset(data)
    assert got.fingerprint() == before.fingerprint()
    assert empty_row_notes(got) == [
        "hcps: skipped 3 empty rows at the end of the file (rows 4-6: every cell empty, "
        "as a spreadsheet saves blank rows)",
        "interactions: skipped 1 empty row at the end of the file (row 6: every cell empty, "
        "as a spreadsheet saves blank rows)",
    ]
    assert empty_row_notes(before) == []
    # A row with one cell filled is checked as any other, and so is an empty row with
    # rows after it (skipping it would shift the row numbers of problems below it).
    for tail in (",,T9,,,,\n,,,,,,\n", ",,,,,,\nH9,oncology,T1,,,,\n"):
        (data / "hcps.csv").write_text(tables["hcps"].to_csv(index=False) + tail)
        with pytest.raises(ContractError) as caught:
            load_dataset(data)
        assert "hcps.csv, row 4, column 'hcp_id': empty value" in str(caught.value)


def test_ids_written_two_ways_in_hcps_or_catalog_are_noted(
    tables: dict[str, pd.DataFrame], write_tables: Callable[..., Path]
) -> None:
    """Two HCPs whose ids differ only in case, leading zeros or a trailing '.0' (one
    physician exported twice by two systems, one of them a spreadsheet) are two HCPs
    to every check, since ids are compared exactly: valid, but said, as an unknown
    id so spelt is. Ids that merely look alike otherwise are not."""
    tables["hcps"].loc[1, "hcp_id"] = "h1"  # beside H1
    tables["hcps"].loc[2, "hcp_id"] = "007"
    extra = tables["hcps"].iloc[[2]].assign(hcp_id="7.0")
    tables["hcps"] = pd.concat([tables["hcps"], extra], ignore_index=True)
    interactions = tables["interactions"]
    interactions["hcp_id"] = interactions["hcp_id"].replace({"H2": "h1", "H3": "007"})
    dataset = load_dataset(write_tables(tables))
    notes = [note for note in data_notes(dataset) if "differ only in case" in note]
    assert notes == [
        "hcps: hcp_id values that differ only in case, leading zeros or a trailing '.0': "
        "'H1' and 'h1'; '007' and '7.0'. Ids are compared "
        "exactly, so each is an HCP of its own: if they are one, write its id one way in "
        "every file"
    ]
    tables["hcps"].loc[3, "hcp_id"] = "H4"
    tables["hcps"].loc[1, "hcp_id"] = "H2"
    interactions["hcp_id"] = interactions["hcp_id"].replace({"h1": "H2"})
    dataset = load_dataset(write_tables(tables, name="distinct"))
    assert not [note for note in data_notes(dataset) if "differ only in case" in note]


def test_a_simulated_history_loads_alike_from_csv_and_its_parquet_twin(tmp_path: Path) -> None:
    """The simulator's files, written once as CSV and once as Parquet, load to equal
    frames, dtypes included: the CSV's times read by Arrow, its ids
    dictionary-encoded, change nothing that validation gives."""
    from nextbest.simulate import simulate_world

    world = simulate_world(n_hcps=6_000, periods=4, seed=5)
    world.write(tmp_path / "csv", fmt="csv")
    world.write(tmp_path / "parquet", fmt="parquet")
    from_csv = load_dataset(tmp_path / "csv")
    from_parquet = load_dataset(tmp_path / "parquet")
    for name in ("hcps", "catalog", "interactions"):
        pd.testing.assert_frame_equal(getattr(from_parquet, name), getattr(from_csv, name))
    assert from_parquet.fingerprint() == from_csv.fingerprint()
    raw = read_table(tmp_path / "csv" / "interactions.csv", times=("timestamp",))
    assert raw["timestamp"].dtype == "datetime64[ns]"


def test_ids_of_a_history_ordered_by_time_are_read_once_each(tmp_path: Path) -> None:
    """A history ordered by time names each HCP once in its first thousands of rows
    (a block Arrow reads) and many times in the file: its ids are read as a
    categorical, each id kept once, not as a str per row; ids written once per row
    stay ``str``."""
    n_hcps, periods = 60_000, 3  # a block of Arrow holds some 50,000 of these rows
    hcp_ids = [f"H{i:06d}" for i in range(n_hcps)] * periods
    pd.DataFrame(
        {
            "hcp_id": hcp_ids,
            "event_id": [f"E{i:08d}" for i in range(len(hcp_ids))],
            "engaged": "0",
        }
    ).to_csv(tmp_path / "history.csv", index=False)
    raw = read_table(tmp_path / "history.csv")
    assert isinstance(raw["hcp_id"].dtype, pd.CategoricalDtype)
    assert len(raw["hcp_id"].cat.categories) == n_hcps
    assert raw["hcp_id"].tolist() == hcp_ids
    assert raw["event_id"].dtype == object


def test_a_parquet_column_of_a_value_per_row_is_read_as_plain_text(tmp_path: Path) -> None:
    """A Parquet text column whose values repeat is read dictionary-encoded (a
    categorical); one of a distinct value per row (an event id) is not, as the
    dictionary Arrow builds for it holds nothing twice."""
    n = 3_000
    pd.DataFrame(
        {"hcp_id": [f"H{i % 50}" for i in range(n)], "event_id": [f"E{i}" for i in range(n)]}
    ).to_parquet(tmp_path / "events.parquet", index=False)
    raw = read_table(tmp_path / "events.parquet")
    assert isinstance(raw["hcp_id"].dtype, pd.CategoricalDtype)
    assert raw["event_id"].dtype == object
    assert raw["event_id"].tolist() == [f"E{i}" for i in range(n)]


# Spellings of a time: those Arrow reads (the column then read as times in its pass)
# and those it leaves to pandas (the column stays text): validated alike either way.
_TIME_SPELLINGS = [
    "2026-06-04 16:18:45",
    "2026-06-04T16:18:45",
    "2026-06-04",
    "2026-06-04 16",
    "2026-06-04T16:18",
    "2026-06-04 16:18:45.123456789",
    "2026-06-04 16:18:45.5",
    "1677-09-22",
    "2262-04-11",
    "2026-06-04 16:18:45Z",
    "2026-06-04T16:18:45+02:00",
    "2026-06-04T16:18:45-05:00",
    "2026-06-04T16:18:45+0200",
    "2026-06-04T16Z",
    "2026-06-04 16:18:45.1234567891",
    "20260604",
    "2026-6-4",
    "2026-06-04 161845",
    "2026-06-04T16:18:45.",
    " 2026-06-04",
]
_REFUSED_TIMES = [
    "2026-02-30",
    "2026-06-04 24:00:00",
    "2026-06-04 23:59:60",
    "3000-01-01",
    "2026-06-04Z",
    "2026-06-04t16:18:45",
    "2024-03",
    "NULL",
]


@pytest.mark.parametrize("spelling", _TIME_SPELLINGS + _REFUSED_TIMES)
def test_times_read_by_arrow_validate_as_the_text_does(
    tables: Tables, write_tables: WriteTables, spelling: str
) -> None:
    """An interactions file whose times are all one spelling (one row empty) loads,
    or is refused with the same words, as the same cells given as text do."""
    inter = tables["interactions"]
    inter["timestamp"] = [spelling, spelling, spelling, spelling, spelling]
    inter.loc[4, "timestamp"] = ""
    path = write_tables(tables) / "interactions.csv"
    hcps = load_hcps(path.parent / "hcps.csv")
    catalog = load_catalog(path.parent / "catalog.csv")
    raw = read_table(path, times=("timestamp",))
    as_text = read_table(path)
    assert as_text["timestamp"].dtype != "datetime64[ns]"
    outcomes = []
    for frame in (raw, as_text):
        try:
            outcomes.append(
                validate_interactions(frame, file=path.name, hcps=hcps, catalog=catalog)
            )
        except ContractError as refused:
            outcomes.append(str(refused))
    if isinstance(outcomes[1], str):
        assert outcomes[0] == outcomes[1]
        assert "row 5" in outcomes[1]  # the empty cell, said in both
    else:
        pd.testing.assert_frame_equal(outcomes[0], outcomes[1])
    if spelling in _TIME_SPELLINGS[:14]:  # what Arrow reads
        assert raw["timestamp"].dtype == "datetime64[ns]"
        assert raw["timestamp"].isna().tolist() == [False, False, False, False, True]


def test_a_csv_file_with_times_read_by_arrow_drops_its_empty_last_rows(tmp_path: Path) -> None:
    """Rows at the end with every cell empty are skipped, as when times are text."""
    path = tmp_path / "interactions.csv"
    path.write_text("hcp_id,timestamp,engaged\nH1,2024-03-01,1\nH2,2024-03-02T10:00:00,0\n,,\n,,\n")
    raw = read_table(path, times=("timestamp",))
    assert raw["timestamp"].tolist() == [
        pd.Timestamp("2024-03-01"),
        pd.Timestamp("2024-03-02 10:00"),
    ]
    assert raw.attrs[EMPTY_ROWS] == (3, 4)


def test_a_table_without_unnamed_columns_is_passed_on_as_it_is() -> None:
    """Dropping no column returns the frame itself: ``drop`` copied every column,
    hundreds of MB for a history of millions of rows."""
    raw = pd.DataFrame({"hcp_id": ["H1", "H2"], "outcome": [1.0, 2.0]})
    kept = without_unnamed_columns(raw, ProblemLog("interactions.csv"))
    assert np.shares_memory(kept["outcome"].to_numpy(), raw["outcome"].to_numpy())
    raw["Unnamed: 2"] = ["", ""]
    assert list(without_unnamed_columns(raw, ProblemLog("interactions.csv")).columns) == [
        "hcp_id",
        "outcome",
    ]


@pytest.mark.parametrize(
    "cells",
    [pd.Series(["H1", "H2", "H1", ""]), pd.Series(pd.Categorical(["H1", "H2", "H1", ""]))],
    ids=["str", "categorical"],
)
def test_text_is_coded_in_four_bytes_a_row(cells: pd.Series) -> None:
    """A column's codes are int32: half the memory of intp, at millions of rows."""
    from nextbest.contract.parse import codes

    coded = codes(cells)
    assert coded.codes.dtype == np.int32
    assert coded.series().tolist() == ["H1", "H2", "H1", ""]
    assert coded.empty.tolist() == [False, False, False, True]
