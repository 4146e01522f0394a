"""Two champion decisions started at once (a scheduled promote and a manual one, two
rollbacks, two trainings making a first champion): one decides, the other waits for
it and then decides on what it left, or is refused naming it, writing nothing. Real
processes on real SQLite and PostgreSQL registries, threads with their own files and
connections."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from nextbest import registry
from nextbest.learning.train import TrainResult
from nextbest.loop import gate
from nextbest.loop.lineage import champion_changes
from nextbest.settings import Settings

REPO = Path(__file__).parents[2]

# Runs `nextbest ARGS...` with MODULE:NAME held at its call until the file GO exists,
# saying so in MARKER (its pid): a decision caught between its checks and its mark.
_HELD_AT_CALL = """
import importlib, os, sys, time
from pathlib import Path

target, marker, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
module_name, name = target.split(":")
module = importlib.import_module(module_name)
original = getattr(module, name)


def held(*args, **kwargs):
    if not marker.exists():
        # Whole or not at all: a reader polling for the file saw it empty, its
        # pid not yet written, and a SIGKILL sent then left it so.
        marker.with_name(marker.name + '.part').write_text(str(os.getpid()))
        os.replace(marker.with_name(marker.name + '.part'), marker)
        deadline = time.monotonic() + 240
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return original(*args, **kwargs)


setattr(module, name, held)
sys.argv = ["nextbest", *sys.argv[4:]]
from nextbest.cli import main

