"""Feedback files (CSV or Parquet) read as the endpoint reads a batch, into a real store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nextbest.contract.errors import ContractError
from nextbest.service.feedback_file import ingest_events, read_events
from nextbest.settings import Settings
from nextbest.storage.db import make_engine, migrate


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    return Settings(database_url=url)


def _stored(settings: Settings) -> pd.DataFrame:
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        stored = pd.read_sql(
            "SELECT event_id, hcp_id, action_id FROM feedback_events ORDER BY event_id",
            connection,
        )
    engine.dispose()
    return stored


def test_integer_ids_in_a_parquet_file_are_read_as_the_text_they_stand_for(
    settings: Settings, tmp_path: Path
) -> None:
    """A warehouse export types numeric ids as integers (floats where one is null):
    every row was rejected with 'Input should be a valid string'. They are the ids a
    CSV file gives as text, so the same file in either format stores the same events."""
    events = pd.DataFrame(
        {
            "event_id": [101, 102, 103],
            "event_type": ["opened", "clicked", "opened"],
            "hcp_id": [7, 8, 9],
            "action_id": [12.0, None, 13.0],
            "occurred_at": pd.to_datetime(["2026-06-01T08:00:00"] * 3),
        }
    )
    typed = tmp_path / "events.parquet"
    events.to_parquet(typed, index=False)
    done = ingest_events(settings, read_events(typed), model=None)
    assert (done.accepted, done.rejected) == (3, [])
    stored = _stored(settings)
    assert stored["event_id"].tolist() == ["101", "102", "103"]
    assert stored["hcp_id"].tolist() == ["7", "8", "9"]
    assert stored["action_id"].tolist() == ["12", None, "13"]
    # The same events as CSV name the same ids: already stored, nothing twice.
    text = tmp_path / "events.csv"
    events.assign(action_id=["12", "", "13"]).to_csv(text, index=False)
    again = ingest_events(settings, read_events(text), model=None)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 3, [])


def test_integer_ids_with_nulls_from_a_warehouse_parquet_file_are_stored_as_written(
    settings: Settings, tmp_path: Path
) -> None:
    """A Parquet file Spark or pyarrow wrote (no pandas metadata) with an 18-digit
    ``action_id`` null on some rows: Arrow read it as float64, and the events were
    stored naming action '1.2345678901234568e+17', which no catalog holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    typed = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": ["e1", "e2"],
                "event_type": ["opened", "opened"],
                "hcp_id": ["H1", "H2"],
                "action_id": pa.array([123456789012345678, None], type=pa.int64()),
            }
        ),
        typed,
    )
    done = ingest_events(settings, read_events(typed), model=None)
    assert (done.accepted, done.rejected) == (2, [])
    assert _stored(settings)["action_id"].tolist() == ["123456789012345678", None]


@pytest.mark.parametrize(
    ("column", "values", "said"),
    [
        # Stored naming HCPs 'True' and 'False'.
        pytest.param(
            "hcp_id",
            [True, False],
            "events.parquet, column 'hcp_id': is a column of true/false values (a boolean "
            "column), which would be read as the text 'True' and 'False': write it as a "
            "column of text (ids as text or integers)",
            id="boolean",
        ),
        pytest.param(
            "hcp_id",
            pd.array([True, None], dtype="boolean"),
            "events.parquet, column 'hcp_id': is a column of true/false values",
            id="boolean-with-nulls",
        ),
        pytest.param(  # read back as Python bools beside None (object)
            "hcp_id",
            pd.Series([None, True], dtype=object),
            "events.parquet, column 'hcp_id': is a column of true/false values",
            id="bools-and-none",
        ),
        # Stored naming action '1.2345678901234568e+17': written 123456789012345678, or
        # any of the ids a float rounds to the same number.
        pytest.param(
            "action_id",
            [123456789012345678.0, 12.0],
            "events.parquet, row 1, column 'action_id': 123456789012345680 is read from a "
            "column of floats (float64), which holds no whole number from 2**53 "
            "(9,007,199,254,740,992) up exactly: the digits written may have been others",
            id="float-past-2**53",
        ),
    ],
)
def test_ids_a_typed_column_does_not_hold_as_written_refuse_the_file(
    settings: Settings, tmp_path: Path, column: str, values: object, said: str
) -> None:
    """A boolean id column, or a float one holding a number no float holds exactly, was
    read as the ids 'True' and 'False', or '1.2345678901234568e+17', and every event
    stored naming an HCP or an action no system wrote. The file is refused, naming the
    column (and the row), and nothing is stored."""
    events = pd.DataFrame({"event_id": ["e1", "e2"], "event_type": ["opened", "opened"]})
    events["hcp_id"] = ["H1", "H2"]
    events[column] = values
    typed = tmp_path / "events.parquet"
    events.to_parquet(typed, index=False)
    with pytest.raises(ContractError) as refused:
        ingest_events(settings, read_events(typed), model=None)
    assert said in str(refused.value), str(refused.value)
    assert _stored(settings).empty


