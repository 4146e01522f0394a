"""MLflow tracking and model registry: log a run, register a version, serve by alias.

The served artifact is an MLflow pyfunc model wrapping a :class:`ScoringModel`
(joblib). The API loads it once by alias (``models:/nextbest@champion``), never
by run id, and never at import time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import pandas as pd
import yaml

from nextbest.locking import take_within, try_flock
from nextbest.settings import Settings, refuse_unusable_place, without_password

if TYPE_CHECKING:
    # Imported where used: sklearn and LightGBM (2 s) are no part of what a command
    # that reads or names versions (models, an alias checked by train) needs first.
    from nextbest.learning.scoring import ScoringModel
    from nextbest.learning.train import TrainResult

logger = logging.getLogger(__name__)

SCORING_ARTIFACT = "scoring_model"
FORMAT_TAG = "artifact_format"  # ScoringModel pickle layout a version was written with
CODE_TAG = "nextbest_version"
# The git commit of the checkout the code ran from ("+modified": with uncommitted
# changes to its tracked files); "unknown" for an installed package.
SOURCE_TAG = "source_commit"
# Of a "+modified" checkout: SHA-256 naming its edits (see source_edits), so that two
# runs of the same edits are known to be of the same code.
EDITS_TAG = "source_edits_sha256"
# SHA-256 over every file of the version's model directory (see artifact_digest),
# taken when it was registered and checked at every load.
DIGEST_TAG = "artifact_sha256"
# The alias a training asked for its version, e.g. challenger (retrain), or champion
# (the first `train` of a model, which makes it champion after its training run; taken
# off when another version became champion first): a version registered in full whose
# training stopped before it set the alias is said by `nextbest models` and given it
# by `--repair` (see _with_alias_unset).
REGISTERED_AS_TAG = "registered_as"
CHAMPION_ALIAS = "champion"
# What `retrain` registers its version as, and what the gate judges against the champion.
CHALLENGER_ALIAS = "challenger"
# Version tags of a challenger taken out of service by `nextbest withdraw`: when (ISO
# 8601, UTC), why, and by whom (:func:`decided_by`).
WITHDRAWN_TAG = "withdrawn_at"
WITHDRAWN_REASON_TAG = "withdrawn_reason"
WITHDRAWN_BY_TAG = "withdrawn_by"
# The champion a promotion replaced, kept for `nextbest rollback`.
PREVIOUS_CHAMPION_ALIAS = "previous_champion"
# Written into a model directory by MLflow itself when it is loaded by a models:/
# URI (which name and version it was loaded as): not part of what was registered.
MLFLOW_LOAD_NOTE = "registered_model_meta"
# The experiment (``experiment + suffix``) of the decisions on the champion: the
# gate's evaluations, promotions and rollbacks, and a champion set by training.
DECISIONS_SUFFIX = "-evaluation"


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    # Of a version a training was asked to make champion (``--alias champion``) and
    # did not: why, naming the champion now, and what to do (:func:`log_training_run`).
    not_champion: str | None = None
    # Of a version just trained (:func:`log_training_run`): the code that trained it, as
    # VersionSummary says it (its SOURCE_TAG, where its run keeps the patch of a
    # "+modified" checkout's edits, and why it has none or what a cut one leaves out).
    source_commit: str | None = None
    source_patch: str | None = None
    source_patch_note: str | None = None


class RegistryError(RuntimeError):
    """The registry could not answer (no such model, alias or version)."""


class RegistryUnreadableError(RegistryError):
    """An MLflow store cannot be read (a SQLite file that is no database or is
    locked, a database server that is down): nothing is known of the registry's
    aliases and versions, which is not the same as a missing alias. ``store`` says
    which: ``registry`` (also when it is the tracking store too) or ``tracking
    store`` (``NEXTBEST_TRACKING_URI``, when the registry is another store)."""

    def __init__(self, message: str, *, store: str = "registry") -> None:
        super().__init__(message)
        self.store = store


class TrainingRunsMissingError(RegistryError):
    """The registry's versions name training runs the tracking store does not have
    (``NEXTBEST_TRACKING_URI`` pointed at another store than they were trained in, or
    their runs deleted): what was read of them without those runs is in ``versions``."""

    def __init__(
        self, message: str, *, versions: list[VersionSummary], run_ids: Sequence[str]
    ) -> None:
        super().__init__(message)
        self.versions = versions
        self.run_ids = frozenset(run_ids)


class ArtifactsUnreadableError(RegistryError):
    """A registered version's artifacts are missing or unreadable where the registry says."""


class ArtifactAlteredError(RegistryError):
    """A registered version's artifacts are not the ones registered: their SHA-256
    (:func:`artifact_digest`) differs from the ``artifact_sha256`` tag taken then."""

    def __init__(self, named: str, *, version: str, expected: str, found: str, where: str) -> None:
        super().__init__(
            f"{named}: its artifacts at {where} were altered after it was registered "
            f"(SHA-256 {found}, registered as {expected}); it is not loaded. Restore the "
            "models directory from a backup (docs/operations.md, 'Backup and restore'), or "
            "register a new version with `nextbest retrain` or `nextbest train`"
        )
        self.version = version
        self.expected = expected
        self.found = found


# The logger of MLflow's database stores (tracking and registry on SQLite, PostgreSQL).
MLFLOW_STORE_LOGGER = "mlflow.store.db.utils"


class _StoreFailuresAtDebug(logging.Filter):
    """MLflow's own record of a store failure it then raises (ERROR, "SQLAlchemy
    database error", a traceback and the SQL statement with its parameters) at DEBUG,
    shown only when that logger logs DEBUG (``MLFLOW_LOGGING_LEVEL=DEBUG``): nextbest
    says the failure in one line where it catches it (:class:`RegistryUnreadableError`,
    a failed reload), and an operator's log showed both, the traceback first, at each
    read while the store was down or locked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        # The store logger itself is held at WARNING (see _mlflow): MLflow's own level.
        return logging.getLogger("mlflow").isEnabledFor(logging.DEBUG)


def _mlflow(settings: Settings) -> Any:
    """Import MLflow and point it at the configured stores (never done at import time)."""
    import mlflow

    # MLflow's own download bars would interleave with the command line's output
    # (one per model loaded); set the variable to "true" to see them anyway.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # "Creating initial MLflow database tables...", "Updating database tables": dated
    # INFO lines on a new models directory, amid the command's own progress.
    store_logger = logging.getLogger(MLFLOW_STORE_LOGGER)
    store_logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _StoreFailuresAtDebug) for f in store_logger.filters):
        store_logger.addFilter(_StoreFailuresAtDebug())
    settings.ensure_dirs()
    for uri in dict.fromkeys((settings.resolved_tracking_uri, settings.resolved_registry_uri)):
        _refuse_unusable_sqlite(uri)
        _refuse_unreachable_server(uri)
    mlflow.set_tracking_uri(_mlflow_uri(settings.resolved_tracking_uri))
    mlflow.set_registry_uri(_mlflow_uri(settings.resolved_registry_uri))
    return mlflow


def _mlflow_uri(uri: str) -> str:
    """``uri``, a tracking or registry store, as MLflow is given it: a PostgreSQL store
    with libpq's ``connect_timeout`` (``PG_CONNECT_TIMEOUT_S``) unless it sets its own.

    MLflow makes its SQLAlchemy engine from the URI alone (its
    ``MLFLOW_SQLALCHEMYSTORE_*`` settings size the pool, and none passes connect
    arguments), and the query of the URI is what the driver is given. Without it,
    each new connection of MLflow's pool (the reconnect after a store that answered
    went down: the reload watcher's poll, ``POST /v1/admin/reload``) waited for the
    system's TCP timeout, or for ever on a server that accepts and hangs. A SQLite
    store needs nothing: sqlite3 waits at most 5 s for a lock (its busy timeout),
    then says the store is locked.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from nextbest.limits import PG_CONNECT_TIMEOUT_S

    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):  # not a database (databricks, http...): as given
        return uri
    if url.get_backend_name() != "postgresql" or "connect_timeout" in url.query:
        return uri
    timed = url.update_query_dict({"connect_timeout": str(PG_CONNECT_TIMEOUT_S)})
    return timed.render_as_string(hide_password=False)


# MLflow's stores on a database server: its SQLAlchemy backends other than SQLite.
_SERVER_BACKENDS = frozenset({"postgresql", "mysql", "mssql"})
# Stores on a server that answered _refuse_unreachable_server in this process. MLflow
# keeps a pool of connections to each store from when it first opened it, and one
# that goes down later fails the pool's check of a connection at once, without tries.
_SERVERS_ANSWERED: set[str] = set()


def _refuse_unreachable_server(uri: str, *, again: bool = False) -> None:
    """A store on a database server that does not answer: SQLAlchemy's OperationalError
    (the driver's error: connection refused, timeout expired) after one try, where
    MLflow opening it tried ten times over about 101 s, each with a WARNING of several
    lines, a constant of MLflow's that no setting changes. A PostgreSQL server gets
    libpq's ``connect_timeout`` as MLflow's own connections now do (:func:`_mlflow_uri`),
    which MLflow's tries lacked: on a network that drops packets each waited for the
    system's TCP timeout. Once per process and store, until it answers (about 10 ms);
    ``again``: whether or not it answered before.
    """
    if uri in _SERVERS_ANSWERED and not again:
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    from sqlalchemy.pool import NullPool

    try:
        url = make_url(_mlflow_uri(uri))  # with the connect_timeout MLflow's engine gets
    except (ArgumentError, ValueError):  # not a database (databricks, ...): MLflow's
        return
    if url.get_backend_name() not in _SERVER_BACKENDS:
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
    _SERVERS_ANSWERED.add(uri)


