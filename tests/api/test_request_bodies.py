"""How the /v1 routes read a body: compressed, of another type, unreadable or too large."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from nextbest.api.bodies import MAX_BODY_BYTES, SMALL_BODY_BYTES

JSON = {"Content-Type": "application/json"}


def _hcp(client: TestClient) -> str:
    return str(client.app.state.runtime.recommender.hcp_ids[0])


def test_a_gzip_or_deflate_body_is_read(client: TestClient) -> None:
    hcp = _hcp(client)
    body = json.dumps({"hcp_id": hcp, "k": 2}).encode()
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        response = client.post(
            "/v1/recommendations",
            content=packed,
            headers={**JSON, "Content-Encoding": encoding},
        )
        assert response.status_code == 200, (encoding, response.text)
        assert response.json()["hcp_id"] == hcp
    events = [
        {"event_id": f"gz-{i}", "event_type": "opened", "hcp_id": hcp, "channel": "email"}
        for i in range(3)
    ]
    response = client.post(
        "/v1/feedback",
        content=gzip.compress(json.dumps({"events": events}).encode()),
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 3


def test_a_gzip_body_of_concatenated_members_is_read_whole(client: TestClient) -> None:
    """As `gzip -d` reads them (`cat a.gz b.gz`): no member is dropped."""
    hcp = _hcp(client)
    events = [
        {"event_id": f"gzm-{i}", "event_type": "opened", "hcp_id": hcp, "channel": "email"}
        for i in range(2)
    ]
    text = json.dumps({"events": events}).encode()
    middle = len(text) // 2
    response = client.post(
        "/v1/feedback",
        content=gzip.compress(text[:middle]) + gzip.compress(text[middle:]),
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2


_BODY = json.dumps({"hcp_id": "H000001", "k": 3, "channel": "email"}).encode()
# mtime 0: the same bytes in every test worker (xdist compares the collected ids).
_GZIP, _DEFLATE = gzip.compress(_BODY, mtime=0), zlib.compress(_BODY)


@pytest.mark.parametrize(
    ("headers", "content", "status", "says"),
    [
        ({**JSON, "Content-Encoding": "br"}, b"\x00\x01", 415, "'br' is not supported"),
        ({**JSON, "Content-Encoding": "gzip"}, b"not gzip at all", 400, "not valid gzip"),
        # Cut short inside the data, and without only its trailer (checksum and size).
        pytest.param(
            {**JSON, "Content-Encoding": "gzip"},
            _GZIP[:-20],
            400,
            "not complete gzip data",
            id="gzip-cut-in-its-data",
        ),
        pytest.param(
            {**JSON, "Content-Encoding": "gzip"},
            _GZIP[:-8],
            400,
            "not complete gzip data",
            id="gzip-without-its-trailer",
        ),
        pytest.param(
            {**JSON, "Content-Encoding": "deflate"},
            _DEFLATE[:-4],
            400,
            "not complete deflate",
            id="deflate-without-its-checksum",
        ),
        pytest.param(
            {**JSON, "Content-Encoding": "gzip"},
            _GZIP + b"TRAILING-GARBAGE",
            400,
            "has 16 bytes after the end of its gzip data that are no gzip data",
            id="gzip-with-data-after-it",
        ),
        pytest.param(
            {**JSON, "Content-Encoding": "deflate"},
            _DEFLATE + _DEFLATE,
            400,
            f"has {len(_DEFLATE)} bytes after the end of its deflate data",
            id="deflate-with-a-second-stream",
        ),
        pytest.param(
            {**JSON, "Content-Encoding": "gzip"},
            _GZIP + gzip.compress(b"", mtime=0)[:-4],
            400,
            "not complete gzip data",
            id="gzip-second-member-cut-short",
        ),
        pytest.param(
            {**JSON, "Content-Encoding": "gzip"},
            _GZIP + gzip.compress(b"", mtime=0) * 16,
            400,
            "more than 16 gzip members: compress it as one",
            id="gzip-of-too-many-members",
        ),
        ({"Content-Type": "text/plain"}, b'{"hcp_id": "H1"}', 415, "'text/plain'"),
        ({}, b'{"hcp_id": "H1"}', 415, "Content-Type: application/json' (got none)"),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"hcp_id=H1",
            415,
            "application/x-www-form-urlencoded",
        ),
    ],
)
def test_a_body_that_cannot_be_read_is_refused_saying_what_to_send(
    client: TestClient, headers: dict[str, str], content: bytes, status: int, says: str
) -> None:
    response = client.post("/v1/recommendations", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"hcp_id": "M\xfcller"}', "not UTF-8 text (byte 0xfc)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"hcp_id": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"hcp_id": "ok \\ud83d\\ude00", "k": 1, "channel": "\\udc00"}', "lone UTF-16"),
        (b'{"hcp_id": "H1",}', "Expecting property name enclosed in double quotes"),
        pytest.param(
            # Python's words were "Extra data", which did not say what.
            b'{"event_id": "a", "event_type": "opened", "hcp_id": "H1"}\n'
            b'{"event_id": "b", "event_type": "opened", "hcp_id": "H1"}\n',
            "the body goes on after its JSON value ends (a second value, as newline-delimited "
            'JSON has?): send one JSON object; several events go in one, {"events": [...]}',
            id="newline-delimited-json",
        ),
        pytest.param(
            json.dumps({"hcp_id": "H1", **{f"x{i}": 0 for i in range(200_000)}}).encode(),
            'an object has 200,001 members ("hcp_id", "x0", "x1", ...): no request of this '
            "API has more than 100 fields",
            id="an-object-of-200k-members",
        ),
    ],
)
def test_unreadable_json_is_a_422_that_says_why_and_where(
    client: TestClient, content: bytes, says: str
) -> None:
    # The feedback route: it reads 16 MiB, the others too little for the largest cases.
    response = client.post("/v1/feedback", content=content, headers=JSON)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert says in error["msg"]
    assert "input" not in error  # FastAPI's {} read as if an empty object had been sent
    if b"\\udc00" in content:  # the lone half, not the pair before it
        assert error["loc"] == ["body", content.index(b"\\udc00")]
    if b"}\n{" in content:  # where the second value starts
        assert error["loc"] == ["body", content.index(b"}\n{") + 2]


def test_an_event_of_many_members_in_a_batch_is_one_short_refusal(client: TestClient) -> None:
    # Each member an event should not have was a problem of its own in the answer:
    # 3.5 MB of them came back as 15 MB of "Extra inputs are not permitted".
    extra = {f"x{i}": 0 for i in range(101)}
    events = [
        {"event_id": f"m-{i}", "event_type": "opened", "hcp_id": "H1", **extra} for i in range(2000)
    ]
    response = client.post("/v1/feedback", json={"events": events})
    assert response.status_code == 422, response.text[:500]
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid" and "members" in error["msg"]
    assert len(response.content) < 1000
    at_most = {"event_id": "m-100", "event_type": "opened", "hcp_id": _hcp(client)}
    at_most |= {f"x{i}": 0 for i in range(100 - len(at_most))}
    response = client.post("/v1/feedback", json={"events": [at_most]})
    assert response.status_code == 422  # read, and refused for its fields
    assert "Extra inputs are not permitted" in response.json()["rejected"][0]["message"]


def test_a_pair_of_surrogate_escapes_is_a_character(client: TestClient) -> None:
    response = client.post(
        "/v1/recommendations", content=b'{"hcp_id": "\\ud83d\\ude00"}', headers=JSON
    )
    assert response.status_code == 404, response.text
    assert "\U0001f600" in response.json()["detail"]


def test_a_batch_with_a_lone_surrogate_stores_nothing_and_says_so(client: TestClient) -> None:
    # Was: the valid event stored, then a 500 writing the answer, on every retry.
    hcp = _hcp(client)
    fine = json.dumps({"event_id": "fine", "event_type": "opted_out", "hcp_id": hcp})
    bad = fine.replace('"fine"', '"bad\\ud800"')
    body = f'{{"events": [{fine}, {bad}]}}'
    response = client.post("/v1/feedback", content=body.encode(), headers=JSON)
    assert response.status_code == 422, response.text
    again = client.post(
        "/v1/feedback",
        json={"events": [{"event_id": "fine", "event_type": "opted_out", "hcp_id": hcp}]},
    )
    assert again.json()["accepted"] == 1  # not a duplicate: nothing was stored


def test_a_body_over_the_limit_is_413_and_so_is_one_that_inflates_over_it(
    client: TestClient,
) -> None:
    big = b'{"hcp_id": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = client.post("/v1/recommendations", content=big, headers=JSON)
    assert response.status_code == 413
    bomb = gzip.compress(big)
    assert len(bomb) < MAX_BODY_BYTES // 100
    response = client.post(
        "/v1/recommendations", content=bomb, headers={**JSON, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "inflates to more than" in response.json()["detail"]


def test_a_refused_body_without_a_key_is_401_first(client: TestClient) -> None:
    client.headers.clear()
    for headers in ({"Content-Type": "text/plain"}, {**JSON, "Content-Encoding": "br"}):
        response = client.post("/v1/recommendations", content=b"{}", headers=headers)
        assert response.status_code == 401, response.text
    big = b'{"hcp_id": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = client.post("/v1/feedback", content=big, headers=JSON)
    assert response.status_code == 401, response.text


def test_a_chunked_body_over_the_limit_is_413_in_json(client: TestClient) -> None:
    def chunks():
        yield b'{"hcp_id": "'
        for _ in range(MAX_BODY_BYTES // 2**20 + 1):
            yield b"x" * 2**20
        yield b'"}'

    response = client.post("/v1/feedback", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "the body is larger than 16777216 bytes (16 MiB), the most /v1/feedback reads: "
        "send smaller batches"
    )


def test_a_route_that_takes_no_batch_reads_64_kib_and_the_batch_routes_their_largest_batch(
    client: TestClient,
) -> None:
    # JSON arrays parse on the worker's event loop: 16 MiB of them held it 1.4 s.
    hcp = _hcp(client)
    padded = json.dumps({"hcp_id": hcp, "k": 1}).encode()[:-1] + b" " * SMALL_BODY_BYTES + b"}"
    for path in ("/v1/recommendations", "/v1/reps/R1/feedback"):
        response = client.post(path, content=padded, headers=JSON)
        assert response.status_code == 413, (path, response.text)
        assert response.json()["detail"] == (
            f"the body is larger than 65536 bytes (64 KiB), the most "
            f"{path.replace('R1', '{rep_id}')} reads: one request of this route is a few "
            "kilobytes at most"
        )
    response = client.post(
        "/v1/recommendations",
        content=gzip.compress(padded),
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("the body inflates to more than 65536 bytes")
    # A million-item array (2 MB that gzip makes 2 kB): refused unparsed, in a short answer.
    million = b'{"hcp_id": "H000001", "x": [' + b",".join([b"0"] * 1_000_000) + b"]}"
    response = client.post(
        "/v1/recommendations",
        content=gzip.compress(million),
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413 and len(response.content) < 200
    # The largest batch of recommendations: 1,000 ids of 128 characters past the BMP,
    # each written as two \\u escapes and indented, is read (its ids said unknown).
    body = json.dumps({"hcp_ids": ["\U0001f600" * 128] * 1000, "k": 1}, indent=8).encode()
    assert len(body) > 1_500_000
    response = client.post("/v1/recommendations/batch", content=body, headers=JSON)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["unknown_hcp_ids"] == ["\U0001f600" * 128]
    # JSON the single route cannot read is still said so (422), as on every route.
    bad = client.post("/v1/recommendations", content=b'{"hcp_id": "H1",}', headers=JSON)
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "json_invalid"
    # A feedback batch of a few hundred kilobytes is read and stored.
    events = [
        {"event_id": f"big-{i}", "event_type": "opened", "hcp_id": hcp, "channel": "email"}
        for i in range(2000)
    ]
    body = json.dumps({"events": events}, indent=8).encode()
    assert len(body) > SMALL_BODY_BYTES
    response = client.post("/v1/feedback", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2000


_HUGE = "1" * 5000


@pytest.mark.parametrize(
    ("path", "fields", "loc", "says"),
    [
        # Was the whole body refused: "a number too long to read: Exceeds the limit
        # (4300 digits) for integer string conversion: ... use sys.set_int_max_str_digits()".
        ("/v1/recommendations", f'"k": {_HUGE}', ["body", "k"],
         "Input should be less than or equal to 50 (the number sent is too large to hold)"),
        ("/v1/recommendations/batch", f'"k": -{_HUGE}', ["body", "k"],
         "Input should be greater than or equal to 1 (the number sent is too large to hold)"),
        # Was "Input should be a finite number".
        ("/v1/recommendations", '"k": 1e400', ["body", "k"],
         "Input should be less than or equal to 50 (the number sent is too large to hold)"),
        # Was "Unable to parse input string as an integer, exceeded maximum size".
        ("/v1/recommendations", f'"k": "{_HUGE}"', ["body", "k"],
         "Input should be less than or equal to 50 (the number sent is too large to hold)"),
        # Was "Input should be a valid number".
        ("/v1/feedback", f'"event_type": "outcome", "value": {"9" * 400}',
         ["body", "event", "value"],
         "a number of 400 digits is beyond the limit of 1,000,000,000 either way"),
        # Was "value must be a finite number, got inf".
        ("/v1/feedback", f'"event_type": "outcome", "value": -{"9" * 400}.5',
         ["body", "event", "value"],
         "a negative number too large to hold is beyond the limit of 1,000,000,000 either way"),
        # Was "Input should be a valid datetime".
        ("/v1/feedback", f'"event_type": "opened", "occurred_at": {"9" * 400}',
         ["body", "event", "occurred_at"],
         "a number of 400 digits, read as seconds since 1970, is past the year 9999: send an "
         "ISO 8601 time, as 2026-11-30 or 2026-11-30T08:00:00+00:00"),
    ],
    ids=["k-5000-digits", "k-negative", "k-1e400", "k-text", "value-400", "value-float",
         "occurred-at"],
)  # fmt: skip
def test_a_number_too_large_to_hold_is_refused_naming_its_field_and_bounds(
    client: TestClient, path: str, fields: str, loc: list[str], says: str
) -> None:
    hcp = _hcp(client)
    who = f'"hcp_ids": ["{hcp}"]' if path.endswith("batch") else f'"hcp_id": "{hcp}"'
    if path == "/v1/feedback":
        who += ', "event_id": "huge-1"'
    response = client.post(path, content=f"{{{who}, {fields}}}".encode(), headers=JSON)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc, error
    assert error["msg"] == says, error
    assert "input" not in error  # none to echo: it is no number JSON can write back


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (b"gzip", True),
        (b"br, GZIP", True),
        (b"gzip;q=0", False),
        (b"gzip; q=0.0, identity", False),
        (b"*", True),
        (b"*, gzip;q=0", False),
        (b"identity", False),
        (b"x-gzip;q=0.5", True),
    ],
)
def test_accept_encoding_is_read_as_http_says(header: bytes, accepted: bool) -> None:
    from nextbest.api.connections import accepts_gzip

    assert accepts_gzip(header) is accepted


def test_the_operations_routes_answer_head(client: TestClient) -> None:
    """Monitoring probes use HEAD: /metrics answered it with 405, though GET worked."""
    for path in ("/healthz", "/readyz", "/metrics"):
        response = client.head(path)
        assert response.status_code == 200, path
        assert response.content == b""
        assert response.headers["content-type"] == client.get(path).headers["content-type"]


def test_the_schema_declares_the_body_refusals_and_the_limits(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/recommendations", "/v1/recommendations/batch", "/v1/feedback"):
        assert {"400", "413", "415"} <= set(spec["paths"][path]["post"]["responses"]), path
    limits = {
        path: spec["paths"][path]["post"]["responses"]["413"]["description"]
        for path in ("/v1/recommendations", "/v1/recommendations/batch", "/v1/feedback")
    }
    assert limits == {
        "/v1/recommendations": "The body (inflated) is larger than 64 KiB, the most this route "
        "reads.",
        "/v1/recommendations/batch": "The body (inflated) is larger than 2 MiB, the most this "
        "route reads.",
        "/v1/feedback": "The body (inflated) is larger than 16 MiB, the most this route reads.",
    }
    assert "413" not in spec["paths"]["/v1/reps/{rep_id}/suggestions"]["get"]["responses"]
    schemas = spec["components"]["schemas"]
    assert schemas["RecommendationBatchCreate"]["properties"]["hcp_ids"]["maxItems"] == 1000
    assert schemas["FeedbackEventCreate"]["properties"]["recommendation_id"]["minLength"] == 1
    (capacity,) = [
        p
        for p in spec["paths"]["/v1/reps/{rep_id}/suggestions"]["get"]["parameters"]
        if p["name"] == "capacity"
    ]
    assert capacity["schema"]["minimum"] == 1
    rep = schemas["RepFeedbackCreate"]["properties"]
    assert rep["event_id"]["minLength"] == 1
    # A blank reason is taken as none (blank_is_no_reason): not declared non-empty.
    assert "minLength" not in rep["reason"]
    assert "minLength" not in schemas["FeedbackEventCreate"]["properties"]["reason"]
    assert "503" in spec["paths"]["/readyz"]["head"]["responses"]


def test_large_answers_are_compressed_for_clients_that_accept_gzip(client: TestClient) -> None:
    hcps = [str(h) for h in client.app.state.runtime.recommender.hcp_ids[:200]]
    body = {"hcp_ids": hcps, "k": 3}
    packed = client.post(
        "/v1/recommendations/batch", json=body, headers={"Accept-Encoding": "gzip"}
    )
    plain = client.post(
        "/v1/recommendations/batch", json=body, headers={"Accept-Encoding": "identity"}
    )
    assert packed.status_code == plain.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert int(packed.headers["content-length"]) < len(plain.content) / 3
    assert [r["hcp_id"] for r in packed.json()["results"]] == hcps
    small = client.post(
        "/v1/recommendations", json={"hcp_id": hcps[0], "k": 1}, headers={"Accept-Encoding": "gzip"}
    )
    assert "content-encoding" not in small.headers  # a packet or two: not worth it


@pytest.mark.parametrize(
    ("url", "content", "loc"),
    [
        (
            "/v1/recommendations",
            b'{"hcp_id": "H000001", "k": 1, "hcp_id": "H000002"}',
            ["body", "hcp_id"],
        ),
        (
            "/v1/recommendations/batch",
            b'{"hcp_ids": ["H000001"], "hcp_ids": ["H000002"]}',
            ["body", "hcp_ids"],
        ),
        (
            "/v1/feedback",
            b'{"event_id": "dup-1", "event_type": "opened", "hcp_id": "H000001", '
            b'"event_type": "clicked"}',
            ["body", "event", "event_type"],
        ),
        (
            # The second array's events were stored, the first's dropped without a word.
            "/v1/feedback",
            b'{"events": [{"event_id": "dup-2", "event_type": "opened", "hcp_id": "H000001"}], '
            b'"events": [{"event_id": "dup-3", "event_type": "opened", "hcp_id": "H000001"}]}',
            ["body", "batch", "events"],
        ),
        (
            "/v1/reps/rep-1/feedback",
            b'{"recommendation_id": "r", "hcp_id": "H000001", "action_id": "A001", '
            b'"decision": "accept", "decision": "dismiss", "reason": "other"}',
            ["body", "decision"],
        ),
    ],
    ids=["recommendation", "batch", "event", "events", "rep-decision"],
)
def test_a_field_given_twice_is_refused_at_the_field_not_read_as_its_last_value(
    client: TestClient, keys, url: str, content: bytes, loc: list[str]
) -> None:
    """Python's parser kept the last value of a key given twice: the second HCP was
    answered, the second event type stored, and a second "events" array replaced the
    first. Which one was meant cannot be told: refused naming the field, as a query
    parameter given twice is, with nothing stored."""
    headers = {**JSON, **(keys.rep if "/reps/" in url else keys.admin)}
    response = client.post(url, content=content, headers=headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["type"] == "repeated_field", error
    assert error["loc"] == loc, error
    assert error["msg"] == (
        f"'{loc[-1]}' is given 2 times in one object: send each field once (which value "
        "was meant cannot be told)"
    ), error
    assert "input" not in error  # the object as read holds the last value alone
    with client.app.state.runtime.sessions() as session:
        assert session.execute(text("SELECT COUNT(*) FROM feedback_events")).scalar() == 0


def test_an_event_giving_a_field_twice_is_rejected_alone_in_its_batch(client: TestClient) -> None:
    hcp = _hcp(client)
    content = (
        '{"events": ['
        f'{{"event_id": "twice-0", "event_type": "opened", "hcp_id": "{hcp}", "channel": "email"}},'
        f'{{"event_id": "twice-1", "event_type": "opened", "hcp_id": "{hcp}", '
        '"channel": "email", "channel": "webinar", "event_type": "clicked"}'
        "]}"
    ).encode()
    response = client.post("/v1/feedback", content=content, headers=JSON)
    assert response.status_code == 207, response.text
    answer = response.json()
    assert answer["accepted"] == 1
    [rejected] = answer["rejected"]
    assert (rejected["index"], rejected["event_id"]) == (1, "twice-1")
    assert rejected["message"] == (
        "event: 'event_type' and 'channel' are each given more than once in one object: "
        "send each field once (which value was meant cannot be told)"
    )


def test_a_utf8_byte_order_mark_before_the_json_is_passed_over(client: TestClient) -> None:
    """As Windows tools write UTF-8 files (PowerShell 5's Out-File, old Notepad), sent
    with `curl --data-binary @file`: RFC 8259 lets a parser ignore it. It was a 422
    saying "Unexpected UTF-8 BOM (decode using utf-8-sig)"."""
    hcp = _hcp(client)
    body = b"\xef\xbb\xbf" + json.dumps({"hcp_id": hcp, "k": 1}).encode()
    response = client.post("/v1/recommendations", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["hcp_id"] == hcp


def _stored_reason(client: TestClient, event_id: str) -> str:
    runtime = client.app.state.runtime
    with runtime.engine.connect() as connection:
        return str(
            connection.execute(
                text("SELECT reason FROM feedback_events WHERE event_id = :id"), {"id": event_id}
            ).scalar_one()
        )


@pytest.mark.parametrize(
    ("charset", "encoding"),
    [
        ("ISO-8859-1", "latin-1"),  # a client library's default, written as it says
        ("latin-1", "utf-8"),  # labelled Latin-1, written in UTF-8 (JSON's own)
        ("windows-1252", "cp1252"),
        ("utf-16", "utf-16"),
        ('"UTF-8"', "utf-8"),
    ],
)
def test_a_body_is_read_in_the_charset_its_content_type_names(
    client: TestClient, charset: str, encoding: str
) -> None:
    """A Latin-1 body ('Müller', byte 0xfc) was refused as no UTF-8, its charset
    unread, and a UTF-16 one as no JSON ("Expecting value")."""
    event_id = f"charset-{charset}-{encoding}".replace('"', "")
    event = {"event_id": event_id, "event_type": "opened", "hcp_id": _hcp(client),
             "reason": "Dr. Müller – café"}  # fmt: skip
    if encoding == "latin-1":
        event["reason"] = "Dr. Müller, café"  # no dash in Latin-1
    body = json.dumps(event, ensure_ascii=False).encode(encoding)
    response = client.post(
        "/v1/feedback",
        content=body,
        headers={"Content-Type": f"application/json; charset={charset}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert _stored_reason(client, event_id) == event["reason"]


@pytest.mark.parametrize("charset", ["klingon", "unicode_escape", "rot13"])
def test_a_charset_no_body_is_written_in_is_refused_naming_it(
    client: TestClient, charset: str
) -> None:
    response = client.post(
        "/v1/recommendations",
        content=json.dumps({"hcp_id": _hcp(client)}).encode(),
        headers={"Content-Type": f"application/json; charset={charset}"},
    )
    assert response.status_code == 415, response.text
    assert response.json()["detail"] == (
        f"the charset '{charset}' of the Content-Type is not one the body can be read in: "
        "send the body as UTF-8, with 'Content-Type: application/json' (or charset=utf-8)"
    )


def test_a_body_not_in_the_charset_it_names_is_refused_saying_so(client: TestClient) -> None:
    response = client.post(
        "/v1/recommendations",
        content=b'{"hcp_id": "H1"}',  # 16 bytes: UTF-16 of 8 characters, but not JSON
        headers={"Content-Type": "application/json; charset=utf-16"},
    )
    assert response.status_code == 422, response.text
    response = client.post(
        "/v1/recommendations",
        content=b'{"hcp_id": "H\xff"}',
        headers={"Content-Type": "application/json; charset=ascii"},
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["msg"] == "JSON decode error: the body is not ascii text (byte 0xff)"
