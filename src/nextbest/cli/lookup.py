"""``lookup`` and ``explain``: logged answers, an HCP's history and the maintenance trail
looked up, and the served model's answer for one HCP explained."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from nextbest.cli.options import (
    DECISION_DATE,
    DecisionDateOpt,
    PurposeOpt,
    challenger_answering,
    check_rules_file,
    model_asked,
    note_missing_log,
    parse_decision_date,
    read_settings,
    refuse_missing_models_dir,
)
from nextbest.cli.output import fail, note, plural, stdout, working
from nextbest.settings import Settings, without_password


def lookup(
    recommendation_id: Annotated[
        str | None,
        typer.Argument(
            help="A recommendation_id, as an answer or a feedback event has it.",
            show_default=False,
        ),
    ] = None,
    hcp: Annotated[
        str | None,
        typer.Option(
            "--hcp",
            help="Instead: an HCP's newest answers and feedback events (a ticket about "
            "an HCP, not an answer).",
        ),
    ] = None,
    maintenance: Annotated[
        bool,
        typer.Option(
            "--maintenance",
            help="Instead: the prunes and erasures run on the store, newest first: who, "
            "when, the cutoff, the rows deleted, and whether each finished.",
        ),
    ] = False,
    rules: Annotated[
        str | None,
        typer.Option(
            "--rules",
            help="Instead: the serving rules file an answer names by its fingerprint "
            "(`rules 1f0c2a9b7d41`), as the workers that read it stored it.",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1, max=1000, help="With --hcp: at most this many of each; --maintenance: runs."
        ),
    ] = 20,
    with_models: Annotated[
        bool,
        typer.Option(
            "--models",
            help="With --hcp: also the registered model versions whose served snapshot "
            "holds the HCP's attributes and history features (an access request; each "
            "version is loaded, seconds apiece).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the record as JSON instead of text.")
    ] = False,
) -> dict[str, Any]:
    """Look up a logged answer, an HCP's answers, the maintenance trail or a rules file.

    One logged answer as the recommendation log keeps it: who asked, for whom, the
    model version and policy, the fingerprint of the serving rules it was made under,
    each item with the propensity and the reasons it was served with, and the
    feedback events that name it (an audit, a support question: what was served, to
    whom, by which version, and why it said so). With --hcp, an HCP's answers and
    events, and whether older ones were pruned; with --maintenance, the trail of
    prunes and erasures; with --rules, the text of the serving rules a fingerprint
    names."""
    import json
    from dataclasses import asdict

    from sqlalchemy.engine import make_url

    from nextbest.storage.db import _sqlite_file, store_session
    from nextbest.storage.repository import (
        erased_already,
        feedback_for,
        furthest_prune,
        get_recommendation,
        hcp_of_event,
        hcp_row_counts,
        maintenance_runs,
        recommendations_of_hcp,
        rows_derived_from,
        stored_rules,
    )

    asked = (recommendation_id is not None) + (hcp is not None) + maintenance + (rules is not None)
    if asked != 1:
        raise fail(
            "name a RECOMMENDATION_ID, --hcp HCP_ID, --maintenance or --rules FINGERPRINT "
            "(one of them)"
        )
    if with_models and hcp is None:
        raise fail("--models goes with --hcp HCP_ID: the versions that hold that HCP")
    settings = read_settings()
    refuse_missing_models_dir(
        settings,
        "log",
        *(("registry",) if with_models else ()),
        log_optional=with_models,
        answers_from_log=not with_models,
    )
    url = settings.resolved_database_url
    try:
        sqlite_file = _sqlite_file(make_url(url)) if url.startswith("sqlite") else None
    except Exception:  # an unparsable URL: the store's own error says it below
        sqlite_file = None
    no_log = sqlite_file is not None and not sqlite_file.exists()  # not made by a lookup
    if no_log and not with_models:
        raise fail(
            f"no recommendation log at {sqlite_file} (NEXTBEST_DATABASE_URL): nothing has "
            "been served with these settings"
        )
    if maintenance:
        with store_session(url) as session:
            runs, total = maintenance_runs(session, limit=limit)
        return _print_runs(runs, total, without_password(url), as_json=as_json)
    if rules is not None:
        with store_session(url) as session:
            kept = stored_rules(session, rules)
        if kept is None:
            raise fail(
                f"no serving rules with fingerprint '{rules}' in {without_password(url)}: "
                "answers logged before schema revision 0009 name rules whose text was not "
                "kept, and rules given by a program rather than a file are never kept"
            )
        found_rules = asdict(kept)
        if as_json:
            typer.echo(json.dumps(found_rules, indent=1, default=_iso))
        else:
            stdout.print(
                f"# serving rules {kept.fingerprint} (sha256 {kept.sha256}), read from "
                f"{kept.source}, first stored {_iso(kept.first_stored_at)}",
                highlight=False,
            )
            typer.echo(kept.content, nl=not kept.content.endswith("\n"))
        return found_rules
    if hcp is not None:
        # Before anything was served, an access request still finds the models.
        answers, about, erased, totals, pruned = [], [], None, (0, 0), None
        if not no_log:
            with store_session(url) as session:
                answers = recommendations_of_hcp(session, hcp_id=hcp, limit=limit)
                about = feedback_for(session, hcp_id=hcp, limit=limit)
                erased = erased_already(session, hcp_ids=[hcp]).get(hcp)
                totals = hcp_row_counts(session, hcp_id=hcp)
                pruned = furthest_prune(session)
        about, read_against = _channels_read(settings, about)
        holding = None
        if with_models:
            from nextbest.registry import versions_holding

            with working("reading each registered version"):
                holding = versions_holding(settings, [hcp])
        return _print_hcp_log(
            hcp,
            answers,
            about,
            erased,
            pruned,
            totals=totals,
            limit=limit,
            as_json=as_json,
            holding=holding,
            model_name=settings.model_name,
            read_against=read_against,
        )
    assert recommendation_id is not None
    with store_session(url) as session:
        record = get_recommendation(session, recommendation_id=recommendation_id)
        events = feedback_for(session, recommendation_id=recommendation_id) if record else []
        rules_kept = (
            record is not None
            and record.rules_fingerprint is not None
            and stored_rules(session, record.rules_fingerprint) is not None
        )
        is_hcp = record is None and bool(
            recommendations_of_hcp(session, hcp_id=recommendation_id, limit=1)
            or feedback_for(session, hcp_id=recommendation_id, limit=1)
        )
        event_of = (
            hcp_of_event(session, event_id=recommendation_id)
            if record is None and not is_hcp
            else None
        )
        derived = (
            rows_derived_from(session, event_id=recommendation_id, hcp_id=event_of)
            if event_of is not None
            else []
        )
    if record is None:
        if is_hcp:
            hint = (
                f"; '{recommendation_id}' is an HCP id: `nextbest lookup --hcp "
                f"{recommendation_id}` lists its answers and feedback"
            )
        elif event_of is not None:
            # Only an opt-out of several channels was kept in more rows than its own.
            kept_in = (
                f" (and the {plural(len(derived), 'row')} an opt-out of several channels "
                f"was kept in, each 'from event {recommendation_id}')"
                if derived
                else ""
            )
            hint = (
                f"; '{recommendation_id}' is the event_id of a feedback event about HCP "
                f"{event_of}: `nextbest lookup --hcp {event_of}` lists it{kept_in}"
            )
        else:
            hint = (
                " (an answer erased or pruned is not there either, nor one served in the "
                "last milliseconds before a server was killed: NEXTBEST_LOG_FLUSH_MS)"
            )
        raise fail(
            f"no recommendation '{recommendation_id}' in the recommendation log "
            f"{without_password(url)} (NEXTBEST_DATABASE_URL){hint}"
        )
    events, read_against = _channels_read(settings, events)
    found = {**asdict(record), "feedback": events, "channels_read_against": read_against}
    if as_json:
        typer.echo(json.dumps(found, indent=1, default=_iso))
        return found
    when = f"served {_iso(record.created_at)}"
    # Every answer is decided for a moment: said when a request named another one
    # (a planned send), not the request's own time a few microseconds earlier.
    if (
        record.decided_for is not None
        and abs((record.created_at - record.decided_for).total_seconds()) > 1
    ):
        when += f" for {_iso(record.decided_for)}"
    stdout.print(f"recommendation {record.recommendation_id}: {when}", highlight=False)
    plan = f", rep plan of {record.rep_id}" if record.rep_id else ""
    k_said = "" if record.k_requested is None else f"; {plural(record.k_requested, 'item')} asked"
    stdout.print(
        f"  HCP {record.hcp_id}; asked by {record.requester}{plan}; purpose {record.purpose}; "
        f"channel {record.channel_filter or 'any'}{k_said}",
        highlight=False,
    )
    no_action = "" if record.p_no_action is None else f", P(no action) {record.p_no_action:.4g}"
    drawn = (
        f"temperature {record.temperature:g}"
        if record.temperature is not None
        else f"epsilon {record.epsilon:g}"
    )
    # With a challenger share, the random split that chose this version for the HCP.
    split = (
        f", drawn for this HCP with probability {record.split_share:g} beside version "
        f"{record.split_with} (challenger share)"
        if record.split_with is not None and record.split_share is not None
        else ""
    )
    stdout.print(
        f"  model version {record.model_version}{split}; {record.policy} ({drawn}), holdout "
        f"rate {record.holdout_rate:g}{no_action}; {record.n_candidates} candidate actions",
        highlight=False,
    )
    said_rules = record.rules_fingerprint or "not recorded (logged before schema revision 0006)"
    if rules_kept:
        said_rules += f" (`nextbest lookup --rules {record.rules_fingerprint}` shows the file)"
    stdout.print(f"  rules {said_rules}", highlight=False)
    if record.holdout:
        stdout.print("  holdout: answered with nothing to do", highlight=False)
    elif not record.items:
        stdout.print("  no item: nothing was worth its cost or allowed", highlight=False)
    for item in record.items:
        # '#': four significant digits with their trailing zeros, so that items line
        # up (score 0.6402 above 0.6230, where 0.623 read as less precise).
        stdout.print(
            f"  {item.rank}. {item.action_id} ({item.channel}, {item.content_id}): score "
            f"{item.score:#.4g}, expected uplift {item.expected_uplift:#.4g}, P(engaged) "
            f"{item.p_engage:.3f}, propensity {item.propensity:#.4g}"
            f"{', explored' if item.explored else ''}",
            highlight=False,
        )
        for reason in item.reasons:
            stdout.print(f"       {reason}", highlight=False)
    if any(not item.reasons for item in record.items):
        stdout.print("  reasons not recorded (logged before schema revision 0007)", highlight=False)
    stdout.print(
        f"  feedback: {len(events)} event{'s' if len(events) != 1 else ''}", highlight=False
    )
    _say_read_against(read_against)
    for event in events:
        said = _event_fields(event)
        said.append(f"by {event['requester'] or '-'}")
        stdout.print(
            f"    {_iso(event['occurred_at'])} {event['event_type']} ({', '.join(said)}; "
            f"{_event_id_said(event)})",
            highlight=False,
        )
    return found


def _channels_read(
    settings: Settings, events: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str | None]:
    """``events`` (``feedback_for``'s) with the channels of consent events stored while
    no model was served read against the served model's catalog, as serving reads
    them, and that model ("model 'nextbest' version 3 (alias 'champion')"; None: none
    read).

    The served version is loaded only when such an event is shown (seconds); with
    none registered, or one that cannot be read (said), they stay not yet read."""
    from nextbest.storage.repository import read_against_catalog

    if all(event["channel_read_as"] is None for event in events):
        return events, None
    from nextbest import registry

    alias = settings.serve_alias
    try:
        version = registry.alias_version(settings, alias)
        if version is None:
            return events, None
        with working("reading the served model's catalog"):
            model = registry.load_version(settings, version, alias=alias)
    except registry.RegistryError as exc:
        note(
            "consent events stored while no model was served are shown not yet read against a "
            f"catalog: the served model cannot be read ({exc})"
        )
        return events, None
    channels = frozenset(str(c) for c in model.catalog["channel"])
    return read_against_catalog(events, channels), (
        f"model '{settings.model_name}' version {version} (alias '{alias}')"
    )


def _say_read_against(read_against: str | None) -> None:
    if read_against is not None:
        stdout.print(
            "    (consent events stored while no model was served: their channel as stored, read "
            f"against the catalog of {read_against}, as serving reads it)",
            highlight=False,
        )


def _event_id_said(event: dict[str, Any]) -> str:
    """A feedback event's id as a look-up lists it, with the event id it was derived
    from (an opt-out of several channels kept in a row per channel)."""
    derived_from = event["derived_from"]
    return f"event {event['event_id']}" + (
        f", from event {derived_from}" if derived_from is not None else ""
    )


def _event_fields(event: dict[str, Any]) -> list[str]:
    """A feedback event's fields as a look-up lists them ("channel e_mail (read as
    email)"), those it has."""
    from nextbest.storage.repository import NOT_YET_READ

    said = []
    for name in ("action_id", "channel", "value", "reason"):
        if not event[name]:
            continue
        field = f"{name} {event[name]}"
        read = event["channel_read_as"] if name == "channel" else None
        if read is not None:
            field += f" ({read})" if read == NOT_YET_READ else f" (read as {read})"
        said.append(field)
    return said