def _refuse_unusable_sqlite(uri: str, *, read: bool = False) -> None:
    """A SQLite store that is a directory: said now (IsADirectoryError naming it),
    where MLflow retried opening it for nearly two minutes before a traceback (the
    tracking store and a registry of its own alike). With
    ``read`` (once, where a command starts, not at every registry call), a file that
    is no database too (sqlite3.DatabaseError)."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "the MLflow store is a directory", str(path))
    if read and path.is_file():
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()


def client(settings: Settings) -> Any:
    mlflow = _mlflow(settings)
    return mlflow.MlflowClient(
        tracking_uri=_mlflow_uri(settings.resolved_tracking_uri),
        registry_uri=_mlflow_uri(settings.resolved_registry_uri),
    )


def active_run_id(settings: Settings) -> str | None:
    """The id of the MLflow run this process has open (a decision at work), or None."""
    run = _mlflow(settings).active_run()
    return None if run is None else str(run.info.run_id)


def experiment_id(settings: Settings, suffix: str = "") -> str:
    """The id of the experiment ``settings.experiment + suffix`` (made if missing, its
    artifacts under the models directory), for a run about to be logged.

    Raises :class:`RegistryError` when the experiment's artifacts live at a path
    that is gone, outside the models directory whose store records them: the
    directory was moved or restored elsewhere, and the run's artifacts would be
    written under the old path, apart from the rest. :class:`RegistryUnreadableError`
    when a store cannot be opened, naming it (the first MLflow read of ``train``,
    ``promote``, ``rollback``: they said "a database cannot be used", naming every store).
    """
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    name = settings.experiment + suffix
    what = f"the experiment '{name}'"
    _reading_client(settings, what)
    mlflow = _mlflow(settings)
    try:
        experiment = mlflow.get_experiment_by_name(name)
    except (MlflowException, SQLAlchemyError, sqlite3.Error) as exc:
        raise _unreadable(settings, what, exc, uri=settings.resolved_tracking_uri) from exc
    if experiment is None:
        return str(mlflow.create_experiment(name, artifact_location=settings.artifact_location))
    old = _moved_from(settings, str(experiment.artifact_location))
    if old is not None:
        raise RegistryError(
            f"the MLflow store in {settings.resolved_models_dir} keeps the artifacts of "
            f"experiment '{name}' under {old}, which is gone: the models directory was "
            "moved or restored at another path, and a new run would write its artifacts "
            f"under {old}, apart from the rest. Put the directory back at {old.parent} "
            "(docs/operations.md, 'Backup and restore'); the versions it holds can still be served "
            "from here"
        )
    return str(experiment.experiment_id)


def _moved_from(settings: Settings, location: str) -> Path | None:
    """The artifact root ``location`` names, when the models directory holding the
    local store was moved away from it: a ``file:`` path ending in ``artifacts``,
    gone, outside the models directory, with an ``artifacts`` directory in the
    models directory in its place. None otherwise (a store elsewhere, a remote
    artifact store, an artifact root a user chose)."""
    from urllib.parse import unquote, urlparse

    if settings.tracking_uri or not location.startswith("file:"):
        return None
    path = Path(unquote(urlparse(location).path))
    models = settings.resolved_models_dir.resolve()
    if path.name != "artifacts" or path.exists() or path.is_relative_to(models):
        return None
    return path if (models / "artifacts").is_dir() else None


def _pyfunc_class() -> type:
    import mlflow.pyfunc

    class NextbestModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        """Pyfunc wrapper: ``predict`` takes a frame with ``hcp_id`` (and optional
        ``k``/``channel``) and returns ranked picks, so ``mlflow models serve``
        gives the same ranking as the API."""

        def load_context(self, context: Any) -> None:
            self.scoring_model: ScoringModel = joblib.load(context.artifacts[SCORING_ARTIFACT])

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: Any = None
        ) -> pd.DataFrame:
            from nextbest.service.picks import picks_frame

            k = int(model_input["k"].iloc[0]) if "k" in model_input and len(model_input) else 5
            channel = (
                str(model_input["channel"].iloc[0])
                if "channel" in model_input and len(model_input)
                else None
            )
            return picks_frame(
                self.scoring_model, hcp_ids=list(model_input["hcp_id"]), k=k, channel=channel
            )

    return NextbestModel


def log_training_run(
    result: TrainResult,
    settings: Settings,
    *,
    extra_params: dict[str, Any] | None = None,
    extra_tags: dict[str, str] | None = None,
    alias: str | None = None,
) -> ModelVersionInfo:
    """Log ``result`` as an MLflow run, register it as a new version of the model.

    ``extra_tags`` go on both the run and the version. The version gets ``alias``
    if given (other than champion: set within the training run, once the version is
    registered in full, and recorded as its :data:`REGISTERED_AS_TAG`); otherwise it
    becomes ``champion`` when the model has no champion yet (the first model is
    served straight away), and the served alias
    (``settings.serve_alias``) too when that is another and names no version yet:
    the server reads that one, and the gate, promote and rollback ``champion``. A
    later version gets no alias, whatever the served alias names: it is served once
    promoted (an unset served alias given to it served it without the gate).

    A version ``alias`` champion is asked for (checked before training: the model had
    no champion) becomes champion only as the first version does: when, once it is
    registered, no version is champion and no decision is in progress. Otherwise it
    keeps no alias and the returned ``not_champion`` says why, naming the champion
    or the decision, and what to do; its :data:`REGISTERED_AS_TAG` is taken off, as
    it is of a first version another training's champion overtook.

    The code recorded (:data:`SOURCE_TAG`, :data:`EDITS_TAG`, the patch) is
    ``result.code``, read when training began (:func:`training_code`), else read now.
    A checkout whose code changed since that reading (edited or committed while it
    trained) is said in a note of ``result`` and of the run and in its
    :data:`SOURCE_CHANGED_TAG`: the record stays the code that trained.
    """
    mlflow = _mlflow(settings)
    experiment = experiment_id(settings)
    code = result.code if result.code is not None else training_code()
    source, edits, patch, patch_note = code.source, code.edits, code.patch, code.patch_note
    changed = code.changed_since()
    if changed is not None:
        result.notes.append(changed)
    # An alias other than champion is set within the training run; champion is a
    # decision of its own, recorded in the decisions experiment after it.
    sets_alias = alias is not None and alias != CHAMPION_ALIAS
    # The first champion too is recorded as the alias the version is registered for: a
    # training stopped before that decision leaves a model serving nothing, and this
    # says what it was to do (`nextbest models --repair` makes it champion).
    registered_as = (
        alias
        if alias is not None
        else CHAMPION_ALIAS
        if alias_version(settings, CHAMPION_ALIAS) is None
        else None
    )
    with mlflow.start_run(experiment_id=experiment) as run, tempfile.TemporaryDirectory() as tmp:
        # A training run interrupted (Ctrl-C, or a SIGTERM the command turns into
        # SystemExit) ends KILLED, saying so, where MLflow's ``with`` ended it FAILED
        # (and a SIGTERM not turned into SystemExit left it RUNNING); the version's
        # tags are written within the run, so a run that ended FINISHED registered it
        # in full.
        try:
            mlflow.log_params({**result.params, **(extra_params or {})})
            mlflow.log_metrics(result.metrics)
            mlflow.set_tags(
                {
                    "data_fingerprint": result.model.metadata.get("data_fingerprint", ""),
                    "uplift_source": result.model.uplift_source,
                    SOURCE_TAG: source,
                    **({EDITS_TAG: edits} if edits else {}),
                    **_mlflow_source_tags(source),
                    **({PATCH_TAG: PATCH_ARTIFACT} if patch is not None else {}),
                    # MLflow keeps tag values of up to 5,000 characters.
                    **({PATCH_NOTE_TAG: patch_note[:4000]} if patch_note else {}),
                    **({SOURCE_CHANGED_TAG: changed[:4000]} if changed else {}),
                    **(extra_tags or {}),
                }
            )
            if patch is not None:
                # Bytes as git wrote them: an edited file need not be UTF-8.
                written = Path(tmp) / Path(PATCH_ARTIFACT).name
                written.write_bytes(patch)
                mlflow.log_artifact(str(written), str(Path(PATCH_ARTIFACT).parent))
            # The files themselves, not only their values and paths: a path is relative
            # to a working directory, and the file may be edited after the run.
            params = {**result.params, **(extra_params or {})}
            kept: set[str] = set()
            for key in ("config.file", "config.levers", "gate.file"):
                named = params.get(key)
                if isinstance(named, str) and Path(named).is_file():
                    # A second file of the same name (a gate config named as the
                    # training config) goes in a folder of its own, not over the first.
                    name = Path(named).name
                    mlflow.log_artifact(named, "config" if name not in kept else f"config/{key}")
                    kept.add(name)
            notes = [*result.notes, *([f"source patch: {patch_note}"] if patch_note else [])]
            mlflow.log_text("\n".join(notes) or "no notes", "notes.txt")
            mlflow.log_text(
                json.dumps(result.model.space.feature_names, indent=1), "feature_names.json"
            )
            for name, figure in _figures(result).items():
                mlflow.log_figure(figure, f"plots/{name}.png")
            artifact = Path(tmp) / "scoring_model.joblib"
            joblib.dump(result.model, artifact, compress=3)
            with warnings.catch_warnings(), _quiet("mlflow.pyfunc"), _without_registration_lines():
                warnings.simplefilter("ignore")
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=_pyfunc_class()(),
                    artifacts={SCORING_ARTIFACT: str(artifact)},
                    pip_requirements=_requirements(),
                    registered_model_name=settings.model_name,
                )
            version = str(info.registered_model_version)
            mlflow_client = client(settings)
            with _model_dir(settings, version) as (root, _):
                digest = artifact_digest(_read_model_dir(root))
            tags = {
                "uplift_source": result.model.uplift_source,
                FORMAT_TAG: str(artifact_format()),
                CODE_TAG: _code_version(),
                SOURCE_TAG: source,
                **({EDITS_TAG: edits} if edits else {}),
                **(extra_tags or {}),
                # The alias the version is registered for (challenger, set below;
                # champion, by the decision after the run): without it, `nextbest
                # models` says so and `--repair` sets it.
                **({REGISTERED_AS_TAG: registered_as} if registered_as else {}),
                # Last: a version that has it was registered in full (see VersionSummary).
                DIGEST_TAG: digest,
            }
            for key, value in tags.items():
                mlflow_client.set_model_version_tag(settings.model_name, version, key, value)
            if sets_alias and alias is not None:
                # Within the run, once registered in full: a run that ended FINISHED
                # left its version with the alias, and one interrupted says so.
                mlflow_client.set_registered_model_alias(settings.model_name, alias, version)
        except BaseException as stopped:
            if not isinstance(stopped, Exception):
                _record_training_interrupted(
                    settings, str(run.info.run_id), stopped, alias=alias if sets_alias else None
                )
            raise
    # The run ended FINISHED: the version is registered in full. A signal from here on
    # is said with what it left (a decision stopped within its moves says its own).
    try:
        served = alias_version(settings, settings.serve_alias)
        # The first champion goes to the training that ends first. Another version made
        # champion while this one trained, or a decision in progress (another training's
        # first champion, between its mark and its move), leaves this one a later version
        # with no alias, asked for champion or not: the champion then moves only by
        # promote, which runs the gate (the check before training cannot see it coming).
        not_champion = None
        made = False
        if alias in (None, CHAMPION_ALIAS):
            try:
                # Training sets a model's first champion (promote moves it after): recorded
                # as a decision beside the promotions and rollbacks, so the champion's
                # timeline starts here; recorded first, then the alias moves. Checked again
                # under the decision lock: a champion made meanwhile by another leaves this
                # version without the alias. Not asked for champion, it does not wait for a
                # decision in progress (another training's first champion): a later version.
                made = (
                    alias_version(settings, CHAMPION_ALIAS) is None
                    and (alias == CHAMPION_ALIAS or decision_in_progress(settings) is None)
                    and _log_trained_champion(
                        settings,
                        version,
                        previous=None,
                        training_run_id=str(info.run_id),
                        # A server reading another alias would otherwise have nothing to serve.
                        serve_alias=settings.serve_alias if served is None else None,
                    )
                )
                if not made:
                    champion = alias_version(settings, CHAMPION_ALIAS)
                    not_champion = (
                        f"version {version} is registered in full without alias "
                        f"{CHAMPION_ALIAS}: version {champion} became champion while it trained, "
                        "and the champion changes only by `nextbest promote`, which runs the "
                        f"gate; `nextbest evaluate --version {version}` compares the two, and "
                        f"`nextbest promote --version {version}` makes it champion if the gate "
                        "passes"
                    )
            except (DecisionInProgressError, DecisionLockedError) as exc:
                not_champion = str(exc)
        if registered_as == CHAMPION_ALIAS and not made:
            # Registered for a champion it did not become: `nextbest models --repair` would
            # make it one once no version is champion (see _with_alias_unset).
            client(settings).delete_model_version_tag(
                settings.model_name, version, REGISTERED_AS_TAG
            )
        registered = describe_version(settings, version)
        run_artifacts = str(run.info.artifact_uri)
        return replace(
            registered,
            not_champion=not_champion if alias == CHAMPION_ALIAS else None,
            source_commit=source,
            source_patch=None if patch is None else f"{run_artifacts.rstrip('/')}/{PATCH_ARTIFACT}",
            source_patch_note=patch_note,
        )
    except BaseException as stopped:
        if not isinstance(stopped, Exception) and not interruption_said(stopped):
            _said(
                stopped,
                _stopped_after_training_run(version, str(run.info.run_id), stopped, registered_as),
            )
        raise


# Who made a decision run (train, promote, keep, rollback): the operating-system
# account by its user id. MLflow's own ``mlflow.user`` is the LOGNAME or USER
# variable, which anyone can set.
DECIDED_BY_TAG = "decided_by"


def decided_by() -> str:
    """The account this process runs as, for :data:`DECIDED_BY_TAG`."""
    from nextbest.service.requester import os_user

    return os_user()


# Tag of a decision run whose alias move failed or was interrupted: "false" when the
# champion did not move (the champion's timeline leaves the run out), "true" when it
# did (kept in the timeline, whatever the run's status).
ALIAS_MOVED_TAG = "alias_moved"
# Tag of a decision run a signal stopped during its alias moves: "Ctrl-C" or "SIGTERM".
INTERRUPTED_TAG = "interrupted"


class AliasNotMovedError(RegistryError):
    """A decision was recorded as a run, then moving its alias failed: the run is
    marked (:data:`ALIAS_MOVED_TAG` ``false``, status FAILED) and the alias stays."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class DecisionUnfinishedError(RegistryError):
    """A decision moved the champion, then the registry refused what it leaves beside
    (:func:`move_recorded`'s ``end``): the decision is made, its run tagged
    :data:`ALIAS_MOVED_TAG` ``true``."""


class DecisionInProgressError(RegistryError):
    """Another process on this host is at work on a decision (its mark names it, and it
    runs): nothing is finished or decided beside it. ``found``: that decision;
    ``then``: what to do once it has ended."""

    def __init__(
        self, found: UnfinishedDecision, *, then: str = "run the command again once it has ended"
    ) -> None:
        super().__init__(
            f"{found.said().split('; it is left alone')[0]}; nothing was decided beside it: {then}"
        )
        self.found = found


# Registered model tag of a decision under way: what it leaves once made (the JSON of
# a DecisionEnd), written before the champion moves and taken off once all of it is
# written. Left behind by a process killed outright (SIGKILL, a power cut) after the
# champion moved, it says what is unfinished (finish_unfinished writes it); while the
# process that wrote it runs, the decision is in progress and left alone.
PENDING_TAG = "decision_pending"

# The decision runs this process is at work on (within move_recorded): a mark naming
# this process is in progress only while its decision is, not as long as the process
# runs (a command that goes on after a decision failed, a test's threads).
_DECIDING: set[str] = set()
_DECIDING_LOCK = threading.Lock()


@contextmanager
def _deciding(run_id: str) -> Iterator[None]:
    with _DECIDING_LOCK:
        _DECIDING.add(run_id)
    try:
        yield
    finally:
        with _DECIDING_LOCK:
            _DECIDING.discard(run_id)


@dataclass(frozen=True)
class DecidingProcess:
    """The process that wrote a decision's mark: its ``host`` (name), ``pid`` and
    ``started``, a token of when it started (on Linux the boot's id and the start
    time in clock ticks, from ``/proc``: a later process given the same pid has
    another; empty where there is no ``/proc``, and the pid alone is checked)."""

    host: str
    pid: int
    started: str = ""

    @classmethod
    def of(cls, pid: int) -> DecidingProcess:
        return cls(host=socket.gethostname(), pid=pid, started=_process_started(pid))

    @classmethod
    def this(cls) -> DecidingProcess:
        return cls.of(os.getpid())

    def alive(self, *, run_id: str | None = None) -> bool:
        """Whether this process runs (on this host: of another host's processes nothing
        is known, and they are taken as ended); this very process only while it is at
        work on decision run ``run_id``."""
        if not self.on_this_host:
            return False
        if self.is_this_one:
            with _DECIDING_LOCK:
                return run_id is not None and run_id in _DECIDING
        if self.started:
            return _process_started(self.pid) == self.started
        if os.name != "posix":  # Windows' os.kill(pid, 0) would end that process
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another account's process runs with that pid
            return True
        return True

    def ended(self) -> bool:
        """Whether this process is known to have ended: one of this host that no longer
        runs (a later process given its pid has another ``started``). Of another host's
        processes nothing is known, and this very process runs."""
        return self.on_this_host and not self.is_this_one and not self.alive()

    def said(self) -> str:
        return f"process {self.pid} on host {self.host}"

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    @property
    def is_this_one(self) -> bool:
        """This very process (a later one given its pid has another ``started``)."""
        return (
            self.on_this_host
            and self.pid == os.getpid()
            and self.started == _process_started(self.pid)
        )


def _process_started(pid: int) -> str:
    """When process ``pid`` started, as ``<boot id>/<clock ticks since boot>`` (Linux's
    ``/proc``); "" where that cannot be read (no such process, no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
    # Field 22, starttime; the command's name (field 2) may hold spaces and parentheses.
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{boot}/{fields[19]}" if len(fields) > 19 else ""


# Registered model tag: the versions that have been champion, oldest first, which
# ``rollback`` walks back through (nextbest.loop.gate).
HISTORY_TAG = "champion_history"


def champion_history(settings: Settings) -> list[str]:
    """Versions that have been champion, oldest first (from the registered model tag
    :data:`HISTORY_TAG`); none when no model of that name is registered."""
    from mlflow.exceptions import MlflowException

    try:
        model = client(settings).get_registered_model(settings.model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    raw = model.tags.get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


@dataclass(frozen=True)
class DecisionEnd:
    """What a decision that makes version ``champion`` the champion (in place of
    ``replaces``) leaves beside it once the alias moved, written by
    :func:`finish_decision`; each part is checked before it is written, so writing it
    again changes nothing.

    ``kind``: ``promotion``, ``rollback`` or ``training``; ``history``: the
    :data:`HISTORY_TAG` it leaves (None: untouched); ``aliases``: aliases it gives a
    version, or takes off (None); ``released``: aliases taken off the champion where
    they name it (the promoted challenger); ``version_tags``: version -> tags it
    sets. ``run_id``, ``at`` (ISO 8601, UTC), ``by`` and ``process``: its decision
    run, when it was recorded, by whom (:data:`DECIDED_BY_TAG`) and which process
    (None: written by a nextbest that did not record it), set by :func:`move_recorded`.
    """

    kind: str
    champion: str
    replaces: str | None
    history: tuple[str, ...] | None = None
    aliases: Mapping[str, str | None] = field(default_factory=dict)
    released: tuple[str, ...] = ()
    version_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    run_id: str = ""
    at: str = ""
    by: str = ""
    process: DecidingProcess | None = None

    @property
    def named(self) -> str:
        """The decision in a sentence: ``promotion of version 3``."""
        if self.kind == "rollback":
            return f"rollback to version {self.champion}"
        if self.kind == "training":
            return f"training of version {self.champion} as champion"
        return f"{self.kind} of version {self.champion}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DecisionEnd:
        """Raises ValueError (or TypeError, KeyError) for text that is not one."""
        raw = json.loads(text)
        history = raw.get("history")
        process = raw.get("process")
        return cls(
            kind=str(raw["kind"]),
            champion=str(raw["champion"]),
            replaces=None if raw.get("replaces") is None else str(raw["replaces"]),
            history=None if history is None else tuple(str(v) for v in history),
            aliases={str(k): None if v is None else str(v) for k, v in raw["aliases"].items()},
            released=tuple(str(a) for a in raw["released"]),
            version_tags={
                str(v): {str(k): str(t) for k, t in tags.items()}
                for v, tags in raw["version_tags"].items()
            },
            run_id=str(raw.get("run_id", "")),
            at=str(raw.get("at", "")),
            by=str(raw.get("by", "")),
            process=None
            if process is None
            else DecidingProcess(
                host=str(process["host"]),
                pid=int(process["pid"]),
                started=str(process.get("started", "")),
            ),
        )

    def in_progress(self) -> bool:
        """Whether the process that wrote this decision's mark is still at work on it."""
        return self.process is not None and self.process.alive(run_id=self.run_id)


@dataclass(frozen=True)
class UnfinishedDecision:
    """A decision whose champion moved and whose :class:`DecisionEnd` is not all
    written (its process killed outright, or at work on another host): ``unwritten``
    says what is missing, one phrase each (``alias previous_champion names version 1,
    not version 2``); empty when only the tag saying it is under way is left.
    ``in_progress``: its process still runs on this host (the champion moved or
    not): it is at work, and nothing is said missing."""

    end: DecisionEnd
    unwritten: tuple[str, ...]
    in_progress: bool = False

    def said(self) -> str:
        """What happened, in one sentence, and the command that finishes it."""
        end = self.end
        if self.in_progress and end.process is not None:
            return (
                f"the {end.named} ({self._recorded()}) is in progress: {end.process.said()} "
                "is at work on it; `nextbest models --repair`, promote and rollback wait "
                "for it to end before they act (where no decision lock keeps it, a "
                "registry over HTTP beside a SQLite store: repair leaves it alone and they "
                "refuse), and train makes no first champion beside it"
            )
        elsewhere = end.process is not None and not end.process.on_this_host
        return f"{self.what()}. `nextbest models --repair` finishes it" + (
            " once it is not" if elsewhere else ""
        )

    def what(self) -> str:
        """What happened, without the command that finishes it: what is known of its
        process (whether it runs is known on its own host only), then what is missing."""
        end, process = self.end, self.end.process
        if process is None:  # a mark written before nextbest recorded its process
            stopped = (
                "stopped before it finished (its process was killed outright, or is still at work)"
            )
        elif not process.on_this_host:
            stopped = (
                f"has not finished (it was made on host {process.host}, by process "
                f"{process.pid}, where it may still be at work)"
            )
        elif process.is_this_one:  # a decision that failed, and the caller went on
            stopped = (
                f"stopped before it finished (this process, {process.pid} on host "
                f"{process.host}, is no longer at work on it)"
            )
        else:
            stopped = f"stopped before it finished (its {process.said()} has ended)"
        return (
            f"the {end.named} ({self._recorded()}) moved the champion and {stopped}: "
            f"{'; '.join(self.unwritten) or 'nothing but its mark'}"
        )

    def _recorded(self) -> str:
        end = self.end
        return (
            f"replacing {end.replaces or 'none'}; MLflow run {end.run_id}"
            + (f", recorded {end.at[:19].replace('T', ' ')} UTC" if end.at else "")
            + (f" by {end.by}" if end.by else "")
        )