def test_text_a_parquet_file_stores_as_bytes_is_read_as_text(
    settings: Settings, tmp_path: Path
) -> None:
    """Parquet BINARY columns without their UTF8 annotation (Hive, Impala): every row
    was rejected, its event_type b'opened' being none of the event types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    typed = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": pa.array([b"e1", b"e2"]),
                "event_type": pa.array([b"opened", b"clicked"]),
                "hcp_id": pa.array([b"00123", b"H2"]),
            }
        ),
        typed,
    )
    done = ingest_events(settings, read_events(typed), model=None)
    assert (done.accepted, done.rejected) == (2, [])
    assert _stored(settings)["hcp_id"].tolist() == ["00123", "H2"]


def test_an_index_of_times_or_named_for_a_field_otherwise_is_refused(tmp_path: Path) -> None:
    """Events indexed by their time (``set_index("timestamp")``, as a time series is
    kept) were stored at their arrival, the index left out without a word; so was
    an index named for a field otherwise (``Value``). An index named for a field is
    read as that field."""
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "event_type": ["opened", "opened"],
            "hcp_id": ["H1", "H2"],
            "timestamp": pd.to_datetime(["2026-06-01T08:00:00", "2026-06-02T08:00:00"]),
        }
    )
    by_time = tmp_path / "by_time.parquet"
    events.set_index("timestamp").to_parquet(by_time)
    with pytest.raises(ContractError, match=r"by_time.parquet, column 'timestamp': is the index"):
        read_events(by_time)
    misspelt = tmp_path / "misspelt.parquet"
    events.drop(columns="timestamp").assign(Value=[1.5, 2.5]).set_index("Value").to_parquet(
        misspelt
    )
    with pytest.raises(ContractError, match=r"column 'Value': .* \(did you mean 'value'\?\)"):
        read_events(misspelt)
    by_field = tmp_path / "by_field.parquet"
    events.rename(columns={"timestamp": "occurred_at"}).set_index("occurred_at").to_parquet(
        by_field
    )
    assert read_events(by_field)["occurred_at"].tolist() == events["timestamp"].tolist()


def test_a_nul_in_a_parquet_files_text_is_each_events_own(
    settings: Settings, tmp_path: Path
) -> None:
    """The data files refuse a Parquet text holding a NUL; a feedback file's events
    are checked one by one, as the endpoint's: that event is rejected alone, and an
    opt-out is stored with its NULs left out, never refused with the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    typed = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": ["e1", "e2", "e3"],
                "event_type": ["opened", "opened", "opted_out"],
                "hcp_id": ["H1", "H2\x00", "H3"],
                "channel": ["email", "email", "email"],
                "reason": [None, None, "https://unsubscribe\x00"],
            }
        ),
        typed,
    )
    done = ingest_events(settings, read_events(typed), model=None)
    assert [(row, event_id) for row, event_id, _ in done.rejected] == [(2, "e2")]
    assert "NUL" in done.rejected[0][2]
    assert _stored(settings)["event_id"].tolist() == ["e1", "e3"]


