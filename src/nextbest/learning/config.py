"""Training configuration, read from a YAML file data scientists edit (training/train.yaml)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from nextbest.contract.schema import channel_spelling, near_channel, spelled_as_channels
from nextbest.learning.levers import SCOPES, Levers, listed, parse_levers, read_levers
from nextbest.yamlfile import KeyLines, at_line, read_settings_file, validated

if TYPE_CHECKING:
    import pandas as pd

# LightGBM refuses more leaves per tree than this, with a fatal error once the
# features are built (a traceback after minutes of work), not at the config.
MAX_NUM_LEAVES = 131_072


class LightGBMParams(BaseModel):
    """LightGBM settings of one model; each section of the config has its own defaults.

    Strict: a quoted number ("0.08") or a boolean where a number belongs (``seed:
    true``) is an error naming the key, not a silent conversion.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    n_estimators: int = Field(default=200, ge=1)
    learning_rate: float = Field(default=0.08, gt=0, le=1)
    num_leaves: int = Field(default=31, ge=2, le=MAX_NUM_LEAVES)
    min_child_samples: int = Field(default=50, ge=1, description="Fewest rows in a leaf.")


class EngagementParams(LightGBMParams):
    """The engagement classifier: a 0/1 outcome on every touch, so trees can be deep."""


class UpliftParams(LightGBMParams):
    """The uplift learner's outcome stages.

    They fit a noisy count: many small, well-populated trees (early stopping picks
    how many) find the attribute-driven gains without chasing noise. A stage's
    leaves never need more than 2% of its rows, so small data sets still split.
    """

    n_estimators: int = Field(default=1500, ge=1)
    learning_rate: float = Field(default=0.03, gt=0, le=1)
    num_leaves: int = Field(default=7, ge=2, le=MAX_NUM_LEAVES)
    min_child_samples: int = Field(default=800, ge=1, description="Fewest rows in a leaf.")