main()
"""


def _register(settings: Settings, trained, *, alias: str | None = None) -> str:
    """The session's model registered again in ``settings``' store (no training)."""
    model = registry.load_version(trained.settings, trained.version)
    result = TrainResult(model=model, metrics={}, params={"variant": "alone"})
    return registry.log_training_run(result, settings, alias=alias).version


def _env(settings: Settings, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env["NEXTBEST_MODELS_DIR"] = str(settings.resolved_models_dir)
    env["COLUMNS"] = "400"  # no long path folded mid-word by the console
    if settings.tracking_uri:
        env["NEXTBEST_TRACKING_URI"] = settings.tracking_uri
    return {**env, **more}


def _nextbest(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nextbest", *args],
        env=_env(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


@contextmanager
def _held(settings: Settings, tmp_path: Path, target: str, *args: str) -> Iterator:
    """``nextbest *args`` in its own process, held at its call of ``target`` until the
    block lets it go (``go()``); yielded once held as ``(process, go)``."""
    marker, go = tmp_path / "held", tmp_path / "go"
    process = subprocess.Popen(
        [sys.executable, "-c", _HELD_AT_CALL, target, str(marker), str(go), *args],
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), process.communicate(timeout=5)
        yield process, go.touch
    finally:
        go.touch()
        if process.poll() is None:
            process.communicate(timeout=240)


def _said(process: subprocess.Popen[str], before: str = "") -> tuple[int, str]:
    """Its exit code and all it said (``before``: what was read of it already)."""
    out, _ = process.communicate(timeout=240)
    return process.returncode, " ".join((before + out).split())


def _until_it_waits(process: subprocess.Popen[str]) -> str:
    """What ``process`` said up to its note that it waits for another decision at work
    (read as it comes, its start-up taking seconds); it fails the test if the process
    ends, or has not said so within 240 s, first."""
    lines: list[str] = []
    waits = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "is deciding on model" in line:
                waits.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(240)
    assert waits.is_set(), (process.poll(), "".join(lines))
    return "".join(lines)


def _pending(settings: Settings) -> str | None:
    tags = registry.client(settings).get_registered_model(settings.model_name).tags
    return tags.get(registry.PENDING_TAG)


def _two_promotions_meet(settings: Settings, tmp_path: Path) -> None:
    """A forced promotion of version 2 held after its checks (at the record of its
    evaluation), and one of version 3 started meanwhile: the second waits, then
    promotes version 3 over version 2, the champion the first left."""
    promote = ("promote", "--force", "--reason")
    with _held(
        settings,
        tmp_path,
        "nextbest.loop.gate:_log_evaluation",
        *promote,
        "scheduled",
        "--version",
        "2",
    ) as (first, go):
        second = _nextbest(settings, *promote, "manual", "--version", "3")
        # A promotion without the lock would run through, saying no such note.
        waited = _until_it_waits(second)
        assert second.poll() is None, _said(second, waited)
        assert registry.alias_version(settings, "champion") == "1"
        assert _pending(settings) is None
        go()
        code, said = _said(first)
        assert code == 0, said
        code, said_second = _said(second, waited)
    assert code == 0, said_second
    assert (
        f"note: the promotion by process {first.pid} on host {socket.gethostname()}"
    ) in said_second, said_second
    assert (
        "is deciding on model 'nextbest': this promotion waits for it to end, up to 120 s "
        "(NEXTBEST_DECISION_WAIT_S), then decides on what it left"
    ) in said_second, said_second
    assert "promoted version 3 to champion (previous champion: 2)" in said_second, said_second
    changes = [(c.version, c.decision, c.previous) for c in champion_changes(settings)]
    assert changes == [
        ("1", "train", None),
        ("2", "forced promote", "1"),
        ("3", "forced promote", "2"),
    ]
    assert registry.alias_version(settings, "champion") == "3"
    assert registry.alias_version(settings, "previous_champion") == "2"
    assert gate.champion_history(settings) == ["1", "2", "3"]
    assert _pending(settings) is None


def test_a_promotion_started_beside_another_waits_and_promotes_over_its_champion(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """Both passed the check before either wrote its mark, and both moved the champion:
    the last won, and both were recorded as replacing version 1 (the timeline said
    1 -> 3, then 2 replacing 1; champion_history lost version 3)."""
    settings = own_copy
    assert _register(settings, trained, alias="challenger") == "2"
    assert _register(settings, trained) == "3"
    _two_promotions_meet(settings, tmp_path)


def test_a_promotion_that_waited_for_the_same_one_says_nothing_to_promote(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """A retried job started while the first promotion was still evaluating: it waits,
    then finds the promotion made (exit 0), as it would have run after it."""
    settings = own_copy
    assert _register(settings, trained, alias="challenger") == "2"
    with _held(
        settings,
        tmp_path,
        "nextbest.loop.gate:_log_evaluation",
        *("promote", "--force", "--reason", "scheduled"),
    ) as (first, go):
        second = _nextbest(settings, "promote", "--force", "--reason", "retried")
        waited = _until_it_waits(second)
        assert second.poll() is None, _said(second, waited)
        go()
        code, said = _said(first)
        assert code == 0, said
        code, said_second = _said(second, waited)
    assert code == 0, said_second
    assert "nothing to promote: version 2, the newest, is champion already" in said_second
    assert [c.version for c in champion_changes(settings)] == ["1", "2"]
    assert registry.alias_version(settings, "previous_champion") == "1"


def test_a_rollback_beside_another_past_its_wait_is_refused_naming_it_and_writes_nothing(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """Two rollbacks at once each rolled 3 back to 2, two runs recording the same step;
    now the second, with NEXTBEST_DECISION_WAIT_S=1, stops (exit 2) naming the first."""
    settings = own_copy
    for reason in ("pilot", "wider"):
        _register(settings, trained, alias="challenger")
        gate.promote(settings, config=gate.GateConfig(), force=True, reason=reason)
    assert registry.alias_version(settings, "champion") == "3"
    with _held(
        settings, tmp_path, "nextbest.registry:move_recorded", "rollback", "--reason", "first"
    ) as (first, go):
        code, said = _said(
            _nextbest(settings, "rollback", "--reason", "second", NEXTBEST_DECISION_WAIT_S="1")
        )
        assert code == 2, said
        assert (
            f"error: the rollback by process {first.pid} on host {socket.gethostname()} "
            "(deciding since "
        ) in said, said
        lock = settings.resolved_models_dir / ".mlflow.db.nextbest.decision.lock"
        assert (
            f"is deciding on model 'nextbest' (it holds {lock}); this rollback waited 1 s "
            "for it to end (NEXTBEST_DECISION_WAIT_S) and decided nothing: run the command "
            "again once it has ended"
        ) in said, said
        go()
        code, said = _said(first)
        assert code == 0, said
    rollbacks = [c for c in champion_changes(settings) if c.decision == "rollback"]
    assert [(c.version, c.previous, c.reason) for c in rollbacks] == [("2", "3", "first")]
    assert registry.alias_version(settings, "champion") == "2"
    assert gate.champion_history(settings) == ["1", "2"]
    assert lock.read_text() == ""  # no holder left named


class _SaysItWaits(logging.Handler):
    """Sets ``said`` at the warning of a decision that finds the lock held and waits."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.said = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "is deciding on model" in record.getMessage():
            self.said.set()


