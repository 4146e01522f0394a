"""Who ran a command, as the log, the feedback table and the registry record it.

Light on purpose: ``erase`` and ``prune`` name their operator without loading the
model stack the feedback file's reader imports.
"""

from __future__ import annotations


def file_requester(command: str) -> str:
    """Who stored or served a file's rows, as the log and the feedback table record
    it: the command and the operating-system user who ran it
    (``nextbest feedback (jdoe)``), so that an audit can tell operators apart. Cut
    to the width the log stores (a name an environment variable claims is anyone's
    to make long), ending in '...)'."""
    from nextbest.limits import STORED_LENGTHS

    said, width = f"nextbest {command} ({os_user()})", STORED_LENGTHS["requester"]
    return said if len(said) <= width else said[: width - 4] + "...)"


def os_user() -> str:
    """The operating-system account this process runs as, named by its user id:
    ``LOGNAME`` and ``USER`` are environment variables anyone can set, so the name
    they claim is added only when it differs (``root, LOGNAME says jdoe``). Where
    the id has no account name (a bare container), the claimed name or the id."""
    import getpass
    import os

    try:
        claimed: str | None = getpass.getuser()
    except (KeyError, OSError):
        claimed = None
    try:
        import pwd

        account = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # not POSIX, or no name for this uid
        if claimed:
            return claimed
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown user"
    if claimed is None or claimed == account:
        return account
    said = next(v for v in ("LOGNAME", "USER", "LNAME", "USERNAME") if os.environ.get(v))
    return f"{account}, {said} says {claimed}"
