"""Storage: the recommendation log and the feedback store (SQLite or PostgreSQL).

``db`` makes engines and runs the Alembic migrations, ``tables`` holds the ORM
models, ``repository`` the plain functions the service layer calls. Importing this
package touches neither the disk nor the network.
"""

from nextbest.storage.db import make_engine, make_session_factory, migrate, ping
from nextbest.storage.repository import (
    CONTACT_EVENT_TYPES,
    ENGAGEMENT_EVENT_TYPES,
    FEEDBACK_EVENT_TYPES,
    FeedbackRecord,
    FeedbackResult,
    RecommendationRecord,
    ServedItem,
    contact_history,
    contacts_between,
    dismissals,
    get_recommendation,
    last_contacts,
    log_recommendations,
    logged_decisions,
    record_feedback,
)

__all__ = [
    "CONTACT_EVENT_TYPES",
    "ENGAGEMENT_EVENT_TYPES",
    "FEEDBACK_EVENT_TYPES",
    "FeedbackRecord",
    "FeedbackResult",
    "RecommendationRecord",
    "ServedItem",
    "contact_history",
    "contacts_between",
    "dismissals",
    "get_recommendation",
    "last_contacts",
    "log_recommendations",
    "logged_decisions",
    "make_engine",
    "make_session_factory",
    "migrate",
    "ping",
    "record_feedback",
]
