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
