"""What the CLI tests share: a Typer runner, the fast training config, and a command
run in-process that must succeed."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nextbest.cli import app

runner = CliRunner()
FAST = Path(__file__).parent / "fast_train.yaml"


def run_ok(*args: str) -> str:
    """Run ``nextbest *args`` in-process; its output, once it exited 0 (else fail with it)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


# Commands that write the recommendation log for others (a server, a report, a
# retrain) to read, and what each would leave in a log made by a mistyped setting:
# `pytest.mark.parametrize(("command", "lost"), LOG_WRITERS, ids=...)`.
LOG_WRITERS = [
    # An erasure job: the suppressions went to a new log there, "erased" was said,
    # and the served log kept contacting the HCP.
    (["erase", "H000001", "--yes"], "the suppressions would be recorded in a new "),
    # An outcome feed: the events, opt-outs too, went to a new log that no server
    # or retrain reads, and "stored" was said.
    (["feedback", "{events}"], "these events, opt-outs included, would be stored in a new "),
]
