"""Reading and writing contract tables as CSV or Parquet files."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import re
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pandas.api.types import is_datetime64_any_dtype

from nextbest.contract.errors import ContractError, Problem, RowNumbers
from nextbest.contract.parse import QUOTED_AT_MOST, quoted
from nextbest.contract.schema import CONTRACT_COLUMNS, FORMATS, header_words

SEPARATORS = (",", ";", "\t")
# attrs key of a CSV frame read without the empty rows at its end: see _without_empty_tail.
EMPTY_ROWS = "empty_rows"
# attrs key of a CSV frame saying how to number its rows as the file's lines: see row_numbers.
ROW_NUMBERS = "row_numbers"
# What reading a CSV file says of that file only: never written with a table, nor
# taken from a Parquet file's metadata, where pandas stores a frame's attrs.
_OF_THE_FILE_READ = (EMPTY_ROWS, ROW_NUMBERS)
SEPARATOR_SAMPLE_LINES = 50


def file_format(path: Path) -> str:
    """'csv' or 'parquet' from the extension (case-insensitive), or '' if neither."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else ""


def read_table(
    path: Path | str, *, times: Collection[str] = (), nul_refused: bool = True
) -> pd.DataFrame:
    """Read a table without interpreting it; shape (rows, columns).

    CSV cells are all text, ``str`` or a categorical of ``str`` (see
    :func:`_read_csv_arrow`), with '' for empty (nothing is guessed as NA), but the
    columns named in ``times`` (the contract's times, such as an interactions file's
    ``timestamp``), read as naive UTC ``datetime64[ns]`` (NaT for empty) in Arrow's
    pass when every cell is a time the validators would read alike (see
    :func:`_as_times`), as a Parquet file stores them; rows at the
    end of a CSV file with every cell empty are skipped, ``attrs[EMPTY_ROWS]`` saying
    which (first, last; 1-based data rows). A CSV file's rows are numbered as its
    lines are, blank lines counted (:class:`RowNumbers`), here and, through
    :func:`row_numbers`, in every problem found later. Parquet columns keep their
    stored types.
    A ``.parquet`` path may be a directory of Parquet parts (as Spark, Dask or pyarrow
    write a dataset), read as one table in the order of its files. A text value holding
    a NUL character is refused, in a Parquet file as in a CSV one, unless
    ``nul_refused`` is False (for a feedback file, whose events are checked one by
    one: an opt-out is stored whatever its text holds); a CSV file's NUL is refused
    always, since no reader gets past it. Any failure to read becomes a
    :class:`ContractError` naming the file.
    """
    path = Path(path)
    fmt = file_format(path)

    def fail(message: str) -> ContractError:
        return ContractError([Problem(path.name, None, None, message)])

    if not fmt and path.is_dir():  # a data directory named where its file goes
        raise fail(
            f"{path} is a directory: name a .csv or .parquet file (a directory of "
            "Parquet parts is named with .parquet at its end)"
        )
    if not fmt and not path.exists() and not path.is_symlink():  # a typo, not a type
        raise fail(f"file not found: {path} (expected a .csv or .parquet file)")
    if not fmt:
        raise fail(f"unsupported file type {path.suffix!r} (expected .csv or .parquet)")
    if why := unreadable(path):
        raise fail(why)
    parts = _parquet_parts(path) if fmt == "parquet" and path.is_dir() else None
    if parts == []:
        raise fail(f"the directory {path} holds no Parquet file (part files ending .parquet)")
    if parts is None and not path.is_file():
        raise fail(f"file not found: {path}")
    if parts is None and (other := _other_format(path, fmt)):
        raise fail(other)
    try:
        if fmt == "csv":
            _refuse_nul_bytes(path)
            _refuse_lines_above_header(path)
            _refuse_repeated_names(path, _header(path))
            fast = _read_csv_arrow(path, times)
            if fast is not None:  # every row fits the header: no misfit to look for
                _refuse_repeated_header(path, fast)
                return fast
            frame = _read_csv(path)
            misfits, total, trailing = _misfit_rows(path, _separator(path), _header_width(path))
            if trailing:
                frame = _read_csv(path, drop_trailing_field=True)
                _refuse_repeated_header(path, frame)
                return frame
            if misfits:
                raise ContractError(
                    [_misfit_problem(path, *misfit) for misfit in misfits], total=total
                )
            _refuse_repeated_header(path, frame)
            return frame
        if parts:
            table = _checked_text(path, _read_parts(path, parts), nul_refused)
            frame = _with_pandas_index(_to_pandas(table), parts[0])
            return _without_attrs(frame, _OF_THE_FILE_READ)
        # Reading strings dictionary-encoded gives categoricals: the validators then
        # work per distinct value, and millions of str objects are never built twice.
        schema = pq.read_schema(path)
        _refuse_repeated_names(path, schema.names)
        _refuse_nested(path, schema)
        strings = _repeating_text(path, [field.name for field in schema if _is_text(field.type)])
        table = pq.read_table(path, read_dictionary=strings, partitioning=None)
        frame = _to_pandas(_checked_text(path, table, nul_refused))
        return _without_attrs(frame, _OF_THE_FILE_READ)
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
                misfits, total = [(line - 1, header, seen, False)], 1
            raise ContractError(
                [_misfit_problem(path, *misfit) for misfit in misfits], total=total
            ) from err
        if "EOF inside string" in str(err):
            raise ContractError([_unclosed_quote(path)]) from err
        raise fail(f"cannot parse CSV: {err}") from err
    except (pa.ArrowException, OSError) as err:
        raise fail(f"cannot read {fmt.upper()} file: {err}") from err


# The first bytes of files that are often given a .csv name (or a CSV a .parquet
# one): what each is, and what to do.
_SIGNATURES = (
    (b"PAR1", "a Parquet file", "name it {stem}.parquet"),
    (
        b"PK\x03\x04",
        "a zip archive (an Excel .xlsx workbook?)",
        "save it as CSV UTF-8, or unzip it",
    ),
    (b"\xd0\xcf\x11\xe0", "an Excel 97-2003 (.xls) workbook", "save it as CSV UTF-8"),
    (b"\x1f\x8b", "gzip-compressed", "decompress it (gunzip)"),
)


