"""A year of recommendation log: what the commands and the serving reads cost on it.

Fills a throw-away store with ``--rows`` logged answers (default 5 million: an
e-mail system asking content picks for 100,000 HCPs a week, reps' call plans every
day) with their items, and ``--events`` feedback events (default 2 million:
deliveries, opens and clicks of the e-mails, reps' decisions and completed visits,
an NRx feed of outcomes by HCP, a few opt-outs), shaped as the service writes them
and spread over the year before now. The rows go in by the driver's bulk paths
(``executemany`` on SQLite, ``COPY`` on PostgreSQL), not through the API.

Then it times, on SQLite and on PostgreSQL (``--postgres`` or
``NEXTBEST_TEST_POSTGRES_URL``; a throw-away database), each command as a user runs
it (a ``nextbest`` process, start-up included: ``startup`` is that alone):
``uplift-report`` (and with ``--since``), ``lookup`` of an answer and of an HCP,
``erase`` of a known HCP and of an id never seen (its near-id check),
``prune --older-than 730d``. In process it times the storage reads of each (the
log read of ``retrain`` is ``load_decisions``, which ``read_feedback_rows``
calls), opening the store as every command and worker does (``migrate`` at the
newest revision), on SQLite the file check ``nextbest serve`` makes before serving,
and the serving path's per-request reads: one HCP's contact history,
dismissals and consent (``serving_history``, as every answer reads it), a rep's
latest decision on a suggestion (``latest_decision``) and the feedback ingest's
look-ups (``record_feedback`` of one event about a logged answer). The
statements of each are captured and their plans kept (``EXPLAIN QUERY PLAN`` /
``EXPLAIN``), with the log tables each reads whole.

The store is filled at ``--fill-revision`` (default: the newest), measured,
migrated to the newest revision (the migration is timed: that is what an upgrade
costs on such a log), and measured again if that changed its schema: filled at the
revision before a migration that only adds indexes, one run gives the figures
before and after it. A migration that adds columns needs the source before it to
measure its schema (``--keep`` there, then ``--reuse`` here). Writes
``bench/results/logscale.json`` and prints each figure. Run:
``python bench/logscale.py`` (``--rows 500000`` for a quick look).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from nextbest.loop.evidence import load_decisions, with_outcome_only
from nextbest.policy.rules import ServingRules
from nextbest.settings import drop_environment_settings
from nextbest.storage import make_engine, make_session_factory, migrate
from nextbest.storage.db import schema_revisions, sqlite_damage
from nextbest.storage.tables import Base
from nextbest.storage.testing import (
    POSTGRES_URL_ENV,
    statements_sent,
    temporary_postgres_database,
)

RESULTS = Path(__file__).resolve().parent / "results"
RULES = Path(__file__).resolve().parents[1] / "training" / "rules.yaml"
# The schema the store is filled at, unless --fill-revision says another.
FILL_REVISION = "head"
# The PostgreSQL database a --keep run leaves for --reuse.
KEPT_DATABASE = "nextbest_logscale"

E_MAIL_CONTENTS = 50
REP_CHANNELS = ("rep_visit", "rep_phone", "webinar")
REASONS = json.dumps(
    ["opened 3 of the last 5 e-mails", "new content on the topic read most"],
    ensure_ascii=False,
)
FINGERPRINT = "1f0c2a9b7d41"
# Rows per bulk statement (one transaction each).
CHUNK = 50_000


# -- the log ------------------------------------------------------------------------


def _uuid7(at: datetime, rng: random.Random) -> str:
    """A recommendation id as the service mints it (UUIDv7, time first)."""
    ms = int(at.timestamp() * 1000)
    value = (ms & (2**48 - 1)) << 80 | rng.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return f"{value:032x}"


def _stamp(at: datetime) -> str:
    """A timestamp as both backends take it as text (UTC; PostgreSQL gets ``+00``)."""
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")


class Log:
    """The rows of a year of log, made in time order, the same for both backends.

    ``answers()`` yields (recommendation row, item rows) per answer;
    ``events()`` the feedback rows, drawn from the answers it remembers. Rows are
    tuples in the tables' column order, timestamps as text (see :func:`_stamp`).
    """

    def __init__(self, *, rows: int, events: int, hcps: int, seed: int, end: datetime) -> None:
        self.rows, self.n_events, self.n_hcps, self.end = rows, events, hcps, end
        self.start = end - timedelta(days=365)
        self.seed = seed
        self.hcp_ids = [f"H{i:06d}" for i in range(1, hcps + 1)]
        # Answers feedback can name: (rid, hcp, created, action, channel, kind).
        self.served: list[tuple[str, str, datetime, str, str, str]] = []

    def remember(self) -> None:
        """Make the answers again (the same seed: the same rows) without writing them,
        for the answers feedback names (a store filled by an earlier run)."""
        if not self.served:
            for _ in self.answers():
                pass

    def answers(self) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
        self.served.clear()
        rng = random.Random(self.seed)
        # 85% e-mail picks (a weekly send to every HCP), 15% reps' daily plans.
        n_email = int(self.rows * 0.85)
        n_rep = self.rows - n_email
        days = 365
        per_week = -(-n_email // 52)  # 52 Mondays in the year
        per_day = -(-n_rep // days)
        made = 0
        rep_made = 0
        for day in range(days):
            today = self.start + timedelta(days=day)
            batch: list[tuple[datetime, str]] = []
            if day % 7 == 0 and made < n_email:
                # The Monday send: every HCP's pick over two hours of the morning.
                n = min(per_week, n_email - made)
                send = today.replace(hour=6, minute=0, second=0, microsecond=0)
                batch += [(send + timedelta(seconds=7200 * i / n), "email") for i in range(n)]
                made += n
            n = min(per_day, n_rep - rep_made)
            plan = today.replace(hour=17, minute=0, second=0, microsecond=0)
            batch += [(plan + timedelta(seconds=3600 * i / max(n, 1)), "rep") for i in range(n)]
            rep_made += n
            for at, kind in batch:
                yield self._answer(rng, at, kind)

    def _answer(
        self, rng: random.Random, at: datetime, kind: str
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        hcp = self.hcp_ids[rng.randrange(self.n_hcps)]
        rid = _uuid7(at, rng)
        version = str(1 + int((at - self.start).days // 28))
        holdout = rng.random() < 0.1
        if kind == "email":
            requester, channel_filter, rep_id = "email-platform", "email", None
            decided = at.replace(hour=0, minute=0, second=0, microsecond=0)
            k = 1
        else:
            rep = rng.randrange(300)
            requester, channel_filter, rep_id = f"rep-{rep:03d}", None, f"R{rep:03d}"
            decided = (at + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            k = 1
        row = (
            rid,
            _stamp(at),
            hcp,
            requester,
            "promotional",
            channel_filter,
            version,
            holdout,
            "epsilon_greedy",
            0.1,
            0.1,
            _stamp(decided),
            rng.randrange(20, 200),
            0.1 + 0.9 * 0.1 / 50 if not holdout else 1.0,
            rep_id,
            FINGERPRINT,
            k,
            None,
        )
        items: list[tuple[Any, ...]] = []
        if not holdout:
            if kind == "email":
                content = rng.randrange(E_MAIL_CONTENTS)
                action, channel = f"email-c{content:02d}", "email"
            else:
                channel = REP_CHANNELS[rng.randrange(len(REP_CHANNELS))]
                content = rng.randrange(20)
                action = f"{channel}-c{content:02d}"
            explored = rng.random() < 0.1
            items.append(
                (
                    rid,
                    1,
                    action,
                    channel,
                    f"c{content:02d}",
                    rng.random(),
                    rng.random() / 10,
                    rng.random(),
                    0.002 if explored else 0.902,
                    explored,
                    REASONS,
                )
            )
            self.served.append((rid, hcp, at, action, channel, kind))
        return row, items

    def events(self) -> Iterator[tuple[Any, ...]]:
        """Feedback rows: 47% deliveries of e-mails, 19% opens, 5% clicks, 12% reps'
        decisions and completed visits, 16% outcomes by HCP (no recommendation), 1%
        consent changes."""
        rng = random.Random(self.seed + 1)
        emails = [s for s in self.served if s[5] == "email"]
        reps = [s for s in self.served if s[5] == "rep"]
        budget = self.n_events
        n_delivered = min(len(emails), int(budget * 0.47))
        n_rep = min(len(reps), int(budget * 0.12))
        n_consent = int(budget * 0.01)
        rows: list[tuple[datetime, tuple[Any, ...]]] = []
        n = 0

        def add(at: datetime, event_type: str, **fields: Any) -> None:
            nonlocal n
            n += 1
            received = at + timedelta(seconds=rng.randrange(1, 600))
            rows.append(
                (
                    at,
                    (
                        f"{fields.pop('source')}-{n:010d}",
                        event_type,
                        _stamp(at),
                        _stamp(received),
                        fields.get("rid"),
                        fields["hcp"],
                        fields.get("action"),
                        fields.get("channel"),
                        fields.get("reason"),
                        fields.get("value"),
                        fields["requester"],
                        None,
                    ),
                )
            )

        for rid, hcp, at, action, channel, _ in rng.sample(emails, n_delivered):
            sent = at + timedelta(minutes=rng.randrange(5, 120))
            tied = {"rid": rid, "hcp": hcp, "action": action, "channel": channel}
            add(sent, "delivered", source="esp", requester="email-platform", **tied)
            if rng.random() < 0.4:
                opened = sent + timedelta(hours=rng.randrange(1, 72))
                add(opened, "opened", source="esp", requester="email-platform", **tied)
                if rng.random() < 0.27:
                    clicked = opened + timedelta(minutes=rng.randrange(1, 30))
                    add(clicked, "clicked", source="esp", requester="email-platform", **tied)
        for rid, hcp, at, action, channel, _ in rng.sample(reps, n_rep):
            decided = at + timedelta(hours=rng.randrange(12, 60))
            tied = {"rid": rid, "hcp": hcp, "action": action, "channel": channel}
            draw = rng.random()
            if draw < 0.35:
                add(decided, "completed", source="crm", requester="crm", **tied)
            elif draw < 0.7:
                add(decided, "accepted", source="crm", requester="crm", **tied)
            elif draw < 0.92:
                add(
                    decided,
                    "dismissed",
                    source="crm",
                    requester="crm",
                    reason="not_relevant",
                    **tied,
                )
            else:
                add(decided, "snoozed", source="crm", requester="crm", reason="busy", **tied)
        for _ in range(n_consent):
            at = self.start + timedelta(seconds=rng.randrange(365 * 86400))
            hcp = self.hcp_ids[rng.randrange(self.n_hcps)]
            kind = "opted_out" if rng.random() < 0.8 else "opted_in"
            add(at, kind, source="crm", requester="crm", hcp=hcp, channel="email")
        # The rest: an NRx feed, one value per HCP and week, about no recommendation.
        while n < budget:
            week = rng.randrange(52)
            at = self.start + timedelta(days=7 * week + 5, hours=2)
            hcp = self.hcp_ids[rng.randrange(self.n_hcps)]
            add(
                at,
                "outcome",
                source="nrx",
                requester="nrx-feed",
                hcp=hcp,
                value=float(rng.randrange(1, 6)),
            )
        rows.sort(key=lambda pair: pair[0])
        for _, row in rows:
            yield row


def _columns(table: str, n: int) -> list[str]:
    """The first ``n`` columns of ``table``: those a row of :class:`Log` fills (the
    table as of ``FILL_REVISION``). Later revisions add their columns at the end,
    where a filled row leaves them NULL, as the migration leaves an older row."""
    return [c.name for c in Base.metadata.tables[table].columns][:n]


def _chunked(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _copy_text(rows: list[tuple[Any, ...]]) -> str:
    """Rows in COPY's text format (no value here holds a tab, newline or backslash)."""

    def cell(value: Any) -> str:
        if value is None:
            return "\\N"
        if isinstance(value, bool):
            return "t" if value else "f"
        return str(value)

    return "".join("\t".join(map(cell, row)) + "\n" for row in rows)


