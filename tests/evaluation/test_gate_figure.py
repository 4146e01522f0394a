"""The gate's evidence figure: every estimate and difference drawn, or none missing."""

from __future__ import annotations

from typing import Any

from nextbest.evaluation.plots import gate_figure


def _value(v: float) -> dict[str, Any]:
    return {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n": 900, "effective_n": 300.0}


def _decision(*, with_difference: bool) -> dict[str, Any]:
    estimates = {e: _value(2.0) for e in ("ips", "snips", "dr")}
    return {
        "passed": with_difference,
        "estimator": "dr",
        "n_decisions": 900,
        "champion": estimates,
        "challenger": {e: _value(2.2) for e in ("ips", "dr")},  # SNIPS undefined
        "difference": _value(0.2) if with_difference else None,
        "vs_no_action": {"champion": _value(0.1), "challenger": _value(0.3)}
        if with_difference
        else {},
    }


def test_gate_figure_shows_each_estimate_and_the_paired_differences() -> None:
    fig = gate_figure(_decision(with_difference=True), champion="3", challenger="4")
    left, right = fig.axes
    # One error bar per policy and estimator it has: 3 for the champion, 2 for the challenger.
    points = [len(c.lines[0].get_xdata()) for c in left.containers]
    assert points == [3, 2]
    assert [t.get_text() for t in left.get_yticklabels()] == ["ips", "snips", "dr"]
    # The gate's estimator (dr) in bold, and the unit of every value on the axes.
    assert [t.get_fontweight() for t in left.get_yticklabels()] == ["normal", "normal", "bold"]
    assert left.get_xlabel() == "net value per decision: outcome - cost (95% CI)"
    assert right.get_xlabel() == "paired difference in net value per decision (95% CI)"
    labels = [t.get_text() for t in right.get_yticklabels()]
    assert labels == [
        "challenger - champion (dr)",
        "champion - no action (dr)",
        "challenger - no action (dr)",
    ]
    assert right.get_title() == "Gate (dr): passed"
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "champion v3",
        "challenger v4",
    ]


def test_gate_figure_without_a_difference_still_draws_the_estimates() -> None:
    fig = gate_figure(_decision(with_difference=False), champion="3", challenger="4")
    left, right = fig.axes
    assert len(left.containers) == 2
    assert not right.containers
    assert right.get_title() == "Gate (dr): not passed"


def test_a_difference_the_gate_did_not_estimate_says_why_in_its_row() -> None:
    """Too few decisions for the gate: it estimates no difference, and the right panel
    was an empty frame under "Gate (dr): not passed", with ticks from -0.05 to 0.05,
    which read as a plot that had failed. The difference's row says why, as the first
    reason does (its asides in brackets left to the printed reasons), and no scale is
    drawn that nothing is on."""
    decision = {
        **_decision(with_difference=False),
        "reasons": [
            "not enough evidence: 90 logged decisions with an outcome in the share "
            "reserved for the gate (evaluation_share 0.3) or served since both versions' "
            "cut-offs, the gate needs 500",
            "promoted anyway: --force",
        ],
    }
    _, right = gate_figure(decision, champion="3", challenger="4").axes
    assert [t.get_text() for t in right.get_yticklabels()] == ["challenger - champion (dr)"]
    [note] = right.texts
    assert " ".join(note.get_text().split()) == (
        "not enough evidence: 90 logged decisions with an outcome in the share reserved "
        "for the gate or served since both versions' cut-offs, the gate needs 500"
    )
    assert note.get_position()[1] == 0  # on the difference's row
    assert list(right.get_xticks()) == []
    assert not right.get_lines()  # no line at a zero no scale shows