def _other_format(path: Path, fmt: str) -> str:
    """Why file ``path`` named for ``fmt`` holds another format ('is a Parquet file,
    not CSV: name it hcps.parquet'), by its first bytes, or ''. Read as CSV, such a
    file was refused for a NUL byte in its header, and as Parquet a CSV file for
    Parquet's missing magic bytes: neither said what the file is."""
    try:
        with path.open("rb") as file:
            head = file.read(4)
            file.seek(max(path.stat().st_size - 4, 0))
            tail = file.read(4)
    except OSError:
        return ""  # said when it is read
    for signature, what, advice in _SIGNATURES:
        if not head.startswith(signature):
            continue
        # Parquet ends as it starts: a CSV header 'PAR1,...' is text.
        parquet = signature == b"PAR1"
        if not (parquet and (fmt == "parquet" or tail != b"PAR1")):
            return f"is {what}, not {fmt.upper()}: {advice.format(stem=path.stem)}"
    if fmt == "parquet" and head and not head.startswith(b"PAR1"):
        try:
            with path.open("rb") as file:  # a character cut at the end of the sample is text
                codecs.getincrementaldecoder("utf-8")().decode(file.read(1 << 12), final=False)
        except UnicodeDecodeError:
            return ""  # a corrupt file, said when it is read
        return f"holds text, not Parquet (a CSV file?): name it {path.stem}.csv if it is one"
    return ""


def unreadable(path: Path, *, listed: bool = True) -> str:
    """Why this process cannot read ``path`` (a file, or a directory to list; to
    open files in only, without ``listed``), said for a message after its name, or
    '' when it can (or it does not exist: said otherwise). ``os.access`` answers for
    the real user; root can read anything."""
    try:
        if path.is_symlink() and not path.exists():
            return (
                f"is a symbolic link to {os.readlink(path)}, which does not exist (moved or "
                "deleted?): point the link at the file, or put the file in its place"
            )
        if not path.exists():
            return ""
        # A directory is searched (x) to open its files, and read (r) to list them.
        listing = os.R_OK if listed else 0
        need = os.X_OK | listing if path.is_dir() else os.R_OK
        if os.access(path, need):
            return ""
    except OSError as err:  # a directory on the way that cannot be searched
        return f"cannot be reached: {err.strerror}"
    kind = "directory" if path.is_dir() else "file"
    return (
        f"cannot be read: permission denied to the user running nextbest (uid "
        f"{os.getuid()}); give that user read access to the {kind} (chmod, chown), or run "
        "as one who has it"
    )


def _with_pandas_index(frame: pd.DataFrame, part: Path) -> pd.DataFrame:
    """``frame`` read from parts with the columns pandas wrote from a frame's index
    (``__index_level_0__``, or the index's name) made its index again, as reading a
    single file does: joining the parts loses the metadata that says which they are,
    and they were read as columns of the table (see :func:`index_as_columns`)."""
    meta = pq.read_schema(part).pandas_metadata or {}
    stored = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    stored = [c for c in stored if c in frame.columns]
    if not stored:
        return frame
    names = {c.get("field_name"): c.get("name") for c in meta.get("columns", [])}
    frame = frame.set_index(stored)
    frame.index.names = [names.get(c) for c in stored]
    return frame


def index_as_columns(frame: pd.DataFrame, known: Collection[str]) -> pd.DataFrame:
    """``frame`` (as :func:`read_table` gives it) with the levels of its index named
    for a column of ``known`` made columns (an ``hcp_id`` written as the index,
    ``df.set_index("hcp_id").to_parquet(...)``), the other levels left in the index,
    which no reader takes for a column: pandas' ``__index_level_0__``, a row number."""
    levels = [
        name
        for name in frame.index.names
        if name is not None and str(name) in known and name not in frame.columns
    ]
    return frame.reset_index(level=levels) if levels else frame


def saved_index_names(frame: pd.DataFrame) -> list[str]:
    """The names of the levels of ``frame``'s index (as :func:`read_table` gives it)
    that pandas saved with values under a name and that are no column of it, left in
    the index by :func:`index_as_columns`: ``region`` of
    ``df.set_index("region").to_parquet(path)``. Row numbers saved as a range (a
    ``RangeIndex``, named or not) hold no value of the table, and an unnamed index
    (``__index_level_0__``) names none: neither is listed."""
    if isinstance(frame.index, pd.RangeIndex):
        return []
    return [
        str(name)
        for name in frame.index.names
        if name is not None and name not in frame.columns  # set_index(drop=False): kept
    ]


def _parquet_parts(directory: Path) -> list[Path]:
    """The Parquet files of a dataset directory, in path order, subdirectories
    included; bookkeeping files (``_SUCCESS``, ``_metadata``, ``.crc``) left out.
    A part or subdirectory that cannot be read (a link to a deleted file, no
    permission) is a :class:`ContractError` naming it: skipped, its rows would be
    missing from the table without a word."""
    parts: list[Path] = []

    def refuse(error: OSError) -> None:
        where = Path(error.filename) if error.filename else directory
        raise _part_problem(directory, where, unreadable(where) or f"cannot be read: {error}")

    for folder, subfolders, files in os.walk(directory, onerror=refuse):
        for name in sorted(subfolders):
            if why := unreadable(Path(folder) / name):
                raise _part_problem(directory, Path(folder) / name, why)
        for name in files:
            part = Path(folder) / name
            if part.suffix.lower() != ".parquet" or name.startswith(("_", ".")):
                continue
            if why := unreadable(part):
                raise _part_problem(directory, part, why)
            if part.is_file():
                parts.append(part)
    return sorted(parts)


def _refuse_nested(path: Path, schema: pa.Schema) -> None:
    """Columns holding lists, structs or maps: every column of the contract holds one
    value per cell, and pandas gives such cells as arrays or dicts that no check can
    read (a ``TypeError`` deep in parsing, not a word on the column)."""
    nested = [
        Problem(
            path.name,
            None,
            field.name,
            f"holds {_nested_kind(field.type)} ({field.type}), not one value per cell: "
            "write one number, text, boolean or time per cell (a list of specialties as "
            "one text joined by ';'), or drop the column",
        )
        for field in schema
        if _nested_kind(field.type)
    ]
    if nested:
        raise ContractError(nested)


