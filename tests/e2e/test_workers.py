"""Worker processes of a real `nextbest serve`: each accepts on its own socket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from nextbest.api.process import free_port, start_server, stop_server
from nextbest.api.workers import (
    AddressInUseError,
    balanced_listeners_supported,
    bind_own_socket,
    check_address_free,
)
from nextbest.service.apikeys import hash_key
from nextbest.storage.testing import POSTGRES_URL_ENV, TcpProxy, temporary_postgres_database

pytestmark = pytest.mark.e2e

linux_only = pytest.mark.skipif(
    not balanced_listeners_supported(), reason="SO_REUSEPORT balancing needs Linux"
)


SCRAPER_KEY = "e2e-monitor-key-0123456789abcdef"


def _env(models: Path) -> dict[str, str]:
    key = [
        {"name": "e2e", "role": "admin", "key": "e2e-admin-key-0123456789abcdef"},
        {"name": "scraper", "role": "monitor", "key": SCRAPER_KEY},
    ]
    return {**os.environ, "NEXTBEST_MODELS_DIR": str(models), "NEXTBEST_API_KEYS": json.dumps(key)}


def _sockets(proc: subprocess.Popen[bytes], port: int, status: str) -> dict[int, int]:
    """Per worker process of ``proc``: its TCP sockets on ``port`` in ``status``."""
    out = {}
    for worker in psutil.Process(proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            n = sum(
                1
                for c in worker.net_connections(kind="tcp")
                if c.status == status and c.laddr.port == port
            )
            if n:
                out[worker.pid] = n
    return out


def _wait_listening(
    proc: subprocess.Popen[bytes], port: int, *, gone: int | None = None
) -> dict[int, int]:
    """Wait until two worker processes (not ``gone``) listen on ``port``; which ones."""
    deadline = time.monotonic() + 120
    while True:
        listening = _sockets(proc, port, psutil.CONN_LISTEN)
        if len(listening) == 2 and gone not in listening:
            return listening
        assert time.monotonic() < deadline, f"workers listening: {listening}"
        time.sleep(0.2)


def _connections_held(proc: subprocess.Popen[bytes], port: int, n: int = 40) -> dict[int, int]:
    """Open ``n`` keep-alive connections (each answered once); how many each worker holds."""
    clients: list[socket.socket] = []
    try:
        for _ in range(n):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")  # accepted and answered
            clients.append(client)
        return _sockets(proc, port, psutil.CONN_ESTABLISHED)
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def two_workers(trained, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    port = free_port()
    proc = start_server(
        port=port, env=_env(models), args=["--workers", "2"], log_file=models / "server.log"
    )
    try:
        _wait_listening(proc, port)  # ready means one worker is; wait for both
        yield proc, port
    finally:
        stop_server(proc)


def test_a_stopped_server_leaves_no_metrics_directory_behind(trained, tmp_path: Path) -> None:
    # Several workers share their counters through a temporary directory that
    # serve makes; a stopped server removed it not, and they piled up in /tmp.
    models, scratch = tmp_path / "models", tmp_path / "tmp"
    shutil.copytree(trained.settings.models_dir, models)
    scratch.mkdir()
    env = {**_env(models), "TMPDIR": str(scratch)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    proc = start_server(port=port, env=env, args=["--workers", "2"], log_file=tmp_path / "log")
    try:
        made = list(scratch.glob("nextbest-metrics-*"))
        assert len(made) == 1, made  # it was there while the server ran
    finally:
        stop_server(proc)
    assert proc.returncode == 0
    assert not list(scratch.glob("nextbest-metrics-*"))


@linux_only
def test_connections_spread_over_the_workers(two_workers) -> None:
    """40 keep-alive connections to two idle workers: each worker holds a fair share.

    With one shared listening socket the kernel gives nearly every connection to
    the same worker; with a socket per worker it hashes them over both.
    """
    proc, port = two_workers
    held = _connections_held(proc, port)
    assert len(held) == 2, held
    assert min(held.values()) >= 8, held  # binomial(40, 1/2) falls below 8 about 1e-5


@linux_only
def test_a_replaced_worker_listens_on_a_socket_of_its_own(two_workers) -> None:
    """uvicorn's supervisor replaces a killed worker; the new one binds its own socket."""
    proc, port = two_workers
    listening = _sockets(proc, port, psutil.CONN_LISTEN)
    assert len(listening) == 2, listening
    killed = next(iter(listening))
    os.kill(killed, signal.SIGKILL)
    listening = _wait_listening(proc, port, gone=killed)
    held = _connections_held(proc, port)
    assert set(held) == set(listening), (held, listening)
    assert min(held.values()) >= 8, held