@pytest.mark.parametrize("asked", [None, "champion"], ids=["first-version", "alias-champion"])
def test_two_trainings_on_an_empty_registry_make_one_first_champion(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: str | None
) -> None:
    """Both found no champion and no mark, and each made its version the first
    champion (two train decisions replacing none; the older version won). Now the
    second waits, finds the champion made, and registers its version without the
    alias: said (exit 1 in the command) when it asked for champion with --alias."""
    settings = Settings(models_dir=tmp_path / "models", seed=11)
    _register(settings, trained, alias="challenger")  # makes the store and its tables
    registry.client(settings).delete_registered_model_alias(settings.model_name, "challenger")
    held, go = threading.Event(), threading.Event()
    first: list[threading.Thread] = []
    original = registry.experiment_id

    def hold(settings_: Settings, suffix: str = "") -> str:
        # The first training, past its check, opening its decision run.
        at_decision = suffix == registry.DECISIONS_SUFFIX
        if threading.current_thread() in first and at_decision and not held.is_set():
            held.set()
            assert go.wait(120)
        return original(settings_, suffix)

    monkeypatch.setattr(registry, "experiment_id", hold)
    made: list[str] = []
    second: list[object] = []

    def register_second() -> None:
        model = registry.load_version(trained.settings, trained.version)
        result = TrainResult(model=model, metrics={}, params={"variant": "alone"})
        try:
            second.append(registry.log_training_run(result, settings, alias=asked))
        except registry.RegistryError as exc:
            second.append(exc)

    first.append(threading.Thread(target=lambda: made.append(_register(settings, trained))))
    first[0].start()
    waits = _SaysItWaits()
    logging.getLogger(registry.__name__).addHandler(waits)
    try:
        assert held.wait(120)
        other = threading.Thread(target=register_second)
        other.start()
        # Without the lock it would register and end, saying no such warning.
        deadline = time.monotonic() + 120
        while not waits.said.wait(0.1) and other.is_alive() and time.monotonic() < deadline:
            pass
        assert waits.said.is_set(), second
        assert other.is_alive(), second  # waiting for the first's decision
    finally:
        logging.getLogger(registry.__name__).removeHandler(waits)
        go.set()
        first[0].join(120)
    other.join(120)
    (champion,) = made
    assert registry.alias_version(settings, "champion") == champion
    assert [(c.version, c.decision, c.previous) for c in champion_changes(settings)] == [
        (champion, "train", None)
    ]
    (outcome,) = second
    later = str(int(champion) + 1)
    assert isinstance(outcome, registry.ModelVersionInfo), outcome
    assert outcome.version == later
    if asked is None:
        assert outcome.not_champion is None
    else:
        assert outcome.not_champion == (
            f"version {later} is registered in full without alias champion: version "
            f"{champion} became champion while it trained, and the champion changes only "
            f"by `nextbest promote`, which runs the gate; `nextbest evaluate --version "
            f"{later}` compares the two, and `nextbest promote --version {later}` makes it "
            "champion if the gate passes"
        )
    described = registry.describe_version(settings, later)
    assert described.aliases == ()
    assert _pending(settings) is None


def _refused_at_once(
    settings: Settings, decision_elsewhere: Callable[..., AbstractContextManager[None]]
) -> str:
    """A rollback told not to wait, beside a promotion holding ``settings``' lock in
    another thread: refused, naming that promotion; once it has ended, the rollback
    takes the lock. The refusal's words, for what each lock adds to them."""
    no_wait = settings.model_copy(update={"decision_wait_s": 0.0})
    with (
        decision_elsewhere(settings),
        pytest.raises(registry.DecisionLockedError) as refused,
        registry.deciding_alone(no_wait, "rollback"),
    ):
        pass
    here = registry.DecidingProcess.this()
    assert refused.value.holder is not None
    assert (refused.value.holder.decision, refused.value.holder.process.pid) == (
        "promotion",
        here.pid,
    )
    said = str(refused.value)
    assert said.startswith(
        f"the promotion by process {here.pid} on host {here.host} (deciding since "
    ), said
    assert (
        "; this rollback did not wait for it (NEXTBEST_DECISION_WAIT_S is 0) and decided "
        "nothing: run the command again once it has ended"
    ) in said, said
    with registry.deciding_alone(no_wait, "rollback"):
        pass
    return said


