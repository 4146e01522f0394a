"""Keep-alive connections recycled every N requests, so the workers share the load;
answers compressed for the clients that accept it.

A keep-alive connection stays with the worker process that accepted it, and the
kernel places each new connection on a worker by a hash of its addresses
(``SO_REUSEPORT``, api/workers.py): a client that opens its pool at once gets a
split like a coin's, 20/12 or worse for 32 connections about one time in five
(bench/README.md), and for as long as the connections live the busier worker's
queue sets the tail latency. Answering the Nth request of a connection with
``Connection: close`` makes the client reconnect, and each new connection is
placed afresh: a bad split lasts N requests, not the life of the pool. One
handshake per N requests is the price.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Connections whose count is kept at most; past it the counts start over (a
# connection then serves up to N more requests before it is recycled).
MAX_TRACKED = 100_000


class ConnectionRecycler:
    """ASGI middleware: ``Connection: close`` on every ``limit``-th request of a connection."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.served: dict[object, int] = {}  # requests so far, by client address and port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope.get("client") is None:
            await self.app(scope, receive, send)
            return
        key = tuple(scope["client"])
        n = self.served.get(key, 0) + 1
        if n < self.limit:
            if len(self.served) >= MAX_TRACKED:
                self.served.clear()
            self.served[key] = n
            await self.app(scope, receive, send)
            return
        self.served.pop(key, None)

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, closing)


class CompressWhenAccepted:
    """ASGI middleware: Starlette's gzip for clients that accept it, and nothing at
    all in the way of the others (its plain path still parses every answer's headers)."""

    def __init__(self, app: ASGIApp, *, minimum_size: int, compresslevel: int) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=compresslevel)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(
            name == b"accept-encoding" and accepts_gzip(value) for name, value in scope["headers"]
        ):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def accepts_gzip(accept_encoding: bytes) -> bool:
    """Whether an Accept-Encoding header admits gzip: named (any case) or ``*``,
    without ``q=0`` (which refuses it)."""
    weights: dict[bytes, float] = {}
    for part in accept_encoding.lower().split(b","):
        coding, *params = (p.strip() for p in part.split(b";"))
        q = next((p[2:] for p in params if p.startswith(b"q=")), b"1")
        try:
            weights[b"gzip" if coding == b"x-gzip" else coding] = float(q)
        except ValueError:
            weights[coding] = 0.0
    return weights.get(b"gzip", weights.get(b"*", 0.0)) > 0
