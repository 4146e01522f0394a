"""Readiness, metrics and hot reload (including a failed reload) in-process."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import joblib
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from nextbest import registry
from nextbest.api.app import create_app
from nextbest.api.process import free_port
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings
from nextbest.storage.db import make_engine, make_session_factory
from nextbest.storage.testing import POSTGRES_URL_ENV, TcpProxy, temporary_postgres_database

from .conftest import serving


def _new_version(settings, *, source: str | None = None) -> str:
    """Register the champion's artifacts again (or ``source``) as a new version."""
    client = registry.client(settings)
    current = client.get_model_version(settings.model_name, "1")
    mv = client.create_model_version(
        settings.model_name, source or current.source, run_id=current.run_id
    )
    return str(mv.version)


def test_readyz_and_requests_are_503_when_the_database_is_down(
    api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 9: the database is unreachable, the model is loaded.
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1")
    runtime = ServingRuntime(api_settings, engine, make_session_factory(engine))
    runtime.reload()
    hcp = str(runtime.recommender.hcp_ids[0])
    with TestClient(create_app(api_settings, runtime), headers=dict(keys.admin)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "database unreachable" in ready.json()["status"]
        # A recommendation needs the live contact history (caps, cool-downs): refused
        # with 503 and Retry-After, as is feedback that cannot be stored; not a 500.
        with caplog.at_level(logging.ERROR, logger="nextbest.api.observability"):
            answers = [
                client.post("/v1/recommendations", json={"hcp_id": hcp}),
                client.post("/v1/recommendations/batch", json={"hcp_ids": [hcp]}),
                client.post(
                    "/v1/feedback",
                    json={"event_id": "e-down", "event_type": "opened", "hcp_id": hcp},
                ),
            ]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "1"
            assert answer.json() == {"detail": "the database is unavailable; try again shortly"}
        assert "database unavailable during POST /v1/recommendations" in caplog.text
        # Once, not once per refused request: the others are counted.
        assert caplog.text.count("database unavailable during") == 1, caplog.text
        # Its history pool has failed to connect, so the next request is refused at
        # once instead of after the full wait for a connection (2 s).
        started = time.monotonic()
        again = client.post("/v1/recommendations", json={"hcp_id": hcp})
        assert again.status_code == 503
        assert time.monotonic() - started < 1.0
        # Bad input is still named as such, before any read of the database.
        bad = client.post("/v1/recommendations", json={"hcp_id": hcp, "channel": "fax"})
        assert bad.status_code == 422 and "unknown channel 'fax'" in bad.text
        assert hcp not in caplog.text  # the log names the server's error, not the request
    runtime.close()


def test_an_outage_log_names_the_route_template_not_the_path_with_a_rep_id(
    api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A rep route's path holds the rep's user id: the outage's first line and its
    summaries name the route as /metrics labels it, never the path as sent."""
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1")
    runtime = ServingRuntime(api_settings, engine, make_session_factory(engine))
    runtime.reload()
    rep_id = "jane.doe-4711"
    plan = f"/v1/reps/{rep_id}/suggestions?territory_id={keys.territory}"
    with TestClient(create_app(api_settings, runtime), headers=dict(keys.admin)) as client:
        client.app.state.database_outage.SUMMARY_EVERY_S = 0.0  # every refusal summarised
        with caplog.at_level(logging.ERROR, logger="nextbest.api.observability"):
            for _ in range(2):
                answer = client.get(plan)
                assert answer.status_code == 503, answer.text
    said = [r.getMessage() for r in caplog.records if r.name == "nextbest.api.observability"]
    assert len(said) == 2, said
    assert "database unavailable during GET /v1/reps/{rep_id}/suggestions:" in said[0]
    assert "during GET /v1/reps/{rep_id}/suggestions)" in said[1]
    assert rep_id not in caplog.text
    runtime.close()


def test_a_worker_started_with_another_holdout_rate_than_the_log_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It would hold out other HCPs than the processes that logged before it: said
    once at start-up (it serves anyway, as after a deliberate change of rate)."""

    from nextbest.settings import Settings
    from nextbest.storage import log_recommendations, migrate
    from nextbest.storage.testing import recommendation_record

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    migrate(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        log_recommendations(
            session, records=[recommendation_record("served-1", "H1", holdout_rate=0.2)]
        )
        session.commit()
    engine.dispose()
    for rate, warned in ((0.05, True), (0.2, False)):
        settings = Settings(models_dir=tmp_path / "models", database_url=url, holdout_rate=rate)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nextbest.service.runtime"):
            runtime = ServingRuntime.start(settings, load_model=False)
        runtime.close()
        said = [r.getMessage() for r in caplog.records if "holdout rate" in r.getMessage()]
        assert len(said) == int(warned), said
        if warned:
            assert "NEXTBEST_HOLDOUT_RATE is 0.05 in this worker" in said[0]
            assert "served with holdout rate 0.2" in said[0]


def test_a_worker_waiting_for_its_first_model_says_why_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Started before any model was trained: one line, no traceback, and the watcher's
    retries every 10 s add nothing until the error changes or someone asks for a
    reload (it logged an error and a warning every 10 s, a traceback at start-up)."""
    from nextbest.settings import Settings

    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  email: {max_contacts: 3, per_days: 28}\n")
    settings = Settings(
        models_dir=tmp_path / "models",
        database_url=f"sqlite:///{tmp_path / 'serve.db'}",
        rules_file=rules,
    )
    with caplog.at_level(logging.DEBUG, logger="nextbest.service.runtime"):
        runtime = ServingRuntime.start(settings)
        try:
            for _ in range(2):  # what the watcher does while no model is served
                with pytest.raises(registry.RegistryError):
                    runtime.reload(polled=True)
            said = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert [r.getMessage() for r in said] == [
                "model reload failed, nothing served yet; tried again every 10 s: "
                "model 'nextbest' has no alias 'champion' in "
                f"sqlite:///{tmp_path / 'models' / 'mlflow.db'}, a file that does not exist"
            ]
            assert said[0].exc_info is None
            caplog.clear()
            with pytest.raises(registry.RegistryError):
                runtime.reload()  # asked for (POST /v1/admin/reload, SIGHUP): said again
            rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
            with pytest.raises(ValueError, match="max_contacts"):
                runtime.reload(polled=True)  # another error: said
            said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(said) == 2 and "no alias 'champion'" in said[0], said
            assert "channels.email.max_contacts" in said[1], said
        finally:
            runtime.close()


@pytest.fixture
def proxied_database() -> Iterator[tuple[TcpProxy, str]]:
    """A new PostgreSQL database behind a proxy the test takes down and brings back
    (not yet listening), and the URL through it; skipped without a test server."""
    server_url = os.environ.get(POSTGRES_URL_ENV)
    if not server_url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set: PostgreSQL tests skipped")
    with temporary_postgres_database(server_url) as url:
        proxy, through = TcpProxy.to_database(url, port=free_port())
        try:
            yield proxy, through
        finally:
            proxy.stop()


@pytest.mark.postgres
def test_a_worker_started_while_the_database_is_down_serves_once_it_returns(
    own_registry, keys, proxied_database, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker (re)started during an outage starts, not ready, instead of exiting
    (uvicorn's supervisor would then stop the healthy workers too); it migrates and
    serves once the database answers."""
    proxy, through = proxied_database
    settings = own_registry.model_copy(update={"database_url": through})
    with caplog.at_level(logging.ERROR, logger="nextbest.service.runtime"):
        runtime = ServingRuntime.start(settings)
    try:
        assert "database unreachable, not ready until it answers" in caplog.text
        assert runtime.migration_pending and runtime.model_version is not None
        hcp = str(runtime.recommender.hcp_ids[0])
        with TestClient(create_app(settings, runtime), headers=dict(keys.admin)) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "database unreachable"
            down = client.post("/v1/recommendations", json={"hcp_id": hcp})
            assert down.status_code == 503 and down.headers["Retry-After"] == "1"
            proxy.start()  # the database is back, its schema still empty
            assert client.get("/readyz").status_code == 200  # migrated for this probe
            assert not runtime.migration_pending
            deadline = time.monotonic() + 60  # the history pool reconnects on its own
            while (
                answer := client.post("/v1/recommendations", json={"hcp_id": hcp})
            ).status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert answer.status_code == 200, answer.text
    finally:
        runtime.close()
        proxy.stop()


@pytest.mark.postgres
def test_after_a_long_outage_ready_means_serving_again_within_seconds(
    own_registry, keys, proxied_database, caplog: pytest.LogCaptureFixture
) -> None:
    """The history pool does not back off for half a minute after a long outage:
    once the database is back the worker serves within seconds, and a ready
    ``/readyz`` means a recommendation is answered, not a 503."""
    proxy, through = proxied_database
    proxy.start()
    settings = own_registry.model_copy(update={"database_url": through})
    with serving(settings, keys) as (_, client, hcp):
        caplog.set_level(logging.WARNING, logger="nextbest.api.observability")
        with client:
            assert client.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200
            proxy.stop()
            # 16 s of requests failing: psycopg_pool's own retries would by now
            # wait 16 s before the next (after 1, 2, 4 and 8 s).
            outage_ends = time.monotonic() + 16
            while time.monotonic() < outage_ends:
                refused = client.post("/v1/recommendations", json={"hcp_id": hcp})
                assert refused.status_code == 503, refused.text
                assert client.get("/readyz").status_code == 503
                time.sleep(0.5)
            proxy.start()
            back = time.monotonic()
            while (ready := client.get("/readyz")).status_code != 200:
                assert time.monotonic() - back < 8, ready.text
                time.sleep(0.1)
            # The probe's answer does not end the outage in the log: a request that
            # reads the tables does (a probe answered while they were locked said so).
            assert not any("answers again" in r.getMessage() for r in caplog.records)
            answer = client.post("/v1/recommendations", json={"hcp_id": hcp})
            assert answer.status_code == 200, answer.text
        # The outage in the log: its start once, then its end with the count.
        said = [r.getMessage() for r in caplog.records if r.name == "nextbest.api.observability"]
        assert sum(m.startswith("database unavailable during") for m in said) == 1, said
        assert any(
            m.startswith("database answers again after") and "requests were refused" in m
            for m in said
        ), said


@pytest.mark.postgres
def test_answers_whose_log_write_fails_are_kept_and_requests_get_503_until_it_is_back(
    own_registry, keys, proxied_database, tmp_path: Path
) -> None:
    """An answer whose batched log write fails when the database goes away after it
    was served is kept and written once the database is back (feedback on it then
    finds it), and requests meanwhile get 503 rather than answers that would not be
    logged."""
    proxy, through = proxied_database
    proxy.start()
    # The log is committed a second after an answer: the database goes away
    # between the answer (its history read) and its log write.
    settings = own_registry.model_copy(update={"database_url": through, "log_flush_ms": 1000})
    with serving(settings, keys) as (runtime, client, hcp):
        with client:
            assert client.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200
            assert runtime.reclog.flush(timeout=30)
            served = client.post("/v1/recommendations", json={"hcp_id": hcp})
            assert served.status_code == 200  # answered; its log write is to come
            proxy.stop()  # the database goes away
            deadline = time.monotonic() + 60
            while not runtime.reclog.failing:
                assert time.monotonic() < deadline, "the log store never failed"
                time.sleep(0.02)
            refused = client.post("/v1/recommendations", json={"hcp_id": hcp})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            proxy.start()  # back: the kept answer is written
            assert runtime.reclog.flush(timeout=60)
            # The history pool reconnects on its own schedule (backing off during
            # the outage): a client retries after Retry-After until it has.
            deadline = time.monotonic() + 60
            while (
                again := client.post("/v1/recommendations", json={"hcp_id": hcp})
            ).status_code == 503:
                assert time.monotonic() < deadline, again.text
                time.sleep(float(again.headers["Retry-After"]) / 5)
            assert again.status_code == 200, again.text
            event = {
                "event_id": "after-the-outage",
                "event_type": "opened",
                "hcp_id": hcp,
                "recommendation_id": served.json()["recommendation_id"],
            }
            stored = client.post("/v1/feedback", json=event)
            assert stored.status_code == 200, stored.text
            assert stored.json()["accepted"] == 1, stored.text
        assert runtime.reclog.dropped == 0 and runtime.reclog.written == 3


def test_readyz_is_503_without_a_model(api_settings, keys, tmp_path: Path) -> None:
    empty = api_settings.model_copy(update={"models_dir": tmp_path / "empty"})
    with TestClient(create_app(empty), headers=dict(keys.admin)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "no model loaded" in ready.json()["status"]
        assert client.get("/healthz").json().get("model_version") is None
        asking = client.post("/v1/recommendations", json={"hcp_id": "H000001"})
        assert asking.status_code == 503 and asking.headers["Retry-After"] == "10"
        assert "has no alias 'champion' in sqlite:///" in asking.text
        assert "a file that does not exist; train one with `nextbest train`" in asking.text
        # A rep's feedback waits for a model: its territory cannot be checked without one.
        rep_event = {"event_id": "r-1", "event_type": "dismissed", "hcp_id": "H000001"}
        refused = client.post("/v1/feedback", json=rep_event, headers=keys.rep)
        assert refused.status_code == 503 and "territory" in refused.json()["detail"]
        # Other callers' feedback is stored unchecked, as `nextbest feedback` does.
        event = {"event_id": "c-1", "event_type": "opened", "hcp_id": "H000001"}
        assert client.post("/v1/feedback", json=event, headers=keys.channel).status_code == 200


def test_a_worker_started_with_a_broken_rules_file_says_the_file_is_at_fault(
    api_settings, keys, tmp_path: Path
) -> None:
    """A worker restarted after the rules file was broken (uvicorn's replacement of
    a worker, a SIGHUP) serves nothing: its /readyz names the file, not a missing
    model, and the model stays loadable once the file is fixed."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
    broken = api_settings.model_copy(update={"rules_file": rules})
    before = {r: _metric(REGISTRY, "nextbest_reloads_total", result=r) for r in RESULTS}
    with TestClient(create_app(broken), headers=dict(keys.admin)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "serving rules file invalid", ready.text
        said = ready.json()["last_reload_error"]
        assert "rules.yaml, line 2: channels.email.max_contacts" in said, said
        assert str(tmp_path) not in ready.text  # no key needed here: no layout shown
        asking = client.post("/v1/recommendations", json={"hcp_id": "H000001"})
        assert asking.status_code == 503 and "fix the file" in asking.json()["detail"]
        # What an alert reads: the failed reload (at start-up) counted, none swapped.
        failed = _metric(REGISTRY, "nextbest_reloads_total", result="failed")
        assert failed >= before["failed"] + 1
        assert _metric(REGISTRY, "nextbest_reloads_total", result="swapped") == before["swapped"]
        rules.write_text("channels:\n  email: {max_contacts: 3, per_days: 28}\n")
        assert client.post("/v1/admin/reload").status_code == 200
        assert client.get("/readyz").json()["status"] in ("ready", "warming")
        assert _metric(REGISTRY, "nextbest_reloads_total", result="swapped") == (
            before["swapped"] + 1
        )
        cut_off = client.app.state.runtime.features_as_of
        assert _metric(REGISTRY, "nextbest_model_features_as_of_seconds") == pytest.approx(
            datetime.fromisoformat(cut_off).timestamp()
        )
        assert "nextbest_recommendation_log_failing 0.0" in client.get("/metrics").text


RESULTS = ("swapped", "failed")


def test_a_failed_reload_retried_with_the_same_error_counts_once(
    own_registry, keys, tmp_path: Path
) -> None:
    """The watcher retries a reload refused for its rules file every 10 s: the same
    failure again is no new failed reload (the counter grew by one every 10 s while
    the file stayed invalid, so an alert on it never cleared). Another error, or a
    reload someone asks for, counts, as the log says them."""
    from nextbest.policy.rules import RulesError

    rules = tmp_path / "rules.yaml"
    rules.write_text((Path(__file__).parents[2] / "training" / "rules.yaml").read_text())
    settings = own_registry.model_copy(update={"rules_file": rules})

    def failed() -> float:
        return _metric(REGISTRY, "nextbest_reloads_total", result="failed")

    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        runtime = client.app.state.runtime
        before = failed()
        rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
        assert client.post("/v1/admin/reload").status_code == 500
        assert failed() == before + 1
        for _ in range(3):  # the watcher's retries
            with pytest.raises(RulesError, match=r"channels\.email\.max_contacts"):
                runtime.reload(polled=True)
        assert failed() == before + 1
        rules.write_text("channels: [unclosed")  # another error: a failure of its own
        for _ in range(2):
            with pytest.raises(RulesError, match="not valid YAML"):
                runtime.reload(polled=True)
        assert failed() == before + 2
        assert client.post("/v1/admin/reload").status_code == 500  # asked for: counted
        assert failed() == before + 3
        text = client.get("/metrics").text
    help_line = next(
        line for line in text.splitlines() if line.startswith("# HELP nextbest_reloads_total ")
    )
    assert "each failure once" in help_line, help_line


def test_reloads_swapped_counts_each_model_swapped_in_as_its_help_says(own_registry, keys) -> None:
    """`swapped` is no count of new versions: a worker's first load counts, and so
    does a forced reload of the same version; a reload finding nothing new does not.
    The help text an operator reads in /metrics says so."""
    before = _metric(REGISTRY, "nextbest_reloads_total", result="swapped")
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as client:
        version = client.get("/healthz").json()["model_version"]
        assert _metric(REGISTRY, "nextbest_reloads_total", result="swapped") == before + 1
        assert client.post("/v1/admin/reload").json()["changed"] is False
        assert _metric(REGISTRY, "nextbest_reloads_total", result="swapped") == before + 1
        forced = client.post("/v1/admin/reload", params={"force": "true"}).json()
        # Swapped in, but the served model is no other version: `changed` says that.
        assert (forced["version"], forced["previous"]) == (version, version), forced
        assert forced["changed"] is False and forced["forced"] is True, forced
        assert _metric(REGISTRY, "nextbest_reloads_total", result="swapped") == before + 2
        text = client.get("/metrics").text
    help_line = next(
        line for line in text.splitlines() if line.startswith("# HELP nextbest_reloads_total ")
    )
    assert "a new model version is served" not in help_line, help_line
    for case in ("at the worker's start", "after the alias moved", "a forced reload"):
        assert case in help_line, help_line


def _metric(registry, name: str, **labels: str) -> float:
    """A sample's value (0 when the series does not exist yet)."""
    return registry.get_sample_value(name, labels) or 0.0


def _cache_counts(client: TestClient) -> tuple[float, float]:
    """Scored pairs answered from the score cache and by the model, so far."""
    lines = client.get("/metrics").text.splitlines()
    return tuple(  # type: ignore[return-value]
        sum(float(line.split()[-1]) for line in lines if line.startswith(metric))
        for metric in (HIT_METRIC, MISS_METRIC)
    )


def _cache_hits(client: TestClient) -> float:
    return _cache_counts(client)[0]


def test_metrics_count_requests_by_route_and_channel(client: TestClient) -> None:
    # An HCP served something (not in this week's holdout, which moves with the
    # calendar): the served-by-channel counter must come from this test's requests.
    for hcp in map(str, client.app.state.runtime.recommender.hcp_ids):
        if client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 5}).json()["items"]:
            break
    hits_before = _cache_hits(client)
    for _ in range(2):
        client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 5})
    client.post("/v1/recommendations", json={"hcp_id": "NOBODY"})
    client.request("PROPFIND", "/v1/recommendations")  # a scanner's method: one label
    text = client.get("/metrics").text
    assert 'method="other",route="/v1/recommendations",status="405"' in text
    assert 'method="PROPFIND"' not in text
    assert (
        'nextbest_request_seconds_count{method="POST",route="/v1/recommendations",status="200"}'
        in text
    )
    assert 'route="/v1/recommendations",status="404"' in text
    assert "nextbest_recommendations_total{channel=" in text
    version = client.app.state.runtime.model_version
    assert f'nextbest_model_info{{version="{version}"}} 1.0' in text
    # The requests after the first about the HCP were answered from the score cache
    # (the counter is per process, so compare with its value before the requests).
    assert _cache_hits(client) > hits_before


HIT_METRIC = 'nextbest_score_cache_pairs_total{result="hit"}'
MISS_METRIC = 'nextbest_score_cache_pairs_total{result="miss"}'


@pytest.fixture
def reloading(own_registry, keys) -> Iterator[TestClient]:
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as c:
        yield c


def test_metrics_of_several_workers_leave_out_a_file_that_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker makes each metric file empty and sizes it a moment later; killed in
    between, it left an empty file that made every /metrics answer fail."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from nextbest.api.observability import metrics_payload

    for pid, served in ((101, 3.0), (102, 4.0)):
        written = MmapedDict(str(tmp_path / f"counter_{pid}.db"))
        key = mmap_key(
            "nextbest_holdout", "nextbest_holdout_total", [], [], "Requests answered as holdout."
        )
        written.write_value(key, served, 0.0)
        written.close()
    (tmp_path / "counter_103.db").touch()  # the killed worker's
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="nextbest.api.observability"):
        body, _ = metrics_payload()
    assert "nextbest_holdout_total 7.0" in body.decode()  # both readable workers summed
    assert "counter_103.db (0 bytes) cannot be read" in caplog.text


