"""Training on a Dask cluster (a real LocalCluster of worker processes).

Features built per partition must be exactly a plain run's; models boosted by
LightGBM's Dask estimators differ a little (each worker bins and bags its own
rows) but must be as good on the simulator's ground truth.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

import distributed
import numpy as np
import pytest

from nextbest.features.space import FeatureSpace
from nextbest.learning.boosting import Validation, _EarlyStopping, fit_boosted
from nextbest.learning.train import DecisionRows, decision_rows, train
from nextbest.simulate.world import best_or_none

from .conftest import QUICK, LearnedWorld, scores_on_truth


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    from nextbest.learning.distributed import connect

    with connect("local") as c:
        yield c


def test_features_on_the_cluster_are_exactly_the_plain_ones(
    learned: LearnedWorld, client: distributed.Client
) -> None:
    from nextbest.learning.distributed import PartitionedHistory

    data = learned.dataset
    # Out of time order, so the rows' order is not the partitions' by accident.
    interactions = data.interactions.sample(frac=1.0, random_state=0)
    plain = FeatureSpace().fit(data.hcps, data.catalog)
    assert plain.history is not None
    log = plain.log(interactions, data.hcps, data.catalog)
    plain.history.fit(log)
    expected = decision_rows(plain, interactions, data.hcps, data.catalog)

    space = FeatureSpace().fit(data.hcps, data.catalog)
    assert space.history is not None
    parts = PartitionedHistory(client, interactions, data.hcps, data.catalog, partitions=7)
    space.history.fit_counts(parts.engagement_counts(space))
    np.testing.assert_array_equal(space.history.channel_prior_, plain.history.channel_prior_)
    np.testing.assert_array_equal(space.history.topic_prior_, plain.history.topic_prior_)
    assert space.history.overall_prior_ == plain.history.overall_prior_

    rows = parts.decision_rows(space)
    for name in DecisionRows.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(rows, name), getattr(expected, name), err_msg=name)

    # Rows for some decisions only (max_training_rows), each from the HCP's whole past.
    some = np.random.default_rng(0).random(len(interactions)) < 0.3
    expected = decision_rows(plain, interactions, data.hcps, data.catalog, decisions=some)
    parts_some = PartitionedHistory(
        client, interactions, data.hcps, data.catalog, partitions=7, decisions=some
    )
    rows = parts_some.decision_rows(space)
    for name in DecisionRows.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(rows, name), getattr(expected, name), err_msg=name)
    assert len(rows.X) == some.sum()

    nothing = PartitionedHistory(client, interactions.iloc[:0], data.hcps, data.catalog)
    assert nothing.decision_rows(space).X.shape == (0, expected.X.shape[1])

    # Some HCPs have no decision at all: their snapshot is an empty history's.
    seconds = np.full(len(data.hcps), int(interactions["timestamp"].max().value // 10**9) + 1)
    few = interactions[interactions["hcp_id"].isin(data.hcps["hcp_id"].iloc[::3])]
    parts_few = PartitionedHistory(client, few, data.hcps, data.catalog, partitions=3)
    np.testing.assert_array_equal(
        parts_few.snapshot(space, seconds),
        space.history.transform(
            space.log(few, data.hcps, data.catalog), np.arange(len(data.hcps)), seconds
        ),
    )


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_the_cluster_stopping_rule_is_lightgbms(kind: str) -> None:
    """Applied to the trees of a full fit, the rule keeps as many as LightGBM's own
    early stopping keeps (same seed, so the same trees)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4000, 6)).astype(np.float32)
    signal = X[:, 0] - 0.5 * X[:, 1]
    if kind == "classifier":
        y = (rng.random(4000) < 1 / (1 + np.exp(-signal))).astype(np.int8)
        weight = None
    else:
        y = signal + rng.normal(scale=3.0, size=4000)
        weight = rng.uniform(0.5, 2.0, size=4000)
    params = {
        "n_estimators": 300,
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_child_samples": 20,
        "subsample": 0.8,
        "subsample_freq": 1,
        "random_state": 3,
        "deterministic": True,
        "n_jobs": 1,
        "verbose": -1,
    }
    fit, valid = slice(0, 3000), slice(3000, None)
    validation = Validation(X[valid], y[valid], None if weight is None else weight[valid])
    w = None if weight is None else weight[fit]
    _, kept = fit_boosted(
        kind,  # type: ignore[arg-type]
        params,
        X[fit],
        y[fit],
        weight=w,
        validation=validation,
        early_stopping_rounds=20,
    )
    full, trees = fit_boosted(kind, params, X[fit], y[fit], weight=w)  # type: ignore[arg-type]
    assert trees == 300
    # The noise stops the validated fit early: the rule below must find that point
    # among the full fit's trees, not merely keep them all.
    assert kept < trees
    rule = _EarlyStopping(kind, validation, rounds=20)  # type: ignore[arg-type]
    assert rule.update(full.booster_, 0, 300)
    assert rule.best_trees == kept


