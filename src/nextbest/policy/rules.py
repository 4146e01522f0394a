"""Serving rules that depend on live contact history, read from one YAML file.

Static rules (consent, approval window, specialty, purpose) live in
:mod:`nextbest.policy.eligibility`. The rules here count what actually happened
to an HCP, from the feedback store: every ``delivered`` / ``completed`` event
counts at once, whoever sent it and for whichever brand, so each HCP has one
fatigue budget, and so does an ``opened`` / ``clicked`` / ``attended`` naming its
item (an open proves the send); the events naming one recommended item are one
contact, at the first of them (see ``storage.repository._counted_contact``).

- ``channels.<channel>.max_contacts`` / ``per_days``: frequency cap per HCP and
  channel (at most N contacts within the last D days);
- ``channels.<channel>.cooldown_days``: minimum gap since the last contact on
  that channel;
- ``channels.<channel>.repeat_days``: an action of that channel (a piece of
  content) contacted to an HCP is not offered to that HCP again for this many days,
  whatever else is sent meanwhile;
- ``channels.<channel>.consent_required``: the channel is served only to HCPs whose
  consent to it is on file (a ``consent_<channel>`` column of the hcps file); with
  no such column, to nobody, where the default is every HCP;
- ``all_channels.max_contacts`` / ``per_days``: one cap over every channel (no
  cool-down: that is per channel);
- ``dismissal_days``: an action an HCP (or their rep) dismissed is not offered to
  that HCP again for this many days;
- ``snooze_days``: the same for a snoozed action ("not now"), for its own,
  usually shorter, number of days (default: ``dismissal_days``);
- ``max_items_per_channel``: at most N items of one channel in one list;
- ``rep_plan``: default and maximum daily capacity of a rep call plan, the
  accepted dismissal reason codes, and those of them that speak for the HCP rather
  than the action (``hcp_wide_reasons``: a dismissal or snooze with one holds back
  every rep action of the HCP, for its window);
- ``withdrawn_actions``: action_ids served to nobody (content withdrawn between
  trainings).

The file format is documented in ``training/rules.yaml`` and ``docs/serving.md``.

Each rules object carries a ``fingerprint``: the first 12 hex digits of the
SHA-256 of the file's bytes as read (``sha256sum rules.yaml | cut -c1-12``), logged
with every answer and shown by ``/readyz``, so an audit can tell which rules a
worker applied. An empty file, a missing one (``load``) and the built-in defaults
all serve without history rules and share the fingerprint of no bytes,
:data:`EMPTY_FINGERPRINT` (``e3b0c44298fc``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import pandas as pd

from nextbest.contract.schema import (
    channel_spelling,
    consent_column,
    is_rep_channel,
    near_channel,
    spelled_as_channels,
    withdrawn_channel,
)
from nextbest.contract.validate import LookAlikes
from nextbest.yamlfile import (
    KeyLines,
    Place,
    as_read,
    near_hint,
    settings_file_bytes,
    settings_in,
    settings_text,
    shown,
    unknown_names,
)

if TYPE_CHECKING:
    from nextbest.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_DISMISS_REASONS: tuple[str, ...] = (
    "not_relevant",
    "already_discussed",
    "hcp_unavailable",
    "wrong_content",
    "too_frequent",
    "other",
)


FINGERPRINT_DIGITS = 12


def fingerprint_of(raw: bytes) -> str:
    """The fingerprint of a rules file's bytes: the first 12 hex digits of their SHA-256."""
    return hashlib.sha256(raw).hexdigest()[:FINGERPRINT_DIGITS]


# No rules file content: an empty file, a missing one, the built-in defaults.
EMPTY_FINGERPRINT = fingerprint_of(b"")


NO_SOURCE = "built-in defaults"


