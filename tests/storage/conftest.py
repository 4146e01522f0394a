"""Fixtures of the storage suite: every test runs on SQLite and on PostgreSQL.

``database_url`` (tests/conftest.py) gives each test a fresh database on both
backends; PostgreSQL needs ``NEXTBEST_TEST_POSTGRES_URL`` and is skipped, saying
so, without it. Other suites can get the same databases from
``nextbest.storage.testing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from nextbest.storage import (
    RecommendationRecord,
    ServedItem,
    make_engine,
    make_session_factory,
    migrate,
)

T0 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a migrated database."""
    migrate(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


def served_item(
    rank: int, action_id: str, channel: str = "email", **overrides: object
) -> ServedItem:
    """A served item with plausible defaults; override any field by name."""
    fields: dict[str, object] = {
        "rank": rank,
        "action_id": action_id,
        "channel": channel,
        "content_id": f"content-{action_id}",
        "score": 1.0 / rank,
        "expected_uplift": 0.1 / rank,
        "p_engage": 0.3,
        "propensity": 0.9 if rank == 1 else 0.05,
        "explored": False,
    }
    fields.update(overrides)
    return ServedItem(**fields)  # type: ignore[arg-type]


def recommendation(
    recommendation_id: str,
    hcp_id: str,
    *,
    items: tuple[ServedItem, ...] = (),
    holdout: bool = False,
    created_at: datetime = T0,
    **overrides: object,
) -> RecommendationRecord:
    """A logged recommendation with plausible defaults; override any field by name."""
    fields: dict[str, object] = {
        "recommendation_id": recommendation_id,
        "created_at": created_at,
        "hcp_id": hcp_id,
        "requester": "crm-eu",
        "purpose": "promotional",
        "channel_filter": None,
        "model_version": "nextbest/7",
        "holdout": holdout,
        "policy": "epsilon_greedy",
        "epsilon": 0.05,
        "holdout_rate": 0.1,
        "n_candidates": 200,
        "items": items,
    }
    fields.update(overrides)
    return RecommendationRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def make_served_item() -> Callable[..., ServedItem]:
    return served_item


@pytest.fixture
def make_recommendation() -> Callable[..., RecommendationRecord]:
    return recommendation