def _lost_lock_stops_the_move(
    settings: Settings, tmp_path: Path, end_session: Callable[[int], None]
) -> str:
    """A forced promotion of version 2 over champion 1, held just before the move while
    ``end_session`` (given the command's pid) ends its lock's database session: it stops
    (exit 2), the champion stays. What it said, for what each lock adds to it."""
    with _held(
        settings,
        tmp_path,
        "nextbest.registry:move_recorded",
        *("promote", "--force", "--reason", "lost"),
    ) as (first, go):
        end_session(first.pid)
        go()
        code, said = _said(first)
    assert code == 2, said
    assert "error: the promotion of version 2 was recorded (MLflow run " in said, said
    assert ") was lost: its connection to the database ended (OperationalError: " in said, said
    assert (
        "and another decision may have been made beside it since: the champion was not "
        "moved; the run is marked failed (alias_moved = false, status FAILED) and left out "
        "of `nextbest models --history`; the champion stays version 1. Run the command "
        "again: it decides on what the registry holds now"
    ) in said, said
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "challenger") == "2"
    assert _pending(settings) is None
    assert [c.version for c in champion_changes(settings)] == ["1"]
    return said


@pytest.mark.postgres
def test_two_promotions_on_a_postgresql_registry_wait_for_each_other(
    trained, postgres_url: str, tmp_path: Path
) -> None:
    """The same meeting on a registry in PostgreSQL: an advisory lock keeps them apart,
    and the one waiting names the other by its connection's application name."""
    settings = trained.settings.model_copy(
        update={"models_dir": tmp_path / "models", "tracking_uri": postgres_url}
    )
    assert _register(settings, trained) == "1"
    assert registry.alias_version(settings, "champion") == "1"
    assert _register(settings, trained, alias="challenger") == "2"
    assert _register(settings, trained) == "3"
    assert not list(tmp_path.glob("models/.*.lock"))  # no lock file beside a server's store
    _two_promotions_meet(settings, tmp_path)


@pytest.mark.postgres
def test_a_decision_lock_in_postgresql_is_refused_at_once_with_no_wait(
    trained,
    postgres_url: str,
    tmp_path: Path,
    decision_elsewhere: Callable[..., AbstractContextManager[None]],
) -> None:
    """Two threads, each on its own connection: the second, told not to wait, is
    refused naming the first; once the first has ended, it takes the lock."""
    settings = trained.settings.model_copy(
        update={"models_dir": tmp_path / "models", "tracking_uri": postgres_url}
    )
    said = _refused_at_once(settings, decision_elsewhere)
    assert "is deciding on model 'nextbest' (it holds PostgreSQL advisory lock " in said


@pytest.mark.parametrize(
    ("registry_uri", "lock_file"),
    [
        pytest.param(
            "sqlite:///{tmp}/store/mlflow.db",
            "store/.mlflow.db.nextbest.decision.lock",
            id="sqlite",
        ),
        pytest.param("{tmp}/mlruns", ".mlruns.nextbest.decision.lock", id="file-store"),
        pytest.param("file://{tmp}/mlruns", ".mlruns.nextbest.decision.lock", id="file-uri"),
        pytest.param("http://127.0.0.1:5000", None, id="tracking-server"),
    ],
)
def test_which_registries_keep_two_decisions_apart(
    tmp_path: Path,
    registry_uri: str,
    lock_file: str | None,
    decision_elsewhere: Callable[..., AbstractContextManager[None]],
) -> None:
    """A SQLite file or a file store (by path or file: URI) is locked with a file beside
    it, across threads of one process too; an MLflow server over HTTP beside a store in
    SQLite is not locked."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "mlflow.db").touch()
    (tmp_path / "mlruns").mkdir()
    settings = Settings(
        models_dir=tmp_path / "models",
        registry_uri=registry_uri.format(tmp=tmp_path),
        decision_wait_s=0.0,
    )
    with decision_elsewhere(settings):
        if lock_file is not None:
            with (
                pytest.raises(registry.DecisionLockedError, match="did not wait"),
                registry.deciding_alone(settings, "rollback"),
            ):
                pass
        else:
            with registry.deciding_alone(settings, "rollback"):
                pass
    made = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.decision.lock")]
    assert made == ([lock_file] if lock_file else [])


def test_a_lock_file_that_cannot_be_opened_stops_the_decision_naming_it(tmp_path: Path) -> None:
    """Left as a link to a place that is gone (a models directory moved by hand): the
    decision stops, naming the file and why, and what to do; it is not made unlocked."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "mlflow.db").touch()
    lock = store / ".mlflow.db.nextbest.decision.lock"
    lock.symlink_to(tmp_path / "gone" / "decision.lock")
    settings = Settings(models_dir=tmp_path / "models", registry_uri=f"sqlite:///{store}/mlflow.db")
    with (
        pytest.raises(registry.RegistryError) as refused,
        registry.deciding_alone(settings, "promotion"),
    ):
        pytest.fail("decided without the lock")
    assert str(refused.value) == (
        f"the decision lock {lock} of model 'nextbest' cannot be opened or made "
        f"(FileNotFoundError: [Errno 2] No such file or directory: '{lock}'): nothing was "
        f"decided. Give this account the right to write in {store}, as it has for the "
        "registry there"
    )