def _dead_pid() -> int:
    """The pid of a process that ran and exited."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _model_info_file(directory: Path, pid: int, version: str) -> None:
    """What a worker's ``nextbest_model_info`` leaves in PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    written = MmapedDict(str(directory / f"gauge_liveall_{pid}.db"))
    help_text = "1 for the model version this process serves."
    key = mmap_key("nextbest_model_info", "nextbest_model_info", ["version"], [version], help_text)
    written.write_value(key, 1.0, 0.0)
    written.close()


def test_metrics_of_several_workers_forget_a_worker_that_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn starts a worker's replacement (SIGHUP) before the old worker exits:
    its version stayed in /metrics for good, as no worker started after it died."""
    from nextbest.api.observability import metrics_payload

    exited = _dead_pid()
    _model_info_file(tmp_path, exited, "2")
    _model_info_file(tmp_path, os.getpid(), "3")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = metrics_payload()[0].decode()
    assert f'nextbest_model_info{{pid="{os.getpid()}",version="3"}} 1.0' in text
    assert f'pid="{exited}"' not in text
    assert not (tmp_path / f"gauge_liveall_{exited}.db").exists()


def test_a_stopping_worker_takes_its_model_version_out_of_the_metrics(
    api_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stopping cleanly (a SIGHUP restart retires it) marks itself dead."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    _model_info_file(directory, os.getpid(), "1")
    with TestClient(create_app(api_settings)):
        assert (directory / f"gauge_liveall_{os.getpid()}.db").exists()
    assert not (directory / f"gauge_liveall_{os.getpid()}.db").exists()


def test_metrics_of_several_workers_have_each_live_workers_process_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multiprocess registry had no process metrics: no worker's memory could be
    alerted on. Each live worker's now, labelled with its pid."""
    from prometheus_client.parser import text_string_to_metric_families

    from nextbest.api.observability import metrics_payload

    exited = _dead_pid()
    for pid in (exited, os.getpid()):
        (tmp_path / f"counter_{pid}.db").touch()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    families = {f.name: f for f in text_string_to_metric_families(metrics_payload()[0].decode())}
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds"):
        samples = families[name].samples
        assert [s.labels for s in samples] == [{"pid": str(os.getpid())}], samples
        assert samples[0].value > 0


