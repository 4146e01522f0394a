"""`nextbest train --skip-if-trained`: a job run again (a scheduler's retry, a second
`make demo`) trains and registers nothing when a version was trained on the same data
with the same parameters and code, and trains when any of them changed."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from nextbest import registry
from nextbest.settings import get_settings

from .conftest import FAST, run_ok

COMMIT = "c0ffee" * 6 + "c0ff"  # a clean checkout's commit, the same for every run
SAID = "trained on this data with these parameters and code: nothing trained"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    run_ok("simulate", "--out", str(out), "--hcps", "120", "--periods", "6", "--seed", "2")
    return out


@pytest.fixture
def one_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code every run in the test trains with: the suite may run from a checkout
    with uncommitted changes, which no run can be told apart by."""
    monkeypatch.setattr(registry, "source_commit", lambda: COMMIT)


def _versions() -> list[str]:
    settings = get_settings()
    found = registry.client(settings).search_model_versions(f"name='{settings.model_name}'")
    return sorted((str(v.version) for v in found), key=int)


def _training_runs() -> int:
    mlflow.set_tracking_uri(get_settings().resolved_tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return len([r for r in runs if "decision" not in r.data.tags])  # not champion records


def _train(data: Path, *more: str) -> str:
    """The output of ``train --skip-if-trained`` (the fast config unless ``more`` names
    another), its lines joined as Rich wrapped them."""
    output = run_ok("train", "--data", str(data), "--config", str(FAST), "--skip-if-trained", *more)
    return " ".join(output.split())


def test_a_job_run_again_trains_and_registers_nothing_and_names_the_version(
    env_settings: Path, world: Path, one_commit: None, tmp_path: Path
) -> None:
    first = _train(world)  # an empty registry: trained
    assert "version 1 aliases: champion" in first and SAID not in first
    assert _versions() == ["1"] and _training_runs() == 1

    again = _train(world)
    assert f"version 1 (champion) was {SAID}" in again, again
    assert _versions() == ["1"] and _training_runs() == 1
    # The simulator is deterministic: a world simulated again (as `make demo` does) is
    # the same data.
    copy = tmp_path / "again"
    run_ok("simulate", "--out", str(copy), "--hcps", "120", "--periods", "6", "--seed", "2")
    assert f"version 1 (champion) was {SAID}" in _train(copy)
    # An alias asked for goes to no version: nothing is registered.
    skipped = _train(world, "--alias", "challenger")
    assert "--alias challenger given to no version" in skipped, skipped
    assert registry.alias_version(get_settings(), "challenger") is None
    assert _versions() == ["1"] and _training_runs() == 1

    # Without the option, as before: trained again, and the repeat said after.
    plain = " ".join(run_ok("train", "--data", str(world), "--config", str(FAST)).split())
    assert (
        "version 2 was trained on the same data with the same parameters and code as version 1"
        in plain
    )
    assert _versions() == ["1", "2"]
    assert f"versions 1 (champion) and 2 were {SAID}" in _train(world)
    assert _versions() == ["1", "2"]


def test_other_config_data_cut_off_or_code_is_trained(
    env_settings: Path,
    world: Path,
    one_commit: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _train(world)
    assert _versions() == ["1"]
    # Each run it trains says why: a job run from another directory (other config
    # files) or after an edit trained again, and only the runs' params said why.
    assert (
        "note: --skip-if-trained: no version was trained on this data with these "
        "parameters and code: trained (none on this data)"
    ) in first, first

    config = tmp_path / "smaller.yaml"
    config.write_text(FAST.read_text().replace("n_estimators: 30", "n_estimators: 20"))
    assert config.read_text() != FAST.read_text()
    changed = _train(world, "--config", str(config))
    assert SAID not in changed and "version 2 aliases: -" in changed
    assert (
        "trained (on this data, version 1: other config.file, engagement.n_estimators)"
    ) in changed, changed
    assert _versions() == ["1", "2"]

    # One HCP's attribute: the interactions (and so the cut-off) are those of version 1.
    other = tmp_path / "other"
    shutil.copytree(world, other)
    hcps = pd.read_csv(other / "hcps.csv", dtype=str, keep_default_na=False)
    hcps.loc[0, "years_in_practice"] = str(int(hcps.loc[0, "years_in_practice"]) + 1)
    hcps.to_csv(other / "hcps.csv", index=False)
    assert SAID not in _train(other)
    assert _versions() == ["1", "2", "3"]

    assert SAID not in _train(world, "--as-of", "2026-07-01")
    assert _versions() == ["1", "2", "3", "4"]

    with monkeypatch.context() as later:
        later.setattr(registry, "source_commit", lambda: "d" * 40)
        edited = _train(world)
    assert SAID not in edited
    # The newest three on this data, each with what differed (version 3 is of other data).
    assert (
        "trained (on this data, version 1: other code; version 2: other config.file, "
        "engagement.n_estimators, code; version 4: other as_of, code)"
    ) in edited, edited
    assert _versions() == ["1", "2", "3", "4", "5"]

    # Each of them, asked again, is found.
    assert f"version 2 was {SAID}" in _train(world, "--config", str(config))
    assert f"version 3 was {SAID}" in _train(other)
    assert f"version 4 was {SAID}" in _train(world, "--as-of", "2026-07-01")
    assert f"version 1 (champion) was {SAID}" in _train(world)
    assert _training_runs() == 5


def test_a_version_not_registered_in_full_is_trained_again(
    env_settings: Path, world: Path, one_commit: None
) -> None:
    """A training stopped after MLflow registered its version, before the digest its
    loading checks was written: that version is no model to keep serving."""
    _train(world)
    settings = get_settings()
    registry.client(settings).delete_model_version_tag(
        settings.model_name, "1", registry.DIGEST_TAG
    )
    assert SAID not in _train(world)
    assert _versions() == ["1", "2"]


def test_a_checkout_with_the_same_uncommitted_edits_is_the_same_code(
    env_settings: Path, world: Path, git_checkout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two checkouts edited differently share one "+modified" commit: the edits
    themselves (their digest) tell them apart. The code running here is named as that
    of a real git checkout, edited between the runs."""
    module = git_checkout.module
    monkeypatch.setattr(registry, "source_commit", partial(registry.source_commit, module))
    monkeypatch.setattr(registry, "source_edits", partial(registry.source_edits, module))
    monkeypatch.setattr(registry, "source_patch", partial(registry.source_patch, module))
    module.write_text("x = 2\n")
    first = _train(world)
    # Named by its edits: no note that this code could not be told from other code.
    assert SAID not in first and "no version is known to be trained by this code" not in first
    assert _versions() == ["1"]
    assert f"version 1 (champion) was {SAID}" in _train(world)
    assert _versions() == ["1"] and _training_runs() == 1

    module.write_text("x = 3\n")  # another edit: other code
    edited = _train(world)
    assert SAID not in edited and "(on this data, version 1: other code)" in edited
    assert _versions() == ["1", "2"]
    module.write_text("x = 2\n")  # the first edit made again
    assert f"version 1 (champion) was {SAID}" in _train(world)

    # A new module the edits may import, not yet committed: an edit too.
    (module.parent / "helper.py").write_text("y = 1\n")
    assert SAID not in _train(world)
    assert _versions() == ["1", "2", "3"]
    assert f"version 3 was {SAID}" in _train(world)
    assert _training_runs() == 3


def test_code_with_uncommitted_changes_it_cannot_read_is_trained_saying_why(
    env_settings: Path, world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Edits git could not list or read (:func:`registry.source_edits` None): no
    version is known to be of this code."""
    monkeypatch.setattr(registry, "source_commit", lambda: COMMIT + "+modified")
    monkeypatch.setattr(registry, "source_edits", lambda: None)
    _train(world)
    again = _train(world)
    assert SAID not in again
    assert (
        f"--skip-if-trained: the code has uncommitted changes (to commit {COMMIT[:12]}) "
        "that git could not read, so no version is known to be trained by this code: trained"
    ) in again
    assert _versions() == ["1", "2"]


def test_an_installed_release_is_known_by_its_version(
    env_settings: Path, world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed from a wheel, no git checkout: the release names the code."""
    monkeypatch.setattr(registry, "source_commit", lambda: "unknown")
    monkeypatch.setattr(registry, "_code_version", lambda: "9.9.9")
    _train(world)
    assert f"version 1 (champion) was {SAID}" in _train(world)
    monkeypatch.setattr(registry, "_code_version", lambda: "9.9.10")
    assert SAID not in _train(world)
    assert _versions() == ["1", "2"]


# `nextbest ARGS...` run with the code named COMMIT (as the in-process runs here, see
# one_commit), killed outright (SIGKILL) when it sets alias champion: a first training
# stopped after it registered its version in full, before it made it champion.
_KILLED_AT_CHAMPION = """
import os, signal, sys

from mlflow.tracking.client import MlflowClient

from nextbest import registry

commit = sys.argv[1]
registry.source_commit = lambda: commit
original = MlflowClient.set_registered_model_alias


def killed(self, name, alias, version):
    if alias == "champion":
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, name, alias, version)


MlflowClient.set_registered_model_alias = killed
sys.argv = ["nextbest", *sys.argv[2:]]
from nextbest.cli import main

main()
"""


def test_a_first_training_killed_before_it_made_its_version_champion_is_trained_again(
    env_settings: Path, world: Path, one_commit: None
) -> None:
    """A scheduler's retry of a first training killed before it set the champion: the
    version is registered in full, and skipping left nothing served (exit 0, saying
    only "nothing trained"). A training with no champion makes its version champion,
    which skipping does not, so it trains; and says what `models --repair` does."""
    import signal
    import subprocess
    import sys

    train = ["train", "--data", str(world), "--config", str(FAST), "--skip-if-trained"]
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_CHAMPION, COMMIT, *train],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=600,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    settings = get_settings()
    assert _versions() == ["1"] and registry.alias_version(settings, "champion") is None
    (listed,) = registry.list_versions(settings)
    assert listed.alias_unset == "champion"  # what `nextbest models --repair` would set

    again = _train(world)
    assert SAID not in again, again
    assert (
        "--skip-if-trained: version 1 was trained on this data with these parameters and "
        "code, but no version is champion, so none is served: trained, for a first champion;"
        " version 1 was registered in full as the first champion by a training stopped "
        "before it set the alias: `nextbest models --repair` makes such a version champion "
        "without training"
    ) in again, again
    assert "version 2 aliases: champion" in again, again
    assert _versions() == ["1", "2"] and registry.alias_version(settings, "champion") == "2"
    # Run again, now that one is served: nothing trained.
    assert f"versions 1 and 2 (champion) were {SAID}" in _train(world)
    assert _versions() == ["1", "2"]


def test_the_data_is_fingerprinted_once(
    env_settings: Path, world: Path, one_commit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check before training and the training itself hash the same data: once (a
    large history takes seconds to hash)."""
    from nextbest.contract.dataset import Dataset

    hashed: list[Dataset] = []
    fingerprint = Dataset.fingerprint

    def counted(dataset: Dataset) -> str:
        hashed.append(dataset)
        return fingerprint(dataset)

    monkeypatch.setattr(Dataset, "fingerprint", counted)
    _train(world)  # checked, then trained
    assert len(hashed) == 1 and _versions() == ["1"]
    hashed.clear()
    assert f"version 1 (champion) was {SAID}" in _train(world)
    assert len(hashed) == 1
    # The one taken is the one kept with the version, which the check compares with.
    settings = get_settings()
    run = registry.client(settings).get_run(registry.describe_version(settings, "1").run_id)
    assert run.data.tags["data_fingerprint"] == fingerprint(hashed[0])


def test_a_local_dask_run_skipped_starts_no_cluster(
    env_settings: Path, world: Path, one_commit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local cluster's workers (one per core) are known before it starts: a run
    skipped does not pay for starting one."""
    import distributed

    started: list[int] = []

    class Counted(distributed.LocalCluster):  # type: ignore[misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            started.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(distributed, "LocalCluster", Counted)
    first = _train(world, "--dask", "local")
    assert SAID not in first and len(started) == 1
    assert f"version 1 (champion) was {SAID}" in _train(world, "--dask", "local")
    assert len(started) == 1
    # Another number of workers is other params: trained, on a cluster.
    assert SAID not in _train(world)
    assert _versions() == ["1", "2"] and len(started) == 1
