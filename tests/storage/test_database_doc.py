"""docs/database.md against the real database, on SQLite and on PostgreSQL.

Its column tables are compared with the schema the migrations make (names, order,
types, nullability), the constraint and index names it gives with the database's,
and every query it shows is run on a database filled with known answers and
feedback, its answer checked against what was logged. A query in a ```` ```sql ````
block must run on both backends; one in ```` ```sql postgresql ```` or ```` ```sql
sqlite ```` is run on that backend alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from nextbest.storage import FeedbackRecord
from nextbest.storage.repository import (
    insert_run,
    log_recommendations,
    logged_decisions,
    record_feedback,
)
from nextbest.storage.testing import recommendation_record, served_item

DOC = Path(__file__).parents[2] / "docs" / "database.md"
# The doc's type words, as each backend's catalog spells the type.
_POSTGRES_TYPES = {"timestamptz": "timestamp with time zone", "double": "double precision"}
_SQLITE_TYPES = {"timestamptz": "DATETIME", "double": "FLOAT"}


def doc_columns(text: str) -> dict[str, list[tuple[str, str, bool]]]:
    """Each table the doc describes under a ``## `name``` heading: its columns, in the
    doc's order, as (name, type as written, nullable)."""
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    table: str | None = None
    for line in text.splitlines():
        heading = re.match(r"## `(\w+)`", line)
        if heading:
            table = heading.group(1)
        elif line.startswith("## "):
            table = None
        elif table and (row := re.match(r"\| `(\w+)` \| `([^`]+)` \| (no|yes) \|", line)):
            tables.setdefault(table, []).append((row[1], row[2], row[3] == "yes"))
    return tables


def _spelled(doc_type: str, dialect: str) -> str:
    if dialect == "postgresql":
        return re.sub(r"^varchar", "character varying", _POSTGRES_TYPES.get(doc_type, doc_type))
    return _SQLITE_TYPES.get(doc_type, doc_type).upper()


def real_columns(engine: Engine) -> dict[str, list[tuple[str, str, bool]]]:
    """Every table of the database but ``alembic_version``: its columns in order, as
    (name, type as the backend's catalog spells it, nullable)."""
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            rows = connection.execute(
                sa.text(
                    "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
                    "NOT a.attnotnull FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 "
                    "AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
                )
            )
            for table, column, type_, nullable in rows:
                tables.setdefault(table, []).append((column, type_, nullable))
        else:
            names = connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            ).scalars()
            for table in list(names):
                for _, column, type_, notnull, _, pk in connection.exec_driver_sql(
                    f"PRAGMA table_info({table})"
                ):
                    tables.setdefault(table, []).append((column, type_, not notnull and not pk))
    tables.pop("alembic_version", None)
    return tables


def schema_differences(
    documented: dict[str, list[tuple[str, str, bool]]],
    real: dict[str, list[tuple[str, str, bool]]],
    dialect: str,
) -> list[str]:
    """What the doc says otherwise than the database has, one line each."""
    found = []
    for table in sorted(real.keys() - documented.keys()):
        found.append(f"table {table} is not described")
    for table in sorted(documented.keys() - real.keys()):
        found.append(f"table {table} is described but does not exist")
    for table in sorted(real.keys() & documented.keys()):
        said = {name: (type_, null) for name, type_, null in documented[table]}
        have = {name: (type_, null) for name, type_, null in real[table]}
        for name in [n for n, _, _ in real[table] if n not in said]:
            found.append(f"{table}.{name} is not described")
        for name in [n for n, _, _ in documented[table] if n not in have]:
            found.append(f"{table}.{name} is described but does not exist")
        for name in [n for n, _, _ in documented[table] if n in have]:
            (doc_type, doc_null), (real_type, real_null) = said[name], have[name]
            if _spelled(doc_type, dialect) != real_type:
                found.append(f"{table}.{name}: described `{doc_type}`, is {real_type}")
            if doc_null != real_null:
                found.append(f"{table}.{name}: described null {doc_null}, is {real_null}")
        order = [n for n, _, _ in real[table] if n in said]
        if [n for n, _, _ in documented[table] if n in have] != order:
            found.append(f"{table}: columns described in another order than {order}")
    return found


