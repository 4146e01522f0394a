"""The uplift report's figure per dimension, read as a brand manager would read it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from nextbest.loop.report import (
    NOTHING,
    UNKNOWN,
    ArmComparison,
    UpliftReport,
    chance_said,
    compare,
    uplift_figure,
    write_report,
)


def _group(group: str, served: list[float], held: list[float], *, min_per_arm: int = 2) -> Any:
    outcome = np.array([*served, *held], dtype=np.float64)
    holdout = np.array([False] * len(served) + [True] * len(held))
    return compare(outcome, holdout, dimension="channel", group=group, min_per_arm=min_per_arm)


def _rows() -> list[ArmComparison]:
    rng = np.random.default_rng(0)
    return [
        # Many outcomes in both arms: a narrow interval that means something.
        _group("email", list(rng.normal(2.5, 1.0, 400)), list(rng.normal(2.0, 1.0, 300))),
        # Two holdout outcomes far apart: an interval tens of times as wide.
        _group("rep_visit", list(rng.normal(1.3, 1.0, 70)), [0.0, 4.0], min_per_arm=30),
        # Served only: nothing to compare with.
        _group("webinar", [1.0, 2.0, 3.0], []),
    ]


def _texts(figure: Any) -> list[str]:
    return [t.get_text() for ax in figure.axes for t in ax.texts]


def test_a_group_without_an_estimate_says_not_enough_data_on_its_row() -> None:
    rows = _rows()
    assert np.isnan(rows[2].uplift)
    ax = uplift_figure(rows, "channel", min_per_arm=2).axes[0]
    [said] = ax.texts
    assert said.get_text() == "not enough data: no holdout outcome"
    assert said.get_position()[1] == 2  # on webinar's row
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [
        f"email: {rows[0].n_served} served ({rows[0].n_served} HCPs), "
        f"{rows[0].n_holdout} holdout ({rows[0].n_holdout} HCPs)",
        "rep_visit: 70 served (70 HCPs), 2 holdout (2 HCPs)",
        "webinar: 3 served (3 HCPs), 0 holdout (0 HCPs)",
    ]


def test_one_hcp_is_labelled_in_the_singular() -> None:
    """A group with one HCP in an arm read "1 served (1 HCPs)"."""
    rows = [_group("webinar", [1.0], [0.0, 2.0], min_per_arm=1)]
    [label] = [
        t.get_text()
        for t in uplift_figure(rows, "channel", min_per_arm=1).axes[0].get_yticklabels()
    ]
    assert label == "webinar: 1 served (1 HCP), 2 holdout (2 HCPs)"


def test_the_groups_without_a_name_are_labelled_in_plain_words() -> None:
    """The table's placeholders "(no action)" and "(unknown)" read "(no action) (429
    served, 19 holdout)" under the figure's brackets of counts."""
    rows = [
        _group(NOTHING, [1.0, 2.0, 3.0], [1.0, 2.0]),
        _group(UNKNOWN, [1.0, 2.0], [2.0, 3.0]),
        _group("email", [1.0, 2.0], [2.0, 3.0]),
    ]
    labels = [
        t.get_text()
        for t in uplift_figure(rows, "channel", min_per_arm=2).axes[0].get_yticklabels()
    ]
    assert labels == [
        "no action: 3 served (3 HCPs), 2 holdout (2 HCPs)",
        "unknown: 2 served (2 HCPs), 2 holdout (2 HCPs)",
        "email: 2 served (2 HCPs), 2 holdout (2 HCPs)",
    ]


