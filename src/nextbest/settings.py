"""One settings class for the whole service, read from ``NEXTBEST_*`` variables.

Nothing here touches the disk or the network: directories are made and the MLflow
tracking URI is applied only by the code that needs them (``ensure_dirs``).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nextbest.yamlfile import word_of

ENV_PREFIX = "NEXTBEST_"

Exploration = Literal["epsilon_greedy", "softmax"]
# Closed-choice settings are read in any case and without the spaces around them
# (NEXTBEST_EXPLORATION=Softmax), as the training configs read theirs; a value that is
# none of the choices keeps the field's own error.


def _stripped(value: object) -> object:
    """A true/false setting without the spaces around it (``"true "`` from a
    deployment template): pydantic reads the word in any case, but not with them."""
    return value.strip() if isinstance(value, str) else value


Switch = Annotated[bool, BeforeValidator(_stripped)]


class Settings(BaseSettings):
    """Service configuration. Every field can be set as ``NEXTBEST_<FIELD>``."""

    # The commands report an invalid value themselves, its password hidden
    # (``nextbest.cli.options.read_settings``); a traceback elsewhere must not print it either.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=None, extra="ignore", hide_input_in_errors=True
    )

    models_dir: Path = Field(
        default=Path("models"),
        description="Local artifacts: MLflow store, registry artifacts, the embedded database.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; default: a SQLite store in models_dir.",
    )
    registry_uri: str | None = Field(
        default=None, description="MLflow registry URI; default: the tracking URI."
    )
    experiment: str = Field(default="nextbest", description="MLflow experiment name.")
    model_name: str = Field(default="nextbest", description="Registered model name.")
    serve_alias: str = Field(default="champion", description="Registry alias that is served.")
    challenger_share: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Share of HCPs answered by the version of alias 'challenger' (when it "
        "names another version than the served one), loaded beside it at every reload: a "
        "keyed hash of HCP and challenger version picks them, so an HCP keeps one version "
        "for the challenger's life; single and batch recommendations and `picks --log` "
        "(rep plans, a rep key's requests and plain picks stay with the served version). "
        "0 (the default) loads no challenger.",
    )
    database_url: str | None = Field(
        default=None,
        description="Recommendation log and feedback store; default: SQLite in models_dir.",
    )
    rules_file: Path | None = Field(
        default=None, description="YAML file of serving rules; default: training/rules.yaml."
    )
    territories_file: Path | None = Field(
        default=None,
        description="CSV or Parquet file of hcp_id,territory_id: the territories rep keys and "
        "rep plans use, re-read at every reload; default: the served model's hcps file.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="YAML file of API keys and roles; default: api_keys.yaml in models_dir.",
    )
    auth_enabled: Switch = Field(default=True, description="Require an API key on /v1 routes.")
    metrics_auth: Switch = Field(
        default=True,
        description="With auth on, /metrics asks for a key of role monitor or admin (its "
        "counters are the service's traffic: who was held out, by whom); false serves it to "
        "anyone, for a scraper that cannot send a key on a network no client reaches.",
    )
    holdout_rate: float = Field(
        default=0.05, ge=0.0, lt=1.0, description="Share of requests answered with no action."
    )
    holdout_days: int = Field(
        default=7,
        ge=0,
        description="An HCP drawn into the holdout gets no action from any request of the "
        "same period of this many days (7: the week from Monday, UTC, of the decision date, "
        "or of today for a date in the past); 0 draws each request on its own.",
    )
    epsilon: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Exploration rate (epsilon-greedy)."
    )
    exploration: Annotated[Exploration, BeforeValidator(word_of(get_args(Exploration)))] = Field(
        default="epsilon_greedy",
        description="How the first item is explored: epsilon_greedy (NEXTBEST_EPSILON) or "
        "softmax (NEXTBEST_TEMPERATURE).",
    )
    temperature: float = Field(
        default=0.01,
        gt=0.0,
        description="Softmax temperature, in the units of the arbitration score (expected "
        "incremental value - cost): small is nearly greedy, large nearly uniform.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        description="Seed for exploration draws, and holdout draws with NEXTBEST_HOLDOUT_DAYS=0 "
        "(>= 0).",
    )
    reload_interval_s: float = Field(
        default=0.0, ge=0.0, description="Poll the served alias every N seconds; 0 disables."
    )
    log_flush_ms: float = Field(
        default=5.0,
        ge=0.0,
        description="Commit the recommendation log in batches every N ms from a background "
        "thread; 0 commits each answer before responding. Feedback is always synchronous.",
    )
    db_lock_timeout_ms: int = Field(
        default=2_000,
        ge=0,
        description="PostgreSQL, serving workers only: a statement waits at most this long "
        "for a table lock (a migration, a VACUUM FULL, a transaction left open holding one) "
        "before its request is refused with 503 and Retry-After, instead of every request "
        "hanging behind the lock; 0: no limit.",
    )
    db_statement_timeout_ms: int = Field(
        default=15_000,
        ge=0,
        description="PostgreSQL, serving workers only: a statement runs at most this long "
        "(an overloaded database) before its request is refused with 503; 0: no limit. "
        "Migrations at start-up are not bounded by either.",
    )
    log_max_backlog: int = Field(
        default=10_000,
        ge=1,
        description="Per worker, at most this many answers wait for the batched recommendation "
        "log; while the store is that far behind, requests are refused with 503 (nothing is "
        "served unlogged, and a stalled database cannot grow the process without limit).",
    )
    log_max_wait_s: float = Field(
        default=10.0,
        ge=0.0,
        description="A batch call or rep plan that finds the log's backlog full waits up to "
        "this long for room before it is refused with 503, so callers faster than the store "
        "are slowed to its pace; single recommendations (on the event loop) are refused at once.",
    )
    score_cache_pairs: int = Field(
        default=2_000_000,
        ge=0,
        description="Per worker, keep the scores and reasons of the most recently asked HCPs, "
        "up to this many (HCP, action) pairs (33 bytes each: 66 MB at the default); 0 keeps "
        "none. A model's scores depend only on its snapshot, so cached answers are identical.",
    )
    decision_wait_s: float = Field(
        default=120.0,
        ge=0.0,
        description="A champion decision (promote, rollback, the first champion a train "
        "sets) that finds another one at work on the same model waits up to N seconds for "
        "it to end, then decides on what it left; past that it decides nothing and exits "
        "with code 2, naming the other; 0: refuse at once.",
    )
    reload_warm_s: float = Field(
        default=30.0,
        ge=0.0,
        description="On a model reload, before the swap, spend up to N seconds scoring and "
        "explaining what the old model's score cache was last asked (most recent HCPs first), "
        "so requests after the swap do not all go to the model; 0 swaps in an empty cache.",
    )
    start_warm_s: float = Field(
        default=30.0,
        ge=0.0,
        description="On start, in the background, spend up to N seconds scoring the HCPs of "
        "the newest logged recommendations (every pair a request could ask), so a restarted "
        "worker does not score every HCP on its first request; 0 starts with an empty cache.",
    )
    gc_freeze: Switch = Field(
        default=False,
        description="After each model load, move every object alive (modules, the model) out "
        "of reach of Python's cyclic garbage collector, so a full collection walks only what "
        "requests made since: pauses of a few ms instead of hundreds. `nextbest serve` turns "
        "it on.",
    )
    fresh_history: Switch = Field(
        default=False,
        description="Move the served model's HCP history features on to each new UTC day by "
        "the contacts the feedback store holds since its cut-off (gaps and fatigue windows; "
        "touch counts and engagement rates once each contact's engagement is known; outcome "
        "means and engagement effects stay the cut-off's until a retrain).",
    )
    host: str = Field(
        default="127.0.0.1",
        description="The address `nextbest serve` listens on (its --host wins); 127.0.0.1 is "
        "this machine only.",
    )
    port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="The TCP port `nextbest serve` listens on, 1 to 65535 (its --port wins).",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="How many worker processes `nextbest serve` starts, at least 1 (its "
        "--workers wins): one per core for throughput.",
    )
    max_requests_per_connection: int = Field(
        default=100,
        ge=0,
        description="Answer the Nth request of a keep-alive connection with 'Connection: "
        "close' (0: never). The client reconnects and the kernel places the new "
        "connection afresh, so an uneven split of a client's pool over the worker "
        "processes lasts N requests, not the life of the pool.",
    )

    @field_validator("tracking_uri", "registry_uri", "database_url")
    @classmethod
    def _blank_is_default(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("database_url")
    @classmethod
    def _a_database_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_database_url(value)
        return value

    @field_validator("tracking_uri", "registry_uri")
    @classmethod
    def _an_mlflow_store(cls, value: str | None) -> str | None:
        if value is not None:
            check_mlflow_store_uri(value)
        return value

    @field_validator("model_name", "serve_alias", "experiment")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        # An empty name or alias is found nowhere in the registry: the server
        # would start and serve no model.
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir.expanduser().resolve()

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.resolved_models_dir / 'mlflow.db'}"

    @property
    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri

    @property
    def artifact_location(self) -> str:
        return (self.resolved_models_dir / "artifacts").as_uri()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_models_dir / 'nextbest.db'}"

    @property
    def resolved_rules_file(self) -> Path:
        return self.rules_file or Path("training/rules.yaml")

    @property
    def resolved_api_keys_file(self) -> Path:
        return self.api_keys_file or self.resolved_models_dir / "api_keys.yaml"

    @property
    def served_model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.serve_alias}"

    def ensure_dirs(self) -> None:
        """Create the local models directory (called by commands that write there)."""
        self.resolved_models_dir.mkdir(parents=True, exist_ok=True)


def refuse_unusable_place(path: Path) -> None:
    """Raise ``NotADirectoryError`` (naming it) when the nearest existing ancestor of
    ``path`` is not a directory: nothing can be read or made there, where
    ``Path.exists()`` only says False and the file seems merely not made yet."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(parent))
            return


