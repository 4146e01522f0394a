"""The territory alignment file: reading, what it refuses, and how HCPs are assigned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.service.territories import (
    TerritoriesError,
    TerritoryAlignment,
    alignment_notes,
    empty_territories_note,
    rows_by_territory,
    territories_without_hcps,
)
from nextbest.settings import Settings


def _csv(tmp_path: Path, text: str, name: str = "territories.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_csv_and_a_parquet_file_give_the_same_alignment(tmp_path: Path) -> None:
    csv = _csv(tmp_path, "hcp_id,territory_id,rep_name\nH1, T1 ,Ann\nH2,T2,Bo\nH1,T1,Ann\n")
    parquet = tmp_path / "territories.parquet"
    pd.DataFrame({"hcp_id": ["H1", "H2"], "territory_id": ["T1", "T2"]}).to_parquet(parquet)
    from_csv = TerritoryAlignment.load(csv)
    # Stripped as the hcps file's ids are; the same pair twice counts once; other
    # columns are not read.
    assert dict(from_csv.territory_of) == {"H1": "T1", "H2": "T2"}
    assert TerritoryAlignment.load(parquet).territory_of == from_csv.territory_of
    assert from_csv.source == str(csv)
    # Re-read unchanged, it compares equal: a reload reports no change.
    assert TerritoryAlignment.load(csv) == from_csv


@pytest.mark.parametrize(
    ("text", "said"),
    [
        pytest.param(
            "hcp_id,territory\nH1,T1\n",
            r"column 'territory_id': missing required column",
            id="missing-column",
        ),
        pytest.param(
            "hcp_id,Territory ID\nH1,T1\n",
            r"there is 'Territory ID'.*rename it to 'territory_id'",
            id="column-spelt-otherwise",
        ),
        pytest.param("hcp_id,territory_id\n", r"no data rows", id="no-rows"),
        pytest.param(
            "hcp_id,territory_id\nH1,T1\nH2,\n",
            r"territories\.csv, row 2, column 'territory_id': empty value",
            id="empty-territory",
        ),
        pytest.param(
            "hcp_id,territory_id\nH1,T1\n,T2\n",
            r"territories\.csv, row 2, column 'hcp_id': empty value",
            id="empty-hcp",
        ),
        pytest.param(
            "hcp_id,territory_id\nH1,T1\nH2,T2\nH1,t1\n",
            r"territories\.csv, row 3, column 'territory_id': its HCP is in territory 't1' "
            r"here but in 'T1' in row 1: an HCP is in one territory",
            id="two-territories",
        ),
        pytest.param("", r"the file is empty", id="empty-file"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_row_and_value(
    tmp_path: Path, text: str, said: str
) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(TerritoriesError, match=said) as raised:
        TerritoryAlignment.load(path)
    assert f"territory alignment {path} (NEXTBEST_TERRITORIES_FILE)" in str(raised.value)


def test_a_missing_file_or_another_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TerritoriesError, match="file not found"):
        TerritoryAlignment.load(tmp_path / "nowhere.csv")
    with pytest.raises(TerritoriesError, match=r"unsupported file type '\.xlsx'"):
        TerritoryAlignment.load(_csv(tmp_path, "x", name="territories.xlsx"))


def test_configured_is_none_without_the_setting(tmp_path: Path) -> None:
    assert TerritoryAlignment.configured(Settings(territories_file=None)) is None
    path = _csv(tmp_path, "hcp_id,territory_id\nH1,T1\n")
    configured = TerritoryAlignment.configured(Settings(territories_file=path))
    assert configured is not None and configured.territory_of == {"H1": "T1"}


def test_hcps_the_file_does_not_list_are_in_no_territory() -> None:
    alignment = TerritoryAlignment({"H1": "T1", "H3": "T1", "H4": "T2", "H9": "T9"}, "f.csv")
    hcp_ids = np.array(["H1", "H2", "H3", "H4"], dtype=object)
    territory = alignment.assign(hcp_ids)
    assert territory.tolist() == ["T1", None, "T1", "T2"]
    rows = rows_by_territory(territory)
    assert {t: r.tolist() for t, r in rows.items()} == {"T1": [0, 2], "T2": [3]}
    assert alignment.unknown(set(hcp_ids.tolist())) == ["H9"]


def test_rows_by_territory_keeps_each_territorys_rows_in_order() -> None:
    territory = np.array(["B", "A", "B", "C", "A", "B"], dtype=object)
    rows = rows_by_territory(territory)
    assert {t: r.tolist() for t, r in rows.items()} == {"B": [0, 2, 5], "A": [1, 4], "C": [3]}
    assert all(r.dtype == np.int64 for r in rows.values())


def test_the_notes_name_what_needs_a_retrain_a_territory_or_a_key() -> None:
    alignment = TerritoryAlignment({"H1": "T1", "H8": "T1", "H9": "T2"}, "f.csv")
    hcp_ids = np.array(["H1", "H2", "H3"], dtype=object)
    territory = alignment.assign(hcp_ids)
    notes = alignment_notes(
        alignment,
        known=set(hcp_ids.tolist()),
        territory=territory,
        served=rows_by_territory(territory),
        rep_territories=["T1", "T2", "T7"],
        examples=1,
    )
    assert notes == [
        "2 HCPs of f.csv are not known to the served model (e.g. 'H8'): they are served "
        "once a model trained with them is",
        "2 HCPs of the served model are in no territory of f.csv: no rep key sees them "
        "(admin and channel keys do)",
        "rep keys of territories T2, T7 have no HCP of the served model in f.csv: their "
        "requests are refused until it lists some",
    ]
    # In logs, no HCP is named.
    logged = alignment_notes(
        alignment, known={"H1"}, territory=territory, served={"T1"}, examples=0
    )
    assert "'H8'" not in logged[0] and len(logged) == 2
    assert territories_without_hcps(["T1", "T1", "T3"], {"T1"}) == ["T3"]


def test_a_rep_key_territory_near_a_served_one_is_told_which() -> None:
    """A key's ``T0O1`` (a letter O for a zero) was said to hold no HCP with no word of
    T001, which a plan request for it names; a case twin was said without "did you
    mean"."""
    assert empty_territories_note(["T0O1", "t002", "Z9"], {"T001", "T002"}) == [
        "rep keys of territories T0O1, Z9, t002 have no HCP of the served model (did you "
        "mean T001 for T0O1, T002 for t002? territories match exactly): their requests are "
        "refused until a model version with some is served (or their territory_id in the "
        "key file is corrected)"
    ]
