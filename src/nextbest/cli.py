"""The ``nextbest`` command line. Each command calls the service and returns its result."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from nextbest.settings import (
    Settings,
    get_settings,
    unknown_environment_settings,
    without_password,
)

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from nextbest.policy.rules import ServingRules
    from nextbest.registry import VersionSummary
    from nextbest.storage.repository import RowCounts


def _help_shows_no_value_for_flags() -> None:
    """Typer's Rich help (0.29) puts a flag's type in the column of the value an
    option takes, `--yes <bool>`, as if the flag wanted one; its plain help and
    click's show nothing there. Typer has no setting for it, so the option class
    is told: a flag (`--help` included) takes no value and shows none."""
    option = typer.core.TyperOption
    show_type = getattr(option, "display_type_rich", None)
    if show_type is None or getattr(show_type, "flags_show_none", False):
        return  # another Typer: its help as it is

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        if self.is_flag and not self.count:
            return None
        return show_type(self, ctx)

    display_type_rich.flags_show_none = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich  # type: ignore[method-assign]


_help_shows_no_value_for_flags()

app = typer.Typer(
    help="Next-best-action service for HCP engagement: simulate, train, serve, pick.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _width(stream: Any) -> int | None:
    """The terminal's width on a terminal (None: Rich finds it) or as COLUMNS says;
    elsewhere (a log file, a pipe) wide enough that a table's cells stay whole:
    at Rich's 80 columns an interval split as '1.9821 [1.8178,' / '2.1464]'."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return None if terminal or os.environ.get("COLUMNS") else 160


# soft_wrap: paths and URLs stay on one line when output goes to a file or pipe.
# Progress, notes and errors go to stderr; a command's result (validate's report,
# models, what simulate, erase, feedback and picks did) to stdout, so
# `nextbest validate --data D > report.txt` keeps it.
console = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))
stdout = Console(soft_wrap=True, width=_width(sys.stdout))


def _print_version(value: bool) -> None:
    if value:
        from alembic.script import ScriptDirectory

        from nextbest import __version__
        from nextbest.storage.db import alembic_config

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        stdout.print(f"nextbest {__version__} (database schema revision {head})")
        raise typer.Exit()


class _Notes(logging.Handler):
    """What the package logs as a warning, said on the console as a command's own note
    (an error as an error); other libraries' warnings as they are. Without it Python
    printed them bare, and a command that also said so printed it twice. ``nextbest
    serve`` replaces it with JSON lines (its logging config sets the root's handlers).
    A PostgreSQL error's row values are left out, as from those JSON lines: a
    command's console is often a scheduler's log."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        from nextbest.storage.db import without_row_values

        said = escape(without_row_values(record.getMessage()))
        if not record.name.startswith("nextbest"):
            console.print(f"{record.levelname.lower()}: {record.name}: {said}", highlight=False)
        elif record.levelno >= logging.ERROR:
            console.print(f"[red]error:[/red] {said}", highlight=False)
        else:
            console.print(f"[yellow]note:[/yellow] {said}", highlight=False)


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Show the release and its database schema revision, and exit.",
        ),
    ] = False,
) -> None:
    """Next-best-action service for HCP engagement: simulate, train, serve, pick."""
    root = logging.getLogger()
    if not any(isinstance(handler, _Notes) for handler in root.handlers):
        root.addHandler(_Notes(logging.WARNING))
    if _OWN_PROCESS and ctx.invoked_subcommand != "serve":
        # Run beside a server (its shell or container), a command would write its
        # own metrics files into the server's directory: each run's counters, kept
        # for good, summed into the server's /metrics as if a worker had counted
        # them. Only the server's workers count; prometheus_client is not imported
        # yet, so it keeps each counter in this process alone.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


DataOpt = Annotated[
    Path, typer.Option("--data", help="Directory with hcps, catalog, interactions.")
]


DaskOpt = Annotated[
    str | None,
    typer.Option(
        "--dask",
        envvar="NEXTBEST_DASK_SCHEDULER",
        help="Train on a Dask cluster: 'local' (a worker per core of this machine) "
        "or a scheduler's address (tcp://host:8786). Default: in this process.",
    ),
]


def main() -> None:
    """The ``nextbest`` command: :data:`app`, with a database a newer release migrated
    refused in one line (exit 2) by every command that opens it, not a traceback.

    So is a file or directory the command cannot use (a models directory or
    database path under a file, a full disk, no permission): exit code 1 means
    something else to a script (``promote``: the gate kept the champion;
    ``feedback``: rows were rejected), and a traceback buries the path at fault.
    """
    import sqlite3

    from sqlalchemy.exc import DatabaseError, InterfaceError

    from nextbest.storage.db import (
        MigrationLockTimeoutError,
        SchemaBehindError,
        SchemaTooNewError,
        describe_database_error,
    )

    global _OWN_PROCESS
    _OWN_PROCESS = True
    try:
        app()
    except (SchemaTooNewError, SchemaBehindError, MigrationLockTimeoutError) as exc:
        console.print(f"[red]error:[/red] NEXTBEST_DATABASE_URL: {exc}", highlight=False)
        raise SystemExit(2) from None
    except OSError as exc:
        if exc.filename is None:  # not about a path (a socket, say): the traceback helps
            raise
        console.print(f"[red]error:[/red] {_path_error(exc)}", highlight=False)
        raise SystemExit(2) from None
    except (DatabaseError, InterfaceError, sqlite3.DatabaseError) as exc:
        # A store that cannot be opened or read (a path that is a directory, a file
        # that is no database, a server that is down): which one, in one line.
        console.print(
            f"[red]error:[/red] a database cannot be used: {describe_database_error(exc)} "
            f"({_stores()})",
            highlight=False,
        )
        raise SystemExit(2) from None
    except Exception as exc:
        # A registry that cannot serve the command (a models directory moved away from
        # its artifacts, a version that cannot be read), wherever it was found out.
        registry = sys.modules.get("nextbest.registry")  # loaded if it raised
        if registry is None or not isinstance(exc, registry.RegistryError):
            raise
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None


def _stores() -> str:
    """The stores a command may have opened, named by their settings."""
    try:
        settings = get_settings()
    except Exception:
        return "NEXTBEST_DATABASE_URL"
    said = (
        f"NEXTBEST_DATABASE_URL is {without_password(settings.resolved_database_url)}, the "
        f"MLflow store {without_password(settings.resolved_tracking_uri)}"
    )
    if settings.resolved_registry_uri != settings.resolved_tracking_uri:
        said += f", the MLflow registry {without_password(settings.resolved_registry_uri)}"
    return said


def _path_error(exc: OSError) -> str:
    """``exc`` as one line naming its path, and the setting that names it, if one does."""
    what = exc.strerror or type(exc).__name__
    if isinstance(exc, FileExistsError) and Path(str(exc.filename)).is_file():
        what = "Not a directory"  # a directory was to be made where a file is
    said = f"{what}: {exc.filename}"
    if exc.filename2:
        said += f" -> {exc.filename2}"
    path = Path(str(exc.filename))
    metrics = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics and Path(metrics) in (path, *path.parents):
        return _metrics_dir_error(metrics) or f"{said} (PROMETHEUS_MULTIPROC_DIR is {metrics})"
    try:
        settings = get_settings()
    except Exception:  # an invalid setting is said where it is read
        return said
    models = settings.resolved_models_dir
    database = settings.resolved_database_url.removeprefix("sqlite:///")
    if path == models or models in path.parents or path in models.parents:
        said += " (NEXTBEST_MODELS_DIR is " + str(models) + ")"
    elif settings.database_url and (str(path) == database or path in Path(database).parents):
        said += f" (NEXTBEST_DATABASE_URL is {without_password(settings.database_url)})"
    return said


def _metrics_dir_error(setting: str) -> str | None:
    """What is wrong with ``PROMETHEUS_MULTIPROC_DIR`` (``setting``) if it is no
    directory; None if it is one. prometheus_client writes each process's metrics
    there from the moment the service's modules are imported."""
    directory = Path(setting)
    if directory.is_dir():
        return None
    what = "a file, not a directory" if directory.exists() else "which does not exist"
    return (
        f"PROMETHEUS_MULTIPROC_DIR is {setting}, {what}: make it an empty directory "
        "before the server starts (each process writes its metrics there), or unset it "
        "(`nextbest serve` with several workers then makes one of its own)"
    )


def _alias_given_by_training(settings: Any, alias: str | None) -> None:
    """Refuse, before any work, an alias MLflow would refuse when it is set at the end
    (``bad alias!``), and an alias that would serve the new version without the gate:
    a champion given by ``--alias`` skipped the gate and left no record of who
    promoted it and why, and ``rollback`` could not tell. ``champion`` may go to a
    model's first version (nothing is served yet); the served alias, when another
    (NEXTBEST_SERVE_ALIAS), never: training gives it to the first version itself,
    beside ``champion``, and a later version is served once promoted."""
    from nextbest import registry
    from nextbest.loop.gate import CHAMPION, PREVIOUS_CHAMPION

    if alias is not None and (problem := registry.alias_problem(alias)) is not None:
        raise _fail(f"--alias: {problem}")
    if alias is None or alias not in {CHAMPION, PREVIOUS_CHAMPION, settings.serve_alias}:
        return
    if alias == settings.serve_alias != CHAMPION:
        raise _fail(
            f"--alias {alias}: the server reads alias '{alias}' (NEXTBEST_SERVE_ALIAS), so "
            "the new version would be served at once, without the gate; register it under "
            "another alias (--alias NAME), or serve the champion (unset NEXTBEST_SERVE_ALIAS)"
        )
    served = registry.alias_version(settings, settings.serve_alias)
    champion = registry.alias_version(settings, CHAMPION)
    if alias == PREVIOUS_CHAMPION or served is not None or champion is not None:
        raise _fail(
            f"--alias {alias}: the served version changes only by `nextbest promote`, "
            "which runs the gate (or is forced with --force) and records the decision "
            "for rollback; train with --alias challenger, then evaluate and promote"
        )


def _models_dir_usable(settings: Settings) -> None:
    """Create the models directory now, or stop naming it: commands that end by
    writing there (a registered model) must not find out after their work."""
    import tempfile

    from nextbest import registry

    models = settings.resolved_models_dir
    try:
        settings.ensure_dirs()
        # Writable for this user, as the registration at the end writes: a directory
        # made read-only (a read-only mount, `chattr +i`) passes os.access as root.
        for place in (models, models / "artifacts"):
            if place.is_dir():
                with tempfile.TemporaryFile(dir=place):
                    pass
    except OSError as exc:
        raise _fail(f"NEXTBEST_MODELS_DIR: cannot use {models}: {exc.strerror or exc}") from None
    try:  # a store moved away from its artifacts' recorded path
        registry.experiment_id(settings)
    except registry.RegistryError as exc:
        raise _fail(str(exc)) from None


def _print_cleanup(cleanup: Any, store: str, *, rerun: str = "") -> None:
    """What an erasure or a prune left of the deleted rows, and where: on SQLite a
    write-ahead log a server kept from being emptied (``rerun``: what to run again
    then), on PostgreSQL what VACUUM did."""
    from nextbest.service.erasure import VACUUM

    if cleanup.backend != "postgresql":
        if not cleanup.log_emptied:
            _note(
                "the database's write-ahead log could not be emptied "
                f"({store}-wal: a server was reading): the deleted rows stay readable in that "
                "file until every server using the database stops or the log is next "
                f"emptied{rerun}"
            )
        return
    kept = {table for table, n in cleanup.dead_left.items() if n}
    if cleanup.vacuumed:
        gone = (
            "the deleted rows and their index entries are gone from the tables' live "
            "data, except the dead rows noted below"
            if kept
            else "the deleted rows and their index entries are gone from the tables' live data"
        )
        stdout.print(
            f"vacuumed {', '.join(cleanup.vacuumed)}: {gone}; copies remain in PostgreSQL's "
            "write-ahead log and its archive, in backups, and on replicas until they "
            "replay the deletes (docs/operations.md, 'Erasure and retention')",
            highlight=False,
        )
    # One note per table and what is left of it; the reasons are the server's words.
    notes = [
        *(
            f"{table} could not be vacuumed ({why}): the deleted rows stay on disk as dead "
            f"rows until it is; have the table's owner run {VACUUM} {table}"
            for table, why in cleanup.not_vacuumed.items()
        ),
        *(
            f"the planner's statistics of {table} could not be refreshed ({why}): they may "
            "still hold values sampled from the deleted rows (pg_stats) until it is "
            f"analyzed; have the table's owner run ANALYZE {table}"
            for table, why in cleanup.not_analyzed.items()
        ),
        *(
            f"{n:,} dead rows of {table} could not be removed yet: "
            "another session's open transaction (a BI tool's, a backup) may still see "
            f"them; run {VACUUM} {table} in {store} once it has ended"
            for table, n in cleanup.dead_left.items()
            if n
        ),
    ]
    for note in notes:
        _note(note)


def _fail(message: str) -> typer.Exit:
    from rich.markup import escape

    # Messages quote files and ids ('[bold]', 'Cardio[/]'): text, never markup.
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=2)


def _note(text: str, *, out: Console = console, indent: str = "") -> None:
    """Say ``text`` as a note; what it quotes from files and ids is not read as markup."""
    from rich.markup import escape

    out.print(f"{indent}[yellow]note:[/yellow] {escape(text)}", highlight=False)


def _settings() -> Settings:
    """The ``NEXTBEST_*`` settings; an invalid one stops the command, naming the variable."""
    from pydantic import ValidationError

    global _UNKNOWN_SAID
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"NEXTBEST_{'_'.join(str(part) for part in error['loc']).upper()}"
            f"={_shown_input(error.get('input'))!r}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise _fail(f"invalid setting: {problems}") from None
    if not _UNKNOWN_SAID:
        _UNKNOWN_SAID = True
        for said in unknown_environment_settings():
            console.print(f"[yellow]warning:[/yellow] {said}", highlight=False)
    return settings


_UNKNOWN_SAID = False  # misspelt NEXTBEST_* variables are warned of once per process


def _shown_input(value: Any) -> Any:
    """A setting's value as the error may show it: a URL's password hidden."""
    return without_password(value) if isinstance(value, str) else value


def _parse_date(value: str | None, option: str) -> datetime | None:
    from nextbest.service.recommend import EARLIEST_DECISION, LATEST_DECISION, check_decision_date

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            f"{option} '{value}' is not a date (use YYYY-MM-DD, or an ISO 8601 time)"
        ) from None
    try:
        return cast(datetime, check_decision_date(when))
    except ValueError:
        raise _fail(
            f"{option} '{value}' is not a decision date: use one from {EARLIEST_DECISION} "
            f"to {LATEST_DECISION}"
        ) from None


def _load(data: Path) -> Any:
    from nextbest.contract import ContractError, load_dataset

    try:
        return load_dataset(data)
    except ContractError as exc:
        raise _fail(str(exc)) from None


def _dask_given_as(context: typer.Context) -> str:
    """How the scheduler was asked for, as its errors name it: ``--dask``, or
    NEXTBEST_DASK_SCHEDULER when the value came from there."""
    source = context.get_parameter_source("dask")
    return "NEXTBEST_DASK_SCHEDULER" if source and source.name == "ENVIRONMENT" else "--dask"


@contextmanager
def _cluster(
    scheduler: str | None, first: Callable[[], Any], *, given_as: str = "--dask"
) -> Iterator[tuple[Any, Any]]:
    """What ``first()`` returns (reading the data) and a Dask client for ``--dask``
    (None without it), closed when the block ends; its errors name ``given_as``.

    A running scheduler is reached before ``first``: a wrong address is said at once,
    not after minutes of reading. A cluster of this machine starts after it: a data
    error does not wait for one to start and stop.
    """
    if scheduler is None:
        yield first(), None
        return
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise _fail(
            f"{given_as}: training on a Dask cluster needs {exc.name or 'distributed'}, "
            "not installed here: pip install 'dask[dataframe,distributed]'"
        ) from None
    from nextbest.learning.distributed import (
        LOCAL,
        ClusterUnavailableError,
        cluster_failure,
        connect,
    )

    ready = first() if scheduler == LOCAL else None
    try:
        with connect(scheduler) as client:
            yield (ready if scheduler == LOCAL else first()), client
    except ClusterUnavailableError as exc:
        raise _fail(f"{given_as}: {exc}") from None
    except Exception as exc:
        said = cluster_failure(exc)
        if said is None:
            raise
        raise _fail(f"{given_as}: {said}") from None


# Off a terminal, a step that has said nothing for this long says it is still at work.
HEARTBEAT_S = 60.0


@contextmanager
def _working(what: str) -> Iterator[None]:
    """A spinner saying ``what`` on a terminal; elsewhere (a cron job's log, CI) a
    line when the work starts and one when it is done, as :class:`_Steps` says its
    steps: a spinner is not drawn there, and a long evaluation showed nothing."""
    if console.is_terminal:
        with console.status(what):
            yield
        return
    started = time.monotonic()
    console.print(f"{what} ...", highlight=False)
    yield
    took = timedelta(seconds=round(time.monotonic() - started))
    console.print(f"{what}: done ({took})", highlight=False)


