"""Fixtures of the storage suite: every test runs on SQLite and on PostgreSQL.

``database_url`` (tests/conftest.py) gives each test a fresh database on both
backends; PostgreSQL needs ``NEXTBEST_TEST_POSTGRES_URL`` and is skipped, saying
so, without it. Other suites can get the same databases from
``nextbest.storage.testing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
from nextbest.storage.testing import recommendation_record as recommendation
from nextbest.storage.testing import served_item


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


@pytest.fixture
def make_served_item() -> Callable[..., ServedItem]:
    return served_item


@pytest.fixture
def make_recommendation() -> Callable[..., RecommendationRecord]:
    return recommendation