def test_one_huge_interval_does_not_shrink_the_others_to_dots() -> None:
    """rep_visit's two holdout outcomes give an interval tens of times as wide as
    email's: drawn whole, email's estimate and interval were a dot beside zero."""
    email, rep_visit, _ = rows = _rows()
    assert rep_visit.ci_high - rep_visit.ci_low > 10 * (email.ci_high - email.ci_low)
    ax = uplift_figure(rows, "channel", min_per_arm=2).axes[0]
    low, high = ax.get_xlim()
    assert low <= min(email.ci_low, 0.0) and high >= email.ci_high
    assert high - low < (rep_visit.ci_high - rep_visit.ci_low) / 3
    # The cut interval is marked at the edge it runs past, and the axis says so.
    edges = [ln for ln in ax.get_lines() if ln.get_marker() in ("<", ">")]
    assert {ln.get_marker() for ln in edges} == {"<", ">"}
    assert all(list(ln.get_ydata()) == [1] for ln in edges)
    assert "runs past the edge" in ax.get_xlabel()
    assert ax.get_xlabel().startswith("served - holdout mean outcome per request (95% CI)")


def test_intervals_of_a_like_width_are_drawn_whole() -> None:
    email, *_ = _rows()
    ax = uplift_figure([email], "channel", min_per_arm=2).axes[0]
    low, high = ax.get_xlim()
    assert low < email.ci_low and high > email.ci_high
    assert not [ln for ln in ax.get_lines() if ln.get_marker() in ("<", ">")]
    assert "edge" not in ax.get_xlabel()
    assert not _texts(uplift_figure([email], "channel", min_per_arm=2))


def test_counts_are_written_with_thousands_separators() -> None:
    many = ArmComparison(
        dimension="week",
        group="2026-11-30",
        n_served=3806,
        n_holdout=194,
        mean_served=2.2,
        mean_holdout=2.0,
        uplift=0.2,
        ci_low=-0.1,
        ci_high=0.5,
        verdict="no clear difference yet",
        hcps_served=1201,
        hcps_holdout=188,
    )
    ax = uplift_figure([many], "week", min_per_arm=30).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "2026-11-30: 3,806 served (1,201 HCPs), 194 holdout (188 HCPs)"
    ]


def test_a_group_drawn_pale_says_it_lacks_hcps_not_requests(tmp_path: Path) -> None:
    """The verdict counts HCPs (--min-per-arm), the labels counted requests: "safety:
    546 served, 30 holdout" drawn pale as "too few outcomes to conclude" beside a
    --min-per-arm of 30 could not be read. The labels and the legend say HCPs, and
    the page's table heads say which count is which."""
    rng = np.random.default_rng(1)
    served_hcps, held_hcps = np.arange(144), 1000 + np.arange(28)
    served = served_hcps[np.arange(546) % 144]
    held = np.concatenate([held_hcps, held_hcps[:2]])  # 30 requests of 28 HCPs
    outcome = rng.poisson(2.0, len(served) + len(held)).astype(np.float64)
    holdout = np.array([False] * len(served) + [True] * len(held))
    row = compare(
        outcome,
        holdout,
        dimension="action group",
        group="safety",
        min_per_arm=30,
        cluster=np.concatenate([served, held]),
    )
    assert (row.n_holdout, row.hcps_holdout) == (30, 28)
    assert row.verdict.startswith("not enough data")
    figure = uplift_figure([row], "action group", min_per_arm=30)
    [label] = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert label == "safety: 546 served (144 HCPs), 30 holdout (28 HCPs)"
    [legend] = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "from fewer than 30 HCPs in an arm: too few to conclude"
    ]
    report = UpliftReport(
        rows=[row], overall=row, conclusion="-", since=None, n_decisions=576, min_per_arm=30
    )
    page = write_report(report, tmp_path)["html"].read_text()
    heads = re.findall(r"<th>([^<]*)</th>", page)
    assert heads[2:4] == ["served requests (HCPs)", "holdout requests (HCPs)"]
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert cells[2:4] == ["546 (144)", "30 (28)"]
    said = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert (
        "Counts are requests with an outcome and, in brackets, the HCPs behind them: a "
        "verdict needs outcomes from 30 HCPs in each arm (--min-per-arm)." in said
    )