def _unwritten(settings: Settings, end: DecisionEnd) -> list[tuple[str, Callable[[], None]]]:
    """The parts of ``end`` the registry does not hold yet: what is missing and how
    to write it, in the order the decision writes them."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    name = settings.model_name
    model = mlflow_client.get_registered_model(name)
    aliases = {str(a): str(v) for a, v in (model.aliases or {}).items()}
    steps: list[tuple[str, Callable[[], None]]] = []
    if end.history is not None:
        history, now = ",".join(end.history), model.tags.get(HISTORY_TAG, "")
        if now != history:
            steps.append(
                (
                    f"{HISTORY_TAG} is {now or 'empty'}, not {history}",
                    partial(mlflow_client.set_registered_model_tag, name, HISTORY_TAG, history),
                )
            )
    for alias, version in end.aliases.items():
        held = aliases.get(alias)
        if version is None and held is not None:
            steps.append(
                (
                    f"alias {alias} still names version {held}",
                    partial(mlflow_client.delete_registered_model_alias, name, alias),
                )
            )
        elif version is not None and held != version:
            steps.append(
                (
                    f"alias {alias} names "
                    + (f"version {held}" if held else "no version")
                    + f", not version {version}",
                    partial(mlflow_client.set_registered_model_alias, name, alias, version),
                )
            )
    for alias in end.released:
        if aliases.get(alias) == end.champion:
            steps.append(
                (
                    f"alias {alias} still names the champion, version {end.champion}",
                    partial(mlflow_client.delete_registered_model_alias, name, alias),
                )
            )
    for version, tags in end.version_tags.items():
        try:
            found = mlflow_client.get_model_version(name, version).tags or {}
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue  # deleted since: nothing to tag
            raise
        missing = {k: v for k, v in tags.items() if found.get(k) != v}
        if missing:
            steps.append(
                (
                    f"version {version} lacks its tag{'s' if len(missing) > 1 else ''} "
                    + ", ".join(missing),
                    partial(_tag_version, mlflow_client, name, version, missing),
                )
            )
    return steps


def _tag_version(mlflow_client: Any, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)


def finish_decision(settings: Settings, end: DecisionEnd) -> list[str]:
    """Write what ``end`` leaves that the registry does not hold yet, then take off its
    :data:`PENDING_TAG` (when it is still this decision's); what was missing, one
    phrase each. Safe to repeat, and to run beside the decision's own process."""
    done = []
    for said, write in _unwritten(settings, end):
        write()
        done.append(said)
    mlflow_client = client(settings)
    pending = mlflow_client.get_registered_model(settings.model_name).tags.get(PENDING_TAG)
    if pending is not None and _pending_run(pending) == end.run_id:
        mlflow_client.delete_registered_model_tag(settings.model_name, PENDING_TAG)
    return done


def _pending_run(text: str) -> str | None:
    try:
        return DecisionEnd.from_json(text).run_id
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def unfinished_decision(settings: Settings) -> UnfinishedDecision | None:
    """The decision the registry marks as under way (:data:`PENDING_TAG`) when the
    champion moved to its version, or when the process that marked it is still at
    work on it (``in_progress``); None when there is none, or it did not move and
    its process is gone (not made: its run says so, :mod:`nextbest.loop.lineage`)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    what = "the decision under way"
    if not _registry_exists_readable(settings, what):
        return None
    mlflow_client = _reading_client(settings, what)
    try:
        model = mlflow_client.get_registered_model(settings.model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise _unreadable(settings, what, exc) from exc
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise _unreadable(settings, what, exc) from exc
    text = model.tags.get(PENDING_TAG)
    if text is None:
        return None
    try:
        end = DecisionEnd.from_json(text)
    except (ValueError, TypeError, KeyError, AttributeError):
        logger.warning(
            "model '%s' has a %s tag that is not a decision nextbest wrote (%.80s): ignored",
            settings.model_name,
            PENDING_TAG,
            text,
        )
        return None
    if end.in_progress():
        return UnfinishedDecision(end, (), in_progress=True)
    if alias_version(settings, CHAMPION_ALIAS) != end.champion:
        return None
    return UnfinishedDecision(end, tuple(said for said, _ in _unwritten(settings, end)))


def decision_in_progress(settings: Settings) -> UnfinishedDecision | None:
    """The decision another process on this host is at work on (its mark names it, and
    it runs), None when there is none: nothing should be decided beside it."""
    found = unfinished_decision(settings)
    return found if found is not None and found.in_progress else None


def finish_unfinished(settings: Settings) -> UnfinishedDecision | None:
    """Finish the decision :func:`unfinished_decision` finds (what it lacked, written
    now); None when there is none.

    Raises:
        DecisionInProgressError: its process is still at work on it (this host): it is
            left to finish, and nothing should be decided beside it.
        DecisionUnfinishedError: the registry refused to finish it.
    """
    from mlflow.exceptions import MlflowException

    found = unfinished_decision(settings)
    if found is None:
        return None
    if found.in_progress:
        raise DecisionInProgressError(found)
    try:
        return UnfinishedDecision(found.end, tuple(finish_decision(settings, found.end)))
    except (MlflowException, OSError) as exc:
        raise DecisionUnfinishedError(
            f"{found.what()}; and "
            f"the registry {without_password(settings.resolved_registry_uri)} refused to "
            f"finish it: {_one_line(exc)}; once it takes writes again, `nextbest models "
            "--repair` finishes it"
        ) from exc


def take_off_not_made(settings: Settings) -> DecisionEnd | None:
    """Take off a :data:`PENDING_TAG` left by a decision killed outright before the
    champion moved (the champion is not its version: it was not made, and its run
    says so, :mod:`nextbest.loop.lineage`); the decision it named, None when there
    was none, or its process is still at work on it. The next decision would replace
    it; ``nextbest models --repair``, a promotion and a rollback take it off first.

    Raises:
        RegistryError: the registry refused to take it off.
    """
    from mlflow.exceptions import MlflowException

    if not registry_exists(settings):
        return None
    mlflow_client = client(settings)
    try:
        text = mlflow_client.get_registered_model(settings.model_name).tags.get(PENDING_TAG)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if text is None:
        return None
    try:
        end = DecisionEnd.from_json(text)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # not nextbest's: unfinished_decision warns of it, and it is left
    if end.in_progress():
        return None  # at work on it, about to move the champion
    if alias_version(settings, CHAMPION_ALIAS) == end.champion:
        return None  # moved: finish_unfinished finishes it
    try:
        mlflow_client.delete_registered_model_tag(settings.model_name, PENDING_TAG)
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"the {end.named} (MLflow run {end.run_id}) was killed before the champion "
            f"moved (not made), and the registry "
            f"{without_password(settings.resolved_registry_uri)} refused to take off its "
            f"{PENDING_TAG} tag: {_one_line(exc)}"
        ) from exc
    logger.info(
        "the %s (MLflow run %s) was killed before the champion moved: not made; "
        "its %s tag is taken off",
        end.named,
        end.run_id,
        PENDING_TAG,
    )
    return end


class DecisionLockedError(RegistryError):
    """Another process held the model's decision lock (:func:`deciding_alone`) for as
    long as this decision would wait (``NEXTBEST_DECISION_WAIT_S``): nothing was
    recorded or moved. ``holder``: who held it, None when that is not known."""

    def __init__(self, message: str, *, holder: DecisionHolder | None) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class DecisionHolder:
    """Who holds a model's decision lock: the ``decision`` (``promotion``,
    ``rollback``, ``champion decision of a training``, ``repair``: what the others
    call it), its ``process``, and ``since``
    (ISO 8601, UTC; "" when not known)."""

    decision: str
    process: DecidingProcess
    since: str = ""

    def said(self) -> str:
        return f"the {self.decision} by {self.process.said()}" + (
            f" (deciding since {self.since[:19].replace('T', ' ')} UTC)" if self.since else ""
        )

    def to_json(self) -> str:
        return json.dumps({**asdict(self.process), "decision": self.decision, "since": self.since})

    @classmethod
    def from_json(cls, text: str) -> DecisionHolder | None:
        """None for text that is not one (an empty lock file: no holder written yet)."""
        try:
            raw = json.loads(text)
            process = DecidingProcess(
                host=str(raw["host"]), pid=int(raw["pid"]), started=str(raw.get("started", ""))
            )
            return cls(str(raw["decision"]), process, str(raw.get("since", "")))
        except (ValueError, TypeError, KeyError):
            return None


# A decision writes who it is into the lock file just after it takes the flock: a
# waiter reading the file in between finds it empty (or, mid-write, cut short, or
# still naming a decision killed outright, which never emptied it), and would name no
# one (or that ended process). It reads it again for up to this long (seconds); a
# holder that cannot write the file (another account's) leaves it as it was, and a
# waiter then says "another process" this much later.
HOLDER_WRITTEN_WITHIN_S = 0.05
_HOLDER_READ_EVERY_S = 0.005


def _holder_pause() -> None:
    time.sleep(_HOLDER_READ_EVERY_S)


class _FileLock:
    """A decision lock that is ``flock`` on a file beside a registry on this machine's
    file system (a SQLite file, a ``./mlruns`` directory), as ``nextbest keys`` locks
    the key file. The holder writes who it is into the file; the operating system
    releases the lock when its process ends, however it ends."""

    def __init__(self, path: Path) -> None:
        self.key = str(path)
        self.named = str(path)
        self.where = f"it holds {path}"
        self.path = path
        self._fd: int | None = None
        self._writable = True

    def open(self, settings: Settings, holder: DecisionHolder) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            # Made by another account: locked all the same, without saying who holds it.
            try:
                self._fd, self._writable = os.open(self.path, os.O_RDONLY), False
            except OSError:
                raise RegistryError(
                    f"the decision lock {self.path} of model '{settings.model_name}' cannot "
                    f"be opened or made ({_one_line(exc)}): nothing was decided. Give this "
                    f"account the right to write in {self.path.parent}, as it has for the "
                    "registry there"
                ) from exc

    def try_take(self, holder: DecisionHolder) -> bool:
        assert self._fd is not None
        if not try_flock(self._fd):
            return False
        if self._writable:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                taken = replace(holder, since=datetime.now(UTC).isoformat())
                os.pwrite(self._fd, taken.to_json().encode(), 0)
        return True

    def holder(self) -> DecisionHolder | None:
        """Who holds the lock, as written into the file; None when no holder is written
        there within :data:`HOLDER_WRITTEN_WITHIN_S` (or the file cannot be read). A
        process of this host that has ended is no holder: a decision killed outright
        leaves who it was in the file, the lock released by the system."""
        deadline = time.monotonic() + HOLDER_WRITTEN_WITHIN_S
        while True:
            try:
                # Bytes no holder writes (it writes JSON, ASCII) are no holder, not a crash.
                found = DecisionHolder.from_json(self.path.read_bytes().decode(errors="replace"))
            except OSError:
                return None
            if found is not None and found.process.ended():
                found = None
            if found is not None or time.monotonic() >= deadline:
                return found
            _holder_pause()

    def lost(self) -> str | None:
        """Held from its take to its close: its descriptor, open all that time, holds it."""
        return None

    def close(self, *, taken: bool) -> None:
        if self._fd is None:
            return
        if taken and self._writable:
            with contextlib.suppress(OSError):  # a waiter reads no holder that has gone
                os.ftruncate(self._fd, 0)
        os.close(self._fd)  # releases the lock
        self._fd = None


class _SessionLock:
    """A decision lock held by a session of a database server (the registry's, or the
    deployment's own store's), on a connection of its own for the whole decision: the
    server releases it when that connection ends (the process ended, the network
    dropped, the session was killed).
    Subclasses say how the server takes it, names its holder and tells it is held."""

    named: str

    def __init__(self, url: Any, model_name: str, *, in_store: bool = False) -> None:
        """``url``: the registry's database, or (``in_store``) the deployment's own
        store (``NEXTBEST_DATABASE_URL``), beside a registry that has no lock."""
        digest = hashlib.sha256(f"nextbest decision {model_name}".encode()).digest()
        self.lock_id = int.from_bytes(digest[:8], "big", signed=True)
        self.key = f"{url.render_as_string(hide_password=True)}#{self.lock_id}"
        self.url = url
        self.in_store = in_store
        self._engine: Any = None
        self._connection: Any = None

    @property
    def where(self) -> str:
        return f"it holds {self.named}" + (" (NEXTBEST_DATABASE_URL)" if self.in_store else "")

    def _connect_args(self, holder: DecisionHolder) -> dict[str, Any]:
        return {}

    def open(self, settings: Settings, holder: DecisionHolder) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.pool import NullPool

        self._engine = create_engine(
            self.url,
            poolclass=NullPool,
            # No transaction left open for minutes while the gate evaluates: the
            # session's lock outlives transactions.
            isolation_level="AUTOCOMMIT",
            connect_args=self._connect_args(holder),
        )
        try:
            self._connection = self._engine.connect()
        except SQLAlchemyError as exc:
            self._engine.dispose()
            if not self.in_store:
                raise _unreadable(settings, "the decision under way", exc) from exc
            from nextbest.storage.db import describe_database_error

            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise RegistryError(
                f"the database {without_password(settings.resolved_database_url)} "
                "(NEXTBEST_DATABASE_URL), which holds the decision lock of model "
                f"'{settings.model_name}', cannot be reached, so nothing was decided: "
                f"{describe_database_error(cause)}"
            ) from exc

    def _held(self) -> bool:
        """Whether this session holds the lock, as its server says."""
        raise NotImplementedError

    def lost(self) -> str | None:
        """How this session lost the lock since it took it, None while it holds it: the
        server released it with the session, which ended (killed by an administrator, a
        server restart, a dropped network), and another decision may hold it now."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            held = self._held()
        except SQLAlchemyError as exc:
            return f"its connection to the database ended ({_one_line(exc)})"
        if not held:
            return "its connection to the database was made again, without the lock"
        return None

    def close(self, *, taken: bool) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.close()  # ends the session, and its lock with it
        if self._engine is not None:
            self._engine.dispose()
        self._connection = self._engine = None


class _AdvisoryLock(_SessionLock):
    """A decision lock that is a PostgreSQL session-level advisory lock. The
    connection's ``application_name`` names the holder, which ``pg_stat_activity``
    shows the others."""

    _NAME = re.compile(r"^nextbest (\d+)@(\S+) (.+)$")
    # This lock, granted: a bigint key is held as two oids, its high and its low 32 bits.
    _GRANTED = (
        "l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = CAST(:high AS oid) AND l.objid = CAST(:low AS oid)"
    )

    def __init__(self, url: Any, model_name: str, *, in_store: bool = False) -> None:
        super().__init__(url, model_name, in_store=in_store)
        self.named = f"PostgreSQL advisory lock {self.lock_id} in database {url.database}"

    def _connect_args(self, holder: DecisionHolder) -> dict[str, Any]:
        return {"application_name": self._application_name(holder)}

    @staticmethod
    def _application_name(holder: DecisionHolder) -> str:
        """``nextbest PID@HOST DECISION`` in the 63 bytes PostgreSQL keeps of it: a long
        host name is cut short (ending in ``~``), not the decision the others name."""
        head, tail = f"nextbest {holder.process.pid}@", f" {holder.decision}"
        host, room = holder.process.host, 63 - len(head) - len(tail)
        if len(host) > room:
            host = host[: max(room - 1, 0)] + "~"
        return (head + host + tail)[:63]

    def _key(self) -> dict[str, int]:
        unsigned = self.lock_id & 0xFFFFFFFFFFFFFFFF
        return {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF}

    def try_take(self, holder: DecisionHolder) -> bool:
        from sqlalchemy import text

        query = text("SELECT pg_try_advisory_lock(:id)")
        return bool(self._connection.execute(query, {"id": self.lock_id}).scalar())

    def holder(self) -> DecisionHolder | None:
        from sqlalchemy import text

        row = self._connection.execute(
            text(
                "SELECT a.application_name, a.query_start FROM pg_locks l "
                f"JOIN pg_stat_activity a ON a.pid = l.pid WHERE {self._GRANTED}"
            ),
            self._key(),
        ).first()
        found = self._NAME.match(row[0] or "") if row is not None else None
        if row is None or found is None:
            return None
        process = DecidingProcess(host=found[2], pid=int(found[1]))
        # Its last statement took the lock: another account's is not shown (None).
        since = row[1].astimezone(UTC).isoformat() if row[1] is not None else ""
        return DecisionHolder(found[3], process, since)

    def _held(self) -> bool:
        from sqlalchemy import text

        return bool(
            self._connection.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = pg_backend_pid() "
                    f"AND {self._GRANTED})"
                ),
                self._key(),
            ).scalar()
        )


