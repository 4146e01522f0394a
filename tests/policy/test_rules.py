"""History rules (caps, cool-downs, budget, dismissals) and the rules file, without a model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from nextbest.policy.rules import (
    EMPTY_FINGERPRINT,
    HistoryRules,
    LiveHistory,
    RulesError,
    ServingRules,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
CHANNELS = np.array(["email", "email", "rep_visit", "webinar"], dtype=object)
ACTIONS = np.array(["A1", "A2", "A3", "A4"], dtype=object)
RULES = ServingRules.from_mapping(
    {
        "channels": {
            "email": {"max_contacts": 2, "per_days": 28, "cooldown_days": 3},
            "rep_visit": {"cooldown_days": 7},
        },
        "all_channels": {"max_contacts": 4, "per_days": 28},
        "dismissal_days": 30,
        "max_items_per_channel": 1,
    }
)


def _rules() -> HistoryRules:
    return HistoryRules(RULES, channels=CHANNELS, action_ids=ACTIONS)


def _history(contacts: dict[tuple[str, str], list[float]], dismissed=None) -> LiveHistory:
    """``contacts``: (hcp, channel) -> days ago of each contact."""
    counts = {28.0: {key: len(days) for key, days in contacts.items()}}
    last = {key: NOW - timedelta(days=min(days)) for key, days in contacts.items()}
    return LiveHistory(now=NOW, counts=counts, last=last, dismissed=dismissed or {})


def test_the_shipped_rules_file_is_valid() -> None:
    rules = ServingRules.load(Path(__file__).parents[2] / "training" / "rules.yaml")
    assert rules.needs_contacts
    assert rules.lookbacks() == [28.0], "the shipped file keeps to one query per request"
    assert rules.max_items_per_channel == 2
    assert "not_relevant" in rules.dismiss_reasons


def test_the_docs_cite_each_rule_at_the_line_of_the_shipped_file() -> None:
    """The README and docs quote answers served under training/rules.yaml (`minimum
    gap 3 days (channels.email.cooldown_days, rules.yaml line 20)`): each line they
    cite is the one serving names. A line added above them once left every example
    a line short."""
    import re

    root = Path(__file__).parents[2]
    shipped = ServingRules.load(root / "training" / "rules.yaml")
    cited = [
        (doc.name, key, int(line))
        for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
        for key, line in re.findall(
            r"([a-z_.]+), rules\.yaml line (\d+)\)", doc.read_text(encoding="utf-8")
        )
    ]
    assert len(cited) >= 5, cited
    wrong = [
        (doc, key, line)
        for doc, key, line in cited
        if shipped.rule_at(*key.split(".")) != f"{key}, rules.yaml line {line}"
    ]
    assert not wrong, [(doc, shipped.rule_at(*key.split("."))) for doc, key, _ in wrong]


def test_the_rules_fingerprint_is_the_files_sha256_prefix(tmp_path: Path) -> None:
    import hashlib

    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    text = shipped.read_bytes()
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_bytes(text)
    two.write_bytes(text)
    rules = ServingRules.load(one)
    # What `sha256sum rules.yaml | cut -c1-12` prints, and the same for equal files.
    assert rules.fingerprint == hashlib.sha256(text).hexdigest()[:12]
    assert ServingRules.load(two).fingerprint == rules.fingerprint
    assert ServingRules.load(shipped) == ServingRules.load(shipped)
    # Any edit is another fingerprint, and other rules (a reload applies them), a
    # comment included: the log names the file's exact bytes.
    one.write_bytes(text.replace(b"withdrawn_actions: []", b"withdrawn_actions: [A027]"))
    edited = ServingRules.load(one)
    assert edited.fingerprint != rules.fingerprint and edited.withdrawn_actions == ("A027",)
    two.write_bytes(text + b"# reviewed\n")
    commented = ServingRules.load(two)
    assert commented.fingerprint not in (rules.fingerprint, edited.fingerprint)
    assert commented != rules
    # No rules, however said (an empty file, a missing one, the built-in defaults),
    # is the fingerprint of no bytes: sha256sum of an empty file.
    empty = tmp_path / "empty.yaml"
    empty.write_bytes(b"")
    assert EMPTY_FINGERPRINT == "e3b0c44298fc"
    assert ServingRules.load(empty).fingerprint == EMPTY_FINGERPRINT
    assert ServingRules.load(tmp_path / "missing.yaml").fingerprint == EMPTY_FINGERPRINT
    assert ServingRules().fingerprint == EMPTY_FINGERPRINT
    assert ServingRules.from_mapping({}).fingerprint == EMPTY_FINGERPRINT
    # Rules built in code have one too, as stable, and told apart by their content.
    given = ServingRules.from_mapping({"withdrawn_actions": ["A027"]})
    again = ServingRules.from_mapping({"withdrawn_actions": ["A027"]})
    assert given.fingerprint == again.fingerprint
    assert given.fingerprint not in (
        EMPTY_FINGERPRINT,
        ServingRules.from_mapping({"withdrawn_actions": ["A031"]}).fingerprint,
    )


def test_a_rules_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"withdrawn_actions: [\xff]\n")
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    # As the training config, levers and gate config say it (tests/test_yamlfile.py).
    assert str(refused.value) == (
        f"{path}: not UTF-8 text (byte 0xff at offset 20): save it as UTF-8"
    )


def test_a_rules_file_over_256_kib_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "hcps.csv"
    # Valid YAML (a comment line after line): only its size tells it from rules.
    path.write_text("# hcp_id,specialty,region\n" * 11_000)
    size = path.stat().st_size
    assert size > 256 * 1024
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == (
        f"{path}: {size:,} bytes, more than the 256 KiB a rules file may have: is it the "
        "rules file? (NEXTBEST_RULES_FILE names it; training/rules.yaml documents every key)"
    )
    path.write_text("dismissal_days: 30\n" + "#" * (256 * 1024 - 20) + "\n")
    assert path.stat().st_size == 256 * 1024
    assert ServingRules.load(path).dismissal_days == 30


def test_a_rules_path_that_cannot_be_read_is_a_rules_error(tmp_path: Path) -> None:
    """A directory (or a file without read permission) is refused as the rules file's
    error, which serving reports and retries, not an OSError that stops a worker."""
    path = tmp_path / "rules.yaml"
    path.mkdir()
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == f"{path} cannot be read: Is a directory"


def test_no_history_blocks_nothing() -> None:
    blocked = _rules().blocked(["H1"], LiveHistory(now=NOW))
    assert blocked.shape == (1, 4)
    assert not blocked.any()


def test_cooldown_blocks_only_that_channel_and_that_hcp() -> None:
    history = _history({("H1", "email"): [1.0]})
    blocked = _rules().blocked(["H1", "H2"], history)
    assert blocked[0].tolist() == [True, True, False, False]
    assert not blocked[1].any()
    why = _rules().reasons("H1", history)
    assert why[0][0] == (
        "cool-down: last email contact 1 day ago, minimum gap 3 days "
        "(channels.email.cooldown_days), lifts 2026-12-03 12:00 UTC"
    )
    assert why[2] == []


@pytest.mark.parametrize(
    ("days", "said"),
    [
        (0.0, "0 minutes ago"),
        (1 / 1440, "1 minute ago"),
        (0.5 / 24, "30 minutes ago"),
        (1 / 24, "1 hour ago"),
        (23.9 / 24, "23 hours ago"),
        (1.0, "1 day ago"),
        (2.9, "2 days ago"),  # rounded down: "2 days" stays true
    ],
)
def test_a_cooldown_says_how_long_ago_in_words(days: float, said: str) -> None:
    why = _rules().reasons("H1", _history({("H1", "email"): [days]}))
    assert why[0][0].startswith(
        f"cool-down: last email contact {said}, minimum gap 3 days "
        "(channels.email.cooldown_days), lifts "
    )


def test_a_cooldown_and_a_cap_binding_together_are_both_said() -> None:
    # The cap outlasts the cool-down: the rep must not read "allowed again tomorrow".
    why = _rules().reasons("H1", _history({("H1", "email"): [1.0, 6.0]}))
    assert why[0][0] == (
        "cool-down: last email contact 1 day ago, minimum gap 3 days "
        "(channels.email.cooldown_days), lifts 2026-12-03 12:00 UTC; "
        "frequency cap: 2 email contacts in the last 28 days, max 2 "
        "(channels.email.max_contacts), lifts as these contacts leave the 28-day window"
    )


EXPLAINED_RULES = """\
channels:
  email:
    max_contacts: 2
    per_days: 28
    cooldown_days: 3
