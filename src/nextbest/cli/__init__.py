"""The ``nextbest`` command line. Each command calls the service and returns its result.

The commands live one module per workload (:mod:`~nextbest.cli.data`,
:mod:`~nextbest.cli.train`, :mod:`~nextbest.cli.picks`, :mod:`~nextbest.cli.serve`,
:mod:`~nextbest.cli.feedback`, :mod:`~nextbest.cli.privacy`,
:mod:`~nextbest.cli.decisions`, :mod:`~nextbest.cli.lookup`, :mod:`~nextbest.cli.versions`,
:mod:`~nextbest.cli.keys`);
this module makes them one ``app``, in the order ``nextbest --help`` lists them.
"""

from __future__ import annotations

import inspect
import logging
import os
import sqlite3
import sys
from typing import Annotated, Any

import typer

from nextbest import signals
from nextbest.cli import (
    data,
    decisions,
    feedback,
    keys,
    lookup,
    picks,
    privacy,
    process,
    serve,
    train,
    versions,
)
from nextbest.cli.options import path_error, stores
from nextbest.cli.output import Notes, console, stdout


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


def _flowing(text: str | None) -> str | None:
    """A command's help with each paragraph one line, for the terminal to wrap.

    Typer's Rich help (0.29) joins the lines of a help's first paragraph but keeps
    the line breaks of the others: each line of the docstring (up to 96 characters)
    wrapped at an 80-column terminal's 78, leaving a word or two on a line of its
    own (`drops it` / `from` / `the file`). A paragraph marked ``\b`` stays as
    written, as Typer keeps it; what follows ``\f`` is not help."""
    if not text:
        return text
    shown, cut, rest = inspect.cleandoc(text).partition("\f")
    paragraphs = [p if p.startswith("\b") else " ".join(p.split("\n")) for p in shown.split("\n\n")]
    return "\n\n".join(paragraphs) + cut + rest


