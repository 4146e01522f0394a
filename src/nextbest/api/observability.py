"""Prometheus metrics and structured JSON request logs, as one ASGI middleware.

Metrics: ``nextbest_request_seconds`` (histogram by route template, method and
status), ``nextbest_recommendations_total`` (served items by channel and the model
version that chose them), ``nextbest_explored_items_total`` (served items explored,
by channel and version), ``nextbest_answers_total`` (HCP answers by version, holdout
or not), ``nextbest_holdout_total``,
``nextbest_feedback_events_total`` (feedback events by result),
``nextbest_retiring_key_requests_total`` (requests made with a key a rotation
replaced, by key name), and, defined
beside what they count, ``nextbest_model_info`` (the served version, set at each
swap), ``nextbest_score_cache_pairs_total`` and
``nextbest_recommendation_log_not_logged_total``. With several worker processes,
set ``PROMETHEUS_MULTIPROC_DIR`` (``nextbest serve`` does) so ``/metrics`` sums
every worker and adds each live worker's process metrics (labelled ``pid``); the
workers that no longer run are marked dead (:func:`forget_dead_workers`), so
their live gauges leave ``/metrics``.

Logs: one JSON line per request with route, status, duration, the requester's
key name and the request id. No HCP identifiers, bodies or keys are logged.

Request ids: a caller's ``X-Request-ID`` (up to 128 letters, digits, ``-``, ``_``,
``.`` or ``:``, not starting ``nb_`` as keys do, nor a key: the server's, or the
one the request sends) is kept, else one is made; the
answer carries it back in ``X-Request-ID`` and the request's log line names it,
and so does every line logged while the request is handled (a database error, a
traceback), so a client's failed call can be found in the server's logs.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import time
from collections.abc import Iterable
from functools import cache, partial
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nextbest.api.logs import CURRENT_REQUEST_ID
from nextbest.service.apikeys import KEY_PREFIX
from nextbest.service.recommend import Recommendation

logger = logging.getLogger(__name__)
access_log = logging.getLogger("nextbest.access")

REQUEST_SECONDS = Histogram(
    "nextbest_request_seconds",
    "HTTP request latency by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
# By version too: with a challenger answering a share of HCPs beside the served
# version (NEXTBEST_CHALLENGER_SHARE), its share of the answers, its holdout rate and
# its exploration share are each a ratio of these series.
RECOMMENDED = Counter(
    "nextbest_recommendations_total",
    "Recommended items served, by channel and the model version that chose them.",
    ["channel", "version"],
)
HOLDOUTS = Counter(
    "nextbest_holdout_total",
    "HCP answers that were randomized holdout (a batch or a rep plan counts each HCP).",
)
# The denominators of holdout and exploration rates.
ANSWERS = Counter(
    "nextbest_answers_total",
    "HCP answers (a batch or a rep plan counts each HCP), holdout or not, by the model "
    "version that answered.",
    ["holdout", "version"],
)
EXPLORED = Counter(
    "nextbest_explored_items_total",
    "Recommended items served that were explored (chosen at random), by channel and the "
    "model version that served them.",
    ["channel", "version"],
)
FEEDBACK_EVENTS = Counter(
    "nextbest_feedback_events_total",
    "Feedback events sent to the API, by result: accepted (stored), duplicate (stored "
    "before) or rejected.",
    ["result"],
)
# Labelled by key name, never the key: an operator sees which integration still
# uses the old key of a rotation before it stops being accepted. Not a rep key's
# name: it is a person's user id, and /metrics may be served without a key
# (NEXTBEST_METRICS_AUTH=false; the log names it).
RETIRING_KEY_REQUESTS = Counter(
    "nextbest_retiring_key_requests_total",
    "Requests authenticated with a retiring API key (replaced by a rotation, accepted "
    'until its time), by key name; rep keys\' requests under name="(rep)".',
    ["name"],
)
REP_KEYS_LABEL = "(rep)"


# The labelled children, looked up once per label set: ``labels()`` builds and
# checks its key under a lock on every call, a few microseconds each, several
# times per request. The label sets are the ones the metrics already keep.
@cache
def _served(channel: str, version: str) -> Counter:
    return RECOMMENDED.labels(channel, version)


@cache
def _explored(channel: str, version: str) -> Counter:
    return EXPLORED.labels(channel, version)


@cache
def _answered(version: str) -> dict[bool, Counter]:
    """Both of a version's answer series at once, from its first answer: a holdout
    rate's numerator that no holdout has made yet would be no series at all, and the
    PromQL ratio no value, instead of 0."""
    return {
        holdout: ANSWERS.labels("true" if holdout else "false", version)
        for holdout in (True, False)
    }


@cache
def _feedback(result: str) -> Counter:
    return FEEDBACK_EVENTS.labels(result)


def record_retiring_key(name: str, role: str) -> None:
    """Count a request authenticated with the retiring key of the key ``name`` (of
    ``role``: a rep key counts under :data:`REP_KEYS_LABEL`, its name unsaid)."""
    RETIRING_KEY_REQUESTS.labels(REP_KEYS_LABEL if role == "rep" else name).inc()


# Made at once, at 0: a rate's numerator that no event has made yet would be no
# series at all, and the PromQL ratio no value, instead of 0.
for _result in ("accepted", "duplicate", "rejected"):
    _feedback(_result)


# Any other method a client sends (a scanner's PROPFIND, MKCOL, ...) is one label
# value: each would otherwise add a histogram series per route and status.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@cache
def _timer(route: str, method: str, status: int) -> Histogram:
    return REQUEST_SECONDS.labels(route, method if method in _METHODS else "other", str(status))


def record_served(recommendations: Iterable[Recommendation]) -> None:
    """Count answers, holdouts and served and explored items: each counter once, by
    its total (with several workers each increment is a locked write to a shared
    file; a recommendation of 5 items made 7 of them, a batch of 1,000 HCPs 2,000).
    Each by the version that answered: a batch answered partly by the challenger
    counts under both."""
    answers: dict[tuple[bool, str], int] = {}
    served: dict[tuple[str, str], int] = {}
    explored: dict[tuple[str, str], int] = {}
    for rec in recommendations:
        version = rec.model_version
        answers[rec.holdout, version] = answers.get((rec.holdout, version), 0) + 1
        for item in rec.items:
            key = (item.channel, version)
            served[key] = served.get(key, 0) + 1
            if item.explored:
                explored[key] = explored.get(key, 0) + 1
    held = 0
    for (holdout, version), n in answers.items():
        _answered(version)[holdout].inc(n)
        held += n if holdout else 0
    if held:
        HOLDOUTS.inc(held)
    for (channel, version), n in served.items():
        _served(channel, version).inc(n)
    for (channel, version), n in explored.items():
        _explored(channel, version).inc(n)


def record_feedback(*, accepted: int, duplicates: int, rejected: int) -> None:
    """Count one feedback request's events by result (either feedback route)."""
    for result, n in (("accepted", accepted), ("duplicate", duplicates), ("rejected", rejected)):
        if n:
            _feedback(result).inc(n)