DATABASE_URL_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql+psycopg://user:password@host:5432/database"
)


def check_database_url(url: str) -> None:
    """Raise ``ValueError`` saying what is wrong unless ``url`` is a database URL the
    store can open: SQLite or PostgreSQL, as SQLAlchemy spells them, through a driver
    that is installed (checked by importing it, without connecting). The message
    never repeats the URL (it may carry a password).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(f"not a database URL; use {DATABASE_URL_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "pg", "psql", "postgre"):
        raise ValueError(
            f"SQLAlchemy does not know the scheme '{parsed.drivername}'; "
            "write postgresql+psycopg://user:password@host:5432/database"
        )
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"unsupported database '{parsed.drivername}' (SQLite and PostgreSQL are); "
            f"use {DATABASE_URL_FORMS}"
        )
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"SQLAlchemy has no driver '{parsed.drivername}'; use {DATABASE_URL_FORMS}"
        ) from None
    _refuse_missing_driver(parsed, dialect)
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError(
            "an in-memory SQLite database is lost with its process and not shared by "
            "workers or commands: name a file, sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    if backend == "sqlite" and (parsed.host or parsed.username or parsed.password):
        raise ValueError(
            "a SQLite URL names a file after three slashes: sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )


# What to write instead of a URL whose driver is not installed, by database: the
# scheme of the driver nextbest installs (MySQL, for MLflow's stores only: its dev
# extra's), the URL's form, and how that driver gets installed.
_INSTALLED_DRIVERS = {
    "postgresql": (
        "postgresql+psycopg",
        "postgresql+psycopg://user:password@host:5432/database",
        "psycopg 3, the driver nextbest installs",
    ),
    "mysql": (
        "mysql+pymysql",
        "mysql+pymysql://user:password@host:3306/database",
        "PyMySQL: nextbest's dev extra installs it, or `pip install pymysql`",
    ),
    "sqlite": ("sqlite", "sqlite:///relative/path.db or sqlite:////absolute/path.db", ""),
}


def _refuse_missing_driver(parsed: Any, dialect: Any) -> None:
    """Raise ``ValueError`` naming the driver of URL ``parsed`` (SQLAlchemy's ``URL``)
    and what to write or install instead when ``dialect`` cannot import it.

    SQLAlchemy knows more drivers than are installed (psycopg2, asyncpg, pg8000;
    ``mysql://`` means MySQLdb): one that is not would fail at the first connection,
    with a traceback. Only imported here, nothing is connected.
    """
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        known = _INSTALLED_DRIVERS.get(parsed.get_backend_name())
        if known is None:
            do = "install it"
        elif parsed.drivername == known[0]:  # the scheme to write: its module is missing
            do = f"install it ({known[2]})"
        else:
            do = f"write {known[1]}" + (f" ({known[2]})" if known[2] else "")
        raise ValueError(
            f"the driver '{exc.name or dialect.driver}' of '{parsed.drivername}' is not "
            f"installed; {do}"
        ) from None


# The databases MLflow keeps a tracking store or registry in (through SQLAlchemy).
_MLFLOW_DATABASES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})


def check_mlflow_store_uri(uri: str) -> None:
    """Raise ``ValueError`` when ``uri`` names one of MLflow's database stores through a
    driver that is not installed (``mysql://`` without MySQLdb): every command that
    opened it stopped on the driver's ImportError, with a traceback. Any other MLflow
    URI (a server, a directory, ``databricks``) is left to MLflow. Nothing is
    connected; the message never repeats the URI (it may carry a password).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(uri)
    except (ArgumentError, ValueError):  # not a database URL: a path, databricks
        return
    if parsed.get_backend_name() not in _MLFLOW_DATABASES:
        return
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"SQLAlchemy has no driver '{parsed.drivername}'") from None
    _refuse_missing_driver(parsed, dialect)


# user:password@ after a scheme (its colon may be missing: a typo), up to the last
# @ of the authority, for what SQLAlchemy cannot parse as a URL or parses wrongly
# (a password with a raw @).
_PASSWORD_IN_URL = re.compile(r"^([^:/?#]+:?//[^:/?#@]*):[^/?#]*@")
# libpq also reads a password from the query: ``...db?password=secret``.
_PASSWORD_IN_QUERY = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def without_password(url: str) -> str:
    """``url`` as it may be shown (messages, logs): its password, if any, as ``***``.

    Database URLs and MLflow URIs (``postgresql://user:pw@host/db``,
    ``http://user:pw@mlflow:5000``, ``postgresql://user@host/db?password=pw``) may
    carry one; a URL without is returned as is.
    """
    return _PASSWORD_IN_QUERY.sub(r"\1***", _without_user_password(url))


def _without_user_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL, or a port that is not a number
        return _PASSWORD_IN_URL.sub(r"\1:***@", url)
    if parsed.password is None and "@" not in url.partition("://")[2].split("/", 1)[0]:
        return url
    if url.count("@") > 1 or parsed.password is None:
        return _PASSWORD_IN_URL.sub(r"\1:***@", url)
    return parsed.render_as_string(hide_password=True)


def drop_environment_settings(
    keep: tuple[str, ...] = (), *, say: Callable[[str], object] | None = None
) -> list[str]:
    """Remove every ``NEXTBEST_*`` variable but ``keep`` from this process's environment.

    For the test suite and the benchmarks, which build stores of their own: a
    developer's ``NEXTBEST_DATABASE_URL`` (or holdout rate, or models directory)
    must neither receive their rows nor change their figures. ``say`` (``print``)
    is told which were ignored. Returns the names removed.
    """
    dropped = sorted(n for n in os.environ if n.startswith(ENV_PREFIX) and n not in keep)
    for name in dropped:
        del os.environ[name]
    get_settings.cache_clear()
    if dropped and say is not None:
        say(f"ignoring {', '.join(dropped)} from the environment (this run keeps its own)")
    return dropped


# Variables of the prefix read elsewhere than in Settings: the API keys given inline
# (service/apikeys.py), a worker's supervisor (api/workers.py), the Dask scheduler
# of `train --dask` (cli/options.py), and the test suite's PostgreSQL and MySQL servers and
# real data.
OTHER_ENVIRONMENT: frozenset[str] = frozenset(
    {
        "NEXTBEST_API_KEYS",
        "NEXTBEST_SUPERVISOR_PID",
        "NEXTBEST_DASK_SCHEDULER",
        "NEXTBEST_TEST_POSTGRES_URL",
        "NEXTBEST_TEST_MYSQL_URL",
        "NEXTBEST_HILLSTROM_CSV",
        "NEXTBEST_DETAILING_CSV",
    }
)


def unknown_environment_settings() -> list[str]:
    """What to say of each ``NEXTBEST_*`` variable set here that nextbest does not read
    (a misspelt setting: its default applies, and nothing said so), with the name
    meant when one is close."""
    from nextbest.yamlfile import near_word

    # Settings reads its variables in any case (NEXTBEST_epsilon too); the others are
    # read as written.
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    known = fields | OTHER_ENVIRONMENT
    # Compared without the prefix, which every name shares.
    suffixes = sorted(name.removeprefix(ENV_PREFIX) for name in known)
    said = []
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in fields or name in OTHER_ENVIRONMENT:
            continue
        near = near_word(upper.removeprefix(ENV_PREFIX), suffixes)
        hint = f" (did you mean {ENV_PREFIX}{near}?)" if near is not None else ""
        said.append(f"{name} is not a nextbest setting{hint}: it is ignored")
    return said


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
