"""Fast per-row feature contributions of a LightGBM model, for reasons at serving time.

TreeSHAP (``pred_contrib=True``) costs milliseconds per row on a few hundred
trees, too slow for a request that explains ten items. Path attribution
(Saabas, "Interpreting random forests", 2014; the "tree interpreter") credits
each split on a row's path with the change in the expected node value it
causes, to the split's feature. Those credits depend only on *which leaf* a
row ends in, so they are precomputed once per (tree, leaf) at fit time; serving
then asks LightGBM for the leaf indices (``pred_leaf=True``) and sums a gather.

The attributions add up exactly: ``bias + contributions(X).sum(1)`` equals the
raw score. They differ from Shapley values (they favour splits near the leaves)
but rank the features that matter for a row in nearly the same order, which is
all a reason needs.

The leaf indices also give the score itself (the sum of the leaves' values), so
a request asks LightGBM once for the leaves of all its candidate rows in the trees
of every model (:class:`JoinedPaths`), scores them from those and explains the
served ones from the same leaves, instead of a second LightGBM call for the reasons.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import lightgbm as lgb
import numpy as np

# Below this many rows, threads cost more than they save (one request's items).
SMALL_BATCH = 256

# The line that opens each tree of a LightGBM model file.
_TREE_HEADER = re.compile(r"^Tree=\d+\n", re.MULTILINE)

# LightGBM keeps the OpenMP thread count that a predict call's ``num_threads`` sets
# in process-wide state: two threads predicting at once with different counts
# corrupt its memory (a serving worker scoring one request single-threaded while
# another scored a batch on every core segfaulted within seconds). So a process
# that predicts from several threads fixes one count for every call
# (:func:`fix_predict_threads`); None: by batch size, for one-thread processes.
_fixed_threads: int | None = None


def fix_predict_threads(threads: int | None) -> None:
    """Make every LightGBM prediction of this process use ``threads`` threads.

    For processes that predict from several threads at once (a serving worker:
    its event loop, its thread pool, cache warming). None: back to choosing by
    batch size (:data:`SMALL_BATCH`).
    """
    global _fixed_threads
    _fixed_threads = threads


def predict_threads(n_rows: int) -> dict[str, Any]:
    """The ``num_threads`` argument of a LightGBM prediction of ``n_rows`` rows."""
    if _fixed_threads is not None:
        return {"num_threads": _fixed_threads}
    return {"num_threads": 1} if n_rows <= SMALL_BATCH else {}


class PathAttribution:
    """Precomputed path attributions of a fitted LightGBM ``booster``.

    A path touches only a handful of features, so the credits are stored padded
    per leaf: ``features_`` and ``credits_`` have shape ``(total_leaves, depth)``,
    row ``offset_[t] + leaf`` for ``leaf`` of tree ``t`` (unused slots credit 0
    to feature 0). Summing over a row's trees is then one ``bincount``.
    ``bias_`` is the sum of the trees' root values (the raw score of a row that
    no split distinguishes); ``leaf_value_`` is each leaf's output, in the same
    numbering.
    """

    def __init__(self, booster: lgb.Booster, *, num_iteration: int | None = None) -> None:
        dump = booster.dump_model(num_iteration=num_iteration or -1)
        n_features = int(dump["max_feature_idx"]) + 1
        trees = dump["tree_info"]
        self.num_iteration = len(trees)
        self.n_features = n_features
        tables: list[np.ndarray] = []
        values: list[np.ndarray] = []
        offsets = np.zeros(len(trees), dtype=np.int64)
        bias = 0.0
        total = 0
        for t, info in enumerate(trees):
            root = info["tree_structure"]
            n_leaves = int(info["num_leaves"])
            table = np.zeros((n_leaves, n_features), dtype=np.float64)
            value = np.zeros(n_leaves, dtype=np.float64)
            if "leaf_value" in root and "split_index" not in root:
                bias += float(root["leaf_value"])
                value[0] = float(root["leaf_value"])
            else:
                bias += float(root["internal_value"])
                _walk(root, np.zeros(n_features), table, value)
            offsets[t] = total
            total += n_leaves
            tables.append(table)
            values.append(value)
        table = np.vstack(tables) if tables else np.zeros((0, n_features))
        depth = max(int((table != 0).sum(axis=1).max()) if len(table) else 0, 1)
        self.features_ = np.zeros((len(table), depth), dtype=np.int64)
        self.credits_ = np.zeros((len(table), depth), dtype=np.float64)
        for leaf in range(len(table)):
            used = np.flatnonzero(table[leaf])
            self.features_[leaf, : len(used)] = used
            self.credits_[leaf, : len(used)] = table[leaf, used]
        self.offset_ = offsets
        self.bias_ = bias
        self.leaf_value_ = np.concatenate(values) if values else np.zeros(0)
        self._booster = booster

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "leaf_value_" not in state:  # pickled before leaf values were kept
            self.__init__(state["_booster"], num_iteration=state["num_iteration"])  # type: ignore[misc]

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """Leaf index of each row in each tree, shape ``(n_rows, n_trees)``."""
        if len(X) == 0:
            return np.zeros((0, self.num_iteration), dtype=np.int64)
        threads = predict_threads(len(X))
        return np.asarray(
            self._booster.predict(X, pred_leaf=True, num_iteration=self.num_iteration, **threads),
            dtype=np.int64,
        ).reshape(len(X), -1)

    def paths(self, X: np.ndarray) -> np.ndarray:
        """The leaf of each row in each tree, numbered as the tables are: ``(n_rows, n_trees)``.

        What :meth:`raw` and :meth:`contributions` need, from one LightGBM call.
        """
        return self.leaves(X) + self.offset_[None, :]

    def raw(self, paths: np.ndarray) -> np.ndarray:
        """The raw score of the rows whose :meth:`paths` these are, shape ``(n_rows,)``."""
        return np.asarray(self.leaf_value_[paths].sum(axis=1))

    def contributions(self, X: np.ndarray, paths: np.ndarray | None = None) -> np.ndarray:
        """Per-feature contributions to the raw score, shape ``(n_rows, n_features)``.

        ``paths`` (:meth:`paths` of ``X``) spares asking LightGBM for the leaves again.
        """
        if len(X) == 0 or self.num_iteration == 0:
            return np.zeros((len(X), self.n_features))
        index = self.paths(X) if paths is None else paths  # (n, n_trees)
        n, width = len(X), self.n_features
        slot = self.features_[index] + (np.arange(n) * width)[:, None, None]
        total = np.bincount(slot.ravel(), weights=self.credits_[index].ravel(), minlength=n * width)
        return total.reshape(n, width)


class JoinedPaths:
    """The paths (:meth:`PathAttribution.paths`) of rows in several models, from one
    LightGBM call.

    A prediction call costs LightGBM tens of microseconds before it walks a tree
    (its checks, a predictor set up, the output allocated): for the hundred rows of
    one request about as much as walking a small model's trees. A row's leaf in a
    tree depends on nothing but that tree, so the trees of all the models are joined
    into one booster, asked once, and its leaves split back per model.
    """

    def __init__(self, parts: Sequence[PathAttribution]) -> None:
        self.parts = tuple(parts)
        widths = [part.num_iteration for part in self.parts]
        self.bounds = list(pairwise(np.cumsum([0, *widths]).tolist()))
        offsets = [part.offset_ for part in self.parts]
        self.offset = np.concatenate(offsets).astype(np.int64) if offsets else np.zeros(0, np.int64)
        self.booster = _joined_booster(self.parts) if sum(widths) else None

    def paths(self, X: np.ndarray) -> list[np.ndarray]:
        """Each part's :meth:`PathAttribution.paths` of rows ``X``, in order."""
        n = len(X)
        if self.booster is None or n == 0:
            return [np.zeros((n, hi - lo), dtype=np.int64) for lo, hi in self.bounds]
        threads = predict_threads(n)
        leaves = np.asarray(self.booster.predict(X, pred_leaf=True, **threads), dtype=np.int64)
        leaves = leaves.reshape(n, -1) + self.offset[None, :]
        return [leaves[:, lo:hi] for lo, hi in self.bounds]


