"""Business levers: how the business bends the arbitration score, per channel, topic, content.

The arbitration score of an action for an HCP is

    net = weight(a) * expected_incremental_value - cost(a) * cost_weight(a) + offset(a)

with ``weight`` and ``cost_weight`` the products, and ``offset`` the sum, of the
entries for the action's ``channel``, ``topic`` and ``content_id`` (1, 1 and 0
where none is given). An action is offered only when ``net > 0``, so an offset
below 0 raises the bar ("only visit when it clearly pays") and one above 0
pushes a strategic launch. Levers live in ``training/levers.yaml`` and are
logged with every run; they are applied at scoring time, so the API and batch
picks use the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nextbest.contract.schema import channel_spelling, near_channel, spelled_as_channels
from nextbest.yamlfile import KeyLines, read_settings_file, validated

SCOPES = ("channel", "topic", "content_id")


class Lever(BaseModel):
    """One lever entry; every field is optional.

    Strict, as train.yaml is: a quoted number (``weight: '1.5'``) or a boolean
    (``cost_weight: true``) is an error naming the key, not a silent 1.5 or 1.0.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    # Finite only: an infinite offset made scores of Infinity (not JSON) and NaN
    # silently closed the channel.
    weight: float = Field(
        default=1.0, ge=0, allow_inf_nan=False, description="Multiplies expected incremental value."
    )
    cost_weight: float = Field(
        default=1.0, ge=0, allow_inf_nan=False, description="Multiplies the action's cost."
    )
    offset: float = Field(
        default=0.0, allow_inf_nan=False, description="Added to the score, outcome units."
    )

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        """An entry whose settings are all commented out (YAML reads it as null) is a
        neutral lever, as an empty section of train.yaml is its defaults; anything
        else that is no mapping is said in the file's terms, not as "instance of
        Lever"."""
        if data is None:
            return {}
        if not isinstance(data, dict | Lever):
            raise ValueError(
                f"a lever is a mapping of weight, cost_weight and offset, such as "
                f"{{offset: -0.01}}, not {data!r}"
            )
        return data


