"""Model outputs per (HCP, action), kept for the HCPs asked about most recently.

What a model says about a pair depends only on the model and its snapshot (the
HCP's history at the training cut-off, the action's attributes): rules, live
contact history and exploration all act after scoring. So a loaded model can keep
the P(engaged), uplift, gains and reasons it computed for an HCP and answer the
next request about that HCP without LightGBM. Reasons also speak as of the
decision (:class:`~nextbest.learning.reasons.Lapse`: days since the cut-off,
channels contacted since), so an HCP's are kept for one lapse at a time and
computed again from the scores when a request's differs. The cache belongs to one
:class:`~nextbest.service.recommend.Recommender`, hence to one model version: a
reload builds a new one and, before the swap, fills it with what the old one was
asked (:meth:`PairCache.asked`, :meth:`PairCache.fill`).

Memory is bounded in pairs (``NEXTBEST_SCORE_CACHE_PAIRS``): with ``n`` actions it
holds ``max_pairs // n`` HCPs. Which ones is a segmented LRU: an HCP enters on
probation, and moves to the protected segment (at most four fifths of the
cache) when it is asked about again; evictions take the least recently asked
HCP on probation first. So a rep's HCPs, asked about again and again, stay
while e-mail batches sweep through thousands of HCPs asked about once. Values
are stored as computed (float64), so a cached answer is identical to a fresh one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from prometheus_client import Counter

from nextbest.learning.reasons import AT_CUTOFF, Lapse, explain
from nextbest.learning.scoring import Scores, ScoringModel

CACHE_PAIRS = Counter(
    "nextbest_score_cache_pairs_total",
    "Scored (HCP, action) pairs answered from the score cache (hit) or by the model (miss).",
    ["result"],
)
_HITS = CACHE_PAIRS.labels("hit")
_MISSES = CACHE_PAIRS.labels("miss")


class PairCache:
    """Scores and reasons of ``model`` for recently asked HCPs; safe across threads.

    The lock guards only the tables: the model runs outside it, so two threads
    may compute the same pair at once (both get the same values) but never wait
    on each other's LightGBM calls.
    """

    def __init__(self, model: ScoringModel, max_pairs: int) -> None:
        self.model = model
        n_actions = model.n_actions
        self.capacity = min(max_pairs // n_actions, model.n_hcps) if n_actions else 0
        outputs = 2 if model.uplift_model is None else 4
        self._values = np.zeros((outputs, self.capacity, n_actions))
        self._known = np.zeros((self.capacity, n_actions), dtype=bool)
        self._owner = np.full(self.capacity, -1, dtype=np.int64)
        # slot -> action -> reasons. Tuples of strings: the garbage collector stops
        # tracking them, so a full cache adds little to a full collection's walk.
        self._reasons: dict[int, dict[int, tuple[str, ...]]] = {}
        self._lapse: dict[int, Lapse] = {}  # slot -> the lapse its reasons speak as of
        self._slots: dict[int, int] = {}  # HCP row -> slot, for every HCP held
        # The two segments, least recently asked first (values unused).
        self._probation: OrderedDict[int, None] = OrderedDict()
        self._protected: OrderedDict[int, None] = OrderedDict()
        self._protected_cap = self.capacity * 4 // 5
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """HCPs held."""
        return len(self._slots)

    def scores(self, hcp_rows: np.ndarray, pair_h: np.ndarray, pair_a: np.ndarray) -> Scores:
        """Scores of the pairs ``(hcp_rows[pair_h], pair_a)``, computing only the unknown ones."""
        scores, n_miss = self._scores(hcp_rows, pair_h, pair_a)
        # Only what changes: with several workers each increment writes the metrics
        # file (about 2 us), and with the cache off every request would add 0 hits.
        if n_miss < len(pair_a):
            _HITS.inc(len(pair_a) - n_miss)
        if n_miss:
            _MISSES.inc(n_miss)
        return scores

    def _scores(
        self, hcp_rows: np.ndarray, pair_h: np.ndarray, pair_a: np.ndarray
    ) -> tuple[Scores, int]:
        model = self.model
        if len(hcp_rows) > self.capacity:  # also: cache off
            return model.score(hcp_rows[pair_h], pair_a), len(pair_a)
        with self._lock:
            slot = self._claim(hcp_rows)[pair_h]
            known = self._known[slot, pair_a]
            values = self._values[:, slot, pair_a]  # a copy: fancy indexing
        miss = np.flatnonzero(~known)
        if not len(miss):
            return _unstack(values), 0
        fresh = model.score(hcp_rows[pair_h[miss]], pair_a[miss])
        values[:, miss] = _stack(fresh)
        with self._lock:
            # Another thread may have evicted an HCP meanwhile: store only where
            # the slot still belongs to the HCP the values are for.
            mine = miss[self._owner[slot[miss]] == hcp_rows[pair_h[miss]]]
            self._values[:, slot[mine], pair_a[mine]] = values[:, mine]
            self._known[slot[mine], pair_a[mine]] = True
        if len(miss) == len(pair_a):
            return fresh, len(miss)  # all new: with the leaves the reasons can reuse
        return _unstack(values), len(miss)

    def explain(
        self,
        hcp_rows: np.ndarray,
        action_rows: np.ndarray,
        scores: Scores,
        lapses: Sequence[Lapse] | None = None,
    ) -> list[list[str]]:
        """Reasons of each item (:func:`~nextbest.learning.reasons.explain`), cached per
        pair for the item's ``lapses`` (default: at the cut-off)."""
        model = self.model
        if not self.capacity:  # the cache off: nothing to look up or keep
            rows = model.rows(hcp_rows, action_rows) if scores.rows is None else scores.rows
            return explain(model, rows, action_rows, hcp_rows, scores, lapses)
        hcps, actions = hcp_rows.tolist(), action_rows.tolist()
        lapses = [AT_CUTOFF] * len(hcps) if lapses is None else lapses
        with self._lock:
            found: list[Sequence[str] | None] = []
            for h, a, lapse in zip(hcps, actions, lapses, strict=True):
                slot = self._slots.get(h)
                if slot is None or self._lapse.get(slot, AT_CUTOFF) != lapse:
                    found.append(None)
                else:
                    found.append(self._reasons[slot].get(a))
        miss = np.array([i for i, why in enumerate(found) if why is None], dtype=np.int64)
        if len(miss):
            h, a = hcp_rows[miss], action_rows[miss]
            missed = miss.tolist()
            item = scores.take(miss)
            # Fresh scores (the cache off, or every pair new) keep the rows they scored.
            X = model.rows(h, a) if item.rows is None else item.rows
            fresh = explain(model, X, a, h, item, [lapses[i] for i in missed])
            with self._lock:
                for i, why in zip(missed, fresh, strict=True):
                    found[i] = why
                    slot = self._slots.get(hcps[i])
                    if slot is None:
                        continue
                    if self._lapse.get(slot, AT_CUTOFF) != lapses[i]:
                        # Reasons as of another lapse no longer hold: start over.
                        self._reasons[slot] = {}
                        self._lapse[slot] = lapses[i]
                    self._reasons[slot][actions[i]] = tuple(why)
        # Lists of their own: a response may extend its item's (the exploration note).
        return [list(why) for why in found if why is not None]

    def asked(self) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        """What this cache holds: on probation, then protected, least recently asked first.

        The HCP rows; which actions were scored for each (bool, one row per HCP);
        and the actions whose reasons were computed for each.
        """
        with self._lock:
            order = [*self._probation, *self._protected]
            slots = [self._slots[h] for h in order]
            hcps = np.array(order, dtype=np.int64)
            scored = self._known[slots]
            explained = [list(self._reasons[slot]) for slot in slots]
        return hcps, scored, explained

    def fill(
        self,
        hcp_rows: np.ndarray,
        scored: np.ndarray,
        explained: list[list[int]],
        lapse: Lapse = AT_CUTOFF,
    ) -> None:
        """Compute and keep the scores of ``scored`` pairs and the reasons of ``explained``
        (as of ``lapse`` for every HCP).

        Arguments as :meth:`asked` returns them, for this cache's model: one row
        of ``scored`` per HCP in ``hcp_rows`` (at most ``capacity`` HCPs), and
        every explained action also scored. The HCPs enter on probation, most
        recently asked in the order given (see :meth:`touch`). Not counted as
        hits or misses: nobody asked.
        """
        if len(hcp_rows) > self.capacity:
            raise ValueError(f"at most {self.capacity} HCPs at once, got {len(hcp_rows)}")
        pair_h, pair_a = np.nonzero(scored)
        scores, _ = self._scores(hcp_rows, pair_h, pair_a)
        pair_of = np.full(scored.shape, -1, dtype=np.int64)
        pair_of[pair_h, pair_a] = np.arange(len(pair_h))
        item_h = np.repeat(np.arange(len(explained)), [len(e) for e in explained])
        item_a = np.fromiter((a for e in explained for a in e), dtype=np.int64, count=len(item_h))
        pairs = pair_of[item_h, item_a]
        if (pairs < 0).any():
            raise ValueError("every explained action must also be scored")
        if len(pairs):
            self.explain(hcp_rows[item_h], item_a, scores.take(pairs), [lapse] * len(pairs))

    def touch(self, hcp_rows: np.ndarray) -> None:
        """Treat the held ones of ``hcp_rows`` as asked about again, in this order.

        They become the most recently asked of the protected segment (the least
        recent of it moving back to probation beyond its size).
        """
        with self._lock:
            for h in hcp_rows.tolist():
                if h in self._protected:
                    self._protected.move_to_end(h)
                elif h in self._probation:
                    self._protect(h)

    def settle(self, hcp_rows: np.ndarray) -> None:
        """Make the ones of ``hcp_rows`` on probation its most recently asked, in this order.

        For filling in blocks newest first: afterwards the order of recency is the
        order given, whatever order the blocks were filled in.
        """
        with self._lock:
            for h in hcp_rows.tolist():
                if h in self._probation:
                    self._probation.move_to_end(h)

    def _claim(self, hcp_rows: np.ndarray) -> np.ndarray:
        """The slot of each HCP, evicting where needed (called under the lock).

        A call has at most ``capacity`` HCPs, and no HCP it already claimed is
        evicted for a later one of the same call.
        """
        slots, protected = self._slots, self._protected
        out = np.empty(len(hcp_rows), dtype=np.int64)
        claimed: set[int] = set()
        for i, h in enumerate(hcp_rows.tolist()):
            slot = slots.get(h)
            if slot is None:
                if len(slots) < self.capacity:
                    slot = len(slots)
                else:
                    slot = self._evict(claimed)
                    self._known[slot] = False
                self._reasons[slot] = {}
                self._lapse.pop(slot, None)
                self._owner[slot] = h
                slots[h] = slot
                self._probation[h] = None
            elif h in protected:
                protected.move_to_end(h)
            elif h not in claimed:  # twice in one call is not asked again
                self._protect(h)
            claimed.add(h)
            out[i] = slot
        return out

    def _protect(self, h: int) -> None:
        """Move ``h`` from probation to the protected segment's most recent end."""
        del self._probation[h]
        self._protected[h] = None
        if len(self._protected) > self._protected_cap:
            demoted, _ = self._protected.popitem(last=False)
            self._probation[demoted] = None

    def _evict(self, claimed: set[int]) -> int:
        """Free the slot of the least recently asked HCP on probation (else protected).

        HCPs of the call under way are skipped; one held HCP at least is not of it.
        """
        for segment in (self._probation, self._protected):
            for h in segment:
                if h not in claimed:
                    del segment[h]
                    return self._slots.pop(h)
        raise AssertionError("more HCPs in one call than the cache holds")


def _stack(scores: Scores) -> np.ndarray:
    parts = [scores.p_engage, scores.uplift]
    if scores.gains is not None:
        parts.extend(scores.gains)
    return np.vstack(parts)


def _unstack(values: np.ndarray) -> Scores:
    # No row terms (gain scale, shrinking centre) are stored: the reasons of a cached
    # pair work them out from its row, and a pair costs the cache four numbers, not six.
    gains = (values[2], values[3]) if len(values) == 4 else None
    return Scores(p_engage=values[0], uplift=values[1], gains=gains)