class _Steps(Progress):
    """Rich's bar on a terminal; elsewhere (output to a log file, CI) a line per step
    and per tenth of the work, so that a long run is seen moving (a bar that is not
    drawn showed nothing for 11 minutes of training), and one every ``HEARTBEAT_S``
    seconds a step says nothing (fitting the models of a large catalog took 7
    minutes without a line)."""

    def __init__(self) -> None:
        super().__init__(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            # Not drawn elsewhere: the lines below say it, and a bar drawn once at the
            # end came after (so read as) the error that stopped the work.
            disable=not console.is_terminal,
        )
        self._said: dict[TaskID, tuple[str, int]] = {}
        self._quiet = threading.Event()  # set: the heartbeat stops
        self._last_said = time.monotonic()

    def start(self) -> None:
        super().start()
        if not self.console.is_terminal:
            self._quiet.clear()
            threading.Thread(target=self._heartbeat, name="progress", daemon=True).start()

    def stop(self) -> None:
        self._quiet.set()
        super().stop()

    def _heartbeat(self) -> None:
        while not self._quiet.wait(HEARTBEAT_S / 4):
            if time.monotonic() - self._last_said < HEARTBEAT_S:
                continue
            with self._lock:
                for task in self.tasks:
                    if not task.finished:
                        self._print(task, "still at work")

    def _say(self, task_id: TaskID) -> None:
        if self.console.is_terminal:
            return
        task = self._tasks[task_id]
        tenth = int(10 * task.completed / task.total) if task.total else 0
        if self._said.get(task_id) == (task.description, tenth):
            return
        self._said[task_id] = (task.description, tenth)
        self._print(task)

    def _print(self, task: Task, more: str = "") -> None:
        total = f"{task.total:,.0f}" if task.total is not None else "?"
        elapsed = timedelta(seconds=round(task.elapsed or 0))
        self.console.print(
            f"{task.description}: {task.completed:,.0f}/{total} ({elapsed})"
            + (f", {more}" if more else ""),
            highlight=False,
        )
        self._last_said = time.monotonic()

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._say(task_id)
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._say(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._say(task_id)


def _steps(total: int) -> Progress:
    return _Steps()


def _stage_steps(
    progress: Progress, first: str, total: int
) -> tuple[Callable[[str], None], Callable[[], None]]:
    """What moves a task of ``total`` steps starting at stage ``first`` as training
    says what it is doing (a stage's name counts one step, "stage (detail)" within it
    is shown without counting: see :data:`nextbest.learning.train.Progress`), and what
    completes it, named "done": a log's last line naming the last stage again
    ("register: 6/6") read as that stage still at work."""
    task = progress.add_task(first, total=total)
    stage = [first]

    def step(said: str) -> None:
        name = said.split(" (", 1)[0]
        progress.update(task, advance=int(name != stage[0]), description=said)
        stage[0] = name

    def done() -> None:
        progress.update(task, completed=total, description="done")

    return step, done


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Directory to write the world into.")],
    hcps: Annotated[int, typer.Option(min=1, help="Number of HCPs.")] = 2000,
    periods: Annotated[int, typer.Option(min=1, help="Weekly decision periods.")] = 26,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (same seed, same files).")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
) -> Path:
    """Build a synthetic HCP world with known ground truth."""
    from nextbest.simulate import simulate_world

    if fmt not in ("csv", "parquet"):
        raise _fail(f"--format must be csv or parquet, got '{fmt}'")
    with _working(f"simulating {hcps:,} HCPs x {periods} periods"):
        world = simulate_world(n_hcps=hcps, periods=periods, seed=seed)
        try:
            world.write(out, fmt="csv" if fmt == "csv" else "parquet")
        except OSError as exc:  # a clash of formats, or a directory that cannot be written
            raise _fail(f"--out: {exc}") from None
    stdout.print(
        f"wrote {_plural(len(world.hcps), 'HCP')}, {_plural(len(world.catalog), 'action')}, "
        f"{len(world.interactions):,} decisions and the ground truth to {out}"
    )
    return out


@app.command()
def validate(data: DataOpt, config: TrainConfigOpt = None) -> None:
    """Check a data directory against the data contract."""
    from nextbest.contract.notes import consent_blank_notes, data_notes
    from nextbest.learning.readiness import (
        evidence_notes,
        interaction_notes,
        what_training_gets,
        why_training_stops,
    )

    # What training will get is counted with the config `train` would read.
    train_config = _train_config(config)
    dataset = _load(data)
    # The files keep the contract, but a pipeline gating on validate must not pass
    # data train refuses: the same exit code as a broken contract, said last (where
    # it is read) and not announced as "ok" first.
    stops = why_training_stops(dataset.interactions, train_config.eval_fraction, dataset.catalog)
    said = "[green]ok[/green]" if stops is None else "the files keep the contract, but"
    stdout.print(
        f"{said}: {_plural(len(dataset.hcps), 'HCP')}, {_plural(len(dataset.catalog), 'action')}, "
        f"{_plural(len(dataset.interactions), 'interaction')}"
    )
    for line in what_training_gets(
        dataset.interactions, train_config.eval_fraction, dataset.catalog
    ):
        stdout.print(f"  {line}", highlight=False)
    # What `train --data` records as the version's data_fingerprint (`nextbest models
    # --json`): archived files are shown to be a version's without training again.
    stdout.print(f"  data fingerprint {dataset.fingerprint()}", highlight=False)
    notes = [
        *consent_blank_notes(dataset),
        *data_notes(dataset),
        *evidence_notes(dataset, train_config.eval_fraction),
        *interaction_notes(dataset.interactions, dataset.catalog),
        *filter(None, [train_config.levers.unknown_note(dataset.catalog)]),
        *filter(None, [train_config.unvalued_note(dataset.catalog)]),
    ]
    for line in notes:
        _note(line, out=stdout, indent="  ")
    if stops is not None:
        raise _fail(f"train would stop on these data: {stops}")


TrainConfigOpt = Annotated[
    Path | None,
    typer.Option(help="Training config YAML (default: training/train.yaml when present)."),
]


TRAIN_CONFIG = "training/train.yaml"


def _config(
    load: Callable[[Path | None], Any], path: Path | None, default: str, error: type[Exception]
) -> Any:
    """``load`` of the named file (which must exist); without one, of ``default`` in the
    working directory if there is one, else of None (the built-in defaults). ``error``
    (an invalid or missing file) stops the command with its message."""
    fallback = Path(default)
    try:
        return load(path if path is not None else (fallback if fallback.exists() else None))
    except error as exc:
        raise _fail(str(exc)) from None


def _train_config(path: Path | None) -> Any:
    """The training config ``--config`` names (else training/train.yaml, else the
    defaults), saying which and where its levers came from."""
    from nextbest.learning.config import load_train_config

    config = _config(load_train_config, path, TRAIN_CONFIG, ValueError)
    source = config.source
    if source == "built-in defaults":
        source += f" (no {TRAIN_CONFIG} here)"
    console.print(f"train config: {source} (levers: {config.levers_source})", highlight=False)
    return config


@app.command()
def train(
    context: typer.Context,
    data: DataOpt,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Learn from history before this date.")
    ] = None,
    config: TrainConfigOpt = None,
    alias: Annotated[
        str | None,
        typer.Option(
            help="Give the new version this alias, e.g. challenger (champion only to a "
            "model's first version: the served one moves by `nextbest promote`)."
        ),
    ] = None,
    dask: DaskOpt = None,
) -> str:
    """Train preference and uplift models, log the run to MLflow and register a version."""
    import pandas as pd

    from nextbest import registry
    from nextbest.contract.notes import data_notes
    from nextbest.learning.train import train as train_models

    settings = _settings()
    _alias_given_by_training(settings, alias)
    cutoff = _parse_date(as_of, "--as-of")
    train_config = _train_config(config)
    stages = [
        "load",
        "features",
        "models",
        "snapshot",
        "evaluation",
        "register",
    ]
    with _steps(len(stages)) as progress:
        step, steps_done = _stage_steps(progress, "load", len(stages))

        def load() -> Any:
            # Once the options are checked (a typo creates nothing), and here, not at
            # the last step after all the work.
            _models_dir_usable(settings)
            return _load(data)

        with _cluster(dask, load, given_as=_dask_given_as(context)) as (dataset, client):
            try:
                result = train_models(
                    dataset,
                    config=train_config,
                    as_of=pd.Timestamp(cutoff) if cutoff else None,
                    progress=step,
                    client=client,
                )
            except ValueError as exc:
                raise _fail(str(exc)) from None
        result.notes.extend(data_notes(dataset))
        step("register")
        try:
            # A training run or a first champion's decision run caught by a signal ends
            # KILLED, saying so (see promote).
            with _interruptible_as_ctrl_c():
                info = registry.log_training_run(result, settings, alias=alias)
        except (registry.AliasNotMovedError, registry.DecisionUnfinishedError) as exc:
            raise _fail(str(exc)) from None
        steps_done()
    for note in result.notes:
        _note(note)
    _note_repeat(settings, info.version)
    _note_serve_alias(settings, info.version, info.aliases)
    table = Table(
        title=f"{info.name} version {info.version}  aliases: {', '.join(info.aliases) or '-'}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(result.metrics.items()):
        table.add_row(key, f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4f}")
    console.print(table)
    console.print(
        f"tracking: {without_password(settings.resolved_tracking_uri)}  run: {info.run_id}"
    )
    _say_not_champion(info.not_champion)
    return info.version


def _say_not_champion(why: str | None) -> None:
    """Say, last, why the version ``--alias champion`` was asked for did not become
    champion (``why``, None when it did), and exit 1: it is registered in full, and a
    script that goes on as if it were served must not."""
    from rich.markup import escape

    if why is None:
        return
    console.print(
        f"[bold red]--alias champion not given:[/bold red] {escape(why)}",
        highlight=False,
    )
    raise typer.Exit(code=1)


def _unknown_ids(ids: list[str], unknown: set[str], *, known: Iterable[str]) -> str:
    """The first few ``unknown`` of ``ids`` in their order, each with the known id it
    differs from only in case, leading zeros or a trailing '.0' (the data contract's
    look-alikes): ``h000010 (H000010?)``."""
    import pandas as pd

    from nextbest.contract.validate import LookAlikes
    from nextbest.learning.scoring import listed

    twins = LookAlikes(pd.Index(list(known)))
    named = []
    for hcp in dict.fromkeys(h for h in ids if h in unknown):
        near = twins.of(str(hcp))
        named.append(f"{hcp} ({near}?)" if near is not None else str(hcp))
    return listed(named)


@app.command()
def picks(
    out: Annotated[Path, typer.Option(help="Output file: .csv or .parquet.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Directory with hcps and catalog (interactions are not read): picks for "
            "every HCP.",
        ),
    ] = None,
    hcps: Annotated[
        Path | None,
        typer.Option(
            "--hcps",
            help="Instead of --data: a send list (.csv or .parquet) with an hcp_id column "
            "and, optionally, specialty and consent_<channel> columns; picks for its HCPs.",
        ),
    ] = None,
    channel: Annotated[str | None, typer.Option(help="Only actions on this channel.")] = None,
    k: Annotated[int, typer.Option(min=1, max=50, help="Actions per HCP.")] = 1,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Decision date (default: today).")
    ] = None,
    purpose: Annotated[str, typer.Option(help="promotional or medical.")] = "promotional",
    log: Annotated[
        bool,
        typer.Option(
            "--log",
            help="For a file that will be sent: serve each HCP as the batch endpoint "
            "does (exploration, holdout) and log it; adds recommendation_id, "
            "propensity and explored.",
        ),
    ] = False,
    new_holdout_rate: Annotated[
        bool,
        typer.Option(
            "--new-holdout-rate",
            help="With --log: the holdout rate (NEXTBEST_HOLDOUT_RATE) was changed on "
            "purpose; log at it although the newest logged answers used another.",
        ),
    ] = False,
) -> Path:
    """Write the best actions for every HCP in the data's hcps file, or in a send list.

    Ranked by the served version (alias NEXTBEST_SERVE_ALIAS) under the serving rules
    (NEXTBEST_RULES_FILE, else training/rules.yaml in the working directory, which
    must exist; an empty file applies none) and the logged contact history, as the
    API ranks. Without --log nothing is logged. Exit code 2 when nothing was written
    (a bad option, file or setting; with --log, another holdout rate than the log's)."""
    from nextbest import registry
    from nextbest.contract import (
        ContractError,
        consent_notes,
        load_hcps_and_catalog,
        load_send_list,
        write_table,
    )
    from nextbest.errors import InvalidRequestError, NextbestError
    from nextbest.policy.rules import RulesError
    from nextbest.service.picks import (
        catalog_notes,
        check_picks,
        file_picks,
        logged_picks,
        specialty_notes,
    )

    if (data is None) == (hcps is None):
        raise _fail("give --data DIR (every HCP of its hcps file) or --hcps FILE (a send list)")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise _fail(f"--out must end in .csv or .parquet, got '{out.name}'")
    if out.is_dir():
        raise _fail(f"--out: {out} is a directory; name the file to write")
    try:  # before any scoring: an unwritable place must not cost the whole run
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"--out: {exc}") from None
    when = _parse_date(as_of, "--as-of")
    on: datetime | date | None = when
    if when is not None and as_of is not None and len(as_of.strip()) == 10:
        on = when.date()  # a day alone: its start, or now when it is today (decision_time)
    settings = _settings()
    if new_holdout_rate and not log:
        raise _fail("--new-holdout-rate is for --log runs: plain picks draw no holdout")
    if log:  # before reading the data: a refused run costs nothing
        _check_holdout_rate(settings, changed=new_holdout_rate)
    # The day's HCPs and actions only: the history is not needed to pick (the model
    # knows it to its as-of, the log since), and reading it took longer than the picks.
    given: tuple[Any, Any] | None = None
    if data is not None:
        try:
            given = load_hcps_and_catalog(data)
        except ContractError as exc:
            raise _fail(str(exc)) from None
    _check_rules_file(settings)
    try:
        model, version = registry.load_alias(settings)
    except registry.RegistryError as exc:
        raise _fail(str(exc)) from None
    # The files' consent, specialties and approval windows apply, not only the model's.
    if given is not None:
        given_hcps, given_catalog = given
    else:
        assert hcps is not None
        try:
            given_hcps, given_catalog = load_send_list(hcps, catalog=model.catalog), None
        except ContractError as exc:
            raise _fail(f"--hcps: {exc}") from None
    try:
        check_picks(model, k=k, channel=channel, purpose=purpose, on=on, check_on=True)
    except InvalidRequestError as exc:
        raise _fail(f"--{exc.field}: {exc.message}") from None
    # Rules for channels the catalog lacks are noted when the rules are applied (the
    # package's warnings are the command's notes, see _Notes).
    hcp_ids = list(given_hcps["hcp_id"])
    unknown = set(hcp_ids) - set(model.hcps["hcp_id"])
    if unknown:
        one = len(unknown) == 1
        _note(
            f"{len(unknown):,} {'HCP is' if one else 'HCPs are'} not in "
            f"model version {version}'s snapshot and {'gets' if one else 'get'} no picks: "
            f"{_unknown_ids(hcp_ids, unknown, known=model.hcps['hcp_id'])}; ids are compared "
            "exactly, case included (HCPs new since the model was trained get picks once a "
            "retrained version is served)"
        )
    noted = model.evidence.notes(model.catalog)
    if given is None:  # a send list's specialties: a typo loses specialty-bound actions
        noted += specialty_notes(model, version, hcps=given_hcps)
    if given_catalog is not None:
        noted += [
            *consent_notes(given_hcps, given_catalog),
            *catalog_notes(model, version, catalog=given_catalog),
        ]
    for note in noted:
        _note(note)
    if log:
        _note_logged_today(settings, [h for h in hcp_ids if h not in unknown])
    with (
        _steps(len(hcp_ids)) as progress,  # the HCPs scored: the unknown are skipped
        _interruptible_as_ctrl_c() if log else contextlib.nullcontext(),
    ):
        task = progress.add_task("scoring HCPs", total=len(hcp_ids) - len(unknown))

        def advance(n: int) -> None:
            progress.advance(task, n)

        logged = None
        # --log: the file is written (beside --out) before any answer is logged, and
        # takes --out's name once they are: an interrupted run logs no answer that
        # no file holds, and leaves no file whose answers are not logged.
        partial = _partial_beside(out)

        def write_partial(frame: Any) -> None:
            try:
                write_table(frame, partial)
            except OSError as exc:
                raise _fail(f"--out: {exc}") from None

        def publish() -> None:
            """Give the logged file its name; from then on the run is done, and a
            late Ctrl-C or SIGTERM (held until now) must not make it look failed."""
            _replace_keeping_mode(partial, out)
            _ignore_signals_from_now_on()

        try:
            # Serving rules and live contact history apply, as for the API.
            if log:
                known = [h for h in hcp_ids if h not in unknown]
                try:
                    logged = logged_picks(
                        settings,
                        hcp_ids=known,
                        k=k,
                        channel=channel,
                        purpose=purpose,
                        on=on,
                        progress=advance,
                        hcps=given_hcps,
                        catalog=given_catalog,
                        before_logging=write_partial,
                        after_logging=publish,
                    )
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
                frame = logged.frame
            else:
                frame = file_picks(
                    settings,
                    model,
                    version=version,
                    hcp_ids=hcp_ids,
                    k=k,
                    channel=channel,
                    purpose=purpose,
                    on=on,
                    progress=advance,
                    hcps=given_hcps,
                    catalog=given_catalog,
                )
        except RulesError as exc:  # strict rules that do not fit this version's catalog
            raise _fail(
                f"model '{settings.model_name}' version {version} (alias "
                f"'{settings.serve_alias}'): {exc}"
            ) from None
        except NextbestError as exc:  # --log names the served version itself
            raise _fail(str(exc)) from None
    if logged is None:
        # Written beside --out and renamed once complete: a write that fails (a full
        # disk, a quota, Ctrl-C) leaves an earlier file of that name as it was, not
        # cut short where a send system would take it for the whole list. A
        # scheduler's SIGTERM during the write removes the partial file too.
        with _interruptible_as_ctrl_c():
            try:
                write_table(frame, partial)
                publish()
            except BaseException as exc:
                partial.unlink(missing_ok=True)
                if isinstance(exc, OSError):
                    raise _fail(f"--out: cannot write {out}: {exc.strerror or exc}") from None
                raise
    if logged is not None:
        version = logged.model_version  # the champion when the answers were served
    # What was written and logged on stdout (--out is required: the picks never are).
    stdout.print(
        f"wrote {_plural(len(frame), 'pick')} for {frame['hcp_id'].nunique():,} of "
        f"{_plural(len(hcp_ids), 'HCP')} "
        f"to {out} (model version {version})",
        highlight=False,
    )
    if logged is not None:
        stdout.print(
            f"logged {logged.n_logged:,} answers as served ({logged.n_holdout:,} held out: "
            "no pick); send each pick's recommendation_id with its feedback so it joins "
            "the loop",
            highlight=False,
        )
        if logged.erased:
            console.print(
                f"[yellow]note:[/yellow] {_plural(len(logged.erased), 'HCP')} erased while "
                "the picks were made: left out of the file and the log",
                highlight=False,
            )
    else:
        console.print(
            "[dim]not logged as served: outcomes of sends from this file cannot be measured; "
            "use --log for a file that will be sent[/dim]"
        )
    return out