# Where a decision holding a MySQL named lock writes who it is, in the registry's
# database: a server shows no text of an idle session to the others (the connection
# attributes that would, only with performance_schema, off by default in MariaDB).
# A row counts only while its connection holds the lock (IS_USED_LOCK): one left by a
# session that ended names no one.
_HOLDERS_TABLE = "nextbest_decision_holders"


class _NamedLock(_SessionLock):
    """A decision lock that is a MySQL (or MariaDB) named lock (``GET_LOCK``), held by
    its session. Named locks belong to the server, not to a database: the name is
    made from the database's name too, so two deployments on one server keep two.
    The holder writes who it is into :data:`_HOLDERS_TABLE` beside MLflow's tables."""

    def __init__(self, url: Any, model_name: str) -> None:
        super().__init__(url, model_name)
        digest = hashlib.sha256(f"nextbest decision {url.database} {model_name}".encode())
        # MySQL keeps names of 64 characters at most.
        self.name = f"nextbest decision {digest.hexdigest()[:40]}"
        self.named = f"MySQL named lock '{self.name}' for database {url.database}"

    def try_take(self, holder: DecisionHolder) -> bool:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        query = text("SELECT GET_LOCK(:name, 0)")
        if self._connection.execute(query, {"name": self.name}).scalar() != 1:
            return False
        taken = replace(holder, since=datetime.now(UTC).isoformat())
        # Not written (an account that may not make the table): "another process".
        with contextlib.suppress(SQLAlchemyError):
            self._connection.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {_HOLDERS_TABLE} (lock_name VARCHAR(64) "
                    "PRIMARY KEY, connection_id BIGINT NOT NULL, holder TEXT NOT NULL)"
                )
            )
            self._connection.execute(
                text(f"REPLACE INTO {_HOLDERS_TABLE} VALUES (:name, CONNECTION_ID(), :holder)"),
                {"name": self.name, "holder": taken.to_json()},
            )
        return True

    def holder(self) -> DecisionHolder | None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        # Written just after the lock is taken: read again for a moment, as a file.
        deadline = time.monotonic() + HOLDER_WRITTEN_WITHIN_S
        while True:
            try:
                written = self._connection.execute(
                    text(
                        f"SELECT holder FROM {_HOLDERS_TABLE} WHERE lock_name = :name "
                        "AND connection_id = IS_USED_LOCK(:name)"
                    ),
                    {"name": self.name},
                ).scalar()
            except SQLAlchemyError:  # no table: no holder ever wrote itself
                return None
            found = DecisionHolder.from_json(written) if written is not None else None
            if found is not None or time.monotonic() >= deadline:
                return found
            _holder_pause()

    def _held(self) -> bool:
        from sqlalchemy import text

        query = text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()")
        return bool(self._connection.execute(query, {"name": self.name}).scalar())

    def close(self, *, taken: bool) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        if taken and self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):  # a waiter reads no holder gone
                self._connection.execute(
                    text(
                        f"DELETE FROM {_HOLDERS_TABLE} WHERE lock_name = :name "
                        "AND connection_id = CONNECTION_ID()"
                    ),
                    {"name": self.name},
                )
        super().close(taken=taken)


_DecisionLock = _FileLock | _AdvisoryLock | _NamedLock


def _decision_lock(settings: Settings) -> _DecisionLock | None:
    """The lock one decision on model ``settings.model_name`` holds at a time: a file
    beside a SQLite or file-system registry, an advisory lock in a PostgreSQL one, a
    named lock in a MySQL (or MariaDB) one. Beside any other registry (an MLflow
    server over HTTP), an advisory lock in the deployment's own store when it is
    PostgreSQL (``NEXTBEST_DATABASE_URL``: every promotion reads the logged decisions
    there, so the processes deciding for one deployment share it). None for a
    registry that does not exist yet (nothing to decide on), and for one beside a
    SQLite store: there decisions are not kept apart."""
    from urllib.parse import unquote, urlparse

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    uri = settings.resolved_registry_uri
    store = _store_file(settings)
    if store is None and not uri.startswith("sqlite:"):
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            store = Path(unquote(parsed.path))
    if store is not None:
        if not store.exists():
            return None
        store = Path(os.path.realpath(store))  # one lock, however the store is named
        name = settings.model_name
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        if safe != name:  # two names alike once made safe keep two locks
            safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        return _FileLock(store.with_name(f".{store.name}.{safe}.decision.lock"))
    try:
        backend = make_url(uri).get_backend_name()
    except (ArgumentError, ValueError):  # not a database: an MLflow server
        backend = ""
    if backend == "postgresql":
        return _AdvisoryLock(make_url(_mlflow_uri(uri)), settings.model_name)
    if backend in ("mysql", "mariadb"):
        return _NamedLock(make_url(uri), settings.model_name)
    own = settings.resolved_database_url  # SQLite or PostgreSQL, as Settings checked
    if make_url(own).get_backend_name() != "postgresql":
        return None
    return _AdvisoryLock(make_url(_mlflow_uri(own)), settings.model_name, in_store=True)


# The decision locks this thread holds (by key): a command holding one calls code
# that takes it again (`nextbest promote`, then the gate's promote), and a second
# take on the same file or database by the same thread would wait for itself.
_HELD_HERE = threading.local()


def _held_here() -> dict[str, _DecisionLock]:
    held: dict[str, _DecisionLock] = _HELD_HERE.__dict__.setdefault("locks", {})
    return held


@contextmanager
def deciding_alone(
    settings: Settings,
    decision: str,
    *,
    then: str = "run the command again once it has ended",
    afterwards: str = "decides on what it left",
    nothing: str = "decided nothing",
) -> Iterator[None]:
    """Hold the decision lock of model ``settings.model_name`` while the block
    decides: from the check that no other decision is under way, through what it
    evaluates, to the champion's move and what it leaves beside. Two decisions
    started at once (a scheduled promote and a manual one, two rollbacks) each passed
    that check before either wrote its mark, and both moved the champion.

    ``decision`` names this one to the others (``promotion``). Finding the lock held,
    it says who holds it (a log warning: this one waits, then ``afterwards``) and
    waits for it up to ``settings.decision_wait_s`` seconds; past that (0: at once)
    it raises :class:`DecisionLockedError` naming the holder, when known, saying it
    did ``nothing`` and ``then`` (what to do). Taken again by the thread that holds
    it, it is held already. A registry with no lock (:func:`_decision_lock`) holds
    none. :func:`move_recorded` checks the lock is still held before the champion
    moves.

    Raises:
        DecisionLockedError: another process held it all that time.
        RegistryError: the lock file cannot be opened or made (naming its directory);
            :class:`RegistryUnreadableError`, the PostgreSQL or MySQL registry cannot be
            reached.
    """
    lock = _decision_lock(settings)
    held = _held_here()
    if lock is None or lock.key in held:
        yield
        return
    me = DecisionHolder(decision, DecidingProcess.this())
    lock.open(settings, me)
    taken = False
    wait = settings.decision_wait_s

    def waiting() -> None:
        other = lock.holder()
        logger.warning(
            "%s is deciding on model '%s': this %s waits for it to end, up to %g s "
            "(NEXTBEST_DECISION_WAIT_S), then %s",
            other.said() if other is not None else "another process",
            settings.model_name,
            decision,
            wait,
            afterwards,
        )

    try:
        taken = take_within(partial(lock.try_take, me), wait, every_s=0.1, waiting=waiting)
        if not taken:
            other = lock.holder()
            waited = (
                f"waited {wait:g} s for it to end (NEXTBEST_DECISION_WAIT_S)"
                if wait
                else "did not wait for it (NEXTBEST_DECISION_WAIT_S is 0)"
            )
            raise DecisionLockedError(
                f"{other.said() if other is not None else 'another process'} is deciding on "
                f"model '{settings.model_name}' ({lock.where}); this {decision} {waited} "
                f"and {nothing}: {then}",
                holder=other,
            )
        held[lock.key] = lock
        try:
            yield
        finally:
            del held[lock.key]
    finally:
        lock.close(taken=taken)


class DecisionLockLostError(AliasNotMovedError):
    """The decision lock this decision held (:func:`deciding_alone`) was lost before
    the champion moved (its PostgreSQL or MySQL session ended): another decision may have
    taken it, so nothing moved, and the run is marked as for an alias not moved."""


def _lock_lost(settings: Settings) -> str | None:
    """How the decision lock this thread holds on ``settings``' model was lost, naming
    it; None while it holds it, or holds none (a registry with no lock)."""
    lock = _decision_lock(settings)
    held = None if lock is None else _held_here().get(lock.key)
    if held is None:
        return None
    how = held.lost()
    if how is None:
        return None
    return f"its decision lock on model '{settings.model_name}' ({held.named}) was lost: {how}"


def _clear_pending(settings: Settings, run_id: str) -> None:
    """Take off the :data:`PENDING_TAG` of decision run ``run_id``, which did not move
    the champion; a store that fails leaves it (read as not made: the champion is
    not its version)."""
    with contextlib.suppress(Exception):
        mlflow_client = client(settings)
        pending = mlflow_client.get_registered_model(settings.model_name).tags.get(PENDING_TAG)
        if pending is not None and _pending_run(pending) == run_id:
            mlflow_client.delete_registered_model_tag(settings.model_name, PENDING_TAG)


def move_recorded(
    settings: Settings,
    run_id: str,
    move: Callable[[], None],
    *,
    end: DecisionEnd,
    stays: str,
) -> None:
    """Call ``move`` (which makes version ``end.champion`` the champion: the decision
    takes effect there) and then write what ``end`` leaves beside it
    (:func:`finish_decision`), inside the decision's run ``run_id``, already written:
    the alias never names a version whose decision went unrecorded. ``end`` is
    written first, as the registered model's :data:`PENDING_TAG`, and taken off
    last, so a process killed outright in between leaves it to say what is
    unfinished (:func:`unfinished_decision`, ``nextbest models``) and how to finish
    it (:func:`finish_unfinished`, ``nextbest models --repair``). The mark names
    this process (:class:`DecidingProcess`): while it is at work on the decision,
    those read it as in progress and leave it alone.

    ``stays``: what the registry still serves when the champion did not move (``the
    champion stays version 1``).

    Interrupted (Ctrl-C, or a SIGTERM the command turns into ``SystemExit``), the run
    ends KILLED with what was done: when the champion had moved, ``end`` is written
    to its end first (the decision is made, and servers may have loaded it already)
    and the run is tagged ``alias_moved`` = ``true``; else ``false``. The interruption
    goes on, said in one line (an ERROR log record). A process killed outright
    (SIGKILL, a power cut) within ``move`` leaves the run RUNNING: the champion's
    timeline judges it by whether the champion moved (:mod:`nextbest.loop.lineage`).

    Raises:
        AliasNotMovedError: ``move`` failed; the run is tagged ``alias_moved`` =
            ``false`` and ends FAILED when the caller's ``with`` block re-raises.
        DecisionLockLostError: the decision lock this thread holds
            (:func:`deciding_alone`) was lost before the move (its PostgreSQL session
            ended): nothing is moved, and the run is marked as above.
        DecisionUnfinishedError: ``move`` was made but writing ``end`` failed; the run
            is tagged ``alias_moved`` = ``true`` (kept in the champion's timeline).
    """
    end = replace(
        end,
        run_id=run_id,
        at=end.at or datetime.now(UTC).isoformat(),
        by=end.by or decided_by(),
        process=DecidingProcess.this(),
    )
    # While it is at work here, its mark reads as in progress (unfinished_decision),
    # and `nextbest models --repair` or another decision leaves it alone.
    with _deciding(run_id):
        _move_and_finish(settings, run_id, move, end, stays)


def _move_and_finish(
    settings: Settings, run_id: str, move: Callable[[], None], end: DecisionEnd, stays: str
) -> None:
    """:func:`move_recorded`'s work, ``end`` complete."""
    from mlflow.exceptions import MlflowException

    decision = end.named
    lost: str | None = None
    try:
        # The point of no return: a decision whose lock was lost since it checked the
        # registry may have another deciding beside it.
        lost = _lock_lost(settings)
        if lost is None:
            client(settings).set_registered_model_tag(
                settings.model_name, PENDING_TAG, end.to_json()
            )
            move()
    except (MlflowException, OSError) as exc:
        said = str(getattr(exc, "message", exc)).strip().splitlines()[0]
        raise AliasNotMovedError(
            f"the {decision} was recorded (MLflow run {run_id}) but the registry "
            f"{without_password(settings.resolved_registry_uri)} refused to move the alias: "
            f"{type(exc).__name__}: {said}; {_marked_not_moved(settings, run_id)}; {stays}. "
            "Once the registry takes writes again, run the command again",
            run_id=run_id,
        ) from exc
    except BaseException as stopped:
        _record_interrupted(settings, run_id, stopped, end, stays)
        raise
    if lost is not None:
        raise DecisionLockLostError(
            f"the {decision} was recorded (MLflow run {run_id}) but {lost}, and another "
            "decision may have been made beside it since: the champion was not moved; "
            f"{_marked_not_moved(settings, run_id)}; {stays}. Run the command again: it "
            "decides on what the registry holds now",
            run_id=run_id,
        )
    try:
        finish_decision(settings, end)
    except (MlflowException, OSError) as exc:
        with contextlib.suppress(MlflowException, OSError):
            client(settings).set_tag(run_id, ALIAS_MOVED_TAG, "true")
        raise DecisionUnfinishedError(
            f"the {decision} is made and recorded (MLflow run {run_id}): the champion is "
            f"version {end.champion}; but the registry "
            f"{without_password(settings.resolved_registry_uri)} refused what the decision "
            f"leaves beside it (aliases previous_champion and challenger, version tags): "
            f"{_one_line(exc)}; once it takes writes again, `nextbest models --repair` "
            "finishes it"
        ) from exc
    except BaseException as stopped:
        _record_interrupted(settings, run_id, stopped, end, stays)
        raise


def _marked_not_moved(settings: Settings, run_id: str) -> str:
    """Mark decision run ``run_id``, whose champion did not move, as such (its
    :data:`PENDING_TAG` taken off, :data:`ALIAS_MOVED_TAG` ``false``); what was done,
    as a clause of the error that says so."""
    from mlflow.exceptions import MlflowException

    _clear_pending(settings, run_id)
    try:
        client(settings).set_tag(run_id, ALIAS_MOVED_TAG, "false")
    except (MlflowException, OSError):
        return (
            "the run could not be marked failed either: it reads as made in `nextbest "
            f"models --history` (tag it {ALIAS_MOVED_TAG} = false, or delete it)"
        )
    return (
        f"the run is marked failed ({ALIAS_MOVED_TAG} = false, status FAILED) and left out "
        "of `nextbest models --history`"
    )


def interruption_said(stopped: BaseException) -> bool:
    """Whether the registry said in its own line what the interruption ``stopped``
    left (a training or decision run ended KILLED, a version registered or not): a
    command says it otherwise, from what it knows of its steps."""
    return bool(getattr(stopped, "_nextbest_said", False))


def _said(stopped: BaseException, said: str) -> None:
    """Say ``said`` of the interruption ``stopped`` (an ERROR record), once."""
    logger.error("%s", said)
    with contextlib.suppress(AttributeError):  # a class with __slots__: said all the same
        stopped._nextbest_said = True  # type: ignore[attr-defined]


def _interruption(stopped: BaseException) -> str:
    """How a command was interrupted: ``Ctrl-C``, ``SIGTERM`` (a ``SystemExit`` the
    command raised for it), else the exception's class."""
    import signal

    if isinstance(stopped, KeyboardInterrupt):
        return "Ctrl-C"
    if isinstance(stopped, SystemExit) and stopped.code == 128 + signal.SIGTERM:
        return "SIGTERM"
    return type(stopped).__name__


def _end_killed(settings: Settings, run_id: str, tags: Mapping[str, str]) -> bool:
    """End run ``run_id`` KILLED with ``tags`` (the fluent API's active run when it is
    that one, whose ``with`` block would end it FAILED); False when the store
    refused (the run may read RUNNING). Raises nothing."""
    try:
        mlflow = _mlflow(settings)
        for key, value in tags.items():
            client(settings).set_tag(run_id, key, value)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run("KILLED")
        else:
            client(settings).set_terminated(run_id, "KILLED")
    except Exception:
        return False
    return True


