"""The clock decisions and key rotations are read by, passed in where a test sets it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC: the default clock of a recommender and of
    a key store."""
    return datetime.now(UTC)
