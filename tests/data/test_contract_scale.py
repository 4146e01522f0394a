"""A million logged decisions go through the full Parquet load and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nextbest.contract import load_catalog, load_hcps, load_interactions, write_table


def test_a_million_interactions_validate(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n_hcps, n_actions, n = 20_000, 40, 1_000_000
    hcp_ids = np.array([f"H{i:06d}" for i in range(n_hcps)], dtype=object)
    action_ids = np.array([f"A{i:03d}" for i in range(n_actions)], dtype=object)
    write_table(
        pd.DataFrame({"hcp_id": hcp_ids, "specialty": "onc", "territory_id": "T1"}),
        tmp_path / "hcps.parquet",
    )
    write_table(
        pd.DataFrame(
            {
                "action_id": action_ids,
                "channel": np.where(np.arange(n_actions) % 2, "email", "rep_visit"),
                "content_id": action_ids,
                "topic": "efficacy",
                "content_type": "medical",
                "approved_from": pd.Timestamp("2024-01-01"),
                "approved_until": pd.NaT,
            }
        ),
        tmp_path / "catalog.parquet",
    )
    pick = rng.integers(-1, n_actions, n)  # -1: no-touch
    write_table(
        pd.DataFrame(
            {
                "hcp_id": hcp_ids[rng.integers(0, n_hcps, n)],
                "timestamp": pd.Timestamp("2024-01-01")
                + pd.to_timedelta(rng.integers(0, 365 * 86_400, n), unit="s"),
                "action_id": np.array([*action_ids, None], dtype=object)[pick],  # -1: None
                "engaged": np.where(pick >= 0, rng.integers(0, 2, n), 0),
                "outcome": rng.poisson(1.0, n).astype(float),
                "propensity": rng.uniform(0.01, 1.0, n),
                "holdout": pick < 0,
            }
        ),
        tmp_path / "interactions.parquet",
    )

    hcps = load_hcps(tmp_path / "hcps.parquet")
    catalog = load_catalog(tmp_path / "catalog.parquet")
    got = load_interactions(tmp_path / "interactions.parquet", hcps=hcps, catalog=catalog)

    assert len(got) == n
    key = pd.MultiIndex.from_arrays([got["hcp_id"], got["timestamp"]])
    assert key.is_monotonic_increasing
    assert got["channel"].isna().sum() == (pick < 0).sum()
    assert got["engaged"].dtype == np.int8
