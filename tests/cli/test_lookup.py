"""`nextbest lookup`: one logged answer, its items and its feedback, as the log keeps it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.settings import get_settings
from nextbest.storage import log_recommendations
from nextbest.storage.db import store_session
from nextbest.storage.repository import FeedbackRecord, record_feedback
from nextbest.storage.testing import T0, recommendation_record, served_item

runner = CliRunner()


def _log_one_with_feedback() -> None:
    served = recommendation_record(
        "rec-42",
        "H7",
        items=(
            served_item(1, "A3", reasons=("no e-mail in 9 days", "opened 4 of the last 5")),
            served_item(2, "A9", "webinar", explored=True, reasons=("explored: webinars",)),
        ),
        requester="crm-de",
        rep_id="rep-berlin",
        channel_filter="rep_*",
        decided_for=T0 + timedelta(days=1),
        p_no_action=0.08,
        rules_fingerprint="0123456789ab",
        k_requested=5,
        policy="softmax",
        epsilon=0.0,
        temperature=0.05,
    )
    # Decided for the moment it was asked (microseconds before it was logged), by the
    # version a challenger share's random split gave the HCP.
    other = recommendation_record(
        "rec-43",
        "H8",
        items=(served_item(1, "A3"),),
        decided_for=T0 - timedelta(microseconds=40),
        split_with="6",
        split_share=0.25,
    )
    with store_session(get_settings().resolved_database_url) as session:
        log_recommendations(session, records=[served, other])
        session.commit()
        result = record_feedback(
            session,
            events=[
                FeedbackRecord("e2", "clicked", T0 + timedelta(hours=3), "H7", "rec-42", "A3"),
                FeedbackRecord("e1", "opened", T0 + timedelta(hours=2), "H7", "rec-42", "A3"),
                FeedbackRecord("e3", "opened", T0 + timedelta(hours=2), "H8", "rec-43", "A3"),
            ],
            requester="esp",
        )
    assert len(result.accepted) == 3, result


def test_lookup_shows_the_answer_its_items_and_its_feedback(env_settings: Path) -> None:
    _log_one_with_feedback()
    result = runner.invoke(app, ["lookup", "rec-42"])
    assert result.exit_code == 0, result.output
    said = result.stdout
    assert "recommendation rec-42: served 2024-03-04T09:00:00+00:00 for 2024-03-05" in said
    assert "HCP H7; asked by crm-de, rep plan of rep-berlin; purpose promotional" in said
    assert "channel rep_*" in said and "P(no action) 0.08" in said
    assert "rules 0123456789ab" in said
    # Asked for 5, given 2; the softmax draw's temperature, not its epsilon of 0.
    assert "channel rep_*; 5 items asked" in said and "softmax (temperature 0.05)" in said
    assert "1. A3 (email, content-A3)" in said and "propensity 0.9" in said
    assert "2. A9 (webinar, content-A9)" in said and "explored" in said
    # The reasons as shown then: they depend on the contact history of the moment.
    assert said.index("1. A3") < said.index("no e-mail in 9 days") < said.index("2. A9")
    assert "opened 4 of the last 5" in said and "reasons not recorded" not in said
    assert "feedback: 2 events" in said
    own_time = runner.invoke(app, ["lookup", "rec-43"]).stdout
    assert "recommendation rec-43: served 2024-03-04T09:00:00+00:00\n" in own_time, own_time
    # Oldest first, each with who sent it; the other answer's event is not here.
    assert said.index("opened") < said.index("clicked")
    assert "by esp; event e1" in said and "e3" not in said

    result = runner.invoke(app, ["lookup", "rec-42", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["hcp_id"] == "H7" and found["rep_id"] == "rep-berlin"
    assert found["rules_fingerprint"] == "0123456789ab"
    assert (found["k_requested"], found["temperature"]) == (5, 0.05)
    assert [i["action_id"] for i in found["items"]] == ["A3", "A9"]
    assert found["items"][1]["explored"] is True
    assert found["items"][0]["reasons"] == ["no e-mail in 9 days", "opened 4 of the last 5"]
    assert [e["event_id"] for e in found["feedback"]] == ["e1", "e2"]
    assert found["created_at"] == "2024-03-04T09:00:00+00:00"

    # An answer logged before the log kept the rules says so, rather than nothing.
    result = runner.invoke(app, ["lookup", "rec-43"])
    assert result.exit_code == 0, result.output
    assert "rules not recorded (logged before schema revision 0006)" in result.stdout
    assert "reasons not recorded (logged before schema revision 0007)" in result.stdout
    assert "items asked" not in result.stdout  # not known before revision 0010
    assert "epsilon_greedy (epsilon 0.05)" in result.stdout
    assert (
        "model version nextbest/7, drawn for this HCP with probability 0.25 beside version 6 "
        "(challenger share); epsilon_greedy"
    ) in " ".join(result.stdout.split())
    assert "drawn for this HCP" not in said  # a plan: no draw chose its version
    found = json.loads(runner.invoke(app, ["lookup", "rec-43", "--json"]).stdout)
    assert (found["split_with"], found["split_share"]) == ("6", 0.25)


def test_lookup_of_an_unknown_id_or_an_empty_store_is_refused(env_settings: Path) -> None:
    env_settings.mkdir()  # made, empty: nothing served into it yet
    database = Path(get_settings().resolved_database_url.removeprefix("sqlite:///"))
    result = runner.invoke(app, ["lookup", "rec-42"])
    assert result.exit_code == 2, result.output
    assert "no recommendation log at" in result.output
    assert not database.exists()  # a lookup makes no database
    _log_one_with_feedback()
    result = runner.invoke(app, ["lookup", "rec-999"])
    assert result.exit_code == 2, result.output
    assert "no recommendation 'rec-999' in the recommendation log" in " ".join(
        result.output.split()
    )


def test_lookup_by_hcp_lists_its_answers_and_feedback_newest_first(env_settings: Path) -> None:
    """A ticket names an HCP, not an answer: its answers and events, the erasure said."""
    _log_one_with_feedback()
    result = runner.invoke(app, ["lookup", "--hcp", "H7"])
    assert result.exit_code == 0, result.output
    said = result.stdout
    assert "HCP H7: 1 logged answer (1 of 1 shown, newest first)" in said
    assert "rec-42 by crm-de, rep plan of rep-berlin, version nextbest/7: A3 (email), A9" in said
    assert "feedback: 2 events" in said and said.index("clicked") < said.index("opened")
    assert "recommendation rec-42, by esp; event e2" in said and "e3" not in said
    found = json.loads(runner.invoke(app, ["lookup", "--hcp", "H7", "--json"]).stdout)
    assert [r["recommendation_id"] for r in found["recommendations"]] == ["rec-42"]
    assert [e["event_id"] for e in found["feedback"]] == ["e2", "e1"]
    assert found["erased_at"] is None
    limited = json.loads(
        runner.invoke(app, ["lookup", "--hcp", "H7", "--limit", "1", "--json"]).stdout
    )
    assert [e["event_id"] for e in limited["feedback"]] == ["e2"]
    assert limited["n_feedback"] == 2 and limited["n_recommendations"] == 1
    cut = runner.invoke(app, ["lookup", "--hcp", "H7", "--limit", "1"]).stdout
    assert "feedback: 2 events (1 of 2 shown, newest first; --limit 2 shows all)" in cut, cut
    unknown = runner.invoke(app, ["lookup", "--hcp", "h7"]).stdout
    assert "HCP h7: 0 logged answers" in unknown and "ids match exactly" in unknown
    # An HCP id given where a recommendation id goes: said, with the command to use.
    wrong = runner.invoke(app, ["lookup", "H7"])
    assert wrong.exit_code == 2
    assert "'H7' is an HCP id: `nextbest lookup --hcp H7`" in " ".join(wrong.output.split())
    for args in (["lookup"], ["lookup", "rec-42", "--hcp", "H7"]):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and "one of them" in refused.output, refused.output
    # Erased: nothing of it is left but the suppression, and lookup says so.
    assert runner.invoke(app, ["erase", "H7", "--yes"]).exit_code == 0
    erased = runner.invoke(app, ["lookup", "--hcp", "H7"]).stdout
    assert "HCP H7: 0 logged answers" in erased and "erased 20" in erased, erased
    assert "opted_out" in erased


def test_lookup_shows_the_rules_an_answer_names_once_their_text_is_kept(
    env_settings: Path,
) -> None:
    """An answer names its rules by fingerprint; the file's text, kept by the worker
    that read it, is shown by that fingerprint, and the answer points to it."""
    from nextbest.storage.repository import store_rules

    _log_one_with_feedback()  # names rules 0123456789ab, never stored
    assert "0123456789ab (`nextbest lookup" not in runner.invoke(app, ["lookup", "rec-42"]).stdout
    missing = runner.invoke(app, ["lookup", "--rules", "0123456789ab"])
    assert missing.exit_code == 2
    assert "no serving rules with fingerprint '0123456789ab'" in " ".join(missing.output.split())
    text = "channels:\n  email: {cooldown_days: 3}  # one a week\n"
    url = get_settings().resolved_database_url
    with store_session(url) as session:
        assert store_rules(session, content=text, source="/etc/nextbest/rules.yaml")
        assert not store_rules(session, content=text, source="/elsewhere/rules.yaml")
    import hashlib

    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:12]
    shown = runner.invoke(app, ["lookup", "--rules", fingerprint])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.endswith(text)
    assert f"# serving rules {fingerprint}" in shown.stdout
    assert "read from /etc/nextbest/rules.yaml" in shown.stdout  # the first to store it
    as_json = json.loads(runner.invoke(app, ["lookup", "--rules", fingerprint, "--json"]).stdout)
    assert as_json["content"] == text and as_json["fingerprint"] == fingerprint
    # An answer made under them points to the command.
    with store_session(url) as session:
        log_recommendations(
            session, records=[recommendation_record("rec-44", "H9", rules_fingerprint=fingerprint)]
        )
        session.commit()
    said = runner.invoke(app, ["lookup", "rec-44"]).stdout
    assert f"rules {fingerprint} (`nextbest lookup --rules {fingerprint}` shows the file)" in said
    both = runner.invoke(app, ["lookup", "rec-44", "--rules", fingerprint])
    assert both.exit_code == 2 and "(one of them)" in both.output


def test_lookup_shows_how_an_opt_out_stored_with_no_model_is_read(
    trained, tmp_path: Path, monkeypatch
) -> None:
    """An opt-out stored while no model was served keeps its channel as named
    ('e_mail', 'fax') and is read against the served catalog at each read; lookup
    showed it as stored, which a support question reads as withdrawing nothing. It
    says what it withdraws under the served model's catalog (email, every channel),
    in text and JSON, and, with no model registered, that it is not yet read; what
    is stored is unchanged. An opt-in stored so is read so too: 'E Mail' as email,
    and 'fax' as granting nothing."""
    import shutil

    models = tmp_path / "models"
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    get_settings.cache_clear()
    _log_one_with_feedback()
    with store_session(get_settings().resolved_database_url) as session:
        result = record_feedback(
            session,
            events=[
                FeedbackRecord(
                    "out-1", "opted_out", T0 + timedelta(hours=4), "H7", "rec-42", channel="E Mail"
                ),
                FeedbackRecord("out-2", "opted_out", T0 + timedelta(hours=5), "H7", channel="fax"),
                FeedbackRecord("in-1", "opted_in", T0 + timedelta(hours=6), "H7", channel="E Mail"),
                FeedbackRecord("in-2", "opted_in", T0 + timedelta(hours=7), "H7", channel="fax"),
            ],
            requester="consent-hub",
        )
    assert result.accepted == ["out-1", "out-2", "in-1", "in-2"], result

    def shown(*args: str) -> str:
        found = runner.invoke(app, ["lookup", *args])
        assert found.exit_code == 0, found.output
        return " ".join(found.stdout.split())

    def as_json(*args: str) -> dict[str, dict]:
        found = json.loads(runner.invoke(app, ["lookup", *args, "--json"]).stdout)
        return {e["event_id"]: e for e in found["feedback"]}

    not_yet = "not yet read against a catalog"
    said = shown("--hcp", "H7")
    assert f"opted_out (channel e_mail ({not_yet}), recommendation rec-42" in said, said
    assert f"opted_out (channel fax ({not_yet}), by consent-hub" in said, said
    assert f"opted_in (channel e_mail ({not_yet}), by consent-hub" in said, said
    events = as_json("--hcp", "H7")
    assert (events["in-2"]["channel"], events["in-2"]["channel_read_as"]) == ("fax", not_yet)
    assert (events["out-1"]["channel"], events["out-1"]["channel_read_as"]) == ("e_mail", not_yet)
    assert (events["out-2"]["channel"], events["out-2"]["channel_read_as"]) == ("fax", not_yet)
    assert events["e1"]["channel_read_as"] is None  # read as stored

    shutil.copytree(trained.settings.resolved_models_dir, models)
    get_settings.cache_clear()
    said = shown("--hcp", "H7")
    assert "opted_out (channel e_mail (read as email), recommendation rec-42" in said, said
    assert "opted_out (channel fax (read as every channel), by consent-hub" in said, said
    assert "opted_in (channel e_mail (read as email), by consent-hub" in said, said
    granted = "opted_in (channel fax (read as no channel of the catalog: grants nothing)"
    assert granted in said, said
    assert f"read against the catalog of model 'nextbest' version {trained.version}" in said
    assert "opted_out (channel e_mail (read as email), by consent-hub" in shown("rec-42")
    events = as_json("--hcp", "H7")
    assert (events["out-1"]["channel"], events["out-1"]["channel_read_as"]) == ("e_mail", "email")
    assert (events["out-2"]["channel"], events["out-2"]["channel_read_as"]) == (
        "fax",
        "every channel",
    )
    assert as_json("rec-42")["out-1"]["channel_read_as"] == "email"
    assert events["in-1"]["channel_read_as"] == "email"
    # What is stored is as it was.
    from sqlalchemy import select

    from nextbest.storage.tables import FeedbackEvent

    with store_session(get_settings().resolved_database_url) as session:
        stored = dict(
            session.execute(
                select(FeedbackEvent.event_id, FeedbackEvent.channel).where(
                    FeedbackEvent.event_type == "opted_out"
                )
            ).all()
        )
    assert stored == {"out-1": "e_mail", "out-2": "fax"}
    get_settings.cache_clear()


def test_lookup_links_the_rows_an_opt_out_of_several_channels_was_kept_in_to_its_event(
    env_settings: Path,
) -> None:
    """An opt-out naming no channel from a key of several channels is kept in a row per
    channel, each but the first under an id derived from the event's
    (``opted_out-<hex>``): lookup listed those rows with nothing to tell an operator
    asked about the event that they came from it. Each says the event it came from,
    in text and JSON, by --hcp and by the answer it names; a row a sender named so
    itself is not linked, and the event's id given for a recommendation's says which
    HCP's look-up lists it."""
    _log_one_with_feedback()
    with store_session(get_settings().resolved_database_url) as session:
        result = record_feedback(
            session,
            events=[
                FeedbackRecord("stop-9", "opted_out", T0 + timedelta(hours=4), "H7", "rec-42"),
                FeedbackRecord("stop-10", "opted_out", T0 + timedelta(hours=5), "H7"),
            ],
            requester="platform",
            channels=["email", "sms", "webinar"],
        )
        # An id of that form a sender chose: derived from no event here.
        own = record_feedback(
            session,
            events=[
                FeedbackRecord("opted_out-0123", "opted_out", T0, "H7", channel="email"),
            ],
            requester="consent-hub",
        )
    assert result.accepted == ["stop-9", "stop-10"] and own.accepted, (result, own)

    def as_json(*args: str) -> dict[str, dict]:
        found = runner.invoke(app, ["lookup", *args, "--json"])
        assert found.exit_code == 0, found.output
        return {e["event_id"]: e for e in json.loads(found.stdout)["feedback"]}

    events = as_json("--hcp", "H7")
    derived = {e: row["derived_from"] for e, row in events.items() if row["derived_from"]}
    assert sorted(derived.values()) == ["stop-10", "stop-10", "stop-9", "stop-9"], events
    assert {events[e]["channel"] for e, of in derived.items() if of == "stop-9"} == {
        "sms",
        "webinar",
    }
    assert all(e.startswith("opted_out-") for e in derived) and "opted_out-0123" not in derived
    assert events["stop-9"]["derived_from"] is None
    said = " ".join(runner.invoke(app, ["lookup", "--hcp", "H7"]).stdout.split())
    for event_id, of in derived.items():
        assert f"event {event_id}, from event {of})" in said, said
    assert "event opted_out-0123)" in said, said
    on_answer = as_json("rec-42")
    assert {on_answer[e]["derived_from"] for e in on_answer if e.startswith("opted_out-")} == {
        "stop-9"
    }
    said = " ".join(runner.invoke(app, ["lookup", "rec-42"]).stdout.split())
    assert said.count(", from event stop-9)") == 2, said
    # The event's own id where a recommendation id goes: the look-up that lists it.
    wrong = runner.invoke(app, ["lookup", "stop-9"])
    assert wrong.exit_code == 2
    assert (
        "'stop-9' is the event_id of a feedback event about HCP H7: `nextbest lookup --hcp H7`"
        " lists it (and the 2 rows an opt-out of several channels was kept in, each "
        "'from event stop-9')" in " ".join(wrong.output.split())
    ), wrong.output
    # An opt-out of one channel, its id in the derived form a sender chose: no rows.
    single = " ".join(runner.invoke(app, ["lookup", "opted_out-0123"]).output.split())
    assert single.endswith("`nextbest lookup --hcp H7` lists it"), single


