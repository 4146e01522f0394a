"""Seeded simulated worlds shared by the simulator tests (built once per session)."""

from __future__ import annotations

import pytest

from nextbest.simulate import SimulatedWorld, simulate_world

SMALL_SEED = 7


@pytest.fixture(scope="session")
def small_world() -> SimulatedWorld:
    """2,000 HCPs x 26 weekly periods: big enough for calibration checks, ~0.2 s."""
    return simulate_world(n_hcps=2_000, periods=26, seed=SMALL_SEED)


@pytest.fixture(scope="session")
def tiny_world() -> SimulatedWorld:
    """300 HCPs x 8 periods, for exact bookkeeping checks."""
    return simulate_world(n_hcps=300, periods=8, seed=SMALL_SEED)
