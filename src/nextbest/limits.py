"""What a stored text value may be: how many characters (the widths of the text
columns of the recommendation log and the feedback store, by column name), and the
words a content type or a request's purpose is one of.

``storage/tables.py`` declares those columns with these numbers, and every edge a
value bound for one comes in by checks it against the same number, so that a value
too long is refused there, naming it, rather than refused by one database and kept
whole by the other when it is stored: the data contract (the ids of the hcps,
catalog and send-list files), the API key file (a key's name is the requester
logged), the API's requests. Nothing is imported here: the key file and the data
files are read by commands that load neither SQLAlchemy nor the storage package.
The migrations keep the numbers of their time; a test compares the tables with them
on both databases.

It also holds the PostgreSQL connect timeout, which the storage package gives its
engines and the registry gives MLflow's stores, so that a command on the registry
alone does not load the storage package for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, get_args

#: Column name -> its width in characters, the same in every table that has it.
STORED_LENGTHS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "hcp_id": 128,
        "action_id": 128,
        "content_id": 128,
        "channel": 64,
        # The channels an answer was limited to, ','-joined (a channel-bound key's).
        "channel_filter": 64,
        # Who asked or stored: an API key's name, or a command and its user.
        "requester": 128,
        # The rep a call plan was made for (its rep_id).
        "rep_id": 128,
        "recommendation_id": 64,
        "model_version": 64,
        "event_id": 128,
        "reason": 256,
    }
)

#: A catalog action's ``content_type``, and so a request's purpose (the content type it
#: may be served; logged with each answer): a medical requester never gets promotional
#: content, a commercial one never medical.
Purpose = Literal["promotional", "medical"]
CONTENT_TYPES: Final[tuple[str, ...]] = get_args(Purpose)
PURPOSES: Final[tuple[str, ...]] = CONTENT_TYPES

# How long a new PostgreSQL connection may take (libpq's ``connect_timeout``) unless
# the URL sets its own: without one, a database host that drops packets holds
# `nextbest serve`'s start-up (and each reconnect) for the system's TCP timeout,
# minutes, before it says the database is unreachable.
PG_CONNECT_TIMEOUT_S: Final = 10
