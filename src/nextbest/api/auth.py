"""API-key authentication and role checks, as FastAPI dependencies.

Roles: ``admin`` may do everything; ``channel`` (e-mail / marketing systems) may
ask for recommendations, batches and send feedback (a channel key bound to
channels, ``channels: [sms]`` in the key file, for those channels only); ``rep`` may ask about the
HCPs of its own territory, read its own call plan and send feedback; ``monitor`` (a
metrics scraper) may read ``/metrics`` and nothing else. A missing or unknown key is
401; a known key outside its rights is 403.

A retiring key (the old key of a rotation with an overlap, accepted until its
time) is its entry's principal; each request made with one is counted in
``nextbest_retiring_key_requests_total{name}`` (a rep key's under "(rep)"), and the
first in this process for each retiring key is logged as a warning naming the key's
name and the time it stops being accepted, so an operator can tell which clients
have yet to move.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends, HTTPException, Request, status

from nextbest.api.observability import record_retiring_key
from nextbest.contract.parse import QUOTED_AT_MOST, quoted, said_in_another_case, spelled_alike
from nextbest.errors import ModelNotLoadedError
from nextbest.service.apikeys import Principal, ReloadingKeyStore, channel_spelling, utc_text
from nextbest.service.events import MAX_FEEDBACK_BATCH

if TYPE_CHECKING:
    from nextbest.service.recommend import Recommender

ANONYMOUS = Principal(name="anonymous", role="admin")

logger = logging.getLogger(__name__)
# The retiring keys (by name and time) this process has warned of: one warning
# each, not one per request; a later rotation of the same name warns again.
_warned_retiring: set[tuple[str, datetime]] = set()
_warned_lock = threading.Lock()


def _presented_key(request: Request) -> str | None:
    bearer = _one_key(request, "Authorization", _bearer_key)
    if bearer is not None:
        return bearer
    return _one_key(request, "X-API-Key", lambda value: value.strip() or None)


def _bearer_key(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _one_key(request: Request, name: str, key_in: Callable[[str], str | None]) -> str | None:
    """The key the ``name`` header holds (``key_in`` reads it from a header's value).
    A header sent twice with two keys (a proxy adding its own beside the client's) is
    refused, 401 saying so: the first was checked, and which one was meant cannot be
    told."""
    keys = {key for value in request.headers.getlist(name) if (key := key_in(value))}
    if len(keys) > 1:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=f"{name} is sent {len(request.headers.getlist(name))} times with "
            f"different keys: send one key, in one {name} header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return next(iter(keys), None)


def _checked(request: Request) -> Principal | None:
    """The caller :func:`_identify` found for this request already, else None.

    Read from the scope's state as ``request.state`` keeps it: asking ``request.state``
    for an attribute it lacks raises and catches two exceptions (a few microseconds,
    twice on every request: before the body is read, and by the route)."""
    state = request.scope.get("state")
    return None if state is None else cast(Principal | None, state.get("principal"))


def _identify(request: Request) -> Principal:
    known = _checked(request)
    if known is not None:  # checked already, before the body was read
        return known
    keys: ReloadingKeyStore | None = request.app.state.api_keys
    if keys is None:  # auth disabled
        principal = ANONYMOUS
    else:
        key = _presented_key(request)
        found = keys.match(key) if key is not None else None
        if found is None:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing or unknown API key: send 'Authorization: Bearer <key>' "
                "or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = found.principal
        if found.retiring_until is not None:
            _note_retiring_key(principal.name, principal.role, found.retiring_until)
    request.state.principal = principal  # the access log names the requester
    return principal


def _note_retiring_key(name: str, role: str, until: datetime) -> None:
    """Count a request made with the retiring key of ``name``; warn at the first."""
    record_retiring_key(name, role)
    with _warned_lock:
        if (name, until) in _warned_retiring:
            return
        _warned_retiring.add((name, until))
    logger.warning(
        "API key '%s' was used with its old key, replaced by a rotation and accepted until "
        "%s only: the clients still sending it must move to the new key",
        name,
        utc_text(until),
        extra={"event": "retiring_key_used", "requester": name, "retiring_until": utc_text(until)},
    )


def _admit(principal: Principal, roles: tuple[str, ...]) -> Principal:
    if principal.role not in roles:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"role '{principal.role}' may not use this route (allowed: {', '.join(roles)})",
        )
    return principal


def refused_before_validation(request: Request) -> HTTPException | None:
    """The 401 a request without a valid key gets, when its body could not be read
    before the key was checked (malformed JSON is refused before any dependency
    runs); None when the key was checked, is valid or auth is off.

    A caller without a key learns nothing about what a route expects.
    """
    if _checked(request) is not None:
        return None
    try:
        _identify(request)
    except HTTPException as refused:
        return refused
    return None


async def get_principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

    ``async`` only to run on the event loop (no thread hop): it never blocks.
    """
    return _identify(request)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_roles(*roles: str) -> Any:
    """A dependency that lets only ``roles`` through (403 for other known keys)."""

    async def check(principal: PrincipalDep) -> Principal:
        return _admit(principal, roles)

    return Depends(check)


def admitted_caller(request: Request, roles: tuple[str, ...]) -> Principal:
    """The caller of ``request``, admitted only with one of ``roles`` (401, 403 as
    :func:`require_roles`): what the single recommendation route calls itself, as it
    takes no dependency (``JSONBodyRoute`` then hands it its body directly)."""
    return _admit(_identify(request), roles)


def request_purpose(principal: Principal, asked: str | None, *, whose: str = "") -> str:
    """The purpose a request is served for: what it says, else its key's, else
    promotional. A key bound to a purpose (``purpose`` in the key file) asking for
    the other is refused (403): separation that rests on each caller declaring
    itself rightly is no separation. ``whose``: the key the binding comes from when
    it is not the caller's (the rep whose plan an admin asks for)."""
    bound = principal.purpose
    if bound is not None and asked is not None and asked != bound:
        detail = (
            f"rep key '{principal.name}' plans {bound} visits: its plan may not hold "
            f"{asked} content (purpose)"
            if whose
            else f"this key is for {bound} requests: it may not ask for {asked} content (purpose)"
        )
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=detail)
    return asked or bound or "promotional"


def request_channels(principal: Principal, asked: str | None) -> tuple[str, ...] | None:
    """The channels a recommendation request may be answered on besides its own
    ``channel`` filter (``asked``): a channel-bound key's when it asks for none, else
    None (any; the filter, if given, applies). A bound key asking for a channel it
    does not speak for is refused (403), naming both."""
    bound = principal.channels
    if bound is None:
        return None
    if asked is None:
        return bound
    if channel_spelling(asked) not in bound:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"API key '{principal.name}' speaks for channel(s) {', '.join(bound)} only: "
            f"it may not ask for channel {quoted(asked, at_most=QUOTED_AT_MOST)}",
        )
    return None


