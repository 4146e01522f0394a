"""YAML configuration files read as a person means them: a key given twice is an error.

PyYAML keeps the last of two equal keys without a word, so a ``seed:`` or a
``max_contacts:`` written twice in a long file silently takes the later value.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            again = key in seen
        except TypeError:  # an unhashable key: SafeLoader reports it below
            continue
        if again:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key!r} a second time",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that raises ``yaml.YAMLError`` for a key given twice."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


# PyYAML quotes tokens of the text in some problems (an undefined alias, a tag, a
# key): longer than a character, they are hidden, since they may be a secret. Its
# own token names ('<stream end>') and quoted characters (' ', '\t') are kept.
_QUOTED_TOKEN = re.compile(r"'(?!<)[^'\s]{3,}'|\"(?!<)[^\"\s]{3,}\"")


def yaml_error_where(error: yaml.YAMLError) -> str:
    """Where the YAML error is and what is wrong, never the text of the file.

    ``str(error)`` quotes the offending line, fine for a rules file but not for
    one that may hold secrets (API keys written in plaintext): this gives
    ``line 3, column 28: mapping values are not allowed here`` instead (1-based),
    with any token of the text the problem names replaced by ``'...'``.
    """
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        what = "; ".join(str(part) for part in (error.problem, error.context) if part)
        what = _QUOTED_TOKEN.sub("'...'", what) or "not valid YAML"
        if mark is None:
            return what
        return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
    if isinstance(error, yaml.reader.ReaderError):
        return f"character {error.position + 1}: unacceptable character ({error.reason})"
    return type(error).__name__
