"""Every way a user's files can break the contract, and the message that says where."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextbest.contract import (
    MAX_PROBLEMS_PER_FILE,
    ContractError,
    Problem,
    load_dataset,
    load_hcps,
    load_send_list,
    load_territories,
    validate_catalog,
    write_table,
)
from nextbest.service.erasure import read_ids

Tables = dict[str, pd.DataFrame]


def _nothing(_: Any) -> None:
    return None


@dataclass(frozen=True)
class Case:
    """Break a valid data set: edit the raw tables, then the written files, then load."""

    edit: Callable[[Tables], None] = _nothing
    files: Callable[[Path], None] = _nothing
    load: Callable[[Path], object] = field(default=load_dataset)


def cell(table: str, row: int, column: str, value: str) -> Case:
    """Set one cell; ``row`` is 1-based like the error messages."""

    def edit(tables: Tables) -> None:
        tables[table].loc[row - 1, column] = value

    return Case(edit=edit)


def drop(table: str, column: str) -> Case:
    def edit(tables: Tables) -> None:
        del tables[table][column]

    return Case(edit=edit)


def header_only(table: str) -> Case:
    def edit(tables: Tables) -> None:
        tables[table] = tables[table].iloc[0:0]

    return Case(edit=edit)


def also_parquet(path: Path) -> None:
    pd.read_csv(path / "hcps.csv", dtype=str).to_parquet(path / "hcps.parquet")


def corrupt_parquet(path: Path) -> None:
    (path / "catalog.csv").unlink()
    (path / "catalog.parquet").write_bytes(b"PAR1 this is not really parquet PAR1")


def parquet_named_csv(path: Path) -> None:
    frame = pd.read_csv(path / "catalog.csv", dtype=str, keep_default_na=False)
    frame.to_parquet(path / "catalog.csv", index=False)


def workbook_named_csv(path: Path) -> None:
    (path / "hcps.csv").write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)))


def csv_named_parquet(path: Path) -> None:
    (path / "catalog.csv").rename(path / "catalog.parquet")


def empty_file(path: Path) -> None:
    (path / "hcps.csv").write_bytes(b"")


def as_parquet(table: str, **columns: Any) -> Case:
    """Write ``table`` as Parquet instead of CSV, with ``columns`` set to the given
    values (Arrow arrays or lists, typed as written)."""

    def files(path: Path) -> None:
        frame = pd.read_csv(path / f"{table}.csv", dtype=str, keep_default_na=False)
        (path / f"{table}.csv").unlink()
        written = pa.Table.from_pandas(frame, preserve_index=False)
        for name, values in columns.items():
            array = values if isinstance(values, pa.Array) else pa.array(values)
            at = written.schema.get_field_index(name)
            if at < 0:
                written = written.append_column(name, array)
            else:
                written = written.set_column(at, name, array)
        pq.write_table(written, path / f"{table}.parquet")

    return Case(files=files)


def in_parts(table: str) -> Callable[[Path], None]:
    """Move ``table``.parquet into a directory of parts, as Spark writes one."""

    def files(path: Path) -> None:
        single = path / f"{table}.parquet"
        single.rename(path / "part-0.parquet")
        single.mkdir()
        (path / "part-0.parquet").rename(single / "part-0.parquet")

    return files


def rewrite(file: str, edit: Callable[[bytes], bytes]) -> Case:
    """Edit the bytes of a written file."""

    def files(path: Path) -> None:
        (path / file).write_bytes(edit((path / file).read_bytes()))

    return Case(files=files)


def link_to_a_deleted_file(path: Path) -> None:
    (path / "catalog.csv").rename(path / "catalog-2026-06.csv")
    (path / "catalog.csv").symlink_to(path / "catalog-2026-06.csv")
    (path / "catalog-2026-06.csv").unlink()


def part_linked_to_a_deleted_file(path: Path) -> None:
    in_parts("interactions")(path)
    (path / "interactions.parquet" / "part-1.parquet").symlink_to(path / "gone.parquet")


def load_xlsx(path: Path) -> object:
    (path / "hcps.xlsx").write_bytes(b"not a spreadsheet")
    return load_hcps(path / "hcps.xlsx")


def at(file: str, row: int | None, column: str | None, message: str) -> str:
    """Regex for one problem line: the file, row and column, then the message start."""
    where = file
    if row is not None:
        where += f", row {row}"
    if column is not None:
        where += f", column '{column}'"
    return re.escape(f"{where}: {message}")


BAD_INPUTS = [
    pytest.param(
        Case(files=lambda path: (path / "catalog.csv").unlink()),
        at("catalog.{csv,parquet}", None, None, "not found in"),
        id="missing-file",
    ),
    pytest.param(
        Case(files=also_parquet),
        at("hcps.{csv,parquet}", None, None, "both hcps.csv and hcps.parquet are in"),
        id="both-csv-and-parquet",
    ),
    pytest.param(
        drop("hcps", "territory_id"),
        at("hcps.csv", None, "territory_id", "missing required column"),
        id="hcps-missing-column",
    ),
    pytest.param(
        drop("catalog", "content_type"),
        at("catalog.csv", None, "content_type", "missing required column"),
        id="catalog-missing-column",
    ),
    pytest.param(
        drop("interactions", "engaged"),
        at("interactions.csv", None, "engaged", "missing required column"),
        id="interactions-missing-column",
    ),
    pytest.param(
        Case(files=lambda path: shutil.copy(path / "catalog.csv", path / "hcps.csv")),
        at(
            "hcps.csv",
            None,
            None,
            "has every required column of a catalog file (action_id, channel, content_id, "
            "topic, content_type, approved_from) and not those of an hcps file: the catalog "
            "given in its place? Give each table its own file",
        ),
        id="catalog-given-as-hcps",
    ),
    pytest.param(
        Case(files=lambda path: shutil.copy(path / "hcps.csv", path / "interactions.csv")),
        at(
            "interactions.csv",
            None,
            None,
            "has every required column of an hcps file (hcp_id, specialty, territory_id) "
            "and not those of an interactions file: the hcps given in its place?",
        ),
        id="hcps-given-as-interactions",
    ),
    pytest.param(
        Case(load=lambda path: load_territories(path / "catalog.csv")),
        at(
            "catalog.csv",
            None,
            None,
            "has every required column of a catalog file (action_id, channel, content_id, "
            "topic, content_type, approved_from) and not those of a file of hcp_id, "
            "territory_id: the catalog given in its place?",
        ),
        id="catalog-given-as-territories",
    ),
    pytest.param(
        cell("hcps", 3, "hcp_id", "H1"),
        at("hcps.csv", 3, "hcp_id", "duplicate hcp_id 'H1' (first in row 1)"),
        id="duplicate-hcp-id",
    ),
    pytest.param(
        cell("hcps", 2, "hcp_id", "   "),
        at("hcps.csv", 2, "hcp_id", "empty value"),
        id="empty-hcp-id",
    ),
    pytest.param(
        cell("hcps", 2, "consent_rep_visit", "maybe"),
        at("hcps.csv", 2, "consent_rep_visit", "'maybe' is not a boolean"),
        id="bad-consent",
    ),
    pytest.param(
        cell("hcps", 1, "specialty", ""),
        at("hcps.csv", 1, "specialty", "empty value"),
        id="empty-specialty",
    ),
    pytest.param(
        cell("catalog", 2, "action_id", "A1"),
        at("catalog.csv", 2, "action_id", "duplicate action_id 'A1' (first in row 1)"),
        id="duplicate-action-id",
    ),
    pytest.param(
        cell("catalog", 1, "content_type", "advert"),
        at("catalog.csv", 1, "content_type", "'advert' is not one of promotional, medical"),
        id="bad-content-type",
    ),
    pytest.param(
        cell("catalog", 1, "content_type", "Promo"),
        at(
            "catalog.csv",
            1,
            "content_type",
            "'Promo' is not one of promotional, medical (did you mean 'promotional'?)",
        ),
        id="content-type-shortened",
    ),
    pytest.param(
        cell("catalog", 2, "content_type", "Medicla "),
        at(
            "catalog.csv",
            2,
            "content_type",
            "'Medicla' is not one of promotional, medical (did you mean 'medical'?)",
        ),
        id="content-type-misspelt",
    ),
    pytest.param(
        cell("catalog", 3, "approved_from", "next week"),
        at("catalog.csv", 3, "approved_from", "'next week' is not an ISO 8601 date"),
        id="unparseable-approved-from",
    ),
    pytest.param(
        cell("catalog", 1, "approved_from", "45292"),
        at(
            "catalog.csv",
            1,
            "approved_from",
            "'45292' is not an ISO 8601 date or date-time (within 1677-2262): it looks like a "
            "spreadsheet's serial day number",
        ),
        id="spreadsheet-serial-day-approved-from",
    ),
    pytest.param(
        cell("catalog", 1, "approved_from", ""),
        at("catalog.csv", 1, "approved_from", "empty value"),
        id="empty-approved-from",
    ),
    pytest.param(
        cell("catalog", 2, "approved_until", "2023-12-31"),
        at("catalog.csv", 2, "approved_until", "2023-12-31 is before approved_from 2024-01-01"),
        id="approved-until-before-from",
    ),
    pytest.param(
        cell("catalog", 2, "cost", "-5"),
        at("catalog.csv", 2, "cost", "-5 is not a finite number >= 0"),
        id="negative-cost",
    ),
    pytest.param(
        cell("catalog", 2, "cost", "cheap"),
        at("catalog.csv", 2, "cost", "'cheap' is not a number"),
        id="non-numeric-cost",
    ),
    pytest.param(
        cell("catalog", 2, "cost", "150,5"),
        at("catalog.csv", 2, "cost", "'150,5' is not a number (write decimals with '.')"),
        id="decimal-comma",
    ),
    pytest.param(
        cell("interactions", 4, "hcp_id", "H9"),
        at("interactions.csv", 4, "hcp_id", "unknown hcp_id 'H9' (not in hcps)"),
        id="unknown-hcp-id",
    ),
    pytest.param(
        cell("interactions", 1, "action_id", "A9"),
        at("interactions.csv", 1, "action_id", "unknown action_id 'A9' (not in catalog)"),
        id="unknown-action-id",
    ),
    pytest.param(
        cell("interactions", 2, "timestamp", "yesterday"),
        at("interactions.csv", 2, "timestamp", "'yesterday' is not an ISO 8601 date"),
        id="unparseable-timestamp",
    ),
    pytest.param(
        cell("interactions", 2, "timestamp", "03/01/2024"),
        at(
            "interactions.csv",
            2,
            "timestamp",
            "'03/01/2024' is not an ISO 8601 date or date-time (within 1677-2262): write it "
            "as 2026-11-30 or 2026-11-30T08:00:00+00:00",
        ),
        id="ambiguous-timestamp",
    ),
    pytest.param(
        cell("interactions", 2, "timestamp", "2024"),
        at(
            "interactions.csv",
            2,
            "timestamp",
            "'2024' is a year alone, not a date: it would be read as the first day of the "
            "year; write the full date, as 2026-11-30 or 2026-11-30T08:00:00+00:00",
        ),
        id="year-alone-timestamp",
    ),
    pytest.param(
        cell("catalog", 2, "approved_until", "2025-12"),
        at(
            "catalog.csv",
            2,
            "approved_until",
            "'2025-12' is a year and month, not a date: it would be read as the first day "
            "of the month",
        ),
        id="year-and-month-approved-until",
    ),
    pytest.param(
        as_parquet("catalog", approved_until=pa.array([None, 2025, None], pa.int64())),
        at("catalog.parquet", 2, "approved_until", "2025 is a year alone, not a date"),
        id="parquet-integer-year-approved-until",
    ),
    pytest.param(
        cell("interactions", 1, "engaged", "2"),
        at("interactions.csv", 1, "engaged", "2 is not 0 or 1"),
        id="engaged-2",
    ),
    pytest.param(
        cell("interactions", 1, "engaged", ""),
        at("interactions.csv", 1, "engaged", "empty value"),
        id="engaged-empty-with-action",
    ),
    pytest.param(
        cell("interactions", 3, "engaged", "1"),
        at("interactions.csv", 3, "engaged", "engaged is 1 on a no-touch row"),
        id="engaged-on-no-touch",
    ),
    pytest.param(
        cell("interactions", 3, "engaged", " TRUE "),
        at("interactions.csv", 3, "engaged", "engaged is 1 on a no-touch row"),
        id="engaged-true-on-no-touch",
    ),
    pytest.param(
        cell("interactions", 1, "engaged", "perhaps"),
        at(
            "interactions.csv",
            1,
            "engaged",
            "'perhaps' is not 0 or 1 (use 1/0, true/false, yes/no, y/n or t/f)",
        ),
        id="engaged-not-a-flag",
    ),
    pytest.param(
        cell("interactions", 1, "propensity", "0"),
        at("interactions.csv", 1, "propensity", "0 is not in (0, 1]"),
        id="propensity-0",
    ),
    pytest.param(
        cell("interactions", 4, "propensity", "1.5"),
        at("interactions.csv", 4, "propensity", "1.5 is not in (0, 1]"),
        id="propensity-1.5",
    ),
    pytest.param(
        cell("interactions", 2, "propensity", "abc"),
        at("interactions.csv", 2, "propensity", "'abc' is not a number"),
        id="propensity-abc",
    ),
    pytest.param(
        cell("interactions", 1, "holdout", "true"),
        at("interactions.csv", 1, "holdout", "holdout is true but action_id is 'A1'"),
        id="holdout-with-action",
    ),
    pytest.param(
        cell("interactions", 4, "holdout", "perhaps"),
        at("interactions.csv", 4, "holdout", "'perhaps' is not a boolean"),
        id="bad-holdout",
    ),
    pytest.param(
        cell("interactions", 1, "channel", "sms"),
        at(
            "interactions.csv",
            1,
            "channel",
            "'sms' does not match the catalog channel 'email' of action 'A1'",
        ),
        id="channel-mismatch",
    ),
    pytest.param(
        cell("interactions", 4, "content_id", "C1"),
        at("interactions.csv", 4, "content_id", "'C1' does not match the catalog content_id 'C3'"),
        id="content-id-mismatch",
    ),
    pytest.param(
        cell("hcps", 2, "decile", "inf"),
        at(
            "hcps.csv",
            2,
            "decile",
            "inf is not a finite number: write a number, or leave the cell empty for a "
            "missing value",
        ),
        id="inf-in-a-feature",
    ),
    pytest.param(
        as_parquet("hcps", score=[1.0, -np.inf, 0.5]),
        at("hcps.parquet", 2, "score", "-inf is not a finite number"),
        id="parquet-minus-inf-in-a-feature",
    ),
    pytest.param(
        # A placeholder the feedback endpoint and file refuse as a value: accepted in
        # the history, it swamped every mean retrain sums it into.
        cell("interactions", 2, "outcome", "9999999999"),
        at(
            "interactions.csv",
            2,
            "outcome",
            "9999999999 is beyond the limit of 1,000,000,000 either way: no outcome of one "
            "decision is that large",
        ),
        id="outcome-beyond-the-limit",
    ),
    pytest.param(
        as_parquet("interactions", outcome=pa.array([2.5, 0, 1, None, np.inf], pa.float32())),
        at("interactions.parquet", 5, "outcome", "inf is not finite"),
        id="parquet-float32-inf-outcome",
    ),
    pytest.param(
        cell("interactions", 2, "outcome", "lots"),
        at("interactions.csv", 2, "outcome", "'lots' is not a number"),
        id="non-numeric-outcome",
    ),
    pytest.param(
        cell("interactions", 2, "outcome", "NA"),
        at("interactions.csv", 2, "outcome", "'NA' is not a number"),
        id="na-spelled-out",
    ),
    pytest.param(
        cell("interactions", 2, "outcome", "\\N"),
        at(
            "interactions.csv",
            2,
            "outcome",
            "'\\N' is not a number (write a missing value as an empty cell)",
        ),
        id="warehouse-null-in-outcome",
    ),
    pytest.param(
        cell("catalog", 1, "approved_until", "NULL"),
        at(
            "catalog.csv",
            1,
            "approved_until",
            "'NULL' is not an ISO 8601 date or date-time (within 1677-2262) (write a missing "
            "value as an empty cell)",
        ),
        id="warehouse-null-in-approved-until",
    ),
    pytest.param(
        cell("interactions", 2, "holdout", "null"),
        at("interactions.csv", 2, "holdout", "'null' is not a boolean (use true/false"),
        id="warehouse-null-in-holdout",
    ),
    pytest.param(
        header_only("hcps"),
        at("hcps.csv", None, None, "no data rows"),
        id="empty-hcps",
    ),
    pytest.param(
        header_only("catalog"),
        at("catalog.csv", None, None, "no data rows"),
        id="empty-catalog",
    ),
    pytest.param(
        Case(files=empty_file),
        at("hcps.csv", None, None, "the file is empty"),
        id="zero-byte-file",
    ),
    pytest.param(
        # Each was refused for a NUL byte in the header, or Parquet's missing magic
        # bytes: true, but not what the file is.
        Case(files=parquet_named_csv),
        at("catalog.csv", None, None, "is a Parquet file, not CSV: name it catalog.parquet"),
        id="parquet-named-csv",
    ),
    pytest.param(
        Case(files=workbook_named_csv),
        at("hcps.csv", None, None, "is a zip archive (an Excel .xlsx workbook?), not CSV: save"),
        id="workbook-named-csv",
    ),
    pytest.param(
        Case(files=csv_named_parquet),
        at("catalog.parquet", None, None, "holds text, not Parquet (a CSV file?): name it"),
        id="csv-named-parquet",
    ),
    pytest.param(
        Case(files=corrupt_parquet),
        at("catalog.parquet", None, None, "cannot read PARQUET file"),
        id="corrupt-parquet",
    ),
    pytest.param(
        as_parquet("catalog", specialties=[["Oncology"], [], ["oncology"]]),
        at(
            "catalog.parquet",
            None,
            "specialties",
            "holds lists (list<element: string>), not one value per cell: write one number, "
            "text, boolean or time per cell (a list of specialties as one text joined by "
            "';'), or drop the column",
        ),
        id="parquet-list-column",
    ),
    pytest.param(
        as_parquet("hcps", region=[{"name": "north"}, {"name": "south"}, {"name": "north"}]),
        at("hcps.parquet", None, "region", "holds structs (struct<name: string>), not one"),
        id="parquet-struct-column",
    ),
    pytest.param(
        # Text padded to a fixed width with NULs, as a CSV file's NUL is refused: an id
        # no other file or request spells so, trained and served under it.
        as_parquet("hcps", hcp_id=["H1", "H2\x00\x00", "H3"]),
        at("hcps.parquet", 2, "hcp_id", "holds a NUL character (0x00), which no text has"),
        id="parquet-nul-in-text",
    ),
    pytest.param(
        as_parquet("hcps", region=pa.array(["north", "south", "no\x00rth"]).dictionary_encode()),
        at("hcps.parquet", 3, "region", "holds a NUL character (0x00)"),
        id="parquet-nul-in-dictionary-text",
    ),
    pytest.param(
        # Text stored as bytes (Parquet BINARY without its UTF8 annotation, as Hive or
        # Impala write it), one value Latin-1: a UnicodeDecodeError from deep in the checks.
        as_parquet("hcps", region=pa.array([b"north", "s\u00fcd".encode("latin-1"), b"north"])),
        at(
            "hcps.parquet",
            2,
            "region",
            "not UTF-8 text (byte 0xfc, '\u00fc' in Latin-1 or Windows-1252?): the column holds "
            "bytes, read as text; write it as UTF-8 text (a string column), or drop the column",
        ),
        id="parquet-bytes-not-utf8",
    ),
    pytest.param(
        as_parquet(
            "interactions",
            tags=pa.array([[("k", "v")]] * 5, type=pa.map_(pa.string(), pa.string())),
        ),
        at("interactions.parquet", None, "tags", "holds maps (map<string, string"),
        id="parquet-map-column",
    ),
    pytest.param(
        Case(
            files=lambda path: (
                as_parquet("interactions", outcome=[[1.0]] * 5).files(path),
                in_parts("interactions")(path),
            )
        ),
        at("interactions.parquet", None, "outcome", "holds lists (list<element: double>)"),
        id="parquet-parts-list-column",
    ),
    pytest.param(
        rewrite("hcps.csv", lambda data: data.replace(b"H2,", b"H\x002,")),
        at(
            "hcps.csv",
            2,
            "hcp_id",
            "holds a NUL byte (0x00), which no text has: a corrupt or binary export? the "
            "value would be cut short there; remove it and check the value",
        ),
        id="nul-byte-in-a-cell",
    ),
    pytest.param(
        rewrite("interactions.csv", lambda data: data + b"\x00" * 64),
        at("interactions.csv", 6, "hcp_id", "holds a NUL byte (0x00)"),
        id="nul-bytes-after-the-last-row",
    ),
    pytest.param(
        rewrite("catalog.csv", lambda data: data.decode().encode("utf-16-le")),
        at(
            "catalog.csv",
            None,
            None,
            "the file is UTF-16 text, not UTF-8: save it as UTF-8 (in Excel: 'CSV UTF-8')",
        ),
        id="utf-16-without-byte-order-mark",
    ),
    pytest.param(
        rewrite("hcps.csv", lambda data: data.replace(b"H2,cardiology", b'H2,"cardiology')),
        at(
            "hcps.csv",
            2,
            "specialty",
            "a double quote opens this value on line 3 and is never closed, so the rest of "
            "the file (lines 3 to 4) would be read as one value: close the quote, or double "
            'it ("") where it is part of the value',
        ),
        id="unclosed-quote",
    ),
    pytest.param(
        # Rows are numbered as the file's lines, blank ones and a quoted value's second
        # line counted: line 8 is row 7.
        rewrite(
            "interactions.csv",
            lambda data: data.replace(b"H1,2024-03-01,A2", b'\n\nH1,"2024-03-01\n",A2').replace(
                b"H3,2024-03-05,A3,EMAIL", b'H3,2024-03-05,A3,"EMAIL'
            ),
        ),
        at(
            "interactions.csv",
            7,
            "channel",
            "a double quote opens this value on line 8 and is never closed, so the rest of "
            "the file (lines 8 to 9) would be read",
        ),
        id="unclosed-quote-after-blank-lines-and-a-quoted-line-break",
    ),
    pytest.param(
        # The rest of the file is past the csv module's field size limit (128 KiB).
        rewrite(
            "hcps.csv",
            lambda data: (
                data.replace(b"H3,oncology", b'H3,"oncology')
                + b"".join(b"H%d,oncology,T1,north,3,true,yes\n" % i for i in range(20_000))
            ),
        ),
        at(
            "hcps.csv",
            3,
            "specialty",
            "a double quote opens this value on line 4 and is never closed, so the rest of "
            "the file (lines 4 to 20,004) would be read",
        ),
        id="unclosed-quote-before-a-long-rest-of-the-file",
    ),
    pytest.param(
        # Opened in the last field of the file: Arrow's CSV reader takes the rest of the
        # file for the value and reads the file, pandas refuses it (files.py reads it so).
        rewrite("hcps.csv", lambda data: data.replace(b"0,Y\n", b'0,"Y\n')),
        at(
            "hcps.csv",
            3,
            "consent_rep_visit",
            "a double quote opens this value on line 4 and is never closed, so the rest of "
            "the file (line 4) would be read",
        ),
        id="unclosed-quote-in-the-last-field",
    ),
    pytest.param(
        rewrite("hcps.csv", lambda data: data.replace(b"0,Y\n", b'0,"Y')),
        at(
            "hcps.csv",
            3,
            "consent_rep_visit",
            "a double quote opens this value on line 4 and is never closed",
        ),
        id="unclosed-quote-in-the-last-field-without-a-line-break-after-it",
    ),
    pytest.param(
        rewrite("hcps.csv", lambda data: b"HCP export 2026-06-01\n\n" + data),
        at(
            "hcps.csv",
            None,
            None,
            "the header is not on line 1 (line 1 holds 'HCP export 2026-06-01'); it seems "
            "to be on line 3: 'hcp_id,specialty,territory_id,region,decile,consent_email,"
            "consent_rep_visit'; remove the lines above it (an export's title, blank "
            "lines): the header is the first line",
        ),
        id="title-line-above-the-header",
    ),
    pytest.param(
        rewrite("catalog.csv", lambda data: b"Catalog;;;;;;;;\n;;;;;;;;\n" + data),
        at(
            "catalog.csv",
            None,
            None,
            "the header is not on line 1 (line 1 holds 'Catalog;;;;;;;;'); it seems to be "
            "on line 3: 'action_id,channel,",
        ),
        id="title-line-padded-with-separators",
    ),
    pytest.param(
        rewrite("interactions.csv", lambda data: b"\r\n\r\n" + data),
        at(
            "interactions.csv",
            None,
            None,
            "the header is not on line 1 (line 1 is blank); it seems to be on line 3: "
            "'hcp_id,timestamp,",
        ),
        id="blank-lines-above-the-header",
    ),
    pytest.param(
        Case(files=link_to_a_deleted_file),
        at(
            "catalog.csv",
            None,
            None,
            "is a symbolic link to {path}/catalog-2026-06.csv, which does not exist (moved "
            "or deleted?): point the link at the file, or put the file in its place",
        ),
        id="table-linked-to-a-deleted-file",
    ),
    pytest.param(
        Case(
            files=lambda path: (
                as_parquet("interactions").files(path),
                part_linked_to_a_deleted_file(path),
            )
        ),
        at(
            "interactions.parquet",
            None,
            None,
            "part part-1.parquet is a symbolic link to {path}/gone.parquet, which does not exist",
        ),
        id="part-linked-to-a-deleted-file",
    ),
    pytest.param(
        Case(load=load_xlsx),
        at("hcps.xlsx", None, None, "unsupported file type '.xlsx'"),
        id="unsupported-extension",
    ),
]


@pytest.mark.parametrize(("case", "expected"), BAD_INPUTS)
def test_bad_input_is_named(
    case: Case, expected: str, tables: Tables, write_tables: Callable[..., Path]
) -> None:
    case.edit(tables)
    path = write_tables(tables)
    case.files(path)
    with pytest.raises(ContractError, match=expected.replace("\\{path\\}", re.escape(str(path)))):
        case.load(path)


def test_a_csv_header_starting_as_parquet_does_is_read_as_csv(tmp_path: Path) -> None:
    """A Parquet file starts and ends with 'PAR1': a CSV header that starts so is text."""
    ids = tmp_path / "erase.csv"
    ids.write_text("PAR1,hcp_id\n2,H1\n")
    assert read_ids(ids) == ["H1"]


_AS_ROOT = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads whatever the permissions: run as another user to check this",
)
_DENIED = (
    "cannot be read: permission denied to the user running nextbest (uid {uid}); give that "
    "user read access to the {kind} (chmod, chown), or run as one who has it"
)


@_AS_ROOT
def test_a_file_or_directory_that_cannot_be_read_is_named(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """A table (or data directory) the user cannot read was a PermissionError
    traceback, and a part under a subdirectory it cannot list was skipped, its rows
    missing without a word."""
    path = write_tables(tables, fmt="parquet")
    in_parts("interactions")(path)
    hidden = path / "interactions.parquet" / "late"
    hidden.mkdir()
    shutil.copy(path / "interactions.parquet" / "part-0.parquet", hidden / "part-1.parquet")
    said = {"uid": os.getuid()}
    try:
        hidden.chmod(0)
        with pytest.raises(
            ContractError,
            match=at(
                "interactions.parquet",
                None,
                None,
                "part late " + _DENIED.format(kind="directory", **said),
            ),
        ):
            load_dataset(path)
        hidden.chmod(0o755)
        (path / "hcps.parquet").chmod(0)
        with pytest.raises(
            ContractError, match=at("hcps.parquet", None, None, _DENIED.format(kind="file", **said))
        ):
            load_dataset(path)
        path.chmod(0)
        with pytest.raises(
            ContractError, match=at(str(path), None, None, _DENIED.format(kind="directory", **said))
        ):
            load_dataset(path)
    finally:
        path.chmod(0o755)
        hidden.chmod(0o755)


def test_the_valid_fixture_is_valid(tables: Tables, write_tables: Callable[..., Path]) -> None:
    # Guards the table above: each case must fail because of its one edit.
    load_dataset(write_tables(tables))


def test_typed_parquet_values_are_checked_too(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    interactions = tables["interactions"]
    interactions["propensity"] = [0.5, 0.25, 0.25, 1.5, 0.25]
    interactions["engaged"] = [1, 0, 0, 0, 2]
    interactions["holdout"] = [False, False, True, False, False]
    path = write_tables(tables, fmt="parquet")
    with pytest.raises(ContractError) as caught:
        load_dataset(path)
    assert [str(problem) for problem in caught.value.problems] == [
        "interactions.parquet, row 5, column 'engaged': 2 is not 0 or 1",
        "interactions.parquet, row 4, column 'propensity': 1.5 is not in (0, 1]",
    ]


def test_float32_parquet_numbers_are_read_as_written(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """A float32 0.1 became 0.10000000149011612 (a plain cast): not the number the
    file was written with, nor what the same data as CSV gives."""
    tables["interactions"]["propensity"] = np.array([0.5, 0.3, 0.3, 0.1, 0.3], dtype="float32")
    tables["interactions"]["outcome"] = np.array([2.5, 0, 1.1, np.nan, 3], dtype="float32")
    tables["catalog"]["cost"] = np.array([0, 150.5, 0.7], dtype="float32")
    tables["hcps"]["decile"] = np.array([0.3, 7, 1e-7], dtype="float32")
    typed = load_dataset(write_tables(tables, fmt="parquet"))
    written = load_dataset(write_tables(tables, name="text"))
    assert typed.catalog["cost"].tolist() == [0.0, 150.5, 0.7]
    assert typed.hcps["decile"].tolist() == [0.3, 7.0, 1e-7]
    for column in ("propensity", "outcome"):
        assert typed.interactions[column].equals(written.interactions[column]), column
    assert typed.interactions["propensity"].tolist() == [0.3, 0.3, 0.3, 0.5, 0.1]


def test_float16_parquet_numbers_are_read_as_written(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """A float16 0.1 was read as 0.099975586, spelled as the float32 it was widened to."""
    tables["interactions"]["outcome"] = np.array([2.5, 0.1, 1.1, np.nan, 3], dtype="float16")
    tables["catalog"]["cost"] = np.array([0, 0.1, 0.7], dtype="float16")
    typed = load_dataset(write_tables(tables, fmt="parquet"))
    assert typed.catalog["cost"].tolist() == [0.0, 0.1, 0.7]
    assert sorted(typed.interactions["outcome"].dropna().tolist()) == [0.1, 1.1, 2.5, 3.0]


def test_problems_are_collected_and_capped(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    rows = 30
    tables["interactions"] = pd.concat([tables["interactions"].iloc[[0]]] * rows, ignore_index=True)
    tables["interactions"]["propensity"] = "7"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    err = caught.value
    assert len(err.problems) == MAX_PROBLEMS_PER_FILE
    assert err.total == rows
    assert [p.row for p in err.problems] == list(range(1, MAX_PROBLEMS_PER_FILE + 1))
    assert f"and {rows - MAX_PROBLEMS_PER_FILE:,} more" in str(err)


def test_actions_missing_from_the_catalog_say_once_what_to_do(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    # Content taken out of use by deleting its catalog row: every row naming it is a
    # problem, and the way out (keep the row, withdraw it otherwise) is said once.
    rows = 30
    tables["interactions"] = pd.concat([tables["interactions"].iloc[[0]]] * rows, ignore_index=True)
    tables["interactions"]["action_id"] = ["A9"] * 25 + ["A8"] * 5
    tables["interactions"]["channel"] = ""
    tables["interactions"]["content_id"] = ""
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    err = caught.value
    assert err.total == rows and len(err.problems) == MAX_PROBLEMS_PER_FILE
    assert [str(hint) for hint in err.hints] == [
        "interactions.csv, column 'action_id': 30 rows name 2 action_ids not in the catalog "
        "(A9, A8): keep the catalog row of every action the interactions name, so its history "
        "stays readable; for content taken out of use, put its row back and withdraw it by "
        "setting its approved_until in the past, or by listing it under withdrawn_actions in "
        "the serving rules (training/rules.yaml)"
    ]
    said = str(err)
    assert said.count("withdrawn_actions") == 1
    assert said.splitlines()[-1].startswith("  hint: interactions.csv, column 'action_id'")
    assert pickle.loads(pickle.dumps(err)).hints == err.hints


def test_other_problems_get_no_hint(tables: Tables, write_tables: Callable[..., Path]) -> None:
    tables["interactions"].loc[0, "hcp_id"] = "H9"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    assert caught.value.hints == [] and "hint" not in str(caught.value)


def test_ids_a_spreadsheet_wrote_in_scientific_notation_are_said_to_be(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    # Excel shows 123456 and 124999 as 1.2E+05 and exports that: two HCPs became one,
    # refused as a duplicate without a word on why.
    tables["hcps"]["hcp_id"] = ["1.2E+05", "1.2E+05", "H3"]
    tables["catalog"]["action_id"] = ["1,23457E+11", "1,23457E+11", "A3"]
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    err = caught.value
    assert [str(problem) for problem in err.problems] == [
        "hcps.csv, row 2, column 'hcp_id': duplicate hcp_id '1.2E+05' (first in row 1), an "
        "id in scientific notation (see the hint)",
        "catalog.csv, row 2, column 'action_id': duplicate action_id '1,23457E+11' (first in "
        "row 1), an id in scientific notation (see the hint)",
    ]
    assert [str(hint) for hint in err.hints] == [
        f"{file}, column '{column}': ids in scientific notation ('{value}'): a spreadsheet "
        "rewrote long numeric ids as rounded numbers, so that distinct ids may have become "
        "one and none is the id it was: format the id column as text before exporting (or "
        "export from the source system)"
        for file, column, value in (
            ("hcps.csv", "hcp_id", "1.2E+05"),
            ("catalog.csv", "action_id", "1,23457E+11"),
        )
    ] + [
        "interactions.csv: its hcp_id and action_id are checked against the hcps and "
        "catalog files once those are valid"
    ]
    # Rewritten in the interactions only: unknown ids, said the same way (and not taken
    # for catalog rows deleted).
    tables["hcps"]["hcp_id"] = ["H1", "H2", "H3"]
    tables["catalog"]["action_id"] = ["A1", "A2", "A3"]
    tables["interactions"].loc[0, ["hcp_id", "action_id", "channel", "content_id"]] = [
        "1.2E+05",
        "1.3e+11",
        "",
        "",
    ]
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, name="rewritten"))
    err = caught.value
    assert [str(problem) for problem in err.problems] == [
        "interactions.csv, row 1, column 'hcp_id': unknown hcp_id '1.2E+05' (not in hcps), an "
        "id in scientific notation (see the hint)",
        "interactions.csv, row 1, column 'action_id': unknown action_id '1.3e+11' (not in "
        "catalog), an id in scientific notation (see the hint)",
    ]
    assert [hint.column for hint in err.hints] == ["hcp_id", "action_id"]
    # An id that merely repeats is said as before, without the hint.
    tables["hcps"]["hcp_id"] = ["H1", "H1", "H3"]
    with pytest.raises(ContractError) as caught:
        load_hcps(write_tables(tables, name="repeated") / "hcps.csv")
    assert [str(problem) for problem in caught.value.problems] == [
        "hcps.csv, row 2, column 'hcp_id': duplicate hcp_id 'H1' (first in row 1)"
    ]
    assert caught.value.hints == []


def test_hcps_and_catalog_problems_are_reported_together(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    tables["hcps"].loc[0, "consent_email"] = "sometimes"
    tables["catalog"].loc[0, "cost"] = "free"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    assert {p.file for p in caught.value.problems} == {"hcps.csv", "catalog.csv"}
    assert caught.value.total == 2


def test_interactions_cells_are_checked_while_hcps_or_catalog_are_refused(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """An export from one locale breaks every file the same way (a decimal comma in
    the catalog's cost and in the interactions' outcome): one run names both, so the
    files are fixed in one pass, not the catalog first and the history a run later.
    Only what needs the other files (an hcp_id or action_id they list, a channel
    matching the catalog's) waits for them to be valid: an unknown id is not said."""
    tables["catalog"].loc[1, "cost"] = "150,5"
    tables["interactions"].loc[0, "outcome"] = "2,5"
    tables["interactions"].loc[1, "hcp_id"] = "H9"  # unknown: not checked yet
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    assert [str(problem) for problem in caught.value.problems] == [
        "catalog.csv, row 2, column 'cost': '150,5' is not a number (write decimals with '.')",
        "interactions.csv, row 1, column 'outcome': '2,5' is not a number (write decimals "
        "with '.')",
    ]
    waits = (
        "interactions.csv: its hcp_id and action_id are checked against the hcps and "
        "catalog files once those are valid"
    )
    assert [str(hint) for hint in caught.value.hints][-1] == waits
    # Interactions without a problem of their own add nothing: the hint says what waits.
    tables["interactions"].loc[0, "outcome"] = "2.5"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, name="history_fine"))
    assert [problem.file for problem in caught.value.problems] == ["catalog.csv"]
    assert [hint.file for hint in caught.value.hints] == ["catalog.csv", "interactions.csv"]
    assert str(caught.value.hints[-1]) == waits


