"""Point-in-time features: history per HCP x channel / topic, and model rows."""

from nextbest.features.history import EventLog, HistoryFeaturizer, event_log
from nextbest.features.space import FeatureSpace

__all__ = ["EventLog", "FeatureSpace", "HistoryFeaturizer", "event_log"]
