"""End to end: a real `nextbest serve` process (uvicorn) answering over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nextbest import registry
from nextbest.api.process import free_port, start_server, stop_server

pytestmark = pytest.mark.e2e

KEY = "e2e-admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _serve(
    models: Path, *, workers: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        **(extra_env or {}),
        "NEXTBEST_MODELS_DIR": str(models),
        "NEXTBEST_API_KEYS": json.dumps([{"name": "e2e", "role": "admin", "key": KEY}]),
    }
    # To a file, not a pipe: nobody reads a pipe while the test runs, and a full
    # pipe would block the server's JSON request logs.
    proc = start_server(
        port=port, env=env, args=["--workers", str(workers)], log_file=models / "server.log"
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


def test_real_server_serves_the_champion(trained, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    for base in _serve(models):
        response = httpx.post(
            f"{base}/v1/recommendations",
            json={"hcp_id": "H000002", "k": 3},
            headers=AUTH,
            timeout=10,
        )
        assert response.status_code == 200
        body = response.json()
        assert body["model_version"] == trained.version
        assert body["hcp_id"] == "H000002"
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
        unknown = httpx.post(
            f"{base}/v1/recommendations", json={"hcp_id": "nobody"}, headers=AUTH, timeout=5
        )
        assert unknown.status_code == 404
        _misspelt_fields_are_named(base)
        anonymous = httpx.post(f"{base}/v1/recommendations", json={"hcp_id": "H000002"})
        assert anonymous.status_code == 401
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 401
        scraped = httpx.get(f"{base}/metrics", headers=AUTH, timeout=5)
        assert "nextbest_request_seconds_bucket" in scraped.text
        # Without a key, refused before any of the body is read: a caller announcing
        # 1 MB and sending none of it is answered at once, not waited for.
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
            )
            assert raw.recv(4096).startswith(b"HTTP/1.1 401 ")
    # Everything serve wrote, its own start-up (the migration of the new database)
    # included, is JSON lines: what a log shipper reads.
    logged = [json.loads(line) for line in (models / "server.log").read_text().splitlines()]
    migrated = [e for e in logged if e["message"].startswith("database schema migrated")]
    assert len(migrated) == 1 and migrated[0]["logger"] == "nextbest.serve", logged[:5]


EXTRA = "Extra inputs are not permitted"
EVENT_FIELDS = (
    "event_id, event_type, hcp_id, recommendation_id, action_id, channel, occurred_at, "
    "reason, value"
)


def _misspelt_fields_are_named(base: str) -> None:
    """A field a body does not take is answered over HTTP as in-process
    (tests/api/test_misspelt_fields.py): its 422 keeps pydantic's ``type`` and ``loc``,
    its message names the field meant or, near none, those taken; an event of a batch
    is rejected alone, with the same words."""
    for url, body, loc, said in (
        (
            "/v1/recommendations",
            {"hcp_id": "H000002", "chanel": "email"},
            ["body", "chanel"],
            "(did you mean 'channel'?)",
        ),
        (
            "/v1/feedback",
            {"event_id": "e2e-misspelt-1", "hcp_id": "H000002", "evnt_type": "opened"},
            ["body", "event", "evnt_type"],
            "(did you mean 'event_type'?)",
        ),
        # "event" begins event_id and event_type alike: neither is guessed.
        (
            "/v1/feedback",
            {"event_id": "e2e-misspelt-2", "hcp_id": "H000002", "event": "opened"},
            ["body", "event", "event"],
            f"(allowed here: {EVENT_FIELDS})",
        ),
    ):
        response = httpx.post(f"{base}{url}", json=body, headers=AUTH, timeout=10)
        assert response.status_code == 422, response.text
        extra = [e for e in response.json()["detail"] if e["type"] == "extra_forbidden"]
        assert [(e["loc"], e["msg"]) for e in extra] == [(loc, f"{EXTRA} {said}")], extra
    event = {"event_id": "e2e-misspelt-3", "event_type": "opened", "hcp_id": "H000002"}
    batch = httpx.post(
        f"{base}/v1/feedback",
        json={"events": [{**event, "chanel": "email"}]},
        headers=AUTH,
        timeout=10,
    )
    assert batch.status_code == 422, batch.text  # its only event rejected
    [rejected] = batch.json()["rejected"]
    assert rejected["message"] == f"chanel: {EXTRA} (did you mean 'channel'?)", rejected


@pytest.mark.slow
def test_hot_swap_under_concurrent_load_drops_no_request(trained, tmp_path: Path) -> None:
    """Two workers, eight client threads; the champion moves and an admin reloads."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    settings = trained.settings.model_copy(update={"models_dir": models})
    client = registry.client(settings)
    current = client.get_model_version(settings.model_name, trained.version)
    new = str(
        client.create_model_version(
            settings.model_name, current.source, run_id=current.run_id
        ).version
    )
    results: list[tuple[float, int, str | None]] = []
    stop = threading.Event()
    for base in _serve(models, workers=2):

        def hammer(n: int, base: str = base) -> None:
            with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
                i = n
                while not stop.is_set():
                    sent_at = time.monotonic()
                    r = http.post(
                        "/v1/recommendations", json={"hcp_id": f"H{1 + i % 300:06d}", "k": 3}
                    )
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    results.append((sent_at, r.status_code, version))
                    i += 8

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        registry.set_alias(settings, "champion", new)
        swap = httpx.post(f"{base}/v1/admin/reload", headers=AUTH, timeout=60)
        # The other worker follows the reload signal, within ~1 s on an idle machine
        # (longer beside a full test run): until both report the new version.
        deadline = time.monotonic() + 60
        info = _model_info(httpx.get(f"{base}/metrics", headers=AUTH, timeout=10).text)
        while sorted(info.get(new, [])) != [1.0, 1.0] and time.monotonic() < deadline:
            time.sleep(0.2)
            info = _model_info(httpx.get(f"{base}/metrics", headers=AUTH, timeout=10).text)
        followed_at = time.monotonic()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert swap.status_code == 200, swap.text
        assert swap.json()["version"] == new
    # Both workers report the new version, the one that followed the signal too.
    assert sorted(info[new]) == [1.0, 1.0], info
    assert set(info[trained.version]) == {0.0}, info
    statuses = {s for _, s, _ in results}
    assert statuses == {200}, f"failed requests during the swap: {statuses}"
    versions = [v for _, _, v in results]
    assert trained.version in versions and new in versions
    # Every request sent once both workers had swapped is answered by the new version.
    late = [v for t, _, v in results if t > followed_at]
    assert late and set(late) == {new}, "every worker serves the new version"
    assert len(results) > 50


