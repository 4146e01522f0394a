"""Opt-in fatigue in ``draw_response``: touches since the history lower engagement on
their channel as the history's fatigue does; without them nothing changes."""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.simulate import SimulatedWorld
from nextbest.simulate.response import sigmoid
from nextbest.simulate.vocabulary import CHANNELS


def _eligible_pairs(world: SimulatedWorld, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(world.eligible)
    pick = rng.choice(len(rows), size=k, replace=False)
    return rows[pick], cols[pick]


def test_zero_extra_touches_change_nothing(small_world: SimulatedWorld) -> None:
    hcp, action = _eligible_pairs(small_world, 500, seed=1)
    plain = small_world.draw_response(hcp, action, np.random.default_rng(2))
    zero = small_world.draw_response(
        hcp,
        action,
        np.random.default_rng(2),
        extra_touches=np.zeros((len(hcp), len(CHANNELS))),
    )
    assert np.array_equal(plain[0], zero[0]) and np.array_equal(plain[1], zero[1])


def test_touches_on_the_channel_lower_engagement_as_fatigue_does(
    small_world: SimulatedWorld,
) -> None:
    rows, cols = _eligible_pairs(small_world, 30, seed=3)
    repeats = 4_000
    hcp, action = np.repeat(rows, repeats), np.repeat(cols, repeats)
    channel = small_world.codes.channel[cols]
    touches = np.zeros((len(hcp), len(CHANNELS)))
    touches[np.arange(len(hcp)), np.repeat(channel, repeats)] = 2.0
    # A touch on another channel does not weigh on this one.
    other = (np.repeat(channel, repeats) + 1) % len(CHANNELS)
    touches[np.arange(len(hcp)), other] = 5.0
    engaged, _ = small_world.draw_response(
        hcp, action, np.random.default_rng(4), extra_touches=touches
    )
    p0 = small_world.p_engage[rows, cols]
    sensitivity = small_world.traits.fatigue_sensitivity[rows]
    expected = sigmoid(np.log(p0 / (1 - p0)) - 2.0 * sensitivity)
    mean = engaged.reshape(30, repeats).mean(axis=1)
    assert np.all(np.abs(mean - expected) < 4.5 * np.sqrt(expected * (1 - expected) / repeats))
    assert (expected < p0).all()


@pytest.mark.parametrize(
    "touches",
    [np.zeros((3, len(CHANNELS) + 1)), np.zeros((2, len(CHANNELS))), -np.ones((3, len(CHANNELS)))],
)
def test_bad_extra_touches_are_refused(small_world: SimulatedWorld, touches: np.ndarray) -> None:
    with pytest.raises(ValueError, match="extra_touches must be non-negative counts of shape"):
        small_world.draw_response(
            np.arange(3),
            np.zeros(3, dtype=np.int64),
            np.random.default_rng(0),
            extra_touches=touches,
        )
