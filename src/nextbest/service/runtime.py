"""What a serving process holds: the loaded model, the database, and how to swap models."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nextbest import registry
from nextbest.clock import Clock, utc_now
from nextbest.errors import ModelNotLoadedError
from nextbest.learning.attribution import fix_predict_threads
from nextbest.policy.exploration import make_exploration, same_holdout_rate
from nextbest.policy.rules import EMPTY_FINGERPRINT, RulesError, ServingRules
from nextbest.service.apikeys import (
    ApiKeyError,
    KeyStore,
    key_channel_notes,
    key_purpose_notes,
)
from nextbest.service.reclog import RecommendationLog
from nextbest.service.recommend import Recommender, history_moved_to
from nextbest.service.territories import (
    TerritoriesError,
    TerritoryAlignment,
    alignment_notes,
    empty_territories_note,
)
from nextbest.settings import Settings
from nextbest.storage.db import (
    UNAVAILABLE_ERRORS,
    HeldReader,
    describe_database_error,
    make_async_reader,
    make_engine,
    make_reader,
    make_session_factory,
    migrate,
)
from nextbest.storage.repository import (
    latest_holdout_rate,
    recently_asked_hcps,
    store_rules,
)

if TYPE_CHECKING:
    from nextbest.learning.scoring import ScoringModel

logger = logging.getLogger(__name__)

# Touched by an admin reload so every worker process of the same deployment
# (sharing the models directory) reloads too, within WATCH_INTERVAL_S.
RELOAD_SIGNAL = "reload.signal"
WATCH_INTERVAL_S = 1.0
# While no model is loaded (none aliased yet, or the served version failed to
# load), the watcher tries to load one this often, alias polling on or not; and a
# worker started while the database was down migrates it (a no-op when
# `nextbest serve` already did) this often until it answers.
RETRY_INTERVAL_S = 10.0
# A served model's HCP history (recency, fatigue, engagement rates) is as of its
# training cut-off; older than this, loading it logs a warning.
STALE_FEATURES_DAYS = 14

MODEL_INFO = Gauge(
    "nextbest_model_info",
    "1 for the model version this process serves, 0 for versions it served before.",
    ["version"],
    multiprocess_mode="liveall",
)
CHALLENGER_INFO = Gauge(
    "nextbest_challenger_info",
    "1 for the challenger version answering its share of HCPs in this process "
    "(NEXTBEST_CHALLENGER_SHARE), 0 for challengers it answered with before.",
    ["version"],
    multiprocess_mode="liveall",
)


# For alerting without reading logs: a reload that failed (the old model, rules
# and territories keep serving, so nothing else shows it), and how old the served
# model's history is (time() - this; retrain when it grows past a week or two).
RELOADS = Counter(
    "nextbest_reloads_total",
    "Reloads of the served model, rules and territory file by this worker: swapped (a model "
    "loaded and swapped in: at the worker's start, after the alias moved, or a forced reload "
    "of the same version; new rules or territories alone are not counted) or failed (what "
    "served before goes on serving; each failure once: the polls and 10-s retries that fail "
    "with the same error again are not counted, a reload asked for is).",
    ["result"],
)
FEATURES_AS_OF = Gauge(
    "nextbest_model_features_as_of_seconds",
    "Where the served model's HCP history ends (its training cut-off), in seconds since "
    "1970: time() minus this is how old what it learned is (with NEXTBEST_FRESH_HISTORY "
    "its recency, fatigue and engagement rates are moved on each day; /healthz "
    "features_as_of says to when).",
    multiprocess_mode="liveall",
)


def _mark_served(version: str, previous: str | None) -> None:
    """Set ``nextbest_model_info``: ``version`` 1, ``previous`` 0.

    Set at the swap itself, so a worker that reloads on another worker's signal
    reports its new version at once. Zeroed rather than removed: with several
    worker processes (``PROMETHEUS_MULTIPROC_DIR``) labels cannot be removed.
    """
    if previous is not None and previous != version:
        MODEL_INFO.labels(previous).set(0)
    MODEL_INFO.labels(version).set(1)


def _mark_challenger(version: str | None, previous: str | None) -> None:
    """Set ``nextbest_challenger_info``: ``version`` 1 (None: no challenger), ``previous``
    0, as :func:`_mark_served` does for the served version."""
    if previous is not None and previous != version:
        CHALLENGER_INFO.labels(previous).set(0)
    if version is not None:
        CHALLENGER_INFO.labels(version).set(1)


def _utc(stamp: pd.Timestamp) -> pd.Timestamp:
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@lru_cache(maxsize=4)
def _iso_utc(stamp: pd.Timestamp) -> str:
    # Cached: /healthz is the cheapest route and reports it on every call.
    return _utc(stamp).isoformat()


def make_recommender(
    settings: Settings,
    model: ScoringModel,
    version: str,
    rules: ServingRules,
    alignment: TerritoryAlignment | None = None,
    *,
    clock: Clock = utc_now,
) -> Recommender:
    """The recommender a worker serves ``model`` (registered ``version``) with: the
    exploration, holdout and score cache ``settings`` configure, under ``rules`` and
    the territory ``alignment`` (None: the model's own territories), deciding by
    ``clock``."""
    return Recommender(
        model=model,
        version=version,
        exploration=make_exploration(
            settings.exploration,
            epsilon=settings.epsilon,
            temperature=settings.temperature,
            holdout_rate=settings.holdout_rate,
            seed=settings.seed,
            holdout_days=settings.holdout_days,
        ),
        rules=rules,
        cache_pairs=settings.score_cache_pairs,
        alignment=alignment,
        clock=clock,
    )


def warn_if_stale(
    name: str,
    version: str,
    as_of: pd.Timestamp,
    *,
    now: datetime,
    decided: datetime | None = None,
    moved_to: pd.Timestamp | None = None,
) -> None:
    """Log a warning when model ``name`` ``version``'s HCP history (``as_of``, its
    training cut-off) is older than ``STALE_FEATURES_DAYS`` at the time it decides for:
    at every load for serving (``now``, the reading of the clock it serves by), and
    by each way of picking for a file, at the picks' decision time ``decided`` (None:
    ``now``; both timezone-aware). ``moved_to``: the day its recency and fatigue
    features were moved on to (NEXTBEST_FRESH_HISTORY; None: not moved), which the
    warning then leaves out of what is that old.

    Picks for another day than today are measured at that day, not at today: picks
    for a past day (yesterday's file made again, a replay) are made as of that day,
    their reasons counting gaps to it, so the model is as stale as it was then; one
    retrained since could not pick for that day at all (a day before its cut-off is
    refused).
    """
    at = now if decided is None else decided
    age = pd.Timestamp(at).tz_convert("UTC") - _utc(as_of)
    day = pd.Timestamp(at).tz_convert("UTC").date().isoformat()
    if age > pd.Timedelta(days=STALE_FEATURES_DAYS):
        since = (
            f"{age.days} days ago"
            if at == now
            else f"{age.days} days before the decision date {day}"
        )
        stale = "recency, fatigue and engagement rates in its scores are that old"
        if moved_to is not None and _utc(moved_to) > _utc(as_of):
            stale = (
                "the preferences it learned and its HCPs' engagement effects and outcome "
                "means are that old (recency, fatigue and engagement rates are moved on to "
                f"{_utc(moved_to).date().isoformat()})"
            )
        logger.warning(
            "model %s version %s knows its HCPs' history up to %s (%s): %s; retrain to "
            "refresh them",
            name,
            version,
            _utc(as_of).date().isoformat(),
            since,
            stale,
        )


def _report_failed_reload(exc: Exception, previous: str | None) -> None:
    """One line saying what failed and what is served meanwhile. An error of the
    registry (a version that fails to load or score names its version, artifact and
    cause), the rules or the territory file says it all: its cause's traceback goes
    to the debug level only; a log line of many was taken for a crash. A failure
    nobody anticipated keeps its traceback."""
    in_a_file = isinstance(exc, RulesError | TerritoriesError)
    anticipated = in_a_file or isinstance(exc, registry.RegistryError)
    # What the watcher tries again every RETRY_INTERVAL_S (see _watch).
    retried = f"; tried again every {RETRY_INTERVAL_S:.0f} s" if in_a_file or not previous else ""
    logger.error(
        "model reload failed, %s%s: %s",
        f"keeping version {previous}" if previous else "nothing served yet",
        retried,
        exc,
        exc_info=None if anticipated else exc,
    )
    if anticipated and exc.__cause__ is not None:
        logger.debug("what the failed reload's error was raised from", exc_info=exc)


def _refreeze() -> None:
    """Collect, then freeze every object alive into the permanent generation.

    A serving process holds a few hundred thousand long-lived objects (imported
    modules, the model, its catalog); a full collection walking them all stalls
    every request of the process for about 0.2 s. Frozen, they are skipped.
    Unfreezing first lets the collection free what the previous model left in
    reference cycles; what requests still held at that moment stays frozen
    until the next reload.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class ReloadResult:
    version: str
    previous: str | None
    changed: bool
    warmed_hcps: int = 0
    rules_changed: bool = False  # the rules file was edited since the last (re)load
    # The territory alignment file (NEXTBEST_TERRITORIES_FILE) changed since the last
    # (re)load, or was read for the first time.
    territories_changed: bool = False
    # Why a broadcast reload could not signal the other workers (None: signalled, or
    # not broadcast): they go on serving what they served.
    signal_error: str | None = None
    # The challenger version answering its share of HCPs from now on (None: none), and
    # whether it is another than before the reload (NEXTBEST_CHALLENGER_SHARE).
    challenger: str | None = None
    challenger_changed: bool = False


class ServingRuntime:
    """The served recommender, the rules and the stores of one process.

    ``recommender`` is replaced by a single attribute assignment, so a request
    that already holds the old one finishes with it and the next one gets the
    new one: no request fails during a swap.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sessions: sessionmaker[Session],
        *,
        rules: ServingRules | None = None,
        predict_threads: int | None = 1,
        retries: bool = True,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        # What the recommenders it loads decide and serve by, and what a loaded
        # model's staleness is measured at.
        self.clock = clock
        # A server's watcher tries a failed load again every RETRY_INTERVAL_S, and its
        # words say so. A one-shot command (``picks --log``) loads once: its failure
        # is said once, by the command, from ``recommender``'s error; no retry.
        self.retries = retries
        self.engine = engine
        # The event loop, the thread pool and cache warming predict at once: one
        # thread count for every LightGBM call of this process (see
        # nextbest.learning.attribution), one thread each, as there is a worker per core.
        # None (every core, by batch size) only for a process whose one thread
        # predicts: no server, no warming, no reload watcher (``nextbest picks --log``).
        fix_predict_threads(predict_threads)
        # Live-history reads of the serving routes: recommendations, rep plans (one
        # round trip each on PostgreSQL).
        self.reader = make_reader(engine)
        # The single route's read on the event loop (PostgreSQL): opened by the app.
        self.async_reader: AsyncConnectionPool | None = None
        # The same on SQLite: a connection kept for it rather than one from the pool
        # per request.
        self.loop_reader = HeldReader(engine) if engine.dialect.name == "sqlite" else None
        self.sessions = sessions
        # The rules in force; None while the rules file cannot be read. A worker
        # started (by uvicorn, replacing one that died) after an invalid edit then
        # starts unready, and its first load names the file: refusing to start made
        # uvicorn's supervisor stop every worker, the healthy ones included.
        self.rules: ServingRules | None = rules
        if rules is None:
            try:
                self.rules = ServingRules.configured(settings)
            except RulesError as exc:
                logger.error("serving rules cannot be read, not ready until fixed: %s", exc)
        # Rules read from the file are read again at every reload (given ones stay).
        self._rules_from_file = rules is None
        # The fingerprint of the rules kept over an empty file, once said (see
        # _unless_emptied); None: not keeping any.
        self._kept_over_empty: str | None = None
        # Said by the reload's answer (rules_notes) while the rules held are kept over
        # an empty file: the reload that read it must not pass for one that applied it.
        self.emptied_rules_note: str | None = None
        # The territory alignment in force (NEXTBEST_TERRITORIES_FILE), read at every
        # reload as the rules are; None: unset, the served model's territories apply.
        self.alignment: TerritoryAlignment | None = None
        # The file's last read, by its modification time and size: an alias poll
        # every few seconds does not parse an unchanged file of 100,000 HCPs again.
        self._alignment_read: tuple[tuple[str, int, int], TerritoryAlignment] | None = None
        self.reclog = RecommendationLog(
            engine,
            flush_ms=settings.log_flush_ms,
            max_backlog=settings.log_max_backlog,
            max_wait_s=settings.log_max_wait_s,
        )
        self._recommender: Recommender | None = None
        self._reload_lock = threading.Lock()
        # Reloads begun (under the lock), and the last that swapped a model in: a
        # reload asked for while another was loading answers with that one's swap.
        self._reloads_begun = 0
        self._last_swap: ReloadResult | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._signal_seen: float | None = None
        self._asked = threading.Event()  # a reload asked by SIGHUP, for the watcher
        self._upgrade_schema = True
        # Warn at each load of a model whose history is stale (off for ``picks --log``,
        # which warns at its decision date itself).
        self._warn_stale = True
        self._warmer: threading.Thread | None = None
        self.last_reload_error: str | None = None
        # Why the last broadcast reload could not signal the other workers (None:
        # it did, or none was broadcast yet).
        self.signal_error: str | None = None
        # The version the last reload failed to load (None: it failed before, e.g.
        # no version has the served alias): what a 'no model' 503 explains.
        self._failed_version: str | None = None
        # The last reload failed on the rules or territories file (what a 'no model'
        # 503 explains).
        self._file_failed = False
        # The MLflow store the last reload could not read ("registry" or "tracking
        # store"; None: it read them): no alias is known to be missing, and no
        # training is called for.
        self._unreadable_store: str | None = None
        # Set when the start-up migration could not reach the database; the watcher
        # retries it until it does.
        self.migration_pending = False
        # The fingerprint of the rules whose text this worker stored (serving_rules).
        self._rules_stored: str | None = None
        # NEXTBEST_FRESH_HISTORY: when the served recommender's history is next moved on
        # (the start of the UTC day after the one its features are as of, by ``clock``);
        # None: it is not moved (the setting is off, or the model cannot move).
        self._next_move: datetime | None = None
        # Held by the one move under way (see move_history_if_due).
        self._moving = threading.Lock()
        self._mover: threading.Thread | None = None
        # After a failed move, no other is tried before this (time.monotonic()), and
        # the error (said once until another one, or a move, follows).
        self._move_retry_at = 0.0
        self._move_error: str | None = None
        # The model (by version) said not to move its history: said once per version.
        self._said_unmovable: str | None = None
        # The challenger version nextbest_challenger_info marks 1 (None: none).
        self._challenger_marked: str | None = None
        # NEXTBEST_CHALLENGER_SHARE: the challenger version that last failed to load, and
        # why (tried again when the alias moves or a reload is forced; the served version
        # answers every HCP meanwhile).
        self._challenger_failed: str | None = None
        self.challenger_error: str | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        load_model: bool = True,
        predict_threads: int | None = 1,
        check_holdout_rate: bool = True,
        upgrade_schema: bool = True,
        retries: bool = True,
        warn_stale: bool = True,
        clock: Clock = utc_now,
    ) -> ServingRuntime:
        """Open the database (migrating it), read the rules and load the served model.

        A failed model load leaves the runtime up but not ready (``/readyz`` says
        why); the watcher tries again every ``RETRY_INTERVAL_S``. So does a database that
        cannot be reached: requests get 503 until it answers, and the watcher
        migrates it then. A worker that exited instead would make uvicorn's
        supervisor stop every other worker too, the healthy ones included.
        ``check_holdout_rate``: warn when the newest logged answers used another
        holdout rate (off for ``picks --log``, whose command checks it itself).
        ``upgrade_schema``: upgrade a database at an older schema revision (a server
        does; ``picks --log`` refuses it, as other commands do, see ``migrate``).
        ``retries``: a watcher will try a failed load again (off for ``picks --log``:
        a failed load is not logged, and using ``recommender`` raises why, once).
        ``warn_stale``: each load warns of a model whose history is stale by ``clock``
        (:func:`warn_if_stale`; off for ``picks --log``, which warns as of its decision
        date itself). ``clock``: what the served recommenders decide and serve by.
        """
        if predict_threads == 1:
            # Each worker process scores small blocks; one OpenMP thread per process
            # avoids oversubscribing the cores (must be set before LightGBM first predicts).
            os.environ.setdefault("OMP_NUM_THREADS", "1")
        engine = make_engine(
            settings.resolved_database_url,
            lock_timeout_ms=settings.db_lock_timeout_ms,
            statement_timeout_ms=settings.db_statement_timeout_ms,
        )
        runtime = cls(
            settings,
            engine,
            make_session_factory(engine),
            predict_threads=predict_threads,
            retries=retries,
            clock=clock,
        )
        runtime._upgrade_schema = upgrade_schema
        runtime._warn_stale = warn_stale
        if runtime._migrate() and check_holdout_rate:
            runtime._warn_of_another_holdout_rate()
        if load_model:
            try:
                runtime.reload()
            except Exception:  # reported by reload() and /readyz; serving starts anyway
                logger.debug("no model loaded at start-up", exc_info=True)
            else:
                runtime.start_warming()
        return runtime

    def _migrate(self) -> bool:
        """Migrate the database; False (logged, and retried by the watcher) while it
        cannot be reached. Any other error is raised."""
        try:
            migrate(self.engine, upgrade=self._upgrade_schema)
        except UNAVAILABLE_ERRORS as exc:
            if not self.migration_pending:
                logger.error(
                    "database unreachable, not ready until it answers "
                    "(migration retried every %g s): %s",
                    RETRY_INTERVAL_S,
                    describe_database_error(exc),
                )
            self.migration_pending = True
            return False
        if self.migration_pending:
            logger.info("database reachable again: migrated, serving")
        self.migration_pending = False
        return True

    def _warn_of_another_holdout_rate(self) -> None:
        """Warn when the newest logged answers were served with another holdout rate.

        The holdout draw compares one hash per HCP and week with the rate, so a
        worker started with another ``NEXTBEST_HOLDOUT_RATE`` than the processes
        that logged before it holds out other HCPs this week, and the log mixes
        two rates. Only a warning: a deliberate change of rate starts this way too
        (``picks --log`` refuses instead; see the CLI).
        """
        rate = self.settings.holdout_rate
        try:
            with self.engine.connect() as connection:
                logged = latest_holdout_rate(connection)
        except Exception as exc:  # only a check: serving starts anyway
            logger.warning(
                "could not read the holdout rate of the recommendation log: %s",
                describe_database_error(exc),
            )
            return
        if logged is not None and not same_holdout_rate(rate, logged):
            logger.warning(
                "NEXTBEST_HOLDOUT_RATE is %g in this worker but the newest logged answers "
                "were served with holdout rate %g: this worker holds out other HCPs than "
                "the processes that logged them, and the log now mixes both rates; give "
                "every server and `nextbest picks --log` run the same rate",
                rate,
                logged,
            )

    def store_rules(self) -> None:
        """Keep the text of the rules in force under the fingerprint its answers name
        (table ``serving_rules``), once per worker and fingerprint. A database that
        cannot take it (down, not migrated yet) is said and the watcher tries again:
        serving goes on, its answers naming the fingerprint as before."""
        rules = self.rules
        if rules is None or not rules.text_known or self._rules_stored == rules.fingerprint:
            return
        if self.migration_pending:
            return  # the watcher stores it once the database is migrated
        # The path as read may be relative to wherever the server was started: an
        # auditor reading the row later could not tell which file it was. A serving
        # process does not change its working directory, so anchored here it is the
        # file the rules were loaded from. Rows stored before keep what they hold.
        source = str(Path(rules.source).absolute())
        try:
            with self.sessions() as session:
                store_rules(session, content=rules.text, source=source)
        except Exception as exc:
            logger.warning(
                "could not store the text of serving rules %s (tried again every %g s): %s",
                rules.fingerprint,
                RETRY_INTERVAL_S,
                describe_database_error(exc),
            )
            return
        self._rules_stored = rules.fingerprint

    def retry_migration(self) -> bool:
        """Migrate a database that could not be reached before; True once done."""
        try:
            return self._migrate()
        except Exception as exc:  # not an outage: said, and tried again later
            logger.error("database migration failed: %s", exc)
            return False

    def start_warming(self) -> None:
        """Background thread: warm the score cache with the log's newest HCPs.

        Requests are served meanwhile (those about HCPs not yet warmed are scored
        as usual); readiness does not wait for it, so a lone restarted instance
        takes traffic at once.
        """
        if self._warmer is not None or self.settings.start_warm_s <= 0:
            return
        self._warmer = threading.Thread(target=self._warm, name="nextbest-warm", daemon=True)
        self._warmer.start()

    @property
    def warming(self) -> bool:
        """The start-up warming is still running."""
        return self._warmer is not None and self._warmer.is_alive()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Wait for the start-up warming to end; False if it is still running."""
        if self._warmer is not None:
            self._warmer.join(timeout)
            return not self._warmer.is_alive()
        return True

    def _warm(self) -> None:
        started = time.perf_counter()
        try:
            recommender = self.recommender
            with self.engine.connect() as connection:
                hcp_ids = recently_asked_hcps(connection, limit=recommender.cache.capacity)
            # Each version (with NEXTBEST_CHALLENGER_SHARE) warmed with the HCPs it answers,
            # for its part of the time.
            parts = recommender.by_answering(hcp_ids, recommender.clock())
            budget = self.settings.start_warm_s - (time.perf_counter() - started)
            warmed = 0
            for answering, places in parts.items():
                warmed += answering.warm_hcps(
                    [hcp_ids[i] for i in places],
                    seconds=budget * len(places) / max(len(hcp_ids), 1),
                    # Shutting down, or a reload replaced this model: no use going on.
                    stop=lambda: self._stop.is_set() or self._recommender is not recommender,
                )
        except Exception as exc:  # only a slower start: requests are scored as usual
            logger.warning("could not warm the score cache at start-up: %s", exc)
            return
        logger.info(
            "score cache warmed at start-up for %d HCPs of the recommendation log in %.1f s",
            warmed,
            time.perf_counter() - started,
        )

    @property
    def recommender(self) -> Recommender:
        """The recommender served now (what a request holds until it ends). Asked for
        on a new UTC day, it starts moving the served history on (see
        :meth:`move_history_if_due`) and is the one served until that is done."""
        self.move_history_if_due()
        current = self._recommender
        if current is None:
            raise ModelNotLoadedError(self._why_no_model())
        return current

    def _why_no_model(self) -> str:
        retried = f" (tried again every {RETRY_INTERVAL_S:g} s)" if self.retries else ""
        served = (
            f"the served version {self._failed_version} of model "
            f"'{self.settings.model_name}' (alias '{self.settings.serve_alias}')"
        )
        if self._file_failed:  # the file, not the version, is at fault
            # Rules refused for a catalog name its version (see _refused_by_rules).
            return f"not serving: {self.last_reload_error}; fix the file{retried}"
        if self._failed_version is not None:
            return f"no model is loaded: {served} failed to load{retried}: {self.last_reload_error}"
        if self._unreadable_store is not None:
            return f"no model is loaded: {self.last_reload_error}{retried}"
        if self.last_reload_error is not None:
            return (
                f"no model is loaded: {self.last_reload_error}; train one with "
                f"`nextbest train` or point the alias at a version{retried}"
            )
        return "no model is loaded yet"

    @property
    def not_serving(self) -> str | None:
        """Why no model serves, in /readyz's words (None: one does). A serving rules or
        territory file that cannot be read stops a worker that has no model loaded
        yet (one restarted after the file was broken); "no model loaded" would send
        an operator to the registry instead of the file."""
        if self._recommender is not None:
            return None
        if self._file_failed:
            error = self.last_reload_error or ""
            return (
                "territory file invalid"
                if error.startswith("TerritoriesError")
                else "serving rules file invalid"
            )
        if self._unreadable_store == "registry":
            return "no model loaded: model registry unreadable"
        if self._unreadable_store is not None:
            return f"no model loaded: MLflow {self._unreadable_store} unreadable"
        return "no model loaded"

    @property
    def model_version(self) -> str | None:
        current = self._recommender
        return current.version if current is not None else None

    @property
    def challenger_version(self) -> str | None:
        """The challenger version answering its share of HCPs (None: none)."""
        current = self._recommender
        challenger = current.challenger if current is not None else None
        return challenger.version if challenger is not None else None

    @property
    def territories_fingerprint(self) -> str | None:
        """The fingerprint of the territory alignment file this worker applies (None:
        unset, or unreadable since it started)."""
        current = self._recommender
        alignment = current.alignment if current is not None else None
        return alignment.fingerprint or None if alignment is not None else None

    @property
    def rules_fingerprint(self) -> str | None:
        """The fingerprint of the serving rules this worker applies (and logs with its
        answers): the served recommender's, else the rules read (None: unreadable)."""
        current = self._recommender
        if current is not None:
            return current.rules.fingerprint
        return self.rules.fingerprint if self.rules is not None else None

    @property
    def features_as_of(self) -> str | None:
        """When the served model's HCP history features are as of (UTC): its training
        cut-off, or the start of the day NEXTBEST_FRESH_HISTORY moved them on to. Read
        on a new UTC day, it starts moving them on, as :attr:`recommender` does."""
        self.move_history_if_due()
        current = self._recommender
        return None if current is None else _iso_utc(current.model.features_as_of)

    # -- the served history moved on each UTC day (NEXTBEST_FRESH_HISTORY) ---------------

    def _moves_history(self, model: ScoringModel, version: str) -> bool:
        """Whether the served ``model``'s history is moved on each day: the setting is on
        and the model can move (one that cannot is said once per version)."""
        if not self.settings.fresh_history:
            return False
        if model.advances:
            return True
        if self._said_unmovable != version:
            self._said_unmovable = version
            logger.warning(
                "NEXTBEST_FRESH_HISTORY is on but model %s version %s cannot move its HCP "
                "history on: its artifact does not keep its snapshot's recent touches "
                "(trained before they were kept); its features stay as of its cut-off %s "
                "until it is retrained",
                self.settings.model_name,
                version,
                _iso_utc(model.as_of),
            )
        return False

    def _moved_history(self, model: ScoringModel, version: str) -> ScoringModel:
        """``model`` with its history moved on to the start (00:00 UTC) of the clock's
        UTC day by the contacts the store holds since its cut-off (those it needs:
        :func:`history_moved_to`; logged, one line);
        ``model`` itself when its features are as of that day already, or later.
        Raises what reading the store or moving the history raises."""
        day = _utc(pd.Timestamp(self.clock())).normalize()
        if day <= _utc(model.features_as_of):
            return model
        started = time.perf_counter()
        with self.sessions() as session:
            moved, read, engaged = history_moved_to(model, session, day.to_pydatetime())
        self._move_error = None
        logger.info(
            "model %s version %s: HCP history moved on to %s by the contacts since %s "
            "(%d read, %d engaged; its cut-off %s), in %.2f s",
            self.settings.model_name,
            version,
            day.date().isoformat(),
            _iso_utc(model.contacts_needed_from),
            read,
            engaged,
            _iso_utc(model.as_of),
            time.perf_counter() - started,
        )
        return moved

    def _history_at_load(self, model: ScoringModel, version: str) -> ScoringModel:
        """A model loaded for serving, its history moved on to the clock's day when it
        is to be; one that cannot be moved now (the store unreadable) serves as loaded,
        said, and is moved by a later request or watcher poll."""
        if not self._moves_history(model, version):
            return model
        try:
            return self._moved_history(model, version)
        except Exception as exc:
            self._move_failed(version, model, exc)
            return model

    def _schedule_move(self) -> None:
        """Set when the served recommender's history is next moved on: the start of the
        UTC day after the one its features are as of (None: it is not moved)."""
        current = self._recommender
        if current is None or not self._moves_history(current.model, current.version):
            self._next_move = None
            return
        day = _utc(current.model.features_as_of).normalize() + pd.Timedelta(days=1)
        self._next_move = day.to_pydatetime()

    def move_history_if_due(self) -> None:
        """Start moving the served history on to the clock's UTC day, in the background,
        when that day is later than the one it is as of; else nothing (a clock reading,
        or with NEXTBEST_FRESH_HISTORY off an attribute read: run by every request).

        One move at a time; requests meanwhile are answered by the recommender served.
        The moved one replaces it as a reload's does (same version, rules, territories
        and exploration; its score cache warmed with what the served one was last
        asked, up to ``NEXTBEST_RELOAD_WARM_S``). A move that fails is logged,
        the recommender served goes on serving, and it is tried again
        ``RETRY_INTERVAL_S`` later; it never fails a request.
        """
        due = self._next_move
        if due is None or self.clock() < due or time.monotonic() < self._move_retry_at:
            return
        if self._stop.is_set() or not self._moving.acquire(blocking=False):
            return
        try:
            mover = threading.Thread(
                target=self._move_history, name="nextbest-history", daemon=True
            )
            mover.start()
        except Exception as exc:  # no thread to be had: tried again later
            self._moving.release()
            self._move_retry_at = time.monotonic() + RETRY_INTERVAL_S
            logger.error("could not start moving the served HCP history on: %s", exc)
            return
        self._mover = mover

    def _move_history(self) -> None:
        """The background move (see :meth:`move_history_if_due`); holds ``_moving``."""
        current = self._recommender
        try:
            if current is None:
                return
            moved = self._moved_recommender(current)
            challenger = current.challenger
            if challenger is not None:
                moved_challenger = self._moved_recommender(challenger)
                if moved is not current or moved_challenger is not challenger:
                    moved = moved.with_challenger(moved_challenger, current.challenger_share)
            if moved is current:
                return
            with self._reload_lock:
                if self._recommender is not current:
                    # A reload swapped another in meanwhile: a new model was moved at
                    # its load; new rules or territories find this one due again.
                    return
                self._recommender = moved
                self._schedule_move()
                if self.settings.gc_freeze:
                    _refreeze()
        except Exception as exc:
            if current is not None:
                self._move_failed(current.version, current.model, exc)
        finally:
            self._moving.release()

    def _moved_recommender(self, current: Recommender) -> Recommender:
        """``current``'s version, rules and territories with its history moved on to the
        clock's day, its score cache warmed with what ``current`` was last asked (as a
        reload's is: the first requests of the day do not all go to the model);
        ``current`` itself when its history is as of that day already, or cannot move."""
        if not self._moves_history(current.model, current.version):
            return current
        model = self._moved_history(current.model, current.version)
        if model is current.model:
            return current
        moved = make_recommender(
            self.settings,
            model,
            current.version,
            current.rules,
            current.alignment,
            clock=self.clock,
        )
        warmed = moved.warm_from(current, seconds=self.settings.reload_warm_s)
        logger.info(
            "version %s: score cache warmed for %d HCPs on the moved history",
            current.version,
            warmed,
        )
        return moved

    def wait_history_moved(self, timeout: float | None = None) -> bool:
        """Wait for a move of the served history under way to end; False if it is still
        running."""
        mover = self._mover
        if mover is not None:
            mover.join(timeout)
            return not mover.is_alive()
        return True

    def _move_failed(self, version: str, model: ScoringModel, exc: Exception) -> None:
        """Say why the history could not be moved (once, until another error or a move),
        and wait ``RETRY_INTERVAL_S`` before the next try."""
        self._move_retry_at = time.monotonic() + RETRY_INTERVAL_S
        said = describe_database_error(exc)
        if said == self._move_error:
            logger.debug("the served HCP history could not be moved on again", exc_info=exc)
            return
        self._move_error = said
        logger.error(
            "model %s version %s: could not move its HCP history on, serving it as of %s "
            "(tried again every %g s): %s",
            self.settings.model_name,
            version,
            _iso_utc(model.features_as_of),
            RETRY_INTERVAL_S,
            said,
            exc_info=None if isinstance(exc, SQLAlchemyError) else exc,
        )

    @property
    def signal_path(self) -> Path:
        return self.settings.resolved_models_dir / RELOAD_SIGNAL

    def reload(
        self, *, force: bool = False, broadcast: bool = False, polled: bool = False
    ) -> ReloadResult:
        """Load the served alias's current version beside the old one, then swap.

        If loading fails the old model keeps serving and the error is raised
        (and kept in ``last_reload_error``). ``broadcast`` also signals the other
        worker processes sharing this models directory, which reload the same
        way (forced too, when ``force``). ``polled``: a poll of the alias or a retry,
        not a reload someone asked for, which skips a territory file of unchanged
        modification time and size (an asked reload reads it whatever its stamp).

        A poll or retry after a reload that could not read an MLflow store first checks
        that the store answers, outside the lock (:func:`registry.check_stores`): a
        reload asked for meanwhile goes ahead instead of waiting behind the store's
        connect timeout. A reload asked for while another is loading waits for that
        load; when it swapped in the alias's version, the answer is that swap
        (``changed``, and ``previous`` the version served when it was asked).
        """
        begun = self._reloads_begun
        unreachable: registry.RegistryUnreadableError | None = None
        if polled and self._unreadable_store is not None:
            try:
                registry.check_stores(self.settings)
            except registry.RegistryUnreadableError as exc:
                unreachable = exc
        asked_with, last_swap = self.model_version, self._last_swap
        with self._reload_lock:
            self._reloads_begun += 1
            settings = self.settings
            previous = self.model_version
            warm_s = 0.0
            loading: str | None = None
            try:
                # Still down, and no reload ran while it was checked: this try fails
                # as the last did. Else the store is read as usual (it may be back).
                if unreachable is not None and self._reloads_begun == begun + 1:
                    raise unreachable
                # An edited rules file applies from here on; an invalid one fails the
                # reload, and the old rules and model keep serving.
                rules = (
                    self._unless_emptied(ServingRules.configured(settings))
                    if self._rules_from_file or self.rules is None
                    else self.rules
                )
                rules_changed = rules != self.rules
                # So does an edited territory alignment, whichever model is served.
                # A worker starting (no model yet) with a file it cannot read serves
                # all but what needs territories: a rejected edit left in place and a
                # restart (SIGHUP, a crash) took e-mail traffic down with rep plans.
                try:
                    alignment = self._read_alignment(unless_unchanged=polled)
                except TerritoriesError as exc:
                    if self._recommender is not None or settings.territories_file is None:
                        raise
                    alignment = TerritoryAlignment.unreadable(settings.territories_file, str(exc))
                territories_changed = alignment != self.alignment
                version = registry.alias_version(settings, settings.serve_alias)
                if version is None:
                    raise registry.RegistryError(
                        registry.no_alias_said(settings, settings.serve_alias)
                    )
                held = self._recommender.challenger if self._recommender is not None else None
                held_version = held.version if held is not None else None
                wanted = registry.challenger_beside(settings, version)
                # A challenger that failed to load is tried again when the alias moves
                # or the reload is forced, not at every poll.
                challenger_changed = held_version != wanted and (
                    force or wanted is None or wanted != self._challenger_failed
                )
                if (
                    previous == version
                    and not force
                    and not rules_changed
                    and not territories_changed
                    and not challenger_changed
                ):
                    result = ReloadResult(
                        version=version,
                        previous=previous,
                        changed=False,
                        # What answers: not a version that failed to load and is not
                        # tried again at this poll.
                        challenger=self.challenger_version,
                    )
                elif previous == version and not force and self._recommender is not None:
                    # Same model, new rules or territories: they apply to what is
                    # scored, so the scores and reasons already cached stay valid.
                    recommender = self._recommender
                    if rules_changed or territories_changed:
                        # The served version's alone; its challenger is given them apart
                        # (by _with_challenger): strict rules that do not fit its catalog
                        # leave it out, and do not fail the served version's reload in its
                        # name. One it left out before is tried again under the new rules.
                        recommender = self._under(
                            recommender.with_challenger(None, 0.0), rules, alignment
                        )
                    if challenger_changed or rules_changed or territories_changed:
                        recommender = self._with_challenger(recommender, wanted, held, force=force)
                    self._recommender = recommender
                    result = ReloadResult(
                        version=version,
                        previous=previous,
                        changed=False,
                        rules_changed=rules_changed,
                        territories_changed=territories_changed,
                        challenger=self.challenger_version,
                        challenger_changed=self.challenger_version != held_version,
                    )
                else:
                    if held is not None and held.version == version and not force:
                        # The challenger promoted: what answered its share of HCPs answers
                        # them all, its score cache warm with its share; no second load.
                        recommender = self._promoted(held, rules, alignment)
                    else:
                        loading = version
                        recommender = self._load(version, rules, alignment)
                    warmed, started = 0, time.perf_counter()
                    if self._recommender is not None:
                        warmed = recommender.warm_from(
                            self._recommender, seconds=settings.reload_warm_s
                        )
                    warm_s = time.perf_counter() - started
                    recommender = self._with_challenger(recommender, wanted, held, force=force)
                    self._recommender = recommender
                    result = ReloadResult(
                        version=version,
                        previous=previous,
                        changed=True,
                        warmed_hcps=warmed,
                        rules_changed=rules_changed,
                        territories_changed=territories_changed,
                        challenger=self.challenger_version,
                        challenger_changed=self.challenger_version != held_version,
                    )
            except Exception as exc:
                said_before, self.last_reload_error = (
                    self.last_reload_error,
                    f"{type(exc).__name__}: {exc}",
                )
                self._failed_version = loading
                self._file_failed = isinstance(exc, RulesError | TerritoriesError)
                self._unreadable_store = (
                    exc.store if isinstance(exc, registry.RegistryUnreadableError) else None
                )
                # A poll or retry failing as the last reload did is the same failure,
                # neither said nor counted again: a server waiting for its first model
                # logged the same two lines every 10 s until one was trained, and an
                # invalid rules file left in place added a failed reload every 10 s.
                repeated = polled and said_before == self.last_reload_error
                if not repeated:
                    RELOADS.labels("failed").inc()
                # Else said once by the command (see start).
                if self.retries and not repeated:
                    _report_failed_reload(exc, previous)
                if broadcast:
                    # The other workers try too, and each says so in its /readyz and
                    # log: a failure seen by one of them only looked like a flaky probe.
                    self._signal(force=force)
                raise
            self.last_reload_error = None
            if alignment is not None and alignment.error is not None:
                self.last_reload_error = f"TerritoriesError: {alignment.error}"
                if self.retries:
                    logger.error(
                        "territory alignment cannot be read: rep keys and rep plans get 503 "
                        "until it is fixed (tried again every %.0f s): %s",
                        RETRY_INTERVAL_S,
                        alignment.error,
                    )
                else:  # a command that asks about no territory: what a server would do
                    logger.warning(
                        "territory alignment cannot be read (a server would answer rep keys "
                        "and rep plans 503 until it is fixed): %s",
                        alignment.error,
                    )
            self._failed_version = None
            self._file_failed = False
            self._unreadable_store = None
            if rules_changed:
                self.rules = rules
                logger.info("serving rules re-read from %s", rules.source)
            self.store_rules()  # once per worker and fingerprint
            if territories_changed:
                self.alignment = alignment
            if territories_changed and alignment is not None and alignment.error is None:
                logger.info(
                    "territory alignment read from %s: %d HCPs in %d territories",
                    alignment.source,
                    len(alignment.territory_of),
                    len(set(alignment.territory_of.values())),
                )
            if (
                alignment is not None
                and alignment.error is None
                and (territories_changed or result.changed)
            ):
                for note in self.territory_notes():
                    logger.warning("territory alignment: %s", note)
            if result.changed:
                for note in self.key_notes():
                    logger.warning("API keys: %s", note)
            if result.changed:
                self._last_swap = result
                _mark_served(version, previous)
                RELOADS.labels("swapped").inc()
                if self._recommender is not None:
                    FEATURES_AS_OF.set(_utc(self._recommender.model.as_of).timestamp())
                self._schedule_move()
            if self.challenger_version != self._challenger_marked:
                _mark_challenger(self.challenger_version, self._challenger_marked)
                self._challenger_marked = self.challenger_version
            if (result.changed or result.challenger_changed) and settings.gc_freeze:
                _refreeze()
            if result.changed:
                logger.info(
                    "serving model %s version %s (was %s); cache warmed for %d HCPs in %.1f s",
                    settings.model_name,
                    version,
                    previous or "none",
                    result.warmed_hcps,
                    warm_s,
                )
                if self._warn_stale:
                    served = self.recommender
                    warn_if_stale(
                        settings.model_name,
                        version,
                        served.model.as_of,
                        now=served.clock(),
                        moved_to=served.model.history_day,
                    )
            swapped = self._last_swap
            if (
                not polled
                and not result.changed
                and swapped is not last_swap
                and swapped is not None
                and swapped.version == version != asked_with
            ):
                # Another reload (a poll, a retry, a signal) swapped the alias's version in
                # while this one waited for it: that swap is this reload's answer.
                logger.info(
                    "reload asked while version %s was being loaded: answered with that load",
                    version,
                )
                result = replace(
                    result, previous=asked_with, changed=True, warmed_hcps=swapped.warmed_hcps
                )
        if broadcast:
            result = replace(result, signal_error=self._signal(force=force))
        return result

    def _unless_emptied(self, read: ServingRules) -> ServingRules:
        """``read``, or the rules held when ``read`` is of an empty file and they are not.

        A file emptied under a serving worker is most likely one being saved (truncated,
        not yet written) that stayed empty past the second read; taken at its word,
        every cap and cool-down would stop at once. So the rules held keep serving, and
        a warning says so once; a comment-only file (``# no history rules``) is how
        to serve without them.
        """
        held = self.rules
        if (
            held is None
            or read.fingerprint != EMPTY_FINGERPRINT
            # Rules that apply nothing (a comment-only file) lose nothing to it.
            or replace(held, source=read.source, fingerprint=read.fingerprint) == read
        ):
            self._kept_over_empty = None
            self.emptied_rules_note = None
            return read
        self.emptied_rules_note = (
            f"{read.source} is empty: taken for a save in progress, the rules read before "
            f"(fingerprint {held.fingerprint}) keep serving; to serve without history rules, "
            "leave a comment in the file ('# no history rules')"
        )
        if self._kept_over_empty != held.fingerprint:
            self._kept_over_empty = held.fingerprint
            logger.warning("%s", self.emptied_rules_note)
        return held

    def _read_alignment(self, *, unless_unchanged: bool) -> TerritoryAlignment | None:
        """The territory alignment file's content now (None: the setting is unset);
        ``unless_unchanged``: the last one read when the file's path, modification
        time and size are the same (an edit keeping both goes unseen until a reload
        someone asks for)."""
        path = self.settings.territories_file
        if path is None:
            return None
        try:
            stat = path.stat()
        except OSError:
            return TerritoryAlignment.load(path)  # says what is wrong with it
        stamp = (str(path), stat.st_mtime_ns, stat.st_size)
        if (
            unless_unchanged
            and self._alignment_read is not None
            and self._alignment_read[0] == stamp
        ):
            return self._alignment_read[1]
        alignment = TerritoryAlignment.load(path)
        self._alignment_read = (stamp, alignment)
        return alignment

    def territory_notes(self, *, examples: int = 0) -> list[str]:
        """What an operator should know of the territory alignment in force against the
        served model and the rep keys (see :func:`alignment_notes`); [] when the
        served model's own territories apply. ``examples``: unknown HCP ids to name."""
        current = self._recommender
        if current is None or current.alignment is None:
            return []
        return alignment_notes(
            current.alignment,
            known=current.known_hcps,
            territory=current.territory,
            served=current.territories,
            rep_territories=self._rep_territories(),
            examples=examples,
        )

    def key_notes(self) -> list[str]:
        """The channel-bound API keys (``channels`` in the key file) naming a channel no
        action of the served catalog uses, one note each, the keys bound to a purpose
        whose channels hold no content of it (:func:`key_purpose_notes`: an MSL's key
        before the catalog has medical content for visits), and, when the served model's
        territories apply, the rep keys' territories holding none of its HCPs (an
        alignment file's notes say those, naming it: :meth:`territory_notes`); []
        when there are none (or auth is off, no model is loaded, or the key file
        cannot be read: its error is reported where keys are). Not errors: catalogs
        change, and a key may be bound ahead of its channel's first content. A typo
        ('SMS ' is read as 'sms', but 'text' is not) leaves the key with nothing to
        ask for; one in a rep key's territory, refused every HCP."""
        current = self._recommender
        if current is None or not self.settings.auth_enabled:
            return []
        try:
            principals = KeyStore.load(path=self.settings.resolved_api_keys_file).principals
        except ApiKeyError:
            return []
        notes = key_channel_notes(principals, current.channels)
        notes += key_purpose_notes(principals, current.offered)
        if current.alignment is None:
            reps = [p.territory_id for p in principals if p.role == "rep" and p.territory_id]
            notes += empty_territories_note(reps, current.territories)
        return notes

    def _rep_territories(self) -> list[str]:
        """The territories of the rep keys as the key file has them now ([] when auth
        is off or the file cannot be read: its error is reported where keys are)."""
        if not self.settings.auth_enabled:
            return []
        try:
            principals = KeyStore.load(path=self.settings.resolved_api_keys_file).principals
        except ApiKeyError:
            return []
        return [p.territory_id for p in principals if p.role == "rep" and p.territory_id]

    def _promoted(
        self, held: Recommender, rules: ServingRules, alignment: TerritoryAlignment | None
    ) -> Recommender:
        """The challenger recommender ``held``, its version now the served one, under
        ``rules`` and ``alignment``: it answers every HCP from the swap on."""
        return self._under(held.with_challenger(None, 0.0), rules, alignment)

    def _under(
        self,
        recommender: Recommender,
        rules: ServingRules,
        alignment: TerritoryAlignment | None,
        *,
        alias: str | None = None,
    ) -> Recommender:
        """``recommender`` (model and score cache kept) under ``rules`` and ``alignment``;
        strict rules that do not fit its catalog are refused naming its version and
        ``alias`` (the served one unless given)."""
        if recommender.rules != rules:
            try:
                recommender = recommender.with_rules(rules)
            except RulesError as exc:
                raise self._refused_by_rules(recommender.version, exc, alias=alias) from None
        if recommender.alignment != alignment:
            recommender = recommender.with_alignment(alignment)
        return recommender

    def _with_challenger(
        self,
        recommender: Recommender,
        wanted: str | None,
        held: Recommender | None,
        *,
        force: bool,
    ) -> Recommender:
        """``recommender`` with the ``wanted`` challenger version answering its share of
        HCPs: ``held`` (the one served so far) under ``recommender``'s rules and
        territories when it is that version and the reload is not forced, else loaded.

        A challenger that fails to load is said (``challenger_error``, and the log) and
        left out: the served version answers every HCP until the alias moves or a reload
        is forced. Never fails the reload: the champion's service does not depend on it."""
        if wanted is None:
            self._challenger_failed = self.challenger_error = None
            if held is not None and held.version != recommender.version:  # not promoted
                logger.info(
                    "challenger version %s no longer answers: version %s answers every HCP",
                    held.version,
                    recommender.version,
                )
            return recommender.with_challenger(None, 0.0)
        share = self.settings.challenger_share
        kept = held is not None and held.version == wanted and not force
        try:
            if kept and held is not None:
                challenger = self._under(
                    held, recommender.rules, recommender.alignment, alias=registry.CHALLENGER_ALIAS
                )
            else:
                challenger = self._load(
                    wanted,
                    recommender.rules,
                    recommender.alignment,
                    alias=registry.CHALLENGER_ALIAS,
                )
        except Exception as exc:
            self._challenger_failed = wanted
            self.challenger_error = f"{type(exc).__name__}: {exc}"
            RELOADS.labels("failed").inc()
            logger.error(
                "challenger version %s failed to load; version %s answers every HCP until "
                "alias '%s' moves or a reload is forced: %s",
                wanted,
                recommender.version,
                registry.CHALLENGER_ALIAS,
                exc,
            )
            return recommender.with_challenger(None, 0.0)
        if kept:
            return recommender.with_challenger(challenger, share)
        if held is not None and held.version == wanted:  # forced: warmed as the champion is
            challenger.warm_from(held, seconds=self.settings.reload_warm_s)
        self._challenger_failed = self.challenger_error = None
        logger.info(
            "challenger: model %s version %s answers %.0f%% of the HCPs beside version %s",
            self.settings.model_name,
            wanted,
            100 * share,
            recommender.version,
        )
        return recommender.with_challenger(challenger, share)

    def _load(
        self,
        version: str,
        rules: ServingRules,
        alignment: TerritoryAlignment | None,
        *,
        alias: str | None = None,
    ) -> Recommender:
        """``version`` of the served alias (or of ``alias``), loaded and checked; an error
        names both."""
        settings = self.settings
        alias = alias or settings.serve_alias
        try:
            model = registry.load_version(settings, version, alias=alias)
            # Before the swap: the version answers with the day's history from its first request.
            model = self._history_at_load(model, version)
            recommender = make_recommender(
                settings, model, version, rules, alignment, clock=self.clock
            )
            # A model that loads but cannot score (e.g. pickled by an
            # incompatible code version) must fail here, not on every request.
            recommender.self_check()
        except registry.RegistryError:
            raise  # names the version, the alias and what to do
        except RulesError as exc:  # strict, and they do not fit its catalog
            raise self._refused_by_rules(version, exc, alias=alias) from None
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise registry.RegistryError(
                f"model '{settings.model_name}' version {version} (alias "
                f"'{alias}') failed to load: {type(exc).__name__}: {first}"
            ) from exc
        return recommender

    def _refused_by_rules(
        self, version: str, exc: RulesError, *, alias: str | None = None
    ) -> RulesError:
        """``exc`` (strict rules that do not fit a catalog) naming the version and
        alias (the served one unless given) whose catalog they do not fit, as
        ``nextbest picks`` says it."""
        settings = self.settings
        return RulesError(
            f"model '{settings.model_name}' version {version} (alias "
            f"'{alias or settings.serve_alias}'): {exc}"
        )

    def _signal(self, *, force: bool) -> str | None:
        """Write the served version (and ``force``, when forced) to the signal file;
        why it could not be written (also logged and kept in ``signal_error``), else
        None. The caller of a reload is told: it did, and nothing else says that the
        other workers serve on unchanged."""
        try:
            self.signal_path.parent.mkdir(parents=True, exist_ok=True)
            self.signal_path.write_text((self.model_version or "") + (" force" if force else ""))
            self._signal_seen = self.signal_path.stat().st_mtime
        except OSError as exc:
            interval = self.settings.reload_interval_s
            follow = (
                f"they reload at their next alias poll (NEXTBEST_RELOAD_INTERVAL_S={interval:g})"
                if interval > 0
                else "they do not reload (NEXTBEST_RELOAD_INTERVAL_S=0: no alias poll) "
                "until the file can be written and a reload is asked for again"
            )
            self.signal_error = (
                f"the other workers were not signalled: {type(exc).__name__}: "
                f"{exc.strerror or exc}: {exc.filename or self.signal_path}; {follow}"
            )
            logger.warning("%s", self.signal_error)
            return self.signal_error
        self.signal_error = None
        return None

    def start_watcher(self) -> None:
        """Background thread: follow reload signals and, if set, poll the alias."""
        if self._watcher is not None:
            return
        try:
            self._signal_seen = self.signal_path.stat().st_mtime
        except OSError:
            self._signal_seen = None
        self._watcher = threading.Thread(target=self._watch, name="nextbest-reload", daemon=True)
        self._watcher.start()

    def ask_reload(self) -> None:
        """Have the watcher reload as ``POST /v1/admin/reload`` does, for this worker
        (SIGHUP): the served alias, the rules file and the territory file are read
        again; a failure leaves what serves in place, in ``last_reload_error``."""
        logger.info("SIGHUP: reloading the served model, rules and territory files")
        self._asked.set()

    def _watch(self) -> None:
        interval = self.settings.reload_interval_s
        since_poll = since_retry = 0.0
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                self.move_history_if_due()  # a new day, asked of nobody yet
            except Exception:  # the clock could not be read: the watcher goes on
                logger.exception("could not check whether the served HCP history is due to move")
            since_poll += WATCH_INTERVAL_S
            since_retry += WATCH_INTERVAL_S
            retry = since_retry >= RETRY_INTERVAL_S
            if retry:
                since_retry = 0.0
            if self.migration_pending and retry:
                self.retry_migration()
            if retry:
                self.store_rules()
            unaligned = self.alignment is not None and self.alignment.error is not None
            # A reload refused for its rules or territory file is tried again too: once
            # the file is fixed, the worker applies it (and /readyz clears) without
            # anyone reloading a second time.
            due = (interval > 0 and since_poll >= interval) or (
                retry and (self._recommender is None or unaligned or self._file_failed)
            )
            try:
                mtime: float | None = self.signal_path.stat().st_mtime
            except OSError:
                mtime = None
            signalled = mtime is not None and mtime != self._signal_seen
            asked = self._asked.is_set()
            if not (due or signalled or asked):
                continue
            self._asked.clear()
            self._signal_seen = mtime
            since_poll = 0.0
            try:
                result = self.reload(
                    force=signalled and self._signal_forced(), polled=not (signalled or asked)
                )
            except Exception:  # the old model keeps serving; reload() said why
                if self.last_reload_error is None:  # failed after its swap: a fault
                    logger.exception("background reload failed")
                continue
            if asked and not (result.changed or result.rules_changed or result.territories_changed):
                # A swap and re-read files are logged as they happen; without this, a
                # SIGHUP that found nothing new left no line at all.
                logger.info(
                    "SIGHUP reload: nothing changed, still serving model %s version %s "
                    "(alias '%s'); the rules and territory files are as read before",
                    self.settings.model_name,
                    result.version,
                    self.settings.serve_alias,
                )

    def _signal_forced(self) -> bool:
        try:
            return self.signal_path.read_text().endswith(" force")
        except OSError:
            return False

    async def open_async_reader(self) -> None:
        """Open the asyncio history pool on the running event loop (PostgreSQL only)."""
        pool = make_async_reader(self.engine)
        if pool is not None:
            await pool.open(wait=False)  # a database still down: requests get the 503
            self.async_reader = pool

    async def close_async_reader(self) -> None:
        pool, self.async_reader = self.async_reader, None
        if pool is not None:
            await pool.close()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.wait_warm(timeout=30)
        self.wait_history_moved(timeout=30)
        self.reclog.close()
        if self.loop_reader is not None:
            self.loop_reader.close()
        if self.reader is not self.engine:
            self.reader.dispose()
        self.engine.dispose()