class Writer:
    """Bulk rows into one table: ``executemany`` on SQLite, ``COPY`` on PostgreSQL."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    def write(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        columns = _columns(table, len(rows[0]))
        with self.engine.begin() as connection:
            raw: Any = connection.connection.driver_connection
            if self.postgres:
                stamps = {
                    i
                    for i, c in enumerate(Base.metadata.tables[table].columns)
                    if c.name in ("created_at", "decided_for", "occurred_at", "received_at")
                }
                # The text timestamps are UTC.
                rows = [
                    tuple(
                        f"{v}+00" if i in stamps and v is not None else v for i, v in enumerate(r)
                    )
                    for r in rows
                ]
                with raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    copy.write(_copy_text(rows))
            else:
                marks = ", ".join("?" * len(columns))
                raw.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
                )


def fill(url: str, log: Log) -> dict[str, Any]:
    """Fill the store at ``url`` (migrated already) with ``log``; its figures."""
    engine = make_engine(url)
    writer = Writer(engine)
    counts = {"recommendations": 0, "recommendation_items": 0, "feedback_events": 0}
    begun = time.perf_counter()
    try:
        if engine.dialect.name == "sqlite":
            # The fill's own connection settings (a bench, not a store to keep safe).
            @event.listens_for(engine, "connect")
            def _fast(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute("PRAGMA synchronous=OFF")
                dbapi_connection.execute("PRAGMA cache_size=-1000000")

            engine.dispose()
        for chunk in _chunked(log.answers(), CHUNK):
            answers = [answer for answer, _ in chunk]
            items = [item for _, its in chunk for item in its]
            writer.write("recommendations", answers)
            writer.write("recommendation_items", items)
            counts["recommendations"] += len(answers)
            counts["recommendation_items"] += len(items)
            if counts["recommendations"] % 1_000_000 < CHUNK:
                print(f"  {counts['recommendations']:,} answers", flush=True)
        for chunk in _chunked(log.events(), CHUNK):
            writer.write("feedback_events", chunk)
            counts["feedback_events"] += len(chunk)
        filled = time.perf_counter() - begun
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                # What autovacuum does within a minute of such a load.
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "ANALYZE"
                )
                size = connection.exec_driver_sql(
                    "SELECT pg_database_size(current_database())"
                ).scalar_one()
            else:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                size = Path(engine.url.database or "").stat().st_size
    finally:
        engine.dispose()
    return {"rows": counts, "fill_s": round(filled, 1), "size_mb": round(size / 2**20)}


# -- measuring ----------------------------------------------------------------------


# A plan step that reads a table whole (SQLite: SCAN, by the table or by one of its
# indexes; PostgreSQL: a sequential scan).
SCAN = {
    "sqlite": re.compile(r"SCAN (\w+)"),
    "postgresql": re.compile(r"Seq Scan on (\w+)"),
}
LOG_TABLES = ("recommendations", "recommendation_items", "feedback_events")


def plan(engine: sa.Engine, statement: str, parameters: Any) -> str:
    """The plan the database makes of one statement (without running it)."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters
        ).all()
    return "\n".join(str(row[-1] if sqlite else row[0]) for row in rows)


