"""A version trained from a checkout with uncommitted edits keeps their patch in its
training run, and `nextbest models` says where it is: applied to the commit, it
rebuilds the code that trained the version."""

from __future__ import annotations

import subprocess
from functools import partial
from pathlib import Path

import pytest

from nextbest import registry
from nextbest.settings import get_settings

from .conftest import FAST, run_ok

SOURCE_PATCH = registry.source_patch  # as defined, whatever a test sets in its place


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    run_ok("simulate", "--out", str(out), "--hcps", "120", "--periods", "6", "--seed", "2")
    return out


def _code_at(monkeypatch: pytest.MonkeyPatch, module: Path) -> None:
    """The code running here is named as that of ``module``'s checkout (or copy)."""
    for name in ("source_commit", "source_edits", "source_patch"):
        monkeypatch.setattr(registry, name, partial(getattr(registry, name), module))


def _listed(version: str) -> registry.VersionSummary:
    (listed,) = [v for v in registry.list_versions(get_settings()) if v.version == version]
    return listed


def _run_file(run_id: str | None, path: str, tmp_path: Path) -> bytes:
    assert run_id is not None
    got = registry.client(get_settings()).download_artifacts(run_id, path, str(tmp_path / "dl"))
    return Path(got).read_bytes()


def test_an_edited_checkout_trains_a_version_whose_patch_rebuilds_its_code(
    env_settings: Path, world: Path, git_checkout, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checkout, module = git_checkout, git_checkout.module
    pkg = module.parent
    (pkg / "gone.py").write_text("z = 0\n")
    checkout.git("add", ".")
    checkout.git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "two")
    commit = checkout.git("rev-parse", "HEAD")
    _code_at(monkeypatch, module)
    module.write_text("x = 2\n")
    (pkg / "gone.py").unlink()
    (pkg / "helper.py").write_bytes(b"y = b'\\xff'\n\xff\n")
    edited = {p.name: p.read_bytes() for p in pkg.iterdir()}
    trained = " ".join(run_ok("train", "--data", str(world), "--config", str(FAST)).split())

    listed = _listed("1")
    assert listed.source_commit == f"{commit}+modified"
    assert listed.source_patch is not None and listed.source_patch_note is None
    where = Path(listed.source_patch.removeprefix("file://"))
    assert where.is_file() and where.as_posix().endswith(registry.PATCH_ARTIFACT)
    said = " ".join(run_ok("models").split())
    where_said = (
        f"trained from commit {commit[:12]} with uncommitted edits: their patch is {where}; "
        f"`git apply` it in a checkout of {commit[:12]} to rebuild that code"
    )
    assert where_said in said, said
    assert f"source: {where_said}" in trained, trained  # train names it too
    assert "changed while this run trained" not in trained

    patch = _run_file(listed.run_id, registry.PATCH_ARTIFACT, tmp_path)
    assert patch == where.read_bytes()
    assert listed.source_edits_sha256 in patch.decode("latin-1")  # the edits tagged
    rebuilt = tmp_path / "rebuilt"
    subprocess.run(["git", "clone", "-q", str(checkout.root), str(rebuilt)], check=True)
    subprocess.run(["git", "-C", str(rebuilt), "apply", str(where)], check=True)
    assert {p.name: p.read_bytes() for p in (rebuilt / "pkg").iterdir()} == edited

    # The same checkout committed and clean: no patch, nothing said of one.
    checkout.git("add", "-A")
    checkout.git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "3")
    trained = run_ok("train", "--data", str(world), "--config", str(FAST))
    assert "source:" not in trained and "uncommitted edits" not in trained, trained
    clean = _listed("2")
    assert clean.source_commit == checkout.git("rev-parse", "HEAD")
    assert clean.source_patch is None and clean.source_patch_note is None
    assert clean.run_id is not None
    logged = registry.client(get_settings()).list_artifacts(clean.run_id)
    assert "source" not in {a.path for a in logged}
    assert " ".join(run_ok("models").split()).count("with uncommitted edits") == 1  # v1's

    # Edits over the cap: the patch leaves whole files out, and says which.
    module.write_text("x = 4\n" * 100)
    small = partial(SOURCE_PATCH, module, limit_bytes=100)
    monkeypatch.setattr(registry, "source_patch", small)
    run_ok("train", "--data", str(world), "--config", str(FAST))
    cut = _listed("3").source_patch_note or ""
    assert cut.startswith("cut at 100 bytes: the patch leaves out pkg/module.py ("), cut
    assert f"their patch ({cut}) is " in " ".join(run_ok("models").split())

    # The models directory moved (restored at another path): the patch is where it is now.
    moved = env_settings.parent / "restored"
    env_settings.rename(moved)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(moved))
    get_settings.cache_clear()
    now = _listed("1").source_patch
    assert now is not None and now.startswith(moved.resolve().as_uri()), now
    assert Path(now.removeprefix("file://")).read_bytes() == patch


def test_code_outside_a_git_checkout_trains_and_its_run_says_why_there_is_no_patch(
    env_settings: Path, world: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    copy = tmp_path / "copy" / "module.py"  # the code copied without .git
    copy.parent.mkdir()
    copy.write_text("x = 2\n")
    _code_at(monkeypatch, copy)
    run_ok("train", "--data", str(world), "--config", str(FAST))
    listed = _listed("1")
    assert listed.source_commit == "unknown" and listed.source_patch is None
    why = listed.source_patch_note or ""
    assert why.startswith("none: the code is not a file git tracks in a checkout"), why
    notes = _run_file(listed.run_id, "notes.txt", tmp_path).decode()
    assert f"source patch: {why}" in notes


def test_edits_git_cannot_read_train_and_the_version_says_why_it_has_no_patch(
    env_settings: Path, world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "source_commit", lambda: "c0ffee" * 6 + "c0ff+modified")
    monkeypatch.setattr(registry, "source_edits", lambda: None)
    trained = " ".join(run_ok("train", "--data", str(world), "--config", str(FAST)).split())
    listed = _listed("1")
    assert listed.source_patch is None
    said = " ".join(run_ok("models").split())
    why = (
        "trained from commit c0ffeec0ffee with uncommitted edits; no patch of them: git "
        "could not read the uncommitted edits (no source_edits_sha256)"
    )
    assert why in said, said
    assert f"source: {why}" in trained, trained