class _Group(typer.core.TyperGroup):
    """Typer's group, its commands' help flowing (:func:`_flowing`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _flowing(self.help)
        for command in self.commands.values():
            command.help = _flowing(command.help)


app = typer.Typer(
    cls=_Group,
    help="Next-best-action service for HCP engagement: simulate, train, serve, pick.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        from alembic.script import ScriptDirectory

        from nextbest import __version__
        from nextbest.storage.db import alembic_config

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        stdout.print(f"nextbest {__version__} (database schema revision {head})")
        raise typer.Exit()


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
    # From here a signal is the command's to handle (below; `serve`: uvicorn's), not
    # "stopped before it started" (nextbest.command).
    signals.command_started()
    root = logging.getLogger()
    if not any(isinstance(handler, Notes) for handler in root.handlers):
        root.addHandler(Notes(logging.WARNING))
    if ctx.invoked_subcommand != "serve":
        # A scheduler's SIGTERM (a timeout, a deploy) stops a command as Ctrl-C does, so
        # what it does on an interruption is done: `feedback` removes an earlier run's
        # --rejected file and says how much it stored, `prune` records its run as
        # interrupted. Ended by the signal's default, it left both undone (exit 143
        # either way). `serve` stops on SIGTERM as uvicorn handles it.
        ctx.with_resource(process.interruptible_as_ctrl_c())
    if process.OWN_PROCESS and ctx.invoked_subcommand != "serve":
        # Run beside a server (its shell or container), a command would write its
        # own metrics files into the server's directory: each run's counters, kept
        # for good, summed into the server's /metrics as if a worker had counted
        # them. Only the server's workers count; prometheus_client is not imported
        # yet, so it keeps each counter in this process alone.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def main() -> None:
    """The ``nextbest`` command: :data:`app`, with a database a newer release migrated
    refused in one line (exit 2) by every command that opens it, not a traceback.

    So is a file or directory the command cannot use (a models directory or
    database path under a file, a full disk, no permission): exit code 1 means
    something else to a script (``promote``: the gate kept the champion;
    ``feedback``: rows were rejected), and a traceback buries the path at fault.
    Ctrl-C ends it with exit code 130 and no traceback, as Typer ends a command,
    also while a command loads the libraries it uses (a second or more, before its
    work starts).
    """
    try:
        _run_app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _run_app() -> None:
    """:func:`main` but for Ctrl-C."""
    process.OWN_PROCESS = True  # read by the commands through the module
    try:
        app()
    except Exception as exc:
        stop = process.stop_within(exc)
        if stop is not None:
            # Ctrl-C or SIGTERM that Python wrapped (a signal while it built a class, as
            # a library was imported): exit 130 or 143 as a stop, not a traceback and 1.
            raise stop from None
        said = _said_of_unusable_store(exc)
        if said is None:
            raise
        console.print(f"[red]error:[/red] {said}", highlight=False)
        raise SystemExit(2) from None


def _said_of_unusable_store(exc: Exception) -> str | None:
    """What :func:`main` says of ``exc`` in one line, if it is a store or path the
    command could not use; None for anything else (its traceback is printed).

    The classes are looked up in the modules already loaded, as the command that
    raised one loaded its module: importing them up front (SQLAlchemy, Alembic and,
    with the storage package, pandas) took most of the start of a command that
    opens no store (`nextbest keys list`, `--help`)."""
    db = sys.modules.get("nextbest.storage.db")
    schema_errors = (
        ()
        if db is None
        else (
            db.SchemaTooNewError,
            db.SchemaBehindError,
            db.MigrationLockTimeoutError,
            db.UnversionedSchemaError,
        )
    )
    if isinstance(exc, schema_errors):
        return f"NEXTBEST_DATABASE_URL: {exc}"
    if isinstance(exc, OSError):
        # Not about a path (a socket, say): the traceback helps.
        return None if exc.filename is None else path_error(exc)
    driver = sys.modules.get("sqlalchemy.exc")
    database_errors = (sqlite3.DatabaseError,) + (
        () if driver is None else (driver.DatabaseError, driver.InterfaceError)
    )
    if isinstance(exc, database_errors):
        from nextbest.storage.db import describe_database_error

        # A store that cannot be opened or read (a path that is a directory, a file
        # that is no database, a server that is down): which one, in one line.
        return f"a database cannot be used: {describe_database_error(exc)} ({stores()})"
    # A registry that cannot serve the command (a models directory moved away from
    # its artifacts, a version that cannot be read), wherever it was found out.
    registry = sys.modules.get("nextbest.registry")
    if registry is not None and isinstance(exc, registry.RegistryError):
        return str(exc)
    return None


# The commands in the order `nextbest --help` lists them, then the groups.
app.command()(data.simulate)
app.command()(data.validate)
app.command()(train.train)
app.command()(picks.picks)
app.command()(serve.serve)
app.command("uplift-report")(feedback.uplift_report)
app.command()(feedback.feedback)
app.command()(privacy.erase)
app.command()(privacy.prune)
app.command()(train.retrain)
app.command()(decisions.evaluate)
app.command()(decisions.promote)
app.command()(decisions.rollback)
app.command()(decisions.withdraw)
app.command()(lookup.lookup)
app.command()(lookup.explain)
app.command()(versions.models)

rules_app = typer.Typer(
    cls=_Group,
    help="The serving rules file: check it against a model's catalog before a reload.",
    no_args_is_help=True,
)
rules_app.command("check")(serve.rules_check)
app.add_typer(rules_app, name="rules")

db_app = typer.Typer(
    cls=_Group,
    help="The database's schema: status (its revision and this release's), upgrade, downgrade.",
    no_args_is_help=True,
)
db_app.command("status")(serve.db_status)
db_app.command("upgrade")(serve.db_upgrade)
db_app.command("downgrade")(serve.db_downgrade)
app.add_typer(db_app, name="db")

keys_app = typer.Typer(
    cls=_Group,
    help="API keys of the server: add (the key printed once), edit, import (a CSV's), list, "
    "remove.",
    no_args_is_help=True,
)
keys_app.command("add")(keys.keys_add)
keys_app.command("edit")(keys.keys_edit)
keys_app.command("import")(keys.keys_import)
keys_app.command("list")(keys.keys_list)
keys_app.command("remove")(keys.keys_remove)
app.add_typer(keys_app, name="keys")
