"""How a ``/v1`` route reads its JSON body: compressed or not, and refused clearly.

FastAPI reads a body as UTF-8 JSON and answers anything else with a bare 400
("There was an error parsing the body") or a 422 that blames the fields. Here:

- a body larger than its route reads (:func:`body_limit`: 16 MiB for feedback
  batches, 2 MiB for a batch of recommendations, 64 KiB for every other request)
  is refused with 413 (by its Content-Length, before any of it is read);
  ``Content-Encoding: gzip`` (or ``deflate``) bodies are inflated, up to the same
  size (a gzip body of concatenated members, up to
  ``MAX_GZIP_MEMBERS``, member after member); one cut short, or with data after its
  compressed stream, is refused with 400; another encoding is refused with 415,
  naming the ones accepted;
- a body that is not JSON by its ``Content-Type`` is refused with 415, naming the
  type to send; one whose ``charset`` names another than UTF-8 is read in it
  (:func:`body_charset`, :func:`_decoded`: UTF-8 first when the charset is
  ASCII-based and the body valid UTF-8), and one that names no charset a body is
  written in is refused with 415, naming it;
- a body that gives a key twice in one object is read with its keys (each object a
  :class:`RepeatedKeys`), and refused by the request schemas naming the key (in a
  feedback batch, that event alone); a UTF-8 byte order mark before it is ignored;
- a body that is not UTF-8 (or in the charset it names), is nested too deep to
  read, holds an object of more than ``MAX_OBJECT_MEMBERS`` members or a lone
  UTF-16 surrogate escape (``"\\ud800"``: no character, and no answer could quote
  it) is refused as invalid JSON (422 ``json_invalid``), saying where; a number of
  thousands of digits is read (:func:`_json_int`), and refused by its field saying
  the bound it is beyond (:func:`saying_the_bounds`);
- a query parameter sent to a route that declares none (``POST
  /v1/recommendations?k=3``) is refused with 422 at ``["query", name]``: its
  fields are read from the body alone, so it was ignored; and a body sent to a
  route that reads none (``{"force": true}`` to the reload) is refused with 422 at
  ``["body"]``, naming the query parameters to send instead;
- a field the body's model does not take (``"chanel"``), at the top or nested (an
  item of a batch), is refused as pydantic refuses it (422 ``extra_forbidden`` at
  its ``loc``), its message naming the field it is near (``Extra inputs are not
  permitted (did you mean 'channel'?)``), or, near none, the fields taken there
  (:func:`naming_the_field_meant`), as a settings file's unknown key is.

A caller without a valid key is answered 401 before any of its body is read.
Every refusal goes through the app's handlers, which answer a caller without a
valid key with 401 first, as for any other malformed request.
"""

from __future__ import annotations

import codecs
import inspect
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any, cast, get_type_hints

import fastapi.routing
from fastapi import HTTPException, Request, Response, status
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel

from nextbest.api.auth import refused_before_validation
from nextbest.api.deps import check_query
from nextbest.contract.parse import QUOTED_AT_MOST, quoted
from nextbest.yamlfile import unknown_key_hint

# The largest body a route reads, after inflating: a batch of 5,000 feedback events
# at the fields' longest is 4.9 MB in ASCII; written as JSON encoders write text
# outside ASCII (a \u escape of 6 bytes a character, 12 past the BMP: an emoji), a
# batch of long free-text reasons can pass it (up to 26 MB), and is refused with 413
# saying to send smaller batches. Each byte read is parsed on the worker's event
# loop: 16 MiB of JSON arrays took 1.4 s and 360 MB there.
MAX_BODY_BYTES = 16 * 1024 * 1024
# A request that is not a batch (a recommendation, a rep's decision, an admin call)
# holds a dozen fields of at most a few hundred characters: at most 6.3 kB written
# with 12-byte escapes and indented.
SMALL_BODY_BYTES = 64 * 1024
# The routes that take batches, and the most each reads; every other route reads
# SMALL_BODY_BYTES. 1,000 HCP ids of 128 characters past the BMP, each written as
# two \u escapes (12 bytes a character) and indented, are 1.56 MB.
BATCH_BODY_BYTES = {
    "/v1/feedback": MAX_BODY_BYTES,
    "/v1/recommendations/batch": 2 * 1024 * 1024,
}
# How every gzip member starts: data after a member is either another one or garbage.
_GZIP_MAGIC = b"\x1f\x8b"
# Concatenated gzip members are read, as `gzip -d` reads them, up to this many.
MAX_GZIP_MEMBERS = 16
# No request object has more than a dozen fields: an object of many more is no
# request, and each member it should not have was one validation error (16 MiB of
# members, a million errors built before the 422 could be written).
MAX_OBJECT_MEMBERS = 100
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}

