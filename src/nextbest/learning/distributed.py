"""Training on a Dask cluster: history features per partition, boosting on the workers.

``nextbest train --dask local`` (a cluster of this machine's cores) or
``--dask tcp://scheduler:8786`` (a running cluster) trains the same models by
the same code as a plain run, with the work spread over the cluster's workers:

- **features**: the interactions become a ``dask.dataframe`` shuffled by
  ``hcp_id``, so every partition holds whole HCP histories. Each partition runs
  the in-memory feature code (:func:`nextbest.learning.train.decision_rows`) on
  its HCPs. Point-in-time features only ever look at one HCP's past, and the
  smoothing priors are sums over the whole log (:class:`EngagementCounts`), so
  the rows are exactly the ones a plain run builds;
- **models**: every LightGBM fit uses LightGBM's Dask estimators
  (:mod:`nextbest.learning.boosting`). Data-parallel boosting bins and bags each
  worker's rows on that worker, so the trees differ slightly from a plain run's;
  tests/learning/test_distributed.py bounds how much the models' quality may.

What still runs on the machine that starts the run: reading and validating the
files, and the decision rows once built (the models' samples, the evaluation
slice and the served snapshot are taken from them). The cluster spreads the CPU
work; the rows must still fit in that machine's memory (5 million decisions
take about 1.5 GB).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from functools import reduce
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nextbest.features.history import EngagementCounts
from nextbest.features.space import FeatureSpace

if TYPE_CHECKING:
    from distributed import Client

    from nextbest.learning.train import DecisionRows

LOCAL = "local"
CONNECT_TIMEOUT_S = 10


class ClusterUnavailableError(RuntimeError):
    """The Dask scheduler asked for cannot be reached."""


POSITION = "_nextbest_position"
# Whether a row of the history is a decision to build a model row for.
DECISION = "_nextbest_decision"


def local_workers() -> int:
    """How many workers ``connect("local")`` starts: one per core this process may run on."""
    return max(len(os.sched_getaffinity(0)), 1)


@contextmanager
def connect(scheduler: str, *, workers: int | None = None) -> Iterator[Client]:
    """A client of ``scheduler``: ``"local"`` starts a cluster on this machine for the
    block, of ``workers`` single-threaded worker processes (default:
    :func:`local_workers`); any other value is the address of a running scheduler
    (``tcp://host:8786``)."""
    from distributed import Client, LocalCluster

    if scheduler != LOCAL:
        _handshake(scheduler)
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterUnavailableError(
                f"cannot reach a Dask scheduler at {scheduler!r} ('local' starts one "
                f"on this machine): {exc}"
            ) from None
        with client:
            _check_workers(client, scheduler)
            yield client
        return
    # Our own cluster's scheduler runs in this process, and its shuffle plugin logs
    # each shuffle's start and end as warnings: routine, not problems to show.
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    # On this machine only: a training run opened the dashboard on every interface.
    cluster = LocalCluster(
        n_workers=workers or local_workers(),
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    try:
        with Client(cluster) as client:
            # LightGBM's network prints a few lines per fit on each worker's stdout; on
            # a cluster of our own those would fill the terminal under the progress bar.
            client.run(_quiet_stdout)
            yield client
    finally:
        # A worker process slower than 4 s to exit (a busy machine) is killed, its work
        # done, and the nanny says so as a warning a user reads as a failure.
        nanny = logging.getLogger("distributed.nanny")
        level = nanny.level
        nanny.setLevel(logging.ERROR)
        try:
            cluster.close()
        finally:
            nanny.setLevel(level)


def _handshake(scheduler: str) -> None:
    """Refuse an address that does not answer as a Dask scheduler, in bounded time.

    The client's own connect waits for the other end's handshake without a time
    limit: the dashboard's port (8787, next to the scheduler's 8786) or any other
    server that accepts and stays silent hung ``--dask`` for good, and an HTTP
    server's reply, read as a message length, asked for exabytes of memory.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm.core import connect as open_comm

    # Nothing listening, or no such host, is said at once: Dask's connect retries a
    # refused connection for its whole time limit (CONNECT_TIMEOUT_S) and then says it
    # timed out. A port that accepts, however slow its scheduler, gets that time. (A
    # scheduler logs the probe, closed unused, at INFO: "closed before handshake".)
    why = _why_unreachable(scheduler)
    if why is not None:
        raise ClusterUnavailableError(
            f"cannot reach a Dask scheduler at {scheduler!r} ('local' starts one on this "
            f"machine): {why}"
        )

    async def greet() -> None:
        comm = await open_comm(scheduler, timeout=CONNECT_TIMEOUT_S)
        await comm.close()

    # The connect's own time limit first (a closed port, an unknown host), then ours.
    limit = 2 * CONNECT_TIMEOUT_S
    try:
        # On a thread of its own: its event loop, whether or not the caller runs one
        # (a notebook does).
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, asyncio.wait_for(greet(), limit)).result()
    except TimeoutError:
        raise ClusterUnavailableError(
            f"{scheduler!r} accepted the connection but did not answer as a Dask scheduler "
            f"within {limit} s: is it the dashboard's port? A scheduler listens on 8786 "
            "unless told otherwise, its dashboard on 8787"
        ) from None
    except (OSError, ValueError) as exc:
        raise ClusterUnavailableError(
            f"cannot reach a Dask scheduler at {scheduler!r} ('local' starts one on this "
            f"machine): {_why_unreachable(scheduler) or exc}"
        ) from None
    except Exception as exc:  # MemoryError included: a reply that is not Dask's
        raise ClusterUnavailableError(
            f"{scheduler!r} answered, but not as a Dask scheduler ({type(exc).__name__}): "
            "is another server (HTTP, nextbest serve) listening there?"
        ) from None


# How long the plain TCP connect that looks at an address before Dask's may take: a
# host that does not answer (a firewall, a host down) costs this much more.
PROBE_TIMEOUT_S = 2


def _why_unreachable(scheduler: str) -> str | None:
    """Why Dask's connect to a TCP address would fail, or failed, where a plain TCP
    connect tells: nothing listens there, or its host name is unknown. Dask retries a
    refused connection for its whole time limit and then says it timed out, which
    reads as a slow network, not a scheduler that is not running. None when the try
    tells nothing (it connected; no answer: a firewall, a host down; an address that
    is not TCP)."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(scheduler)
        host, port = parse_host_port(location)
    except ValueError:
        return None
    if scheme not in ("tcp", "tls"):
        return None
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except ConnectionRefusedError:
        return (
            f"nothing listens on port {port} of {host} (connection refused): is the "
            "scheduler running, and on that port?"
        )
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_NONAME:
            return f"host {host!r} not found ({exc.strerror})"
    except OSError:
        pass
    return None


def cluster_failure(exc: BaseException) -> str | None:
    """What to tell a user whose run failed with ``exc`` because the cluster lost
    work or stopped taking it, or None for any other error.

    The history's partitions are scattered to the workers as data (not as tasks the
    scheduler could run again), so a worker that dies takes its partitions with it
    and every task on them is cancelled ("lost dependencies"); workers paused for
    memory leave data nowhere to go ("No valid workers found").
    """
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    lost = isinstance(exc, FutureCancelledError | KilledWorker | CommClosedError)
    if not lost and not (isinstance(exc, TimeoutError) and "No valid workers" in str(exc)):
        return None
    return (
        f"the cluster failed during training ({type(exc).__name__}: {exc}). A worker that "
        "died, or paused short of memory (its log says 'Pausing worker' at 80% of its "
        "memory limit), holds history partitions nothing can rebuild, so the run stops; "
        "no model version was registered. Check the workers' logs, give them more memory "
        "(`dask worker --memory-limit`) or more workers, and run again"
    )


def worker_count(client: Client) -> int:
    """How many workers the cluster of ``client`` has now."""
    return len(client.scheduler_info(n_workers=-1)["workers"])


def _check_workers(client: Client, scheduler: str) -> None:
    """Refuse a cluster whose workers cannot run this training: none at all, or
    another nextbest or LightGBM than this machine's (models travel pickled)."""
    if not worker_count(client):
        raise ClusterUnavailableError(f"the Dask scheduler at {scheduler!r} has no workers")
    expected = _versions()
    try:
        found = client.run(_versions)
    except Exception as exc:  # the worker could not even load the function
        raise ClusterUnavailableError(
            f"the workers of {scheduler!r} cannot run nextbest ({type(exc).__name__}: {exc}); "
            "install this nextbest on every worker"
        ) from None
    for worker, versions in sorted(found.items()):
        if versions != expected:
            raise ClusterUnavailableError(
                f"worker {worker} of {scheduler!r} has {_describe(versions)}, this machine "
                f"{_describe(expected)}: install the same versions on every worker"
            )


def _versions() -> dict[str, str]:
    import lightgbm

    import nextbest

    return {"nextbest": nextbest.__version__, "lightgbm": lightgbm.__version__}


def _describe(versions: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def _quiet_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


class PartitionedHistory:
    """The interactions on a cluster, one partition per group of whole HCP histories.

    Each method runs one task per partition and brings back only its result.
    ``decisions`` (bool, one per interaction; default all) picks the decisions
    :meth:`decision_rows` builds rows for; every interaction is history.
    """

    def __init__(
        self,
        client: Client,
        interactions: pd.DataFrame,
        hcps: pd.DataFrame,
        catalog: pd.DataFrame,
        *,
        partitions: int | None = None,
        decisions: np.ndarray | None = None,
    ) -> None:
        import dask.dataframe as dd

        n = partitions or 4 * max(worker_count(client), 1)
        frame = interactions.assign(
            **{
                POSITION: np.arange(len(interactions), dtype=np.int64),
                DECISION: np.ones(len(interactions), dtype=bool)
                if decisions is None
                else np.asarray(decisions, dtype=bool),
            }
        )
        # The rows go to the workers as data, not inside the task graph.
        bounds = np.linspace(0, len(frame), n + 1).astype(int)
        chunks = client.scatter([frame.iloc[a:b] for a, b in itertools.pairwise(bounds)])
        shuffled = dd.from_delayed(chunks, meta=frame.iloc[:0], verify_meta=False).shuffle(
            on="hcp_id", npartitions=n
        )
        self.client = client
        self.parts = client.persist(shuffled).to_delayed()
        self._hcps, self._catalog = client.scatter([hcps, catalog], broadcast=True)
        self._empty = interactions.iloc[:0]
        self._local = hcps, catalog

    def _each(self, function: Any, *args: Any) -> list[Any]:
        from dask.delayed import delayed

        tasks = [delayed(function)(part, self._hcps, self._catalog, *args) for part in self.parts]
        return list(self.client.gather(self.client.compute(tasks)))

    def engagement_counts(self, space: FeatureSpace) -> EngagementCounts:
        """What the history featurizer's priors are fitted from, summed over partitions."""
        return reduce(lambda a, b: a + b, self._each(_engagement_counts, space))

    def decision_rows(self, space: FeatureSpace) -> DecisionRows:
        """The rows :func:`~nextbest.learning.train.decision_rows` builds, in the same order."""
        from nextbest.learning.train import DecisionRows, decision_rows

        found = [(p, r) for p, r in self._each(_decision_rows, space) if r is not None]
        if not found:  # no decisions at all: the plain run's empty rows
            return decision_rows(space, self._empty, *self._local)
        order = np.argsort(np.concatenate([p for p, _ in found]), kind="stable")
        return DecisionRows(
            **{
                f.name: np.concatenate([getattr(r, f.name) for _, r in found])[order]
                for f in fields(DecisionRows)
            }
        )

    def snapshot(self, space: FeatureSpace, seconds: np.ndarray) -> np.ndarray:
        """Every HCP's history features as of ``seconds`` (one per HCP, in hcps order)."""
        assert space.history is not None
        hcps, catalog = self._local
        # HCPs without a decision: features of an empty history, as a plain run has them.
        out = space.history.transform(
            space.log(self._empty, hcps, catalog), np.arange(len(hcps)), seconds
        )
        for codes, features in self._each(_snapshot, space, seconds):
            out[codes] = features
        return out


def _engagement_counts(
    part: pd.DataFrame, hcps: pd.DataFrame, catalog: pd.DataFrame, space: FeatureSpace
) -> EngagementCounts:
    assert space.history is not None
    return space.history.engagement_counts(space.log(part, hcps, catalog))


def _decision_rows(
    part: pd.DataFrame, hcps: pd.DataFrame, catalog: pd.DataFrame, space: FeatureSpace
) -> tuple[np.ndarray, DecisionRows | None]:
    from nextbest.learning.train import decision_rows

    decisions = part[DECISION].to_numpy(dtype=bool)
    if not decisions.any():
        return np.zeros(0, np.int64), None
    position = part[POSITION].to_numpy()[decisions]
    history = part.drop(columns=[POSITION, DECISION])
    return position, decision_rows(space, history, hcps, catalog, decisions=decisions)


def _snapshot(
    part: pd.DataFrame,
    hcps: pd.DataFrame,
    catalog: pd.DataFrame,
    space: FeatureSpace,
    seconds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    assert space.history is not None
    log = space.log(part, hcps, catalog)
    codes = np.unique(log.hcp)
    return codes, space.history.transform(log, codes, seconds[codes])
