"""Reading and writing contract tables as CSV or Parquet files."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pandas.api.types import is_datetime64_any_dtype

from nextbest.contract.errors import ContractError, Problem
from nextbest.contract.schema import FORMATS

SEPARATORS = (",", ";", "\t")
SEPARATOR_SAMPLE_LINES = 50


def file_format(path: Path) -> str:
    """'csv' or 'parquet' from the extension (case-insensitive), or '' if neither."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else ""


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a table without interpreting it; shape (rows, columns).

    CSV cells are all ``str`` with '' for empty (nothing is guessed as NA); Parquet
    columns keep their stored types. A ``.parquet`` path may be a directory of Parquet
    parts (as Spark, Dask or pyarrow write a dataset), read as one table in the order
    of its files. Any failure to read becomes a :class:`ContractError` naming the file.
    """
    path = Path(path)
    fmt = file_format(path)

    def fail(message: str) -> ContractError:
        return ContractError([Problem(path.name, None, None, message)])

    if not fmt:
        raise fail(f"unsupported file type {path.suffix!r} (expected .csv or .parquet)")
    parts = _parquet_parts(path) if fmt == "parquet" and path.is_dir() else None
    if parts == []:
        raise fail(f"the directory {path} holds no Parquet file (part files ending .parquet)")
    if parts is None and not path.is_file():
        raise fail(f"file not found: {path}")
    try:
        if fmt == "csv":
            _refuse_repeated_names(path, _header(path))
            frame = _read_csv(path)
            misfits, total, trailing = _misfit_rows(path, _separator(path), _header_width(path))
            if trailing:
                return _read_csv(path, drop_trailing_field=True)
            if misfits:
                raise ContractError(
                    [_misfit_problem(path, *misfit) for misfit in misfits], total=total
                )
            return frame
        # Reading strings dictionary-encoded gives categoricals: the validators then
        # work per distinct value, and millions of str objects are never built twice.
        schema = pq.read_schema(parts[0] if parts else path)
        if parts:
            _refuse_part_mismatch(path, parts, schema)
        _refuse_repeated_names(path, schema.names)
        strings = [
            field.name
            for field in schema
            if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
        ]
        source = [str(part) for part in parts] if parts else path
        return pq.read_table(source, read_dictionary=strings).to_pandas()
    except pd.errors.EmptyDataError:
        raise fail("the file is empty (not even a header)") from None
    except UnicodeDecodeError as err:
        raise ContractError([_not_utf8(path)]) from err
    except (pd.errors.ParserError, csv.Error) as err:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if fields is not None:
            header, line, seen = (int(g) for g in fields.groups())
            # Every such row, not only the first pandas stops at: one pass to fix them all.
            misfits, total, trailing = _misfit_rows(path, _separator(path), _header_width(path))
            if trailing:
                return _read_csv(path, drop_trailing_field=True)
            if not misfits:
                misfits, total = [(line - 1, header, seen)], 1
            raise ContractError(
                [_misfit_problem(path, *misfit) for misfit in misfits], total=total
            ) from err
        raise fail(f"cannot parse CSV: {err}") from err
    except (pa.ArrowException, OSError) as err:
        raise fail(f"cannot read {fmt.upper()} file: {err}") from err


def _parquet_parts(directory: Path) -> list[Path]:
    """The Parquet files of a dataset directory, in path order, subdirectories
    included; bookkeeping files (``_SUCCESS``, ``_metadata``, ``.crc``) left out."""
    return sorted(
        part
        for part in directory.rglob("*")
        if part.is_file()
        and part.suffix.lower() == ".parquet"
        and not part.name.startswith(("_", "."))
    )


def _refuse_part_mismatch(directory: Path, parts: list[Path], first: pa.Schema) -> None:
    """Every part of a dataset directory must have the first one's columns and types:
    a part written with another type (a column of text among numbers) is named."""
    for part in parts[1:]:
        schema = pq.read_schema(part)
        if schema.names != first.names or schema.types != first.types:
            differ = [
                f"{name} ({schema.field(name).type} there, {first.field(name).type} in "
                f"{parts[0].name})"
                if name in first.names
                else f"{name} (not in {parts[0].name})"
                for name in schema.names
                if name not in first.names or schema.field(name).type != first.field(name).type
            ] or [f"columns {', '.join(schema.names)} against {', '.join(first.names)}"]
            raise ContractError(
                [
                    Problem(
                        directory.name,
                        None,
                        None,
                        f"part {part.relative_to(directory)} differs from the first part: "
                        + "; ".join(differ),
                    )
                ]
            )


def _read_csv(path: Path, *, drop_trailing_field: bool = False) -> pd.DataFrame:
    """All cells as ``str``; with ``drop_trailing_field`` rows may carry one field
    beyond the header's, which is dropped (the caller checked it is empty)."""
    # utf-8-sig drops the byte-order mark spreadsheet programs put first.
    options: dict[str, Any] = {
        "dtype": str,
        "keep_default_na": False,
        "encoding": "utf-8-sig",
        "sep": _separator(path),
    }
    if not drop_trailing_field:
        return pd.read_csv(path, **options)
    columns = pd.read_csv(path, nrows=0, **options).columns  # as pandas names them
    width = len(columns) + 1
    frame = pd.read_csv(path, header=None, skiprows=1, names=list(range(width)), **options)
    frame = frame.iloc[:, :-1]
    frame.columns = columns
    return frame