def _unfinished_promotion(settings: Settings, trained) -> str:
    """A promotion of a new version killed outright after the champion moved: its mark
    (by a process that has ended) names what it did not write (previous_champion,
    challenger taken off). The version."""
    version = _register(settings, trained, alias="challenger")
    ended = registry.DecidingProcess(socket.gethostname(), os.getpid(), started="ended")
    end = registry.DecisionEnd(
        kind="promotion",
        champion=version,
        replaces="1",
        aliases={"previous_champion": "1"},
        released=("challenger",),
        run_id="0" * 32,
        process=ended,
    )
    mlflow_client = registry.client(settings)
    mlflow_client.set_registered_model_tag(settings.model_name, registry.PENDING_TAG, end.to_json())
    registry.set_alias(settings, "champion", version)
    return version


def test_repair_beside_a_decision_past_its_wait_is_refused_naming_it_and_writes_nothing(
    own_copy: Settings, trained, decision_elsewhere: Callable[..., AbstractContextManager[None]]
) -> None:
    """`nextbest models --repair` finished a killed promotion, moving aliases, while
    another decision held the lock (and was about to finish it, or decide over it):
    now it waits for it like a decision, and past NEXTBEST_DECISION_WAIT_S stops
    (exit 2) naming it, having written nothing."""
    settings = own_copy
    version = _unfinished_promotion(settings, trained)
    mark = _pending(settings)
    with decision_elsewhere(settings):
        code, said = _said(_nextbest(settings, "models", "--repair", NEXTBEST_DECISION_WAIT_S="1"))
        assert code == 2, said
        lock = settings.resolved_models_dir / ".mlflow.db.nextbest.decision.lock"
        here = registry.DecidingProcess.this()
        assert (
            f"error: the promotion by process {here.pid} on host {here.host} (deciding since "
        ) in said, said
        assert (
            f"is deciding on model 'nextbest' (it holds {lock}); this repair waited 1 s for it "
            "to end (NEXTBEST_DECISION_WAIT_S) and repaired nothing: run `nextbest models "
            "--repair` again once it has ended"
        ) in said, said
        assert _pending(settings) == mark
        assert registry.alias_version(settings, "previous_champion") is None
        assert registry.alias_version(settings, "challenger") == version


def test_repair_waits_for_a_decision_at_work_then_repairs_what_it_left(
    own_copy: Settings, trained, decision_elsewhere: Callable[..., AbstractContextManager[None]]
) -> None:
    """The repair says whom it waits for, and once that decision has ended, finishes
    the killed promotion."""
    settings = own_copy
    version = _unfinished_promotion(settings, trained)
    with decision_elsewhere(settings):
        repair = _nextbest(settings, "models", "--repair")
        assert repair.stdout is not None
        before = []
        for line in repair.stdout:  # until it waits (its start-up takes seconds)
            before.append(line)
            if "is deciding on model" in line:
                break
        waiting = " ".join("".join(before).split())
        here = registry.DecidingProcess.this()
        assert f"note: the promotion by process {here.pid} on host {here.host}" in waiting, waiting
        assert (
            "is deciding on model 'nextbest': this repair waits for it to end, up to 120 s "
            "(NEXTBEST_DECISION_WAIT_S), then repairs what it left"
        ) in waiting, waiting
        assert registry.alias_version(settings, "previous_champion") is None
    code, said = _said(repair)
    assert code == 0, said
    assert f"finished: the promotion of version {version} (replacing 1; MLflow run " in said, said
    assert registry.alias_version(settings, "previous_champion") == "1"
    assert registry.alias_version(settings, "challenger") is None
    assert _pending(settings) is None


