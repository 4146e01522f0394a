"""``picks``: the best actions for every HCP of a file, written as a file, optionally
logged as served."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nextbest.cli.options import (
    DECISION_DATE,
    DecisionDateOpt,
    PurposeOpt,
    check_dir_to_write,
    check_rules_file,
    data_dir,
    note_missing_log,
    parse_decision_date,
    path_error,
    read_settings,
    refuse_missing_models_dir,
)
from nextbest.cli.output import console, fail, note, plural, stdout, steps, unknown_ids
from nextbest.cli.process import ignore_signals_from_now_on, interruptible_as_ctrl_c
from nextbest.settings import Settings, without_password

if TYPE_CHECKING:  # the service is imported as the command runs
    from nextbest.service.picks import HistoryMove, NoPick


def picks(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output file: .csv or .parquet.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Directory with hcps and catalog (interactions are not read): picks for "
            "every HCP.",
        ),
    ] = None,
    hcps: Annotated[
        Path | None,
        typer.Option(
            "--hcps",
            help="Instead of --data: a send list (.csv or .parquet) with an hcp_id column "
            "and, optionally, specialty and consent_<channel> columns; picks for its HCPs.",
        ),
    ] = None,
    channel: Annotated[str | None, typer.Option(help="Only actions on this channel.")] = None,
    k: Annotated[int, typer.Option(min=1, max=50, help="Actions per HCP.")] = 1,
    as_of: DecisionDateOpt = None,
    purpose: PurposeOpt = "promotional",
    log: Annotated[
        bool,
        typer.Option(
            "--log",
            help="For a file that will be sent: serve each HCP as the batch endpoint "
            "does (exploration, holdout) and log it; adds recommendation_id, "
            "propensity and explored.",
        ),
    ] = False,
    new_holdout_rate: Annotated[
        bool,
        typer.Option(
            "--new-holdout-rate",
            help="With --log: the holdout rate (NEXTBEST_HOLDOUT_RATE) was changed on "
            "purpose; log at it although the newest logged answers used another.",
        ),
    ] = False,
) -> Path:
    """Write the best actions for every HCP in the data's hcps file, or in a send list.

    Ranked by the served version (alias NEXTBEST_SERVE_ALIAS) under the serving rules
    (NEXTBEST_RULES_FILE, else training/rules.yaml in the working directory, which
    must exist; an empty file applies none) and the logged contact history, as the
    API ranks. With NEXTBEST_FRESH_HISTORY on, the model's history is moved on to the
    picks' day by the contacts logged since its cut-off, as the server moves it each
    day. Without --log nothing is logged (a log not made yet is read as empty,
    and said). Exit code 2 when nothing was written (a bad option, file or setting;
    another run writing --out; with --log, another holdout rate than the log's, or a
    NEXTBEST_DATABASE_URL file that does not exist)."""
    from nextbest import registry
    from nextbest.contract import (
        ContractError,
        load_hcps_and_catalog,
        load_send_list,
        write_table,
    )
    from nextbest.contract.notes import consent_notes
    from nextbest.errors import InvalidRequestError, NextbestError
    from nextbest.policy.rules import RulesError
    from nextbest.service.picks import (
        HistoryMove,
        NoPick,
        catalog_notes,
        check_picks,
        file_picks,
        logged_picks,
        specialty_notes,
        unread_column_notes,
    )

    if (data is None) == (hcps is None):
        raise fail("give --data DIR (every HCP of its hcps file) or --hcps FILE (a send list)")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise fail(f"--out must end in .csv or .parquet, got '{out.name}'")
    if out.is_dir():
        raise fail(f"--out: {out} is a directory; name the file to write")
    _refuse_out_over_input(out, data=data, hcps=hcps)
    # Before any scoring: an unwritable place must not cost the whole run. Made
    # once the stores are checked: a refused run leaves no directory behind.
    check_dir_to_write(out.parent, "--out")
    on = parse_decision_date(as_of, DECISION_DATE)
    settings = read_settings()
    if new_holdout_rate and not log:
        raise fail("--new-holdout-rate is for --log runs: plain picks draw no holdout")
    refuse_missing_models_dir(settings, "registry")
    if log:  # before reading the data: a refused run costs nothing
        refuse_missing_models_dir(
            settings,
            "log",
            writes_for_others="these answers would be logged as served in a new "
            "recommendation log there that no server, uplift report or retrain reads",
        )
        _check_holdout_rate(settings, changed=new_holdout_rate)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # made meanwhile where a directory of --out is to be
        raise fail(f"--out: {path_error(exc)}") from None
    # Held until the command ends, before a note on earlier sends is said: a run
    # started while another writes the same file would see none of its answers.
    ctx.with_resource(_writing_alone(out))
    # The day's HCPs and actions only: the history is not needed to pick (the model
    # knows it to its as-of, the log since), and reading it took longer than the picks.
    given: tuple[Any, Any] | None = None
    if data is not None:
        try:
            given = load_hcps_and_catalog(data_dir(data))
        except ContractError as exc:
            raise fail(str(exc)) from None
    rules = check_rules_file(settings)
    try:
        model, version = registry.load_alias(settings)
    except registry.RegistryError as exc:
        raise fail(str(exc)) from None
    # The files' consent, specialties and approval windows apply, not only the model's.
    if given is not None:
        given_hcps, given_catalog = given
    else:
        assert hcps is not None
        try:
            given_hcps, given_catalog = load_send_list(hcps, catalog=model.catalog), None
        except ContractError as exc:
            raise fail(f"--hcps: {exc}") from None
    try:
        check_picks(model, k=k, channel=channel, purpose=purpose, on=on, check_on=True)
    except InvalidRequestError as exc:
        raise fail(f"--{exc.field}: {exc.message}") from None
    # Rules for channels the catalog lacks are noted when the rules are applied (the
    # package's warnings are the command's notes, see Notes).
    hcp_ids = list(given_hcps["hcp_id"])
    unknown = set(hcp_ids) - set(model.hcps["hcp_id"])
    # Logged as servers answer: with a share for the challenger, it answers those of
    # them it knows (HCPs added since the served version was trained), said once done.
    to_challenger = (
        log and bool(unknown) and registry.challenger_beside(settings, version) is not None
    )
    if unknown:
        one = len(unknown) == 1
        what = (
            "; the challenger answers those it knows (NEXTBEST_CHALLENGER_SHARE), the "
            "others get no picks"
            if to_challenger
            else " (HCPs new since the model was trained get picks once a retrained version "
            "is served)"
        )
        note(
            f"{len(unknown):,} {'HCP is' if one else 'HCPs are'} not in "
            f"model version {version}'s snapshot"
            + ("" if to_challenger else f" and {'gets' if one else 'get'} no picks")
            + f": {unknown_ids(hcp_ids, unknown, known=model.hcps['hcp_id'])}; ids are "
            f"compared exactly, case included{what}"
        )
    asked = hcp_ids if to_challenger else [h for h in hcp_ids if h not in unknown]
    noted = model.evidence.notes(model.catalog)
    if given is None:  # a send list's specialties: a typo loses specialty-bound actions
        noted += [
            *unread_column_notes(given_hcps),
            *specialty_notes(model, version, hcps=given_hcps),
        ]
    if given_catalog is not None:
        noted += [
            *consent_notes(given_hcps, given_catalog),
            *catalog_notes(model, version, catalog=given_catalog),
        ]
    for said in noted:
        note(said)
    if log:
        _note_logged_for_day(settings, asked, on=on)
    with (
        steps() as progress,  # the HCPs scored: the unknown are skipped
        interruptible_as_ctrl_c() if log else contextlib.nullcontext(),
    ):
        task = progress.add_task("scoring HCPs", total=len(asked))

        def advance(n: int) -> None:
            progress.advance(task, n)

        logged = None
        no_pick = NoPick()  # of plain picks; --log's come with its answers
        history_move = HistoryMove()  # the same
        # --log: the file is written (beside --out) before any answer is logged, and
        # takes --out's name once they are: an interrupted run logs no answer that
        # no file holds, and leaves no file whose answers are not logged.
        partial = _partial_beside(out)

        def write_partial(frame: Any) -> None:
            try:
                write_table(frame, partial)
            except OSError as exc:
                raise fail(f"--out: {exc}") from None

        def publish() -> None:
            """Give the logged file its name; from then on the run is done, and a
            late Ctrl-C or SIGTERM (held until now) must not make it look failed."""
            _replace_keeping_mode(partial, out)
            ignore_signals_from_now_on()

        try:
            # Serving rules and live contact history apply, as for the API.
            if log:
                try:
                    logged = logged_picks(
                        settings,
                        hcp_ids=asked,
                        k=k,
                        channel=channel,
                        purpose=purpose,
                        on=on,
                        progress=advance,
                        hcps=given_hcps,
                        catalog=given_catalog,
                        before_logging=write_partial,
                        after_logging=publish,
                    )
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
                frame = logged.frame
            else:
                frame = file_picks(
                    settings,
                    model,
                    version=version,
                    hcp_ids=hcp_ids,
                    k=k,
                    channel=channel,
                    purpose=purpose,
                    on=on,
                    progress=advance,
                    hcps=given_hcps,
                    catalog=given_catalog,
                    rules=rules,
                    no_pick=no_pick,
                    history_move=history_move,
                )
        except RulesError as exc:  # strict rules that do not fit this version's catalog
            raise fail(
                f"model '{settings.model_name}' version {version} (alias "
                f"'{settings.serve_alias}'): {exc}"
            ) from None
        except NextbestError as exc:  # --log names the served version itself
            raise fail(str(exc)) from None
    if logged is None:
        # Written beside --out and renamed once complete: a write that fails (a full
        # disk, a quota, Ctrl-C) leaves an earlier file of that name as it was, not
        # cut short where a send system would take it for the whole list. A
        # scheduler's SIGTERM during the write removes the partial file too.
        with interruptible_as_ctrl_c():
            try:
                write_table(frame, partial)
                publish()
            except BaseException as exc:
                partial.unlink(missing_ok=True)
                if isinstance(exc, OSError):
                    raise fail(f"--out: cannot write {out}: {exc.strerror or exc}") from None
                raise
    fingerprint = rules.fingerprint
    beside = ""
    if logged is not None and logged.challenger_version is not None:
        beside = f" and challenger {logged.challenger_version} for its share"
    if logged is not None:
        version = logged.model_version  # the champion when the answers were served
        fingerprint = logged.rules_fingerprint  # and the rules they were made under
        newcomers = len(unknown) - len(logged.unknown) if to_challenger else 0
        unknown = set(logged.unknown) if to_challenger else unknown
    # What was written and logged on stdout (--out is required: the picks never are),
    # with the rules applied: a file is not logged, and an audit asks which rules made it.
    stdout.print(
        f"wrote {plural(len(frame), 'pick')} for {frame['hcp_id'].nunique():,} of "
        f"{plural(len(hcp_ids), 'HCP')} "
        f"to {out} (model version {version}{beside}, rules {fingerprint} of "
        f"{Path(rules.source).name})",
        highlight=False,
    )
    say_history_move(logged.history_move if logged is not None else history_move)
    _note_no_pick(
        logged.no_pick if logged is not None else no_pick,
        of=len(hcp_ids) - len(unknown),
        explain=_explain_options(channel=channel, purpose=purpose, as_of=as_of),
        send_list=given is None,
    )
    if logged is not None:
        stdout.print(
            f"logged {plural(logged.n_logged, 'answer')} as served ({logged.n_holdout:,} held out: "
            "no pick); send each pick's recommendation_id with its feedback so it joins "
            "the loop",
            highlight=False,
        )
        if logged.challenger_version is not None:
            stdout.print(
                f"{plural(logged.n_by_challenger, 'answer')} of them by the challenger, version "
                f"{logged.challenger_version} (NEXTBEST_CHALLENGER_SHARE "
                f"{settings.challenger_share:g}), as the batch endpoint answers its share of "
                "HCPs: each pick's model_version names the version that chose it",
                highlight=False,
            )
        if to_challenger:
            stdout.print(
                f"{plural(newcomers, 'HCP')} not in version {version}'s snapshot "
                f"{'was' if newcomers == 1 else 'were'} answered by the challenger, which "
                f"knows {'it' if newcomers == 1 else 'them'}; "
                f"{plural(len(unknown), 'HCP')} no version knows got no picks",
                highlight=False,
            )
        if logged.erased:
            console.print(
                f"[yellow]note:[/yellow] {plural(len(logged.erased), 'HCP')} erased while "
                "the picks were made: left out of the file and the log",
                highlight=False,
            )
    else:
        note_missing_log(settings)  # read as an empty contact history, not made
        console.print(
            "[dim]not logged as served: outcomes of sends from this file cannot be measured; "
            "use --log for a file that will be sent[/dim]"
        )
        _note_challenger_share(settings)
    return out


def _note_challenger_share(settings: Settings) -> None:
    """Say that these picks, not logged, are the served version's alone where a
    challenger answers a share of HCPs (NEXTBEST_CHALLENGER_SHARE) with --log."""
    from nextbest import registry

    if settings.challenger_share <= 0:
        return
    challenger = registry.alias_version(settings, registry.CHALLENGER_ALIAS)
    if challenger is None or challenger == registry.alias_version(settings, settings.serve_alias):
        return
    note(
        f"ranked by the served version alone: with --log, the challenger (version "
        f"{challenger}) answers its share of HCPs (NEXTBEST_CHALLENGER_SHARE "
        f"{settings.challenger_share:g}), as the batch endpoint does"
    )


def say_history_move(move: HistoryMove) -> None:
    """Say the history the picks (or ``explain``) were scored with when
    NEXTBEST_FRESH_HISTORY moved it (on stdout, with what was written), or why it
    could not."""
    if move.day is not None:
        stdout.print(
            f"history moved to {move.day:%Y-%m-%d} by {plural(move.contacts, 'contact')} "
            f"since the cut-off ({move.engaged:,} engaged)",
            highlight=False,
        )
    elif move.cannot is not None:
        note(f"NEXTBEST_FRESH_HISTORY is on, but {move.cannot}")


def _explain_options(*, channel: str | None, purpose: str, as_of: str | None) -> str:
    """The options of ``nextbest explain`` that ask what a picks run with these asked."""
    said = f" --channel {channel}" if channel is not None else ""
    if purpose != "promotional":
        said += f" --purpose {purpose}"
    return said + (f" --as-of {as_of}" if as_of is not None else "")


def _note_no_pick(no_pick: NoPick, *, of: int, explain: str, send_list: bool) -> None:
    """Say how many of the ``of`` HCPs scored got no pick (held-out ones aside) and why,
    with the ``nextbest explain`` (its options: ``explain``) that shows it for one of
    them: a send of 148 picks for 300 HCPs said nothing of the other 152."""
    none_allowed, none_worth = no_pick.none_allowed, no_pick.none_worth
    n = len(none_allowed) + len(none_worth)
    if not n:
        return
    why = []
    if none_allowed:
        why.append(
            f"for {len(none_allowed):,} no action is allowed (consent, specialty, approval, "
            "purpose, --channel or the serving rules' caps, cool-downs and dismissals)"
        )
    if none_worth:
        why.append(f"for {len(none_worth):,} nothing allowed is worth its cost")
    example = (none_worth or none_allowed)[0]
    aside = " (its consent and specialty as the model has them, not as the send list's)"
    note(
        f"{n:,} of {plural(of, 'HCP')} got no pick: {', '.join(why)}; "
        f"`nextbest explain {example}{explain}` says why for one{aside if send_list else ''}"
    )


def _note_logged_for_day(
    settings: Settings, hcp_ids: list[str], *, on: datetime | date | None
) -> None:
    """Say when HCPs of this ``picks --log`` run already got answers logged by an
    earlier ``picks --log`` decided for the day this run decides for (``on``, today
    without it; UTC): each logged answer counts as served, so of two files for them
    only one may be sent (the uplift report and the gate take the other's answers as
    sends)."""
    from nextbest.service.recommend import decision_time
    from nextbest.storage.db import store_session
    from nextbest.storage.repository import hcps_logged_for_day

    # The day decided for, not the day logged on: a send rerun just after midnight
    # for the same day is a repeat, and a file for yesterday written today is not
    # one of today's send. Not the last 24 hours either, which would tell a daily
    # send job every day.
    day = decision_time(on).date()
    with store_session(settings.resolved_database_url) as session:
        earlier = hcps_logged_for_day(session, day=day, requester_prefix="nextbest picks (")
    again = len(earlier.intersection(hcp_ids))
    if again:
        console.print(
            f"[yellow]note:[/yellow] {again:,} of these HCPs already have answers logged "
            f"for {day.isoformat()} (UTC) by an earlier send (`nextbest picks --log`): "
            "every logged answer counts as served, so send one file for them, not both",
            highlight=False,
        )


@contextlib.contextmanager
def _writing_alone(out: Path) -> Iterator[None]:
    """Hold the lock of the file ``out`` names while this run makes and writes it.

    Two runs writing one file at once (a send job started twice) each logged its
    answers as served, with only the later run's file left to send: half the
    answers logged, sent to nobody. The lock is ``flock`` on ``.NAME.lock`` beside
    the file, holding the holder's process id; a second run is refused, naming it.
    The lock file is removed as the run ends; a run that locked it just as it was
    removed tries the new one, so two runs never hold two files of one name."""
    from nextbest.locking import try_flock

    target = Path(os.path.realpath(out))
    lock = target.with_name(f".{target.name}.lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise fail(f"--out: {path_error(exc)}") from None
        if not try_flock(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise fail(
                f"--out: another `nextbest picks` run "
                f"{f'(process {holder}) ' if holder.isdigit() else ''}is writing {out} "
                f"(it holds {lock}): of two runs writing one file only the later's is "
                "kept, while with --log both log their answers as served; run this one "
                "again when it has ended, or give another --out"
            )
        with contextlib.suppress(FileNotFoundError):
            now, held = os.stat(lock), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                break
        os.close(fd)  # removed by a run that ended meanwhile: lock the file now there
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)  # releases the lock


def _refuse_out_over_input(out: Path, *, data: Path | None, hcps: Path | None) -> None:
    """Refuse an ``out`` that names what the run reads: the ``--hcps`` send list, or a
    table of the ``--data`` directory (``hcps``, ``catalog``, ``interactions``, as CSV
    or Parquet). The picks replaced the send list, or the data's hcps file, which the
    next picks or train then refused as no HCP file (a table written in the other
    format beside one made the directory hold both, refused too)."""
    from nextbest.contract.schema import FORMATS, TABLES

    target = os.path.realpath(out)
    if hcps is not None and target == os.path.realpath(hcps):
        raise fail(
            f"--out: {out} is the --hcps file: the picks would replace the send list; "
            "name another file"
        )
    if data is None:
        return
    for table in TABLES:
        for fmt in FORMATS:
            if target == os.path.realpath(data / f"{table}.{fmt}"):
                harm = (
                    "the picks would replace it"
                    if os.path.lexists(target)
                    else f"the picks beside its {table} file in the other format would make "
                    "the directory hold two, refused as data"
                )
                raise fail(
                    f"--out: {out} is the {table} table of --data {data}: {harm}; name a "
                    "file elsewhere"
                )


def _partial_beside(out: Path) -> Path:
    """Where a run writes its file before giving it ``out``'s name: hidden, beside
    the file ``out`` names (through a symlink, which keeps pointing at it), and this
    run's own, so that two runs writing to one name never write into one file."""
    target = Path(os.path.realpath(out))
    return target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")


