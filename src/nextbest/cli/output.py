"""What a command says and shows: the consoles (results to stdout, the rest to stderr),
notes and errors, progress on a terminal and in a log."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from nextbest.wording import plural as plural  # the commands' counts, said alike

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from nextbest.registry import ModelVersionInfo, VersionSummary


def width(stream: Any) -> int | None:
    """The terminal's width on a terminal (None: Rich finds it) or as COLUMNS says;
    elsewhere (a log file, a pipe) wide enough that a table's cells stay whole:
    at Rich's 80 columns an interval split as '1.9821 [1.8178,' / '2.1464]'."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return None if terminal or os.environ.get("COLUMNS") else 160


# soft_wrap: paths and URLs stay on one line when output goes to a file or pipe.
# Progress, notes and errors go to stderr; a command's result (validate's report,
# models, what simulate, erase, feedback and picks did) to stdout, so
# `nextbest validate --data D > report.txt` keeps it.
console = Console(stderr=True, soft_wrap=True, width=width(sys.stderr))
stdout = Console(soft_wrap=True, width=width(sys.stdout))


class Notes(logging.Handler):
    """What the package logs as a warning, said on the console as a command's own note
    (an error as an error); other libraries' warnings as they are. Without it Python
    printed them bare, and a command that also said so printed it twice. ``nextbest
    serve`` replaces it with JSON lines (its logging config sets the root's handlers).
    A PostgreSQL error's row values are left out, as from those JSON lines: a
    command's console is often a scheduler's log."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        from nextbest.storage.db import without_row_values

        said = escape(without_row_values(record.getMessage()))
        if not record.name.startswith("nextbest"):
            console.print(f"{record.levelname.lower()}: {record.name}: {said}", highlight=False)
        elif record.levelno >= logging.ERROR:
            console.print(f"[red]error:[/red] {said}", highlight=False)
        else:
            console.print(f"[yellow]note:[/yellow] {said}", highlight=False)


def fail(message: str) -> typer.Exit:
    from rich.markup import escape

    # Messages quote files and ids ('[bold]', 'Cardio[/]'): text, never markup.
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=2)


def note(text: str, *, out: Console | None = None, indent: str = "") -> None:
    """Say ``text`` as a note on ``out`` (None: :data:`console`, as it is when the note
    is said); what it quotes from files and ids is not read as markup."""
    from rich.markup import escape

    (console if out is None else out).print(
        f"{indent}[yellow]note:[/yellow] {escape(text)}", highlight=False
    )


# Off a terminal, a step that has said nothing for this long says it is still at work.
HEARTBEAT_S = 60.0


@contextmanager
def working(what: str, *, logged: bool = True) -> Iterator[None]:
    """A spinner saying ``what`` on a terminal; elsewhere (a cron job's log, CI) a
    line when the work starts and one when it is done, as :class:`_Steps` says its
    steps: a spinner is not drawn there, and a long evaluation showed nothing.
    ``what`` is text, not markup: it may quote a path (``data[1]``). ``logged``
    False: the spinner only, for seconds of checks whose refusal is then the only
    line a log has (the steps that follow say the work)."""
    from rich.markup import escape

    if console.is_terminal:
        with console.status(escape(what)):
            yield
        return
    if not logged:
        yield
        return
    started = time.monotonic()
    console.print(f"{what} ...", highlight=False, markup=False)
    yield
    took = timedelta(seconds=round(time.monotonic() - started))
    console.print(f"{what}: done ({took})", highlight=False, markup=False)


class _Steps(Progress):
    """Rich's bar on a terminal; elsewhere (output to a log file, CI) a line per step
    and per tenth of the work, so that a long run is seen moving (a bar that is not
    drawn showed nothing for 11 minutes of training), and one every ``HEARTBEAT_S``
    seconds a step says nothing (fitting the models of a large catalog took 7
    minutes without a line)."""

    def __init__(self) -> None:
        super().__init__(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            # Not drawn elsewhere: the lines below say it, and a bar drawn once at the
            # end came after (so read as) the error that stopped the work.
            disable=not console.is_terminal,
        )
        self._said: dict[TaskID, tuple[str, int]] = {}
        self._quiet = threading.Event()  # set: the heartbeat stops
        self._last_said = time.monotonic()

    def start(self) -> None:
        super().start()
        if not self.console.is_terminal:
            self._quiet.clear()
            threading.Thread(target=self._heartbeat, name="progress", daemon=True).start()

    def stop(self) -> None:
        self._quiet.set()
        super().stop()

    def _heartbeat(self) -> None:
        while not self._quiet.wait(HEARTBEAT_S / 4):
            if time.monotonic() - self._last_said < HEARTBEAT_S:
                continue
            with self._lock:
                for task in self.tasks:
                    if not task.finished:
                        self._print(task, "still at work")

    def _say(self, task_id: TaskID) -> None:
        if self.console.is_terminal:
            return
        task = self._tasks[task_id]
        tenth = int(10 * task.completed / task.total) if task.total else 0
        if self._said.get(task_id) == (task.description, tenth):
            return
        self._said[task_id] = (task.description, tenth)
        self._print(task)

    def _print(self, task: Task, more: str = "") -> None:
        total = f"{task.total:,.0f}" if task.total is not None else "?"
        elapsed = timedelta(seconds=round(task.elapsed or 0))
        self.console.print(
            f"{task.description}: {task.completed:,.0f}/{total} ({elapsed})"
            + (f", {more}" if more else ""),
            highlight=False,
        )
        self._last_said = time.monotonic()

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._say(task_id)
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._say(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._say(task_id)


def steps() -> Progress:
    """Progress for the tasks a command adds (each with its own total): see :class:`_Steps`."""
    return _Steps()


def stage_steps(
    progress: Progress, first: str, total: int
) -> tuple[Callable[[str], None], Callable[[], None]]:
    """What moves a task of ``total`` steps starting at stage ``first`` as training
    says what it is doing (a stage's name counts one step, "stage (detail)" within it
    is shown without counting: see :data:`nextbest.learning.train.Progress`), and what
    completes it, named "done": a log's last line naming the last stage again
    ("register: 6/6") read as that stage still at work."""
    task = progress.add_task(first, total=total)
    stage = [first]

    def step(said: str) -> None:
        name = said.split(" (", 1)[0]
        progress.update(task, advance=int(name != stage[0]), description=said)
        stage[0] = name

    def done() -> None:
        progress.update(task, completed=total, description="done")

    return step, done


def minute(iso: str) -> str:
    """'2026-12-01T10:44:51.71+00:00' -> '2026-12-01 10:44 UTC' (as the tags store it)."""
    return iso[:16].replace("T", " ") + " UTC"


def versions_said(versions: list[str]) -> str:
    """``version 1 was``, ``versions 1 and 2 were``: the versions (each a string)."""
    listed = (
        versions[0] if len(versions) == 1 else ", ".join(versions[:-1]) + " and " + versions[-1]
    )
    return f"{'version' if len(versions) == 1 else 'versions'} {listed} " + (
        "was" if len(versions) == 1 else "were"
    )


def on_a_terminal() -> bool:
    """Whether someone can answer a question here (stdin is a terminal)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def confirmed(question: str) -> bool:
    """The answer to ``question`` on the terminal. No answer (the input ended, Ctrl-C
    or Ctrl-D at the prompt) is a no: the prompt's abort exited 1, which ``erase``
    uses for "erased, but the versions that hold the HCPs are not all known"."""
    try:
        return typer.confirm(question, err=True)
    except typer.Abort:
        console.print()  # the prompt's line ends before the error is said
        return False


def unknown_ids(ids: list[str], unknown: set[str], *, known: Iterable[str]) -> str:
    """The first few ``unknown`` of ``ids`` in their order, each with the known id it
    differs from only in case, leading zeros or a trailing '.0' (the data contract's
    look-alikes): ``h000010 (H000010?)``."""
    import pandas as pd

    from nextbest.contract.validate import LookAlikes
    from nextbest.learning.scoring import listed

    twins = LookAlikes(pd.Index(list(known)))
    named = []
    for hcp in dict.fromkeys(h for h in ids if h in unknown):
        near = twins.of(str(hcp))
        named.append(f"{hcp} ({near}?)" if near is not None else str(hcp))
    return listed(named)


def say_finished(finished: Any) -> None:
    """Say what was written of a decision killed after the champion moved (a
    :class:`~nextbest.registry.UnfinishedDecision`, its ``unwritten`` now written)."""
    if finished is None:
        return
    end = finished.end
    console.print(
        f"[yellow]finished:[/yellow] the {end.named} (replacing {end.replaces or 'none'}; "
        f"MLflow run {end.run_id}) had moved the champion and stopped before it finished: "
        + ("; ".join(finished.unwritten) or "nothing but its mark was left")
        + (" (written now)" if finished.unwritten else " (taken off)"),
        highlight=False,
    )


def edits_said(v: VersionSummary | ModelVersionInfo) -> str | None:
    """Of a version trained from a checkout with uncommitted edits (as listed, or as
    its training registered it): where the patch of those edits is (a local path, else
    its URI), or why there is none."""
    if not (v.source_commit or "").endswith("+modified"):
        return None
    commit = v.source_commit.removesuffix("+modified") if v.source_commit else ""
    edited = f"trained from commit {commit[:12]} with uncommitted edits"
    if v.source_patch is None:
        why = (v.source_patch_note or "").removeprefix("none: ") or (
            "its training run logged none (nextbest logs one since 2026-12-05)"
        )
        return f"{edited}; no patch of them: {why}"
    where = v.source_patch
    if where.startswith("file:"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        where = url2pathname(urlparse(where).path)
    cut = f" ({v.source_patch_note})" if v.source_patch_note else ""
    return (
        f"{edited}: their patch{cut} is {where}; `git apply` it in a checkout of {commit[:12]} "
        "to rebuild that code"
    )