def _record_interrupted(
    settings: Settings,
    run_id: str,
    stopped: BaseException,
    end: DecisionEnd,
    stays: str,
) -> None:
    """End the decision run ``run_id`` a signal ``stopped`` within its alias moves
    (:func:`move_recorded`): KILLED, tagged with whether the champion had moved to
    ``end.champion`` (then ``end`` is written first), and say so in one line. Raises
    nothing of its own (a second signal goes on): the interruption goes on."""
    how = _interruption(stopped)
    decision, champion = end.named, end.champion
    try:
        moved: bool | None = alias_version(settings, CHAMPION_ALIAS) == champion
    except Exception:  # the store fails too: whether it moved is unknown
        moved = None
    finished = True
    if moved:
        try:
            finish_decision(settings, end)
        except BaseException:  # a second signal, a failing store
            finished = False
    elif moved is False:
        _clear_pending(settings, run_id)
    tags = {INTERRUPTED_TAG: how}
    if moved is not None:
        tags[ALIAS_MOVED_TAG] = str(moved).lower()
    recorded = _end_killed(settings, run_id, tags)
    run = f"MLflow run {run_id}"
    if moved:
        said = (
            f"the {decision} was interrupted ({how}) after the champion moved: it is made, "
            f"and recorded ({run}, marked killed, {ALIAS_MOVED_TAG} = true); the champion is "
            f"version {champion}"
            + (
                ""
                if finished
                else "; what it leaves beside the champion (aliases previous_champion and "
                "challenger, version tags) may be unfinished: `nextbest models` says what, "
                "and `nextbest models --repair` finishes it"
            )
        )
    elif moved is None:
        said = (
            f"the {decision} was interrupted ({how}) after it was recorded ({run}), and "
            "the registry cannot be read to say whether the champion moved: `nextbest "
            "models` says which version is champion"
        )
    else:
        said = (
            f"the {decision} was interrupted ({how}) after it was recorded ({run}) and "
            f"before the champion moved: the run is marked killed ({ALIAS_MOVED_TAG} = "
            f"false) and left out of `nextbest models --history`; {stays}"
        )
    if not recorded:
        said += "; the run could not be marked (it may read RUNNING)"
    _said(stopped, said)


def _record_training_interrupted(
    settings: Settings, run_id: str, stopped: BaseException, *, alias: str | None = None
) -> None:
    """End the training run ``run_id`` a signal ``stopped`` (Ctrl-C, SIGTERM): KILLED,
    tagged :data:`INTERRUPTED_TAG`, saying in one line what it left (a version
    registered before the signal, without all of its tags, or in full but without
    ``alias``, the alias it was to get). Raises nothing of its own: the interruption
    goes on."""
    how = _interruption(stopped)
    found: list[Any] | None
    try:
        mlflow_client = client(settings)
        found = sorted(
            mlflow_client.search_model_versions(f"run_id='{run_id}'"), key=lambda v: int(v.version)
        )
        held = alias_version(settings, alias) if alias is not None and found else None
    except Exception:  # the store fails: said as unknown
        found, held = None, None
    recorded = _end_killed(settings, run_id, {INTERRUPTED_TAG: how})
    said = f"training was interrupted ({how}) while it logged MLflow run {run_id}: " + (
        "the run is marked killed"
        if recorded
        else "the run could not be marked killed (it may read RUNNING)"
    )
    whole = [str(v.version) for v in found or [] if DIGEST_TAG in (v.tags or {})]
    if found and len(whole) == len(found) and alias is not None and held not in whole:
        said += (
            f"; version {', '.join(whole)} was registered from it in full before it "
            f"stopped, but not given alias {alias} (which names "
            + (f"version {held}" if held else "no version")
            + f"): `nextbest models --repair` makes it {alias}"
        )
    elif found and len(whole) == len(found):
        said += f"; version {', '.join(whole)} was registered from it in full before it stopped" + (
            f", as {alias}" if alias is not None else ""
        )
    elif found:
        said += (
            f"; version {', '.join(str(v.version) for v in found)} was registered from it "
            "before it stopped, without all of its tags (`nextbest models` says so of it): "
            "register a new version with `nextbest train` or `nextbest retrain`"
        )
    elif found == []:
        said += "; no version was registered"
    _said(stopped, said)


def _stopped_after_training_run(
    version: str, run_id: str, stopped: BaseException, registered_as: str | None
) -> str:
    """What a training stopped (``stopped``: Ctrl-C, SIGTERM) once its run ``run_id``
    ended FINISHED left: version ``version`` registered in full, and, when it was to
    be the first champion (``registered_as``), whether that is left to do."""
    said = (
        f"training was interrupted ({_interruption(stopped)}) after MLflow run {run_id} "
        f"registered version {version} in full"
    )
    if registered_as != CHAMPION_ALIAS:
        return said
    return (
        f"{said}, as the first champion, before it was made champion: `nextbest models` "
        "says whether it is, and `nextbest models --repair` makes it champion if no "
        "version is"
    )


def _log_trained_champion(
    settings: Settings,
    version: str,
    *,
    previous: str | None,
    training_run_id: str,
    serve_alias: str | None = None,
    reason: str | None = None,
) -> bool:
    """Make ``version`` champion by training (``previous``: the champion it replaces,
    None for the first), and give it ``serve_alias`` too, if given (the alias the
    server reads, when another); recorded first as a run of the decisions experiment
    (``reason``: why, when not the training itself). It holds the decision lock
    (:func:`deciding_alone`) from its check to the move: when the champion is no
    longer ``previous`` (another decision moved it meanwhile) nothing is recorded or
    moved, and the version keeps no alias. Whether it made it.

    Raises:
        AliasNotMovedError: the alias could not be set (the version stays registered).
        DecisionInProgressError: another decision is at work (this host): nothing is
            recorded or moved beside it, which would write its mark over that one's;
            :class:`DecisionLockedError`: another held the lock as long as it waits.
    """
    then = (
        f"version {version} is registered without alias {CHAMPION_ALIAS}; once it has "
        f"ended, `nextbest promote --version {version}` puts it to the gate"
    )
    with deciding_alone(settings, "champion decision of a training", then=then):
        under_way = decision_in_progress(settings)
        if under_way is not None:
            raise DecisionInProgressError(under_way, then=then)
        if alias_version(settings, CHAMPION_ALIAS) != previous:
            return False
        _record_trained_champion(
            settings,
            version,
            previous=previous,
            training_run_id=training_run_id,
            serve_alias=serve_alias,
            reason=reason,
        )
    return True


def _record_trained_champion(
    settings: Settings,
    version: str,
    *,
    previous: str | None,
    training_run_id: str,
    serve_alias: str | None,
    reason: str | None,
) -> None:
    """:func:`_log_trained_champion`'s decision, once it holds the lock and the
    champion is still ``previous``."""
    mlflow = _mlflow(settings)
    with mlflow.start_run(
        experiment_id=experiment_id(settings, DECISIONS_SUFFIX),
        run_name=f"train v{version} as champion",
    ) as run:
        mlflow.log_params(
            {
                "from_version": previous or "none",
                "to_version": version,
                "training_run_id": training_run_id,
            }
        )
        mlflow.set_tags(
            {
                "decision": "train",
                DECIDED_BY_TAG: decided_by(),
                **({"reason": reason} if reason else {}),
            }
        )

        served = serve_alias is not None and serve_alias != CHAMPION_ALIAS
        move_recorded(
            settings,
            str(run.info.run_id),
            lambda: set_alias(settings, CHAMPION_ALIAS, version),
            end=DecisionEnd(
                kind="training",
                champion=version,
                replaces=previous,
                aliases={serve_alias: version} if served and serve_alias else {},
            ),
            stays=(
                f"version {version} is registered without the alias, and the champion "
                + (f"stays version {previous}" if previous else "is none yet")
            ),
        )


def artifact_digest(files: Mapping[str, bytes]) -> str:
    """SHA-256 of a model directory: ``files`` maps each file's path relative to it
    (POSIX) to its bytes.

    The digest of the lines ``<SHA-256 of the file>  <path>`` (newline-ended, in path
    order): what ``sha256sum`` prints, so an auditor can check it without nextbest,
    in the directory: ``find . -type f ! -path ./registered_model_meta -printf
    '%P\\n' | LC_ALL=C sort | xargs sha256sum | sha256sum``.
    """
    return _manifest_digest(files)


def _manifest_digest(files: Mapping[str, bytes | None]) -> str:
    """SHA-256 of the lines ``<SHA-256 of the file>  <path>`` (newline-ended, in path
    order), ``deleted`` in place of the file's SHA-256 when ``files`` maps it to None."""
    manifest = "".join(
        f"{'deleted' if (data := files[p]) is None else hashlib.sha256(data).hexdigest()}  {p}\n"
        for p in sorted(files)
    )
    return hashlib.sha256(manifest.encode()).hexdigest()


def _read_model_dir(root: Path) -> dict[str, bytes]:
    """Every file of the model directory ``root`` by relative POSIX path, but the note
    MLflow adds when it loads one (:data:`MLFLOW_LOAD_NOTE`).

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    if not root.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no model directory", str(root))
    files = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative != MLFLOW_LOAD_NOTE:
            files[relative] = path.read_bytes()
    return files


@contextmanager
def _model_dir(settings: Settings, version: str) -> Iterator[tuple[Path, str]]:
    """The local directory holding ``version``'s model, and its artifact URI: the
    store's own directory for a local artifact store, else a temporary copy
    (downloaded once, deleted on exit).

    Raises:
        MlflowException: no such version, or no artifacts where the store says.
    """
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    _mlflow(settings)
    repo = ModelsArtifactRepository(
        f"models:/{settings.model_name}/{version}",
        tracking_uri=_mlflow_uri(settings.resolved_tracking_uri),
        registry_uri=_mlflow_uri(settings.resolved_registry_uri),
    ).repo
    if isinstance(repo, LocalArtifactRepository):
        yield Path(repo.get_local_path("")), str(repo.artifact_uri)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(repo.download_artifacts("", dst_path=tmp)), str(repo.artifact_uri)


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a library logger's warnings that say nothing to our users (the
    wrapper is ours, so pickling it is expected; its input is a plain frame)."""
    library_logger = logging.getLogger(logger_name)
    level = library_logger.level
    library_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library_logger.setLevel(level)


# MLflow's own lines when a version is registered: the command says which version it
# registered, and "already exists" reads as if something went wrong.
_MLFLOW_REGISTRATION_LINE = re.compile(
    r"(Successfully registered model .*|Registered model .* already exists\. "
    r"Creating a new version of this model\.\.\.|Created version '.*' of model .*)\n?"
)


class _WithoutRegistrationLines(io.TextIOBase):
    """A stream for MLflow's event lines (``eprint``): each line is written on to
    standard error as it ends, but for :data:`_MLFLOW_REGISTRATION_LINE`."""

    def __init__(self) -> None:
        self._line = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._line += text
        *ended, self._line = self._line.split("\n")
        for line in ended:
            if not _MLFLOW_REGISTRATION_LINE.fullmatch(line):
                sys.stderr.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self._line and not _MLFLOW_REGISTRATION_LINE.fullmatch(self._line):
            sys.stderr.write(self._line)
        self._line = ""
        sys.stderr.flush()


@contextmanager
def _without_registration_lines() -> Iterator[None]:
    """MLflow's event lines in the block without :data:`_MLFLOW_REGISTRATION_LINE`.
    Only MLflow's own stream is replaced (``eprint`` reads it at each call): whatever
    else writes to standard error (warnings, a progress heartbeat) goes on as written."""
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    filtered = _WithoutRegistrationLines()
    logging_utils.MLFLOW_LOGGING_STREAM = filtered  # type: ignore[assignment]
    try:
        yield
    finally:
        logging_utils.MLFLOW_LOGGING_STREAM = stream
        filtered.flush()


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"nextbest=={version('nextbest')}",
        f"lightgbm=={version('lightgbm')}",
        f"scikit-learn=={version('scikit-learn')}",
        f"pandas=={version('pandas')}",
    ]


def _figures(result: TrainResult) -> dict[str, Any]:
    from nextbest.evaluation.plots import training_figures

    return training_figures(result)


def alias_version(settings: Settings, alias: str) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist
    (nor the registry: asking does not create it).

    Raises:
        RegistryUnreadableError: the store cannot be read (a file that is no database
            or stays locked, a server that is down): naming the store and the error,
            where answering None sent an operator looking for a missing promotion.
    """
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    store = _store_file(settings)
    if store is not None and not store.exists():
        return None  # MLflow would create it (every poll of a serving worker goes here)
    what = f"alias '{alias}'"
    mlflow_client = _reading_client(settings, what)
    try:
        return str(mlflow_client.get_model_version_by_alias(settings.model_name, alias).version)
    except MlflowException as exc:
        # No such model (RESOURCE_DOES_NOT_EXIST) or alias (INVALID_PARAMETER_VALUE);
        # anything else is the store failing (MLflow wraps its database's errors).
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise _unreadable(settings, what, exc) from exc
    except (SQLAlchemyError, sqlite3.Error) as exc:  # raised while MLflow opens the registry
        raise _unreadable(settings, what, exc) from exc


def challenger_beside(settings: Settings, served: str | None) -> str | None:
    """The version of alias ``challenger`` that servers load beside the ``served``
    version to answer its share of HCPs, and those only it knows
    (NEXTBEST_CHALLENGER_SHARE); None: the share is 0, the alias is unset, or it names
    the served version (just promoted)."""
    if settings.challenger_share <= 0:
        return None
    wanted = alias_version(settings, CHALLENGER_ALIAS)
    return None if wanted == served else wanted


def _stores_usable(settings: Settings, what: str) -> None:
    """Raise :class:`RegistryUnreadableError` naming the MLflow store (tracking store
    or registry) that cannot be opened for reading ``what``: a server that does not
    answer, a SQLite path that is a directory or no database. Opens nothing through
    MLflow, so a SQLite file that does not exist is not made."""
    from sqlalchemy.exc import SQLAlchemyError

    for uri in dict.fromkeys((settings.resolved_tracking_uri, settings.resolved_registry_uri)):
        try:
            _refuse_unusable_sqlite(uri)
            _refuse_unreachable_server(uri)
        except (SQLAlchemyError, IsADirectoryError) as exc:
            raise _unreadable(settings, what, exc, uri=uri) from exc


def _reading_client(settings: Settings, what: str) -> Any:
    """:func:`client` for reading ``what`` of the served model: a store that cannot
    be opened (its server down, its file no database, locked or a directory) raises
    :class:`RegistryUnreadableError` naming that store, the tracking store or the
    registry, where the error named the registry whichever had failed."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    _stores_usable(settings, what)
    try:
        return client(settings)  # MLflow opens the tracking store with its client
    except (MlflowException, SQLAlchemyError, sqlite3.Error) as exc:
        raise _unreadable(settings, what, exc, uri=settings.resolved_tracking_uri) from exc


def check_stores(settings: Settings) -> None:
    """Connect once to each MLflow store on a database server (the tracking store, the
    registry), whether or not it answered before in this process: at most its connect
    timeout each (``PG_CONNECT_TIMEOUT_S`` unless its URI sets one), without MLflow.
    A store in a SQLite file is not checked (a lock is waited for 5 s at most).

    Raises:
        RegistryUnreadableError: a store did not answer, named as the reader of the
            served alias names it (:func:`alias_version`).
    """
    from sqlalchemy.exc import SQLAlchemyError

    for uri in dict.fromkeys((settings.resolved_tracking_uri, settings.resolved_registry_uri)):
        try:
            _refuse_unreachable_server(uri, again=True)
        except SQLAlchemyError as exc:
            raise _unreadable(settings, f"alias '{settings.serve_alias}'", exc, uri=uri) from exc


def _unreadable(
    settings: Settings, what: str, exc: Exception, *, uri: str | None = None
) -> RegistryUnreadableError:
    """The error of the store at ``uri`` (default: the registry) that could not be
    asked for ``what`` of the served model (``alias 'champion'``, ``the versions``),
    in one line, naming that store without its password."""
    from nextbest.storage.db import describe_database_error

    uri = uri or settings.resolved_registry_uri
    store = "registry" if uri == settings.resolved_registry_uri else "tracking store"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    verb = "are" if what.endswith("s") else "is"  # "the versions", "the decision under way"
    return RegistryUnreadableError(
        f"the MLflow {store} {without_password(uri)} cannot be read, so {what} of model "
        f"'{settings.model_name}' {verb} unknown: {describe_database_error(cause)}",
        store=store,
    )


def no_alias_said(settings: Settings, alias: str) -> str:
    """That model ``settings.model_name`` has no ``alias``, naming the registry (and
    saying so when its SQLite file does not exist: none was made here yet, or the
    models directory moved away)."""
    store = _store_file(settings)
    missing = ", a file that does not exist" if store is not None and not store.exists() else ""
    return (
        f"model '{settings.model_name}' has no alias '{alias}' in "
        f"{without_password(settings.resolved_registry_uri)}{missing}"
    )


