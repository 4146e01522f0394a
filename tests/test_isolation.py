"""The suite runs on its own stores whatever the developer's environment says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_no_developer_database_reaches_the_tests() -> None:
    # (Tests set NEXTBEST_* themselves through monkeypatch, which puts them back.)
    assert "NEXTBEST_DATABASE_URL" not in os.environ


def test_a_developers_database_url_is_dropped(tmp_path: Path) -> None:
    # Run the check above in a fresh pytest whose environment names a database
    # the tests must not write to.
    root = Path(__file__).parents[1]
    env = {**os.environ, "NEXTBEST_DATABASE_URL": f"sqlite:///{tmp_path / 'mine.db'}"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            f"{Path(__file__).relative_to(root)}::test_no_developer_database_reaches_the_tests",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert not (tmp_path / "mine.db").exists()


def test_dropping_the_environment_keeps_what_is_asked_and_says_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nextbest.settings import drop_environment_settings, get_settings

    # The suite's own servers' variables (NEXTBEST_TEST_*_URL) out of the way while
    # it runs, and back for the tests after it.
    for name in [name for name in os.environ if name.startswith("NEXTBEST_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("NEXTBEST_HOLDOUT_RATE", "0.5")
    monkeypatch.setenv("NEXTBEST_TEST_POSTGRES_URL", "postgresql://kept")
    monkeypatch.setenv("OTHER_SETTING", "kept")
    said: list[str] = []
    assert drop_environment_settings(keep=("NEXTBEST_TEST_POSTGRES_URL",), say=said.append) == [
        "NEXTBEST_HOLDOUT_RATE"
    ]
    assert said == ["ignoring NEXTBEST_HOLDOUT_RATE from the environment (this run keeps its own)"]
    assert os.environ["NEXTBEST_TEST_POSTGRES_URL"] == "postgresql://kept"
    assert os.environ["OTHER_SETTING"] == "kept"
    assert get_settings().holdout_rate == 0.05
    get_settings.cache_clear()