def _joined_booster(parts: Sequence[PathAttribution]) -> lgb.Booster:
    """One booster with the trees of every part (its first ``num_iteration``), in order.

    Built from the parts' model text: the first part's header (without the trees'
    sizes, which LightGBM does without) and every tree renumbered. Only its leaves
    mean anything: its predictions would sum unrelated models.
    """
    header = ""
    trees: list[str] = []
    for part in parts:
        if part.num_iteration == 0:
            continue
        text = part._booster.model_to_string(num_iteration=part.num_iteration)
        first = _TREE_HEADER.search(text)
        if first is None:
            raise ValueError("a LightGBM model text without trees")
        if not header:
            kept = text[: first.start()].splitlines(keepends=True)
            header = "".join(line for line in kept if not line.startswith("tree_sizes="))
        body = text[first.start() : text.index("end of trees")]
        trees += _TREE_HEADER.split(body)[1:]
    joined = "".join(f"Tree={k}\n{tree}" for k, tree in enumerate(trees))
    booster = lgb.Booster(model_str=f"{header}{joined}end of trees\n")
    if booster.num_trees() != len(trees):
        raise ValueError(f"joined {len(trees)} trees, LightGBM read {booster.num_trees()}")
    return booster


def _walk(
    node: dict[str, Any], credit: np.ndarray, table: np.ndarray, leaf_values: np.ndarray
) -> None:
    """Depth-first: ``credit`` is what the path so far has credited per feature."""
    if "split_index" not in node:
        leaf = int(node.get("leaf_index", 0))
        table[leaf] = credit
        leaf_values[leaf] = float(node["leaf_value"])
        return
    feature = int(node["split_feature"])
    here = float(node["internal_value"])
    for side in ("left_child", "right_child"):
        child = node[side]
        value = float(
            child["leaf_value"] if "split_index" not in child else child["internal_value"]
        )
        step = credit.copy()
        step[feature] += value - here
        _walk(child, step, table, leaf_values)