@dataclass(frozen=True)
class VersionSummary:
    """One registered version as ``nextbest models`` lists it (None: not recorded)."""

    version: str
    aliases: tuple[str, ...]
    registered_at: datetime
    data_as_of: str | None  # the training history's cut-off, ISO 8601 in UTC
    n_hcps: int | None
    n_decisions: int | None
    feedback_rows: int | None  # logged decisions with outcomes that joined the history
    uplift_source: str | None
    eval_auc: float | None  # engagement AUC on the held-out time slice
    # Off-policy value (doubly robust) of the version's policy on that slice: value, 95% CI.
    policy_value_dr: tuple[float, float, float] | None
    # Its gain over the logging policy on the same decisions (paired): gain, 95% CI;
    # None for a version trained before it was recorded.
    gain_over_logged_dr: tuple[float, float, float] | None
    gate: str | None  # the last gate verdict on it as challenger ("passed vs v1 (run ...)")
    promoted_at: str | None  # ISO 8601 in UTC
    rolled_back_at: str | None
    promotion: str | None = None  # how it last became champion: "gate passed" or "forced"
    # When `nextbest withdraw` took alias challenger off it, and why (None: never).
    withdrawn_at: str | None = None
    withdrawn_reason: str | None = None
    # Channels whose feedback came back without engagement events when it was retrained
    # (empty: none; None: not retrained on feedback).
    feedback_engagement_missing: list[str] | None = None
    # When it was retrained (None: not retrained, or by a nextbest that did not record
    # them): history rows naming the recommendation_id of a logged decision, left out
    # (learned from the log), and touches without one that look like logged sends, kept.
    history_rows_logged: int | None = None
    history_repeats_logged: int | None = None
    # The held-out slice the figures above are measured on: the newest share of the
    # version's own history, and its decisions.
    eval_fraction: float | None = None
    eval_decisions: int | None = None
    eval_from: str | None = None  # the slice's first and last decision, ISO 8601 UTC
    eval_until: str | None = None
    # Where it came from, for an audit: its MLflow run, the training data's
    # fingerprint, the release and the commit of the code that trained it.
    run_id: str | None = None
    data_fingerprint: str | None = None
    nextbest_version: str | None = None
    source_commit: str | None = None
    source_edits_sha256: str | None = None  # of a "+modified" commit (EDITS_TAG)
    # Of a "+modified" commit: where its training run keeps the patch of the edits
    # (the artifact's URI, see PATCH_ARTIFACT), and why it has none or what a patch
    # cut at PATCH_LIMIT_BYTES leaves out (PATCH_NOTE_TAG).
    source_patch: str | None = None
    source_patch_note: str | None = None
    # SHA-256 of its model directory when registered (None: registered before it was
    # recorded); every load checks it.
    artifact_sha256: str | None = None
    # Its training run's status when that did not end FINISHED: KILLED (interrupted:
    # ``training_interrupted`` says how, Ctrl-C or SIGTERM) or RUNNING (its process
    # killed outright, or still at work); None when it finished. Judged with
    # ``artifact_sha256``, written last: with it, the version was registered in full.
    training_run_status: str | None = None
    training_interrupted: str | None = None
    # The alias its training gave it, other than champion (:data:`REGISTERED_AS_TAG`).
    registered_as: str | None = None
    # That alias, when the version does not have it though it was registered in full by
    # a training run that did not finish (killed before it set it) and is the newest
    # registered as it, never promoted: :func:`name_unnamed` sets it.
    alias_unset: str | None = None


def _channel_list(tag: str | None) -> list[str] | None:
    """A tag listing channels (``email,webinar``; ``none``) as a list; None if untagged."""
    if tag is None:
        return None
    return [] if tag == "none" else [c for c in tag.split(",") if c]


def list_versions(settings: Settings) -> list[VersionSummary]:
    """Every registered version of the served model, newest first, with its run's record.

    Raises:
        RegistryError: no model of that name is registered.
    """
    missing = RegistryError(
        f"model '{settings.model_name}' has no registered version in "
        f"{without_password(settings.resolved_registry_uri)}; "
        "train one with `nextbest train --data DIR`"
    )
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    what = "the versions"
    if not _registry_exists_readable(settings, what):
        raise missing
    _stores_usable(settings, what)  # a registry down is said first, as ever
    if (said := _tracking_file_missing(settings)) is not None:
        # Listing the versions through MLflow would make the file: said, and none made.
        raise RegistryError(
            f"{said}; set NEXTBEST_TRACKING_URI to that store (their figures, lineage and "
            "decisions are recorded there): nothing was made at the path given"
        )
    mlflow_client = _reading_client(settings, what)
    try:
        found = mlflow_client.search_model_versions(f"name='{settings.model_name}'")
        if not found:
            raise missing
        # Versions found by a search do not carry their aliases; the registered model does.
        model = mlflow_client.get_registered_model(settings.model_name)
        named = model.aliases
    except (MlflowException, SQLAlchemyError, sqlite3.Error) as exc:
        # A damaged or locked store ended `nextbest models` in MLflow's traceback.
        if isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise missing from None
        raise _unreadable(settings, what, exc) from exc
    aliases: dict[str, list[str]] = {}
    for alias, version in named.items():
        aliases.setdefault(str(version), []).append(alias)
    out = []
    runs_missing: list[Any] = []
    for mv in sorted(found, key=lambda v: int(v.version), reverse=True):
        params: dict[str, str] = {}
        metrics: dict[str, float] = {}
        run_tags: dict[str, str] = {}
        status = None
        patch = None
        if mv.run_id:
            run = _training_run(settings, mlflow_client, mv.run_id, what)
            if run is None:
                runs_missing.append(mv)
            else:
                params, metrics, run_tags = run.data.params, run.data.metrics, run.data.tags
                status = str(run.info.status)
                if PATCH_TAG in run_tags:
                    patch = f"{str(run.info.artifact_uri).rstrip('/')}/{run_tags[PATCH_TAG]}"
                    # Recorded under a models directory since moved here: where it is now.
                    moved = _moved_here(settings, patch)
                    patch = patch if moved is None else moved.as_uri()
        value, low, high = (
            metrics.get(f"ope_dr_{k}") for k in ("policy_value", "ci_low", "ci_high")
        )
        gain, gain_low, gain_high = (
            metrics.get(f"ope_dr_gain_over_logged{k}") for k in ("", "_ci_low", "_ci_high")
        )
        out.append(
            VersionSummary(
                version=str(mv.version),
                aliases=tuple(sorted(aliases.get(str(mv.version), []))),
                registered_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
                data_as_of=_utc_iso(params.get("as_of")),
                n_hcps=_int_or_none(params.get("n_hcps")),
                n_decisions=_int_or_none(params.get("n_decisions")),
                feedback_rows=_int_or_none(params.get("feedback_rows")),
                uplift_source=mv.tags.get("uplift_source"),
                eval_auc=metrics.get("eval_auc"),
                policy_value_dr=(
                    (value, low, high)
                    if value is not None and low is not None and high is not None
                    else None
                ),
                gain_over_logged_dr=(
                    (gain, gain_low, gain_high)
                    if gain is not None and gain_low is not None and gain_high is not None
                    else None
                ),
                gate=mv.tags.get("gate"),
                promoted_at=mv.tags.get("promoted_at"),
                rolled_back_at=mv.tags.get("rolled_back_at"),
                promotion=mv.tags.get("promotion"),
                withdrawn_at=mv.tags.get(WITHDRAWN_TAG),
                withdrawn_reason=mv.tags.get(WITHDRAWN_REASON_TAG),
                feedback_engagement_missing=_channel_list(
                    mv.tags.get("feedback_engagement_missing")
                ),
                history_rows_logged=_int_or_none(params.get("history_rows_logged")),
                # A tag of the version where an earlier nextbest recorded it.
                history_repeats_logged=_int_or_none(
                    params.get("history_repeats_logged", mv.tags.get("history_repeats_logged"))
                ),
                eval_fraction=_float_or_none(params.get("eval_fraction")),
                eval_from=params.get("eval_from"),
                eval_until=params.get("eval_until"),
                eval_decisions=(
                    None if (decisions := metrics.get("eval_decisions")) is None else int(decisions)
                ),
                run_id=mv.run_id or None,
                data_fingerprint=run_tags.get("data_fingerprint") or None,
                nextbest_version=mv.tags.get(CODE_TAG),
                source_commit=mv.tags.get(SOURCE_TAG),
                source_edits_sha256=mv.tags.get(EDITS_TAG),
                source_patch=patch,
                source_patch_note=run_tags.get(PATCH_NOTE_TAG),
                artifact_sha256=mv.tags.get(DIGEST_TAG),
                training_run_status=status if status in ("KILLED", "RUNNING") else None,
                training_interrupted=run_tags.get(INTERRUPTED_TAG),
                registered_as=mv.tags.get(REGISTERED_AS_TAG),
            )
        )
    versions = _with_alias_unset(
        out,
        {str(a): str(v) for a, v in named.items()},
        champions_before=bool((model.tags or {}).get(HISTORY_TAG)),
    )
    if runs_missing:
        # A traceback ("Run with id=... not found") named neither store.
        raise TrainingRunsMissingError(
            _runs_missing_said(settings, runs_missing),
            versions=versions,
            run_ids=[mv.run_id for mv in runs_missing],
        )
    return versions


