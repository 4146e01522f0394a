"""What a registered version records of where it came from: code, config, data."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from nextbest import registry
from nextbest.contract import load_dataset
from nextbest.learning.config import load_train_config
from nextbest.learning.train import train


def test_source_commit_names_the_checkout_and_says_when_it_was_modified(git_checkout) -> None:
    checkout, module = git_checkout.root, git_checkout.module
    head = git_checkout.git("rev-parse", "HEAD")
    assert registry.source_commit(module) == head
    (checkout / "notes.txt").write_text("untracked files change no code\n")
    assert registry.source_commit(module) == head
    module.write_text("x = 2\n")
    assert registry.source_commit(module) == f"{head}+modified"


def test_source_edits_name_the_edits_whenever_they_are_made(git_checkout) -> None:
    """The same edits give the same digest, other edits another; a new module of the
    package is an edit, a file outside it or one git ignores is not."""
    checkout, module = git_checkout.root, git_checkout.module
    edits = partial(registry.source_edits, module)
    (checkout / "notes.txt").write_text("not code\n")
    assert edits() is None  # no edit
    module.write_text("x = 2\n")
    first = edits()
    assert first is not None and len(first) == 64
    (checkout / "more-notes.txt").write_text("not code either\n")
    git_checkout.git("add", "pkg/module.py")  # staged or not: the same edit
    assert edits() == first
    module.write_text("x = 3\n")
    assert edits() not in (None, first)
    module.write_text("x = 2\n")
    assert edits() == first  # made again
    (checkout / ".gitignore").write_text("*.log\n")
    (checkout / "pkg" / "run.log").write_text("ignored\n")
    assert edits() == first
    (checkout / "pkg" / "helper.py").write_text("y = 1\n")
    with_new = edits()
    assert with_new not in (None, first)
    (checkout / "pkg" / "helper.py").write_text("y = 2\n")
    assert edits() not in (None, first, with_new)
    (checkout / "pkg" / "helper.py").unlink()
    module.unlink()
    assert edits() not in (None, first, with_new)  # a deleted file is an edit too
    assert registry.source_edits(Path("/nonexistent/module.py")) is None


def test_an_untracked_module_has_no_commit(git_checkout) -> None:
    checkout = git_checkout.root
    # A virtual environment inside a checkout: its files are not the checkout's code.
    installed = checkout / ".venv" / "site-packages" / "module.py"
    installed.parent.mkdir(parents=True)
    installed.write_text("x = 1\n")
    assert registry.source_commit(installed) == "unknown"
    assert registry.source_commit(Path("/nonexistent/module.py")) == "unknown"


def test_a_version_records_its_code_config_files_and_run(trained, own_copy, tmp_path: Path) -> None:
    settings = own_copy
    (tmp_path / "levers.yaml").write_text("channel:\n  email: {cost_weight: 1.5}\n")
    config_file = tmp_path / "train.yaml"
    config_file.write_text(
        "engagement: {n_estimators: 40, num_leaves: 15}\n"
        "uplift: {n_estimators: 60, learning_rate: 0.08}\n"
        "levers: levers.yaml\n"
    )
    config = load_train_config(config_file)
    version = registry.log_training_run(
        train(load_dataset(trained.data_dir), config=config), settings
    ).version

    (listed,) = [v for v in registry.list_versions(settings) if v.version == version]
    assert listed.source_commit == registry.source_commit()
    assert listed.nextbest_version == registry._code_version()
    assert listed.run_id and listed.data_fingerprint
    client = registry.client(settings)
    run = client.get_run(listed.run_id)
    assert run.data.tags[registry.SOURCE_TAG] == listed.source_commit
    assert run.data.tags["data_fingerprint"] == listed.data_fingerprint
    stored = {Path(a.path).name for a in client.list_artifacts(listed.run_id, "config")}
    assert stored == {"train.yaml", "levers.yaml"}
    copy = client.download_artifacts(listed.run_id, "config/train.yaml", str(tmp_path / "dl"))
    assert Path(copy).read_text() == config_file.read_text()


def test_a_models_directory_moved_elsewhere_serves_its_versions_and_refuses_new_runs(
    world_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MLflow keeps absolute artifact paths: a models directory restored at another
    path reads its versions from where it is now (saying so), refuses a new run
    (whose artifacts would land under the old path), and, with the files gone too,
    says why and where it looked."""
    import logging
    import shutil

    from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
    from nextbest.settings import Settings

    fast = TrainConfig(
        engagement=EngagementParams(n_estimators=20, num_leaves=7),
        uplift=UpliftParams(n_estimators=30, learning_rate=0.1),
    )
    first = tmp_path / "models"
    settings = Settings(models_dir=first)
    result = train(load_dataset(world_dir), config=fast)
    version = registry.log_training_run(result, settings).version
    registry.experiment_id(settings, "-reports")  # an uplift report's, made before the move
    moved = tmp_path / "restored"
    first.rename(moved)
    here = Settings(models_dir=moved)
    with caplog.at_level(logging.WARNING, logger="nextbest.registry"):
        model = registry.load_version(here, version)
    assert model.as_of == result.model.as_of and model.n_actions == result.model.n_actions
    assert f"which is gone; read from {moved.resolve()}" in caplog.text, caplog.text
    with pytest.raises(registry.RegistryError, match="the models directory was moved") as new:
        registry.log_training_run(result, here)
    assert f"under {first.resolve() / 'artifacts'}, which is gone" in str(new.value)
    assert not first.exists()  # nothing written under the old path
    # A command that finds it out deep down says so in one line, exit 2.
    import os
    import subprocess
    import sys

    from nextbest.storage import migrate

    env = {**os.environ, "NEXTBEST_MODELS_DIR": str(moved)}
    migrate(f"sqlite:///{moved / 'nextbest.db'}")  # a log to report on, as a server makes
    run = subprocess.run(
        [sys.executable, "-m", "nextbest.cli", "uplift-report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    said = " ".join(run.stderr.split())
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    # Off a terminal the report says it started (cli.output.working), then the error.
    assert said.startswith("building the uplift report ... error: the MLflow store in"), said
    assert not first.exists()
    shutil.rmtree(moved / "artifacts")
    (moved / "artifacts").mkdir()
    with pytest.raises(registry.ArtifactsUnreadableError) as refused:
        registry.load_version(here, version)
    said = str(refused.value)
    assert f"its artifacts at file://{first}" in said, said
    assert "the MLflow store records absolute artifact paths" in said, said
    assert f"outside the models directory {moved.resolve()}" in said, said


def test_registration_hides_mlflows_version_lines_and_nothing_else(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command says the version it registered; MLflow's lines about it are left
    out, and every other line of standard error is written as it comes (a progress
    heartbeat held back until the end of an upload read as a hang)."""
    import sys

    from mlflow.utils.logging_utils import eprint

    with registry._without_registration_lines():
        eprint(
            'Registered model "dr\'s model" already exists. Creating a new version of this model...'
        )
        eprint("Created version '3' of model 'nextbest'.")
        eprint("Successfully registered model 'nextbest'.")
        sys.stderr.write("register: 5/6 (0:01:00), still at work\n")
        eprint("WARNING: the artifact store answered slowly")
        assert capsys.readouterr().err == (
            "register: 5/6 (0:01:00), still at work\nWARNING: the artifact store answered slowly\n"
        )
    eprint("Created version '4' of model 'nextbest'.")  # outside the block: as MLflow says it
    assert capsys.readouterr().err == "Created version '4' of model 'nextbest'.\n"


def _edited(checkout) -> dict[str, bytes]:
    """Edits of every kind to ``checkout`` (its pkg/module.py committed): a tracked file
    changed (not UTF-8), one deleted, a binary one changed, a new module and a new
    binary file; the files of pkg/ as they are then, by name."""
    pkg = checkout.root / "pkg"
    (pkg / "gone.py").write_text("z = 0\n")
    (pkg / "table.bin").write_bytes(bytes(range(256)) * 4)
    checkout.git("add", ".")
    checkout.git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "two")
    (pkg / "module.py").write_bytes("x = 2  # caf\u00e9\n".encode("latin-1"))
    (pkg / "gone.py").unlink()
    (pkg / "table.bin").write_bytes(bytes(range(255, -1, -1)) * 4 + b"\0")
    (pkg / "helper.py").write_text("y = 1\n")
    (pkg / "weights.npy").write_bytes(b"\x93NUMPY\0\1\xff" * 40)
    (checkout.root / "notes.txt").write_text("not code: in no patch\n")
    return {p.name: p.read_bytes() for p in pkg.iterdir()}


def _applied(checkout, patch: bytes, where: Path) -> Path:
    """A clone of ``checkout``'s commit with ``patch`` applied by ``git apply``."""
    import subprocess

    subprocess.run(["git", "clone", "-q", str(checkout.root), str(where)], check=True)
    (where / "edits.patch").write_bytes(patch)
    subprocess.run(["git", "-C", str(where), "apply", "edits.patch"], check=True)
    (where / "edits.patch").unlink()
    return where


def test_the_patch_of_the_edits_rebuilds_the_edited_files_byte_for_byte(
    git_checkout, tmp_path: Path
) -> None:
    checkout, module = git_checkout, git_checkout.module
    edited = _edited(checkout)
    patch = registry.source_patch(module)
    assert patch.content is not None and patch.note is None
    assert patch.edits_sha256 == registry.source_edits(module)  # the same edits
    rebuilt = _applied(checkout, patch.content, tmp_path / "rebuilt")
    assert {p.name: p.read_bytes() for p in (rebuilt / "pkg").iterdir()} == edited
    assert not (rebuilt / "notes.txt").exists()  # untracked outside the package
    assert checkout.git("rev-parse", "HEAD") in patch.content.decode("latin-1").split("\n")[0]


def test_a_patch_over_the_cap_leaves_out_whole_files_and_says_which(
    git_checkout, tmp_path: Path
) -> None:
    checkout, module = git_checkout, git_checkout.module
    edited = _edited(checkout)
    (module.parent / "big.py").write_text("b = 1\n" * 2000)
    patch = registry.source_patch(module, limit_bytes=3000)
    assert patch.content is not None and len(patch.content) < 3000 + 1000  # the header
    assert patch.note is not None
    assert patch.note.startswith("cut at 3,000 bytes: the patch leaves out pkg/big.py (")
    assert patch.note.encode() in patch.content
    rebuilt = _applied(checkout, patch.content, tmp_path / "rebuilt")
    assert not (rebuilt / "pkg" / "big.py").exists()
    assert (rebuilt / "pkg" / "helper.py").read_bytes() == edited["helper.py"]


def test_no_patch_of_a_clean_checkout_nor_without_git(
    git_checkout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = git_checkout.module
    (git_checkout.root / "notes.txt").write_text("not code\n")
    assert registry.source_patch(module) == registry.SourcePatch(None, None, None)
    module.write_text("x = 2\n")
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    without_git = registry.source_patch(module)
    assert without_git.content is None and without_git.edits_sha256 is None
    assert (without_git.note or "").startswith("git could not be run to write the edits")
    plain = tmp_path / "copy" / "module.py"  # a copy of the code without .git
    plain.parent.mkdir()
    plain.write_text("x = 2\n")
    monkeypatch.undo()
    said = registry.source_patch(plain).note
    assert said == f"git could not read the edits of the checkout at {plain.parent}"


def test_a_checkout_edited_while_it_trains_records_the_code_as_training_began(
    git_checkout, world_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process trains with the code it had imported when training began: a file of
    its checkout edited while it trains (here as the models stage starts) is not the
    code that trained. The run and its version keep the digest and the patch of the
    edits as they were then, and the run says the checkout changed while it trained."""
    from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
    from nextbest.settings import Settings

    module = git_checkout.module
    for name in ("source_commit", "source_edits", "source_patch"):
        monkeypatch.setattr(registry, name, partial(getattr(registry, name), module))
    fast = TrainConfig(
        engagement=EngagementParams(n_estimators=20, num_leaves=7),
        uplift=UpliftParams(n_estimators=30, learning_rate=0.1),
    )
    dataset = load_dataset(world_dir)
    module.write_text("x = 2  # the code that trains\n")
    began = registry.source_edits()
    assert began is not None

    def edit_while_training(stage: str) -> None:
        if stage == "models":
            module.write_text("x = 3  # edited while it trained\n")

    result = train(dataset, config=fast, progress=edit_while_training)
    now = registry.source_edits()
    assert now not in (None, began)  # the checkout did change while it trained
    settings = Settings(models_dir=tmp_path / "models")
    info = registry.log_training_run(result, settings)

    client = registry.client(settings)
    assert info.run_id is not None
    tags = client.get_run(info.run_id).data.tags
    assert tags[registry.EDITS_TAG] == began
    (listed,) = registry.list_versions(settings)
    assert listed.source_edits_sha256 == began
    assert listed.source_commit == f"{git_checkout.git('rev-parse', 'HEAD')}+modified"
    patch = Path(client.download_artifacts(info.run_id, registry.PATCH_ARTIFACT, str(tmp_path)))
    text = patch.read_text()
    assert "+x = 2  # the code that trains" in text and "edited while it trained" not in text
    assert began in text and now not in text
    changed = tags[registry.SOURCE_CHANGED_TAG]
    assert changed.startswith("the checkout's code changed while this run trained"), changed
    assert began[:12] in changed and now[:12] in changed
    notes = Path(client.download_artifacts(info.run_id, "notes.txt", str(tmp_path))).read_text()
    assert changed in notes
    assert changed in result.notes  # what the command prints

    # Nothing edited while it trains: nothing said.
    again = registry.log_training_run(train(dataset, config=fast), settings)
    assert again.run_id is not None
    quiet = client.get_run(again.run_id).data.tags
    assert quiet[registry.EDITS_TAG] == now and registry.SOURCE_CHANGED_TAG not in quiet