@linux_only
def test_a_worker_dying_while_the_supervisor_waits_on_it_stops_promptly(two_workers) -> None:
    """uvicorn's supervisor pings each worker and waits up to its health-check time
    (60 s here) for the answer. A worker that died while a ping was pending (a
    stop's SIGTERM reaching a worker still starting, or busy warming its cache)
    left the supervisor waiting out the whole minute: `stop` hung, CI timed out.
    A stopped worker holds the ping; killing it then must end the wait at once."""
    proc, port = two_workers
    worker = next(iter(_sockets(proc, port, psutil.CONN_LISTEN)))
    os.kill(worker, signal.SIGSTOP)  # it cannot answer: the next ping waits on it
    time.sleep(2)  # the supervisor pings every 0.5 s
    os.kill(worker, signal.SIGKILL)
    stop_server(proc, timeout_s=30)  # a minute's wait on a dead worker's answer failed here
    assert proc.returncode == 0, _tail(proc)


@linux_only
def test_workers_stop_when_their_supervisor_is_killed(two_workers) -> None:
    """`kill -9` of `nextbest serve` (or the kernel's out-of-memory killer) left its
    workers serving as orphans on the port, so a restart was refused it."""
    proc, port = two_workers
    workers = [psutil.Process(pid) for pid in _sockets(proc, port, psutil.CONN_LISTEN)]
    assert len(workers) == 2
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [(p.pid, p.status()) for p in alive]
    check_address_free("127.0.0.1", port)  # the port is free for the next server


@linux_only
def test_metrics_forget_a_killed_worker_once_it_is_replaced(two_workers) -> None:
    """A replaced worker's live gauges (nextbest_model_info) leave /metrics: the new
    worker marks every process that left files in PROMETHEUS_MULTIPROC_DIR and no
    longer runs as dead."""
    proc, port = two_workers
    killed = next(iter(_sockets(proc, port, psutil.CONN_LISTEN)))

    def model_info_pids() -> set[str]:
        return _pids_in_metrics(port, "nextbest_model_info{")

    assert str(killed) in model_info_pids()
    os.kill(killed, signal.SIGKILL)
    listening = _wait_listening(proc, port, gone=killed)  # replaced, after its start-up
    # The replacement may still be loading its model when it first listens (a loaded
    # machine: one CI run read no gauge at all): wait for it, a few seconds at most.
    deadline = time.monotonic() + 30
    while (pids := model_info_pids()) != {str(pid) for pid in listening}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    said = _metrics_files(proc) + _tail(proc)
    assert str(killed) not in pids, (pids, said)
    assert pids == {str(pid) for pid in listening}, (pids, listening, said)
    # The death is a warning in the server's log, not a routine INFO line.
    log = Path(psutil.Process(proc.pid).environ()["NEXTBEST_MODELS_DIR"]) / "server.log"
    died = [line for line in log.read_text().splitlines() if '"worker_died"' in line]
    warned = [json.loads(line) for line in died if f"[{killed}]" in line]
    assert [line["level"] for line in warned] == ["WARNING"], said  # one line, a warning
    assert warned[0]["exit_code"] == -signal.SIGKILL, warned
    assert "killed by SIGKILL (the kernel's out-of-memory killer" in warned[0]["message"], warned