all_channels:
  max_contacts: 4
  per_days: 28
dismissal_days: 30
snooze_days: 7
withdrawn_actions: [A4]
"""


def test_each_reason_names_its_rule_the_line_and_when_it_lifts(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(EXPLAINED_RULES)
    rules = HistoryRules(ServingRules.load(path), channels=CHANNELS, action_ids=ACTIONS)
    days = timedelta(days=1)
    # Three e-mails (one over the cap: sent by another system), the 2nd newest 5 days
    # ago: the cap lifts when it leaves the 28-day window. A rep visit without a
    # channel cap counts in the budget too, which then holds 4.
    emails = (NOW - 1 * days, NOW - 5 * days, NOW - 9 * days)
    history = LiveHistory(
        now=NOW,
        counts={28.0: {("H1", "email"): 3, ("H1", "rep_visit"): 1}},
        last={("H1", "email"): emails[0], ("H1", "rep_visit"): NOW - 2 * days},
        dismissed={("H1", "A3"): "not_relevant"},
        dismissed_at={("H1", "A3"): NOW - 10 * days},
        contact_times={("H1", "email"): emails, ("H1", "rep_visit"): (NOW - 2 * days,)},
    )
    why = rules.reasons("H1", history)
    assert why[0] == [
        "cool-down: last email contact 1 day ago, minimum gap 3 days "
        "(channels.email.cooldown_days, rules.yaml line 5), lifts 2026-12-03 12:00 UTC; "
        "frequency cap: 3 email contacts in the last 28 days, max 2 "
        "(channels.email.max_contacts, rules.yaml line 3), lifts 2026-12-24 12:00 UTC",
        # The 4th newest contact of all, 9 days ago, leaves the budget's window.
        "contact budget: 4 contacts on all channels in the last 28 days, max 4 "
        "(all_channels.max_contacts, rules.yaml line 7), lifts 2026-12-20 12:00 UTC",
    ]
    assert why[2][-1] == (
        "dismissed (not_relevant) in the last 30 days (dismissal_days, rules.yaml line 9), "
        "lifts 2026-12-21 12:00 UTC"
    )
    assert rules.ruled_out_why[3] == [
        "withdrawn by the serving rules (withdrawn_actions, rules.yaml line 11), "
        "until the rules change"
    ]
    # Without the contact times (serving reads counts only), a cap's date is not
    # guessed: it says what lifts it.
    counted = LiveHistory(now=NOW, counts=history.counts, last=history.last)
    assert rules.reasons("H1", counted)[0][0].endswith(
        "max 2 (channels.email.max_contacts, rules.yaml line 3), "
        "lifts as these contacts leave the 28-day window"
    )


def test_blocked_decides_as_the_reasons_do_without_wording_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving asks only which actions are blocked: every rule (cool-down, cap,
    budget, consent, dismissal) decides as its reason would, but no sentence is
    composed (wording names the rule's line and when it lifts, most of the time
    ``blocked`` took)."""
    path = tmp_path / "rules.yaml"
    path.write_text(EXPLAINED_RULES)
    rules = HistoryRules(ServingRules.load(path), channels=CHANNELS, action_ids=ACTIONS)
    days = timedelta(days=1)
    hcps = ["cooled", "capped", "budget", "opted", "dismissed", "free"]
    history = LiveHistory(
        now=NOW,
        counts={
            28.0: {
                ("cooled", "email"): 1,
                ("capped", "email"): 2,
                ("budget", "rep_visit"): 3,
                ("budget", "webinar"): 1,
                ("free", "email"): 1,
            }
        },
        last={
            ("cooled", "email"): NOW - 1 * days,
            ("capped", "email"): NOW - 5 * days,
            ("budget", "rep_visit"): NOW - 2 * days,
            ("budget", "webinar"): NOW - 4 * days,
            ("free", "email"): NOW - 6 * days,
        },
        consent={("opted", "rep_visit"): (NOW - days, True)},
        dismissed={("dismissed", "A2"): "not_relevant"},
        dismissed_at={("dismissed", "A2"): NOW - 2 * days},
    )
    said = [[bool(why) for why in rules.reasons(hcp, history)] for hcp in hcps]

    def worded(*_: object) -> str:
        raise AssertionError("blocked composed a reason")

    monkeypatch.setattr(ServingRules, "rule_at", worded)
    monkeypatch.setattr("nextbest.policy.rules.lifting", worded)
    monkeypatch.setattr("nextbest.policy.rules._ago", worded)
    blocked = rules.blocked(hcps, history)
    assert blocked.tolist() == said
    assert said == [
        [True, True, False, False],
        [True, True, False, False],
        [True, True, True, True],
        [False, False, True, False],
        [False, True, False, False],
        [False, False, False, False],
    ]


