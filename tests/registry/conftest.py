"""Fixtures of the registry tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def own_copy(trained, tmp_path: Path):
    """The session's registry copied, so new versions and tags stay in this test."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    return trained.settings.model_copy(update={"models_dir": models})