def _note_logged_today(settings: Settings, hcp_ids: list[str]) -> None:
    """Say when HCPs of this ``picks --log`` run already got logged picks today: each
    logged answer counts as served, so of two files for them only one may be sent
    (the uplift report and the gate take the other's answers as sends)."""
    from nextbest.storage.db import store_session
    from nextbest.storage.repository import hcps_logged_since

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with store_session(settings.resolved_database_url) as session:
        earlier = hcps_logged_since(session, since=today, requester_prefix="nextbest picks (")
    again = len(earlier.intersection(hcp_ids))
    if again:
        console.print(
            f"[yellow]note:[/yellow] {again:,} of these HCPs already have answers logged "
            "today by `nextbest picks --log` (an earlier run?): every logged answer counts "
            "as served, so send one file for them, not both",
            highlight=False,
        )


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


# Set by main(): this process is the `nextbest` command, and ends with the command.
_OWN_PROCESS = False
_DONE = False  # the command's work is complete: see _ignore_signals_from_now_on


def _ignore_signals_from_now_on() -> None:
    """The work is complete (a logged file published): SIGINT and SIGTERM are ignored
    until the process exits, a second or so of shutting down, so that a scheduler's
    late signal does not turn a done run into a failed one it would run again."""
    global _DONE
    _DONE = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _partial_beside(out: Path) -> Path:
    """Where a run writes its file before giving it ``out``'s name: hidden, beside
    the file ``out`` names (through a symlink, which keeps pointing at it), and this
    run's own, so that two runs writing to one name never write into one file."""
    target = Path(os.path.realpath(out))
    return target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")


def _replace_keeping_mode(partial: Path, out: Path) -> None:
    """Give ``partial`` the name of the file ``out`` names, with that file's
    permissions when it exists (a file a send system's group may read stays so)."""
    target = Path(os.path.realpath(out))
    with contextlib.suppress(FileNotFoundError):
        shutil.copymode(target, partial)
    partial.replace(target)


@contextmanager
def _interruptible_as_ctrl_c() -> Iterator[None]:
    """A scheduler's SIGTERM interrupts as Ctrl-C does, so the work's cleanup runs
    (``picks --log`` removes its partial file; exit code 143). On leaving, the
    handlers before are put back, unless the work is done and this process ends
    with it (in another caller's process, such as a test's, ignored signals would
    outlive the command and pass to every child it starts)."""
    global _DONE
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        if not (_DONE and _OWN_PROCESS):
            signal.signal(signal.SIGINT, before[0])
            signal.signal(signal.SIGTERM, before[1])
        _DONE = False


def _check_holdout_rate(settings: Settings, *, changed: bool = False) -> None:
    """Stop ``picks --log`` when its holdout rate is not the recommendation log's.

    The holdout draw compares one hash per HCP and week with the rate, so a run
    with another rate than the server's holds out other HCPs: it would send picks
    to HCPs the server keeps in its control group, and log answers under a second
    rate. The newest logged answer stands for the deployment's rate; with nothing
    logged yet, any rate goes.
    """
    from nextbest.policy.exploration import same_holdout_rate
    from nextbest.storage.db import UNAVAILABLE_ERRORS, describe_database_error, store_session
    from nextbest.storage.repository import latest_holdout_rate

    url = settings.resolved_database_url
    try:
        with store_session(url) as session:
            logged = latest_holdout_rate(session)
    except ValueError as exc:  # a backend other than SQLite or PostgreSQL
        raise _fail(f"NEXTBEST_DATABASE_URL: {exc}") from None
    except UNAVAILABLE_ERRORS as exc:
        raise _fail(
            f"cannot reach the database {without_password(url)} (NEXTBEST_DATABASE_URL): "
            f"{describe_database_error(exc)}"
        ) from None
    rate = settings.holdout_rate
    if logged is not None and not same_holdout_rate(rate, logged) and changed:
        console.print(
            f"holdout rate changed on purpose (--new-holdout-rate): logging at {rate:g}, "
            f"where the newest logged answer was served at {logged:g}",
            highlight=False,
        )
    elif logged is not None and not same_holdout_rate(rate, logged):
        raise _fail(
            f"the holdout rate here is {rate:g} (NEXTBEST_HOLDOUT_RATE) but the newest "
            f"answers logged in {without_password(url)} were served with holdout rate "
            f"{logged:g}: this run would hold out other HCPs than the server does (sending "
            "picks to HCPs of its control group) and mix two rates in the log. Run with "
            f"NEXTBEST_HOLDOUT_RATE={logged:g}, the rate of the newest logged answer (give "
            "servers and picks runs one rate), or, if the rate was changed on purpose "
            "(servers too), add --new-holdout-rate"
        )


def _setting_default(name: str) -> str:
    """What an option left out falls back to: the setting's default and its variable."""
    return f"NEXTBEST_{name.upper()}, else {Settings.model_fields[name].default}"


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address.", show_default=_setting_default("host"))
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port.", show_default=_setting_default("port")),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes.", show_default=_setting_default("workers")),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="debug, info (one JSON line per request), warning, error.")
    ] = "info",
) -> None:
    """Serve the champion model over HTTP (OpenAPI docs at /docs), logging JSON lines.

    The version with alias NEXTBEST_SERVE_ALIAS (champion unless set) in
    NEXTBEST_MODELS_DIR. The rules, territory alignment and API key files are read
    first: an invalid one stops it (exit code 2), as does a port in use. Every
    setting: README, 'Configuration'. SIGTERM or Ctrl-C stops it gracefully."""
    # Served processes freeze their long-lived heap after loading a model
    # (Settings.gc_freeze): full garbage collections no longer stall requests.
    os.environ.setdefault("NEXTBEST_GC_FREEZE", "true")
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _fail(f"--log-level: '{log_level}' is not one of debug, info, warning, error")
    with _json_logs(level):
        _serve(host=host, port=port, workers=workers, log_level=log_level)


@contextlib.contextmanager
def _json_logs(level: str) -> Iterator[None]:
    """What ``serve`` logs before its workers start (a migration, a rules note) as the
    JSON lines the workers write, not console notes: a log shipper reads one format.
    Errors that stop it at once stay plain text. The console notes come back after."""
    from nextbest.api.observability import JsonFormatter, ServeLogFilter

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ServeLogFilter())
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(level)
    try:
        yield
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def _serve(*, host: str | None, port: int | None, workers: int | None, log_level: str) -> None:
    import tempfile

    get_settings.cache_clear()
    settings = _settings()
    models_dir = settings.resolved_models_dir
    had_models_dir = models_dir.exists()
    _check_serving_files(settings)
    # Made before the database (by default inside it), so that a missing models
    # directory is warned about once, below, not also as the database's directory.
    settings.ensure_dirs()
    _migrate_before_serving(settings)
    if not had_models_dir:
        # Most likely a mistyped setting: the server would wait for a model forever,
        # its /readyz saying only that the alias is missing.
        logging.getLogger("nextbest.serve").warning(
            "the models directory %s (NEXTBEST_MODELS_DIR) did not exist and was created "
            "empty: nothing is served until a model is trained into it (`nextbest train`); "
            "check the setting if one was trained",
            models_dir,
            extra={"event": "models_dir_created"},
        )
    n_workers = workers or settings.workers
    # One OpenMP thread per worker: requests score small blocks, and the workers
    # already use every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    metrics_dir = None
    if n_workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics then sums the counters of every worker process.
        metrics_dir = tempfile.mkdtemp(prefix="nextbest-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if n_workers > 1:  # each worker stops when this process dies (die_with_supervisor)
        from nextbest.api.workers import SUPERVISOR_ENV

        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    try:
        _run_server(settings, host=host, port=port, n_workers=n_workers, log_level=log_level)
    finally:
        if metrics_dir is not None:  # ours: gone with the server (stopped or failed)
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_server(
    settings: Settings, *, host: str | None, port: int | None, n_workers: int, log_level: str
) -> None:
    """Run uvicorn's workers until the server stops."""
    import inspect

    import uvicorn

    from nextbest.api.observability import logging_config
    from nextbest.api.protocol import PROTOCOL
    from nextbest.api.workers import (
        AddressInUseError,
        balanced_listeners_supported,
        check_address_free,
        run_balanced,
    )

    extra: dict[str, int] = {}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.run).parameters:
        # uvicorn kills a worker that does not answer its health ping within 5 s;
        # one still importing and loading its model on a busy machine takes longer
        # and was killed and restarted over and over, leaving fewer workers serving.
        extra["timeout_worker_healthcheck"] = 60
    options: dict[str, Any] = dict(
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=n_workers,
        log_config=logging_config(log_level.upper()),
        access_log=False,
        # Each answer's head and body in one send (nextbest.api.protocol).
        http=PROTOCOL,
        **extra,
    )
    if n_workers > 1 and balanced_listeners_supported():
        # Each worker accepts on its own socket, so connections spread over all
        # workers (nextbest.api.workers explains why uvicorn's shared one does not).
        # The workers hold the keys of a key file there at the start; one gone when
        # a SIGHUP comes would leave their replacements with none.
        keys_held = settings.auth_enabled and settings.resolved_api_keys_file.exists()
        try:
            run_balanced(
                uvicorn.Config("nextbest.api.app:create_app", **options),
                # A SIGHUP replaces every worker: with a file no worker can serve
                # by, the replacements would take the whole service down.
                before_restart=lambda: _restart_problem(settings, keys_held=keys_held),
            )
        except AddressInUseError as exc:
            raise _fail(str(exc)) from None
    else:
        try:  # refused here, before the model loads, not by uvicorn after it
            check_address_free(options["host"], options["port"])
        except AddressInUseError as exc:
            raise _fail(str(exc)) from None
        uvicorn.run("nextbest.api.app:create_app", **options)


def _check_rules_file(settings: Settings) -> ServingRules:
    """Read the serving rules before any work: an invalid or missing named file stops."""
    from nextbest.policy.rules import RulesError, ServingRules

    try:
        return ServingRules.configured(settings)
    except RulesError as exc:
        raise _fail(str(exc)) from None


def _check_serving_files(settings: Settings) -> None:
    """Read the rules, territory alignment and API-key files as the workers will: an
    invalid one stops ``serve`` here with its message, not each worker at start-up in
    a traceback."""
    from nextbest.registry import registry_exists

    problem = _serving_files_error(settings)
    if problem is not None:
        raise _fail(problem)
    registry_exists(settings)  # a local MLflow store that cannot be used stops here


# How long the check before a SIGHUP restart may take (it loads the served model).
RESTART_CHECK_TIMEOUT_S = 120.0


def _restart_problem(settings: Settings, *, keys_held: bool = False) -> str | None:
    """Why workers started now would serve nothing, or None: the files as
    :func:`_serving_files_error` reads them (``keys_held``: the workers serving hold
    keys of the key file, so its absence is one), then the rules against the
    served model's catalog (``nextbest rules check``, in a process of its own, so
    that the supervisor does not hold a model): an invalid or, under ``strict:
    true``, unfitting rules file, or a served version that does not load."""
    import subprocess

    problem = _serving_files_error(settings, keys_held=keys_held)
    if problem is not None:
        return problem
    try:
        checked = subprocess.run(
            [sys.executable, "-m", "nextbest.cli", "rules", "check"],
            capture_output=True,
            text=True,
            timeout=RESTART_CHECK_TIMEOUT_S,
            check=False,
            env={**os.environ, "COLUMNS": "100000"},  # one line per message
        )
    except subprocess.TimeoutExpired:
        return f"`nextbest rules check` did not finish in {RESTART_CHECK_TIMEOUT_S:g} s"
    if checked.returncode in (0, 1):  # it fits, or fits with notes: as a reload would
        return None
    errors = [
        line.removeprefix("error: ").strip()
        for line in checked.stderr.splitlines()
        if line.startswith("error: ")
    ]
    said = "; ".join(errors) or f"exit code {checked.returncode}"
    return f"`nextbest rules check` refused it: {said}"


def _serving_files_error(settings: Settings, *, keys_held: bool = False) -> str | None:
    """What is wrong with the rules, territory alignment or API-key file, read as a
    worker starting now would read them; None when all three would serve.
    ``keys_held``: as :meth:`KeyStore.configured`'s ``held``."""
    from nextbest.policy.rules import RulesError, ServingRules
    from nextbest.service.apikeys import ApiKeyError, KeyStore
    from nextbest.service.territories import TerritoriesError, TerritoryAlignment

    try:
        ServingRules.configured(settings)
        TerritoryAlignment.configured(settings)
        if settings.auth_enabled:
            KeyStore.configured(settings, held=keys_held)
    except (RulesError, TerritoriesError, ApiKeyError) as exc:
        return str(exc)
    return None


def _migrate_before_serving(settings: Settings) -> None:
    """Migrate the database once, before any worker starts; an unreachable one stops here.

    Left to the workers, an unreachable database failed each one's start-up and
    uvicorn's supervisor gave up a minute later with exit code 0, so a service
    manager restarting on failure never restarted it. Workers still migrate (a
    no-op now); one started during a later outage waits for the database instead.
    A damaged SQLite file (a backup restored beside a later state's -wal) stops
    here too, before anything is served from it.
    """
    before, after = _upgrade_schema(settings)
    if before != after:  # said once, here: the workers find nothing left to do
        logging.getLogger("nextbest.serve").info(
            "database schema migrated from revision %s to %s", before or "(none)", after
        )


def _upgrade_schema(settings: Settings) -> tuple[str | None, str | None]:
    """Upgrade the database's schema to this release's (``serve``, ``db upgrade``); any
    reason it cannot be stops the command in one line. The revisions before and after."""
    from sqlalchemy.engine import make_url

    from nextbest.storage.db import (
        UNAVAILABLE_ERRORS,
        MigrationLockTimeoutError,
        SchemaTooNewError,
        describe_database_error,
        migrate,
        sqlite_damage,
    )

    url = settings.resolved_database_url
    damage = sqlite_damage(url)
    if damage is not None:
        raise _fail(
            f"the database file {make_url(url).database} is damaged (SQLite's quick_check: "
            f"{damage}): serving would acknowledge answers and feedback it may not keep. "
            "Restore it from a backup, removing any -wal and -shm files beside it that "
            "are not the backup's own (docs/operations.md, 'Backup and restore')"
        )
    try:
        return migrate(url)
    except ValueError as exc:  # a backend other than SQLite or PostgreSQL
        raise _fail(f"NEXTBEST_DATABASE_URL: {exc}") from None
    except (SchemaTooNewError, MigrationLockTimeoutError) as exc:
        raise _fail(f"NEXTBEST_DATABASE_URL: {exc}") from None
    except UNAVAILABLE_ERRORS as exc:
        shown = without_password(url)
        raise _fail(
            f"cannot reach the database {shown} (NEXTBEST_DATABASE_URL): "
            f"{describe_database_error(exc)}"
        ) from None


rules_app = typer.Typer(
    help="The serving rules file: check it against a model's catalog before a reload.",
    no_args_is_help=True,
)
app.add_typer(rules_app, name="rules")


@rules_app.command("check")
def rules_check(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The rules file to check (default: NEXTBEST_RULES_FILE, else training/rules.yaml)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Check against this version's catalog, or an alias's (default: the served "
            "alias, NEXTBEST_SERVE_ALIAS).",
        ),
    ] = None,
) -> None:
    """Check a rules file against a model's catalog as a reload would, serving nothing.

    Prints its fingerprint and what of it fits nothing in the catalog (a misspelt
    channel, a channel no rule caps). Exit code 0: a reload would take it as it is;
    1: it would, with the notes printed; 2: a reload would fail (an invalid file, or
    `strict: true` and notes)."""
    from nextbest import registry
    from nextbest.policy.eligibility import EligibilityIndex
    from nextbest.policy.rules import HistoryRules, RulesError

    settings = _settings()
    if path is not None:
        if not path.is_file():
            raise _fail(f"{path}: no such file")
        settings = settings.model_copy(update={"rules_file": path})
    rules = _check_rules_file(settings)  # an invalid file stops here, naming the field
    if model is None and registry.alias_version(settings, settings.serve_alias) is None:
        # No model serves yet: a reload would take the file (and still serve nothing),
        # so it passes; what of it fits the catalog is checked once a model is served.
        stdout.print(
            f"{rules.source} (rules {rules.fingerprint}) is valid; model "
            f"'{settings.model_name}' has no version with alias '{settings.serve_alias}' yet, "
            "so its fit to a catalog was not checked (`--model VERSION` checks it against one)",
            highlight=False,
        )
        return
    loaded, version = _model_asked(settings, model)
    catalog = loaded.catalog
    try:
        fitted = HistoryRules(  # its notes are printed as it logs them
            rules,
            channels=catalog["channel"].astype(str).to_numpy(dtype=object),
            action_ids=catalog["action_id"].astype(str).to_numpy(dtype=object),
            consent_on_file=EligibilityIndex.build(loaded).consent_on_file,
        )
    except RulesError as exc:
        raise _fail(str(exc)) from None
    channels = sorted(set(catalog["channel"].astype(str)))
    said = (
        f"{len(fitted.notes)} note(s) above; a reload would take it (`strict: true` would "
        "refuse it)"
        if fitted.notes
        else "fits it"
    )
    stdout.print(
        f"{rules.source} (rules {rules.fingerprint}) against the catalog of model "
        f"'{settings.model_name}' version {version} ({len(catalog):,} actions on "
        f"{', '.join(channels)}): {said}",
        highlight=False,
    )
    if fitted.notes:
        raise typer.Exit(code=1)


db_app = typer.Typer(
    help="The database's schema: status (its revision and this release's), upgrade.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")