def _training_run(settings: Settings, mlflow_client: Any, run_id: str, what: str) -> Any | None:
    """The run ``run_id`` (a version's training run) from the tracking store, None when
    the store does not have it (another store than it was trained in, or collected
    since: a run deleted but not collected is found). A store that fails raises
    :class:`RegistryUnreadableError` naming the tracking store, and ``what`` of the
    model that is unknown for it."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return mlflow_client.get_run(run_id)
    except (MlflowException, SQLAlchemyError, sqlite3.Error) as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
            tracking = settings.resolved_tracking_uri
            raise _unreadable(settings, what, exc, uri=tracking) from exc
        return None


class DecisionStoreError(RegistryError):
    """A decision on the champion (a promotion, a rollback) refused before anything was
    written: the tracking store it would be recorded in is not the one the versions
    it moves between were trained in, where the decisions before it are recorded."""


# What a refused decision says it did not do.
_NOT_MADE = {
    "promotion": "nothing was promoted",
    "rollback": "nothing was rolled back",
    "evaluation": "nothing was written",  # evaluate's verdict, recorded beside them
}


def check_decision_store(
    settings: Settings,
    *,
    decision: str,
    versions: Callable[[], Iterable[str | None]],
    runs_deleted: bool = False,
) -> None:
    """Refuse to record ``decision`` (``promotion``, ``rollback``, or evaluate's
    ``evaluation``) in a tracking store
    that does not have the training runs of the ``versions`` it moves between (the
    champion, the version made champion; None: no such version), when the tracking
    store is not the registry: the decision run would be written apart from the
    versions' runs and the decisions before it, and `nextbest models --history`, and
    the champion a rollback returns to, would each read half of the trail.

    One store holding both (the default) is never refused: the decision is recorded
    beside the registry, whichever runs it keeps. ``runs_deleted``: the user's word
    that the versions' runs were collected from this tracking store on purpose
    (``mlflow gc``; a run deleted but not collected is still found): not refused.
    ``versions`` is called once the tracking store is known to exist, as every read
    of the registry through MLflow opens the tracking store too, which would make a
    SQLite file that does not exist, with an experiment in it.

    Raises:
        DecisionStoreError: naming both stores, the versions whose runs are missing,
            and the way out; nothing was read from or written to the tracking store
            when it is a SQLite file that does not exist.
        RegistryUnreadableError: a store cannot be opened or read (named).
    """
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    tracking, registry_uri = settings.resolved_tracking_uri, settings.resolved_registry_uri
    what = f"the experiment '{settings.experiment + DECISIONS_SUFFIX}'"
    if tracking == registry_uri or not _registry_exists_readable(settings, what):
        return  # no registry: nothing to decide, as the decision says (no store made)
    not_made = _NOT_MADE[decision]
    if (said := _tracking_file_missing(settings)) is not None:
        raise DecisionStoreError(
            f"{said}, where the decisions on the champion are recorded, and the {decision} "
            f"would be recorded apart from them: {not_made}. Set NEXTBEST_TRACKING_URI to "
            "the store they were trained in"
        )
    # Opened as the decision's own run would open them: a store that fails is named.
    mlflow_client = _reading_client(settings, what)
    missing = []
    for version in dict.fromkeys(v for v in versions() if v is not None):
        try:
            mv = mlflow_client.get_model_version(settings.model_name, version)
        except (MlflowException, SQLAlchemyError, sqlite3.Error) as exc:
            if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                continue  # not registered: the decision itself says so
            raise _unreadable(settings, what, exc) from exc
        if mv.run_id and _training_run(settings, mlflow_client, mv.run_id, what) is None:
            missing.append(mv)
    if not missing or runs_deleted:
        return
    missing.sort(key=lambda mv: int(mv.version), reverse=True)
    raise DecisionStoreError(_runs_missing_said(settings, missing, decision=decision))


def _tracking_file_missing(settings: Settings) -> str | None:
    """When the tracking store is a SQLite file of its own (not the registry) that does
    not exist: the start of a sentence saying so, naming both stores; else None. Every
    read of the registry through MLflow opens the tracking store too, and would make
    that file, with an experiment in it: a read (``nextbest models``) or a refused
    decision must not leave one behind."""
    tracking, registry_uri = settings.resolved_tracking_uri, settings.resolved_registry_uri
    if tracking == registry_uri or not tracking.startswith("sqlite:///"):
        return None
    if Path(tracking.removeprefix("sqlite:///")).exists():
        return None
    return (
        f"the MLflow tracking store {without_password(tracking)} is a file that does not "
        f"exist, so it has none of the training runs of the versions of model "
        f"'{settings.model_name}' in the registry {without_password(registry_uri)}: it "
        "is not the tracking store they were trained in"
    )


def _runs_missing_said(
    settings: Settings, missing: Sequence[Any], *, decision: str | None = None
) -> str:
    """That the registry's versions ``missing`` (newest first) name training runs the
    tracking store does not have, and the likely cause: another tracking store than the
    one they were trained in when the registry is a store of its own. With
    ``decision`` (``promotion``, ``rollback``), that it was refused for it
    (:func:`check_decision_store`)."""
    tracking = without_password(settings.resolved_tracking_uri)
    numbers = ", ".join(str(mv.version) for mv in missing)
    said = (
        f"the MLflow registry {without_password(settings.resolved_registry_uri)} has "
        f"versions of model '{settings.model_name}' ({numbers}) whose training runs the "
        f"tracking store {tracking} does not have (run {missing[0].run_id}"
        + (", ..." if len(missing) > 1 else "")
        + "): "
    )
    if decision is not None:
        return said + (
            "it is probably not the tracking store they were trained in, where the "
            f"decisions on the champion are recorded, and the {decision} would be recorded "
            f"apart from them: {_NOT_MADE[decision]}. Set NEXTBEST_TRACKING_URI to the "
            "store they were trained in; if their runs were deleted from this one on "
            f"purpose, run again with --runs-deleted to record the {decision} here"
        )
    if settings.resolved_tracking_uri != settings.resolved_registry_uri:
        return said + (
            "it is probably not the tracking store they were trained in; set "
            "NEXTBEST_TRACKING_URI to that store (their figures, lineage and decisions "
            "are recorded there)"
        )
    return said + "their runs were deleted from it; restore the store from a backup"


def _with_alias_unset(
    versions: list[VersionSummary], aliases: Mapping[str, str], *, champions_before: bool
) -> list[VersionSummary]:
    """``versions`` (newest first), the one left without the alias its training gave
    it marked (``alias_unset``): the newest registered as that alias, in full, never
    promoted, while the alias names an older version or none, by a training run
    that did not finish. A run that finished set the alias, so one missing since
    was taken off by hand, and a newer version registered as it, or a promotion
    (which takes challenger off), leaves it where it is.

    The first champion is set by a decision after the training run ends: the newest
    version registered in full as champion is marked while no version is champion
    and none was before (``champions_before``: a promotion or rollback wrote the
    history of champions; a champion deleted since is not this)."""
    out = list(versions)
    seen: set[str] = set()
    for i, v in enumerate(out):
        alias = v.registered_as
        if alias is None or alias in seen:
            continue
        seen.add(alias)
        held = aliases.get(alias)
        stopped = (
            held is None and not champions_before
            if alias == CHAMPION_ALIAS
            else v.training_run_status is not None
        )
        if (
            stopped
            and held != v.version
            and (held is None or int(held) < int(v.version))
            and v.artifact_sha256 is not None
            and v.promoted_at is None
            and CHAMPION_ALIAS not in v.aliases
        ):
            out[i] = replace(v, alias_unset=alias)
    return out


@dataclass(frozen=True)
class AliasNamed:
    """An alias :func:`name_unnamed` set on ``version``; ``before``: the version it
    named until then (None: none)."""

    alias: str
    version: str
    before: str | None

    def said(self) -> str:
        was = f"version {self.before}" if self.before else "no version"
        if self.alias == CHAMPION_ALIAS:
            return (
                f"version {self.version}, registered in full as the first champion by a "
                f"training stopped before it set the alias, is champion now (was {was})"
            )
        return (
            f"version {self.version}, registered in full by a training run stopped before it "
            f"gave it alias {self.alias}, is {self.alias} now (was {was})"
        )


def name_unnamed(settings: Settings) -> list[AliasNamed]:
    """Set each alias a training run stopped before it set (``alias_unset`` of
    :func:`list_versions`) on its version; what was set, one per alias. The first
    champion is made as training makes it, recorded as a decision; not while another
    decision is in progress (:func:`unfinished_decision`).

    Raises:
        RegistryError: the registry refused to set one.
    """
    from mlflow.exceptions import MlflowException

    done = []
    for v in list_versions(settings):
        if v.alias_unset is None:
            continue
        before = alias_version(settings, v.alias_unset)
        try:
            if v.alias_unset == CHAMPION_ALIAS:
                if decision_in_progress(settings) is not None:
                    continue
                made = _log_trained_champion(
                    settings,
                    v.version,
                    previous=None,
                    training_run_id=v.run_id or "",
                    serve_alias=(
                        settings.serve_alias
                        if alias_version(settings, settings.serve_alias) is None
                        else None
                    ),
                    reason="made the first champion by `nextbest models --repair`: the "
                    "training that registered it stopped before it set the alias",
                )
                if not made:
                    continue
            else:
                set_alias(settings, v.alias_unset, v.version)
        except (MlflowException, OSError) as exc:
            raise RegistryError(
                f"version {v.version} was registered in full by a training run stopped "
                f"before it gave it alias {v.alias_unset}, and the registry "
                f"{without_password(settings.resolved_registry_uri)} refused to give it: "
                f"{_one_line(exc)}; once it takes writes again, `nextbest models --repair` "
                "gives it"
            ) from exc
        done.append(AliasNamed(v.alias_unset, v.version, before))
    return done


def same_training(settings: Settings, version: str) -> list[str]:
    """Older versions trained on the same data (fingerprint) with the same parameters
    and code (commit, with its edits, or release: :func:`_code_named`) as ``version``:
    a job run twice registers the same model twice, said rather than silent. Oldest
    first; empty when none, when the version's run is not recorded, or when its code
    is not named (an edited checkout whose edits were not recorded)."""
    mlflow_client = client(settings)
    mine = mlflow_client.get_model_version(settings.model_name, version)
    if not mine.run_id:
        return []
    run = mlflow_client.get_run(mine.run_id)
    fingerprint = run.data.tags.get("data_fingerprint")
    if not fingerprint:
        return []

    # Code a run names (a clean commit, an edited one with its edits, a release): an
    # edited checkout's runs whose edits were not recorded are no repeat of each other.
    code = _code_of_run(run.data.tags, mine.tags)
    if code is None:
        return []

    def same(other: Any, data: Any) -> bool:
        return _code_of_run(data.tags, other.tags) == code and data.params == run.data.params

    return _versions_trained_on(settings, fingerprint, same, older_than=int(mine.version))


def trained_as(
    settings: Settings,
    *,
    fingerprint: str,
    asked: Mapping[str, Any],
    code: TrainingCode | None = None,
) -> list[str]:
    """Versions a training about to run would register again: trained on data of
    ``fingerprint``, asked for the params ``asked`` (what
    :func:`nextbest.learning.train.asked_params` says it will log; a run's
    :data:`~nextbest.learning.train.DERIVED_PARAMS` follow from them) by this code
    (``code``: as the training read it when it began, else read now), and registered
    in full. Oldest first; empty when none, when nothing is registered, or when this
    code is not named (:func:`code_unnamed`)."""
    from nextbest.learning.train import DERIVED_PARAMS

    code = code or training_code(patch=False)
    named = _code_named(code.source, code.edits, release=_code_version())
    if named is None or not registry_exists(settings):
        return []
    # As MLflow keeps them: log_params writes str(value).
    wanted = {key: str(value) for key, value in asked.items()}

    def same(other: Any, data: Any) -> bool:
        logged = {k: v for k, v in data.params.items() if k not in DERIVED_PARAMS}
        return (
            DIGEST_TAG in other.tags  # registered in full, see VersionSummary
            and logged == wanted
            and _code_of_run(data.tags, other.tags) == named
        )

    return _versions_trained_on(settings, fingerprint, same)


def trained_otherwise(
    settings: Settings,
    *,
    fingerprint: str,
    asked: Mapping[str, Any],
    code: TrainingCode | None = None,
) -> list[tuple[str, list[str]]]:
    """What kept each version registered in full on data of ``fingerprint`` from being
    one :func:`trained_as` finds (same arguments): ``(version, differences)``, oldest
    first, the differences the names of the params logged otherwise than ``asked``
    (sorted), then ``"code"`` when other code trained it. A version :func:`trained_as`
    finds has none; empty when nothing is registered."""
    from nextbest.learning.train import DERIVED_PARAMS

    code = code or training_code(patch=False)
    named = _code_named(code.source, code.edits, release=_code_version())
    if not registry_exists(settings):
        return []
    wanted = {key: str(value) for key, value in asked.items()}
    found: dict[str, list[str]] = {}

    def differs(other: Any, data: Any) -> bool:
        if DIGEST_TAG not in other.tags:  # not registered in full: never repeated
            return False
        logged = {k: v for k, v in data.params.items() if k not in DERIVED_PARAMS}
        said = sorted(k for k in wanted.keys() | logged.keys() if logged.get(k) != wanted.get(k))
        if named is None or _code_of_run(data.tags, other.tags) != named:
            said.append("code")
        found[str(other.version)] = said
        return True

    return [(v, found[v]) for v in _versions_trained_on(settings, fingerprint, differs)]


def code_unnamed(code: TrainingCode | None = None) -> str | None:
    """Why the code running now (``code``: as a training read it when it began, else
    read now) cannot be told from other code by what a run records of it, or None: a
    checkout with uncommitted changes (its commit does not say which, and
    :func:`source_edits` could not read them), or neither a checkout nor a known
    release."""
    code = code or training_code(patch=False)
    if _code_named(code.source, code.edits, release=_code_version()) is not None:
        return None
    if code.source.endswith("+modified"):
        commit = code.source.removesuffix("+modified")[:12]
        return f"the code has uncommitted changes (to commit {commit}) that git could not read"
    return "the code is neither a git checkout nor an installed nextbest release"


def _patch_of(source: str, edits: str | None) -> tuple[bytes | None, str | None]:
    """What a training run logs of the edits of the code running now (``source`` and
    ``edits``: its :data:`SOURCE_TAG` and :data:`EDITS_TAG`): their patch
    (:func:`source_patch`) when the checkout is ``+modified``, and a note saying why
    there is none, or what a cut one leaves out. A clean checkout has neither."""
    if source == "unknown":
        return None, (
            "none: the code is not a file git tracks in a checkout (an installed package, "
            "a copy without .git, or git not there), so its edits, if any, cannot be read"
        )
    if not source.endswith("+modified"):
        return None, None
    if edits is None:
        return None, "none: git could not read the uncommitted edits (no source_edits_sha256)"
    patch = source_patch()
    if patch.content is None:
        return None, f"none: {patch.note}" if patch.note else "none: no edited file was found"
    if patch.edits_sha256 != edits:
        return None, (
            "none: the checkout's files changed between reading their digest "
            f"(source_edits_sha256 {edits}) and writing their patch"
        )
    return patch.content, patch.note


# Run tag of a training whose checkout changed while it trained (edited, committed):
# what it was when training began, the code recorded, and what it was at the end.
SOURCE_CHANGED_TAG = "source_changed_while_training"


@dataclass(frozen=True)
class TrainingCode:
    """The code a training runs, read once when it begins: the process has loaded
    its modules by then (but for one it imports later), so a file edited while it
    trains is not the code that trained. ``source`` and ``edits``: its
    :data:`SOURCE_TAG` and :data:`EDITS_TAG`; ``patch`` and ``patch_note``: what its
    run keeps of a ``+modified`` checkout's edits (:func:`_patch_of`). Read by
    :func:`training_code`; logged by :func:`log_training_run`."""

    source: str
    edits: str | None
    patch: bytes | None = None
    patch_note: str | None = None

    def changed_since(self) -> str | None:
        """What to note of a run when the checkout's code is not this one now (its
        files edited, or committed, since this was read), or None when it is."""
        source, edits = _running_code()
        if (source, edits) == (self.source, self.edits):
            return None
        return (
            f"the checkout's code changed while this run trained: it was {_code_said(self)} "
            f"when training began, and is {_code_said(TrainingCode(source, edits))} now; "
            "the run records the code as it was when training began, the code that trained "
            "(the later edits are not in its source_edits_sha256 or source/edits.patch: "
            "train again to record a model of them)"
        )


def training_code(*, patch: bool = True) -> TrainingCode:
    """The code running now, as a training records it (:class:`TrainingCode`): read
    when a training begins. ``patch``: write the patch of a ``+modified`` checkout's
    edits too (False: only what names the code, for a check before training)."""
    source, edits = _running_code()
    if not patch:
        return TrainingCode(source, edits)
    return TrainingCode(source, edits, *_patch_of(source, edits))


def _code_said(code: TrainingCode) -> str:
    """``code`` in a few words: its commit, and the digest of its edits."""
    if code.source == "unknown":
        return "no git checkout"
    commit = code.source.removesuffix("+modified")[:12]
    if not code.source.endswith("+modified"):
        return f"commit {commit}"
    if code.edits is None:
        return f"commit {commit} with edits git could not read"
    return f"commit {commit} with edits source_edits_sha256 {code.edits[:12]}"


def _running_code() -> tuple[str, str | None]:
    """The :data:`SOURCE_TAG` and :data:`EDITS_TAG` of the code running now (the edits
    read only of a ``+modified`` checkout)."""
    source = source_commit()
    return source, source_edits() if source.endswith("+modified") else None


def _code_of_run(run_tags: Mapping[str, str], version_tags: Mapping[str, str]) -> str | None:
    """:func:`_code_named` of the code a training run trained with, by its tags and its
    version's."""
    return _code_named(
        run_tags.get(SOURCE_TAG, ""),
        run_tags.get(EDITS_TAG),
        release=version_tags.get(CODE_TAG, ""),
    )


def _code_named(source: str, edits: str | None, *, release: str) -> str | None:
    """What names the code a run trained with (``source``: its :data:`SOURCE_TAG`,
    ``edits``: its :data:`EDITS_TAG`, ``release``: its :data:`CODE_TAG`): the commit of
    a clean checkout, the commit and the edits of an edited one, else the release of
    an installed package; None when none names it (an edited checkout whose edits were
    not read, or a run from before they were recorded: they differ from run to run
    under one ``+modified`` commit)."""
    if source.endswith("+modified"):
        return f"{source} {edits}" if edits else None
    if source and source != "unknown":
        return source
    return f"release {release}" if release and release != "unknown" else None


def _versions_trained_on(
    settings: Settings,
    fingerprint: str,
    same: Callable[[Any, Any], bool],
    *,
    older_than: int | None = None,
) -> list[str]:
    """The versions (oldest first; only those numbered below ``older_than`` if given)
    whose training run logged data ``fingerprint`` and that ``same(version, run_data)``
    accepts; a version whose run is not in this tracking store (another than it was
    trained in) is none of them."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    found = []
    for other in mlflow_client.search_model_versions(f"name='{settings.model_name}'"):
        if not other.run_id or (older_than is not None and int(other.version) >= older_than):
            continue
        try:
            data = mlflow_client.get_run(other.run_id).data
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue
            raise
        if data.tags.get("data_fingerprint") == fingerprint and same(other, data):
            found.append(str(other.version))
    return sorted(found, key=int)


def _store_file(settings: Settings) -> Path | None:
    """The registry's SQLite file, or None for a store on a server."""
    uri = settings.resolved_registry_uri
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def registry_exists(settings: Settings) -> bool:
    """False when the registry is a SQLite file not yet created (opening it would create it)."""
    path = _store_file(settings)
    if path is None:
        return True
    refuse_unusable_place(path)  # a models directory under a file is no empty registry
    _refuse_unusable_sqlite(settings.resolved_registry_uri, read=True)
    return path.exists()


def _registry_exists_readable(settings: Settings, what: str) -> bool:
    """:func:`registry_exists`, for a reader of ``what`` of the served model: a registry
    file that is no database raises :class:`RegistryUnreadableError` naming it, as a
    store that cannot be opened does (:func:`_reading_client`)."""
    try:
        return registry_exists(settings)
    except (sqlite3.Error, IsADirectoryError) as exc:
        raise _unreadable(settings, what, exc) from exc