def scanned(engine: sa.Engine, text: str) -> list[str]:
    """The log's tables a plan reads whole."""
    return sorted({t for t in SCAN[engine.dialect.name].findall(text) if t in LOG_TABLES})


def timed(
    engine: sa.Engine,
    call: Callable[[], Any],
    *,
    repeat: int = 1,
    sent_by_driver: Sequence[tuple[str, Any]] = (),
) -> dict[str, Any]:
    """Seconds per ``call`` (the median of ``repeat``) and the plans of the statements
    it sent (``sent_by_driver``: those it sends on the driver's cursor, which
    SQLAlchemy's events do not see), with the log tables any of them reads whole."""
    times = []
    with statements_sent(engine) as sent:
        for _ in range(repeat):
            begun = time.perf_counter()
            call()
            times.append(time.perf_counter() - begun)
    plans, seen = [], set()
    for statement, parameters in [*sent, *sent_by_driver]:
        head = statement.lstrip().split(None, 1)[0].upper()
        if statement in seen or head not in ("SELECT", "WITH", "DELETE"):
            continue
        seen.add(statement)
        text = plan(engine, statement, parameters)
        plans.append({"sql": " ".join(statement.split())[:400], "plan": text})
    times.sort()
    return {
        "seconds": round(times[len(times) // 2], 4),
        "scans": sorted({t for p in plans for t in scanned(engine, p["plan"])}),
        "plans": plans,
    }


def run_command(env: dict[str, str], *args: str) -> dict[str, Any]:
    """One ``nextbest`` command as a user runs it: wall seconds and exit code."""
    begun = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "nextbest", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - begun
    said = (done.stdout + done.stderr).strip().splitlines()
    return {"seconds": round(seconds, 2), "exit": done.returncode, "last_line": said[-1:]}


def measure(
    url: str, log: Log, work: Path, label: str, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Every figure on the store at ``url`` as it is now but those named in ``skip``
    (the reads of the whole log, which take minutes): the storage reads in process
    (time and plans), then the commands as processes (time)."""
    from nextbest.storage import repository as r

    def wanted(name: str) -> bool:
        return name not in skip

    engine = make_engine(url)
    session_factory = make_session_factory(engine)
    rules = ServingRules.load(RULES)
    rng = random.Random(f"{label}-{engine.dialect.name}")
    served = rng.sample(log.served, 200)
    reps = rng.sample([s for s in log.served if s[5] == "rep"], 200)
    now = log.end
    figures: dict[str, Any] = {}

    def in_session(read: Callable[[Any], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with session_factory() as session:
                return read(session)

        return call

    try:
        # Opening the store, as every command and serving worker does first: `migrate`
        # finds the newest revision (on SQLite it once took the write lock and checked
        # every foreign key of the log).
        figures["open_store"] = timed(engine, lambda: migrate(engine, upgrade=False), repeat=5)
        if engine.dialect.name == "sqlite":
            # `nextbest serve` reads every page of the file before it serves
            # (`PRAGMA quick_check`: a file restored beside a later write-ahead log).
            figures["serve_file_check"] = timed(engine, lambda: sqlite_damage(url))
        # Serving: one HCP's contact history, dismissals and consent as every answer
        # reads it (the rules' windows), for 200 HCPs; one statement, sent on the
        # driver's cursor.
        windows = [now - timedelta(days=w) for w in rules.lookbacks()]
        suppressed = [d for d in (rules.dismissal_days, rules.snooze_window) if d is not None]
        dismissed_since = now - timedelta(days=max(suppressed)) if suppressed else None
        hcps = iter([s[1] for s in served])

        def history() -> None:
            with engine.connect() as connection:
                r.serving_history(
                    connection,
                    hcp_ids=[next(hcps)],
                    windows=windows,
                    dismissed_since=dismissed_since,
                    until=now,
                )

        shape = (len(windows), dismissed_since is not None, False, False)
        query = r._one_hcp_query(engine.dialect, shape)
        values = query.values(
            {**r._history_params(windows, dismissed_since, now), "hcp_id": served[0][1]}
        )
        figures["serving_history_one_hcp"] = timed(
            engine, history, repeat=200, sent_by_driver=[(query.sql, tuple(values))]
        )
        decided = iter(reps)

        def decision(session: Any) -> None:
            _, hcp, _, action, _, _ = next(decided)
            r.latest_decision(session, hcp, action)

        figures["rep_latest_decision"] = timed(engine, in_session(decision), repeat=200)
        about = iter(served)
        numbers = iter(range(10**6))

        def feedback(session: Any) -> None:
            rid, hcp, _, action, channel, _ = next(about)
            r.record_feedback(
                session,
                events=[
                    r.FeedbackRecord(
                        event_id=f"bench-{label}-{next(numbers)}",
                        event_type="opened",
                        occurred_at=now,
                        hcp_id=hcp,
                        recommendation_id=rid,
                        action_id=action,
                        channel=channel,
                    )
                ],
                requester="bench",
            )

        figures["feedback_one_event"] = timed(engine, in_session(feedback), repeat=200)
        rid, hcp = served[0][0], served[0][1]
        figures["lookup_answer_reads"] = timed(
            engine,
            in_session(
                lambda s: (
                    r.get_recommendation(s, recommendation_id=rid),
                    r.feedback_for(s, recommendation_id=rid),
                )
            ),
        )
        figures["lookup_hcp_reads"] = timed(
            engine,
            in_session(
                lambda s: (
                    r.recommendations_of_hcp(s, hcp_id=hcp, limit=20),
                    r.feedback_for(s, hcp_id=hcp, limit=20),
                    r.hcp_row_counts(s, hcp_id=hcp),
                    r.erased_already(s, hcp_ids=[hcp]),
                    r.furthest_prune(s),
                )
            ),
        )
        gone = served[3][1]
        figures["erase_one_hcp_reads"] = timed(
            engine,
            in_session(
                lambda s: (
                    r.count_hcp_rows(s, hcp_ids=[gone]),
                    r.hcps_with_rows(s, hcp_ids=[gone]),
                    r.erased_already(s, hcp_ids=[gone]),
                    r.erase_hcps(s, hcp_ids=[gone], requester="bench"),
                )
            ),
        )
        # An id no row names, spelled as one the log has but for its case.
        alike = "h" + served[5][1][1:]
        figures["erase_near_id_check"] = timed(
            engine, in_session(lambda s: r.hcps_spelled_alike(s, hcp_ids=[alike]))
        )
        cutoff = now - timedelta(days=730)
        figures["prune_730d_reads"] = timed(
            engine,
            in_session(
                lambda s: (r.count_rows_before(s, before=cutoff), r.prune_batch(s, before=cutoff))
            ),
        )
        if wanted("retrain_log_read"):
            figures["retrain_log_read"] = timed(
                engine, in_session(lambda s: load_decisions(s, since=None))
            )
        if wanted("uplift_report_reads"):

            def report_reads(s: Any) -> Any:
                # As uplift_report reads: the outcomes by HCP once, for both its uses.
                events = r.hcp_outcomes(s, since=None)
                logged = load_decisions(
                    s, since=None, with_outcome=False, hcp_outcome_events=events
                )
                return with_outcome_only(logged), events

            figures["uplift_report_reads"] = timed(engine, in_session(report_reads))
    finally:
        engine.dispose()
    for name, figure in figures.items():
        scans = f" (reads {', '.join(figure['scans'])} whole)" if figure["scans"] else ""
        print(f"  {label} {name}: {figure['seconds']} s{scans}", flush=True)
    # The commands, each a process of its own, start-up included.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")},
        "NEXTBEST_MODELS_DIR": str(work / "models"),
        "NEXTBEST_DATABASE_URL": url,
        "NEXTBEST_RULES_FILE": str(RULES),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    cases = {
        "startup": ["--help"],
        "uplift_report": ["uplift-report", "--out", str(work / f"report-{label}")],
        "uplift_report_since_90d": [
            "uplift-report",
            "--since",
            f"{(now - timedelta(days=90)):%Y-%m-%d}",
            "--out",
            str(work / f"report-{label}-since"),
        ],
        "lookup_answer": ["lookup", rid],
        "lookup_hcp": ["lookup", "--hcp", hcp],
        "erase_one_hcp": ["erase", served[2][1], "--yes"],
        # Never seen, but for its case: the near-id check runs and names the one meant.
        "erase_unseen_id": ["erase", "h" + served[4][1][1:], "--yes"],
        "prune_730d": ["prune", "--older-than", "730d", "--yes"],
    }
    for name, args in cases.items():
        if not wanted(name):
            continue
        figures[name] = run_command(env, *args)
        print(f"  {label} {name}: {figures[name]['seconds']} s", flush=True)
    return figures


def backend(
    url: str,
    log: Log,
    work: Path,
    fill_revision: str | None,
    labels: tuple[str, str],
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Fill at ``fill_revision`` and measure (None: filled and measured by an earlier
    run), migrate to the newest revision, and measure again if that changed the
    schema. ``labels`` name the two measurements (each picks its own HCPs by it: an
    HCP erased in one is not in the other's sample)."""
    engine = make_engine(url)
    name = engine.dialect.name
    engine.dispose()
    out: dict[str, Any] = {"backend": name}
    if fill_revision is not None:
        migrate(url, revision=fill_revision)
        print(f"{name}: filling {log.rows:,} answers and {log.n_events:,} events", flush=True)
        out |= {"fill_revision": fill_revision, **fill(url, log)}
        print(f"  filled in {out['fill_s']} s, {out['size_mb']} MB", flush=True)
        out["revision"] = schema_revisions(url)[0]
        out["before"] = measure(url, log, work, labels[0], skip)
    else:
        # Measured before by the run that filled it (another source tree, maybe).
        log.remember()
        out["revision"] = schema_revisions(url)[0]
    begun = time.perf_counter()
    revisions = migrate(url)
    out["migration"] = {"revisions": revisions, "seconds": round(time.perf_counter() - begun, 1)}
    print(f"  migrated {revisions} in {out['migration']['seconds']} s", flush=True)
    if revisions[0] != revisions[1]:
        out["after"] = measure(url, log, work, labels[1], skip)
    return out


@contextlib.contextmanager
def postgres_database(server_url: str, keep: bool) -> Iterator[str]:
    """A throw-away database, or with ``keep`` the database ``KEPT_DATABASE`` (made
    if missing, left for ``--reuse``)."""
    if not keep:
        with temporary_postgres_database(server_url) as url:
            yield url
        return
    server = sa.make_url(server_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            found = connection.exec_driver_sql(
                "SELECT 1 FROM pg_database WHERE datname = %(n)s", {"n": KEPT_DATABASE}
            ).first()
            if found is None:
                connection.exec_driver_sql(f'CREATE DATABASE "{KEPT_DATABASE}"')
    finally:
        admin.dispose()
    yield server.set(database=KEPT_DATABASE).render_as_string(hide_password=False)


def summary(result: dict[str, Any]) -> list[str]:
    """One line per figure: seconds (before -> after) and the tables read whole."""
    lines = []
    before, after = result.get("before", {}), result.get("after", {})
    for key in dict.fromkeys([*before, *after]):
        parts = [f"{m[key]['seconds']} s" if key in m else "-" for m in (before, after)]
        scans = [", ".join(m[key].get("scans", [])) for m in (before, after) if key in m]
        read = f"   whole: {' -> '.join(s or 'none' for s in scans)}" if any(scans) else ""
        lines.append(f"  {key:<26}{' -> '.join(parts)}{read}")
    return lines


def main() -> int:
    drop_environment_settings(keep=(POSTGRES_URL_ENV,), say=print)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="Logged answers.")
    parser.add_argument(
        "--events", type=int, default=None, help="Feedback events (default: 2/5 of --rows)."
    )
    parser.add_argument("--hcps", type=int, default=100_000, help="HCPs the log names.")
    parser.add_argument("--postgres", default=os.environ.get(POSTGRES_URL_ENV))
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="Comma-separated: sqlite, postgresql."
    )
    parser.add_argument(
        "--fill-revision",
        default=FILL_REVISION,
        help="Schema revision the store is filled and first measured at.",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="Keep the stores (DIR/log.db; PostgreSQL database "
        f"{KEPT_DATABASE}) for a later --reuse DIR, e.g. measured by another source tree.",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="DIR",
        help="The stores a --keep DIR run filled and measured (its --rows, --events, "
        "--hcps and --seed): migrate them to the newest revision and measure again.",
    )
    parser.add_argument(
        "--skip",
        default="",
        metavar="NAMES",
        help="Comma-separated figures not to measure (uplift_report, uplift_report_since_90d, "
        "uplift_report_reads, retrain_log_read: the reads of the whole log, minutes each).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "logscale.json")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := set(backends) - {"sqlite", "postgresql"}:
        parser.error(f"--backends: {', '.join(sorted(unknown))} is not sqlite or postgresql")
    store = args.reuse or args.keep
    skip = frozenset(n.strip() for n in args.skip.split(",") if n.strip())
    if args.reuse is not None:
        setup = json.loads((args.reuse / "log.json").read_text())
        end = datetime.fromisoformat(setup.pop("end"))
        labels = ("before", "after")
    else:
        if args.rows < 10_000:
            parser.error(f"--rows {args.rows}: at least 10,000 (a year of sends and plans)")
        events = args.events if args.events is not None else args.rows * 2 // 5
        setup = {"rows": args.rows, "events": events, "hcps": args.hcps, "seed": args.seed}
        end = datetime.now(UTC).replace(microsecond=0)
        labels = ("before", "after")
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / "log.json").write_text(json.dumps({**setup, "end": end.isoformat()}))
    work = Path(tempfile.mkdtemp(prefix="nextbest-logscale-"))
    (work / "models").mkdir()
    fill_revision = None if args.reuse is not None else args.fill_revision
    results = []
    log = Log(**setup, end=end)
    if "sqlite" in backends:
        db = (store or work) / "log.db"
        results.append(backend(f"sqlite:///{db}", log, work, fill_revision, labels, skip))
        print("\n".join(summary(results[-1])), flush=True)
        if store is None:
            db.unlink()
    if "postgresql" in backends and args.postgres:
        with postgres_database(args.postgres, keep=store is not None) as url:
            results.append(backend(url, log, work, fill_revision, labels, skip))
            print("\n".join(summary(results[-1])), flush=True)
    elif "postgresql" in backends:
        print(f"PostgreSQL not measured: set {POSTGRES_URL_ENV} or --postgres", flush=True)
    payload = {
        "benchmark": "logscale",
        "command": " ".join(["python", "bench/logscale.py", *sys.argv[1:]]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": setup,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
