"""What the commands share: option types, the settings, dates, the training and gate
config files, the data directory and a Dask cluster to read it with, the serving rules
file, the model ``--model`` names, and paths and stores named in an error."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import typer

from nextbest.cli.output import console, fail, note
from nextbest.settings import (
    Settings,
    get_settings,
    refuse_unusable_place,
    unknown_environment_settings,
    without_password,
)

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from nextbest.policy.rules import ServingRules


DataOpt = Annotated[
    Path, typer.Option("--data", help="Directory with hcps, catalog, interactions.")
]


# picks and explain decide as a request does for its date: one option, named as
# `train --as-of` and as the API's `date` (explain's first name), so neither is a typo.
def _purpose_read(value: str) -> str:
    """``--purpose`` as the API reads a request's: ``Medical`` (a CRM's spelling) is
    ``medical``; anything else is left for the command to refuse, naming the word meant."""
    from nextbest.limits import PURPOSES

    lowered = value.strip().lower()
    return lowered if lowered in PURPOSES else value


PurposeOpt = Annotated[
    str,
    typer.Option(
        help="promotional or medical (in any case).", callback=_purpose_read, show_default=True
    ),
]
DecisionDateOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        "--date",
        help="Decide for this date or time (UTC without an offset; default: today); a date "
        "alone is its start, or now when it is today, as for the API's date.",
    ),
]
DECISION_DATE = "--as-of/--date"  # how an error names it, given either way


DaskOpt = Annotated[
    str | None,
    typer.Option(
        "--dask",
        envvar="NEXTBEST_DASK_SCHEDULER",
        help="Train on a Dask cluster: 'local' (a worker per core of this machine) "
        "or a scheduler's address (tcp://host:8786). Default: in this process.",
    ),
]


def stores() -> str:
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


def path_error(exc: OSError) -> str:
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


def check_dir_to_write(directory: Path, option: str) -> None:
    """Stop (exit 2, naming ``option`` and the path) unless files can be written in
    ``directory``, or it can be made where it is: checked without making it, so that
    a run refused later (a store that does not exist) leaves no empty directory
    behind. The command makes it once it writes."""
    place = directory
    while not place.exists() and place != place.parent:
        place = place.parent
    code = None
    if not place.is_dir():  # the directory itself, or a path under a file
        code = errno.ENOTDIR
    elif not os.access(place, os.W_OK | os.X_OK):
        code = errno.EACCES
    if code is not None:
        raise fail(f"{option}: {path_error(OSError(code, os.strerror(code), str(place)))}")


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


Store = Literal["registry", "log"]
STORE_NAMES: dict[Store, str] = {"registry": "model registry", "log": "recommendation log"}


def read_settings() -> Settings:
    """The ``NEXTBEST_*`` settings; an invalid one stops the command, naming the variable."""
    from pydantic import ValidationError

    global UNKNOWN_SAID
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"NEXTBEST_{'_'.join(str(part) for part in error['loc']).upper()}"
            f"={_shown_input(error.get('input'))!r}: {error['msg'].removeprefix('Value error, ')}"
            f"{_bound_hint(error)}"
            for error in exc.errors()
        )
        raise fail(f"invalid setting: {problems}") from None
    if not UNKNOWN_SAID:
        UNKNOWN_SAID = True
        for said in unknown_environment_settings():
            console.print(f"[yellow]warning:[/yellow] {said}", highlight=False)
    return settings


def refuse_missing_models_dir(
    settings: Settings,
    *reads: Store,
    writes_for_others: str | None = None,
    log_optional: bool = False,
    answers_from_log: bool = False,
) -> None:
    """Stop (exit 2) a command that works only on what its stores hold when a store it
    ``reads`` (``registry``: the MLflow registry; ``log``: the recommendation log) is
    kept in the models directory (its own setting unset) and that directory does not
    exist: most likely ``NEXTBEST_MODELS_DIR`` is mistyped, and the command would make
    empty stores there and answer as if nothing had been trained or logged (``no
    champion``). Called once the command's options are checked.

    ``writes_for_others``: what a command that writes there (``erase``, ``feedback``,
    ``picks --log``) would leave where no server reads it; said instead, with the
    command that makes the store.

    A command that reads or writes the log is stopped as well when
    ``NEXTBEST_DATABASE_URL`` names a SQLite file that does not exist (see
    :func:`_refuse_missing_log_file`), unless it also answers before anything was
    served (``log_optional``: ``lookup --hcp ID --models``); and one that writes for
    others, or whose answer is what the log holds (``answers_from_log``: ``lookup``,
    ``prune``, ``uplift-report``, ``evaluate`` and ``promote``), when the setting is
    unset and the models directory holds no log yet (:func:`_refuse_missing_default_log_file`)."""
    if "log" in reads and not log_optional:
        _refuse_missing_log_file(settings, writes_for_others=writes_for_others)
    models = settings.resolved_models_dir
    kept_there = {
        "registry": settings.registry_uri is None and settings.tracking_uri is None,
        "log": settings.database_url is None,
    }
    there = [STORE_NAMES[store] for store in reads if kept_there[store]]
    if not there:
        return
    if models.exists():
        if kept_there["log"] and (writes_for_others is not None or answers_from_log):
            _refuse_missing_default_log_file(settings, writes_for_others)
        return
    refuse_unusable_place(models)  # under a file: that is said, not a missing directory
    given = (
        f"NEXTBEST_MODELS_DIR is {settings.models_dir}"
        if "models_dir" in settings.model_fields_set
        else f"NEXTBEST_MODELS_DIR is not set: the default, {settings.models_dir} in the "
        "working directory"
    )
    if writes_for_others is not None:
        raise fail(
            f"the models directory {models} does not exist ({given}): {writes_for_others}; "
            "check the setting's spelling, or make its stores first with `nextbest db upgrade`"
        )
    raise fail(
        f"the models directory {models} does not exist ({given}): this command works on "
        f"the {' and '.join(there)} kept there and makes none; check the setting's "
        "spelling, or make one with `make demo` or `nextbest train --data DIR`"
    )


def _refuse_missing_log_file(settings: Settings, *, writes_for_others: str | None = None) -> None:
    """Stop (exit 2) when ``NEXTBEST_DATABASE_URL`` names a SQLite file that does not
    exist: a server or ``nextbest db upgrade`` makes it, so most likely the setting is
    mistyped, and connecting would make the file (and its directory) and answer from
    an empty log (an uplift report of nothing, no contacts for caps), or write where
    no server reads. ``writes_for_others``: what a command that writes the log would
    leave there (as for :func:`refuse_missing_models_dir`)."""
    if not settings.database_url:  # kept in the models directory: checked there
        return
    missing = _missing_log_file(settings)
    if missing is None:
        return
    url = without_password(settings.database_url)
    given = f"no recommendation log at {missing} (NEXTBEST_DATABASE_URL is {url})"
    if writes_for_others is not None:
        raise fail(
            f"{given}: {writes_for_others}; check its spelling, or make the database with "
            "`nextbest db upgrade`"
        )
    raise fail(
        f"{given}: this command reads the log kept there and makes none, and nothing has "
        "been served or stored with this setting; check its spelling, or make the database "
        "with `nextbest db upgrade`"
    )


def _refuse_missing_default_log_file(settings: Settings, writes_for_others: str | None) -> None:
    """Stop (exit 2) a command that reads the log, or writes it for others (``erase``,
    ``feedback``, ``picks --log``: ``writes_for_others``), when ``NEXTBEST_DATABASE_URL``
    is unset and the models directory holds no log yet: nothing was served or stored
    with it, so most likely a job of a deployment whose servers log to PostgreSQL, run
    without the variable (cron's environment, ``sudo``). A prune would prune nothing
    there every week, a lookup answer an access request with "nothing logged", an
    uplift report say there is no evidence, an erasure store its suppressions and a
    send its answers (with the propensities off-policy evaluation needs) where no
    server or retrain reads them. A new SQLite deployment makes the log first with
    ``nextbest db upgrade``; so does an e-mail one before its first ``picks --log``,
    with no server run before it."""
    missing = _missing_log_file(settings)
    if missing is None:
        return
    given = (
        f"no recommendation log at {missing} (NEXTBEST_DATABASE_URL is not set: kept in "
        "the models directory)"
    )
    if writes_for_others is not None:
        raise fail(
            f"{given}: {writes_for_others}; if the servers use another database "
            "(PostgreSQL), set NEXTBEST_DATABASE_URL as they have it; before anything is "
            "served from this directory, make the log with `nextbest db upgrade`"
        )
    raise fail(
        f"{given}: this command reads the log kept there and makes none, and nothing has "
        "been served or stored with this directory; if the servers use another database "
        "(PostgreSQL), set NEXTBEST_DATABASE_URL as they have it"
    )


def _missing_log_file(settings: Settings) -> Path | None:
    """The recommendation log's SQLite file (named by ``NEXTBEST_DATABASE_URL``, else
    in the models directory) when it does not exist; None when it does, and for
    another database."""
    from nextbest.storage.db import missing_sqlite_file

    try:
        return missing_sqlite_file(settings.resolved_database_url)
    except Exception:  # an unparsable URL: the store's own error says it when opened
        return None


def note_missing_log(settings: Settings) -> None:
    """For a command that reads the contact history and writes no log (``explain``,
    ``picks`` without ``--log``; see :func:`~nextbest.storage.db.history_session`):
    say that the log's SQLite file does not exist, so it was read as empty (and not
    made) and caps, cool-downs and dismissals saw no contacts. Before the first
    answer is served that is so; otherwise the setting is most likely mistyped."""
    missing = _missing_log_file(settings)
    if missing is None:
        return
    given = (
        f"NEXTBEST_DATABASE_URL is {without_password(settings.database_url)}"
        if settings.database_url
        else "NEXTBEST_DATABASE_URL is not set: kept in the models directory"
    )
    note(
        f"no recommendation log at {missing} ({given}): read as empty and not made, so "
        "caps, cool-downs and dismissals counted no contacts; as it should be before "
        "anything is served, else check the setting's spelling"
    )


UNKNOWN_SAID = False  # misspelt NEXTBEST_* variables are warned of once per process


_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _bound_hint(error: Any) -> str:
    """For a setting out of its bounds, what the setting is (its description), and for
    a share given as a percentage (``NEXTBEST_HOLDOUT_RATE=10``) the share to write."""
    if error["type"] not in _BOUND_ERRORS or not error["loc"]:
        return ""
    field = Settings.model_fields.get(str(error["loc"][0]))
    if field is None or not field.description:
        return ""
    said = field.description.rstrip(".")
    hint = f"; the setting: {said[:1].lower()}{said[1:]}"
    limit = error.get("ctx", {}).get("lt", error.get("ctx", {}).get("le"))
    try:
        given = float(error.get("input"))
    except (TypeError, ValueError):
        return hint
    if limit == 1 and 1 < given <= 100:
        hint += f"; for {given:g}%, write {given / 100:g}"
    return hint


def _shown_input(value: Any) -> Any:
    """A setting's value as the error may show it: a URL's password hidden."""
    return without_password(value) if isinstance(value, str) else value


def parse_date(value: str | None, option: str) -> datetime | None:
    if value is None:  # the serving code (sklearn: a second) is not imported for nothing
        return None
    from nextbest.service.recommend import EARLIEST_DECISION, LATEST_DECISION, check_decision_date

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(
            f"{option} '{value}' is not a date (use YYYY-MM-DD, or an ISO 8601 time)"
        ) from None
    try:
        return cast(datetime, check_decision_date(when))
    except ValueError:
        raise fail(
            f"{option} '{value}' is not a decision date: use one from {EARLIEST_DECISION} "
            f"to {LATEST_DECISION}"
        ) from None


def refuse_future_since(start: datetime | None, given: str | None, why: str) -> None:
    """Refuse ``--since`` (``start``, as :func:`parse_date` read ``given``) when it is
    later than now: nothing is logged that late. ``why`` says what that leaves the
    command (``no request is logged that late``), after ``--since X is in the future: ``."""
    if start is not None and start.replace(tzinfo=start.tzinfo or UTC) > datetime.now(UTC):
        raise fail(f"--since {given} is in the future: {why}")


def parse_since(value: str | None, why: str) -> datetime | None:
    """``--since``, read by :func:`parse_date` and refused by :func:`refuse_future_since`
    when it is in the future."""
    start = parse_date(value, "--since")
    refuse_future_since(start, value, why)
    return start


def parse_decision_date(value: str | None, option: str) -> datetime | date | None:
    """``--as-of`` / ``--date`` of a decision, as a request's ``date`` is read: a day
    alone (``2026-12-05``) is that day, which :func:`decision_time` takes as its start,
    or as now when it is today (contacts made earlier today count); a time is that time."""
    when = parse_date(value, option)
    if when is not None and value is not None and len(value.strip()) == 10:
        return when.date()
    return when


def data_dir(data: Path) -> Path:
    """``--data``, once it is a directory: a path that is none (a typo, a table's file
    given) is a path error naming it, as other paths are, not a break of the data
    contract."""
    if data.is_dir():
        return data
    code = errno.ENOTDIR if data.exists() else errno.ENOENT
    raise fail(f"--data: {path_error(OSError(code, os.strerror(code), str(data)))}")


def load_data(data: Path) -> Any:
    from nextbest.contract import ContractError, load_dataset

    data_dir(data)
    try:
        return load_dataset(data)
    except ContractError as exc:
        raise fail(str(exc)) from None


def dask_given_as(context: typer.Context) -> str:
    """How the scheduler was asked for, as its errors name it: ``--dask``, or
    NEXTBEST_DASK_SCHEDULER when the value came from there."""
    source = context.get_parameter_source("dask")
    return "NEXTBEST_DASK_SCHEDULER" if source and source.name == "ENVIRONMENT" else "--dask"


@contextmanager
def dask_cluster(
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
        raise fail(
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
        raise fail(f"{given_as}: {exc}") from None
    except Exception as exc:
        said = cluster_failure(exc)
        if said is None:
            raise
        raise fail(f"{given_as}: {said}") from None


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
        raise fail(str(exc)) from None


def read_train_config(path: Path | None) -> Any:
    """The training config ``--config`` names (else training/train.yaml, else the
    defaults), saying which and where its levers came from."""
    from nextbest.learning.config import load_train_config

    config = _config(load_train_config, path, TRAIN_CONFIG, ValueError)
    source = config.source
    if source == "built-in defaults":
        source += f" (no {TRAIN_CONFIG} here)"
    console.print(f"train config: {source} (levers: {config.levers_source})", highlight=False)
    _note_if_no_settings(config.source, "training uses the built-in defaults")
    return config


def _note_if_no_settings(source: str, uses: str) -> None:
    """A note when the config file ``source`` (or "built-in defaults": none) holds no
    settings: read as the defaults, as it should be, but a file emptied by mistake
    (or every line commented out) is said, with what applies instead (``uses``)."""
    from nextbest.yamlfile import read_settings_file

    if source == "built-in defaults":
        return
    try:
        settings = read_settings_file(Path(source), source, ValueError)[0]
    except ValueError:  # changed since it was read: nothing to say about it here
        return
    if not settings:
        note(
            f"{source} holds no settings (it is empty, or all comments): {uses}; if it "
            "was emptied by mistake, put its settings back"
        )


def check_rules_file(settings: Settings) -> ServingRules:
    """Read the serving rules before any work: an invalid or missing named file stops."""
    from nextbest.policy.rules import RulesError, ServingRules

    try:
        return ServingRules.configured(settings)
    except RulesError as exc:
        raise fail(str(exc)) from None


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


def read_gate_config(path: Path | None, *, said: bool = True) -> Any:
    """The gate config ``--config`` / ``--gate`` names (else training/gate.yaml, else
    the defaults), saying which (:func:`say_gate_config`) unless not ``said``:
    evaluate and promote say it once the gate runs, not before a refusal found first."""
    from nextbest.loop.gate import GateError, load_gate_config

    config = _config(load_gate_config, path, GATE_CONFIG, GateError)
    if said:
        say_gate_config(config, path)
    return config


def say_gate_config(config: Any, path: Path | None) -> None:
    """Which gate config ``config`` was read from (``path``, as :func:`read_gate_config`
    took it): retrain and evaluate must agree on its share."""
    source = path or (Path(GATE_CONFIG) if Path(GATE_CONFIG).exists() else None)
    console.print(
        f"gate config: {source or f'built-in defaults (no {GATE_CONFIG} here)'} "
        f"(evaluation_share {config.evaluation_share:g})",
        highlight=False,
    )
    defaults = ", ".join(
        f"{key}: {value:g}" if isinstance(value, float) else f"{key}: {value}"
        for key, value in type(config)().model_dump().items()
    )
    _note_if_no_settings(config.source, f"the gate uses the built-in defaults ({defaults})")


def challenger_answering(
    settings: Settings, hcp_id: str, now: datetime, *, served: Callable[[], tuple[Any, str]]
) -> tuple[Any, str] | None:
    """The challenger's model and version when a server answers ``hcp_id`` at ``now``
    with it (:func:`~nextbest.service.recommend.challenger_answers`), said in a note;
    None: the served version answers it (``served`` loads its model and version, asked
    only for an HCP outside the challenger's share: does it know the HCP?). Loads the
    challenger only for an HCP of its share or one the served version does not know."""
    from nextbest import registry
    from nextbest.policy.exploration import challenger_draw
    from nextbest.service.recommend import challenger_answers, history_day

    share = settings.challenger_share
    served_version = registry.alias_version(settings, settings.serve_alias)
    version = registry.challenger_beside(settings, served_version)
    if version is None:
        return None
    in_share = challenger_draw(hcp_id, version) < share
    known = () if in_share else served()[0].hcp_index
    if not in_share and hcp_id in known:
        return None  # not loaded for the others
    model = registry.load_version(settings, version, alias=registry.CHALLENGER_ALIAS)
    if not challenger_answers(
        hcp_id,
        now,
        version=version,
        share=share,
        known=model.hcp_index,
        history_day=history_day(model),
        served=known,
    ):
        return None  # it does not know the HCP, or its history ends after `now`
    whose = (
        "in the challenger's share of HCPs"
        if in_share
        else f"not known to the served version, {served_version}, and known to the challenger"
    )
    served_too = f"; `--model {settings.serve_alias}` for the served version's answer"
    note(
        f"{hcp_id} is {whose} (NEXTBEST_CHALLENGER_SHARE {share:g}): servers answer it "
        f"with version {version} (alias '{registry.CHALLENGER_ALIAS}')"
        + (served_too if in_share else "")
    )
    return model, version


def _alias_hint(settings: Settings, alias: str) -> str:
    """`` (did you mean 'champion'?)`` naming the alias the registry holds that
    ``alias`` is near (any case: aliases are lower case as nextbest sets them); ''
    when near none, or when the registry cannot list them."""
    from nextbest import registry
    from nextbest.yamlfile import near_hint

    try:
        versions = registry.list_versions(settings)
    except registry.TrainingRunsMissingError as exc:
        versions = exc.versions
    except registry.RegistryError:
        return ""
    return near_hint(alias, sorted({a for v in versions for a in v.aliases}), any_case=True)


def model_asked(settings: Settings, name: str | None) -> tuple[Any, str]:
    """The model ``explain --model`` names: a version number, an alias, or (None)
    the served alias; a version the registry does not hold is named with those it does."""
    from nextbest import registry

    if name is None:
        return registry.load_alias(settings)
    if not name.strip().isdigit():
        alias = name.strip()
        if registry.alias_version(settings, alias) is None:
            if not registry.registry_exists(settings) or alias == settings.serve_alias:
                raise fail(
                    f"--model {name}: model '{settings.model_name}' has no version with "
                    f"alias '{alias}' yet; train one with `nextbest train --data DIR`"
                )
            raise fail(  # a name that is none of the aliases set
                f"--model {name}: model '{settings.model_name}' has no alias '{alias}'"
                f"{_alias_hint(settings, alias)} "
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
        raise fail(f"--model {name}: {exc}") from None
    if asked not in known:
        raise fail(
            f"--model {name}: model '{settings.model_name}' has no version {asked} "
            f"(its versions: {', '.join(known) or 'none yet'}; `nextbest models` lists them)"
        )
    return registry.load_version(settings, asked), asked