def _utc_iso(text: str | None) -> str | None:
    """A training cut-off as logged (naive, UTC: ``2026-11-27 00:00:01``) in ISO 8601
    with its offset, as the version's other times; unparseable text is kept as is."""
    if text is None:
        return None
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        return text
    return (stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)).isoformat()


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def _float_or_none(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def describe_version(settings: Settings, version: str) -> ModelVersionInfo:
    mv = client(settings).get_model_version(settings.model_name, version)
    return ModelVersionInfo(
        name=settings.model_name,
        version=str(mv.version),
        run_id=mv.run_id,
        aliases=tuple(mv.aliases),
    )


# The longest alias name the registry stores.
ALIAS_AT_MOST = 255
_ALIAS_CHARACTER = re.compile(r"[\w-]")  # a letter or digit (of any script), '_' or '-'
_VERSION_ALIAS = re.compile(r"[vV]\d+")  # how MLflow names a version: v3


def alias_problem(alias: str) -> str | None:
    """Why MLflow would refuse ``alias`` as an alias name (empty, a character other than
    letters, digits, ``_`` and ``-``, too long, or reserved: ``latest``, ``v<number>``),
    or None: so that a command refuses the name before its work rather than when it
    sets the alias at the end. Its rules, said here: importing MLflow to ask it took
    1.2 to 2.2 s, before `train` or `retrain` said anything (tests/registry holds
    the two to the same answers)."""
    if not alias:
        return "an alias cannot be empty"
    if bad := sorted({c for c in alias if not _ALIAS_CHARACTER.fullmatch(c)}):
        listed = ", ".join(repr(c) for c in bad)
        return (
            f"'{alias}' holds {listed}: an alias may only hold letters, digits, "
            "underscores (_) and dashes (-)"
        )
    if len(alias) > ALIAS_AT_MOST:
        return f"an alias is at most {ALIAS_AT_MOST} characters long; this one has {len(alias)}"
    if alias.lower() == "latest":
        return "'latest' (in any case) is reserved: MLflow names the latest version so"
    if _VERSION_ALIAS.fullmatch(alias):
        return f"'{alias}' is reserved: MLflow names version {alias[1:]} so"
    return None


def artifact_format() -> int:
    """The layout of the :class:`ScoringModel` pickle this code writes and reads (the
    version tag ``artifact_format``): imported when asked, with the training code."""
    from nextbest.learning.scoring import ARTIFACT_FORMAT

    return ARTIFACT_FORMAT


def set_alias(settings: Settings, alias: str, version: str) -> None:
    client(settings).set_registered_model_alias(settings.model_name, alias, version)


def load_version(settings: Settings, version: str, *, alias: str | None = None) -> ScoringModel:
    """Load a registered version's scoring model (``alias``: the alias it was found
    by, named in errors).

    Raises:
        RegistryError: the version was written in another artifact format (by an
            incompatible nextbest), its artifact cannot be unpickled by this code,
            or (:class:`ArtifactsUnreadableError`) its artifacts cannot be read
            where the registry says they are.
    """
    from mlflow.exceptions import MlflowException

    found = client(settings).get_model_version(settings.model_name, version)
    tags = found.tags or {}
    written = tags.get(FORMAT_TAG)
    by = f"nextbest {tags[CODE_TAG]}" if tags.get(CODE_TAG) else "an older nextbest"
    retrain = "register a new version with `nextbest retrain` or `nextbest train`"
    named = f"model '{settings.model_name}' version {version}" + (
        f" (alias '{alias}')" if alias else ""
    )
    if written is not None and written != str(artifact_format()):
        raise RegistryError(
            f"{named} was written by {by} in artifact format {written} (its artifacts at "
            f"{_artifact_place(settings, found)[0]}); this nextbest ({_code_version()}) "
            f"reads format {artifact_format()}: {retrain}"
        )
    # Each file is read once: hashed, and the scoring model unpickled from the same
    # bytes (MLflow's pyfunc loader would read them again, and unpickle a wrapper
    # nextbest does not use).
    try:
        with _model_dir(settings, version) as (root, where):
            files = _read_model_dir(root)
    except (MlflowException, OSError) as exc:
        # MLflow's message alone names neither the version nor where it looked: a
        # missing artifact directory reads "No such artifact: ''".
        where, moved = _artifact_place(settings, found)
        here = _moved_here(settings, where) if moved else None
        if here is None:
            raise ArtifactsUnreadableError(
                f"{named}: its artifacts at {where} cannot be read: {_one_line(exc)}" + moved
            ) from exc
        # A models directory moved or restored at another path (disaster recovery):
        # the same files are here; serve them, and say so.
        logger.warning(
            "%s: its artifacts are recorded at %s, which is gone; read from %s, the same "
            "place in this models directory (moved or restored here). New runs are refused "
            "until the directory is back at its original path (docs/operations.md, 'Backup "
            "and restore')",
            named,
            where,
            here,
        )
        files = _read_model_dir(here)
        where = here.as_uri()
    _check_digest(settings, version, named, tags.get(DIGEST_TAG), files, where)
    try:
        path = _scoring_artifact(files)
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise ArtifactsUnreadableError(
            f"{named}: its artifacts at {where} hold no MLflow model with a "
            f"'{SCORING_ARTIFACT}' artifact ({_one_line(exc)}); {retrain}"
        ) from exc
    artifact = f"{where.rstrip('/')}/{path}"
    if path not in files:
        raise ArtifactsUnreadableError(
            f"{named}: its artifact {artifact} is missing; restore the models directory "
            f"from a backup (docs/operations.md, 'Backup and restore') or {retrain}"
        )
    try:
        model: ScoringModel = joblib.load(io.BytesIO(files[path]))
    except (AttributeError, ImportError, TypeError) as exc:
        # Versions from before format tags: a pickle of incompatible code fails here.
        raise RegistryError(
            f"{named} (written by {by}) cannot be loaded by nextbest {_code_version()} "
            f"from {artifact}: {_one_line(exc)}; {retrain}"
        ) from exc
    except Exception as exc:  # EOFError, UnpicklingError, zlib.error...: the bytes
        raise ArtifactsUnreadableError(
            f"{named}: its artifact {artifact} is damaged or truncated ({_one_line(exc)}); "
            f"restore the models directory from a backup (docs/operations.md, 'Backup and "
            f"restore') or {retrain}"
        ) from exc
    return model


def _one_line(exc: BaseException) -> str:
    """``exc``'s class and the first line of its message: what an error this module
    raises quotes of its cause (a traceback is for the debug log)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# Versions registered without a digest already warned about, by registry, model and
# version: once per process each, not at every load (a reload, each gate run).
_UNVERIFIED_SAID: set[tuple[str, str, str]] = set()
_UNVERIFIED_LOCK = threading.Lock()


def _check_digest(
    settings: Settings,
    version: str,
    named: str,
    expected: str | None,
    files: Mapping[str, bytes],
    where: str,
) -> None:
    """Refuse artifacts whose digest is not the one registered (``expected``); say
    once per process of a version registered before digests were taken."""
    found = artifact_digest(files)
    if expected is None:
        key = (settings.resolved_registry_uri, settings.model_name, version)
        with _UNVERIFIED_LOCK:
            if key in _UNVERIFIED_SAID:
                return
            _UNVERIFIED_SAID.add(key)
        logger.warning(
            "%s was registered without an %s tag (by a nextbest that did not record "
            "it): its artifacts are loaded unverified (their SHA-256 now: %s); a version "
            "registered by `nextbest retrain` or `nextbest train` is checked at every load",
            named,
            DIGEST_TAG,
            found,
        )
        return
    if found != expected:
        raise ArtifactAlteredError(
            named, version=version, expected=expected, found=found, where=where
        )


def _scoring_artifact(files: Mapping[str, bytes]) -> str:
    """The path of the scoring model's pickle among an MLflow model directory's
    ``files`` (see :func:`_read_model_dir`): the artifact its MLmodel file names.

    Raises:
        KeyError, TypeError, yaml.YAMLError: no MLmodel file, or one naming no such
            artifact.
    """
    mlmodel = yaml.safe_load(files["MLmodel"])
    return str(mlmodel["flavors"]["python_function"]["artifacts"][SCORING_ARTIFACT]["path"])


def _moved_here(settings: Settings, where: str) -> Path | None:
    """For artifacts recorded at ``where`` under an artifact root the models directory
    was moved away from (see :func:`_moved_from`), the same place under this models
    directory's ``artifacts``, when it exists; else None."""
    from urllib.parse import unquote, urlparse

    if not where.startswith("file:"):
        return None
    path = Path(unquote(urlparse(where).path))
    # The root is the outermost "artifacts" on the path (a logged model's own files
    # sit in a directory of that name too, deeper down).
    for root in [*reversed(path.parents), path]:
        if _moved_from(settings, root.as_uri()) is not None:
            here = settings.resolved_models_dir.resolve() / "artifacts" / path.relative_to(root)
            return here if here.exists() else None
    return None


def _artifact_place(settings: Settings, found: Any) -> tuple[str, str]:
    """Where a version's artifacts were looked for (the absolute place the MLflow store
    recorded, when it can say) and, when that place is a missing path outside the
    models directory, why: the directory was moved or restored elsewhere."""
    from urllib.parse import unquote, urlparse

    where = str(found.source)
    logged = getattr(found, "model_id", None) or (
        where.removeprefix("models:/") if where.startswith("models:/m-") else None
    )
    with contextlib.suppress(Exception):  # an older store or a remote one: the source
        if logged:
            where = str(client(settings).get_logged_model(logged).artifact_location)
    if not where.startswith("file:"):
        return where, ""
    path = Path(unquote(urlparse(where).path))
    models = settings.resolved_models_dir.resolve()
    if path.exists() or path.is_relative_to(models):
        return where, ""
    return where, (
        f"; the MLflow store records absolute artifact paths and this one is outside "
        f"the models directory {models}: a models directory moved or restored at "
        "another path must be put back at its original one (docs/operations.md, 'Backup "
        "and restore')"
    )


def source_commit(module_file: Path | None = None) -> str:
    """The git commit of the checkout this package (``module_file``: this module) runs
    from, with "+modified" when its tracked files differ from that commit; "unknown"
    when the file is not tracked in a git checkout (an installed wheel) or git is
    not there. :func:`source_edits` names the edits of a "+modified" one."""
    here = (module_file or Path(__file__)).resolve()
    git = partial(_git, here.parent)
    try:
        # This very file tracked: a virtual environment inside some other checkout
        # would otherwise lend the package that checkout's commit.
        if git("ls-files", "--error-unmatch", here.name).returncode != 0:
            return "unknown"
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.decode().strip()
    return f"{commit}+modified" if status.returncode != 0 or status.stdout.strip() else commit


def source_edits(module_file: Path | None = None) -> str | None:
    """SHA-256 naming the uncommitted edits of the git checkout this package
    (``module_file``: this module) runs from, or None when it has none or they cannot
    be read (not a checkout, git not there, a changed path that is no file: a
    submodule, a broken link).

    The edits are every tracked file of the checkout whose content differs from its
    commit (staged or not; a deleted one as deleted) and every untracked file of the
    package's directory but those git ignores (a new module the edits import): the
    digest is :func:`_manifest_digest` of their paths in the checkout and their
    contents, so the same edits to the same commit give the same digest wherever and
    whenever they are made. Untracked files elsewhere (notes, data) are not code.
    :func:`source_patch` writes the same edits as a patch.
    """
    try:
        read = _edits_read((module_file or Path(__file__)).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return _manifest_digest(read.files) if read is not None and read.files else None


@dataclass(frozen=True)
class _EditsRead:
    """The edits :func:`source_edits` names, as read: the checkout's top directory,
    every edited file's content by its path in the checkout (None: deleted), and which
    of them git does not track (new files)."""

    root: Path
    files: dict[str, bytes | None]
    untracked: frozenset[str]


def _edits_read(here: Path) -> _EditsRead | None:
    """The edits of the checkout holding directory ``here`` (see :func:`source_edits`);
    None when they cannot be read.

    Raises:
        OSError, subprocess.SubprocessError: git could not be run, or a file read.
    """
    top = _git(here, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return None
    root = Path(os.fsdecode(top.stdout.strip()))
    # From the top, whatever diff.relative says: every path is the checkout's.
    changed = _git(root, "diff", "HEAD", "--name-only", "--no-renames", "-z")
    new = _git(here, "ls-files", "--others", "--exclude-standard", "--full-name", "-z")
    if changed.returncode != 0 or new.returncode != 0:
        return None
    files: dict[str, bytes | None] = {}
    untracked = frozenset(os.fsdecode(n) for n in new.stdout.split(b"\0") if n)
    names = untracked | {os.fsdecode(n) for n in changed.stdout.split(b"\0") if n}
    for name in names:
        path = root / name
        if path.is_file():  # a link to one too: its content, as sha256sum reads it
            files[name] = path.read_bytes()
        elif not os.path.lexists(path):
            files[name] = None
        else:
            return None
    return _EditsRead(root, files, untracked & files.keys())


# Where a training run keeps the patch of its checkout's uncommitted edits, and the cap
# on its size: a run is a record, not a copy of a working tree full of data files.
PATCH_ARTIFACT = "source/edits.patch"
PATCH_LIMIT_BYTES = 5 * 1024 * 1024
# Run tags: the patch's artifact path when one was logged; why none was, or what a cut
# one leaves out.
PATCH_TAG = "source_edits_patch"
PATCH_NOTE_TAG = "source_edits_patch_note"
# Every diff written the same whatever the user's git configuration says (prefixes,
# colour, an external diff tool, text conversion), binary files included.
_PATCH_DIFF = (
    "--binary",
    "--full-index",
    "--no-renames",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)


@dataclass(frozen=True)
class SourcePatch:
    """The uncommitted edits of a checkout as a patch of its commit.

    ``content``: what ``git apply`` takes in a clean checkout of the commit to make the
    edited files again, byte for byte (a text header first, which ``git apply`` skips);
    None when none was made. ``edits_sha256``: :func:`source_edits` of the files it was
    made from, so a run's :data:`EDITS_TAG` and its patch are known to be the same
    edits. ``note``: why no patch was made, or which files a cut one leaves out.
    """

    content: bytes | None
    edits_sha256: str | None
    note: str | None


def source_patch(
    module_file: Path | None = None, *, limit_bytes: int = PATCH_LIMIT_BYTES
) -> SourcePatch:
    """The edits :func:`source_edits` names, as a patch of the checkout's commit:
    ``git diff HEAD`` of each edited tracked file (a deleted one as deleted) and each
    untracked file of the package's directory as a new file, binary files as git's
    binary patches; the files read again after and compared, so the patch and the
    digest are of the same edits. Whole files only, in path order, while the patch
    stays within ``limit_bytes``: those that do not fit are left out and named in
    ``note`` and in the patch's header. Never raises: a checkout git cannot read, or
    git not there, gives no patch and says why in ``note``.
    """
    here = (module_file or Path(__file__)).resolve().parent
    try:
        read = _edits_read(here)
        if read is None:
            unread = f"git could not read the edits of the checkout at {here}"
            return SourcePatch(None, None, unread)
        if not read.files:
            return SourcePatch(None, None, None)
        commit = _git(read.root, "rev-parse", "HEAD").stdout.decode().strip()
        diffs: dict[str, bytes] = {}
        for name in sorted(read.files):
            if name in read.untracked:
                # Exit code 1: the file differs from nothing, as a new file does.
                made = _git(read.root, "diff", "--no-index", *_PATCH_DIFF, "--", os.devnull, name)
                failed = made.returncode not in (0, 1)
            else:
                made = _git(read.root, "diff", "HEAD", *_PATCH_DIFF, "--", f":(literal){name}")
                failed = made.returncode != 0
            if failed:
                said = made.stderr.decode(errors="replace").strip()
                said = said or f"exit code {made.returncode}"
                return SourcePatch(None, None, f"git could not write the patch of {name}: {said}")
            diffs[name] = made.stdout
        again = _edits_read(here)
    except (OSError, subprocess.SubprocessError) as exc:
        return SourcePatch(None, None, f"git could not be run to write the edits as a patch: {exc}")
    digest = _manifest_digest(read.files)
    if again is None or not again.files or _manifest_digest(again.files) != digest:
        return SourcePatch(
            None, None, "the checkout's files changed while the patch was written: none kept"
        )
    kept, left_out, size = [], [], 0
    for name, diff in diffs.items():
        if size + len(diff) <= limit_bytes:
            kept.append(diff)
            size += len(diff)
        else:
            left_out.append(f"{name} ({len(diff):,} bytes)")
    note = (
        f"cut at {limit_bytes:,} bytes: the patch leaves out {', '.join(left_out)}"
        if left_out
        else None
    )
    # Text before the first "diff --git" line, which git apply passes over.
    header = (
        f"The uncommitted edits (source_edits_sha256 {digest}) of the nextbest checkout "
        f"of commit {commit} that trained this run.\n"
        f"Rebuild that code: git checkout {commit}, then git apply edits.patch in it.\n"
        + (f"Not whole: {note}.\n" if note else "")
        + "\n"
    )
    return SourcePatch(header.encode() + b"".join(kept), digest, note)


def _git(where: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``git -C where ARGS``, its output kept (bytes: paths need not be UTF-8)."""
    return subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, timeout=10, check=False
    )


def _mlflow_source_tags(source: str) -> dict[str, str]:
    """MLflow's own tag for the commit (its UI shows it), when there is one."""
    commit = source.removesuffix("+modified")
    return {} if source == "unknown" else {"mlflow.source.git.commit": commit}


@dataclass(frozen=True)
class VersionHolding:
    """A registered version whose served model keeps some HCPs' attributes and
    history features (its ``hcps`` snapshot): ``hcp_ids`` those of the HCPs asked
    about it holds; ``unreadable``: why its artifact could not be read (then
    ``hcp_ids`` is empty and nothing is known)."""

    version: str
    aliases: tuple[str, ...]
    hcp_ids: tuple[str, ...]
    run_id: str | None = None  # the training run that logged it (its artifacts)
    unreadable: str | None = None


def versions_holding(
    settings: Settings, hcp_ids: Sequence[str], *, spelled_alike: set[str] | None = None
) -> list[VersionHolding]:
    """Every registered version of the served model that holds one of ``hcp_ids``
    or cannot be read, newest first; [] when nothing is registered.

    ``spelled_alike``, when given, gets the ids some readable version holds that
    differ from one of ``hcp_ids`` it does not hold only in case, leading zeros or a
    trailing '.0' (a mistyped erasure request names the id it meant).

    Each version's artifact is loaded as the runtime loads it (seconds per version).
    """
    if not registry_exists(settings):
        return []
    mlflow_client = client(settings)
    found = mlflow_client.search_model_versions(f"name='{settings.model_name}'")
    named = mlflow_client.get_registered_model(settings.model_name).aliases if found else {}
    aliases: dict[str, list[str]] = {}
    for alias, version in named.items():
        aliases.setdefault(str(version), []).append(alias)
    wanted = list(dict.fromkeys(hcp_ids))
    out = []
    for mv in sorted(found, key=lambda v: int(v.version), reverse=True):
        version = str(mv.version)
        tags = tuple(sorted(aliases.get(version, [])))
        try:
            model = load_version(settings, version)
        except RegistryError as exc:
            out.append(VersionHolding(version, tags, (), mv.run_id, unreadable=str(exc)))
            continue
        held = tuple(h for h in wanted if h in model.hcp_index)
        if spelled_alike is not None and len(held) < len(wanted):
            from nextbest.contract.validate import LookAlikes

            twins, kept = LookAlikes(model.hcp_index), set(held)
            spelled_alike.update(
                twin for h in wanted if h not in kept and (twin := twins.of(h)) is not None
            )
        if held:
            out.append(VersionHolding(version, tags, held, mv.run_id))
    return out


def _code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nextbest")
    except PackageNotFoundError:
        return "unknown"


def load_alias(settings: Settings, alias: str | None = None) -> tuple[ScoringModel, str]:
    """Resolve ``alias`` (default: the served alias) to a version and load it.

    Resolving first and loading by version means the returned version is the one
    actually loaded even if the alias moves meanwhile.
    """
    alias = alias or settings.serve_alias
    version = alias_version(settings, alias)
    if version is None:
        raise RegistryError(
            f"model '{settings.model_name}' has no version with alias '{alias}' in "
            f"{without_password(settings.resolved_registry_uri)}; "
            "train one with `nextbest train --data DIR`"
        )
    return load_version(settings, version), version