def _nested_kind(kind: pa.DataType) -> str:
    """'lists', 'structs' or 'maps' for a nested type (dictionary-encoded included),
    else ''."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_map(kind):
        return "maps"
    if (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_large_list_view(kind)
    ):
        return "lists"
    if pa.types.is_struct(kind) or pa.types.is_union(kind):
        return "structs"
    return ""


def _checked_text(path: Path, table: pa.Table, nul_refused: bool) -> pa.Table:
    """``table`` read from Parquet ``path`` with its bytes read as text (see
    :func:`_binary_as_text`) and, with ``nul_refused``, its text refused where a value
    holds a NUL character (see :func:`_refuse_nul_text`), as a CSV file's text is."""
    table = _binary_as_text(path, table)
    if nul_refused:
        _refuse_nul_text(path, table)
    return table


def _refuse_nul_text(path: Path, table: pa.Table) -> None:
    """A text value holding a NUL character (0x00), as a CSV file's are refused (see
    :func:`_refuse_nul_bytes`): a corrupt export, or text padded to a fixed width
    with NULs ('H2\\x00\\x00'), which no other file or request spells so (an id
    that matches none) and PostgreSQL cannot store. The first, by row and column."""
    for position, field in enumerate(table.schema):
        kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if not (_is_text(kind) or pa.types.is_string_view(kind)):
            continue
        column = table.column(position)
        if pa.types.is_dictionary(field.type):
            chunks = [chunk.dictionary for chunk in column.chunks]
            if not any(pc.any(pc.match_substring(c, "\x00")).as_py() for c in chunks):
                continue
            column = column.cast(kind)
        found = pc.match_substring(column, "\x00")
        if not pc.any(found).as_py():
            continue
        row = pc.index(found, True).as_py() + 1
        raise ContractError(
            [
                Problem(
                    path.name,
                    row,
                    field.name,
                    "holds a NUL character (0x00), which no text has: a corrupt export, or "
                    "text padded to a fixed width? remove it (an id would match none "
                    "written without it)",
                )
            ]
        )


def _binary_as_text(path: Path, table: pa.Table) -> pa.Table:
    """``table`` with its columns of bytes (Parquet ``BINARY`` without the annotation
    that says it is text, as Hive, Impala and older Spark write strings) read as the
    UTF-8 text they hold, as every reader of the contract takes text; a value that is
    not UTF-8 is refused, naming its row and column, as in a CSV file. Left as bytes,
    a text column reached the checks as ``b'...'`` values, and one byte that is not
    UTF-8 stopped them with a ``UnicodeDecodeError``."""
    for position, field in enumerate(table.schema):
        if not _is_bytes(field.type):
            continue
        try:
            text = table.column(position).cast(pa.string())
        except pa.ArrowInvalid:
            raise ContractError(
                [_bytes_not_utf8(path, field.name, table.column(position))]
            ) from None
        table = table.set_column(position, field.name, text)
    return table


def _is_bytes(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_binary_view(kind)
    )


def _bytes_not_utf8(path: Path, name: str, column: pa.ChunkedArray) -> Problem:
    """The first value of a column of bytes that is not UTF-8 text, by row (1-based)."""
    for row, value in enumerate(column.to_pylist(), start=1):
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as err:
            return Problem(
                path.name,
                row,
                name,
                f"not UTF-8 text ({_byte_said(value[err.start])}): the column holds bytes, "
                "read as text; write it as UTF-8 text (a string column), or drop the column",
            )
    return Problem(path.name, None, name, "not UTF-8 text: write it as UTF-8 text")


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


# Spark's directory name for a partition whose value is null.
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def _read_parts(directory: Path, parts: list[Path]) -> pa.Table:
    """The parts of a dataset directory as one table, in path order.

    Parts written at different times may store a column in different but compatible
    types (int32 and int64, timestamps in ns and in us with a zone, strings plain and
    dictionary-encoded, a column all null): each is cast to the type that holds them
    all (see :func:`_common_type`); types that do not combine (text and numbers) are
    refused, naming the part. Values written only in directory names, as Spark's
    ``partitionBy`` writes them (``territory_id=T1/part-0.parquet``), are read as
    text columns (``007`` keeps its zeros), ``__HIVE_DEFAULT_PARTITION__`` as missing.
    """
    schemas = [pq.read_schema(part) for part in parts]
    names = schemas[0].names
    for part, schema in zip(parts[1:], schemas[1:], strict=True):
        if sorted(schema.names) != sorted(names):
            differ = [
                f"{name} (not in {parts[0].name})" for name in schema.names if name not in names
            ]
            differ += [
                f"{name} (only in {parts[0].name})" for name in names if name not in schema.names
            ]
            raise _part_problem(
                directory,
                part,
                f"has other columns than {parts[0].relative_to(directory)}: "
                + "; ".join(differ)
                + ": write every part with the same columns (a column added later: add it, "
                "empty, to the older parts)",
            )
    keys = [_partition_values(directory, part) for part in parts]
    for part, values in zip(parts[1:], keys[1:], strict=True):
        if list(values) != list(keys[0]):

            def under(at: dict[str, str | None]) -> str:
                return ", ".join(f"{key}=" for key in at) or "no key=value directory"

            raise _part_problem(
                directory,
                part,
                f"lies under {under(values)} where {parts[0].relative_to(directory)} lies "
                f"under {under(keys[0])}: every part must be under the same keys",
            )
    _refuse_repeated_names(directory, [*names, *keys[0]])
    target = pa.schema(
        [pa.field(name, _part_type(directory, parts, schemas, name)) for name in names]
    )
    _refuse_nested(directory, target)
    strings = [field.name for field in target if _is_text(field.type)]
    tables = []
    for part, values in zip(parts, keys, strict=True):
        table = pq.read_table(part, read_dictionary=strings, partitioning=None)
        columns = [_conform(table.column(field.name), field.type) for field in target]
        columns += [
            pa.chunked_array([pa.array([value] * table.num_rows, pa.string())]).dictionary_encode()
            for value in values.values()
        ]
        tables.append(pa.table(columns, names=[*names, *values]))
    return pa.concat_tables(tables)


def _part_problem(directory: Path, part: Path, message: str) -> ContractError:
    return ContractError(
        [Problem(directory.name, None, None, f"part {part.relative_to(directory)} {message}")]
    )


def _partition_values(directory: Path, part: Path) -> dict[str, str | None]:
    """The ``key=value`` directories between ``directory`` and ``part``, values as
    written (URL escapes decoded, as Spark writes '/' or '=' in a value)."""
    values: dict[str, str | None] = {}
    for name in part.relative_to(directory).parent.parts:
        key, equals, value = name.partition("=")
        if equals and key:
            values[key] = None if value == _NULL_PARTITION else unquote(value)
    return values


