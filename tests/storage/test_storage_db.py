"""Engines, health check and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import multiprocessing
import shutil
import socket
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SAWarning

from nextbest.limits import STORED_LENGTHS
from nextbest.storage import (
    FeedbackRecord,
    RecommendationRecord,
    db,
    get_recommendation,
    log_recommendations,
    logged_decisions,
    make_engine,
    make_session_factory,
    migrate,
    ping,
    record_feedback,
)
from nextbest.storage.db import (
    MIGRATIONS_DIR,
    PG_MIGRATION_LOCK_TIMEOUT_S,
    DowngradeTargetError,
    MigrationLockTimeoutError,
    MissingIndexError,
    SchemaBehindError,
    alembic_config,
    check_indexes,
    downgrade,
    downgrade_plan,
    missing_indexes,
    schema_revisions,
    store_session,
)
from nextbest.storage.tables import Base
from nextbest.storage.testing import T0, recommendation_record, served_item


def _current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _logged_under(database_url: str, revision: str, *inserts: str) -> None:
    """A fresh database migrated to ``revision`` only, holding the rows ``inserts``
    write (SQL in that revision's schema): a store as an older nextbest left it."""
    assert migrate(database_url, revision=revision) == (None, revision)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            for insert in inserts:
                connection.execute(text(insert))
    finally:
        engine.dispose()


def test_migrate_reaches_head_and_is_idempotent(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Migrations must be found from the package, not from the working directory.
    monkeypatch.chdir(tmp_path)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == "0014"

    migrate(database_url)
    migrate(database_url)

    assert _current_revision(database_url) == head
    engine = make_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == {
        "alembic_version",
        "recommendations",
        "recommendation_items",
        "feedback_events",
        "maintenance_runs",
        "serving_rules",
    }


def test_migrated_schema_matches_orm_metadata(database_url: str) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection, warnings.catch_warnings():
            # SQLite's indexes on an expression are not reflected, so not compared
            # (PostgreSQL's are); the 0013 test finds them by name on both.
            warnings.filterwarnings("ignore", ".*expression-based index")
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diffs = compare_metadata(context, Base.metadata)
            # compare_metadata does not look at CHECK constraints: a later migration
            # dropping one by the name the tables give it must find that name.
            found = inspect(connection)
            checks = {
                (table, check["name"])
                for table in found.get_table_names()
                for check in found.get_check_constraints(table)
            }
    finally:
        engine.dispose()
    assert diffs == []
    assert checks == {
        (table.name, constraint.name)
        for table in Base.metadata.sorted_tables
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }


def test_every_column_named_in_the_stored_lengths_has_that_width_in_every_table() -> None:
    """The edges (data contract, key file, API) refuse values longer than
    STORED_LENGTHS says: a table holding one of these columns narrower would store
    a value they let through cut short on PostgreSQL, or refuse it there only."""
    widths = {
        (table.name, column.name): column.type.length
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if column.name in STORED_LENGTHS
    }
    assert {name for _, name in widths} == set(STORED_LENGTHS)
    assert {key: width for key, width in widths.items() if width != STORED_LENGTHS[key[1]]} == {}


def test_commands_create_a_schema_but_leave_an_older_one_for_an_upgrade(
    database_url: str,
) -> None:
    """A command of a new release run against a shared database upgraded it without a
    word, and a worker of the old release still serving it could not restart. Without
    ``upgrade`` an empty database gets the schema, an older one is refused as it is."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert schema_revisions(database_url) == (None, head)  # reading creates nothing
    assert _current_revision(database_url) is None
    assert migrate(database_url, revision="0008") == (None, "0008")
    with pytest.raises(SchemaBehindError) as refused, store_session(database_url):
        pass
    said = str(refused.value)
    assert "revision 0008, older than this release's" in said and "nextbest db upgrade" in said
    assert schema_revisions(database_url) == ("0008", head)  # left as it was
    assert migrate(database_url) == ("0008", head)  # what `db upgrade` and serve do
    with store_session(database_url) as session:  # current: used as it is
        assert session.execute(text("SELECT count(*) FROM recommendations")).scalar() == 0


def test_upgrade_to_0004_keeps_logged_answers_without_their_p_no_action(
    database_url: str,
) -> None:
    """Answers logged under 0003, their items and feedback survive the upgrade; they
    have no probability of no action (the evidence re-scores theirs), new ones do."""
    at = "'2024-03-04 09:00:00.000000'"  # how SQLite stores timestamps; PostgreSQL reads it
    _logged_under(
        database_url,
        "0003",
        "INSERT INTO recommendations (recommendation_id, created_at, hcp_id, "
        "requester, purpose, channel_filter, model_version, holdout, policy, "
        "epsilon, holdout_rate, decided_for, n_candidates) VALUES "
        f"('old-1', {at}, 'h1', 'crm', 'promotional', NULL, '3', false, "
        f"'epsilon_greedy', 0.3, 0.1, {at}, 12), "
        f"('old-2', {at}, 'h2', 'crm', 'promotional', NULL, '3', true, "
        f"'epsilon_greedy', 0.3, 0.1, {at}, 12)",
        "INSERT INTO recommendation_items (recommendation_id, rank, action_id, "
        "channel, content_id, score, expected_uplift, p_engage, propensity, "
        "explored) VALUES ('old-1', 1, 'a1', 'email', 'c1', 0.5, 0.2, 0.3, 0.8, "
        "false)",
        "INSERT INTO feedback_events (event_id, event_type, occurred_at, "
        "received_at, recommendation_id, hcp_id, value) VALUES "
        f"('e-1', 'outcome', {at}, {at}, 'old-1', 'h1', 2.0)",
    )
    assert migrate(database_url) == ("0003", "0014")

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            old = get_recommendation(session, recommendation_id="old-1")
            assert old is not None and old.p_no_action is None
            assert [item.action_id for item in old.items] == ["a1"]
            log_recommendations(
                session,
                records=[
                    RecommendationRecord(
                        recommendation_id="new-1",
                        created_at=datetime(2024, 3, 6, 9, 0, tzinfo=UTC),
                        hcp_id="h2",
                        requester="crm",
                        purpose="promotional",
                        channel_filter=None,
                        model_version="3",
                        holdout=True,
                        policy="epsilon_greedy",
                        epsilon=0.3,
                        holdout_rate=0.1,
                        n_candidates=12,
                        p_no_action=0.73,
                    )
                ],
            )
            session.commit()
            frame = logged_decisions(session, details=True).set_index("recommendation_id")
    finally:
        engine.dispose()
    assert list(frame.index) == ["old-1", "old-2", "new-1"]
    assert frame.loc["old-1", "outcome"] == 2.0
    assert frame[["p_no_action"]].isna().to_numpy().ravel().tolist() == [True, True, False]
    assert frame.loc["new-1", "p_no_action"] == 0.73


def test_upgrade_to_0005_keeps_logged_answers_without_a_rep(
    database_url: str, make_recommendation
) -> None:
    """Answers logged under 0004 survive with no rep; a plan's new answers carry theirs."""
    at = "'2024-03-04 09:00:00.000000'"
    _logged_under(
        database_url,
        "0004",
        "INSERT INTO recommendations (recommendation_id, created_at, hcp_id, "
        "requester, purpose, channel_filter, model_version, holdout, policy, "
        "epsilon, holdout_rate, decided_for, n_candidates, p_no_action) VALUES "
        f"('old-1', {at}, 'h1', 'ops-admin', 'promotional', 'rep_*', '3', false, "
        f"'epsilon_greedy', 0.3, 0.1, {at}, 12, 0.1)",
    )
    engine = make_engine(database_url)
    try:
        assert migrate(database_url) == ("0004", "0014")
        with make_session_factory(engine)() as session:
            old = get_recommendation(session, recommendation_id="old-1")
            assert old is not None and old.rep_id is None
            planned = make_recommendation("new-1", "h1", purpose="medical", rep_id="msl-t001")
            log_recommendations(session, records=[planned])
            session.commit()
            new = get_recommendation(session, recommendation_id="new-1")
            assert new is not None and new.rep_id == "msl-t001"
    finally:
        engine.dispose()


def test_downgrade_from_the_command_line_keeps_the_log_and_its_feedback(
    database_url: str,
) -> None:
    """docs/operations.md's downgrade (alembic's command line: env.py opens its own
    connection). On SQLite, dropping a column rebuilds the table: with foreign keys
    enforced, dropping the old ``recommendations`` failed on the feedback naming an
    answer, half done (a leftover copy of the table), and would have deleted every
    item (ON DELETE CASCADE) when no feedback named one."""
    at = "'2024-03-04 09:00:00.000000'"
    _logged_under(
        database_url,
        "0012",
        "INSERT INTO recommendations (recommendation_id, created_at, hcp_id, "
        "requester, purpose, channel_filter, model_version, holdout, policy, "
        "epsilon, holdout_rate, decided_for, n_candidates) VALUES "
        f"('old-1', {at}, 'h1', 'crm', 'promotional', NULL, '3', false, "
        f"'epsilon_greedy', 0.3, 0.1, {at}, 12), "
        f"('old-2', {at}, 'h2', 'crm', 'promotional', NULL, '3', false, "
        f"'epsilon_greedy', 0.3, 0.1, {at}, 12)",
        "INSERT INTO recommendation_items (recommendation_id, rank, action_id, "
        "channel, content_id, score, expected_uplift, p_engage, propensity, "
        "explored) VALUES ('old-1', 1, 'a1', 'email', 'c1', 0.5, 0.2, 0.3, 0.8, "
        "false), ('old-2', 1, 'a2', 'email', 'c2', 0.5, 0.2, 0.3, 0.8, false)",
        "INSERT INTO feedback_events (event_id, event_type, occurred_at, "
        "received_at, recommendation_id, hcp_id, value) VALUES "
        f"('e-1', 'outcome', {at}, {at}, 'old-1', 'h1', 2.0)",
    )
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", database_url)
    command.downgrade(config, "0003")  # rebuilds recommendations four times on SQLite

    assert _current_revision(database_url) == "0003"
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            counts = {
                table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("recommendations", "recommendation_items", "feedback_events")
            }
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert counts == {"recommendations": 2, "recommendation_items": 2, "feedback_events": 1}
    assert not {name for name in tables if name.startswith("_alembic_tmp")}
    assert "maintenance_runs" not in tables  # 0008 undone
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert migrate(database_url) == ("0003", head)  # and back up, as `db upgrade` does


def _seeded_sqlite(path: Path) -> str:
    """A SQLite file at head holding answers (one a holdout, without items), their
    items and feedback naming them, written by the repository's own functions."""
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            log_recommendations(
                session,
                records=[
                    recommendation_record(
                        "r1", "h1", items=(served_item(1, "a1"), served_item(2, "a2"))
                    ),
                    recommendation_record("r2", "h2", items=(served_item(1, "a3"),)),
                    recommendation_record("r3", "h3", holdout=True),
                ],
            )
            session.commit()
            result = record_feedback(
                session,
                events=[
                    FeedbackRecord("e1", "delivered", T0 + timedelta(hours=1), "h1", "r1", "a1"),
                    FeedbackRecord("e2", "outcome", T0 + timedelta(days=2), "h2", "r2", value=3.0),
                ],
            )
            assert len(result.accepted) == 2, result
    finally:
        engine.dispose()
    return url


_STORED = {"recommendations": 3, "recommendation_items": 3, "feedback_events": 2}


def _stored_rows(engine: Engine) -> tuple[dict[str, int], list[Any], int]:
    """Rows per table, foreign keys left pointing at nothing, and whether a
    connection from ``engine``'s pool (the one migrate used) enforces foreign keys."""
    with engine.connect() as connection:
        counts = {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in _STORED
        }
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        enforced = connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
    return counts, broken, enforced


def _migrations_with(tmp_path: Path, body: str) -> Path:
    """This release's migrations plus one more after its head, whose upgrade runs
    ``body`` (indented Python using ``op``)."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory, ignore=shutil.ignore_patterns("__pycache__"))
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    (directory / "versions" / "9001_next.py").write_text(
        "from alembic import op\n\n"
        f"revision = '9001'\ndown_revision = '{head}'\nbranch_labels = None\n"
        "depends_on = None\n\n\ndef upgrade() -> None:\n"
        f"{body}\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    return directory


def test_a_migration_rebuilding_the_answers_keeps_their_items_and_feedback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` and `db upgrade` migrate SQLite through migrate(), on a connection of
    the engine the service then writes with. A later migration that rebuilds
    ``recommendations`` (alembic's batch mode: copy, drop the old table, rename)
    must not take the items with it (ON DELETE CASCADE) nor fail on the feedback
    naming an answer; and foreign keys are enforced again on the pooled connection."""
    url = _seeded_sqlite(tmp_path / "nextbest.db")
    monkeypatch.setattr(
        db,
        "MIGRATIONS_DIR",
        _migrations_with(
            tmp_path,
            "    for table in ('recommendations', 'recommendation_items'):\n"
            "        with op.batch_alter_table(table, recreate='always'):\n"
            "            pass",
        ),
    )
    engine = make_engine(url)
    try:
        with pytest.warns(SAWarning, match="expression-based index ix_recommendations_hcp_id"):
            assert migrate(engine)[1] == "9001"
        assert _stored_rows(engine) == (_STORED, [], 1)
    finally:
        engine.dispose()
    # The rebuild copies what SQLAlchemy reflects, which skips 0013's index on an
    # expression: gone without a word, but the check `serve` and `db upgrade` run
    # after migrating names it.
    assert [(index.name, index.table) for index in missing_indexes(url)] == [
        ("ix_recommendations_hcp_id_folded", "recommendations")
    ]


def test_a_sqlite_migration_leaving_rows_pointing_at_nothing_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With foreign keys unenforced during a migration, a deleted answer would leave
    its items and feedback behind: the keys are checked before the commit, the
    migration rolls back whole, and the pooled connection enforces them again."""
    url = _seeded_sqlite(tmp_path / "nextbest.db")
    monkeypatch.setattr(
        db,
        "MIGRATIONS_DIR",
        _migrations_with(
            tmp_path, "    op.execute(\"DELETE FROM recommendations WHERE hcp_id = 'h1'\")"
        ),
    )
    engine = make_engine(url)
    try:
        with pytest.raises(RuntimeError, match=r"rows pointing at nothing.*recommendation_items"):
            migrate(engine)
        assert _stored_rows(engine) == (_STORED, [], 1)
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() != "9001"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "revision",
    [  # every revision but the head
        script.revision
        for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
        if script.nextrev
    ],
)
def test_every_sqlite_upgrade_step_keeps_the_log_and_its_feedback(
    tmp_path: Path, revision: str
) -> None:
    """A store with answers, items and feedback, taken down to ``revision`` by the
    command line (as docs/operations.md rolls back) and up again by migrate() (as
    `serve` and `db upgrade` do): every step either way, on SQLite where a step may
    rebuild a table, keeps every row and leaves no foreign key pointing at nothing."""
    url = _seeded_sqlite(tmp_path / "nextbest.db")
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", url)
    command.downgrade(config, revision)
    assert _current_revision(url) == revision
    engine = make_engine(url)
    try:
        assert _stored_rows(engine) == (_STORED, [], 1)
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert migrate(engine) == (revision, head)
        assert _stored_rows(engine) == (_STORED, [], 1)
    finally:
        engine.dispose()
    assert missing_indexes(url) == []  # no step's rebuild dropped one


def test_an_index_missing_from_the_schema_is_named_with_its_table_and_how_to_recreate_it(
    database_url: str,
) -> None:
    """A migrated database has every index of tables.py; one dropped (by hand, by a
    restore that left it out, by a SQLite rebuild) is named with its table, and the
    statement given recreates it, on SQLite and PostgreSQL alike."""
    migrate(database_url)
    assert missing_indexes(database_url) == []
    check_indexes(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            for index in ("ix_feedback_events_hcp_id_folded", "ix_recommendations_decided_for"):
                connection.exec_driver_sql(f"DROP INDEX {index}")
        missing = missing_indexes(database_url)
        assert [(index.name, index.table) for index in missing] == [
            ("ix_recommendations_decided_for", "recommendations"),
            ("ix_feedback_events_hcp_id_folded", "feedback_events"),
        ]
        with pytest.raises(MissingIndexError) as refused:
            check_indexes(database_url)
        said = str(refused.value)
        assert "revision 0014" in said, said
        assert "index ix_recommendations_decided_for on table recommendations" in said, said
        assert "index ix_feedback_events_hcp_id_folded on table feedback_events" in said, said
        create = (
            "CREATE INDEX CONCURRENTLY" if engine.dialect.name == "postgresql" else ("CREATE INDEX")
        )
        assert (
            f"{create} ix_feedback_events_hcp_id_folded ON feedback_events "
            "(lower(ltrim(hcp_id, '0')))"
        ) in said, said
        with engine.connect() as connection:
            # As an operator would run them (CONCURRENTLY runs outside a transaction).
            connection.execution_options(isolation_level="AUTOCOMMIT")
            for statement in (
                said.split("run the command again: ")[1].split(" (docs/")[0].split("; ")
            ):
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
    assert missing_indexes(database_url) == []


def test_upgrade_to_0006_keeps_logged_answers_without_a_rules_fingerprint(
    database_url: str, make_recommendation
) -> None:
    """Answers logged under 0005 survive with no rules fingerprint; new ones carry theirs."""
    at = "'2024-03-04 09:00:00.000000'"
    _logged_under(
        database_url,
        "0005",
        "INSERT INTO recommendations (recommendation_id, created_at, hcp_id, "
        "requester, purpose, channel_filter, model_version, holdout, policy, "
        "epsilon, holdout_rate, decided_for, n_candidates, p_no_action, rep_id) "
        f"VALUES ('old-1', {at}, 'h1', 'ops-admin', 'promotional', NULL, '3', "
        f"false, 'epsilon_greedy', 0.3, 0.1, {at}, 12, 0.1, 'rep-1')",
        "INSERT INTO recommendation_items (recommendation_id, rank, action_id, "
        "channel, content_id, score, expected_uplift, p_engage, propensity, "
        "explored) VALUES ('old-1', 1, 'a1', 'email', 'c1', 0.5, 0.2, 0.3, 0.8, "
        "false)",
    )
    engine = make_engine(database_url)
    try:
        assert migrate(database_url) == ("0005", "0014")
        with make_session_factory(engine)() as session:
            old = get_recommendation(session, recommendation_id="old-1")
            assert old is not None and old.rules_fingerprint is None
            assert old.rep_id == "rep-1" and old.p_no_action == 0.1
            assert [item.action_id for item in old.items] == ["a1"]
            # Items logged before 0007 have no reasons (NULL), and read as none.
            assert [item.reasons for item in old.items] == [()]
            new = make_recommendation("new-1", "h1", rules_fingerprint="0123456789ab")
            log_recommendations(session, records=[new])
            session.commit()
            logged = get_recommendation(session, recommendation_id="new-1")
            assert logged is not None and logged.rules_fingerprint == "0123456789ab"
    finally:
        engine.dispose()


def test_upgrade_to_0008_keeps_the_log_and_records_the_next_prune(
    database_url: str, tmp_path: Path
) -> None:
    """A store at 0007 with answers and feedback gets an empty maintenance_runs (no
    run before it is known), keeps every row, and its next prune is recorded."""
    from datetime import timedelta

    from nextbest.service.erasure import prune
    from nextbest.settings import Settings
    from nextbest.storage.repository import RowCounts, furthest_prune, maintenance_runs

    at = "'2024-03-04 09:00:00.000000'"
    _logged_under(
        database_url,
        "0007",
        "INSERT INTO recommendations (recommendation_id, created_at, hcp_id, "
        "requester, purpose, channel_filter, model_version, holdout, policy, "
        "epsilon, holdout_rate, decided_for, n_candidates, p_no_action, rep_id, "
        f"rules_fingerprint) VALUES ('old-1', {at}, 'h1', 'crm', 'promotional', "
        f"NULL, '3', false, 'epsilon_greedy', 0.3, 0.1, {at}, 12, 0.1, NULL, "
        "'0123456789ab')",
        "INSERT INTO recommendation_items (recommendation_id, rank, action_id, "
        "channel, content_id, score, expected_uplift, p_engage, propensity, "
        "explored, reasons) VALUES ('old-1', 1, 'a1', 'email', 'c1', 0.5, 0.2, "
        "0.3, 0.8, false, '[\"no e-mail in 9 days\"]')",
        "INSERT INTO feedback_events (event_id, event_type, occurred_at, "
        "received_at, recommendation_id, hcp_id, requester) VALUES "
        f"('e-1', 'opened', {at}, {at}, 'old-1', 'h1', 'esp'), "
        f"('e-2', 'opted_out', {at}, {at}, NULL, 'h1', 'esp')",
    )
    engine = make_engine(database_url)
    try:
        assert "maintenance_runs" not in inspect(engine).get_table_names()
        assert migrate(database_url) == ("0007", "0014")
        assert "maintenance_runs" in inspect(engine).get_table_names()
        with make_session_factory(engine)() as session:
            old = get_recommendation(session, recommendation_id="old-1")
            assert old is not None and old.rules_fingerprint == "0123456789ab"
            assert [item.reasons for item in old.items] == [("no e-mail in 9 days",)]
            assert maintenance_runs(session, limit=10) == ([], 0)
            assert furthest_prune(session) is None
    finally:
        engine.dispose()

    cut = datetime(2024, 3, 4, 9, tzinfo=UTC) + timedelta(days=1)
    settings = Settings(models_dir=tmp_path / "models", database_url=database_url)
    deleted, _ = prune(settings, cut, arguments="--before 2024-03-05")
    assert deleted == RowCounts(1, 1, 1)  # the opt-out is kept
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            [run], _ = maintenance_runs(session, limit=10)
            assert (run.outcome, run.deleted, run.cutoff) == ("finished", deleted, cut)
            assert furthest_prune(session) == run
    finally:
        engine.dispose()


def test_upgrade_to_0011_reads_opt_outs_stored_before_as_stored(database_url: str) -> None:
    """Opt-outs stored under 0010 carry no mark of how their channel was read (with a
    model or without): they stay as they were read, a channel the catalog lacks
    withdrawing nothing; one stored now with no model is marked, read against the
    catalog."""
    from nextbest.storage import FeedbackRecord, record_feedback
    from nextbest.storage.repository import serving_history

    at = "'2024-03-04 09:00:00.000000'"
    _logged_under(
        database_url,
        "0010",
        "INSERT INTO feedback_events (event_id, event_type, occurred_at, "
        "received_at, hcp_id, channel, requester) VALUES "
        f"('old-sms', 'opted_out', {at}, {at}, 'h1', 'sms', 'sms-gw')",
    )
    engine = make_engine(database_url)
    try:
        assert migrate(database_url) == ("0010", "0014")
        with make_session_factory(engine)() as session:
            new = FeedbackRecord(
                event_id="new-fax",
                event_type="opted_out",
                hcp_id="h2",
                channel="Fax",
                occurred_at=datetime(2024, 3, 4, 10, tzinfo=UTC),
            )
            assert record_feedback(session, events=[new]).accepted == ["new-fax"]
            found = serving_history(
                session,
                hcp_ids=["h1", "h2"],
                windows=[],
                dismissed_since=None,
                until=datetime(2024, 3, 5, tzinfo=UTC),
            )
    finally:
        engine.dispose()
    assert {key: out for key, (_, out) in found.consent.items()} == {("h1", "sms"): True}
    assert set(found.consent_unmatched) == {("h2", "fax", True)}


def test_upgrade_to_0012_indexes_the_day_each_logged_answer_was_decided_for(
    database_url: str,
) -> None:
    """Answers logged under 0011 keep their decision time; 0012 indexes it, so the
    answers of the day a `picks --log` send decides for are read without walking the
    log, those logged before the upgrade included. A downgrade drops the index only."""
    from nextbest.storage.repository import hcps_logged_for_day

    late, next_day = "'2024-03-04 23:50:00.000000'", "'2024-03-05 00:10:00.000000'"
    _logged_under(
        database_url,
        "0011",
        "INSERT INTO recommendations (recommendation_id, created_at, hcp_id, "
        "requester, purpose, channel_filter, model_version, holdout, policy, "
        "epsilon, holdout_rate, decided_for, n_candidates) VALUES "
        f"('old-1', {late}, 'h1', 'nextbest picks (jdoe)', 'promotional', NULL, '3', "
        f"false, 'epsilon_greedy', 0.3, 0.1, {late}, 12), "
        f"('old-2', {next_day}, 'h2', 'nextbest picks (jdoe)', 'promotional', NULL, '3', "
        f"false, 'epsilon_greedy', 0.3, 0.1, {next_day}, 12)",
    )

    def indexed(engine: Engine) -> bool:
        with warnings.catch_warnings():  # 0013's are on an expression: not reflected
            warnings.filterwarnings("ignore", ".*expression-based index")
            found = inspect(engine).get_indexes("recommendations")
        return {"name": "ix_recommendations_decided_for", "columns": ["decided_for"]} in [
            {"name": index["name"], "columns": index["column_names"]} for index in found
        ]

    engine = make_engine(database_url)
    try:
        assert not indexed(engine)
        assert migrate(database_url) == ("0011", "0014")
        assert indexed(engine)
        with make_session_factory(engine)() as session:
            days = [
                hcps_logged_for_day(session, day=day, requester_prefix="nextbest picks (")
                for day in (T0.date(), T0.date() + timedelta(days=1))
            ]
        assert days == [{"h1"}, {"h2"}]
        engine.dispose()
        config = alembic_config()
        config.set_main_option("sqlalchemy.url", database_url)
        command.downgrade(config, "0011")
        assert not indexed(engine)
        with engine.connect() as connection:
            count = connection.execute(text("SELECT count(*) FROM recommendations")).scalar()
        assert count == 2
    finally:
        engine.dispose()


def test_upgrade_to_0013_indexes_each_hcp_id_as_the_near_id_check_folds_it(
    database_url: str,
) -> None:
    """Rows logged under 0012 are found by the near-id check through 0013's indexes
    of the folded id (lower case, leading zeros dropped), on both tables; a downgrade
    drops the indexes only."""
    from nextbest.storage.repository import hcps_spelled_alike

    at = "'2024-03-04 09:00:00.000000'"
    _logged_under(
        database_url,
        "0012",
        "INSERT INTO recommendations (recommendation_id, created_at, hcp_id, "
        "requester, purpose, channel_filter, model_version, holdout, policy, "
        "epsilon, holdout_rate, decided_for, n_candidates) VALUES "
        f"('old-1', {at}, 'H000002', 'crm', 'promotional', NULL, '3', false, "
        f"'epsilon_greedy', 0.3, 0.1, {at}, 12)",
        "INSERT INTO feedback_events (event_id, event_type, occurred_at, received_at, "
        f"hcp_id) VALUES ('e-1', 'opened', {at}, {at}, '0h000002')",
    )
    folded = {"ix_recommendations_hcp_id_folded", "ix_feedback_events_hcp_id_folded"}
    engine = make_engine(database_url)
    try:
        assert not folded & {name for name, _ in _index_names(engine)}
        assert migrate(database_url) == ("0012", "0014")
        assert folded <= {name for name, _ in _index_names(engine)}
        with make_session_factory(engine)() as session:
            assert hcps_spelled_alike(session, hcp_ids=["h000002"]) == {"H000002", "0h000002"}
        engine.dispose()
        config = alembic_config()
        config.set_main_option("sqlalchemy.url", database_url)
        command.downgrade(config, "0012")
        assert not folded & {name for name, _ in _index_names(engine)}
        with engine.connect() as connection:
            counts = [
                connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("recommendations", "feedback_events")
            ]
        assert counts == [1, 1]
    finally:
        engine.dispose()


def test_migrate_accepts_an_engine_and_leaves_it_usable(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM feedback_events")).scalar() == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_migration_behind_an_open_transaction_gives_up_and_changes_nothing(
    postgres_url: str,
) -> None:
    """A BI session's open transaction that read ``recommendations`` holds a lock an
    ALTER TABLE must wait for; the migration gives up after its lock timeout, instead
    of queueing every later query on the table behind it, and rolls back whole."""
    assert migrate(postgres_url, revision="0002") == (None, "0002")
    bi = make_engine(postgres_url)
    try:
        with bi.connect() as holding:
            holding.exec_driver_sql("SET application_name = 'tableau'")
            holding.execute(text("SELECT count(*) FROM recommendations")).scalar()
            started = time.monotonic()
            with pytest.raises(MigrationLockTimeoutError) as refused:
                # 0003 alters feedback_events first (done), then recommendations (held).
                migrate(postgres_url)
            waited = time.monotonic() - started
            # Meanwhile the session kept working, and no one queued behind the migration.
            assert holding.execute(text("SELECT count(*) FROM feedback_events")).scalar() == 0
            holding.rollback()
        said = str(refused.value)
        assert PG_MIGRATION_LOCK_TIMEOUT_S <= waited < PG_MIGRATION_LOCK_TIMEOUT_S + 5, waited
        assert f"waited {PG_MIGRATION_LOCK_TIMEOUT_S} s for a lock on recommendations" in said
        assert "application 'tableau'" in said and "pid " in said, said
        assert "nothing was changed (the migration rolled back)" in said, said
        assert "'recommendations'::regclass" in said and "\n" not in said, said
        # Nothing changed: the revision, and the column 0003 had added before it waited.
        assert _current_revision(postgres_url) == "0002"
        columns = {column["name"] for column in inspect(bi).get_columns("feedback_events")}
        assert "requester" not in columns
    finally:
        bi.dispose()
    # The session gone, the same migration goes through.
    assert migrate(postgres_url) == ("0002", "0014")


@pytest.mark.postgres
def test_a_downgrade_behind_an_open_transaction_names_the_table_and_who_holds_it(
    postgres_url: str,
) -> None:
    """Dropping 0012's index needs ``recommendations`` to itself, as an ALTER TABLE
    does, but its statement names only the index: the refusal said "a lock on a
    table" and named no session, so the operator could not tell whom to stop."""
    assert migrate(postgres_url) == (None, "0014")
    bi = make_engine(postgres_url)
    try:
        with bi.connect() as holding:
            holding.exec_driver_sql("SET application_name = 'tableau'")
            holding.execute(text("SELECT count(*) FROM recommendations")).scalar()
            with pytest.raises(MigrationLockTimeoutError) as refused:
                downgrade(postgres_url, "0011")
            holding.rollback()
    finally:
        bi.dispose()
    said = str(refused.value)
    assert f"waited {PG_MIGRATION_LOCK_TIMEOUT_S} s for a lock on recommendations," in said, said
    assert "application 'tableau'" in said, said
    assert _current_revision(postgres_url) == "0014"
    assert downgrade(postgres_url, "0011") == ("0014", "0011")  # the session gone


def _schema_parts(url: str) -> set[str]:
    """The tables, columns and indexes of the database at ``url``, named as
    :func:`downgrade_plan` names what a downgrade drops."""
    engine = make_engine(url)
    try:
        found = inspect(engine)
        parts: set[str] = set()
        for table in found.get_table_names():
            if table == "alembic_version":
                continue
            parts.add(f"table {table}")
            parts |= {f"column {table}.{c['name']}" for c in found.get_columns(table)}
        parts |= {f"index {name} on {table}" for name, table in _index_names(engine)}
    finally:
        engine.dispose()
    return parts


def _index_names(engine: Engine) -> list[tuple[str, str]]:
    """(index, table) of every index made by name (SQLite's automatic ones aside),
    those on an expression included: SQLAlchemy does not reflect them on SQLite."""
    if engine.dialect.name != "sqlite":
        found = inspect(engine)
        return [
            (str(index["name"]), table)
            for table in found.get_table_names()
            for index in found.get_indexes(table)
        ]
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
        return [(str(name), str(table)) for name, table in rows]


def test_a_downgrade_plan_names_what_each_step_down_drops(database_url: str) -> None:
    """`nextbest db downgrade` asks before dropping data (below 0008, the trail of
    every prune and erasure): what it names must be what each step removes, read
    from the migrations themselves, so a new migration is named without a list kept
    by hand. Only reads: the schema stays where it is until the downgrade."""
    assert migrate(database_url) == (None, "0014")
    script = ScriptDirectory.from_config(alembic_config())
    steps = [step.revision for step in script.walk_revisions()]  # newest first
    assert downgrade_plan(database_url, "0014") == ("0014", [])
    before, undone = downgrade_plan(database_url, "0007")
    assert before == "0014" and [step.revision for step in undone] == steps[:7]
    assert undone[6].description == "maintenance_runs: the trail of every prune and erasure"
    assert "table maintenance_runs" in undone[6].drops
    assert _current_revision(database_url) == "0014"
    for above, below in itertools.pairwise(steps):
        (step,) = downgrade_plan(database_url, below)[1]
        assert step.revision == above and step.drops, step
        had = _schema_parts(database_url)
        downgrade(database_url, below)
        gone = had - _schema_parts(database_url)
        # Each named part is gone (a table's columns and indexes go with it).
        assert set(step.drops) <= gone, (above, step.drops, gone)
        tables = {part.removeprefix("table ") for part in step.drops if part.startswith("table ")}
        unnamed = {p for p in gone - set(step.drops) if p.split()[-1].split(".")[0] not in tables}
        assert not unnamed, (above, unnamed)
    with pytest.raises(DowngradeTargetError, match="below 0014"):
        downgrade_plan(database_url, "0014")


def test_a_downgrade_is_refused_when_the_schema_moved_since_it_was_planned(
    database_url: str,
) -> None:
    """`nextbest db downgrade` shows what it drops, asks, then downgrades: a server
    upgrading the database at start in between made it drop what 0013 added, which
    was never shown. Read again under the migration lock, a moved revision refuses
    the run, naming both, and nothing changes."""
    assert migrate(database_url, revision="0011") == (None, "0011")
    planned_from, undone = downgrade_plan(database_url, "0010")
    assert planned_from == "0011" and [step.revision for step in undone] == ["0011"]
    assert migrate(database_url) == ("0011", "0014")  # a server starting meanwhile
    with pytest.raises(DowngradeTargetError) as refused:
        downgrade(database_url, "0010", planned_from=planned_from)
    assert str(refused.value) == (
        "the database's schema moved from revision 0011, which the downgrade was planned "
        "from, to 0014 since (another operator, or a server upgrading it at start): run "
        "the downgrade again to see what it undoes now"
    )
    assert _current_revision(database_url) == "0014"
    # Planned from where it is, it runs.
    assert downgrade(database_url, "0010", planned_from="0014") == ("0014", "0010")


def _migrate_at(url: str, start: float) -> str:
    """Run in a worker process: wait for the common start time, then migrate."""
    while time.time() < start:
        time.sleep(0.001)
    migrate(url)
    return "ok"


def test_concurrent_migrate_from_several_processes(database_url: str) -> None:
    # API workers all migrate at start-up; none of them may fail. Without the
    # migration lock most runs of this test fail with "table ... already exists".
    n_workers = 6
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        # Start every worker (imports included) first, so they really migrate at once.
        list(pool.map(abs, range(n_workers)))
        start = time.time() + 1.0
        results = list(pool.map(_migrate_at, [database_url] * n_workers, [start] * n_workers))
    assert results == ["ok"] * n_workers
    assert _current_revision(database_url) == "0014"


def test_a_store_at_the_newest_schema_is_opened_while_a_writer_holds_its_lock(
    tmp_path: Path,
) -> None:
    # Every command and serving worker migrates first. On SQLite that took the write
    # lock and checked every foreign key of the log even with no step to run: behind
    # a writer holding the lock (a prune's batch, another worker's migration) it
    # waited out busy_timeout and failed "database is locked", and on a year of log
    # the check held writes back for seconds. A store at the newest revision is read.
    import sqlite3

    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    head = migrate(url)[1]
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA busy_timeout = 0")
        holder.execute("BEGIN IMMEDIATE")
        assert migrate(url, upgrade=False) == (head, head)
        engine = make_engine(url)
        try:
            assert db._at_revision(engine, "head") == head
            assert db._at_revision(engine, "0013") is None
        finally:
            engine.dispose()
        with store_session(url) as session:
            assert logged_decisions(session).empty
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Behind, it is migrated under the lock as before.
    downgrade(url, "0013")
    assert migrate(url) == ("0013", head)


def _connect_at(url: str, start: float) -> str:
    """Run in a worker process: wait for the common start time, then open a connection."""
    while time.time() < start:
        pass
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar())
    finally:
        engine.dispose()


def test_processes_opening_a_new_sqlite_file_at_once_all_get_wal(tmp_path: Path) -> None:
    # Connections racing to switch a new file to WAL deadlock on its locks, and
    # SQLite fails one of them at once instead of waiting; without the retry about
    # one connection in thirty failed here with "database is locked".
    n_workers, rounds = 8, 10
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        list(pool.map(abs, range(n_workers)))
        for i in range(rounds):
            url = f"sqlite:///{tmp_path / f'new-{i}.db'}"
            start = time.time() + 0.2
            modes = list(pool.map(_connect_at, [url] * n_workers, [start] * n_workers))
            assert modes == ["wal"] * n_workers


def test_ping_answers_true_on_a_live_database(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert ping(engine) is True
    finally:
        engine.dispose()


def test_ping_answers_false_instead_of_raising() -> None:
    # Nothing listens on port 1: the connection is refused at once.
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    try:
        assert ping(engine) is False
    finally:
        engine.dispose()


def test_a_postgres_host_that_never_answers_is_given_up_on_after_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A listening socket nobody accepts on: the TCP handshake completes (backlog)
    # and the server never says a word, as a host behind a dropping firewall.
    import nextbest.storage.db as db

    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT_S", 2)  # libpq's minimum
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:
        port = silent.getsockname()[1]
        engine = make_engine(f"postgresql://nobody@127.0.0.1:{port}/nothing")
        reader = db.make_reader(engine)
        try:
            assert engine.url.query["connect_timeout"] == "2"
            assert reader.url.query["connect_timeout"] == "2"
            started = time.monotonic()
            assert ping(engine) is False
            assert time.monotonic() - started < 30  # not the system's TCP timeout
        finally:
            engine.dispose()
            reader.dispose()
    own = make_engine("postgresql://u@db.example/x?connect_timeout=3")
    assert own.url.query["connect_timeout"] == "3"  # the URL's own is kept


def test_sqlite_connections_are_durable_wal(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            settings = {
                pragma: connection.exec_driver_sql(f"PRAGMA {pragma}").scalar()
                for pragma in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert path.parent.is_dir()
    # synchronous 2 == FULL: every commit is fsynced before it is acknowledged.
    assert settings == {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": 10000,
        "foreign_keys": 1,
    }


def test_postgres_url_uses_psycopg_and_pre_ping() -> None:
    engine = make_engine("postgresql://user@db.example:5432/nextbest")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.pool._pre_ping is True
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql+pymysql://user@localhost/nextbest", "unsupported database backend 'mysql'"),
        ("mssql+pyodbc://user@dsn", "unsupported database backend 'mssql'"),
    ],
)
def test_make_engine_refuses_other_backends(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_engine(url)


def _feedback_rows(engine, first: int, n: int) -> None:
    """``n`` rows in the store, through a plain table of its own (size, not meaning)."""
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, v TEXT)")
        )
        connection.execute(text("CREATE INDEX IF NOT EXISTS filler_v ON filler (v)"))
        connection.execute(
            text("INSERT INTO filler (id, v) VALUES (:id, :v)"),
            [{"id": i, "v": f"{i:08d}" * 8} for i in range(first, first + n)],
        )


def test_a_backup_restored_beside_a_later_wal_is_found_damaged(tmp_path: Path) -> None:
    """The -wal file of a later state replayed onto an older copy of the file: SQLite
    opens it without a word; quick_check finds the damage, and nothing is changed."""
    import shutil
    import sqlite3

    from nextbest.storage.db import sqlite_damage

    live = tmp_path / "nextbest.db"
    url = f"sqlite:///{live}"
    engine = make_engine(url)
    migrate(engine)
    _feedback_rows(engine, 0, 20_000)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert sqlite_damage(url) is None
    shutil.copy(live, tmp_path / "backup.db")  # an older state
    _feedback_rows(engine, 20_000, 20_000)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM filler WHERE id % 3 = 0"))
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = sqlite3.connect(live)  # a later state still in the -wal file
    raw.execute("PRAGMA wal_autocheckpoint=0")
    raw.executemany(
        "UPDATE filler SET v = ? WHERE id = ?", [(str(i), i) for i in range(1, 30_000, 2)]
    )
    raw.commit()
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(tmp_path / "backup.db", restored / "nextbest.db")
    shutil.copy(tmp_path / "nextbest.db-wal", restored / "nextbest.db-wal")
    raw.close()
    engine.dispose()
    wal = (restored / "nextbest.db-wal").read_bytes()
    found = sqlite_damage(f"sqlite:///{restored / 'nextbest.db'}")
    assert found is not None and "never used" in found, found
    assert (restored / "nextbest.db-wal").read_bytes() == wal  # read only: left as found
    assert sqlite_damage(f"sqlite:///{tmp_path / 'backup.db'}") is None  # the backup alone


def test_what_is_not_a_sqlite_database_file_is_damaged_and_the_rest_is_not_checked(
    tmp_path: Path,
) -> None:
    from nextbest.storage.db import sqlite_damage

    text_file = tmp_path / "nextbest.db"
    text_file.write_text("hcp_id,name\n" * 200)
    assert "not a database" in (sqlite_damage(f"sqlite:///{text_file}") or "")
    # A path a URI would misread ('#' starts a fragment, '%' an escape) is checked too.
    odd = tmp_path / "backups #2" / "100% restored.db"
    odd.parent.mkdir()
    odd.write_text("hcp_id,name\n" * 200)
    assert "not a database" in (sqlite_damage(f"sqlite:///{odd}") or "")
    assert sqlite_damage(f"sqlite:///{tmp_path / 'not-yet.db'}") is None
    assert sqlite_damage("sqlite://") is None
    assert sqlite_damage("postgresql+psycopg://nobody@127.0.0.1:1/none") is None