@pytest.mark.postgres
def test_a_decision_whose_postgresql_lock_was_lost_does_not_move_the_champion(
    trained, postgres_url: str, tmp_path: Path
) -> None:
    """The server ended the lock's session (pg_terminate_backend: an administrator, a
    restart, a dropped network) while a promotion evaluated: the lock went with it, and
    another decision could take it, yet the promotion went on to move the champion.
    Now it checks the lock before the move, and stops (exit 2) saying so."""
    from sqlalchemy import create_engine, text

    settings = trained.settings.model_copy(
        update={"models_dir": tmp_path / "models", "tracking_uri": postgres_url}
    )
    assert _register(settings, trained) == "1"
    assert _register(settings, trained, alias="challenger") == "2"

    def terminate(pid: int) -> None:
        engine = create_engine(postgres_url)
        try:
            with engine.connect() as connection:
                ended = connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name LIKE :name"
                    ),
                    {"name": f"nextbest {pid}@% promotion"},
                ).all()
        finally:
            engine.dispose()
        assert ended == [(True,)]

    said = _lost_lock_stops_the_move(settings, tmp_path, terminate)
    assert "but its decision lock on model 'nextbest' (PostgreSQL advisory lock " in said, said


@pytest.mark.postgres
def test_a_long_host_name_leaves_the_decision_named_whole_in_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL keeps 63 bytes of a connection's application_name: on a host with a
    long name (a cloud machine's) the holder's decision was cut (`the champion
    decision of a trai by ...`). Now the host name is cut short instead."""
    from sqlalchemy.engine import make_url

    settings = Settings(models_dir=tmp_path / "models", tracking_uri=postgres_url)
    url = make_url(postgres_url)
    host = "ip-10-20-30-40.eu-central-1.compute.internal"
    holder = registry.DecisionHolder(
        "champion decision of a training", registry.DecidingProcess(host, 4242)
    )
    taking, reading = (registry._AdvisoryLock(url, "nextbest") for _ in range(2))
    taking.open(settings, holder)
    reading.open(settings, holder)
    try:
        assert taking.try_take(holder)
        found = reading.holder()
    finally:
        reading.close(taken=False)
        taking.close(taken=True)
    assert found is not None
    assert found.decision == "champion decision of a training"
    assert found.process.pid == 4242
    assert found.process.host == "ip-10-20-30-40.e~"


def _file_locked_registry(tmp_path: Path) -> tuple[Settings, Path]:
    """Settings of a SQLite registry that decide at once (no wait), and its lock file."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "mlflow.db").touch()
    settings = Settings(
        models_dir=tmp_path / "models",
        registry_uri=f"sqlite:///{store}/mlflow.db",
        decision_wait_s=0,
    )
    return settings, store / ".mlflow.db.nextbest.decision.lock"


def _refused_in_a_thread(settings: Settings) -> tuple[threading.Thread, list[BaseException]]:
    """A rollback started in a thread of its own, which the lock must refuse; what it
    raised lands in the list once the thread ends."""
    raised: list[BaseException] = []

    def decide() -> None:
        try:
            with registry.deciding_alone(settings, "rollback"):
                pass
        except BaseException as exc:
            raised.append(exc)

    return threading.Thread(target=decide), raised


def test_a_waiter_names_a_holder_that_writes_itself_just_after_taking_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision takes the lock file's flock, then writes who it is into the file: a
    decision refused between the two read an empty file and said "another process is
    deciding". It reads the holder again for a moment, and names the one written."""
    from nextbest.locking import try_flock

    settings, lock = _file_locked_registry(tmp_path)
    read_unwritten = threading.Event()
    pause = getattr(registry, "_holder_pause", None)

    def noticed() -> None:  # the waiter found no holder written yet
        read_unwritten.set()
        if pause is not None:
            pause()

    monkeypatch.setattr(registry, "_holder_pause", noticed, raising=False)
    # Written here at once, far within it: the test does not hang on a slow machine.
    monkeypatch.setattr(registry, "HOLDER_WRITTEN_WITHIN_S", 60.0, raising=False)
    holder = registry.DecisionHolder(
        "promotion", registry.DecidingProcess("host-b", 4242), since="2026-12-05T06:00:00+00:00"
    )
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        assert try_flock(fd)  # taken, as try_take takes it, the holder not written yet
        waiter, raised = _refused_in_a_thread(settings)
        waiter.start()
        read_unwritten.wait(5)
        os.pwrite(fd, holder.to_json().encode(), 0)
        waiter.join(60)
    finally:
        os.close(fd)
    assert not waiter.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], registry.DecisionLockedError), raised
    assert str(raised[0]) == (
        "the promotion by process 4242 on host host-b (deciding since 2026-12-05 06:00:00 "
        f"UTC) is deciding on model 'nextbest' (it holds {lock}); this rollback did not wait "
        "for it (NEXTBEST_DECISION_WAIT_S is 0) and decided nothing: run the command again "
        "once it has ended"
    )
    assert raised[0].holder == holder
    assert read_unwritten.is_set()  # it did read the file before the holder was in it


