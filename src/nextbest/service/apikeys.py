"""API keys and roles, from a YAML file and/or the ``NEXTBEST_API_KEYS`` variable.

File format (``Settings.resolved_api_keys_file``, default ``models/api_keys.yaml``)::

    keys:
      - name: crm-email          # logged as the requester; the key itself never is
        role: channel            # admin | channel | rep
        key_sha256: "<hex sha256 of the key>"   # or key: "<plaintext>"
      - name: rep-t001
        role: rep
        territory_id: T001       # required for a rep
        key: "..."

``NEXTBEST_API_KEYS`` holds the same entries as a JSON list. Only the SHA-256 of
each key is kept in memory; a presented key is hashed and compared with every
stored hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

Role = Literal["admin", "channel", "rep"]
ROLES: tuple[str, ...] = ("admin", "channel", "rep")
ENV_KEYS = "NEXTBEST_API_KEYS"


class ApiKeyError(ValueError):
    """The key file or variable is invalid; the message names where and which field."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, role and (for a rep) territory."""

    name: str
    role: str
    territory_id: str | None = None


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes


def hash_key(key: str) -> str:
    """Hex SHA-256 of ``key``, the form stored in the key file."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return "nb_" + secrets.token_urlsafe(32)


class KeyStore:
    """The configured keys; :meth:`identify` maps a presented key to its principal."""

    def __init__(self, entries: Sequence[_Entry] = ()) -> None:
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def load(cls, *, path: Path | None, env: Mapping[str, str] | None = None) -> KeyStore:
        """Keys from ``path`` (if it exists) plus the ``NEXTBEST_API_KEYS`` JSON list."""
        env = os.environ if env is None else env
        entries: list[_Entry] = []
        if path is not None and path.exists():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ApiKeyError(f"{path}: not valid YAML: {exc}") from None
            if not isinstance(data, Mapping) or not isinstance(data.get("keys", []), list):
                raise ApiKeyError(f"{path}: expected a mapping with a 'keys' list")
            entries += _parse(data.get("keys") or [], str(path))
        raw = env.get(ENV_KEYS)
        if raw:
            try:
                listed = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ApiKeyError(f"{ENV_KEYS}: not valid JSON: {exc}") from None
            if not isinstance(listed, list):
                raise ApiKeyError(f"{ENV_KEYS}: expected a JSON list of key entries")
            entries += _parse(listed, ENV_KEYS)
        names = [e.principal.name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ApiKeyError(f"API key names must be unique; repeated: {dupes}")
        return cls(entries)

    def identify(self, key: str) -> Principal | None:
        """The principal of ``key``, or None; every stored hash is compared."""
        digest = hashlib.sha256(key.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest) and found is None:
                found = entry.principal
        return found


def _parse(items: list[Any], source: str) -> list[_Entry]:
    out = []
    for i, item in enumerate(items):
        where = f"{source}: keys[{i}]"
        if not isinstance(item, Mapping):
            raise ApiKeyError(f"{where}: expected a mapping with name, role and key or key_sha256")
        extra = sorted(set(item) - {"name", "role", "territory_id", "key", "key_sha256"})
        if extra:
            raise ApiKeyError(f"{where}: unknown field(s) {extra}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiKeyError(f"{where}: 'name' is required")
        role = item.get("role")
        if role not in ROLES:
            raise ApiKeyError(f"{where} ({name}): 'role' must be one of {', '.join(ROLES)}")
        territory = item.get("territory_id")
        if role == "rep" and (not isinstance(territory, str) or not territory):
            raise ApiKeyError(f"{where} ({name}): a rep key needs 'territory_id'")
        key, hashed = item.get("key"), item.get("key_sha256")
        if (key is None) == (hashed is None):
            raise ApiKeyError(f"{where} ({name}): give exactly one of 'key' or 'key_sha256'")
        if key is not None:
            if not isinstance(key, str) or len(key) < 16:
                raise ApiKeyError(f"{where} ({name}): 'key' must be a string of 16+ characters")
            digest = hashlib.sha256(key.encode()).digest()
        else:
            try:
                digest = bytes.fromhex(str(hashed))
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ApiKeyError(f"{where} ({name}): 'key_sha256' must be 64 hex characters")
        principal = Principal(
            name=name.strip(), role=str(role), territory_id=str(territory) if territory else None
        )
        out.append(_Entry(principal=principal, digest=digest))
    return out


def add_key_to_file(path: Path, *, name: str, role: str, territory_id: str | None = None) -> str:
    """Create a key, store only its SHA-256 in ``path`` (created or appended), return it."""
    if role not in ROLES:
        raise ApiKeyError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    data: dict[str, Any] = {"keys": []}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {"keys": []}
    keys = [k for k in data.get("keys") or [] if k.get("name") != name]
    key = new_key()
    entry: dict[str, Any] = {"name": name, "role": role, "key_sha256": hash_key(key)}
    if territory_id:
        entry["territory_id"] = territory_id
    keys.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"keys": keys}, sort_keys=False))
    path.chmod(0o600)
    return key
