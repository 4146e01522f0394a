"""An MLflow store on a database server that is down or does not answer: a command
says so within seconds, in one line, where MLflow tried ten times over about 101 s
(a WARNING of several lines at each). Real processes and sockets; the real
PostgreSQL where the store must answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from nextbest import registry
from nextbest.api.process import free_port
from nextbest.learning.train import TrainResult
from nextbest.settings import Settings
from nextbest.storage.db import PG_CONNECT_TIMEOUT_S, migrate
from nextbest.storage.testing import TcpProxy

# MLflow's ten tries took 101 s and more: any bound well below tells them apart. A
# command that says so at once took 3-8 s here, and up to 43 s on a machine loaded
# six times over (each a fresh Python importing MLflow), which a tighter bound failed.
WITHIN_S = 60.0


def _models(
    tmp_path: Path,
    tracking_uri: str | None,
    registry_uri: str | None = None,
    *,
    command: Sequence[str] = ("models",),
) -> tuple[str, int, float]:
    """``nextbest models`` (or ``command``) run on ``tracking_uri`` (None: the local
    store) and ``registry_uri``: its output (one line per message), exit code and
    seconds taken."""
    env = {
        **os.environ,
        "NEXTBEST_MODELS_DIR": str(tmp_path / "models"),
        "NEXTBEST_TRACKING_URI": tracking_uri or "",
        "NEXTBEST_REGISTRY_URI": registry_uri or "",
        "COLUMNS": "100000",  # the console wraps long lines
    }
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "nextbest.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=WITHIN_S + PG_CONNECT_TIMEOUT_S + 60,
    )
    return run.stdout + run.stderr, run.returncode, time.monotonic() - started


@contextmanager
def _silent_server() -> Iterator[int]:
    """A port where connections are accepted (by the kernel) and never answered, as
    behind a firewall that drops packets or a server that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def test_a_command_on_a_store_whose_server_refuses_stops_within_seconds(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there: refused at once
    store = f"postgresql+psycopg://nextbest:s3cret-pw@127.0.0.1:{closed}/mlflow"
    output, code, took = _models(tmp_path, store)
    assert code == 2, output
    assert took < WITHIN_S, f"{took:.1f} s: {output[-3000:]}"
    assert output.startswith(
        f"error: the MLflow registry postgresql+psycopg://nextbest:***@127.0.0.1:{closed}/mlflow "
        "cannot be read, so the versions of model 'nextbest' are unknown: OperationalError: "
        "connection failed: "
    ), output[-3000:]
    assert "Connection refused" in output
    assert len(output.strip().splitlines()) == 1, output[-3000:]  # no WARNING per try
    assert "s3cret-pw" not in output


def test_a_registry_of_its_own_that_is_down_is_the_store_named(tmp_path: Path) -> None:
    """NEXTBEST_REGISTRY_URI on a server that refuses, the tracking store local: the
    line names the registry, not the tracking store that answered (it named every
    store, the failed one among them)."""
    closed = free_port()
    store = f"postgresql+psycopg://nextbest:s3cret-pw@127.0.0.1:{closed}/registry"
    output, code, took = _models(tmp_path, None, store)
    assert code == 2 and took < WITHIN_S, f"{took:.1f} s: {output[-3000:]}"
    assert output.startswith(
        f"error: the MLflow registry postgresql+psycopg://nextbest:***@127.0.0.1:{closed}/"
        "registry cannot be read, so the versions of model 'nextbest' are unknown: "
        "OperationalError: connection failed: "
    ), output[-3000:]
    assert "tracking store" not in output and "mlflow.db" not in output, output[-3000:]
    assert "s3cret-pw" not in output


@pytest.mark.parametrize("command", ["rollback", "train", "uplift-report"])
@pytest.mark.parametrize("down", ["tracking store", "registry"])
def test_rollback_train_and_uplift_report_on_a_store_down_name_it(
    tmp_path: Path, world_dir: Path, down: str, command: str
) -> None:
    """`nextbest rollback`, `train` and `uplift-report` first open the experiment their
    run is logged in: they said "a database cannot be used", naming every store, where
    `models` names the one that failed (the other store here a SQLite file that answers)."""
    closed = free_port()
    server = f"postgresql+psycopg://nextbest:s3cret-pw@127.0.0.1:{closed}/mlflow"
    local = tmp_path / "other.db"
    local.touch()
    stores = (server, f"sqlite:///{local}")
    tracking, registry_uri = stores if down == "tracking store" else stores[::-1]
    args = {
        "rollback": ["rollback"],
        "train": ["train", "--data", str(world_dir)],
        "uplift-report": ["uplift-report", "--out", str(tmp_path / "report")],
    }[command]
    # The models directory exists with its log, as a deployment's does: uplift-report's
    # log is kept there, and one that does not exist is refused before any store is opened.
    (tmp_path / "models").mkdir()
    migrate(f"sqlite:///{tmp_path / 'models' / 'nextbest.db'}")
    output, code, took = _models(tmp_path, tracking, registry_uri, command=args)
    assert code == 2 and took < WITHIN_S, f"{took:.1f} s: {output[-3000:]}"
    said = " ".join(output.split())  # the console wraps long lines
    # A rollback first takes the model's decision lock, in the registry's database.
    first = (
        "the decision under way of model 'nextbest' is unknown"
        if (command, down) == ("rollback", "registry")
        else "the experiment 'nextbest"
    )
    assert (
        f"error: the MLflow {down} postgresql+psycopg://nextbest:***@127.0.0.1:{closed}/mlflow "
        f"cannot be read, so {first}"
    ) in said, said
    assert "OperationalError: connection failed: " in said, said
    assert "a database cannot be used" not in said and "sqlite" not in said, said
    assert "s3cret-pw" not in output


def test_a_command_on_a_store_that_never_answers_stops_at_the_connect_timeout(
    tmp_path: Path,
) -> None:
    """Without a connect_timeout in the URI, MLflow's tries each waited for the system's
    TCP timeout (or for ever, on a server that accepts and hangs)."""
    with _silent_server() as port:
        store = f"postgresql+psycopg://nextbest@127.0.0.1:{port}/m"
        output, code, took = _models(tmp_path, store)
    assert code == 2, output
    assert took < PG_CONNECT_TIMEOUT_S + WITHIN_S, f"{took:.1f} s: {output[-3000:]}"
    assert output.startswith(
        f"error: the MLflow registry {store} cannot be read, so the versions of model "
        "'nextbest' are unknown: ConnectionTimeout: connection timeout expired"
    ), output[-3000:]
    assert len(output.strip().splitlines()) == 1, output[-3000:]


def test_a_connect_timeout_in_the_store_uri_is_kept(tmp_path: Path) -> None:
    """The reader of the served alias (each poll and retry of a serving worker) on a
    store that never answers: the URI's own connect_timeout bounds the wait, not
    nextbest's default, and the error names the store and the driver's error."""
    with _silent_server() as port:
        store = f"postgresql+psycopg://nextbest@127.0.0.1:{port}/mlflow?connect_timeout=1"
        settings = Settings(models_dir=tmp_path / "models", tracking_uri=store)
        started = time.monotonic()
        with pytest.raises(registry.RegistryUnreadableError) as refused:
            registry.alias_version(settings, "champion")
        took = time.monotonic() - started
    assert took < PG_CONNECT_TIMEOUT_S - 3, f"{took:.1f} s: the URI says 1 s"
    assert str(refused.value).startswith(
        f"the MLflow registry {store} cannot be read, so alias 'champion' of model "
        "'nextbest' is unknown: ConnectionTimeout: connection timeout expired"
    ), refused.value
    assert "\n" not in str(refused.value)


def _first_version_through(trained, tracking_uri: str, tmp_path: Path, variant: str) -> Settings:
    """Settings whose tracking store is ``tracking_uri`` (a proxy to PostgreSQL), with
    the trained model registered there as version 1, the champion."""
    settings = trained.settings.model_copy(
        update={"models_dir": tmp_path / "models", "tracking_uri": tracking_uri}
    )
    model = registry.load_version(trained.settings, trained.version)
    result = TrainResult(model=model, metrics={}, params={"variant": variant})
    assert registry.log_training_run(result, settings).version == "1"
    return settings


@pytest.mark.postgres
def test_a_store_that_answers_is_probed_once_per_process(
    trained, postgres_url: str, tmp_path: Path
) -> None:
    """The check before MLflow opens a store costs one connection per process: after
    it, MLflow's own pool answers (and a store gone down fails its check at once)."""
    proxy, through = TcpProxy.to_database(postgres_url, port=free_port())
    proxy.start()
    try:
        settings = _first_version_through(trained, through, tmp_path, "store-down")
        opened = proxy.accepted
        for _ in range(5):
            assert registry.alias_version(settings, "champion") == "1"
        assert proxy.accepted == opened, "no connection beyond MLflow's pool"
        proxy.stop()
        started = time.monotonic()
        with pytest.raises(registry.RegistryUnreadableError, match="OperationalError: "):
            registry.alias_version(settings, "champion")
        assert time.monotonic() - started < WITHIN_S
    finally:
        proxy.stop()


@pytest.mark.postgres
def test_a_store_that_hangs_after_it_answered_is_said_at_the_connect_timeout(
    trained, postgres_url: str, tmp_path: Path
) -> None:
    """A store that answered (MLflow's pool holds a connection) and then hangs, as
    behind a network that drops packets: the next read (a watcher's poll, a reload
    asked for) reconnects, and that connection of MLflow's own waits the connect
    timeout, as the check before MLflow opened the store did, not for ever."""
    proxy, through = TcpProxy.to_database(postgres_url, port=free_port())
    proxy.start()
    try:
        settings = _first_version_through(trained, through, tmp_path, "store-hangs")
        assert registry.alias_version(settings, "champion") == "1"
        proxy.hang()
        said: list[BaseException] = []

        def read() -> None:
            try:
                registry.alias_version(settings, "champion")
            except BaseException as exc:
                said.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(PG_CONNECT_TIMEOUT_S + WITHIN_S)
        took = time.monotonic() - started
        assert not reader.is_alive(), f"still waiting after {took:.0f} s"
        assert proxy.held >= 1, "the read reconnected through the proxy"
        assert took >= PG_CONNECT_TIMEOUT_S - 1, f"{took:.1f} s: not the connect timeout"
        assert len(said) == 1 and isinstance(said[0], registry.RegistryUnreadableError), said
        assert "ConnectionTimeout: connection timeout expired" in str(said[0]), said[0]
    finally:
        proxy.stop()  # closes the connections it held too: a reader still waiting ends


@pytest.mark.parametrize(
    ("read", "what"),
    [
        (
            partial(registry.alias_version, alias="champion"),
            "alias 'champion' of model 'nextbest' is",
        ),
        (registry.list_versions, "the versions of model 'nextbest' are"),  # `nextbest models`
        # What promote and `models --repair` read first.
        (registry.unfinished_decision, "the decision under way of model 'nextbest' is"),
    ],
    ids=["alias", "versions", "decision"],
)
@pytest.mark.parametrize("down", ["tracking store", "registry"])
def test_of_two_stores_the_one_that_is_down_is_named(
    tmp_path: Path, down: str, read: Callable[[Settings], object], what: str
) -> None:
    """NEXTBEST_TRACKING_URI and NEXTBEST_REGISTRY_URI on two stores, one of them on a
    server that refuses: the readers of the registry name that one, with its URI
    without the password; a tracking store down was said as the registry (by the
    reader of the decision under way), or as the driver's error (of the versions)."""
    closed = free_port()
    server = f"postgresql+psycopg://nextbest:s3cret-pw@127.0.0.1:{closed}/mlflow"
    local = tmp_path / "other.db"
    local.touch()  # a store there: asking about an alias would not create one
    tracking, registry_uri = (
        (server, f"sqlite:///{local}")
        if down == "tracking store"
        else (f"sqlite:///{local}", server)
    )
    settings = Settings(
        models_dir=tmp_path / "models", tracking_uri=tracking, registry_uri=registry_uri
    )
    with pytest.raises(registry.RegistryUnreadableError) as refused:
        read(settings)
    assert refused.value.store == down
    assert str(refused.value).startswith(
        f"the MLflow {down} postgresql+psycopg://nextbest:***@127.0.0.1:{closed}/mlflow cannot "
        f"be read, so {what} unknown: OperationalError: "
    ), refused.value
    assert "sqlite" not in str(refused.value) and "s3cret-pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("read", "what"),
    [
        (
            partial(registry.alias_version, alias="champion"),
            "alias 'champion' of model 'nextbest' is",
        ),
        (registry.list_versions, "the versions of model 'nextbest' are"),
        (registry.unfinished_decision, "the decision under way of model 'nextbest' is"),
    ],
    ids=["alias", "versions", "decision"],
)
@pytest.mark.parametrize("directory", ["the one store", "tracking store", "registry"])
def test_a_store_that_is_a_directory_is_named_as_unreadable_at_once(
    tmp_path: Path, directory: str, read: Callable[[Settings], object], what: str
) -> None:
    """A SQLite store whose path is a directory: the readers of the registry say so
    as of a store that cannot be read, naming it, at once. It was an IsADirectoryError
    (a worker's 503 then said to train a model), and a registry of its own that is a
    directory was opened by MLflow, ten tries over about 107 s."""
    place = tmp_path / "store.db"
    place.mkdir()
    other = tmp_path / "other.db"
    other.touch()
    uris = {
        "the one store": (f"sqlite:///{place}", None),
        "tracking store": (f"sqlite:///{place}", f"sqlite:///{other}"),
        "registry": (f"sqlite:///{other}", f"sqlite:///{place}"),
    }[directory]
    settings = Settings(models_dir=tmp_path / "models", tracking_uri=uris[0], registry_uri=uris[1])
    started = time.monotonic()
    with pytest.raises(registry.RegistryUnreadableError) as refused:
        read(settings)
    assert time.monotonic() - started < WITHIN_S
    store = "tracking store" if directory == "tracking store" else "registry"
    assert refused.value.store == store
    assert str(refused.value).startswith(
        f"the MLflow {store} sqlite:///{place} cannot be read, so {what} unknown: "
        "IsADirectoryError: "
    ), refused.value
    assert "other.db" not in str(refused.value)