def explain(
    hcp_id: Annotated[str, typer.Argument(help="The HCP, as the hcps file spells the id.")],
    k: Annotated[int, typer.Option(min=1, max=50, help="Items, as a request's k.")] = 5,
    channel: Annotated[str | None, typer.Option(help="Only actions on this channel.")] = None,
    purpose: PurposeOpt = "promotional",
    on: DecisionDateOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the answer as JSON instead of text.")
    ] = False,
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="VERSION|ALIAS",
            help="Ask this registered version (a number) or alias instead of the served "
            "one: the challenger before promoting it, a version rolled back from. Default: "
            "the served alias (NEXTBEST_SERVE_ALIAS), or the challenger for an HCP of its "
            "share (NEXTBEST_CHALLENGER_SHARE), as servers answer it.",
        ),
    ] = None,
) -> dict[str, Any]:
    """What the served model would answer for one HCP now, and why; nothing is logged.

    With NEXTBEST_CHALLENGER_SHARE, an HCP of the challenger's share is explained by the
    challenger, as servers answer it (a note says so). The answer without an
    exploration draw, with each item's reasons and why every other action is left
    out. Nothing is logged: a support question, not a send (an API request with
    explain=true is logged as a served answer, and feedback without a
    recommendation_id may then be counted for it). The serving rules are read as
    `picks` reads them (NEXTBEST_RULES_FILE, else training/rules.yaml here). A
    recommendation log not made yet (nothing served) is read as empty, not made, and
    said. Exit code 2 for an HCP the model does not know."""
    import json
    from dataclasses import asdict

    from nextbest import registry
    from nextbest.cli.picks import say_history_move
    from nextbest.errors import InvalidRequestError, NextbestError, NotFoundError
    from nextbest.service.picks import HistoryMove, history_for_picks
    from nextbest.service.recommend import decision_time
    from nextbest.service.runtime import make_recommender
    from nextbest.service.serving import recommend_one
    from nextbest.storage.db import history_session

    asked_for = parse_decision_date(on, DECISION_DATE)  # a bad option before the model loads
    settings = read_settings()
    rules = check_rules_file(settings)
    refuse_missing_models_dir(settings, "registry")
    now = decision_time(asked_for)  # today's date: now, as the API
    try:
        # Without --model, the version a server answers the HCP with at `now`: the
        # challenger for an HCP of its share, or one only it knows
        # (NEXTBEST_CHALLENGER_SHARE; a note says so).
        asked: list[tuple[Any, str]] = []

        def served() -> tuple[Any, str]:
            """The model asked for (the served one without --model), loaded once."""
            if not asked:
                asked.append(model_asked(settings, model_name))
            return asked[0]

        challenger = None
        if model_name is None:
            challenger = challenger_answering(settings, hcp_id, now, served=served)
        model, version = challenger or served()
    except registry.RegistryError as exc:
        raise fail(str(exc)) from None
    # The ranking itself: no exploration draw (a served answer's first item is
    # sometimes a random pick; the holdout, drawn per HCP and period, stays).
    greedy = settings.model_copy(update={"exploration": "epsilon_greedy", "epsilon": 0.0})
    move = HistoryMove()
    try:
        # Explaining before anything is served is a use: a log not made yet is read
        # as empty (said below), not made where a mistyped setting points.
        with history_session(settings.resolved_database_url) as session:
            # As a server moving its history each day (NEXTBEST_FRESH_HISTORY) serves.
            model = history_for_picks(
                settings, model, session, decided=now, version=version, move=move
            )
            recommender = make_recommender(greedy, model, version, rules)
            rec = recommend_one(
                recommender,
                session,
                None,  # logged nowhere
                requester="nextbest explain",
                hcp_id=hcp_id,
                k=k,
                channel=channel,
                purpose=purpose,
                on=now,
                explain_exclusions=True,
            )
    except InvalidRequestError as exc:  # a request's field here is an option
        raise fail(f"--{exc.field}: {exc.message}") from None
    except NotFoundError as exc:  # the model asked for, not the served one, lacks it
        if model_name is not None:
            exc = NotFoundError(
                exc.kind, exc.identifier, known_to=f"model version {version} (--model {model_name})"
            )
        raise fail(str(exc)) from None
    except NextbestError as exc:
        raise fail(str(exc)) from None
    note_missing_log(settings)
    answer = {
        "hcp_id": rec.hcp_id,
        "decided_for": now.isoformat(),
        "model_version": rec.model_version,
        "uplift_source": rec.uplift_source,
        "holdout": rec.holdout,
        "items": [asdict(item) for item in rec.items],
        "excluded": rec.excluded,
        "logged": False,
    }
    if as_json:
        typer.echo(json.dumps(answer, indent=1))
        return answer
    stdout.print(
        f"HCP {hcp_id}: what model version {version}"
        + (f" ({model_name})" if model_name and not model_name.strip().isdigit() else "")
        + ("" if model_name else " (the challenger, for its share)" if challenger else " (served)")
        + f" answers for {now.isoformat(timespec='seconds')} "
        f"(purpose {purpose}, channel {channel or 'any'}); nothing is logged",
        highlight=False,
    )
    say_history_move(move)
    if rec.holdout:
        stdout.print(
            "  holdout: this HCP is in the randomized holdout now; a request is answered "
            "with nothing to do",
            highlight=False,
        )
    elif not rec.items:
        # Every action left out by a rule (opted out of every channel, erased): no
        # action was allowed at all, which "not worth its cost" would hide.
        ruled_out = sum(
            not any(w.startswith("not worth its cost") for w in said)
            for said in rec.excluded.values()
        )
        none = ruled_out == len(recommender.action_ids)
        nothing = "no action is allowed" if none else "nothing allowed is worth its cost"
        stdout.print(f"  no item: {nothing} (below)", highlight=False)
    for item in rec.items:
        stdout.print(
            f"  {item.rank}. {item.action_id} ({item.channel}, {item.content_id}): score "
            f"{item.score:#.4g}, expected uplift {item.expected_uplift:#.4g}, cost "
            f"{item.cost:#.4g}, P(engaged) {item.p_engage:.3f}",
            highlight=False,
        )
        for reason in item.reasons:
            stdout.print(f"       {reason}", highlight=False)
    if not rec.holdout and settings.epsilon > 0:
        stdout.print(
            f"  (the ranking, without exploration: a served answer's first item is a random "
            f"allowed action in {settings.epsilon:.0%} of requests, marked explored)"
            if settings.exploration == "epsilon_greedy"
            else "  (the ranking, without exploration: a served answer's first item is drawn "
            "by softmax over the scores, marked explored when it is not the first here)",
            highlight=False,
        )
    # Actions left out for the same reasons are listed together.
    by_reasons: dict[tuple[str, ...], list[str]] = {}
    for action_id, why in rec.excluded.items():
        by_reasons.setdefault(tuple(why), []).append(action_id)
    if by_reasons:
        stdout.print(f"  left out ({plural(len(rec.excluded), 'action')}):", highlight=False)
    for said, actions in sorted(by_reasons.items(), key=lambda kv: -len(kv[1])):
        stdout.print(f"    {', '.join(actions)}: {'; '.join(said)}", highlight=False)
    return answer