@pytest.mark.parametrize(
    "written",
    [b"", b'{"host": "host-b", "pid": 42', b"\xff\xfe"],
    ids=["empty", "cut", "not-text"],
)
def test_a_holder_never_written_is_another_process_said_at_once(
    tmp_path: Path, written: bytes
) -> None:
    """A lock file that stays empty (its holder could not write it: another account's
    file) or holds no holder: the waiter says "another process", after a moment, not
    after its wait."""
    from nextbest.locking import try_flock

    settings, lock = _file_locked_registry(tmp_path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        assert try_flock(fd)
        os.pwrite(fd, written, 0)
        waiter, raised = _refused_in_a_thread(settings)
        started = time.monotonic()
        waiter.start()
        waiter.join(60)
        took = time.monotonic() - started
    finally:
        os.close(fd)
    assert len(raised) == 1 and isinstance(raised[0], registry.DecisionLockedError), raised
    assert str(raised[0]).startswith(
        f"another process is deciding on model 'nextbest' (it holds {lock}); this rollback "
        "did not wait for it"
    )
    assert raised[0].holder is None
    assert took < 1.0, took


@pytest.mark.parametrize("gone", [True, False], ids=["ended", "this-process"])
def test_a_holder_left_in_the_file_by_a_process_that_ended_is_not_named(
    tmp_path: Path, gone: bool
) -> None:
    """A decision killed outright (SIGKILL, the OOM killer) leaves who it was in the
    lock file: the system releases its lock, nothing empties the file. The next taker
    writes itself over it, or, when it cannot write the file (another account's), never
    does: a waiter named the ended process as deciding. A process of this host that has
    ended is no holder; one that runs (this one, from another thread) is named."""
    from nextbest.locking import try_flock

    settings, lock = _file_locked_registry(tmp_path)
    here = registry.DecidingProcess.this()
    process = registry.DecidingProcess(here.host, here.pid, started="ended") if gone else here
    left = registry.DecisionHolder("promotion", process, since="2026-12-05T06:00:00+00:00")
    lock.write_text(left.to_json())
    fd = os.open(lock, os.O_RDONLY)  # a taker that cannot write the file
    try:
        assert try_flock(fd)
        waiter, raised = _refused_in_a_thread(settings)
        waiter.start()
        waiter.join(60)
    finally:
        os.close(fd)
    assert len(raised) == 1 and isinstance(raised[0], registry.DecisionLockedError), raised
    named = "another process" if gone else f"the promotion by process {here.pid} on host"
    assert str(raised[0]).startswith(f"{named} "), raised[0]
    assert raised[0].holder == (None if gone else left)


def _mysql_registry(trained, mysql_url: str, tmp_path: Path) -> Settings:
    """The session's model in an MLflow registry on MySQL (or MariaDB): version 1
    champion, version 2 challenger."""
    settings = trained.settings.model_copy(
        update={"models_dir": tmp_path / "models", "tracking_uri": mysql_url}
    )
    assert _register(settings, trained) == "1"
    assert _register(settings, trained, alias="challenger") == "2"
    return settings


@pytest.mark.mysql
def test_two_promotions_on_a_mysql_registry_wait_for_each_other(
    trained, mysql_url: str, tmp_path: Path
) -> None:
    """The meeting on a registry in MySQL: both moved the champion (no lock was taken
    there). Now a named lock keeps them apart, and the one waiting names the other."""
    settings = _mysql_registry(trained, mysql_url, tmp_path)
    assert _register(settings, trained) == "3"
    _two_promotions_meet(settings, tmp_path)
    assert not list(tmp_path.glob("models/.*.lock"))  # no lock file beside a server's store


@pytest.mark.mysql
def test_a_decision_lock_in_mysql_is_refused_naming_its_holder(
    mysql_url: str,
    tmp_path: Path,
    decision_elsewhere: Callable[..., AbstractContextManager[None]],
) -> None:
    """Two threads, each on its own connection (a session of its own): the second,
    told not to wait, is refused naming the first; once the first has ended (its
    session closed), it takes the lock."""
    settings = Settings(models_dir=tmp_path / "models", tracking_uri=mysql_url)
    said = _refused_at_once(settings, decision_elsewhere)
    database = mysql_url.rsplit("/", 1)[1]
    assert (
        "is deciding on model 'nextbest' (it holds MySQL named lock 'nextbest decision "
    ) in said, said
    assert f"' for database {database}); this rollback did not wait for it " in said, said


@pytest.mark.mysql
def test_named_locks_of_two_databases_on_one_server_are_two(mysql_url: str, tmp_path: Path) -> None:
    """A MySQL server's named locks are the server's, not a database's: two
    deployments on one server (two databases) decide on their models apart."""
    from sqlalchemy.engine import make_url

    url = make_url(mysql_url)
    holder = registry.DecisionHolder("promotion", registry.DecidingProcess.this())
    settings = Settings(models_dir=tmp_path / "models", tracking_uri=mysql_url)
    here, there = (
        registry._NamedLock(url, "nextbest"),
        registry._NamedLock(url.set(database="test"), "nextbest"),
    )
    again = registry._NamedLock(url, "nextbest")
    for lock in (here, there, again):
        lock.open(settings, holder)
    try:
        assert here.try_take(holder)
        assert there.try_take(holder)
        assert not again.try_take(holder)
    finally:
        for lock in (here, there, again):
            lock.close(taken=lock is not again)


@pytest.mark.mysql
def test_a_decision_whose_mysql_lock_was_lost_does_not_move_the_champion(
    trained, mysql_url: str, tmp_path: Path
) -> None:
    """The server ended the lock's session (KILL: an administrator, a restart, a
    dropped network) while a promotion evaluated: the lock went with it. The
    promotion checks it before the move, and stops (exit 2) saying so."""
    from sqlalchemy import create_engine, text

    settings = _mysql_registry(trained, mysql_url, tmp_path)

    def kill(pid: int) -> None:
        engine = create_engine(mysql_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                holding = connection.execute(
                    text(f"SELECT connection_id, holder FROM {registry._HOLDERS_TABLE}")
                ).all()
                assert len(holding) == 1, holding
                assert f'"pid": {pid}' in holding[0][1], holding
                connection.execute(text(f"KILL {int(holding[0][0])}"))
        finally:
            engine.dispose()

    said = _lost_lock_stops_the_move(settings, tmp_path, kill)
    assert "but its decision lock on model 'nextbest' (MySQL named lock " in said, said


@pytest.mark.postgres
def test_decisions_beside_an_mlflow_server_are_kept_apart_in_the_postgresql_store(
    postgres_url: str,
    tmp_path: Path,
    decision_elsewhere: Callable[..., AbstractContextManager[None]],
) -> None:
    """An MLflow server over HTTP had no lock: two decisions both moved the champion.
    The deployment's own store on PostgreSQL, which every promotion reads, holds it
    now; the lock is taken before the registry is asked (none answers here)."""
    settings = Settings(
        models_dir=tmp_path / "models",
        registry_uri="http://127.0.0.1:9",
        database_url=postgres_url,
    )
    said = _refused_at_once(settings, decision_elsewhere)
    database = postgres_url.rsplit("/", 1)[1]
    assert "is deciding on model 'nextbest' (it holds PostgreSQL advisory lock " in said, said
    assert (
        f" in database {database} (NEXTBEST_DATABASE_URL)); this rollback did not wait for it"
    ) in said, said
    assert not list(tmp_path.rglob("*.decision.lock"))


def test_a_store_that_holds_the_decision_lock_and_is_down_stops_the_decision_naming_it(
    tmp_path: Path,
) -> None:
    """Beside an MLflow server, a PostgreSQL store that does not answer: the decision
    is not made unlocked; it stops, naming the store and its variable."""
    settings = Settings(
        models_dir=tmp_path / "models",
        registry_uri="http://127.0.0.1:9",
        database_url="postgresql+psycopg://nextbest:secret@127.0.0.1:9/nextbest",
    )
    with (
        pytest.raises(registry.RegistryError) as refused,
        registry.deciding_alone(settings, "promotion"),
    ):
        pytest.fail("decided without the lock")
    said = str(refused.value)
    assert said.startswith(
        "the database postgresql+psycopg://nextbest:***@127.0.0.1:9/nextbest "
        "(NEXTBEST_DATABASE_URL), which holds the decision lock of model 'nextbest', "
        "cannot be reached, so nothing was decided: OperationalError: "
    ), said
    assert "secret" not in said
