"""API keys and roles, from a YAML file and/or the ``NEXTBEST_API_KEYS`` variable.

File format (``Settings.resolved_api_keys_file``, default ``models/api_keys.yaml``)::

    keys:
      - name: crm-email          # logged as the requester; the key itself never is
        role: channel            # admin | channel | rep | monitor
        key_sha256: "<hex sha256 of the key>"   # or key: "<plaintext>"
      - name: rep-t001
        role: rep
        territory_id: T001       # required for a rep
        key: "..."
      - name: msl-t001
        role: rep
        territory_id: T001
        purpose: medical         # optional: its requests are medical, never promotional
                                 # (a rep key without one is promotional)
        key_sha256: "..."
      - name: sms-gateway
        role: channel
        channels: [sms]          # optional, channel keys only: it speaks for these
                                 # channels alone (feedback, consent, recommendations)
        key_sha256: "..."
      - name: prometheus         # reads /metrics and nothing else
        role: monitor
        key_sha256: "..."
      - name: crm-sync           # rotated with an overlap (`keys add --replace --keep-old 7d`)
        role: channel
        key_sha256: "..."        # the new key
        previous_key_sha256: "..."   # the key it replaced, still accepted as crm-sync ...
        previous_valid_until: "2026-12-10T08:00:00Z"   # ... until then (ISO 8601 with its zone)

``NEXTBEST_API_KEYS`` holds the same entries as a JSON list. Only the SHA-256 of
each key is kept in memory; a presented key is hashed and compared with every
stored hash in constant time. ``nextbest keys add / list / remove`` edit the file,
checked together with ``NEXTBEST_API_KEYS`` as a server checks them; a running
server (:class:`ReloadingKeyStore`) applies the change at its next request, so a
removed key stops working at once, without a restart. A plaintext ``key`` is
accepted but warned of, as is a file others may read or change
(:func:`key_file_warnings`); a key may be given under one name only.

Rotation with an overlap keeps the replaced key's hash in its entry as a retiring
key: it is the same principal as the new key until ``previous_valid_until``, and
an unknown key from then on. The time is compared at each request, so a server
that reads no file change still stops accepting it then. An entry holds one
retiring key: rotating again while one is retiring ends the older one at once.
A retiring key past its time is ignored, and dropped when ``nextbest keys``
next writes the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import yaml

from nextbest.clock import Clock, utc_now
from nextbest.limits import PURPOSES, STORED_LENGTHS
from nextbest.locking import take_within, try_flock
from nextbest.yamlfile import (
    KeyLines,
    Place,
    load_yaml_with_lines,
    near_hint,
    unknown_names,
    yaml_error_where,
)

if TYPE_CHECKING:
    from nextbest.settings import Settings

# What a key may do, written once: the literal the type checker holds keys to, and
# the words a key file is checked against (as nextbest.limits does for purposes).
Role = Literal["admin", "channel", "rep", "monitor"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
FIELDS = (
    "name",
    "role",
    "territory_id",
    "purpose",
    "channels",
    "key",
    "key_sha256",
    "previous_key_sha256",
    "previous_valid_until",
)
# How long `nextbest keys add --replace --keep-old` may keep the replaced key: long
# enough for a monthly release of a CRM integration, short enough that a forgotten
# old key does not outlive its purpose.
MAX_KEEP_OLD = timedelta(days=30)
KEEP_OLD_FORMS = "a whole number of minutes, hours or days: 90m, 24h, 7d"
_KEEP_OLD = re.compile(r"(\d+)\s*([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_RETIRING_FIELDS = ("previous_key_sha256", "previous_valid_until")
# The recommendation log keeps the channels a bound key's answer was limited to,
# joined with ',', in its channel filter.
MAX_CHANNELS_TEXT = STORED_LENGTHS["channel_filter"]
# A key's name is the requester the log and the feedback store keep with each row.
MAX_NAME_LENGTH = STORED_LENGTHS["requester"]
ENV_KEYS = "NEXTBEST_API_KEYS"
KEYS_FILE_SETTING = "NEXTBEST_API_KEYS_FILE"
MIN_KEY_LENGTH = 16
# A rep key's name is its rep_id in /v1/reps/{rep_id}/...: one URL path segment,
# sent as it is written. No '/' (or '%2F', which servers decode to one), no space
# or '?', '#', '%' a client would have to encode, not '.' or '..' (which clients
# resolve away), and no leading '-' (read as an option by `nextbest keys`).
REP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
REP_NAME_RULE = (
    "use only ASCII letters and digits, '.', '_', '-' and '@' (no accents: 'Arztin', not "
    "'Ärztin'), starting with a letter or digit"
)

logger = logging.getLogger(__name__)


def channel_spelling(name: str) -> str:
    """A channel as catalogs and rules spell it: 'SMS', ' Rep visit' -> 'sms', 'rep_visit'.

    :func:`nextbest.contract.schema.channel_spelling` (the contract package loads
    pandas, which a command reading the key file does without); a test keeps them alike.
    """
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


class ApiKeyError(ValueError):
    """The key file or variable is invalid; the message names where and which field."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, role, (for a rep) territory and, when the key
    is bound to one, the purpose of every request it makes; for a channel key bound
    to some, the channels it speaks for (None: every channel)."""

    name: str
    role: str
    territory_id: str | None = None
    purpose: str | None = None
    channels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes
    # The key a rotation replaced with ``digest``, accepted as the same principal
    # before ``previous_until`` (UTC); None for an entry without one.
    previous_digest: bytes | None = None
    previous_until: datetime | None = None


@dataclass(frozen=True)
class KeyMatch:
    """Whose key was presented; ``retiring_until`` is set when it was the entry's
    retiring key (the one a rotation replaced), the time it stops being accepted."""

    principal: Principal
    retiring_until: datetime | None = None


def utc_text(moment: datetime) -> str:
    """``2026-12-10T08:00:00Z``: how the key file and ``nextbest keys`` write a time."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def keep_old_duration(text: str) -> timedelta:
    """How long ``--keep-old`` (``90m``, ``24h``, ``7d``) keeps a replaced key accepted.

    Raises ValueError naming the accepted forms and the maximum (:data:`MAX_KEEP_OLD`).
    """
    matched = _KEEP_OLD.fullmatch(text.strip().lower())
    if matched is None:
        raise ValueError(
            f"{text!r} is not a duration; give {KEEP_OLD_FORMS} (at most {MAX_KEEP_OLD.days}d)"
        )
    amount, unit = int(matched[1]), matched[2]
    duration = timedelta(**{_UNITS[unit]: amount})
    if not amount:
        raise ValueError(
            f"{text!r} keeps the old key for no time; to stop it at once, leave the option out"
        )
    if duration > MAX_KEEP_OLD:
        raise ValueError(
            f"{text!r} is longer than the {MAX_KEEP_OLD.days} days an old key may be kept; "
            "clients that need longer can be given a key of their own"
        )
    return duration


