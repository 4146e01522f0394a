"""Ranking: eligible actions by arbitration score, best first.

The score (expected incremental value - cost, see ``ScoringModel.net_value``)
must be positive for an action to be offered, so "do nothing" is a valid answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k(
    score: np.ndarray,
    eligible: np.ndarray,
    *,
    k: int,
    channel_code: np.ndarray | None = None,
    max_per_channel: int | None = None,
) -> list[np.ndarray]:
    """Best-first positive-score eligible actions per row (ties: lower index first,
    as :func:`ranked_positive`).

    ``score`` and ``eligible`` have shape ``(n_rows, n_actions)``; returns one
    index array per row with at most ``k`` actions, and at most
    ``max_per_channel`` per channel when given.
    """
    masked = np.where(eligible & (score > 0), score, -np.inf)
    # One stable sort of every row: a partial sort (argpartition) kept any of the
    # actions tied at the k-th place, not the first, so a file's picks differed from
    # the single recommendation's answer for the same HCP (and it saved little).
    order = np.argsort(-masked, axis=1, kind="stable")
    out = []
    for i in range(masked.shape[0]):
        row = order[i][np.isfinite(masked[i, order[i]])]
        if max_per_channel is not None and channel_code is not None:
            counts: dict[int, int] = {}
            keep = []
            for a in row:
                c = int(channel_code[a])
                if counts.get(c, 0) < max_per_channel:
                    counts[c] = counts.get(c, 0) + 1
                    keep.append(a)
                if len(keep) == k:
                    break
            row = np.asarray(keep, dtype=np.int64)
        out.append(row[:k])
    return out


def ranked_positive(score: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Eligible actions with a positive score, best first (ties: lower index first).

    ``score`` and ``eligible`` have shape ``(n_actions,)``; returns action indices.
    """
    candidates = np.flatnonzero(eligible & (score > 0))
    return candidates[np.argsort(-score[candidates], kind="stable")]


def ranked_by_value(actions: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``actions`` with a positive ``value``, best first (ties: the earlier in ``actions``).

    ``actions`` and ``value`` have shape ``(n,)``: with ``actions`` ascending (one
    row's allowed actions) this is :func:`ranked_positive` of that row, without a
    score for every action of the catalog.
    """
    # Array methods: NumPy's functions add their own Python layers, a sizeable share of
    # the work on a request's hundred actions.
    positive = (value > 0).nonzero()[0]
    return actions[positive[(-value[positive]).argsort(kind="stable")]]


def head_per_channel(ranked: Sequence[int], codes: Sequence[int], n: int) -> list[int]:
    """``ranked`` keeping only the first ``n`` actions of each channel, order kept.

    With ``n = max_per_channel`` every :func:`fill_list` over the result, for any
    ``first`` and ``counted``, equals the one over the whole ranking: a fill takes
    the best actions of a channel in ranked order, at most ``max_per_channel``,
    and one fewer when ``first`` is of that channel (passed over, but counted). A
    ranking that one channel fills (50 e-mail contents) is then scanned once, not
    once per fill.
    """
    seen: dict[int, int] = {}
    out = []
    for a in ranked:
        c = codes[a]
        m = seen.get(c, 0)
        if m < n:
            seen[c] = m + 1
            out.append(a)
    return out


def fill_list(
    ranked: np.ndarray | Sequence[int],
    k: int,
    *,
    channel_code: np.ndarray | Sequence[int] | None = None,
    max_per_channel: int | None = None,
    first: int | None = None,
    counted: int | None = None,
) -> list[int]:
    """The first ``k`` actions of ``ranked`` within ``max_per_channel`` per channel.

    ``first``, an action already placed at the head of the list, is skipped and
    its channel counted; ``counted`` is a channel code counted once more (as if
    an item of it were already listed). Returns action indices, best first.

    ``ranked`` and ``channel_code`` may be arrays or lists of ints; a caller that
    fills several lists from the same ones passes lists (``tolist()`` once): the
    loop below then indexes plain lists, several times faster than arrays.
    """
    out: list[int] = []
    if k <= 0:
        return out
    ranked = ranked.tolist() if isinstance(ranked, np.ndarray) else ranked
    if max_per_channel is None or channel_code is None:
        for a in ranked:
            if a != first:
                out.append(a)
                if len(out) == k:
                    break
        return out
    codes = channel_code.tolist() if isinstance(channel_code, np.ndarray) else channel_code
    counts: dict[int, int] = {}
    if first is not None:
        counts[codes[first]] = 1
    if counted is not None:
        counts[counted] = counts.get(counted, 0) + 1
    for a in ranked:
        if a == first:
            continue
        c = codes[a]
        n = counts.get(c, 0)
        if n < max_per_channel:
            counts[c] = n + 1
            out.append(a)
            if len(out) == k:
                break
    return out