def _part_type(
    directory: Path, parts: list[Path], schemas: list[pa.Schema], name: str
) -> pa.DataType:
    """The type every part's ``name`` column is read as, or a :class:`ContractError`
    naming the first part whose type does not combine with the ones before it."""
    kinds: list[pa.DataType] = []
    first: dict[pa.DataType, Path] = {}
    for part, schema in zip(parts, schemas, strict=True):
        kind = schema.field(name).type
        common = _common_type([*kinds, kind])
        if common is None:
            before = next((k for k in kinds if _common_type([k, kind]) is None), kinds[0])
            raise _part_problem(
                directory,
                part,
                f"differs from {first[before].relative_to(directory)}: {name} ({kind} there, "
                f"{before} in {first[before].relative_to(directory)}), types that do not "
                "combine: cast the column to one type and rewrite the part",
            )
        first.setdefault(kind, part)
        kinds.append(kind)
    common = _common_type(kinds)
    assert common is not None
    return common


_UNITS = ("s", "ms", "us", "ns")


def _common_type(kinds: list[pa.DataType]) -> pa.DataType | None:
    """The type that holds values of every one of ``kinds`` (parts of one column),
    or None when they do not combine (text and numbers). Dictionary-encoded values
    count as their values, a column all null as any type; integers widen, and
    integers and floats combine as floats (a value a float cannot hold exactly is
    refused when read). Timestamps take the finest unit, and UTC when any has a zone:
    a naive timestamp is read as UTC everywhere in the contract, so no instant moves."""
    plain = [k.value_type if pa.types.is_dictionary(k) else k for k in kinds]
    known = list(dict.fromkeys(k for k in plain if not pa.types.is_null(k)))
    if not known:
        return pa.null()
    if all(pa.types.is_timestamp(k) for k in known):
        unit = max((k.unit for k in known), key=_UNITS.index)
        return pa.timestamp(unit, "UTC" if any(k.tz for k in known) else None)
    try:
        merged = pa.unify_schemas(
            [pa.schema([pa.field("c", k)]) for k in known], promote_options="permissive"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    kind = merged.field("c").type
    # Permissive promotion also turns numbers into text or decimals: not a combination.
    if (_is_text(kind) or pa.types.is_binary(kind)) and not all(_is_text(k) for k in known):
        return None
    return kind


def _conform(column: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    """``column`` cast to ``kind``; text dictionary-encoded (as the single-file read
    gives it)."""
    if _is_text(kind):
        if column.type == pa.dictionary(pa.int32(), kind):
            return column
        return column.cast(kind).dictionary_encode()
    return column if column.type == kind else column.cast(kind)


def _read_csv_arrow(path: Path, times: Collection[str] = ()) -> pd.DataFrame | None:
    """The CSV file as :func:`_read_csv` reads it, parsed by Arrow's CSV reader (one
    parse, where pandas' reading took two: see :func:`_misfit_rows`), a column whose
    values repeat dictionary-encoded (a categorical of ``str``, '' for empty) as a
    Parquet file's text is read (see :func:`_as_text`): a few distinct values stored
    once each, not millions of ``str``, and the validators work per distinct value;
    a column named in ``times`` whose cells are all times read as times (see
    :func:`_as_times`), never held as ``str`` (docs/data.md has the time and memory
    it saves).

    None when Arrow might read the file otherwise than pandas; :func:`_read_csv` reads
    it then, as before, problems and all: a row whose fields are not the header's
    (a misfit, a trailing separator, a line of spaces, which pandas skips), text
    that is not UTF-8, a header of one column (a line of spaces is a value to
    Arrow there), a header with a quote or a line break inside it, a quote left open
    in the last field (Arrow takes the rest of the file for its value), a header
    pandas splits otherwise than the csv module.
    """
    sep = _separator(path)
    with path.open("rb") as file:
        head = file.read(1 << 16)
    ends = [at for at in (head.find(b"\n"), head.find(b"\r")) if at >= 0]
    if not ends or b'"' in head[: min(ends)]:
        return None
    options: dict[str, Any] = {"keep_default_na": False, "encoding": "utf-8-sig", "sep": sep}
    columns = pd.read_csv(path, nrows=0, dtype=str, **options).columns  # as pandas names them
    if len(columns) < 2 or len(columns) != _header_width(path):
        return None
    names = [f"c{i}" for i in range(len(columns))]
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(skip_rows=1, column_names=names),
            # No invalid_row_handler: a row that does not fit is an error, and pandas reads.
            parse_options=pa_csv.ParseOptions(delimiter=sep, newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
            ),
        )
    except pa.ArrowException:
        return None
    if table.num_rows and _open_quote_at_end(path, table.column(names[-1])[-1].as_py()):
        return None
    cells: dict[int, Any] = {}
    for position, name in enumerate(columns):  # each column's Arrow memory freed once converted
        stamps = _as_times(table.column(0)) if name in times else None
        cells[position] = stamps if stamps is not None else _as_text(table.column(0))
        table = table.remove_column(0)
    frame = pd.DataFrame(cells, copy=False)
    frame.columns = columns
    frame.attrs[ROW_NUMBERS] = {"file": str(path), "separator": sep, "rows": len(frame)}
    _release_arrow_memory()
    return _without_empty_tail(frame)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as pandas, each column's Arrow memory freed once converted (the
    table is unusable after), and given back to the system (see
    :func:`_release_arrow_memory`).

    An integer column with nulls (a warehouse's ``BIGINT`` id beside empty cells, as
    an interactions file's ``action_id`` on its no-touch rows) is read as pandas'
    nullable integers, as pandas reads back such a column it wrote itself: Arrow
    makes it float64 otherwise, which rounds an integer past 2**53
    (123456789012345678 read as 1.2345678901234568e+17, an id no file holds). Its
    other integer columns stay int64 (or their width).
    """
    with_nulls = {
        field.type
        for field, column in zip(table.schema, table.columns, strict=True)
        if pa.types.is_integer(field.type) and column.null_count
    }
    kept = [
        field.name
        for field, column in zip(table.schema, table.columns, strict=True)
        if field.type in with_nulls and not column.null_count
    ]
    mapper = {kind: _NULLABLE_INTEGERS[kind] for kind in with_nulls}.get if with_nulls else None
    frame = table.to_pandas(split_blocks=True, self_destruct=True, types_mapper=mapper)
    del table
    for name in kept:  # of a type mapped for another column's nulls: plain integers again
        if name in frame.columns:  # not the index pandas saved (see index_as_columns)
            frame[name] = frame[name].to_numpy(dtype=frame[name].dtype.numpy_dtype)
    _release_arrow_memory()
    return frame


# pandas' nullable integer dtype of each Arrow integer type.
_NULLABLE_INTEGERS: dict[pa.DataType, pd.api.extensions.ExtensionDtype] = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
}


def _release_arrow_memory() -> None:
    """Give the memory Arrow freed back to the system: its allocator keeps what the
    threads that read a file allocated (600 MB after 5 million rows of CSV, held
    through validation and training) until they allocate again."""
    pa.default_memory_pool().release_unused()


# Of a text column's values, the share of distinct ones above which it is read as
# plain ``str``: a value per row (an event id) gains nothing from a dictionary, and
# one of millions of values costs memory.
_DISTINCT_FOR_PLAIN = 0.5


def _repeats(column: pa.ChunkedArray) -> bool:
    """Whether a text column (plain or dictionary-encoded) holds at most
    ``_DISTINCT_FOR_PLAIN`` distinct values per row: worth a dictionary. Counted over
    the whole column, not its first block: a history ordered by time names each HCP
    once in its first thousands of rows, and a hundred times over in the file."""
    if not len(column):
        return False
    if pa.types.is_dictionary(column.type):
        distinct = len(
            pa.table([column], names=["c"]).unify_dictionaries()["c"].chunk(0).dictionary
        )
    else:
        distinct = pc.count_distinct(column).as_py()
    return distinct <= _DISTINCT_FOR_PLAIN * len(column)


def _as_text(column: pa.ChunkedArray) -> pd.Series:
    """A text column of Arrow as pandas: a categorical of ``str`` when its values
    repeat (ids, channels, flags: see :func:`_repeats`), else ``str`` (object)."""
    if _repeats(column):
        return column.combine_chunks().dictionary_encode().to_pandas()
    return column.to_pandas(deduplicate_objects=False)


def _repeating_text(path: Path, strings: list[str]) -> list[str]:
    """Of the text columns ``strings`` of Parquet file ``path``, those whose values
    repeat in its first row group (see :func:`_repeats`), to be read
    dictionary-encoded: for a column of a value per row (an event id), Arrow builds
    a dictionary of millions of values (9 s of CPU at 5 million rows) that holds
    nothing twice. One row group of a million rows tells, not the first block."""
    file = pq.ParquetFile(path, read_dictionary=strings)
    if not strings or file.metadata.num_row_groups == 0:
        return strings
    first = file.read_row_group(0, columns=strings)
    if not first.num_rows:
        return strings
    return [name for name in strings if _repeats(first.column(name))]


def _as_times(column: pa.ChunkedArray) -> pd.Series | None:
    """A text column of Arrow as naive UTC ``datetime64[ns]`` (NaT for an empty cell)
    when Arrow reads every other cell as an ISO 8601 date or date-time, all with a UTC
    offset or all without; else None, and the column stays text for the validators,
    which name each cell they refuse (see :func:`nextbest.contract.parse.timestamps`).

    Arrow reads fewer spellings than pandas (no space around a value, no '20260604',
    no more than nine decimals of a second, no offset beyond the range of times) and
    those it reads as pandas does (tests/data/test_contract_load.py holds both to the
    same values): a time is the same whichever reads it, and 5 million of them are
    never held as ``str``."""
    empty = pc.equal(column, "")
    if pc.any(empty).as_py():
        column = pc.if_else(empty, pa.scalar(None, pa.string()), column)
    for kind in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
        try:
            stamps = pc.cast(column, kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return pc.cast(stamps, pa.timestamp("ns")).to_pandas()  # UTC, its zone dropped
    return None


def _open_quote_at_end(path: Path, last: str) -> bool:
    """Whether ``last``, the last field Arrow read of CSV file ``path``, may be a value
    whose double quote is never closed: Arrow reads the rest of the file into it, line
    break included (pandas refuses such a file: see :func:`_unclosed_quote`). Also
    True for a closed value ending in a line break, or ending the file as ``"..."``
    would unclosed: rare, and :func:`_read_csv` reads those as well."""
    if last.endswith(("\n", "\r")):
        return True
    written = ('"' + last.replace('"', '""')).encode()
    with path.open("rb") as file:
        file.seek(max(path.stat().st_size - len(written), 0))
        return file.read() == written


def _read_csv(path: Path, *, drop_trailing_field: bool = False) -> pd.DataFrame:
    """All cells as ``str``; with ``drop_trailing_field`` rows may carry one field
    beyond the header's, which is dropped (the caller checked it is empty)."""
    # utf-8-sig drops the byte-order mark spreadsheet programs put first.
    sep = _separator(path)
    options: dict[str, Any] = {
        "dtype": str,
        "keep_default_na": False,
        "encoding": "utf-8-sig",
        "sep": sep,
    }
    if not drop_trailing_field:
        frame = pd.read_csv(path, **options)
    else:
        columns = pd.read_csv(path, nrows=0, **options).columns  # as pandas names them
        width = len(columns) + 1
        frame = pd.read_csv(path, header=None, skiprows=1, names=list(range(width)), **options)
        frame = frame.iloc[:, :-1]
        frame.columns = columns
    # pandas skips blank lines (empty, or spaces and tabs only): counted once a
    # problem is to be reported, not at every read. attrs must stay JSON (to_parquet
    # writes them), and cheap to copy (pandas copies them at every step).
    frame.attrs[ROW_NUMBERS] = {"file": str(path), "separator": sep, "rows": len(frame)}
    return _without_empty_tail(frame)


def row_numbers(frame: pd.DataFrame) -> RowNumbers:
    """How the rows of ``frame``, as :func:`read_table` gave it (or with rows
    neither dropped nor reordered), are numbered in its file: a CSV file's as its
    lines are, blank lines counted; ``position + 1`` for any other table."""
    said = frame.attrs.get(ROW_NUMBERS)
    if not isinstance(said, dict):
        return RowNumbers()
    return RowNumbers(partial(_file_rows, Path(said["file"]), said["separator"], said["rows"]))


def _file_rows(
    path: Path, sep: str, rows: int, *, spaces: bool = True
) -> npt.NDArray[np.int64] | None:
    """The row of CSV file ``path`` (its line - 1, the header being line 1) each of
    its ``rows`` data rows starts on, as a reader that skips blank lines (empty, and
    with ``spaces`` those of spaces and tabs only, as pandas does) found them; None
    when they are the lines after the header, or when the scan finds another count
    of rows than the reader (then counted as read, blank lines skipped)."""
    try:
        data = path.read_bytes()
    except OSError:  # moved or deleted since it was read: counted as read
        return None
    # A double quote inside an unquoted value ('12" screen') is text, not a quote
    # that opens one: the quotes' parity is then wrong, and every line break a row's.
    for quotes in (True, False):
        lines, _ = _record_starts(data, sep, quotes=quotes, spaces=spaces)
        if len(lines) == rows + 1:
            numbers = lines[1:] - 1
            return None if rows == 0 or numbers[-1] == rows else numbers
    return None


_LF, _CR, _QUOTE = ord("\n"), ord("\r"), ord('"')


def _record_starts(
    data: bytes, sep: str, *, quotes: bool = True, spaces: bool = True
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(1-based line, byte offset) of the start of each record of CSV ``data``, the
    header's first; shapes (n_records,). A line ends at '\\n', '\\r\\n' or a lone
    '\\r'. Every line starts a record, but a line in a quoted value (with ``quotes``:
    after an odd number of double quotes, '""' counting two) and a blank one: empty,
    or with ``spaces`` holding only spaces and tabs (the separator aside). Vectorised
    over the bytes: blank lines are looked at one by one only when they hold spaces."""
    raw = np.frombuffer(data, dtype=np.uint8)
    size = len(raw)
    cr = np.flatnonzero(raw == _CR)
    after_cr = raw[np.minimum(cr + 1, max(size - 1, 0))]
    lone_cr = cr[(cr + 1 >= size) | (after_cr != _LF)]
    breaks = np.flatnonzero(raw == _LF)
    if len(lone_cr):
        breaks = np.sort(np.concatenate([breaks, lone_cr]))
    starts = np.concatenate([[0], breaks + 1]).astype(np.int64)
    stops = np.concatenate([breaks, [size]]).astype(np.int64)  # each line's text ends
    crlf = (stops > 0) & (stops < size)
    crlf[crlf] = (raw[stops[crlf]] == _LF) & (raw[stops[crlf] - 1] == _CR)
    stops[crlf] -= 1
    lines = np.arange(1, len(starts) + 1, dtype=np.int64)
    record = (starts < size) & (stops > starts)
    if quotes:
        marks = np.flatnonzero(raw == _QUOTE)
        record &= np.searchsorted(marks, starts) % 2 == 0
    if spaces:
        blank = b" " if sep == "\t" else b" \t"
        first = raw[np.minimum(starts, max(size - 1, 0))]
        for at in np.flatnonzero(record & np.isin(first, list(blank))):
            record[at] = bool(data[starts[at] : stops[at]].strip(blank))
    return lines[record], starts[record]


def _without_empty_tail(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the rows at its end whose every cell is empty (or spaces):
    a spreadsheet saves rows it once formatted, or cleared, as ',,,,' lines. Only at
    the end: a row dropped further up would shift the row numbers problems name, and
    a row with any cell filled is checked as any other. ``attrs[EMPTY_ROWS]`` holds
    the (first, last) data rows dropped, as the file numbers them."""
    if frame.empty or frame.shape[1] == 0 or _filled(frame.iloc[-1:]).all():
        return frame  # the common case, decided on the last row alone
    filled = _filled(frame)
    kept = int(len(filled) - np.argmax(filled[::-1])) if filled.any() else 0
    out = frame.iloc[:kept]
    numbers = row_numbers(frame)
    out.attrs[EMPTY_ROWS] = (numbers(kept), numbers(len(frame) - 1))
    return out


def _filled(frame: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Per row of a CSV frame (cells text, or times read as such: see
    :func:`_as_times`), whether any cell holds more than spaces."""
    filled = np.zeros(len(frame), dtype=bool)
    for position in range(frame.shape[1]):
        cells = frame.iloc[:, position]
        if is_datetime64_any_dtype(cells.dtype):  # NaT where the cell was empty
            filled |= cells.notna().to_numpy()
        else:
            filled |= cells.str.strip().ne("").to_numpy()
    return filled


def _refuse_repeated_header(path: Path, frame: pd.DataFrame) -> None:
    """Data rows that repeat the header line: files concatenated each with its own
    header. Said once, with how many, rather than as a bad value in every column."""
    if frame.empty or frame.shape[1] == 0:
        return
    if any(is_datetime64_any_dtype(kind) for kind in frame.dtypes):
        return  # a column read as times (see _as_times) holds no header's name in any row
    # In any case: concatenated warehouse unloads may have only the first header
    # lower-cased ('HCP_ID,SPECIALTY,...' further down).
    header = [name.strip().casefold() for name in _header(path)][: frame.shape[1]]
    first = frame.iloc[:, 0].str.fullmatch(rf"\s*{re.escape(header[0])}\s*", case=False)
    if not first.any():
        return
    candidates = frame[first.to_numpy()]
    repeats = np.ones(len(candidates), dtype=bool)
    for position, name in enumerate(header[1:], start=1):
        cells = candidates.iloc[:, position].str.strip().str.casefold()
        repeats &= (cells == name).to_numpy()
    rows = candidates.index[repeats]
    if len(rows):
        more = f" ({len(rows):,} rows do)" if len(rows) > 1 else ""
        row = row_numbers(frame)(int(rows[0]))
        raise ContractError(
            [
                Problem(
                    path.name,
                    row,
                    None,
                    f"row {row} repeats the header line{more}: files "
                    "concatenated with their headers? keep the first header line only",
                )
            ]
        )


def _unclosed_quote(path: Path) -> Problem:
    """Where the double quote that the file ends inside of opened: the parser read
    everything after it as one value, up to the end of the file. Lines are counted as
    an editor does, and the row is the one starting on that line (line - 1)."""
    sep = _separator(path)
    line = end = 0
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file, delimiter=sep)
        try:
            for record in reader:
                start, end = end + 1, reader.line_num
                if record:
                    line = start
        except csv.Error:
            # The open value outgrew the csv module's field size limit: it is the
            # record being read, and the lines left are the rest of it.
            line = end + 1
            end = reader.line_num + sum(1 for _ in file)
    row = max(line - 1, 0)
    with path.open(encoding="utf-8-sig", newline="") as file:
        opening = next(itertools.islice(file, line - 1, None), "")
    field = len(next(csv.reader([opening], delimiter=sep), [""])) - 1
    header = _header(path)
    lines = f"line {line:,}" if end == line else f"lines {line:,} to {end:,}"
    return Problem(
        path.name,
        row or None,
        header[field].strip() if row and field < len(header) else None,
        f"a double quote opens this value on line {line:,} and is never closed, so the "
        f"rest of the file ({lines}) would be read as one value: close the quote, or "
        'double it ("") where it is part of the value',
    )


_SAVE_AS_UTF8 = "save it as UTF-8 (in Excel: 'CSV UTF-8')"


def _not_utf8(path: Path) -> Problem:
    """Where a CSV file stops being UTF-8, and what it most likely is instead."""
    data = path.read_bytes()
    advice = _SAVE_AS_UTF8
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return Problem(path.name, None, None, f"the file is UTF-16 text, not UTF-8: {advice}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        row, field, header = _where_byte(data, err.start)
        said = _byte_said(data[err.start])
        if not row:  # the header's own names are what is garbled: said by position
            return Problem(
                path.name,
                None,
                None,
                f"the header's column {field + 1} is not UTF-8 text ({said}): {advice}",
            )
        return Problem(
            path.name,
            row,
            header[field] if field < len(header) else None,
            f"not UTF-8 text ({said}): {advice}",
        )
    return Problem(path.name, None, None, f"not UTF-8 text: {advice}")


def _byte_said(byte: int) -> str:
    """A byte that is not UTF-8 as a message names it: 'byte 0xe9, 'é' in Latin-1 or
    Windows-1252?'. 0xC0-0xFF are the accented letters of those (a Western
    spreadsheet's export); other bytes say nothing of the encoding (Shift-JIS,
    GB 18030, ... use them too), so no guess is offered for them."""
    guess = bytes([byte]).decode("cp1252")
    seen = f", '{guess}' in Latin-1 or Windows-1252?" if byte >= 0xC0 else ""
    return f"byte 0x{byte:02x}{seen}"


_CHUNK = 1 << 24


def _refuse_nul_bytes(path: Path) -> None:
    """A NUL byte (0x00) in a CSV file: the C parser ends the value there, silently
    ('H\\x002' read as 'H'), and a UTF-16 file without a byte-order mark (every
    other byte NUL) was taken for rows of one field. Refused, naming the row and
    column of the first, or the encoding."""
    with path.open("rb") as file:
        head = file.read(4096)
        at = head.find(b"\x00")
        offset = len(head)
        while at < 0:
            chunk = file.read(_CHUNK)
            if not chunk:
                return
            found = chunk.find(b"\x00")
            at = offset + found if found >= 0 else -1
            offset += len(chunk)
    utf16 = (
        head[:2] in (b"\xff\xfe", b"\xfe\xff")
        or (
            head.count(0) * 3 >= len(head)  # ASCII as UTF-16: every other byte NUL
            and max(head[0::2].count(0), head[1::2].count(0)) * 4 >= len(head)
        )
    )
    if utf16:
        raise ContractError(
            [
                Problem(
                    path.name,
                    None,
                    None,
                    f"the file is UTF-16 text, not UTF-8: {_SAVE_AS_UTF8}",
                )
            ]
        )
    with path.open("rb") as file:
        before = file.read(at)
    # The NUL stands in for a byte decoding cannot fail on: only its place is wanted.
    row, field, header = _where_byte(before + b" ", at)
    said = (
        "holds a NUL byte (0x00), which no text has: a corrupt or binary export? the "
        "value would be cut short there; remove it and check the value"
    )
    if not row:
        raise ContractError(
            [Problem(path.name, None, None, f"the header's column {field + 1} {said}")]
        )
    raise ContractError(
        [Problem(path.name, row, header[field] if field < len(header) else None, said)]
    )


def _where_byte(data: bytes, at: int) -> tuple[int, int, list[str]]:
    """(row of the file, 0 for the header; 0-based field; the header's names) of the
    byte at offset ``at`` of CSV ``data`` that is UTF-8 up to there: the row that
    starts on the line the byte's record starts on, less one (see :class:`RowNumbers`)."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    # Latin-1 gives every byte a character of its own: nothing fails, and the bad
    # byte ends the text.
    head = data[start : start + (1 << 16)].decode("latin-1")
    sep = _sample_separator(head.splitlines(keepends=True)[:SEPARATOR_SAMPLE_LINES])
    # The byte's own line holds more than spaces: it starts a record unless quoted.
    lines, offsets = _record_starts(data[: at + 1], sep, spaces=False)

    def fields(begin: int, end: int) -> list[str]:
        text = data[max(begin, start) : end].decode("latin-1")
        return next(csv.reader(io.StringIO(text, newline=""), delimiter=sep), [])

    field = len(fields(int(offsets[-1]), at + 1)) - 1
    if len(lines) < 2:
        return 0, field, []
    # The header came before the bad byte: UTF-8 throughout.
    header = fields(start, int(offsets[1]))
    return int(lines[-1]) - 1, field, [n.encode("latin-1").decode("utf-8").strip() for n in header]


def _refuse_lines_above_header(path: Path) -> None:
    """Lines above the header, as exports write a title ('HCP export 2026-06-01') or
    leave blank lines: the title was read as a header of one column, and every row
    refused as a misfit; a blank first line failed with an IndexError. Line 1 is
    taken as no header when it is blank, or names at most one column while a line
    below names several (a file of one column, such as an erasure list, keeps its
    one-name header), or names no column of the contract while the first line below
    it names one, and as many columns or more: a title above the ``hcp_id`` of an
    erasure list, or one with a separator in it ('HCP export, 2026-12-01'), which no
    count of fields tells from a header."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        sample = list(itertools.islice(file, SEPARATOR_SAMPLE_LINES))
    if not sample or all(not line.strip() for line in sample):
        return  # empty: said as such when read

    def fields(at: int) -> list[str]:
        return next(csv.reader([sample[at]], delimiter=_sample_separator(sample[at:])), [])

    def named(at: int) -> int:
        return sum(bool(field.strip()) for field in fields(at))

    def names_contract_column(at: int) -> bool:
        return any("_".join(header_words(field)) in CONTRACT_COLUMNS for field in fields(at))

    blank = not sample[0].strip()
    next_line = next((at for at in range(1, len(sample)) if sample[at].strip()), None)
    below = None
    if blank:
        below = next((at for at in range(1, len(sample)) if named(at) > 1), next_line)
    elif named(0) <= 1:
        # A title, when most lines below hold several fields: not a file of one
        # column with a stray separator in a value.
        rest = [len(fields(at)) > 1 for at in range(1, len(sample)) if sample[at].strip()]
        if 2 * sum(rest) > len(rest):
            below = next((at for at in range(1, len(sample)) if named(at) > 1), None)
    # Told by the names, where the counts tell nothing: a title above the one-name
    # header of a file of one column, or one with a separator in it (two or three
    # names). A header names a column of the contract; a row of values does not.
    if (
        below is None
        and not blank
        and next_line is not None
        and names_contract_column(next_line)
        and not names_contract_column(0)
        and named(next_line) >= named(0)
    ):
        below = next_line
    if below is None:
        return
    first = "is blank" if blank else f"holds {quoted(sample[0].strip(), at_most=QUOTED_AT_MOST)}"
    raise ContractError(
        [
            Problem(
                path.name,
                None,
                None,
                f"the header is not on line 1 (line 1 {first}); it seems to be on line "
                f"{below + 1}: {quoted(sample[below].strip(), at_most=80)}; remove the "
                "lines above it (an export's title, blank lines): the header is the first "
                "line",
            )
        ]
    )


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
) -> tuple[list[tuple[int, int, int, bool]], int, bool]:
    """(row, fields expected, fields seen, whether the fields beyond the header's are
    all empty) of the first ``limit`` rows whose number of
    fields differs from the header's, rows numbered as the file's lines are (see
    :class:`RowNumbers`). pandas stops at the first row with too many,
    and pads a row with too few with empty cells, so a value left out in the middle
    shifts the rest one column to the left, silently. A second parse by Arrow's CSV
    reader, converting one column only, finds them all; the second value counts them.

    Every row ending with a separator the header lacks (an empty field beyond the
    header's, as some exports write each line) is no misfit: nothing is lost by
    dropping that field, and the third value is True: the file is read with it
    dropped. When other rows fit the header, such rows are misfits like any other:
    a separator inside one of their values may have shifted them by a column.
    """
    found: list[tuple[int, int, int, bool]] = []
    ending: list[tuple[int, int, int, bool]] = []  # rows with one more field, the last empty
    seen = [0, 0]  # misfits, rows ending with a separator the header lacks

    def keep(row: pa_csv.InvalidRow) -> str:
        # Arrow counts records from 1 with the header, empty lines skipped (not those
        # of spaces, which pandas skips too): renumbered below, once.
        number = -1 if row.number is None else row.number - 1
        extra = row.actual_columns - row.expected_columns
        empty_tail = extra > 0 and (row.text or "").rstrip("\r\n").endswith(sep * extra)
        misfit = (number, row.expected_columns, row.actual_columns, empty_tail)
        if extra == 1 and empty_tail:
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
    numbers = RowNumbers(partial(_file_rows, path, sep, fitting + sum(seen), spaces=False))
    if seen[1] and fitting:
        found = sorted(found + ending)[:limit]
        seen[0] += seen[1]
    found = [
        (numbers(row - 1) if row > 0 else row, expected, actual, empty_tail)
        for row, expected, actual, empty_tail in found
    ]
    return found, seen[0], not found and seen[1] > 0


def _misfit_problem(
    path: Path, row: int, expected: int, seen: int, empty_tail: bool = False
) -> Problem:
    separator = {",": "comma", ";": "semicolon", "\t": "tab"}[_separator(path)]
    # One empty field more among rows that fit is more likely a separator inside a
    # value with the last value empty (see _misfit_rows); several are line endings.
    if seen > expected + 1 and empty_tail:
        advice = (
            f"the last {seen - expected} are empty, {separator}s ending the line that the "
            "header lacks (trailing separators): remove them, or name those columns in "
            "the header"
        )
    elif seen > expected:
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
        return _sample_separator(list(itertools.islice(file, SEPARATOR_SAMPLE_LINES)))


def _sample_separator(sample: list[str]) -> str:
    """:func:`_separator` of a file's first lines."""
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
    back through the contract gives the same values. Categorical columns (text read
    from a file, see :func:`read_table`) are written as their values: a Parquet file
    of them read by pandas gives text a user can edit (rows rejected, fixed and sent
    again), not categories that refuse a new value. Raises ``ValueError`` for any
    other extension.
    """
    path = Path(path)
    fmt = file_format(path)
    out = _without_attrs(df.copy(deep=False), _OF_THE_FILE_READ)
    for position in range(out.shape[1]):
        if isinstance(out.dtypes.iloc[position], pd.CategoricalDtype):
            out.isetitem(position, np.asarray(out.iloc[:, position]))
    if fmt == "parquet":
        out.to_parquet(path, engine="pyarrow", index=False)
    elif fmt == "csv":
        for column in out.columns:
            if is_datetime64_any_dtype(out[column].dtype):
                out[column] = _iso_strings(out[column])
        out.to_csv(path, index=False)
    else:
        raise ValueError(
            f"cannot write {path.name}: unsupported extension {path.suffix!r} "
            "(use .csv or .parquet)"
        )


def _without_attrs(frame: pd.DataFrame, keys: Collection[str]) -> pd.DataFrame:
    """``frame`` with ``attrs`` but ``keys`` (the frame itself, changed)."""
    frame.attrs = {key: value for key, value in frame.attrs.items() if key not in keys}
    return frame


def _iso_strings(stamps: pd.Series) -> pd.Series:
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    # unit="auto" picks the coarsest exact unit per value: dates stay dates, and
    # nanoseconds survive.
    strings = np.datetime_as_string(stamps.to_numpy(dtype="datetime64[ns]"), unit="auto")
    return pd.Series(np.where(stamps.isna().to_numpy(), "", strings), index=stamps.index)
