"""The command line as a package: one ``app`` whatever module a command lives in, run
as ``python -m nextbest.cli``, and started without the libraries its commands load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nextbest.cli import app

# What the commands import where they use it: `nextbest --help` or a typo answered
# in a fraction of a second, not after seconds of loading a learning stack.
HEAVY = (
    "pandas",
    "numpy",
    "pyarrow",
    "sklearn",
    "lightgbm",
    "mlflow",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "uvicorn",
)


def test_importing_the_command_line_loads_none_of_the_libraries_its_commands_use() -> None:
    probe = f"import sys, nextbest.cli\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"imported with the CLI: {done.stdout.strip()}"


def test_erase_and_prune_do_not_load_the_model_stack() -> None:
    # They named their operator with a function of the feedback file's reader, which
    # imports the scoring model: scikit-learn and SciPy, a second and more of every
    # erasure's start-up for nothing they use.
    probe = (
        "import sys, nextbest.service.erasure\n"
        "print(' '.join(m for m in ('sklearn', 'scipy', 'lightgbm') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"imported by erase and prune: {done.stdout.strip()}"


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
        "withdraw",
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
        "db": ["status", "upgrade", "downgrade"],
        "keys": ["add", "edit", "import", "list", "remove"],
    }


def test_the_package_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nextbest.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m nextbest.cli" in done.stdout and "uplift-report" in done.stdout


def test_ctrl_c_while_the_command_loads_ends_it_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C in the second or so a command loads the libraries it uses (pandas and
    the contract for `validate`), before its work starts (a wrong option seen just
    after Enter), ended it with a Python traceback and SIGINT's own exit status; it
    ends with 130, as during the work. The SIGINT is real, sent as pandas starts to
    load."""
    probe = (
        "import os, signal, sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pandas':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "from nextbest.cli import main\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        f"sys.argv = ['nextbest', 'validate', '--data', {str(tmp_path)!r}]\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        # Ctrl-C as at a terminal, also when the suite runs in the background (SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and done.stdout == "", done.stderr[-2000:]


def _stopped_at_import(
    module: str, sent: int, args: list[str], *, entry: str, models: Path
) -> subprocess.CompletedProcess[str]:
    """``nextbest *args`` started as ``entry`` says, sent ``sent`` by itself as it
    starts to import ``module``: a real signal, at a known moment."""
    start = {
        # python -m nextbest, as the tests and `make` run it.
        "module": "import runpy\nrunpy.run_module('nextbest', run_name='__main__')\n",
        # The installed `nextbest` script: [project.scripts] names nextbest.command:main.
        "script": "from nextbest.command import main\nmain()\n",
    }[entry]
    probe = (
        "import os, sys\n"
        "class Stop:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        f"            os.kill(os.getpid(), {int(sent)})\n"
        "        return None\n"
        "sys.meta_path.insert(0, Stop())\n"
        f"sys.argv = ['nextbest', *{args!r}]\n" + start
    )
    return subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "NEXTBEST_MODELS_DIR": str(models)},
        # Ctrl-C as at a terminal, also when the suite runs in the background (SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.parametrize("entry", ["module", "script"])
@pytest.mark.parametrize(
    ("sent", "how", "code"),
    [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "Ctrl-C", 130)],
    ids=["sigterm", "ctrl-c"],
)
def test_a_stop_while_the_command_line_loads_is_said_in_one_line(
    tmp_path: Path, entry: str, sent: signal.Signals, how: str, code: int
) -> None:
    """A scheduler's SIGTERM in the half second (seconds, on a busy machine) the
    command line loads ended `nextbest` without a word, a job's log empty, and a Ctrl-C
    with a traceback: one line says it was stopped before it started, exit 143 or
    130. The signal is real, sent as Typer starts to load."""
    models = tmp_path / "models"
    done = _stopped_at_import("typer", sent, ["erase", "H1", "--yes"], entry=entry, models=models)
    assert (done.returncode, done.stderr, done.stdout) == (
        code,
        f"error: `nextbest erase` was stopped ({how}) before it started: nothing was changed\n",
        "",
    )
    assert not models.exists()  # nothing made, nothing erased