def test_a_column_of_decimal_commas_is_said_once_even_past_the_problems_shown(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """A European-locale export writes every decimal with ','. The first 20 problems
    of the file are all outcome's: the hint names each column so written (propensity
    too, whose rows are not shown), with how to export it, so one pass fixes all."""
    history = pd.concat([tables["interactions"]] * 5, ignore_index=True)
    history["outcome"] = "2,5"
    history["propensity"] = "0,25"
    history.loc[3, "propensity"] = "half"  # not a decimal comma: not counted
    tables["interactions"] = history
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    shown = {problem.column for problem in caught.value.problems}
    assert shown == {"outcome"} and caught.value.total == 50
    assert [str(hint) for hint in caught.value.hints] == [
        f"interactions.csv, column '{column}': {count} cells written with a decimal comma "
        f"({example}): export the file with '.' as the decimal mark (a spreadsheet set to a "
        "locale that writes ',' also separates the columns with ';'), or replace ',' by '.' "
        "in this column"
        for column, count, example in (("outcome", 25, "'2,5'"), ("propensity", 24, "'0,25'"))
    ]


def test_problem_and_error_render_and_pickle() -> None:
    problem = Problem("interactions.csv", 17, "propensity", "1.5 is not in (0, 1]")
    assert str(problem) == "interactions.csv, row 17, column 'propensity': 1.5 is not in (0, 1]"
    err = ContractError([problem, Problem("hcps.csv", None, None, "no data rows")])
    assert isinstance(err, ValueError)
    assert str(err).splitlines()[1:] == [
        "  interactions.csv, row 17, column 'propensity': 1.5 is not in (0, 1]",
        "  hcps.csv: no data rows",
    ]
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems
    assert str(again) == str(err)


def test_missing_data_directory(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="data directory not found"):
        load_dataset(tmp_path / "nowhere")
    # A table's file given instead of its directory: said so.
    (tmp_path / "hcps.csv").write_text("hcp_id\n")
    with pytest.raises(ContractError, match=r"hcps\.csv: is a file; give the directory"):
        load_dataset(tmp_path / "hcps.csv")


def test_write_table_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unsupported extension '\.xlsx'"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "out.xlsx")


def test_out_of_range_parquet_timestamp_is_reported(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    interactions = tables["interactions"]
    stamps = np.array(["2024-03-01"] * 4 + ["3000-01-01"], dtype="datetime64[us]")
    interactions["timestamp"] = stamps
    with pytest.raises(ContractError, match=at("interactions.parquet", 5, "timestamp", "")):
        load_dataset(write_tables(tables, fmt="parquet"))


_ISO = "is not an ISO 8601 date or date-time (within 1677-2262)"
_WRITE_IT = "write it as 2026-11-30 or 2026-11-30T08:00:00+00:00"
_SERIAL_DAY = (
    "it looks like a spreadsheet's serial day number: format the column as a date before "
    "exporting, so that it is written as 2026-11-30 or 2026-11-30T08:00:00+00:00"
)


def test_a_refused_time_says_how_to_write_it_and_names_a_spreadsheet_serial_day(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    tables["interactions"]["timestamp"] = [
        "04/06/2026",
        "46177.619201",
        "2024-03-01",
        " 12345 ",
        "46177",
    ]
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    assert [str(problem) for problem in caught.value.problems] == [
        f"interactions.csv, row 1, column 'timestamp': '04/06/2026' {_ISO}: {_WRITE_IT}",
        f"interactions.csv, row 2, column 'timestamp': '46177.619201' {_ISO}: {_SERIAL_DAY}",
        f"interactions.csv, row 4, column 'timestamp': '12345' {_ISO}: {_WRITE_IT}",
        f"interactions.csv, row 5, column 'timestamp': '46177' {_ISO}: {_SERIAL_DAY}",
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_time_written_as_seconds_or_milliseconds_since_1970_is_said_to_be_one(
    tables: Tables, write_tables: Callable[..., Path], fmt: str
) -> None:
    """A history from a database or an event stream gives times as epoch numbers:
    refused as no ISO 8601 time, with nothing said of what they are."""
    stamps = pd.to_datetime(tables["interactions"]["timestamp"], utc=True, format="ISO8601")
    seconds = stamps.astype("int64") // 10**9
    tables["interactions"]["timestamp"] = (
        [seconds.iat[0], seconds.iat[1] * 1000, *seconds.iloc[2:]]
        if fmt == "parquet"
        else [str(seconds.iat[0]), str(seconds.iat[1] * 1000), *seconds.iloc[2:].astype(str)]
    )
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, fmt=fmt))
    said = [str(problem) for problem in caught.value.problems]
    assert "it looks like seconds since 1970 (2024-03-02T09:00:00): the contract " in said[0]
    assert "it looks like milliseconds since 1970 (2024-03-01T00:00:00)" in said[1]


def test_a_time_in_a_zone_by_name_is_refused_without_a_warning_printed(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """'2026-06-04 10:45:26 CEST': refused, and pandas' FutureWarning about dropping
    a zone it does not know was printed to the person running validate besides."""
    tables["interactions"].loc[0, "timestamp"] = "2024-03-02 09:00:00 CEST"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ContractError) as caught:
            load_dataset(write_tables(tables))
    assert [str(problem) for problem in caught.value.problems] == [
        f"interactions.csv, row 1, column 'timestamp': '2024-03-02 09:00:00 CEST' {_ISO}: "
        f"{_WRITE_IT}"
    ]


_AFTER_THE_LAST = "later than the last time that can be held, 2262-04-11T23:47:16.854775807"
_BEFORE_THE_FIRST = "earlier than the first time that can be held, 1677-09-21T00:12:43.145224193"


@pytest.mark.parametrize(
    "others",
    [
        pytest.param("2024-03-01T00:00:00Z", id="offsets-alone-as-arrow-reads"),
        pytest.param("2024-03-01", id="spellings-mixed-left-as-text"),
    ],
)
def test_a_time_its_offset_moves_out_of_range_is_refused_not_wrapped_around(
    tables: Tables, write_tables: Callable[..., Path], others: str
) -> None:
    """'2262-04-11T23:47:16-01:00' is 00:47:16 UTC the day after the last time a
    datetime64[ns] holds; pandas moved it by its offset without checking and read it
    as 1677-09-21, a history's first event centuries early."""
    tables["interactions"]["timestamp"] = [
        others,
        "2262-04-11T23:47:16-01:00",
        others,
        "1677-09-21T00:12:44+01:00",
        "2262-04-11T23:47:16.854775807Z",  # the last time held: read
    ]
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    assert [str(problem) for problem in caught.value.problems] == [
        f"interactions.csv, row 2, column 'timestamp': '2262-04-11T23:47:16-01:00' {_ISO}: "
        f"in UTC it is 2262-04-12T00:47:16, {_AFTER_THE_LAST}",
        f"interactions.csv, row 4, column 'timestamp': '1677-09-21T00:12:44+01:00' {_ISO}: "
        f"in UTC it is 1677-09-20T23:12:44, {_BEFORE_THE_FIRST}",
    ]


def test_a_time_beyond_the_range_without_an_offset_says_so(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    tables["interactions"].loc[0, "timestamp"] = "3000-01-01"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    assert str(caught.value.problems[0]) == (
        f"interactions.csv, row 1, column 'timestamp': '3000-01-01' {_ISO}: it is {_AFTER_THE_LAST}"
    )


def test_a_typed_parquet_time_its_zone_moves_out_of_range_is_refused(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """A Parquet column in microseconds with a zone holds 2262-04-11T23:47:16 at
    -01:00; in nanoseconds (as validated) it wrapped around to 1677 as the text did."""
    local = np.array(["2024-03-01"] * 4 + ["2262-04-11T23:47:16"], dtype="datetime64[us]")
    tables["interactions"]["timestamp"] = pd.Series(local).dt.tz_localize("-01:00")
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, fmt="parquet"))
    assert [str(problem) for problem in caught.value.problems] == [
        f"interactions.parquet, row 5, column 'timestamp': 2262-04-11 23:47:16-01:00 {_ISO}: "
        f"in UTC it is 2262-04-12T00:47:16, {_AFTER_THE_LAST}",
    ]


def test_a_serial_day_in_a_typed_parquet_column_is_named_too(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    tables["interactions"]["timestamp"] = [46177.619201, 45352.0, 45352.0, 45356.0, 45352.0]
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, fmt="parquet"))
    assert str(caught.value.problems[0]) == (
        f"interactions.parquet, row 1, column 'timestamp': 46177.619201 {_ISO}: {_SERIAL_DAY}"
    )


def test_a_missing_value_written_as_a_word_is_refused_where_a_value_is_required(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """'#N/A' as a specialty or 'NULL' as a territory was read as one (a specialty no
    content is approved for, a territory of its own); 'NA' names regions, and stays."""
    hcps = tables["hcps"]
    hcps.loc[0, "specialty"] = "#N/A"
    hcps.loc[1, "territory_id"] = "NULL"
    hcps.loc[2, "territory_id"] = "NA"
    tables["catalog"].loc[0, "content_id"] = "None"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    said = [str(problem) for problem in caught.value.problems]
    assert said == [
        "hcps.csv, row 1, column 'specialty': '#N/A' is how a database or a spreadsheet "
        "writes a missing value; specialty needs a value",
        "hcps.csv, row 2, column 'territory_id': 'NULL' is how a database or a spreadsheet "
        "writes a missing value; territory_id needs a value",
        "catalog.csv, row 1, column 'content_id': 'None' is how a database or a spreadsheet "
        "writes a missing value; content_id needs a value",
    ], said


def test_an_unknown_id_names_the_known_one_it_differs_from_only_in_form(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """Ids a spreadsheet rewrote (case, leading zeros, '7.0'): each unknown row says
    which id the other file has, instead of only that it is unknown."""
    tables["hcps"].loc[0, "hcp_id"] = "000123"
    inter = tables["interactions"]
    inter.loc[inter["hcp_id"] == "H1", "hcp_id"] = "123"
    inter.loc[0, "hcp_id"] = "h2"
    inter.loc[3, "action_id"] = "a3"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    said = [str(problem) for problem in caught.value.problems]
    differs = "which differs only in case, leading zeros or a trailing '.0'"
    assert f"unknown hcp_id '123' (not in hcps); hcps has '000123', {differs}" in said[1], said
    assert f"unknown hcp_id 'h2' (not in hcps); hcps has 'H2', {differs}" in said[0], said
    assert any(f"unknown action_id 'a3' (not in catalog); catalog has 'A3', {differs}" in p
               for p in said), said  # fmt: skip


def test_a_warehouse_null_is_shown_as_written_with_what_to_write_instead(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    # '\\N' was shown as '\\\\N' (repr), a cell the file does not hold; and a no-touch
    # row written NULL was told to put a deleted catalog row back.
    tables["interactions"].loc[2, "action_id"] = "NULL"
    tables["interactions"].loc[1, "propensity"] = "\\N"
    tables["interactions"].loc[3, "holdout"] = "NULL"
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    err = caught.value
    said = [str(problem) for problem in err.problems]
    assert set(said) >= {
        "interactions.csv, row 3, column 'action_id': unknown action_id 'NULL' (not in "
        "catalog); write a missing value as an empty cell: an empty action_id is a decision "
        "to not touch",
        "interactions.csv, row 2, column 'propensity': '\\N' is not a number (write a missing "
        "value as an empty cell)",
        "interactions.csv, row 4, column 'holdout': 'NULL' is not a boolean (use true/false, "
        "yes/no, y/n, t/f or 1/0) (write a missing value as an empty cell)",
    }, said
    assert err.hints == []


def test_an_id_longer_than_the_store_keeps_is_refused_naming_file_row_column_and_limit(
    tables: Tables, write_tables: Callable[..., Path]
) -> None:
    """The recommendation log keeps 128 characters of an hcp_id, action_id or
    content_id and 64 of a channel: PostgreSQL cut longer ones short (an id naming
    nothing any more) where SQLite kept them whole. Refused when the files are read,
    each value quoted shortened; one of exactly the limit is read."""
    fits = "H" * 128
    tables["hcps"].loc[0, "hcp_id"] = fits
    tables["interactions"].loc[tables["interactions"]["hcp_id"] == "H1", "hcp_id"] = fits
    tables["hcps"].loc[1, "hcp_id"] = "h" * 129
    catalog = tables["catalog"]
    catalog.loc[0, "action_id"] = "a" * 300
    catalog.loc[1, "channel"] = "Rep " + "v" * 61  # rep_vvv...: 65 characters as read
    catalog.loc[2, "content_id"] = "c" * 129
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables))
    said = [str(problem) for problem in caught.value.problems]
    keep = (
        "characters, all the recommendation log and the feedback store keep; shorten it, "
        "here and wherever it is named"
    )
    assert said == [
        f"hcps.csv, row 2, column 'hcp_id': '{'h' * 40}'... (129 characters) is too long: "
        f"at most 128 {keep}",
        f"catalog.csv, row 1, column 'action_id': '{'a' * 40}'... (300 characters) is too "
        f"long: at most 128 {keep}",
        f"catalog.csv, row 2, column 'channel': 'rep_{'v' * 36}'... (65 characters) is too "
        f"long: at most 64 {keep}",
        f"catalog.csv, row 3, column 'content_id': '{'c' * 40}'... (129 characters) is too "
        f"long: at most 128 {keep}",
    ], said
    tables["hcps"].loc[1, "hcp_id"] = "H2"
    catalog.loc[0, "action_id"], catalog.loc[1, "channel"] = "A1", "rep_visit"
    catalog.loc[2, "content_id"] = tables["interactions"].loc[3, "content_id"] = "c" * 128
    dataset = load_dataset(write_tables(tables, name="fits"))
    assert fits in set(dataset.hcps["hcp_id"]) and fits in set(dataset.interactions["hcp_id"])
    catalog.loc[1, "channel"] = "rep_" + "v" * 60
    assert len(validate_catalog(catalog, file="catalog.csv")["channel"][1]) == 64


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_history_recommendation_id_longer_than_the_log_keeps_is_refused_naming_row_and_limit(
    tables: Tables, write_tables: Callable[..., Path], fmt: str
) -> None:
    """The recommendation log keeps 64 characters of a recommendation_id, and no id the
    service answers with is longer: a longer one in the history names no logged
    decision (another system's id in the column, ids run together), and retrain would
    keep the row as the CRM's own touch while no repeat of a logged send was looked
    for either. Refused, as the feedback file refuses such an event: file, row, column
    and limit; one of exactly 64 is read."""
    history = tables["interactions"]
    history["recommendation_id"] = ["r1", "x" * 65, "", " " + "y" * 64 + " ", "z" * 200]
    with pytest.raises(ContractError) as caught:
        load_dataset(write_tables(tables, fmt=fmt))
    said = [str(problem) for problem in caught.value.problems]
    why = (
        "characters, all the recommendation log keeps, and no recommendation the service "
        "answers with is longer: it names no logged decision; give the id the touch was "
        "made under as the service answered it, or leave the cell empty for a touch made "
        "under none"
    )
    file = f"interactions.{fmt}"
    assert said == [
        f"{file}, row 2, column 'recommendation_id': '{'x' * 40}'... (65 characters) is too "
        f"long: at most 64 {why}",
        f"{file}, row 5, column 'recommendation_id': '{'z' * 40}'... (200 characters) is too "
        f"long: at most 64 {why}",
    ], said
    history.loc[[1, 4], "recommendation_id"] = ["x" * 64, ""]
    read = load_dataset(write_tables(tables, fmt=fmt, name="fits")).interactions
    assert {"x" * 64, "y" * 64} <= set(read["recommendation_id"])


def test_a_send_list_or_an_erasure_list_refuses_an_id_longer_than_the_store_keeps(
    tables: Tables, tmp_path: Path
) -> None:
    path = tmp_path / "send.csv"
    path.write_text(f"hcp_id\nH1\n{'x' * 129}\n")
    said = f"'{'x' * 40}'... (129 characters) is too long: at most 128 characters"
    catalog = validate_catalog(tables["catalog"], file="catalog.csv")
    for load in (partial(load_send_list, catalog=catalog), read_ids):
        with pytest.raises(ContractError, match=at("send.csv", 2, "hcp_id", said)):
            load(path)


def test_a_file_of_one_column_keeps_its_one_name_header(tmp_path: Path) -> None:
    """A line below naming several columns is no sign of lines above the header when
    most lines hold one field: a value with a comma in an id list is said as such."""
    path = tmp_path / "erase.csv"
    path.write_text("hcp_id\nH1\nH,2\nH3\n")
    with pytest.raises(
        ContractError, match=at("erase.csv", 2, None, "2 fields where the header has 1")
    ):
        read_ids(path)
    path.write_text("\nhcp_id\nH1\n")
    with pytest.raises(
        ContractError,
        match=at(
            "erase.csv",
            None,
            None,
            "the header is not on line 1 (line 1 is blank); it seems to be on line 2: 'hcp_id'",
        ),
    ):
        read_ids(path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("Export 2026-12-01\nhcp_id\nH1\nH2\n", 2),
        ("HCP erasure list\n\nhcp_id\nH1\n", 3),
        ("Export 2026-12-01\nhcp_id;\nH1;\nH2;\n", 2),
    ],
    ids=["title", "title-and-blank-line", "title-above-trailing-separators"],
)
def test_a_title_above_the_one_name_header_of_a_one_column_file_is_said(
    tmp_path: Path, tables: Tables, text: str, line: int
) -> None:
    """An export's title line above a header of one column (an erasure or send list)
    was taken for the header, as nothing tells it from one by its fields: the file
    was refused as missing hcp_id, which it holds. The line below naming a column of
    the contract where line 1 names none tells the title."""
    path = tmp_path / "erase.csv"
    path.write_text(text)
    title, header = text.splitlines()[0], text.splitlines()[line - 1]
    said = (
        f"the header is not on line 1 (line 1 holds '{title}'); it seems to be on line "
        f"{line}: '{header}'; remove the lines above it"
    )
    catalog = validate_catalog(tables["catalog"], file="catalog.csv")
    for load in (read_ids, partial(load_send_list, catalog=catalog)):
        with pytest.raises(ContractError, match=at("erase.csv", None, None, said)):
            load(path)


@pytest.mark.parametrize(
    "title", ["HCP export, 2026-12-01", "HCP export; 2026-12-01", "Export,2026-12-01,by ops"]
)
def test_a_title_holding_a_separator_above_the_header_is_said(
    tables: Tables, write_tables: Callable[..., Path], title: str
) -> None:
    """A title with a separator in it names two or three columns, and each row was
    refused as a misfit ('7 fields where the header has 2: a comma inside a
    value?'). Line 1 naming no column of the contract above a line that names some,
    and as many columns or more, is a title."""
    path = write_tables(tables)
    hcps = path / "hcps.csv"
    header = hcps.read_text().splitlines()[0]
    hcps.write_text(f"{title}\n{hcps.read_text()}")
    said = (
        f"the header is not on line 1 (line 1 holds '{title}'); it seems to be on line 2: "
        f"'{header}'; remove the lines above it"
    )
    with pytest.raises(ContractError, match=at("hcps.csv", None, None, said)):
        load_dataset(path)


def test_a_separator_in_the_values_of_every_row_is_still_said_as_such(tmp_path: Path) -> None:
    """The rule above leaves a header naming a column of the contract alone: rows all
    one field wider than it are values with a separator in them, not a header."""
    path = tmp_path / "territories.csv"
    path.write_text("hcp_id,territory_id\nH1,North, East\nH2,South, West\n")
    with pytest.raises(
        ContractError, match=at("territories.csv", 1, None, "3 fields where the header has 2")
    ):
        load_territories(path)
