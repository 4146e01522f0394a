"""Names and vocabularies of the data contract (see DESIGN.md, "Data contract").

Nothing here touches data; the validators and the rest of the package share these
so that a column name is spelled in exactly one place.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Final, TypeVar

from nextbest import limits
from nextbest.yamlfile import near_word

HCPS: Final = "hcps"
CATALOG: Final = "catalog"
INTERACTIONS: Final = "interactions"
#: The three tables of a data set, in the order they are loaded (later ones refer back).
TABLES: Final = (HCPS, CATALOG, INTERACTIONS)
#: File extensions a table may come in.
FORMATS: Final = ("csv", "parquet")

REQUIRED_HCP_COLUMNS: Final = ("hcp_id", "specialty", "territory_id")
REQUIRED_CATALOG_COLUMNS: Final = (
    "action_id",
    "channel",
    "content_id",
    "topic",
    "content_type",
    "approved_from",
)
OPTIONAL_CATALOG_COLUMNS: Final = ("approved_until", "specialties", "cost")
REQUIRED_INTERACTION_COLUMNS: Final = ("hcp_id", "timestamp", "action_id", "engaged")
# ``recommendation_id``: the service's id of the answer a touch was made under (a
# send the service recommended, exported back from the CRM): retrain learns that
# decision once, from the recommendation log.
OPTIONAL_INTERACTION_COLUMNS: Final = (
    "channel",
    "content_id",
    "outcome",
    "propensity",
    "holdout",
    "recommendation_id",
)

#: The largest magnitude an outcome may have, in a history's ``outcome`` as in a
#: feedback event's ``value``: outcomes are business units (NRx, units sold,
#: revenue), and no one decision's is that large; a placeholder (9999999999) or a
#: wrong unit would swamp every mean it is summed into (1e308 made the uplift
#: report's means overflow to infinity).
MAX_OUTCOME: Final = 1e9

#: The columns each table of a data set needs, by table: a file lacking its own but
#: holding another's is that table under the wrong name (see ``validate._start``).
REQUIRED_COLUMNS: Final = {
    HCPS: REQUIRED_HCP_COLUMNS,
    CATALOG: REQUIRED_CATALOG_COLUMNS,
    INTERACTIONS: REQUIRED_INTERACTION_COLUMNS,
}

#: Every column the contract names: a header names one of them, a title line or a
#: row of values none (see ``files._refuse_lines_above_header``).
CONTRACT_COLUMNS: Final = frozenset(
    (
        *REQUIRED_HCP_COLUMNS,
        *REQUIRED_CATALOG_COLUMNS,
        *OPTIONAL_CATALOG_COLUMNS,
        *REQUIRED_INTERACTION_COLUMNS,
        *OPTIONAL_INTERACTION_COLUMNS,
    )
)

# Defined with the stored widths: the key file checks a key's purpose without
# loading this package.
CONTENT_TYPES: Final = limits.CONTENT_TYPES

CONSENT_PREFIX: Final = "consent_"
REP_CHANNEL_PREFIX: Final = "rep_"
#: Separator of the catalog's ``specialties`` list.
SPECIALTY_SEPARATOR: Final = ";"

#: Spellings accepted for booleans (compared case-insensitively); an empty cell means
#: the column's default.
TRUE_WORDS: Final = frozenset({"true", "t", "yes", "y", "1"})
FALSE_WORDS: Final = frozenset({"false", "f", "no", "n", "0"})

#: How databases and warehouse exports write a missing value (``\\N`` is MySQL's and
#: Hive's), compared case-insensitively: in the contract a missing value is an empty
#: cell, and these are text like any other.
NULL_WORDS: Final = frozenset({"null", "\\n", "nan", "na", "n/a", "#n/a", "none", "nil"})
#: Those refused where the contract needs a value (an id, a specialty, a territory,
#: a channel): all but ``NA``, which names regions and countries (North America).
REFUSED_NULL_WORDS: Final = NULL_WORDS - {"na"}

#: Extra columns whose name says they identify or locate rather than measure: kept
#: as text exactly as written, so "02134" or "00123" keep their leading zeros.
IDENTIFIER_NAMES: Final = frozenset(
    {"id", "zip", "zipcode", "zip_code", "postcode", "post_code", "postal_code", "npi", "phone"}
)
IDENTIFIER_SUFFIXES: Final = ("_id", "_code", "_zip", "_postcode", "_npi", "_phone")


# Columns of an hcps file that name or reach a person, by their name spelled as
# channels are (``Full Name`` -> full_name): never features, never kept (a model
# would store them, and a reason could quote them). Exact names only: "email" in
# ``email_open_rate`` or "phone" in ``rep_phone_calls`` is a feature.
PERSONAL_NAMES: Final = frozenset(
    {
        "name", "first_name", "last_name", "full_name", "given_name", "family_name",
        "middle_name", "surname", "firstname", "lastname", "fullname", "hcp_name",
        "email", "e_mail", "email_address", "e_mail_address", "work_email",
        "personal_email", "phone", "phone_number", "telephone", "mobile", "mobile_phone",
        "cell_phone", "office_phone", "work_phone", "home_phone", "fax", "fax_number",
        "address", "street", "street_address", "home_address", "address_line_1",
        "address_line_2", "date_of_birth", "dob", "birth_date", "birthdate", "ssn",
    }
)  # fmt: skip


_EMAIL_SHAPED = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE_SHAPED = re.compile(r"\+?[\d\s().-]{7,}")
# A number written with thousands separators as spreadsheets in some locale write
# one: groups of exactly three digits after the first, all split by the same mark,
# ',' '.' a space, a (narrow) no-break space or, in Switzerland, an apostrophe
# ("4,512,345", "4.512.345", "1 234 567", "1'234'567", "1\u2019234"), then maybe
# decimals after the other mark ("1.234,56", "1,234.5", "1'234.50"); or grouped as
# India writes lakhs and crores, by commas into twos before the last three digits
# ("12,34,567", "1,23,45,678.5"). Not an IPv4 address (four dotted groups of at
# most 255: "192.168.100.200"), nor a phone number ("+49 301 234 567": a sign
# before groups is only '-').
_OCTET = r"(?:25[0-5]|2[0-4]\d|1?\d?\d)"
GROUPED_NUMBER = re.compile(
    rf"(?!{_OCTET}(?:\.{_OCTET}){{3}}$)-?(?:"
    r"[1-9]\d{0,2}(?P<mark>[,. '\u00a0\u202f\u2019])\d{3}(?:(?P=mark)\d{3})*"
    r"(?:(?!(?P=mark))[.,]\d+)?"
    r"|[1-9]\d?(?:,\d\d)+,\d{3}(?:\.\d+)?)"
)


def ungrouped(value: str) -> str:
    """A ``GROUPED_NUMBER`` as the contract reads numbers, without its separators
    and with a decimal point: '4.512.345' -> '4512345', '1.234,56' -> '1234.56',
    "1'234.5" -> '1234.5', '12,34,567' -> '1234567'."""
    match = GROUPED_NUMBER.fullmatch(value)
    mark = match["mark"] if match is not None and match["mark"] else ","
    return value.replace(mark, "").replace(",", ".")


# One number a spreadsheet wrote with '.' between thousands that has a single group
# ("1.234", "12.345", "-980.500"): a decimal to every number parser, as "1.5" is.
DOTTED_THOUSAND = re.compile(r"-?[1-9]\d{0,2}\.\d{3}")
# What the same spreadsheet writes for a whole number below a thousand: "980", "0".
_BELOW_A_THOUSAND = re.compile(r"-?(?:0|[1-9]\d{0,2})")
#: Fewer distinct dotted values than this are no sign of thousands.
DOTTED_THOUSANDS_MIN_VALUES = 5


def reads_as_dotted_thousands(values: Iterable[str]) -> bool:
    """Whether the cells of a column read as decimals (``values``: its distinct
    non-empty cells as the file writes them) look like whole numbers a European
    spreadsheet wrote with '.' between thousands: "1.234", "2.500", "980", "12.345"
    read as 1.234, 2.5, 980 and 12.345, every value over 999 a thousand times too
    small, silently. (With two groups, "4.512.345", the column is no number and
    GROUPED_NUMBER says so.)

    Thousands when every cell is one of what such a spreadsheet writes, and both
    kinds are there: at least ``DOTTED_THOUSANDS_MIN_VALUES`` distinct values with a
    '.' and exactly three digits after it, no leading zero before it
    (``DOTTED_THOUSAND``: no "0.125"), and a whole number without a '.' below a
    thousand ("980"). Decimals are written otherwise: with other numbers of digits
    after the point somewhere ("12.50", "1.5"; a general format drops trailing
    zeros, so some value would show fewer than three), below one ("0.125"), or, at
    a fixed three decimals, with them on whole numbers too ("980.000"). A column of
    dotted values only ("1.234", "2.500") could be either, and stays unsaid, as does
    anything else in a cell ("1234" without its '.', "1e3"). Only text says this:
    the floats of a typed (Parquet) column are what they are."""
    dotted = plain = 0
    for value in values:
        if DOTTED_THOUSAND.fullmatch(value):
            dotted += 1
        elif _BELOW_A_THOUSAND.fullmatch(value):
            plain += 1
        else:
            return False
    return dotted >= DOTTED_THOUSANDS_MIN_VALUES and plain > 0


# A number as a spreadsheet writes one in some locale: one decimal point or comma
# ("95.6", "0,5"; "1.234" is a number whichever it is), or thousands separated as
# GROUPED_NUMBER says. Not a leading zero (a code's "00123") nor dots around groups
# of other lengths (a date's "2.7.1951", "02.07.1951", an address's "10.0.0.1") nor
# two numbers in one cell (a position's "52.2173,13.3395"): those are text, and text
# unique per HCP identifies one.
NUMBER_SHAPED = re.compile(rf"[+-]?(?:0|[1-9]\d{{0,14}})(?:[.,]\d+)?|{GROUPED_NUMBER.pattern}")
_PHONE_WORDS = frozenset({"phone", "mobile", "tel", "telephone", "cell", "fax", "contact"})
_PERSONAL_WORDS = frozenset({"name", "surname", "address", "street", "birth", "dob"})


T = TypeVar("T")


def is_personal_column(name: str, values: Sequence[str] = ()) -> bool:
    """Whether an extra hcps column holds a person's name, e-mail, phone, address or
    birth date: by its name (``Full Name``, ``email_address``, ``mobile``), or by its
    ``values`` (non-empty cells, a sample is enough): mostly e-mail addresses under
    any name (``contact``), phone numbers under a word of phone (``mobile_number``),
    or text all but unique per HCP under a word of name or address
    (``physician_name``)."""
    spelled = channel_spelling(name)
    if spelled in PERSONAL_NAMES:
        return True
    if not values:
        return False
    words = set(spelled.split("_"))
    if _share(_EMAIL_SHAPED, values) >= 0.5:
        return True
    if words & _PHONE_WORDS and _share(_PHONE_SHAPED, values) >= 0.5:
        return True
    numeric = _share(NUMBER_SHAPED, values) >= 0.5
    return bool(words & _PERSONAL_WORDS) and not numeric and len(set(values)) >= 0.9 * len(values)


# Fewer values than this say nothing about whether a column is unique per HCP.
UNIQUE_TEXT_MIN_VALUES = 50

# Headers that name a code identifying one person or licence, by their words (see
# :func:`header_words`): the code's own system as the last word (``npi``,
# ``prescriber_npi``, ``GMC``), or followed by a word of number (``npi_number``,
# ``DEA No``); a licence or registration followed by a word of number
# (``state_license_number``, ``licence_no``, ``registration_number``). Not a
# system's word followed by anything else: ``npi_type`` and ``dea_schedule`` are
# traits HCPs share. US NPI, UPIN, DEA, state licence (SLN); UK GMC, NMC; France
# RPPS, ADELI; Germany LANR.
_PERSON_CODE_SYSTEMS = frozenset(
    {"npi", "upin", "dea", "sln", "gmc", "nmc", "rpps", "adeli", "lanr"}
)
_LICENCE_WORDS = frozenset({"license", "licence", "licensure", "registration"})
_PERSON_CODE_NUMBER_WORDS = frozenset({"number", "num", "no", "nr", "nbr", "id", "ref", "pin"})
# The last word of a header that says its integers are codes, not quantities
# (``practice_id``, ``account_number``, ``license_no``, ``customer_code``).
_CODE_NUMBER_WORDS = frozenset({"id", "number", "num", "no", "nr", "nbr", "code"})
# The contract's own id columns: what they hold is the contract's business (a
# territory is shared by many HCPs; ``territory_id`` decides rep plans).
_CONTRACT_ID_COLUMNS = frozenset(
    name
    for name in (*REQUIRED_HCP_COLUMNS, *REQUIRED_CATALOG_COLUMNS, *REQUIRED_INTERACTION_COLUMNS)
    if name.endswith("_id")
)
_INTEGER_SHAPED = re.compile(r"-?\d+(?:\.0*)?")  # "1234567890", or "12.0" from a typed column


def is_unique_text_column(values: Sequence[str]) -> bool:
    """Whether an extra hcps column's ``values`` (non-empty cells, a sample, of a column
    not read as numbers) are text nearly unique per HCP, whatever its shape: a name
    under a neutral header such as ``doctor`` or ``nachname``, a birth date
    (``2.7.1951``), an IP address, a position (``52.2173,13.3395``), a registration
    code. An identifier, not a trait HCPs share: as a feature it lets a model tell HCPs
    apart without learning anything it can carry to another HCP, the model would store
    every value, and a reason could quote it. Numbers the contract reads as text for
    how they are written (a decimal comma, thousands separators as in ``4.512.345``,
    ``1.234,56`` or ``1 234 567``, a few ``NULL`` cells: half the cells number-shaped)
    are not: validate says how to make them numbers."""
    if len(values) < UNIQUE_TEXT_MIN_VALUES or _share(NUMBER_SHAPED, values) >= 0.5:
        return False
    return len(set(values)) >= 0.9 * len(values)


def header_words(name: str) -> list[str]:
    """The words of a column header, lower-case, whatever separates them: 'NPI
    Number', 'npi-number', 'npi.number' and 'npiNumber' -> ['npi', 'number']."""
    split = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name.strip())
    return [word for word in re.split(r"[^a-z0-9]+", split.lower()) if word]


