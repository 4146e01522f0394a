"""The champion's timeline through the CLI: train -> promote -> rollback, who and why,
which version was champion when, and a forced promotion that must say why."""

from __future__ import annotations

import json
import os
import pwd
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from nextbest import registry
from nextbest.cli import app
from nextbest.learning.train import TrainResult
from nextbest.loop.lineage import champion_changes
from nextbest.service.requester import os_user
from nextbest.settings import get_settings

from .conftest import FAST, run_ok, runner


def _challenger() -> str:
    """The champion's model registered again as challenger (no second training)."""
    settings = get_settings()
    model = registry.load_version(settings, "1")
    result = TrainResult(model=model, metrics={}, params={"variant": "challenger"})
    return registry.log_training_run(result, settings, alias="challenger").version


def test_history_lists_train_promote_rollback_with_who_and_why(
    env_settings: Path, world_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_ok("train", "--data", str(world_dir), "--config", str(FAST))
    challenger = _challenger()
    assert challenger == "2"

    # A forced promotion must say why: refused before anything moves or is logged.
    refused = runner.invoke(app, ["promote", "--force"])
    assert refused.exit_code == 2, refused.output
    assert "--force needs --reason" in refused.output
    settings = get_settings()
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "challenger") == "2"
    assert [c.decision for c in champion_changes(settings)] == ["train"]
    blank = runner.invoke(app, ["promote", "--force", "--reason", "  "])
    assert blank.exit_code == 2 and registry.alias_version(settings, "champion") == "1"

    # No logged outcomes yet: only a forced promotion can move the champion. Who
    # made it is the account by its user id, not the name LOGNAME claims.
    with monkeypatch.context() as claimed:
        claimed.setenv("LOGNAME", "someone-else")
        run_ok("promote", "--force", "--reason", "field pilot needs the new content")
    assert registry.alias_version(settings, "champion") == "2"
    run_ok("rollback", "--reason", "complaints from the field")
    assert registry.alias_version(settings, "champion") == "1"

    printed = json.loads(run_ok("models", "--json"))
    listed = printed["champion_changes"]
    assert [(c["version"], c["decision"], c["previous"]) for c in listed] == [
        ("1", "train", None),
        ("2", "forced promote", "1"),
        ("1", "rollback", "2"),
    ]
    # Not the same list: champion_history is what `rollback` returns through, and the
    # rollback took version 2 off it. The help says which is which.
    assert printed["champion_history"] == ["1"]
    # Said so in the plain listing too: not as if version 1 had always been the only one.
    listed_plain = " ".join(run_ok("models").split())
    assert (
        "no earlier champion to roll back to: version 1 is the only one left in the "
        "champion history (version 2 was rolled back, which takes a version off it; "
        "`nextbest rollback` has one to return to once another version is promoted)"
    ) in listed_plain, listed_plain
    shown = " ".join(run_ok("models", "--help").split()).replace("│ ", "")
    assert "champion_history (the champions `rollback` returns through" in shown, shown
    assert "champion_changes (every change of champion, oldest first" in shown, shown
    assert [c["reason"] for c in listed] == [
        None,
        "field pilot needs the new content",
        "complaints from the field",
    ]
    assert all(c["by"] and c["run_id"] for c in listed)
    account = pwd.getpwuid(os.getuid()).pw_name
    assert listed[1]["by"] == f"{account}, LOGNAME says someone-else", listed[1]
    assert listed[2]["by"] == os_user(), listed[2]
    table = run_ok("models", "--history")
    rows = [line for line in table.splitlines() if " rollback " in line or " train " in line]
    assert len(rows) == 2, table
    positions = [
        table.index(said)
        # single words: an 80-column terminal (xdist's) wraps the cells
        for said in ("train", "forced", "field", "rollback", "complaints")
    ]
    assert positions == sorted(positions), table

    # Which version was champion when: between changes, at one, before the first.
    changes = champion_changes(settings)
    assert changes[0].at < changes[1].at < changes[2].at
    for (before, after), expected in zip(pairwise(changes), ["1", "2"], strict=True):
        between = before.at + (after.at - before.at) / 2
        said = run_ok("models", "--champion-at", between.isoformat())
        assert f"the champion was version {expected}: " in said, said
    now = changes[2].at + (datetime.now(UTC) - changes[2].at) / 2  # after it, not to come
    said = run_ok("models", "--champion-at", now.strftime("%Y-%m-%dT%H:%M:%S.%f"))  # naive: UTC
    assert "the champion was version 1: rollback" in said and "complaints" in said
    answer = json.loads(run_ok("models", "--champion-at", changes[1].at.isoformat(), "--json"))
    assert answer["champion"]["version"] == "2"

    # Before the first champion is a plain answer, not an error: the history answers it
    # (README's example time, before a demo trained today, ended in exit 2).
    early = runner.invoke(app, ["models", "--champion-at", "2020-01-01T00:00"])
    assert early.exit_code == 0, early.output
    assert " ".join(early.stdout.split()) == (
        "at 2020-01-01T00:00:00+00:00 no version was champion yet: the first, version 1, "
        f"became champion later, at {changes[0].at.isoformat()} (train by {changes[0].by})"
    ), early.stdout
    early_json = json.loads(run_ok("models", "--champion-at", "2020-01-01T00:00", "--json"))
    assert early_json["champion"] is None, early_json
    assert early_json["first_champion"] == changes[0].as_dict(), early_json
    assert answer["first_champion"] == changes[0].as_dict(), answer
    bad = runner.invoke(app, ["models", "--champion-at", "30/11/2026 12:00"])
    assert bad.exit_code == 2, bad.output
    assert "--champion-at '30/11/2026 12:00' is not a time" in bad.output