@linux_only
def test_metrics_after_a_restart_name_only_the_workers_serving(two_workers) -> None:
    """SIGHUP makes uvicorn start each worker's replacement before it stops the
    worker: the last one stopped kept its nextbest_model_info in /metrics for good,
    as no worker started after it had exited. The process metrics of several
    workers are each serving worker's, by pid."""
    proc, port = two_workers
    before = [psutil.Process(pid) for pid in _sockets(proc, port, psutil.CONN_LISTEN)]
    os.kill(proc.pid, signal.SIGHUP)
    # uvicorn stops each worker once its replacement is ready, and waits for it.
    _, alive = psutil.wait_procs(before, timeout=120)
    assert not alive, _tail(proc)
    listening = {str(pid) for pid in _wait_listening(proc, port)}
    said = _metrics_files(proc) + _tail(proc)
    assert _pids_in_metrics(port, "nextbest_model_info{") == listening, said
    assert _pids_in_metrics(port, "process_resident_memory_bytes{") == listening, said


@linux_only
def test_sighup_keeps_the_workers_while_the_rules_file_is_broken(trained, tmp_path: Path) -> None:
    """SIGHUP replaces every worker; with a rules file broken since the last reload,
    each replacement started serving nothing, and the whole service went unready.
    The supervisor reads the files first: broken, it keeps the workers and says why;
    fixed, the next SIGHUP replaces them."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  email: {max_contacts: 3, per_days: 28}\n")
    env = {**_env(models), "NEXTBEST_RULES_FILE": str(rules)}
    port, log = free_port(), models / "server.log"
    proc = start_server(port=port, env=env, args=["--workers", "2"], log_file=log)
    try:
        before = _wait_listening(proc, port)
        rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
        os.kill(proc.pid, signal.SIGHUP)
        refused = _wait_for_log_event(log, "restart_refused")
        assert refused["level"] == "ERROR", refused
        assert "rules.yaml, line 2: channels.email.max_contacts" in refused["message"], refused
        assert set(_sockets(proc, port, psutil.CONN_LISTEN)) == set(before)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text

        rules.write_text("channels:\n  email: {max_contacts: 2, per_days: 28}\n")
        os.kill(proc.pid, signal.SIGHUP)
        _, alive = psutil.wait_procs([psutil.Process(pid) for pid in before], timeout=120)
        assert not alive, log.read_text()[-3000:]
        serving = _wait_listening(proc, port)
        assert not set(serving) & set(before)

        # What only the catalog shows: checked in a process of its own (rules check).
        rules.write_text("strict: true\nchannels:\n  emial: {max_contacts: 2, per_days: 28}\n")
        os.kill(proc.pid, signal.SIGHUP)
        refused = _wait_for_log_event(log, "restart_refused", nth=2)
        said = str(refused["message"])
        assert "`nextbest rules check` refused it" in said, said
        assert "strict: true, and the rules do not fit" in said, said
        assert set(_sockets(proc, port, psutil.CONN_LISTEN)) == set(serving)
    finally:
        stop_server(proc)


@linux_only
def test_sighup_keeps_the_workers_and_their_keys_while_the_key_file_is_gone(
    trained, tmp_path: Path
) -> None:
    """Deleted (or half way through a delete-then-write), the key file left the
    workers that replaced the old ones at a SIGHUP without its keys: every caller
    of the file got 401. The supervisor keeps the workers, which keep their keys."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    keys = models / "api_keys.yaml"
    key = "file-admin-key-0123456789abcdef"
    keys.write_text(f"keys:\n  - {{name: ops, role: admin, key_sha256: {hash_key(key)}}}\n")
    keys.chmod(0o600)
    port, log = free_port(), models / "server.log"
    proc = start_server(port=port, env=_env(models), args=["--workers", "2"], log_file=log)

    def status() -> int:
        url = f"http://127.0.0.1:{port}/v1/recommendations"
        asked = httpx.post(url, json={"hcp_id": "H-none"}, headers={"X-API-Key": key}, timeout=30)
        return asked.status_code

    try:
        before = _wait_listening(proc, port)
        assert status() != 401
        text = keys.read_text()
        keys.unlink()
        os.kill(proc.pid, signal.SIGHUP)
        refused = _wait_for_log_event(log, "restart_refused")
        said = str(refused["message"])
        assert f"the API key file {keys} is gone (deleted, or being replaced)" in said, said
        assert set(_sockets(proc, port, psutil.CONN_LISTEN)) == set(before)
        assert status() != 401  # the keys read before are in force

        keys.write_text(text)
        os.kill(proc.pid, signal.SIGHUP)
        _, alive = psutil.wait_procs([psutil.Process(pid) for pid in before], timeout=120)
        assert not alive, log.read_text()[-3000:]
        serving = _wait_listening(proc, port)
        assert not set(serving) & set(before)
        assert status() != 401
    finally:
        stop_server(proc)