def is_person_code_column(name: str) -> bool:
    """Whether an extra hcps column's header names a code that identifies one person
    or licence (``npi``, ``DEA Number``, ``state_license_no``, ``gmc_number``), whatever
    its cells: an identifier, not a trait HCPs share. Ten-digit NPIs would otherwise
    be read as a number, a feature stored in the model."""
    words = header_words(name)
    if not words:
        return False
    if words[-1] in _PERSON_CODE_SYSTEMS:
        return True
    return words[-1] in _PERSON_CODE_NUMBER_WORDS and bool(
        set(words[:-1]) & (_PERSON_CODE_SYSTEMS | _LICENCE_WORDS)
    )


def is_unique_code_column(name: str, values: Sequence[str]) -> bool:
    """Whether an extra hcps column holds integers nearly unique per HCP (90% distinct,
    from ``UNIQUE_TEXT_MIN_VALUES`` on) under a header ending in a word of id or number
    (``customer_id``, ``account_number``, ``license_no``, ``crm_code``): a code per HCP,
    not a quantity. Uniqueness alone says nothing of numbers (patients per month are
    nearly unique too), hence the header; the contract's own id columns
    (``territory_id``) are not extra columns and never match."""
    words = header_words(name)
    if (
        not words
        or words[-1] not in _CODE_NUMBER_WORDS
        or "_".join(words) in _CONTRACT_ID_COLUMNS
        or len(values) < UNIQUE_TEXT_MIN_VALUES
        or _share(_INTEGER_SHAPED, values) < 0.9
    ):
        return False
    return len(set(values)) >= 0.9 * len(values)