# A \uD800-\uDFFF escape: only then can parsed JSON hold a lone surrogate (UTF-8
# text cannot encode one), so the check below runs on the rare body that has one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Where: a high half not followed by a low one, or a low half without a high one.
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


class BodyRefused(HTTPException):
    """A body the route cannot read: 413 or 415, with what to send instead."""


def body_limit(path: str) -> int:
    """The most a route of ``path`` (its template) reads, in bytes, after inflating."""
    return BATCH_BODY_BYTES.get(path, SMALL_BODY_BYTES)


def size_text(n_bytes: int) -> str:
    """``n_bytes`` in the largest binary unit that divides it: '16 MiB', '64 KiB'."""
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size and n_bytes % size == 0:
            return f"{n_bytes // size} {unit}"
    return f"{n_bytes} bytes"


def body_kind(request: Request) -> Any:
    """What the JSON body of ``request``'s route is read as: the type of its body
    field (a model, or a union of models told apart by a tag, as the feedback route's
    one event or batch); None when no route matched or it reads no body. Its
    ``loc`` in a validation error is ``("body", *where within it)``: a route of
    several body parameters reads them as one model of them, each at its name."""
    field = getattr(request.scope.get("route"), "body_field", None)
    return None if field is None else field.field_info.annotation


def naming_the_field_meant(error: dict[str, Any], body: Any) -> dict[str, Any]:
    """``error`` (one of a validation error's, as pydantic gives it), and when it is a
    field of the body that ``body`` (:func:`body_kind`) does not take, with the field
    it is near, or those taken there, added to its message
    (:func:`~nextbest.yamlfile.unknown_key_hint`); its ``type`` and ``loc`` as they
    were, for clients that read them."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") != "extra_forbidden" or body is None or len(loc) < 2:
        return error
    if loc[0] != "body" or not isinstance(error.get("msg"), str):
        return error
    return {**error, "msg": error["msg"] + unknown_key_hint(body, loc[1:])}


# pydantic's refusals of a number no field can hold (one of hundreds of digits, read
# as infinite; a text of thousands of digits), which said nothing of the field's bounds.
_BEYOND_ANY_BOUND = frozenset({"finite_number", "int_parsing_size"})


# A bound as pydantic names it in a field's metadata, its error type and its words.
_UPPER_BOUNDS = (
    ("le", "less_than_equal", "less than or equal to"),
    ("lt", "less_than", "less than"),
)
_LOWER_BOUNDS = (
    ("ge", "greater_than_equal", "greater than or equal to"),
    ("gt", "greater_than", "greater than"),
)


def saying_the_bounds(error: dict[str, Any], body: Any) -> dict[str, Any]:
    """``error`` (one of a validation error's), and when it refuses a number sent in a
    field of the body's model (``body``: :func:`body_kind`) as too large to hold
    (``1e400``, 400 digits with a decimal point, a text of 5,000 digits), the bound
    it is beyond, as pydantic says it of a number it can hold (``less_than_equal``,
    ``Input should be less than or equal to 50``), the sent number too large to hold
    said after it. Any other error as it was."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") not in _BEYOND_ANY_BOUND or len(loc) != 2 or loc[0] != "body":
        return error
    if not (isinstance(body, type) and issubclass(body, BaseModel)):
        return error
    field = body.model_fields.get(str(loc[1]))
    sent = error.get("input")
    if isinstance(sent, float) and math.isinf(sent):
        negative = sent < 0
    elif isinstance(sent, str) and re.fullmatch(r"\s*[+-]?\d+\s*", sent):
        negative = sent.strip().startswith("-")
    else:
        return error
    bounds = {
        name: getattr(rule, name)
        for rule in (field.metadata if field is not None else ())
        for name in ("ge", "gt", "le", "lt")
        if getattr(rule, name, None) is not None
    }
    kinds = _LOWER_BOUNDS if negative else _UPPER_BOUNDS
    for name, kind, words in kinds:
        if name in bounds:
            return {
                "type": kind,
                "loc": loc,
                "msg": f"Input should be {words} {bounds[name]} (the number sent is too "
                "large to hold)",
                "ctx": {name: bounds[name]},
            }
    return error