def test_content_sent_within_repeat_days_is_not_offered_to_that_hcp_again(
    tmp_path: Path,
) -> None:
    """channels.<ch>.repeat_days: an action of the channel contacted to an HCP is not
    offered to that HCP again for its days, whatever else was sent since; the HCP's
    other content, other HCPs and channels without the rule are not held back."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "channels:\n  email:\n    cooldown_days: 3\n    repeat_days: 30\n"
        "  rep_visit:\n    cooldown_days: 7\n"
    )
    loaded = ServingRules.load(path)
    rules = HistoryRules(loaded, channels=CHANNELS, action_ids=ACTIONS)
    day = timedelta(days=1)
    history = LiveHistory(
        now=NOW,
        last={("H1", "email"): NOW - 10 * day, ("H1", "rep_visit"): NOW - 20 * day},
        sent={
            ("H1", "A1"): NOW - 10 * day,  # within 30 days: held back
            ("H2", "A2"): NOW - 30 * day,  # 30 days ago to the second: lifted
            ("H1", "A3"): NOW - 20 * day,  # a visit: rep_visit sets no repeat_days
            ("H1", "A9"): NOW - 1 * day,  # not in this catalog
        },
    )
    assert rules.blocked(["H1", "H2"], history).tolist() == [
        [True, False, False, False],
        [False, False, False, False],
    ]
    assert rules.reasons("H1", history) == [
        [
            "repeat: this email content reached the HCP 10 days ago, not repeated within "
            "30 days (channels.email.repeat_days, rules.yaml line 4), lifts 2026-12-21 12:00 UTC"
        ],
        [],
        [],
        [],
    ]
    # Read back as far as the longest repeat_days, which alone makes serving read history.
    assert (loaded.repeat_window, loaded.history_reach()) == (
        30.0,
        (30.0, "channels.email.repeat_days"),
    )
    alone = ServingRules.from_mapping({"channels": {"email": {"repeat_days": 14}}})
    assert alone.reads_history and not alone.needs_contacts and alone.repeat_window == 14.0
    with pytest.raises(RulesError, match=r"channels\.email\.repeat_days"):
        ServingRules.from_mapping({"channels": {"email": {"repeat_days": 0}}})


def test_cooldown_over_lets_the_channel_back() -> None:
    blocked = _rules().blocked(["H1"], _history({("H1", "email"): [3.5]}))
    assert not blocked.any()


def test_frequency_cap_counts_contacts_in_the_window() -> None:
    history = _history({("H1", "email"): [5.0, 10.0]})
    assert _rules().blocked(["H1"], history)[0].tolist() == [True, True, False, False]
    assert "frequency cap: 2 email contacts" in _rules().reasons("H1", history)[1][0]
    one = _history({("H1", "email"): [5.0]})
    assert not _rules().blocked(["H1"], one).any()


def test_rep_visit_cooldown_without_a_cap() -> None:
    history = _history({("H1", "rep_visit"): [2.0]})
    assert _rules().blocked(["H1"], history)[0].tolist() == [False, False, True, False]


def test_one_contact_budget_across_channels() -> None:
    # 4 contacts on channels that have no cap of their own still exhaust the budget.
    history = _history({("H1", "webinar"): [10.0, 12.0], ("H1", "phone"): [9.0, 20.0]})
    blocked = _rules().blocked(["H1", "H2"], history)
    assert blocked[0].all()
    assert not blocked[1].any()
    assert "contact budget: 4 contacts" in _rules().reasons("H1", history)[3][0]


def test_dismissed_action_is_suppressed_for_that_hcp_only() -> None:
    history = _history({}, dismissed={("H1", "A3"): "not_relevant"})
    blocked = _rules().blocked(["H1", "H2"], history)
    assert blocked.tolist() == [[False, False, True, False], [False] * 4]
    assert "not_relevant" in _rules().reasons("H1", history)[2][0]


def test_lookbacks_cover_longer_cooldowns() -> None:
    rules = ServingRules.from_mapping(
        {"channels": {"email": {"max_contacts": 1, "per_days": 7, "cooldown_days": 40}}}
    )
    assert rules.lookbacks() == [40.0, 7.0]
    assert not ServingRules().needs_contacts


@pytest.mark.parametrize(
    ("data", "reach"),
    [
        pytest.param({}, None, id="no-rules"),
        pytest.param({"max_items_per_channel": 2}, None, id="no-history-rule"),
        pytest.param(
            {"channels": {"email": {"cooldown_days": 40, "max_contacts": 1, "per_days": 7}}},
            (40.0, "channels.email.cooldown_days"),
            id="cooldown",
        ),
        pytest.param(
            {"all_channels": {"max_contacts": 8, "per_days": 60}, "dismissal_days": 30},
            (60.0, "all_channels.per_days"),
            id="budget",
        ),
        pytest.param({"snooze_days": 45, "dismissal_days": 30}, (45.0, "snooze_days"), id="snooze"),
        pytest.param(
            {"channels": {"email": {"max_contacts": 3, "per_days": 30}}, "dismissal_days": 30},
            (30.0, "channels.email.per_days"),
            id="tie-first-written",
        ),
    ],
)
def test_history_reach_names_the_rule_that_reads_furthest_back(
    data: dict[str, object], reach: tuple[float, str] | None
) -> None:
    assert ServingRules.from_mapping(data).history_reach() == reach
    assert RULES.history_reach() == (30.0, "dismissal_days")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(
            [], "rules.yaml: expected a mapping of settings at the top", id="not-a-mapping"
        ),
        pytest.param(
            {"colour": 1},
            r"unknown field 'colour' \(allowed here: all_channels, channels, ",
            id="unknown-top",
        ),
        pytest.param({"channels": {"email": {"max_contacts": 2}}}, "channels.email", id="no-days"),
        pytest.param(
            {"channels": {"email": {"max_contacts": -1, "per_days": 7}}},
            r"email.max_contacts: must be an integer >= 0",
            id="negative-cap",
        ),
        pytest.param(
            {"channels": {"email": {"cooldown_days": "soon"}}},
            "email.cooldown_days: must be a number of days",
            id="bad-cooldown",
        ),
        pytest.param(
            {"channels": {"email": {"per_week": 2}}},
            r"email: unknown field 'per_week' \(allowed here: max_contacts, per_days, "
            r"cooldown_days, repeat_days, consent_required\)$",
            id="typo",
        ),
        pytest.param(
            {"rep_plan": {"capacity": 2}},
            # The last word of default_capacity and max_capacity alike: neither guessed.
            r"rep_plan: unknown field 'capacity' \(allowed here: default_capacity, "
            r"max_capacity, dismiss_reasons, hcp_wide_reasons\)$",
            id="rep-plan-typo",
        ),
        # A gap between any two contacts is not a rule: refused, not read and ignored.
        pytest.param(
            {"all_channels": {"max_contacts": 8, "per_days": 28, "cooldown_days": 2}},
            r"all_channels\.cooldown_days: a cool-down is set per channel",
            id="all-channels-cooldown",
        ),
        pytest.param(
            {"all_channels": {"max_contacts": 8, "per_days": 28, "gap": 2}},
            r"all_channels: unknown field 'gap' \(allowed here: max_contacts, per_days\)$",
            id="all-channels-typo",
        ),
        pytest.param({"max_items_per_channel": 0}, "max_items_per_channel", id="zero-items"),
        pytest.param(
            {"channels": {"Email": {"cooldown_days": 1}, "email": {"cooldown_days": 2}}},
            r"rules\.yaml: channels\.email: names channel 'email' a second time \(first: "
            r"channels\.Email\): keep one of them$",
            id="one-channel-twice",
        ),
        pytest.param(
            {"rep_plan": {"default_capacity": 40, "max_capacity": 10}},
            "exceeds max_capacity",
            id="capacity",
        ),
        pytest.param({"rep_plan": {"dismiss_reasons": []}}, "dismiss_reasons", id="no-reasons"),
        pytest.param({"dismissal_days": 0}, "dismissal_days", id="zero-dismissal"),
        # Windows past a century are a typo; far past it, now minus the window left
        # the calendar (OverflowError while serving).
        pytest.param(
            {"channels": {"email": {"max_contacts": 2, "per_days": 1_000_000}}},
            r"channels\.email\.per_days: must be at most 36500 days, 100 years \(read 1000000, "
            r"a whole number\)$",
            id="cap-window-past-the-calendar",
        ),
        pytest.param(
            {"channels": {"email": {"cooldown_days": float("inf")}}},
            r"email\.cooldown_days: must be at most 36500 days, 100 years \(read \.inf, a decimal",
            id="infinite-cooldown",
        ),
        pytest.param(
            {"snooze_days": 100_000}, r"snooze_days: must be at most 36500 days", id="long-snooze"
        ),
        pytest.param(
            {"all_channels": {"max_contacts": 8, "per_days": 36_501}},
            r"all_channels\.per_days: must be at most 36500 days",
            id="budget-window",
        ),
        pytest.param(
            {"snooze_days": "a week"}, "snooze_days: must be a number of days", id="bad-snooze"
        ),
        pytest.param(
            {"withdrawn_actions": "A027"}, "withdrawn_actions must be a list", id="not-a-list"
        ),
        # YAML reads `[031]` as [25]: refused, naming the item, not taken as 'A025' or '25'.
        pytest.param(
            {"withdrawn_actions": ["A027", 25]},
            r"withdrawn_actions\[1\]: 25 is not an action_id as text.*\('031'\)",
            id="withdrawn-number",
        ),
    ],
)
def test_bad_rules_name_the_field(data: object, match: str) -> None:
    with pytest.raises(RulesError, match=match):
        ServingRules.from_mapping(data, source="rules.yaml")


# email and rep_visit take the same keys: a key path alone would leave the reader looking.
RULES_YAML = """\
channels:
  email:
    max_contacts: 2
    per_days: 28
  rep_visit:
{rep_visit}
dismissal_days: 30
"""


@pytest.mark.parametrize(
    ("rep_visit", "said"),
    [
        pytest.param(
            "    max_contacts: -1\n    per_days: 28",
            "line 6: channels.rep_visit.max_contacts: must be an integer >= 0 (read -1, a whole "
            "number)",
            id="bad-value",
        ),
        pytest.param(
            "    cooldown_days: 7\n    per_week: 2",
            "line 7: channels.rep_visit: unknown field 'per_week' (allowed here: "
            "max_contacts, per_days, cooldown_days, repeat_days, consent_required)",
            id="unknown-key-at-its-own-line",
        ),
        pytest.param(
            "    cooldown_days: 7\n    max_contacts: 4",
            "line 5: channels.rep_visit: a cap needs both max_contacts and per_days",
            id="missing-key-at-its-section",
        ),
    ],
)
def test_rules_file_errors_name_the_line(tmp_path: Path, rep_visit: str, said: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML.format(rep_visit=rep_visit))
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == f"{path}, {said}"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        pytest.param("dismissal_days: 30\nsnooze: 7\n", "line 2: unknown field 'snooze'", id="top"),
        pytest.param(
            "withdrawn_actions:\n  - A027\n  - 031\n",
            "line 3: withdrawn_actions[1]: 25 is not an action_id",
            id="list-item",
        ),
        pytest.param(
            "rep_plan:\n  default_capacity: 40\n  max_capacity: 10\n",
            "line 2: rep_plan.default_capacity (40) exceeds max_capacity (10)",
            id="two-values",
        ),
        pytest.param("channels: [email]\n", "line 1: 'channels' must be a mapping", id="shape"),
    ],
)
def test_other_rules_file_errors_name_the_line(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value).startswith(f"{path}, {said}")


def test_a_century_long_window_is_read_back_a_century(tmp_path: Path) -> None:
    from nextbest.service.serving import _lookbacks

    path = tmp_path / "rules.yaml"
    path.write_text("channels:\n  email:\n    max_contacts: 2\n    per_days: 36500\n")
    rules = ServingRules.load(path)
    windows, starts, _, _ = _lookbacks(rules, NOW)
    assert windows == (36500.0,) and starts == [NOW - timedelta(days=36500)]
    path.write_text("dismissal_days: 30\nsnooze_days: 1000000\n")
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == (
        f"{path}, line 2: snooze_days: must be at most 36500 days, 100 years (read 1000000, "
        "a whole number)"
    )


SAVED = "channels:\n  email:\n    max_contacts: 2\n    per_days: 28\n"


@pytest.mark.parametrize(
    "caught",
    [
        pytest.param("", id="truncated-to-nothing"),
        pytest.param(SAVED[:30], id="cut-mid-key"),  # 'a cap needs both ...'
        pytest.param("channels:\n  email:\n    max_contacts: 2\n    per_da", id="cut-mid-yaml"),
    ],
)
def test_a_rules_file_caught_mid_save_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caught: str
) -> None:
    import nextbest.policy.rules as rules_module

    path = tmp_path / "rules.yaml"
    path.write_text(caught)
    pauses: list[str] = []

    def save_finishes() -> None:  # the editor's write lands during the pause
        pauses.append(path.read_text())
        path.write_text(SAVED)

    monkeypatch.setattr(rules_module, "_settle", save_finishes)
    rules = ServingRules.load(path)
    assert pauses == [caught]
    assert rules.channels["email"].cap is not None and rules.text == SAVED
    # Read whole at once: no pause.
    assert ServingRules.load(path).channels == rules.channels and len(pauses) == 1


def test_a_rules_file_invalid_or_empty_twice_is_refused_or_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nextbest.policy.rules as rules_module

    pauses: list[int] = []
    monkeypatch.setattr(rules_module, "_settle", lambda: pauses.append(1))
    path = tmp_path / "rules.yaml"
    path.write_text("dismissal_days: 0\n")
    with pytest.raises(RulesError, match="line 1: dismissal_days: must be a number of days > 0"):
        ServingRules.load(path)
    path.write_text("")
    assert ServingRules.load(path).fingerprint == EMPTY_FINGERPRINT
    assert len(pauses) == 2


def test_channels_are_spelled_as_the_catalog_spells_them() -> None:
    # As levers and catalogs read them: 'Email' or 'Rep Visit' was a rule for nothing.
    rules = ServingRules.from_mapping(
        {
            "channels": {
                "Email": {"max_contacts": 1, "per_days": 7},
                "Rep Visit": {"cooldown_days": 3},
            }
        }
    )
    assert set(rules.channels) == {"email", "rep_visit"}
    assert rules.unmatched_channels(["email", "rep_visit"]) == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        pytest.param(
            "channels: [unclosed",
            "line 1, column 20: not valid YAML: expected ',' or ']', but got '<stream end>'; "
            "while parsing a flow sequence",
            id="unclosed",
        ),
        pytest.param(
            "channels:\n  email:\n\tmax_contacts: 2\n",
            "line 3, column 1: not valid YAML: found character '\\t' that cannot start any "
            "token (YAML indents with spaces, not tabs); while scanning for the next token",
            id="tab",
        ),
        pytest.param(
            "channels:\n  email:\n    max_contacts: 2\n   per_days: 28\n",
            "line 4, column 4: not valid YAML: expected <block end>, but found "
            "'<block mapping start>' (is this line indented as the others of its section?); "
            "while parsing a block mapping",
            id="indentation",
        ),
        pytest.param(
            "dismissal_days: 30\nchannels:\n  email:\n    cooldown_days: 3\n    cooldown_days: 5\n",
            "line 5, column 5: not valid YAML: found the key 'cooldown_days' a second time "
            "(first on line 4); while reading a mapping",
            id="duplicate-key",
        ),
    ],
)
def test_bad_yaml_names_the_file_and_line(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == f"{path}, {said}"


def test_rules_shared_through_a_merge_key_apply_to_each_channel(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "all_channels: &budget\n  max_contacts: 8\n  per_days: 28\n"
        "channels:\n"
        "  email:\n    <<: *budget\n    max_contacts: 3\n    cooldown_days: 3\n"
        "  webinar:\n    <<: *budget\n    cooldown_days: 7\n"
        "  sms:\n    <<: *budget\n    max_contacts: -1\n"
    )
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == (
        f"{path}, line 14: channels.sms.max_contacts: must be an integer >= 0 (read -1, a "
        "whole number)"
    )
    path.write_text(path.read_text().replace("max_contacts: -1", "consent_required: true"))
    rules = ServingRules.load(path)
    assert rules.all_channels is not None and rules.all_channels.max_contacts == 8
    email, webinar, sms = (rules.channels[c] for c in ("email", "webinar", "sms"))
    assert email.cap is not None and (email.cap.max_contacts, email.cap.per_days) == (3, 28)
    assert email.cooldown_days == 3
    assert webinar.cap is not None and webinar.cap.max_contacts == 8
    assert webinar.cooldown_days == 7 and sms.consent_required


def test_a_missing_rules_file_loads_as_no_rules(tmp_path: Path) -> None:
    missing = ServingRules.load(tmp_path / "none.yaml")
    assert "missing" in missing.source and not missing.needs_contacts


def test_the_rules_file_must_exist_named_or_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from nextbest.settings import Settings

    with pytest.raises(RulesError, match=r"NEXTBEST_RULES_FILE names .*missing\.yaml"):
        ServingRules.configured(Settings(rules_file=tmp_path / "missing.yaml"))
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    assert ServingRules.configured(Settings(rules_file=shipped)).needs_contacts
    assert not caplog.records
    # The default file is relative to the working directory: started elsewhere, the
    # service stops, naming the directory and the variable, instead of serving
    # every HCP without caps.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RulesError) as refused:
        ServingRules.configured(Settings(rules_file=None))
    said = str(refused.value)
    assert str(tmp_path) in said and "NEXTBEST_RULES_FILE" in said
    # Serving without history rules is possible, but only by saying so.
    empty = tmp_path / "no-rules.yaml"
    empty.write_text("")
    assert not ServingRules.configured(Settings(rules_file=empty)).needs_contacts


def test_rules_for_a_channel_the_catalog_lacks_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rules = ServingRules.from_mapping(
        {"channels": {"emial": {"cooldown_days": 3}, "email": {"cooldown_days": 3}}},
        source="rules.yaml",
    )
    assert rules.unmatched_channels(["email", "webinar"]) == ["emial"]
    assert RULES.unmatched_channels(CHANNELS) == []
    with caplog.at_level("WARNING", logger="nextbest.policy.rules"):
        history_rules = HistoryRules(rules, channels=CHANNELS, action_ids=ACTIONS)
    unmatched, unruled = (record.getMessage() for record in caplog.records)
    assert "rules.yaml: rules for channel(s) ['emial'] apply to nothing" in unmatched
    # Both are said in a reload's answer too (rules_notes), not only in the log.
    assert [f"rules.yaml: {note}" for note in history_rules.notes] == [unmatched, unruled]
    # A misspelling of a channel the rules leave uncapped names that channel.
    with caplog.at_level("WARNING", logger="nextbest.policy.rules"):
        typo = HistoryRules(
            ServingRules.from_mapping(
                {"channels": {"webinr": {"cooldown_days": 3}, "email": {"cooldown_days": 3}}},
                source="rules.yaml",
            ),
            channels=CHANNELS,
            action_ids=ACTIONS,
        )
    assert "(did you mean 'webinar' for 'webinr'?)" in typo.notes[0]
    # None when the rules name no near channel ("emial": email has rules of its own).
    assert "did you mean" not in history_rules.notes[0]
    caplog.clear()
    # And the converse: catalog channels the rules never name have no cap of their own.
    assert unruled == (
        "rules.yaml: no rules for channel(s) ['rep_visit', 'webinar'] of the catalog: "
        "nothing caps them"
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="nextbest.policy.rules"):
        _rules()
    assert [record.getMessage() for record in caplog.records] == [
        "<mapping>: no rules for channel(s) ['webinar'] of the catalog: only the "
        "all_channels budget caps them"
    ]


def test_strict_rules_that_do_not_fit_the_catalog_fail_instead_of_being_noted() -> None:
    """A misspelt channel leaves the one meant uncapped: a compliance team that must
    not serve with that asks for `strict: true`, and the load fails, naming it."""
    fitting = {c: {"cooldown_days": 3} for c in ("email", "rep_visit", "webinar")}
    HistoryRules(  # every channel ruled, none unknown: strict or not, it loads
        ServingRules.from_mapping({"strict": True, "channels": fitting}),
        channels=CHANNELS,
        action_ids=ACTIONS,
    )
    misspelt = {("emial" if c == "email" else c): rule for c, rule in fitting.items()}
    lax = ServingRules.from_mapping({"channels": misspelt}, source="rules.yaml")
    assert HistoryRules(lax, channels=CHANNELS, action_ids=ACTIONS).notes  # noted only
    strict = ServingRules.from_mapping({"strict": True, "channels": misspelt}, source="rules.yaml")
    with pytest.raises(RulesError) as refused:
        HistoryRules(strict, channels=CHANNELS, action_ids=ACTIONS)
    said = str(refused.value)
    assert said.startswith("rules.yaml: strict: true, and the rules do not fit"), said
    assert "rules for channel(s) ['emial'] apply to nothing" in said
    assert "did you mean 'email' for 'emial'?" in said
    with pytest.raises(RulesError, match=r"strict: must be true or false \(read 'yes', text\)$"):
        ServingRules.from_mapping({"strict": "yes"}, source="rules.yaml")


def test_rules_without_a_channels_section_say_every_catalog_channel_is_uncapped(
    tmp_path: Path,
) -> None:
    """A file whose channels section was deleted caps no channel of its own: said as
    for one channel the rules never name, and refused under `strict: true`, not taken
    as a fit. A file setting no rule at all (empty, comments) still says nothing."""
    budget_only = {"all_channels": {"max_contacts": 8, "per_days": 28}, "dismissal_days": 30}
    lax = HistoryRules(
        ServingRules.from_mapping(budget_only, source="rules.yaml"),
        channels=CHANNELS,
        action_ids=ACTIONS,
    )
    assert lax.notes == [
        "no rules for channel(s) ['email', 'rep_visit', 'webinar'] of the catalog: only "
        "the all_channels budget caps them"
    ]
    strict = ServingRules.from_mapping({"strict": True, **budget_only}, source="rules.yaml")
    with pytest.raises(RulesError, match=r"^rules.yaml: strict: true, .*no rules for channel"):
        HistoryRules(strict, channels=CHANNELS, action_ids=ACTIONS)
    with pytest.raises(RulesError, match="nothing caps them"):
        HistoryRules(
            ServingRules.from_mapping({"strict": True}), channels=CHANNELS, action_ids=ACTIONS
        )
    dismissals_only = ServingRules.from_mapping({"dismissal_days": 30})
    assert (
        "nothing caps them"
        in HistoryRules(dismissals_only, channels=CHANNELS, action_ids=ACTIONS).notes[0]
    )
    comments = tmp_path / "rules.yaml"
    comments.write_text("# no history rules\n")
    for nothing in (ServingRules(), ServingRules.from_mapping({}), ServingRules.load(comments)):
        assert nothing.sets_nothing
        assert not HistoryRules(nothing, channels=CHANNELS, action_ids=ACTIONS).notes


def test_a_snooze_lasts_as_long_as_a_dismissal_unless_configured() -> None:
    assert RULES.snooze_window == 30 and RULES.suppresses
    short = ServingRules.from_mapping({"dismissal_days": 30, "snooze_days": 7})
    assert (short.dismissal_days, short.snooze_window) == (30, 7)
    assert ServingRules.from_mapping({"snooze_days": 7}).suppresses
    assert not ServingRules.from_mapping({}).suppresses
    shipped = ServingRules.load(Path(__file__).parents[2] / "training" / "rules.yaml")
    assert (shipped.dismissal_days, shipped.snooze_window) == (30, 7)


def test_a_cap_of_zero_closes_a_channel_to_every_hcp_contacted_or_not() -> None:
    closed = HistoryRules(
        ServingRules.from_mapping({"channels": {"email": {"max_contacts": 0, "per_days": 28}}}),
        channels=CHANNELS,
        action_ids=ACTIONS,
    )
    never = LiveHistory(now=NOW)  # no contact at all
    contacted = _history({("H1", "email"): [2.0]})
    for history in (never, contacted):
        assert closed.blocked(["H1", "H2"], history).tolist() == [[True, True, False, False]] * 2
    # No contact leaving a window reopens it: it says what does.
    assert closed.reasons("H2", never)[0] == [
        "frequency cap: email is closed, max_contacts 0 (channels.email.max_contacts), "
        "until the rules change"
    ]
    assert closed.reasons("H2", never)[2] == []
    # A contacted HCP is told the same, once: no count and no lift date of its contacts.
    assert closed.reasons("H1", contacted)[0] == closed.reasons("H2", never)[0]
    everything = HistoryRules(
        ServingRules.from_mapping({"all_channels": {"max_contacts": 0, "per_days": 7}}),
        channels=CHANNELS,
        action_ids=ACTIONS,
    )
    assert everything.blocked(["H2"], never).all()
    (said,) = everything.reasons("H2", never)[3]
    assert said == (
        "contact budget: every channel is closed, max_contacts 0 "
        "(all_channels.max_contacts), until the rules change"
    )
    assert everything.reasons("H1", contacted)[3] == [said]
    # Without a zero cap nothing is closed in advance.
    assert not _rules().blocked(["H2"], never).any()


def test_a_closed_channel_is_said_closed_while_a_budget_that_lifts_binds_too() -> None:
    """The budget lifts on a date, the closed channel does not: a rep reading only the
    budget's date would expect e-mail back then."""
    rules = HistoryRules(
        ServingRules.from_mapping(
            {
                "channels": {"email": {"max_contacts": 0, "per_days": 28}},
                "all_channels": {"max_contacts": 1, "per_days": 28},
            }
        ),
        channels=CHANNELS,
        action_ids=ACTIONS,
    )
    history = _history({("H1", "webinar"): [2.0]})
    said = rules.reasons("H1", history)
    assert said[0][0] == (
        "frequency cap: email is closed, max_contacts 0 (channels.email.max_contacts), "
        "until the rules change"
    )
    assert said[0][1].startswith("contact budget: 1 contact on all channels")
    assert said[3] == [said[0][1]]