@db_app.command("status")
def db_status() -> None:
    """Say the database's schema revision and this release's.

    Exit code 0 when they match (or there is no schema yet), 1 when the database is
    behind, 2 when it is newer than this release or cannot be reached."""
    from nextbest.storage.db import UNAVAILABLE_ERRORS, describe_database_error, schema_revisions

    settings = _settings()
    url = settings.resolved_database_url
    shown = without_password(url)
    try:
        found, head = schema_revisions(url)
    except UNAVAILABLE_ERRORS as exc:
        raise _fail(
            f"cannot reach the database {shown} (NEXTBEST_DATABASE_URL): "
            f"{describe_database_error(exc)}"
        ) from None
    if found is None:
        said = f"no schema yet; the first command that uses it creates revision {head}"
    elif found == head:
        said = f"schema revision {found}, this release's"
    else:
        said = (
            f"schema revision {found}, behind this release's {head}: `nextbest db upgrade` "
            "upgrades it (once the servers sharing it run this release)"
        )
    stdout.print(f"{shown}: {said}", highlight=False)
    if found is not None and found != head:
        raise typer.Exit(code=1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database's schema to this release's, as `nextbest serve` does at start.

    Every other command refuses a database whose schema is behind: run this
    once the servers sharing the database run this release (a worker of an older
    release cannot start on a newer schema)."""
    settings = _settings()
    before, after = _upgrade_schema(settings)
    shown = without_password(settings.resolved_database_url)
    if before == after:
        stdout.print(
            f"{shown}: schema revision {after}, this release's: nothing to do", highlight=False
        )
    else:
        stdout.print(
            f"{shown}: schema upgraded from revision {before or '(none)'} to {after}",
            highlight=False,
        )


GATE_CONFIG = "training/gate.yaml"
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only decisions logged at or after this date (YYYY-MM-DD) or time "
        "(ISO 8601, e.g. 2026-11-01T09:00:00+00:00).",
    ),
]
GateConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Gate config YAML (default: training/gate.yaml if there is one here, else the "
        "built-in defaults). Its evaluation_share must not exceed the one retrain used.",
    ),
]

RunsDeletedOpt = Annotated[
    bool,
    typer.Option(
        "--runs-deleted",
        help="Record the decision (evaluate: its verdict) in this tracking store though it "
        "does not have the training runs of the versions it is about, deleted from it on purpose "
        "(`mlflow gc`). Without it, a tracking store other than the registry that lacks "
        "them is refused: it is probably not the one they were trained in, where the "
        "decisions before are recorded.",
    ),
]

ChallengerVersionOpt = Annotated[
    int | None,
    typer.Option(
        "--version",
        min=1,
        help="Judge this registered version as the challenger (one rolled back, an "
        "earlier one: `nextbest models` lists them) instead of the one alias "
        "'challenger' names; the aliases but champion's stay as they are.",
    ),
]


def _gate_config(path: Path | None, *, said: bool = True) -> Any:
    """The gate config ``--config`` / ``--gate`` names (else training/gate.yaml, else
    the defaults), saying which (:func:`_say_gate_config`) unless not ``said``:
    evaluate and promote say it once the gate runs, not before a refusal found first."""
    from nextbest.loop.gate import GateError, load_gate_config

    config = _config(load_gate_config, path, GATE_CONFIG, GateError)
    if said:
        _say_gate_config(config, path)
    return config


def _say_gate_config(config: Any, path: Path | None) -> None:
    """Which gate config ``config`` was read from (``path``, as :func:`_gate_config`
    took it): retrain and evaluate must agree on its share."""
    source = path or (Path(GATE_CONFIG) if Path(GATE_CONFIG).exists() else None)
    console.print(
        f"gate config: {source or f'built-in defaults (no {GATE_CONFIG} here)'} "
        f"(evaluation_share {config.evaluation_share:g})",
        highlight=False,
    )


@app.command("uplift-report")
def uplift_report(
    since: SinceOpt = None,
    out: Annotated[Path, typer.Option(help="Directory for the HTML page and PNGs.")] = Path(
        "reports/uplift"
    ),
    segment: Annotated[str, typer.Option(help="HCP attribute to segment by.")] = "specialty",
    min_per_arm: Annotated[
        int,
        typer.Option(
            "--min-per-arm", min=2, help="HCPs with an outcome in each arm before concluding."
        ),
    ] = 30,
) -> Path:
    """Outcomes of served vs holdout requests per channel, action group and segment."""
    from nextbest.errors import InvalidRequestError
    from nextbest.loop import report as report_cells
    from nextbest.loop.report import uplift_report as build

    settings = _settings()
    start = _parse_date(since, "--since")
    if start is not None and start.replace(tzinfo=start.tzinfo or UTC) > datetime.now(UTC):
        raise _fail(
            f"--since {since} is in the future: no request is logged that late (--since is "
            "when requests were logged, not the week a plan was asked for)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"--out: {exc}") from None
    try:
        with _working("building the uplift report"):
            report = build(
                settings,
                out_dir=out,
                since=start,
                segment=segment,
                min_per_arm=min_per_arm,
            )
    except InvalidRequestError as exc:
        raise _fail(f"--{exc.field}: {exc.message}") from None
    table = Table(title="served vs holdout")
    for column in (
        "dimension",
        "group",
        "served (HCPs)",
        "holdout (HCPs)",
        "uplift",
        "95% CI",
        "verdict",
    ):
        table.add_column(column)
    for row in [report.overall, *report.rows]:
        table.add_row(
            row.dimension,
            row.group,
            report_cells.counted(row.n_served, row.hcps_served),
            report_cells.counted(row.n_holdout, row.hcps_holdout),
            report_cells.figure(row.uplift),
            report_cells.interval(row),
            row.verdict,
        )
    console.print(table)
    console.print(report.conclusion)
    console.print(f"report: {report.files['html']}  run: {report.run_id}")
    return report.files["html"]


@app.command()
def feedback(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV or Parquet, one event per row, with the fields of POST /v1/feedback: "
            "event_id, event_type, hcp_id and optionally recommendation_id, action_id, "
            "channel, occurred_at, reason, value."
        ),
    ],
    rejected: Annotated[
        Path | None,
        typer.Option(
            "--rejected",
            help="Write the rejected rows here (.csv or .parquet) with their row number "
            "and why, to fix and send again as is (written, header only, when none was "
            "rejected).",
        ),
    ] = None,
) -> None:
    """Store feedback events from a file (outcome feeds, e-mail platform exports).

    Idempotent by event_id, as the API: a file sent again stores nothing twice.
    Exit code 1 when rows were rejected (the others are stored); 2 when the file,
    an option or a setting is invalid (nothing is stored) or the --rejected file
    cannot be written.
    """
    from nextbest import registry
    from nextbest.contract import ContractError, write_table
    from nextbest.service.feedback_file import ingest_events, read_events

    if rejected is not None and rejected.suffix.lower() not in (".csv", ".parquet"):
        raise _fail(f"--rejected must end in .csv or .parquet, got '{rejected}'")
    if rejected is not None:
        try:  # before any event is stored: a place that cannot be written stops here
            rejected.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail(f"--rejected: cannot write in {rejected.parent}: {exc.strerror}") from None
        if rejected.is_dir():
            raise _fail(f"--rejected: {rejected} is a directory; name the file to write")
    try:
        frame = read_events(file)
    except ContractError as exc:
        if rejected is not None and rejected.exists() and rejected.resolve() != file.resolve():
            rejected.unlink()  # an earlier run's rejects must not be taken for this one's
            console.print(f"removed {rejected}: it held an earlier run's rejected rows")
        raise _fail(str(exc)) from None
    settings = _settings()
    model = None
    if (
        registry.registry_exists(settings)
        and registry.alias_version(settings, settings.serve_alias) is not None
    ):
        model, version = registry.load_alias(settings)
        console.print(f"checking HCPs and actions against model version {version}")
    else:
        console.print(
            "[yellow]note:[/yellow] no served model: HCPs and actions are not checked "
            "(the API does the same before a model is loaded)"
        )
    from nextbest.policy.rules import RulesError, ServingRules

    try:
        codes: tuple[str, ...] | None = ServingRules.configured(settings).dismiss_reasons
    except RulesError as exc:
        codes = None
        console.print(
            f"[yellow]note:[/yellow] dismissal reason codes are not checked: {exc}",
            highlight=False,
        )
    with _steps(len(frame)) as progress:
        task = progress.add_task("storing events", total=len(frame))
        done = ingest_events(
            settings,
            frame,
            model=model,
            progress=lambda n: progress.advance(task, n),
            dismiss_reasons=codes,
        )
    # The outcome (what was stored, which rows were rejected) on stdout, notes on stderr.
    stdout.print(
        f"stored {done.accepted:,} of {done.rows:,} events in "
        f"{without_password(settings.resolved_database_url)}; {done.duplicates:,} already stored; "
        f"{len(done.rejected):,} rejected",
        highlight=False,
    )
    for row, event_id, why in done.rejected[:10]:
        stdout.print(f"  row {row} (event_id '{event_id}'): {why}", highlight=False)
    if len(done.rejected) > 10:
        stdout.print(f"  ... and {len(done.rejected) - 10:,} more", highlight=False)
    import pandas as pd

    timed = frame["occurred_at"] if "occurred_at" in frame.columns else None
    undated = (
        pd.Series(True, index=frame.index)
        if timed is None
        else timed.isna() | (timed.astype(str).str.strip() == "")
    )
    undated.iloc[[row - 1 for row, _, _ in done.rejected]] = False  # only rows kept count
    untimed = int(undated.sum())
    if untimed:
        console.print(
            f"[yellow]note:[/yellow] {untimed:,} row{'s' if untimed != 1 else ''} not "
            "rejected had no occurred_at: stored with the time of the run that first stored "
            "them (UTC), which caps, cool-downs and the uplift report then use; send when "
            "each event happened"
        )
    if done.uncounted:
        one = len(done.uncounted) == 1
        console.print(
            f"[yellow]note:[/yellow] {len(done.uncounted):,} stored "
            f"event{'' if one else 's'} {'was' if one else 'were'} not taken as sent (a "
            "contact that binds no channel's cap or reached a held-out HCP, a consent event "
            "read otherwise or for an HCP the model does not know yet, a dismissal or snooze "
            "naming no action it holds back, a value on an event other than an outcome):",
        )
        for row, event_id, why in done.uncounted[:5]:
            console.print(f"  row {row} (event_id '{event_id}'): {why}", highlight=False)
    if rejected is not None:
        # Written even when empty: a job that sends what the last run rejected must
        # not find the rows of an earlier run there.
        numbers = [row for row, _, _ in done.rejected]
        bad = frame.iloc[[n - 1 for n in numbers]].copy()
        bad.insert(0, "row", numbers)
        bad["rejected_because"] = [why for _, _, why in done.rejected]
        try:
            write_table(bad, rejected)
        except OSError as exc:
            raise _fail(f"--rejected: {exc}") from None
        stdout.print(
            f"wrote {len(numbers):,} rejected row{'' if len(numbers) == 1 else 's'} to {rejected}",
            highlight=False,
        )
    if done.rejected:
        raise typer.Exit(code=1)


def _on_a_terminal() -> bool:
    """Whether someone can answer a question here (stdin is a terminal)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _confirmed(question: str) -> bool:
    """The answer to ``question`` on the terminal. No answer (the input ended, Ctrl-C
    or Ctrl-D at the prompt) is a no: the prompt's abort exited 1, which ``erase``
    uses for "erased, but the versions that hold the HCPs are not all known"."""
    try:
        return typer.confirm(question, err=True)
    except typer.Abort:
        console.print()  # the prompt's line ends before the error is said
        return False


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@app.command()
def erase(
    hcp_ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="HCP ids to erase, exactly as the hcps file spells them.", show_default=False
        ),
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            metavar="FILE",  # one file per --file: not Typer's `<list[Path]>`
            help="CSV or Parquet with an hcp_id column: more ids to erase (other columns "
            "are ignored); give it once per file.",
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Erase without asking (required where no one can answer: a job)."
        ),
    ] = False,
) -> None:
    """Erase HCPs (right to erasure): delete every row naming them, keep one suppression.

    In one transaction: their logged recommendations and items and every feedback
    event about them or their recommendations are deleted, and each HCP gets one
    opted_out event of every channel (the only row kept: their id, the time, who
    erased), so serving stops contacting them at once. Then it names the model
    versions that still hold their attributes. Rerun safely: what was logged since
    goes, the suppression stays as it was. Exit code 2 when nothing was erased (no
    id, a bad file, no --yes off a terminal, not confirmed); 1 when erased but the
    model registry, or one registered version's artifacts, could not be read (the
    versions that may still hold the HCPs are not all known).
    """
    from nextbest.contract import ContractError
    from nextbest.registry import registry_exists
    from nextbest.service.erasure import (
        ErasureError,
        check_ids,
        read_ids,
        rows_naming,
        versions_holding,
    )
    from nextbest.service.erasure import erase as run_erase

    settings = _settings()
    given = list(hcp_ids or [])
    for file in files or []:
        try:
            given += read_ids(file)
        except ContractError as exc:
            raise _fail(f"--file {file}: {exc}") from None
    try:
        ids = check_ids(given)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    registry_exists(settings)  # an MLflow store that cannot be read stops here, before any work
    store = without_password(settings.resolved_database_url)
    rows, erased, named = rows_naming(settings, ids)
    stdout.print(
        f"{_plural(len(ids), 'HCP')} to erase; rows naming them in {store}:", highlight=False
    )
    for table, n in (
        ("recommendations", rows.recommendations),
        ("recommendation_items", rows.recommendation_items),
        ("feedback_events", rows.feedback_events),
    ):
        stdout.print(f"  {table:<22}{n:>10,}", highlight=False)
    for hcp_id, when in list(erased.items())[:10]:
        stdout.print(
            f"  '{hcp_id}' was erased on {when:%Y-%m-%d %H:%M} UTC: its suppression is kept",
            highlight=False,
        )
    if len(erased) > 10:
        stdout.print(f"  ... and {len(erased) - 10:,} more erased before", highlight=False)
    if rows.total == 0 and len(erased) == len(ids):
        stdout.print(
            "nothing to delete: every one of these HCPs is erased already and has its "
            "suppression (opted_out, every channel)",
            highlight=False,
        )
    else:
        if not yes:
            if not _on_a_terminal():
                raise _fail("not on a terminal: pass --yes to erase (nothing was erased)")
            if not _confirmed(
                "Delete these rows and keep one opt-out of every channel per HCP? This "
                "cannot be undone"
            ):
                raise _fail("not confirmed: nothing was erased")
        try:
            done, cleanup = run_erase(settings, ids)
        except ErasureError as exc:
            raise _fail(f"nothing was erased: {exc}") from None
        deleted = done.deleted
        stdout.print(
            f"erased {_plural(len(ids), 'HCP')} in {store}: deleted "
            f"{_plural(deleted.recommendations, 'recommendation')}, "
            f"{_plural(deleted.recommendation_items, 'recommendation item')} and "
            f"{_plural(deleted.feedback_events, 'feedback event')}; stored "
            f"{_plural(len(done.suppressed), 'suppression')} (opted_out, every channel)"
            + (
                f", {len(done.already_suppressed):,} kept from before"
                if done.already_suppressed
                else ""
            ),
            highlight=False,
        )
        _print_cleanup(
            cleanup,
            store,
            rerun="; run `nextbest erase` with the same ids again when the servers are idle "
            "or stopped",
        )
    try:
        holding = versions_holding(settings, ids)
    except Exception as exc:  # erased all the same: say what is left to check
        console.print(
            f"[red]error:[/red] the model registry "
            f"{without_password(settings.resolved_registry_uri)} could not be read "
            f"({type(exc).__name__}: {exc}): check every version of model "
            f"'{settings.model_name}' for these HCPs yourself",
            highlight=False,
        )
        _erasure_reminder()
        raise typer.Exit(code=1) from None
    _print_versions_holding(settings, holding, len(ids))
    held = {h for v in holding for h in v.hcp_ids}
    unchecked = [v for v in holding if v.unreadable]
    never = [h for h in ids if h not in named and h not in erased and h not in held]
    if never:
        shown = ", ".join(f"'{h}'" for h in never[:10]) + (" ..." if len(never) > 10 else "")
        where = (
            "in no registered version that could be read"
            if unchecked
            else "in no registered version"
        )
        _note(
            f"{_plural(len(never), 'id')} nextbest never saw (no "
            f"logged answer or feedback, {where}): {shown}; check them "
            "for typos (a suppression was stored for each all the same)"
        )
    _erasure_reminder()
    if unchecked:
        # Erased all the same; a GDPR job must still see that the versions are not all known.
        shown = ", ".join(f"v{v.version}" for v in unchecked)
        console.print(
            f"[red]error:[/red] {_plural(len(unchecked), 'registered version')} of model "
            f"'{settings.model_name}' could not be checked for these HCPs ({shown}: "
            "artifacts not readable, see above) and may still hold them: restore "
            "the artifacts and run `nextbest erase` with the same ids again (nothing is "
            "erased twice), or delete those versions with MLflow's client as said above",
            highlight=False,
        )
        raise typer.Exit(code=1)


def _print_versions_holding(settings: Settings, holding: list[Any], n_ids: int) -> None:
    """Which registered versions still keep the erased HCPs' attributes, and what to do."""
    if not holding:
        stdout.print(
            f"no registered version of model '{settings.model_name}' holds these HCPs",
            highlight=False,
        )
        return
    stdout.print(
        f"registered versions of model '{settings.model_name}' that still hold these HCPs' "
        "attributes and history features:",
        highlight=False,
    )
    for v in holding:
        aliases = f" ({', '.join(v.aliases)})" if v.aliases else ""
        held = (
            f"could not be read, check it: {v.unreadable}"
            if v.unreadable
            else f"{len(v.hcp_ids):,} of {n_ids:,} HCPs"
        )
        run = f" (run {v.run_id})" if v.run_id else ""
        stdout.print(f"  v{v.version}{aliases}{run}: {held}", highlight=False)
    stdout.print(
        "retrain without these HCPs in the hcps and interactions files (`nextbest train` or "
        "`retrain`, `evaluate`, `promote`, then a reload of the servers), then delete these "
        "versions, their runs and logged models: MLflow's MlflowClient().delete_model_version"
        f"('{settings.model_name}', version), delete_run(run_id), delete_logged_model(model_id), "
        "then `mlflow gc` (docs/operations.md, 'Erasure and retention')",
        highlight=False,
    )


def _erasure_reminder() -> None:
    stdout.print(
        "remove these HCPs from your own files too (hcps, interactions, send lists, "
        "feedback exports): nextbest does not own them, and a model trained on an hcps "
        "file that still lists them holds them again",
        highlight=False,
    )