def test_lookup_of_an_event_id_names_its_hcp_and_no_rows_it_has_none_of(
    env_settings: Path,
) -> None:
    """An event's id where a recommendation id goes: the hint names the HCP whose
    look-up lists it, and spoke of the rows an opt-out of several channels was kept in
    for any event (an 'opened' has none)."""
    _log_one_with_feedback()
    wrong = runner.invoke(app, ["lookup", "e1"])
    assert wrong.exit_code == 2, wrong.output
    said = " ".join(wrong.output.split())
    assert (
        "'e1' is the event_id of a feedback event about HCP H7: `nextbest lookup --hcp H7` "
        "lists it" in said
    ), said
    assert "opt-out" not in said and "from event" not in said, said


def test_lookup_gives_every_items_figures_to_the_same_digits(env_settings: Path) -> None:
    """Two items of one answer read 'score 0.6402' and 'score 0.623': four significant
    digits, the trailing zero dropped, as if the second were known less precisely."""
    served = recommendation_record(
        "rec-7",
        "H7",
        items=(
            served_item(1, "A3", score=0.6402307, expected_uplift=0.6592, propensity=0.9092857),
            served_item(2, "A9", score=0.6229930, expected_uplift=0.6449931, propensity=0.91),
        ),
    )
    with store_session(get_settings().resolved_database_url) as session:
        log_recommendations(session, records=[served])
        session.commit()
    said = runner.invoke(app, ["lookup", "rec-7"]).stdout
    assert "score 0.6402, expected uplift 0.6592, P(engaged) 0.300, propensity 0.9093" in said
    assert "score 0.6230, expected uplift 0.6450, P(engaged) 0.300, propensity 0.9100" in said