def _too_large(limit: int, path: str, inflated: bool) -> BodyRefused:
    what = "inflates to more than" if inflated else "is larger than"
    advice = (
        "send smaller batches"
        if path in BATCH_BODY_BYTES
        else "one request of this route is a few kilobytes at most"
    )
    return BodyRefused(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the body {what} {limit} bytes ({size_text(limit)}), the most {path} reads: {advice}",
    )


def _inflate(body: bytes, encoding: str, limit: int, path: str) -> bytes:
    """``body`` inflated: every member of a gzip body, one after the other (as
    ``gzip -d`` reads concatenated members), the one stream of a deflate body."""
    out = bytearray()
    rest, members = body, 0
    while True:
        inflater = zlib.decompressobj(ENCODINGS[encoding])
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as e:
            raise BodyRefused(
                status.HTTP_400_BAD_REQUEST, f"the body is not valid {encoding} data: {e}"
            ) from e
        if len(out) > limit:
            raise _too_large(limit, path, inflated=True)
        if not inflater.eof:
            # Cut short (a proxy's limit, a client's dropped connection): what inflated
            # is a prefix, read as JSON it was a puzzling "Unterminated string", and a
            # gzip body missing only its trailer was taken without its checksum verified.
            raise BodyRefused(
                status.HTTP_400_BAD_REQUEST,
                f"the body is not complete {encoding} data: it ends before its compressed "
                "stream does (cut short on the way?); send it again",
            )
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        members += 1
        if encoding == "deflate" or not rest.startswith(_GZIP_MAGIC):
            # Was silently dropped: whatever it was, the body read was not all that was sent.
            raise BodyRefused(
                status.HTTP_400_BAD_REQUEST,
                f"the body has {len(rest)} bytes after the end of its {encoding} data that "
                f"are no {encoding} data: send the compressed body alone",
            )
        if members >= MAX_GZIP_MEMBERS:
            # Each member's rest is copied anew: a body of thousands of tiny members
            # would hold the worker for the square of its size.
            raise BodyRefused(
                status.HTTP_400_BAD_REQUEST,
                f"the body holds more than {MAX_GZIP_MEMBERS} gzip members: compress it as one",
            )


# Python codecs that are no charset a body is written in: they read escapes (a JSON
# body's own \\u escapes among them), or domain names.
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "utf-7", "undefined"}
)
# Printable ASCII: a charset that reads it as ASCII reads JSON's syntax as ASCII.
_PRINTABLE_ASCII = bytes(range(32, 127))