@app.command()
def prune(
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help="Delete what is older than this date (YYYY-MM-DD: 00:00 UTC) or time (ISO "
            "8601; without an offset, UTC).",
            show_default=False,
        ),
    ] = None,
    older_than: Annotated[
        int | None,
        typer.Option(
            "--older-than",
            min=1,
            max=36_500,
            help="Delete what is older than this many days (e.g. 730), counted from now.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Delete without asking (required where no one can answer: cron)."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
) -> None:
    """Delete the recommendation log and feedback older than a retention period.

    Deleted: the recommendations made before the cutoff with their items and
    feedback, and the feedback events about no recommendation that occurred
    before it. Kept: consent events (opted_out, opted_in) and erasure
    suppressions, which decide whether an HCP may be contacted at all, and the
    recommendations an opt-out or an event from the cutoff on names. A cutoff in the
    future or inside the history the serving rules read (caps, cool-downs,
    dismissals: NEXTBEST_RULES_FILE) is refused. Deletes in batches, each its
    own transaction, so a running server is not held up. Exit code 2 when
    nothing was deleted (a bad or refused cutoff, no --yes off a terminal, not
    confirmed), and when it stopped part way (a database error, feedback that kept
    arriving about the answers being pruned): the batches before stay deleted, the
    run is recorded as interrupted (if the database can still be written), and
    running it again finishes the work.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from nextbest.service.erasure import (
        CutoffError,
        PruneStoppedError,
        RunNotRecordedError,
        check_cutoff,
        record_nothing_pruned,
        rows_before,
    )
    from nextbest.service.erasure import prune as run_prune
    from nextbest.storage.db import describe_database_error
    from nextbest.storage.repository import RowCounts

    settings = _settings()
    if (before is None) == (older_than is None):
        raise _fail("give the cutoff as --before DATE or --older-than DAYS (exactly one)")
    now = datetime.now(UTC).replace(microsecond=0)
    if before is not None:
        when = cast(datetime, _parse_date(before, "--before"))
        cutoff = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        given = f"--before {before}"
    else:
        cutoff = now - timedelta(days=cast(int, older_than))
        given = f"--older-than {older_than}"
    shown = f"{cutoff:%Y-%m-%d %H:%M:%S} UTC"
    rules = _check_rules_file(settings)
    try:
        check_cutoff(cutoff, rules, now=now)
    except CutoffError as exc:
        latest = ""
        if exc.latest is not None and exc.days is not None:
            latest = (
                f"; the latest cutoff allowed is {exc.latest:%Y-%m-%d %H:%M:%S} UTC "
                f"(--older-than {math.ceil(exc.days)} or more)"
            )
        raise _fail(f"{given} ({shown}) {exc}{latest}; nothing was deleted") from None
    store = without_password(settings.resolved_database_url)
    rows, kept = rows_before(settings, cutoff)
    stdout.print(f"rows from before {shown} in {store}:", highlight=False)
    for table, n in (
        ("recommendations", rows.recommendations),
        ("recommendation_items", rows.recommendation_items),
        ("feedback_events", rows.feedback_events),
    ):
        stdout.print(f"  {table:<22}{n:>10,}", highlight=False)
    stdout.print(
        f"kept: {_plural(kept.consent_events, 'consent event')} (opted_out, opted_in) from "
        f"before then, {kept.suppressions:,} of them erasure suppressions: they decide whether "
        "an HCP may be contacted at all and are the record of consent; consent events are "
        "never pruned",
        highlight=False,
    )
    if kept.recommendations:
        stdout.print(
            f"kept: {_plural(kept.recommendations, 'recommendation')} an opt-out names (the "
            "send an HCP unsubscribed from) or with feedback from then on (a delivery or a "
            "dismissal the serving rules still count), with their items and feedback",
            highlight=False,
        )
    # What maintenance_runs records the run was given (a dry run records nothing).
    arguments = given + (" --yes" if yes else "")
    if rows.total == 0:
        if not dry_run:
            record_nothing_pruned(settings, cutoff, arguments=arguments)
        stdout.print(
            f"nothing to delete from before {shown}"
            + (
                ""
                if dry_run
                else " (recorded in maintenance_runs: `nextbest lookup --maintenance`)"
            ),
            highlight=False,
        )
        return
    stdout.print(
        "once deleted, the uplift report, the gate (evaluate, promote) and retrain no longer "
        "see these answers and their feedback",
        highlight=False,
    )
    if dry_run:
        stdout.print("dry run: nothing was deleted", highlight=False)
        return
    if not yes:
        if not _on_a_terminal():
            raise _fail("not on a terminal: pass --yes to prune (nothing was deleted)")
        if not _confirmed("Delete these rows? This cannot be undone"):
            raise _fail("not confirmed: nothing was deleted")
    done = RowCounts()
    with _steps(1) as progress:
        task = progress.add_task("pruning rows", total=rows.total)

        def advance(batch: RowCounts) -> None:
            nonlocal done
            done += batch
            # Rows deleted meanwhile (an erasure) or logged late count too: never past 100%.
            progress.update(task, completed=done.total, total=max(rows.total, done.total))

        try:
            deleted, cleanup = run_prune(settings, cutoff, arguments=arguments, progress=advance)
        except PruneStoppedError as exc:
            recorded = (
                f"recorded as interrupted in maintenance_runs (run {exc.run_id})"
                if exc.recorded
                else f"its run {exc.run_id} in maintenance_runs could not be marked "
                "interrupted and says 'running', with the rows deleted"
            )
            if isinstance(exc.__cause__, SQLAlchemyError):
                raise _fail(
                    "prune stopped by a database error after deleting "
                    f"{_plural(exc.deleted.total, 'row')} (those batches are committed; "
                    f"{recorded}): {describe_database_error(exc.__cause__)}; run it again "
                    "once the database answers"
                ) from None
            raise _fail(f"{exc} ({recorded})") from None
        except RunNotRecordedError as exc:
            raise _fail(
                f"{exc} (the role nextbest connects as needs SELECT, INSERT and UPDATE on "
                "maintenance_runs: docs/database.md, 'A read-only role for BI')"
            ) from None
    stdout.print(
        f"pruned {store} of what is older than {shown}: deleted "
        f"{_plural(deleted.recommendations, 'recommendation')}, "
        f"{_plural(deleted.recommendation_items, 'recommendation item')} and "
        f"{_plural(deleted.feedback_events, 'feedback event')}; consent events and erasure "
        "suppressions kept; recorded in maintenance_runs (`nextbest lookup --maintenance`)",
        highlight=False,
    )
    _print_cleanup(cleanup, store)


@app.command()
def retrain(
    context: typer.Context,
    data: DataOpt,
    since: SinceOpt = None,
    config: TrainConfigOpt = None,
    alias: Annotated[str, typer.Option(help="Alias for the new version.")] = "challenger",
    gate_config: Annotated[
        Path | None,
        typer.Option(
            "--gate",
            help="Gate config whose evaluation_share is left out of training (default: "
            "training/gate.yaml if there is one here, else the built-in defaults); evaluate "
            "and promote must use the same share.",
        ),
    ] = None,
    dask: DaskOpt = None,
    allow_history_only: Annotated[
        bool,
        typer.Option(
            "--allow-history-only",
            help="Register a version even when the recommendation log holds no decision "
            "with an outcome (since --since) to learn from: a model of the history alone "
            "(refused without this, exit code 2).",
        ),
    ] = False,
) -> str:
    """Train on history + logged recommendations with their feedback; register a challenger.

    The share of logged decisions the gate evaluates on (`evaluation_share` in
    training/gate.yaml) is never trained on.
    """
    from nextbest import registry
    from nextbest.contract import ContractError
    from nextbest.contract.notes import data_notes
    from nextbest.loop.retrain import retrain as run_retrain

    settings = _settings()
    _alias_given_by_training(settings, alias)
    train_config = _train_config(config)
    gate = _gate_config(gate_config)
    start = _parse_date(since, "--since")
    if start is not None and start.replace(tzinfo=start.tzinfo or UTC) > datetime.now(UTC):
        raise _fail(
            f"--since {since} is in the future: no logged decision is that new, and the "
            f"'{alias}' alias would go to a model of the history alone; leave it out to "
            "use all the feedback"
        )

    def load() -> Any:
        _models_dir_usable(settings)  # once the options are checked: a typo creates nothing
        return _load(data)

    # The logged decisions and their feedback are read first, then training's steps.
    stages = ["feedback", "features", "models", "snapshot", "evaluation", "register"]
    with (
        _cluster(dask, load, given_as=_dask_given_as(context)) as (dataset, client),
        _steps(len(stages)) as progress,
    ):
        step, steps_done = _stage_steps(progress, "feedback", len(stages))

        try:
            # A scheduler's SIGTERM stops it as Ctrl-C does: a training run caught
            # logging ends KILLED, saying so, not RUNNING.
            with _interruptible_as_ctrl_c():
                outcome = run_retrain(
                    settings,
                    dataset=dataset,
                    config=train_config,
                    since=start,
                    alias=alias,
                    reserved_share=gate.evaluation_share,
                    progress=step,
                    client=client,
                    data_notes=data_notes(dataset),
                    allow_history_only=allow_history_only,
                )
        except (ValueError, ContractError) as exc:
            raise _fail(str(exc)) from None
        steps_done()
    for note in outcome.result.notes:
        if note not in outcome.warnings:  # printed last, where they are read
            _note(note)
    given = "" if outcome.not_champion else f" as '{alias}'"
    console.print(
        f"registered {settings.model_name} version {outcome.version}{given} (run {outcome.run_id})"
    )
    _note_repeat(settings, outcome.version)
    registered = registry.describe_version(settings, outcome.version)
    _note_serve_alias(settings, outcome.version, registered.aliases)
    for warning in outcome.warnings:
        console.print(f"[bold red]{warning}[/bold red]", highlight=False)
    _say_not_champion(outcome.not_champion)
    return outcome.version


def _note_serve_alias(settings: Settings, version: str, aliases: tuple[str, ...]) -> None:
    """Say, of a version just registered, which alias the server reads when that is
    another (NEXTBEST_SERVE_ALIAS): promote and rollback move ``champion`` only, and
    training gives the served alias to a model's first version only."""
    from nextbest import registry

    served_as = settings.serve_alias
    if served_as == registry.CHAMPION_ALIAS:
        return
    served = version if served_as in aliases else registry.alias_version(settings, served_as)
    if served is None:
        _note(
            f"the server reads alias '{served_as}' (NEXTBEST_SERVE_ALIAS), which names no "
            f"version: version {version} is not served. Training gives that alias to a "
            "model's first version only; a later one is served once `nextbest promote` "
            f"makes it champion and '{served_as}' is moved to it in the registry"
        )
        return
    if registry.CHAMPION_ALIAS not in aliases:
        return
    _note(
        f"version {version} is the champion, and the server reads alias '{served_as}' "
        f"(NEXTBEST_SERVE_ALIAS), which names version {served}"
        + (", given it too so that it is served" if served == version else "")
        + f": `nextbest promote` and `rollback` move '{registry.CHAMPION_ALIAS}' only, so "
        f"a server reading '{served_as}' keeps version {served} until that alias is moved "
        f"in the registry (or it reads '{registry.CHAMPION_ALIAS}', the default)"
    )


def _say_finished(finished: Any) -> None:
    """Say what was written of a decision killed after the champion moved (a
    :class:`~nextbest.registry.UnfinishedDecision`, its ``unwritten`` now written)."""
    if finished is None:
        return
    end = finished.end
    console.print(
        f"[yellow]finished:[/yellow] the {end.named} (replacing {end.replaces or 'none'}; "
        f"MLflow run {end.run_id}) had moved the champion and stopped before it finished: "
        + ("; ".join(finished.unwritten) or "nothing but its mark was left")
        + (" (written now)" if finished.unwritten else " (taken off)"),
        highlight=False,
    )


def _note_repeat(settings: Settings, version: str) -> None:
    """Say when ``version`` repeats an older one (same data, parameters and code)."""
    from nextbest import registry

    same = registry.same_training(settings, version)
    if same:
        listed = ", ".join(same)
        console.print(
            f"[yellow]note:[/yellow] version {version} was trained on the same data with the "
            f"same parameters and code as version{'s' if len(same) > 1 else ''} {listed} (a "
            "job run twice?): the same model, registered again",
            highlight=False,
        )


def _judged(settings: Settings, version: int | None) -> str | None:
    """The version evaluate and promote judge as the challenger, named, when it is
    not the one alias 'challenger' names (``version``: --version's); None when it is
    that one ("challenger" then says which)."""
    from nextbest.loop.gate import CHALLENGER, judged_as

    judged = judged_as(settings, None if version is None else str(version))
    return None if judged == CHALLENGER else judged


def _judging(judged: str | None) -> str:
    """What evaluate and promote say while the gate works (``judged``: :func:`_judged`)."""
    if judged:
        return f"evaluating {judged} against the champion"
    return "evaluating challenger vs champion"


def _print_evaluation(evaluation: Any) -> None:
    """``evaluation``'s table and verdict: the challenger named as the gate's reasons
    name it (``evaluation.judged``: "challenger", or "version 3" for one --version
    named that the alias does not)."""
    decision = evaluation.decision
    if not decision.n_decisions:  # forced without evidence: the reasons say so
        for reason in decision.reasons:
            console.print(f"- {reason}")
        return
    judged = evaluation.judged
    versus = f"challenger v{evaluation.challenger_version}" if judged == "challenger" else judged
    table = Table(
        title=f"champion v{evaluation.champion_version} vs {versus} on "
        f"{decision.n_decisions:,} logged decisions reserved for the gate"
    )
    for column in ("estimator", "champion", judged, f"{judged} ESS"):
        table.add_column(column, justify="right")
    for name in ("ips", "snips", "dr"):
        c, ch = decision.champion.get(name), decision.challenger.get(name)
        if c is None or ch is None:
            continue
        table.add_row(
            name,
            f"{c['value']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}]",
            f"{ch['value']:.4f} [{ch['ci_low']:.4f}, {ch['ci_high']:.4f}]",
            f"{ch['effective_n']:,.0f}",
        )
    console.print(table)
    for reason in decision.reasons:
        console.print(f"- {reason}")
    verdict = "[green]passed[/green]" if decision.passed else "[red]not passed[/red]"
    console.print(f"gate ({decision.estimator}): {verdict}  evaluation run: {evaluation.run_id}")


@app.command()
def evaluate(
    since: SinceOpt = None,
    config: GateConfigOpt = None,
    version: ChallengerVersionOpt = None,
    runs_deleted: RunsDeletedOpt = False,
) -> bool:
    """Estimate challenger and champion off-policy (IPS, SNIPS, DR) and apply the gate.

    Moves no alias: the verdict is recorded (an MLflow run, the challenger's gate
    tag), exit code 0 whether the gate passes or not (read the verdict printed
    last); `nextbest promote` acts on it and exits 1 when it does not pass. 2 when
    it cannot be evaluated (no challenger, no logged outcomes yet, a gate config
    whose evaluation_share exceeds the one retrain left out, a version retrained
    with evaluation_share 0, a champion that cannot be loaded) or recorded (a
    tracking store without the versions' training runs, a decision that moved the
    champion meanwhile or held the decision lock past NEXTBEST_DECISION_WAIT_S)."""
    from nextbest import registry
    from nextbest.loop.gate import GateError, check_tracking_store
    from nextbest.loop.gate import evaluate as run_evaluate

    gate = _gate_config(config, said=False)
    settings = _settings()
    named = None if version is None else str(version)
    try:
        # Before any line of a gate that would not run.
        check_tracking_store(settings, "evaluation", version=named, runs_deleted=runs_deleted)
    except (GateError, registry.RegistryError) as exc:
        raise _fail(str(exc)) from None
    if version is None:
        _note_challenger_unset(settings)
    judged = _judged(settings, version)
    _say_gate_config(gate, config)
    try:
        with _working(_judging(judged)):
            evaluation = run_evaluate(
                settings,
                config=gate,
                since=_parse_date(since, "--since"),
                version=named,
                runs_deleted=runs_deleted,
            )
    except GateError as exc:
        raise _fail(str(exc)) from None
    _print_evaluation(evaluation)
    return bool(evaluation.decision.passed)


def _note_challenger_unset(settings: Settings) -> None:
    """Say, before the challenger is judged, that a newer version was registered in
    full as challenger by a training run stopped before it set the alias: the gate
    would judge an older challenger, or find none."""
    from nextbest import registry

    if not registry.registry_exists(settings):
        return
    try:
        versions = registry.list_versions(settings)
    except registry.RegistryError:
        return  # the command itself says what is wrong with the registry
    for v in versions:
        if v.alias_unset == "challenger":
            held = next((w.version for w in versions if "challenger" in w.aliases), None)
            _note(
                f"version {v.version} was registered in full as challenger by a training run "
                "stopped before it set the alias, so the challenger here is "
                + (f"version {held}" if held else "none")
                + f": `nextbest models --repair` makes version {v.version} the challenger"
            )


@app.command()
def promote(
    since: SinceOpt = None,
    config: GateConfigOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Promote even if the gate does not pass, or cannot be evaluated for want "
            "of logged outcomes or because the champion cannot be loaded (logged as "
            "forced, without evidence); needs --reason.",
        ),
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why, for the record (a tag of the decision's MLflow run, shown by "
            "`nextbest models --history`); required with --force."
        ),
    ] = None,
    version: ChallengerVersionOpt = None,
    runs_deleted: RunsDeletedOpt = False,
) -> bool:
    """Promote the challenger to champion when the gate passes (exit code 1 when not).

    Run again after a promotion (a retried job), it says the champion is already the
    newest version, promoted, and exits 0. With --version N, version N is the
    challenger: a version rolled back (or any earlier one) promoted again, by the
    same gate.
    """
    from nextbest import registry
    from nextbest.loop.gate import GateError, already_promoted, check_tracking_store
    from nextbest.loop.gate import promote as run_promote

    if force and not (reason or "").strip():
        raise _fail(
            "--force needs --reason TEXT: a forced promotion skips the gate, and its "
            "record must say why; nothing was promoted"
        )
    gate = _gate_config(config, said=False)  # said once the gate runs, below
    settings = _settings()
    # Before a decision killed earlier is finished below: nothing written on refusal.
    try:
        check_tracking_store(
            settings,
            "promotion",
            version=None if version is None else str(version),
            runs_deleted=runs_deleted,
        )
    except (GateError, registry.RegistryError) as exc:
        raise _fail(str(exc)) from None
    with contextlib.ExitStack() as alone:
        # One decision at a time, from these checks on: a promotion that waited for
        # another one to end reads the registry it left ("nothing to promote" below
        # when that one promoted the same challenger).
        try:
            alone.enter_context(registry.deciding_alone(settings, "promotion"))
            # A promotion killed after the champion moved, run again (a retried job):
            # finished, then "nothing to promote" below. One another process is at work
            # on: refused.
            _say_finished(registry.finish_unfinished(settings))
        except registry.RegistryError as exc:
            raise _fail(str(exc)) from None
        done = (
            already_promoted(settings)
            if version is None and registry.registry_exists(settings)
            else None
        )
        if done is not None:
            console.print(
                f"nothing to promote: version {done[0]}, the newest, is champion already "
                f"(promoted {done[1]}); train a new challenger with `nextbest retrain`",
                highlight=False,
            )
            return True
        if version is None:
            _note_challenger_unset(settings)
        judged = _judged(settings, version)
        _say_gate_config(gate, config)
        try:
            # A scheduler's SIGTERM stops it as Ctrl-C does, so a decision run caught
            # moving the champion ends KILLED, saying whether it moved, not RUNNING.
            with _interruptible_as_ctrl_c(), _working(_judging(judged)):
                evaluation = run_promote(
                    settings,
                    config=gate,
                    since=_parse_date(since, "--since"),
                    force=force,
                    reason=reason,
                    version=None if version is None else str(version),
                    runs_deleted=runs_deleted,
                )
        except GateError as exc:
            raise _fail(str(exc)) from None
    _say_finished(evaluation.finished)
    _print_evaluation(evaluation)
    if not evaluation.promoted:
        console.print(f"champion stays version {evaluation.champion_version}")
        raise typer.Exit(code=1)
    console.print(
        f"[green]promoted[/green] version {evaluation.challenger_version} to champion "
        f"(previous champion: {evaluation.champion_version}); servers pick it up on "
        "their next reload"
    )
    return True


