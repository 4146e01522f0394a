"""Each answer's head and body go out in one send (nextbest.api.protocol), the
bytes on the wire the same as uvicorn's own protocol sends."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nextbest.api.protocol import JOIN_MAX_BYTES, PROTOCOL, JoinedWrites, JoinedWritesHttpProtocol

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

BIG = b"x" * (JOIN_MAX_BYTES + 1)


async def _app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """A small answer, a large one, and one streamed in parts with a pause between."""
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/stream":
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"second", "more_body": False})
        return
    body = BIG if scope["path"] == "/big" else b'{"hcp_id":"H1","items":[]}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if scope["path"] == "/last":  # as ConnectionRecycler answers a connection's Nth request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Sends:
    """What a connection's protocol handed its socket transport, write by write."""

    def __init__(self) -> None:
        self.writes: list[int] = []

    def recording(self, protocol: type[HttpToolsProtocol]) -> type[HttpToolsProtocol]:
        sends = self

        class Recorded(protocol):  # type: ignore[valid-type, misc]
            def connection_made(self, transport: Any) -> None:
                real_write = transport.write

                def write(data: bytes) -> None:
                    sends.writes.append(len(data))
                    real_write(data)

                transport.write = write
                super().connection_made(transport)

        return Recorded


@contextlib.asynccontextmanager
async def _server(protocol: type[HttpToolsProtocol], log_level: str) -> AsyncIterator[int]:
    """A real uvicorn server of ``_app`` with ``protocol`` while the block runs: its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=port, http=protocol, lifespan="off", log_level=log_level
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await serving


async def _exchange(protocol: type[HttpToolsProtocol], paths: list[str]) -> bytes:
    """The bytes a real uvicorn server with ``protocol`` answers the GETs of ``paths``
    with, on one keep-alive connection, each read until the next can be sent."""
    received = b""
    async with _server(protocol, "warning") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in paths:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if b"transfer-encoding: chunked" in head:
                body = await reader.readuntil(b"0\r\n\r\n")
            else:
                length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
                body = await reader.readexactly(length)
            received += head + body
        writer.close()
    # The date header differs from second to second.
    return re.sub(rb"date: [^\r]*\r\n", b"", received)


PATHS = ["/one", "/big", "/stream", "/two"]


def test_an_answer_is_one_send_where_uvicorn_makes_two() -> None:
    ours, theirs = _Sends(), _Sends()
    asyncio.run(_exchange(ours.recording(JoinedWritesHttpProtocol), ["/one", "/two"]))
    asyncio.run(_exchange(theirs.recording(HttpToolsProtocol), ["/one", "/two"]))
    assert len(theirs.writes) == 4  # head, body; head, body
    assert len(ours.writes) == 2
    assert sum(ours.writes) == sum(theirs.writes)


def test_the_wire_carries_the_same_bytes_as_uvicorns_own_protocol() -> None:
    ours = asyncio.run(_exchange(JoinedWritesHttpProtocol, PATHS))
    theirs = asyncio.run(_exchange(HttpToolsProtocol, PATHS))
    assert ours == theirs
    assert ours.count(b"HTTP/1.1 200 OK") == len(PATHS)
    assert b"first," in ours and b"second" in ours and BIG in ours


async def _raw(protocol: type[HttpToolsProtocol], request: bytes) -> bytes:
    """Everything a real uvicorn server with ``protocol`` sends for ``request``, read
    until it closes the connection."""
    async with _server(protocol, "critical") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        received = await asyncio.wait_for(reader.read(-1), timeout=10)
        writer.close()
    return re.sub(rb"date: [^\r]*\r\n", b"", received)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /last HTTP/1.1\r\nHost: test\r\n\r\n",  # the app's Connection: close
        b"GET /one HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",  # the client's
        b"GET /one HTTP/1.0\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",  # uvicorn's own 400, then its close
    ],
)
def test_an_answer_before_a_close_is_sent_whole(request_bytes: bytes) -> None:
    ours = asyncio.run(_raw(JoinedWritesHttpProtocol, request_bytes))
    theirs = asyncio.run(_raw(HttpToolsProtocol, request_bytes))
    assert ours == theirs
    assert ours.startswith(b"HTTP/1.1 ")
    assert ours.endswith((b"}", b"Invalid HTTP request received."))


def test_a_large_body_is_sent_as_it_is_after_its_head() -> None:
    sends = _Sends()
    asyncio.run(_exchange(sends.recording(JoinedWritesHttpProtocol), ["/big"]))
    # The head alone, then the body as the app gave it (not copied to be joined).
    assert sends.writes[1:] == [len(BIG)]
    assert sends.writes[0] < 1000


def test_a_streamed_part_is_sent_when_the_app_waits_not_held_for_the_next() -> None:
    sends = _Sends()
    asyncio.run(_exchange(sends.recording(JoinedWritesHttpProtocol), ["/stream"]))
    # Head and first part together (one step of the loop), then the pause, then
    # the last part with the chunked encoding's end.
    assert len(sends.writes) == 2


class _Transport(asyncio.Transport):
    """A transport that keeps what is written to it, to follow the wrapper's order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.log.append(("write", bytes(data)))

    def close(self) -> None:
        self.log.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.log.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


def test_what_is_held_goes_before_a_close_and_is_copied_when_held() -> None:
    async def main() -> list[tuple[str, bytes]]:
        transport = _Transport()
        joined = JoinedWrites(transport, asyncio.get_running_loop())
        buffer = bytearray(b"head;")
        joined.write(buffer)
        buffer[:] = b"XXXXX"  # a caller may reuse its buffer once write returns
        joined.write(memoryview(b"body"))
        assert joined.get_write_buffer_size() == len(b"head;body")
        assert transport.log == []
        joined.close()
        await asyncio.sleep(0)  # the end of the step: nothing is sent twice
        return transport.log

    assert asyncio.run(main()) == [("write", b"head;body"), ("close", b"")]


def test_an_abort_drops_what_is_held_and_a_closed_transport_is_not_written() -> None:
    async def main() -> list[tuple[str, bytes]]:
        transport = _Transport()
        joined = JoinedWrites(transport, asyncio.get_running_loop())
        joined.write(b"lost")
        joined.abort()
        transport.closing = False
        joined.write(b"late")
        transport.closing = True  # the client went away meanwhile
        await asyncio.sleep(0)
        return transport.log

    assert asyncio.run(main()) == [("abort", b"")]


def test_nextbest_serve_names_the_protocol_uvicorn_loads() -> None:
    config = uvicorn.Config(_app, http=PROTOCOL)
    config.load()
    assert config.http_protocol_class is JoinedWritesHttpProtocol


@pytest.mark.parametrize("size", [0, 1, JOIN_MAX_BYTES])
def test_writes_up_to_the_limit_are_joined(size: int) -> None:
    async def main() -> list[tuple[str, bytes]]:
        transport = _Transport()
        joined = JoinedWrites(transport, asyncio.get_running_loop())
        joined.write(b"h")
        joined.write(b"b" * size)
        await asyncio.sleep(0)
        return transport.log

    assert asyncio.run(main()) == [("write", b"h" + b"b" * size)]
