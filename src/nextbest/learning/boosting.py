"""One LightGBM fit with early stopping, in this process or across a Dask cluster.

Every model of a training run (the engagement classifier and the uplift stages)
boosts through :func:`fit_boosted`: rows in time order, the newest ones held out
to say how many trees to keep. By default LightGBM runs in this process. Inside
:func:`on_cluster` the same fit runs on the cluster's workers with LightGBM's
own Dask estimators (data-parallel: each worker holds a share of the rows and
the workers agree on every split), and the result is an ordinary local model,
so serving never knows where it was trained.

LightGBM's Dask interface has no early stopping (a worker that stops while
others go on leaves them waiting), so on a cluster the trees are grown in
blocks: after each block the held-out rows are scored here, tree by tree, and
boosting stops by the rule LightGBM's ``early_stopping`` callback applies: no
improvement of the validation loss for ``early_stopping_rounds`` trees keeps the
trees up to the best one.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import lightgbm as lgb
import numpy as np

if TYPE_CHECKING:
    from distributed import Client

Kind = Literal["classifier", "regressor"]

# Trees grown per block between two looks at the held-out loss on a cluster (at
# least the early-stopping patience). Each block builds the distributed data set
# again (every row binned anew), so short blocks cost time, and long ones grow
# trees past the stop that are then not used. Training 1 M interactions on a
# 2-worker local cluster took 114 / 82 / 75 s with blocks of 50 / 100 / 200.
MIN_BLOCK_TREES = 200

_client: ContextVar[Client | None] = ContextVar("nextbest_boosting_client", default=None)


@contextmanager
def on_cluster(client: Client | None) -> Iterator[None]:
    """Boost every :func:`fit_boosted` call inside the block on ``client``'s workers.

    None leaves fits in this process (so callers can pass an optional client).
    """
    token = _client.set(client)
    try:
        yield
    finally:
        _client.reset(token)


@dataclass
class Validation:
    """Held-out rows that decide the number of trees (``weight`` None: unweighted)."""

    X: np.ndarray
    y: np.ndarray
    weight: np.ndarray | None = None
    init_score: np.ndarray | None = None


def fit_boosted(
    kind: Kind,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    validation: Validation | None = None,
    categorical: list[int] | None = None,
    early_stopping_rounds: int | None = None,
    init_score: np.ndarray | None = None,
) -> tuple[lgb.LGBMModel, int]:
    """Fit a LightGBM ``kind`` model with ``params``; return it and the trees to use.

    With ``validation`` and ``early_stopping_rounds``, the number of trees is the
    best on the validation rows (at most ``params["n_estimators"]``); otherwise
    every tree. ``init_score`` ``(n,)`` (and ``validation.init_score``): a raw
    score per row the trees boost from (an offset), not part of the model.
    """
    client = _client.get()
    cats: Any = categorical or "auto"
    stopping = validation is not None and bool(early_stopping_rounds)
    if client is not None:
        if init_score is not None:
            raise ValueError(
                "an init_score (per-HCP engagement effects) cannot be boosted on a Dask "
                "cluster: LightGBM drops it when boosting goes on from the previous block"
            )
        return _fit_on_cluster(
            client,
            kind,
            params,
            X,
            y,
            weight=weight,
            validation=validation if stopping else None,
            categorical=cats,
            early_stopping_rounds=int(early_stopping_rounds or 0),
        )
    model = (lgb.LGBMClassifier if kind == "classifier" else lgb.LGBMRegressor)(**params)
    if not stopping:
        model.fit(X, y, sample_weight=weight, init_score=init_score, categorical_feature=cats)
        return model, int(params["n_estimators"])
    assert validation is not None
    eval_weight: Any = None if validation.weight is None else [validation.weight]
    eval_init: Any = None if validation.init_score is None else [validation.init_score]
    # eval_set works on every LightGBM >= 4.3 we support; 4.7 renamed it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'eval_set' is deprecated")
        model.fit(
            X,
            y,
            sample_weight=weight,
            init_score=init_score,
            eval_set=[(validation.X, validation.y)],
            eval_sample_weight=eval_weight,
            eval_init_score=eval_init,
            categorical_feature=cats,
            callbacks=[lgb.early_stopping(int(early_stopping_rounds or 0), verbose=False)],
        )
    return model, max(int(model.best_iteration_ or params["n_estimators"]), 1)


def _fit_on_cluster(
    client: Client,
    kind: Kind,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    *,
    weight: np.ndarray | None,
    validation: Validation | None,
    categorical: Any,
    early_stopping_rounds: int,
) -> tuple[lgb.LGBMModel, int]:
    from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRegressor

    factory = DaskLGBMClassifier if kind == "classifier" else DaskLGBMRegressor
    data, label, sample_weight = _scatter(client, X, y, weight)
    total = int(params["n_estimators"])
    block = total if validation is None else max(MIN_BLOCK_TREES, early_stopping_rounds)
    stopper = _EarlyStopping(kind, validation, early_stopping_rounds) if validation else None
    booster: lgb.Booster | None = None
    local: lgb.LGBMModel | None = None
    grown = 0
    while grown < total:
        trees = min(block, total - grown)
        # Each block draws its own bagging sample: the seed moves on with the trees.
        block_params = {
            **{k: v for k, v in params.items() if k != "n_jobs"},  # a thread per worker core
            "n_estimators": trees,
            "random_state": int(params.get("random_state") or 0) + grown,
        }
        # LightGBM prints how it picked the workers' ports at every fit, and warns
        # that it sets the threads itself (every model has an n_jobs parameter).
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            fitted = factory(client=client, **block_params).fit(
                data,
                label,
                sample_weight=sample_weight,
                categorical_feature=categorical,
                init_model=booster,
            )
        local = fitted.to_local()
        booster = local.booster_
        new_trees = booster.num_trees() - grown
        if stopper is not None and stopper.update(booster, grown, new_trees):
            break
        grown += new_trees
        if new_trees < trees:  # LightGBM found nothing more to split
            break
    assert local is not None
    local.set_params(n_estimators=total, random_state=params.get("random_state"))
    best = stopper.best_trees if stopper is not None else booster.num_trees() if booster else 0
    return local, max(int(best), 1)


def _scatter(
    client: Client, X: np.ndarray, y: np.ndarray, weight: np.ndarray | None
) -> tuple[Any, Any, Any]:
    """The rows as Dask arrays, one block per worker, sent to the workers once."""
    import dask.array as da

    from nextbest.learning.distributed import worker_count

    workers = max(worker_count(client), 1)
    size = max(-(-len(y) // workers), 1)
    starts = list(range(0, len(y), size))

    def blocks(values: np.ndarray) -> Any:
        futures = client.scatter([values[s : s + size] for s in starts])
        parts = [
            da.from_delayed(
                f, shape=(min(size, len(values) - s), *values.shape[1:]), dtype=values.dtype
            )
            for f, s in zip(futures, starts, strict=True)
        ]
        return da.concatenate(parts)

    return blocks(X), blocks(y), None if weight is None else blocks(weight)


class _EarlyStopping:
    """LightGBM's early-stopping rule, applied here to the trees a block added."""

    def __init__(self, kind: Kind, validation: Validation, rounds: int) -> None:
        self.kind = kind
        self.validation = validation
        self.rounds = rounds
        self.raw = np.zeros(len(validation.y))  # raw score of the trees so far
        self.best_loss = np.inf
        self.best_trees = 0

    def update(self, booster: lgb.Booster, start: int, count: int) -> bool:
        """Score trees ``[start, start + count)``; True once boosting should stop."""
        if count <= 0:
            return False
        # One LightGBM call for the block: each row's leaf in each new tree, then
        # the running raw score after every tree from the leaves' outputs.
        leaves = np.asarray(
            booster.predict(
                self.validation.X, pred_leaf=True, start_iteration=start, num_iteration=count
            ),
            dtype=np.int64,
        ).reshape(len(self.validation.y), count)
        # Leaves numbered up to the largest one reached exist in that tree.
        top = leaves.max(axis=0) if len(leaves) else np.zeros(count, dtype=np.int64)
        outputs = np.zeros((count, int(top.max()) + 1))
        for t in range(count):
            for leaf in range(int(top[t]) + 1):
                outputs[t, leaf] = booster.get_leaf_output(start + t, leaf)
        steps = outputs[np.arange(count)[None, :], leaves]  # (rows, trees)
        running = self.raw[:, None] + np.cumsum(steps, axis=1)
        for t in range(count):
            loss = self._loss(running[:, t])
            if loss < self.best_loss:
                self.best_loss, self.best_trees = loss, start + t + 1
            elif start + t + 1 - self.best_trees >= self.rounds:
                return True
        self.raw = running[:, -1]
        return False

    def _loss(self, raw: np.ndarray) -> float:
        v = self.validation
        if self.kind == "classifier":  # binary log loss, LightGBM's default metric
            p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
            per_row = -(v.y * np.log(p) + (1 - v.y) * np.log(1 - p))
        else:  # l2
            per_row = (v.y - raw) ** 2
        return float(np.average(per_row, weights=v.weight))