def _share(pattern: re.Pattern[str], values: Sequence[str]) -> float:
    return sum(bool(pattern.fullmatch(v)) for v in values) / len(values)


def is_null_word(value: object) -> bool:
    """Whether a cell is a warehouse's spelling of a missing value (see ``NULL_WORDS``)."""
    return isinstance(value, str) and value.strip().lower() in NULL_WORDS


def channel_spelling(name: str) -> str:
    """How a channel is spelled in catalogs: 'Rep visit', 'rep-visit' and 'Rep  Visit'
    -> 'rep_visit'.

    For "did you mean" messages: a name sent otherwise matches no cap or filter.
    """
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def spelled_as_channels(by_channel: Mapping[str, T]) -> dict[str, T]:
    """``by_channel`` with its keys spelled as catalog channels are (see
    :func:`channel_spelling`); two keys for one channel are an error (ValueError)."""
    out: dict[str, T] = {}
    for key, value in by_channel.items():
        channel = channel_spelling(key)
        if channel in out:
            raise ValueError(f"'{key}' names channel '{channel}' a second time")
        out[channel] = value
    return out


def near_channel(name: str, channels: Collection[str]) -> str | None:
    """The channel of ``channels`` that ``name`` most likely misspells ("Email",
    "e-mail", "emial", "rep_vist"), or None when it is no near miss of any ("fax").

    For every "did you mean" about a channel: requests, picks and feedback alike.
    """
    # Words of one channel's name only count too ("visit" for rep_visit).
    return near_word(channel_spelling(name), sorted(channels), words=True)