def _not_utf8(path: Path) -> Problem:
    """Where a CSV file stops being UTF-8, and what it most likely is instead."""
    data = path.read_bytes()
    advice = "save it as UTF-8 (in Excel: 'CSV UTF-8')"
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return Problem(path.name, None, None, f"the file is UTF-16 text, not UTF-8: {advice}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start)  # 0: the header
        byte = data[err.start]
        # 0xC0-0xFF are the accented letters of Latin-1 / Windows-1252 (a Western
        # spreadsheet's export); other bytes say nothing of the encoding (Shift-JIS,
        # GB 18030, ... use them too), so no guess is offered for them.
        guess = bytes([byte]).decode("cp1252")
        seen = f", '{guess}' in Latin-1 or Windows-1252?" if byte >= 0xC0 else ""
        return Problem(
            path.name,
            line or None,
            None,
            f"{'the header is not' if not line else 'not'} UTF-8 text (byte 0x{byte:02x}"
            f"{seen}): {advice}",
        )
    return Problem(path.name, None, None, f"not UTF-8 text: {advice}")


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        return next(csv.reader(file, delimiter=_separator(path)), [])


def _header_width(path: Path) -> int:
    return len(_header(path))


def _refuse_repeated_names(path: Path, names: list[str]) -> None:
    """A column named twice: pandas would rename the second ('decile.1') and keep it
    as a feature, or read the first of two ``hcp_id`` columns as the id, silently."""
    where: dict[str, list[int]] = {}
    for position, name in enumerate(names, start=1):
        if name.strip():
            where.setdefault(name.strip(), []).append(position)
    repeated = [
        Problem(
            path.name,
            None,
            name,
            f"appears {len(at)} times in the header (columns "
            f"{', '.join(map(str, at[:-1]))} and {at[-1]}): keep one, or rename the others",
        )
        for name, at in where.items()
        if len(at) > 1
    ]
    if repeated:
        raise ContractError(repeated)


def _misfit_rows(
    path: Path, sep: str, n_columns: int, limit: int = 20
) -> tuple[list[tuple[int, int, int]], int, bool]:
    """(row, fields expected, fields seen) of the first ``limit`` rows whose number of
    fields differs from the header's. pandas stops at the first row with too many,
    and pads a row with too few with empty cells, so a value left out in the middle
    shifts the rest one column to the left, silently. A second parse by Arrow's CSV
    reader, converting one column only, finds them all; the second value counts them.

    Every row ending with a separator the header lacks (an empty field beyond the
    header's, as some exports write each line) is no misfit: nothing is lost by
    dropping that field, and the third value is True: the file is read with it
    dropped. When other rows fit the header, such rows are misfits like any other:
    a separator inside one of their values may have shifted them by a column.
    """
    found: list[tuple[int, int, int]] = []
    ending: list[tuple[int, int, int]] = []  # rows with one more field, the last empty
    seen = [0, 0]  # misfits, rows ending with a separator the header lacks

    def keep(row: pa_csv.InvalidRow) -> str:
        # Arrow counts records from 1 with the header, blank lines skipped as pandas does.
        number = -1 if row.number is None else row.number - 1
        misfit = (number, row.expected_columns, row.actual_columns)
        if row.actual_columns == row.expected_columns + 1 and (row.text or "").rstrip(
            "\r\n"
        ).endswith(sep):
            seen[1] += 1
            if len(ending) < limit:
                ending.append(misfit)
            return "skip"
        seen[0] += 1
        if len(found) < limit:
            found.append(misfit)
        return "skip"

    names = [f"c{i}" for i in range(n_columns)]
    try:
        fitting = _arrow_parse(path, sep, names, keep)
    except pa.ArrowException:
        return [], 0, False  # a file Arrow parses otherwise than pandas: pandas' reading stands
    if seen[1] and fitting:
        found = sorted(found + ending)[:limit]
        seen[0] += seen[1]
    return found, seen[0], not found and seen[1] > 0


def _misfit_problem(path: Path, row: int, expected: int, seen: int) -> Problem:
    if seen > expected:
        separator = {",": "comma", ";": "semicolon", "\t": "tab"}[_separator(path)]
        advice = f"a {separator} inside a value? put such values in double quotes"
    else:
        advice = (
            "every row needs every separator, empty cells included (the values after a "
            "missing one would land in the wrong columns)"
        )
    fields = "1 field" if seen == 1 else f"{seen} fields"
    return Problem(path.name, row, None, f"{fields} where the header has {expected}: {advice}")


def _arrow_parse(path: Path, sep: str, names: list[str], keep: Any) -> int:
    """Rows that fit the header; ``keep`` is called with each that does not."""
    return pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(use_threads=False, skip_rows=1, column_names=names),
        parse_options=pa_csv.ParseOptions(
            delimiter=sep, invalid_row_handler=keep, newlines_in_values=True
        ),
        convert_options=pa_csv.ConvertOptions(
            include_columns=names[:1], column_types={names[0]: pa.string()}
        ),
    ).num_rows