def test_single_process_metrics_keep_their_unlabelled_process_metrics(
    client: TestClient,
) -> None:
    text = client.get("/metrics").text
    assert "\nprocess_resident_memory_bytes " in text
    assert 'process_resident_memory_bytes{pid="' not in text


def _sample(text: str, line_start: str) -> float:
    """The value of the sample whose line starts with ``line_start`` (0 when absent)."""
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def test_metrics_count_feedback_events_by_result(client: TestClient, keys) -> None:
    """/v1/feedback takes batches of thousands of events: one 207 said nothing of
    how many were stored, repeated or rejected."""
    before = client.get("/metrics").text
    event = {"event_id": "fb-metrics-1", "event_type": "opened", "hcp_id": "H000001"}
    batch = [event, {"event_id": "fb-metrics-2", "event_type": "opened", "hcp_id": "H000001"}]
    assert client.post("/v1/feedback", json={"events": batch}).json()["accepted"] == 2
    again = [event, {"event_id": "fb-metrics-3", "event_type": "teleported"}]
    answer = client.post("/v1/feedback", json={"events": again})
    assert answer.status_code == 207 and answer.json()["duplicates"] == 1, answer.text
    # A rep's decision on a recommendation that was never made: rejected.
    recommender = client.app.state.runtime.recommender
    inside = next(
        str(h) for h in recommender.hcp_ids if recommender.territory_of(h) == keys.territory
    )
    decision = {
        "recommendation_id": "no-such-recommendation",
        "hcp_id": inside,
        "action_id": "nothing",
        "decision": "accept",
    }
    rep = client.post(f"/v1/reps/{keys.rep_name}/feedback", json=decision, headers=keys.rep)
    assert rep.status_code == 422 and rep.json()["rejected"], rep.text
    after = client.get("/metrics").text
    counted = {
        result: _sample(after, f'nextbest_feedback_events_total{{result="{result}"}}')
        - _sample(before, f'nextbest_feedback_events_total{{result="{result}"}}')
        for result in ("accepted", "duplicate", "rejected")
    }
    assert counted == {"accepted": 2, "duplicate": 1, "rejected": 2}


def test_documentation_routes_are_labelled_by_their_path(client: TestClient) -> None:
    """/docs and /openapi.json were counted, and logged, as "unmatched" like a 404."""
    for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 200
    client.get("/wp-login.php")  # a scanner: one label, whatever the path
    text = client.get("/metrics").text
    for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"):
        assert f'method="GET",route="{path}",status="200"' in text, path
    assert 'method="GET",route="unmatched",status="404"' in text
    assert "wp-login" not in text
    assert 'route="unmatched",status="200"' not in text


def test_every_nextbest_metric_is_listed_where_operations_md_lists_them(
    client: TestClient,
) -> None:
    """docs/operations.md's `GET /metrics` item is where an operator looks for what to
    alert on; a series the server exports but that list leaves out (a failed reload, a
    log store refusing writes) is one nobody alerts on."""
    doc = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    listed = doc.split("- **`GET /metrics`**", 1)[1].split("\n- ", 1)[0]
    text = client.get("/metrics").text
    # A counter's TYPE line names it without _total; its _created series is the
    # client library's own, beside every counter.
    exported = {
        n for n in re.findall(r"^# TYPE (nextbest_\w+) ", text, re.M) if not n.endswith("_created")
    }
    assert exported, "no nextbest_ series exported"
    assert sorted(name for name in exported if f"`{name}" not in listed) == []