def test_every_rule_without_a_date_says_what_lifts_it(tmp_path: Path) -> None:
    """Each reason a rule gives says when it lifts, or in words what lifts it."""
    path = tmp_path / "rules.yaml"
    path.write_text("channels:\n  sms: {consent_required: true}\nwithdrawn_actions: [A4]\n")
    rules = HistoryRules(
        ServingRules.load(path),
        channels=np.array([*CHANNELS, "sms"], dtype=object),
        action_ids=np.array([*ACTIONS, "A5"], dtype=object),
    )
    assert rules.ruled_out_why[3] == [
        "withdrawn by the serving rules (withdrawn_actions, rules.yaml line 3), "
        "until the rules change"
    ]
    assert rules.ruled_out_why[4] == [
        "consent: sms needs consent on file (consent_required) and the hcps file has no "
        "consent_sms column, until a model trained with that column is served"
    ]
    opted = LiveHistory(
        now=NOW,
        consent={
            ("H1", "email"): (NOW - timedelta(days=3), True),
            ("H2", None): (NOW - timedelta(days=1), True),
        },
    )
    assert rules.reasons("H1", opted)[0] == [
        "consent: opted out of email on 2026-11-28 (UTC), until the HCP opts in again"
    ]
    assert rules.reasons("H2", opted)[2] == [
        "consent: opted out of every channel on 2026-11-30 (UTC), until the HCP opts in again"
    ]