def _wait_for_log_event(
    log: Path, event: str, *, nth: int = 1, timeout_s: float = 60
) -> dict[str, object]:
    """The ``nth`` JSON line of ``log`` with this ``event``, waited for."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [line for line in log.read_text().splitlines() if f'"{event}"' in line]
        if len(found) >= nth:
            record: dict[str, object] = json.loads(found[nth - 1])
            return record
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def _pids_in_metrics(port: int, line_start: str) -> set[str]:
    """The ``pid`` labels of the samples of /metrics whose line starts with ``line_start``."""
    response = httpx.get(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Authorization": f"Bearer {SCRAPER_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, (response.status_code, response.text[-2000:])
    lines = [line for line in response.text.splitlines() if line.startswith(line_start)]
    return {line.split('pid="', 1)[1].split('"', 1)[0] for line in lines}


def _metrics_files(proc: subprocess.Popen[bytes]) -> str:
    """The files in the server's PROMETHEUS_MULTIPROC_DIR, with their sizes."""
    # serve sets it for its workers after it started: read a worker's environment
    workers = psutil.Process(proc.pid).children()
    directory = workers[0].environ().get("PROMETHEUS_MULTIPROC_DIR", "") if workers else ""
    files = sorted(Path(directory).glob("*")) if directory else []
    return f"\nmetrics files in {directory!r}: " + ", ".join(
        f"{f.name} ({f.stat().st_size} B)" for f in files
    )


def _tail(proc: subprocess.Popen[bytes]) -> str:
    log = Path(psutil.Process(proc.pid).environ()["NEXTBEST_MODELS_DIR"]) / "server.log"
    return "\nserver log:\n" + log.read_text()[-4000:] if log.exists() else ""


@linux_only
@pytest.mark.postgres
def test_a_worker_replaced_during_a_database_outage_keeps_the_server_up(
    trained, tmp_path: Path
) -> None:
    """The replacement of a worker killed while the database is down starts, not
    ready, instead of failing its start-up (uvicorn's supervisor then stopped the
    healthy worker too, exit 0); both serve again once the database is back."""
    server_url = os.environ.get(POSTGRES_URL_ENV)
    if not server_url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set: PostgreSQL tests skipped")
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    with temporary_postgres_database(server_url) as url:
        proxy, through = TcpProxy.to_database(url, port=free_port())
        proxy.start()
        port = free_port()
        proc = start_server(
            port=port,
            env={**_env(models), "NEXTBEST_DATABASE_URL": through},
            args=["--workers", "2"],
            log_file=models / "server.log",
        )
        try:
            killed = next(iter(_wait_listening(proc, port)))
            proxy.stop()  # the database goes away
            os.kill(killed, signal.SIGKILL)
            _wait_listening(proc, port, gone=killed)  # replaced, and the server still up
            assert proc.poll() is None
            down = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
            assert down.status_code == 503 and "database unreachable" in down.text
            proxy.start()
            # Each new connection lands on either worker: both must say ready.
            deadline, in_a_row = time.monotonic() + 120, 0
            while in_a_row < 20:
                assert time.monotonic() < deadline, (models / "server.log").read_text()[-3000:]
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
                in_a_row = in_a_row + 1 if ready.status_code == 200 else 0
                time.sleep(0.1)
        finally:
            stop_server(proc)
            proxy.stop()


BROKEN_APP = """
from contextlib import asynccontextmanager

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    raise RuntimeError("this worker cannot start")
    yield


app = FastAPI(lifespan=lifespan)
"""