def test_spaces_around_header_names_are_dropped_as_in_the_data_files(
    settings: Settings, tmp_path: Path
) -> None:
    """'event_id, event_type, hcp_id' (a header written by hand): ' event_type' was
    refused as an unknown column, where the data files read it as 'event_type'."""
    text = tmp_path / "events.csv"
    text.write_text("event_id, event_type, hcp_id\ne1, opened, 00123\n")
    done = ingest_events(settings, read_events(text), model=None)
    assert (done.accepted, done.rejected) == (1, [])
    assert _stored(settings)["hcp_id"].tolist() == ["00123"]
    twice = tmp_path / "twice.csv"
    twice.write_text("event_id,event_type,hcp_id, hcp_id\ne1,opened,H1,H2\n")
    with pytest.raises(ContractError, match=r"twice.csv, column 'hcp_id': appears 2 times"):
        read_events(twice)


def test_a_value_is_read_as_written_and_an_infinite_one_is_rejected_alone(
    settings: Settings, tmp_path: Path
) -> None:
    """A float32 value 0.1 was stored as 0.10000000149011612; 'inf' in a CSV is
    rejected by its row, the file's other rows stored."""
    typed = tmp_path / "outcomes.parquet"
    pd.DataFrame(
        {
            "event_id": ["o1", "o2"],
            "event_type": "outcome",
            "hcp_id": ["H1", "H2"],
            "value": pd.array([0.1, 2.7], dtype="float32"),
        }
    ).to_parquet(typed, index=False)
    done = ingest_events(settings, read_events(typed), model=None)
    assert (done.accepted, done.rejected) == (2, [])
    text = tmp_path / "outcomes.csv"
    text.write_text("event_id,event_type,hcp_id,value\no3,outcome,H1,inf\no4,outcome,H2,1.5\n")
    done = ingest_events(settings, read_events(text), model=None)
    assert done.accepted == 1
    assert done.rejected == [(1, "o3", "value must be a finite number, got inf")]
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        values = dict(
            connection.exec_driver_sql("SELECT event_id, value FROM feedback_events").all()
        )
    engine.dispose()
    assert values == {"o1": 0.1, "o2": 2.7, "o4": 1.5}


def test_a_date_without_a_day_is_refused_by_its_row_as_the_data_contract_refuses_it(
    settings: Settings, tmp_path: Path
) -> None:
    """'2024' was read as seconds since 1970 and refused as 1970-01-01T00:33:44 (with
    the advice that it might be seconds since 1970), '2024-03' with pydantic's 'input
    is too short'. Each gets the interactions file's words; the other rows are stored,
    an opt-out dated so among them (counted from its arrival, said under uncounted)."""
    text = tmp_path / "events.csv"
    text.write_text(
        "event_id,event_type,hcp_id,channel,occurred_at\n"
        "y,opened,H1,email,2024\n"
        "m,opened,H1,email,2024-03\n"
        "d,opened,H1,email,20240301\n"
        "out,opted_out,H1,email,2024\n"
        "ok,opened,H1,email,2026-06-01T08:00:00Z\n"
    )
    full = "write the full date, as 2026-11-30 or 2026-11-30T08:00:00+00:00"
    done = ingest_events(settings, read_events(text), model=None)
    assert done.rejected == [
        (
            1,
            "y",
            "occurred_at: '2024' is a year alone, not a date: it would be read as the first "
            f"day of the year; {full}",
        ),
        (
            2,
            "m",
            "occurred_at: '2024-03' is a year and month, not a date: it would be read as the "
            f"first day of the month; {full}",
        ),
        (
            3,
            "d",
            "occurred_at: '20240301' read as seconds since 1970 is 1970-08-23T06:18:21+00:00, "
            "before 2000-01-01: no event of this service happened then (a date without its "
            "dashes, a spreadsheet's day number?); send an ISO 8601 time, as "
            "2026-11-30T08:00:00+00:00",
        ),
    ]
    assert done.accepted == 2 and [row for row, _, _ in done.uncounted] == [4]
    assert _stored(settings)["event_id"].tolist() == ["ok", "out"]
    # The same mistake in a typed Parquet column: an integer year.
    typed = tmp_path / "events.parquet"
    pd.DataFrame(
        {"event_id": ["p"], "event_type": ["clicked"], "hcp_id": ["H1"], "occurred_at": [2024]}
    ).to_parquet(typed, index=False)
    again = ingest_events(settings, read_events(typed), model=None)
    assert again.rejected == [
        (
            1,
            "p",
            "occurred_at: 2024 is a year alone, not a date: it would be read as the first "
            f"day of the year; {full}",
        )
    ]