HCP_WIDE_YAML = """\
dismissal_days: 30
snooze_days: 7
rep_plan:
  dismiss_reasons: [not_relevant, hcp_unavailable, other]
  hcp_wide_reasons: {wide}
"""


@pytest.mark.parametrize(
    ("wide", "said"),
    [
        pytest.param(
            "[hcp_unavailble]",
            "line 5: rep_plan.hcp_wide_reasons[0]: 'hcp_unavailble' is not a reason code of "
            "rep_plan.dismiss_reasons ['not_relevant', 'hcp_unavailable', 'other'] "
            "(did you mean 'hcp_unavailable'?)",
            id="misspelt",
        ),
        pytest.param(
            "[NOT_RELEVENT]",
            "line 5: rep_plan.hcp_wide_reasons[0]: 'NOT_RELEVENT' is not a reason code of "
            "rep_plan.dismiss_reasons ['not_relevant', 'hcp_unavailable', 'other'] "
            "(did you mean 'not_relevant'?)",
            id="misspelt-in-another-case",
        ),
        pytest.param(
            "[hcp]",
            "line 5: rep_plan.hcp_wide_reasons[0]: 'hcp' is not a reason code of "
            "rep_plan.dismiss_reasons ['not_relevant', 'hcp_unavailable', 'other'] "
            "(did you mean 'hcp_unavailable'?)",
            id="shortened",
        ),
        pytest.param(
            "\n    - other\n    - on_leave",
            "line 7: rep_plan.hcp_wide_reasons[1]: 'on_leave' is not a reason code of "
            "rep_plan.dismiss_reasons ['not_relevant', 'hcp_unavailable', 'other']",
            id="unknown-at-its-own-line",
        ),
        pytest.param(
            "hcp_unavailable",
            "line 5: rep_plan.hcp_wide_reasons: must be a list of reason codes of "
            "rep_plan.dismiss_reasons, e.g. [hcp_unavailable] (read 'hcp_unavailable', text)",
            id="not-a-list",
        ),
        pytest.param(
            "[3]",
            "line 5: rep_plan.hcp_wide_reasons[0]: 3 is not a reason code of "
            "rep_plan.dismiss_reasons ['not_relevant', 'hcp_unavailable', 'other']",
            id="a-number",
        ),
    ],
)
def test_hcp_wide_reasons_must_be_dismissal_reason_codes(
    tmp_path: Path, wide: str, said: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(HCP_WIDE_YAML.format(wide=wide))
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == f"{path}, {said}"


def test_an_hcp_wide_dismissal_holds_back_every_rep_action_of_that_hcp(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(HCP_WIDE_YAML.format(wide="[hcp_unavailable]"))
    rules = ServingRules.load(path)
    assert rules.hcp_wide_reasons == ("hcp_unavailable",)
    assert ServingRules.from_mapping({}).hcp_wide_reasons == ()  # none unless configured
    shipped = ServingRules.load(Path(__file__).parents[2] / "training" / "rules.yaml")
    assert shipped.hcp_wide_reasons == ("hcp_unavailable",)
    catalog = HistoryRules(
        rules,
        channels=np.array(["email", "rep_visit", "rep_phone", "rep_visit"], dtype=object),
        action_ids=ACTIONS,
    )
    history = LiveHistory(
        now=NOW,
        dismissed={
            ("H1", "A2"): "hcp_unavailable",
            ("H2", "A2"): "not_relevant",
            ("H3", "A3"): "hcp_unavailable",  # snoozed: for snooze_days
            # A dismissal of an action the catalog no longer has still speaks for the HCP.
            ("H4", "A9"): "hcp_unavailable",
        },
        snoozed=frozenset({("H3", "A3")}),
        dismissed_at={
            ("H1", "A2"): NOW - timedelta(days=2),
            ("H2", "A2"): NOW - timedelta(days=2),
            ("H3", "A3"): NOW - timedelta(days=1),
            ("H4", "A9"): NOW - timedelta(days=5),
        },
    )
    blocked = catalog.blocked(["H1", "H2", "H3", "H4", "H5"], history)
    assert blocked.tolist() == [
        [False, True, True, True],  # every rep action; e-mail is not the rep's to stop
        [False, True, False, False],  # not relevant: that action only
        [False, True, True, True],
        [False, True, True, True],
        [False, False, False, False],
    ]
    why = catalog.reasons("H1", history)
    assert why[0] == []
    assert why[1] == [
        "dismissed (hcp_unavailable) in the last 30 days (dismissal_days, rules.yaml line 1), "
        "lifts 2026-12-29 12:00 UTC"
    ]
    assert why[3] == why[2]
    assert why[2] == [
        "dismissed (hcp_unavailable) on A2 in the last 30 days, which holds every rep action "
        "of this HCP (rep_plan.hcp_wide_reasons, rules.yaml line 5; dismissal_days, "
        "rules.yaml line 1), lifts 2026-12-29 12:00 UTC"
    ]
    assert catalog.reasons("H3", history)[1] == [
        "snoozed (hcp_unavailable) on A3 in the last 7 days, which holds every rep action "
        "of this HCP (rep_plan.hcp_wide_reasons, rules.yaml line 5; snooze_days, "
        "rules.yaml line 2), lifts 2026-12-07 12:00 UTC"
    ]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        pytest.param(
            "channels:\n  email: {max_contacts: true, per_days: 28}\n",
            "line 2: channels.email.max_contacts: must be an integer >= 0 (read true, true/false)",
            id="true-for-a-count",
        ),
        pytest.param(
            "strict: 1\n",
            "line 1: strict: must be true or false (read 1, a whole number)",
            id="a-number-for-true-or-false",
        ),
        pytest.param(
            "channels:\n  sms: {consent_required: 'yes'}\n",
            "line 2: channels.sms.consent_required: must be true or false (read 'yes', text)",
            id="quoted-yes",
        ),
        pytest.param(
            "snooze_days: .inf\n",
            "line 1: snooze_days: must be at most 36500 days, 100 years (read .inf, a decimal "
            "number)",
            id="infinity-as-yaml-writes-it",
        ),
        pytest.param(
            "dismissal_days: 1e3\n",
            "line 1: dismissal_days: must be a number of days > 0; 1e3 was read as text "
            "('1e3'): write 1.0e+3 (YAML reads an exponent after a dot and with a sign) or "
            "1000.0",
            id="an-exponent-read-as-text",
        ),
        pytest.param(
            "channels:\n  email: {cooldown_days: 7 days}\n",
            "line 2: channels.email.cooldown_days: must be a number of days > 0 (read "
            "'7 days', text): write 7 (a number of days, without a unit)",
            id="days-with-their-unit",
        ),
        pytest.param(
            "dismissal_days: 30d\nsnooze_days: 1w\n",
            "line 1: dismissal_days: must be a number of days > 0 (read '30d', text): write 30 "
            "(a number of days, without a unit)",
            id="days-with-a-short-unit",
        ),
        pytest.param(
            "snooze_days: 2 Weeks\n",
            "line 1: snooze_days: must be a number of days > 0 (read '2 Weeks', text): write 14 "
            "(a number of days, without a unit)",
            id="weeks-for-days",
        ),
        pytest.param(
            "max_items_per_channel: 2.0\n",
            "line 1: max_items_per_channel: must be an integer >= 1; 2.0 was read as a "
            "decimal number: write a whole number, 2",
            id="a-decimal-for-a-count",
        ),
        pytest.param(
            "rep_plan:\n  max_capacity: 0.0\n",
            "line 2: rep_plan.max_capacity: must be an integer >= 1 (read 0.0, a decimal number)",
            id="a-decimal-below-the-floor-is-not-told-to-be-written-whole",
        ),
        pytest.param(
            "channels:\n  email: 3\n",
            "line 2: channels.email: expected a mapping (read 3, a whole number)",
            id="a-number-for-a-channel",
        ),
        pytest.param(
            "withdrawn_actions: [A027, yes]\n",
            "line 1: withdrawn_actions[1]: true is not an action_id as text; write ids as "
            "the catalog does, in quotes if they are digits ('031')",
            id="yes-for-an-action",
        ),
        pytest.param(
            "rep_plan:\n  dismiss_reasons:\n    - not_relevant\n    - 3\n",
            "line 4: rep_plan.dismiss_reasons[1]: a reason code must be text, e.g. "
            "not_relevant (read 3, a whole number: quote it if it is text)",
            id="a-number-for-a-reason",
        ),
    ],
)
def test_rules_file_values_are_shown_as_yaml_read_them(
    tmp_path: Path, text: str, said: str
) -> None:
    """As the training config, levers and gate config say them (true, not Python's
    True; .inf, not inf), and a number YAML read as text with what to write."""
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == f"{path}, {said}"


