"""Domain errors; the HTTP layer maps them to status codes in one place."""

from __future__ import annotations


class NextbestError(Exception):
    """Base class of errors a caller can act on."""


class NotFoundError(NextbestError):
    """A named thing (HCP, recommendation, rep) does not exist."""

    def __init__(
        self,
        kind: str,
        identifier: str,
        *,
        known_to: str | None = None,
        advice: str | None = None,
    ) -> None:
        # known_to: what decides instead of the served model (a territory alignment);
        # advice: what to check or do, after the message.
        message = f"{kind} '{identifier}' is not known to {known_to or 'the served model'}"
        super().__init__(message if advice is None else f"{message}: {advice}")
        self.kind = kind
        self.identifier = identifier


class InvalidRequestError(NextbestError):
    """A request is well-formed but asks for something that cannot be done."""

    def __init__(self, field: str, message: str, *, location: str = "body") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.location = location  # where the field was sent: body, query or path


class ModelNotLoadedError(NextbestError):
    """No model is being served yet."""


class TerritoriesUnavailableError(NextbestError):
    """The territory alignment file could not be read when this worker started: what
    depends on territories (rep keys, rep plans) waits for it (503); the rest is served."""


class LogBacklogFullError(NextbestError):
    """The recommendation log store is behind by more answers than a process may hold.

    Nothing is served that is not logged: the request is refused (503) and may be
    retried once the store catches up.
    """