def body_charset(content_type: str | None) -> tuple[str, bool]:
    """The codec a JSON body of ``content_type`` is read with, as Python names it
    (``'utf-8'`` when the type names no charset), and whether it reads ASCII as
    ASCII (Latin-1, Windows-1252: not UTF-16). A charset Python does not know, or
    one that is no charset (``unicode_escape``), is refused with 415 naming it."""
    if content_type is None or content_type == "application/json":
        return "utf-8", True
    message = Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    if not isinstance(charset, str) or not charset.strip():
        return "utf-8", True
    try:
        info = codecs.lookup(charset.strip())
    except LookupError:
        info = None
    if info is None or not info._is_text_encoding or info.name in _NOT_CHARSETS:
        raise BodyRefused(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"the charset {quoted(charset, at_most=QUOTED_AT_MOST)} of the Content-Type "
            "is not one the body can be read in: send the body as UTF-8, with "
            "'Content-Type: application/json' (or charset=utf-8)",
        )
    try:
        ascii_alike = _PRINTABLE_ASCII.decode(info.name) == _PRINTABLE_ASCII.decode("ascii")
    except UnicodeError:
        ascii_alike = False
    return info.name, ascii_alike


def _is_json(content_type: str) -> bool:
    if content_type == "application/json":  # nearly every request: no parsing
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JSONBodyRequest(Request):
    """A request whose body is inflated and whose JSON is checked as described above;
    ``path`` is its route's template, and ``limit`` the most of a body it reads;
    ``charset`` is what its Content-Type names (:func:`body_charset`), once read."""

    charset: tuple[str, bool] = ("utf-8", True)

    def __init__(self, scope: Any, receive: Any, *, path: str, limit: int) -> None:
        super().__init__(scope, receive)
        self.route_path = path
        self.max_body_bytes = limit

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            # A caller without a valid key is refused before a byte of its body is
            # read: inflating and parsing 16 MiB (from a 30 kB gzip) held the worker
            # for seconds, a stall anyone could cause without a key.
            if (refused := refused_before_validation(self)) is not None:
                raise refused
            body = await self._read_at_most(self.max_body_bytes)
            encoding = self.headers.get("content-encoding", "identity").strip().lower()
            if body and encoding not in ("", "identity"):
                if encoding not in ENCODINGS:
                    raise BodyRefused(
                        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                        f"Content-Encoding {encoding!r} is not supported: send the body "
                        "uncompressed, or as gzip or deflate",
                    )
                body = _inflate(body, encoding, self.max_body_bytes, self.route_path)
            content_type = self.headers.get("content-type")
            if body and (content_type is None or not _is_json(content_type)):
                sent = "none" if content_type is None else repr(content_type)
                raise BodyRefused(
                    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                    "the body must be JSON, sent with 'Content-Type: application/json' "
                    f"(got {sent})",
                )
            self.charset = body_charset(content_type) if body else ("utf-8", True)
            self._body = body
        return self._body

    async def _read_at_most(self, limit: int) -> bytes:
        """The body as sent, refused (413) past ``limit`` bytes: by its Content-Length
        before reading any of it, else (chunked) as soon as it passes the limit."""
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit, self.route_path, inflated=False)
        chunks, size = [], 0
        async for chunk in self.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, self.route_path, inflated=False)
            chunks.append(chunk)
        return b"".join(chunks)

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            text = _decoded(body, *self.charset)
            # A byte order mark, as Windows tools write before UTF-8 text: RFC 8259 lets
            # a parser ignore it, and Python's refusal spoke of its own codecs.
            text = text.removeprefix("\ufeff")
            try:
                parsed = _loaded(text)
            except json.JSONDecodeError as e:
                if e.msg != "Extra data":
                    raise
                # Python's "Extra data" did not say what: a second value, most often the
                # next line of newline-delimited JSON (an e-mail platform's export).
                several = (
                    '; several events go in one, {"events": [...]}'
                    if self.route_path == "/v1/feedback"
                    else " per request"
                )
                raise json.JSONDecodeError(
                    "the body goes on after its JSON value ends (a second value, as "
                    f"newline-delimited JSON has?): send one JSON object{several}",
                    text,
                    e.pos,
                ) from None
            except _TooManyMembersError as e:
                raise json.JSONDecodeError(str(e), text, 0) from None
            except RecursionError as e:
                raise json.JSONDecodeError("nested too deeply to read", text, 0) from e
            if _SURROGATE_ESCAPE.search(body if self.charset[1] else text.encode()):
                _refuse_lone_surrogates(parsed, text)
            self._json = parsed
        return self._json