class RulesError(ValueError):
    """The rules file is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class ContactCap:
    """At most ``max_contacts`` contacts within the last ``per_days`` days."""

    max_contacts: int
    per_days: float


@dataclass(frozen=True)
class ChannelRule:
    cap: ContactCap | None = None
    cooldown_days: float | None = None
    # An action of the channel contacted to an HCP is not offered to that HCP again
    # for this many days (the same e-mail twice, the same visit's content).
    repeat_days: float | None = None
    # Served only to HCPs whose consent is on file (opt-in channels: SMS, say).
    consent_required: bool = False


@dataclass(frozen=True)
class ServingRules:
    """Validated rules; build with :meth:`load` or :meth:`from_mapping`."""

    channels: Mapping[str, ChannelRule] = field(default_factory=dict)
    all_channels: ContactCap | None = None
    dismissal_days: float | None = None
    snooze_days: float | None = None  # None: as dismissal_days (see snooze_window)
    max_items_per_channel: int | None = None
    rep_default_capacity: int = 8
    rep_max_capacity: int = 50
    dismiss_reasons: tuple[str, ...] = DEFAULT_DISMISS_REASONS
    # Reason codes (of dismiss_reasons) that say something of the HCP, not of the
    # content (hcp_unavailable): a decision with one holds back every rep action of
    # the HCP for its window, so a plan does not offer the HCP again through another.
    hcp_wide_reasons: tuple[str, ...] = ()
    # Actions served to nobody from the next reload on: content withdrawn between
    # trainings (a recalled claim, an approval pulled early), without a retrain.
    withdrawn_actions: tuple[str, ...] = ()
    # Rules that do not fit the served catalog (a misspelt channel, a channel no rule
    # caps, a withdrawn id it lacks) fail the load instead of being noted.
    strict: bool = False
    source: str = NO_SOURCE
    # Which rules these are: see fingerprint_of (the file's bytes as read, so that
    # the hash and the rules come from one read even while the file is edited).
    fingerprint: str = EMPTY_FINGERPRINT
    # The file's text as read (the fingerprint's bytes), kept for the audit table.
    text: str = field(default="", compare=False, repr=False)
    # Where each key path sits in the file (None: not read from a file), so that a
    # reason a rule gives names its line.
    lines: KeyLines | None = field(default=None, compare=False, repr=False)

    @classmethod
    def load(cls, path: Path) -> ServingRules:
        """Read ``path``; a missing file means no history rules (and says so in ``source``).

        A file found empty or invalid may be one caught mid-save (an editor or a
        deployment truncates it, then writes it): it is read once more after
        :data:`SAVE_SETTLE_S`, and what it holds then is what counts. An invalid
        file that reads the same twice is refused; an empty one is empty.
        """
        if not path.exists():
            return cls(source=f"{path} (missing: no frequency caps, cool-downs or suppression)")
        raw = _read_rules_file(path)
        try:
            rules = cls._parse(raw, path)
        except RulesError:
            again = _read_again(path, raw)
            if again is None:
                raise
            return cls._parse(again, path)
        if not raw:
            again = _read_again(path, raw)
            if again is not None:
                return cls._parse(again, path)
        return rules

    @classmethod
    def _parse(cls, raw: bytes, path: Path) -> ServingRules:
        """The rules of a file's bytes ``raw``, as read from ``path``: read as the
        training config, levers and gate config are (:func:`~nextbest.yamlfile.settings_in`),
        so the same bad file is refused in the same words."""
        text = settings_text(raw, str(path), RulesError)
        data, lines = settings_in(text, str(path), RulesError)
        rules = cls.from_mapping(
            data, source=str(path), fingerprint=fingerprint_of(raw), lines=lines
        )
        return replace(rules, text=text)

    @property
    def text_known(self) -> bool:
        """Whether ``text`` is what the fingerprint was taken of (rules read from a
        file, or none at all), so that it may be stored for an audit under it."""
        return fingerprint_of(self.text.encode("utf-8")) == self.fingerprint

    @classmethod
    def configured(cls, settings: Settings) -> ServingRules:
        """The rules ``settings`` name; a missing file is an error, not a silent run
        without caps. The default path is relative to the working directory, so a
        service started elsewhere stops here, saying how to name the file (an empty
        file serves without history rules, deliberately)."""
        path = settings.resolved_rules_file
        if settings.rules_file is not None and not path.exists():
            raise RulesError(
                f"NEXTBEST_RULES_FILE names {path}, which does not exist: without it no "
                "frequency caps, cool-downs or suppression would apply"
            )
        if not path.exists():
            raise RulesError(
                f"no serving rules file at {path} (relative to the working directory "
                f"{Path.cwd()}): without it no frequency caps, cool-downs or dismissal "
                "suppression would apply. Set NEXTBEST_RULES_FILE to the rules file "
                "(training/rules.yaml in the repository documents every key), or to an "
                "empty file to serve without them"
            )
        return cls.load(path)

    @classmethod
    def from_mapping(
        cls,
        data: Any,
        *,
        source: str = "<mapping>",
        fingerprint: str | None = None,
        lines: KeyLines | None = None,
    ) -> ServingRules:
        """Rules from ``data``; ``fingerprint`` is that of the bytes it was read from
        (None, rules not read from a file: that of its canonical JSON, or, empty,
        :data:`EMPTY_FINGERPRINT`); ``lines``, where each key path sits in that file,
        so that an error names its line."""
        if not isinstance(data, Mapping):
            raise RulesError(f"{source}: expected a mapping of settings at the top")
        top = Place(source, lines)
        _known_fields(data, TOP_FIELDS, top)
        channels: dict[str, ChannelRule] = {}
        raw_channels = data.get("channels") or {}
        if not isinstance(raw_channels, Mapping):
            raise RulesError(
                f"{top.at('channels').file}: 'channels' must be a mapping of channel -> rule"
                f"{as_read(raw_channels)}"
            )
        first_named: dict[str, Place] = {}  # a channel as catalogs spell it -> its key
        for name, rule in raw_channels.items():
            where = top.at("channels").at(name)
            # 'Email' and 'email' cap one channel: which cap holds could not be told.
            first = first_named.setdefault(channel_spelling(str(name)), where)
            if first is not where:
                at = f", line {first.line}" if first.line is not None else ""
                raise RulesError(
                    f"{where}: names channel {channel_spelling(str(name))!r} a second time "
                    f"(first: {first.named}{at}): keep one of them"
                )
            if not isinstance(rule, Mapping):
                raise RulesError(f"{where}: expected a mapping{as_read(rule)}")
            _known_fields(rule, CHANNEL_FIELDS, where)
            cap = _cap(rule, where) if "max_contacts" in rule or "per_days" in rule else None
            cooldown = _positive(rule.get("cooldown_days"), where.at("cooldown_days"))
            repeat = _positive(rule.get("repeat_days"), where.at("repeat_days"))
            required = rule.get("consent_required", False)
            if not isinstance(required, bool):
                raise RulesError(
                    f"{where.at('consent_required')}: must be true or false{as_read(required)}"
                )
            channels[str(name)] = ChannelRule(
                cap=cap, cooldown_days=cooldown, repeat_days=repeat, consent_required=required
            )
        # Spelled as the catalog spells channels ('Email', 'Rep Visit'), as levers are.
        channels = spelled_as_channels(channels)
        all_channels = None
        if data.get("all_channels") is not None:
            raw = data["all_channels"]
            where = top.at("all_channels")
            if not isinstance(raw, Mapping):
                raise RulesError(f"{where} must be a mapping{as_read(raw)}")
            if "cooldown_days" in raw:  # read as a gap between any two contacts, it was ignored
                raise RulesError(
                    f"{where.at('cooldown_days')}: a cool-down is set per channel "
                    "(channels.<name>.cooldown_days); all_channels takes only "
                    "max_contacts and per_days"
                )
            _known_fields(raw, ALL_CHANNELS_FIELDS, where)
            all_channels = _cap(raw, where)
        rep = data.get("rep_plan") or {}
        rep_plan = top.at("rep_plan")
        if not isinstance(rep, Mapping):
            raise RulesError(f"{rep_plan} must be a mapping{as_read(rep)}")
        _known_fields(rep, REP_PLAN_FIELDS, rep_plan)
        default_capacity = _count(rep.get("default_capacity", 8), rep_plan.at("default_capacity"))
        max_capacity = _count(rep.get("max_capacity", 50), rep_plan.at("max_capacity"))
        if default_capacity > max_capacity:
            raise RulesError(
                f"{rep_plan.at('default_capacity')} ({default_capacity}) exceeds "
                f"max_capacity ({max_capacity})"
            )
        reasons = _dismiss_reasons(
            rep.get("dismiss_reasons", list(DEFAULT_DISMISS_REASONS)), rep_plan
        )
        hcp_wide = _hcp_wide_reasons(rep.get("hcp_wide_reasons"), reasons, rep_plan)
        withdrawn = data.get("withdrawn_actions") or []
        if not isinstance(withdrawn, list):
            raise RulesError(
                f"{top.at('withdrawn_actions')} must be a list of catalog action_ids, "
                f"e.g. [A027, A031]{as_read(withdrawn)}"
            )
        for n, action in enumerate(withdrawn):
            if not isinstance(action, str) or not action.strip():
                # YAML reads 031 as the number 25 and 1e3 as 1000.0: an id written as
                # a number may not be the id meant, so it is refused, not guessed.
                raise RulesError(
                    f"{top.at('withdrawn_actions').item(n)}: {shown(action)} is not an action_id "
                    "as text; write ids as the catalog does, in quotes if they are digits "
                    "('031')"
                )
        # Listed twice, an id was served to nobody all the same: a slip that may
        # hide the id meant, refused as a reason code listed twice is.
        _refuse_twins(
            withdrawn,
            top.at("withdrawn_actions"),
            read=str.strip,
            alike="differ only in the spaces around them, which are not read",
        )
        max_items = data.get("max_items_per_channel")
        strict = data.get("strict", False)
        if not isinstance(strict, bool):
            raise RulesError(f"{top.at('strict')}: must be true or false{as_read(strict)}")
        if fingerprint is None:
            fingerprint = _mapping_fingerprint(data)
        return cls(
            channels=channels,
            all_channels=all_channels,
            dismissal_days=_positive(data.get("dismissal_days"), top.at("dismissal_days")),
            snooze_days=_positive(data.get("snooze_days"), top.at("snooze_days")),
            max_items_per_channel=None
            if max_items is None
            else _count(max_items, top.at("max_items_per_channel")),
            rep_default_capacity=default_capacity,
            rep_max_capacity=max_capacity,
            dismiss_reasons=tuple(reasons),
            hcp_wide_reasons=hcp_wide,
            withdrawn_actions=tuple(str(a).strip() for a in withdrawn),
            strict=strict,
            source=source,
            fingerprint=fingerprint,
            lines=lines,
        )

    def rule_at(self, *path: str) -> str:
        """A rule as a reason names it: its key path and, read from a file, the file's
        name and the line it is written on (``channels.email.cooldown_days, rules.yaml
        line 7``). The file's name only: answers are no place for the server's layout."""
        named = ".".join(path)
        line = self.lines.line_of(path) if self.lines is not None else None
        if line is None:
            return named
        return f"{named}, {Path(self.source).name} line {line}"

    @property
    def sets_nothing(self) -> bool:
        """True for rules that set no rule: an empty or comment-only file, a missing one,
        the built-in defaults (serving without history rules, on purpose)."""
        return replace(self, source=NO_SOURCE, fingerprint=EMPTY_FINGERPRINT) == ServingRules()

    @property
    def snooze_window(self) -> float | None:
        """Days a snoozed action stays suppressed (None: snoozes suppress nothing)."""
        return self.snooze_days if self.snooze_days is not None else self.dismissal_days

    @property
    def suppresses(self) -> bool:
        """True when dismissals or snoozes keep actions from being offered again."""
        return self.dismissal_days is not None or self.snooze_window is not None

    @property
    def repeat_window(self) -> float | None:
        """The longest ``repeat_days`` of a channel (None: no channel sets one): how
        far back serving reads which actions each HCP was contacted with."""
        days = [r.repeat_days for r in self.channels.values() if r.repeat_days is not None]
        return max(days, default=None)

    @property
    def reads_history(self) -> bool:
        """True when serving must read the feedback store (contacts, repeats or
        dismissals)."""
        return self.needs_contacts or self.suppresses or self.repeat_window is not None

    def unmatched_channels(self, catalog_channels: Iterable[str]) -> list[str]:
        """Channels with rules that are not among ``catalog_channels``: their caps and
        cool-downs apply to nothing (a misspelt channel switches its rules off)."""
        return sorted(set(self.channels) - {str(c) for c in catalog_channels})

    @property
    def needs_contacts(self) -> bool:
        """True when serving must read contact history (caps or cool-downs)."""
        return self.all_channels is not None or any(
            r.cap is not None or r.cooldown_days is not None for r in self.channels.values()
        )

    def history_reach(self) -> tuple[float, str] | None:
        """How many days back serving reads the feedback store for these rules, and
        the rule that reads furthest, as the rules file names it (``dismissal_days``,
        ``channels.email.per_days``); the first written on a tie. None: no rule reads
        history. Consent events are read over all time whatever the rules."""
        reads: list[tuple[float, str]] = []
        for name, rule in self.channels.items():
            if rule.cap is not None:
                reads.append((rule.cap.per_days, f"channels.{name}.per_days"))
            if rule.cooldown_days is not None:
                reads.append((rule.cooldown_days, f"channels.{name}.cooldown_days"))
            if rule.repeat_days is not None:
                reads.append((rule.repeat_days, f"channels.{name}.repeat_days"))
        if self.all_channels is not None:
            reads.append((self.all_channels.per_days, "all_channels.per_days"))
        if self.dismissal_days is not None:
            reads.append((self.dismissal_days, "dismissal_days"))
        if self.snooze_days is not None:
            reads.append((self.snooze_days, "snooze_days"))
        return max(reads, key=lambda read: read[0], default=None)

    def lookbacks(self) -> list[float]:
        """Distinct windows (days) to count contacts over, longest first.

        The longest also covers every cool-down, so each window is one query.
        """
        windows = {r.cap.per_days for r in self.channels.values() if r.cap is not None}
        if self.all_channels is not None:
            windows.add(self.all_channels.per_days)
        cooldowns = [r.cooldown_days for r in self.channels.values() if r.cooldown_days]
        if cooldowns and (not windows or max(cooldowns) > max(windows)):
            windows.add(max(cooldowns))
        return sorted(windows, reverse=True)


# How long a rules file found empty or invalid is given to finish being saved
# before it is read again (writing a few kilobytes takes far less).
SAVE_SETTLE_S = 0.2


# The shipped rules file is 3 KiB; a rules file a hundred times that is another
# file named by mistake (a CSV export, a log), refused before it is parsed.
MAX_FILE_BYTES = 256 * 1024


def _read_rules_file(path: Path) -> bytes:
    # A directory, no permission: the file's error (which serving reports and retries),
    # not an OSError that stops a worker.
    raw = settings_file_bytes(path, str(path), RulesError, max_bytes=MAX_FILE_BYTES)
    if len(raw) > MAX_FILE_BYTES:
        size = len(raw)
        with contextlib.suppress(OSError):  # its whole size, not the part read
            size = max(size, path.stat().st_size)
        raise RulesError(
            f"{path}: {size:,} bytes, more than the {MAX_FILE_BYTES // 1024} KiB "
            "a rules file may have: is it the rules file? (NEXTBEST_RULES_FILE names it; "
            "training/rules.yaml documents every key)"
        )
    return raw


def _settle() -> None:
    time.sleep(SAVE_SETTLE_S)


def _read_again(path: Path, first: bytes) -> bytes | None:
    """``path``'s bytes read again after a pause, when they differ from ``first``
    (the file was being saved); None when they are the same, or the file is gone."""
    _settle()
    if not path.exists():
        return None
    again = _read_rules_file(path)
    if again == first:
        return None
    logger.info("%s changed while it was read (a save in progress): read again", path)
    return again


def _mapping_fingerprint(data: Mapping[Any, Any]) -> str:
    """The fingerprint of rules given as a mapping, not read from a file."""
    if not data:
        return EMPTY_FINGERPRINT
    try:
        text = json.dumps(data, sort_keys=True, default=str)
    except TypeError:  # keys that do not sort together (validated rules have none)
        text = repr(data)
    return fingerprint_of(text.encode())


TOP_FIELDS = (
    "all_channels",
    "channels",
    "dismissal_days",
    "max_items_per_channel",
    "rep_plan",
    "snooze_days",
    "strict",
    "withdrawn_actions",
)
CHANNEL_FIELDS = ("max_contacts", "per_days", "cooldown_days", "repeat_days", "consent_required")
ALL_CHANNELS_FIELDS = ("max_contacts", "per_days")
REP_PLAN_FIELDS = ("default_capacity", "max_capacity", "dismiss_reasons", "hcp_wide_reasons")


def _dismiss_reasons(value: Any, rep_plan: Place) -> list[str]:
    """``rep_plan.dismiss_reasons``: a non-empty list of codes as text, each once, no
    two of which differ only in case (a reason is read in any case: see
    :func:`code_in_any_case`)."""
    where = rep_plan.at("dismiss_reasons")
    if not isinstance(value, list) or not value:
        said = "" if isinstance(value, list) else as_read(value)
        raise RulesError(
            f"{where} must be a non-empty list of codes, e.g. [not_relevant, other]{said}"
        )
    for n, code in enumerate(value):
        if not isinstance(code, str) or not code.strip():
            raise RulesError(
                f"{where.item(n)}: a reason code must be text, e.g. not_relevant"
                f"{as_read(code, text_wanted=True)}"
            )
    _refuse_twins(value, where)
    return value


def _refuse_twins(
    codes: list[str],
    where: Place,
    *,
    read: Callable[[str], str] = str.casefold,
    alike: str = "differ only in case, and reason codes are read in any case",
) -> None:
    """Refuse a code listed twice in one list, or two read as one (``read``: reason
    codes in any case, ids without the spaces around them), at the second, naming
    both and how they are ``alike``: a reason sent in any case (``Not_Relevant``
    from a CRM's picklist) could not be told to be one rather than the other, and
    the same code twice is a slip that may hide the code meant (listed twice, it was
    also shown twice wherever the codes are listed)."""
    first_of: dict[str, int] = {}
    for n, code in enumerate(codes):
        first = first_of.setdefault(read(code), n)
        if first == n:
            continue
        twin = where.item(first)
        at = f", line {twin.line}" if twin.line is not None else ""
        if codes[first] == code:
            raise RulesError(
                f"{where.item(n)}: {shown(code)} is listed a second time (first: "
                f"{twin.named}{at}): keep one of them"
            )
        raise RulesError(
            f"{where.item(n)}: {shown(code)} and {shown(codes[first])} "
            f"({twin.named}{at}) {alike}: keep one of them"
        )


def code_in_any_case(code: str, codes: Collection[str]) -> str | None:
    """``code`` as ``codes`` spell it: itself when it is one of them, else the one code
    equal to it in any case and without the spaces around it (``Not_Relevant`` is
    ``not_relevant``); None when none or more than one is. The rule by which a reason
    sent with a dismissal is read too (``storage.repository.reason_code`` calls it)."""
    if code in codes:
        return code
    folded = code.strip().casefold()
    matches = [known for known in codes if known.casefold() == folded]
    return matches[0] if len(matches) == 1 else None


def _hcp_wide_reasons(value: Any, codes: list[str], rep_plan: Place) -> tuple[str, ...]:
    """``rep_plan.hcp_wide_reasons``: codes of ``codes`` (``dismiss_reasons``), in any
    case (spelt as ``codes`` spell them); a code that is none of them would hold back
    nothing, so it is refused at its line."""
    where = rep_plan.at("hcp_wide_reasons")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RulesError(
            f"{where}: must be a list of reason codes of rep_plan.dismiss_reasons, "
            f"e.g. [hcp_unavailable]{as_read(value)}"
        )
    spelt = []
    for n, code in enumerate(value):
        known = code_in_any_case(code, codes) if isinstance(code, str) else None
        if known is None:
            hint = near_hint(code.strip(), codes, any_case=True) if isinstance(code, str) else ""
            raise RulesError(
                f"{where.item(n)}: {shown(code)} is not a reason code of "
                f"rep_plan.dismiss_reasons {codes}{hint}"
            )
        spelt.append(known)
    _refuse_twins(value, where)
    return tuple(dict.fromkeys(spelt))


def _known_fields(raw: Mapping[Any, Any], known: tuple[str, ...], where: Place) -> None:
    """Refuse keys of ``raw`` not in ``known``, at the line of the first one written,
    as every settings file says it (:func:`nextbest.yamlfile.unknown_names`)."""
    extra = [key for key in raw if key not in known]
    if extra:
        raise RulesError(f"{where.pointing_at(extra[0])}: {unknown_names(extra, known)}")


def _cap(raw: Mapping[str, Any], where: Place) -> ContactCap:
    """The cap of ``raw``; its caller has checked ``raw``'s other fields."""
    if "max_contacts" not in raw or "per_days" not in raw:
        raise RulesError(f"{where}: a cap needs both max_contacts and per_days")
    return ContactCap(
        max_contacts=_count(raw["max_contacts"], where.at("max_contacts"), allow_zero=True),
        per_days=float(_positive(raw["per_days"], where.at("per_days")) or 0.0),
    )


def _count(value: Any, where: Place, *, allow_zero: bool = False) -> int:
    floor = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < floor:
        # 3.0 is told to be written 3, but not 0.0 where 0 would be refused too.
        whole = None if isinstance(value, float) and value < floor else "whole"
        raise _refused(where, f"must be an integer >= {floor}", value, number=whole)
    return value


def _refused(where: Place, must: str, value: Any, *, number: str | None = None) -> RulesError:
    """``where: <must> (read -1, a whole number)``: what a value must be, and what
    YAML read, as the training config says it (:func:`~nextbest.yamlfile.as_read`);
    ``number`` (``"whole"``, ``"decimal"``) tells a number read as text how to write it."""
    said = as_read(value, number=number)
    return RulesError(
        f"{where}: {must}{said}" if said.startswith(" ") else f"{where}: {must}; {said}"
    )


# The longest window a rule may have: a century of contact history. Longer is no
# policy (a typo, an extra zero), and far longer went past the calendar's first
# year once subtracted from now, an OverflowError at serving time, not a refusal.
MAX_DAYS = 36_500


# A number of days written with its unit ('7 days', '30d', '2 weeks'): read as text.
_WITH_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*(d|days?|w|wks?|weeks?)", re.IGNORECASE)


def _positive(value: Any, where: Place) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        refused = _refused(where, "must be a number of days > 0", value, number="decimal")
        unit = _WITH_UNIT.fullmatch(value.strip()) if isinstance(value, str) else None
        if unit is not None:
            days = float(unit[1]) * (7 if unit[2][0] in "wW" else 1)
            raise RulesError(f"{refused}: write {days:g} (a number of days, without a unit)")
        raise refused
    if not value <= MAX_DAYS:  # infinity (.inf) too
        raise _refused(where, f"must be at most {MAX_DAYS} days, 100 years", value)
    return float(value)


_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


def _by_hcp(pairs: Mapping[tuple[str, _Key], _Value]) -> dict[str, dict[_Key, _Value]]:
    """``{(hcp_id, key): value}`` as ``{hcp_id: {key: value}}``."""
    found: dict[str, dict[_Key, _Value]] = {}
    for (hcp_id, key), value in pairs.items():
        found.setdefault(hcp_id, {})[key] = value
    return found


@dataclass(frozen=True)
class LiveHistory:
    """What the feedback store says about some HCPs at ``now`` (all times UTC).

    Every window is one meaning: a contact or decision at ``t`` is within the last
    N days until ``t`` + N, exclusive (from ``t`` + N on it binds no more, the
    time a reason says the rule lifts); a cool-down likewise holds while less than
    its days have passed since the last contact.

    ``counts[window][(hcp_id, channel)]`` is the number of contacts within the
    last ``window`` days; ``last[(hcp_id, channel)]`` the latest contact within
    the longest window; ``dismissed[(hcp_id, action_id)]`` the reason of a
    dismissal within ``dismissal_days`` or a snooze within ``snooze_days`` (the
    latest such event of the pair decides), ``snoozed`` the pairs of a snooze;
    ``consent[(hcp_id, channel)]``: the HCP's latest consent event on ``channel``
    (None: on every channel), when it was and whether it withdrew consent;
    ``consent_unmatched[(hcp_id, name, withdrawn)]``: when the HCP's latest opt-out
    (``withdrawn`` True) and latest opt-in (False) stored naming a channel while no
    model was served happened (``name`` as catalogs spell it, not yet read against a
    catalog: 'e_mail', 'fax'), which :class:`HistoryRules` reads against the served
    catalog. ``dismissed_at``: when each pair of ``dismissed`` was
    decided. ``contact_times`` (read for an explanation only, else None): per HCP
    and channel (None: none named), when each contact within the longest window
    was, newest first, so that a cap's reason can say when it lifts.
    """

    now: datetime
    counts: Mapping[float, Mapping[tuple[str, str], int]] = field(default_factory=dict)
    last: Mapping[tuple[str, str], datetime] = field(default_factory=dict)
    dismissed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    snoozed: frozenset[tuple[str, str]] = frozenset()
    consent: Mapping[tuple[str, str | None], tuple[datetime, bool]] = field(default_factory=dict)
    consent_unmatched: Mapping[tuple[str, str, bool], datetime] = field(default_factory=dict)
    dismissed_at: Mapping[tuple[str, str], datetime] = field(default_factory=dict)
    contact_times: Mapping[tuple[str, str | None], tuple[datetime, ...]] | None = None
    # (hcp_id, action_id) -> the latest contact naming the action within the rules'
    # longest repeat_days (read only when a channel sets one).
    sent: Mapping[tuple[str, str], datetime] = field(default_factory=dict)

    def cap_lifts(self, hcp_id: str, channel: str | None, cap: ContactCap) -> datetime | None:
        """When ``cap`` (binding now) lets ``hcp_id`` be contacted again on ``channel``
        (None: on every channel, the budget): when the ``max_contacts``-th newest
        contact in its window leaves it. None without ``contact_times``, or for a cap
        of 0, which nothing but an edit lifts."""
        if self.contact_times is None or cap.max_contacts == 0:
            return None
        start = self.now - timedelta(days=cap.per_days)
        times = sorted(
            (
                at
                for on, ats in self.contact_times_by_hcp.get(hcp_id, {}).items()
                if channel is None or on == channel
                for at in ats
                if at > start
            ),
            reverse=True,
        )
        if len(times) < cap.max_contacts:
            return None
        return times[cap.max_contacts - 1] + timedelta(days=cap.per_days)

    @property
    def empty(self) -> bool:
        return (
            not self.last
            and not self.dismissed
            and not self.consent
            and not self.consent_unmatched
            and not self.sent
        )

    def reaches(self, moment: datetime) -> bool:
        """Whether this history holds every contact since ``moment`` (it holds the
        rules' longest window; none when the rules count no contacts)."""
        return bool(self.counts) and moment >= self.now - timedelta(days=max(self.counts))

    def newest_contacts(self) -> dict[str, dict[str | None, datetime]] | None:
        """Per HCP, its newest contact on each channel within the history (None:
        without a channel; HCPs without any contact left out); None when the
        history holds no contacts at all (the rules count none)."""
        if not self.counts:
            return None
        return cast(dict[str, dict[str | None, datetime]], self.last_by_hcp)

    # Per HCP, each built once per history: the rules ask about every HCP of a
    # batch or a territory, and scanning the whole history for each was quadratic
    # (1,000 HCPs with four contacts each: 0.2 s of a batch call).
    @cached_property
    def last_by_hcp(self) -> dict[str, dict[str, datetime]]:
        """``last`` per HCP: channel -> its latest contact."""
        return _by_hcp(self.last)

    @cached_property
    def contact_times_by_hcp(self) -> dict[str, dict[str | None, tuple[datetime, ...]]]:
        """``contact_times`` per HCP: channel (None: none named) -> its contact times.
        A rep plan's explanation asks about up to a hundred HCPs of a territory."""
        return _by_hcp(self.contact_times or {})

    @cached_property
    def consent_by_hcp(self) -> dict[str, dict[str | None, tuple[datetime, bool]]]:
        """``consent`` per HCP: channel (None: every channel) -> its latest event."""
        return _by_hcp(self.consent)

    @cached_property
    def consent_unmatched_by_hcp(self) -> dict[str, list[tuple[str, tuple[datetime, bool]]]]:
        """``consent_unmatched`` per HCP: (channel as named, (when, withdrawn)) of its
        latest opt-out and latest opt-in of each name."""
        found: dict[str, list[tuple[str, tuple[datetime, bool]]]] = {}
        for (hcp_id, name, withdrawn), at in self.consent_unmatched.items():
            found.setdefault(hcp_id, []).append((name, (at, withdrawn)))
        return found

    @cached_property
    def sent_by_hcp(self) -> dict[str, dict[str, datetime]]:
        """``sent`` per HCP: action_id -> when it was contacted."""
        return _by_hcp(self.sent)

    @cached_property
    def dismissed_by_hcp(self) -> dict[str, dict[str, str]]:
        """``dismissed`` per HCP: action_id -> reason."""
        return _by_hcp(self.dismissed)

    @cached_property
    def contacts_by_hcp(self) -> dict[float, dict[str, int]]:
        """``counts`` per window and HCP, over every channel: its contact budget."""
        found: dict[float, dict[str, int]] = {}
        for per_days, counts in self.counts.items():
            totals = found[per_days] = {}
            for (hcp_id, _), n in counts.items():
                totals[hcp_id] = totals.get(hcp_id, 0) + n
        return found


class HistoryRules:
    """Applies :class:`ServingRules` to a catalog, vectorised over actions.

    ``channels`` and ``action_ids`` are the catalog's columns, shape ``(n_actions,)``;
    ``consent_on_file``: the channels the hcps file records consent to (a
    ``consent_<channel>`` column), for ``consent_required``. What of the rules fits
    nothing in the catalog is logged and kept in ``notes``; with ``strict: true`` it
    raises :class:`RulesError` instead.
    """

    def __init__(
        self,
        rules: ServingRules,
        *,
        channels: np.ndarray,
        action_ids: np.ndarray,
        consent_on_file: Iterable[str] = (),
    ):
        self.rules = rules
        self.action_ids = action_ids
        self.channels = channels
        self.actions_of_channel: dict[str, np.ndarray] = {
            str(c): np.flatnonzero(channels == c) for c in np.unique(channels)
        }
        self.action_pos = {str(a): j for j, a in enumerate(action_ids)}
        # The channel of this catalog each opt-out channel named with no catalog served
        # withdraws (None: every channel), read once per name for the catalog's life,
        # not per request: the rules run on every request.
        self._withdrawn_channels: dict[str, str | None] = {}
        # What an HCP-wide dismissal holds back (rep_plan.hcp_wide_reasons): a rep's
        # decision speaks for the rep channels, never for e-mail or webinars.
        self.rep_cols = np.flatnonzero([is_rep_channel(str(c)) for c in channels])
        # Each action's channel's repeat_days (NaN: none set).
        self.repeat_days = np.array(
            [_repeat_days(rules, str(c)) for c in channels], dtype=float
        ).reshape(len(action_ids))
        # A cap of 0 closes its channel (or, over all channels, every one) to every
        # HCP, contacted or not: what a compliance stop of a channel looks like. (The
        # all-channel budget's reason is given for every HCP by _channel_blocks.)
        self.closed = np.zeros(len(action_ids), dtype=bool)
        self._closed_why: dict[str, str] = {}
        if rules.all_channels is not None and rules.all_channels.max_contacts == 0:
            self.closed[:] = True
        for name, rule in rules.channels.items():
            if rule.cap is not None and rule.cap.max_contacts == 0:
                self.closed[self.actions_of_channel.get(name, [])] = True
                self._closed_why[name] = (
                    f"frequency cap: {name} is closed, max_contacts 0 "
                    f"({rules.rule_at('channels', name, 'max_contacts')}){UNTIL_EDITED}"
                )
        # Withdrawn content: excluded for every HCP and request whatever the history
        # (applied with the request-level rules, not through ``blocked``).
        self.withdrawn = np.isin(action_ids.astype(str), list(rules.withdrawn_actions))
        # An opt-in channel whose consent the hcps file does not record: no HCP has
        # given it, as far as nextbest can tell (the default, every HCP, is unsafe).
        on_file = set(consent_on_file)
        self.unconsented_channels = sorted(
            name
            for name, rule in rules.channels.items()
            if rule.consent_required and name in self.actions_of_channel and name not in on_file
        )
        self.unconsented = np.isin(channels.astype(str), self.unconsented_channels)
        # What no HCP is served whatever the history (applied with the request-level
        # rules), and why, per action.
        self.ruled_out = self.withdrawn | self.unconsented
        self.ruled_out_why: dict[int, list[str]] = {}
        for j in np.flatnonzero(self.unconsented).tolist():
            self.ruled_out_why.setdefault(j, []).append(
                f"consent: {channels[j]} needs consent on file (consent_required) and the "
                f"hcps file has no {consent_column(str(channels[j]))} column, until a model "
                "trained with that column is served"
            )
        for j in np.flatnonzero(self.withdrawn).tolist():
            self.ruled_out_why.setdefault(j, []).append(
                f"withdrawn by the serving rules ({rules.rule_at('withdrawn_actions')})"
                f"{UNTIL_EDITED}"
            )
        # What of the rules applies to nothing in this catalog: logged, and said in
        # the answer of the reload that read them (a typo must not pass for a stop).
        self.notes: list[str] = []
        unknown = sorted(set(rules.withdrawn_actions) - set(self.action_pos))
        if unknown:
            # An id typed in another case or without its leading zeros ('a027', '31' for '031')
            # withdraws nothing, and the content meant is served on: name that one.
            twins = LookAlikes(pd.Index(list(self.action_pos)))
            misspelt = ", ".join(
                f"'{twin}' for '{action}'"
                for action in unknown
                if (twin := twins.of(action)) is not None
            )
            hint = (
                f"ids are compared exactly, case included: did you mean {misspelt}?"
                if misspelt
                else "check the spelling"
            )
            self.notes.append(
                f"withdrawn_actions {unknown} are not in the served model's catalog "
                f"(nothing to withdraw; {hint})"
            )
        unmatched = rules.unmatched_channels(self.actions_of_channel)
        # A channel the catalog gained (rep_sample, say) that the rules never name
        # has no cap or cool-down of its own: said, since nothing else would say it.
        unruled = sorted(set(self.actions_of_channel) - set(rules.channels))
        if unmatched:
            # A misspelt channel leaves the one it meant uncapped: name that one.
            meant = {name: near_channel(name, unruled) for name in unmatched}
            hints = "; ".join(
                f"did you mean '{near}' for '{name}'?" for name, near in meant.items() if near
            )
            self.notes.append(
                f"rules for channel(s) {unmatched} apply to nothing: the catalog's channels "
                f"are {sorted(self.actions_of_channel)}{f' ({hints})' if hints else ''}"
            )
        if self.unconsented_channels:
            self.notes.append(
                f"channel(s) {self.unconsented_channels} need consent on file "
                "(consent_required) and the served model's hcps file has no "
                f"{', '.join(consent_column(c) for c in self.unconsented_channels)} column: "
                "served to nobody until a model trained with one is"
            )
        # Said too of a file that names no channel (its channels section deleted, say):
        # silent only for one that sets no rule at all, serving without them on purpose.
        if unruled and not rules.sets_nothing:
            budget = (
                "only the all_channels budget caps them"
                if rules.all_channels is not None
                else "nothing caps them"
            )
            self.notes.append(f"no rules for channel(s) {unruled} of the catalog: {budget}")
        if rules.strict and self.notes:
            raise RulesError(
                f"{rules.source}: strict: true, and the rules do not fit the served "
                f"catalog: {'; '.join(self.notes)}"
            )
        for note in self.notes:
            logger.warning("%s: %s", rules.source, note)

    def blocked(self, hcp_ids: list[str], history: LiveHistory) -> np.ndarray:
        """Actions the history rules forbid, shape ``(len(hcp_ids), n_actions)`` bool."""
        out = self.closed[np.newaxis, :].repeat(len(hcp_ids), axis=0)
        if history.empty:
            return out
        for i, hcp_id in enumerate(hcp_ids):
            for channel in self._channel_blocks(hcp_id, history, say=False):
                if channel == "*":
                    out[i, :] = True
                elif channel in self.actions_of_channel:
                    out[i, self.actions_of_channel[channel]] = True
        if not history.dismissed and not history.sent:
            return out
        row = {h: i for i, h in enumerate(hcp_ids)}
        if history.dismissed:
            wide = self.rules.hcp_wide_reasons
            for (hcp_id, action_id), reason in history.dismissed.items():
                at_row = row.get(hcp_id)
                if at_row is None:
                    continue
                if reason in wide:
                    out[at_row, self.rep_cols] = True
                pos = self.action_pos.get(action_id)
                if pos is not None:
                    out[at_row, pos] = True
        for hcp_id, pos, _, _ in self._repeats(history):
            at_row = row.get(hcp_id)
            if at_row is not None:
                out[at_row, pos] = True
        return out

    def _repeats(
        self, history: LiveHistory, hcp_id: str | None = None
    ) -> Iterator[tuple[str, int, datetime, float]]:
        """(hcp_id, action position, when it was contacted, its repeat_days) of each
        action ``history`` says an HCP (``hcp_id``; None: any) was contacted with less
        than its channel's ``repeat_days`` ago: not offered to that HCP again until then."""
        sent = (
            history.sent.items()
            if hcp_id is None
            else (((hcp_id, a), at) for a, at in history.sent_by_hcp.get(hcp_id, {}).items())
        )
        for (hcp, action_id), at in sent:
            pos = self.action_pos.get(action_id)
            if pos is None:
                continue
            days = float(self.repeat_days[pos])
            if days == days and history.now - at < timedelta(days=days):  # NaN: no rule
                yield hcp, pos, at, days

    def reasons(self, hcp_id: str, history: LiveHistory) -> list[list[str]]:
        """For one HCP, the history rules that exclude each action (empty = none)."""
        out: list[list[str]] = [[] for _ in self.action_ids]
        blocks = self._channel_blocks(hcp_id, history)
        # Said whatever else binds: a budget's or a cool-down's date is not when a
        # closed channel opens again.
        for col in np.flatnonzero(self.closed).tolist():
            why = self._closed_why.get(str(self.channels[col]))
            if why:
                out[col].append(why)
        for channel, why in blocks.items():
            if not why:
                continue
            cols = (
                range(len(self.action_ids))
                if channel == "*"
                else self.actions_of_channel.get(channel, ())
            )
            for j in cols:
                out[int(j)].append(why)
        rules = self.rules
        for _, col, sent_at, repeat in self._repeats(history, hcp_id):
            channel = str(self.channels[col])
            out[col].append(
                f"repeat: this {channel} content reached the HCP "
                f"{_ago(history.now - sent_at)}, not repeated within {repeat:g} days "
                f"({rules.rule_at('channels', channel, 'repeat_days')})"
                f"{lifting(sent_at + timedelta(days=repeat))}"
            )
        # The HCP-wide decision that lifts last is the one that holds the HCP back.
        widest: tuple[datetime, str, str] | None = None
        for action_id, reason in history.dismissed_by_hcp.get(hcp_id, {}).items():
            said, days, window, lifts = self._decision(hcp_id, action_id, reason, history)
            pos = self.action_pos.get(action_id)
            if pos is not None:
                out[pos].append(f"{said} in the last {days} ({window}){lifting(lifts)}")
            if (
                reason in rules.hcp_wide_reasons
                and lifts is not None
                and (widest is None or lifts > widest[0])
            ):
                widest = (
                    lifts,
                    action_id,
                    f"{said} on {action_id} in the last {days}, which holds every rep action "
                    f"of this HCP ({rules.rule_at('rep_plan', 'hcp_wide_reasons')}; {window})"
                    f"{lifting(lifts)}",
                )
        if widest is not None:
            for rep_col in self.rep_cols.tolist():
                if str(self.action_ids[rep_col]) != widest[1]:
                    out[rep_col].append(widest[2])
        return out

    def _decision(
        self, hcp_id: str, action_id: str, reason: str, history: LiveHistory
    ) -> tuple[str, str, str, datetime | None]:
        """A dismissal or snooze in force, as a reason says it: what it was (``dismissed
        (not_relevant)``), its window (``30 days``), the rule that sets it as named
        (``dismissal_days, rules.yaml line 42``), and when it lifts."""
        rules = self.rules
        if (hcp_id, action_id) in history.snoozed:
            kind, days = "snoozed", rules.snooze_window
            key = "snooze_days" if rules.snooze_days is not None else "dismissal_days"
        else:
            kind, days = "dismissed", rules.dismissal_days
            key = "dismissal_days"
        code = "" if reason in ("dismissed", "snoozed") else f" ({reason})"
        at = history.dismissed_at.get((hcp_id, action_id))
        lifts = None if at is None or days is None else at + timedelta(days=days)
        return f"{kind}{code}", f"{days or 0.0:g} days", rules.rule_at(key), lifts

    def _withdrawn(self, hcp_id: str, history: LiveHistory, *, say: bool) -> dict[str, str]:
        """Catalog channel -> why ``hcp_id`` may not be contacted on it: the later of
        its own and the every-channel consent event withdrew consent (unsaid, "",
        without ``say``)."""
        events = history.consent_by_hcp.get(hcp_id)
        unmatched = history.consent_unmatched_by_hcp.get(hcp_id)
        if unmatched:
            events = self._with_unmatched(events or {}, unmatched)
        if not events:
            return {}
        out = {}
        for channel in self.actions_of_channel:
            found = _latest_consent(events.get(channel), events.get(None))
            if found is not None and found[1][1]:
                name = channel if found[0] == "own" else "every channel"
                out[channel] = (
                    f"consent: opted out of {name} on {found[1][0]:%Y-%m-%d} (UTC), "
                    "until the HCP opts in again"
                    if say
                    else ""
                )
        return out

    def withdrawn_channel(self, name: str) -> str | None:
        """The channel of this catalog an opt-out stored naming ``name`` while no
        model was served withdraws (None: every channel), read as on arrival with a
        model served (:func:`~nextbest.contract.schema.withdrawn_channel`): 'e_mail'
        is email, 'fax' every channel, and a channel the catalog gains later is that
        channel from then on. An opt-in so stored grants the same channel, and
        nothing where an opt-out is read as every channel."""
        try:
            return self._withdrawn_channels[name]
        except KeyError:
            read = withdrawn_channel(name, self.actions_of_channel)
            self._withdrawn_channels[name] = read
            return read

    def _with_unmatched(
        self,
        events: Mapping[str | None, tuple[datetime, bool]],
        unmatched: Iterable[tuple[str, tuple[datetime, bool]]],
    ) -> dict[str | None, tuple[datetime, bool]]:
        """An HCP's consent events per channel with those stored with no catalog
        read as this catalog's channels (the latest per channel decides)."""
        merged = dict(events)
        for name, mark in unmatched:
            channel = self.withdrawn_channel(name)
            if channel is None and not mark[1]:
                # A channel nextbest cannot tell ('fax'): refused with a model served,
                # such an opt-in grants nothing, where such an opt-out withdraws all.
                continue
            before = merged.get(channel)
            if before is None or mark > before:
                merged[channel] = mark
        return merged

    def _channel_blocks(
        self, hcp_id: str, history: LiveHistory, *, say: bool = True
    ) -> dict[str, str]:
        """Channel ('*' = every channel) -> why it is blocked for ``hcp_id``.

        Without ``say``, the same channels with their reasons unsaid (""): what
        ``blocked`` asks for every request, where wording them (the rule's line, when
        it lifts) took most of its time."""
        rules = self.rules
        blocks: dict[str, str] = {}
        blocks.update(self._withdrawn(hcp_id, history, say=say))
        for channel, last in history.last_by_hcp.get(hcp_id, {}).items():
            rule = rules.channels.get(channel)
            if rule is None:
                continue
            why = []  # both, when both bind: the cap may outlast the cool-down
            if rule.cooldown_days is not None:
                since = history.now - last
                gap = timedelta(days=rule.cooldown_days)
                if since < gap:
                    why.append(
                        f"cool-down: last {channel} contact {_ago(since)}, minimum gap "
                        f"{rule.cooldown_days:g} days "
                        f"({rules.rule_at('channels', channel, 'cooldown_days')})"
                        f"{lifting(last + gap)}"
                        if say
                        else ""
                    )
            if rule.cap is not None and rule.cap.max_contacts > 0:  # 0: closed, said apart
                n = history.counts.get(rule.cap.per_days, {}).get((hcp_id, channel), 0)
                if n >= rule.cap.max_contacts:
                    why.append(
                        f"frequency cap: {n} {channel} {_contacts(n)} in the last "
                        f"{rule.cap.per_days:g} days, max {rule.cap.max_contacts} "
                        f"({rules.rule_at('channels', channel, 'max_contacts')})"
                        f"{_cap_lifting(history, hcp_id, channel, rule.cap)}"
                        if say
                        else ""
                    )
            if why:
                blocks[channel] = "; ".join([*why, *filter(None, [blocks.get(channel)])])
        cap = rules.all_channels
        if cap is not None and cap.max_contacts == 0:
            blocks["*"] = "; ".join(
                filter(
                    None,
                    [
                        blocks.get("*"),
                        "contact budget: every channel is closed, max_contacts 0 "
                        f"({rules.rule_at('all_channels', 'max_contacts')}){UNTIL_EDITED}"
                        if say
                        else "",
                    ],
                )
            )
        elif cap is not None:
            total = history.contacts_by_hcp.get(cap.per_days, {}).get(hcp_id, 0)
            if total >= cap.max_contacts:
                budget = (
                    f"contact budget: {total} {_contacts(total)} on all channels in the last "
                    f"{cap.per_days:g} days, max {cap.max_contacts} "
                    f"({rules.rule_at('all_channels', 'max_contacts')})"
                    f"{_cap_lifting(history, hcp_id, None, cap)}"
                    if say
                    else ""
                )
                blocks["*"] = "; ".join(filter(None, [blocks.get("*"), budget]))
        return blocks


def _repeat_days(rules: ServingRules, channel: str) -> float:
    """``channel``'s ``repeat_days`` (NaN when it sets none)."""
    rule = rules.channels.get(channel)
    return float("nan") if rule is None or rule.repeat_days is None else rule.repeat_days


def _contacts(n: int) -> str:
    """'contact' or 'contacts', as a cap's reason counts ``n`` (a cap of 1 binds at 1)."""
    return "contact" if n == 1 else "contacts"


def _latest_consent(
    own: tuple[datetime, bool] | None, every: tuple[datetime, bool] | None
) -> tuple[str, tuple[datetime, bool]] | None:
    """Which of a channel's own and the every-channel consent event decides: the
    later one, a withdrawal on a tie; None without either."""
    said = [(mark, name) for mark, name in ((own, "own"), (every, "every")) if mark is not None]
    if not said:
        return None
    mark, name = max(said)
    return name, mark


# What a rule with no end of its own says instead of a date: a cap of 0, a withdrawn
# action. Only an edit of the rules file (and a reload) lifts it.
UNTIL_EDITED = ", until the rules change"


def _cap_lifting(history: LiveHistory, hcp_id: str, channel: str | None, cap: ContactCap) -> str:
    """When a binding cap (``max_contacts`` > 0) lifts: its date, read from the
    contact times of an explanation; without them (or with fewer than it counted:
    erased since) what lifts it, in words."""
    when = history.cap_lifts(hcp_id, channel, cap)
    if when is None:
        return f", lifts as these contacts leave the {cap.per_days:g}-day window"
    return lifting(when)


def lifting(when: datetime | None) -> str:
    """``, lifts 2026-12-04 14:05 UTC``: when a rule stops excluding (none: unknown).

    Rounded up to the minute: a rule lifting at 14:04:30 still binds at 14:04, and
    the time said must be one at which the rep finds it lifted."""
    if when is None:
        return ""
    when = when.astimezone(UTC)
    whole = when.replace(second=0, microsecond=0)
    if whole < when:
        whole += timedelta(minutes=1)
    return f", lifts {whole:%Y-%m-%d %H:%M} UTC"


def _ago(since: timedelta) -> str:
    """How long ago, as a rep would say it: "40 minutes ago", "5 hours ago", "3 days ago"."""
    minutes = int(since.total_seconds() // 60)
    if minutes < 60:
        return "1 minute ago" if minutes == 1 else f"{max(minutes, 0)} minutes ago"
    hours = minutes // 60
    if hours < 24:
        return "1 hour ago" if hours == 1 else f"{hours} hours ago"
    days = hours // 24
    return "1 day ago" if days == 1 else f"{days} days ago"