def _model_info(metrics: str) -> dict[str, list[float]]:
    """``nextbest_model_info`` values by version, one per worker process."""
    out: dict[str, list[float]] = {}
    for line in metrics.splitlines():
        if line.startswith("nextbest_model_info{"):
            labels, value = line.rsplit(" ", 1)
            version = labels.split('version="')[1].split('"')[0]
            out.setdefault(version, []).append(float(value))
    return out


def _request_pids(log: Path) -> list[int]:
    """Worker pid of every logged request, in order."""
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == "request":
                out.append(int(entry["pid"]))
    return out


def _worker_of(client: httpx.Client, log: Path) -> int:
    """Which worker holds this keep-alive connection (asked alone, read from the log)."""
    before = len(_request_pids(log))
    assert client.get("/healthz").status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = _request_pids(log)
        if len(pids) > before:  # the line is written just after the answer
            return pids[before]
        time.sleep(0.01)
    raise AssertionError("the request was not logged")


def _clients_on_two_workers(base: str, log: Path) -> tuple[httpx.Client, httpx.Client, list]:
    """Keep-alive connections opened at once (so both workers accept some), then one
    on each of two different workers."""
    opened: list[httpx.Client] = []
    # /readyz answered once one worker was up; the other may still be loading the
    # model, so keep trying for a while.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        batch = [httpx.Client(base_url=base, headers=AUTH, timeout=10) for _ in range(8)]
        barrier = threading.Barrier(len(batch))

        def connect(c: httpx.Client, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            c.get("/healthz")

        threads = [threading.Thread(target=connect, args=(c,)) for c in batch]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opened += batch
        by_worker = {}
        for c in opened:
            by_worker.setdefault(_worker_of(c, log), c)
        if len(by_worker) >= 2:
            first, second = list(by_worker.values())[:2]
            return first, second, opened
        time.sleep(1.0)
    pytest.skip("the kernel handed every connection to one worker")


def test_feedback_never_meets_an_unlogged_recommendation_across_workers(
    trained, tmp_path: Path
) -> None:
    """Two workers, a 300 ms batched log: feedback sent at once to the worker that
    did not serve the recommendation must still be accepted."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    env = {"NEXTBEST_LOG_FLUSH_MS": "300", "NEXTBEST_HOLDOUT_RATE": "0"}
    log = models / "server.log"
    for base in _serve(models, workers=2, extra_env=env):
        a, b, opened = _clients_on_two_workers(base, log)
        try:
            for n in range(12):
                serve_on, feedback_on = (a, b) if n % 2 == 0 else (b, a)
                rec = serve_on.post("/v1/recommendations", json={"hcp_id": f"H{2 + n:06d}", "k": 1})
                assert rec.status_code == 200, rec.text
                body = rec.json()
                started = time.monotonic()
                feedback = feedback_on.post(
                    "/v1/feedback",
                    json={
                        "event_id": f"x-{body['recommendation_id']}",
                        "event_type": "outcome",  # valid on any answer, an empty one too
                        "hcp_id": body["hcp_id"],
                        "recommendation_id": body["recommendation_id"],
                        "value": 1.0,
                    },
                )
                assert feedback.status_code == 200, (n, feedback.text)
                assert feedback.json()["accepted"] == 1
                # It waited for the other worker's log rather than failing at once.
                assert time.monotonic() - started < 0.3 + 2.5
        finally:
            for c in opened:
                c.close()
        pids = _request_pids(log)
        assert len(set(pids)) == 2


def test_sighup_reloads_a_single_worker_in_place(trained, tmp_path: Path) -> None:
    """A service manager's reload (`kill -HUP $MAINPID`) stopped a single-worker
    server without a word; it now re-reads the alias and the files, as
    POST /v1/admin/reload does, and a broken file leaves the old rules serving."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  email: {max_contacts: 3, per_days: 28}\n")
    env = {
        **os.environ,
        "NEXTBEST_MODELS_DIR": str(models),
        "NEXTBEST_AUTH_ENABLED": "false",
        "NEXTBEST_RULES_FILE": str(rules),
        "NEXTBEST_RELOAD_INTERVAL_S": "0",  # no alias poll: only the signal reloads
    }
    port = free_port()
    proc = start_server(port=port, env=env, log_file=models / "server.log")

    def ready_until(done) -> dict:
        deadline = time.monotonic() + 30
        while True:
            body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
            if done(body):
                return body
            assert proc.poll() is None, (models / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, body
            time.sleep(0.2)

    try:
        first = ready_until(lambda body: body["status"] == "ready")["rules_fingerprint"]
        rules.write_text("channels:\n  email: {max_contacts: 2, per_days: 28}\n")
        os.kill(proc.pid, signal.SIGHUP)
        edited = ready_until(lambda body: body["rules_fingerprint"] != first)
        assert edited["status"] == "ready", edited

        rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
        os.kill(proc.pid, signal.SIGHUP)
        broken = ready_until(lambda body: body.get("last_reload_error"))
        assert "rules.yaml, line 2: channels.email.max_contacts" in broken["last_reload_error"]
        assert broken["status"] == "ready", broken  # the edited rules serve on
        assert broken["rules_fingerprint"] == edited["rules_fingerprint"], broken
    finally:
        stop_server(proc)
    assert proc.returncode == -signal.SIGTERM  # the stop's, re-raised by uvicorn (docs/cli.md)


def test_sighup_to_a_single_worker_says_at_once_that_the_key_file_is_gone(
    trained, tmp_path: Path
) -> None:
    """Several workers' supervisor says at the signal that the key file is gone and
    keeps the workers; a single worker kept its keys without a word until a request
    checked one. It says so at the signal, and at each one while the file stays gone."""
    from nextbest.service.apikeys import hash_key

    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    keys = models / "api_keys.yaml"
    keys.write_text(f"keys:\n  - {{name: ops, role: admin, key_sha256: {hash_key(KEY)}}}\n")
    keys.chmod(0o600)
    log = models / "server.log"
    env = {**os.environ, "NEXTBEST_MODELS_DIR": str(models), "NEXTBEST_RELOAD_INTERVAL_S": "0"}
    proc = start_server(port=free_port(), env=env, log_file=log)
    said = f"API key file {keys} is gone"

    def lines_saying_it(n: int) -> None:
        deadline = time.monotonic() + 30
        while log.read_text().count(said) < n:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

    try:
        keys.unlink()  # no request reads the keys from here on
        os.kill(proc.pid, signal.SIGHUP)
        lines_saying_it(1)
        os.kill(proc.pid, signal.SIGHUP)
        lines_saying_it(2)
        assert "keeping the keys" in log.read_text()
    finally:
        stop_server(proc)


def test_sighup_ends_a_server_started_in_a_terminal(trained, tmp_path: Path) -> None:
    """Closing a terminal sends SIGHUP: a server started there ends with it, as it
    always did; only one whose log goes elsewhere (a service) takes it as a reload."""
    import pty
    import subprocess
    import sys

    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    env = {**os.environ, "NEXTBEST_MODELS_DIR": str(models), "NEXTBEST_AUTH_ENABLED": "false"}
    port = free_port()
    terminal, its_end = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nextbest.cli", "serve", "--port", str(port)],
        env=env,
        stdout=its_end,
        stderr=its_end,
        start_new_session=True,
    )
    os.close(its_end)
    said: list[bytes] = []

    def drain() -> None:  # a full terminal buffer would block the server's writes
        with contextlib.suppress(OSError):
            while chunk := os.read(terminal, 4096):
                said.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, b"".join(said)[-3000:]
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGHUP)
        assert proc.wait(timeout=30) == -signal.SIGHUP, b"".join(said)[-3000:]
    finally:
        if proc.poll() is None:
            stop_server(proc, sig=signal.SIGKILL)
        os.close(terminal)