def _print_runs(runs: list[Any], total: int, store: str, *, as_json: bool) -> dict[str, Any]:
    """``lookup --maintenance``: the newest prunes and erasures, newest first."""
    import json
    from dataclasses import asdict

    found = {"n_runs": total, "runs": [asdict(run) for run in runs]}
    if as_json:
        typer.echo(json.dumps(found, indent=1, default=_iso))
        return found
    more = f"; --limit {total} shows all" if total > len(runs) else ""
    stdout.print(
        f"maintenance runs in {store}: {len(runs):,} of {total:,} shown, newest first{more}",
        highlight=False,
    )
    if not total:
        stdout.print(
            "  none: nothing was pruned or erased since schema revision 0008, which began "
            "recording them",
            highlight=False,
        )
    for run in runs:
        asked = f", {run.arguments}" if run.arguments else ""
        asked += f", {plural(run.hcps, 'HCP')}" if run.hcps is not None else ""
        ended = f" {_iso(run.ended_at)}" if run.ended_at is not None else ""
        stdout.print(
            f"  {_iso(run.started_at)} {run.command} by {run.requester}{asked}: "
            f"{run.outcome}{ended}",
            highlight=False,
        )
        what = f"what was older than {_iso(run.cutoff)}: " if run.cutoff is not None else ""
        stdout.print(
            f"    {what}deleted {plural(run.deleted.recommendations, 'recommendation')}, "
            f"{plural(run.deleted.recommendation_items, 'recommendation item')} and "
            f"{plural(run.deleted.feedback_events, 'feedback event')} (run {run.run_id})",
            highlight=False,
        )
        if run.outcome == "interrupted":
            stdout.print(
                f"    stopped before the end: {run.detail or 'no reason recorded'}",
                highlight=False,
            )
        elif run.outcome == "running":
            stdout.print(
                "    not ended: still running, or its process was killed (the counts are "
                "those of its batches committed)",
                highlight=False,
            )
    return found


