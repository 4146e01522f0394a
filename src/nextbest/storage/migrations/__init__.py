"""Alembic migrations of the storage schema (a package so wheels always ship it)."""