@app.command()
def rollback(
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why, for the record (a tag of the rollback's MLflow run in the evaluation "
            "experiment, shown by `nextbest models --history`)."
        ),
    ] = None,
    runs_deleted: RunsDeletedOpt = False,
) -> str:
    """Make the previous champion the champion again.

    Run again after a rollback killed once the champion moved (a retried job), it
    finishes that rollback and goes no further back."""
    from nextbest.loop.gate import GateError
    from nextbest.loop.gate import rollback as run_rollback

    try:
        with _interruptible_as_ctrl_c():  # see promote
            done = run_rollback(_settings(), reason=reason, runs_deleted=runs_deleted)
    except GateError as exc:
        raise _fail(str(exc)) from None
    _say_finished(done.finished)
    if done.finished is not None and done.finished.end.kind == "rollback":
        console.print(
            f"champion is version {done.to_version} (was {done.from_version}), by that "
            "rollback; not rolled back further: run `nextbest rollback` again to return to "
            "the champion before it",
            highlight=False,
        )
        return done.to_version
    for version, why in done.skipped:
        _note(f"version {version}, an earlier champion, was passed over: {why}")
    for said in done.notes:
        _note(said)
    console.print(
        f"champion is version {done.to_version} again (was {done.from_version}); "
        f"servers pick it up on their next reload (recorded: MLflow run {done.run_id})",
        highlight=False,
    )
    return done.to_version


@app.command()
def lookup(
    recommendation_id: Annotated[
        str | None,
        typer.Argument(
            help="A recommendation_id, as an answer or a feedback event has it.",
            show_default=False,
        ),
    ] = None,
    hcp: Annotated[
        str | None,
        typer.Option(
            "--hcp",
            help="Instead: an HCP's newest answers and feedback events (a ticket about "
            "an HCP, not an answer).",
        ),
    ] = None,
    maintenance: Annotated[
        bool,
        typer.Option(
            "--maintenance",
            help="Instead: the prunes and erasures run on the store, newest first: who, "
            "when, the cutoff, the rows deleted, and whether each finished.",
        ),
    ] = False,
    rules: Annotated[
        str | None,
        typer.Option(
            "--rules",
            help="Instead: the serving rules file an answer names by its fingerprint "
            "(`rules 1f0c2a9b7d41`), as the workers that read it stored it.",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1, max=1000, help="With --hcp: at most this many of each; --maintenance: runs."
        ),
    ] = 20,
    with_models: Annotated[
        bool,
        typer.Option(
            "--models",
            help="With --hcp: also the registered model versions whose served snapshot "
            "holds the HCP's attributes and history features (an access request; each "
            "version is loaded, seconds apiece).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the record as JSON instead of text.")
    ] = False,
) -> dict[str, Any]:
    """Look up a logged answer, an HCP's answers, the maintenance trail or a rules file.

    One logged answer as the recommendation log keeps it: who asked, for whom, the
    model version and policy, the fingerprint of the serving rules it was made under,
    each item with the propensity and the reasons it was served with, and the
    feedback events that name it (an audit, a support question: what was served, to
    whom, by which version, and why it said so). With --hcp, an HCP's answers and
    events, and whether older ones were pruned; with --maintenance, the trail of
    prunes and erasures; with --rules, the text of the serving rules a fingerprint
    names."""
    import json
    from dataclasses import asdict

    from sqlalchemy.engine import make_url

    from nextbest.storage.db import _sqlite_file, store_session
    from nextbest.storage.repository import (
        erased_already,
        feedback_for,
        furthest_prune,
        get_recommendation,
        hcp_of_event,
        hcp_row_counts,
        maintenance_runs,
        recommendations_of_hcp,
        rows_derived_from,
        stored_rules,
    )

    asked = (recommendation_id is not None) + (hcp is not None) + maintenance + (rules is not None)
    if asked != 1:
        raise _fail(
            "name a RECOMMENDATION_ID, --hcp HCP_ID, --maintenance or --rules FINGERPRINT "
            "(one of them)"
        )
    if with_models and hcp is None:
        raise _fail("--models goes with --hcp HCP_ID: the versions that hold that HCP")
    settings = _settings()
    url = settings.resolved_database_url
    try:
        sqlite_file = _sqlite_file(make_url(url)) if url.startswith("sqlite") else None
    except Exception:  # an unparsable URL: the store's own error says it below
        sqlite_file = None
    no_log = sqlite_file is not None and not sqlite_file.exists()  # not made by a lookup
    if no_log and not with_models:
        raise _fail(
            f"no recommendation log at {sqlite_file} (NEXTBEST_DATABASE_URL): nothing has "
            "been served with these settings"
        )
    if maintenance:
        with store_session(url) as session:
            runs, total = maintenance_runs(session, limit=limit)
        return _print_runs(runs, total, without_password(url), as_json=as_json)
    if rules is not None:
        with store_session(url) as session:
            kept = stored_rules(session, rules)
        if kept is None:
            raise _fail(
                f"no serving rules with fingerprint '{rules}' in {without_password(url)}: "
                "answers logged before schema revision 0009 name rules whose text was not "
                "kept, and rules given by a program rather than a file are never kept"
            )
        found_rules = asdict(kept)
        if as_json:
            typer.echo(json.dumps(found_rules, indent=1, default=_iso))
        else:
            stdout.print(
                f"# serving rules {kept.fingerprint} (sha256 {kept.sha256}), read from "
                f"{kept.source}, first stored {_iso(kept.first_stored_at)}",
                highlight=False,
            )
            typer.echo(kept.content, nl=not kept.content.endswith("\n"))
        return found_rules
    if hcp is not None:
        # Before anything was served, an access request still finds the models.
        answers, about, erased, totals, pruned = [], [], None, (0, 0), None
        if not no_log:
            with store_session(url) as session:
                answers = recommendations_of_hcp(session, hcp_id=hcp, limit=limit)
                about = feedback_for(session, hcp_id=hcp, limit=limit)
                erased = erased_already(session, hcp_ids=[hcp]).get(hcp)
                totals = hcp_row_counts(session, hcp_id=hcp)
                pruned = furthest_prune(session)
        about, read_against = _channels_read(settings, about)
        holding = None
        if with_models:
            from nextbest.registry import versions_holding

            with _working("reading each registered version"):
                holding = versions_holding(settings, [hcp])
        return _print_hcp_log(
            hcp,
            answers,
            about,
            erased,
            pruned,
            totals=totals,
            limit=limit,
            as_json=as_json,
            holding=holding,
            model_name=settings.model_name,
            read_against=read_against,
        )
    assert recommendation_id is not None
    with store_session(url) as session:
        record = get_recommendation(session, recommendation_id=recommendation_id)
        events = feedback_for(session, recommendation_id=recommendation_id) if record else []
        rules_kept = (
            record is not None
            and record.rules_fingerprint is not None
            and stored_rules(session, record.rules_fingerprint) is not None
        )
        is_hcp = record is None and bool(
            recommendations_of_hcp(session, hcp_id=recommendation_id, limit=1)
            or feedback_for(session, hcp_id=recommendation_id, limit=1)
        )
        event_of = (
            hcp_of_event(session, event_id=recommendation_id)
            if record is None and not is_hcp
            else None
        )
        derived = (
            rows_derived_from(session, event_id=recommendation_id, hcp_id=event_of)
            if event_of is not None
            else []
        )
    if record is None:
        if is_hcp:
            hint = (
                f"; '{recommendation_id}' is an HCP id: `nextbest lookup --hcp "
                f"{recommendation_id}` lists its answers and feedback"
            )
        elif event_of is not None:
            # Only an opt-out of several channels was kept in more rows than its own.
            kept_in = (
                f" (and the {_plural(len(derived), 'row')} an opt-out of several channels "
                f"was kept in, each 'from event {recommendation_id}')"
                if derived
                else ""
            )
            hint = (
                f"; '{recommendation_id}' is the event_id of a feedback event about HCP "
                f"{event_of}: `nextbest lookup --hcp {event_of}` lists it{kept_in}"
            )
        else:
            hint = (
                " (an answer erased or pruned is not there either, nor one served in the "
                "last milliseconds before a server was killed: NEXTBEST_LOG_FLUSH_MS)"
            )
        raise _fail(
            f"no recommendation '{recommendation_id}' in the recommendation log "
            f"{without_password(url)} (NEXTBEST_DATABASE_URL){hint}"
        )
    events, read_against = _channels_read(settings, events)
    found = {**asdict(record), "feedback": events, "channels_read_against": read_against}
    if as_json:
        typer.echo(json.dumps(found, indent=1, default=_iso))
        return found
    when = f"served {_iso(record.created_at)}"
    # Every answer is decided for a moment: said when a request named another one
    # (a planned send), not the request's own time a few microseconds earlier.
    if (
        record.decided_for is not None
        and abs((record.created_at - record.decided_for).total_seconds()) > 1
    ):
        when += f" for {_iso(record.decided_for)}"
    stdout.print(f"recommendation {record.recommendation_id}: {when}", highlight=False)
    plan = f", rep plan of {record.rep_id}" if record.rep_id else ""
    k_said = "" if record.k_requested is None else f"; {_plural(record.k_requested, 'item')} asked"
    stdout.print(
        f"  HCP {record.hcp_id}; asked by {record.requester}{plan}; purpose {record.purpose}; "
        f"channel {record.channel_filter or 'any'}{k_said}",
        highlight=False,
    )
    no_action = "" if record.p_no_action is None else f", P(no action) {record.p_no_action:.4g}"
    drawn = (
        f"temperature {record.temperature:g}"
        if record.temperature is not None
        else f"epsilon {record.epsilon:g}"
    )
    stdout.print(
        f"  model version {record.model_version}; {record.policy} ({drawn}), holdout rate "
        f"{record.holdout_rate:g}{no_action}; {record.n_candidates} candidate actions",
        highlight=False,
    )
    said_rules = record.rules_fingerprint or "not recorded (logged before schema revision 0006)"
    if rules_kept:
        said_rules += f" (`nextbest lookup --rules {record.rules_fingerprint}` shows the file)"
    stdout.print(f"  rules {said_rules}", highlight=False)
    if record.holdout:
        stdout.print("  holdout: answered with nothing to do", highlight=False)
    elif not record.items:
        stdout.print("  no item: nothing was worth its cost or allowed", highlight=False)
    for item in record.items:
        stdout.print(
            f"  {item.rank}. {item.action_id} ({item.channel}, {item.content_id}): score "
            f"{item.score:.4g}, expected uplift {item.expected_uplift:.4g}, P(engaged) "
            f"{item.p_engage:.3f}, propensity {item.propensity:.4g}"
            f"{', explored' if item.explored else ''}",
            highlight=False,
        )
        for reason in item.reasons:
            stdout.print(f"       {reason}", highlight=False)
    if any(not item.reasons for item in record.items):
        stdout.print("  reasons not recorded (logged before schema revision 0007)", highlight=False)
    stdout.print(
        f"  feedback: {len(events)} event{'s' if len(events) != 1 else ''}", highlight=False
    )
    _say_read_against(read_against)
    for event in events:
        said = _event_fields(event)
        said.append(f"by {event['requester'] or '-'}")
        stdout.print(
            f"    {_iso(event['occurred_at'])} {event['event_type']} ({', '.join(said)}; "
            f"{_event_id_said(event)})",
            highlight=False,
        )
    return found


def _channels_read(
    settings: Settings, events: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str | None]:
    """``events`` (``feedback_for``'s) with the channels of consent events stored while
    no model was served read against the served model's catalog, as serving reads
    them, and that model ("model 'nextbest' version 3 (alias 'champion')"; None: none
    read).

    The served version is loaded only when such an event is shown (seconds); with
    none registered, or one that cannot be read (said), they stay not yet read."""
    from nextbest.storage.repository import read_against_catalog

    if all(event["channel_read_as"] is None for event in events):
        return events, None
    from nextbest import registry

    alias = settings.serve_alias
    try:
        version = registry.alias_version(settings, alias)
        if version is None:
            return events, None
        with _working("reading the served model's catalog"):
            model = registry.load_version(settings, version, alias=alias)
    except registry.RegistryError as exc:
        _note(
            "consent events stored while no model was served are shown not yet read against a "
            f"catalog: the served model cannot be read ({exc})"
        )
        return events, None
    channels = frozenset(str(c) for c in model.catalog["channel"])
    return read_against_catalog(events, channels), (
        f"model '{settings.model_name}' version {version} (alias '{alias}')"
    )


def _say_read_against(read_against: str | None) -> None:
    if read_against is not None:
        stdout.print(
            "    (consent events stored while no model was served: their channel as stored, read "
            f"against the catalog of {read_against}, as serving reads it)",
            highlight=False,
        )


def _event_id_said(event: dict[str, Any]) -> str:
    """A feedback event's id as a look-up lists it, with the event id it was derived
    from (an opt-out of several channels kept in a row per channel)."""
    derived_from = event["derived_from"]
    return f"event {event['event_id']}" + (
        f", from event {derived_from}" if derived_from is not None else ""
    )


def _event_fields(event: dict[str, Any]) -> list[str]:
    """A feedback event's fields as a look-up lists them ("channel e_mail (read as
    email)"), those it has."""
    from nextbest.storage.repository import NOT_YET_READ

    said = []
    for name in ("action_id", "channel", "value", "reason"):
        if not event[name]:
            continue
        field = f"{name} {event[name]}"
        read = event["channel_read_as"] if name == "channel" else None
        if read is not None:
            field += f" ({read})" if read == NOT_YET_READ else f" (read as {read})"
        said.append(field)
    return said


def _model_asked(settings: Settings, name: str | None) -> tuple[Any, str]:
    """The model ``explain --model`` names: a version number, an alias, or (None)
    the served alias; a version the registry does not hold is named with those it does."""
    from nextbest import registry

    if name is None:
        return registry.load_alias(settings)
    if not name.strip().isdigit():
        alias = name.strip()
        if registry.alias_version(settings, alias) is None:
            if not registry.registry_exists(settings) or alias == settings.serve_alias:
                raise _fail(
                    f"--model {name}: model '{settings.model_name}' has no version with "
                    f"alias '{alias}' yet; train one with `nextbest train --data DIR`"
                )
            raise _fail(  # a name that is none of the aliases set
                f"--model {name}: model '{settings.model_name}' has no alias '{alias}' "
                "(`nextbest models` lists the versions and their aliases)"
            )
        return registry.load_alias(settings, alias)
    asked = str(int(name))
    try:
        known = (
            [v.version for v in registry.list_versions(settings)]
            if registry.registry_exists(settings)
            else []
        )
    except registry.TrainingRunsMissingError as exc:
        known = [v.version for v in exc.versions]  # the registry's, read all the same
    except registry.RegistryError as exc:
        raise _fail(f"--model {name}: {exc}") from None
    if asked not in known:
        raise _fail(
            f"--model {name}: model '{settings.model_name}' has no version {asked} "
            f"(its versions: {', '.join(known) or 'none yet'}; `nextbest models` lists them)"
        )
    return registry.load_version(settings, asked), asked


