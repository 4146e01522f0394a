"""`nextbest erase` through the command line: counts, confirmation, exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.service.erasure import Cleanup
from nextbest.settings import get_settings
from nextbest.storage import FeedbackRecord, log_recommendations, record_feedback
from nextbest.storage.db import migrate, store_session
from nextbest.storage.repository import erasure_event_id
from nextbest.storage.tables import FeedbackEvent, Recommendation
from nextbest.storage.testing import T0, recommendation_record, served_item

runner = CliRunner()


def _said(result) -> str:
    return " ".join(result.output.split())


def _log_rows(url: str, hcp_id: str) -> None:
    """Two answers (three items) and two feedback events naming ``hcp_id``."""
    with store_session(url) as session:
        log_recommendations(
            session,
            records=[
                recommendation_record(
                    f"r1-{hcp_id}", hcp_id, items=(served_item(1, "A1"), served_item(2, "A2"))
                ),
                recommendation_record(f"r2-{hcp_id}", hcp_id, items=(served_item(1, "A1"),)),
            ],
        )
        session.commit()
        record_feedback(
            session,
            events=[
                FeedbackRecord(f"o-{hcp_id}", "opened", T0, hcp_id, f"r1-{hcp_id}", "A1"),
                FeedbackRecord(f"u-{hcp_id}", "opted_out", T0, hcp_id, channel="email"),
            ],
        )


def _event_ids(url: str) -> list[str]:
    with store_session(url) as session:
        return sorted(session.scalars(select(FeedbackEvent.event_id)))


def _answers(url: str) -> list[str]:
    with store_session(url) as session:
        return sorted(session.scalars(select(Recommendation.hcp_id)))


@pytest.fixture
def served_store(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The trained model's registry (a copy) and a fresh database, as the CLI reads them."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_erase_counts_asks_erases_and_names_the_versions_that_hold_the_hcp(
    served_store: str, trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nextbest.contract import load_dataset

    known, other = (str(h) for h in load_dataset(trained.data_dir).hcps["hcp_id"].iloc[:2])
    _log_rows(served_store, known)
    _log_rows(served_store, other)
    before = _event_ids(served_store)

    # Not on a terminal (a job) without --yes: refused, after the counts.
    refused = runner.invoke(app, ["erase", known])
    said = _said(refused)
    assert refused.exit_code == 2, refused.output
    assert "recommendations 2" in said and "recommendation_items 3" in said, said
    assert "feedback_events 2" in said, said
    assert "error: not on a terminal: pass --yes to erase (nothing was erased)" in said, said
    assert _event_ids(served_store) == before

    # On a terminal: asked, and a no erases nothing.
    monkeypatch.setattr("nextbest.cli.privacy.on_a_terminal", lambda: True)
    declined = runner.invoke(app, ["erase", known], input="n\n")
    assert declined.exit_code == 2, declined.output
    assert "not confirmed: nothing was erased" in _said(declined)
    assert _event_ids(served_store) == before
    # No answer (the input ended: Ctrl-D, or Ctrl-C at the prompt) is a no too, not
    # Click's "Aborted!" with exit code 1, which says erased but not all versions known.
    unanswered = runner.invoke(app, ["erase", known], input="")
    assert unanswered.exit_code == 2, unanswered.output
    assert "not confirmed: nothing was erased" in _said(unanswered)
    assert _event_ids(served_store) == before

    erased = runner.invoke(app, ["erase", known], input="y\n")
    said = _said(erased)
    assert erased.exit_code == 0, erased.output
    assert (
        "erased 1 HCP in " in said
        and "deleted 2 recommendations, 3 recommendation items and 2 feedback events; "
        "stored 1 suppression (opted_out, every channel)"
        in said
    ), said
    assert f"v{trained.version} (champion) (run " in said and "1 of 1 HCP" in said, said
    assert "delete_model_version('nextbest', version)" in said, said
    assert "remove these HCPs from your own files too" in said, said
    assert _answers(served_store) == [other, other]
    assert _event_ids(served_store) == sorted([f"o-{other}", f"u-{other}", erasure_event_id(known)])

    # Run again (a retried job): nothing to delete, the suppression kept, exit 0.
    again = runner.invoke(app, ["erase", known, "--yes"])
    said = _said(again)
    assert again.exit_code == 0, again.output
    assert f"'{known}' was erased on " in said and "its suppression is kept" in said, said
    assert "nothing to delete: every one of these HCPs is erased already" in said, said
    assert _event_ids(served_store) == sorted([f"o-{other}", f"u-{other}", erasure_event_id(known)])


def test_erase_takes_ids_from_arguments_and_files(env_settings: Path, tmp_path: Path) -> None:
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"hcp_id": [" H2", "H3", "H2"], "ticket": ["t1", "t2", "t3"]}).to_csv(
        ids, index=False
    )
    more = tmp_path / "more.parquet"  # a second request file: every file counts
    pd.DataFrame({"hcp_id": ["H4", "H3"]}).to_parquet(more)
    url = get_settings().resolved_database_url
    _log_rows(url, "H3")
    args = ["erase", "H1", "--file", str(ids), "--file", str(more), "--yes"]
    result = runner.invoke(app, args)
    said = _said(result)
    assert result.exit_code == 0, result.output
    assert "4 HCPs to erase" in said and "stored 4 suppressions" in said, said
    assert "no registered version of model 'nextbest' holds these HCPs" in said, said
    assert _event_ids(url) == sorted(erasure_event_id(h) for h in ("H1", "H2", "H3", "H4"))
    # Ids nothing named (a typo?) are said; H3, which the log named, is not among them.
    assert "note: 3 ids nextbest never saw (no logged answer or feedback, in no registered " in said
    assert "'H1', 'H2', 'H4'; check them for typos" in said, said
    # The deleted rows are not left readable in the database's write-ahead log.
    database = Path(url.removeprefix("sqlite:///"))
    wal = database.with_name(database.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert b"r1-H3" not in database.read_bytes()


def test_erase_run_again_as_its_note_says_empties_the_log_a_server_kept_full(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server reading as erase ran kept the write-ahead log from being emptied, and
    the note says to run erase again when the servers are idle: that run found nothing
    to delete and stopped there, the deleted rows left readable in the -wal file.
    (SQLite's busy timeout shortened from 10 s: the first erase waits it out.)"""
    import sqlite3

    import nextbest.storage.db as db_module

    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 1_000)
    url = get_settings().resolved_database_url
    _log_rows(url, "H3")
    database = Path(url.removeprefix("sqlite:///"))
    wal = database.with_name(database.name + "-wal")
    server = sqlite3.connect(database, isolation_level=None)  # a server's pooled connection
    try:
        server.execute("BEGIN")
        server.execute("SELECT count(*) FROM recommendations").fetchone()
        first = runner.invoke(app, ["erase", "H3", "--yes"])
        said = _said(first)
        assert first.exit_code == 0, first.output
        assert "erased 1 HCP" in said and "write-ahead log could not be emptied" in said, said
        assert "run `nextbest erase` with the same ids again when the servers are idle" in said
        assert wal.stat().st_size > 0
        server.execute("COMMIT")  # idle, its connection still open

        again = runner.invoke(app, ["erase", "H3", "--yes"])
        said = _said(again)
        assert again.exit_code == 0, again.output
        assert "nothing to delete: every one of these HCPs is erased already" in said, said
        assert f"emptied the database's write-ahead log ({url}-wal)" in said, said
        assert "could not be emptied" not in said, said
        assert wal.stat().st_size == 0
        assert _event_ids(url) == [erasure_event_id("H3")]
    finally:
        server.close()