@linux_only
@pytest.mark.parametrize("workers", [2, 1])
def test_a_worker_that_cannot_start_ends_the_server_with_a_failure_code(
    tmp_path: Path, workers: int
) -> None:
    # uvicorn's supervisor stops every worker when one fails to start, and returned
    # normally: `nextbest serve --workers 2` exited 0 where one worker exits 3.
    (tmp_path / "broken_app.py").write_text(BROKEN_APP)
    run_server = (
        "import uvicorn\n"
        "from nextbest.api.workers import run_balanced\n"
        f"config = uvicorn.Config('broken_app:app', host='127.0.0.1', port={free_port()}, "
        f"workers={workers}, lifespan='on')\n"
        "run_balanced(config) if config.workers > 1 else uvicorn.run(**{"
        "'app': 'broken_app:app', 'host': config.host, 'port': config.port, 'lifespan': 'on'})\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", run_server],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "this worker cannot start" in run.stderr, run.stderr
    assert run.returncode == 3, run.stderr[-2000:]


@linux_only
@pytest.mark.parametrize("workers", ["2", "1"])
def test_a_second_server_on_a_taken_port_is_refused(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AddressInUseError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_address_free("127.0.0.1", port)
        serve = ["serve", "--workers", workers, "--port", str(port)]
        run = subprocess.run(
            [sys.executable, "-m", "nextbest.cli", *serve],
            env=_env(tmp_path / "models"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    # Refused by nextbest itself (exit 2, one line), before any model is loaded,
    # saying what to do (the README's loop walk-through meets `make demo`'s server).
    said = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 2, said
    assert (
        f"error: cannot listen on 127.0.0.1:{port}: the address is in use (another server "
        "on this port?): stop it, or serve on another port (--port, NEXTBEST_PORT)"
    ) in said, said


def test_serve_refuses_a_damaged_sqlite_file_before_any_worker_starts(tmp_path: Path) -> None:
    """A file that is no database (or a restore beside a later -wal): refused with
    what to do, not served until a write fails on it."""
    damaged = tmp_path / "nextbest.db"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\x07" * 8000)  # a header, then garbage
    run = subprocess.run(
        [sys.executable, "-m", "nextbest.cli", "serve", "--port", str(free_port())],
        env={**_env(tmp_path / "models"), "NEXTBEST_DATABASE_URL": f"sqlite:///{damaged}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 2, output[-3000:]
    assert f"the database file {damaged} is damaged (SQLite's quick_check:" in output, output
    assert "Backup and restore" in output and "Started server process" not in output


def test_serve_stops_at_once_when_the_database_is_unreachable(tmp_path: Path) -> None:
    """Migrated once before any worker starts: an unreachable database is a failure
    (non-zero, naming it), not workers failing one by one and uvicorn exiting 0."""
    closed = free_port()  # nothing listens there
    url = f"postgresql+psycopg://nextbest:s3cret-pw@127.0.0.1:{closed}/nextbest"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "nextbest.cli",
            "serve",
            "--workers",
            "2",
            "--port",
            str(free_port()),
        ],
        env={**_env(tmp_path / "models"), "NEXTBEST_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = " ".join((run.stdout + run.stderr).split())  # the console wraps long lines
    assert run.returncode == 2, output[-3000:]
    assert f"cannot reach the database postgresql+psycopg://nextbest:***@127.0.0.1:{closed}/" in (
        output
    )
    assert "OperationalError: connection failed" in output or "refused" in output, output
    assert "check that the database server is running and that the setting names it" in output
    assert "s3cret-pw" not in output
    assert "Started server process" not in output  # no worker was started


def _answering_healthz(
    models: Path, store: str, *, within_s: float
) -> tuple[subprocess.Popen[bytes], int]:
    """`nextbest serve` started with its MLflow store at ``store``, once its /healthz
    answers (failing the test unless within ``within_s`` seconds of the start): the
    process and its port."""
    port = free_port()
    env = {**_env(models), "NEXTBEST_TRACKING_URI": store}
    with (models.parent / "server.log").open("ab") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "nextbest.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while True:
        took = time.monotonic() - started
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        if proc.poll() is not None or took > within_s:
            stop_server(proc, sig=signal.SIGKILL)
            log_text = (models.parent / "server.log").read_text()[-3000:]
            pytest.fail(f"/healthz did not answer in {took:.0f} s:\n{log_text}")
        time.sleep(0.2)


# MLflow's ten tries to open a store on a server that is down took 101 s; the
# start-up of a server process on this machine, a few seconds.
STORE_DOWN_WITHIN_S = 30.0


def test_serve_on_an_mlflow_store_whose_server_is_down_answers_within_seconds(
    tmp_path: Path,
) -> None:
    """The store's server refuses: the worker listens within seconds, not ready, and
    says why in one line naming the store (not its password) and the driver's error;
    its watcher tries again every 10 s without holding anything up."""
    closed = free_port()  # nothing listens there
    store = f"postgresql+psycopg://nextbest:s3cret-pw@127.0.0.1:{closed}/mlflow"
    proc, port = _answering_healthz(tmp_path / "models", store, within_s=STORE_DOWN_WITHIN_S)
    try:
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["status"] == "no model loaded: model registry unreadable", body
        said = body["last_reload_error"]
        assert said.startswith(
            "RegistryUnreadableError: the MLflow registry postgresql+psycopg://nextbest:***@"
            f"127.0.0.1:{closed}/mlflow cannot be read, so alias 'champion' of model "
            "'nextbest' is unknown: OperationalError: connection failed: "
        ), said
        time.sleep(12)  # a retry of the watcher's passes: the worker answers meanwhile
        started = time.monotonic()
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 503
        assert time.monotonic() - started < 2
        assert proc.poll() is None
    finally:
        stop_server(proc)
    log = (tmp_path / "server.log").read_text()
    assert "s3cret-pw" not in log and "will be retried" not in log, log[-3000:]


@pytest.mark.postgres
def test_serve_on_an_mlflow_store_that_comes_back_serves_at_the_next_retry(
    trained, tmp_path: Path
) -> None:
    """Started while the store's PostgreSQL server is down: /healthz answers within
    seconds, and the served model loads at the watcher's next retry once it is back."""
    server_url = os.environ.get(POSTGRES_URL_ENV)
    if not server_url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set: PostgreSQL tests skipped")
    from nextbest import registry
    from nextbest.learning.train import TrainResult
    from nextbest.service.runtime import RETRY_INTERVAL_S

    models = tmp_path / "models"
    with temporary_postgres_database(server_url) as url:
        proxy, through = TcpProxy.to_database(url, port=free_port())
        proxy.start()
        settings = trained.settings.model_copy(
            update={"models_dir": models, "tracking_uri": through}
        )
        model = registry.load_version(trained.settings, trained.version)
        result = TrainResult(model=model, metrics={}, params={"variant": "store-down"})
        assert registry.log_training_run(result, settings).version == "1"
        proxy.stop()  # the store's server goes down
        proc, port = _answering_healthz(models, through, within_s=STORE_DOWN_WITHIN_S)
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "no model loaded: model registry unreadable"
            proxy.start()
            back = time.monotonic()
            while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code != 200:
                waited = time.monotonic() - back
                assert waited < RETRY_INTERVAL_S + STORE_DOWN_WITHIN_S, (
                    f"not ready {waited:.0f} s after the store came back:\n"
                    + (tmp_path / "server.log").read_text()[-3000:]
                )
                time.sleep(0.2)
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/recommendations",
                json={"hcp_id": "H000002", "k": 3},
                headers={"Authorization": "Bearer e2e-admin-key-0123456789abcdef"},
                timeout=10,
            )
            assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        finally:
            stop_server(proc)
            proxy.stop()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@linux_only
@pytest.mark.parametrize(
    ("host", "family"),
    [
        ("localhost", socket.AF_INET),
        pytest.param(
            "::1",
            socket.AF_INET6,
            marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
    ],
)
def test_own_sockets_share_an_address_and_pick_the_family_as_uvicorn_does(
    host: str, family: socket.AddressFamily
) -> None:
    port = free_port()
    first, second = bind_own_socket(host, port), bind_own_socket(host, port)
    try:
        assert first.family == second.family == family
        assert first.getsockname()[1] == second.getsockname()[1] == port
        first.listen()
        second.listen()
        with pytest.raises(AddressInUseError):
            check_address_free(host, port)
    finally:
        first.close()
        second.close()