def _separator(path: Path) -> str:
    """The one of ',', ';' and a tab (the separators spreadsheet programs write,
    ';' where ',' is the decimal mark) the header holds; of several, the one that
    splits the first lines into as many fields as the header (a header ``Potential,
    EUR`` in a ';' file), else ','."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        sample = list(itertools.islice(file, SEPARATOR_SAMPLE_LINES))
    header = sample[0] if sample else ""
    found = [sep for sep in SEPARATORS if sep in header]
    if len(found) > 1:
        fitting = [sep for sep in found if _splits_alike(sample, sep)]
        if len(fitting) == 1:
            return fitting[0]
    return "," if not found or "," in found else found[0]


def _splits_alike(sample: list[str], sep: str) -> bool:
    """Whether ``sep`` splits every record of ``sample`` as the header (one trailing
    empty field allowed); the last record may be cut short by the sample's end."""
    try:
        records = list(csv.reader(sample, delimiter=sep))
    except csv.Error:
        return False
    if not records:
        return False
    width = len(records[0])
    body = records[1:-1] if len(sample) == SEPARATOR_SAMPLE_LINES else records[1:]
    return width > 1 and all(len(r) in (width, width + 1) for r in body if r)


def write_table(df: pd.DataFrame, path: Path | str) -> None:
    """Write ``df`` to ``path`` as CSV or Parquet, chosen by the extension.

    CSV: no index, datetimes as ISO 8601 ('2024-01-05' or '2024-01-05T10:30:00',
    as precise as needed, empty for NaT), floats at full precision, so that reading
    back through the contract gives the same values. Raises ``ValueError`` for any
    other extension.
    """
    path = Path(path)
    fmt = file_format(path)
    if fmt == "parquet":
        df.to_parquet(path, engine="pyarrow", index=False)
    elif fmt == "csv":
        out = df.copy(deep=False)
        for column in out.columns:
            if is_datetime64_any_dtype(out[column].dtype):
                out[column] = _iso_strings(out[column])
        out.to_csv(path, index=False)
    else:
        raise ValueError(
            f"cannot write {path.name}: unsupported extension {path.suffix!r} "
            "(use .csv or .parquet)"
        )


def _iso_strings(stamps: pd.Series) -> pd.Series:
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    # unit="auto" picks the coarsest exact unit per value: dates stay dates, and
    # nanoseconds survive.
    strings = np.datetime_as_string(stamps.to_numpy(dtype="datetime64[ns]"), unit="auto")
    return pd.Series(np.where(stamps.isna().to_numpy(), "", strings), index=stamps.index)