@pytest.mark.parametrize(
    ("rep_plan", "said"),
    [
        pytest.param(
            "  dismiss_reasons:\n    - not_relevant\n    - other\n    - Not_Relevant\n",
            "line 6: rep_plan.dismiss_reasons[2]: 'Not_Relevant' and 'not_relevant' "
            "(rep_plan.dismiss_reasons[0], line 4) differ only in case, and reason codes are "
            "read in any case: keep one of them",
            id="dismiss-reasons",
        ),
        pytest.param(
            "  dismiss_reasons: [not_relevant, hcp_unavailable]\n"
            "  hcp_wide_reasons: [hcp_unavailable, HCP_unavailable]\n",
            "line 4: rep_plan.hcp_wide_reasons[1]: 'HCP_unavailable' and 'hcp_unavailable' "
            "(rep_plan.hcp_wide_reasons[0], line 4) differ only in case, and reason codes are "
            "read in any case: keep one of them",
            id="hcp-wide-reasons",
        ),
        pytest.param(
            "  dismiss_reasons:\n    - not_relevant\n    - other\n    - not_relevant\n",
            "line 6: rep_plan.dismiss_reasons[2]: 'not_relevant' is listed a second time "
            "(first: rep_plan.dismiss_reasons[0], line 4): keep one of them",
            id="dismiss-reason-twice",
        ),
        pytest.param(
            "  dismiss_reasons: [not_relevant, hcp_unavailable]\n"
            "  hcp_wide_reasons:\n    - hcp_unavailable\n    - hcp_unavailable\n",
            "line 6: rep_plan.hcp_wide_reasons[1]: 'hcp_unavailable' is listed a second time "
            "(first: rep_plan.hcp_wide_reasons[0], line 5): keep one of them",
            id="hcp-wide-reason-twice",
        ),
    ],
)
def test_reason_codes_that_differ_only_in_case_are_refused_naming_both(
    tmp_path: Path, rep_plan: str, said: str
) -> None:
    """A reason sent as ``Not_Relevant`` is read in any case: with two codes that
    differ only in case, which one it is could not be told. The same code twice is
    refused as well, at the second, naming the first: a slip that may hide the code
    meant (and was listed twice wherever the codes are)."""
    path = tmp_path / "rules.yaml"
    path.write_text(f"dismissal_days: 30\nrep_plan:\n{rep_plan}")
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == f"{path}, {said}"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        pytest.param(
            "withdrawn_actions:\n  - A027\n  - A031\n  - A027\n",
            "line 4: withdrawn_actions[2]: 'A027' is listed a second time (first: "
            "withdrawn_actions[0], line 2): keep one of them",
            id="twice",
        ),
        pytest.param(
            "withdrawn_actions: [A027, ' A027']\n",
            "line 1: withdrawn_actions[1]: ' A027' and 'A027' (withdrawn_actions[0], line 1) "
            "differ only in the spaces around them, which are not read: keep one of them",
            id="spaces-around",
        ),
    ],
)
def test_an_action_withdrawn_twice_is_refused_at_the_second_naming_the_first(
    tmp_path: Path, text: str, said: str
) -> None:
    """An id listed twice was merged without a word, where a reason code listed
    twice is refused: either may be a slip for an id meant and not withdrawn
    (``A027, A027`` for ``A027, A072``). Ids are read as written otherwise: ``a027``
    beside ``A027`` is another id (which the catalog check names)."""
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == f"{path}, {said}"
    other = ServingRules.from_mapping({"withdrawn_actions": ["A027", "a027", " A031 "]})
    assert other.withdrawn_actions == ("A027", "a027", "A031")