@pytest.mark.postgres
def test_erase_run_again_with_nothing_to_delete_vacuums_what_the_first_left(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure stopped after its commit, before VACUUM, left the deleted rows in the
    tables as dead rows; run again (as its error says), it found nothing to delete and
    vacuumed nothing. Now it vacuums each table an erasure deletes from."""
    from nextbest.storage.db import make_engine
    from nextbest.storage.repository import erase_hcps

    migrate(postgres_url)
    _log_rows(postgres_url, "H3")
    with store_session(postgres_url) as session:  # the first run, up to its commit
        erase_hcps(session, hcp_ids=["H3"], requester="test")
    tables = ("feedback_events", "recommendation_items", "recommendations")
    engine = make_engine(postgres_url)

    def dead_rows() -> dict[str, int]:
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pgstattuple")
            connection.commit()
            return {
                table: int(
                    connection.exec_driver_sql(
                        f"SELECT dead_tuple_count FROM pgstattuple('{table}')"
                    ).scalar_one()
                )
                for table in tables
            }

    try:
        assert all(dead_rows().values())
        monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(tmp_path / "models"))
        monkeypatch.setenv("NEXTBEST_DATABASE_URL", postgres_url)
        get_settings.cache_clear()
        again = runner.invoke(app, ["erase", "H3", "--yes"])
        said = _said(again)
        assert again.exit_code == 0, again.output
        assert "nothing to delete: every one of these HCPs is erased already" in said, said
        assert "vacuumed feedback_events, recommendation_items, recommendations" in said, said
        assert dead_rows() == dict.fromkeys(tables, 0)
    finally:
        engine.dispose()
        get_settings.cache_clear()


def test_erase_names_the_logged_id_a_mistyped_one_meant_and_does_not_erase_it(
    env_settings: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id nextbest never saw that differs from a logged one only in case or
    leading zeros is the request's id mistyped: the logged one is named, left as it
    is (erasure erases exactly what it is given), and the exit code says so."""
    url = database_url
    migrate(url)
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", url)
    get_settings.cache_clear()
    _log_rows(url, "H000002")
    _log_rows(url, "123")
    result = runner.invoke(app, ["erase", "h000002", "00123", "H9", "--yes"])
    said = _said(result)
    assert result.exit_code == 1, result.output
    assert "stored 3 suppressions" in said, said
    assert (
        "error: 2 ids nextbest never saw differ only in case or leading zeros from one it "
        "knows: h000002 (H000002?), 00123 (123?); those HCPs were NOT erased" in said
    ), said
    assert "`nextbest erase H000002 123`" in said, said
    assert _answers(url) == ["123", "123", "H000002", "H000002"]


def test_erase_names_the_registered_id_a_mistyped_one_meant(served_store: str, trained) -> None:
    from nextbest.contract import load_dataset

    known = str(load_dataset(trained.data_dir).hcps["hcp_id"].iloc[0])
    typed = known.swapcase()
    assert typed != known
    migrate(served_store)
    result = runner.invoke(app, ["erase", typed, "--yes"])
    said = _said(result)
    assert result.exit_code == 1, result.output
    assert f"from one it knows: {typed} ({known}?); that HCP was NOT erased" in said, said
    assert f"`nextbest erase {known}`" in said, said

    # Both spellings asked: the known one is erased, nothing is left to name.
    both = runner.invoke(app, ["erase", typed, known, "--yes"])
    assert both.exit_code == 0, both.output
    assert "NOT erased" not in _said(both)


@pytest.mark.parametrize(
    ("args", "content", "said"),
    [
        ([], None, "error: no HCP id given: name them as arguments or in --file"),
        (["--yes"], "id\nH1\n", "ids.csv, column 'hcp_id': missing required column"),
        (["--yes"], "hcp_id\n", "ids.csv: no data rows"),
        (["--yes"], "hcp_id,ticket\nH1,t1\n,t2\n", "ids.csv, row 2, column 'hcp_id': empty value"),
        (["H1"], "HCP_ID\nH2\n", "(there is 'HCP_ID': column names are lower-case"),
        (["x" * 129, "--yes"], None, "is not an id nextbest can store (1 to 128 characters)"),
    ],
    ids=["no-ids", "no-column", "no-rows", "empty-cell", "column-spelling", "too-long"],
)
def test_erase_refuses_bad_input_with_exit_2_and_erases_nothing(
    env_settings: Path, tmp_path: Path, args: list[str], content: str | None, said: str
) -> None:
    extra: list[str] = []
    if content is not None:
        ids = tmp_path / "ids.csv"
        ids.write_text(content)
        extra = ["--file", str(ids)]
    result = runner.invoke(app, ["erase", *args, *extra])
    assert result.exit_code == 2, result.output
    assert said in _said(result), result.output
    if content is not None:
        assert "--file" in _said(result) and str(tmp_path / "ids.csv") in _said(result)
    assert (
        not (env_settings / "nextbest.db").exists()
        or _event_ids(get_settings().resolved_database_url) == []
    )


def test_what_an_erasure_on_postgresql_left_is_said_without_contradiction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """VACUUM ran, but another session's open transaction kept dead rows of one table:
    the summary must not say every deleted row is gone before the note says some stay."""
    from nextbest.cli.privacy import print_cleanup
    from nextbest.service.erasure import Cleanup

    tables = ("feedback_events", "recommendation_items", "recommendations")
    print_cleanup(Cleanup("postgresql", vacuumed=tables, dead_left={"feedback_events": 3}), "db")
    out = capsys.readouterr()
    said = " ".join((out.out + out.err).split())
    assert "gone from the tables' live data, except the dead rows noted below" in said
    assert "3 dead rows of feedback_events could not be removed yet" in said
    print_cleanup(Cleanup("postgresql", vacuumed=tables, dead_left=dict.fromkeys(tables, 0)), "db")
    out = capsys.readouterr()
    said = " ".join((out.out + out.err).split())
    assert "gone from the tables' live data;" in said and "dead rows" not in said


@pytest.mark.parametrize(
    ("cleanup", "store", "said"),
    [
        pytest.param(
            Cleanup("sqlite", log_emptied=False),
            "/data/[bold]/nextbest.db",
            "(/data/[bold]/nextbest.db-wal: a server was reading)",
            id="sqlite-path",
        ),
        pytest.param(
            Cleanup("postgresql", not_vacuumed={"recommendations": "denied to [bi] role"}),
            "db",
            "recommendations could not be vacuumed (denied to [bi] role)",
            id="vacuum-refused",
        ),
        pytest.param(
            Cleanup("postgresql", not_analyzed={"recommendations": "denied to [bi] role"}),
            "db",
            "statistics of recommendations could not be refreshed (denied to [bi] role)",
            id="analyze-refused",
        ),
        pytest.param(
            Cleanup("postgresql", dead_left={"feedback_events": 2}),
            "[db]",
            "run VACUUM (INDEX_CLEANUP ON, ANALYZE) feedback_events in [db] once",
            id="dead-rows",
        ),
    ],
)
def test_what_a_cleanup_left_quotes_paths_and_reasons_as_written(
    capsys: pytest.CaptureFixture[str], cleanup: Cleanup, store: str, said: str
) -> None:
    """A store path or a server's reason with brackets in it is text, not markup."""
    from nextbest.cli.privacy import print_cleanup

    print_cleanup(cleanup, store)
    out = capsys.readouterr()
    assert said in " ".join((out.out + out.err).split())


def test_erase_exits_1_naming_a_version_whose_artifacts_cannot_be_read(
    served_store: str, trained, tmp_path: Path
) -> None:
    """Erased all the same, but a job must see that one version was not checked."""
    from nextbest import registry
    from nextbest.contract import load_dataset

    known = str(load_dataset(trained.data_dir).hcps["hcp_id"].iloc[0])
    settings = get_settings()
    client = registry.client(settings)
    current = client.get_model_version(settings.model_name, trained.version)
    gone = client.create_model_version(
        settings.model_name, (tmp_path / "no-such-artifact").as_uri(), run_id=current.run_id
    ).version
    migrate(served_store)  # a log that exists: erase makes none (a mistyped setting)
    result = runner.invoke(app, ["erase", known, "--yes"])
    said = _said(result)
    assert result.exit_code == 1, result.output
    assert "stored 1 suppression" in said, said
    assert _event_ids(served_store) == [erasure_event_id(known)]
    assert f"v{trained.version} (champion) (run " in said and "1 of 1 HCP" in said, said
    assert f"v{gone} (run {current.run_id}): could not be read, check it: " in said, said
    assert (
        f"error: 1 registered version of model 'nextbest' could not be checked for these "
        f"HCPs (v{gone}: artifacts not readable, see above) and may still hold them: "
        "restore the artifacts and run `nextbest erase` with the same ids again"
    ) in said, said


def test_lookup_of_an_hcp_with_models_names_the_versions_that_hold_it(
    served_store: str, trained
) -> None:
    """An access request asks for everything held about an HCP: the served snapshot
    of each registered version is part of it, as erase says after the fact."""
    import json

    from nextbest.contract import load_dataset

    known = str(load_dataset(trained.data_dir).hcps["hcp_id"].iloc[0])
    # Before anything was served (no recommendation log yet), the models still answer.
    unserved = runner.invoke(app, ["lookup", "--hcp", known, "--models"])
    assert unserved.exit_code == 0, unserved.output
    assert f"snapshot): v{trained.version} (champion)" in _said(unserved), unserved.output
    assert "no recommendation log" not in _said(unserved)
    plain_unserved = runner.invoke(app, ["lookup", "--hcp", known])
    assert plain_unserved.exit_code == 2 and "no recommendation log" in _said(plain_unserved)
    _log_rows(served_store, known)
    result = runner.invoke(app, ["lookup", "--hcp", known, "--models"])
    said = _said(result)
    assert result.exit_code == 0, result.output
    assert "2 logged answers" in said, said
    assert (
        f"registered versions of model 'nextbest' holding its attributes and history "
        f"features (their served snapshot): v{trained.version} (champion) (run "
    ) in said, said
    found = json.loads(runner.invoke(app, ["lookup", "--hcp", known, "--models", "--json"]).stdout)
    assert [(v["version"], v["aliases"]) for v in found["model_versions"]] == [
        (str(trained.version), ["champion"])
    ]
    # An id no version holds; without --models, no version is read or named.
    unknown = runner.invoke(app, ["lookup", "--hcp", "not-an-hcp", "--models"])
    assert "(their served snapshot): none" in _said(unknown), unknown.output
    plain = runner.invoke(app, ["lookup", "--hcp", known, "--json"])
    assert "model_versions" not in json.loads(plain.stdout)
    alone = runner.invoke(app, ["lookup", "--maintenance", "--models"])
    assert alone.exit_code == 2 and "--models goes with --hcp HCP_ID" in _said(alone)