def forbid_outside_territory(
    principal: Principal, territory_id: str | None, what: str, *, meant: str | None = None
) -> None:
    """403 when a rep asks about something outside its own territory.

    ``territory_id`` is the served one (the territory alignment file's when
    ``NEXTBEST_TERRITORIES_FILE`` is set, else the model's). None (an HCP the served
    model does not know, or one the alignment puts in no territory) gets the same
    answer, worded for both cases: a rep key learns nothing about other territories.
    ``meant``: an id of the rep's own territory the one asked about is likely a
    misspelling of (:func:`forbid_hcp_outside_territory`), named after it.
    """
    if principal.role == "rep" and territory_id != principal.territory_id:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"rep key '{principal.name}' may only access its territory "
            # The same words for both: which one it is would tell a rep that an
            # HCP exists in another territory.
            f"{principal.territory_id}; {what} is outside it or not known to the served model"
            + ("" if meant is None else said_in_another_case(meant)),
        )


def forbid_hcp_outside_territory(
    principal: Principal, recommender: Recommender, hcp_id: str, what: str
) -> None:
    """:func:`forbid_outside_territory` for the HCP ``hcp_id``. An id the rep's CRM sent in
    another case than the served model's (``h000108`` for ``H000108``) was refused as
    outside the territory; when that other spelling is an HCP of the rep's own
    territory, the refusal names it: it tells the rep of none but its own HCPs."""
    if principal.role != "rep":
        return
    territory = recommender.territory_of(hcp_id)
    if territory == principal.territory_id:
        return
    meant = spelled_alike(hcp_id, recommender.known_hcps)
    if meant is not None and recommender.territory_of(meant) != principal.territory_id:
        meant = None
    forbid_outside_territory(principal, territory, what, meant=meant)


async def feedback_scope(request: Request, principal: PrincipalDep) -> None:
    """A rep may only send feedback about HCPs of its own territory.

    One event outside it is a 403. In a batch, each such event is rejected on its
    own (``request.state.outside_territory``: its index -> the message) and the
    others are stored. Before a model is loaded no territory can be checked: a
    rep's feedback gets 503 until one is.
    """
    request.state.outside_territory = {}
    if principal.role != "rep":
        return
    runtime = request.app.state.runtime
    if runtime.model_version is None:
        raise ModelNotLoadedError(
            "no model is loaded yet: a rep's feedback waits for one (its territory "
            "cannot be checked without it)"
        )
    try:
        body = await request.json()  # Starlette caches the body for the route
    except ValueError:
        return  # the route reports the invalid body
    if not isinstance(body, dict):
        return
    batch = body.get("events")
    if isinstance(batch, list) and len(batch) > MAX_FEEDBACK_BATCH:
        return  # refused by its length, before any event is read
    events = batch if isinstance(batch, list) else [body]
    recommender = runtime.recommender
    recommender.check_territories()
    outside: dict[int, str] = {}
    for index, event in enumerate(events):
        hcp_id = event.get("hcp_id") if isinstance(event, dict) else None
        if not isinstance(hcp_id, str):
            continue
        hcp_id = hcp_id.strip()  # as the event schema reads it
        try:
            forbid_hcp_outside_territory(principal, recommender, hcp_id, f"HCP {hcp_id}")
        except HTTPException as refused:
            if batch is None:
                raise
            outside[index] = str(refused.detail)
    request.state.outside_territory = outside