def test_the_page_reads_offline_and_shows_every_figure_written_beside_it(tmp_path: Path) -> None:
    """Opened from a shared drive or an e-mail attachment: no script, style or image
    fetched from the network, and every image one of the PNGs next to the page."""
    rows = _rows()
    report = UpliftReport(
        rows=rows,
        overall=rows[0],
        conclusion="Not enough data to conclude yet.",
        since=None,
        n_decisions=sum(r.n_served + r.n_holdout for r in rows),
    )
    files = write_report(report, tmp_path)
    page = files["html"].read_text()
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.IGNORECASE)
    assert not re.search(r"<script|<link|@import|url\(", page, re.IGNORECASE)
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images == ["uplift_channel.png"]
    assert (tmp_path / images[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<p class="conclusion">Not enough data to conclude yet.</p>' in page
    # Numbers as the table writes them: three decimals, never 0.30000000000000004.
    cells = re.findall(r"<td>([^<]*)</td>", page)
    numbers = [c for c in cells if re.fullmatch(r"[+-]?\d+\.\d+", c)]
    assert numbers and all(re.fullmatch(r"[+-]?\d+\.\d{3}", c) for c in numbers)


def _page_said(rows: list[ArmComparison], out: Path, *, min_per_arm: int = 30) -> str:
    overall = _group("all", [1.0, 2.0], [1.0])
    report = UpliftReport(
        rows=rows,
        overall=overall,
        conclusion="Not enough data to conclude yet.",
        since=None,
        n_decisions=sum(r.n_served + r.n_holdout for r in rows),
        min_per_arm=min_per_arm,
    )
    page = write_report(report, out)["html"].read_text()
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def test_a_report_without_a_group_to_compare_says_what_makes_one(tmp_path: Path) -> None:
    """It said "0 group rows are compared, and among 20 groups ... by chance": no
    group had the outcomes, and the page did not say what one needs."""
    for rows, out in (([], "none"), ([_rows()[2]], "too-few")):
        said = _page_said(rows, tmp_path / out, min_per_arm=25)
        assert "group rows are compared" not in said and "among 20 groups" not in said
        assert (
            "No group has outcomes from enough HCPs in both arms to compare yet: a group is "
            "compared once outcomes from 25 served HCPs and 25 held-out HCPs came back for "
            "it (--min-per-arm)." in said
        ), said


def test_the_page_counts_the_groups_compared_not_those_without_a_verdict(
    tmp_path: Path,
) -> None:
    said = _page_said(_rows(), tmp_path)  # email only: rep_visit and webinar have too few
    assert "1 group row is compared, and among 20 groups where serving changes nothing" in said


def test_the_terminal_says_what_chance_makes_of_group_verdicts_when_one_reads_clear() -> None:
    """`nextbest uplift-report` printed a group's "serving helps" with nothing beside
    it; the page says what chance makes of a score of groups each tested at 95%, and
    the terminal now says it too, when a group row reads "serving helps" or "serving
    hurts" (and nothing when none does, as a new deployment's report)."""
    rng = np.random.default_rng(0)
    helps = _group("email", list(rng.normal(2.5, 1.0, 400)), list(rng.normal(2.0, 1.0, 300)))
    unclear = _group("phone", list(rng.normal(2.0, 1.0, 40)), list(rng.normal(2.0, 1.0, 40)))
    assert (helps.verdict, unclear.verdict) == ("serving helps", "no clear difference yet")

    def said(rows: list[ArmComparison]) -> str | None:
        return chance_said(
            UpliftReport(
                rows=rows,
                overall=helps,
                conclusion="",
                since=None,
                n_decisions=0,
                min_per_arm=2,
            )
        )

    assert said([helps, unclear]) == (
        "2 group rows are compared, and among 20 groups where serving changes nothing "
        'about one would still read "serving helps" or "serving hurts" by chance. Trust '
        "the overall row first, and a group's verdict when it recurs in later reports."
    )
    assert said([unclear]) is None  # the overall row's own verdict is no group's
    assert said([]) is None


def test_a_hollow_marker_has_its_own_legend_entry() -> None:
    """A group whose holdout outcomes come from one HCP has an estimate but no interval:
    drawn as a hollow marker beside pale dots and bars, with no legend entry, a reader
    could not tell what it meant."""
    rng = np.random.default_rng(2)
    rows = [
        _group("email", list(rng.normal(2.5, 1.0, 400)), list(rng.normal(2.0, 1.0, 300))),
        _group("rep_visit", list(rng.normal(1.3, 1.0, 70)), [0.0, 1.0, 2.0], min_per_arm=30),
        _group("phone", list(rng.normal(1.3, 1.0, 40)), [2.0], min_per_arm=30),
    ]
    assert np.isfinite(rows[2].uplift) and np.isnan(rows[2].ci_low)
    figure = uplift_figure(rows, "channel", min_per_arm=30)
    [legend] = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "outcomes from 30 HCPs or more in each arm",
        "from fewer than 30 HCPs in an arm: too few to conclude",
        "from 1 HCP in an arm: no interval, too few to conclude",
    ]
    # The entry is drawn as the marker is: hollow, on phone's row.
    [hollow] = [ln for ln in figure.axes[0].get_lines() if ln.get_markerfacecolor() == "none"]
    assert list(hollow.get_ydata()) == [2]
    assert legend.legend_handles[2].get_markerfacecolor() == "none"


def test_the_page_says_what_a_verdict_needs_once_under_the_table(tmp_path: Path) -> None:
    """The terminal's table says "not enough data" on a row and what a verdict needs
    once, under it; the page repeated "not enough data (need outcomes from 30 HCPs per
    arm)" on every such row."""
    email, rep_visit, webinar = _rows()
    report = UpliftReport(
        rows=[email, rep_visit, webinar],
        overall=email,
        conclusion="-",
        since=None,
        n_decisions=800,
        min_per_arm=30,
    )
    page = write_report(report, tmp_path)["html"].read_text()
    verdicts = [re.findall(r"<td>([^<]*)</td>", row)[-1] for row in page.split("<tr>")[2:]]
    assert verdicts == [email.verdict, email.verdict, "not enough data", "not enough data"]
    assert "need outcomes" not in page
    [caption] = re.findall(r"<caption[^>]*>([^<]*)</caption>", page)
    assert caption == "not enough data: outcomes from fewer than 30 HCPs in an arm (--min-per-arm)"
    # Every verdict made: no caption.
    enough = UpliftReport(
        rows=[email], overall=email, conclusion="-", since=None, n_decisions=700, min_per_arm=30
    )
    assert "<caption" not in write_report(enough, tmp_path / "enough")["html"].read_text()


def test_a_segment_named_with_quotes_brackets_or_a_slash_shows_its_figure(tmp_path: Path) -> None:
    """The page wrote each figure's file name into ``<img src="...">`` as it was: a
    segment column named with a '"' ended the attribute, one with '<' or '#' named no
    file, and one with '/' was saved in a directory that does not exist. The name is
    kept in the report's directory and written as a link, then as HTML."""
    from html.parser import HTMLParser
    from urllib.parse import unquote

    from nextbest.loop.report import _figures_of_the_report_in

    dimension = 'area "north" <b>#1/2 & 50%?'
    outcome = np.array([1.0, 2.0, 3.0, 1.0, 0.0], dtype=np.float64)
    holdout = np.array([False, False, False, True, True])
    rows = [compare(outcome, holdout, dimension=dimension, group="x", min_per_arm=1)]
    report = UpliftReport(
        rows=rows, overall=rows[0], conclusion="c", since=None, n_decisions=len(outcome)
    )
    files = write_report(report, tmp_path)
    assert files[dimension].parent == tmp_path and files[dimension].is_file()

    class Images(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[dict[str, str | None]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "img":
                self.seen.append(dict(attrs))

    images = Images()
    images.feed(files["html"].read_text())
    [img] = images.seen
    assert set(img) == {"src", "alt"} and img["alt"] == f"uplift by {dimension}"
    src = img["src"]
    assert src is not None and "#" not in src and "?" not in src
    assert tmp_path / unquote(src) == files[dimension]
    # A later report in the directory finds it from the page, the record aside.
    (tmp_path / "uplift_report.json").unlink()
    assert _figures_of_the_report_in(tmp_path) == {files[dimension].name}
