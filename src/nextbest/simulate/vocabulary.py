"""Fixed vocabularies of the simulated world (order matters: arrays are indexed by it)."""

from __future__ import annotations

CHANNELS: tuple[str, ...] = ("rep_visit", "rep_phone", "email", "webinar")
TOPICS: tuple[str, ...] = (
    "efficacy",
    "safety",
    "dosing",
    "access",
    "patient_support",
    "new_indication",
)
SPECIALTIES: tuple[str, ...] = (
    "cardiology",
    "endocrinology",
    "primary_care",
    "nephrology",
    "oncology",
)
REGIONS: tuple[str, ...] = ("northeast", "south", "midwest", "west")
PRACTICE_TYPES: tuple[str, ...] = ("hospital", "clinic", "solo")

REP_VISIT, REP_PHONE, EMAIL, WEBINAR = range(len(CHANNELS))
PRIMARY_CARE = SPECIALTIES.index("primary_care")
HOSPITAL, CLINIC, SOLO = range(len(PRACTICE_TYPES))