def test_two_policies_that_always_agree_say_so_beside_their_gains() -> None:
    """The challenger chooses as the champion on every decision: no difference, but
    each policy's gain over doing nothing is drawn; the difference's row says why it
    is empty, above them."""
    decision = {
        **_decision(with_difference=True),
        "passed": False,
        "difference": None,
        "reasons": [
            "the challenger and the champion choose the same action on every one of the "
            "900 evaluated decisions: there is nothing to compare (a challenger retrained "
            "without new feedback repeats the champion)"
        ],
    }
    _, right = gate_figure(decision, champion="3", challenger="4").axes
    assert [t.get_text() for t in right.get_yticklabels()] == [
        "challenger - champion (dr)",
        "champion - no action (dr)",
        "challenger - no action (dr)",
    ]
    assert len(right.containers) == 2  # the two gains, on rows 1 and 2
    [note] = right.texts
    assert " ".join(note.get_text().split()) == (
        "the challenger and the champion choose the same action on every one of the 900 "
        "evaluated decisions: there is nothing to compare"
    )
    assert note.get_position()[1] == 0


def test_a_difference_without_an_interval_is_drawn_hollow_and_says_so() -> None:
    """The challenger and the champion choose differently on one HCP's decisions: the
    difference has no interval (infinite bounds), and was drawn as a bare dot, which
    read as an exact difference. Hollow, and a note under it says why."""
    decision = _decision(with_difference=True)
    decision["difference"] = {
        **_value(0.0033),
        "ci_low": float("-inf"),
        "ci_high": float("inf"),
        "dof": 0.0,
    }
    decision["passed"] = False
    _, right = gate_figure(decision, champion="3", challenger="4").axes
    # The two gains over doing nothing keep their error bars; the difference has none.
    assert len(right.containers) == 2
    [dot] = [line for line in right.get_lines() if list(line.get_xdata()) == [0.0033]]
    assert list(dot.get_ydata()) == [0] and dot.get_markerfacecolor() == "none"
    [note] = right.texts
    assert note.get_text() == "no interval: an error needs two HCPs"
    assert note.get_position()[1] == 0.3  # under the difference's row, the top one


def test_gate_figure_names_a_version_evaluated_by_number_as_the_cli_does() -> None:
    """`nextbest evaluate --version 2` judges version 2, which the alias 'challenger'
    does not name: the figure said "challenger v2" and "challenger - champion" where
    the command and the gate's reasons say "version 2"."""
    fig = gate_figure(
        _decision(with_difference=True), champion="3", challenger="2", judged="version 2"
    )
    left, right = fig.axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["champion v3", "version 2"]
    labels = [t.get_text() for t in right.get_yticklabels()]
    assert labels == [
        "version 2 - champion (dr)",
        "champion - no action (dr)",
        "version 2 - no action (dr)",
    ]
    assert not any("challenger" in label for label in labels)


def test_a_difference_below_min_decisions_is_drawn_but_marked_not_decided_on() -> None:
    """Too few decisions for the gate: its row said why and drew nothing, so the figure
    did not show how far the evidence was from a decision. The difference and its
    interval are drawn, grey and hollow, with "not decided on" under them; the gains
    over doing nothing keep their colours."""
    decision = {
        **_decision(with_difference=True),
        "passed": False,
        "difference": {**_value(0.05), "ci_low": -0.11, "ci_high": 0.21, "dof": 250.0},
        "difference_not_decided_on": "below min_decisions: 320 decisions, the gate needs 500",
        "reasons": ["not enough evidence: 320 logged decisions ..., the gate needs 500"],
    }
    _, right = gate_figure(decision, champion="3", challenger="4").axes
    assert len(right.containers) == 3  # the difference and the two gains
    difference = right.containers[0]
    assert list(difference.lines[0].get_xdata()) == [0.05]
    assert difference.lines[0].get_markerfacecolor() == "none"
    assert difference.lines[0].get_color() == "grey"
    assert right.containers[1].lines[0].get_color() == "tab:blue"
    [note] = right.texts
    assert note.get_text() == "not decided on: below min_decisions"
    assert note.get_position()[1] == 0.3  # under the difference's row
    assert right.get_title() == "Gate (dr): not passed"
    # Without an interval too, both are said.
    decision["difference"] = {**_value(0.05), "ci_low": float("-inf"), "ci_high": float("inf")}
    _, right = gate_figure(decision, champion="3", challenger="4").axes
    [note] = right.texts
    assert note.get_text().split("\n") == [
        "no interval: an error needs two HCPs",
        "not decided on: below min_decisions",
    ]