def test_a_channel_capped_twice_is_refused_at_the_second_naming_the_first(
    tmp_path: Path,
) -> None:
    """``rep_visit`` and ``Rep Visit`` are one channel as the catalog spells it: which of
    their caps holds could not be told, so the file is refused where each is."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "channels:\n  rep_visit:\n    cooldown_days: 1\n  webinar:\n    cooldown_days: 7\n"
        "  Rep Visit:\n    cooldown_days: 3\n"
    )
    with pytest.raises(RulesError) as refused:
        ServingRules.load(path)
    assert str(refused.value) == (
        f"{path}, line 6: channels.Rep Visit: names channel 'rep_visit' a second time "
        "(first: channels.rep_visit, line 2): keep one of them"
    )


def test_hcp_wide_reasons_are_read_in_any_case_as_dismiss_reasons_spell_them(
    tmp_path: Path,
) -> None:
    """``HCP_Unavailable`` in hcp_wide_reasons is the code ``hcp_unavailable``, which
    a dismissal sent as ``Hcp_Unavailable`` is stored as: it holds the HCP back."""
    from nextbest.storage.repository import reason_code

    path = tmp_path / "rules.yaml"
    path.write_text(HCP_WIDE_YAML.format(wide="[HCP_Unavailable]"))
    rules = ServingRules.load(path)
    assert rules.hcp_wide_reasons == ("hcp_unavailable",)
    stored = reason_code("dismissed", "Hcp_Unavailable", rules.dismiss_reasons)
    assert stored == "hcp_unavailable"
    catalog = HistoryRules(
        rules,
        channels=np.array(["email", "rep_visit", "rep_phone", "rep_visit"], dtype=object),
        action_ids=ACTIONS,
    )
    history = LiveHistory(
        now=NOW,
        dismissed={("H1", "A2"): stored},
        dismissed_at={("H1", "A2"): NOW - timedelta(days=2)},
    )
    assert catalog.blocked(["H1"], history).tolist() == [[False, True, True, True]]


def test_a_withdrawn_id_in_another_case_names_the_catalog_id_it_missed() -> None:
    """`a1` for `A1` withdraws nothing and A1 is served on: the note a reload answers
    with (rules_notes) names the id meant, not only "check the spelling"."""
    actions = np.array(["A1", "A2", "031", "A4"], dtype=object)
    rules = ServingRules.from_mapping({"withdrawn_actions": ["a1", "31", "A9"]})
    history_rules = HistoryRules(rules, channels=CHANNELS, action_ids=actions)
    assert not history_rules.withdrawn.any()
    assert history_rules.notes[0] == (
        "withdrawn_actions ['31', 'A9', 'a1'] are not in the served model's catalog "
        "(nothing to withdraw; ids are compared exactly, case included: did you mean "
        "'031' for '31', 'A1' for 'a1'?)"
    )
    unrelated = ServingRules.from_mapping({"withdrawn_actions": ["A9"]})
    assert HistoryRules(unrelated, channels=CHANNELS, action_ids=actions).notes[0] == (
        "withdrawn_actions ['A9'] are not in the served model's catalog "
        "(nothing to withdraw; check the spelling)"
    )
