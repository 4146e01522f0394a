"""The recommendation log writer: synchronous, or batched by a background thread.

Every served answer must be logged (propensity, holdout flag, model version)
for off-policy evaluation later. Committing one transaction per request costs
more than scoring it, so with ``flush_ms > 0`` answers are queued and a single
thread commits everything queued every ``flush_ms`` milliseconds, in one
transaction per requester. The trade-off, documented in docs/serving.md: on a
hard crash (kill -9, power loss) the last ``flush_ms`` of the recommendation log
can be lost; a clean shutdown flushes everything. Feedback is never queued: it
is committed before it is acknowledged.

The queue is bounded (``max_backlog`` answers): if the store falls that far
behind (a stalled database), further answers are refused with
:class:`~nextbest.errors.LogBacklogFullError` instead of growing the process
without limit; nothing is served unlogged. A caller that may block (a batch
call or a rep plan in the thread pool, not a request on the event loop) first
waits up to ``max_wait_s`` for room: calls arriving faster than the store takes
them are slowed down to its pace rather than refused. It then waits (as long
again at most) until its own answers are committed: feedback sent the moment a
batch is answered, to another worker, finds every recommendation it names (under
load, rows still queued seconds after their ids were minted were refused as
unknown once the feedback's in-flight hold had run out).

A commit that fails because the store is unavailable (down, restarting, out of
connections) keeps its answers and is tried again after a short pause, doubling
from ``RETRY_FIRST_S`` to ``RETRY_MAX_S``; until it succeeds the store counts
as failing and further answers are refused the same way, so the queue does not
fill with answers that may never be written. Answers are lost only if the
process stops while the store is still failing, or if the store rejects them
for another reason (retrying would not help, and would stop the log for good).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Collection, Sequence

from prometheus_client import Counter, Gauge
from sqlalchemy.engine import Engine

from nextbest.errors import LogBacklogFullError
from nextbest.service.feedback import log_served
from nextbest.service.recommend import Recommendation, Recommender
from nextbest.storage.db import UNAVAILABLE_ERRORS, describe_database_error, refuses_writes

logger = logging.getLogger(__name__)

_Entry = tuple[Sequence[Recommendation], Recommender, str]

# Pause before the writer tries a commit the unavailable store refused again;
# doubled after each failure up to RETRY_MAX_S, so a store that returns is
# written to within about that long.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0

LOG_FAILING = Gauge(
    "nextbest_recommendation_log_failing",
    "1 while this worker's recommendation log store refuses its writes (answers kept and "
    "retried, new requests refused with 503), else 0.",
    multiprocess_mode="liveall",
)
NOT_LOGGED = Counter(
    "nextbest_recommendation_log_not_logged_total",
    "Answers not logged: refused because the log's backlog was full or its store "
    "failing (refused), or served but lost: rejected by the store for a reason "
    "other than being unavailable, or still unwritten at shutdown (dropped).",
    ["reason"],
)
_REFUSED = NOT_LOGGED.labels("refused")
_DROPPED = NOT_LOGGED.labels("dropped")


class RecommendationLog:
    """Writes served recommendations to the store; thread-safe.

    Each commit runs on a plain connection of ``store``, not an ORM session: at one
    answer per commit, a session's own bookkeeping was a fifth or more of the
    commit's CPU, for nothing the log uses.
    """

    def __init__(
        self,
        store: Engine,
        *,
        flush_ms: float = 0.0,
        max_backlog: int = 10_000,
        max_wait_s: float = 0.0,
    ) -> None:
        if flush_ms < 0:
            raise ValueError(f"flush_ms must be >= 0, got {flush_ms}")
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be >= 1, got {max_backlog}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.store = store
        self.flush_ms = flush_ms
        self.max_backlog = max_backlog
        self.max_wait_s = max_wait_s
        self._backlog = 0  # answers queued, not yet committed
        # A commit failed because the store is unavailable and is being retried.
        self._failing = False
        self.dropped = 0
        self.written = 0
        # A SimpleQueue (unbounded: the backlog is bounded above, under _idle): its put,
        # on the event loop once per answer, takes no Python-level lock or condition.
        self._queue: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        # Blocking writers' entries (by the identity of their answers' sequence),
        # set once that entry is committed or given up.
        self._committed: dict[int, threading.Event] = {}
        self._thread: threading.Thread | None = None
        self._held: list[_Entry] | None = None  # see hold()
        if flush_ms > 0:
            self._thread = threading.Thread(target=self._run, name="nextbest-reclog", daemon=True)
            self._thread.start()

    @property
    def background(self) -> bool:
        return self._thread is not None

    def hold(self) -> None:
        """Keep the answers written from now on instead of logging them, until
        :meth:`commit_held` logs them all in one transaction. For a run whose
        answers must be logged only once their output exists (``picks --log``: an
        interrupted run logs nothing, rather than answers no file holds). Only
        without a background writer."""
        if self._thread is not None:
            raise RuntimeError("hold() needs a log without a background writer (flush_ms 0)")
        self._held = []

    def commit_held(self, *, leaving_out: Collection[str] = ()) -> int:
        """Log every answer held since :meth:`hold`, in one transaction (raises if the
        store refuses: nothing is logged), but those to the HCPs of ``leaving_out``
        (erased since they were answered); returns how many. Stops holding."""
        held, self._held = self._held or [], None
        if leaving_out:
            held = [
                ([rec for rec in recs if rec.hcp_id not in leaving_out], recommender, requester)
                for recs, recommender, requester in held
            ]
        self._commit(held)
        return sum(len(recs) for recs, _, _ in held)

    @property
    def failing(self) -> bool:
        """The store refused the last commit as unavailable; its answers are being retried."""
        return self._failing

    def write(
        self,
        recommendations: Sequence[Recommendation],
        *,
        recommender: Recommender,
        requester: str,
        may_wait: bool = False,
    ) -> None:
        """Log ``recommendations``; returns after the commit unless batching.

        Raises :class:`LogBacklogFullError` (batching only) when the queue already
        holds ``max_backlog`` answers, or the store is failing: nothing of this
        call is queued. With ``may_wait`` (a caller that may block its thread), it
        first waits up to ``max_wait_s`` for the writer to make room, then up to as
        long for the writer to commit these answers.
        """
        if not recommendations:
            return
        if self._held is not None:
            self._held.append((recommendations, recommender, requester))
            return
        if self._thread is None:
            self._commit([(recommendations, recommender, requester)])
            return
        n = len(recommendations)
        with self._idle:
            if may_wait and self._full(n):
                deadline = time.monotonic() + self.max_wait_s
                while self._full(n) and (left := deadline - time.monotonic()) > 0:
                    self._idle.wait(left)  # the writer notifies after each commit
            if self._full(n):
                _REFUSED.inc(n)
                waited = f" after waiting {self.max_wait_s:g} s" if may_wait else ""
                if self._failing:
                    raise LogBacklogFullError(
                        f"the recommendation log store is failing: answers waiting to be "
                        f"logged, retried until it answers: {self._backlog}{waited}; "
                        f"retry shortly"
                    )
                raise LogBacklogFullError(
                    f"the recommendation log store is behind: answers waiting to be logged: "
                    f"{self._backlog} (at most {self.max_backlog}){waited}; retry shortly"
                )
            self._pending += 1
            self._backlog += n
            done = (
                self._committed.setdefault(id(recommendations), threading.Event())
                if may_wait
                else None
            )
        self._queue.put((recommendations, recommender, requester))
        if done is not None and not done.wait(max(self.max_wait_s, 1.0)):
            # The store is slow or failing: the answers stay queued (and are retried);
            # the call is answered rather than held for the outage.
            with self._idle:
                self._committed.pop(id(recommendations), None)

    def _full(self, n: int) -> bool:
        """No room for ``n`` more answers (called under ``_idle``): the store is failing,
        or the queue would exceed ``max_backlog`` (an empty queue takes any)."""
        return self._failing or (self._backlog + n > self.max_backlog and self._backlog > 0)

    def flush(self, timeout: float = 10.0, *, while_failing: bool = True) -> bool:
        """Wait until everything queued so far is committed; False on timeout.

        Without ``while_failing``, False at once while the store is failing (what
        is queued stays queued and retried): for a caller that has no use for a
        wait that is likely to last as long as the outage.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                if self._failing and not while_failing:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Flush and stop the writer thread (called on shutdown)."""
        if self._thread is not None:
            self.flush()
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        kept: list[_Entry] = []  # what the unavailable store refused: tried first, again
        pause = RETRY_FIRST_S
        failed_at = 0.0
        while True:
            if kept:
                time.sleep(pause)
                pause = min(2 * pause, RETRY_MAX_S)
                batch = kept
            else:
                first = self._queue.get()
                if first is None:
                    return
                time.sleep(self.flush_ms / 1000.0)  # let the batch fill up
                batch = [first]
                del first  # not held while waiting for the next answer
            stop = False
            while True:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stop = True
                    break
                batch.append(entry)
            was_failing = self._failing
            kept = self._commit(batch)
            if kept and stop:
                # Shutting down with the store still failing: nothing more can be done.
                lost = sum(len(recs) for recs, _, _ in kept)
                self.dropped += lost
                _DROPPED.inc(lost)
                logger.error(
                    "shutting down with the recommendation log store failing: "
                    "%d answers not logged",
                    lost,
                )
                kept = []
            if kept and not was_failing:
                failed_at = time.monotonic()
            elif not kept and was_failing:
                pause = RETRY_FIRST_S
                logger.info(
                    "recommendation log store answers again after %.1f s: "
                    "answers kept meanwhile are written",
                    time.monotonic() - failed_at,
                )
            done = len(batch) - len(kept)
            answers = sum(len(recs) for recs, _, _ in batch) - sum(len(recs) for recs, _, _ in kept)
            retried = {id(recs) for recs, _, _ in kept}
            with self._idle:
                self._pending -= done
                self._backlog -= answers
                self._failing = bool(kept)
                if self._failing != was_failing:
                    LOG_FAILING.set(int(self._failing))
                # Written (or lost for good): their writers may answer. Under the lock
                # and while ``batch`` holds them, so that no id is reused meanwhile.
                for recs, _, _ in batch:
                    if id(recs) not in retried and (event := self._committed.pop(id(recs), None)):
                        event.set()
                self._idle.notify_all()
            del batch  # not held while waiting for the next answer
            if stop:
                return

    def _write_alone(
        self,
        recommender: Recommender,
        requester: str,
        entries: list[_Entry],
        error: Exception,
    ) -> list[_Entry]:
        """Write each of ``entries`` (whose write together failed with ``error``, no
        outage) in its own transaction; those refused again are lost, and what a
        store that became unavailable meanwhile refused is returned, to be retried."""
        kept: list[_Entry] = []
        lost = 0
        for entry in entries:
            recs = entry[0]
            if len(entries) > 1:
                try:
                    with self.store.connect() as connection:
                        log_served(
                            connection,
                            recommendations=recs,
                            recommender=recommender,
                            requester=requester,
                        )
                    self.written += len(recs)
                    continue
                except Exception as exc:
                    if isinstance(exc, UNAVAILABLE_ERRORS) or refuses_writes(exc):
                        kept.append(entry)
                        continue
                    error = exc
            lost += len(recs)
        if lost:
            self.dropped += lost
            _DROPPED.inc(lost)
            logger.error("recommendation log write failed, %d answers not logged: %s", lost, error)
        return kept

    def _commit(self, batch: list[_Entry]) -> list[_Entry]:
        """Commit ``batch``, one transaction per requester; what the store refused as
        unavailable is returned, to be tried again (batching only: raised otherwise)."""
        groups: dict[tuple[int, str], tuple[Recommender, list[Recommendation], list[_Entry]]] = {}
        for entry in batch:
            recs, recommender, requester = entry
            group = groups.setdefault((id(recommender), requester), (recommender, [], []))
            group[1].extend(recs)
            group[2].append(entry)
        kept: list[_Entry] = []
        for (_, requester), (recommender, recs, entries) in groups.items():
            try:
                with self.store.connect() as connection:
                    log_served(
                        connection,
                        recommendations=recs,
                        recommender=recommender,
                        requester=requester,
                    )
                self.written += len(recs)
            except Exception as exc:
                if self._thread is None:
                    raise
                if not isinstance(exc, UNAVAILABLE_ERRORS) and not refuses_writes(exc):
                    # Not an outage: the same rows would fail again, and retrying
                    # them would stop the log for good. One request's bad row must
                    # not cost the others written with it: each is written alone,
                    # and only what is refused again is counted and reported lost.
                    kept.extend(self._write_alone(recommender, requester, entries, exc))
                    continue
                if not self._failing and not kept:
                    logger.error(
                        "recommendation log write failed, %d answers kept and retried "
                        "(new answers refused meanwhile): %s",
                        len(recs),
                        describe_database_error(exc),
                    )
                kept.extend(entries)
        return kept
