"""The ``nextbest`` command's entry point, as installed (``[project.scripts]``) and as
``python -m nextbest``: the command line (:mod:`nextbest.cli`) is loaded once a stop
that comes while it loads can be said (:func:`nextbest.signals.say_stops_until_started`).
Only the standard library is imported before that."""

from __future__ import annotations

from nextbest import signals


def main() -> None:
    """Run the ``nextbest`` command (:func:`nextbest.cli.main`). A Ctrl-C or SIGTERM
    before the command starts says so in one line and exits 130 or 143; loading the
    command line took half a second and more, during which a scheduler's SIGTERM ended
    it without a word and a Ctrl-C printed a traceback."""
    signals.say_stops_until_started()
    try:
        from nextbest.cli import main as run_command
    except BaseException:
        stopped = signals.stopped_before_start()
        if stopped is None:
            raise
        # Said already; raised wherever the import was (Python wraps a signal in a class
        # being built in a RuntimeError), it ends here with the signal's code alone.
        raise SystemExit(128 + stopped) from None
    try:
        run_command()
    finally:
        signals.command_started()  # a command line that ended before any command ran
