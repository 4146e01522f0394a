"""How `nextbest keys add` and `remove` rewrite the key file: privately, in one step."""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nextbest.service import apikeys
from nextbest.service.apikeys import KeyStore, add_key_to_file

from .conftest import keys_cli


@contextmanager
def _file_size_limit(size: int) -> Iterator[None]:
    """Writes past ``size`` bytes fail in this process (EFBIG), as on a full disk."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal ends pytest
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)


def _key_file(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "api_keys.yaml"
    for i in range(n):
        add_key_to_file(path, name=f"crm-{i:02d}", role="channel")
    return path


def test_a_write_that_fails_leaves_the_key_file_and_no_partial_file(tmp_path: Path) -> None:
    """The partial file was left beside the key file, readable by every user."""
    path = _key_file(tmp_path, n=40)
    before = path.read_text()
    with _file_size_limit(len(before) // 2):
        refused = keys_cli("add", "late", "--role", "channel", "--file", str(path))
    assert refused.exit_code == 2 and "File too large" in refused.output, refused.output
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_the_new_key_file_is_private_and_synced_before_it_replaces_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written, then chmod'ed to 600, the file could be opened by anyone in between."""
    path = _key_file(tmp_path)
    synced: list[tuple[str, int]] = []
    fsync = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            synced.append((Path(f"/proc/self/fd/{fd}").readlink().name, stat.S_IMODE(st.st_mode)))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    umask = os.umask(0o022)  # files made without a mode of their own are 0644
    try:
        added = keys_cli("add", "crm-new", "--role", "channel", "--file", str(path))
    finally:
        os.umask(umask)
    assert added.exit_code == 0, added.output
    assert len(synced) == 1, synced
    staged, mode = synced[0]
    assert staged.startswith(".api_keys.yaml.") and mode == 0o600, synced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "crm-new" in [p.name for p in KeyStore.load(path=path, env={}).principals]


def test_two_changes_at_once_keep_each_others_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command read the file before the other wrote it: the second to write
    dropped the first one's key, which its client then found refused."""
    path = _key_file(tmp_path)
    first_read = threading.Event()
    go_on = threading.Event()
    write = apikeys._write_entries

    def write_after_the_other_started(*args: Any, **kwargs: Any) -> None:
        if threading.current_thread().name == "first":
            first_read.set()
            go_on.wait(timeout=2)  # the other command runs meanwhile (or waits)
        write(*args, **kwargs)

    monkeypatch.setattr(apikeys, "_write_entries", write_after_the_other_started)
    first = threading.Thread(
        target=add_key_to_file, args=(path,), kwargs={"name": "crm-a", "role": "channel"}
    )
    first.name = "first"
    first.start()
    assert first_read.wait(timeout=30)
    second = threading.Thread(
        target=apikeys.remove_key_from_file, args=(path,), kwargs={"name": "crm-00"}
    )
    second.start()
    second.join(timeout=1)  # returns at once without a lock; waits for the first with one
    go_on.set()
    first.join(timeout=30)
    second.join(timeout=30)
    names = [p.name for p in KeyStore.load(path=path, env={}).principals]
    assert names == ["crm-01", "crm-02", "crm-a"], names


def test_a_change_waits_for_another_then_gives_up_naming_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _key_file(tmp_path)
    before = path.read_text()
    monkeypatch.setattr(apikeys, "LOCK_WAIT_S", 0.3)
    lock = tmp_path / ".api_keys.yaml.lock"
    with lock.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another command, half way through its change
        refused = keys_cli("remove", "crm-01", "--file", str(path))
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2, said
    assert f"{path} not changed: another `nextbest keys` command has been changing" in said
    assert f"(it holds {lock})" in said
    assert path.read_text() == before
    assert keys_cli("remove", "crm-01", "--file", str(path)).exit_code == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner takes root")
@pytest.mark.parametrize("command", [["add", "crm-new", "--role", "channel"], ["remove", "crm-01"]])
def test_a_change_made_as_root_keeps_the_files_owner_and_group(
    tmp_path: Path, command: list[str]
) -> None:
    """Under sudo the rewritten file was root's, mode 600: the service user that
    owned it could no longer read it, and its servers kept the old keys."""
    path = _key_file(tmp_path)
    service = (65534, 65533)  # a user and a group other than root's
    os.chown(path, *service)
    changed = keys_cli(*command, "--file", str(path))
    assert changed.exit_code == 0, changed.output
    owned = path.stat()
    assert (owned.st_uid, owned.st_gid) == service
    assert stat.S_IMODE(owned.st_mode) == 0o600
    # The lock file too, or the service user could not take it for its next change.
    lock = (tmp_path / ".api_keys.yaml.lock").stat()
    assert (lock.st_uid, lock.st_gid) == service


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner takes root")
def test_a_first_key_file_made_as_root_takes_its_directorys_owner(tmp_path: Path) -> None:
    """`sudo nextbest keys add` in the service user's models directory made a key file
    of root's, mode 600, which the server running as that user could not read."""
    models = tmp_path / "models"
    models.mkdir()
    service = (65534, 65533)
    os.chown(models, *service)
    path = models / "api_keys.yaml"
    added = keys_cli("add", "first", "--role", "admin", "--file", str(path))
    assert added.exit_code == 0, added.output
    owned = path.stat()
    assert (owned.st_uid, owned.st_gid) == service
    assert stat.S_IMODE(owned.st_mode) == 0o600
    lock = (models / ".api_keys.yaml.lock").stat()
    assert (lock.st_uid, lock.st_gid) == service


def test_a_key_file_kept_as_a_link_is_changed_where_it_lives(tmp_path: Path) -> None:
    """A key file linked from a config checkout stays a link: the change reaches its
    target (a plain file put in the link's place left the target stale), and a
    command naming the target shares the lock of one naming the link."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    target = _key_file(checkout, n=1)
    link = tmp_path / "api_keys.yaml"
    link.symlink_to(target)
    added = keys_cli("add", "via-link", "--role", "channel", "--file", str(link))
    assert added.exit_code == 0, added.output
    assert link.is_symlink() and link.resolve() == target
    names = {p.name for p in KeyStore.load(path=target, env={}).principals}
    assert names == {"crm-00", "via-link"}
    removed = keys_cli("remove", "crm-00", "--file", str(link))
    assert removed.exit_code == 0, removed.output
    assert [p.name for p in KeyStore.load(path=target, env={}).principals] == ["via-link"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api_keys.yaml", "checkout"]
    assert ".api_keys.yaml.lock" in {p.name for p in checkout.iterdir()}