def test_an_opt_out_whose_time_reads_as_none_is_kept_by_its_row(
    settings: Settings, tmp_path: Path
) -> None:
    """An opt-out row dated '2024-03' or by a time that reads as none was rejected with
    the file's other rows stored: the withdrawal was lost. It is stored, counted from
    the run, and said by its row; an open dated so is still rejected."""
    text = tmp_path / "events.csv"
    text.write_text(
        "event_id,event_type,hcp_id,channel,occurred_at\n"
        "m,opened,H1,email,2024-03\n"
        "out-m,opted_out,H1,email,2024-03\n"
        "out-y,Opted_Out,H2,,2024\n"
        "out-d,opted_out,H3,email,31/12/2024\n"
        "out-n,opted_out,H4,email,20240301\n"
    )
    done = ingest_events(settings, read_events(text), model=None)
    assert [(row, event_id) for row, event_id, _ in done.rejected] == [(1, "m")]
    assert done.accepted == 4
    said = {row: message for row, _, message in done.uncounted}
    assert sorted(said) == [2, 3, 4, 5]
    assert said[2].startswith("opt-out stored: occurred_at '2024-03' is a year and month"), said
    assert said[3].startswith("opt-out stored: occurred_at '2024' is a year alone"), said
    assert said[4].startswith(
        "opt-out stored: occurred_at '31/12/2024' is not an ISO 8601 date or date-time: "
    ), said
    assert said[5].startswith(
        "opt-out stored: occurred_at '20240301' read as seconds since 1970 is "
    ), said
    assert all(m.endswith("; counted from its arrival") for m in said.values()), said
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        kept = pd.read_sql(
            "SELECT event_id, occurred_at FROM feedback_events ORDER BY event_id", connection
        )
    engine.dispose()
    assert kept["event_id"].tolist() == ["out-d", "out-m", "out-n", "out-y"]
    assert (pd.to_datetime(kept["occurred_at"]).dt.year >= 2026).all(), kept


def test_an_opt_out_row_is_kept_whatever_the_form_of_a_field_but_its_ids(
    settings: Settings, tmp_path: Path
) -> None:
    """An opt-out row with an unsubscribe link longer than the 256 characters a reason
    is stored in, a value (a number or not), a channel longer than any, or channel
    'all' with no model served (stored as a channel no action has: nothing withdrawn)
    was rejected by its row, or kept withdrawing nothing, the file's other rows stored.
    Each is kept, read as the endpoint reads it, and said by its row; an open with
    such a reason, or an opt-out without its HCP, is still rejected."""
    link = "https://mail.example.com/unsubscribe?token=" + "x" * 300
    text = tmp_path / "events.csv"
    text.write_text(
        "event_id,event_type,hcp_id,channel,reason,value\n"
        f"open-1,opened,H1,email,{link},\n"
        f"out-link,opted_out,H1,email,{link},\n"
        "out-na,opted_out,H2,email,,n/a\n"
        "out-3,opted_out,H3,email,,3\n"
        f"out-long,opted_out,H4,{'e' * 65},,\n"
        "out-all,opted_out,H5,All,,\n"
        "out-nobody,opted_out,,email,,\n"
    )
    done = ingest_events(settings, read_events(text), model=None)
    assert [(row, event_id) for row, event_id, _ in done.rejected] == [
        (1, "open-1"),
        (7, "out-nobody"),
    ], done.rejected
    assert done.rejected[0][2] == "reason: String should have at most 256 characters"
    assert done.rejected[1][2].startswith("hcp_id: "), done.rejected
    assert done.accepted == 5
    assert done.uncounted == [
        (2, "out-link", "opt-out stored: reason cut to its first 256 of 343 characters, the "
         "most stored"),
        (3, "out-na", "opt-out stored: value 'n/a' left out: an opt-out takes none"),
        (4, "out-3", "opt-out stored: value 3 left out: an opt-out takes none"),
        (5, "out-long", f"opt-out stored: channel '{'e' * 40}'... (65 characters) left out "
         "(String should have at most 64 characters), as if none was named"),
    ]  # fmt: skip
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as connection:
        kept = pd.read_sql(
            "SELECT event_id, channel, reason, value FROM feedback_events ORDER BY event_id",
            connection,
        ).set_index("event_id")
    engine.dispose()
    assert kept.loc["out-link", "reason"] == link[:256]
    assert kept["value"].isna().all(), kept
    assert kept["channel"].to_dict() == {
        "out-3": "email",
        "out-all": None,
        "out-link": "email",
        "out-long": None,
        "out-na": "email",
    }