def test_auth_off_on_an_address_others_reach_is_said_at_start(trained, tmp_path: Path) -> None:
    """With auth off, a server on 0.0.0.0 said only "auth is OFF", as on loopback,
    where only this machine can call it; it now says plainly that the API is open
    to anyone who can reach the address. Either is said once, by `serve`, naming
    the address: each worker said "auth is OFF" again as it started, not knowing
    where it listened (a worker's own word: tests/api/test_auth.py)."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    env = {**os.environ, "NEXTBEST_MODELS_DIR": str(models), "NEXTBEST_AUTH_ENABLED": "false"}
    said, ports = {}, {}
    for host in ("0.0.0.0", "127.0.0.1"):
        log = tmp_path / f"{host}.log"
        ports[host] = free_port()
        proc = start_server(port=ports[host], env=env, args=["--host", host], log_file=log)
        stop_server(proc)
        records = [json.loads(line) for line in log.read_text().splitlines() if "{" in line]
        said[host] = [r for r in records if "auth is OFF" in r.get("message", "")]
    [opened] = said["0.0.0.0"]
    assert opened["event"] == "auth_off_open" and opened["level"] == "WARNING", opened
    assert f"listens on 0.0.0.0:{ports['0.0.0.0']}, not " in opened["message"], opened
    assert "open to anyone who can reach that address" in opened["message"], opened
    [loopback] = said["127.0.0.1"]
    assert loopback["event"] == "auth_off" and loopback["logger"] == "nextbest.serve", loopback
    assert loopback["level"] == "WARNING", loopback
    assert f"listens on 127.0.0.1:{ports['127.0.0.1']}, loopback only" in loopback["message"]
