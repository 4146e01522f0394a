"""Kevin Hillstrom's MineThatData e-mail experiment (2008) as a contract data set.

64,000 customers were randomly split into three equal arms for two weeks: "Mens
E-Mail", "Womens E-Mail" and "No E-Mail". Here each customer plays an HCP, the two
e-mails are two actions on channel ``email``, "No E-Mail" is the randomized holdout,
and the logging propensity is the known 1/3.

Source: K. Hillstrom, "The MineThatData E-Mail Analytics and Data Mining Challenge",
2008 (see /work/shared/data/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from nextbest.contract import parse
from nextbest.contract.adapters.base import numbered_as, read_columns, validated, zero_or_one
from nextbest.contract.dataset import Dataset

OUTCOMES: Final = ("visit", "conversion", "spend")
COLUMNS: Final = (
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "channel",
    "segment",
    *OUTCOMES,
)
#: Arm (``segment``) -> action_id; None is the no-mail control.
ARMS: Final[dict[str, str | None]] = {
    "Mens E-Mail": "mens_email",
    "Womens E-Mail": "womens_email",
    "No E-Mail": None,
}
#: Assignment was uniformly random over the three arms.
PROPENSITY: Final = 1 / 3
CAMPAIGN_DATE: Final = pd.Timestamp("2008-03-01")
APPROVED_FROM: Final = pd.Timestamp("2008-01-01")


def load_hillstrom(path: Path | str, *, outcome: str = "visit") -> Dataset:
    """Map the Hillstrom CSV into a validated :class:`Dataset`.

    Args:
        path: the CSV (columns listed in ``COLUMNS``), 64,000 rows for the original.
        outcome: which column becomes ``outcome``: ``visit`` (0/1), ``conversion``
            (0/1) or ``spend`` (dollars).

    Returns:
        hcps with one row per customer (``hcp_id`` ``C00001``... by 1-based row,
        ``specialty`` 'customer', ``territory_id`` = zip_code, the customer features,
        ``purchase_channel`` and ``consent_email`` True); a catalog of ``mens_email``
        and ``womens_email``; one interaction per customer on 2008-03-01 with
        ``engaged`` = visit for mailed customers (0 for the holdout), the chosen
        ``outcome`` and ``propensity`` 1/3.

    Raises:
        ValueError: ``outcome`` is not one of ``OUTCOMES``.
        ContractError: the file is unreadable, lacks columns, or has bad values.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}; got {outcome!r}")
    path = Path(path)
    raw, log = read_columns(path, COLUMNS, "Hillstrom")
    n = len(raw)

    segment = parse.text(raw["segment"])
    log.add_rows(
        ~segment.isin(list(ARMS)).to_numpy(),
        "segment",
        lambda i: f"{segment.iat[i]!r} is not one of {', '.join(ARMS)}",
    )
    visit_values = zero_or_one(raw, "visit", log)
    log.raise_if_any()

    hcp_id = pd.Series([f"C{row:05d}" for row in range(1, n + 1)], dtype=object)
    hcps = pd.DataFrame(
        {
            "hcp_id": hcp_id,
            "specialty": "customer",
            "territory_id": raw["zip_code"],
            "recency": raw["recency"],
            "history": raw["history"],
            "history_segment": raw["history_segment"],
            "mens": raw["mens"],
            "womens": raw["womens"],
            "newbie": raw["newbie"],
            "purchase_channel": raw["channel"],
            "consent_email": True,
        }
    )
    catalog = pd.DataFrame(
        {
            "action_id": ["mens_email", "womens_email"],
            "channel": "email",
            "content_id": ["mens_email", "womens_email"],
            "topic": ["mens", "womens"],
            "content_type": "promotional",
            "approved_from": APPROVED_FROM,
            "approved_until": pd.NaT,
            "specialties": "",
            "cost": 0.0,
        }
    )
    action_id = segment.map(ARMS)
    treated = action_id.notna().to_numpy()
    interactions = pd.DataFrame(
        {
            "hcp_id": hcp_id,
            "timestamp": CAMPAIGN_DATE,
            "action_id": action_id,
            "engaged": np.where(treated, visit_values, 0).astype(np.int8),
            "outcome": raw[outcome],
            "propensity": PROPENSITY,
            "holdout": ~treated,
        }
    )

    return validated(path, numbered_as(hcps, raw), catalog, numbered_as(interactions, raw))
