"""``serve``, ``rules check`` and ``db status`` / ``upgrade`` / ``downgrade``: the HTTP
server and the files and schema it needs."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nextbest.cli.options import check_rules_file, model_asked, read_settings
from nextbest.cli.output import confirmed, fail, on_a_terminal, plural, stdout
from nextbest.settings import Settings, get_settings, without_password

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from nextbest.storage.db import UndoneMigration


def _setting_default(name: str) -> str:
    """What an option left out falls back to: the setting's default and its variable."""
    return f"NEXTBEST_{name.upper()}, else {Settings.model_fields[name].default}"


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
        raise fail(f"--log-level: '{log_level}' is not one of debug, info, warning, error")
    with _json_logs(level):
        _serve(host=host, port=port, workers=workers, log_level=log_level)


@contextlib.contextmanager
def _json_logs(level: str) -> Iterator[None]:
    """What ``serve`` logs before its workers start (a migration, a rules note) as the
    JSON lines the workers write, not console notes: a log shipper reads one format.
    Errors that stop it at once stay plain text. The console notes come back after."""
    from nextbest.api.logs import JsonFormatter, ServeLogFilter

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
    settings = read_settings()
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

    from nextbest.api.logs import logging_config
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
    _warn_if_auth_off(settings, options["host"], options["port"])
    if n_workers > 1 and balanced_listeners_supported():
        # Each worker accepts on its own socket, so connections spread over all
        # workers (nextbest.api.workers explains why uvicorn's shared one does not).
        # The workers hold the keys of a key file there at the start; one gone when
        # a SIGHUP comes would leave their replacements with none.
        keys_held = settings.auth_enabled and settings.resolved_api_keys_file.exists()
        try:
            run_balanced(
                uvicorn.Config("nextbest.api.app:create_served_app", **options),
                # A SIGHUP replaces every worker: with a file no worker can serve
                # by, the replacements would take the whole service down.
                before_restart=lambda: restart_problem(settings, keys_held=keys_held),
            )
        except AddressInUseError as exc:  # its message, without "[Errno 98]"
            raise fail(exc.strerror or str(exc)) from None
    else:
        try:  # refused here, before the model loads, not by uvicorn after it
            check_address_free(options["host"], options["port"])
        except AddressInUseError as exc:  # its message, without "[Errno 98]"
            raise fail(exc.strerror or str(exc)) from None
        uvicorn.run("nextbest.api.app:create_served_app", **options)


def _warn_if_auth_off(settings: Settings, host: str, port: int) -> None:
    """With auth off, say so once at start, for every worker (each said it again
    as it started, not knowing where it listens), and who can call: on loopback,
    this machine's processes; on an address reachable from elsewhere, anyone who
    can reach it. Every caller is an admin (reload, promote, API keys aside)."""
    if settings.auth_enabled:
        return
    said = logging.getLogger("nextbest.serve")
    if _loopback_only(host):
        said.warning(
            "auth is OFF (NEXTBEST_AUTH_ENABLED=false): the server listens on %s:%d, "
            "loopback only, where any process of this machine can call it as admin",
            host,
            port,
            extra={"event": "auth_off"},
        )
        return
    said.warning(
        "auth is OFF (NEXTBEST_AUTH_ENABLED=false) and the server listens on %s:%d, not "
        "on loopback: the API, admin routes included, is open to anyone who can reach "
        "that address; serve on 127.0.0.1, or turn auth on with API keys "
        "(docs/operations.md, 'Keys and roles')",
        host,
        port,
        extra={"event": "auth_off_open"},
    )


def _loopback_only(host: str) -> bool:
    """Whether every address ``host`` (an address or a name) stands for is loopback;
    False when it cannot be resolved."""
    import ipaddress
    import socket

    try:
        found = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(
        ipaddress.ip_address(str(address[4][0]).split("%")[0]).is_loopback for address in found
    )


