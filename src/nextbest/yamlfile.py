"""YAML configuration files read as a person means them: a key given twice is an error,
and a value found wrong after parsing is reported at its line.

PyYAML keeps the last of two equal keys without a word, so a ``seed:`` or a
``max_contacts:`` written twice in a long file silently takes the later value.
A merge key (``<<: *defaults``) works as YAML 1.1 has it: the keys of the mapping
it names, each overridden by the same key written beside it.

A syntax error carries its line (:func:`yaml_error_where`); a value refused later
(by pydantic, or a reader's own checks) knows only its key path, which in a long
file with repeated section names (``channels.email.max_contacts`` beside the same
under another section) is not enough: :func:`load_yaml_with_lines` also gives the
line of every key path, and messages name it as ``<file>, line 7: <path>: <problem>``.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml

if TYPE_CHECKING:  # the API key file is read by commands that import nothing else
    from pydantic import BaseModel, ValidationError


MERGE_TAG = "tag:yaml.org,2002:merge"

Model = TypeVar("Model", bound="BaseModel")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice."""


# libyaml's parser, where PyYAML was built with it (its wheels are): the same
# documents, nodes and lines, about nine times faster than PyYAML's own. A key file
# of 5,000 reps took seconds to read, and each serving worker reads it again on its
# next request after every change. A document it refuses is read again by PyYAML's
# parser, whose errors say more (a tab named as such) and are the ones explained.
_CSafeLoader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
_FAST_LOADERS: tuple[type[yaml.SafeLoader], ...] = (
    (type("_FastUniqueKeyLoader", (_CSafeLoader,), {}),) if _CSafeLoader is not None else ()
)


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: dict[Any, int] = {}  # key -> its 0-based line
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            # `<<: *defaults`: construct_mapping merges it, the keys written beside it
            # taking precedence, as YAML has it; only those are checked for twins.
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: SafeLoader reports it below
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key!r} a second time (first on line {first + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_LOADERS: tuple[type[yaml.SafeLoader], ...] = (_UniqueKeyLoader, *_FAST_LOADERS)
for _loader in _LOADERS:
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that raises ``yaml.YAMLError`` for a key given twice."""
    for fast in _FAST_LOADERS:
        try:
            return yaml.load(text, Loader=fast)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError:
            break  # said as PyYAML's own parser says it
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


KeyPath = tuple[Any, ...]


@dataclass(frozen=True)
class KeyLines:
    """The 1-based line where each entry of a YAML document starts, by key path.

    A key path is a tuple of mapping keys and list indexes, as pydantic's ``loc``:
    ``("engagement", "learning_rate")``, ``("keys", 0, "role")``. A mapping entry
    starts at its key: for a section written as a block that is the line naming
    the section, and for an unknown key the line of that key. A list item starts
    at the item. The document itself has no entry: a problem with the whole file
    has no line.
    """

    lines: Mapping[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[Any]) -> int | None:
        """The line of ``path``, else of its longest prefix that has one; None for none.

        So a missing key is reported at the section that lacks it, and a problem
        pydantic locates inside a value (``("levers", "channel", "[key]")``) at
        the value's key.
        """
        path = tuple(path)
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def within(self, prefix: Sequence[Any]) -> KeyLines:
        """The lines of the value at ``prefix``, by paths relative to it; its own line
        is that of ``()``, so a problem with the whole value points at ``prefix``."""
        prefix = tuple(prefix)
        inner = {
            path[len(prefix) :]: line
            for path, line in self.lines.items()
            if path[: len(prefix)] == prefix
        }
        return KeyLines(inner)


def load_yaml_with_lines(text: str) -> tuple[Any, KeyLines]:
    """:func:`load_yaml`, and where each key path of the document sits.

    The document is parsed once: its node tree is constructed into data and then
    walked for the lines (errors as :func:`load_yaml`'s).
    """
    for fast in _FAST_LOADERS:
        try:
            return _with_lines(fast(text))
        except yaml.YAMLError:
            break  # said as PyYAML's own parser says it
    return _with_lines(_UniqueKeyLoader(text))


def _with_lines(loader: yaml.SafeLoader) -> tuple[Any, KeyLines]:
    """:func:`load_yaml_with_lines` by ``loader``, disposed of after."""
    try:
        node = loader.get_single_node()
        if node is None:  # an empty document, as load_yaml: None
            return None, KeyLines()
        data = loader.construct_document(node)
        return data, KeyLines(_entry_lines(loader, node))
    finally:
        loader.dispose()


def _entry_lines(loader: yaml.SafeLoader, root: yaml.Node) -> dict[KeyPath, int]:
    """Line of every mapping entry and list item under ``root``, by key path."""
    lines: dict[KeyPath, int] = {}
    walked: set[int] = set()

    def walk(node: yaml.Node, path: KeyPath) -> None:
        # A collection reached again through an alias is walked once: the path
        # holding the alias has its own line, the nearest place to look.
        if id(node) in walked:
            return
        walked.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: no configuration has one
                entry = (*path, loader.construct_object(key_node))
                lines[entry] = key_node.start_mark.line + 1
                walk(value_node, entry)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                entry = (*path, index)
                lines[entry] = item.start_mark.line + 1
                walk(item, entry)

    walk(root, ())
    return lines


def at_line(where: str, line: int | None) -> str:
    """``where`` followed by ``, line 7`` when the line is known: how every reader
    names the place of a problem (``training config t.yaml, line 7``)."""
    return where if line is None else f"{where}, line {line}"


@dataclass(frozen=True)
class Place:
    """A place in a configuration, as a message names it: ``rules.yaml, line 4:
    channels.email.max_contacts``, for readers that check values themselves.

    ``source`` names the file (or other origin); ``lines``, where its key paths
    sit (None: not read from a file, so no line). A place the file does not write
    (a missing key) has the line of the section that lacks it.
    """

    source: str
    lines: KeyLines | None = None
    path: KeyPath = ()
    named: str = ""  # the path as messages write it: channels.email, keys[0]
    # Where the line is taken from, when not ``path`` (see pointing_at).
    line_path: KeyPath | None = None

    def at(self, key: Any) -> Place:
        """The entry ``key`` of this mapping."""
        named = f"{self.named}.{key}" if self.named else str(key)
        return replace(self, path=(*self.path, key), named=named, line_path=None)

    def item(self, index: int) -> Place:
        """Item ``index`` of this list."""
        return replace(
            self, path=(*self.path, index), named=f"{self.named}[{index}]", line_path=None
        )

    def pointing_at(self, key: Any) -> Place:
        """This place, named as before, at the line of its entry ``key`` (of itself
        when ``key`` is not written): where an unknown or a bad field of it is."""
        return replace(self, line_path=(*self.path, key))

    @property
    def line(self) -> int | None:
        if self.lines is None:
            return None
        return self.lines.line_of(self.path if self.line_path is None else self.line_path)

    @property
    def file(self) -> str:
        """``rules.yaml, line 4`` (``rules.yaml`` when the line is not known)."""
        return at_line(self.source, self.line)

    def __str__(self) -> str:
        return f"{self.file}: {self.named}" if self.named else self.file


def validation_message(
    where: str,
    error: ValidationError,
    lines: KeyLines | None,
    *,
    model: type[BaseModel] | None = None,
) -> str:
    """Each problem pydantic found, with its key path and the line it is on.

    ``where, line 7: engagement.learning_rate: Input should be less than or equal
    to 1``; further problems follow as ``; line 9: seed: ...``. ``lines`` None
    (data not read from a file): no lines. With ``model``, the class validated, an
    unknown key close to a valid one at its place says which: ``uplift.num_leafs:
    Extra inputs are not permitted (did you mean 'num_leaves'?)``; one close to none
    lists the keys that place takes: ``engagement.early_stopping_rounds: Extra inputs
    are not permitted (allowed here: n_estimators, learning_rate, ...)``.
    """
    problems: list[tuple[int | None, str]] = []
    for problem in error.errors():
        loc = problem["loc"]
        line = lines.line_of(loc) if lines is not None else None
        if len(loc) >= 2 and loc[-1] == "[key]" and not isinstance(problem.get("input"), str):
            # A key of the wrong kind, as YAML read it: pydantic's loc has `no:` as 0.
            loc = (*loc[:-2], shown(problem["input"]), loc[-1])
        named = ".".join(str(p) for p in loc)
        # A problem with the whole mapping (a list or a number where settings belong)
        # has no path: ": : Input should be ..." named nothing.
        read = _as_read(problem)
        if read is None:
            said = f"{named}: {problem['msg']}" if loc else problem["msg"]
        elif read.startswith(" "):  # what was read, beside pydantic's message
            said = f"{named}: {problem['msg']}{read}" if loc else f"{problem['msg']}{read}"
        else:  # what was read and what to write instead of it
            said = f"{named}: {read}" if loc else read
        if problem["type"] == "extra_forbidden" and model is not None and loc:
            said += unknown_key_hint(model, loc)
        problems.append((line, said))
    said = "; ".join(text if line is None else f"line {line}: {text}" for line, text in problems)
    first_line = problems[0][0] if problems else None
    return f"{where}, {said}" if first_line is not None else f"{where}: {said}"


# Problems whose message says all there is (a key missing, one not taken, a check of
# the config's own that names the value), or whose input is not the value written.
_SAID_WITHOUT_INPUT = frozenset({"missing", "extra_forbidden", "value_error", "assertion_error"})
# Longer text read is shown cut, as a message names a value, not quotes a file.
_SHOWN_CHARACTERS = 40


def _as_read(problem: Mapping[str, Any]) -> str | None:
    """What a settings file gave where pydantic found ``problem`` (:func:`as_read`), to
    add to its message or, for a number YAML read as text, instead of it. None when the
    value is not what the problem is about (a key missing or not taken)."""
    kind = str(problem.get("type", ""))
    if kind in _SAID_WITHOUT_INPUT or "input" not in problem:
        return None
    number = (
        "whole" if kind.startswith("int_") else "decimal" if kind.startswith("float_") else None
    )
    return as_read(problem["input"], number=number, text_wanted=kind == "string_type")


def as_read(value: Any, *, number: str | None = None, text_wanted: bool = False) -> str:
    """What YAML read for a value found wrong, as every settings file's message says it:
    ``" (read -1, a whole number)"`` to add to the message (starting with a space), or,
    for a number YAML read as text where ``number`` (``"whole"`` or ``"decimal"``) is
    wanted, what was read and what to write instead (``5e6 was read as text ('5e6'):
    write a whole number, e.g. 5000000``). ``text_wanted``: the value should have been
    text, so a number or true/false is told to be quoted.

    YAML 1.1, which PyYAML reads, takes an exponent only after a dot and with a sign
    (``5.0e+6``): ``5e6`` and ``1e-3`` are text, and a quoted number is text too.
    """
    wants_int, wants_float = number == "whole", number == "decimal"
    if isinstance(value, str) and (wants_int or wants_float):
        instead = _number_in_text(value, whole=wants_int)
        if instead is not None:
            return instead
    if wants_int and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return f"{shown(value)} was read as a decimal number: write a whole number, {int(value)}"
    if value is None:
        return " (read null: no value)"
    if isinstance(value, Mapping | list):
        return f" (read a {'mapping' if isinstance(value, Mapping) else 'list'})"
    said = f" (read {shown(value)}, {_yaml_kind(value)}"
    if text_wanted and isinstance(value, bool | int | float | date):
        # YAML 1.1 reads yes, no, on and off as true/false too.
        said += ": quote it if it is text"
    return said + ")"


def _number_in_text(text: str, *, whole: bool) -> str | None:
    """What was read and what to write for the number ``text`` YAML read as text (for
    a whole number if ``whole``); None when ``text`` is no number."""
    written = text.strip()
    try:
        unquoted = yaml.safe_load(written)
    except yaml.YAMLError:
        unquoted = None
    if isinstance(unquoted, int | float) and not isinstance(unquoted, bool):
        if whole and not isinstance(unquoted, int):
            return None  # "2.5" for a whole number: quoted or not, it is refused
        return f"{shown(text)} was read as text (it is quoted): write {written} without quotes"
    if not re.fullmatch(r"[-+]?[\d_]*\.?[\d_]*[eE][-+]?\d+", written):
        return None
    try:
        number = float(written.replace("_", ""))
    except ValueError:
        return None
    said = f"{written} was read as text ({shown(text)}): "
    if whole:
        if not (math.isfinite(number) and number.is_integer() and abs(number) < 2**53):
            return None
        return f"{said}write a whole number, e.g. {int(number)}"
    mantissa, _, exponent = written.lower().partition("e")
    mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
    exponent = exponent if exponent[:1] in ("+", "-") else f"+{exponent}"
    plain = repr(number)  # 0.001; 1e-07 would be text again
    return (
        f"{said}write {mantissa}e{exponent} (YAML reads an exponent after a dot and with "
        f"a sign)" + ("" if "e" in plain else f" or {plain}")
    )


def shown(value: Any) -> str:
    """``value`` as a message shows it: text quoted (cut when long), the rest as YAML
    writes it (true, 2026-01-01, .inf)."""
    if isinstance(value, str):
        long = len(value) > _SHOWN_CHARACTERS
        return repr(value[: _SHOWN_CHARACTERS - 3] + "..." if long else value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return repr(value)


def _yaml_kind(value: Any) -> str:
    """What YAML read ``value`` as, in a person's words."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, datetime):
        return "a date and time"
    if isinstance(value, date):
        return "a date"
    return type(value).__name__


def read_settings_file(
    path: Path, where: str, error: Callable[[str], Exception]
) -> tuple[dict[Any, Any], KeyLines]:
    """The mapping of settings in the YAML file ``path`` (empty for an empty file) and
    where each of its key paths sits; anything else raises ``error(message)``, the
    message starting with ``where`` (``training config train.yaml``): the file missing
    or unreadable, not UTF-8, not valid YAML, or no mapping at the top."""
    text = settings_text(settings_file_bytes(path, where, error), where, error)
    return settings_in(text, where, error)


def settings_file_bytes(
    path: Path, where: str, error: Callable[[str], Exception], *, max_bytes: int | None = None
) -> bytes:
    """The bytes of the settings file ``path``, for a reader that keeps them (the
    serving rules hash theirs); at most ``max_bytes`` + 1 of them, so that a file over
    a reader's limit is told without reading it whole. The file missing or unreadable
    (a directory, no permission) raises ``error(message)`` as
    :func:`read_settings_file` does."""
    try:
        with Path(path).open("rb") as file:
            return file.read() if max_bytes is None else file.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{where} does not exist") from None
    except OSError as exc:  # a directory, no permission
        raise error(f"{where} cannot be read: {exc.strerror or exc}") from None


def settings_text(raw: bytes, where: str, error: Callable[[str], Exception]) -> str:
    """The text of a settings file's bytes ``raw``, as read (by
    :func:`settings_file_bytes`), for :func:`settings_in` and a reader that keeps it
    (the serving rules store theirs); not UTF-8 raises ``error(message)``, the message
    starting with ``where``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{where}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}): save it as UTF-8"
        ) from None


def settings_in(
    text: str, where: str, error: Callable[[str], Exception]
) -> tuple[dict[Any, Any], KeyLines]:
    """:func:`read_settings_file` of a settings file's text (from
    :func:`settings_text`): not valid YAML or no mapping at the top raises
    ``error(message)``, the message starting with ``where``."""
    try:
        parsed, lines = load_yaml_with_lines(text)
    except yaml.YAMLError as exc:
        raise error(yaml_error_message(where, exc)) from None
    parsed = parsed or {}
    if not isinstance(parsed, dict):
        raise error(f"{where}: expected a mapping of settings at the top")
    return parsed, lines


def validated(
    model: type[Model],
    raw: Any,
    where: str,
    lines: KeyLines | None,
    error: Callable[[str], Exception],
) -> Model:
    """``model`` validating ``raw``; its problems raise ``error`` with
    :func:`validation_message`'s message (``where, line 7: seed: ...``)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(validation_message(where, exc, lines, model=model)) from None


def word_of(words: Sequence[str]) -> Callable[[Any], Any]:
    """For a setting that is one of ``words`` (a ``Literal``): a reading of a value
    that takes it in any case and without the spaces around it (``DR `` is ``dr``);
    a value near one word (``snisp``) is refused naming it (:func:`refuse_a_near_miss`),
    anything else is left as it is, for the field to refuse. Used as pydantic's
    ``BeforeValidator(word_of(...))``. Words that differ only in case are not read
    in any case: which one was meant could not be told."""
    folded: dict[str, list[str]] = {}
    for word in words:
        folded.setdefault(word.casefold(), []).append(word)

    def read(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        found = folded.get(value.strip().casefold(), [])
        if not found:
            refuse_a_near_miss(value.strip().casefold(), list(words))
        return found[0] if len(found) == 1 else value

    return read


def refuse_a_near_miss(value: str, choices: Sequence[str]) -> None:
    """Refuse ``value`` when it is not one of ``choices`` but near one, naming it (a
    literal's error, with "did you mean"); a value near none is left to the literal.
    For pydantic validators: every closed set of words a request or a setting takes."""
    from pydantic_core import PydanticCustomError

    if value not in choices and (near := near_word(value, choices)) is not None:
        listed = ", ".join(f"'{c}'" for c in choices)
        raise PydanticCustomError(
            "literal_error",
            "Input should be one of {listed} (did you mean '{near}'?)",
            {"near": near, "listed": listed},
        )


# How alike a misspelling and the word it misspells are, at least (difflib's ratio:
# twice the letters they share over the letters of both). At 0.75 one slip in a word
# of four letters or more is near ('emial', 'wieght'), two in a short one are not.
NEAR_ENOUGH = 0.75


def near_words(
    value: str,
    choices: Collection[str],
    *,
    n: int = 1,
    any_case: bool = False,
    words: bool = False,
) -> list[str]:
    """The words of ``choices`` that ``value`` most likely misspells (``snisp`` for
    snips) or shortens (``promo`` for promotional: three letters or more that begin
    one word only), nearest first, at most ``n``; [] when it is near none. For every
    "did you mean" nextbest says: settings, requests, rules, ids and the data files'
    columns alike.

    A value written as the first or the last words of several choices (``event`` of
    event_id and event_type, ``holdout`` of holdout_rate and holdout_days,
    ``capacity`` of default_capacity and max_capacity) shortens each of them alike:
    they are its near words, as equals, in the order of ``choices``, which
    :func:`near_word` does not choose between. (difflib's ratio, which counts the
    letters not written, named the shortest.) A choice nearer by a slip of spelling
    (``events`` for ``event``) is still named first. Choices as near by difflib's
    ratio are named in the order of ``choices`` too (difflib puts the later in the
    alphabet first), and are not chosen between either.

    Give ``value`` as the words are written (lower case for lower-case words), or
    ``any_case``: compared case aside (a reason code or a territory the user spells),
    the words named as ``choices`` write them. ``words``: a name made of words
    (``rep_visit``, ``unit_cost``) is near a choice too when its words are all words of
    that choice (``visit`` for rep_visit) or the choice's are all words of it
    (``unit_cost`` for cost), for one choice only.
    """
    if any_case:
        written: dict[str, list[str]] = {}
        for choice in choices:
            written.setdefault(choice.casefold(), []).append(choice)
        folded = near_words(value.casefold(), list(written), n=n, words=words)
        return [choice for near in folded for choice in written[near]][:n]
    listed = list(choices)
    if value in listed:  # the word itself (a territory in another case): no other
        return [value]
    near = [choice for _, choice in _close(value, listed)][:n]
    led = [c for c in listed if _shortens(value, c)]
    if len(led) > 1 and (not near or near[0] in led):
        return led[:n]
    if near:
        return near
    begun = [c for c in listed if len(value) >= 3 and c.startswith(value)]
    if len(begun) == 1:
        return begun
    if words:
        own = set(_words(value))
        alike = [c for c in listed if own and (own <= set(_words(c)) or set(_words(c)) <= own)]
        if len(alike) == 1:
            return alike
    return []


def _close(value: str, listed: Sequence[str]) -> list[tuple[float, str]]:
    """The choices of ``listed`` within :data:`NEAR_ENOUGH` of ``value`` by difflib's
    ratio, with it, nearest first, those as near in the order of ``listed``."""
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(value)
    scored = []
    for choice in listed:
        matcher.set_seq1(choice)
        if (
            matcher.real_quick_ratio() >= NEAR_ENOUGH
            and matcher.quick_ratio() >= NEAR_ENOUGH
            and (ratio := matcher.ratio()) >= NEAR_ENOUGH
        ):
            scored.append((ratio, choice))
    return sorted(scored, key=lambda scored_choice: -scored_choice[0])  # stable: ties in order


def _shortens(value: str, choice: str) -> bool:
    """Whether ``value`` (three letters or more) is the first or the last words of
    ``choice``, the rest left off: ``event`` of event_id, not of events; ``capacity``
    of max_capacity."""
    if len(value) < 3 or len(choice) <= len(value):
        return False
    if choice.startswith(value) and not choice[len(value)].isalnum():
        return True
    return choice.endswith(value) and not choice[-len(value) - 1].isalnum()


def _as_near(value: str, first: str, second: str) -> bool:
    """Whether ``value`` is as near ``second`` as ``first`` (see :func:`near_words`):
    it shortens both, or difflib's ratio puts them level."""
    if _shortens(value, first) and _shortens(value, second):
        return True
    return (
        difflib.SequenceMatcher(None, first, value).ratio()
        == difflib.SequenceMatcher(None, second, value).ratio()
    )


def _words(name: str) -> list[str]:
    """The words of a name: its runs of letters and digits."""
    return [word for word in re.split(r"[\W_]+", name) if word]


def near_word(
    value: str, choices: Collection[str], *, any_case: bool = False, words: bool = False
) -> str | None:
    """The word of ``choices`` that ``value`` most likely means, or None when it is
    near none (:func:`near_words`, whose keywords these are), or near several alike
    (it is the first or last words of each: ``event`` of event_id and event_type;
    or as near each by spelling), or, ``any_case``, when the word near is spelled
    two ways in ``choices`` (``Other`` and ``other``): which one was meant cannot be
    told, and one named by chance would send the user the wrong way."""
    near = near_words(value, choices, n=2, any_case=any_case, words=words)
    if not near:
        return None
    if len(near) > 1:
        fold = str.casefold if any_case else str
        first, second, written = fold(near[0]), fold(near[1]), fold(value)
        if (any_case and first == second) or _as_near(written, first, second):
            return None
    return near[0]


def near_hint(
    value: str, choices: Collection[str], *, any_case: bool = False, words: bool = False
) -> str:
    """`` (did you mean 'promotional'?)`` after a refusal of ``value`` from
    ``choices``, naming the word it is near (:func:`near_word`); '' when near none."""
    near = near_word(value, choices, any_case=any_case, words=words)
    return f" (did you mean '{near}'?)" if near is not None else ""


def unknown_key_hint(
    model: Any, loc: Sequence[Any], *, listed: set[tuple[Any, ...]] | None = None
) -> str:
    """What to add to pydantic's "Extra inputs are not permitted" for the key
    ``loc[-1]`` (``loc`` as pydantic gives it, within ``model``): `` (did you mean
    'channel'?)`` naming the key of that place it is near, else `` (allowed here:
    hcp_id, k, ...)`` listing the keys the place takes (:func:`keys_at`), as
    :func:`unknown_name_hint` says it; '' when they are not known. ``listed``: the
    places whose keys were listed already, added to, so that a message of several
    unknown keys lists them once."""
    place = tuple(loc[:-1])
    list_them = listed is None or place not in listed
    hint = unknown_name_hint(str(loc[-1]), keys_at(model, place), list_allowed=list_them)
    if listed is not None and hint.startswith(_ALLOWED_HERE):
        listed.add(place)
    return hint


_ALLOWED_HERE = " (allowed here: "


def unknown_names(
    names: Sequence[Any], allowed: Sequence[str], *, quote: Callable[[str], str] = repr
) -> str:
    """``unknown field 'per_day' (did you mean 'per_days'?)``: the refusal of the keys
    ``names`` of a file's mapping that are not among ``allowed``, each with the field it
    is near (:func:`unknown_name_hint`) and, near none, the fields taken there said
    once. ``quote``: how a name is quoted (a name that may be a secret, written where a
    field goes, is not shown as written)."""
    said, listed = [], False
    for name in map(str, names):
        hint = unknown_name_hint(name, allowed, list_allowed=not listed)
        listed = listed or hint.startswith(_ALLOWED_HERE)
        said.append(f"{quote(name)}{hint}")
    return f"unknown {'field' if len(said) == 1 else 'fields'} {', '.join(said)}"


def unknown_name_hint(name: str, allowed: Sequence[str], *, list_allowed: bool = True) -> str:
    """What to add to the refusal of a name that is not one of ``allowed`` (a key of a
    settings file, a field of a request body, a query parameter): `` (did you mean
    'channel'?)`` naming the one it is near (:func:`near_hint`), else `` (allowed
    here: hcp_id, k, ...)`` listing them, or '' when they are not known (``allowed``
    empty) or, near none, not to be listed again (``list_allowed`` false). Every
    unknown name nextbest refuses is said this one way."""
    near = near_hint(name, allowed)
    if near or not allowed or not list_allowed:
        return near
    return f"{_ALLOWED_HERE}{', '.join(allowed)})"


def keys_at(model: Any, path: Sequence[Any]) -> list[str]:
    """The keys ``model`` takes in the mapping at ``path`` (a pydantic ``loc``), found
    by walking the field types: a nested model's fields, a dict's values (the path
    naming one of its keys), a list's items, the member of a discriminated union
    whose ``Tag`` the path names. ``[]`` when the path leads to no model
    (a plain value, or a union of several kinds). A field no JSON schema shows
    (``SkipJsonSchema``: one kept only to be refused in words of its own) is not
    listed."""
    from pydantic.json_schema import SkipJsonSchema

    kind: Any = model
    rest = list(path)
    while True:
        kind = _one_kind(kind)
        fields = getattr(kind, "model_fields", None) if isinstance(kind, type) else None
        if fields is not None:
            keys = {info.alias or name: info for name, info in fields.items()}
            if not rest:
                return [
                    key
                    for key, info in keys.items()
                    if not any(isinstance(m, SkipJsonSchema) for m in info.metadata)
                ]
            info = keys.get(rest.pop(0))
            if info is None:
                return []
            kind = info.annotation
            continue
        origin, args = get_origin(kind), get_args(kind)
        if not rest or origin is None or not args:
            return []
        if origin is Union or origin is types.UnionType:
            kind = _tagged(args, rest.pop(0))
            continue
        rest.pop(0)  # a dict's key or a list's index
        if isinstance(origin, type) and issubclass(origin, Mapping):
            kind = args[-1]
        elif isinstance(origin, type) and issubclass(origin, Sequence | set | frozenset):
            kind = args[0]
        else:
            return []


def _tagged(kinds: Sequence[Any], tag: Any) -> Any:
    """The one of a discriminated union's ``kinds`` whose ``Tag`` is ``tag`` (as
    pydantic's ``loc`` names it); None (which has no keys) for none."""
    from pydantic import Tag

    for kind in kinds:
        marks = get_args(kind)[1:] if get_origin(kind) is Annotated else ()
        if any(isinstance(mark, Tag) and mark.tag == tag for mark in marks):
            return kind
    return None


def _one_kind(kind: Any) -> Any:
    """``kind`` without ``Annotated`` and an optional ``None``: ``Levers | None`` is
    ``Levers``. A union of several kinds stays as it is (no keys are looked up in it)."""
    while True:
        origin = get_origin(kind)
        if origin is Annotated:
            kind = get_args(kind)[0]
        elif origin is Union or origin is types.UnionType:
            kinds = [k for k in get_args(kind) if k is not type(None)]
            if len(kinds) != 1:
                return kind
            kind = kinds[0]
        else:
            return kind


# PyYAML quotes tokens of the text in some problems (an undefined alias, a tag, a
# key): longer than a character, they are hidden, since they may be a secret. Its
# own token names ('<stream end>') and quoted characters (' ', '\t') are kept.
_QUOTED_TOKEN = re.compile(r"'(?!<)[^'\s]{3,}'|\"(?!<)[^\"\s]{3,}\"")


# What PyYAML says of the usual slips, and what the person who made one would call it.
_HINTS = (
    ("found character '\\t' that cannot start any token", "YAML indents with spaces, not tabs"),
    (
        "expected <block end>, but found",
        "is this line indented as the others of its section?",
    ),
)


def yaml_error_where(error: yaml.YAMLError, *, show_tokens: bool = False) -> str:
    """Where the YAML error is and what is wrong, never the text of the file.

    ``str(error)`` quotes the offending line, fine for a rules file but not for
    one that may hold secrets (API keys written in plaintext): this gives
    ``line 3, column 28: mapping values are not allowed here`` instead (1-based),
    with any token of the text the problem names replaced by ``'...'`` unless
    ``show_tokens`` (a file without secrets: the key written twice is named), and
    for a usual slip (a tab, a line indented wrong) what it likely is.
    """
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = str(error.problem or "")
        hints = [hint for said, hint in _HINTS if problem.startswith(said)]
        if hints:
            problem = f"{problem} ({hints[0]})"
        what = "; ".join(part for part in (problem, str(error.context or "")) if part)
        if not show_tokens:
            what = _QUOTED_TOKEN.sub("'...'", what)
        what = what or "not valid YAML"
        if mark is None:
            return what
        return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
    if isinstance(error, yaml.reader.ReaderError):
        return f"character {error.position + 1}: unacceptable character ({error.reason})"
    return type(error).__name__


def yaml_error_message(where: str, error: yaml.YAMLError) -> str:
    """A YAML error as a value found wrong after parsing is said (see :class:`Place`):
    ``rules.yaml, line 4, column 3: not valid YAML: <problem>``, the tokens it names
    shown (for files without secrets; see :func:`yaml_error_where`)."""
    said = yaml_error_where(error, show_tokens=True)
    if said.startswith(("line ", "character ")):
        place, _, problem = said.partition(": ")
        return f"{where}, {place}: not valid YAML: {problem}"
    return f"{where}: not valid YAML: {said}"