def test_nextbest_feedback_without_a_model_stores_consent_as_catalogs_spell_channels(
    env_settings: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nextbest feedback FILE` with no model served stored an opt-out of 'Email' as
    sent, which consent, matched on the channel, read as no catalog's channel: e-mail
    stayed open. Stored as catalogs spell channels; the file sent again stores nothing.
    Its consent events are marked to be read against the catalog once a model
    serves ('e-mail' as email), its opt-in as its opt-outs: read as stored, an
    opt-in of 'e-mail' could never lift the opt-out of 'e-mail' it answers."""
    from typer.testing import CliRunner

    from nextbest.cli import app

    migrate(database_url)
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    feed = tmp_path / "consent.csv"
    feed.write_text(
        "event_id,event_type,hcp_id,channel\n"
        "out-case,opted_out,H1,Email\n"
        "out-spaces,opted_out,H2, Rep Visit \n"
        "in-case,opted_in,H3,SMS\n"
        "out-near,opted_out,H4,e-mail\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["feedback", str(feed)])
    assert result.exit_code == 0, result.output
    assert "no served model" in result.output, result.output
    assert "stored 4 of 4 events" in " ".join(result.stdout.split()), result.stdout
    again = runner.invoke(app, ["feedback", str(feed)])
    assert again.exit_code == 0, again.output
    assert "stored 0 of 4 events" in " ".join(again.stdout.split()), again.stdout
    engine = make_engine(database_url)
    with engine.connect() as connection:
        stored = pd.read_sql(
            "SELECT event_id, channel, channel_unmatched FROM feedback_events", connection
        )
    engine.dispose()
    assert dict(zip(stored["event_id"], stored["channel"], strict=True)) == {
        "out-case": "email",
        "out-spaces": "rep_visit",
        "in-case": "sms",
        "out-near": "e_mail",
    }
    unmatched = stored.set_index("event_id")["channel_unmatched"]
    assert {e for e, flag in unmatched.items() if flag == 1} == {
        "out-case",
        "out-spaces",
        "in-case",
        "out-near",
    }, unmatched


def test_nextbest_feedback_keeps_an_opt_out_whose_event_id_is_over_long_once(
    env_settings: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An opt-out row whose event_id was longer than the 128 characters stored was
    rejected by its row, the withdrawal lost. It is kept under an id derived from its
    own, said by its row; the file sent again stores nothing twice."""
    from typer.testing import CliRunner

    from nextbest.cli import app

    migrate(database_url)
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    long_id = "unsub-" + "t" * 144
    feed = tmp_path / "consent.csv"
    feed.write_text(
        f"event_id,event_type,hcp_id,channel\n{long_id},opted_out,H1,email\n{long_id},opened,H1,\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["feedback", str(feed)])
    said = " ".join(result.stdout.split())
    assert result.exit_code == 1, result.output
    assert "stored 1 of 2 events" in said, said
    # Notes on stderr, the row's event_id the one stored.
    note = " ".join(result.stderr.split())
    assert "row 1 (event_id 'opted_out-" in note, note
    assert "is longer than the 128 characters stored: stored under event_id 'opted_out-" in note
    assert "row 2 (event_id" in said and "event_id: String should have at most 128" in said
    again = runner.invoke(app, ["feedback", str(feed)])
    assert "stored 0 of 2 events" in " ".join(again.stdout.split()), again.stdout
    engine = make_engine(database_url)
    with engine.connect() as connection:
        stored = pd.read_sql("SELECT event_id, hcp_id, channel FROM feedback_events", connection)
    engine.dispose()
    assert len(stored) == 1 and stored["event_id"].iat[0].startswith("opted_out-"), stored
    assert stored[["hcp_id", "channel"]].values.tolist() == [["H1", "email"]]


def test_nextbest_feedback_keeps_an_opt_out_of_a_send_on_a_channel_the_catalog_dropped(
    trained, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unsubscribe link of an SMS send, the catalog served since without SMS: the
    opt-out row was rejected ("channel 'sms' is not a channel of the served catalog"),
    the withdrawal lost. It is kept for sms, said by its row."""
    from datetime import UTC, datetime, timedelta

    from typer.testing import CliRunner

    from nextbest.cli import app
    from nextbest.contract import load_dataset
    from nextbest.settings import get_settings
    from nextbest.storage import log_recommendations, make_session_factory
    from nextbest.storage.testing import recommendation_record, served_item

    migrate(database_url)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(trained.settings.resolved_models_dir))
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    hcp = str(load_dataset(trained.data_dir).hcps["hcp_id"].iat[0])
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        sent = recommendation_record(
            "rec-sms",
            hcp,
            created_at=datetime.now(UTC) - timedelta(days=1),
            items=(served_item(1, "sms-reminder", "sms"),),
        )
        log_recommendations(session, records=[sent])
        session.commit()
    feed = tmp_path / "unsubscribed.csv"
    feed.write_text(
        f"event_id,event_type,hcp_id,recommendation_id\nstop-1,opted_out,{hcp},rec-sms\n"
    )
    try:
        result = CliRunner().invoke(app, ["feedback", str(feed)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "checking HCPs and actions against model version" in result.output, result.output
    note = " ".join(result.stderr.split())
    assert "row 1 (event_id 'stop-1'): opt-out stored: channel read as 'sms'" in note, note
    assert "it withdraws nothing the catalog serves today; kept" in note, note
    with engine.connect() as connection:
        stored = pd.read_sql("SELECT event_id, channel FROM feedback_events", connection)
    engine.dispose()
    assert stored.values.tolist() == [["stop-1", "sms"]]


def test_a_consent_file_an_earlier_version_stored_is_stored_again_as_nothing_new(
    env_settings: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier `nextbest feedback` with no model served stored consent channels as
    sent ('Email', 'All'). The same file fed again now, its channels stored as catalogs
    spell them, had its opt-in rejected as another event under its id and its opt-outs
    stored a second time under derived ids. It stores nothing: every row is stored."""
    from datetime import UTC, datetime

    from sqlalchemy import insert
    from typer.testing import CliRunner

    from nextbest.cli import app
    from nextbest.storage.tables import FeedbackEvent

    migrate(database_url)
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    at = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    rows = [
        ("out-case", "opted_out", "H1", "Email"),
        ("out-all", "opted_out", "H2", "All"),
        ("in-case", "opted_in", "H3", "SMS"),
    ]
    engine = make_engine(database_url)
    with engine.begin() as connection:
        for event_id, event_type, hcp_id, channel in rows:
            connection.execute(
                insert(FeedbackEvent).values(
                    event_id=event_id,
                    event_type=event_type,
                    hcp_id=hcp_id,
                    channel=channel,
                    occurred_at=at,
                    received_at=at,
                )
            )
    feed = tmp_path / "consent.csv"
    feed.write_text(
        "event_id,event_type,hcp_id,channel,occurred_at\n"
        + "".join(f"{e},{t},{h},{c},{at.isoformat()}\n" for e, t, h, c in rows)
    )
    result = CliRunner().invoke(app, ["feedback", str(feed)])
    assert result.exit_code == 0, result.output
    assert "stored 0 of 3 events" in " ".join(result.stdout.split()), result.stdout
    with engine.connect() as connection:
        stored = pd.read_sql("SELECT event_id FROM feedback_events", connection)
    engine.dispose()
    assert sorted(stored["event_id"]) == ["in-case", "out-all", "out-case"]


def test_nextbest_feedback_names_and_writes_rejected_rows_by_the_files_lines(
    env_settings: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blank lines in a feedback file count, as an editor counts lines: row N is on line
    N + 1. They were skipped, so every row named after one was the line above the one
    meant; the --rejected file still holds the rejected rows themselves."""
    from typer.testing import CliRunner

    from nextbest.cli import app

    migrate(database_url)
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    feed = tmp_path / "events.csv"
    feed.write_text(
        "event_id,event_type,hcp_id,channel\n"
        "ok-1,opened,H1,email\n"
        "\n"
        "bad-1,nonsense,H1,email\n"  # line 4
        "\n"
        "\n"
        "ok-2,opened,H2,email\n"
        "bad-2,opened,,email\n"  # line 8
    )
    bad = tmp_path / "rejected.parquet"
    result = CliRunner().invoke(app, ["feedback", str(feed), "--rejected", str(bad)])
    assert result.exit_code == 1, result.output
    out = " ".join(result.stdout.split())
    assert "stored 2 of 4 events" in out, out
    assert "row 3 (event_id 'bad-1')" in out and "row 7 (event_id 'bad-2')" in out, out
    rejected = pd.read_parquet(bad)
    assert rejected["row"].tolist() == [3, 7]
    assert rejected["event_id"].tolist() == ["bad-1", "bad-2"]
    # How the CSV file's rows were numbered is no part of what was written from it.
    assert rejected.attrs == {}, rejected.attrs


def test_a_column_named_by_the_start_of_its_name_is_told_the_name_meant(tmp_path: Path) -> None:
    """An export's ``HCP`` or ``Recommend`` column was refused as unknown with no word
    of ``hcp_id`` or ``recommendation_id``, which the same start of a word gets in a
    request or a settings file."""
    path = tmp_path / "feed.csv"
    path.write_text("event_id,event_type,HCP,Recommend\ne1,opened,H1,r1\n")
    with pytest.raises(ContractError) as refused:
        read_events(path)
    said = str(refused.value)
    assert "column 'HCP': unknown column (did you mean 'hcp_id'?); known: " in said, said
    assert "column 'Recommend': unknown column (did you mean 'recommendation_id'?)" in said
    assert "column 'hcp_id': missing required column" in said, said


def test_nextbest_feedback_says_a_value_too_large_to_hold_is_beyond_the_limit(
    env_settings: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value of hundreds of digits (a cell a spreadsheet filled with nines) was
    "value must be a finite number, got inf": the row is now refused at its column with
    the limit, as the endpoint says it of the same number."""
    from typer.testing import CliRunner

    from nextbest.cli import app

    migrate(database_url)
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    nines = "9" * 400
    feed = tmp_path / "outcomes.csv"
    feed.write_text(
        "event_id,event_type,hcp_id,value\n"
        f"big-1,outcome,H1,{nines}\n"
        f"big-2,outcome,H1,-{nines}.5\n"
        "big-3,outcome,H1,1e400\n"
        "ok-1,outcome,H2,12.5\n"
    )
    result = CliRunner().invoke(app, ["feedback", str(feed)])
    assert result.exit_code == 1, result.output
    out = " ".join(result.stdout.split())
    assert "stored 1 of 4 events" in out, out
    beyond = "is beyond the limit of 1,000,000,000 either way"
    for said in (
        f"row 1 (event_id 'big-1'): value: a number of 400 digits {beyond}",
        f"row 2 (event_id 'big-2'): value: a negative number too large to hold {beyond}",
        f"row 3 (event_id 'big-3'): value: a number too large to hold {beyond}",
    ):
        assert said in out, out
    assert "got inf" not in out, out


def test_a_value_of_text_too_large_to_hold_in_a_parquet_file_is_rejected_with_the_limit(
    settings: Settings, tmp_path: Path
) -> None:
    """A Parquet column of text (a warehouse's decimal typed as a string) as a CSV's."""
    typed = tmp_path / "outcomes.parquet"
    pd.DataFrame(
        {
            "event_id": ["t1", "t2"],
            "event_type": "outcome",
            "hcp_id": ["H1", "H2"],
            "value": ["-" + "9" * 320, "3.5"],
        }
    ).to_parquet(typed, index=False)
    done = ingest_events(settings, read_events(typed), model=None)
    assert done.accepted == 1
    assert done.rejected == [
        (
            1,
            "t1",
            "value: a negative number of 320 digits is beyond the limit of 1,000,000,000 "
            "either way",
        )
    ]