class Levers(BaseModel):
    """Levers by scope; keys are channel names, topics and content ids of the catalog."""

    model_config = ConfigDict(extra="forbid")

    channel: dict[str, Lever] = Field(default_factory=dict)
    topic: dict[str, Lever] = Field(default_factory=dict)
    content_id: dict[str, Lever] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _sections_left_empty_are_none(cls, data: Any) -> Any:
        """A scope whose entries are all commented out (``channel:`` over the file's
        examples) is YAML's null: no levers of that scope, as an empty section of
        train.yaml is its defaults (it was refused as "not a valid dictionary")."""
        if isinstance(data, dict):
            return {
                key: {} if key in SCOPES and value is None else value for key, value in data.items()
            }
        if data is not None and not isinstance(data, Levers):
            raise ValueError(
                "levers are a mapping of up to three sections, channel, topic and "
                f"content_id, each naming catalog values; not {data!r}"
            )
        return data

    @field_validator("channel")
    @classmethod
    def _channels_as_catalogs_spell_them(cls, value: dict[str, Lever]) -> dict[str, Lever]:
        """'Email' and 'Rep Visit' are the catalog's email and rep_visit."""
        return spelled_as_channels(value)

    def is_neutral(self) -> bool:
        return not (self.channel or self.topic or self.content_id)

    def per_action(self, catalog: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(weight, cost_weight, offset)`` per catalog row, each shape ``(n_actions,)``."""
        n = len(catalog)
        weight, cost_weight, offset = np.ones(n), np.ones(n), np.zeros(n)
        for scope in SCOPES:
            entries: dict[str, Lever] = getattr(self, scope)
            if not entries:
                continue
            keys = catalog[scope].astype(str).to_numpy()
            for key, lever in entries.items():
                hit = keys == key
                weight[hit] *= lever.weight
                cost_weight[hit] *= lever.cost_weight
                offset[hit] += lever.offset
        return weight, cost_weight, offset

    def per_action_text(self, catalog: pd.DataFrame) -> list[str]:
        """Per catalog row, the levers that bend its score in words ("value x1.5,
        cost x3, offset -0.2"), or "" when none does: reasons and exclusions state
        them, so that their numbers add up to the net value served."""
        weight, cost_weight, offset = self.per_action(catalog)
        out = []
        for w, c, o in zip(weight.tolist(), cost_weight.tolist(), offset.tolist(), strict=True):
            parts = [f"value x{w:g}"] if w != 1 else []
            parts += [f"cost x{c:g}"] if c != 1 else []
            parts += [f"offset {o:+g}"] if o != 0 else []
            out.append(", ".join(parts))
        return out

    def unmatched(self, catalog: pd.DataFrame) -> list[tuple[str, str, str]]:
        """``(scope, key, problem)`` of each lever key matching nothing in the catalog,
        the problem naming the catalog value it most likely means (see
        :func:`_near_value`)."""
        said = []
        for scope, key, known in self._unknown(catalog):
            near = _near_value(key, known)
            if near is None:
                hint = ""
            elif scope == "channel":  # spelled as the catalog's already: a typo
                hint = f" (did you mean '{near}'?)"
            else:
                hint = (
                    f" (the catalog has '{near}': a {scope} is matched exactly as the "
                    "catalog writes it)"
                )
            said.append((scope, key, f"no {scope} of the catalog is '{key}'{hint}"))
        return said

    def unknown_keys(self, catalog: pd.DataFrame) -> list[str]:
        """Lever keys that match no catalog row, as ``scope.key`` (likely typos)."""
        return [f"{scope}.{key}" for scope, key, _ in self._unknown(catalog)]

    def _unknown(self, catalog: pd.DataFrame) -> list[tuple[str, str, set[str]]]:
        """(scope, key, the catalog's values in that scope) of each key matching none."""
        missing = []
        for scope in SCOPES:
            known = set(catalog[scope].astype(str)) if scope in catalog else set()
            missing += [(scope, key, known) for key in getattr(self, scope) if key not in known]
        return missing

    def as_params(self) -> dict[str, float | str]:
        """Flat ``levers.<scope>.<key>.<field>`` entries for run parameters; ``levers:
        none`` when there are none (a run says so rather than saying nothing)."""
        if self.is_neutral():
            return {"levers": "none"}
        out: dict[str, float | str] = {}
        for scope in SCOPES:
            for key, lever in getattr(self, scope).items():
                for name, value in lever.model_dump().items():
                    out[f"levers.{scope}.{key}.{name}"] = value
        return out


def listed(scope: str, known: set[str], most: int = 12) -> str:
    """``channels: email, rep_visit``: what a key of ``scope`` may name (the first
    ``most``, then how many more)."""
    values = sorted(known)
    shown = ", ".join(values[:most])
    more = f" and {len(values) - most:,} more" if len(values) > most else ""
    return f"{scope}s: {shown or 'none'}{more}"


def _near_value(key: str, known: set[str]) -> str | None:
    """The catalog value a lever key matching none most likely means, found as a
    misspelt channel is (:func:`~nextbest.contract.schema.near_channel`): the same
    but for case, spaces, '-' or '_' ('Dosing' for the catalog's 'dosing', 'New
    Indication' for 'new_indication'), or a near miss; None when none is near. The
    catalog keeps topics and content ids as written, so the key is not matched to
    it, only named."""
    by_spelling = {channel_spelling(value): value for value in sorted(known)}
    near = near_channel(key, by_spelling)
    return None if near is None else by_spelling[near]


def load_levers(path: Path) -> Levers:
    """Read and validate a levers file; errors name the file and the entry."""
    return read_levers(path)[0]


def read_levers(path: Path) -> tuple[Levers, KeyLines]:
    """:func:`load_levers`, and where each key path of the file sits (for problems
    found later, against the catalog)."""
    raw, lines = read_settings_file(path, f"levers file {path}", ValueError)
    return parse_levers(raw, source=str(path), lines=lines), lines


def parse_levers(raw: Any, *, source: str, lines: KeyLines | None = None) -> Levers:
    """Validate levers given as a mapping; ``source`` names where they came from and
    ``lines`` (when read from a file) where each of their key paths sits in it."""
    return validated(Levers, raw, f"levers in {source}", lines, ValueError)