def hash_key(key: str) -> str:
    """Hex SHA-256 of ``key``, the form stored in the key file."""
    return hashlib.sha256(key.encode()).hexdigest()


# What every key nextbest makes starts with: a value so marked is a key wherever
# it turns up (a request id a client filled with its key is not logged).
KEY_PREFIX = "nb_"


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    """The configured keys; :meth:`identify` maps a presented key to its principal.

    ``clock``: the current time (timezone-aware), read at each :meth:`match` to
    tell whether a retiring key is still accepted. :attr:`warnings`: what
    :func:`key_file_warnings` found in the file :meth:`load` read, valid but unsafe.
    """

    def __init__(self, entries: Sequence[_Entry] = (), *, clock: Clock = utc_now) -> None:
        self._entries = tuple(entries)
        self._clock = clock
        self.warnings: tuple[str, ...] = ()
        # Every key held, retiring ones included, for :meth:`holds`.
        self._digests = frozenset(
            digest
            for entry in self._entries
            for digest in (entry.digest, entry.previous_digest)
            if digest is not None
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def principals(self) -> list[Principal]:
        """Who the keys belong to, in file order (never the keys or their hashes)."""
        return [entry.principal for entry in self._entries]

    @property
    def retiring(self) -> dict[str, datetime]:
        """Key name -> when its retiring key stops being accepted (UTC), for the keys
        that have one, past times included."""
        return {
            entry.principal.name: entry.previous_until
            for entry in self._entries
            if entry.previous_until is not None
        }

    @classmethod
    def load(
        cls, *, path: Path | None, env: Mapping[str, str] | None = None, clock: Clock = utc_now
    ) -> KeyStore:
        """Keys from ``path`` (if it exists) plus the ``NEXTBEST_API_KEYS`` JSON list."""
        if path is None or not path.exists():
            return cls.from_entries([], source=str(path), env=env, clock=clock)
        items, lines = _file_items(path)
        store = cls.from_entries(items, source=str(path), env=env, lines=lines, clock=clock)
        store.warnings = tuple(key_file_warnings(path, items, lines=lines))
        return store

    @classmethod
    def configured(cls, settings: Settings, *, held: bool = False) -> KeyStore:
        """The keys a server of ``settings`` starts with: :meth:`load` of its key file.

        A file that ``NEXTBEST_API_KEYS_FILE`` names and that does not exist is an
        error (a mistyped path served with no key of the file, every caller
        refused), not a start without it; the default file may be missing (the
        keys may all be in ``NEXTBEST_API_KEYS``, or none added yet), unless
        ``held``: workers serving hold keys read from it (the check before a
        SIGHUP replaces them), and their replacements would hold none.
        """
        path = settings.resolved_api_keys_file
        if held and not path.exists():
            raise ApiKeyError(
                f"the API key file {path} is gone (deleted, or being replaced): workers "
                "started now would hold none of its keys and refuse their callers; write "
                "it again (to revoke every key of it, leave it with 'keys: []')"
            )
        if settings.api_keys_file is not None and not path.exists():
            raise ApiKeyError(
                f"{KEYS_FILE_SETTING} names {path}, which does not exist: a server would "
                "hold none of its keys and refuse their callers; correct the setting, or "
                f"create the file with `nextbest keys add NAME --role admin --file {path}`"
            )
        return cls.load(path=path)

    @classmethod
    def from_entries(
        cls,
        items: list[Any],
        *,
        source: str,
        env: Mapping[str, str] | None = None,
        lines: KeyLines | None = None,
        clock: Clock = utc_now,
    ) -> KeyStore:
        """The keys a server holds for the file entries ``items`` (read from ``source``)
        and the environment's ``NEXTBEST_API_KEYS``: every check of :meth:`load`.
        ``lines``: where each key path sits in ``source``, so that errors name the line.

        The ``keys`` commands check the file they are about to write with it, so
        that a change a server would refuse (a name also given in the variable) is
        refused before it is written, not ignored by every running server.
        """
        env = os.environ if env is None else env
        listed_at = Place(source, lines).at("keys")
        entries = [
            (entry, listed_at.item(i).file)
            for i, entry in enumerate(_parse(items, source, lines=lines))
        ]
        raw = env.get(ENV_KEYS)
        if raw:
            try:
                listed = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ApiKeyError(f"{ENV_KEYS}: not valid JSON: {exc}") from None
            if not isinstance(listed, list):
                raise ApiKeyError(f"{ENV_KEYS}: expected a JSON list of key entries")
            entries += [(entry, ENV_KEYS) for entry in _parse(listed, ENV_KEYS)]
        where: dict[str, list[str]] = {}
        for entry, origin in entries:
            where.setdefault(entry.principal.name, []).append(origin)
        dupes = {name: origins for name, origins in where.items() if len(origins) > 1}
        if dupes:
            raise ApiKeyError(
                "API key names must be unique; repeated: "
                + ", ".join(
                    f"{name!r} (in {' and '.join(dict.fromkeys(origins))})"
                    for name, origins in sorted(dupes.items())
                )
            )
        _refuse_a_key_given_twice(entries)
        return cls([entry for entry, _ in entries], clock=clock)

    def identify(self, key: str) -> Principal | None:
        """The principal of ``key``, or None; every stored hash is compared."""
        found = self.match(key)
        return found.principal if found is not None else None

    def holds(self, value: str) -> bool:
        """Whether ``value`` is one of the keys held (a retiring one too, even past its
        time): a value that turns up where a key does not belong, such as a request
        id, and must not be logged. Not an authentication: see :meth:`match`."""
        return hashlib.sha256(value.encode()).digest() in self._digests

    def match(self, key: str) -> KeyMatch | None:
        """Whose key ``key`` is, and whether it is a retiring one; None for a key
        unknown, or retiring past its time.

        Every stored hash, retiring ones included, is compared whatever matches, so
        the time taken does not tell which entry (if any) holds the key.
        """
        digest = hashlib.sha256(key.encode()).digest()
        now = self._clock()
        found: KeyMatch | None = None
        for entry in self._entries:
            current = hmac.compare_digest(digest, entry.digest)
            retiring = entry.previous_digest is not None and hmac.compare_digest(
                digest, entry.previous_digest
            )
            if found is not None:
                continue
            if current:
                found = KeyMatch(entry.principal)
            elif retiring and entry.previous_until is not None and now < entry.previous_until:
                found = KeyMatch(entry.principal, retiring_until=entry.previous_until)
        return found


def _refuse_a_key_given_twice(entries: Sequence[tuple[_Entry, str]]) -> None:
    """Raise naming the entries (name and where) that give the same key, retiring
    keys included: a presented key must mean one principal. With the first match
    winning, removing the entry a key was meant for would hand the key the other
    entry's role, an admin's perhaps, without a word."""
    holders: dict[bytes, list[str]] = {}
    for entry, origin in entries:
        held = f"{entry.principal.name!r} (in {origin})"
        for digest in (entry.digest, entry.previous_digest):
            if digest is not None and held not in holders.setdefault(digest, []):
                holders[digest].append(held)
    shared = [held for held in holders.values() if len(held) > 1]
    if shared:
        raise ApiKeyError(
            "API keys must be unique, each given under one name; the same key is given as "
            + "; ".join(" and ".join(held) for held in shared)
            + ": remove all but one of these entries (give a client that needs a key "
            "of its own a new one with `nextbest keys add`)"
        )


def key_channel_notes(principals: Sequence[Principal], served: Collection[str]) -> list[str]:
    """One note per channel-bound key of ``principals`` naming channels that no action
    of the ``served`` catalog channels uses, in key order; [] when there is none."""
    notes = []
    for p in principals:
        if p.channels is None:
            continue
        unused = [c for c in p.channels if c not in served]
        if not unused:
            continue
        also = (
            "it gets no recommendation until one does"
            if len(unused) == len(p.channels)
            else f"it gets recommendations of {', '.join(c for c in p.channels if c in served)}"
        )
        notes.append(
            f"API key '{p.name}' speaks for channel(s) {', '.join(unused)}, which no action of "
            f"the served catalog uses ({', '.join(sorted(served))}): {also}"
        )
    return notes


def catalog_offers(catalog: Any) -> frozenset[tuple[str, str]]:
    """The ``(channel, content_type)`` pairs of a catalog frame's actions, as
    :func:`key_purpose_notes` takes them."""
    pairs = zip(catalog["channel"].astype(str), catalog["content_type"].astype(str), strict=True)
    return frozenset(pairs)


def key_purpose_notes(
    principals: Sequence[Principal], offered: Collection[tuple[str, str]]
) -> list[str]:
    """One note per key bound to a purpose (``purpose`` in the key file) for which no
    action of the served catalog is content of that purpose on the channels it asks
    for: a rep key's plans (rep channels), a channel key's channels, any other key's
    every channel. ``offered``: the catalog's ``(channel, content_type)`` pairs. In key
    order; [] when there is none. Not errors: an MSL's key may be made before the
    catalog has medical content for visits; until then its plans are empty, and
    ``explain=true`` says why HCP by HCP."""
    from nextbest.contract.schema import is_rep_channel

    channels = sorted({channel for channel, _ in offered})
    notes = []
    for p in principals:
        if p.purpose is None or p.role == "monitor":
            continue
        if p.role == "rep":
            asked = [c for c in channels if is_rep_channel(c)]
            answer = "its rep plans suggest nothing"
            where = f"rep channels ({', '.join(asked)})" if asked else "rep channels (it has none)"
        elif p.channels is not None:
            asked = [c for c in p.channels if c in channels]
            if not asked:
                continue  # none of its channels in the catalog: key_channel_notes says so
            where, answer = f"channel(s) {', '.join(asked)}", "it gets no recommendation"
        else:
            asked, where, answer = channels, "any channel", "it gets no recommendation"
        if any((channel, p.purpose) in offered for channel in asked):
            continue
        notes.append(
            f"API key '{p.name}' is for {p.purpose} requests, but the served catalog has no "
            f"{p.purpose} content on {where}: {answer} until it has some"
        )
    return notes


def key_file_warnings(path: Path, items: Sequence[Any], *, lines: KeyLines | None) -> list[str]:
    """What makes the valid key file ``path`` (its entries ``items``, where each
    key path sits: ``lines``) unsafe: users other than its owner may read or change
    it (anyone who may write it may add an admin key), any user may write its
    directory (without the sticky bit, which keeps others from replacing a file
    they do not own), and entries that hold their key in plaintext, named with
    their line, never the key. [] when none of these."""
    warnings = []
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0
    if os.name == "posix" and mode & 0o077:
        may = " and ".join(
            verb for verb, bits in (("read", 0o044), ("changed", 0o022)) if mode & bits
        )
        warnings.append(
            f"{path} can be {may or 'used'} by users other than its owner (mode {mode:04o}): "
            f"`chmod 600 {path}` (the `nextbest keys` commands write it so)"
        )
    directory = path.parent
    try:
        folder = stat.S_IMODE(directory.stat().st_mode)
    except OSError:
        folder = 0
    if os.name == "posix" and folder & stat.S_IWOTH and not folder & stat.S_ISVTX:
        # Whoever may write the directory may rename another file over the key
        # file, its own admin key in it, whatever the file's mode says.
        warnings.append(
            f"{directory} (the directory of {path.name}) can be changed by any user "
            f"(mode {folder:04o}): anyone could replace the key file with one holding a key "
            f"of their own; `chmod o-w {directory}`"
        )
    listed_at = Place(str(path), lines).at("keys")
    plain = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("key") is not None:
            line = listed_at.item(i).pointing_at("key").line
            plain.append(f"{str(item['name']).strip()!r}" + (f" (line {line})" if line else ""))
    if plain:
        entries, hold = ("entry", "holds its") if len(plain) == 1 else ("entries", "hold their")
        warnings.append(
            f"{path}: {entries} {', '.join(plain)} {hold} key in plaintext ('key'), which "
            "anyone who reads the file can use: give each a new key stored as its SHA-256 "
            "with `nextbest keys add NAME --role ROLE --replace` (its clients then need the "
            "new key), or write the key's SHA-256 as 'key_sha256' in place of 'key'"
        )
    return warnings


def _file_items(path: Path) -> tuple[list[Any], KeyLines]:
    """The entries listed under ``keys`` in ``path``, unchecked, and where each key
    path of the file sits.

    A YAML error is reported by line and column only: PyYAML's own message quotes
    the line, and a key may be written there in plaintext (the message reaches
    the server's log, ``nextbest serve`` and ``nextbest keys``).
    """
    try:
        data, lines = load_yaml_with_lines(path.read_text())
    except yaml.YAMLError as exc:
        raise ApiKeyError(f"{path}: not valid YAML, {yaml_error_where(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:  # a running server must not fail on it
        raise ApiKeyError(f"{path}: cannot be read: {exc}") from None
    data = data or {}
    if not isinstance(data, Mapping) or not isinstance(data.get("keys", []), list):
        raise ApiKeyError(
            f"{Place(str(path), lines).at('keys').file}: expected a mapping with a 'keys' list"
        )
    return list(data.get("keys") or []), lines


def _parse(
    items: list[Any],
    source: str,
    *,
    numbered: bool = True,
    lines: KeyLines | None = None,
    given_as: Mapping[str, str] | None = None,
) -> list[_Entry]:
    """The entries ``items`` listed under ``keys`` in ``source``, checked; ``lines``:
    where each key path sits in ``source``. Messages name the line, never a value.

    ``given_as``: the command-line option each field came in (``role`` -> ``--role``),
    named in its place; a role or purpose given there is quoted too (a line of a file
    may hold a key where a field goes, a command line's ``--role`` is what was typed).
    """
    named = _field_names(given_as)
    out = []
    for i, item in enumerate(items):
        where = Place(source, lines).at("keys").item(i) if numbered else Place(source)
        if not isinstance(item, Mapping):
            raise ApiKeyError(f"{where}: expected a mapping with name, role and key or key_sha256")
        unknown = [field for field in item if field not in FIELDS]
        if unknown:
            said = unknown_names(unknown, FIELDS, quote=_field_shown)
            raise ApiKeyError(f"{where.pointing_at(unknown[0])}: {said}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiKeyError(f"{where.pointing_at('name')}: 'name' is required")
        if len(name.strip()) > MAX_NAME_LENGTH:
            # Quoted shortened: the message reaches the log, `serve` and `keys`.
            said = f"{name.strip()[:40]!r}... ({len(name.strip()):,} characters)"
            raise ApiKeyError(
                f"{where.pointing_at('name')} ({said}): 'name' is at most {MAX_NAME_LENGTH} "
                "characters, all the recommendation log and the feedback store keep of the "
                "requester it is logged as: shorten it"
            )
        role = item.get("role")
        if role not in ROLES:
            raise ApiKeyError(
                f"{where.pointing_at('role')} ({name}): {named('role')} must be one of "
                f"{', '.join(ROLES)}" + _given(role, ROLES, given_as)
            )
        territory = item.get("territory_id")
        if territory is not None and not isinstance(territory, str):
            # YAML reads 010 as the number 8 and 1e3 as 1000.0: a territory written
            # as a number may not be the one meant, so it is refused, not guessed.
            raise ApiKeyError(
                f"{where.pointing_at('territory_id')} ({name}): 'territory_id' is not text; "
                "write it as the hcps file does, in quotes if it is digits ('010')"
            )
        territory = territory.strip() if territory else None
        if role == "rep" and not territory:
            raise ApiKeyError(
                f"{where.pointing_at('territory_id')} ({name}): a rep key needs "
                f"{named('territory_id')}"
            )
        if role == "rep" and not REP_NAME.fullmatch(name.strip()):
            raise ApiKeyError(
                f"{where.pointing_at('name')} ({name.strip()!r}): a rep key's name is its "
                f"rep_id in /v1/reps/{{rep_id}}/suggestions, one URL path segment: "
                f"{REP_NAME_RULE}"
            )
        purpose = item.get("purpose")
        if purpose is not None and purpose not in PURPOSES:
            raise ApiKeyError(
                f"{where.pointing_at('purpose')} ({name}): {named('purpose')} must be one of "
                f"{', '.join(PURPOSES)}{_given(purpose, PURPOSES, given_as)} (or left out: "
                "promotional for a rep key, the request's own for others)"
            )
        if role == "monitor":
            bound = [field for field in ("territory_id", "purpose") if item.get(field) is not None]
            if bound:
                raise ApiKeyError(
                    f"{where.pointing_at(bound[0])} ({name}): a monitor key reads /metrics "
                    f"only, so it takes no {named(bound[0])}"
                )
        if role == "rep" and purpose is None:
            # A rep key is a field force's: commercial unless the file says it is an
            # MSL's. Medical content must not reach a sales rep because nobody
            # thought to bind the key.
            purpose = "promotional"
        channels = _channels(item, where, name=name, role=str(role), named=named)
        key, hashed = item.get("key"), item.get("key_sha256")
        if (key is None) == (hashed is None):
            raise ApiKeyError(f"{where} ({name}): give exactly one of 'key' or 'key_sha256'")
        if key is not None:
            if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
                raise ApiKeyError(
                    f"{where.pointing_at('key')} ({name}): 'key' must be a string of "
                    f"{MIN_KEY_LENGTH}+ characters"
                )
            unsendable = _unsendable_in_a_header(key)
            if unsendable is not None:
                # Said by kind, never quoted: the message reaches the log.
                raise ApiKeyError(
                    f"{where.pointing_at('key')} ({name}): 'key' {unsendable}: no client can "
                    "send it as written, so it would match no request; write the key "
                    "its clients send, or give the entry a new one with `nextbest keys add "
                    "NAME --role ROLE --replace`"
                )
            digest = hashlib.sha256(key.encode()).digest()
        else:
            try:
                digest = bytes.fromhex(str(hashed))
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ApiKeyError(
                    f"{where.pointing_at('key_sha256')} ({name}): 'key_sha256' must be 64 hex "
                    "characters"
                )
        previous_digest, previous_until = _retiring_key(item, where, name=name)
        principal = Principal(
            name=name.strip(),
            role=str(role),
            territory_id=str(territory) if territory else None,
            purpose=purpose,
            channels=channels,
        )
        out.append(
            _Entry(
                principal=principal,
                digest=digest,
                previous_digest=previous_digest,
                previous_until=previous_until,
            )
        )
    return out


def _unsendable_in_a_header(key: str) -> str | None:
    """Why the plaintext ``key`` cannot reach a server in a request header (its
    value in ``Authorization`` or ``X-API-Key``), or None when it can.

    Spaces and tabs inside a header value arrive as sent; at either end HTTP
    drops them (and so does the server from a key). Other control characters end
    or break the header, and a character outside ASCII is sent in the client's
    encoding (UTF-8, Latin-1) while the server reads the bytes as Latin-1: no key
    written with one is matched by every client, most match none.
    """
    if key != key.strip(" \t\r\n\f\v"):
        return "starts or ends with whitespace (HTTP drops it from a header)"
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in key):
        return "holds a control character (a line break ends a header)"
    if not key.isascii():
        return (
            "holds a character outside ASCII (clients send it in encodings the server does "
            "not read back)"
        )
    return None


def _retiring_key(
    item: Mapping[str, Any], where: Place, *, name: str
) -> tuple[bytes | None, datetime | None]:
    """The retiring key's digest and the time (UTC) it stops being accepted, of the
    key entry ``item`` at ``where``; (None, None) when it has none."""
    hashed, until = item.get("previous_key_sha256"), item.get("previous_valid_until")
    if (hashed is None) != (until is None):
        given, missing = (
            ("previous_key_sha256", "previous_valid_until")
            if until is None
            else ("previous_valid_until", "previous_key_sha256")
        )
        raise ApiKeyError(
            f"{where.pointing_at(given)} ({name}): '{given}' needs '{missing}' (a retiring "
            "key is kept with the time it stops being accepted)"
        )
    if hashed is None:
        return None, None
    try:
        digest = bytes.fromhex(hashed) if isinstance(hashed, str) else b""
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ApiKeyError(
            f"{where.pointing_at('previous_key_sha256')} ({name}): 'previous_key_sha256' "
            "must be 64 hex characters"
        )
    moment: datetime | None = None
    if isinstance(until, datetime):  # YAML reads an unquoted timestamp as one
        moment = until
    elif isinstance(until, str):
        try:
            moment = datetime.fromisoformat(until.strip())
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        # A time without its zone would be read in each server's own: refused,
        # not guessed, as a date alone (which day's end?) is.
        raise ApiKeyError(
            f"{where.pointing_at('previous_valid_until')} ({name}): 'previous_valid_until' "
            "must be a date and time in ISO 8601 with its zone, e.g. 2026-12-10T08:00:00Z"
        )
    return digest, moment.astimezone(UTC)


def _field_names(given_as: Mapping[str, str] | None) -> Callable[[str], str]:
    """How messages name a key entry's field: the option it came in (``given_as``),
    or the field itself, quoted, as a key file spells it."""
    return lambda field: (given_as or {}).get(field, f"'{field}'")


def _given(value: Any, allowed: tuple[str, ...], given_as: Mapping[str, str] | None) -> str:
    """What a message adds of a refused ``value`` of one of ``allowed``: the value
    given on a command line, unless it is as long as a key (one typed in the wrong
    place is not shown), never a key file's (see :func:`_parse`); then the word it
    is near (`` (did you mean 'admin'?)``), which a key is near none of."""
    text = str(value)
    near = near_hint(text, allowed, any_case=True) if len(text) < MIN_KEY_LENGTH else ""
    if given_as is None:
        return near
    shown = repr(text) if len(text) < MIN_KEY_LENGTH else f"<{len(text)} characters>"
    if text.lower() in allowed:
        return f", not {shown} (lower case)"
    return f", not {shown}{near}"


def _channels(
    item: Mapping[str, Any], where: Place, *, name: str, role: str, named: Callable[[str], str]
) -> tuple[str, ...] | None:
    """The ``channels`` of the key entry ``item`` at ``where``, spelled as catalogs
    spell them, in file order without repeats; None when it lists none. ``named``:
    how a message names a field (see :func:`_field_names`)."""
    if "channels" not in item:
        return None
    listed = item["channels"]
    at = where.pointing_at("channels")
    field = named("channels")
    # A key file lists the channels, a command line repeats its option: each is told
    # of what it wrote, not in the other's syntax.
    in_file = field == "'channels'"
    if role != "channel":
        raise ApiKeyError(
            f"{at} ({name}): {field} binds a channel key to the channels it "
            "speaks for; "
            f"a key of role {role} takes none"
        )
    if (
        not isinstance(listed, list)
        or not listed
        or not all(isinstance(c, str) and c.strip() for c in listed)
    ):
        said = (
            f"{field} must be a non-empty list of channel names (e.g. [sms] or [email, sms])"
            if in_file
            else f"{field} must name a channel (e.g. {field} sms, repeated for more)"
        )
        raise ApiKeyError(f"{at} ({name}): {said}; leave it out for a key of every channel")
    channels = tuple(dict.fromkeys(channel_spelling(c) for c in listed))
    if len(",".join(channels)) > MAX_CHANNELS_TEXT:
        values = field if in_file else f"{field} values"
        raise ApiKeyError(
            f"{at} ({name}): {values} joined with ',' must fit in {MAX_CHANNELS_TEXT} "
            "characters (answers are logged with the channels they were limited to)"
        )
    return channels


# /readyz needs no key: what it says of the key file names neither the file nor
# an entry (a rep key's name is a person's user id); the log, which does, is
# the operator's.
_SEE_LOG = "(the server log names the file and the entry at fault)"


def _log_warnings(store: KeyStore) -> None:
    for warning in store.warnings:
        logger.warning("API key file unsafe: %s", warning, extra={"event": "key_file_unsafe"})


class ReloadingKeyStore:
    """The keys of ``path`` plus the environment's, re-read when the file changes.

    Each :meth:`identify` compares the file's status (a ``stat``, microseconds)
    with the one last loaded; on a change the file is read again. A file that no
    longer parses keeps the keys loaded before: a typo must not lock every caller
    out. But then a revocation in the file is not applied either, so the error is
    logged once and a summary is held in :attr:`error` (``/readyz`` shows it)
    until a valid file is read. So does a file that disappears.
    """

    def __init__(
        self,
        *,
        path: Path,
        env: Mapping[str, str] | None = None,
        strict: bool = True,
        required: bool = False,
        clock: Clock = utc_now,
    ) -> None:
        """``strict``: an invalid file raises. Otherwise (a worker that uvicorn starts
        in place of one that died, after the file was edited) the store holds the
        environment's keys only and :attr:`unusable` is True until a valid file is
        read: the worker refuses the file's callers instead of failing its start,
        which made uvicorn's supervisor stop every worker. ``required`` (a setting
        names the file, which `nextbest serve` found at its start): a file missing
        now, when this worker starts, makes it unusable the same way, until the file
        is back. ``clock``: as :class:`KeyStore`'s, for every store read from the
        file."""
        self.path = path
        self._env = dict(os.environ if env is None else env)
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = self._status()
        self._error: str | None = None
        # The line logged when the keys in force stopped being the file's, for
        # reread to say again; None while they are the file's.
        self._said: str | None = None
        self.unusable = False
        self.unusable_why = "API key file invalid"  # what /readyz says while unusable
        if required and not strict and self._seen is None:
            # A replacement worker, started while the file is gone (deleted, or being
            # replaced): its siblings keep the keys they read, it holds none of them,
            # and answered their callers 401 while /readyz said ready.
            self._store = KeyStore.load(path=None, env=self._env, clock=clock)
            self._error = (
                "the API key file is gone and this worker started after: no key of the "
                f"file is in force here until it is back {_SEE_LOG}"
            )
            self.unusable = True
            self.unusable_why = "API key file missing"
            self._said = f"API key file {path} missing at start-up, its keys refused"
            logger.error(self._said)
            return
        try:
            self._store = KeyStore.load(path=path, env=self._env, clock=clock)
            _log_warnings(self._store)
        except ApiKeyError as exc:
            if strict:
                raise
            self._store = KeyStore.load(path=None, env=self._env, clock=clock)
            self._error = (
                "the API key file is invalid and this worker started after it changed: "
                f"no key of the file is in force here until it is fixed {_SEE_LOG}"
            )
            self.unusable = True
            self._said = f"API key file invalid at start-up, its keys refused: {exc}"
            logger.error(self._said)

    def __len__(self) -> int:
        return len(self._current())

    def _status(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        # The mode too: a chmod alone (the file opened to others, or closed again)
        # changes what the warnings of a re-read say.
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)

    def _current(self) -> KeyStore:
        status = self._status()
        if status == self._seen:
            return self._store
        with self._lock:
            if status != self._seen:
                existed, self._seen = self._seen is not None, status
                if status is None and existed:
                    # Moved away or replaced by delete-then-write: locking every
                    # caller out is the wrong reading of a file that went missing.
                    self._error = (
                        "the API key file is gone; the keys read from it before are in force "
                        "(to revoke them all, leave the file with 'keys: []')"
                    )
                    self._said = f"API key file {self.path} is gone, keeping the keys"
                    logger.error(self._said)
                    return self._store
                try:
                    self._store = KeyStore.load(path=self.path, env=self._env, clock=self._clock)
                    self._error = self._said = None
                    self.unusable = False
                    logger.info("API keys re-read from %s: %d keys", self.path, len(self._store))
                    _log_warnings(self._store)
                except ApiKeyError as exc:
                    self._error = (
                        "the API key file changed but is invalid; the keys read before are in "
                        f"force (changes to the file, revocations included, are not) {_SEE_LOG}"
                    )
                    self._said = f"API key file changed but is invalid, keeping the keys: {exc}"
                    logger.error(self._said)
        return self._store

    def reread(self) -> None:
        """Check the file now, as a request's key check does, and say what is wrong
        with it even when that was said before: a reload asked for (SIGHUP to a
        single worker) is answered in the log at the signal, as the supervisor of
        several workers answers it, not at the next request."""
        seen = self._seen
        self._current()  # a change is read, and said, here
        said = self._said
        if said is not None and self._seen == seen:
            logger.error(said)

    @property
    def error(self) -> str | None:
        """Why the keys in force are not the file's (None when they are), checked now."""
        self._current()
        return self._error

    def identify(self, key: str) -> Principal | None:
        """The principal of ``key`` under the file's current keys, or None."""
        return self._current().identify(key)

    def match(self, key: str) -> KeyMatch | None:
        """:meth:`KeyStore.match` under the file's current keys."""
        return self._current().match(key)

    def holds(self, value: str) -> bool:
        """:meth:`KeyStore.holds` under the file's current keys."""
        return self._current().holds(value)

    def named(self, name: str) -> Principal | None:
        """The principal of the current key named ``name``, or None."""
        return next((p for p in self._current().principals if p.name == name), None)


def _without_expired_retiring_keys(
    entries: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """``entries`` (checked by :func:`_parse`) without the retiring keys past their
    time: the next write of the file drops them."""
    kept = []
    for entry in entries:
        (parsed,) = _parse([entry], "key file", numbered=False)
        if parsed.previous_until is not None and parsed.previous_until <= now:
            entry = {k: v for k, v in entry.items() if k not in _RETIRING_FIELDS}
        kept.append(entry)
    return kept


# How long a `nextbest keys` command waits for another one changing the same file.
LOCK_WAIT_S = 30.0


@contextlib.contextmanager
def _changing(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``path``'s changes while the block reads, changes
    and writes it: two `nextbest keys` commands at once each read the file before
    the other wrote it, and the second to write dropped the first one's key.

    The lock is ``flock`` on ``.NAME.lock`` beside the file (kept: removing it
    would let a third command lock a new file while the second holds the old).
    Raises ApiKeyError naming the lock file after :data:`LOCK_WAIT_S` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path = _target(path)  # two commands naming the file by a link and by its target
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        _keep_owner(fd, path)  # else, made under sudo, it kept the file's owner out
        if not take_within(partial(try_flock, fd), LOCK_WAIT_S, every_s=0.05):
            raise ApiKeyError(
                f"{path} not changed: another `nextbest keys` command has been "
                f"changing it for {LOCK_WAIT_S:g} s (it holds {lock}); run this one "
                "again when it has finished"
            )
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of ``path`` after checking the whole file (missing file: none)."""
    if not path.exists():
        return []
    items, lines = _file_items(path)
    KeyStore.from_entries(items, source=str(path), env={}, lines=lines)  # names the entry at fault
    return [dict(entry) for entry in items]


def _write_entries(
    path: Path, entries: list[dict[str, Any]], *, env: Mapping[str, str] | None
) -> None:
    """Replace ``path`` in one step (readers see the old or the new file, never half).

    The new entries are first checked with ``env``'s ``NEXTBEST_API_KEYS`` as a
    server started with that environment checks them: a file it would refuse is
    not written (a running server would keep its old keys and ignore the change,
    a revocation included).
    """
    try:
        KeyStore.from_entries(entries, source=str(path), env=env)
    except ApiKeyError as exc:
        raise ApiKeyError(
            f"{path} not changed: a server would refuse the keys it would then hold: {exc}"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path = _target(path)
    text = yaml.safe_dump({"keys": entries}, sort_keys=False)
    # mkstemp makes the file 0600 from the start: a file written and then chmod'ed
    # could be opened by anyone in between, and the open descriptor kept.
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _keep_owner(fd, path)
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())  # a crash after the rename leaves the new file, not nothing
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    _sync_directory(path.parent)


def _target(path: Path) -> Path:
    """The file ``path`` names, through symbolic links: a key file kept as a link
    (into a config-management checkout, say) is changed where it lives, not replaced
    by a plain file that leaves the link's target stale."""
    return Path(os.path.realpath(path))


def _keep_owner(fd: int, path: Path) -> None:
    """Give the file open as ``fd`` the owner and group of ``path``, or of its
    directory when there is no such file yet.

    Run under sudo, a command's files are root's: a key file of mode 600 rewritten
    so could no longer be read by the service user that owned it, and the servers
    kept their old keys, revocations unapplied; a first key file made so, in the
    service user's models directory, could not be read at all. Without the right
    to (not root), the file stays the caller's, who may write the directory and so
    replace it.
    """
    try:
        owner = path.stat()
    except FileNotFoundError:
        try:
            owner = path.parent.stat()
        except OSError:
            return
    except OSError:
        return
    made = os.fstat(fd)
    if (made.st_uid, made.st_gid) != (owner.st_uid, owner.st_gid):
        with contextlib.suppress(PermissionError):
            os.fchown(fd, owner.st_uid, owner.st_gid)


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where directories can be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory: the rename still happened
    finally:
        os.close(fd)


@dataclass(frozen=True)
class AddedKey:
    """What :func:`add_key` did: the new ``key`` (shown once, never stored);
    ``replaced``: a key of its name was there; ``old_until``: when the replaced key
    stops being accepted (None: it stopped at once, or there was none);
    ``ended_until``: a retiring key the replaced entry still had, which stopped at
    once, and the time it would have been accepted until."""

    key: str
    replaced: bool = False
    old_until: datetime | None = None
    ended_until: datetime | None = None


def add_key_to_file(path: Path, **fields: Any) -> str:
    """:func:`add_key` (the same keywords), returning the new key only."""
    return add_key(path, **fields).key


def add_key(
    path: Path,
    *,
    name: str,
    role: str,
    territory_id: str | None = None,
    purpose: str | None = None,
    channels: Sequence[str] | None = None,
    replace: bool = False,
    keep_old: timedelta | None = None,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
    given_as: Mapping[str, str] | None = None,
) -> AddedKey:
    """Create a key, store only its SHA-256 in ``path`` (created or appended).

    ``channels`` (a channel key's): the channels it alone speaks for, stored as
    catalogs spell them; None: every channel. ``given_as``: the command-line option
    each field came in (``territory_id`` -> ``--territory-id``), named by a refusal.

    A key of the same ``name`` is an error unless ``replace`` (rotation: the old
    key stops working); so is a name ``env`` (default: this process's) also gives
    in ``NEXTBEST_API_KEYS``, which a server refuses. ``keep_old`` (with
    ``replace``, at most :data:`MAX_KEEP_OLD`): the old key stays accepted, as the
    same principal, for that long after ``now`` (default: the current time); a
    retiring key the entry held before stops at once (an entry keeps one).
    Retiring keys of any entry past their time are dropped from the file.
    """
    now = utc_now() if now is None else now
    if keep_old is not None:
        if not replace:
            raise ApiKeyError(
                "keeping the old key is for a rotation: there is no old key unless the new "
                "one replaces it (`nextbest keys add ... --replace --keep-old 7d`)"
            )
        if not timedelta(0) < keep_old <= MAX_KEEP_OLD:
            raise ApiKeyError(
                f"an old key may be kept for more than no time and at most "
                f"{MAX_KEEP_OLD.days} days, not {keep_old}"
            )
    entry, key, _ = _new_entry(
        name=name,
        role=role,
        territory_id=territory_id,
        purpose=purpose,
        channels=channels,
        given_as=given_as,
    )
    with _changing(path):
        return _add_entry(
            path, entry, key=key, replace=replace, keep_old=keep_old, env=env, now=now
        )


def _new_entry(
    *,
    name: str,
    role: str,
    territory_id: str | None = None,
    purpose: str | None = None,
    channels: Sequence[str] | None = None,
    given_as: Mapping[str, str] | None = None,
    where: str = "new key",
) -> tuple[dict[str, Any], str, Principal]:
    """A key file entry for a new key, checked as loading checks one (refusals name
    ``where``), the key, and whom it is for."""
    key = new_key()
    entry: dict[str, Any] = {"name": name.strip(), "role": role, "key_sha256": hash_key(key)}
    if territory_id:
        entry["territory_id"] = territory_id
    if purpose is not None:
        entry["purpose"] = purpose
    if channels is not None:
        entry["channels"] = list(channels)
    # The checks of loading, said of what the caller gave.
    (parsed,) = _parse([entry], where, numbered=False, given_as=given_as)
    if parsed.principal.channels is not None:  # written as servers read them
        entry["channels"] = list(parsed.principal.channels)
    return entry, key, parsed.principal


@dataclass(frozen=True)
class NewKey:
    """A key :func:`add_keys` made: whom it is for, and the key (never stored)."""

    principal: Principal
    key: str


def add_keys(
    path: Path,
    given: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    keep: Callable[[list[NewKey]], None],
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[NewKey]:
    """Create a key for each of ``given`` and add them all to ``path`` in one write,
    or none of them.

    ``given``: where each was given (``reps.csv, row 3``: refusals name it) and its
    fields, those of :func:`add_key` (``name``, ``role``, ``territory_id``,
    ``purpose``, ``channels``). A name given twice, or already in ``path`` (or in
    ``env``'s ``NEXTBEST_API_KEYS``), is refused: a key is rotated one at a time
    (:func:`add_key` with ``replace``). ``keep`` is handed the new keys while the
    file's lock is held, before the file is written: where it puts them is the only
    place they will be; if it raises, the file is not written.
    """
    now = utc_now() if now is None else now
    made = [(where, *_new_entry(**fields, where=where)) for where, fields in given]
    first: dict[str, str] = {}
    for where, entry, _, _ in made:
        name = entry["name"]
        if name in first:
            raise ApiKeyError(
                f"{where}: the name {name!r} is given already in {first[name]}: each key "
                "needs a name of its own"
            )
        first[name] = where
    with _changing(path):
        entries = _read_entries(path)
        held = {str(e.get("name")) for e in entries}
        for where, entry, _, _ in made:
            if entry["name"] in held:
                raise ApiKeyError(
                    f"{where}: {path} has a key named {entry['name']!r} already; add the "
                    "others without it, and rotate it with `nextbest keys add "
                    f"{entry['name']} --role {entry['role']} --replace`"
                )
        new = [NewKey(principal=principal, key=key) for _, _, key, principal in made]
        keep(new)
        entries = _without_expired_retiring_keys(entries, now) + [e for _, e, _, _ in made]
        _write_entries(path, entries, env=env)
    return new


def _add_entry(
    path: Path,
    entry: dict[str, Any],
    *,
    key: str,
    replace: bool,
    keep_old: timedelta | None,
    env: Mapping[str, str] | None,
    now: datetime,
) -> AddedKey:
    """:func:`add_key`'s change of ``path``: ``entry`` (for ``key``) added or replacing
    the entry of its name; the caller holds the file's lock."""
    entries = _read_entries(path)
    old = next((e for e in entries if e.get("name") == entry["name"]), None)
    if old is not None and not replace:
        raise ApiKeyError(
            f"{path}: a key named {entry['name']!r} exists; to rotate it, add it again "
            "with replace (`nextbest keys add ... --replace`)"
        )
    entries = _without_expired_retiring_keys(entries, now)
    ended_until = None
    old_until = None
    if old is not None:
        (old_entry,) = _parse([old], str(path), numbered=False)
        ended_until = (
            old_entry.previous_until
            if old_entry.previous_until is not None and old_entry.previous_until > now
            else None
        )
        if keep_old is not None:
            old_until = (now + keep_old).astimezone(UTC).replace(microsecond=0)
            entry["previous_key_sha256"] = old_entry.digest.hex()
            entry["previous_valid_until"] = utc_text(old_until)
    entries = [e for e in entries if e.get("name") != entry["name"]] + [entry]
    _write_entries(path, entries, env=env)
    return AddedKey(key=key, replaced=old is not None, old_until=old_until, ended_until=ended_until)


@dataclass(frozen=True)
class EditedKey:
    """What :func:`edit_key` changed: the key's principal before and after."""

    before: Principal
    after: Principal


def edit_key(
    path: Path,
    *,
    name: str,
    changes: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
    given_as: Mapping[str, str] | None = None,
) -> EditedKey:
    """Change the fields ``changes`` (``territory_id``, ``purpose``, ``channels``) of
    the key called ``name`` in ``path``, its key kept: a rep moved to another
    territory goes on with the key its CRM holds. The entry is checked as loading
    checks one (refusals name the field by ``given_as``), and so is the file as a
    server with ``env``'s ``NEXTBEST_API_KEYS`` reads it; an unknown name is an error.
    Retiring keys past their time (at ``now``) are dropped from the file, as every
    change drops them.
    """
    unknown = [field for field in changes if field not in ("territory_id", "purpose", "channels")]
    if unknown or not changes:
        raise ValueError(f"edit_key changes territory_id, purpose or channels, not {unknown}")
    now = utc_now() if now is None else now
    with _changing(path):
        entries = _read_entries(path)
        found = next((i for i, e in enumerate(entries) if e.get("name") == name), None)
        if found is None:
            held = [str(e.get("name")) for e in entries]
            raise ApiKeyError(f"{path}: no key named {name!r}{near_hint(name, held)}")
        entry = dict(entries[found])
        (before,) = _parse([entry], str(path), numbered=False)
        entry.update(changes)
        (after,) = _parse([entry], str(path), numbered=False, given_as=given_as)
        if after.principal.channels is not None:  # written as servers read them
            entry["channels"] = list(after.principal.channels)
        entries[found] = entry
        _write_entries(path, _without_expired_retiring_keys(entries, now), env=env)
    return EditedKey(before=before.principal, after=after.principal)


def remove_key_from_file(
    path: Path, *, name: str, env: Mapping[str, str] | None = None, now: datetime | None = None
) -> datetime | None:
    """:func:`remove_keys_from_file` of one name: when its retiring key would have
    stopped being accepted (None: it had none still accepted)."""
    return remove_keys_from_file(path, names=[name], env=env, now=now)[name]


# Past this many keys, a refusal naming an unknown name no longer lists them all.
KEYS_LISTED = 10


def remove_keys_from_file(
    path: Path,
    *,
    names: Sequence[str],
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, datetime | None]:
    """Delete the keys called ``names`` from ``path`` in one change, each with its
    retiring key if it has one, or none of them: an unknown name is an error, and so
    is a file a server would still refuse with ``env``'s ``NEXTBEST_API_KEYS``.
    Retiring keys of other entries past their time (at ``now``, default: the current
    time) are dropped too.

    Returns, by name, when the removed retiring key would have stopped being
    accepted (None: it had none still accepted).
    """
    now = utc_now() if now is None else now
    wanted = list(dict.fromkeys(names))
    with _changing(path):
        entries = _read_entries(path)
        held = [str(e.get("name")) for e in entries]
        unknown = [n for n in wanted if n not in held]
        if unknown:
            known = (
                ", ".join(held) or "none"
                if len(held) <= KEYS_LISTED
                else f"{len(held):,} of them; `nextbest keys list` shows them"
            )
            said = ", ".join(f"{n!r}{near_hint(n, held)}" for n in unknown)
            raise ApiKeyError(
                f"{path}: no key named {said} (keys: {known})"
                + ("; none was removed" if len(wanted) > 1 else "")
            )
        removed = _parse([e for e in entries if e.get("name") in wanted], str(path), numbered=False)
        kept = [e for e in entries if e.get("name") not in wanted]
        _write_entries(path, _without_expired_retiring_keys(kept, now), env=env)
    until = {e.principal.name: e.previous_until for e in removed}
    return {n: u if (u := until.get(n)) is not None and u > now else None for n in wanted}


def _field_shown(name: str) -> str:
    """A key file's unknown field as its refusal quotes it: one as long as a key may
    be one, written where a field goes (``{name: a, role: admin, nb_...}``), is not
    shown."""
    return repr(name) if len(name) < MIN_KEY_LENGTH else f"<{len(name)} characters>"