def _print_hcp_log(
    hcp: str,
    answers: list[Any],
    events: list[dict[str, Any]],
    erased: datetime | None,
    pruned: Any,
    *,
    totals: tuple[int, int],
    limit: int,
    as_json: bool,
    holding: list[Any] | None = None,
    model_name: str = "",
    read_against: str | None = None,
) -> dict[str, Any]:
    """``lookup --hcp``: the HCP's newest answers and feedback events (at most
    ``limit`` of each), its erasure, and the prune that reached furthest back
    (``pruned``, None: no prune recorded); ``totals``: how many of each the store
    holds; ``holding``: the registered versions holding the HCP, or those that could
    not be read (``--models``; None: not asked); ``read_against``: the model whose
    catalog the events' opt-outs stored with no model were read against (None: none)."""
    import json
    from dataclasses import asdict

    found: dict[str, Any] = {
        "hcp_id": hcp,
        "erased_at": erased,
        "n_recommendations": totals[0],
        "n_feedback": totals[1],
        "recommendations": [asdict(a) for a in answers],
        "feedback": events,
        "channels_read_against": read_against,
        "pruned": None if pruned is None else asdict(pruned),
    }
    if holding is not None:
        found["model_versions"] = [
            {"version": v.version, "aliases": list(v.aliases), "run_id": v.run_id}
            | ({"unreadable": v.unreadable} if v.unreadable else {})
            for v in holding
        ]
    if as_json:
        typer.echo(json.dumps(found, indent=1, default=_iso))
        return found

    def shown(n: int, total: int) -> str:
        more = f"; --limit {total} shows all" if total > n else ""
        return f"{n:,} of {total:,} shown, newest first{more}"

    stdout.print(
        f"HCP {hcp}: {plural(totals[0], 'logged answer')} ({shown(len(answers), totals[0])})",
        highlight=False,
    )
    prune = None
    if pruned is not None:
        how = {
            "finished": "pruned",
            "interrupted": "partly pruned (the run was interrupted)",
        }.get(pruned.outcome, "partly pruned (the run has not ended: still running, or killed)")
        prune = (
            f"rows older than {_iso(pruned.cutoff)} were {how} by {pruned.requester} in the "
            f"run of {_iso(pruned.started_at)} (`nextbest lookup --maintenance` lists every run)"
        )
    if totals == (0, 0) and erased is None:
        stdout.print(
            "  nothing logged about this id: never asked for, or an id the served model does "
            "not know (answered 404, not logged)"
            + (
                "; no prune is recorded in maintenance_runs"
                if prune is None
                else f", or logged before a prune: {prune}"
            )
            + "; ids match exactly, case included",
            highlight=False,
        )
    elif prune is not None:
        stdout.print(f"  {prune}", highlight=False)
    if erased is not None:
        stdout.print(
            f"  erased {_iso(erased)}: its answers and feedback until then were deleted; "
            "it is suppressed on every channel",
            highlight=False,
        )
    for a in answers:
        served = (
            "holdout: nothing to do"
            if a.holdout
            else ", ".join(f"{i.action_id} ({i.channel})" for i in a.items) or "no item"
        )
        plan = f", rep plan of {a.rep_id}" if a.rep_id else ""
        stdout.print(
            f"  {_iso(a.created_at)} {a.recommendation_id} by {a.requester}{plan}, version "
            f"{a.model_version}: {served}",
            highlight=False,
        )
    stdout.print(
        f"  feedback: {plural(totals[1], 'event')} ({shown(len(events), totals[1])})",
        highlight=False,
    )
    _say_read_against(read_against)
    for event in events:
        said = _event_fields(event)
        if event["recommendation_id"]:
            said.append(f"recommendation {event['recommendation_id']}")
        said.append(f"by {event['requester'] or '-'}")
        stdout.print(
            f"    {_iso(event['occurred_at'])} {event['event_type']} ({', '.join(said)}; "
            f"{_event_id_said(event)})",
            highlight=False,
        )
    if holding is not None:
        stdout.print(
            f"  registered versions of model '{model_name}' holding its attributes and "
            "history features (their served snapshot):" + ("" if holding else " none"),
            highlight=False,
        )
        for v in holding:
            aliases = f" ({', '.join(v.aliases)})" if v.aliases else ""
            run = f" (run {v.run_id})" if v.run_id else ""
            why = f": could not be read, check it: {v.unreadable}" if v.unreadable else ""
            stdout.print(f"    v{v.version}{aliases}{run}{why}", highlight=False)
    if answers:
        stdout.print(
            f"  `nextbest lookup ID` shows one answer's scores and propensities; `nextbest "
            f"explain {hcp}` what it would get now, and why",
            highlight=False,
        )
    return found


def _iso(value: Any) -> str:
    """A stored time as ISO 8601 with its UTC offset (a JSON default for the rest)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