def _replace_keeping_mode(partial: Path, out: Path) -> None:
    """Give ``partial`` the name of the file ``out`` names, with that file's
    permissions when it exists (a file a send system's group may read stays so)."""
    target = Path(os.path.realpath(out))
    with contextlib.suppress(FileNotFoundError):
        shutil.copymode(target, partial)
    partial.replace(target)


def _check_holdout_rate(settings: Settings, *, changed: bool = False) -> None:
    """Stop ``picks --log`` when its holdout rate is not the recommendation log's.

    The holdout draw compares one hash per HCP and week with the rate, so a run
    with another rate than the server's holds out other HCPs: it would send picks
    to HCPs the server keeps in its control group, and log answers under a second
    rate. The newest logged answer stands for the deployment's rate; with nothing
    logged yet, any rate goes.
    """
    from nextbest.policy.exploration import same_holdout_rate
    from nextbest.storage.db import UNAVAILABLE_ERRORS, describe_database_error, store_session
    from nextbest.storage.repository import latest_holdout_rate

    url = settings.resolved_database_url
    try:
        with store_session(url) as session:
            logged = latest_holdout_rate(session)
    except ValueError as exc:  # a backend other than SQLite or PostgreSQL
        raise fail(f"NEXTBEST_DATABASE_URL: {exc}") from None
    except UNAVAILABLE_ERRORS as exc:
        raise fail(
            f"cannot reach the database {without_password(url)} (NEXTBEST_DATABASE_URL): "
            f"{describe_database_error(exc)}"
        ) from None
    rate = settings.holdout_rate
    if logged is not None and not same_holdout_rate(rate, logged) and changed:
        console.print(
            f"holdout rate changed on purpose (--new-holdout-rate): logging at {rate:g}, "
            f"where the newest logged answer was served at {logged:g}",
            highlight=False,
        )
    elif logged is not None and not same_holdout_rate(rate, logged):
        raise fail(
            f"the holdout rate here is {rate:g} (NEXTBEST_HOLDOUT_RATE) but the newest "
            f"answers logged in {without_password(url)} were served with holdout rate "
            f"{logged:g}: this run would hold out other HCPs than the server does (sending "
            "picks to HCPs of its control group) and mix two rates in the log. Run with "
            f"NEXTBEST_HOLDOUT_RATE={logged:g}, the rate of the newest logged answer (give "
            "servers and picks runs one rate), or, if the rate was changed on purpose "
            "(servers too), add --new-holdout-rate"
        )