def test_boosting_on_the_cluster_continues_in_blocks_and_stops_by_the_rule(
    client: distributed.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nextbest.learning import boosting

    monkeypatch.setattr(boosting, "MIN_BLOCK_TREES", 20)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6000, 5)).astype(np.float32)
    signal = X[:, 0] + 0.5 * X[:, 1] ** 2
    y = signal + rng.normal(scale=2.0, size=6000)
    weight = rng.uniform(0.5, 2.0, size=6000)
    params = {"n_estimators": 400, "learning_rate": 0.1, "num_leaves": 7, "verbose": -1}
    validation = Validation(X[5000:], y[5000:], weight[5000:])
    with boosting.on_cluster(client):
        model, kept = fit_boosted(
            "regressor",
            params,
            X[:5000],
            y[:5000],
            weight=weight[:5000],
            validation=validation,
            early_stopping_rounds=20,
        )
    grown = model.booster_.num_trees()
    assert grown > 20  # more than one block, each continuing the last
    assert kept < grown < 400  # stopped early, a block past the best tree at most
    assert grown - kept <= 20 + 20
    # The kept trees are the best by the rule over the whole booster.
    rule = _EarlyStopping("regressor", validation, rounds=20)
    rule.update(model.booster_, 0, grown)
    assert rule.best_trees == kept
    predicted = model.booster_.predict(X[5000:], num_iteration=kept)
    assert np.corrcoef(predicted, signal[5000:])[0, 1] > 0.8


def test_a_model_trained_on_the_cluster_is_as_good(
    learned: LearnedWorld, client: distributed.Client
) -> None:
    world = learned.world
    result = train(learned.dataset, config=QUICK, as_of=world.decision_time, client=client)
    assert result.params["dask.workers"] == len(client.scheduler_info(n_workers=-1)["workers"])
    plain = learned.result
    # The same rows: the same evaluation slice and logging-policy value.
    assert result.metrics["eval_decisions"] == plain.metrics["eval_decisions"]
    assert result.metrics["logging_policy_value"] == plain.metrics["logging_policy_value"]
    np.testing.assert_array_equal(result.model.hcp_history, plain.model.hcp_history)
    assert abs(result.metrics["eval_auc"] - plain.metrics["eval_auc"]) < 0.03

    values = {}
    for name, model in (("cluster", result.model), ("plain", plain.model)):
        uplift, _, net = scores_on_truth(world, model)
        values[name] = world.true_value(best_or_none(net, world.eligible)) / world.n_hcps
        corr = np.corrcoef(uplift[world.eligible], world.uplift[world.eligible])[0, 1]
        assert corr > 0.3, name
    rng = np.random.default_rng(0)
    random_choice = np.array([rng.choice(np.flatnonzero(e)) for e in world.eligible])
    random_value = world.true_value(random_choice) / world.n_hcps
    # True net NRx per HCP: as far above random as the plain model must be, and
    # close to the plain model. Seeds 0-3 of this world gave plain runs from -0.004
    # to +0.025 and cluster runs from +0.006 to +0.028: the gap is the seeds'.
    assert values["cluster"] > random_value + 0.08
    assert abs(values["cluster"] - values["plain"]) < 0.04, values


def test_a_running_cluster_is_reached_by_its_address(
    learned: LearnedWorld, client: distributed.Client
) -> None:
    from nextbest.learning.distributed import PartitionedHistory, connect

    data = learned.dataset
    space = FeatureSpace().fit(data.hcps, data.catalog)
    assert space.history is not None
    expected = space.history.engagement_counts(
        space.log(data.interactions, data.hcps, data.catalog)
    )
    with connect(client.scheduler.address) as remote:
        assert remote.scheduler.address == client.scheduler.address
        parts = PartitionedHistory(remote, data.interactions, data.hcps, data.catalog)
        found = parts.engagement_counts(space)
    assert (found.engaged, found.touches) == (expected.engaged, expected.touches)
    np.testing.assert_array_equal(found.channel_touches, expected.channel_touches)


