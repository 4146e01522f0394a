"""The simulator at production scale: 50,000 HCPs x 26 weekly periods.

About 3-6 s on two cores (1.3 M interaction rows, a 2 M-row truth), well under the
20 s that would justify leaving it out of the default run, so it is only marked.
"""

from __future__ import annotations

import pytest

from nextbest.simulate import simulate_world


@pytest.mark.slow
def test_fifty_thousand_hcps_for_half_a_year() -> None:
    world = simulate_world(n_hcps=50_000, periods=26, seed=2026)
    assert len(world.interactions) == 50_000 * 26
    assert len(world.truth) == 50_000 * len(world.catalog)
    assert world.interactions["propensity"].gt(0).all()