# What an opt-out of every channel is called, as catalogs spell channels ("All",
# "*", "Every Channel"); no catalog has a channel of these names.
EVERY_CHANNEL_NAMES: Final = frozenset(
    {"", "all", "any", "every", "*", "all_channels", "every_channel"}
)


def withdrawn_channel(
    name: str, channels: Collection[str], own: Collection[str] = ()
) -> str | None:
    """The channel an opt-out naming ``name`` withdraws from ``channels`` (the served
    catalog's, spelled as catalogs spell them; empty: no model served); None: every
    channel.

    A name of :data:`EVERY_CHANNEL_NAMES` withdraws every channel; one of ``own``
    (the channels its sender speaks for) is that channel, whether the catalog has it
    or not; a catalog channel however spelled, or a near miss of one ("e-mail",
    "rep visit"), is that channel; with a catalog, one nextbest cannot tell ("fax")
    withdraws every channel, to be safe. With no catalog, a name is its spelling
    (``channel_spelling``), to be read against the catalog once one is served.

    The one reading of an opt-out's channel: on arrival with a model served, and at
    each read of one stored while none was.
    """
    spelled = channel_spelling(name)
    if spelled in EVERY_CHANNEL_NAMES:
        return None
    if spelled in own or not channels:
        return spelled
    return near_channel(name, channels)


