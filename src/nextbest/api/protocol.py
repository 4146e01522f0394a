"""uvicorn's httptools protocol, with each answer's head and body sent in one write.

uvicorn writes an answer's status line and headers to the socket when the app
sends ``http.response.start``, and its body when the app sends
``http.response.body``: two sends, and on loopback or a LAN two segments for a
client to wake up for, for a single recommendation of a few hundred bytes. Each
send is a system call and, on the same machine, the receiver's wake-up too,
which on a virtual machine costs more than the Python around it. Here what the
protocol writes during one step of the event loop is held and sent at once at
the end of that step (or with the next write, or before a close): the bytes and
their order on the wire are the same, in fewer sends.

``nextbest serve`` runs its workers with this protocol (:data:`PROTOCOL`, for
uvicorn's ``http`` option); httptools comes with ``uvicorn[standard]``.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# A write larger than this is not copied to be joined: what is held is sent first,
# then it (a batch answer of 1 MB would otherwise be copied once more).
JOIN_MAX_BYTES = 64 * 1024

PROTOCOL = f"{__name__}:JoinedWritesHttpProtocol"


class JoinedWrites:
    """An asyncio transport's writes held until the end of the event loop's step and
    sent as one; every other method is the transport's.

    A held write is sent before anything that could overtake it or depend on it:
    a larger write, ``writelines``, ``write_eof`` and ``close``. ``abort`` drops it
    with the transport's own buffer. Writes are copied when held (a caller may reuse
    its buffer once ``write`` returns, as asyncio allows).
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) > JOIN_MAX_BYTES:
            self.flush()
            self._transport.write(data)
        elif self._held is not None:
            self._held += data
        else:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is held now (nothing to a transport already closing, which
        would not send it: the client is gone)."""
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def writelines(self, list_of_data: Any) -> None:
        self.flush()
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`JoinedWrites` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        joined = JoinedWrites(transport, asyncio.get_running_loop())
        super().connection_made(cast(asyncio.Transport, joined))