def forget_dead_workers() -> list[int]:
    """Mark every process with files in ``PROMETHEUS_MULTIPROC_DIR`` that no longer
    runs as dead, so ``/metrics`` drops its live gauges; the pids marked.

    Called by each worker as it starts and by ``/metrics`` at each scrape: a worker
    that was killed never marks itself, and its ``nextbest_model_info`` would
    otherwise be reported beside its replacement's for as long as the server
    runs. Its counters stay: they sum into the totals, which must not go back.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return []
    return _forget_dead(directory, _file_pids(directory))


def forget_this_worker() -> None:
    """Mark this process dead in ``PROMETHEUS_MULTIPROC_DIR`` as it stops.

    uvicorn starts a worker's replacement (SIGHUP) before the old one exits, so
    the replacement's :func:`forget_dead_workers` still sees it run.
    """
    if directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _forget(os.getpid(), directory)


def _file_pids(directory: str) -> set[int]:
    """The processes with metrics files in ``directory``."""
    # Files are named by kind and pid: counter_1234.db, gauge_liveall_1234.db, ...
    suffixes = (path.stem.rsplit("_", 1)[-1] for path in Path(directory).glob("*.db"))
    return {int(suffix) for suffix in suffixes if suffix.isdigit()}


def _forget_dead(directory: str, pids: set[int]) -> list[int]:
    dead = sorted(pid for pid in pids if pid != os.getpid() and not _running(pid))
    for pid in dead:
        _forget(pid, directory)
    return dead


def _forget(pid: int, directory: str) -> None:
    """What ``prometheus_client.multiprocess.mark_process_dead`` does (remove the
    live gauges' files), but quiet when another worker, forgetting the same pid at
    the same scrape, removed a file first."""
    for path in Path(directory).glob(f"gauge_live*_{pid}.db"):
        path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process took the pid
        return True
    return True


class _WorkersCollector(prom_multiprocess.MultiProcessCollector):
    """Every worker's metrics from ``PROMETHEUS_MULTIPROC_DIR``, less files that
    cannot be read.

    A worker creates a metric file empty and sizes it a moment later; a scrape in
    between, or a worker killed in between (the empty file then stays), made every
    ``/metrics`` answer 500. Such a file holds nothing yet: it is left out, and a
    damaged one too, with a warning naming it, so one bad file does not hide every
    worker's metrics.
    """

    def collect(self) -> Iterable[Any]:
        files = sorted(str(path) for path in Path(self._path).glob("*.db"))
        try:
            return self.merge(files, accumulate=True)
        except (struct.error, RuntimeError, UnicodeDecodeError, ValueError):
            readable = [path for path in files if _readable(Path(path))]
            return self.merge(readable, accumulate=True)


def _readable(path: Path) -> bool:
    try:
        for _ in MmapedDict.read_all_values_from_file(str(path)):
            pass
    except FileNotFoundError:  # a dead worker's live gauges, removed since the glob
        return False
    except (struct.error, RuntimeError, UnicodeDecodeError, ValueError) as exc:
        size = path.stat().st_size if path.exists() else 0
        logger.warning(
            "metrics file %s (%d bytes) cannot be read and is left out of /metrics: %s",
            path,
            size,
            exc,
        )
        return False
    return True


class _WorkerProcesses(Collector):
    """The process metrics (memory, CPU time, start time, open files) of each live
    worker, labelled ``pid``: the single-process ones (the default registry's
    ``ProcessCollector``) are those of the worker that answers the scrape."""

    def __init__(self, pids: Iterable[int]) -> None:
        self._pids = sorted(pids)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid in self._pids:
            # A worker that exited since the glob has no /proc entry: nothing read.
            for family in ProcessCollector(pid=partial(int, pid), registry=None).collect():
                out = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(families.values())


def metrics_payload() -> tuple[bytes, str]:
    if directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Forgotten at each scrape too: a worker that exited without marking
        # itself (killed, or stopped before its shutdown ran) leaves /metrics at
        # once, not only when another worker starts.
        pids = _file_pids(directory)
        live = pids - set(_forget_dead(directory, pids))
        registry = CollectorRegistry()
        _WorkersCollector(registry)
        registry.register(_WorkerProcesses(live))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_KEY_PREFIX = KEY_PREFIX.encode()


def _request_id(scope: Scope) -> bytes:
    """The caller's X-Request-ID when it is a plausible id, else a new one; never an
    API key: a client that sent its key there would have it written in every log
    line of the request. Refused: any value shaped like the keys nextbest makes
    (``nb_...``), any key the server holds (a key file's or NEXTBEST_API_KEYS'
    may be any text of 16 characters or more), and the credential the request
    itself presents (a key of another environment, one revoked, a token)."""
    for name, value in scope["headers"]:
        if (
            name == b"x-request-id"
            and _REQUEST_ID.fullmatch(value)
            and not value.startswith(_KEY_PREFIX)
            and not _a_key_held(scope, value)
            and not _presented(scope, value)
        ):
            return bytes(value)
    return new_request_id()


# A UUIDv4's version and variant bits, and the mask that clears them.
_UUID4_BITS = (0x4 << 76) | (0x2 << 62)
_UUID4_RANDOM = ~((0xF << 76) | (0x3 << 62)) & (2**128 - 1)


def new_request_id() -> bytes:
    """A random UUIDv4 as 32 hex digits, what ``uuid.uuid4().hex`` gives, written
    without building a UUID object: half the time, on every request without an id."""
    return b"%032x" % (int.from_bytes(os.urandom(16)) & _UUID4_RANDOM | _UUID4_BITS)


_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")


def _presented(scope: Scope, value: bytes) -> bool:
    """Whether ``value`` is a word of the request's Authorization or X-API-Key header."""
    return any(
        name in _CREDENTIAL_HEADERS and value in header.split() for name, header in scope["headers"]
    )


def _a_key_held(scope: Scope, value: bytes) -> bool:
    """Whether ``value`` is one of the app's API keys (create_app's key store; none
    with auth off)."""
    keys = getattr(getattr(scope.get("app"), "state", None), "api_keys", None)
    return keys is not None and bool(keys.holds(value.decode()))


class DatabaseOutage:
    """A worker's log of a database it cannot reach: the first refused request is
    logged at ERROR with the error, the rest counted (a summary each
    ``SUMMARY_EVERY_S``), and the first request after it that is answered logs the
    recovery with the count. One line per refused request flooded an outage's log
    with thousands of identical lines (one per 503) and never said it had ended.
    """

    SUMMARY_EVERY_S = 60.0

    def __init__(self) -> None:
        self.since: float | None = None
        self.refused = 0
        self._summary_at = 0.0

    def refused_request(self, scope: Scope, error: str) -> None:
        """Log (or count) a request refused for the database (``error``), named by its
        method and route template: its path may hold a rep's id or another's."""
        method, route = scope["method"], _template(scope)
        now = time.monotonic()
        if self.since is None:
            self.since, self.refused, self._summary_at = now, 1, now
            logger.error(
                "database unavailable during %s %s: %s; requests meanwhile are refused "
                "(503) and counted, and its return is logged",
                method,
                route,
                error,
            )
            return
        self.refused += 1
        if now - self._summary_at >= self.SUMMARY_EVERY_S:
            self._summary_at = now
            logger.error(
                "database still unavailable after %.0f s: %d requests refused so far "
                "(latest: %s during %s %s)",
                now - self.since,
                self.refused,
                error,
                method,
                route,
            )

    def answered(self) -> None:
        """A request that needs the database was answered: the outage, if any, is over."""
        if self.since is None:
            return
        logger.warning(
            "database answers again after %.1f s; %d requests were refused meanwhile",
            time.monotonic() - self.since,
            self.refused,
        )
        self.since = None


# Routes whose answer says the database's tables were read or written: only they end
# an outage (a probe's `SELECT 1` or an admin reload answered while the tables were
# still locked or gone, and the log said the database was back).
_DATA_ROUTES = ("/v1/",)
_NOT_DATA_ROUTES = ("/v1/admin/",)


def _template(scope: Scope) -> str:
    """The request's route template, else ``unmatched`` (a 404, a trailing-slash
    redirect): never the raw path, which a scanner makes unbounded."""
    route = scope.get("route")
    if route is None and (endpoint := scope.get("endpoint")) is not None:
        # FastAPI names the route in the scope for its own routes only: the
        # documentation's plain ones (/docs, /openapi.json, /redoc) are found by
        # their endpoint, which only these few requests pay for.
        routes = getattr(scope.get("router"), "routes", ())
        route = next((r for r in routes if getattr(r, "endpoint", None) is endpoint), None)
    return getattr(route, "path", None) or "unmatched"


class ObservabilityMiddleware:
    """Times every HTTP request; labels by route template, never by raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500
        request_id = _request_id(scope)
        CURRENT_REQUEST_ID.set(request_id.decode())

        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code, started
            if message["type"] == "http.response.start":
                status_code = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if not started:
                # An unhandled error: answered here, as JSON like every other error
                # and with the request id the traceback's log line names (the
                # framework's own 500 would be plain text, without the id). Raised
                # on, so that the server logs it.
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send_wrapper(
                    {"type": "http.response.body", "body": b'{"detail":"internal server error"}'}
                )
            raise
        finally:
            elapsed = time.perf_counter() - start
            template = _template(scope)
            # The app's (create_app): the database error handler counts its refusals.
            outage = getattr(getattr(scope.get("app"), "state", None), "database_outage", None)
            if (
                outage is not None
                and outage.since is not None
                and status_code < 300
                and template.startswith(_DATA_ROUTES)
                and not template.startswith(_NOT_DATA_ROUTES)
            ):
                outage.answered()
            _timer(template, scope["method"], status_code).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                principal = state.get("principal")
                access_log.info(
                    "request",
                    extra={
                        "route": template,
                        "method": scope["method"],
                        "status": status_code,
                        "duration_ms": round(elapsed * 1000, 3),
                        "requester": getattr(principal, "name", None),
                        # The calling system's address (uvicorn takes a proxy's
                        # X-Forwarded-For from the addresses it trusts): who tried
                        # a refused key is otherwise untraceable.
                        "client": (scope.get("client") or (None,))[0],
                        "request_id": request_id.decode(),
                        # The answer a single recommendation logged: support finds
                        # this line from a recommendation_id (and the reverse).
                        **(
                            {"recommendation_id": state["recommendation_id"]}
                            if "recommendation_id" in state
                            else {}
                        ),
                    },
                )