@app.command()
def explain(
    hcp_id: Annotated[str, typer.Argument(help="The HCP, as the hcps file spells the id.")],
    k: Annotated[int, typer.Option(min=1, max=50, help="Items, as a request's k.")] = 5,
    channel: Annotated[str | None, typer.Option(help="Only actions on this channel.")] = None,
    purpose: Annotated[str, typer.Option(help="promotional or medical.")] = "promotional",
    on: Annotated[
        str | None,
        typer.Option("--date", help="Decide for this date or time (UTC without an offset)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the answer as JSON instead of text.")
    ] = False,
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="VERSION|ALIAS",
            help="Ask this registered version (a number) or alias instead of the served "
            "one: the challenger before promoting it, a version rolled back from. Default: "
            "the served alias (NEXTBEST_SERVE_ALIAS).",
        ),
    ] = None,
) -> dict[str, Any]:
    """What the served model would answer for one HCP now, and why; nothing is logged.

    The answer without an exploration draw, with each item's reasons and why every
    other action is left out. Nothing is logged: a support question, not a send (an
    API request with explain=true is logged as a served answer, and feedback without
    a recommendation_id may then be counted for it). The serving rules are read as
    `picks` reads them (NEXTBEST_RULES_FILE, else training/rules.yaml here). Exit
    code 2 for an HCP the model does not know."""
    import json
    from dataclasses import asdict

    from nextbest import registry
    from nextbest.errors import InvalidRequestError, NextbestError
    from nextbest.service.recommend import decision_time
    from nextbest.service.runtime import make_recommender
    from nextbest.service.serving import recommend_one
    from nextbest.storage.db import store_session

    settings = _settings()
    rules = _check_rules_file(settings)
    try:
        model, version = _model_asked(settings, model_name)
    except registry.RegistryError as exc:
        raise _fail(str(exc)) from None
    # The ranking itself: no exploration draw (a served answer's first item is
    # sometimes a random pick; the holdout, drawn per HCP and period, stays).
    greedy = settings.model_copy(update={"exploration": "epsilon_greedy", "epsilon": 0.0})
    recommender = make_recommender(greedy, model, version, rules)
    now = decision_time(_parse_date(on, "--date"))
    try:
        with store_session(settings.resolved_database_url) as session:
            rec = recommend_one(
                recommender,
                session,
                None,  # logged nowhere
                requester="nextbest explain",
                hcp_id=hcp_id,
                k=k,
                channel=channel,
                purpose=purpose,
                on=now,
                explain_exclusions=True,
            )
    except InvalidRequestError as exc:  # a request's field here is an option
        raise _fail(f"--{exc.field}: {exc.message}") from None
    except NextbestError as exc:
        raise _fail(str(exc)) from None
    answer = {
        "hcp_id": rec.hcp_id,
        "decided_for": now.isoformat(),
        "model_version": rec.model_version,
        "uplift_source": rec.uplift_source,
        "holdout": rec.holdout,
        "items": [asdict(item) for item in rec.items],
        "excluded": rec.excluded,
        "logged": False,
    }
    if as_json:
        typer.echo(json.dumps(answer, indent=1))
        return answer
    stdout.print(
        f"HCP {hcp_id}: what model version {version}"
        + (f" ({model_name})" if model_name and not model_name.strip().isdigit() else "")
        + ("" if model_name else " (served)")
        + f" answers for {now.isoformat(timespec='seconds')} "
        f"(purpose {purpose}, channel {channel or 'any'}); nothing is logged",
        highlight=False,
    )
    if rec.holdout:
        stdout.print(
            "  holdout: this HCP is in the randomized holdout now; a request is answered "
            "with nothing to do",
            highlight=False,
        )
    elif not rec.items:
        # Every action left out by a rule (opted out of every channel, erased): no
        # action was allowed at all, which "not worth its cost" would hide.
        ruled_out = sum(
            not any(w.startswith("not worth its cost") for w in said)
            for said in rec.excluded.values()
        )
        none = ruled_out == len(recommender.action_ids)
        nothing = "no action is allowed" if none else "nothing allowed is worth its cost"
        stdout.print(f"  no item: {nothing} (below)", highlight=False)
    for item in rec.items:
        stdout.print(
            f"  {item.rank}. {item.action_id} ({item.channel}, {item.content_id}): score "
            f"{item.score:.4g}, expected uplift {item.expected_uplift:.4g}, cost "
            f"{item.cost:.4g}, P(engaged) {item.p_engage:.3f}",
            highlight=False,
        )
        for reason in item.reasons:
            stdout.print(f"       {reason}", highlight=False)
    if not rec.holdout and settings.epsilon > 0:
        stdout.print(
            f"  (the ranking, without exploration: a served answer's first item is a random "
            f"allowed action in {settings.epsilon:.0%} of requests, marked explored)"
            if settings.exploration == "epsilon_greedy"
            else "  (the ranking, without exploration: a served answer's first item is drawn "
            "by softmax over the scores, marked explored when it is not the first here)",
            highlight=False,
        )
    # Actions left out for the same reasons are listed together.
    by_reasons: dict[tuple[str, ...], list[str]] = {}
    for action_id, why in rec.excluded.items():
        by_reasons.setdefault(tuple(why), []).append(action_id)
    if by_reasons:
        stdout.print(f"  left out ({len(rec.excluded)} actions):", highlight=False)
    for said, actions in sorted(by_reasons.items(), key=lambda kv: -len(kv[1])):
        stdout.print(f"    {', '.join(actions)}: {'; '.join(said)}", highlight=False)
    return answer


def _print_runs(runs: list[Any], total: int, store: str, *, as_json: bool) -> dict[str, Any]:
    """``lookup --maintenance``: the newest prunes and erasures, newest first."""
    import json
    from dataclasses import asdict

    found = {"n_runs": total, "runs": [asdict(run) for run in runs]}
    if as_json:
        typer.echo(json.dumps(found, indent=1, default=_iso))
        return found
    more = f"; --limit {total} shows all" if total > len(runs) else ""
    stdout.print(
        f"maintenance runs in {store}: {len(runs):,} of {total:,} shown, newest first{more}",
        highlight=False,
    )
    if not total:
        stdout.print(
            "  none: nothing was pruned or erased since schema revision 0008, which began "
            "recording them",
            highlight=False,
        )
    for run in runs:
        asked = f", {run.arguments}" if run.arguments else ""
        asked += f", {_plural(run.hcps, 'HCP')}" if run.hcps is not None else ""
        ended = f" {_iso(run.ended_at)}" if run.ended_at is not None else ""
        stdout.print(
            f"  {_iso(run.started_at)} {run.command} by {run.requester}{asked}: "
            f"{run.outcome}{ended}",
            highlight=False,
        )
        what = f"what was older than {_iso(run.cutoff)}: " if run.cutoff is not None else ""
        stdout.print(
            f"    {what}deleted {_plural(run.deleted.recommendations, 'recommendation')}, "
            f"{_plural(run.deleted.recommendation_items, 'recommendation item')} and "
            f"{_plural(run.deleted.feedback_events, 'feedback event')} (run {run.run_id})",
            highlight=False,
        )
        if run.outcome == "interrupted":
            stdout.print(
                f"    stopped before the end: {run.detail or 'no reason recorded'}",
                highlight=False,
            )
        elif run.outcome == "running":
            stdout.print(
                "    not ended: still running, or its process was killed (the counts are "
                "those of its batches committed)",
                highlight=False,
            )
    return found


def _print_hcp_log(
    hcp: str,
    answers: list[Any],
    events: list[dict[str, Any]],
    erased: datetime | None,
    pruned: Any,
    *,
    totals: tuple[int, int],
    limit: int,
    as_json: bool,
    holding: list[Any] | None = None,
    model_name: str = "",
    read_against: str | None = None,
) -> dict[str, Any]:
    """``lookup --hcp``: the HCP's newest answers and feedback events (at most
    ``limit`` of each), its erasure, and the prune that reached furthest back
    (``pruned``, None: no prune recorded); ``totals``: how many of each the store
    holds; ``holding``: the registered versions holding the HCP, or those that could
    not be read (``--models``; None: not asked); ``read_against``: the model whose
    catalog the events' opt-outs stored with no model were read against (None: none)."""
    import json
    from dataclasses import asdict

    found: dict[str, Any] = {
        "hcp_id": hcp,
        "erased_at": erased,
        "n_recommendations": totals[0],
        "n_feedback": totals[1],
        "recommendations": [asdict(a) for a in answers],
        "feedback": events,
        "channels_read_against": read_against,
        "pruned": None if pruned is None else asdict(pruned),
    }
    if holding is not None:
        found["model_versions"] = [
            {"version": v.version, "aliases": list(v.aliases), "run_id": v.run_id}
            | ({"unreadable": v.unreadable} if v.unreadable else {})
            for v in holding
        ]
    if as_json:
        typer.echo(json.dumps(found, indent=1, default=_iso))
        return found

    def shown(n: int, total: int) -> str:
        more = f"; --limit {total} shows all" if total > n else ""
        return f"{n:,} of {total:,} shown, newest first{more}"

    stdout.print(
        f"HCP {hcp}: {_plural(totals[0], 'logged answer')} ({shown(len(answers), totals[0])})",
        highlight=False,
    )
    prune = None
    if pruned is not None:
        how = {
            "finished": "pruned",
            "interrupted": "partly pruned (the run was interrupted)",
        }.get(pruned.outcome, "partly pruned (the run has not ended: still running, or killed)")
        prune = (
            f"rows older than {_iso(pruned.cutoff)} were {how} by {pruned.requester} in the "
            f"run of {_iso(pruned.started_at)} (`nextbest lookup --maintenance` lists every run)"
        )
    if totals == (0, 0) and erased is None:
        stdout.print(
            "  nothing logged about this id: never asked for, or an id the served model does "
            "not know (answered 404, not logged)"
            + (
                "; no prune is recorded in maintenance_runs"
                if prune is None
                else f", or logged before a prune: {prune}"
            )
            + "; ids match exactly, case included",
            highlight=False,
        )
    elif prune is not None:
        stdout.print(f"  {prune}", highlight=False)
    if erased is not None:
        stdout.print(
            f"  erased {_iso(erased)}: its answers and feedback until then were deleted; "
            "it is suppressed on every channel",
            highlight=False,
        )
    for a in answers:
        served = (
            "holdout: nothing to do"
            if a.holdout
            else ", ".join(f"{i.action_id} ({i.channel})" for i in a.items) or "no item"
        )
        plan = f", rep plan of {a.rep_id}" if a.rep_id else ""
        stdout.print(
            f"  {_iso(a.created_at)} {a.recommendation_id} by {a.requester}{plan}, version "
            f"{a.model_version}: {served}",
            highlight=False,
        )
    stdout.print(
        f"  feedback: {_plural(totals[1], 'event')} ({shown(len(events), totals[1])})",
        highlight=False,
    )
    _say_read_against(read_against)
    for event in events:
        said = _event_fields(event)
        if event["recommendation_id"]:
            said.append(f"recommendation {event['recommendation_id']}")
        said.append(f"by {event['requester'] or '-'}")
        stdout.print(
            f"    {_iso(event['occurred_at'])} {event['event_type']} ({', '.join(said)}; "
            f"{_event_id_said(event)})",
            highlight=False,
        )
    if holding is not None:
        stdout.print(
            f"  registered versions of model '{model_name}' holding its attributes and "
            "history features (their served snapshot):" + ("" if holding else " none"),
            highlight=False,
        )
        for v in holding:
            aliases = f" ({', '.join(v.aliases)})" if v.aliases else ""
            run = f" (run {v.run_id})" if v.run_id else ""
            why = f": could not be read, check it: {v.unreadable}" if v.unreadable else ""
            stdout.print(f"    v{v.version}{aliases}{run}{why}", highlight=False)
    if answers:
        stdout.print(
            f"  `nextbest lookup ID` shows one answer's scores and propensities; `nextbest "
            f"explain {hcp}` what it would get now, and why",
            highlight=False,
        )
    return found


def _iso(value: Any) -> str:
    """A stored time as ISO 8601 with its UTC offset (a JSON default for the rest)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@app.command()
def models(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON instead: the versions, champion_history (the champions "
            "`rollback` returns through, the current one last; a rollback takes its "
            "version off) and champion_changes (every change of champion, oldest first, "
            "rollbacks included: the audit trail that --history prints) and "
            "decisions_interrupted (decisions stopped before the champion moved: not made).",
        ),
    ] = False,
    history_table: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Print every change of champion instead: when, which version, by which "
            "decision (train, promote, forced promote, rollback), who and why; then the "
            "decisions interrupted before the champion moved (not made).",
        ),
    ] = False,
    champion_at: Annotated[
        str | None,
        typer.Option(
            "--champion-at",
            help="Print which version was champion at this time (ISO 8601, e.g. "
            "2026-11-30T12:00; UTC unless it has an offset); before the first champion, "
            "that none was and when the first came (exit code 0). With --json: at, "
            "champion (null before the first) and first_champion.",
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Finish a promotion, rollback or training that moved the champion and "
            "was killed before it wrote what it leaves beside it (previous_champion, "
            "challenger, champion_history, version tags, the gate's verdict), as `nextbest "
            "models` says; take off the mark of one killed before the champion moved (not "
            "made); give a version that train or retrain registered in full, then was "
            "killed before it set its alias (challenger, or the first champion), that alias; "
            "then list the versions. A decision whose process still runs on this host is in "
            "progress, and left alone.",
        ),
    ] = False,
) -> Any:
    """The registered versions, newest first: aliases, training data, held-out figures, gate.

    AUC and policy value (DR) are each version's own, measured at training on its
    held-out slice (the newest eval_fraction of the history); the gate's estimates,
    on the logged decisions reserved for it, are in `nextbest evaluate` and its
    MLflow run. With --history or --champion-at, the champion's timeline instead,
    read from the decision runs of the evaluation experiment.
    """
    import json
    from dataclasses import asdict

    from rich.markup import escape

    from nextbest import registry
    from nextbest.loop.gate import champion_history
    from nextbest.loop.lineage import ChampionTimeline, champion_timeline

    settings = _settings()
    when = _parse_time(champion_at, "--champion-at") if champion_at is not None else None
    runs_missing: registry.TrainingRunsMissingError | None = None
    try:
        # Nothing registered: said once, as without --repair, before repair says anything.
        versions = registry.list_versions(settings)
    except registry.TrainingRunsMissingError as exc:
        # Listed with what the registry holds, then said (exit 2). Not repaired, nor
        # the timeline read: both are in the tracking store, and this one is not it.
        if repair or history_table or when is not None:
            raise _fail(str(exc)) from None
        versions, runs_missing = exc.versions, exc
    except registry.RegistryError as exc:
        raise _fail(str(exc)) from None
    if repair:
        left_alone = False
        try:
            # It moves aliases and writes tags as a decision does: not beside one at work
            # (it waits for it, then repairs what it left).
            with registry.deciding_alone(
                settings,
                "repair",
                then="run `nextbest models --repair` again once it has ended",
                afterwards="repairs what it left",
                nothing="repaired nothing",
            ):
                try:
                    finished = registry.finish_unfinished(settings)
                except registry.DecisionInProgressError:
                    # Left alone (a registry with no lock): said with the versions below.
                    finished, left_alone = None, True
                not_made = registry.take_off_not_made(settings)
                named = registry.name_unnamed(settings)
        except registry.RegistryError as exc:
            raise _fail(str(exc)) from None
        if finished is None and not_made is None and not named and not left_alone:
            console.print(
                "nothing to repair: no decision or training was left unfinished", highlight=False
            )
        _say_finished(finished)
        if not_made is not None:
            console.print(
                f"[yellow]taken off:[/yellow] the mark ({registry.PENDING_TAG}) of the "
                f"{not_made.named} (MLflow run {not_made.run_id}), killed before the champion "
                "moved: it was not made",
                highlight=False,
            )
        for done in named:
            console.print(f"[yellow]finished:[/yellow] {done.said()}", highlight=False)
        if named or finished is not None:
            versions = registry.list_versions(settings)  # as repaired
    unfinished = registry.unfinished_decision(settings)
    in_progress = unfinished if unfinished is not None and unfinished.in_progress else None
    if in_progress is not None:
        unfinished = None
    # The timeline is read from every decision run: only when it is shown.
    shown = when is not None or history_table or as_json
    timeline = champion_timeline(settings) if shown else ChampionTimeline([], [])
    changes = timeline.changes
    if when is not None:
        return _print_champion_at(changes, when, as_json=as_json)
    if history_table and not as_json:
        _print_champion_changes(timeline)
        return changes
    history = champion_history(settings)
    # The first champion got its alias at training, before any promotion wrote the history.
    current = next((v.version for v in versions if "champion" in v.aliases), None)
    if current is not None and (not history or history[-1] != current):
        history.append(current)
    if as_json:
        rows = [{**asdict(v), "registered_at": v.registered_at.isoformat()} for v in versions]
        typer.echo(
            json.dumps(
                {
                    "model": settings.model_name,
                    "champion_history": history,
                    "champion_changes": [c.as_dict() for c in changes],
                    "decisions_interrupted": [d.as_dict() for d in timeline.interrupted],
                    "decision_unfinished": (
                        None
                        if unfinished is None
                        else {
                            **asdict(unfinished.end),
                            "unwritten": list(unfinished.unwritten),
                        }
                    ),
                    "decision_in_progress": (
                        None if in_progress is None else asdict(in_progress.end)
                    ),
                    "versions": rows,
                },
                indent=1,
            )
        )
        if runs_missing is not None:
            raise _fail(str(runs_missing))
        return versions
    # Two lines per version, not a table: readable at any terminal width.
    stdout.print(
        f"model '{settings.model_name}' in {without_password(settings.resolved_registry_uri)}"
    )
    for v in versions:
        aliases = f" [bold]{', '.join(v.aliases)}[/bold]" if v.aliases else ""
        fed_back = (
            "" if v.feedback_rows is None else f" ({v.feedback_rows:,} from the recommendation log)"
        )
        run_missing = runs_missing is not None and v.run_id in runs_missing.run_ids
        # Without its training run, what the registry alone holds: no row of dashes.
        stdout.print(
            f"v{v.version}{aliases}  registered {v.registered_at:%Y-%m-%d %H:%M} UTC"
            if run_missing
            else f"v{v.version}{aliases}  trained {v.registered_at:%Y-%m-%d %H:%M} UTC on "
            f"{_count(v.n_decisions)} decisions{fed_back} of {_count(v.n_hcps)} HCPs "
            f"up to {(v.data_as_of or '-')[:10]}"
        )
        figures = [
            f"training run {v.run_id} is not in this tracking store: the version's training "
            "data and held-out figures are unknown"
            if run_missing
            else None,
            "no uplift model: scores are P(engaged) x value (no outcomes to learn from)"
            if v.uplift_source == "preference_x_value"
            else None,
            _held_out_figures(v),
            f"gate {v.gate.split(' (run ')[0]}" if v.gate else None,
            f"promoted{' by --force' if v.promotion == 'forced' else ''} {_minute(v.promoted_at)}"
            if v.promoted_at
            else None,
            f"rolled back {_minute(v.rolled_back_at)}" if v.rolled_back_at else None,
            _training_run_said(v),
            f"feedback without engagement events on {', '.join(v.feedback_engagement_missing)}"
            if v.feedback_engagement_missing
            else None,
            f"{v.history_rows_logged:,} history rows naming the recommendation_id of a logged "
            "decision left out (learned from the recommendation log)"
            if v.history_rows_logged
            else None,
            f"{v.history_repeats_logged:,} history touches look like logged sends without a "
            "recommendation_id (kept: maybe learned twice)"
            if v.history_repeats_logged
            else None,
        ]
        stdout.print("    " + escape("; ".join(f for f in figures if f)), highlight=False)
    if (caution := _not_comparable(versions)) is not None:
        stdout.print(caution)
    if len(history) == 1:
        stdout.print(
            f"no earlier champion to roll back to: version {history[0]} is the only one in "
            "the champion history (`nextbest rollback` has one to return to once another "
            "version is promoted)"
        )
    elif history:
        stdout.print(
            f"champions to roll back through, the current one last: {', '.join(history)} "
            "(`nextbest rollback` returns to the one before it; each version's own line "
            "keeps when it was promoted and rolled back)"
        )
    if unfinished is not None and unfinished.unwritten:
        stdout.print(
            f"[bold red]unfinished:[/bold red] {escape(unfinished.said())}", highlight=False
        )
    if in_progress is not None:
        stdout.print(escape(in_progress.said()), highlight=False)
    if runs_missing is not None:
        raise _fail(str(runs_missing))
    return versions


def _training_run_said(v: VersionSummary) -> str | None:
    """Of a version whose training run did not end FINISHED: how it ended, and whether
    the version is registered in full (its artifact_sha256 tag, written last);
    of a first champion whose training stopped before it set the alias, that."""
    if v.alias_unset == "champion" and v.training_run_status is None:
        return (
            "registered in full as the first champion, but no version is champion (its "
            "training stopped before it set the alias): `nextbest models --repair` makes it "
            "champion"
        )
    if v.training_run_status is None:
        return None
    how = (
        "never ended (its process was killed outright, or is still at work)"
        if v.training_run_status == "RUNNING"
        else f"was interrupted ({v.training_interrupted or 'killed'}) and marked killed"
    )
    if v.alias_unset is not None:
        return (
            f"its training run {how}: the version is registered in full, but it "
            f"is not the {v.alias_unset} it was registered as (the run stopped before it "
            f"set the alias): `nextbest models --repair` makes it {v.alias_unset}"
        )
    return f"its training run {how}: " + (
        "the version is registered in full"
        if v.artifact_sha256 is not None
        else "the version was registered without all of its tags (no artifact_sha256: "
        "loaded unverified); register a new one with `nextbest retrain` or `nextbest train`"
    )


def _parse_time(value: str, option: str) -> datetime:
    """An ISO 8601 time given to ``option``, in UTC (naive: taken as UTC)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            f"{option} '{value}' is not a time: use ISO 8601, e.g. 2026-11-30T12:00 "
            "(UTC unless it has an offset such as +01:00)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _print_champion_changes(timeline: Any) -> None:
    """The champion's timeline (a :class:`~nextbest.loop.lineage.ChampionTimeline`)
    as a table, oldest first, then the decisions interrupted before the champion moved."""
    from rich.markup import escape

    from nextbest.loop.lineage import NOT_ENDED

    changes = timeline.changes
    if not changes:
        stdout.print("no champion yet: `nextbest train --data DIR` sets the first")
    else:
        table = Table(title="champion changes, oldest first (times in UTC)")
        for column in ("time", "version", "decision", "replaced", "by", "reason"):
            table.add_column(column)
        for c in changes:
            decision = c.decision if c.run_id is not None else f"{c.decision}*"
            table.add_row(
                f"{c.at:%Y-%m-%d %H:%M:%S}",
                c.version,
                f"{decision}, interrupted" if c.interrupted else decision,
                c.previous or "-",
                escape(c.by or "-"),
                escape(c.reason or "-"),
            )
        stdout.print(table)
    if any(c.run_id is None for c in changes):
        stdout.print(
            "* not recorded as a decision (trained as the first champion by a nextbest "
            "that did not record it): the time is the version's registration"
        )
    for c in changes:
        if c.interrupted == NOT_ENDED:
            stdout.print(
                f"interrupted after the champion moved: {c.decision} of version {c.version} "
                f"(MLflow run {c.run_id}): its run never ended (the process was killed "
                "outright, or is still at work) and is counted as made because the champion "
                "moved to it; the time is when the run started",
                highlight=False,
            )
        elif c.interrupted:
            stdout.print(
                f"interrupted after the champion moved: {c.decision} of version {c.version} "
                f"(MLflow run {c.run_id}, {escape(c.interrupted)}): made; the time is when "
                "the run was marked killed",
                highlight=False,
            )
    for d in timeline.interrupted:
        why = (
            "its run never ended and the champion is not version "
            f"{d.version} after it (the process was killed outright, or is still at work)"
            if d.run_status == "RUNNING"
            else "its run was marked killed and the champion did not move to it"
        )
        stdout.print(
            f"interrupted before the champion moved, not made: {d.decision} of version "
            f"{d.version} (replacing {d.previous or 'none'}; MLflow run {d.run_id}, started "
            f"{d.started:%Y-%m-%d %H:%M:%S} UTC by {escape(d.by or '-')}): {why}",
            highlight=False,
        )


