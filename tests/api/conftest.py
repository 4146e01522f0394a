"""API fixtures: an app with real API keys (one per role) over the trained model."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from fastapi.testclient import TestClient

from nextbest.api.app import create_app
from nextbest.service.apikeys import hash_key
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings
from nextbest.storage.testing import POSTGRES_URL_ENV, temporary_postgres_database

ADMIN_KEY = "admin-key-0123456789abcdef"
CHANNEL_KEY = "channel-key-0123456789abcdef"
REP_KEY = "rep-key-0123456789abcdef-t1"
MONITOR_KEY = "monitor-key-0123456789abcdef"


@dataclass(frozen=True)
class Keys:
    admin: dict[str, str]
    channel: dict[str, str]
    rep: dict[str, str]
    rep_name: str
    territory: str
    channel_key: str = CHANNEL_KEY
    monitor: dict[str, str] = field(
        default_factory=lambda: {"Authorization": f"Bearer {MONITOR_KEY}"}
    )


def assert_lifts_between(said: str, earliest: datetime, latest: datetime) -> None:
    """The ``, lifts YYYY-MM-DD HH:MM UTC`` a reason says lies between ``earliest`` and
    ``latest`` (the rule's end bracketed by clock readings around the request that set
    it), the said time being rounded up to the minute: a date computed from a second
    clock reading alone is a day off whenever the two straddle midnight."""
    found = re.search(r", lifts (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC", said)
    assert found, f"no lift time in {said!r}"
    lifts = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert earliest <= lifts < latest + timedelta(minutes=1), (earliest, said, latest)


def held_out_this_week_or_next(client: TestClient, hcp_id: str) -> bool:
    """Whether the served weekly holdout holds ``hcp_id`` out this week or the next.

    A test that picks an HCP for the items it is served and asks about it again
    finds it held out, with no items, when a Monday 00:00 UTC comes between and the
    new week's draw holds it out: such HCPs are passed over."""
    from nextbest.policy.exploration import HOLDOUT_SALT, holdout_draw

    exploration = client.app.state.runtime.recommender.exploration
    days, rate = exploration.holdout_days, exploration.holdout_rate
    if not days or not rate:
        return False
    today = datetime.now(UTC).date()
    return any(
        holdout_draw(hcp_id, today + timedelta(days=n), days=days, salt=HOLDOUT_SALT) < rate
        for n in (0, days)
    )


def write_keys(path: Path, territory: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {"name": "ops-admin", "role": "admin", "key_sha256": hash_key(ADMIN_KEY)},
                    {"name": "crm-email", "role": "channel", "key": CHANNEL_KEY},
                    {
                        "name": "rep-1",
                        "role": "rep",
                        "territory_id": territory,
                        "key_sha256": hash_key(REP_KEY),
                    },
                    {"name": "prometheus", "role": "monitor", "key_sha256": hash_key(MONITOR_KEY)},
                ]
            }
        )
    )


@pytest.fixture(scope="session")
def territory(trained) -> str:
    from nextbest.contract import load_dataset

    return str(load_dataset(trained.data_dir).hcps["territory_id"].iat[0])


@pytest.fixture
def api_settings(trained, tmp_path: Path, territory: str) -> Settings:
    keys = tmp_path / "api_keys.yaml"
    write_keys(keys, territory)
    return trained.settings.model_copy(
        update={
            "api_keys_file": keys,
            "database_url": f"sqlite:///{tmp_path / 'serve.db'}",
        }
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def api_store(request: pytest.FixtureRequest, api_settings: Settings) -> Iterator[Settings]:
    """``api_settings`` on SQLite, then on a throw-away PostgreSQL database (skipped
    without the test database's URL)."""
    if request.param == "sqlite":
        yield api_settings
        return
    if not os.environ.get(POSTGRES_URL_ENV):
        pytest.skip(f"{POSTGRES_URL_ENV} is not set: PostgreSQL tests skipped")
    with temporary_postgres_database(os.environ[POSTGRES_URL_ENV]) as url:
        yield api_settings.model_copy(update={"database_url": url})


@pytest.fixture
def keys(territory: str) -> Keys:
    return Keys(
        admin={"Authorization": f"Bearer {ADMIN_KEY}"},
        # Authorization overrides the client's default (admin) header.
        channel={"Authorization": f"Bearer {CHANNEL_KEY}"},
        rep={"Authorization": f"Bearer {REP_KEY}"},
        rep_name="rep-1",
        territory=territory,
    )


@pytest.fixture
def client(api_settings: Settings, keys: Keys) -> Iterator[TestClient]:
    """Authenticated as admin by default; pass other headers per request."""
    with TestClient(create_app(api_settings), headers=dict(keys.admin)) as c:
        yield c


@pytest.fixture
def own_registry(api_settings: Settings, tmp_path: Path) -> Settings:
    """A copy of the trained MLflow store, so moving aliases here touches no other test."""
    models = tmp_path / "models"
    shutil.copytree(api_settings.resolved_models_dir, models)
    return api_settings.model_copy(update={"models_dir": models, "tracking_uri": None})


def keys_cli(*args: str) -> Result:
    """``nextbest keys *args`` run in-process; the result, whatever its exit code."""
    from typer.testing import CliRunner

    from nextbest.cli import app

    return CliRunner().invoke(app, ["keys", *args])


def keys_cli_refused(path: Path, *args: str) -> str:
    """``nextbest keys *args --file path`` that must be refused (exit 2) and leave the
    file as it was; its output."""
    before = path.read_text()
    result = keys_cli(*args, "--file", str(path))
    assert result.exit_code == 2, result.output
    assert path.read_text() == before
    return result.output


@contextmanager
def serving(settings: Settings, keys: Keys) -> Iterator[tuple[ServingRuntime, TestClient, str]]:
    """A runtime started on ``settings``, an admin client on an app over it (not yet
    entered: the test opens and closes it) and the id of its first HCP; the runtime
    is closed after."""
    runtime = ServingRuntime.start(settings)
    try:
        hcp = str(runtime.recommender.hcp_ids[0])
        yield runtime, TestClient(create_app(settings, runtime), headers=dict(keys.admin)), hcp
    finally:
        runtime.close()