def test_a_stop_once_the_command_started_is_the_commands_to_say(tmp_path: Path) -> None:
    """Once the command runs, a stop is handled as the command handles it (here
    `validate` loading pandas: 130, no traceback), never said as one before it started."""
    done = _stopped_at_import(
        "pandas",
        signal.SIGINT,
        ["validate", "--data", str(tmp_path)],
        entry="module",
        models=tmp_path,
    )
    assert done.returncode == 130, done.stderr[-2000:]
    assert "before it started" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def _loaded_by(*args: str, models: Path) -> set[str]:
    """The modules ``python -m nextbest *args`` imported, as ``-X importtime`` lists
    them; the command must succeed."""
    env = {**os.environ, "NEXTBEST_MODELS_DIR": str(models)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nextbest", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


def test_light_commands_run_without_the_libraries_the_other_commands_use(tmp_path: Path) -> None:
    """`nextbest keys list`, `--help` and a command's help loaded pandas, SQLAlchemy and
    Alembic first (1.3 s of their 1.8 s of CPU): ``main`` imported the storage
    package to name the database errors it reports. Run as an operator runs them, in
    a process of their own, with a key in the file."""
    models = tmp_path / "models"
    done = subprocess.run(
        [sys.executable, "-m", "nextbest", "keys", "add", "ops", "--role", "admin"],
        capture_output=True,
        text=True,
        env={**os.environ, "NEXTBEST_MODELS_DIR": str(models)},
    )
    assert done.returncode == 0, done.stderr
    for args in (
        ["keys", "list"],
        ["--help"],
        ["keys", "add", "--help"],
        ["db", "status", "--help"],
    ):
        loaded = _loaded_by(*args, models=models)
        assert "nextbest.cli.keys" in loaded, args  # the probe sees the command's modules
        heavy = sorted(m for m in HEAVY if m in loaded)
        assert heavy == [], f"`nextbest {' '.join(args)}` imported {', '.join(heavy)}"


def test_models_lists_the_versions_without_the_gate_or_the_learning_stack(
    trained, tmp_path: Path
) -> None:
    """`nextbest models` reads the registry alone: it loaded the gate (for the champion
    history tag, a registry read) and with it scikit-learn, SciPy and LightGBM, a
    third of its CPU (1.1-1.4 of 4.6-5.0 s here). And the storage package, with its
    ORM tables and the PostgreSQL pool, for the connect timeout given to MLflow's
    stores (0.15 s of its 2.3 here)."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    loaded = _loaded_by("models", models=models)
    assert "nextbest.registry" in loaded and "mlflow" in loaded  # it did read the registry
    heavy = sorted(
        m
        for m in ("nextbest.loop.gate", "sklearn", "lightgbm", "nextbest.storage", "psycopg_pool")
        if m in loaded
    )
    assert heavy == [], f"`nextbest models` imported {', '.join(heavy)}"


def test_serve_starts_its_workers_without_loading_the_model_libraries(
    trained, tmp_path: Path
) -> None:
    """`nextbest serve --workers N` checks the files and migrates the database, then
    starts workers that each import the app and load the model. It configured its
    JSON logs from the metrics module, which imports the app's scoring, so the
    supervisor loaded scikit-learn, SciPy, LightGBM and FastAPI too, which it never
    uses (0.7 s of each start here). Run for real up to where the workers would be
    started."""
    import shutil

    from nextbest.api.process import free_port

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    probe = (
        "import sys\n"
        "import uvicorn\n"
        "import nextbest.api.workers as workers\n"
        "def start_workers(*args, **kwargs):\n"
        f"    print(' '.join(m for m in {(*HEAVY, 'scipy', 'prometheus_client')!r} "
        "if m in sys.modules))\n"
        "uvicorn.run = workers.run_balanced = start_workers\n"
        "from nextbest.cli import app\n"
        f"app(['serve', '--workers', '2', '--port', '{free_port()}'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "NEXTBEST_MODELS_DIR": str(models)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(done.stdout.split())
    # Printed only where the workers would start, after the migration it made.
    assert {"sqlalchemy", "alembic"} <= loaded, loaded
    heavy = sorted(loaded & {"sklearn", "scipy", "lightgbm", "fastapi", "prometheus_client"})
    assert heavy == [], f"the supervisor imported {', '.join(heavy)}"
