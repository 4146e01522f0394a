"""Thin HTTP layer (FastAPI) over the service."""
