"""Offline evaluation: model metrics, uplift curves, off-policy value, plots."""
