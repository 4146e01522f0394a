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
call in the thread pool, not a request on the event loop) first waits up to
``max_wait_s`` for room: calls arriving faster than the store takes them are
slowed down to its pace rather than refused.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence

from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from nextbest.errors import LogBacklogFullError
from nextbest.service.feedback import log_served
from nextbest.service.recommend import Recommendation, Recommender

logger = logging.getLogger(__name__)

_Entry = tuple[Sequence[Recommendation], Recommender, str]

NOT_LOGGED = Counter(
    "nextbest_recommendation_log_not_logged_total",
    "Answers not logged: refused because the log's backlog was full (refused), or "
    "served but lost because the store failed to commit them (dropped).",
    ["reason"],
)
_REFUSED = NOT_LOGGED.labels("refused")
_DROPPED = NOT_LOGGED.labels("dropped")


class RecommendationLog:
    """Writes served recommendations to the store; thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
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
        self.sessions = sessions
        self.flush_ms = flush_ms
        self.max_backlog = max_backlog
        self.max_wait_s = max_wait_s
        self._backlog = 0  # answers queued, not yet committed
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[_Entry | None] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        if flush_ms > 0:
            self._thread = threading.Thread(target=self._run, name="nextbest-reclog", daemon=True)
            self._thread.start()

    @property
    def background(self) -> bool:
        return self._thread is not None

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
        holds ``max_backlog`` answers: nothing of this call is queued. With
        ``may_wait`` (a caller that may block its thread), it first waits up to
        ``max_wait_s`` for the writer to make room.
        """
        if not recommendations:
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
                raise LogBacklogFullError(
                    f"the recommendation log store is behind: answers waiting to be logged: "
                    f"{self._backlog} (at most {self.max_backlog}){waited}; retry shortly"
                )
            self._pending += 1
            self._backlog += n
        self._queue.put((recommendations, recommender, requester))

    def _full(self, n: int) -> bool:
        """No room for ``n`` more answers (called under ``_idle``); an empty queue takes any."""
        return self._backlog + n > self.max_backlog and self._backlog > 0

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
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
        while True:
            first = self._queue.get()
            if first is None:
                return
            time.sleep(self.flush_ms / 1000.0)  # let the batch fill up
            batch = [first]
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
            self._commit(batch)
            done, answers = len(batch), sum(len(recs) for recs, _, _ in batch)
            del batch, first  # not held while waiting for the next answer
            with self._idle:
                self._pending -= done
                self._backlog -= answers
                self._idle.notify_all()
            if stop:
                return

    def _commit(self, batch: list[_Entry]) -> None:
        groups: dict[tuple[int, str], tuple[Recommender, list[Recommendation]]] = {}
        for recs, recommender, requester in batch:
            key = (id(recommender), requester)
            groups.setdefault(key, (recommender, []))[1].extend(recs)
        for (_, requester), (recommender, recs) in groups.items():
            try:
                with self.sessions() as session:
                    log_served(
                        session, recommendations=recs, recommender=recommender, requester=requester
                    )
                self.written += len(recs)
            except Exception as exc:
                if self._thread is None:
                    raise
                # Serving goes on when the log store fails; the loss is counted and reported.
                self.dropped += len(recs)
                _DROPPED.inc(len(recs))
                logger.error(
                    "recommendation log write failed, %d answers not logged: %s", len(recs), exc
                )
