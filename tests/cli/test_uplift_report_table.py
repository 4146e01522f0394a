"""The uplift report's table as `nextbest uplift-report` prints it on a terminal."""

from __future__ import annotations

from rich.console import Console

from nextbest.cli.feedback import report_table
from nextbest.loop.report import ArmComparison, UpliftReport

TOO_FEW = "not enough data (need outcomes from 30 HCPs per arm)"


def _row(group: str, verdict: str, served: int = 289, holdout: int = 11) -> ArmComparison:
    return ArmComparison(
        "channel", group, served, holdout, 1.9, 2.2, -0.3, -1.3, 0.7, verdict,
        hcps_served=served, hcps_holdout=holdout,
    )  # fmt: skip


def _printed(report: UpliftReport, width: int = 120) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(report_table(report))
    return console.export_text().splitlines()


def test_too_few_outcomes_is_said_once_under_the_table_not_on_every_row() -> None:
    """A new deployment's report: every row lacked outcomes, and its verdict, "not
    enough data (need outcomes from 30 HCPs per arm)", the widest cell, wrapped each
    row in two on a 120-column terminal."""
    rows = [_row(g, TOO_FEW) for g in ("email", "rep_visit", "webinar")]
    report = UpliftReport(
        rows=rows, overall=_row("all", TOO_FEW), conclusion="", since=None, n_decisions=300
    )
    lines = _printed(report)
    body = [line for line in lines if line.startswith("│")]
    assert len(body) == 4, "\n".join(lines)  # one line per row: overall and three groups
    assert all(line.rstrip(" │").endswith("not enough data") for line in body), lines
    assert "need outcomes" not in "\n".join(lines)
    assert (
        lines[-1].strip()
        == "not enough data: outcomes from fewer than 30 HCPs in an arm (--min-per-arm)"
    )


def test_verdicts_with_enough_outcomes_are_kept_and_no_caption_is_added() -> None:
    rows = [_row("email", "serving helps", 900, 120), _row("webinar", TOO_FEW, 40, 3)]
    report = UpliftReport(
        rows=rows,
        overall=_row("all", "no clear difference yet", 940, 123),
        conclusion="",
        since=None,
        n_decisions=1063,
        min_per_arm=30,
    )
    said = "\n".join(_printed(report, width=200))
    assert "serving helps" in said and "no clear difference yet" in said
    assert said.count("not enough data") == 2  # the webinar row and the caption
    lines = _printed(
        UpliftReport(
            rows=rows[:1],
            overall=_row("all", "serving helps", 900, 120),
            conclusion="",
            since=None,
            n_decisions=1020,
        )
    )
    assert "not enough data" not in "\n".join(lines) and lines[-1].startswith("└")
