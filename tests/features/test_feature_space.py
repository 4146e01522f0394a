"""Which HCP columns the feature space turns into model features."""

from __future__ import annotations

import pandas as pd

from nextbest.features.space import FeatureSpace


def test_identifier_columns_are_not_features() -> None:
    hcps = pd.DataFrame(
        {
            "hcp_id": ["H1", "H2", "H3"],
            "specialty": ["cardiology", "oncology", "cardiology"],
            "territory_id": ["T1", "T1", "T2"],
            "decile": [3, 7, 9],
            "practice_type": ["solo", "group", "hospital"],
            "zip": ["02134", "10001", "00501"],
            "npi_id": ["001", "002", "003"],
            "consent_email": [True, True, False],
        }
    )
    catalog = pd.DataFrame(
        {"action_id": ["A1"], "channel": ["email"], "topic": ["dosing"], "content_id": ["C1"]}
    )
    space = FeatureSpace().fit(hcps, catalog)
    assert space.numeric_hcp_columns == ("decile",)
    assert set(space.categorical_hcp_columns) == {"specialty", "practice_type"}