def test_json_log_lines_keep_extra_fields_but_not_terminal_colours() -> None:
    import json

    from nextbest.api.logs import JsonFormatter

    record = logging.makeLogRecord(
        {
            "name": "uvicorn.error",
            "levelname": "INFO",
            "msg": "Started server process [%d]",
            "args": (42,),
            "color_message": "Started server process [\x1b[36m%d\x1b[0m]",
            "route": "/healthz",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "Started server process [42]"
    assert line["route"] == "/healthz"
    assert "color_message" not in line


def test_serve_logs_raise_a_dead_worker_and_drop_alembics_context_lines() -> None:
    """The logging configuration ``nextbest serve`` hands uvicorn, applied in a fresh
    process: uvicorn's INFO line for a worker that died comes out as a WARNING,
    Alembic's per-check context lines are dropped, its migrations kept."""
    import json
    import subprocess
    import sys

    script = """
import logging, logging.config
from nextbest.api.logs import logging_config
logging.config.dictConfig(logging_config("INFO"))
supervisor = logging.getLogger("uvicorn.error")
supervisor.info("Child process [%d] died", 4242)
supervisor.info("Started server process [%d]", 4243)
alembic = logging.getLogger("alembic.runtime.migration")
alembic.info("Context impl %s.", "SQLiteImpl")
alembic.info("Will assume non-transactional DDL.")
alembic.info("Running upgrade %s -> %s, %s", "0003", "0004", "p_no_action")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("WARNING", "Child process [4242] died"),
        ("INFO", "Started server process [4243]"),
        ("INFO", "Running upgrade 0003 -> 0004, p_no_action"),
    ]
    assert lines[0]["event"] == "worker_died" and "event" not in lines[1]


class _JsonLines(logging.Handler):
    """Formats each record when it is emitted, in the caller's thread and context,
    as the server's stderr handler does."""

    def __init__(self) -> None:
        from nextbest.api.logs import JsonFormatter

        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        import json

        self.lines.append(json.loads(self.format(record)))


def test_lines_logged_while_a_request_is_handled_name_its_request_id(
    own_registry, keys, tmp_path: Path
) -> None:
    """An error logged by a route (here a failed reload, in the thread pool) carries
    the request's id, so a caller's failed call can be found; a line logged outside
    any request carries none."""
    rules = tmp_path / "rules.yaml"
    rules.write_text((Path(__file__).parents[2] / "training" / "rules.yaml").read_text())
    settings = own_registry.model_copy(update={"rules_file": rules})
    handler = _JsonLines()
    logging.getLogger("nextbest").addHandler(handler)
    try:
        with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
            rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
            answer = client.post("/v1/admin/reload", headers={"X-Request-ID": "trace-me-1"})
            assert answer.status_code == 500
            assert answer.headers["x-request-id"] == "trace-me-1"
        logging.getLogger("nextbest.test").warning("outside any request")
    finally:
        logging.getLogger("nextbest").removeHandler(handler)
    failed = [line for line in handler.lines if "model reload failed" in line["message"]]
    assert failed and all(line.get("request_id") == "trace-me-1" for line in failed), failed
    assert "request_id" not in handler.lines[-1], handler.lines[-1]


@pytest.mark.postgres
def test_a_postgresql_error_logged_leaves_out_the_rows_values(
    own_registry, keys, postgres_url: str
) -> None:
    """PostgreSQL names the values of the row a statement failed on (``DETAIL:
    Failing row contains (...)``), HCP id included, whatever the engines'
    hide_parameters: a schema a newer release migrated (a column added NOT NULL)
    under a worker still writing the old rows put HCP ids in its log, in the
    recommendation log's error and in the traceback of a feedback request's 500."""
    from sqlalchemy.exc import IntegrityError

    from nextbest.api.logs import JsonFormatter

    settings = own_registry.model_copy(update={"database_url": postgres_url, "log_flush_ms": 1})
    handler = _JsonLines()
    logging.getLogger("nextbest").addHandler(handler)
    try:
        with serving(settings, keys) as (runtime, client, hcp), client:
            with runtime.engine.begin() as connection:
                for table in ("recommendations", "feedback_events"):
                    connection.exec_driver_sql(f"ALTER TABLE {table} ADD added_later text NOT NULL")
            served = client.post("/v1/recommendations", json={"hcp_id": hcp})
            assert served.status_code == 200, served.text  # served, its log row refused
            runtime.reclog.flush(timeout=30)
            assert runtime.reclog.dropped == 1
            event = {"event_id": "e-1", "hcp_id": hcp, "event_type": "opened"}
            with pytest.raises(IntegrityError) as raised:
                client.post("/v1/feedback", json=event)
    finally:
        logging.getLogger("nextbest").removeHandler(handler)
    [failed] = [line for line in handler.lines if "answers not logged" in line["message"]]
    assert "NotNullViolation" in failed["message"], failed
    assert "DETAIL:  (the row's values are left out of the log)" in failed["message"]
    # The 500's traceback, as uvicorn logs it ("Exception in ASGI application").
    traceback = JsonFormatter().format(
        logging.makeLogRecord(
            {
                "name": "uvicorn.error",
                "levelname": "ERROR",
                "msg": "Exception in ASGI application",
                "exc_info": (raised.type, raised.value, raised.tb),
            }
        )
    )
    assert "added_later" in traceback and "(the row's values are left out" in traceback
    assert hcp not in traceback and not any(hcp in str(line) for line in handler.lines)


def test_an_unhandled_error_is_answered_as_json_with_the_request_id() -> None:
    """A bug's 500 carries X-Request-ID like every answer (the framework's own was
    plain text without it), and the error still reaches the server's log."""
    from fastapi import FastAPI

    from nextbest.api.observability import ObservabilityMiddleware

    app = FastAPI()
    app.add_middleware(ObservabilityMiddleware)

    @app.get("/broken")
    def broken() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/broken", headers={"X-Request-ID": "bug-1"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "bug-1"
    assert answer.json() == {"detail": "internal server error"}
    with TestClient(app) as client, pytest.raises(RuntimeError, match="a bug"):
        client.get("/broken")  # raised on, for the server to log


def test_admin_reload_swaps_to_the_new_champion(reloading: TestClient, own_registry) -> None:
    before = reloading.get("/healthz").json()["model_version"]
    rules = _fingerprint(own_registry.resolved_rules_file)
    assert reloading.post("/v1/admin/reload").json() == {
        "version": before,
        "previous": before,
        "changed": False,
        "forced": False,
        "warmed_hcps": 0,
        "rules_changed": False,
        "rules_fingerprint": rules,
        "rules_notes": [],
        "territories_changed": False,
        "territory_notes": [],
        "key_notes": [],
        "challenger": None,
        "signal_error": None,
    }
    hcps = [str(h) for h in reloading.app.state.runtime.recommender.hcp_ids[:3]]
    for h in hcps:
        assert reloading.post("/v1/recommendations", json={"hcp_id": h}).status_code == 200
    new = _new_version(own_registry)
    registry.set_alias(own_registry, "champion", new)
    answer = reloading.post("/v1/admin/reload")
    assert answer.status_code == 200
    # The new model scored what the old one was asked before taking over.
    assert answer.json() == {
        "version": new,
        "previous": before,
        "changed": True,
        "forced": False,
        "warmed_hcps": 3,
        "rules_changed": False,
        "rules_fingerprint": rules,
        "rules_notes": [],
        "territories_changed": False,
        "territory_notes": [],
        "key_notes": [],
        "challenger": None,
        "signal_error": None,
    }
    hits, misses = _cache_counts(reloading)
    served = reloading.post("/v1/recommendations", json={"hcp_id": hcps[0]}).json()
    assert served["model_version"] == new
    hits_after, misses_after = _cache_counts(reloading)
    assert misses_after == misses and hits_after > hits
    assert (own_registry.resolved_models_dir / "reload.signal").read_text() == new


def test_a_reload_that_cannot_signal_the_other_workers_says_so_in_its_answer(
    own_registry, keys, tmp_path: Path
) -> None:
    """The signal file cannot be written (here a directory in its place): the other
    workers serve on unchanged, which the caller of the reload is told, in the answer
    and in a failed reload's detail, instead of only in a warning of the log."""
    signal_file = own_registry.resolved_models_dir / "reload.signal"
    rules = tmp_path / "rules.yaml"
    rules.write_text((Path(__file__).parents[2] / "training" / "rules.yaml").read_text())
    settings = own_registry.model_copy(update={"rules_file": rules})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        signal_file.unlink(missing_ok=True)  # the copied store's, if a test reloaded it
        signal_file.mkdir()
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 200, answer.text
        said = answer.json()["signal_error"]
        assert said == (
            "the other workers were not signalled: IsADirectoryError: Is a directory: "
            f"{signal_file}; they do not reload (NEXTBEST_RELOAD_INTERVAL_S=0: no alias "
            "poll) until the file can be written and a reload is asked for again"
        )
        rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
        failed = client.post("/v1/admin/reload")
        assert failed.status_code == 500, failed.text
        detail = failed.json()["detail"]
        assert "channels.email.max_contacts" in detail and detail.endswith(f"; {said}"), detail
        signal_file.rmdir()
        rules.write_text((Path(__file__).parents[2] / "training" / "rules.yaml").read_text())
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 200 and answer.json()["signal_error"] is None, answer.text


def test_a_sighup_that_finds_nothing_new_says_so(
    own_registry, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator who sent SIGHUP and sees nothing change reads why in the log: the
    alias names the version served and the files are as read (no line at all before)."""
    runtime = ServingRuntime.start(own_registry)
    try:
        runtime.start_watcher()
        with caplog.at_level(logging.INFO, logger="nextbest.service.runtime"):
            runtime.ask_reload()
            assert _wait_for(lambda: "SIGHUP reload: nothing changed" in caplog.text), caplog.text
        assert (
            "SIGHUP reload: nothing changed, still serving model nextbest version 1 (alias "
            "'champion'); the rules and territory files are as read before"
        ) in caplog.messages
    finally:
        runtime.close()


def test_reload_applies_an_edited_rules_file_and_refuses_an_invalid_one(
    own_registry, keys, tmp_path: Path
) -> None:
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    rules = tmp_path / "rules.yaml"
    rules.write_text(shipped.read_text())
    settings = own_registry.model_copy(
        update={"rules_file": rules, "holdout_rate": 0.0, "epsilon": 0.0}
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        runtime = client.app.state.runtime
        hcps = [str(h) for h in runtime.recommender.hcp_ids[:50]]

        def emails(hcp: str) -> list[str]:
            body = {"hcp_id": hcp, "channel": "email", "k": 3, "explain": True}
            answer = client.post("/v1/recommendations", json=body)
            assert answer.status_code == 200, answer.text
            return [item["action_id"] for item in answer.json()["items"]]

        hcp = next(h for h in hcps if emails(h))
        # Compliance stops e-mail for now: no restart, a reload.
        # (the e-mail rule comes first in the shipped file)
        rules.write_text(shipped.read_text().replace("max_contacts: 3", "max_contacts: 0", 1))
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 200, answer.text
        assert answer.json()["rules_changed"] is True and answer.json()["changed"] is False
        assert emails(hcp) == []
        excluded = client.post(
            "/v1/recommendations", json={"hcp_id": hcp, "channel": "email", "explain": True}
        ).json()["excluded"]
        assert any("frequency cap" in why for whys in excluded.values() for why in whys)
        # An invalid edit is refused; the rules before it keep applying.
        rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 500
        assert "channels.email.max_contacts" in answer.json()["detail"]
        assert emails(hcp) == []
        # Put back, the shipped rules serve e-mail again.
        rules.write_text(shipped.read_text())
        assert client.post("/v1/admin/reload").json()["rules_changed"] is True
        assert emails(hcp) != []


def test_a_rules_file_emptied_under_a_worker_keeps_its_rules_serving(
    own_registry, keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rules file found empty at a reload (a save that truncated it and has not
    written it yet, twice read) does not switch every cap off: the rules held keep
    serving, and the log says so once. A comment-only file serves without them."""
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    rules = tmp_path / "rules.yaml"
    rules.write_text(shipped.read_text())
    settings = own_registry.model_copy(update={"rules_file": rules})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        held = client.get("/readyz").json()["rules_fingerprint"]
        rules.write_text("")
        said = (
            f"{rules} is empty: taken for a save in progress, the rules read before "
            f"(fingerprint {held}) keep serving; to serve without history rules, leave a "
            "comment in the file ('# no history rules')"
        )
        with caplog.at_level(logging.WARNING, logger="nextbest.service.runtime"):
            for _ in range(2):
                answer = client.post("/v1/admin/reload")
                assert answer.status_code == 200, answer.text
                assert answer.json()["rules_changed"] is False
                # The reload's answer says it too, each time: not only the log, once.
                assert answer.json()["rules_notes"] == [said], answer.text
        kept = [r.getMessage() for r in caplog.records if "is empty" in r.getMessage()]
        assert kept == [said]
        runtime = client.app.state.runtime
        assert client.get("/readyz").json()["rules_fingerprint"] == held
        assert runtime.recommender.rules.needs_contacts
        rules.write_text("# no history rules\n")
        answer = client.post("/v1/admin/reload").json()
        assert answer["rules_changed"] is True and answer["rules_notes"] == [], answer
        assert not runtime.recommender.rules.needs_contacts
        # Held rules of no bytes are not kept over an empty file: nothing to keep.
        rules.write_text("")
        assert client.post("/v1/admin/reload").json()["rules_changed"] is True
        assert client.get("/readyz").json()["rules_fingerprint"] == "e3b0c44298fc"


def test_strict_rules_with_a_misspelt_channel_fail_the_reload(
    own_registry, keys, tmp_path: Path
) -> None:
    """`strict: true`: an edit that leaves a channel uncapped (a misspelt name) is
    refused like an invalid file, and the rules before it keep serving."""
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    strict = "strict: true\n" + shipped.read_text()
    rules = tmp_path / "rules.yaml"
    rules.write_text(strict)  # the shipped rules fit the catalog: strict, they load
    settings = own_registry.model_copy(update={"rules_file": rules})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        before = client.get("/readyz").json()
        assert before["status"] == "ready" and "last_reload_error" not in before, before
        assert "\n  email:\n" in strict
        rules.write_text(strict.replace("\n  email:\n", "\n  emial:\n", 1))
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 500, answer.text
        said = answer.json()["detail"]
        # Names the version and alias refused, not only the rules.
        assert said.startswith(
            "reload failed, still serving version 1: RulesError: model 'nextbest' version 1 "
            f"(alias 'champion'): {rules}: strict: true, and the rules do not fit the served "
            "catalog: "
        ), said
        assert "did you mean 'email' for 'emial'?" in said, said
        after = client.get("/readyz").json()
        assert after["status"] == "ready", after  # the rules before it serve on
        assert after["rules_fingerprint"] == before["rules_fingerprint"], after
        assert "strict: true" in after["last_reload_error"], after
    # A worker starting with it (a restart) serves nothing and names the file.
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "serving rules file invalid", ready.text
        said = ready.json()["last_reload_error"]
        assert said.startswith(
            "RulesError: model 'nextbest' version 1 (alias 'champion'): rules.yaml: strict"
        ), said
        asking = client.post("/v1/recommendations", json={"hcp_id": "H000001"})
        assert asking.status_code == 503 and "fix the file" in asking.json()["detail"]
        assert "model 'nextbest' version 1 (alias 'champion')" in asking.json()["detail"]


def test_content_withdrawn_in_the_rules_file_is_served_to_nobody_after_a_reload(
    own_registry, keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from nextbest.service.picks import picks_frame

    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    rules = tmp_path / "rules.yaml"
    rules.write_text(shipped.read_text())
    settings = own_registry.model_copy(
        update={"rules_file": rules, "holdout_rate": 0.0, "epsilon": 0.0}
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        runtime = client.app.state.runtime
        hcps = [str(h) for h in runtime.recommender.hcp_ids[:80]]
        batch = {"hcp_ids": hcps, "k": 5}

        def served() -> set[str]:
            answer = client.post("/v1/recommendations/batch", json=batch)
            assert answer.status_code == 200, answer.text
            return {i["action_id"] for r in answer.json()["results"] for i in r["items"]}

        before = served()
        pulled = sorted(before)[:2]
        # Approval pulled for two pieces of content: listed, reloaded, gone everywhere.
        listed = f"withdrawn_actions: [{pulled[0]}, {pulled[1]}, A999]"
        assert "withdrawn_actions: []" in shipped.read_text()
        rules.write_text(shipped.read_text().replace("withdrawn_actions: []", listed))
        with caplog.at_level(logging.WARNING, logger="nextbest.policy.rules"):
            answer = client.post("/v1/admin/reload")
        assert answer.status_code == 200 and answer.json()["rules_changed"] is True
        assert "withdrawn_actions ['A999'] are not in the served model's catalog" in caplog.text
        # ... and in the reload's answer, where whoever withdrew the content reads.
        assert any("['A999']" in note for note in answer.json()["rules_notes"]), answer.text
        after = served()
        assert after and not after & set(pulled), after
        hcp = hcps[0]
        excluded = client.post("/v1/recommendations", json={"hcp_id": hcp, "explain": True})
        said = excluded.json()["excluded"]
        # Named with its line in the file (its name only: no server layout in answers).
        rows = enumerate(rules.read_text().splitlines(), start=1)
        line = next(n for n, row in rows if row.startswith("withdrawn_actions"))
        withdrawn = (
            f"withdrawn by the serving rules (withdrawn_actions, rules.yaml line {line}), "
            "until the rules change"
        )
        assert all(withdrawn in said[a] for a in pulled), said
        plan = client.get(f"/v1/reps/x/suggestions?territory_id={runtime.recommender.territory[0]}")
        assert plan.status_code == 200, plan.text
        assert not {s["action_id"] for s in plan.json()["suggestions"]} & set(pulled)
        # The send files of `nextbest picks` follow the same rules.
        recommender = runtime.recommender
        picked = picks_frame(
            recommender.model, hcp_ids=hcps, k=5, rules=recommender.rules, history=None
        )
        assert len(picked) and not set(picked["action_id"]) & set(pulled)


def _fingerprint(path: Path) -> str:
    """What `sha256sum FILE | cut -c1-12` prints."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_every_logged_answer_names_the_rules_it_was_made_under(
    own_registry, keys, tmp_path: Path
) -> None:
    """An audit tells which caps and withdrawals applied to a logged answer, and an
    operator which rules each worker holds (/readyz), before and after an edit."""
    from nextbest.storage.repository import get_recommendation, stored_rules

    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    rules = tmp_path / "rules.yaml"
    rules.write_text(shipped.read_text())
    settings = own_registry.model_copy(update={"rules_file": rules})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        runtime = client.app.state.runtime
        hcps = [str(h) for h in runtime.recommender.hcp_ids[:4]]
        territory = runtime.recommender.territory[0]

        def answer_ids() -> list[str]:
            one = client.post("/v1/recommendations", json={"hcp_id": hcps[0]})
            batch = client.post("/v1/recommendations/batch", json={"hcp_ids": hcps[1:]})
            plan = client.get(f"/v1/reps/rep-x/suggestions?territory_id={territory}")
            for answer in (one, batch, plan):
                assert answer.status_code == 200, answer.text
            ids = [one.json()["recommendation_id"]]
            ids += [r["recommendation_id"] for r in batch.json()["results"]]
            ids += [s["recommendation_id"] for s in plan.json()["suggestions"]]
            assert len(ids) > len(hcps)  # a plan's suggestions among them
            return ids

        def logged(ids: list[str]) -> set[str | None]:
            assert runtime.reclog.flush()
            with runtime.sessions() as session:
                records = [get_recommendation(session, recommendation_id=i) for i in ids]
            assert all(record is not None for record in records)
            return {record.rules_fingerprint for record in records if record is not None}

        first = _fingerprint(rules)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["rules_fingerprint"] == first
        before = answer_ids()
        assert logged(before) == {first}
        # Content withdrawn: reloaded, answers from then on name the new rules.
        rules.write_text(
            shipped.read_text().replace("withdrawn_actions: []", "withdrawn_actions: [A999]")
        )
        second = _fingerprint(rules)
        assert second != first
        reloaded = client.post("/v1/admin/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["rules_changed"] is True
        assert reloaded.json()["rules_fingerprint"] == second
        assert client.get("/readyz").json()["rules_fingerprint"] == second
        assert logged(answer_ids()) == {second}
        assert logged(before) == {first}  # what was logged stays as it was
        # An invalid edit is refused: the rules in force, and their fingerprint, stay.
        rules.write_text("channels: [unclosed")
        assert client.post("/v1/admin/reload").status_code == 500
        assert client.get("/readyz").json()["rules_fingerprint"] == second
        assert logged(answer_ids()) == {second}
        # Each fingerprint's file is kept, so an old answer's rules can be read after
        # the file changed: both texts, the invalid one never served, so not kept.
        with runtime.sessions() as session:
            kept = {fp: stored_rules(session, fp) for fp in (first, second)}
            assert stored_rules(session, _fingerprint(rules)) is None
        assert kept[first] is not None and kept[first].content == shipped.read_text()
        assert kept[second] is not None and "withdrawn_actions: [A999]" in kept[second].content
        assert kept[first].source == str(rules) and len(kept[first].sha256) == 64


def test_the_rules_file_is_kept_under_its_absolute_path_and_the_same_fingerprint(
    own_registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NEXTBEST_RULES_FILE=training/rules.yaml was kept as written, relative to
    wherever the server was started: an auditor could not tell which file it was."""
    from nextbest.storage.repository import stored_rules

    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    started_in = tmp_path / "deploy"
    (started_in / "training").mkdir(parents=True)
    rules = started_in / "training" / "rules.yaml"
    rules.write_text(shipped.read_text())
    monkeypatch.chdir(started_in)
    settings = own_registry.model_copy(update={"rules_file": Path("training/rules.yaml")})
    runtime = ServingRuntime.start(settings)
    try:
        # What answers and /readyz name, and what an auditor compares with the file.
        assert runtime.rules_fingerprint == _fingerprint(rules)
        with runtime.sessions() as session:
            kept = stored_rules(session, _fingerprint(rules))
        assert kept is not None and kept.source == str(rules), kept
        assert kept.sha256 == hashlib.sha256(rules.read_bytes()).hexdigest()
        assert runtime.rules is not None and runtime.rules.source == "training/rules.yaml"
    finally:
        runtime.close()


def test_a_worker_started_after_invalid_edits_is_unready_until_they_are_fixed(
    own_registry, keys, tmp_path: Path
) -> None:
    """uvicorn replaces a worker that died; a rules or key file made invalid since
    the server started must not fail its start-up (the supervisor then stopped every
    worker, exit 0). It starts unready, naming the file, and serves once fixed."""
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
    key_file = own_registry.resolved_api_keys_file
    good_keys = key_file.read_text()
    key_file.write_text(good_keys + "\n  - {name: half\n")
    settings = own_registry.model_copy(update={"rules_file": rules})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "API key file invalid; serving rules file invalid"
        assert "no key of the file is in force here" in ready.json()["keys_error"]
        assert "rules_fingerprint" not in ready.json()  # no rules read
        assert client.post("/v1/recommendations", json={"hcp_id": "x"}).status_code == 401
        key_file.write_text(good_keys)
        answer = client.post("/v1/recommendations", json={"hcp_id": "x"})
        assert answer.status_code == 503
        assert "not serving: RulesError: " in answer.json()["detail"]
        assert "channels.email.max_contacts" in answer.json()["detail"]
        rules.write_text(shipped.read_text())
        client.app.state.runtime.reload()  # what the watcher does every 10 s
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert "keys_error" not in ready.json()
        assert ready.json()["rules_fingerprint"] == _fingerprint(shipped)


def test_a_worker_started_while_the_named_key_file_is_gone_is_unready_until_it_is_back(
    own_registry, keys, tmp_path: Path
) -> None:
    """A worker uvicorn starts in place of one that died, while the key file a setting
    names is gone (deleted, being replaced): its siblings keep the keys they read,
    it holds none, and it answered their callers 401 while /readyz said ready."""
    key_file = own_registry.resolved_api_keys_file
    settings = own_registry.model_copy(update={"api_keys_file": key_file})
    away = tmp_path / "api_keys.yaml.moved"
    key_file.rename(away)
    try:
        with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "API key file missing"
            why = ready.json()["keys_error"]
            assert "the API key file is gone and this worker started after" in why, why
            assert client.post("/v1/recommendations", json={"hcp_id": "x"}).status_code == 401
            away.rename(key_file)
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert "keys_error" not in ready.json()
            hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
            answer = client.post("/v1/recommendations", json={"hcp_id": hcp})
            assert answer.status_code == 200, answer.text
    finally:
        if away.exists():
            away.rename(key_file)


def test_a_failed_admin_reload_reaches_the_other_workers(own_registry, keys, tmp_path) -> None:
    """Each worker tries the failed reload too and reports it in /readyz; before,
    only the worker that took the call knew."""
    rules = tmp_path / "rules.yaml"
    rules.write_text((Path(__file__).parents[2] / "training" / "rules.yaml").read_text())
    settings = own_registry.model_copy(update={"rules_file": rules})
    other = ServingRuntime.start(settings)
    try:
        other.start_watcher()
        with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
            rules.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
            assert client.post("/v1/admin/reload").status_code == 500
            deadline = time.monotonic() + 10
            while other.last_reload_error is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "channels.email.max_contacts" in (other.last_reload_error or "")
            assert other.model_version is not None  # and it keeps serving
    finally:
        other.close()


def test_failed_reload_keeps_the_old_model(reloading: TestClient, own_registry, tmp_path) -> None:
    before = reloading.get("/healthz").json()["model_version"]
    broken = _new_version(own_registry, source=(tmp_path / "no-such-artifact").as_uri())
    registry.set_alias(own_registry, "champion", broken)
    answer = reloading.post("/v1/admin/reload")
    assert answer.status_code == 500
    detail = answer.json()["detail"]
    assert f"still serving version {before}" in detail
    # Names the version, the alias and where its artifacts were looked for.
    assert f"version {broken} (alias 'champion'): its artifacts at " in detail
    assert "no-such-artifact cannot be read" in detail
    hcp = str(reloading.app.state.runtime.recommender.hcp_ids[0])
    served = reloading.post("/v1/recommendations", json={"hcp_id": hcp})
    assert served.status_code == 200 and served.json()["model_version"] == before
    ready = reloading.get("/readyz").json()
    assert ready["status"] == "ready" and ready["last_reload_error"]


def _artifact_copy(settings, tmp_path: Path) -> Path:
    """A copy of version 1's model directory (to register, broken, as a new version)."""
    from urllib.parse import unquote, urlparse

    found = registry.client(settings).get_model_version(settings.model_name, "1")
    where = registry._artifact_place(settings, found)[0]
    copy = tmp_path / "copy"
    shutil.copytree(unquote(urlparse(where).path), copy)
    return copy


def _unpickling_cause(artifact: Path) -> str:
    """What joblib says of the cut artifact (its class and first line), as the
    reload's message names it."""
    try:
        joblib.load(artifact)
    except Exception as error:  # the cause the message must carry, whatever it is
        first = str(error).strip().splitlines()
        return f"{type(error).__name__}: {first[0]}" if first else type(error).__name__
    raise AssertionError(f"{artifact} loads: it was to be cut short")


@pytest.mark.parametrize(
    ("case", "said"),
    [
        (
            "truncated",
            # The cause is what the unpickler met where the file was cut: it moves
            # with the artifact's layout, so the test names it from the file itself.
            "its artifact {artifact} is damaged or truncated ({cause}); restore the "
            "models directory from a backup",
        ),
        ("missing", "its artifact {artifact} is missing; restore the models directory"),
        (
            "format",
            "was written by an older nextbest in artifact format 999 (its artifacts at "
            "{where}); this nextbest",
        ),
    ],
)
def test_a_version_that_cannot_be_loaded_is_one_line_naming_version_path_and_cause(
    own_registry, keys, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, said: str
) -> None:
    """A corrupt, missing or foreign-format artifact: the reload's answer and its log
    line name the version, where and what, in one line; the traceback (an ERROR of
    many lines, taken for a crash) is at the debug level only."""
    copy = _artifact_copy(own_registry, tmp_path)
    artifact = copy / "artifacts" / "scoring_model.joblib"
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as client:
        if case == "truncated":
            artifact.write_bytes(artifact.read_bytes()[:500])
        elif case == "missing":
            artifact.unlink()
        broken = _new_version(own_registry, source=copy.as_uri())
        if case == "format":
            registry.client(own_registry).set_model_version_tag(
                own_registry.model_name, broken, registry.FORMAT_TAG, "999"
            )
        registry.set_alias(own_registry, "champion", broken)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="nextbest.service.runtime"):
            answer = client.post("/v1/admin/reload")
        assert answer.status_code == 500, answer.text
        detail = answer.json()["detail"]
        expected = said.format(
            artifact=artifact.as_uri(),
            where=copy.as_uri(),
            cause=_unpickling_cause(artifact) if case == "truncated" else "",
        )
        error = "RegistryError" if case == "format" else "ArtifactsUnreadableError"
        assert detail.startswith(
            f"reload failed, still serving version 1: {error}: model 'nextbest' version "
            f"{broken} (alias 'champion')"
        ), detail
        assert expected in detail and "\n" not in detail, detail
        failed = [r for r in caplog.records if r.getMessage().startswith("model reload failed")]
        assert len(failed) == 1 and failed[0].levelno == logging.ERROR, caplog.text
        assert failed[0].exc_info is None and expected in failed[0].getMessage()
        traced = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
        assert len(traced) == (0 if case in ("missing", "format") else 1), caplog.text
        assert client.get("/readyz").json()["model_version"] == "1"


def test_a_runtime_without_a_model_retries_and_says_why(
    own_registry, keys, tmp_path, monkeypatch
) -> None:
    """The served version failed to load: the 503 says so (not "train one") and when to
    ask again, and the watcher loads the alias's version once it loads, without alias
    polling (its retry shortened from 10 s: this test waits for one)."""
    import nextbest.service.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "RETRY_INTERVAL_S", 2.0)
    assert own_registry.reload_interval_s == 0
    broken = _new_version(own_registry, source=(tmp_path / "no-such-artifact").as_uri())
    registry.set_alias(own_registry, "champion", broken)
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as client:
        refused = client.post("/v1/recommendations", json={"hcp_id": "H000001"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        detail = refused.json()["detail"]
        assert f"the served version {broken} of model 'nextbest' (alias 'champion') " in detail
        assert "failed to load (tried again every 2 s)" in detail
        assert "no-such-artifact cannot be read" in detail and "train one" not in detail
        registry.set_alias(own_registry, "champion", "1")  # a version that loads
        assert _wait_for(lambda: client.get("/healthz").json().get("model_version") == "1", 60)
        assert client.post("/v1/recommendations", json={"hcp_id": "H000001"}).status_code == 200


def test_a_registry_that_cannot_be_read_is_said_as_such_and_the_model_serves_on(
    own_registry, keys
) -> None:
    """A store that cannot be read is not a missing alias: "no alias 'champion'" sent
    the operator looking for a promotion that never went missing. The reload names
    the store and its error, the served model serves on; a worker started on it
    says the registry, not "train one"."""
    store = own_registry.resolved_models_dir / "mlflow.db"
    good = store.read_bytes()
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as client:
        hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
        store.write_bytes(b"not a database" * 1000)
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 500, answer.text
        detail = answer.json()["detail"]
        assert detail.startswith("reload failed, still serving version 1: "), detail
        assert f"the MLflow registry sqlite:///{store} cannot be read" in detail, detail
        assert "DatabaseError: file is not a database" in detail and "no alias" not in detail
        assert "\n" not in detail  # the driver's message, not the SQL below it
        served = client.post("/v1/recommendations", json={"hcp_id": hcp})
        assert served.status_code == 200 and served.json()["model_version"] == "1"
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready", ready
        assert "sqlite:///mlflow.db cannot be read" in ready["last_reload_error"], ready
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "no model loaded: model registry unreadable"
        refused = client.post("/v1/recommendations", json={"hcp_id": hcp})
        assert refused.status_code == 503, refused.text
        detail = refused.json()["detail"]
        assert "cannot be read" in detail and "train one" not in detail, detail
        store.write_bytes(good)  # restored: loaded at the next try
        assert client.post("/v1/admin/reload").status_code == 200
        assert client.get("/readyz").json()["status"] in ("ready", "warming")


def _damage_alias_table(store: Path) -> None:
    """A damaged MLflow store: its alias table lost a column (every read of an alias
    fails with an OperationalError, as a locked file or a server that is down does)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(store)) as db:
        db.execute("ALTER TABLE registered_model_aliases RENAME COLUMN alias TO damaged")
        db.commit()


def test_mlflows_own_traceback_of_a_registry_read_failure_stays_out_of_the_log(
    own_registry, keys, capfd: pytest.CaptureFixture[str]
) -> None:
    """MLflow logs every failed read of its store at ERROR, with a traceback and the SQL
    statement with its parameters, beside the reload's one line: at DEBUG instead, so
    that line is what an operator sees."""
    store = own_registry.resolved_models_dir / "mlflow.db"
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as client:
        capfd.readouterr()
        _damage_alias_table(store)
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 500, answer.text
        detail = answer.json()["detail"]
        assert f"the MLflow registry sqlite:///{store} cannot be read" in detail, detail
        assert "OperationalError: no such column" in detail, detail
        assert client.get("/readyz").json()["model_version"] == "1"
    err = capfd.readouterr().err
    assert "SQLAlchemy database error" not in err and "Traceback" not in err, err
    assert "[SQL: " not in err, err


def test_a_registry_file_gone_is_named_with_the_alias_it_lacks(own_registry, keys) -> None:
    """The models directory moved away under a running server: the alias is missing
    from a file that does not exist, which the reload says, naming it."""
    store = own_registry.resolved_models_dir / "mlflow.db"
    with TestClient(create_app(own_registry), headers=dict(keys.admin)) as client:
        store.rename(store.with_suffix(".moved"))
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 500, answer.text
        assert answer.json()["detail"] == (
            "reload failed, still serving version 1: RegistryError: model 'nextbest' has "
            f"no alias 'champion' in sqlite:///{store}, a file that does not exist"
        )
        assert client.get("/readyz").json()["model_version"] == "1"


@pytest.mark.postgres
def test_a_registry_on_a_postgresql_server_that_is_down_is_said_as_such(
    own_registry, keys, proxied_database, capfd: pytest.CaptureFixture[str]
) -> None:
    """The MLflow store on a PostgreSQL server that goes down: the reload names the
    store (without its password) and the driver's error, not a missing alias, at
    once and without MLflow's own traceback, and the model loaded before serves on."""
    from nextbest.learning.train import TrainResult
    from nextbest.settings import without_password

    proxy, through = proxied_database
    proxy.start()
    model = registry.load_version(own_registry, "1")
    settings = own_registry.model_copy(update={"tracking_uri": through})
    result = TrainResult(model=model, metrics={}, params={"variant": "test"})
    assert registry.log_training_run(result, settings).version == "1"
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
        proxy.stop()
        capfd.readouterr()
        started = time.monotonic()
        answer = client.post("/v1/admin/reload")
        assert time.monotonic() - started < 10  # the pool's, not a new engine's retries
        assert answer.status_code == 500, answer.text
        detail = answer.json()["detail"]
        assert f"the MLflow registry {without_password(through)} cannot be read" in detail
        assert "OperationalError: " in detail and "no alias" not in detail, detail
        err = capfd.readouterr().err
        assert "SQLAlchemy database error" not in err and "Traceback" not in err, err
        served = client.post("/v1/recommendations", json={"hcp_id": hcp})
        assert served.status_code == 200 and served.json()["model_version"] == "1"
        proxy.start()
        assert client.post("/v1/admin/reload").json()["version"] == "1"


@pytest.mark.postgres
@pytest.mark.parametrize("down", ["tracking store", "registry"])
def test_of_two_stores_readiness_names_the_one_that_cannot_be_read(
    own_registry, keys, proxied_database, tmp_path: Path, down: str, monkeypatch
) -> None:
    """NEXTBEST_TRACKING_URI and NEXTBEST_REGISTRY_URI on two stores, the one on
    PostgreSQL down when a worker starts: /readyz and the 503 of a recommendation name
    that store, with its URI without its password, not the other (a tracking store
    down was said as the registry). Once it answers, the watcher's retry serves the
    model, no reload asked for."""
    from sqlalchemy.engine import make_url

    import nextbest.service.runtime as runtime_module
    from nextbest.learning.train import TrainResult
    from nextbest.settings import without_password

    monkeypatch.setattr(runtime_module, "RETRY_INTERVAL_S", 1.0)
    proxy, through = proxied_database
    server = make_url(through).set(password="s3cret-pw").render_as_string(hide_password=False)
    local = f"sqlite:///{tmp_path / 'other.db'}"

    def on(store: str) -> Settings:
        tracking, registry_uri = (store, local) if down == "tracking store" else (local, store)
        return own_registry.model_copy(
            update={"tracking_uri": tracking, "registry_uri": registry_uri}
        )

    proxy.start()
    model = registry.load_version(own_registry, "1")
    result = TrainResult(model=model, metrics={}, params={"variant": "two stores"})
    # Trained through another spelling of the store's URI, as by another process:
    # the worker below has not opened the store (trust authentication: no password).
    assert registry.log_training_run(result, on(through)).version == "1"
    proxy.stop()
    settings = on(server)
    said = f"the MLflow {down} {without_password(server)} cannot be read"
    other = "registry" if down == "tracking store" else "tracking store"
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == (
            "no model loaded: model registry unreadable"
            if down == "registry"
            else "no model loaded: MLflow tracking store unreadable"
        )
        assert ready.json()["last_reload_error"].startswith(f"RegistryUnreadableError: {said}"), (
            ready.json()
        )
        refused = client.post("/v1/recommendations", json={"hcp_id": "H000001"})
        assert refused.status_code == 503, refused.text
        assert said in refused.json()["detail"], refused.json()
        for answer in (ready, refused):
            assert f"the MLflow {other}" not in answer.text and "s3cret-pw" not in answer.text
        proxy.start()
        assert _wait_for(lambda: client.get("/readyz").json().get("model_version") == "1"), (
            client.get("/readyz").json()
        )


@pytest.mark.parametrize("directory", ["tracking store", "registry"])
def test_a_store_that_is_a_directory_is_said_unreadable_not_modelless(
    own_registry, keys, tmp_path: Path, directory: str
) -> None:
    """A worker whose MLflow store in SQLite is a directory (a volume mounted at the
    file's path): /readyz and a recommendation's 503 name that store as unreadable.
    The IsADirectoryError was taken for a missing model: "train one with `nextbest
    train`", which would not have helped; a registry of its own that is a directory
    kept each reload in MLflow's ten tries, about 107 s."""
    place = tmp_path / "mounted.db"
    place.mkdir()
    answering = f"sqlite:///{own_registry.resolved_models_dir / 'mlflow.db'}"
    tracking, registry_uri = (
        (f"sqlite:///{place}", answering)
        if directory == "tracking store"
        else (answering, f"sqlite:///{place}")
    )
    settings = own_registry.model_copy(
        update={"tracking_uri": tracking, "registry_uri": registry_uri}
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == (
            "no model loaded: model registry unreadable"
            if directory == "registry"
            else "no model loaded: MLflow tracking store unreadable"
        ), ready.json()
        # /readyz, which anyone may ask, names the file alone; the 503 gives its path.
        said = f"the MLflow {directory} sqlite:///mounted.db cannot be read"
        assert ready.json()["last_reload_error"].startswith(f"RegistryUnreadableError: {said}")
        refused = client.post("/v1/recommendations", json={"hcp_id": "H000001"})
        assert refused.status_code == 503, refused.text
        said = f"the MLflow {directory} sqlite:///{place} cannot be read"
        assert said in refused.json()["detail"], refused.json()
        assert "nextbest train" not in refused.text, refused.json()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_reload_asked_for_does_not_wait_behind_the_watchers_retry_of_a_hung_store(
    own_registry, keys, proxied_database, monkeypatch
) -> None:
    """A worker whose MLflow store hangs (accepts, never answers) retries every 10 s,
    each try waiting the connect timeout. The store repaired, a reload asked for is
    answered at once with the model, not after the watcher's try in progress (which
    held the reload lock for its whole timeout)."""
    import nextbest.service.runtime as runtime_module
    from nextbest.learning.train import TrainResult
    from nextbest.storage.db import PG_CONNECT_TIMEOUT_S

    # The watcher's try, not its 10 s between tries, is what a reload must not wait
    # behind: the first retry begins a second after the start-up's try timed out.
    monkeypatch.setattr(runtime_module, "RETRY_INTERVAL_S", 1.0)
    proxy, through = proxied_database
    settings = own_registry.model_copy(update={"tracking_uri": through})
    proxy.start()
    model = registry.load_version(own_registry, "1")
    result = TrainResult(model=model, metrics={}, params={"variant": "hung store"})
    assert registry.log_training_run(result, settings).version == "1"
    proxy.hang()
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "no model loaded: model registry unreadable", ready
        assert "ConnectionTimeout" in ready["last_reload_error"], ready
        held = proxy.held
        # The watcher's retry has begun: its connection waits, unanswered. (One begun
        # already, on a slow machine, holds the next back for its connect timeout.)
        retried_within = PG_CONNECT_TIMEOUT_S + runtime_module.RETRY_INTERVAL_S + 10
        assert _wait_for(lambda: proxy.held > held, retried_within)
        proxy.start()  # repaired: new connections answered, the one held stays so
        started = time.monotonic()
        answer = client.post("/v1/admin/reload")
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == "1" and answer.json()["changed"] is True
        assert took < PG_CONNECT_TIMEOUT_S / 2, f"{took:.1f} s: waited behind the watcher"
        assert client.get("/readyz").json()["model_version"] == "1"
        # Dropped, the connection the watcher's try still waits on ends that try now:
        # the worker's stop waits for it, not for the rest of its connect timeout.
        proxy.stop()


def _wait_for(predicate, seconds: float = 15.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_reload_asked_for_during_a_polls_load_answers_with_that_load(own_registry) -> None:
    """A reload asked for while the watcher's poll is loading the alias's new version
    waits for that load, and answers with it (changed, from the version served when
    asked), not "unchanged" from a version it never saw serve."""
    import threading

    runtime = ServingRuntime.start(own_registry)
    try:
        assert runtime.model_version == "1"
        new = _new_version(own_registry)
        registry.set_alias(own_registry, "champion", new)
        poll = threading.Thread(target=lambda: runtime.reload(polled=True))
        poll.start()
        assert _wait_for(runtime._reload_lock.locked, 10), "the poll is loading"
        asked = runtime.reload()
        poll.join()
        assert asked.version == new and asked.previous == "1" and asked.changed, asked
        assert runtime.model_version == new
    finally:
        runtime.close()


def test_polling_and_the_reload_signal_reach_other_runtimes(own_registry) -> None:
    """Worker A polls the alias; worker B follows A's reload signal (same models dir)."""
    polling = own_registry.model_copy(update={"reload_interval_s": 1.0})
    a = ServingRuntime.start(polling)
    b = ServingRuntime.start(own_registry)  # no polling: only the signal moves it
    try:
        a.start_watcher()
        b.start_watcher()
        before = a.model_version
        assert before is not None and b.model_version == before
        new = _new_version(own_registry)
        registry.set_alias(own_registry, "champion", new)
        assert _wait_for(lambda: a.model_version == new), "polling picks up the new champion"
        assert b.model_version == before, "without polling or a signal nothing moves"
        a.reload(broadcast=True)
        assert _wait_for(lambda: b.model_version == new), "the signal reaches the other worker"
        # A forced reload (same version) is forced in the other worker too.
        serving = b.recommender
        a.reload(force=True, broadcast=True)
        assert _wait_for(lambda: b.recommender is not serving), "a forced reload reaches b"
        assert b.model_version == new
    finally:
        a.close()
        b.close()


def test_an_edited_rules_file_reaches_the_other_workers(own_registry, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("max_items_per_channel: 2\n")
    settings = own_registry.model_copy(update={"rules_file": rules})
    a, b = ServingRuntime.start(settings), ServingRuntime.start(settings)
    try:
        b.start_watcher()
        assert b.recommender.max_per_channel == 2
        rules.write_text("max_items_per_channel: 1\n")
        assert a.reload(broadcast=True).rules_changed
        assert a.recommender.max_per_channel == 1
        assert _wait_for(lambda: b.recommender.max_per_channel == 1), "b re-reads the file"
        assert b.rules.max_items_per_channel == 1
    finally:
        a.close()
        b.close()


def test_health_reports_the_history_cut_off_and_an_old_one_is_warned_about(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from nextbest.service import runtime as runtime_module

    served = client.app.state.runtime
    as_of = pd.Timestamp(served.recommender.model.as_of)
    expected = (as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of).isoformat()
    for route in ("/healthz", "/readyz"):
        assert client.get(route).json()["features_as_of"] == expected

    # The same model is served "later": how old its history is decides the warning.
    def age_days() -> int:
        return (pd.Timestamp.now(tz="UTC") - pd.Timestamp(expected)).days

    before = age_days()
    with caplog.at_level(logging.WARNING, logger="nextbest.service.runtime"):
        # Two days over: not warned, even should the age read grow a day meanwhile.
        monkeypatch.setattr(runtime_module, "STALE_FEATURES_DAYS", before + 2)
        served.reload(force=True)
        assert "retrain to refresh" not in caplog.text
        monkeypatch.setattr(runtime_module, "STALE_FEATURES_DAYS", max(before - 1, 0))
        served.reload(force=True)
    # The age the server read: one more day if its clock passed the cut-off's time of
    # day since the test read it.
    said = re.search(rf"history up to {expected[:10]} \((\d+) days ago\)", caplog.text)
    assert said, caplog.text
    assert before <= int(said.group(1)) <= age_days(), (before, said.group(0))


def test_a_serving_process_freezes_its_long_lived_heap(own_registry) -> None:
    """With gc_freeze (what `nextbest serve` sets), full collections skip the model and modules."""
    import gc

    assert gc.get_freeze_count() == 0
    runtime = ServingRuntime.start(own_registry.model_copy(update={"gc_freeze": True}))
    try:
        frozen = gc.get_freeze_count()
        # What a full collection still walks: only what was made since the load.
        assert frozen > 10 * len(gc.get_objects())
        runtime.reload(force=True)
        assert gc.get_freeze_count() > 10 * len(gc.get_objects())
    finally:
        runtime.close()
        gc.unfreeze()
    plain = ServingRuntime.start(own_registry)
    plain.close()
    assert gc.get_freeze_count() == 0


def test_requests_get_503_while_the_log_store_is_too_far_behind(own_registry, keys) -> None:
    import threading

    settings = own_registry.model_copy(update={"log_max_backlog": 1, "log_flush_ms": 1.0})
    runtime = ServingRuntime.start(settings)
    store, gate = runtime.reclog.store, threading.Event()

    class Stalled:  # the store does not answer until the gate opens
        def connect(self):
            gate.wait(timeout=30)
            return store.connect()

    runtime.reclog.store = Stalled()  # type: ignore[assignment]
    with TestClient(create_app(settings, runtime), headers=dict(keys.admin)) as client:
        hcp = str(runtime.recommender.hcp_ids[0])
        assert client.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200
        refused = client.post("/v1/recommendations", json={"hcp_id": hcp})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "waiting to be logged: 1 (at most 1)" in refused.json()["detail"]
        assert 'nextbest_recommendation_log_not_logged_total{reason="refused"}' in (
            client.get("/metrics").text
        )
        # A batch call (in the thread pool) waits for room instead: the store
        # catches up half a second later, and the call is answered.
        threading.Timer(0.5, gate.set).start()
        hcps = [str(h) for h in runtime.recommender.hcp_ids[:3]]
        batch = client.post("/v1/recommendations/batch", json={"hcp_ids": hcps})
        assert batch.status_code == 200 and len(batch.json()["results"]) == 3
        assert runtime.reclog.flush(timeout=10)
        assert client.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200
    runtime.close()
    assert runtime.reclog.written == 5


def _pairs(result: str) -> float:
    """This process's count of scored pairs answered each way by the score cache."""
    value = REGISTRY.get_sample_value("nextbest_score_cache_pairs_total", {"result": result})
    return value or 0.0


def test_a_restarted_worker_warms_its_cache_with_the_logs_newest_hcps(own_registry) -> None:
    from nextbest.service.serving import recommend_one
    from nextbest.storage.repository import recently_asked_hcps

    def ask(runtime: ServingRuntime, hcp: str) -> None:
        recommender = runtime.recommender
        recommend_one(recommender, runtime.engine, runtime.reclog, requester="t", hcp_id=hcp)

    first = ServingRuntime.start(own_registry)
    hcps = [str(h) for h in first.recommender.hcp_ids[:6]]
    for h in hcps:
        ask(first, h)
    first.close()  # flushes the log
    with first.engine.connect() as connection:
        assert recently_asked_hcps(connection, limit=3) == hcps[:-4:-1]  # newest first
    again = ServingRuntime.start(own_registry)
    try:
        assert again.wait_warm(timeout=60)
        assert not again.warming
        cache = again.recommender.cache
        held = {str(again.recommender.hcp_ids[r]) for r in cache.asked()[0].tolist()}
        assert held == set(hcps)
        hits, misses = _pairs("hit"), _pairs("miss")
        ask(again, hcps[0])
        assert _pairs("miss") == misses  # every pair it needed was warm
        assert _pairs("hit") > hits
    finally:
        again.close()
    cold = ServingRuntime.start(own_registry.model_copy(update={"start_warm_s": 0.0}))
    assert cold.wait_warm(timeout=1) and len(cold.recommender.cache) == 0
    cold.close()


def test_readyz_says_while_the_start_up_warming_runs(own_registry, keys) -> None:
    import threading

    runtime = ServingRuntime.start(own_registry)
    assert runtime.wait_warm(timeout=60)
    release = threading.Event()
    runtime._warmer = threading.Thread(target=release.wait, args=(30,))  # a warming under way
    runtime._warmer.start()
    with TestClient(create_app(own_registry, runtime)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["warming"] is True
        release.set()
        assert runtime.wait_warm(timeout=10)
        assert "warming" not in client.get("/readyz").json()
    runtime.close()


def test_the_operations_guide_says_what_each_readyz_field_means() -> None:
    """An operator reads /readyz's fields in docs/operations.md: `warming` was
    answered but not described there (nor whether a load balancer waits for it)."""
    from nextbest.api.schemas import HealthPublic

    docs = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    readyz = docs.split("**`GET /readyz`**", 1)[1].split("\n- ", 1)[0]
    for field in HealthPublic.model_fields:
        if field != "status":
            assert f"`{field}`" in readyz or f'"{field}"' in readyz, field
    assert "load balancer should not wait for it" in readyz
