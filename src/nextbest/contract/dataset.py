"""The validated data set (hcps, catalog, interactions) and how to load and write it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from nextbest.contract.errors import ContractError, Problem
from nextbest.contract.files import EMPTY_ROWS, read_table, unreadable, write_table
from nextbest.contract.schema import (
    CATALOG,
    CONSENT_PREFIX,
    FORMATS,
    HCPS,
    INTERACTIONS,
    TABLES,
    consent_column,
    near_channel,
)
from nextbest.contract.validate import (
    check_interactions_alone,
    validate_catalog,
    validate_hcps,
    validate_id_list,
    validate_interactions,
    validate_send_list,
    validate_territories,
)


@dataclass
class Dataset:
    """The three normalised tables (see :mod:`nextbest.contract.validate` for dtypes).

    Attributes:
        hcps: one row per HCP, shape (n_hcps, 3 + n_attributes).
        catalog: one row per action, shape (n_actions, 9 + n_extra).
        interactions: one row per logged decision, sorted by (hcp_id, timestamp).
        source: where it was loaded from (a directory or an adapter's file), if anywhere.
    """

    hcps: pd.DataFrame
    catalog: pd.DataFrame
    interactions: pd.DataFrame
    source: Path | None = None

    @property
    def has_outcome(self) -> bool:
        """Whether any interaction carries an ``outcome`` value."""
        return bool(self.interactions["outcome"].notna().any())

    @property
    def has_holdout(self) -> bool:
        """Whether any interaction is a randomized holdout (no-touch control) row."""
        return bool(self.interactions["holdout"].any())

    @property
    def has_propensity(self) -> bool:
        """Whether every interaction has a logged ``propensity`` (False when there are none)."""
        propensity = self.interactions["propensity"]
        return len(propensity) > 0 and bool(propensity.notna().all())

    @property
    def channels(self) -> list[str]:
        """Distinct catalog channels, sorted."""
        return sorted(self.catalog["channel"].unique().tolist())

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the three tables' contents.

        Equal for equal normalised data whether it came from CSV or Parquet; it
        depends on values, dtypes and row order but not on column order.
        """
        digest = hashlib.sha256()
        for name, frame in (
            (HCPS, self.hcps),
            (CATALOG, self.catalog),
            (INTERACTIONS, self.interactions),
        ):
            digest.update(f"{name}:{len(frame)}\n".encode())
            for column in sorted(frame.columns, key=str):
                values = frame[column]
                digest.update(f"{column}:{values.dtype}\n".encode())
                row_hashes = pd.util.hash_pandas_object(values, index=False)
                digest.update(row_hashes.to_numpy().tobytes())
        return digest.hexdigest()


# Read as times in Arrow's pass when every cell is one (see files.read_table): a
# history's timestamps, millions of them, are never held as text.
INTERACTION_TIMES = ("timestamp",)


def load_hcps(path: Path | str) -> pd.DataFrame:
    """Read and validate an hcps file (.csv or .parquet); see :func:`validate_hcps`."""
    path = Path(path)
    raw = read_table(path)
    return _with_empty_rows(validate_hcps(raw, file=path.name), raw)


def load_catalog(path: Path | str) -> pd.DataFrame:
    """Read and validate a catalog file (.csv or .parquet); see :func:`validate_catalog`."""
    path = Path(path)
    raw = read_table(path)
    return _with_empty_rows(validate_catalog(raw, file=path.name), raw)


def load_send_list(path: Path | str, *, catalog: pd.DataFrame) -> pd.DataFrame:
    """Read and validate a send list (.csv or .parquet) for a model with ``catalog``:
    see :func:`validate_send_list`; each consent column must name a catalog channel."""
    path = Path(path)
    send_list = validate_send_list(read_table(path), file=path.name)
    _check_consent_channels(send_list, catalog, path.name)
    return send_list


def load_id_list(path: Path | str) -> list[str]:
    """Read a list of HCP ids (.csv or .parquet with an ``hcp_id`` column); see
    :func:`validate_id_list`."""
    path = Path(path)
    return validate_id_list(read_table(path), file=path.name)


def load_territories(path: Path | str) -> pd.DataFrame:
    """Read a territory alignment (.csv or .parquet with ``hcp_id`` and
    ``territory_id`` columns); see :func:`validate_territories`."""
    path = Path(path)
    return validate_territories(read_table(path), file=path.name)


def load_interactions(
    path: Path | str, *, hcps: pd.DataFrame, catalog: pd.DataFrame
) -> pd.DataFrame:
    """Read and validate an interactions file against validated ``hcps`` and ``catalog``.

    See :func:`validate_interactions`.
    """
    path = Path(path)
    raw = read_table(path, times=INTERACTION_TIMES)
    return _with_empty_rows(
        validate_interactions(raw, file=path.name, hcps=hcps, catalog=catalog), raw
    )


def _with_empty_rows(frame: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (validated from ``raw``) saying which empty rows at the end of the
    file were skipped (``attrs[EMPTY_ROWS]``, see :func:`read_table`), for notes."""
    if EMPTY_ROWS in raw.attrs:
        frame.attrs[EMPTY_ROWS] = raw.attrs[EMPTY_ROWS]
    return frame


def load_dataset(data_dir: Path | str) -> Dataset:
    """Load and validate ``hcps``, ``catalog`` and ``interactions`` from ``data_dir``.

    Each table is ``<name>.csv`` or ``<name>.parquet`` (exactly one of them). Raises
    :class:`ContractError` listing every problem found: missing or ambiguous files
    first, then problems in hcps and catalog together, then in interactions: its
    own cells even while the other two are refused, its references (ids the other
    files list, channels the catalog gives) once they are valid.
    """
    data_dir = Path(data_dir)
    paths = _find_tables(data_dir)
    try:
        hcps, catalog = _hcps_and_catalog(paths)
    except ContractError as refused:
        # The history's own problems are said in the same run (one locale's export
        # breaks every file alike); what it names in the other files waits for them.
        errors = [refused]
        try:
            check_interactions_alone(
                read_table(paths[INTERACTIONS], times=INTERACTION_TIMES),
                file=paths[INTERACTIONS].name,
            )
        except ContractError as err:
            errors.append(err)
        waits = Problem(
            paths[INTERACTIONS].name,
            None,
            None,
            "its hcp_id and action_id are checked against the hcps and catalog files once "
            "those are valid",
        )
        errors.append(ContractError([], hints=[waits]))
        raise ContractError.combine(errors) from None
    interactions = load_interactions(paths[INTERACTIONS], hcps=hcps, catalog=catalog)
    return Dataset(hcps, catalog, interactions, source=data_dir)


def load_hcps_and_catalog(data_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``hcps`` and ``catalog`` of ``data_dir``, validated as :func:`load_dataset`
    validates them; the interactions are not read.

    For what needs the HCPs and actions of the day and no history (picks): the
    history, the largest table by far (millions of rows), took longer to check than
    the picks take to make, and a problem in it stopped picks it has no part in.
    """
    return _hcps_and_catalog(_find_tables(Path(data_dir), (HCPS, CATALOG)))


def _hcps_and_catalog(paths: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load and validate the hcps and catalog files of ``paths``, every problem of
    both in one :class:`ContractError`; then their consent columns together."""
    errors: list[ContractError] = []
    frames: dict[str, pd.DataFrame] = {}
    for name, load in ((HCPS, load_hcps), (CATALOG, load_catalog)):
        try:
            frames[name] = load(paths[name])
        except ContractError as err:
            errors.append(err)
    if errors:
        raise ContractError.combine(errors)
    _check_consent_channels(frames[HCPS], frames[CATALOG], paths[HCPS].name)
    return frames[HCPS], frames[CATALOG]


def _check_consent_channels(hcps: pd.DataFrame, catalog: pd.DataFrame, file: str) -> None:
    """Every consent column names a catalog channel: one that does not would never
    apply (a typo there sends e-mails to HCPs who opted out)."""
    channels = sorted(set(catalog["channel"]))
    headers = hcps.attrs.get("consent_headers", {})
    problems = []
    # "ConsentEmail", "Email Consent", "opt_in_email": consent written otherwise than
    # consent_<channel> would be a plain attribute (or, in a send list, left out):
    # refused, so that no opted-out HCP is contacted.
    ignored = hcps.attrs.get("ignored_columns", [])
    for column in [*hcps.columns, *ignored]:
        meant = _reads_as_consent(str(column), channels)
        if meant is not None:
            fate = "left out" if column in ignored else "read as a plain attribute"
            invert = (
                " with its values inverted (this header says who opted out)"
                if _withdraws(str(column))
                else ""
            )
            problems.append(
                Problem(
                    file,
                    None,
                    str(column),
                    f"reads as consent for channel '{meant}' but would be {fate}: give it "
                    f"as {consent_column(meant)}{invert} (true: may be contacted)",
                )
            )
    for column in hcps.columns:
        if not column.startswith(CONSENT_PREFIX):
            continue
        channel = column[len(CONSENT_PREFIX) :]
        if channel in channels:
            continue
        near = near_channel(channel, channels)
        hint = f"did you mean '{consent_column(near)}'? " if near else ""
        problems.append(
            Problem(
                file,
                None,
                headers.get(column, column),
                f"consent for channel '{channel}', which the catalog does not have, would "
                f"never apply; {hint}catalog channels: {', '.join(channels)} (rename the "
                "column, or drop it)",
            )
        )
    if problems:
        raise ContractError(problems)


# Words of a header about an HCP's consent to a channel: given ("consent", "opt in")
# or withdrawn ("opt out", "unsubscribed", "do not ..."). A header with a word of
# time, provenance or measure ("email_consent_date", "email_unsubscribe_rate") is
# about consent, not consent itself.
_CONSENT_WORDS = ("consent", "optin", "optedin")
_WITHDRAWAL_WORDS = ("optout", "optedout", "unsubscribe", "donot", "dnc")
_NOT_CONSENT_WORDS = (
    *("date", "time", "version", "source", "method"),
    *("rate", "count", "share", "pct", "percent", "total"),
)


def _reads_as_consent(column: str, channels: list[str]) -> str | None:
    """The catalog channel a header that is not ``consent_<channel>`` most likely
    gives (or withdraws) consent for ("Email Consent", "ConsentEmail", "opt_in_email",
    "opted_out_email", "do_not_email"), or None."""
    if column.startswith(CONSENT_PREFIX):
        return None
    compact = re.sub(r"[^a-z0-9]", "", column.lower())
    if not any(word in compact for word in (*_CONSENT_WORDS, *_WITHDRAWAL_WORDS)):
        return None
    if any(word in compact for word in _NOT_CONSENT_WORDS):
        return None
    named = [c for c in channels if c.replace("_", "") in compact]
    return max(named, key=len) if named else None


def _withdraws(column: str) -> bool:
    """Whether a consent-like header holds withdrawals (true: may not be contacted)."""
    compact = re.sub(r"[^a-z0-9]", "", column.lower())
    return any(word in compact for word in _WITHDRAWAL_WORDS)


def _near_miss(data_dir: Path, name: str) -> str:
    """What in ``data_dir`` is most likely the table ``name`` under another file name
    ('Interactions.CSV', 'interactions.csv.gz'), and what to do, or ''."""
    wanted = {f"{name}.{fmt}" for fmt in FORMATS}
    if unreadable(data_dir):
        return ""  # its files can be opened, not listed: nothing to point at
    if (data_dir / name).is_dir():
        return (
            f"; found a directory {name}/: a table written in Parquet parts is read from "
            f"a directory named {name}.parquet (rename it)"
        )
    if (data_dir / f"{name}.csv").is_dir():
        return (
            f"; found a directory {name}.csv/: only Parquet may be a directory of parts; "
            f"concatenate the CSV parts into one {name}.csv (one header line), or write "
            f"{name}.parquet"
        )
    near = sorted(
        path.name
        for path in data_dir.iterdir()
        if path.is_file() and path.name.lower().startswith(f"{name}.")
    )
    if not near:
        # Daily or numbered exports: interactions_2026-06-01.csv, interactions-part1.parquet.
        parts = sorted(
            path.name
            for path in data_dir.iterdir()
            if re.match(rf"{name}[_\-. ]", path.name, re.IGNORECASE)
            and path.suffix.lower().lstrip(".") in FORMATS
        )
        if not parts:
            return ""
        shown = ", ".join(parts[:3]) + (f" and {len(parts) - 3:,} more" if len(parts) > 3 else "")
        return (
            f"; found {shown}, which look like parts of {name}: the table is read from one "
            f"file, {name}.csv (the parts concatenated, one header line) or {name}.parquet "
            "(which may be a directory of parts)"
        )
    lower = [n.lower() for n in near]
    if any(n in wanted for n in lower):
        fix = f"rename it to {name}.csv or {name}.parquet (lower case)"
    elif any(n.rsplit(".", 1)[0] in wanted for n in lower):
        fix = "decompress it (tables are read as plain .csv or .parquet files)"
    else:
        fix = f"save it as {name}.csv (UTF-8) or {name}.parquet"
    return f"; found {', '.join(near)}: {fix}"


def _find_tables(data_dir: Path, tables: tuple[str, ...] = TABLES) -> dict[str, Path]:
    if not data_dir.is_dir():
        problem = (
            f"is a file; give the directory that holds {', '.join(tables[:-1])} and {tables[-1]}"
            if data_dir.exists()
            else "data directory not found"
        )
        raise ContractError([Problem(str(data_dir), None, None, problem)])
    if why := unreadable(data_dir, listed=False):
        raise ContractError([Problem(str(data_dir), None, None, why)])
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for name in tables:
        pattern = f"{name}.{{{','.join(FORMATS)}}}"  # e.g. hcps.{csv,parquet}
        candidates = [data_dir / f"{name}.{fmt}" for fmt in FORMATS]
        # A .parquet directory is a dataset written in parts (Spark, Dask, pyarrow).
        # A link to a deleted file is there all the same: reading it names the link.
        present = [
            path
            for path in candidates
            if path.is_file() or (path.suffix == ".parquet" and path.is_dir()) or path.is_symlink()
        ]
        if not present:
            problems.append(
                Problem(pattern, None, None, f"not found in {data_dir}{_near_miss(data_dir, name)}")
            )
        elif len(present) > 1:
            problems.append(
                Problem(
                    pattern,
                    None,
                    None,
                    f"both {name}.csv and {name}.parquet are in {data_dir}; keep one",
                )
            )
        else:
            found[name] = present[0]
    if problems:
        raise ContractError(problems)
    return found


def refuse_format_clash(out_dir: Path, fmt: str) -> None:
    """``FileExistsError`` when ``out_dir`` holds a table in the other format: writing
    ``fmt`` beside it would leave the directory ambiguous (and the two disagreeing)."""
    for name in TABLES:
        for other in FORMATS:
            clash = out_dir / f"{name}.{other}"
            if other != fmt and clash.exists():
                raise FileExistsError(
                    f"{clash} exists; writing {name}.{fmt} beside it would make {out_dir} "
                    "ambiguous: remove it or write the same format"
                )


def write_dataset(
    dataset: Dataset, out_dir: Path | str, fmt: Literal["csv", "parquet"] = "csv"
) -> Path:
    """Write the three tables to ``out_dir`` (created if needed) as ``fmt``.

    :func:`load_dataset` on the result gives back equal frames. Refuses (``FileExistsError``)
    when a table already exists there in the other format, since the directory
    would then be ambiguous. Returns ``out_dir``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}; got {fmt!r}")
    out_dir = Path(out_dir)
    refuse_format_clash(out_dir, fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {HCPS: dataset.hcps, CATALOG: dataset.catalog, INTERACTIONS: dataset.interactions}
    for name, frame in tables.items():
        write_table(frame, out_dir / f"{name}.{fmt}")
    return out_dir