def _decoded(body: bytes, charset: str, ascii_alike: bool) -> str:
    """``body`` as text: UTF-8, JSON's own encoding, when it is valid UTF-8 and its
    ``charset`` (:func:`body_charset`) reads ASCII as ASCII (a body of ids reads the
    same in either, and a client library that labels its UTF-8 as Latin-1 by
    default loses no accent), else in ``charset`` (a Latin-1 body's ``café``, byte
    0xe9: refused before as no UTF-8; a UTF-16 body); refused as invalid JSON, saying
    the byte, when it is not text in that charset either."""
    if ascii_alike and charset != "utf-8":
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    try:
        return body.decode(charset)
    except UnicodeDecodeError as e:
        name = "UTF-8" if charset == "utf-8" else charset
        raise json.JSONDecodeError(
            f"the body is not {name} text (byte 0x{body[e.start]:02x})",
            body.decode("utf-8", "replace"),
            e.start,
        ) from e


def _loaded(text: str) -> Any:
    """``text`` parsed as JSON, each object by :func:`_json_object`. An integer of more
    digits than Python converts is read by :func:`_json_int`, on a second pass: a
    hook on every integer cost each body a Python call per number (3 to 5 ms more a
    5,000-event batch)."""
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError:
        raise
    except _TooManyMembersError:
        raise
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return json.loads(text, object_pairs_hook=_json_object, parse_int=_json_int)


def _json_int(digits: str) -> int | float:
    """An integer of a JSON body as Python reads it; one of more digits than Python
    converts (4,300) as the float it rounds to, infinite: refused by the field it was
    sent in, saying its bounds (:func:`saying_the_bounds`), where the body was
    refused whole, "Exceeds the limit (4300 digits) for integer string conversion"."""
    try:
        return int(digits)
    except ValueError:
        return float(digits)


class _TooManyMembersError(ValueError):
    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        first = ", ".join(json.dumps(key[:40]) for key, _ in pairs[:3])
        super().__init__(
            f"an object has {len(pairs):,} members ({first}, ...): no request of this API "
            f"has more than {MAX_OBJECT_MEMBERS} fields"
        )


class RepeatedKeys(dict[str, Any]):
    """A JSON object that gives a key more than once, as Python's parser reads it (the
    last value kept), with the keys given more than once (``repeated``, each with how
    many times). The request schemas refuse it naming them (api/schemas.py): which of
    the values was meant cannot be told, and a second ``"events"`` array silently
    dropped the first one's events."""

    repeated: dict[str, int]


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object as the body's parser builds it: refused past
    ``MAX_OBJECT_MEMBERS`` members, a :class:`RepeatedKeys` when a key comes twice."""
    if len(pairs) > MAX_OBJECT_MEMBERS:
        raise _TooManyMembersError(pairs)
    built = dict(pairs)
    if len(built) == len(pairs):
        return built
    repeated = RepeatedKeys(built)
    counted = Counter(key for key, _ in pairs)
    repeated.repeated = {key: n for key, n in counted.items() if n > 1}
    return repeated


def _refuse_lone_surrogates(parsed: Any, text: str) -> None:
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        match = _LONE_SURROGATE.search(text)
        position = match.start() if match else 0
        raise json.JSONDecodeError(
            "a \\u escape names a lone UTF-16 surrogate, which is no character", text, position
        ) from None


class JSONBodyRoute(APIRoute):
    """An API route that reads its body through :class:`JSONBodyRequest`.

    A route whose endpoint takes nothing but the request and one body model, and
    returns its own :class:`Response`, has its valid bodies handed to it directly
    (:func:`_direct_body`): FastAPI's generic handler (dependency solving, the
    content-type parse, its per-request bookkeeping) cost about a tenth of an
    uncached recommendation's CPU. A body refused as it is read (401, 413, 415) is
    refused as in the generic handler; one that is missing, not JSON or not valid
    for the model takes the generic handler, so its 422 is FastAPI's, word for word.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        path, limit = self.path, body_limit(self.path)  # once per route, not per request
        direct = _direct_body(self)
        query = _query_names(self.dependant)
        reads_body = self.body_field is not None

        async def read_body_as_json(request: Request) -> Response:
            request = JSONBodyRequest(request.scope, request.receive, path=path, limit=limit)
            if not query and request.scope["query_string"]:
                # A caller without a valid key learns nothing of what a route expects.
                if (refused := refused_before_validation(request)) is not None:
                    raise refused
                check_query(request.query_params, ())
            if not reads_body and not _names_nothing(await request.body()):
                raise RequestValidationError(
                    [
                        {
                            "type": "value_error",
                            "loc": ("body",),
                            "msg": "this route reads no body: send its parameters in the "
                            f"query string ({', '.join(query) or 'it takes none'})",
                        }
                    ]
                )
            if direct is not None:
                endpoint, request_name, body_name, model = direct
                # A body refused as it is read (401, 413, 415) raises here as it
                # would in the generic handler.
                try:
                    body = model.model_validate(await request.json())
                except ValueError:
                    # Not JSON or not valid for the model (pydantic's ValidationError
                    # is a ValueError): the generic handler reads the body kept by the
                    # request and answers as it always does.
                    pass
                else:
                    answer = await endpoint(**{request_name: request, body_name: body})
                    return cast(Response, answer)
            return await handler(request)

        return read_body_as_json


