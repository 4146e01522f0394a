"""The randomized holdout kept blind to the field: who may be told an HCP is held out,
and what the others are told instead.

A rep who knew an HCP to be in the randomized control might visit it all the same,
or make a point of not doing so: either biases the uplift the holdout measures. So a
rep key (:func:`blind_to_holdout`) is told of a held-out HCP what it would be told of
an HCP with nothing worth suggesting, on every route: an answer with no items and
``holdout: false`` (:func:`as_told`); an explanation that names the rules leaving
actions out and says :data:`NOT_SUGGESTED` of every other action, never its expected
value; in a plan's ``left_out``, ``not_suggested``; for a decision or a contact
naming its answer, the words of an answer that served nothing. The log keeps every
holdout answer as the holdout it is; channel and admin keys are told.

Every route answering a rep key asks :func:`blind_to_holdout` of its caller and
hands the answer on, rather than testing the role itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nextbest.service.apikeys import Principal
    from nextbest.service.recommend import Recommendation

# What a blind caller's explanation says of an action the rules allow that an answer
# with no items did not serve: true of a held-out HCP and of one with nothing worth
# its cost alike.
NOT_SUGGESTED = "allowed by the rules; not suggested now"


def blind_to_holdout(caller: Principal) -> bool:
    """Whether ``caller`` must not learn which HCPs are in the randomized holdout: a
    rep key (the field acts on what it is told); channel and admin keys are told."""
    return caller.role == "rep"


def as_told(rec: Recommendation, *, blind: bool) -> Recommendation:
    """``rec`` as a caller is told it: for a ``blind`` one, a holdout answer (no items)
    says ``holdout: false``, as an answer with nothing worth doing does; else as logged."""
    return replace(rec, holdout=False) if blind and rec.holdout else rec