class TrainConfig(BaseModel):
    """What a training run learns and how. Every field has a working default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    engagement: EngagementParams = EngagementParams()
    uplift: UpliftParams = UpliftParams()
    calibration_fraction: float = Field(
        default=0.15,
        ge=0,
        lt=1,
        description="Newest share of the engagement rows held out of boosting: it stops "
        "boosting early and calibrates the population model behind the per-HCP effects.",
    )
    eval_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Newest share of decisions held out for evaluation."
    )
    max_training_rows: int | None = Field(
        default=None,
        ge=1000,
        description="Build model rows for at most this many decisions (the newest); their "
        "features and the served snapshot still use all history.",
    )
    max_rows_per_model: int | None = Field(
        default=1_000_000,
        ge=1000,
        description="Each LightGBM fit (engagement, every uplift stage) uses at most this "
        "many rows, a uniform sample in time order; features still use all history.",
    )
    value_per_engagement: dict[str, float] = Field(
        default_factory=dict,
        description="Outcome value of one engagement per channel, for the preference x value "
        "fallback when no outcome or no-touch data exist (default 1.0).",
    )
    levers: Levers = Field(
        default_factory=Levers,
        description="Business levers per channel / topic / content_id (see levers.py); in "
        "YAML either a mapping or the name of a levers file next to the config.",
    )
    # Non-negative: numpy's generators (the row samples of max_rows_per_model and of
    # the offline evaluation) refuse a negative seed, once the data are large enough
    # to be sampled, deep into a run and without naming the key.
    seed: int = Field(default=0, ge=0)
    # Where it was read from, logged with the run (``config.file``, ``config.levers``).
    _source: str = PrivateAttr(default="built-in defaults")
    _levers_source: str = PrivateAttr(default="none")
    # ("levers", scope, key) and ("value_per_engagement", channel), keys as validated
    # (channels spelled as the catalog's) -> "<file>, line N", for catalog_mismatch.
    _places: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        """The config file read, or "built-in defaults"."""
        return self._source

    @property
    def levers_source(self) -> str:
        """The levers file read, "inline", or "none"."""
        return self._levers_source

    def catalog_mismatch(self, catalog: pd.DataFrame) -> str | None:
        """Why the config cannot train on ``catalog``: the lever keys and
        ``value_per_engagement`` channels naming nothing in it, each at its file and
        line, with the value it most likely means and what the catalog has; None when
        every key names a catalog value.

        Such a key changes no score, so the levers a brand asked for would be
        registered with the version without acting: refused before any work, as
        ``validate`` refuses it, rather than said in a note after the training.
        """
        problems = [
            f"{self._place('levers', scope, key)}: {scope}.{key}: {problem}"
            for scope, key, problem in self.levers.unmatched(catalog)
        ]
        scopes = [scope for scope, _, _ in self.levers.unmatched(catalog)]
        channels = set(catalog["channel"].astype(str))
        for key in sorted(set(self.value_per_engagement) - channels):
            near = near_channel(key, channels)
            hint = f" (did you mean '{near}'?)" if near else ""
            problems.append(
                f"{self._place('value_per_engagement', key)}: value_per_engagement.{key}: "
                f"no channel of the catalog is '{key}'{hint}"
            )
            scopes.append("channel")
        if not problems:
            return None
        has = "; ".join(
            listed(scope, set(catalog[scope].astype(str))) for scope in SCOPES if scope in scopes
        )
        return (
            "; ".join(problems) + f" (the catalog's {has}): a key naming nothing in the "
            "catalog changes no score; write it as the catalog does, or take it out"
        )

    def _place(self, *key: str) -> str:
        """The file and line a key of :meth:`catalog_mismatch` was read at."""
        built_in = self._source == TrainConfig().source
        return self._places.get(
            key, "the training config" if built_in else f"training config {self._source}"
        )

    @field_validator("value_per_engagement")
    @classmethod
    def _finite_values_of_catalog_channels(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [f"{key}: {v}" for key, v in value.items() if not (math.isfinite(v) and v >= 0)]
        if bad:
            raise ValueError(f"values must be finite numbers >= 0, got {', '.join(bad)}")
        return spelled_as_channels(value)


# The settings of train.yaml that are mappings (levers aside, read on their own).
SECTIONS = ("engagement", "uplift", "value_per_engagement")


def load_train_config(path: Path | None) -> TrainConfig:
    """Read and validate a training config; ``None`` gives the defaults."""
    if path is None:
        return TrainConfig()
    raw, lines = read_settings_file(path, f"training config {path}", ValueError)
    levers = raw.pop("levers", None)
    # A section left without entries (each one commented out, the file's defaults
    # kept for reference) is its defaults, as an empty `levers:` is and as the rules
    # file reads its sections: YAML reads it as null, which was refused.
    for section in SECTIONS:
        if section in raw and raw[section] is None:
            del raw[section]
    config = validated(TrainConfig, raw, f"training config {path}", lines, ValueError)
    config._places = _places(f"training config {path}", lines, ("value_per_engagement",))
    if isinstance(levers, str):
        # A file name is read next to the config (a copied config takes its levers along).
        where = Path(path).parent / levers
        if not where.is_file():
            raise ValueError(
                f"{at_line(f'training config {path}', lines.line_of(('levers',)))}: "
                f"levers: {where} does not exist (a levers file "
                "name is read next to the config file: copy it there, give a path from "
                "the config's directory, or write the levers inline)"
            )
        config.levers, levers_lines = read_levers(where)
        config._places |= _places(f"levers in {where}", levers_lines, SCOPES)
        config._levers_source = str(where)
    elif levers is not None:
        # Their errors name the lines of train.yaml they are written on.
        source = f"levers in training config {path} (levers)"
        config.levers = parse_levers(
            levers, source=f"training config {path} (levers)", lines=lines.within(("levers",))
        )
        config._places |= _places(source, lines.within(("levers",)), SCOPES)
        config._levers_source = "inline"
    config._source = str(path)
    return config


def _places(source: str, lines: KeyLines, sections: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    """``(section, key) -> "<source>, line N"`` for every key written under one of
    ``sections`` (channels spelled as the catalog's, as validation spells them); a
    levers scope's keys under ``("levers", scope, key)``."""
    out: dict[tuple[str, ...], str] = {}
    for path, line in lines.lines.items():
        if len(path) != 2 or path[0] not in sections:
            continue
        section, key = path[0], str(path[1])
        said = channel_spelling(key) if section in ("channel", "value_per_engagement") else key
        prefix = () if section == "value_per_engagement" else ("levers",)
        out[(*prefix, section, said)] = at_line(source, line)
    return out
