"""Keep-alive connections are recycled every N requests (the workers then share the load)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from nextbest.api.app import create_app


def _closes(client: TestClient, n: int) -> list[bool]:
    return [
        client.get("/healthz").headers.get("connection", "").lower() == "close" for _ in range(n)
    ]


def test_every_nth_request_of_a_connection_is_answered_with_connection_close(
    api_settings,
) -> None:
    # The test client is one connection (same client address and port) throughout.
    settings = api_settings.model_copy(update={"max_requests_per_connection": 3})
    with TestClient(create_app(settings)) as client:
        assert _closes(client, 7) == [False, False, True, False, False, True, False]


def test_zero_keeps_connections_open(api_settings) -> None:
    settings = api_settings.model_copy(update={"max_requests_per_connection": 0})
    with TestClient(create_app(settings)) as client:
        assert not any(_closes(client, 5))