def consent_column(channel: str) -> str:
    """Name of the hcps column holding consent for ``channel`` (e.g. ``consent_email``)."""
    return f"{CONSENT_PREFIX}{channel}"


def is_identifier_column(name: str) -> bool:
    """Whether an extra column is an identifier or code by its name (``zip``,
    ``practice_id``, ``postal_code``, case-insensitive), hence text, never a number."""
    lowered = name.strip().lower()
    return lowered in IDENTIFIER_NAMES or lowered.endswith(IDENTIFIER_SUFFIXES)


# The channel filter a rep plan's answers are logged with: every rep channel, so
# that the uplift report and the gate replay them on rep channels only.
REP_CHANNELS_FILTER: Final = f"{REP_CHANNEL_PREFIX}*"


# The channel filter an answer limited to several channels (a channel-bound API
# key's) is logged with: them, joined, so that the uplift report and the gate
# replay it on those channels only. One channel is logged as itself.
CHANNELS_SEPARATOR: Final = ","


def channels_filter(channels: Iterable[str]) -> str:
    """The logged channel filter of an answer limited to ``channels``: 'email,sms'."""
    return CHANNELS_SEPARATOR.join(sorted(set(channels)))


def filter_channels(channel_filter: str) -> list[str] | None:
    """The channels of a logged filter naming several (:func:`channels_filter`), else None."""
    if CHANNELS_SEPARATOR not in channel_filter:
        return None
    return [c for c in channel_filter.split(CHANNELS_SEPARATOR) if c]


def is_rep_channel(channel: str) -> bool:
    """Whether ``channel`` is delivered by a sales rep (``rep_visit``, ``rep_phone``, ...)."""
    return channel.startswith(REP_CHANNEL_PREFIX)


def specialty_spelling(name: str) -> str:
    """How specialties are compared, an HCP's with a catalog's: 'Primary Care',
    'primary-care' and 'primary_care' are one (as channels are spelled)."""
    return channel_spelling(name)


def normalise_specialties(value: str) -> str:
    """Canonical form of a ``specialties`` cell: each part spelled as
    :func:`specialty_spelling` does, sorted, unique, ``;``-joined; ``''`` means every
    specialty."""
    parts = {specialty_spelling(part) for part in value.split(SPECIALTY_SEPARATOR)}
    parts.discard("")
    return SPECIALTY_SEPARATOR.join(sorted(parts))


def allowed_specialties(value: str) -> frozenset[str]:
    """Specialties a catalog action may be shown to, from its ``specialties`` cell.

    Each is spelled by :func:`specialty_spelling`; an empty set means everyone. HCP
    ``specialty`` values keep their spelling, so compare
    ``specialty_spelling(hcp_specialty)`` against it.
    """
    return frozenset(
        part for part in normalise_specialties(value).split(SPECIALTY_SEPARATOR) if part
    )