def _print_champion_at(changes: list[Any], when: datetime, *, as_json: bool) -> str | None:
    """Which version was champion at ``when``; None before the first, said as a plain
    answer naming the first champion and when it came (the history answers that too)."""
    import json

    from nextbest.loop.lineage import champion_at

    change = champion_at(changes, when)
    first = changes[0] if changes else None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "at": when.isoformat(),
                    "champion": None if change is None else change.as_dict(),
                    "first_champion": None if first is None else first.as_dict(),
                },
                indent=1,
            )
        )
    elif change is not None:
        by = f" by {change.by}" if change.by else ""
        why = f" ({change.reason})" if change.reason else ""
        stdout.print(
            f"at {when.isoformat()} the champion was version {change.version}: "
            f"{change.decision} at {change.at.isoformat()}{by}{why}",
            highlight=False,
        )
    elif first is not None:
        by = f" by {first.by}" if first.by else ""
        stdout.print(
            f"at {when.isoformat()} no version was champion yet: the first, version "
            f"{first.version}, became champion later, at {first.at.isoformat()} "
            f"({first.decision}{by})",
            highlight=False,
        )
    else:
        stdout.print(
            f"at {when.isoformat()} no version was champion: none has been yet "
            "(`nextbest train --data DIR` sets the first)",
            highlight=False,
        )
    return None if change is None else change.version


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _not_comparable(versions: list[VersionSummary]) -> str | None:
    """A caution when versions with held-out figures measured them on different
    slices (different histories): then the figures do not rank them. A retrained
    version holds out the history's newest decisions as the champion did, so the two
    compare."""

    def held_out_slice(v: VersionSummary) -> tuple[Any, ...]:
        if v.eval_from is not None:
            return (v.eval_from, v.eval_until, v.eval_decisions)
        # Recorded before the slice's dates were: the history it was cut from.
        return (v.n_decisions - (v.feedback_rows or 0) if v.n_decisions else None,)

    measured = [v for v in versions if v.eval_auc is not None or v.policy_value_dr]
    if len({held_out_slice(v) for v in measured}) < 2:
        return None
    return (
        "AUC and policy value are each measured on the version's own held-out slice, "
        "and these versions learned from different histories: the figures do not rank "
        "them. `nextbest evaluate` compares challenger and champion on the same logged "
        "decisions."
    )


def _held_out_figures(v: VersionSummary) -> str | None:
    """'on its held-out slice (the newest 10% of its history, 5,200 decisions): AUC
    0.710, policy value (DR) 2.020 [1.740, 2.299]' for a ``VersionSummary``."""
    figures = [f"AUC {v.eval_auc:.3f}"] if v.eval_auc is not None else []
    if v.policy_value_dr is not None:
        figures.append("policy value (DR) {:.3f} [{:.3f}, {:.3f}]".format(*v.policy_value_dr))
    if not figures:
        return None
    where = [f"the newest {v.eval_fraction:.0%} of its history"] if v.eval_fraction else []
    if v.eval_decisions is not None:
        where.append(f"{v.eval_decisions:,} decisions")
    slice_ = f"on its held-out slice ({', '.join(where)})" if where else "on its held-out slice"
    return f"{slice_}: {', '.join(figures)}"


def _minute(iso: str) -> str:
    """'2026-12-01T10:44:51.71+00:00' -> '2026-12-01 10:44 UTC' (as the tags store it)."""
    return iso[:16].replace("T", " ") + " UTC"


keys_app = typer.Typer(
    help="API keys of the server: add (the key is printed once), list, remove.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

KeysFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="Key file (default: NEXTBEST_API_KEYS_FILE, else $NEXTBEST_MODELS_DIR/api_keys.yaml).",
    ),
]


def _keys_file(path: Path | None) -> Path:
    """The key file ``--file`` or the settings name; one under a file stops here (a
    key list read there was empty, and a removal said the key was unknown)."""
    from nextbest.settings import refuse_unusable_place

    target = path if path is not None else _settings().resolved_api_keys_file
    refuse_unusable_place(target)
    if target.is_dir():
        raise _fail(f"the API key file {target} is a directory")
    return target


# The key entry's fields as `keys add` takes them: its refusals name these.
KEY_OPTIONS = {
    "role": "--role",
    "territory_id": "--territory-id",
    "purpose": "--purpose",
    "channels": "--channel",
}


@keys_app.command("add")
def keys_add(
    name: Annotated[
        str,
        typer.Argument(
            help="Logged as the requester, e.g. rep-t001; a rep's is its rep_id in URLs "
            "(letters, digits, '.', '_', '-', '@')."
        ),
    ],
    role: Annotated[str, typer.Option("--role", help="admin | channel | rep")],
    territory_id: Annotated[
        str | None, typer.Option("--territory-id", help="The rep's territory (rep keys).")
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option(
            "--purpose",
            help="promotional | medical: bind the key to it (its requests default to it, and "
            "asking for the other is refused). Default: promotional for a rep key (an MSL's "
            "says medical); other keys unbound, each request says.",
        ),
    ] = None,
    channels: Annotated[
        list[str] | None,
        typer.Option(
            "--channel",
            metavar="CHANNEL",  # one channel per --channel: not Typer's `<list[str]>`
            help="Bind a channel key to a channel, e.g. --channel sms (repeat for more): it "
            "may then send feedback and consent for, and get recommendations of, those "
            "channels only. Default: every channel.",
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Rotate: a new key replaces the one of NAME (stopped at once)."
        ),
    ] = False,
    keep_old: Annotated[
        str | None,
        typer.Option(
            "--keep-old",
            metavar="DURATION",
            help="With --replace: keep accepting the old key as NAME for this long (90m, "
            "24h, 7d; at most 30d) while its clients move to the new one. Only one old key "
            "is kept: one still accepted from an earlier rotation stops at once.",
        ),
    ] = None,
    path: KeysFileOpt = None,
) -> str:
    """Create a key; only its SHA-256 is stored. Running servers accept it at once."""
    from nextbest.service.apikeys import (
        ApiKeyError,
        add_key,
        channel_spelling,
        keep_old_duration,
        utc_text,
    )

    overlap = None
    if keep_old is not None:
        if not replace:
            raise _fail(
                "--keep-old keeps the old key of a rotation: give it with --replace "
                f"(`nextbest keys add {name} --role {role} --replace --keep-old {keep_old}`)"
            )
        try:
            overlap = keep_old_duration(keep_old)
        except ValueError as exc:
            raise _fail(f"--keep-old {exc}") from None
    _settings()  # an invalid setting stops here, before the key is written
    target = _keys_file(path)
    try:
        added = add_key(
            target,
            name=name,
            role=role,
            territory_id=territory_id,
            purpose=purpose,
            channels=channels or None,
            replace=replace,
            keep_old=overlap,
            given_as=KEY_OPTIONS,
        )
    except (ApiKeyError, OSError) as exc:
        raise _fail(str(exc)) from None
    scope = f" for territory {territory_id}" if territory_id else ""
    scope += f", {purpose} requests only" if purpose else ""
    if channels:
        bound = ", ".join(dict.fromkeys(channel_spelling(c) for c in channels))
        scope += f", channels {bound} only"
    if added.ended_until is not None:
        console.print(
            f"the old key '{name}' kept from an earlier rotation (accepted until "
            f"{utc_text(added.ended_until)}) stops working now: an entry keeps one old key",
            highlight=False,
        )
    if added.old_until is not None:
        console.print(
            f"the replaced key of '{name}' is accepted until {utc_text(added.old_until)} "
            f"({keep_old}), then refused; `nextbest_retiring_key_requests_total` counts its "
            "use, `nextbest keys list` shows the time",
            highlight=False,
        )
    elif overlap is not None:
        console.print(f"there was no key '{name}' to keep: nothing replaced", highlight=False)
    console.print(
        f"key '{name}' (role {role}{scope}) {'replaced' if added.replaced else 'added'} in "
        f"{target}; it is shown only now, store it where its user keeps secrets:"
    )
    print(added.key, flush=True)
    if role == "rep" and territory_id:
        unchecked = _note_unserved_territories({territory_id: "this rep's requests are"})
        if unchecked is not None:  # the key is added all the same
            _note(f"territory {territory_id} was not checked against the served model: {unchecked}")
    return added.key


def _note_unserved_territories(refused: Mapping[str, str]) -> str | None:
    """Warn of each territory of ``refused`` (a rep key's territory -> whose requests
    it would refuse, "this rep's requests are") in which the served model has no
    HCP (a typo locks the rep out), as the servers align HCPs to territories: by
    the territory alignment file when it is set, else by the model's hcps file;
    nothing to check before a model is served. Loads the served model.

    Returns why the check could not be made (a registry or a served model that
    cannot be read, in one line naming it), else None."""
    import sqlite3

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from nextbest import registry
    from nextbest.service.territories import (
        TerritoriesError,
        TerritoryAlignment,
        territories_without_hcps,
    )
    from nextbest.storage.db import describe_database_error

    settings = _settings()
    try:
        alignment = TerritoryAlignment.configured(settings)
    except TerritoriesError as exc:
        console.print(
            f"[yellow]note:[/yellow] the servers refuse every reload until the territory "
            f"alignment file is fixed: {exc}",
            highlight=False,
        )
        return None
    store = without_password(settings.resolved_registry_uri)
    try:
        if not registry.registry_exists(settings):
            return None  # no model served yet: nothing to check
        version = registry.alias_version(settings, settings.serve_alias)
        if version is None:
            return None
        model = registry.load_version(settings, version, alias=settings.serve_alias)
    except registry.RegistryError as exc:
        return str(exc)
    except OSError as exc:
        said = _path_error(exc) if exc.filename is not None else str(exc)
        return f"the MLflow store {store} cannot be used: {said}"
    except (MlflowException, SQLAlchemyError, sqlite3.Error) as exc:
        return f"the MLflow store {store} cannot be read: {describe_database_error(exc)}"
    hcp_ids = model.hcps["hcp_id"].astype(str).to_numpy(dtype=object)
    if alignment is None:
        served = set(model.hcps["territory_id"].astype(str))
        where = ""
    else:
        served = {t for t in alignment.assign(hcp_ids).tolist() if t is not None}
        where = f" in the territory alignment {alignment.source}"
    for territory_id in territories_without_hcps(refused, served):
        # Territories are matched exactly: t001 for T001 locks the rep out too.
        alike = sorted(t for t in served if t.casefold() == territory_id.strip().casefold())
        meant = f" (did you mean {' or '.join(alike)}? territories match exactly)" if alike else ""
        _note(
            f"the served model (version {version}) has no HCP{where} in territory "
            f"{territory_id}{meant}: {refused[territory_id]} refused until it does"
        )
    return None


@keys_app.command("list")
def keys_list(
    path: KeysFileOpt = None,
    check_territories: Annotated[
        bool,
        typer.Option(
            "--check-territories",
            help="Also note each rep key whose territory holds no HCP of the served model "
            "(loads that model from the registry; exit code 2 when it cannot be read).",
        ),
    ] = False,
) -> list[Any]:
    """List the keys: names, roles, territories, purposes, channels (never the keys).

    Neither the keys nor their hashes are shown; a key without channels speaks for
    every channel. "old key until": when the old key a rotation kept stops being
    accepted ("expired" once past; the next `keys add` or `keys remove` drops it from
    the file). A file others may read or change, or with keys in plaintext, is
    warned of. Only the key file is read: the registry and the served model only
    with --check-territories."""
    from rich.markup import escape

    from nextbest.service.apikeys import ENV_KEYS, ApiKeyError, KeyStore, utc_now

    target = _keys_file(path)
    try:
        store = KeyStore.load(path=target, env={})
    except ApiKeyError as exc:
        raise _fail(str(exc)) from None
    for warning in store.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    principals, retiring, now = store.principals, store.retiring, utc_now()
    if principals:
        table = Table(title=f"API keys in {target}")
        for column in ("name", "role", "territory_id", "purpose", "channels", "old key until"):
            table.add_column(column)
        for p in principals:
            channels = ", ".join(p.channels) if p.channels is not None else ""
            until = retiring.get(p.name)
            old = "" if until is None else "expired" if until <= now else _minute(until.isoformat())
            table.add_row(p.name, p.role, p.territory_id or "", p.purpose or "", channels, old)
        Console(soft_wrap=True, width=_width(sys.stdout)).print(table)
        reps: dict[str, list[str]] = {}
        for p in principals:
            if p.role == "rep" and p.territory_id:
                reps.setdefault(p.territory_id, []).append(f"'{p.name}'")
        if reps and check_territories:
            unchecked = _note_unserved_territories(
                {
                    t: f"the requests of rep key{'s' * (len(names) > 1)} {', '.join(names)} are"
                    for t, names in reps.items()
                }
            )
            if unchecked is not None:
                raise _fail(
                    "the territories of the rep keys were not checked against the served "
                    f"model: {unchecked}"
                )
    else:
        where = "no API key file at" if not target.exists() else "no API keys in"
        unkeyed = (
            ""
            if os.environ.get(ENV_KEYS)
            else " (with auth on, the default, a server with no key answers every /v1 request 401)"
        )
        stdout.print(
            f"{where} {target}{unkeyed}: `nextbest keys add NAME --role admin|channel|rep` "
            "adds one",
            highlight=False,
        )
    if os.environ.get(ENV_KEYS):
        console.print(f"(keys given in {ENV_KEYS} are not listed: they are not in the file)")
        try:  # the file alone is valid; with the variable, as a server reads them?
            KeyStore.load(path=target)
        except ApiKeyError as exc:
            raise _fail(f"a server would refuse these keys: {exc}") from None
    return principals


@keys_app.command("remove")
def keys_remove(
    name: Annotated[str, typer.Argument(help="The key's name, as `nextbest keys list` shows it.")],
    path: KeysFileOpt = None,
) -> None:
    """Delete a key, and the old key a rotation kept for it.

    Running servers refuse them from their next request on."""
    from nextbest.service.apikeys import ApiKeyError, remove_key_from_file

    _settings()  # an invalid setting stops here, before the file is changed

    target = _keys_file(path)
    try:
        retiring = remove_key_from_file(target, name=name)
    except (ApiKeyError, OSError) as exc:
        raise _fail(str(exc)) from None
    old = " with the old key a rotation kept" if retiring is not None else ""
    console.print(f"key '{name}' removed from {target}{old}")


if __name__ == "__main__":  # pragma: no cover
    main()