def test_a_cluster_with_another_nextbest_is_refused(
    client: distributed.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nextbest
    from nextbest.learning import distributed as dist

    # The workers are separate processes with the installed version; this one
    # claims another, as a driver would after an upgrade the workers missed.
    monkeypatch.setattr(nextbest, "__version__", "0.0.0-other")
    with (
        pytest.raises(dist.ClusterUnavailableError, match="install the same versions") as error,
        dist.connect(client.scheduler.address),
    ):
        pass
    assert "nextbest 0.0.0-other" in str(error.value)


def test_a_scheduler_without_workers_is_refused() -> None:
    from nextbest.learning import distributed as dist

    with (
        distributed.LocalCluster(n_workers=0, dashboard_address=":0") as empty,
        pytest.raises(dist.ClusterUnavailableError, match="has no workers"),
        dist.connect(empty.scheduler_address),
    ):
        pass


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from nextbest.learning import distributed as dist

    monkeypatch.setattr(dist, "CONNECT_TIMEOUT_S", 2)
    with (
        pytest.raises(dist.ClusterUnavailableError, match=re.escape("tcp://127.0.0.1:9")),
        dist.connect("tcp://127.0.0.1:9"),
    ):
        pass


def test_a_closed_port_is_said_at_once() -> None:
    """Dask's connect retries a refused connection for its whole time limit (10 s, and
    `nextbest train --dask` took 16 s to say "connection refused")."""
    import socket
    import time

    from nextbest.learning import distributed as dist

    with socket.socket() as closed:  # a port of this machine nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    with (
        pytest.raises(dist.ClusterUnavailableError) as refused,
        dist.connect(f"tcp://127.0.0.1:{port}"),
    ):
        pass
    assert time.monotonic() - started < dist.CONNECT_TIMEOUT_S / 2
    assert str(refused.value) == (
        f"cannot reach a Dask scheduler at 'tcp://127.0.0.1:{port}' ('local' starts one on "
        f"this machine): nothing listens on port {port} of 127.0.0.1 (connection refused): "
        "is the scheduler running, and on that port?"
    )


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (None, "did not answer as a Dask scheduler within 2 s: is it the dashboard's port"),
        (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\r\nInvalid HTTP request",
            "answered, but not as a Dask scheduler",
        ),
    ],
    ids=["silent", "http"],
)
def test_a_port_that_is_no_dask_scheduler_is_refused_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch, reply: bytes | None, match: str
) -> None:
    """The dashboard's port, or a web server such as ``nextbest serve``: the client's
    own connect hung for good on the first and tried to allocate exabytes on the second."""
    import socket
    import threading
    import time

    from nextbest.learning import distributed as dist

    monkeypatch.setattr(dist, "CONNECT_TIMEOUT_S", 1)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):  # the server closed
            while True:
                peer, _ = server.accept()
                accepted.append(peer)
                if reply is not None:
                    # A peer gone at once (the probe of a closed port) is not answered.
                    with contextlib.suppress(OSError):
                        if peer.recv(4096):
                            peer.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    started = time.monotonic()
    try:
        with (
            pytest.raises(dist.ClusterUnavailableError, match=re.escape(match)),
            dist.connect(f"tcp://127.0.0.1:{port}"),
        ):
            pass
    finally:
        server.close()
        for peer in accepted:
            peer.close()
    assert time.monotonic() - started < 10


def test_a_local_cluster_listens_on_this_machine_only_and_closes_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No dashboard on every interface; a worker slow to exit is killed at the close
    without a warning that reads as a failed run."""
    import atexit
    import time

    from nextbest.learning.distributed import connect

    with caplog.at_level(logging.INFO), connect("local", workers=1) as client:
        info = client.scheduler_info(n_workers=-1)
        assert info["address"].startswith("tcp://127.0.0.1:")
        assert [w for w in info["workers"] if not w.startswith("tcp://127.0.0.1:")] == []
        http = client.cluster.scheduler.http_server._sockets.values()  # type: ignore[union-attr]
        assert {sock.getsockname()[0] for sock in http} == {"127.0.0.1"}
        client.run(atexit.register, time.sleep, 6)  # the worker's exit outlasts 4 s
    assert "still alive" not in caplog.text


def test_a_worker_lost_during_training_is_said_plainly(learned: LearnedWorld) -> None:
    """A worker dies (killed for memory) after the history was placed on the cluster:
    ``--dask`` stops with what happened and what to do, not a traceback."""
    import os

    import typer

    from nextbest.cli.options import dask_cluster
    from nextbest.learning.distributed import PartitionedHistory, cluster_failure

    data = learned.dataset
    space = FeatureSpace().fit(data.hcps, data.catalog)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=50
        ) as cluster,
        pytest.raises(typer.Exit) as stopped,
        dask_cluster(cluster.scheduler_address, lambda: None) as (_, c),
    ):
        # Both workers registered, and the client's view of them current: on a loaded
        # machine the client connected before they had, and named no worker to kill.
        c.wait_for_workers(2, timeout=120)
        parts = PartitionedHistory(c, data.interactions, data.hcps, data.catalog)
        victim = sorted(c.scheduler_info()["workers"])[0]
        with contextlib.suppress(Exception):  # the worker dies before it answers
            c.run(os._exit, 1, workers=[victim])
        try:
            parts.engagement_counts(space)
        except Exception as exc:
            said = cluster_failure(exc)
            assert said is not None and "no model version was registered" in said
            raise
    assert stopped.value.exit_code == 2
    assert cluster_failure(ValueError("a bad row")) is None


def test_the_scheduler_check_runs_inside_a_running_event_loop(client: distributed.Client) -> None:
    """A notebook runs an event loop: checking a real scheduler from inside one must
    not fail (asyncio.run refuses to nest) and read as 'not a Dask scheduler'."""
    import asyncio

    from nextbest.learning.distributed import _handshake

    async def inside() -> None:
        _handshake(client.scheduler.address)

    asyncio.run(inside())
