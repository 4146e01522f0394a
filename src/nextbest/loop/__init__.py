"""The closed loop: uplift report, retraining with feedback, off-policy gate, promotion.

``report`` compares served and randomized-holdout outcomes, ``retrain`` learns from
history plus logged decisions with their outcomes and registers a ``challenger``,
``gate`` estimates challenger and champion off-policy, promotes when the configured
gate passes and rolls back. ``evidence`` turns the recommendation log into the
shared off-policy vocabulary. Importing this package loads no model and opens no
database.
"""
