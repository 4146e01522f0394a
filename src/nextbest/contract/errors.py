"""Errors raised when input data break the contract, and the log that collects them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: Problems reported per file before giving up; the checks are vectorised, so finding
#: more is cheap, but a wall of messages hides the pattern a user needs to see.
MAX_PROBLEMS_PER_FILE = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input.

    Attributes:
        file: file name as the user knows it (e.g. ``interactions.csv``).
        row: 1-based *data* row in the file (the header is not counted, so row 1 is
            the first line after the header): in a CSV file row ``n`` is the one that
            starts on line ``n + 1``, blank lines and the lines of a value written
            over several lines counted (see :class:`RowNumbers`); ``None`` for a
            whole-file or whole-column problem.
        column: column name, or ``None`` when the problem is not about one column.
        message: what is wrong, showing the offending value.
    """

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column {self.column!r}"
        return f"{where}: {self.message}"


class ContractError(ValueError):
    """Input data do not satisfy the data contract.

    ``problems`` lists what was found, at most ``MAX_PROBLEMS_PER_FILE`` per file;
    ``total`` counts every problem found, including those not listed. Each
    problem's ``row`` is the 1-based data row (header not counted; see
    :attr:`Problem.row`). ``hints`` say
    once, after the problems, what to do about a kind of problem that may fill
    many rows (they are not counted in ``total``).
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        *,
        total: int | None = None,
        hints: Sequence[Problem] = (),
    ) -> None:
        self.problems: list[Problem] = list(problems)
        self.total: int = max(total or 0, len(self.problems))
        self.hints: list[Problem] = list(hints)
        super().__init__(self._render())

    def _render(self) -> str:
        noun = "problem" if self.total == 1 else "problems"
        lines = [f"input data break the contract ({self.total:,} {noun}):"]
        lines += [f"  {problem}" for problem in self.problems]
        hidden = self.total - len(self.problems)
        if hidden > 0:
            lines.append(
                f"  ... and {hidden:,} more (the first {MAX_PROBLEMS_PER_FILE} per file are shown)"
            )
        lines += [f"  hint: {hint}" for hint in self.hints]
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce would call __init__ with the rendered message only.
        return (_rebuild_contract_error, (self.problems, self.total, self.hints))

    @classmethod
    def combine(cls, errors: Sequence[ContractError]) -> ContractError:
        """One error listing the problems of several (e.g. one per file)."""
        problems = [problem for error in errors for problem in error.problems]
        hints = [hint for error in errors for hint in error.hints]
        return cls(problems, total=sum(error.total for error in errors), hints=hints)


def _rebuild_contract_error(
    problems: list[Problem], total: int, hints: list[Problem] | None = None
) -> ContractError:
    return ContractError(problems, total=total, hints=hints or ())


class RowNumbers:
    """The row of its file (1-based, header not counted) of each row of a table read
    from one, by 0-based position: ``position + 1``, unless lines of the file hold no
    row (a CSV file's blank lines, the further lines of a value written over several),
    which are counted all the same: row ``n`` starts on line ``n + 1`` of the file, as
    an editor numbers lines, the header being line 1.

    ``rows`` gives, when a number is first asked for (a problem to report), the
    number of every position (shape (n_rows,), ascending), or None where each is
    ``position + 1``: a clean file costs nothing more to read. A table's numbers are
    :func:`~nextbest.contract.files.row_numbers`.
    """

    def __init__(self, rows: Callable[[], npt.NDArray[np.int64] | None] | None = None) -> None:
        self._source = rows
        self._rows: npt.NDArray[np.int64] | None = None

    def _numbers(self) -> npt.NDArray[np.int64] | None:
        if self._source is not None:
            self._rows, self._source = self._source(), None
        return self._rows

    def __call__(self, position: int) -> int:
        """The row of the file at 0-based ``position``."""
        rows = self._numbers()
        return position + 1 if rows is None else int(rows[position])

    def position(self, row: int) -> int:
        """The 0-based position of ``row``, a row of the file this numbered."""
        rows = self._numbers()
        return row - 1 if rows is None else int(np.searchsorted(rows, row))


class ProblemLog:
    """Collects the problems of one file, keeping the first ``limit`` of them, and
    the hints that say once what to do about a kind of them. ``rows`` numbers the
    rows of the table checked as its file does (see :class:`RowNumbers`)."""

    def __init__(
        self,
        file: str,
        *,
        limit: int = MAX_PROBLEMS_PER_FILE,
        rows: RowNumbers | None = None,
    ) -> None:
        self.file = file
        self.limit = limit
        self.rows = rows or RowNumbers()
        self.problems: list[Problem] = []
        self.hints: list[Problem] = []
        self.total = 0

    def add(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        """Record one problem; ``row`` is 1-based, as the file numbers it
        (``self.rows`` gives it from a position)."""
        self.total += 1
        if len(self.problems) < self.limit:
            self.problems.append(Problem(self.file, row, column, message))

    def add_rows(
        self,
        bad: npt.NDArray[np.bool_],
        column: str | None,
        describe: Callable[[int], str],
    ) -> None:
        """Record a problem for every True in ``bad`` (a mask over 0-based positions).

        ``describe`` is called with the 0-based position, only for rows that are kept,
        so it may be slow-ish (it runs at most ``limit`` times).
        """
        positions = np.flatnonzero(bad)
        self.total += len(positions)
        room = self.limit - len(self.problems)
        for position in positions[: max(room, 0)]:
            self.problems.append(
                Problem(self.file, self.rows(int(position)), column, describe(int(position)))
            )

    def hint(self, message: str, *, column: str | None = None) -> None:
        """Say what to do about problems recorded (or to be recorded) in ``column``:
        shown once after them, however many rows they fill, and not counted."""
        said = Problem(self.file, None, column, message)
        if said not in self.hints:
            self.hints.append(said)

    def raise_if_any(self) -> None:
        """Raise a :class:`ContractError` if any problem was recorded."""
        if self.total:
            raise ContractError(self.problems, total=self.total, hints=self.hints)