# A body a client library sends by default (none, an empty object, JSON's null) asks
# nothing of a route that reads none.
_NAMES_NOTHING = (b"", b"{}", b"null")
_JSON_SPACE = re.compile(rb"[ \t\r\n]+")


def _names_nothing(body: bytes) -> bool:
    """Whether ``body`` is one of :data:`_NAMES_NOTHING`, JSON's white space aside: an
    empty object as a pretty printer writes it, ``{ }`` (Jackson's) or ``{\\n}``."""
    return len(body) <= 64 and _JSON_SPACE.sub(b"", body) in _NAMES_NOTHING


def _query_names(dependant: Dependant) -> list[str]:
    """The query parameters ``dependant`` and its dependencies read, by name."""
    own = [param.alias for param in dependant.query_params]
    return own + [name for sub in dependant.dependencies for name in _query_names(sub)]


def _direct_body(
    route: APIRoute,
) -> tuple[Callable[..., Any], str, str, type[BaseModel]] | None:
    """(endpoint, its request parameter, its body parameter, the body's model) when
    the endpoint of ``route``, as the app includes it, takes only those and is a
    coroutine; else None. Any dependency (its own, its router's, an inclusion's), a
    path, query, header or cookie parameter, or a plain ``def`` endpoint keeps
    FastAPI's handler, which is the one that runs them."""
    effective = getattr(fastapi.routing, "_effective_route_context_var", None)
    context = effective.get() if effective is not None else None
    # FastAPI 0.165+ builds an included route's handler with the inclusion's
    # dependencies in a context object; older versions copy the route with them.
    dependant = getattr(context, "dependant", None) or route.dependant
    if (
        dependant.call is not route.endpoint
        or not inspect.iscoroutinefunction(route.endpoint)
        or dependant.dependencies
        or dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or len(dependant.body_params) != 1
        or dependant.request_param_name is None
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or len(inspect.signature(route.endpoint).parameters) != 2
        or not _answers_itself(route.endpoint)
    ):
        return None
    field = dependant.body_params[0]
    model = field.field_info.annotation
    embedded = getattr(field.field_info, "embed", False)
    if embedded or not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    return route.endpoint, dependant.request_param_name, field.name, model


def _answers_itself(endpoint: Callable[..., Any]) -> bool:
    """Whether ``endpoint`` is declared to return a :class:`Response` (which FastAPI
    sends as it is, with no response model applied)."""
    try:
        returned = get_type_hints(endpoint).get("return")
    except (NameError, TypeError):
        return False
    return isinstance(returned, type) and issubclass(returned, Response)
