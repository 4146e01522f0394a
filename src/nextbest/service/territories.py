"""Which territory each served HCP is in: what rep keys may see and rep plans hold.

By default the territories are the served model's, from the ``territory_id``
column of the hcps file it was trained with. A territory realignment then took a
retrain, a promotion and a reload, and a rollback put the old alignment back,
although territory is no feature of the model. With ``NEXTBEST_TERRITORIES_FILE``
set, a :class:`TerritoryAlignment` read from that file replaces the model's: it is
read when a worker loads a model and re-read at every reload, as the serving rules
are, whichever model is served. HCPs it does not list are in no territory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbest.contract.dataset import load_territories
from nextbest.contract.errors import ContractError
from nextbest.yamlfile import near_words

if TYPE_CHECKING:
    from nextbest.settings import Settings

SETTING = "NEXTBEST_TERRITORIES_FILE"


class TerritoriesError(ValueError):
    """The territory alignment file cannot be used; the message names the file and,
    for a bad cell, its row, column and value."""


@dataclass(frozen=True)
class TerritoryAlignment:
    """``territory_of``: hcp_id -> territory_id, as the file ``source`` lists them.

    Equal alignments (the same file read twice) compare equal, so a reload can
    tell whether the file changed.
    """

    territory_of: Mapping[str, str]
    source: str
    # The first 12 hex digits of the SHA-256 of the file's bytes as read: every
    # worker showing the same one in /readyz applies the same alignment.
    fingerprint: str = ""
    # Why the file could not be read when a worker started (None: it was): the
    # worker then serves every other request, and rep keys and rep plans get 503
    # until the file is fixed (it is tried again every few seconds).
    error: str | None = None

    @classmethod
    def unreadable(cls, path: Path, error: str) -> TerritoryAlignment:
        """The alignment of a worker that started with a file it could not read:
        no HCP in any territory, and ``error`` said to rep keys and in /readyz."""
        return cls(territory_of={}, source=str(path), error=error)

    @classmethod
    def load(cls, path: Path) -> TerritoryAlignment:
        """Read and check ``path`` (.csv or .parquet with ``hcp_id`` and ``territory_id``).

        Raises:
            TerritoriesError: the file is missing or unreadable, lacks a column, has
                no rows or an empty cell, or puts an HCP in two territories.
        """
        try:
            frame = load_territories(path)
        except ContractError as exc:
            raise TerritoriesError(f"territory alignment {path} ({SETTING}): {exc}") from None
        pairs = zip(frame["hcp_id"].tolist(), frame["territory_id"].tolist(), strict=True)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        except OSError:  # replaced between the two reads: the next reload reads it again
            digest = ""
        return cls(territory_of=dict(pairs), source=str(path), fingerprint=digest)

    @classmethod
    def configured(cls, settings: Settings) -> TerritoryAlignment | None:
        """The alignment ``settings`` name; None when the setting is unset (the served
        model's territories apply)."""
        path = settings.territories_file
        return None if path is None else cls.load(path)

    def assign(self, hcp_ids: np.ndarray) -> np.ndarray:
        """The territory of each of ``hcp_ids`` (shape (n,)): an object array of
        ``str``, None for an HCP the file does not list."""
        territory_of = self.territory_of
        return np.array([territory_of.get(h) for h in hcp_ids.tolist()], dtype=object)

    def unknown(self, known: Collection[str]) -> list[str]:
        """The HCPs of the file not in ``known`` (the served model's), in file order."""
        return [h for h in self.territory_of if h not in known]


def rows_by_territory(territory: np.ndarray) -> dict[str, np.ndarray]:
    """Row positions per territory of ``territory`` (one per HCP, None: in no
    territory), each ascending; an HCP in no territory is in none of them."""
    codes, names = pd.factorize(pd.Series(territory, dtype=object), use_na_sentinel=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return {
        str(name): order[bounds[i] : bounds[i + 1]].astype(np.int64) for i, name in enumerate(names)
    }


def territories_without_hcps(rep_territories: Iterable[str], served: Collection[str]) -> list[str]:
    """The territories of ``rep_territories`` (rep keys') with no HCP among the
    ``served`` territories, sorted: each such rep is refused everything."""
    return sorted({t for t in rep_territories if t not in served})


def near_territories(territory_id: str, served: Iterable[str]) -> list[str]:
    """The ``served`` territories that ``territory_id`` (a request's or a rep key's, in
    none of them) most likely misspells, case aside (``t001`` for T001), nearest first,
    at most 3 (:func:`~nextbest.yamlfile.near_words`): territories match exactly, so
    such a typo locks a rep out."""
    return near_words(territory_id.strip(), sorted(map(str, served)), n=3, any_case=True)


def empty_territories_note(
    rep_territories: Iterable[str], served: Collection[str], *, source: str | None = None
) -> list[str]:
    """One note naming the territories of ``rep_territories`` (rep keys') without an
    HCP among the ``served`` territories, by the alignment file ``source`` (None: the
    served model's own territories); [] when every one holds an HCP.

    A rep key of such a territory is refused every HCP: most often a typo in its
    ``territory_id`` (matched exactly: 't001' is not 'T001') or an alignment that
    does not list the territory yet.
    """
    empty = territories_without_hcps(rep_territories, served)
    if not empty:
        return []
    alike = [f"{' or '.join(near)} for {t}" for t in empty if (near := near_territories(t, served))]
    meant = f" (did you mean {', '.join(alike)}? territories match exactly)" if alike else ""
    if source is not None:
        return [
            f"rep keys of territories {', '.join(empty)} have no HCP of the served model in "
            f"{source}{meant}: their requests are refused until it lists some"
        ]
    return [
        f"rep keys of territories {', '.join(empty)} have no HCP of the served model{meant}: "
        "their requests are refused until a model version with some is served (or "
        "their territory_id in the key file is corrected)"
    ]


def alignment_notes(
    alignment: TerritoryAlignment,
    *,
    known: Collection[str],
    territory: np.ndarray,
    served: Collection[str],
    rep_territories: Iterable[str] = (),
    examples: int = 0,
) -> list[str]:
    """What an operator should know of ``alignment`` against the served model: HCPs of
    the file the model does not know (``known``: its HCP ids), its HCPs in no
    territory (``territory``: one per HCP, None for none), and rep keys whose
    territory has no HCP (``served``: the territories holding one). ``examples``:
    how many unknown HCP ids to name (0 in logs, which name no HCP)."""
    notes = []
    unknown = alignment.unknown(known)
    if unknown:
        shown = ", ".join(f"'{h}'" for h in unknown[:examples])
        many = len(unknown) > 1
        notes.append(
            f"{len(unknown):,} HCP{'s' if many else ''} of {alignment.source} "
            f"{'are' if many else 'is'} not known to the served model"
            f"{f' (e.g. {shown})' if shown else ''}: {'they are' if many else 'it is'} "
            f"served once a model trained with {'them' if many else 'it'} is"
        )
    unplaced = int(sum(t is None for t in territory.tolist()))
    if unplaced:
        many = unplaced > 1
        notes.append(
            f"{unplaced:,} HCP{'s' if many else ''} of the served model "
            f"{'are' if many else 'is'} in no territory of {alignment.source}: no rep key "
            f"sees {'them' if many else 'it'} (admin and channel keys do)"
        )
    notes += empty_territories_note(rep_territories, served, source=alignment.source)
    return notes