def _check_serving_files(settings: Settings) -> None:
    """Read the rules, territory alignment and API-key files as the workers will: an
    invalid one stops ``serve`` here with its message, not each worker at start-up in
    a traceback."""
    from nextbest.registry import registry_exists

    problem = _serving_files_error(settings)
    if problem is not None:
        raise fail(problem)
    registry_exists(settings)  # a local MLflow store that cannot be used stops here


# How long the check before a SIGHUP restart may take (it loads the served model).
RESTART_CHECK_TIMEOUT_S = 120.0


def restart_problem(settings: Settings, *, keys_held: bool = False) -> str | None:
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
    before, after = _migrate_schema(settings)
    if before != after:  # said once, here: the workers find nothing left to do
        logging.getLogger("nextbest.serve").info(
            "database schema migrated from revision %s to %s", before or "(none)", after
        )


def _migrate_schema(
    settings: Settings,
    *,
    downgrade_to: str | None = None,
    confirm: Callable[[str | None, list[UndoneMigration]], None] | None = None,
) -> tuple[str | None, str | None]:
    """Upgrade the database's schema to this release's (``serve``, ``db upgrade``), or
    downgrade it to ``downgrade_to`` (``db downgrade``), once ``confirm`` was given the
    revision and the migrations undone and returned; any reason it cannot be stops the
    command in one line, as does an upgraded database lacking an index of this
    release's schema (:func:`check_indexes`). The revisions before and after."""
    from sqlalchemy.engine import make_url

    from nextbest.storage.db import (
        UNAVAILABLE_ERRORS,
        DowngradeTargetError,
        MigrationLockTimeoutError,
        MissingIndexError,
        SchemaTooNewError,
        UnversionedSchemaError,
        check_indexes,
        describe_database_error,
        downgrade,
        downgrade_plan,
        migrate,
        sqlite_damage,
    )

    url = settings.resolved_database_url
    damage = sqlite_damage(url)
    if damage is not None:
        raise fail(
            f"the database file {make_url(url).database} is damaged (SQLite's quick_check: "
            f"{damage}): serving would acknowledge answers and feedback it may not keep. "
            "Restore it from a backup, removing any -wal and -shm files beside it that "
            "are not the backup's own (docs/operations.md, 'Backup and restore')"
        )
    try:
        if downgrade_to is None:
            revisions = migrate(url)
            # At this release's revision, which tables.py spells out index by index.
            check_indexes(url)
            return revisions
        if confirm is None:
            return downgrade(url, downgrade_to)
        planned_from, undone = downgrade_plan(url, downgrade_to)
        confirm(planned_from, undone)
        # Run only from the revision confirmed: the database may have moved meanwhile.
        return downgrade(url, downgrade_to, planned_from=planned_from)
    except DowngradeTargetError as exc:
        raise fail(f"db downgrade {downgrade_to}: {exc}; nothing was changed") from None
    except ValueError as exc:  # a backend other than SQLite or PostgreSQL
        raise fail(f"NEXTBEST_DATABASE_URL: {exc}") from None
    except (
        SchemaTooNewError,
        MigrationLockTimeoutError,
        UnversionedSchemaError,
        MissingIndexError,
    ) as exc:
        raise fail(f"NEXTBEST_DATABASE_URL: {exc}") from None
    except UNAVAILABLE_ERRORS as exc:
        raise fail(_unreachable(url, describe_database_error(exc))) from None


