"""The command line as a package: one ``app`` whatever module a command lives in, run
as ``python -m nextbest.cli``, and started without the libraries its commands load."""

from __future__ import annotations

import subprocess
import sys

from nextbest.cli import app

# What the commands import where they use it: `nextbest --help` or a typo answered
# in a fraction of a second, not after seconds of loading a learning stack.
HEAVY = ("pandas", "numpy", "sklearn", "lightgbm", "mlflow", "sqlalchemy", "fastapi", "uvicorn")


def test_importing_the_command_line_loads_none_of_the_libraries_its_commands_use() -> None:
    probe = f"import sys, nextbest.cli\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"imported with the CLI: {done.stdout.strip()}"


def test_the_commands_are_listed_in_their_order_whatever_module_holds_them() -> None:
    commands = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback]
    assert commands == [
        "simulate",
        "validate",
        "train",
        "picks",
        "serve",
        "uplift-report",
        "feedback",
        "erase",
        "prune",
        "retrain",
        "evaluate",
        "promote",
        "rollback",
        "lookup",
        "explain",
        "models",
    ]
    groups = {
        g.name: [c.name for c in g.typer_instance.registered_commands]
        for g in app.registered_groups
        if g.typer_instance
    }
    assert groups == {
        "rules": ["check"],
        "db": ["status", "upgrade"],
        "keys": ["add", "list", "remove"],
    }


def test_the_package_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nextbest.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m nextbest.cli" in done.stdout and "uplift-report" in done.stdout
