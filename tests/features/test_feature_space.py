"""Which HCP columns the feature space turns into model features."""

from __future__ import annotations

import pandas as pd

from nextbest.features.space import FeatureSpace


def test_nearly_unique_identifier_columns_are_not_features() -> None:
    hcps = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(6)],
            "specialty": ["cardiology", "oncology"] * 3,
            "territory_id": ["T1", "T1", "T1", "T2", "T2", "T2"],
            "decile": [3, 7, 9, 1, 2, 5],
            "practice_type": ["solo", "group", "hospital"] * 2,
            "zip": ["02134", "10001", "00501", "02135", "10002", "00502"],
            "npi_id": ["001", "002", "003", "004", "005", "006"],
            "region_code": ["01", "01", "01", "02", "02", "02"],
            "consent_email": [True, True, False, True, True, True],
        }
    )
    catalog = pd.DataFrame(
        {"action_id": ["A1"], "channel": ["email"], "topic": ["dosing"], "content_id": ["C1"]}
    )
    space = FeatureSpace().fit(hcps, catalog)
    assert space.numeric_hcp_columns == ("decile",)
    # Nearly unique identifiers are left out; a code shared by many HCPs describes them.
    assert set(space.categorical_hcp_columns) == {"specialty", "practice_type", "region_code"}