def _unreachable(url: str, error: str) -> str:
    """What ``serve`` and ``db`` say of a database they cannot connect to."""
    return (
        f"cannot reach the database {without_password(url)} (NEXTBEST_DATABASE_URL): "
        f"{error}; check that the database server is running and that the setting names "
        "it (host, port, database, user), then run the command again"
    )


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

    settings = read_settings()
    if path is not None:
        if not path.exists():  # anything else there (a directory...) the loader names
            raise fail(f"{path}: no such file")
        settings = settings.model_copy(update={"rules_file": path})
    rules = check_rules_file(settings)  # an invalid file stops here, naming the field
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
    loaded, version = model_asked(settings, model)
    catalog = loaded.catalog
    try:
        fitted = HistoryRules(  # its notes are printed as it logs them
            rules,
            channels=catalog["channel"].astype(str).to_numpy(dtype=object),
            action_ids=catalog["action_id"].astype(str).to_numpy(dtype=object),
            consent_on_file=EligibilityIndex.build(loaded).consent_on_file,
        )
    except RulesError as exc:
        raise fail(str(exc)) from None
    channels = sorted(set(catalog["channel"].astype(str)))
    said = (
        f"{len(fitted.notes)} note(s) above; a reload would take it (`strict: true` would "
        "refuse it)"
        if fitted.notes
        else "fits it"
    )
    stdout.print(
        f"{rules.source} (rules {rules.fingerprint}) against the catalog of model "
        f"'{settings.model_name}' version {version} ({plural(len(catalog), 'action')} on "
        f"{', '.join(channels)}): {said}",
        highlight=False,
    )
    if fitted.notes:
        raise typer.Exit(code=1)


def db_status() -> None:
    """Say the database's schema revision and this release's.

    Exit code 0 when they match (or there is no schema yet), 1 when the database is
    behind, 2 when it is newer than this release or cannot be reached."""
    from nextbest.storage.db import UNAVAILABLE_ERRORS, describe_database_error, schema_revisions

    settings = read_settings()
    url = settings.resolved_database_url
    shown = without_password(url)
    try:
        found, head = schema_revisions(url)
    except UNAVAILABLE_ERRORS as exc:
        raise fail(_unreachable(url, describe_database_error(exc))) from None
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


def db_upgrade() -> None:
    """Upgrade the database's schema to this release's, as `nextbest serve` does at start.

    Every other command refuses a database whose schema is behind: run this
    once the servers sharing the database run this release (a worker of an older
    release cannot start on a newer schema)."""
    settings = read_settings()
    before, after = _migrate_schema(settings)
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


def db_downgrade(
    revision: Annotated[
        str,
        typer.Argument(
            help="The schema revision to go down to (0011): the newest of the release "
            "being rolled back to (its `nextbest --version`)."
        ),
    ],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Downgrade without asking (a script, a deployment job); what it drops "
            "is listed all the same. Without it, off a terminal, nothing is changed.",
        ),
    ] = False,
) -> None:
    """Downgrade the database's schema to an older revision, to roll the code back.

    Run it with the newer release, which knows the way down, before starting the
    older one. What the migrations undone added is deleted, with its data: they are
    listed with the tables, columns and indexes they drop, and asked about first
    (--yes: not); back the database up first (docs/operations.md, 'Upgrading and
    rolling back'). One transaction: a failure leaves the schema as it was, and so
    does a database moved to another revision since the list was read. Exit code 2
    when nothing was changed (a target refused, no --yes off a terminal, not
    confirmed, the revision moved)."""
    settings = read_settings()
    shown = without_password(settings.resolved_database_url)

    def confirm(found: str | None, undone: list[UndoneMigration]) -> None:
        if not undone:  # at the target already: nothing to drop
            return
        stdout.print(
            f"{shown}: downgrading from revision {found} to {revision} undoes:", highlight=False
        )
        for step in undone:
            stdout.print(f"  {step.revision} {step.description}", highlight=False)
            if step.drops:
                stdout.print(f"       drops {', '.join(step.drops)}", highlight=False)
        if yes:
            return
        if not on_a_terminal():
            raise fail(
                "not on a terminal: pass --yes to downgrade, dropping the above with their "
                "data (nothing was changed)"
            )
        if not confirmed(
            "Drop these, with the data they hold? This cannot be undone (a backup can restore it)"
        ):
            raise fail("not confirmed: nothing was changed")

    before, after = _migrate_schema(settings, downgrade_to=revision, confirm=confirm)
    if before == after:
        said = f"schema revision {after} already: nothing to do"
    else:
        said = f"schema downgraded from revision {before} to {after}"
    stdout.print(f"{shown}: {said}", highlight=False)