def test_a_first_champion_trained_before_it_was_recorded_starts_the_history(
    env_settings: Path, trained
) -> None:
    """A store from before training recorded its champion: the history starts with the
    version the first recorded change replaced, at its registration, marked unrecorded."""
    settings = get_settings()
    model = registry.load_version(trained.settings, trained.version)
    result = TrainResult(model=model, metrics={}, params={"variant": "legacy"})
    first = registry.log_training_run(result, settings).version
    client = registry.client(settings)
    (recorded,) = champion_changes(settings)
    assert recorded.decision == "train" and recorded.run_id is not None
    client.delete_run(recorded.run_id)  # as an older nextbest left it: no such run
    (inferred,) = champion_changes(settings)
    registered = client.get_model_version(settings.model_name, first).creation_timestamp
    assert (inferred.version, inferred.decision, inferred.run_id) == (first, "train", None)
    assert inferred.at.timestamp() * 1000 == pytest.approx(registered, abs=1)
    listed = json.loads(run_ok("models", "--json"))
    assert (
        listed["versions"][0]["artifact_sha256"]
        == client.get_model_version(settings.model_name, first).tags[registry.DIGEST_TAG]
    )
    assert "* not recorded as a decision" in run_ok("models", "--history")


def test_champion_at_a_time_to_come_is_the_champion_as_of_now(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time still to come was answered "the champion was version 1", as if the
    history had reached it: it says which version is champion now and that a decision
    before then would change it."""
    from .conftest import explained_on_a_copy

    explained_on_a_copy(trained, tmp_path, monkeypatch)
    (change,) = champion_changes(get_settings())
    said = " ".join(run_ok("models", "--champion-at", "2099-01-01T00:00").split())
    assert said == (
        f"at 2099-01-01T00:00:00+00:00, in the future, the champion is version "
        f"{change.version} as of now (train at {change.at.isoformat()} by {change.by}), "
        "unless a promotion or rollback changes it before then"
    ), said
    answer = json.loads(run_ok("models", "--champion-at", "2099-01-01T00:00", "--json"))
    assert answer["champion"] == change.as_dict(), answer
