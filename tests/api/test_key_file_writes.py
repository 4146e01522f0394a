"""How `nextbest keys add` and `remove` rewrite the key file: privately, in one step."""

from __future__ import annotations

import os
import resource
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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