NAME = re.compile(r"`((?:pk|fk|ix|ck)_\w+|alembic_version_pkc)`")


def real_names(engine: Engine) -> set[str]:
    """The names of every constraint and index of the database (SQLite's own
    ``sqlite_autoindex_*`` aside)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            return set(
                connection.execute(
                    sa.text(
                        "SELECT conname FROM pg_constraint c JOIN pg_namespace n "
                        "ON n.oid = c.connamespace WHERE n.nspname = 'public' "
                        "UNION SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
                    )
                ).scalars()
            )
        rows = connection.exec_driver_sql("SELECT type, name, sql FROM sqlite_master").all()
    names = {name for type_, name, _ in rows if type_ == "index" and name.startswith("ix_")}
    for type_, _, sql in rows:
        if type_ == "table":
            names |= set(re.findall(r"CONSTRAINT (\w+)", sql))
    return names


def test_every_table_and_column_of_the_doc_is_the_migrated_schema(engine: Engine) -> None:
    documented = doc_columns(DOC.read_text(encoding="utf-8"))
    assert schema_differences(documented, real_columns(engine), engine.dialect.name) == []


def test_every_constraint_and_index_is_named_in_the_doc(engine: Engine) -> None:
    """The doc names each constraint and index by the name it has on both backends."""
    documented = set(NAME.findall(DOC.read_text(encoding="utf-8")))
    assert real_names(engine) - documented == set()
    assert documented - real_names(engine) == set()


def test_a_doc_that_says_otherwise_than_the_schema_is_found(engine: Engine) -> None:
    """The check itself: a column left out, one that is not there, a wrong type and a
    wrong nullability are each named."""
    text = DOC.read_text(encoding="utf-8")
    text = text.replace("| `p_no_action` | `double` | yes |", "| `p_none` | `double` | yes |")
    text = text.replace(
        "| `hcp_id` | `varchar(128)` | no | The HCP the", "| `hcp_id` | `text` | yes | The"
    )
    dialect = engine.dialect.name
    differences = schema_differences(doc_columns(text), real_columns(engine), dialect)
    assert differences == [
        "recommendations.p_no_action is not described",
        "recommendations.p_none is described but does not exist",
        f"recommendations.hcp_id: described `text`, is {_spelled('varchar(128)', dialect)}",
        "recommendations.hcp_id: described null True, is False",
    ]


# --- the doc's queries, on a log of known answers ---------------------------------

# By day counted from 1 November 2026: 20 and 25 November, then 31-33 for 1-3 December
# (09:00 UTC), in the week of 2026-11-30 the doc's queries ask about.
_AT = {day: datetime(2026, 11, day, tzinfo=UTC) for day in (20, 25)} | {
    30 + day: datetime(2026, 12, day, 9, tzinfo=UTC) for day in (1, 2, 3)
}


def _fill(engine: Engine) -> None:
    """Answers and feedback of the week of 2026-11-30 the doc's queries read, and a
    few from before it, which they must leave out."""
    rec, item = recommendation_record, served_item
    rep_item = {"channel": "rep_visit"}
    records = [
        rec(
            "r1", "H1", model_version="9", created_at=_AT[31], items=(item(1, "A1"), item(2, "A2"))
        ),
        rec("r2", "H2", model_version="10", created_at=_AT[31], holdout=True),
        rec("r3", "H3", model_version="10", created_at=_AT[32]),  # nothing allowed
        rec(
            "r4",
            "H4",
            model_version="10",
            created_at=_AT[31],
            rep_id="rep-1",
            channel_filter="rep_*",
            items=(item(1, "A7", **rep_item),),
        ),
        rec(
            "r5",
            "H5",
            model_version="10",
            created_at=_AT[31],
            rep_id="rep-1",
            channel_filter="rep_*",
            items=(item(1, "A8", channel="rep_phone"),),
        ),
        rec(
            "r6",
            "H6",
            model_version="10",
            created_at=_AT[31],
            rep_id="rep-1",
            channel_filter="rep_*",
            holdout=True,
        ),
        rec("r7", "H7", model_version="9", created_at=_AT[20], items=(item(1, "A1"),)),
        rec(
            "r8",
            "H8",
            model_version="9",
            created_at=_AT[25],
            rep_id="rep-2",
            channel_filter="rep_*",
            items=(item(1, "A9", **rep_item),),
        ),
    ]
    hour = 3600

    def at(day: int, hours: int = 0) -> datetime:
        return datetime.fromtimestamp(_AT[day].timestamp() + hours * hour, UTC)

    events = [
        FeedbackRecord("d1", "delivered", at(31, 1), "H1", "r1", "A1"),
        FeedbackRecord("o1", "opened", at(31, 2), "H1", "r1", "A1"),
        FeedbackRecord("v1", "outcome", at(32), "H1", "r1", value=3.0),
        FeedbackRecord("v2", "outcome", at(33), "H2", value=1.0),  # by HCP: r2's
        FeedbackRecord("a4", "accepted", at(31, 3), "H4", "r4", "A7"),
        FeedbackRecord("x4", "dismissed", at(31, 4), "H4", "r4", "A7", reason="not_relevant"),
        FeedbackRecord("s5", "snoozed", at(31, 3), "H5", "r5", "A8"),
        FeedbackRecord("x8", "dismissed", at(25, 1), "H8", "r8", "A9", reason="too_frequent"),
        # By HCP, 7 days after its answer: r7's; 7 days and a millisecond after: nobody's.
        FeedbackRecord("v7", "outcome", at(20, 7 * 24), "H7", value=5.0),
        FeedbackRecord(
            "v8", "outcome", at(25) + timedelta(days=7, milliseconds=1), "H8", value=9.0
        ),
    ]
    with Session(engine) as session:
        log_recommendations(session, records=records)
        session.commit()
        result = record_feedback(session, events=events, received_at=at(33, 1))
        assert not result.rejected, result.rejected
        for cutoff in (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)):
            insert_run(
                session,
                command="prune",
                requester="nextbest prune (ops)",
                started_at=at(20),
                ended_at=at(20),
                outcome="finished",
                cutoff=cutoff,
            )
        session.commit()


def _day(value: Any) -> str:
    """A time as either backend returns it to the driver, as its UTC day."""
    return value.astimezone(UTC).date().isoformat() if isinstance(value, datetime) else value[:10]


# Each query of the doc, by a phrase of it, and what it must answer on the log above.
Rows = list[tuple[Any, ...]]
EXPECTED: dict[str, Callable[[Rows], object]] = {
    # the latest rep decision per (hcp, action)
    "PARTITION BY hcp_id, action_id": lambda rows: (
        [r[:4] for r in rows]
        == [
            ("H4", "A7", "dismissed", "not_relevant"),
            ("H5", "A8", "snoozed", None),
            ("H8", "A9", "dismissed", "too_frequent"),
        ]
    ),
    # the prune from which the log is whole
    "FROM maintenance_runs": lambda rows: (
        [(_day(r[0]), r[3]) for r in rows] == [("2025-01-01", "finished")]
    ),
    # the uplift report's overall row
    "AS mean_outcome": lambda rows: (
        sorted(tuple(r) for r in rows) == [("holdout", 1, 1, 1.0), ("served", 2, 2, 4.0)]
    ),
    # answers per channel, holdout
    "AS answers": lambda rows: (
        sorted(rows, key=lambda r: r[0] or "")
        == [(None, 3, 2), ("email", 1, 0), ("rep_phone", 1, 0), ("rep_visit", 1, 0)]
    ),
    # feedback joined to its answer and item
    "AS served_channel": lambda rows: (
        [(r[0], r[7], r[8]) for r in rows]
        == [
            ("d1", 1, "email"),
            ("o1", 1, "email"),
            ("a4", 1, "rep_visit"),
            ("s5", 1, "rep_phone"),
            ("x4", 1, "rep_visit"),
            ("v1", None, None),
        ]
    ),
    # acceptance of rep suggestions
    "AS undecided": lambda rows: [tuple(r) for r in rows] == [("rep-1", 2, 0, 1, 1, 0)],
    # dismissal reason codes
    "AS dismissals": lambda rows: [tuple(r) for r in rows] == [("not_relevant", 1)],
    # what each model version served, versions in numeric order
    "CAST(r.model_version AS integer)": lambda rows: (
        [r[:4] for r in rows]
        == [
            ("9", "email", "A1", 2),
            ("9", "email", "A2", 1),
            ("9", "rep_visit", "A9", 1),
            ("10", "rep_phone", "A8", 1),
            ("10", "rep_visit", "A7", 1),
        ]
    ),
}


def doc_queries(text: str) -> list[tuple[str, str]]:
    """The doc's SELECT queries: (the fence's info string, the query)."""
    blocks = re.findall(r"^```(sql[^\n]*)\n(.*?)^```", text, re.S | re.M)
    return [
        (info.strip(), sql)
        for info, sql in blocks
        if sql.lstrip().upper().startswith(("SELECT", "WITH"))
    ]


def _runs_on(info: str, dialect: str) -> bool:
    """Whether a block fenced ```` ```{info} ```` is meant to run on ``dialect``."""
    return info == "sql" or info == f"sql {dialect}"


# The query of last week's answers, whenever it runs: one per backend, checked apart.
LAST_WEEK = "AS last_week"


def test_every_query_of_the_doc_has_its_answer_checked() -> None:
    queries = doc_queries(DOC.read_text(encoding="utf-8"))
    unchecked = [
        sql for _, sql in queries if sum(key in sql for key in [*EXPECTED, LAST_WEEK]) != 1
    ]
    assert not unchecked
    assert {key for key in EXPECTED if any(key in sql for _, sql in queries)} == set(EXPECTED)
    assert {info for info, _ in queries} <= {"sql", "sql postgresql", "sql sqlite"}
    for dialect in ("sqlite", "postgresql"):
        last_week = [sql for info, sql in queries if _runs_on(info, dialect) and LAST_WEEK in sql]
        assert len(last_week) == 1, dialect


def test_the_doc_queries_answer_what_was_logged(engine: Engine) -> None:
    _fill(engine)
    dialect = engine.dialect.name
    checked = set()
    with engine.connect() as connection:
        if dialect == "postgresql":
            connection.exec_driver_sql("SET TIME ZONE 'UTC'")
        for info, sql in doc_queries(DOC.read_text(encoding="utf-8")):
            if not _runs_on(info, dialect) or LAST_WEEK in sql:
                continue
            rows = [tuple(row) for row in connection.exec_driver_sql(sql)]
            ((key, check),) = [(key, check) for key, check in EXPECTED.items() if key in sql]
            assert check(rows), f"{sql}\nanswered on {dialect}: {rows}"
            checked.add(key)
    assert checked == set(EXPECTED)
    # The uplift query's arms are the uplift report's: nextbest's own reading of the log.
    with Session(engine) as session:
        decisions = logged_decisions(session)
    with_outcome = decisions[decisions["outcome"].notna()]
    arms = with_outcome.groupby("holdout")["outcome"].agg(["count", "mean"])
    assert arms.to_dict("index") == {
        False: {"count": 2, "mean": 4.0},
        True: {"count": 1, "mean": 1.0},
    }


def _this_monday() -> datetime:
    today = datetime.now(UTC).date()
    return datetime.combine(today - timedelta(days=today.weekday()), time(), tzinfo=UTC)


def test_the_doc_query_of_last_week_counts_the_answers_of_last_week(engine: Engine) -> None:
    """Last week's query of each backend counts the answers from last week's Monday,
    00:00 UTC included, to this week's Monday, excluded."""
    monday = _this_monday()
    tick = timedelta(microseconds=1)
    times = {
        "first": monday - timedelta(days=7),
        "last": monday - tick,
        "this week": monday,
        "before": monday - timedelta(days=7) - tick,
    }
    with Session(engine) as session:
        log_recommendations(
            session,
            records=[
                recommendation_record(name, "H1", created_at=at) for name, at in times.items()
            ],
        )
        session.commit()
    dialect = engine.dialect.name
    (sql,) = [
        sql
        for info, sql in doc_queries(DOC.read_text(encoding="utf-8"))
        if _runs_on(info, dialect) and LAST_WEEK in sql
    ]
    with engine.connect() as connection:
        if dialect == "postgresql":
            connection.exec_driver_sql("SET TIME ZONE 'UTC'")
        rows = [tuple(row) for row in connection.exec_driver_sql(sql)]
    if _this_monday() == monday:  # not run across midnight from Sunday to Monday
        assert rows == [(2,)], f"{sql}\nanswered on {dialect}: {rows}"
