"""simulate -> train -> picks through the CLI, on the simulator's output and on
contract data that did not come from the simulator."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import signal
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from nextbest import registry
from nextbest.cli import app
from nextbest.policy.exploration import HOLDOUT_SALT, holdout_draw
from nextbest.settings import get_settings
from nextbest.storage.db import make_engine, migrate
from nextbest.storage.repository import decision_times

from .conftest import FAST, LOG_WRITERS, explained_on_a_copy, run_ok, runner


def test_simulate_train_picks(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = tmp_path / "world"
    simulated = runner.invoke(
        app, ["simulate", "--out", str(world), "--hcps", "300", "--periods", "10", "--seed", "5"]
    )
    assert simulated.exit_code == 0, simulated.output
    assert simulated.stdout.startswith("wrote 300 HCPs"), simulated.stdout  # the result
    assert "wrote" not in simulated.stderr
    assert {p.name for p in world.iterdir()} >= {
        "hcps.csv",
        "catalog.csv",
        "interactions.csv",
        "truth.parquet",
    }
    trained = run_ok("train", "--data", str(world), "--config", str(FAST))
    # The command says the version it registered; MLflow's own lines about it are not
    # repeated ("Successfully registered model", "Created version '1' of model").
    assert "nextbest version 1" in trained, trained
    # Under sixty rows of metrics, the figures a data scientist looks for first, in one
    # line: as `nextbest models` gives them, and whether the policy adds anything.
    [v] = registry.list_versions(get_settings())
    assert v.eval_auc is not None and v.policy_value_dr is not None
    held_out = " ".join(trained.split()).split("version 1 on its held-out slice ")[1]
    assert held_out.startswith(
        f"({v.eval_decisions:,} decisions): AUC {v.eval_auc:.3f}; policy value (DR) "
        "{:.3f} [{:.3f}, {:.3f}]; ".format(*v.policy_value_dr)
    ), held_out
    assert "the logged policy" in held_out and "doing nothing" in held_out, held_out
    assert "registered model" not in trained.lower() and "Created version" not in trained
    assert "database tables" not in trained  # MLflow's INFO lines on a new models directory
    # Off a terminal a line per step, and per model fitted within the long models step
    # (minutes at scale), without counting them as steps.
    lines = trained.splitlines()
    fitting = [line for line in lines if line.startswith("models (") and "still at" not in line]
    assert [line.split(":")[0] for line in fitting] == [
        "models (engagement)",
        "models (uplift, outcomes without a touch)",
        "models (uplift, effect of engaged touches)",
        "models (uplift, effect of unengaged touches)",
    ], trained
    assert all(": 2/6 " in line for line in fitting), fitting
    assert any(line.startswith("snapshot: 3/6 ") for line in lines), trained
    # The first champion, aliased at training before any promotion, is in the history.
    listed = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert listed["champion_history"] == ["1"]
    # validate names the data as the version records it: archived files are shown to
    # be what a version was trained on without training again.
    validated = runner.invoke(app, ["validate", "--data", str(world)])
    assert validated.exit_code == 0, validated.output
    (version,) = listed["versions"]
    assert f"data fingerprint {version['data_fingerprint']}" in validated.output
    out = tmp_path / "picks.parquet"
    run_ok("picks", "--data", str(world), "--out", str(out), "--k", "2", "--as-of", "2026-12-01")
    picks = pd.read_parquet(out)
    assert list(picks.columns) == [
        "hcp_id",
        "rank",
        "action_id",
        "channel",
        "content_id",
        "score",
        "expected_uplift",
        "p_engage",
        "reason",
    ]
    assert len(picks) > 0
    assert (picks["score"] > 0).all()
    assert picks.groupby("hcp_id")["rank"].max().max() <= 2
    assert picks["reason"].str.len().min() > 0
    emails = tmp_path / "email.csv"
    said = run_ok(
        "picks",
        "--data",
        str(world),
        "--out",
        str(emails),
        "--channel",
        "email",
        "--as-of",
        "2026-12-01",
    )
    email_picks = pd.read_csv(emails)
    assert set(email_picks["channel"]) == {"email"}
    # The HCPs without a pick are counted, by why, with the explain that shows one.
    got_none = re.search(
        r"note: (\d+) of 300 HCPs got no pick: for (\d+) no action is allowed \(.*?\), "
        r"for (\d+) nothing allowed is worth its cost; `nextbest explain (\S+) --channel "
        r"email --as-of 2026-12-01` says why for one",
        " ".join(said.split()),
    )
    assert got_none, said
    none, none_allowed, none_worth = (int(got_none[i]) for i in (1, 2, 3))
    assert none == none_allowed + none_worth == 300 - email_picks["hcp_id"].nunique()
    hcps = pd.read_csv(world / "hcps.csv")
    assert none_allowed >= int((~hcps["consent_email"]).sum()) > 0  # no e-mail consent
    explained = run_ok("explain", got_none[4], "--channel", "email", "--as-of", "2026-12-01")
    assert "no item: nothing allowed is worth its cost" in explained, explained

    # A channel or purpose the model cannot serve stops before any scoring,
    # naming the option and what it accepts; no file is written.
    for option, value, says in (
        ("--channel", "fax", "--channel: unknown channel 'fax' (known: email,"),
        ("--channel", "Email", "unknown channel 'Email'; did you mean 'email'? (known: email,"),
        ("--channel", "e-mail", "unknown channel 'e-mail'; did you mean 'email'? (known:"),
        ("--channel", "emial", "unknown channel 'emial'; did you mean 'email'? (known:"),
        ("--purpose", "sales", "--purpose: must be one of promotional, medical"),
        (
            "--purpose",
            "Promo",
            "--purpose: must be one of promotional, medical (did you mean 'promotional'?)",
        ),
        ("--as-of", "2026-06-15", "--as-of: 2026-06-15 (UTC) is before the served model's"),
    ):
        refused = tmp_path / f"refused-{option[2:]}.csv"
        result = runner.invoke(
            app, ["picks", "--data", str(world), "--out", str(refused), option, value]
        )
        assert result.exit_code != 0
        assert says in " ".join(result.output.split()), result.output
        assert "scoring HCPs" not in result.output
        assert not refused.exists()

    # Rules for a channel the catalog does not have (a typo) are said to apply to
    # nothing; the picks are still written.
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text("channels:\n  emial: {cooldown_days: 3}\n")
    noted = tmp_path / "noted.csv"
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(misspelt))
    get_settings.cache_clear()  # the settings are read once per process
    result = runner.invoke(app, ["picks", "--data", str(world), "--out", str(noted)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "rules for channel(s) ['emial'] apply to nothing" in said, said
    assert "'email'" in said and noted.exists()
    assert "not logged as served" in result.stderr  # advice, not the outcome
    # What was written on stdout, for a script to keep; notes and progress on stderr.
    assert result.stdout.startswith(f"wrote {len(pd.read_csv(noted)):,} picks for "), result.stdout
    # A file is not logged: the line names the rules it was picked under, for an audit.
    misspelt_rules = hashlib.sha256(misspelt.read_bytes()).hexdigest()[:12]
    assert f"rules {misspelt_rules} of misspelt.yaml)" in said, said
    assert "note:" not in result.stdout and "scoring HCPs" not in result.stdout, result.stdout
    assert "wrote" not in result.stderr and "apply to nothing" in result.stderr, result.stderr
    # A send list's specialty nothing knows (a typo) is said, on stderr, not left silent.
    send = tmp_path / "send.csv"
    first = pd.read_csv(world / "hcps.csv")["hcp_id"][0]
    send.write_text(f"hcp_id,specialty\n{first},Cardiolgy\n")
    result = runner.invoke(app, ["picks", "--hcps", str(send), "--out", str(noted)])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.output
    assert "'Cardiolgy' (1 HCP; did you mean 'cardiology'?); these HCPs get none of" in said, said
    picked = len(pd.read_csv(noted))
    assert result.stdout.startswith(
        f"wrote {picked} pick{'' if picked == 1 else 's'} for {min(picked, 1)} of 1 HCP to "
    ), result.stdout
    # Columns a send list does not read are named: a content column given to choose
    # each HCP's e-mail changed no pick, without a word.
    send.write_text(f"hcp_id,content_id,specialty\n{first},C001,\n")
    result = runner.invoke(app, ["picks", "--hcps", str(send), "--out", str(noted)])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.output
    assert "note: send list: column not read: content_id; a send list gives" in said, said
    # What a note or error quotes from a file is text, not markup ('[/]' stopped the
    # command with a MarkupError traceback; '[bold]' vanished).
    send.write_text(f"hcp_id,specialty\n{first},Cardio[/] [bold]\n")
    result = runner.invoke(app, ["picks", "--hcps", str(send), "--out", str(noted)])
    assert result.exit_code == 0, result.output
    assert "'Cardio[/] [bold]' (1 HCP" in " ".join(result.stderr.split()), result.stderr
    # A send list's consent saved as its Parquet index is the list's consent: dropped,
    # its HCPs who opted out were e-mailed on the model's consent.
    listed = tmp_path / "send.parquet"
    ids = pd.read_csv(world / "hcps.csv")["hcp_id"][:20]
    for consent, any_picked in ((True, True), (False, False)):
        opted = pd.DataFrame({"hcp_id": ids, "consent_email": consent})
        opted.set_index("consent_email").to_parquet(listed)
        run_ok("picks", "--hcps", str(listed), "--out", str(noted), "--channel", "email")
        assert (len(pd.read_csv(noted)) > 0) is any_picked, consent

    # A file that will be sent: each HCP served and logged as the batch endpoint
    # does, so the sends' feedback joins the loop.
    monkeypatch.delenv("NEXTBEST_RULES_FILE")
    monkeypatch.setenv("NEXTBEST_HOLDOUT_RATE", "0.2")
    # Serving sets it for its process; the test's process gets its own back.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    get_settings.cache_clear()
    run_ok("db", "upgrade")  # the log, made before the first send logged to it
    sent = tmp_path / "sent.csv"
    said = " ".join(run_ok("picks", "--data", str(world), "--out", str(sent), "--log").split())
    assert "already have answers logged" not in said, said
    picks = pd.read_csv(sent)
    assert list(picks.columns[-3:]) == ["recommendation_id", "propensity", "explored"]
    assert picks["propensity"].between(0, 1, inclusive="right").all()
    engine = make_engine(get_settings().resolved_database_url)
    with engine.connect() as connection:
        logged = pd.read_sql(
            "SELECT recommendation_id, hcp_id, holdout, rules_fingerprint FROM recommendations "
            "WHERE requester LIKE 'nextbest picks (%)'",
            connection,
        )
    engine.dispose()
    assert len(logged) == 300 and logged["hcp_id"].is_unique
    # Each answer names the rules it was picked under: `sha256sum rules.yaml | cut -c1-12`.
    rules_file = get_settings().resolved_rules_file
    fingerprint = hashlib.sha256(rules_file.read_bytes()).hexdigest()[:12]
    assert set(logged["rules_fingerprint"]) == {fingerprint}
    assert f"(model version 1, rules {fingerprint} of {rules_file.name})" in said, said
    held_out = logged[logged["holdout"].astype(bool)]
    assert 20 < len(held_out) < 100  # 60 expected of 300
    assert f"logged 300 answers as served ({len(held_out)} held out" in said, said
    assert "not logged as served" not in said, said
    # Every pick is a logged answer to its HCP; held-out HCPs get none.
    joined = picks.merge(logged, on="recommendation_id", suffixes=("", "_logged"))
    assert len(joined) == len(picks) > 0
    assert (joined["hcp_id"] == joined["hcp_id_logged"]).all()
    assert not set(picks["hcp_id"]) & set(held_out["hcp_id"])
    # Run again from a shell without the variable (the default rate, 0.05): it
    # would e-mail HCPs the 0.2 run held out this week. Refused before any work,
    # naming both rates; with the log's rate it runs, holding out the same HCPs.
    monkeypatch.delenv("NEXTBEST_HOLDOUT_RATE")
    get_settings.cache_clear()
    again = tmp_path / "again.csv"
    result = runner.invoke(app, ["picks", "--data", str(world), "--out", str(again), "--log"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "holdout rate here is 0.05" in said and "NEXTBEST_HOLDOUT_RATE=0.2" in said, said
    assert "scoring HCPs" not in said and not again.exists()
    monkeypatch.setenv("NEXTBEST_HOLDOUT_RATE", "0.2")
    get_settings.cache_clear()
    said = " ".join(run_ok("picks", "--data", str(world), "--out", str(again), "--log").split())
    engine = make_engine(get_settings().resolved_database_url)
    with engine.connect() as connection:
        rates = connection.exec_driver_sql(
            "SELECT DISTINCT holdout_rate FROM recommendations"
        ).all()
        served = pd.read_sql(
            "SELECT recommendation_id, hcp_id, holdout, created_at, decided_for "
            "FROM recommendations WHERE requester LIKE 'nextbest picks (%)'",
            connection,
        )
    engine.dispose()
    assert rates == [(0.2,)]
    first = served["recommendation_id"].isin(logged["recommendation_id"])
    assert first.sum() == (~first).sum() == 300
    # The same HCPs twice for one day: said, since only one of the files may be sent.
    # Without --as-of each run decides for the day it runs on, read between the first
    # run's answers and the second's: said whenever both were decided for one day (a
    # midnight between may part them).
    decided_on = pd.to_datetime(served["decided_for"], utc=True).dt.date
    if decided_on[first].min() == decided_on[~first].min():
        assert (
            f"300 of these HCPs already have answers logged for {decided_on[first].min()} (UTC) "
            "by an earlier send"
        ) in said, said
    # Each answer is held out by the weekly draw of when it takes effect as logged,
    # so the second run holds out the same HCPs unless a Monday 00:00 UTC came between.
    days = get_settings().holdout_days
    effective = decision_times(served["created_at"], served["decided_for"]).dt.date
    drawn = [
        holdout_draw(hcp, day, days=days, salt=HOLDOUT_SALT) < 0.2
        for hcp, day in zip(served["hcp_id"], effective, strict=True)
    ]
    assert served["holdout"].astype(bool).tolist() == drawn
    held_again = served[~first & served["holdout"].astype(bool)]
    if len({day.isocalendar()[:2] for day in effective}) == 1:
        assert set(held_again["hcp_id"]) == set(held_out["hcp_id"])

    # The sends' feedback comes back as a file (an e-mail platform's export):
    # stored by row, idempotent, bad rows rejected alone with their row number.
    events = pd.DataFrame(
        {
            "event_id": "out-" + picks["recommendation_id"],
            "event_type": "outcome",
            "hcp_id": picks["hcp_id"],
            "recommendation_id": picks["recommendation_id"],
            # After the sends: an open dated before its send is refused.
            "occurred_at": pd.Timestamp.now(tz="UTC").isoformat(),
            "value": 1.0,
        }
    )
    events.loc[1, "event_type"] = "opend"  # row 2
    events.loc[2, "hcp_id"] = "H999999"  # row 3: served to someone else
    events.loc[3, "value"] = None  # row 4: an outcome needs a value
    feed, bad = tmp_path / "events.csv", tmp_path / "bad.parquet"
    events.to_csv(feed, index=False)
    result = runner.invoke(app, ["feedback", str(feed), "--rejected", str(bad)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert f"stored {len(events) - 3} of {len(events)} events" in said, said
    assert "row 2 (event_id" in said and "event_type: Input should be" in said
    assert "(did you mean 'opened'?)" in said, said
    # The outcome on stdout (what was stored, which rows were rejected), progress on stderr.
    out = " ".join(result.stdout.split())
    assert out.startswith(f"stored {len(events) - 3} of {len(events)} events"), out
    assert "row 4 (event_id" in out and "wrote 3 rejected rows to " in out, out
    assert "storing events" not in out, out
    assert f"of {len(events)} events" not in result.stderr, result.stderr
    assert "row 2 (event_id" not in result.stderr, result.stderr
    assert "row 3 (event_id" in said and "does not match recommendation" in said
    assert "row 4 (event_id" in said
    rejected = pd.read_parquet(bad)
    assert rejected["row"].tolist() == [2, 3, 4]
    assert rejected["event_id"].tolist() == events["event_id"].iloc[1:4].tolist()
    engine = make_engine(get_settings().resolved_database_url)
    with engine.connect() as connection:
        stored = pd.read_sql("SELECT event_id FROM feedback_events", connection)
    engine.dispose()
    assert set(stored["event_id"]) == set(events["event_id"].drop(index=[1, 2, 3]))
    # The rejected file, fixed, is sent as it is (its row and reason columns ignored).
    rejected.loc[rejected["row"] == 2, "event_type"] = "opened"
    rejected.loc[rejected["row"] == 4, "value"] = 1.0
    fixed = tmp_path / "fixed.csv"
    rejected.to_csv(fixed, index=False)
    said = " ".join(runner.invoke(app, ["feedback", str(fixed)]).output.split())
    assert "stored 2 of 3 events" in said and "1 rejected" in said, said
    # Sent again: nothing is stored twice.
    said = " ".join(runner.invoke(app, ["feedback", str(feed)]).output.split())
    assert (
        f"stored 0 of {len(events)} events" in said and f"{len(events) - 3} already stored" in said
    )
    assert "no occurred_at" not in said  # every row was dated
    # Undated rows are stored at the time of the run, and the command says so.
    undated = events.drop(columns="occurred_at").iloc[[0, 4]].assign(event_id=["u-1", "u-2"])
    undated.to_csv(feed, index=False)
    said = " ".join(
        runner.invoke(app, ["feedback", str(feed), "--rejected", str(bad)]).output.split()
    )
    assert "stored 2 of 2 events" in said and "2 rows not rejected had no occurred_at" in said, said
    # Nothing rejected: the rejected file is rewritten empty, not left from the last run.
    assert pd.read_parquet(bad).empty
    # A file that is not a feedback file stops before anything is stored.
    picks.to_csv(feed, index=False)
    result = runner.invoke(app, ["feedback", str(feed)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "column 'event_id': missing required column" in said, said
    # A misspelt column is named with the one it most likely means.
    pd.DataFrame(
        {"event_id": ["z1"], "event_type": ["opened"], "hcp_id": ["H1"], "chanel": ["email"]}
    ).to_csv(feed, index=False)
    result = runner.invoke(app, ["feedback", str(feed)])
    said = " ".join(result.output.split())
    assert (
        result.exit_code == 2
        and "column 'chanel': unknown column (did you mean 'channel'?)" in said
    ), said
    # A trailing separator on every line (header too) is an empty column, dropped;
    # a value in it is named by its row.
    hcp = str(events["hcp_id"].iloc[0])
    feed.write_text(f"event_id,event_type,hcp_id,channel,\nt-1,opened,{hcp},email,\n")
    said = " ".join(runner.invoke(app, ["feedback", str(feed)]).output.split())
    assert "stored 1 of 1 event" in said, said
    engine = make_engine(get_settings().resolved_database_url)
    with engine.connect() as connection:
        (sender,) = connection.exec_driver_sql(
            "SELECT requester FROM feedback_events WHERE event_id = 't-1'"
        ).one()
    engine.dispose()
    assert sender.startswith("nextbest feedback (") and sender.endswith(")"), sender
    # An opt-out dated by a year and month is kept, counted from the run, and said by
    # its row; an open dated so is rejected.
    feed.write_text(
        "event_id,event_type,hcp_id,channel,occurred_at\n"
        f"o-1,opened,{hcp},email,2024-03\no-2,opted_out,{hcp},email,2024-03\n"
    )
    result = runner.invoke(app, ["feedback", str(feed)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "stored 1 of 2 events" in said, said
    assert "row 1 (event_id 'o-1'): occurred_at: '2024-03' is a year and month" in said, said
    assert (
        "row 2 (event_id 'o-2'): opt-out stored: occurred_at '2024-03' is a year and month"
    ) in said, said
    # A rep's decisions synced as a file follow the rep route's rule: a dismissal
    # says why, an acceptance does not; each bad row rejected alone, by its number.
    sent = picks.iloc[0]
    pd.DataFrame(
        {
            "event_id": ["d-1", "d-2", "d-3", "d-4"],
            "event_type": ["dismissed", "dismissed", "accepted", "snoozed"],
            "hcp_id": sent["hcp_id"],
            "recommendation_id": sent["recommendation_id"],
            "action_id": sent["action_id"],
            "reason": [None, "not_relevant", "other", None],
        }
    ).to_csv(feed, index=False)
    result = runner.invoke(app, ["feedback", str(feed)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "stored 2 of 4 events" in said, said
    assert "row 1 (event_id 'd-1'): a dismissal needs a reason code: not_relevant," in said, said
    assert "row 3 (event_id 'd-3'): an acceptance takes no reason code" in said, said
    feed.write_text(f"event_id,event_type,hcp_id,channel,\nt-2,opened,{hcp},email,oops\n")
    result = runner.invoke(app, ["feedback", str(feed)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "row 1: column 5 has no name in the header" in said, said


def _foreign_dataset(root: Path, *, with_outcome: bool) -> Path:
    """A small contract directory written by hand, not by the simulator."""
    rng = np.random.default_rng(0)
    n = 150
    hcps = pd.DataFrame(
        {
            "hcp_id": [f"dr-{i}" for i in range(n)],
            "specialty": rng.choice(["cardiology", "gp"], n),
            "territory_id": rng.choice(["north", "south"], n),
            "years": rng.integers(1, 30, n),
            "consent_email": rng.random(n) < 0.9,
        }
    )
    catalog = pd.DataFrame(
        {
            "action_id": ["mail-a", "mail-b", "visit-a"],
            "channel": ["email", "email", "rep_visit"],
            "content_id": ["a", "b", "a"],
            "topic": ["dosing", "safety", "dosing"],
            "content_type": ["promotional"] * 3,
            "approved_from": ["2025-01-01"] * 3,
            "approved_until": ["", "", "2030-01-01"],
            "cost": [0.01, 0.01, 0.5],
        }
    )
    rows = []
    for week in range(20):
        for i in range(n):
            action = rng.choice(["mail-a", "mail-b", "visit-a", ""], p=[0.35, 0.35, 0.1, 0.2])
            if action.startswith("mail") and not hcps["consent_email"].iat[i]:
                action = ""
            engaged = int(
                action != "" and rng.random() < (0.5 if action == "mail-a" and i % 2 else 0.2)
            )
            row = {
                "hcp_id": f"dr-{i}",
                "timestamp": (pd.Timestamp("2026-01-05") + pd.Timedelta(weeks=week)).isoformat(),
                "action_id": action,
                "engaged": engaged,
            }
            if with_outcome:
                row["outcome"] = float(rng.poisson(1 + engaged))
                # The random choice above, logged as a serving policy logs it.
                mail = 0.35 if hcps["consent_email"].iat[i] else 0.0
                row["propensity"] = {"visit-a": 0.1, "": 0.9 - 2 * mail}.get(action, mail)
            rows.append(row)
    root.mkdir()
    hcps.to_csv(root / "hcps.csv", index=False)
    catalog.to_csv(root / "catalog.csv", index=False)
    pd.DataFrame(rows).to_csv(root / "interactions.csv", index=False)
    return root


@pytest.mark.parametrize("with_outcome", [True, False], ids=["with-outcome", "no-outcome-fallback"])
def test_any_contract_directory_trains_and_picks(
    env_settings: Path, tmp_path: Path, with_outcome: bool
) -> None:
    data = _foreign_dataset(tmp_path / "mine", with_outcome=with_outcome)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    # validate tells in advance which uplift source training will use.
    assert ("falls back to preference x value" in said) is (not with_outcome)
    assert ("enough for the uplift model" in said) is with_outcome
    output = run_ok("train", "--data", str(data), "--config", str(FAST))
    assert ("falls back to preference x value" in output) is (not with_outcome)
    assert f"train config: {FAST} (levers: none)" in " ".join(output.split())
    out = tmp_path / "picks.csv"
    run_ok("picks", "--data", str(data), "--out", str(out), "--as-of", "2026-07-01")
    picks = pd.read_csv(out)
    assert len(picks) > 0
    assert set(picks["hcp_id"]) <= {f"dr-{i}" for i in range(150)}
    if not with_outcome:
        assert picks["reason"].str.contains("no measured uplift").all()


def test_validate_notes_a_channel_named_like_a_reps_that_is_not_one(
    env_settings: Path, tmp_path: Path
) -> None:
    # 'F2F' visits were an ordinary channel, out of every rep plan, unsaid.
    data = _foreign_dataset(tmp_path / "f2f", with_outcome=True)
    catalog = pd.read_csv(data / "catalog.csv", dtype=str, keep_default_na=False)
    catalog["channel"] = ["email", "email", "F2F"]
    catalog.to_csv(data / "catalog.csv", index=False)
    interactions = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    if "channel" in interactions:
        interactions["channel"] = interactions["channel"].replace("rep_visit", "F2F")
        interactions.to_csv(data / "interactions.csv", index=False)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert (
        "catalog channel 'f2f' reads like one reps deliver, but only channels named rep_... "
        "are rep channels (rep call plans, rep keys): name it rep_f2f if reps deliver it" in said
    ), said
    assert "channel 'email'" not in said


def test_validate_and_train_name_catalog_and_interaction_columns_not_read(
    env_settings: Path, tmp_path: Path
) -> None:
    # An export's 'unit_cost' left every cost at 0, and an 'expiry_date' no content
    # expired: both unsaid (only the hcps file's other columns are features).
    data = _foreign_dataset(tmp_path / "renamed", with_outcome=True)
    catalog = pd.read_csv(data / "catalog.csv", dtype=str, keep_default_na=False)
    catalog = catalog.rename(columns={"cost": "unit_cost"}).assign(expiry_date="2030-01-01")
    catalog.drop(columns=[c for c in ("approved_until",) if c in catalog]).to_csv(
        data / "catalog.csv", index=False
    )
    interactions = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    interactions.assign(clicked=interactions["engaged"]).to_csv(
        data / "interactions.csv", index=False
    )
    for command in ("validate", "train"):
        extra = ["--config", str(FAST)] if command == "train" else []
        said = " ".join(run_ok(command, "--data", str(data), *extra).split())
        assert (
            "catalog columns not read: unit_cost (did you mean cost?), expiry_date; only the "
            "data contract's columns of catalog are used (docs/data.md)" in said
        ), said
        assert "interactions column not read: clicked;" in said, said


def test_validate_notes_specialties_no_hcp_has(env_settings: Path, tmp_path: Path) -> None:
    data = _foreign_dataset(tmp_path / "typo", with_outcome=True)
    catalog = pd.read_csv(data / "catalog.csv", dtype=str, keep_default_na=False)
    catalog["specialties"] = ["cardiology;gp", "cardiolgy", "gp;oncology"]
    catalog.to_csv(data / "catalog.csv", index=False)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert (
        "catalog action 'mail-b': specialties cardiolgy: no HCP has any of them: the action "
        "is never eligible" in said
    ), said
    assert "catalog action 'visit-a': specialties oncology: no HCP has them" in said
    assert "'mail-a'" not in said
    assert "levers name values" not in said
    # Levers and value_per_engagement channels naming nothing in the catalog stop
    # validate as they stop train, before any work, at their line (they were notes,
    # and the version was registered without the levers asked for).
    config = tmp_path / "typo_train.yaml"
    config.write_text(
        FAST.read_text()
        + "levers: {channel: {emial: {offset: -1}}}\nvalue_per_engagement: {rep_vist: 2.0}\n"
    )
    for command in ("validate", "train"):
        refused = runner.invoke(app, [command, "--data", str(data), "--config", str(config)])
        assert refused.exit_code == 2, refused.output
        said = " ".join(refused.output.split())
        if command == "validate":
            assert "error: train would stop on this config and catalog: levers in" in said
        assert (
            f"levers in training config {config} (levers), line 3: channel.emial: no channel "
            "of the catalog is 'emial' (did you mean 'email'?); "
            f"training config {config}, line 4: value_per_engagement.rep_vist: no channel of "
            "the catalog is 'rep_vist' (did you mean 'rep_visit'?) (the catalog's channels: "
            "email, rep_visit): a key naming nothing in the catalog changes no score" in said
        ), said
    assert "registered" not in said
    assert not env_settings.exists()  # refused before the models directory was made
    # Training says so too, and the run's notes keep it.
    trained = " ".join(run_ok("train", "--data", str(data), "--config", str(FAST)).split())
    assert "catalog action 'mail-b': specialties cardiolgy: no HCP has any of them" in trained


def test_validate_and_train_note_a_territory_written_two_ways(
    env_settings: Path, tmp_path: Path
) -> None:
    data = _foreign_dataset(tmp_path / "realigned", with_outcome=True)
    hcps = pd.read_csv(data / "hcps.csv", dtype=str, keep_default_na=False)
    hcps.loc[0, "territory_id"] = "North"
    hcps.to_csv(data / "hcps.csv", index=False)
    note = "territory_id spellings that differ only in case, spaces or punctuation: 'north'"
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert note in said and "and 'North' (1 HCP)" in said, said
    trained = " ".join(run_ok("train", "--data", str(data), "--config", str(FAST)).split())
    assert note in trained, trained


def test_a_catalog_channel_without_consent_among_consented_ones_is_noted(
    env_settings: Path, tmp_path: Path
) -> None:
    """hcps has consent_email only: rep_visit, a catalog channel, reaches every HCP."""
    data = _foreign_dataset(tmp_path / "partial", with_outcome=True)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    note = (
        "note: hcps: no consent_rep_visit column, so every HCP counts as consenting to "
        "rep_visit (catalog action visit-a), while the file has consent columns for email: "
        "add consent_rep_visit if rep_visit needs consent"
    )
    assert note in said, said
    # Training says so too, and the run's notes keep it.
    trained = " ".join(run_ok("train", "--data", str(data), "--config", str(FAST)).split())
    assert note in trained, trained
    # No consent column at all: the default (everyone consents) is relied on, unnoted.
    hcps = pd.read_csv(data / "hcps.csv", dtype=str, keep_default_na=False)
    hcps.drop(columns=["consent_email"]).to_csv(data / "hcps.csv", index=False)
    assert "consent" not in run_ok("validate", "--data", str(data))


def test_deleting_a_catalog_row_the_history_names_says_once_what_to_do(
    env_settings: Path, tmp_path: Path
) -> None:
    data = _foreign_dataset(tmp_path / "deleted", with_outcome=True)
    catalog = pd.read_csv(data / "catalog.csv", dtype=str, keep_default_na=False)
    catalog[catalog["action_id"] != "mail-a"].to_csv(data / "catalog.csv", index=False)
    interactions = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    n = int((interactions["action_id"] == "mail-a").sum())
    assert n > 20  # more rows than are listed
    result = runner.invoke(app, ["validate", "--data", str(data)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert "unknown action_id 'mail-a' (not in catalog)" in said
    assert said.count("hint:") == 1
    assert (
        f"hint: interactions.csv, column 'action_id': {n:,} rows name an action_id not in the "
        "catalog (mail-a): keep the catalog row" in said
    ), said
    assert "approved_until in the past" in said and "withdrawn_actions" in said


def test_bad_data_stops_with_file_row_and_column(env_settings: Path, tmp_path: Path) -> None:
    data = _foreign_dataset(tmp_path / "bad", with_outcome=True)
    frame = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    frame.loc[3, "action_id"] = "no-such-action"
    frame.to_csv(data / "interactions.csv", index=False)
    result = runner.invoke(app, ["train", "--data", str(data), "--config", str(FAST)])
    assert result.exit_code == 2
    assert "interactions.csv" in result.output
    assert "row 4" in result.output
    assert "action_id" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["picks", "--data", "x", "--out", "p.txt"],
            "--out must end in .csv or .parquet",
            id="bad-out",
        ),
        pytest.param(["train", "--data", "x", "--as-of", "soon"], "not a date", id="bad-as-of"),
        # A --data path that is no directory is a path error, not a contract break.
        pytest.param(
            ["train", "--data", "no-such-dir"],
            "error: --data: No such file or directory: no-such-dir\n",
            id="missing-data",
        ),
        # A decision date is --as-of or --date (the API's name) to picks and explain alike.
        pytest.param(
            ["picks", "--data", "x", "--out", "p.csv", "--date", "soon"],
            "--as-of/--date 'soon' is not a date",
            id="picks-date",
        ),
        pytest.param(
            ["explain", "H000001", "--as-of", "soon"],
            "--as-of/--date 'soon' is not a date",
            id="explain-as-of",
        ),
        pytest.param(
            ["train", "--data", "x", "--config", "no-such.yaml"],
            "training config no-such.yaml does not exist",
            id="missing-train-config",
        ),
        pytest.param(
            ["retrain", "--data", "x", "--config", "no-such.yaml"],
            "training config no-such.yaml does not exist",
            id="missing-retrain-config",
        ),
        pytest.param(
            ["simulate", "--out", "x", "--format", "xml"], "csv or parquet", id="bad-format"
        ),
        # What an error quotes is text, not markup: '[/]' was a MarkupError traceback.
        pytest.param(
            ["validate", "--data", "no[/]where [bold]"],
            "--data: No such file or directory: no[/]where [bold]",
            id="error-quoting-markup",
        ),
    ],
)
def test_cli_rejects_bad_options(env_settings: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize("command", ["validate", "train", "picks"])
def test_a_data_path_that_is_no_directory_is_a_path_error(
    env_settings: Path, tmp_path: Path, command: str
) -> None:
    """A typo in --data, or a table's file given for its directory: named as a path,
    not as "input data break the contract (1 problem)"."""
    env_settings.mkdir()  # picks reads the data once its models directory is there
    table = tmp_path / "hcps.csv"
    table.write_text("hcp_id\nH000001\n")
    out = ["--out", str(tmp_path / "picks.csv")] if command == "picks" else []
    for data, said in (
        (tmp_path / "no-such-dir", "No such file or directory"),
        (table, "Not a directory"),
    ):
        result = runner.invoke(app, [command, "--data", str(data), *out])
        assert result.exit_code == 2, result.output
        assert result.output.endswith(f"error: --data: {said}: {data}\n"), result.output
        assert "contract" not in result.output, result.output


def test_picks_log_refuses_another_holdout_rate_than_the_log_before_any_work(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server at 0.2 logged last; `picks --log` at the default 0.05 would hold out
    other HCPs (and e-mail some the server holds out): refused before the data is
    read, naming both rates and the variable."""
    from nextbest.storage import log_recommendations
    from nextbest.storage.db import store_session
    from nextbest.storage.testing import recommendation_record

    with store_session(get_settings().resolved_database_url) as session:
        held = recommendation_record("served-1", "H1", holdout=True, holdout_rate=0.2)
        log_recommendations(session, records=[held])
        session.commit()
    out = tmp_path / "sent.csv"
    # No data there, and no model: the refusal comes first, before either is read.
    args = ["picks", "--data", str(tmp_path / "no-data"), "--out", str(out), "--log"]
    result = runner.invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "the holdout rate here is 0.05 (NEXTBEST_HOLDOUT_RATE)" in said, said
    assert "served with holdout rate 0.2" in said and "NEXTBEST_HOLDOUT_RATE=0.2" in said, said
    assert "--new-holdout-rate" in said, said
    assert not out.exists()
    assert "the rate of the newest logged answer" in said, said
    # A rate changed on purpose is said so, and the run goes on (to the missing data).
    result = runner.invoke(app, [*args, "--new-holdout-rate"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "no-data" in said, said
    assert "holdout rate changed on purpose (--new-holdout-rate): logging at 0.05" in said
    # ... a flag for logged runs only: plain picks draw no holdout.
    result = runner.invoke(app, [*args[:-1], "--new-holdout-rate"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "--new-holdout-rate is for --log runs" in said, said
    # With the log's rate the check passes and the run goes on (to the missing data).
    monkeypatch.setenv("NEXTBEST_HOLDOUT_RATE", "0.2")
    get_settings.cache_clear()
    result = runner.invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "holdout rate" not in said, said
    assert "no-data" in said, said
    # Plain picks are not logged and draw no holdout: no check.
    monkeypatch.delenv("NEXTBEST_HOLDOUT_RATE")
    get_settings.cache_clear()
    result = runner.invoke(app, args[:-1])
    assert "holdout rate" not in " ".join(result.output.split()), result.output


def test_a_models_dir_or_database_path_that_cannot_be_used_is_one_line_and_exit_2(
    tmp_path: Path, world_dir: Path
) -> None:
    """Not a traceback and exit 1, which promote (gate kept the champion) and
    feedback (rows rejected) give meanings a nightly job acts on."""
    import subprocess
    import sys

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    events = tmp_path / "events.csv"
    events.write_text("event_id,event_type,hcp_id\ne1,opened,H000001\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    store = tmp_path / "store-dir"  # a database path that is a directory
    store.mkdir()
    runs = {
        "promote": ({"NEXTBEST_MODELS_DIR": str(blocker / "models")}, ["promote"]),
        "keys": ({"NEXTBEST_MODELS_DIR": str(blocker / "models")}, ["keys", "list"]),
        "uplift-report": (
            {
                "NEXTBEST_MODELS_DIR": str(tmp_path / "models"),
                "NEXTBEST_DATABASE_URL": f"sqlite:///{store}",
            },
            ["uplift-report", "--out", str(tmp_path / "report")],
        ),
        "train": (
            {"NEXTBEST_MODELS_DIR": str(blocker / "models")},
            ["train", "--data", str(world_dir)],
        ),
        "feedback": (
            {
                "NEXTBEST_MODELS_DIR": str(tmp_path / "models"),
                "NEXTBEST_DATABASE_URL": f"sqlite:///{blocker / 'x.db'}",
            },
            ["feedback", str(events)],
        ),
        "erase": (
            {
                "NEXTBEST_MODELS_DIR": str(tmp_path / "models"),
                "NEXTBEST_DATABASE_URL": f"sqlite:///{blocker / 'x.db'}",
            },
            ["erase", "H000001", "--yes"],
        ),
    }
    for name, (settings, args) in runs.items():
        run = subprocess.run(
            [sys.executable, "-m", "nextbest", *args],
            env={**env, **settings},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parents[2],
        )
        said = " ".join(run.stderr.split())
        assert run.returncode == 2, (name, run.stderr[-3000:])
        assert "Traceback" not in run.stderr, (name, run.stderr[-3000:])
        if name == "uplift-report":  # opened by the driver: it names the URL
            assert "a database cannot be used" in said and str(store) in said, said
            continue
        assert str(blocker) in said, (name, said)
        setting = (
            "NEXTBEST_DATABASE_URL" if name in ("feedback", "erase") else "NEXTBEST_MODELS_DIR"
        )
        assert setting in said, (name, said)
        # train stops once the data are read: no step of the work after it was started
        assert name != "train" or "features" not in said, said


def test_serve_with_a_metrics_directory_that_is_no_directory_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    """An operator's PROMETHEUS_MULTIPROC_DIR that does not exist (or is a file) is
    named, with what to do, not left to a metrics file's name under it (exit 2)."""
    import subprocess
    import sys

    from nextbest.api.process import free_port

    a_file = tmp_path / "metrics.txt"
    a_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env["NEXTBEST_MODELS_DIR"] = str(tmp_path / "models")
    env["NEXTBEST_DATABASE_URL"] = f"sqlite:///{tmp_path / 'serve.db'}"
    for metrics, what in ((tmp_path / "no-such-dir", "which does not exist"), (a_file, "a file")):
        run = subprocess.run(
            [sys.executable, "-m", "nextbest", "serve", "--port", str(free_port())],
            env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parents[2],
        )
        said = " ".join(run.stderr.split())
        assert run.returncode == 2, run.stderr[-3000:]
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
        assert f"PROMETHEUS_MULTIPROC_DIR is {metrics}, {what}" in said, said
        assert "make it an empty directory" in said, said
        assert not (tmp_path / "no-such-dir").exists()  # not made: the operator's to make


def test_a_command_run_beside_a_server_writes_no_metrics_files_into_its_directory(
    tmp_path: Path,
) -> None:
    """A command run in the server's environment (its container, a cron job beside it)
    keeps its counters to itself: files it left in PROMETHEUS_MULTIPROC_DIR stayed
    there for good, one set per run, and the server's /metrics summed them in."""
    import subprocess
    import sys

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    events = tmp_path / "events.csv"
    events.write_text(
        "event_id,hcp_id,event_type,occurred_at\nE1,H1,opted_out,2026-01-05T10:00:00Z\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env["NEXTBEST_MODELS_DIR"] = str(tmp_path / "models")
    env["NEXTBEST_DATABASE_URL"] = f"sqlite:///{tmp_path / 'feedback.db'}"
    migrate(env["NEXTBEST_DATABASE_URL"])  # feedback makes no log (a mistyped setting)
    run = subprocess.run(
        [sys.executable, "-m", "nextbest", "feedback", str(events)],
        env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "stored 1 of 1 event" in " ".join(run.stdout.split()), run.stdout
    assert sorted(path.name for path in metrics.iterdir()) == []


@pytest.mark.postgres
def test_a_postgresql_error_on_a_commands_console_leaves_out_the_rows_values(
    trained, tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL names the values of the row a statement failed on (``DETAIL:
    Failing row contains (...)``): HCP ids. A command's console (often a scheduler's
    log) says the error's first line (`picks --log` on a schema a newer release
    added a NOT NULL column to), and a line the package logs leaves the values out
    as the server's JSON lines do."""
    import shutil
    import subprocess
    import sys

    from sqlalchemy.exc import IntegrityError

    from nextbest.cli.output import Notes
    from nextbest.storage import log_recommendations, migrate
    from nextbest.storage.db import make_session_factory
    from nextbest.storage.testing import recommendation_record

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE recommendations ADD added_later text NOT NULL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env |= {"NEXTBEST_MODELS_DIR": str(models), "NEXTBEST_DATABASE_URL": postgres_url}
    args = ["picks", "--data", str(trained.data_dir), "--out", str(tmp_path / "send.csv")]
    run = subprocess.run(
        [sys.executable, "-m", "nextbest", *args, "--log"],
        env=env,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert 'null value in column "added_later"' in run.stderr, run.stderr[-3000:]
    hcps = pd.read_csv(trained.data_dir / "hcps.csv")["hcp_id"].astype(str)
    assert "DETAIL" not in run.stderr and not any(h in run.stderr for h in hcps)
    # The same error, logged by the package (as the recommendation log does).
    try:
        with make_session_factory(engine)() as session:
            log_recommendations(session, records=[recommendation_record("r-1", "H-4711")])
            session.commit()
    except IntegrityError as exc:
        failed = exc
    engine.dispose()
    assert "DETAIL:  Failing row contains" in str(failed) and "H-4711" in str(failed)
    logging.getLogger("nextbest.service.reclog").addHandler(notes := Notes(logging.WARNING))
    try:
        capsys.readouterr()
        logging.getLogger("nextbest.service.reclog").error(
            "recommendation log write failed, %d answers not logged: %s", 1, failed
        )
    finally:
        logging.getLogger("nextbest.service.reclog").removeHandler(notes)
    said = capsys.readouterr().err
    assert "error: recommendation log write failed" in said, said
    assert "DETAIL:  (the row's values are left out of the log)" in said, said
    assert "H-4711" not in said


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_picks_log_stopped_by_a_signal_leaves_a_file_and_its_log_or_neither(
    trained, tmp_path: Path, signum: int
) -> None:
    """A scheduler's timeout (SIGTERM) or Ctrl-C as the send file appears: either the
    run was done (file and log, exit 0) or it stopped before logging (neither, and no
    partial file left, exit 128 + the signal); never answers logged with no file."""
    import shutil
    import subprocess
    import sys
    import time

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    migrate(f"sqlite:///{models / 'nextbest.db'}")  # the log, made before the first send
    out = tmp_path / "send.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env |= {"NEXTBEST_MODELS_DIR": str(models), "NEXTBEST_HOLDOUT_RATE": "0.1"}
    args = ["picks", "--data", str(trained.data_dir), "--out", str(out), "--log"]
    run = subprocess.Popen(
        [sys.executable, "-m", "nextbest", *args],
        env=env,
        cwd=Path(__file__).parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal, also when the suite runs in the background (SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = tmp_path / f".send.{run.pid}.partial.csv"  # the run's own
    deadline = time.monotonic() + 120
    while not (partial.exists() or out.exists()) and run.poll() is None:
        assert time.monotonic() < deadline, "picks --log wrote no file"
        time.sleep(0.002)
    run.send_signal(signum)
    _, err = run.communicate(timeout=120)
    engine = make_engine(f"sqlite:///{models / 'nextbest.db'}")
    with engine.connect() as connection:
        logged = pd.read_sql("SELECT recommendation_id FROM recommendations", connection)
    engine.dispose()
    assert not partial.exists() and not list(tmp_path.glob(".send.*")), err[-2000:]
    if out.exists():  # done before the signal took effect: every HCP answered and logged
        assert run.returncode == 0, err[-2000:]
        hcps = pd.read_csv(trained.data_dir / "hcps.csv")
        assert len(logged) == len(hcps)
        assert set(pd.read_csv(out)["recommendation_id"]) <= set(logged["recommendation_id"])
    else:
        assert run.returncode == 128 + signum, (run.returncode, err[-2000:])
        assert logged.empty, err[-2000:]


def test_picks_log_refuses_to_write_a_file_another_run_is_writing(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send job started twice at once wrote one file twice: both runs logged their
    answers as served, and the later file replaced the other, so half the logged
    answers were in no file sent. The second run is refused before any work, naming
    the run that writes the file; once that one has ended, a run goes through."""
    import shutil

    from nextbest.locking import try_flock

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    get_settings.cache_clear()
    run_ok("db", "upgrade")  # the log, made before the first send logged to it
    out = tmp_path / "sends" / "send.csv"
    out.parent.mkdir()
    lock = out.with_name(".send.csv.lock")
    args = ["picks", "--data", str(trained.data_dir), "--out", str(out), "--log"]
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # the first run's, as it writes
    try:
        assert try_flock(fd)
        os.write(fd, b"4242\n")
        result = runner.invoke(app, args)
    finally:
        os.close(fd)
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said[-2000:]
    assert (
        f"error: --out: another `nextbest picks` run (process 4242) is writing {out}"
    ) in said, said
    engine = make_engine(f"sqlite:///{models / 'nextbest.db'}")
    with engine.connect() as connection:
        logged = pd.read_sql("SELECT recommendation_id FROM recommendations", connection)
    engine.dispose()
    assert logged.empty and not out.exists(), said
    # The first run has ended: a run writes the file, and leaves no lock file behind.
    said = run_ok(*args)
    assert out.exists() and sorted(p.name for p in out.parent.iterdir()) == ["send.csv"], said


def test_picks_write_through_a_symlinked_out_keep_its_mode_and_clean_up_on_sigterm(
    trained, tmp_path: Path, monkeypatch
) -> None:
    """--out as a symlink (a send system's fixed path pointing at the day's file): the
    file it points at gets the picks and the link stays a link, where the rename
    replaced the link with a plain file. A file the operator made group-readable
    keeps its mode, where it took the default. A scheduler's SIGTERM while a plain
    run writes removes the partial file (exit 143) and leaves the earlier file as
    it was, where it left a hidden .NAME.partial.csv behind."""
    import shutil
    import stat

    from nextbest.contract import files

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    get_settings.cache_clear()
    sends = tmp_path / "sends"
    sends.mkdir()
    target = sends / "today.csv"
    target.write_text("hcp_id\n")
    target.chmod(0o640)
    link = tmp_path / "send.csv"
    link.symlink_to(target)
    args = ["picks", "--data", str(trained.data_dir), "--out", str(link), "--k", "2"]

    run_ok(*args)
    assert link.is_symlink() and link.resolve() == target.resolve()
    written = pd.read_csv(target)
    assert len(written) > 0 and {"hcp_id", "action_id"} <= set(written.columns)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in sends.iterdir()) == ["today.csv"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    earlier = target.read_bytes()
    write_table = files.write_table

    def stopped_part_way(frame: pd.DataFrame, path: Path | str) -> None:
        write_table(frame.head(3), path)  # some rows on disk, then the scheduler
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr("nextbest.contract.write_table", stopped_part_way)
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 143, stopped.output
    assert target.read_bytes() == earlier
    assert sorted(p.name for p in sends.iterdir()) == ["today.csv"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back after the run


def test_picks_that_cannot_write_their_whole_file_leave_the_earlier_one_as_it_was(
    trained, tmp_path: Path
) -> None:
    """A plain `picks` run whose file cannot be written to its end (a full disk or a
    quota; here a file size limit) wrote straight into --out: the file of the run
    before, which a send system reads, was left cut short part way through its rows.
    It is now written beside --out and renamed once whole: exit 2 naming --out, the
    earlier file untouched, nothing left beside it."""
    import resource
    import shutil
    import subprocess
    import sys

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    sends = tmp_path / "sends"
    sends.mkdir()
    out = sends / "picks.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env |= {"NEXTBEST_MODELS_DIR": str(models)}
    args = [sys.executable, "-m", "nextbest", "picks", "--data", str(trained.data_dir)]
    args += ["--out", str(out), "--k", "3"]
    cwd = Path(__file__).parents[2]
    first = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    earlier = out.read_bytes()
    limit = len(earlier) // 2
    assert limit > 64 * 1024  # above what reading the model and the log writes

    def file_size_limit() -> None:  # Python ignores SIGXFSZ: a write past it is EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = subprocess.run(
        args,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=file_size_limit,
    )
    said = " ".join(run.stderr.split())
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(out.read_bytes()) == len(earlier), said  # not cut short at the limit
    assert out.read_bytes() == earlier
    assert [p.name for p in sends.iterdir()] == ["picks.csv"]
    assert f"error: --out: cannot write {out}: File too large" in said, said
    assert "Traceback" not in run.stderr


def test_picks_refuse_an_out_that_names_what_they_read(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out naming the --hcps send list, or a table of --data: the picks replaced the
    send list, or the data's hcps file, which the next picks or train refused as no
    HCP file. Refused before any work (exit 2), naming the file, which stays as it
    was; a file beside them is written."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    get_settings.cache_clear()
    data = tmp_path / "data"
    shutil.copytree(trained.data_dir, data)
    sends = tmp_path / "send list.csv"
    sends.write_text("hcp_id\nH000001\nH000002\n")
    link = tmp_path / "today.csv"
    link.symlink_to(sends)
    hcps = (data / "hcps.csv").read_bytes()
    for args, said in [
        (
            ["--hcps", str(sends), "--out", str(link)],
            f"error: --out: {link} is the --hcps file: the picks would replace the send "
            "list; name another file",
        ),
        (
            ["--data", str(data), "--out", str(data / "hcps.csv")],
            f"error: --out: {data / 'hcps.csv'} is the hcps table of --data {data}: the "
            "picks would replace it; name a file elsewhere",
        ),
        (
            ["--data", str(data), "--out", str(data / "catalog.parquet")],
            f"error: --out: {data / 'catalog.parquet'} is the catalog table of --data "
            f"{data}: the picks beside its catalog file in the other format would make the "
            "directory hold two, refused as data; name a file elsewhere",
        ),
    ]:
        result = runner.invoke(app, ["picks", *args])
        shown = " ".join(result.output.split())
        assert result.exit_code == 2, shown
        assert said in shown, shown
    assert sends.read_text() == "hcp_id\nH000001\nH000002\n"
    assert (data / "hcps.csv").read_bytes() == hcps
    assert not (data / "catalog.parquet").exists()
    run_ok("picks", "--data", str(data), "--out", str(data / "picks.csv"))
    assert (data / "picks.csv").exists()


def test_train_into_a_models_dir_it_cannot_write_stops_before_training(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A models directory made read-only (`chattr +i`, a read-only mount) passes a
    permission check as root; train used to fit every model and then fail at the
    registration with tracebacks and exit 1. Root only: chattr needs it."""
    import shutil
    import subprocess

    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    if subprocess.run(["chattr", "+i", str(models)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (not root, or the filesystem lacks it)")
    try:
        monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
        get_settings.cache_clear()
        result = runner.invoke(
            app,
            ["train", "--data", str(trained.data_dir), "--config", str(FAST)],
        )
        said = " ".join(result.output.split())
        assert result.exit_code == 2, said[-2000:]
        assert f"NEXTBEST_MODELS_DIR: cannot use {models}: Operation not permitted" in said
        assert "Traceback" not in result.output and "features" not in said
    finally:
        subprocess.run(["chattr", "-i", str(models)], check=True)


def test_outputs_that_cannot_be_written_stop_before_any_work(
    env_settings: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    a_dir = tmp_path / "picks.csv"
    a_dir.mkdir()
    for args, says in (
        (["picks", "--data", "x", "--out", str(a_dir)], "is a directory; name the file"),
        (
            ["picks", "--data", "x", "--out", str(a_file / "p.csv")],
            f"error: --out: Not a directory: {a_file}",
        ),
        (["uplift-report", "--out", str(a_file / "report")], "error: --out:"),
        # A file where the directory goes: said as such, not as "[Errno 17] File exists".
        (["uplift-report", "--out", str(a_file)], f"error: --out: Not a directory: {a_file}"),
        (["simulate", "--out", str(a_file)], f"error: --out: Not a directory: {a_file}"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert says in " ".join(result.output.split()), result.output
    # feedback: refused before any event is stored (a retry would be safe, but the
    # exit code would say the file itself was unusable).
    events = tmp_path / "events.csv"
    events.write_text("event_id,event_type,hcp_id\ne1,opened,H1\n")
    for rejected, says in (
        (a_file / "bad.csv", f"error: --rejected: Not a directory: {a_file}"),
        (a_dir, "is a directory; name the file"),
    ):
        result = runner.invoke(app, ["feedback", str(events), "--rejected", str(rejected)])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and says in said and "stored" not in said, said
    # A directory that does not exist yet is made, as --out's are (the models
    # directory and its log must exist: feedback makes neither).
    env_settings.mkdir()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    made = tmp_path / "new" / "dir" / "bad.csv"
    result = runner.invoke(app, ["feedback", str(events), "--rejected", str(made)])
    assert result.exit_code == 0 and made.exists(), result.output


def test_work_without_a_bar_is_said_off_a_terminal(env_settings: Path, tmp_path: Path) -> None:
    """Off a terminal (a cron job's log) a spinner is not drawn: the work says when it
    starts and when it is done, so a long evaluation is seen at work."""
    said = run_ok("simulate", "--out", str(tmp_path / "world"), "--hcps", "20", "--periods", "2")
    lines = said.splitlines()
    started = lines.index("simulating 20 HCPs x 2 periods ...")
    done = [
        i
        for i, line in enumerate(lines)
        if line.startswith("simulating 20 HCPs x 2 periods: done (")
    ]
    assert done and done[0] > started, said


def test_validate_says_it_is_reading_the_files_while_it_does(
    env_settings: Path, tmp_path: Path
) -> None:
    """Checking a history of millions of rows takes a minute or more: off a terminal
    validate says when it starts reading the files and when it is done, as the other
    long steps do, not nothing until the report."""
    world = tmp_path / "world"
    run_ok("simulate", "--out", str(world), "--hcps", "100", "--periods", "8")
    result = runner.invoke(app, ["validate", "--data", str(world)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    started = lines.index(f"reading and checking the files in {world} ...")
    done = [
        i
        for i, line in enumerate(lines)
        if line.startswith(f"reading and checking the files in {world}: done (")
    ]
    assert done and done[0] > started, result.stderr
    assert result.stdout.startswith("ok: 100 HCPs"), result.stdout
    # A --data that is no directory is said at once, without announcing a reading.
    result = runner.invoke(app, ["validate", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "No such file or directory" in result.output
    assert "reading" not in result.output, result.output


def test_simulate_of_one_hcp_says_it_in_the_singular(env_settings: Path, tmp_path: Path) -> None:
    """`simulate --hcps 1 --periods 1` said "simulating 1 HCPs x 1 periods" and
    "1 decisions"."""
    said = " ".join(
        run_ok("simulate", "--out", str(tmp_path / "w"), "--hcps", "1", "--periods", "1").split()
    )
    assert "simulating 1 HCP x 1 period" in said, said
    assert "wrote 1 HCP, 40 actions, 1 decision and the ground truth" in said, said


def test_simulate_refuses_to_mix_formats_or_write_under_a_file(
    env_settings: Path, tmp_path: Path
) -> None:
    world = tmp_path / "world"
    run_ok("simulate", "--out", str(world), "--hcps", "20", "--periods", "2")
    before = sorted(p.name for p in world.iterdir())
    mixed = runner.invoke(
        app,
        ["simulate", "--out", str(world), "--hcps", "20", "--periods", "2", "--format", "parquet"],
    )
    assert mixed.exit_code == 2
    assert "hcps.csv exists; writing hcps.parquet beside it" in " ".join(mixed.output.split())
    assert sorted(p.name for p in world.iterdir()) == before  # nothing written
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    under = runner.invoke(app, ["simulate", "--out", str(a_file / "world"), "--hcps", "5"])
    assert under.exit_code == 2 and "error: --out:" in under.output, under.output
    negative = runner.invoke(app, ["simulate", "--out", str(tmp_path / "w2"), "--seed", "-1"])
    assert negative.exit_code == 2 and "'--seed'" in negative.output, negative.output
    assert not (tmp_path / "w2").exists()


def test_simulate_keeps_another_world_in_out_unless_told_to_replace_it(
    env_settings: Path, tmp_path: Path
) -> None:
    """`simulate --out DIR` wrote over the world DIR held without a word. It is kept,
    the files named with the option that replaces them; the same world simulated
    again (as `make demo` does on every run) is fine."""
    world = tmp_path / "world"
    args = ["simulate", "--out", str(world), "--hcps", "20", "--periods", "2"]
    run_ok(*args, "--seed", "1")
    held = {p.name: p.read_bytes() for p in world.iterdir()}
    assert "wrote 20 HCPs" in run_ok(*args, "--seed", "1")  # the same world: fine
    assert {p.name: p.read_bytes() for p in world.iterdir()} == held

    refused = runner.invoke(app, [*args, "--seed", "2"])
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert (
        f"error: --out: {world} holds another world: writing this one would replace "
        "hcps.csv, catalog.csv, interactions.csv and truth.parquet; give --replace to "
        "replace them, or another --out"
    ) in said, said
    assert "wrote" not in said
    assert {p.name: p.read_bytes() for p in world.iterdir()} == held  # nothing written

    assert "wrote 20 HCPs" in run_ok(*args, "--seed", "2", "--replace")
    fresh = tmp_path / "fresh"
    run_ok("simulate", "--out", str(fresh), "--hcps", "20", "--periods", "2", "--seed", "2")
    assert {p.name: p.read_bytes() for p in world.iterdir()} == {
        p.name: p.read_bytes() for p in fresh.iterdir()
    }


@pytest.mark.parametrize(
    ("env", "file_text", "message"),
    [
        pytest.param(
            {"NEXTBEST_EPSILON": "2"},
            None,
            "invalid setting: NEXTBEST_EPSILON='2': Input should be less than or equal to 1",
            id="bad-setting",
        ),
        pytest.param(
            {"NEXTBEST_HOLDOUT_RATE": "10"},
            None,
            "invalid setting: NEXTBEST_HOLDOUT_RATE='10': Input should be less than 1; the "
            "setting: share of requests answered with no action; for 10%, write 0.1",
            id="share-given-as-a-percentage",
        ),
        pytest.param(
            {"NEXTBEST_DATABASE_URL": "notaurl"},
            None,
            "invalid setting: NEXTBEST_DATABASE_URL='notaurl': not a database URL; use "
            "sqlite:///relative/path.db, sqlite:////absolute/path.db or "
            "postgresql+psycopg://user:password@host:5432/database",
            id="database-url-not-a-url",
        ),
        pytest.param(
            {"NEXTBEST_DATABASE_URL": "postgres://ops:S3CRETPW@db.example:5432/nextbest"},
            None,
            "NEXTBEST_DATABASE_URL='postgres://ops:***@db.example:5432/nextbest': SQLAlchemy "
            "does not know the scheme 'postgres'; write postgresql+psycopg://",
            id="database-url-postgres-scheme",
        ),
        pytest.param(
            {"NEXTBEST_DATABASE_URL": "mysql://ops:S3CRETPW@db.example/nextbest"},
            None,
            "NEXTBEST_DATABASE_URL='mysql://ops:***@db.example/nextbest': unsupported "
            "database 'mysql' (SQLite and PostgreSQL are)",
            id="database-url-other-backend",
        ),
        pytest.param(
            {"NEXTBEST_DATABASE_URL": "postgresql+psycopg2://ops:S3CRETPW@db.example/nextbest"},
            None,
            "NEXTBEST_DATABASE_URL='postgresql+psycopg2://ops:***@db.example/nextbest': the "
            "driver 'psycopg2' of 'postgresql+psycopg2' is not installed; write "
            "postgresql+psycopg://",
            id="database-url-driver-not-installed",
        ),
        pytest.param(
            {"NEXTBEST_DATABASE_URL": "sqlite://models/nextbest.db"},
            None,
            "a SQLite URL names a file after three slashes",
            id="database-url-sqlite-two-slashes",
        ),
        pytest.param(
            {"NEXTBEST_DATABASE_URL": "sqlite:///"},
            None,
            "an in-memory SQLite database is lost with its process",
            id="database-url-sqlite-in-memory",
        ),
        pytest.param(
            {"NEXTBEST_DATABASE_URL": "postgresql+psycopg//ops:S3CRETPW@db/nextbest"},
            None,
            "NEXTBEST_DATABASE_URL='postgresql+psycopg//ops:***@db/nextbest': not a database URL",
            id="database-url-typo-keeps-the-password-hidden",
        ),
        pytest.param(
            {"NEXTBEST_SEED": "-1"},
            None,
            "invalid setting: NEXTBEST_SEED='-1': Input should be greater than or equal to 0",
            id="negative-seed",
        ),
        pytest.param(
            {"NEXTBEST_SERVE_ALIAS": ""},
            None,
            "invalid setting: NEXTBEST_SERVE_ALIAS='': must not be empty",
            id="empty-alias",
        ),
        pytest.param(
            {"NEXTBEST_MODEL_NAME": " "},
            None,
            "invalid setting: NEXTBEST_MODEL_NAME=' ': must not be empty",
            id="blank-model-name",
        ),
        pytest.param(
            {"NEXTBEST_RULES_FILE": "{tmp}/missing.yaml"},
            None,
            "NEXTBEST_RULES_FILE names {tmp}/missing.yaml, which does not exist",
            id="named-rules-file-missing",
        ),
        pytest.param(
            {"NEXTBEST_RULES_FILE": "{tmp}/file.yaml"},
            "caps: {email: 3}\n",
            "file.yaml, line 1: unknown field 'caps' (allowed here: all_channels, channels, "
            "dismissal_days, max_items_per_channel, rep_plan, snooze_days, strict, "
            "withdrawn_actions)",
            id="bad-rules-file",
        ),
        pytest.param(
            {"NEXTBEST_API_KEYS_FILE": "{tmp}/missing.yaml"},
            None,
            "NEXTBEST_API_KEYS_FILE names {tmp}/missing.yaml, which does not exist: a server "
            "would hold none of its keys and refuse their callers; correct the setting, or "
            "create the file with `nextbest keys add NAME --role admin --file "
            "{tmp}/missing.yaml`",
            id="named-keys-file-missing",
        ),
        pytest.param(
            {"NEXTBEST_API_KEYS_FILE": "{tmp}/file.yaml"},
            "keys: [\n",
            "file.yaml: not valid YAML, line 2, column 1: expected the node content",
            id="bad-keys-file",
        ),
        pytest.param(
            {"NEXTBEST_API_KEYS_FILE": "{tmp}/file.yaml"},
            "keys:\n  - name: crm\n    role: channel\n    key: PLAINTEXT-SECRET-0123456: x\n",
            "file.yaml: not valid YAML, line 4, column 34: mapping values are not allowed here",
            id="keys-file-broken-on-a-plaintext-key",
        ),
    ],
)
def test_serve_refuses_bad_configuration_before_starting(
    env_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    file_text: str | None,
    message: str,
) -> None:
    """No worker is started: the command names the setting or file and exits 2."""
    import uvicorn

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    if file_text is not None:
        (tmp_path / "file.yaml").write_text(file_text)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(tmp_path)))
    result = runner.invoke(app, ["serve", "--workers", "1"])
    assert result.exit_code == 2, result.output
    # Rich wraps long lines (and folds long paths) at the terminal's width.
    said = "".join(message.replace("{tmp}", str(tmp_path)).split())
    assert said in "".join(result.output.split()), result.output
    assert "PLAINTEXT" not in result.output  # a key file's error never quotes its text
    assert "S3CRETPW" not in result.output  # nor a setting's error a password
    assert not started


def test_train_on_a_local_dask_cluster(env_settings: Path, tmp_path: Path) -> None:
    import mlflow

    from nextbest.settings import get_settings

    world = tmp_path / "world"
    run_ok("simulate", "--out", str(world), "--hcps", "300", "--periods", "8", "--seed", "2")
    output = run_ok("train", "--data", str(world), "--config", str(FAST), "--dask", "local")
    assert "version 1" in output
    mlflow.set_tracking_uri(get_settings().resolved_tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    trained = [r for r in runs if "decision" not in r.data.tags]  # not the champion's record
    assert [r.data.params.get("dask.workers") for r in trained] == [
        str(len(os.sched_getaffinity(0)))
    ]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            "--dask=tcp://127.0.0.1:9",
            "--dask: cannot reach a Dask scheduler at 'tcp://127.0.0.1:9' ('local' starts "
            "one on this machine): nothing listens on port 9 of 127.0.0.1 (connection "
            "refused)",
        ),
        ("--dask=garbage", "--dask: cannot reach a Dask scheduler at 'garbage'"),
        ("--dask=", "--dask: cannot reach a Dask scheduler at ''"),
        (
            "--dask=http://127.0.0.1:9",
            "--dask: cannot reach a Dask scheduler at 'http://127.0.0.1:9'",
        ),
        (
            "NEXTBEST_DASK_SCHEDULER=garbage",
            "NEXTBEST_DASK_SCHEDULER: cannot reach a Dask scheduler at 'garbage'",
        ),
    ],
)
@pytest.mark.parametrize("command", ["train", "retrain"])
def test_train_names_an_unreachable_dask_scheduler_before_reading_the_data(
    env_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
    given: str,
    said: str,
) -> None:
    """Said before the data are read (a large data set took half a minute first), of a
    data directory that does not exist, naming the variable when it came from one."""
    from nextbest.learning import distributed

    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 1)
    args = [command, "--data", str(tmp_path / "none")]
    if given.startswith("--"):
        args.append(given)
    else:
        monkeypatch.setenv(*given.split("=", 1))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"error: {said}" in " ".join(result.output.split()), result.output
    assert "data directory not found" not in result.output
    assert not env_settings.exists()


def test_train_on_dask_without_distributed_says_what_to_install(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "none"), "--dask", "local"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "error: --dask: training on a Dask cluster needs distributed" in said, said
    assert "pip install 'dask[dataframe,distributed]'" in said
    assert "data directory not found" not in said and not env_settings.exists()


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ("none", "error: --data: No such file or directory: {data}"),
        ("a-file", "error: --data: Not a directory: {data}"),
        # A directory without the contract's tables: read and refused first too.
        (
            "empty-dir",
            "error: input data break the contract (3 problems): hcps.{{csv,parquet}}: "
            "not found in {data}",
        ),
    ],
)
@pytest.mark.parametrize("command", ["train", "retrain"])
def test_train_with_data_it_cannot_read_makes_no_models_directory(
    env_settings: Path, tmp_path: Path, command: str, data: str, said: str
) -> None:
    """A mistyped or invalid --data: the empty models directory train made first was
    left behind, read later as a place something had been trained."""
    path = tmp_path / data
    if data == "a-file":
        path.write_text("hcp_id\n")
    elif data == "empty-dir":
        path.mkdir()
    result = runner.invoke(app, [command, "--data", str(path)])
    out = " ".join(result.output.split())
    assert result.exit_code == 2, out
    assert said.format(data=path) in out, out
    assert not env_settings.exists(), out


def test_serve_refuses_a_database_a_newer_release_migrated(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A code rollback onto a database the next release migrated: one clear line and
    exit 2, not a traceback from the migration tool."""
    import sqlalchemy as sa
    import uvicorn

    from nextbest.storage.db import make_engine, migrate

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    engine = make_engine(url)
    try:
        assert migrate(engine) == (None, "0014")
        assert migrate(engine) == ("0014", "0014")
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    finally:
        engine.dispose()
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", url)
    result = runner.invoke(app, ["serve", "--workers", "1"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "the database's schema is at revision 0099, which this release does not know" in said
    assert "(its newest is 0014)" in said and "Traceback" not in result.output
    assert "downgrade the schema with it first (`nextbest db downgrade 0014`" in said, said
    assert not started
    # Every other command that opens the database says the same, in one line.
    import sys

    from nextbest.cli import main

    feed = tmp_path / "feed.csv"
    feed.write_text("event_id,event_type,hcp_id\nx-1,opened,H1\n")
    monkeypatch.setattr(sys, "argv", ["nextbest", "feedback", str(feed)])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2


def test_serve_warns_when_its_models_directory_did_not_exist(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped NEXTBEST_MODELS_DIR made an empty store the server waited on for
    ever, /readyz saying only that the alias is missing: the start says why."""
    import uvicorn

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    assert not env_settings.exists()
    result = runner.invoke(app, ["serve", "--workers", "1"])
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    warned = [line for line in logged if line.get("event") == "models_dir_created"]
    assert len(warned) == 1 and warned[0]["level"] == "WARNING", logged
    assert (
        f"the models directory {env_settings} (NEXTBEST_MODELS_DIR) did not exist"
        in (warned[0]["message"])
    )
    # The default database inside it is not warned about a second time.
    assert not [line for line in logged if line.get("event") == "database_dir_created"], logged
    assert started  # it serves anyway: a model trained into it later is picked up
    again = runner.invoke(app, ["serve", "--workers", "1"])  # it exists now
    assert again.exit_code == 0 and "models_dir_created" not in again.output, again.output


def test_serve_and_db_upgrade_warn_when_the_database_directory_did_not_exist(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped NEXTBEST_DATABASE_URL path made a new, empty database silently, which
    then collected the feedback: the command that creates it says so, naming the
    file and the setting, once."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    database = tmp_path / "typo" / "dir" / "serve.db"
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{database}")
    get_settings.cache_clear()
    result = runner.invoke(app, ["serve", "--workers", "1"])
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    warned = [line for line in logged if line.get("event") == "database_dir_created"]
    assert len(warned) == 1 and warned[0]["level"] == "WARNING", logged
    said = warned[0]["message"]
    assert f"the directory {database.parent} of the SQLite database {database} did not exist" in (
        said
    )
    assert "check NEXTBEST_DATABASE_URL" in said, said
    assert database.exists()  # created all the same
    again = runner.invoke(app, ["serve", "--workers", "1"])
    assert again.exit_code == 0 and "database_dir_created" not in again.output, again.output

    database = tmp_path / "other" / "upgraded.db"
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{database}")
    get_settings.cache_clear()
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    said = " ".join(upgraded.output.split())
    assert f"note: the directory {database.parent} of the SQLite database {database} " in said
    assert said.count("did not exist and was created") == 1 and database.exists(), said
    again = runner.invoke(app, ["db", "upgrade"])
    assert again.exit_code == 0 and "did not exist" not in again.output, again.output


def test_only_db_upgrade_and_serve_upgrade_an_older_schema(
    env_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Other commands refuse a database whose schema is behind (one line, exit 2,
    nothing changed); `db status` says so with exit 1; `db upgrade` upgrades it."""
    import sys

    from nextbest.cli import main
    from nextbest.storage.db import migrate, schema_revisions

    url = f"sqlite:///{tmp_path / 'older.db'}"
    assert migrate(url, revision="0008") == (None, "0008")
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", url)
    get_settings.cache_clear()
    feed = tmp_path / "feed.csv"
    feed.write_text("event_id,event_type,hcp_id\nx-1,opened,H1\n")
    monkeypatch.setattr(sys, "argv", ["nextbest", "feedback", str(feed)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "schema is at revision 0008, older than this release's 0014" in said, said
    assert "`nextbest db upgrade`" in said and said.count("error:") == 1, said
    # Refused before any work is shown: no "storing events: 0/1" read as started.
    assert "storing events" not in said and "no served model" not in said, said
    assert schema_revisions(url)[0] == "0008"  # nothing changed

    status = runner.invoke(app, ["db", "status"])
    assert status.exit_code == 1, status.output
    assert "schema revision 0008, behind this release's 0014" in " ".join(status.output.split())
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert "schema upgraded from revision 0008 to 0014" in upgraded.output
    assert schema_revisions(url)[0] == "0014"
    status = runner.invoke(app, ["db", "status"])
    assert status.exit_code == 0 and "schema revision 0014, this release's" in status.output
    again = runner.invoke(app, ["db", "upgrade"])
    assert again.exit_code == 0 and "nothing to do" in again.output
    # Asked about a database file not made yet (a new machine, a mistyped path), it
    # says so and leaves no empty file, nor the directory, behind.
    missing = tmp_path / "not" / "yet.db"
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{missing}")
    get_settings.cache_clear()
    status = runner.invoke(app, ["db", "status"])
    assert status.exit_code == 0 and "no schema yet" in status.output, status.output
    assert not missing.parent.exists()


def test_serve_and_db_upgrade_stop_on_a_database_lacking_an_index_of_the_schema(
    env_settings: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgraded database lacking an index of this release's schema (a SQLite
    migration rebuilding a table drops its indexes on an expression without a word)
    stops `db upgrade` and `serve` with exit code 2, naming the index, its table and
    the statement recreating it; once recreated, both go on."""
    import uvicorn

    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: served.append(a))
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    first = runner.invoke(app, ["db", "upgrade"])
    assert first.exit_code == 0 and "schema upgraded from revision (none) to 0014" in (
        first.output
    ), first.output
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP INDEX ix_recommendations_hcp_id_folded")
        for command in (["db", "upgrade"], ["serve", "--workers", "1"]):
            result = runner.invoke(app, command)
            said = " ".join(result.output.split())
            assert result.exit_code == 2, (command, said)
            assert "lacks index ix_recommendations_hcp_id_folded on table recommendations" in (
                said
            ), said
            assert "ON recommendations (lower(ltrim(hcp_id, '0')))" in said, said
        assert not served
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE INDEX ix_recommendations_hcp_id_folded "
                "ON recommendations (lower(ltrim(hcp_id, '0')))"
            )
    finally:
        engine.dispose()
    again = runner.invoke(app, ["db", "upgrade"])
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output
    assert runner.invoke(app, ["serve", "--workers", "1"]).exit_code == 0 and served


def test_db_downgrade_refuses_to_run_when_the_schema_moved_while_it_asked(
    env_settings: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is run is what was shown: a second operator downgrading the database
    while the first is asked, the first one's confirmed run is refused naming both
    revisions, and the database stays where the second left it."""
    from nextbest.storage.db import downgrade, migrate, schema_revisions

    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    assert migrate(database_url) == (None, "0014")

    def another_operator_first(question: str) -> bool:
        assert downgrade(database_url, "0011") == ("0014", "0011")
        return True

    monkeypatch.setattr("nextbest.cli.serve.on_a_terminal", lambda: True)
    monkeypatch.setattr("nextbest.cli.serve.confirmed", another_operator_first)
    result = runner.invoke(app, ["db", "downgrade", "0010"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert "downgrading from revision 0014 to 0010 undoes: 0014" in said, said
    assert (
        "error: db downgrade 0010: the database's schema moved from revision 0014, which "
        "the downgrade was planned from, to 0011 since (another operator, or a server "
        "upgrading it at start): run the downgrade again to see what it undoes now; "
        "nothing was changed"
    ) in said, said
    assert schema_revisions(database_url)[0] == "0011"


def test_db_downgrade_takes_the_schema_down_for_a_rollback_keeping_the_log(
    env_settings: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollback of docs/operations.md: the newer release downgrades the schema
    (before: alembic's command line, from a checkout only, ending in a traceback
    when it could not), keeping the answers logged; a target this release does not
    know, or not below the database's, is refused in one line, nothing changed."""
    from nextbest.storage.db import make_session_factory, migrate, schema_revisions
    from nextbest.storage.repository import log_recommendations
    from nextbest.storage.testing import recommendation_record, served_item

    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    assert migrate(database_url) == (None, "0014")
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            log_recommendations(
                session, records=[recommendation_record("r1", "h1", items=(served_item(1, "a1"),))]
            )
            session.commit()
    finally:
        engine.dispose()

    for target, refused in [
        ("0099", "there is no schema revision '0099': this release knows 0001 to 0014"),
        ("head", "there is no schema revision 'head'"),
    ]:
        result = runner.invoke(app, ["db", "downgrade", target])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and said.count("error:") == 1, said
        assert f"error: db downgrade {target}: {refused}" in said, said
        assert "nothing was changed" in said and "Traceback" not in said, said
    assert schema_revisions(database_url)[0] == "0014"

    # What it drops is listed, and asked about: off a terminal, refused without --yes.
    undoes = (
        "downgrading from revision 0014 to 0012 undoes: 0014 recommendations: the random "
        "split that chose the answering version drops column recommendations.split_share, "
        "column recommendations.split_with 0013 recommendations, feedback "
        "events: indexes of each HCP id as the near-id check folds it drops index "
        "ix_feedback_events_hcp_id_folded on feedback_events, index "
        "ix_recommendations_hcp_id_folded on recommendations"
    )
    result = runner.invoke(app, ["db", "downgrade", "0012"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and undoes in said, said
    assert "error: not on a terminal: pass --yes to downgrade" in said, said
    assert "(nothing was changed)" in said, said
    assert schema_revisions(database_url)[0] == "0014"
    monkeypatch.setattr("nextbest.cli.serve.on_a_terminal", lambda: True)
    for answer in ("n\n", ""):  # a no, or no answer (the input ended)
        declined = runner.invoke(app, ["db", "downgrade", "0012"], input=answer)
        said = " ".join(declined.output.split())
        assert declined.exit_code == 2 and "Drop these, with the data they hold?" in said, said
        assert "error: not confirmed: nothing was changed" in said, said
        assert schema_revisions(database_url)[0] == "0014"
    confirmed = runner.invoke(app, ["db", "downgrade", "0012"], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "schema downgraded from revision 0014 to 0012" in confirmed.output
    assert migrate(database_url) == ("0012", "0014")
    monkeypatch.setattr("nextbest.cli.serve.on_a_terminal", lambda: False)

    result = runner.invoke(app, ["db", "downgrade", "0012", "--yes"])
    assert result.exit_code == 0, result.output
    assert undoes in " ".join(result.output.split()), result.output
    assert "schema downgraded from revision 0014 to 0012" in result.output, result.output
    assert schema_revisions(database_url)[0] == "0012"
    # At the target already: nothing to drop, nothing asked.
    again = runner.invoke(app, ["db", "downgrade", "0012"])
    assert again.exit_code == 0 and "schema revision 0012 already: nothing to do" in again.output
    above = runner.invoke(app, ["db", "downgrade", "0013"])
    said = " ".join(above.output.split())
    assert above.exit_code == 2, said
    assert "the database's schema is at revision 0012, below 0013" in said, said
    # A database file not made yet (a mistyped path) is said so, and not made.
    missing = env_settings.parent / "not" / "yet.db"
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{missing}")
    get_settings.cache_clear()
    result = runner.invoke(app, ["db", "downgrade", "0012"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert f"there is no database file {missing}: nothing to downgrade" in said, said
    assert not missing.parent.exists()
    # The answers logged are kept, and an upgrade brings the indexes back.
    assert migrate(database_url) == ("0012", "0014")
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            count = connection.exec_driver_sql("SELECT count(*) FROM recommendation_items")
            assert count.scalar() == 1
    finally:
        engine.dispose()


def test_a_database_with_nextbests_tables_but_no_revision_is_refused_naming_them(
    env_settings: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A restore that left alembic_version out (`pg_restore -t`, a copy of some
    tables), or another application's database with a table of the same name:
    `db status` said "no schema yet", and `db upgrade`, a server's start or any
    command stopped on the driver's DuplicateTable, naming nothing to do."""
    import sys

    from sqlalchemy import text

    from nextbest.cli import main

    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
    finally:
        engine.dispose()
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    for command in (["db", "status"], ["db", "upgrade"], ["lookup", "--maintenance"]):
        monkeypatch.setattr(sys, "argv", ["nextbest", *command])
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            main()
        assert stopped.value.code == 2, command
        said = " ".join(capsys.readouterr().err.split())
        assert said.count("error:") == 1, said
        assert "holds tables of nextbest's (feedback_events, maintenance_runs, " in said, said
        assert "but no schema revision (no alembic_version table)" in said, said
        assert "'Backup and restore'" in said and "DuplicateTable" not in said, said
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert "alembic_version" not in inspect(connection).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("setting", ["NEXTBEST_REGISTRY_URI", "NEXTBEST_TRACKING_URI"])
@pytest.mark.parametrize(
    "command", [["models"], ["rollback", "--reason", "r"], ["serve"]], ids=lambda c: c[0]
)
def test_an_mlflow_store_whose_driver_is_not_installed_is_refused_naming_it(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch, setting: str, command: list[str]
) -> None:
    """`mysql://` means MySQLdb to SQLAlchemy, which nextbest does not install: the
    registry or tracking store set so ended every command in MySQLdb's
    ModuleNotFoundError, a traceback. Now the one-line refusal of the setting, its
    password hidden, naming the driver and the URL to write (PyMySQL, the dev extra's)."""
    import importlib.util

    import uvicorn

    if importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("MySQLdb is installed here")
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    monkeypatch.setenv(setting, "mysql://ops:S3CRETPW@127.0.0.1:9/mlflow")
    get_settings.cache_clear()
    result = runner.invoke(app, command)
    assert not started
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert said.startswith(
        f"error: invalid setting: {setting}='mysql://ops:***@127.0.0.1:9/mlflow': the driver "
        "'MySQLdb' of 'mysql' is not installed; write mysql+pymysql://user:password@host:3306/"
        "database (PyMySQL: nextbest's dev extra installs it, or `pip install pymysql`)"
    ), said
    assert "S3CRETPW" not in said, said


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg", "pg8000"])
def test_db_status_refuses_a_database_driver_that_is_not_installed(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    """SQLAlchemy knows the driver but it is not installed: the usual one-line refusal
    of the setting (exit 2, password hidden) naming it and the scheme to write, not
    the driver's ImportError at the first connection."""
    import importlib.util

    if importlib.util.find_spec(driver) is not None:
        pytest.skip(f"{driver} is installed here")
    monkeypatch.setenv(
        "NEXTBEST_DATABASE_URL", f"postgresql+{driver}://ops:S3CRETPW@127.0.0.1:9/nextbest"
    )
    get_settings.cache_clear()
    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert said.startswith(
        f"error: invalid setting: NEXTBEST_DATABASE_URL='postgresql+{driver}://ops:***@"
    ), said
    assert f"the driver '{driver}' of 'postgresql+{driver}' is not installed" in said, said
    assert "write postgresql+psycopg://" in said and "S3CRETPW" not in said, said
    assert "Traceback" not in result.output


@pytest.mark.postgres
def test_serve_and_other_commands_refuse_when_a_migration_waits_for_a_held_table(
    env_settings: Path,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An upgrade behind a BI session's open transaction: one line and exit 2 from
    serve (which starts nothing) and from `db upgrade`."""
    import sys

    import sqlalchemy as sa
    import uvicorn

    from nextbest.cli import main
    from nextbest.storage.db import migrate

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    assert migrate(postgres_url, revision="0005") == (None, "0005")
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    bi = make_engine(postgres_url)
    try:
        with bi.connect() as holding:
            holding.execute(sa.text("SELECT count(*) FROM recommendations")).scalar()
            result = runner.invoke(app, ["serve", "--workers", "1"])
            assert result.exit_code == 2, result.output
            said = " ".join(result.output.split())
            assert "error: NEXTBEST_DATABASE_URL: a schema migration waited" in said, said
            assert said.count("error:") == 1, said
            assert "lock on recommendations" in said and "nothing was changed" in said, said
            assert "Traceback" not in result.output and not started
            monkeypatch.setattr(sys, "argv", ["nextbest", "db", "upgrade"])
            capsys.readouterr()
            with pytest.raises(SystemExit) as stopped:
                main()
            assert stopped.value.code == 2
            assert "lock on recommendations" in " ".join(capsys.readouterr().err.split())
    finally:
        bi.dispose()
    assert migrate(postgres_url) == ("0005", "0014")


@pytest.mark.parametrize(
    ("option", "value"), [("--port", "70000"), ("--port", "-1"), ("--workers", "0")]
)
def test_serve_refuses_a_port_or_worker_count_out_of_range(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch, option: str, value: str
) -> None:
    import uvicorn

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    result = runner.invoke(app, ["serve", option, value])
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.output and not started


@pytest.mark.parametrize("command", ["evaluate", "promote", "rollback"])
def test_model_commands_before_any_training_say_what_is_missing(
    env_settings: Path, command: str
) -> None:
    """No registry yet: one line naming what is missing, exit 2, no traceback, and
    no empty MLflow store left behind (promote and rollback made one, with MLflow's
    "Creating initial database tables" lines, before finding no champion)."""
    env_settings.mkdir()  # made, empty: nothing trained into it yet
    result = runner.invoke(app, [command])
    assert result.exit_code == 2, result.output
    assert "error: model 'nextbest' has no 'champion' version" in result.output
    assert "Traceback" not in result.output and "MlflowException" not in result.output
    assert not (env_settings / "mlflow.db").exists()


def test_models_before_any_training_says_so_and_creates_nothing(env_settings: Path) -> None:
    env_settings.mkdir()  # made, empty: nothing trained into it yet
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 2, result.output
    assert "error: model 'nextbest' has no registered version" in result.output
    assert not (env_settings / "mlflow.db").exists()


READING_COMMANDS = {
    "models": ["models"],
    "evaluate": ["evaluate"],
    "promote": ["promote"],
    "rollback": ["rollback"],
    "picks": ["picks", "--data", "no-such-data", "--out", "picks.csv"],
    "explain": ["explain", "H000001"],
    "lookup": ["lookup", "rec-1"],
    "uplift-report": ["uplift-report", "--out", "report"],
    "prune": ["prune", "--older-than", "800", "--yes"],
}


@pytest.mark.parametrize("args", READING_COMMANDS.values(), ids=READING_COMMANDS.keys())
def test_a_command_that_only_reads_refuses_a_models_dir_that_does_not_exist(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """A misspelt NEXTBEST_MODELS_DIR: these commands made it, with an empty registry
    or log, and answered "no champion" (or an empty report) as if nothing were trained."""
    rules = Path(__file__).parents[2] / "training" / "rules.yaml"
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(rules))  # for explain and prune
    get_settings.cache_clear()
    monkeypatch.chdir(tmp_path)  # where picks and uplift-report write
    result = runner.invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert (
        f"error: the models directory {env_settings} does not exist (NEXTBEST_MODELS_DIR "
        f"is {env_settings}): this command works on the "
    ) in said, said
    assert "check the setting's spelling, or make one with `make demo` or `nextbest train" in said
    assert not env_settings.exists()


@pytest.mark.parametrize(("command", "lost"), LOG_WRITERS, ids=["erase", "feedback"])
def test_a_command_that_writes_the_log_refuses_a_models_dir_that_does_not_exist(
    env_settings: Path, tmp_path: Path, command: list[str], lost: str
) -> None:
    """A misspelt NEXTBEST_MODELS_DIR in a job that writes the log: refused, nothing made."""
    events = tmp_path / "events.csv"
    events.write_text("event_id,event_type,hcp_id,channel\ne-1,opted_out,H000001,email\n")
    result = runner.invoke(app, [arg.format(events=events) for arg in command])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert (
        f"error: the models directory {env_settings} does not exist (NEXTBEST_MODELS_DIR is "
        f"{env_settings}): {lost}recommendation log there that no server"
    ) in said, said
    assert "`nextbest db upgrade`" in said, said
    assert "stored 1 of 1 event" not in said, said
    assert not env_settings.exists()


def test_the_default_models_dir_that_does_not_exist_is_said_as_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NEXTBEST_MODELS_DIR unset (or misspelt, as NEXTBEST_MODEL_DIR) means ./models."""
    monkeypatch.delenv("NEXTBEST_MODELS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["models"])
    finally:
        get_settings.cache_clear()
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert (
        f"the models directory {tmp_path / 'models'} does not exist (NEXTBEST_MODELS_DIR is "
        "not set: the default, models in the working directory): this command works on the "
        "model registry kept there"
    ) in said, said
    assert not (tmp_path / "models").exists()


def test_a_store_set_elsewhere_needs_no_models_dir(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log in NEXTBEST_DATABASE_URL: lookup reads it, whatever the models directory."""
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{tmp_path / 'log.db'}")
    get_settings.cache_clear()
    result = runner.invoke(app, ["lookup", "rec-1"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "no recommendation log at" in said, said
    assert "models directory" not in said, said


LOG_READING_COMMANDS = {
    "uplift-report": ["uplift-report", "--out", "report"],
    "lookup": ["lookup", "rec-1"],
    "lookup --hcp": ["lookup", "--hcp", "H000001"],
    "lookup --maintenance": ["lookup", "--maintenance"],
    "prune": ["prune", "--older-than", "800", "--yes"],
}


@pytest.mark.parametrize("args", LOG_READING_COMMANDS.values(), ids=LOG_READING_COMMANDS.keys())
def test_a_command_that_only_reads_the_log_refuses_a_sqlite_file_that_does_not_exist(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """A mistyped NEXTBEST_DATABASE_URL: these commands made the file and its directory
    and answered from an empty log (an uplift report of nothing, no contacts counted)."""
    env_settings.mkdir()  # the models directory is right: the log set elsewhere is not
    typo = tmp_path / "some" / "typo" / "dir" / "x.db"
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{typo}")
    monkeypatch.setenv(
        "NEXTBEST_RULES_FILE", str(Path(__file__).parents[2] / "training" / "rules.yaml")
    )
    get_settings.cache_clear()
    monkeypatch.chdir(tmp_path)  # where uplift-report writes
    result = runner.invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert (
        f"error: no recommendation log at {typo} (NEXTBEST_DATABASE_URL is sqlite:///{typo}): "
        "this command reads the log kept there and makes none"
    ) in said, said
    assert "check its spelling, or make the database with `nextbest db upgrade`" in said, said
    assert not (tmp_path / "some").exists()


@pytest.mark.parametrize(
    ("args", "what"),
    [
        ([], "the versions of model 'nextbest' are"),
        # --repair lists the versions first too: nothing registered is said once.
        (["--repair"], "the versions of model 'nextbest' are"),
    ],
    ids=["list", "repair"],
)
@pytest.mark.parametrize("down", ["tracking store", "registry"])
@pytest.mark.parametrize("how", ["server refuses", "file is no database"])
def test_models_on_two_stores_names_the_one_that_cannot_be_read(
    trained,
    env_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    down: str,
    how: str,
    args: list[str],
    what: str,
) -> None:
    """NEXTBEST_TRACKING_URI and NEXTBEST_REGISTRY_URI on two stores, one of them down:
    one line naming that store (its URI without the password) and the error, exit 2, no
    traceback. It ended in the driver's error (exit 1 here, a line naming every store from
    `nextbest`'s main), whichever store failed."""
    import shutil

    from nextbest.api.process import free_port

    shutil.copytree(trained.settings.resolved_models_dir, env_settings)
    answering = f"sqlite:///{env_settings / 'mlflow.db'}"  # holds the trained version
    if how == "server refuses":
        failing = f"postgresql+psycopg://nextbest:s3cret-pw@127.0.0.1:{free_port()}/mlflow"
        said_uri = failing.replace("s3cret-pw", "***")
        error = "OperationalError: connection failed: "
    else:
        damaged = tmp_path / "damaged.db"
        damaged.write_bytes(b"not a database" * 1000)
        failing = said_uri = f"sqlite:///{damaged}"
        error = "DatabaseError: file is not a database"
    tracking, registry_uri = (
        (failing, answering) if down == "tracking store" else (answering, failing)
    )
    monkeypatch.setenv("NEXTBEST_TRACKING_URI", tracking)
    monkeypatch.setenv("NEXTBEST_REGISTRY_URI", registry_uri)
    get_settings.cache_clear()
    result = runner.invoke(app, ["models", *args])
    said = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert said.startswith(
        f"error: the MLflow {down} {said_uri} cannot be read, so {what} unknown: {error}"
    ), said
    other = "registry" if down == "tracking store" else "tracking store"
    assert f"the MLflow {other}" not in said and "s3cret-pw" not in said, said


@pytest.mark.parametrize(
    ("args", "listed"),
    [([], True), (["--json"], True), (["--repair"], False), (["--history"], False)],
    ids=["list", "json", "repair", "history"],
)
def test_models_on_a_tracking_store_without_the_versions_runs_says_so(
    trained, env_settings: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args, listed
) -> None:
    """NEXTBEST_TRACKING_URI pointed at a new, empty store while the registry is the
    one the versions were trained with: the versions listed with what the registry
    holds, then one line naming both stores and the likely cause, exit 2. It ended in
    MLflow's traceback, `Run with id=... not found`, exit 1. Repair and the champion's
    timeline, both read from the tracking store, are refused before anything is done."""
    import shutil

    import mlflow

    shutil.copytree(trained.settings.resolved_models_dir, env_settings)
    empty = tmp_path / "new-tracking.db"
    # A store that exists, with no runs (one that does not exist is said as such, and
    # not made: tests/registry/test_decision_tracking_store.py).
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{empty}").search_experiments()
    assert empty.exists()
    monkeypatch.setenv("NEXTBEST_TRACKING_URI", f"sqlite:///{empty}")
    monkeypatch.setenv("NEXTBEST_REGISTRY_URI", f"sqlite:///{env_settings / 'mlflow.db'}")
    get_settings.cache_clear()
    result = runner.invoke(app, ["models", *args])
    said = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert (
        f"error: the MLflow registry sqlite:///{env_settings / 'mlflow.db'} has versions of "
        f"model 'nextbest' (1) whose training runs the tracking store sqlite:///{empty} does "
        "not have (run "
    ) in said, said
    assert "it is probably not the tracking store they were trained in" in said, said
    assert ('"version": "1"' in said or "v1 champion" in said) is listed, said
    if not args:
        # What the registry alone holds, without dashes for the training data it lacks.
        run_id = registry.client(trained.settings).get_model_version("nextbest", "1").run_id
        assert re.search(r"v1 champion registered \d{4}-\d\d-\d\d \d\d:\d\d UTC ", said), said
        assert "decisions of - HCPs" not in said, said
        assert (
            f"training run {run_id} is not in this tracking store: the version's training "
            "data and held-out figures are unknown"
        ) in said, said


def test_models_with_one_champion_says_there_is_none_to_roll_back_to(
    trained, env_settings: Path
) -> None:
    """A first champion alone: the line on rollback said `nextbest rollback` returns to
    the one before it, where rollback refuses for want of one."""
    import shutil

    shutil.copytree(trained.settings.resolved_models_dir, env_settings)
    said = " ".join(run_ok("models").split())
    assert (
        "no earlier champion to roll back to: version 1 is the only one in the champion "
        "history (`nextbest rollback` has one to return to once another version is promoted)"
    ) in said, said
    assert "returns to the one before it" not in said, said
    refused = runner.invoke(app, ["rollback"])
    assert refused.exit_code == 2 and "has no previous champion" in refused.output


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (
            {"n_decisions": 1, "n_hcps": 1, "eval_decisions": 1},
            ("on 1 decision of 1 HCP ", ", 1 decision)"),
        ),
        ({"n_decisions": None, "n_hcps": None}, ("on - decisions of - HCPs ",)),
    ],
    ids=["one", "unknown"],
)
def test_models_says_a_count_of_one_in_the_singular(
    trained, env_settings: Path, monkeypatch: pytest.MonkeyPatch, counts, expected
) -> None:
    """A version trained on one HCP's decisions: "of 1 HCPs" it said, and "1 decisions"
    for its held-out slice; a training run that did not count them still shows dashes."""
    import dataclasses
    import shutil

    shutil.copytree(trained.settings.resolved_models_dir, env_settings)
    listed = registry.list_versions
    monkeypatch.setattr(
        registry,
        "list_versions",
        lambda settings: [dataclasses.replace(v, **counts) for v in listed(settings)],
    )
    said = " ".join(run_ok("models").split())
    for words in expected:
        assert words in said, said


def test_models_lists_each_versions_gain_over_the_logged_policy(
    trained, env_settings: Path
) -> None:
    """Beside the policy value (DR): the gain over the logging policy that training
    logged with it, its interval too, in the listing and in --json."""
    import shutil

    from mlflow.tracking import MlflowClient

    shutil.copytree(trained.settings.resolved_models_dir, env_settings)
    (version,) = json.loads(run_ok("models", "--json"))["versions"]
    metrics = MlflowClient(get_settings().resolved_tracking_uri).get_run(version["run_id"])
    logged = [
        metrics.data.metrics[f"ope_dr_gain_over_logged{k}"] for k in ("", "_ci_low", "_ci_high")
    ]
    assert version["gain_over_logged_dr"] == logged, version
    gain, low, high = logged
    said = " ".join(run_ok("models").split())
    value = "policy value (DR) {:.3f} [{:.3f}, {:.3f}]".format(*version["policy_value_dr"])
    # Signed, as the gate and the uplift report sign their bounds.
    assert f"{value} (gain over logged {gain:+.3f} [{low:+.3f}, {high:+.3f}])" in said, said
    # What the figure is, once under the versions: not the gate's.
    assert said.count("held-out figures: each version on its own training history's") == 1
    assert (
        "the gate judges on logged decisions neither version learned from (`nextbest evaluate`)"
        in said
    )


def test_validate_counts_outcomes_as_training_will() -> None:
    # 250 untouched rows with an outcome, 60 of them among the newest 10% of
    # decisions: training has 190 before its evaluation slice and falls back.
    from nextbest.learning.readiness import what_training_gets

    n = 1000
    stamps = pd.date_range("2026-01-01", periods=n, freq="h")
    untouched = np.zeros(n, dtype=bool)
    untouched[:190] = True
    untouched[-60:] = True
    frame = pd.DataFrame(
        {
            "hcp_id": "H1",
            "timestamp": stamps,
            "action_id": np.where(untouched, None, "A1"),
            "engaged": (~untouched).astype(int),
            "outcome": 1.0,
            "propensity": np.nan,
            "holdout": untouched,
        }
    )
    said = " ".join(what_training_gets(frame))
    assert "250 untouched and 750 touched interactions;" in said
    assert "(the newest 10%), 190 untouched (holdout or logged with a propensity) and 710" in said
    assert "too few for the uplift model" in said
    frame.loc[300:320, "action_id"] = None  # 21 more untouched, early
    frame.loc[300:320, "holdout"] = True
    assert "enough for the uplift model" in " ".join(what_training_gets(frame))
    # With the slice at 2% (a train.yaml that says so), the newest 60 are not all in it.
    said = " ".join(what_training_gets(frame, 0.02))
    assert "(the newest 2%), 2" in said and "211 untouched" not in said, said
    # Training counts in whole seconds: a row 0.3 s before the cut's second is in it.
    frame.loc[899, "timestamp"] = frame.loc[900, "timestamp"] + pd.Timedelta(milliseconds=600)
    frame.loc[898, "timestamp"] = frame.loc[900, "timestamp"] + pd.Timedelta(milliseconds=300)
    frame.loc[898, ["action_id", "holdout"]] = [None, True]
    said = " ".join(what_training_gets(frame))
    assert "272 untouched" in said and ", 211 untouched (holdout" in said, said
    # One timestamp for all (a one-day randomized test): the last rows are the slice.
    frame["timestamp"] = pd.Timestamp("2026-10-01 09:00")
    said = " ".join(what_training_gets(frame))
    assert "before the evaluation slice" in said and ", 0 untouched (holdout" not in said
    # Untouched rows nobody randomized (a CRM's history) cannot measure a touch's effect.
    frame["holdout"] = False
    said = " ".join(what_training_gets(frame))
    assert ", 0 untouched (holdout or logged with a propensity)" in said, said
    assert "more untouched ones are neither holdout nor logged with a propensity" in said
    assert "too few for the uplift model" in said
    assert "propensities on 0 (0%)" in said and "unweighted" not in said
    # A touched history that always engaged: validate says what train will refuse.
    frame["engaged"] = 1
    said = " ".join(what_training_gets(frame))
    assert "every touched interaction before the evaluation slice has engaged = 1" in said
    # ... and not, in the same report, that training falls back (it does not train).
    assert "too few for the uplift model (it needs" in said and "falls back" not in said, said


def test_validate_counts_the_history_rows_that_carry_a_recommendation_id(
    env_settings: Path, tmp_path: Path
) -> None:
    """A history with a recommendation_id column: validate says how many rows name
    one, the rows retrain may leave out as the service's own sends, as it says how
    many carry a propensity; without the column it says nothing of it."""
    from nextbest.learning.readiness import what_training_gets

    n = 1000
    frame = pd.DataFrame(
        {
            "hcp_id": "H1",
            "timestamp": pd.date_range("2026-01-01", periods=n, freq="h"),
            "action_id": "A1",
            "engaged": np.arange(n) % 2,
            "outcome": np.nan,
            "propensity": np.nan,
            "holdout": False,
        }
    )
    assert not any("recommendation_id" in line for line in what_training_gets(frame))
    frame["recommendation_id"] = [f"r{i}" if i % 4 == 0 else None for i in range(n)]
    said = [line for line in what_training_gets(frame) if "recommendation_id" in line]
    assert said == [
        "recommendation_id on 250 (25%): retrain leaves out those naming a decision it "
        "learns from the recommendation log (docs/loop.md, Retraining)"
    ], said
    # As `nextbest validate` prints it for a history whose CRM export carries the ids.
    data = _foreign_dataset(tmp_path / "ids", with_outcome=True)
    history = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    assert "recommendation_id" not in " ".join(run_ok("validate", "--data", str(data)).split())
    history["recommendation_id"] = ""
    history.loc[history.index[:30], "recommendation_id"] = [f"r{i}" for i in range(30)]
    history.to_csv(data / "interactions.csv", index=False)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert f"recommendation_id on 30 ({30 / len(history):.0%}): retrain leaves out" in said, said


def test_validate_notes_interactions_that_repeat_a_row(env_settings: Path, tmp_path: Path) -> None:
    data = _foreign_dataset(tmp_path / "doubled", with_outcome=True)
    frame = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    pd.concat([frame, frame.iloc[:7]]).to_csv(data / "interactions.csv", index=False)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert "7 interactions repeat another row exactly" in said, said
    clean = _foreign_dataset(tmp_path / "clean", with_outcome=True)
    assert "repeat another row" not in run_ok("validate", "--data", str(clean))


def test_validate_notes_decisions_at_one_time_sharing_one_outcome() -> None:
    """Monthly data: a visit and a sample dated the 1st, the month's NRx on both."""
    from nextbest.learning.readiness import interaction_notes

    at = pd.Timestamp("2026-03-01")
    frame = pd.DataFrame(
        {
            "hcp_id": ["H1", "H1", "H2", "H2", "H3", "H3"],
            "timestamp": [at] * 6,
            "action_id": ["visit", "sample", "visit", "sample", "visit", None],
            "engaged": [1, 1, 1, 0, 1, 0],
            "outcome": [12.0, 12.0, 3.0, 5.0, 7.0, None],
        }
    )
    said = " ".join(interaction_notes(frame))
    assert "1 (HCP, time) pair with several decisions that all carry the same outcome" in said
    assert "e.g. HCP H1 at 2026-03-01 00:00:00: 2 rows" in said
    # Different outcomes (H2), or one of them without (H3): each its own, no note; nor
    # for a zero on both (common by chance in counts, and nothing counted twice).
    assert "same outcome" not in " ".join(interaction_notes(frame.iloc[2:]))
    zeros = frame.assign(outcome=[0.0, 0.0, 3.0, 5.0, 7.0, None])
    assert "same outcome" not in " ".join(interaction_notes(zeros))


def test_validate_notes_numbers_written_with_a_decimal_comma(
    env_settings: Path, tmp_path: Path
) -> None:
    data = _foreign_dataset(tmp_path / "comma", with_outcome=True)
    hcps = pd.read_csv(data / "hcps.csv", dtype=str, keep_default_na=False)
    hcps["share"] = [f"0,{i % 9 + 1}" for i in range(len(hcps))]
    hcps.to_csv(data / "hcps.csv", index=False)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert (
        "hcps column 'share' is read as text: its values are numbers written with a decimal" in said
    )


_THOUSANDS_NOTE = "its values are numbers written with thousands separators"


@pytest.mark.parametrize(
    ("values", "said"),
    [
        pytest.param(
            [f"{4_512_345 + 7919 * i:,}" for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '4,512,345'); write them without, and decimals with "
            "'.' ('4512345')",
            id="comma-thousands",
        ),
        pytest.param(
            [f"{4_512_345 + 7919 * i:,}".replace(",", ".") for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '4.512.345')",
            id="dot-thousands",
        ),
        pytest.param(
            [f"1.{234 + i},56" for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '1.234,56'); write them without, and decimals with "
            "'.' ('1234.56')",
            id="dot-thousands-comma-decimals",
        ),
        pytest.param(
            [f"1 {234 + i} 567" for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '1 234 567')",
            id="space-thousands",
        ),
        pytest.param(
            [f"{4_512_345 + 7919 * i:,}".replace(",", "'") for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '4'512'345'); write them without, and decimals with "
            "'.' ('4512345')",
            id="swiss-apostrophe-thousands",
        ),
        pytest.param(
            [f"1\u2019{234 + i}.50" for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '1\u2019234.50'); write them without, and decimals "
            "with '.' ('1234.50')",
            id="swiss-right-quote-thousands",
        ),
        pytest.param(
            [f"45,{12 + i},345.6" for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '45,12,345.6'); write them without, and decimals with "
            "'.' ('4512345.6')",
            id="indian-lakhs",
        ),
        pytest.param(
            [f"1\u202f{234 + i},5" for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '1\u202f234,5'); write them without, and decimals "
            "with '.' ('1234.5')",
            id="narrow-no-break-space-thousands",
        ),
        pytest.param(  # '1.234' says nothing; '1.000.004' says '.' is between thousands
            [f"{10 ** (2 + i % 6) + i:,}".replace(",", ".") for i in range(60)],
            f"{_THOUSANDS_NOTE} (e.g. '1.000.004')",
            id="ambiguous-cells-decided-by-the-column",
        ),
        pytest.param(
            [f"1,{234 + i}" for i in range(60)],
            "its values are numbers written with a decimal comma (e.g. '1,234')",
            id="only-ambiguous-cells-a-decimal-comma",
        ),
        pytest.param(
            [f"{i % 9},5" for i in range(60)],
            "its values are numbers written with a decimal comma",
            id="decimal-comma",
        ),
        pytest.param([f"1.{234 + i}" for i in range(60)], None, id="dots-read-as-decimals"),
        pytest.param(
            [f"{1 + i % 20}.{1 + i % 10}.1951" for i in range(60)], None, id="dates-not-unique"
        ),
        pytest.param(
            [f"region {i % 9}" if i % 3 else f"1.{i:03d}.000" for i in range(60)],
            None,
            id="mostly-text",
        ),
    ],
)
def test_validate_notes_numbers_written_with_thousands_separators(
    values: list[str], said: str | None
) -> None:
    """A column of '4,512,345' was kept silently as text, one category per HCP, though
    the docs promised validate says how to make it numbers."""
    from types import SimpleNamespace

    from nextbest.contract.notes import text_number_notes
    from nextbest.contract.validate import validate_hcps

    n = len(values)
    hcps = validate_hcps(
        pd.DataFrame(
            {
                "hcp_id": [f"H{i}" for i in range(n)],
                "specialty": ["cardiology"] * n,
                "territory_id": ["T1"] * n,
                "umsatz": values,
            }
        ),
        file="hcps.csv",
    )
    assert "umsatz" in hcps.columns  # read (not an identifier), if maybe as text
    empty = pd.DataFrame()
    notes = text_number_notes(SimpleNamespace(hcps=hcps, catalog=empty, interactions=empty))
    if said is None:
        assert notes == []
    else:
        assert len(notes) == 1 and said in notes[0], notes
        assert notes[0].startswith("hcps column 'umsatz' is read as text: ")


def test_validate_says_how_to_make_numbers_of_a_thousands_column(
    env_settings: Path, tmp_path: Path
) -> None:
    data = _foreign_dataset(tmp_path / "umsatz", with_outcome=True)
    hcps = pd.read_csv(data / "hcps.csv", dtype=str, keep_default_na=False)
    hcps["umsatz"] = [f"{1_234_567 + 7919 * i:,.2f}" for i in range(len(hcps))]
    hcps["umsatz"] = hcps["umsatz"].str.translate(str.maketrans(",.", ".,"))  # 1.234.567,00
    hcps.to_csv(data / "hcps.csv", index=False)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert (
        "note: hcps column 'umsatz' is read as text: its values are numbers written with "
        "thousands separators (e.g. '1.234.567,00'); write them without, and decimals with "
        "'.' ('1234567.00'), for it to be a number" in said
    ), said
    assert "identify an HCP" not in said, said


def test_validate_and_train_note_decimals_that_look_like_thousands_written_with_a_dot(
    env_settings: Path, tmp_path: Path
) -> None:
    """'1.234', '2.500', '980' from a German spreadsheet were read as 1.234, 2.5 and 980
    without a word, every value over 999 a thousand times too small. Rates, prices
    and the same numbers typed as floats in Parquet stay unsaid."""
    data = _foreign_dataset(tmp_path / "patients", with_outcome=True)
    hcps = pd.read_csv(data / "hcps.csv", dtype=str, keep_default_na=False)
    patients = [1234, 2500, 980, 12345, 45, 3100, 7002, 610, 1999, 0]
    hcps["patients"] = [f"{patients[i % 10]:,}".replace(",", ".") for i in range(len(hcps))]
    hcps["open_rate"] = [f"0.{125 + i % 50}" for i in range(len(hcps))]
    hcps["list_price"] = [f"{12 + i % 9}.50" for i in range(len(hcps))]
    hcps["dose_mg"] = [f"{1 + i % 7}.{i % 4 * 25}" if i % 3 else "5" for i in range(len(hcps))]
    hcps.to_csv(data / "hcps.csv", index=False)
    note = (
        "note: hcps column 'patients' is read as decimals ('1.234' as 1.234, '2.500' as "
        "2.5), but looks like whole numbers written with '.' between thousands (3 digits "
        "after every '.', and '980' without one): if so, export them without thousands "
        "separators ('1234'), for 1234 to be read; if they are decimals, nothing to do"
    )
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert note in said, said
    assert said.count("read as decimals") == 1, said  # not the rates, prices or doses
    # Training says so too (and trains: they may be decimals), and the run keeps it.
    trained = " ".join(run_ok("train", "--data", str(data), "--config", str(FAST)).split())
    assert note in trained, trained
    # The same numbers typed as floats: nothing says how they were written.
    typed = hcps.assign(patients=hcps["patients"].astype(float))
    typed.to_parquet(data / "hcps.parquet", index=False)
    (data / "hcps.csv").unlink()
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert "read as decimals" not in said, said


def test_validate_notes_numbers_made_text_by_a_warehouses_null(
    env_settings: Path, tmp_path: Path
) -> None:
    # 'NULL' or '\\N' among numbers made the column a category (a level 'NULL'), unsaid.
    data = _foreign_dataset(tmp_path / "nulls", with_outcome=True)
    hcps = pd.read_csv(data / "hcps.csv", dtype=str, keep_default_na=False)
    hcps["patients"] = [str(i % 40) for i in range(len(hcps))]
    hcps.loc[[3, 7], "patients"] = "NULL"
    hcps.loc[9, "patients"] = "\\N"
    hcps["segment"] = ["NULL" if i % 5 == 0 else "core" for i in range(len(hcps))]
    # A spreadsheet's missing value and one decimal comma among numbers: as unsaid.
    hcps["years"] = [str(i % 30) for i in range(len(hcps))]
    hcps.loc[4, "years"], hcps.loc[5, "years"] = "-", "12,5"
    # A few numbers among text (room numbers and names) are text, not a mistake.
    hcps["room"] = [f"room {i}" if i % 10 else str(i) for i in range(len(hcps))]
    hcps.to_csv(data / "hcps.csv", index=False)
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert (
        "note: hcps column 'patients' is read as text: its values are numbers but for 3 cells "
        "written 'NULL', '\\N', which make every value a category of its own; write a missing "
        "value as an empty cell (and decimals with '.') for it to be a number" in said
    ), said
    assert (
        "note: hcps column 'years' is read as text: its values are numbers but for 2 cells "
        "written '-', '12,5', which make every value a category of its own" in said
    ), said
    assert "column 'segment'" not in said  # text anyway: nothing to say
    assert "column 'room'" not in said, said


def test_validate_notes_touches_outside_the_approval_window(
    env_settings: Path, tmp_path: Path
) -> None:
    data = _foreign_dataset(tmp_path / "window", with_outcome=True)
    catalog = pd.read_csv(data / "catalog.csv", dtype=str, keep_default_na=False)
    catalog.loc[catalog["action_id"] == "mail-a", "approved_from"] = "2030-01-01"
    catalog.to_csv(data / "catalog.csv", index=False)
    interactions = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    n = int((interactions["action_id"] == "mail-a").sum())
    assert n > 0
    said = " ".join(run_ok("validate", "--data", str(data)).split())
    assert f"{n:,} touches fall outside their action's approval window (e.g. action mail-a" in said
    clean = _foreign_dataset(tmp_path / "clean", with_outcome=True)
    assert "approval window" not in run_ok("validate", "--data", str(clean))


def test_feedback_names_the_store_without_its_password(
    env_settings: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL (NEXTBEST_TEST_POSTGRES_URL with a password) the URL carries one."""
    from sqlalchemy.engine import make_url

    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    feed = tmp_path / "events.csv"
    pd.DataFrame({"event_id": ["e1"], "event_type": ["opened"], "hcp_id": ["H1"]}).to_csv(
        feed, index=False
    )
    run_ok("db", "upgrade")  # feedback makes no log (a mistyped setting)
    said = " ".join(run_ok("feedback", str(feed)).split())
    shown = make_url(database_url).render_as_string(hide_password=True)
    assert f"stored 1 of 1 event in {shown};" in said, said
    password = make_url(database_url).password
    assert password is None or str(password) not in said


def test_a_feed_path_without_an_extension_is_said_missing_or_a_directory(
    env_settings: Path, tmp_path: Path
) -> None:
    """A typo'd or missing path, and a data directory named instead of the feed, read
    "unsupported file type ''" before: the extension was checked first."""
    (tmp_path / "world").mkdir()
    for path, says in (
        (tmp_path / "outcomes", f"file not found: {tmp_path / 'outcomes'}"),
        (
            tmp_path / "world",
            f"{tmp_path / 'world'} is a directory: name a .csv or .parquet file",
        ),
    ):
        result = runner.invoke(app, ["feedback", str(path)])
        said = " ".join(result.output.split())
        assert result.exit_code == 2, said
        assert says in said and "unsupported file type" not in said, said
    (tmp_path / "events.xlsx").write_bytes(b"PK")
    result = runner.invoke(app, ["feedback", str(tmp_path / "events.xlsx")])
    assert "unsupported file type '.xlsx' (expected .csv or .parquet)" in result.output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(
            "postgresql+psycopg://postgres:S3CRETPW@127.0.0.1:5432/qa_ops",
            "postgresql+psycopg://postgres:***@127.0.0.1:5432/qa_ops",
            id="database",
        ),
        pytest.param(
            "https://ops:S3CRETPW@mlflow.example:5000/",
            "https://ops:***@mlflow.example:5000/",
            id="mlflow-server",
        ),
        pytest.param("sqlite:////srv/nextbest/models/mlflow.db", None, id="no-password"),
        pytest.param("postgresql://ops@db/nextbest", None, id="user-only"),
        pytest.param("databricks", None, id="not-a-url"),
        pytest.param(
            "http://ops:S3CRETPW@host:port/x", "http://ops:***@host:port/x", id="unparsable"
        ),
        pytest.param(
            "postgresql+psycopg://ops:S3C@RET@db:5432/x",
            "postgresql+psycopg://ops:***@db:5432/x",
            id="raw-at-in-password",
        ),
        pytest.param(
            "postgresql+psycopg://u@127.0.0.1:5432/db?sslmode=require&Password=S3CRETPW",
            "postgresql+psycopg://u@127.0.0.1:5432/db?sslmode=require&Password=***",
            id="password-in-query",
        ),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str | None) -> None:
    from nextbest.settings import without_password

    assert without_password(url) == (shown or url)


def test_picks_apply_the_consent_specialties_and_approvals_of_the_files_given(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send's files, not the model's training-time copy, decide who may get what:
    a file stricter than the snapshot wins, for plain and for logged picks."""
    data = _foreign_dataset(tmp_path / "mine", with_outcome=True)
    run_ok("train", "--data", str(data), "--config", str(FAST))
    run_ok("db", "upgrade")  # the log, made before the first send logged to it
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    before = tmp_path / "before.csv"
    run_ok("picks", "--data", str(data), "--out", str(before), "--k", "3", "--as-of", "2026-07-01")
    picked = pd.read_csv(before)
    emailed = sorted(set(picked.loc[picked["channel"] == "email", "hcp_id"]))
    assert emailed and {"mail-a", "mail-b"} <= set(picked["action_id"])

    hcps = pd.read_csv(data / "hcps.csv")
    hcps.loc[hcps["hcp_id"].isin(emailed[:10]), "consent_email"] = False
    hcps.to_csv(data / "hcps.csv", index=False)
    catalog = pd.read_csv(data / "catalog.csv", keep_default_na=False)
    catalog.loc[catalog["action_id"] == "mail-b", "approved_until"] = "2026-06-30"
    catalog["specialties"] = ["cardiology", "", ""]
    new = catalog.iloc[[0]].assign(action_id="mail-new", content_id="new")
    pd.concat([catalog, new]).to_csv(data / "catalog.csv", index=False)
    gps = set(hcps.loc[hcps["specialty"] == "gp", "hcp_id"])

    for extra in ([], ["--log"]):
        after = tmp_path / f"after{len(extra)}.csv"
        said = " ".join(
            run_ok(
                "picks", "--data", str(data), "--out", str(after), "--k", "3",
                "--as-of", "2026-07-01", *extra,
            ).split()
        )  # fmt: skip
        now = pd.read_csv(after)
        assert len(now) > 0
        assert not set(now.loc[now["channel"] == "email", "hcp_id"]) & set(emailed[:10])
        assert "mail-b" not in set(now["action_id"])
        assert not set(now.loc[now["action_id"] == "mail-a", "hcp_id"]) & gps
        assert "1 action(s) get no picks, not in model version 1's catalog" in said, said
        assert "mail-new" in said


def test_picks_for_a_data_directory_do_not_read_its_history(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """picks need the day's hcps and catalog, not the interactions: reading and
    checking those (millions of rows at scale) took longer than the picks, and a
    history naming an HCP the day's hcps file no longer lists (one who left) stopped
    the run with exit 2."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    get_settings.cache_clear()
    data = tmp_path / "today"
    data.mkdir()
    hcps = pd.read_csv(trained.data_dir / "hcps.csv", dtype=str, keep_default_na=False)
    gone = hcps["hcp_id"].iloc[-1]
    hcps.iloc[:-1].to_csv(data / "hcps.csv", index=False)
    shutil.copy(trained.data_dir / "catalog.csv", data / "catalog.csv")
    shutil.copy(trained.data_dir / "interactions.csv", data / "interactions.csv")
    assert gone in set(pd.read_csv(data / "interactions.csv", usecols=["hcp_id"])["hcp_id"])
    out = tmp_path / "picks.csv"
    said = " ".join(run_ok("picks", "--data", str(data), "--out", str(out)).split())
    assert f"of {len(hcps) - 1:,} HCPs to {out}" in said, said
    picked = pd.read_csv(out)
    assert len(picked) > 0 and gone not in set(picked["hcp_id"])


def test_picks_log_names_a_repeat_by_the_day_decided_for_across_midnight(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send logged at 23:50 UTC for day D and run again at 00:10 for D is a repeat:
    said, although the earlier answers were logged the day before (the note counted
    answers logged since 00:00 UTC). A send for D + 1 is not one: D's answers logged
    minutes before do not count against it."""
    import shutil
    from datetime import UTC, datetime, timedelta

    from nextbest.service import recommend
    from nextbest.storage import log_recommendations
    from nextbest.storage.db import store_session
    from nextbest.storage.testing import recommendation_record

    models = tmp_path / "models"
    shutil.copytree(trained.settings.resolved_models_dir, models)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    get_settings.cache_clear()
    as_of = registry.load_alias(get_settings())[0].as_of
    day = (as_of + pd.Timedelta(days=2)).date()  # a day the model may decide for
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    ids = list(pd.read_csv(trained.data_dir / "hcps.csv", dtype=str)["hcp_id"][:40])
    send = tmp_path / "send.csv"
    pd.DataFrame({"hcp_id": ids}).to_csv(send, index=False)
    # The 23:50 send, for its day (today then), logged for 10 of the list's HCPs.
    late = midnight - timedelta(minutes=10)
    with store_session(get_settings().resolved_database_url) as session:
        earlier = [
            recommendation_record(
                f"late-{hcp}",
                hcp,
                created_at=late,
                decided_for=late,
                requester="nextbest picks (jdoe)",
                holdout_rate=get_settings().holdout_rate,
            )
            for hcp in ids[:10]
        ]
        log_recommendations(session, records=earlier)
        session.commit()
    monkeypatch.setattr(recommend, "utc_now", lambda: midnight + timedelta(minutes=10))

    def sent(as_of: str, out: str) -> str:
        said = run_ok("picks", "--hcps", str(send), "--out", str(tmp_path / out), "--log",
                      "--as-of", as_of)  # fmt: skip
        return " ".join(said.split())

    said = sent(day.isoformat(), "again.csv")
    assert (
        f"10 of these HCPs already have answers logged for {day.isoformat()} (UTC) by an "
        "earlier send (`nextbest picks --log`)"
    ) in said, said
    # The next day's send (today at 00:10): the 40 answers just logged were for D.
    tomorrow = (day + timedelta(days=1)).isoformat()
    said = sent(tomorrow, "next.csv")
    assert "already have answers logged" not in said, said
    # Its own rerun is a repeat, for the day both decide for.
    said = sent(tomorrow, "next-again.csv")
    assert f"40 of these HCPs already have answers logged for {tomorrow} (UTC)" in said, said


def test_picks_warn_once_of_a_stale_model_with_and_without_log(
    env_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from nextbest.service import runtime as runtime_module

    data = _foreign_dataset(tmp_path / "mine", with_outcome=True)
    run_ok("train", "--data", str(data), "--config", str(FAST))
    run_ok("db", "upgrade")  # the log, made before the first send logged to it
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    last = pd.read_csv(data / "interactions.csv")["timestamp"].max()

    def age_days() -> int:
        return (pd.Timestamp.now(tz="UTC") - pd.Timestamp(last, tz="UTC")).days

    # The same model picked from "later": how old its history is decides the warning.
    before = age_days()
    monkeypatch.setattr(runtime_module, "STALE_FEATURES_DAYS", max(before - 1, 0))
    for extra in ([], ["--log"]):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nextbest.service.runtime"):
            run_ok("picks", "--data", str(data), "--out", str(tmp_path / "p.csv"), *extra)
        warned = [r.getMessage() for r in caplog.records if "retrain to refresh" in r.getMessage()]
        assert len(warned) == 1, (extra, warned)
        # The age the command read: one more day if its clock passed the cut-off's time
        # of day since the test read it.
        said = re.search(rf"history up to {last[:10]} \((\d+) days ago\)", warned[0])
        assert said, warned[0]
        assert before <= int(said.group(1)) <= age_days(), (before, said.group(0))


def test_picks_for_another_day_measure_the_models_staleness_at_that_day(
    env_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Picks --as-of a past day warned of a stale model by its age today: picks for a
    day five days after the model's history ends (a file made again, a replay) were
    told to retrain, which would make that day one before the cut-off, refused. Its
    age at the decision date decides, with or without --log; forty days on, warned
    as so many days before that date."""
    data = _foreign_dataset(tmp_path / "mine", with_outcome=True)
    run_ok("train", "--data", str(data), "--config", str(FAST))
    run_ok("db", "upgrade")  # the log, made before the first send logged to it
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    last = pd.Timestamp(pd.read_csv(data / "interactions.csv")["timestamp"].max())
    assert pd.Timestamp.now() - last > pd.Timedelta(days=60)  # stale today
    out = tmp_path / "p.csv"
    for extra in ([], ["--log"]):
        for days, warned in ((5, False), (40, True)):
            day = (last + pd.Timedelta(days=days)).date().isoformat()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="nextbest.service.runtime"):
                run_ok("picks", "--data", str(data), "--out", str(out), "--as-of", day, *extra)
            said = [
                r.getMessage() for r in caplog.records if "retrain to refresh" in r.getMessage()
            ]
            assert len(said) == warned, (extra, day, said)
            if warned:
                age = re.search(rf"\((\d+) days before the decision date {day}\)", said[0])
                assert age and int(age.group(1)) in (days - 1, days), said[0]


def test_picks_whose_served_version_cannot_be_served_say_so_in_one_line(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`picks --log` loads the served version as a worker does, but once: its failure
    is one line naming the version, the file or error and what to do, exit 2, not the
    server's three ending "tried again every 10 s" (nothing tries again). Plain picks
    say the same failure in one line too. Nothing is written or logged."""
    import shutil

    from nextbest.service.recommend import Recommender

    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    misspelt = tmp_path / "rules.yaml"
    misspelt.write_text(
        "strict: true\n" + shipped.read_text().replace("\n  email:\n", "\n  emial:\n", 1)
    )
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(misspelt))
    get_settings.cache_clear()
    run_ok("db", "upgrade")  # the log, made before the first send logged to it
    out = tmp_path / "sent.csv"
    args = ["picks", "--data", str(trained.data_dir), "--out", str(out)]

    def refused(*extra: str) -> str:
        result = runner.invoke(app, [*args, *extra])
        said = " ".join(result.output.split())
        assert result.exit_code == 2, said
        assert said.count("error:") == 1, said
        assert "tried again" not in said and "nothing served yet" not in said, said
        assert not out.exists() and not list(tmp_path.glob(".sent.partial*")), said
        return said

    said = refused("--log")
    assert (
        f"error: not serving: RulesError: model 'nextbest' version {trained.version} "
        f"(alias 'champion'): {misspelt}: strict: true, and the rules do not fit the "
        "served catalog: " in said
    ), said
    assert said.endswith("; fix the file"), said
    said = refused()
    assert (
        f"error: model 'nextbest' version {trained.version} (alias 'champion'): "
        f"{misspelt}: strict: true, and the rules do not fit" in said
    ), said
    # A version that loads but cannot score fails only where it is served (--log).
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(shipped))
    get_settings.cache_clear()

    def cannot_score(self: Recommender) -> None:
        raise ValueError("feature count 41, expected 42")

    monkeypatch.setattr(Recommender, "self_check", cannot_score)
    said = refused("--log")
    assert (
        f"error: no model is loaded: the served version {trained.version} of model "
        "'nextbest' (alias 'champion') failed to load: RegistryError: " in said
    ), said
    assert said.endswith("ValueError: feature count 41, expected 42"), said
    engine = make_engine(f"sqlite:///{models / 'nextbest.db'}")
    with engine.connect() as connection:
        assert pd.read_sql("SELECT COUNT(*) AS n FROM recommendations", connection)["n"][0] == 0
    engine.dispose()
    # A territory file picks do not need: served, with a warning in a one-shot's words.
    monkeypatch.undo()
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    territories = tmp_path / "territories.csv"
    territories.write_text("hcp_id,region\nH1,north\n")
    monkeypatch.setenv("NEXTBEST_TERRITORIES_FILE", str(territories))
    get_settings.cache_clear()
    served = runner.invoke(app, [*args, "--log"])
    said = " ".join(served.output.split())
    assert served.exit_code == 0 and out.exists(), said
    assert "territory alignment cannot be read (a server would answer rep keys" in said, said
    assert "territory_id" in said and "tried again" not in said, said


def test_picks_for_a_send_list_apply_its_consent(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _foreign_dataset(tmp_path / "mine", with_outcome=True)
    run_ok("train", "--data", str(data), "--config", str(FAST))
    run_ok("db", "upgrade")  # the log, made before the first send logged to it
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    hcps = pd.read_csv(data / "hcps.csv")
    listed = hcps[hcps["consent_email"]]["hcp_id"].tolist()[:40]
    send = tmp_path / "send.csv"
    pd.DataFrame(
        {
            "hcp_id": [*listed, "dr-unknown", listed[0].upper()],
            # Opted out since training for half of them; the header as a CRM writes it.
            "Consent-Email": ["no"] * 20 + ["yes"] * 20 + ["", ""],
            "segment": ["a"] * 42,  # other columns are left alone
        }
    ).to_csv(send, index=False)
    for extra in ([], ["--log"]):
        out = tmp_path / f"send-picks{len(extra)}.csv"
        said = " ".join(
            run_ok("picks", "--hcps", str(send), "--out", str(out), "--channel", "email",
                 "--as-of", "2026-07-01", *extra).split()
        )  # fmt: skip
        picked = pd.read_csv(out)
        assert set(picked["hcp_id"]) <= set(listed[20:]) and len(picked) > 5, said
        assert (
            "2 HCPs are not in model version 1's snapshot and get no picks: dr-unknown, "
            f"{listed[0].upper()} ({listed[0]}?); ids are compared exactly, case included" in said
        ), said

    # The list is read as contract files are: a bad one is named, file, row and column.
    for frame, says in (
        (pd.DataFrame({"id": ["dr-1"]}), "send.csv, column 'hcp_id': missing required column"),
        (
            pd.DataFrame({"hcp_id": ["dr-1"], "consent_emial": ["no"]}),
            "did you mean 'consent_email'?",
        ),
        (pd.DataFrame({"hcp_id": ["dr-1"], "consent_email": ["maybe"]}), "row 1"),
        (pd.DataFrame({"hcp_id": ["dr-1", "dr-1"]}), "duplicate hcp_id 'dr-1'"),
    ):
        frame.to_csv(send, index=False)
        result = runner.invoke(app, ["picks", "--hcps", str(send), "--out", str(out)])
        said = " ".join(result.output.split())
        assert result.exit_code != 0 and "--hcps:" in said and says in said, said
    for args in ([], ["--data", str(data), "--hcps", str(send)]):
        result = runner.invoke(app, ["picks", "--out", str(out), *args])
        assert result.exit_code != 0
        assert "give --data DIR" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["serve"], ["NEXTBEST_HOST, else 127.0.0.1", "NEXTBEST_PORT, else 8000"]),
        (["serve"], ["NEXTBEST_WORKERS, else 1"]),
        (["feedback"], ["Exit code 1 when rows were rejected", "2 when the file"]),
        (["evaluate"], ["or time (ISO 8601", "default: training/gate.yaml"]),
        (["promote"], ["or time (ISO 8601", "default: training/gate.yaml"]),
        (["retrain"], ["--alias", "--gate", "evaluate and promote must use the same share"]),
        (["evaluate"], ["exit code 0 whether the gate passes or not"]),
        (["db", "status"], ["1 when the database is behind, 2 when it is newer"]),
        (["picks"], ["NEXTBEST_RULES_FILE, else training/rules.yaml", "NEXTBEST_SERVE_ALIAS"]),
        (["explain"], ["NEXTBEST_RULES_FILE, else training/rules.yaml"]),
        (["serve"], ["NEXTBEST_SERVE_ALIAS (champion unless set)"]),
        (["keys", "remove"], ["as `nextbest keys list` shows them"]),
        (["prune"], ["and when it stopped part way"]),
    ],
)
def test_help_says_what_an_option_left_out_means(command: list[str], said: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    for words in said:
        assert words in text, (words, text)


def _every_command() -> list[list[str]]:
    import typer.main

    def walk(group: typing.Any, prefix: list[str]) -> list[list[str]]:
        found = [prefix]
        for name, command in getattr(group, "commands", {}).items():
            found += walk(command, [*prefix, name])
        return found

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("command", _every_command(), ids=" ".join)
def test_help_shows_a_flag_as_taking_no_value(command: list[str]) -> None:
    """A flag takes no value: Typer's Rich help put `<bool>` where an option's value
    goes (`--yes <bool>`, `--help <bool>`), and `promote --force` had a `--no-force`
    twin the docs never name; a repeatable option is given one value at a time, not
    `--channel <list[str]>`. Nor does RST markup (``name``) reach the help."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    assert "--no-" not in result.output, result.output
    assert "``" not in result.output, result.output
    # A repeatable option takes one value each time, not a list.
    assert not re.search(r"--[a-z-]+ +<list\[", result.output), result.output
    if command == ["promote"]:  # a value-taking option keeps its type beside it
        assert re.search(r"--since +<str>", result.output), result.output


@pytest.mark.parametrize("command", _every_command(), ids=" ".join)
def test_help_paragraphs_fill_an_80_column_terminal(command: list[str]) -> None:
    """Typer kept the line breaks of a help's later paragraphs: each docstring line
    longer than the terminal's 78 columns left a word or two on a line of its own."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.split("\n")
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    paragraphs: list[list[str]] = [[]]
    for line in lines[start:end]:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    for paragraph in paragraphs:
        # A line is cut short only where the next word would not fit on it.
        for line, after in itertools.pairwise(paragraph):
            assert len(line) + 1 + len(after.split()[0]) > 78, (line, after)


def test_every_command_has_a_one_line_summary() -> None:
    """`nextbest --help` lists each command by its help's first paragraph: one line,
    or the list reads as paragraphs (lookup and explain read that way)."""
    import typer.main

    def commands(group: typing.Any, prefix: str) -> list[tuple[str, str]]:
        found = []
        for name, command in group.commands.items():
            found.append((prefix + name, (command.help or "").split("\n\n")[0].strip()))
            if hasattr(command, "commands"):  # a group: rules, db, keys
                found += commands(command, f"{prefix}{name} ")
        return found

    listed = commands(typer.main.get_command(app), "")
    assert len(listed) > 20
    for name, summary in listed:
        assert summary and "\n" not in summary and len(summary) <= 100, (name, summary)


def test_a_misspelt_setting_is_warned_of_with_the_name_meant(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NEXTBEST_EPSLION=0.1 was ignored without a word: the default applied."""
    from nextbest.cli import options

    monkeypatch.setattr(options, "UNKNOWN_SAID", False)
    monkeypatch.setenv("NEXTBEST_EPSLION", "0.1")
    monkeypatch.setenv("NEXTBEST_SOMETHING_ELSE", "1")
    monkeypatch.setenv("NEXTBEST_API_KEYS", "")  # read, though not a field of Settings
    said = " ".join(run_ok("db", "status").split())
    assert (
        "warning: NEXTBEST_EPSLION is not a nextbest setting (did you mean NEXTBEST_EPSILON?): "
        "it is ignored" in said
    ), said
    assert "warning: NEXTBEST_SOMETHING_ELSE is not a nextbest setting: it is ignored" in said
    assert "NEXTBEST_API_KEYS" not in said and "NEXTBEST_MODELS_DIR" not in said


def test_every_nextbest_variable_the_code_names_is_known_to_the_warning() -> None:
    # A variable read outside Settings but missing from OTHER_ENVIRONMENT would be
    # called misspelt on every command.
    from nextbest.settings import ENV_PREFIX, OTHER_ENVIRONMENT, Settings

    source = Path(__file__).parents[2] / "src" / "nextbest"
    named = {
        name
        for path in source.rglob("*.py")
        for name in re.findall(r"\bNEXTBEST_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    fields = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert named - fields - OTHER_ENVIRONMENT == set()
    assert len(named) >= 20
    # The suite's own servers (NEXTBEST_TEST_*_URL) stay in the environment of every
    # command a test runs: each command would warn of them, and a test reading its
    # output from the first line fail.
    tests = Path(__file__).parents[1]
    servers = {
        name
        for path in tests.rglob("*.py")
        for name in re.findall(r"\bNEXTBEST_TEST_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert servers - OTHER_ENVIRONMENT == set()
    assert len(servers) >= 2


def test_version_names_the_release_and_its_schema_revision() -> None:
    from alembic.script import ScriptDirectory

    from nextbest import __version__
    from nextbest.storage.db import alembic_config

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert result.stdout.strip() == f"nextbest {__version__} (database schema revision {head})"


def test_validate_and_train_name_the_actions_the_model_cannot_score_and_the_new(
    env_settings: Path, tmp_path: Path
) -> None:
    """A channel no decision touched, and new content on a known channel and topic,
    are named before training as training names them."""
    world = tmp_path / "launch"
    run_ok("simulate", "--out", str(world), "--hcps", "300", "--periods", "10", "--seed", "5")
    catalog = pd.read_csv(world / "catalog.csv", dtype=str, keep_default_na=False)
    email = catalog[catalog["channel"] == "email"].iloc[0]
    new = [email.copy(), email.copy()]
    new[0]["action_id"], new[0]["content_id"] = "N-MAIL", "C-N-MAIL"
    new[1]["action_id"], new[1]["content_id"], new[1]["channel"] = "N-SMS", "C-N-SMS", "sms"
    pd.concat([catalog, pd.DataFrame(new)]).to_csv(world / "catalog.csv", index=False)
    for command in ("validate", "train"):
        said = " ".join(run_ok(command, "--data", str(world), "--config", str(FAST)).split())
        assert (
            "note: 1 action(s) are not scored, so never served: fewer than 100 fitted "
            "touches, too few to estimate an effect, on channel sms (0): N-SMS" in said
        ), said
        new_content = said.split("have no fitted touch of their own (new content)")[1]
        assert "N-MAIL" in new_content.split("note:")[0] and said.count("N-MAIL") == 1


def test_a_time_with_an_offset_is_read_at_its_utc_instant(
    env_settings: Path, tmp_path: Path
) -> None:
    # A European or American operator writes local times with their offset: the
    # training cut-off and the approval windows of picks are the UTC instants.
    world = tmp_path / "world"
    run_ok("simulate", "--out", str(world), "--hcps", "200", "--periods", "8", "--seed", "3")
    catalog = pd.read_csv(world / "catalog.csv")
    catalog["approved_until"] = "2026-12-31"  # every action's last approved day
    catalog.to_csv(world / "catalog.csv", index=False)
    newest = pd.read_csv(world / "interactions.csv", usecols=["timestamp"])["timestamp"].max()
    day = (pd.Timestamp(newest) - pd.Timedelta(days=7)).strftime("%Y-%m-%d")
    run_ok("train", "--data", str(world), "--config", str(FAST), "--as-of", f"{day}T00:30:00+01:00")
    listed = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    cutoff = pd.Timestamp(listed["versions"][0]["data_as_of"])
    assert cutoff == pd.Timestamp(f"{day}T00:30:00+01:00")  # 23:30 UTC the day before

    def picked(as_of: str) -> int:
        out = tmp_path / f"picks-{len(list(tmp_path.glob('picks-*')))}.csv"
        run_ok("picks", "--data", str(world), "--out", str(out), "--k", "3", "--as-of", as_of)
        return len(pd.read_csv(out))

    assert picked("2026-12-31T23:30:00Z") > 0
    assert picked("2027-01-01T00:30:00+01:00") > 0  # the same moment
    assert picked("2026-12-31T20:00:00-05:00") == 0  # 01:00 UTC on 1 January: expired
    assert picked("2027-01-01T01:00:00Z") == 0


def test_validate_fails_where_train_would_on_interactions_without_rows(
    env_settings: Path, tmp_path: Path
) -> None:
    # A pipeline gating on validate let a failed export (a header only) through to
    # train, which then stopped.
    data = _foreign_dataset(tmp_path / "empty", with_outcome=True)
    interactions = pd.read_csv(data / "interactions.csv", dtype=str, keep_default_na=False)
    interactions.iloc[0:0].to_csv(data / "interactions.csv", index=False)
    trained = runner.invoke(app, ["train", "--data", str(data), "--config", str(FAST)])
    checked = runner.invoke(app, ["validate", "--data", str(data)])
    assert trained.exit_code == 2, trained.output
    assert checked.exit_code == trained.exit_code, checked.output
    said = " ".join(checked.output.split())
    assert "error: train would stop on these data: no interactions: nothing to learn from" in (
        said
    ), said
    # Not announced as "ok" first: a log scraper reads the first line.
    assert "the files keep the contract, but: 150 HCPs, 3 actions, 0 interactions" in (
        " ".join(checked.output.split())
    ), checked.output
    assert "ok:" not in checked.output
    # Too few decisions with an action to learn from: refused alike.
    interactions.head(30).to_csv(data / "interactions.csv", index=False)
    trained = runner.invoke(app, ["train", "--data", str(data), "--config", str(FAST)])
    checked = runner.invoke(app, ["validate", "--data", str(data), "--config", str(FAST)])
    assert trained.exit_code == checked.exit_code == 2, checked.output
    said = " ".join(checked.output.split())
    assert "train would stop on these data: only" in said, said
    assert "at least 200 are needed to learn engagement" in said


def test_progress_off_a_terminal_says_a_long_step_is_still_at_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A cron job's or CI's log: a line per step, and one while a step is long and
    # silent (fitting a large catalog's models took minutes without a line).
    import io
    import time

    from rich.console import Console

    from nextbest.cli import output

    out = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=out, force_terminal=False, width=200))
    monkeypatch.setattr(output, "HEARTBEAT_S", 0.2)
    with output.steps() as progress:
        task = progress.add_task("load", total=3)
        progress.update(task, advance=1, description="models")
        time.sleep(0.7)
        progress.update(task, advance=1, description="snapshot")
    lines = out.getvalue().splitlines()
    assert lines[0] == "load: 0/3 (0:00:00)" and lines[1].startswith("models: 1/3")
    beats = [line for line in lines if line.endswith(", still at work")]
    assert beats and all(line.startswith("models: 1/3") for line in beats)
    assert lines[-1].startswith("snapshot: 2/3")
    time.sleep(0.5)  # stopped with the steps: nothing more is said
    assert out.getvalue().splitlines() == lines


def test_a_note_is_said_on_the_console_the_output_module_holds_when_it_is_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The console replaced as above: a note is said there, as an error is, not on
    # the console there was when the module was imported.
    import io

    from rich.console import Console

    from nextbest.cli import output

    out = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=out, force_terminal=False, width=200))
    output.note("catalog.csv names a channel '[bold]'", indent="  ")
    output.fail("interactions.csv row 3: no hcp_id")
    assert out.getvalue().splitlines() == [
        "  note: catalog.csv names a channel '[bold]'",
        "error: interactions.csv row 3: no hcp_id",
    ]


def test_the_first_champion_is_served_under_another_serve_alias_too(
    env_settings: Path, world_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server reading NEXTBEST_SERVE_ALIAS=production: the first version is the
    champion the gate starts from (recorded) and has 'production' too, said. It used
    to get 'production' alone: no champion, and none later train would give."""
    from nextbest.learning.train import TrainResult
    from nextbest.loop.lineage import champion_changes

    monkeypatch.setenv("NEXTBEST_SERVE_ALIAS", "production")
    get_settings.cache_clear()
    said = " ".join(run_ok("train", "--data", str(world_dir), "--config", str(FAST)).split())
    settings = get_settings()
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "production") == "1"
    assert registry.load_alias(settings)[1] == "1"  # what the server loads
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [("1", "train")]
    assert (
        "version 1 is the champion, and the server reads alias 'production' "
        "(NEXTBEST_SERVE_ALIAS), which names version 1, given it too so that it is served: "
        "`nextbest promote` and `rollback` move 'champion' only"
    ) in said, said
    # A later version gets neither: it is served once promoted.
    model = registry.load_version(settings, "1")
    result = TrainResult(model=model, metrics={}, params={"variant": "later"})
    assert registry.log_training_run(result, settings).aliases == ()


def test_train_may_not_move_the_served_alias_once_a_version_is_served(
    env_settings: Path, tmp_path: Path
) -> None:
    """`train --alias champion` skipped the gate and left no promotion record; it is
    refused before any work once a champion exists, as is previous_champion."""
    from nextbest import registry

    data = _foreign_dataset(tmp_path / "world", with_outcome=True)
    # The first version may take it: nothing is served yet.
    run_ok("train", "--data", str(data), "--config", str(FAST), "--alias", "champion")
    settings = get_settings()
    assert registry.alias_version(settings, "champion") == "1"
    for alias in ("champion", "previous_champion"):
        result = runner.invoke(
            app, ["train", "--data", str(data), "--config", str(FAST), "--alias", alias]
        )
        said = " ".join(result.output.split())
        assert result.exit_code == 2, said
        assert (
            f"error: --alias {alias}: the served version changes only by `nextbest promote`" in said
        )
    retrained = runner.invoke(app, ["retrain", "--data", str(data), "--alias", "champion"])
    assert retrained.exit_code == 2 and "--alias champion" in retrained.output
    assert [v.version for v in registry.list_versions(settings)] == ["1"]


@pytest.mark.parametrize("command", ["train", "retrain"])
def test_alias_champion_leaves_a_champion_made_while_it_trained(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """`--alias champion` is checked before training, on a model with no champion yet;
    another training that ended first made its version champion meanwhile, and this
    one then replaced it at the end, without the gate."""
    from nextbest import registry
    from nextbest.learning import train as learning
    from nextbest.learning.train import TrainResult
    from nextbest.loop import retrain as loop_retrain
    from nextbest.loop.lineage import champion_changes

    data = _foreign_dataset(tmp_path / "world", with_outcome=True)
    real = learning.train
    others: list[str] = []

    def and_another_ends_first(*args: typing.Any, **kwargs: typing.Any) -> TrainResult:
        result = real(*args, **kwargs)
        other = TrainResult(model=result.model, metrics={}, params={"variant": "other job"})
        others.append(registry.log_training_run(other, get_settings()).version)
        return result

    monkeypatch.setattr(learning, "train", and_another_ends_first)
    monkeypatch.setattr(loop_retrain, "train", and_another_ends_first)
    args = [command, "--data", str(data), "--config", str(FAST), "--alias", "champion"]
    if command == "retrain":
        args.append("--allow-history-only")  # a new model: nothing logged to learn from
    result = runner.invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 1, said
    settings = get_settings()
    assert others == ["1"] and registry.alias_version(settings, "champion") == "1"
    assert registry.describe_version(settings, "2").aliases == ()
    assert [(c.version, c.previous) for c in champion_changes(settings)] == [("1", None)]
    assert said.endswith(
        "--alias champion not given: version 2 is registered in full without alias "
        "champion: version 1 became champion while it trained, and the champion changes "
        "only by `nextbest promote`, which runs the gate; `nextbest evaluate --version 2` "
        "compares the two, and `nextbest promote --version 2` makes it champion if the "
        "gate passes"
    ), said
    assert "as 'champion'" not in said and "Traceback" not in said


@pytest.mark.parametrize(
    ("alias", "said"),
    [
        ("bad alias!", "may only hold letters, digits, underscores (_) and dashes (-)"),
        ("", "cannot be empty"),
        ("latest", "'latest' (in any case) is reserved"),
        ("v2", "'v2' is reserved: MLflow names version 2 so"),
    ],
)
@pytest.mark.parametrize("command", ["train", "retrain"])
def test_train_refuses_an_alias_mlflow_would_refuse_before_any_work(
    env_settings: Path, tmp_path: Path, command: str, alias: str, said: str
) -> None:
    """MLflow refused it when the alias was set, after the whole run had registered a
    version without it: here before the data are read or the registry is made."""
    result = runner.invoke(app, [command, "--data", str(tmp_path / "none"), "--alias", alias])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert output.startswith("error: --alias: ") and said in output, output
    assert not env_settings.exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["train", "--config", "{tmp}/typo.yaml"], "typo.yaml"),
        (["train", "--as-of", "2026-13-01"], "--as-of '2026-13-01' is not a date"),
        (["retrain", "--config", "{tmp}/typo.yaml"], "typo.yaml"),
        (["retrain", "--gate", "{tmp}/typo.yaml"], "typo.yaml"),
        (["retrain", "--since", "2099-01-01"], "--since 2099-01-01 is in the future"),
    ],
)
def test_train_checks_its_options_before_it_creates_the_registry(
    env_settings: Path, tmp_path: Path, args: list[str], said: str
) -> None:
    """A new models directory and a typo: the store was created (with MLflow's lines
    about it) before the option was found wrong."""
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = runner.invoke(app, [*args, "--data", str(tmp_path / "none")])
    assert result.exit_code == 2, result.output
    # Rich folds a long path at the terminal's width.
    assert "".join(said.split()) in "".join(result.output.split()), result.output
    assert "data directory not found" not in result.output
    assert not env_settings.exists(), result.output


@pytest.mark.parametrize("command", ["evaluate", "promote", "retrain", "uplift-report"])
def test_a_future_since_is_refused_alike_by_every_command_that_takes_it(
    env_settings: Path, tmp_path: Path, command: str
) -> None:
    """evaluate and promote read a --since in the future as any other date, and said
    "no logged decisions with an outcome since 2099-01-01" once the gate ran, where
    retrain and uplift-report said it was in the future: all four say that, first."""
    args = [command, "--since", "2099-01-01"]
    if command == "retrain":
        args += ["--data", str(tmp_path / "none")]
    result = runner.invoke(app, args)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "error: --since 2099-01-01 is in the future: no " in output, output
    if command in ("evaluate", "promote"):
        assert "no logged decision is that new for the gate to judge on" in output, output
    assert not env_settings.exists(), output


@pytest.mark.parametrize("command", ["train", "retrain"])
@pytest.mark.parametrize("text", ["", "# engagement: {n_estimators: 30}\n# uplift:\n"])
def test_a_training_config_without_settings_is_said_to_hold_none(
    env_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    text: str,
) -> None:
    """training/train.yaml emptied (or every line commented out) was read as the
    built-in defaults without a word: a note names the file; one with settings gets none."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "train.yaml").write_text(text)
    result = runner.invoke(app, [command, "--data", str(tmp_path / "none")])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    said = (
        "train config: training/train.yaml (levers: none) note: training/train.yaml holds "
        "no settings (it is empty, or all comments): training uses the built-in defaults"
    )
    assert said in output, output
    result = runner.invoke(app, [command, "--data", str(tmp_path / "none"), "--config", str(FAST)])
    assert result.exit_code == 2 and "holds no settings" not in result.output, result.output


@pytest.mark.parametrize("text", ["", "# evaluation_share: 0.2\n# min_decisions: 200\n"])
def test_a_gate_config_without_settings_is_said_to_hold_none_and_the_defaults_named(
    env_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
) -> None:
    """training/gate.yaml emptied (or every line commented out) was read as the built-in
    gate without a word, as train.yaml was before its note: retrain notes it, naming the
    file and the settings that apply, and so do evaluate and promote as the gate starts
    (both say the gate config through say_gate_config); one with settings gets none."""
    from nextbest.cli.options import read_gate_config, say_gate_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "training").mkdir()
    gate = tmp_path / "training" / "gate.yaml"
    gate.write_text(text)
    said = (
        "gate config: training/gate.yaml (evaluation_share 0.3) note: training/gate.yaml "
        "holds no settings (it is empty, or all comments): the gate uses the built-in "
        "defaults (estimator: dr, criterion: lower_bound, margin: 0, min_decisions: 500, "
        "min_effective_n: 100, min_differing_effective_n: 20, evaluation_share: 0.3); if "
        "it was emptied by mistake, put its settings back"
    )
    result = runner.invoke(app, ["retrain", "--data", str(tmp_path / "none")])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert said in output, output
    # evaluate and promote: read first, said once the gate runs.
    say_gate_config(read_gate_config(None, said=False), None)
    assert said in " ".join(capsys.readouterr().err.split())

    gate.write_text(text + "min_decisions: 200\n")
    result = runner.invoke(app, ["retrain", "--data", str(tmp_path / "none")])
    assert result.exit_code == 2, result.output
    assert "gate config: training/gate.yaml (evaluation_share 0.3)" in result.output
    assert "holds no settings" not in result.output, result.output


def test_retrain_shows_a_spinner_on_a_terminal_while_it_loads(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing MLflow and the training code to check the options took seconds with
    nothing on the screen: a spinner says it on a terminal (off one, a refusal stays
    the only line)."""
    import contextlib

    from nextbest.cli import output

    shown: list[str] = []
    monkeypatch.setattr(output.console, "_force_terminal", True)
    monkeypatch.setattr(
        output.console,
        "status",
        lambda what, **_: shown.append(str(what)) or contextlib.nullcontext(),
    )
    result = runner.invoke(
        app, ["retrain", "--data", str(tmp_path / "none"), "--since", "2099-01-01"]
    )
    assert result.exit_code == 2 and "is in the future" in result.output, result.output
    assert shown == ["retrain: loading MLflow and the training code"], shown


def test_explain_asks_the_version_or_alias_named_by_model(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data scientist asks what the challenger (or a version rolled back from)
    would answer before promoting it; a version or alias the registry does not hold
    is named, with the versions it does."""
    from nextbest import registry

    hcp = explained_on_a_copy(trained, tmp_path, monkeypatch)
    settings = get_settings()
    served = runner.invoke(app, ["explain", hcp])
    assert served.exit_code == 0 and "version 1 (served) answers" in served.stdout, served.output
    missing = runner.invoke(app, ["explain", hcp, "--model", "challenger"])
    said = " ".join(missing.output.split())
    assert missing.exit_code == 2, said
    assert "--model challenger: model 'nextbest' has no alias 'challenger'" in said, said
    assert "`nextbest models` lists the versions and their aliases" in said, said
    registry.set_alias(settings, "challenger", "1")
    asked = runner.invoke(app, ["explain", hcp, "--model", "challenger", "--json"])
    assert asked.exit_code == 0, asked.output
    assert json.loads(asked.stdout)["model_version"] == "1"
    said = runner.invoke(app, ["explain", hcp, "--model", "challenger"]).stdout
    assert "version 1 (challenger) answers" in said, said
    by_number = runner.invoke(app, ["explain", hcp, "--model", "01", "--json"])
    assert by_number.exit_code == 0 and json.loads(by_number.stdout)["model_version"] == "1"
    unknown = runner.invoke(app, ["explain", hcp, "--model", "7"])
    assert unknown.exit_code == 2, unknown.output
    assert "--model 7: model 'nextbest' has no version 7 (its versions: 1;" in unknown.output


def test_explain_for_todays_date_decides_for_now_as_the_api_does(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--date` with today's date answers for now (contacts made earlier today count),
    as the API's `"date"` and `picks --as-of` do; another day alone is its start, and a
    time is that time. Today's date was read as 00:00 today."""
    from datetime import UTC, datetime

    hcp = explained_on_a_copy(trained, tmp_path, monkeypatch)

    def decided_for(on: str) -> datetime:
        result = runner.invoke(app, ["explain", hcp, "--json", "--date", on])
        assert result.exit_code == 0, result.output
        return datetime.fromisoformat(json.loads(result.stdout)["decided_for"])

    for _ in range(2):  # asked again only when midnight UTC fell within the ask
        before = datetime.now(UTC)
        said = decided_for(f"{before:%Y-%m-%d}")
        after = datetime.now(UTC)
        if before.date() == after.date():
            break
    assert before <= said <= after, (before, said, after)
    assert decided_for("2030-01-07") == datetime(2030, 1, 7, tzinfo=UTC)
    assert decided_for("2030-01-07T09:30:00") == datetime(2030, 1, 7, 9, 30, tzinfo=UTC)


def test_explain_names_the_option_a_bad_value_was_given_to(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `picks` does: `--purpose: ...`, not the request field's bare `purpose: ...`."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    for name, value in {
        "NEXTBEST_MODELS_DIR": str(models),
        "NEXTBEST_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    hcp = str(pd.read_csv(trained.data_dir / "hcps.csv", dtype=str)["hcp_id"].iat[3])
    for args, says in (
        (
            ["--purpose", "Promo"],
            "error: --purpose: must be one of promotional, medical (did you mean 'promotional'?)",
        ),
        (["--channel", "Email"], "--channel: unknown channel 'Email'; did you mean 'email'?"),
    ):
        result = runner.invoke(app, ["explain", hcp, *args])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and says in said, (args, said)
    # A purpose in a CRM's spelling is read as the API reads a request's.
    medical = runner.invoke(app, ["explain", hcp, "--purpose", " Medical", "--json"])
    assert medical.exit_code == 0, medical.output
    assert json.loads(medical.stdout)["hcp_id"] == hcp, medical.stdout


def test_rules_check_says_what_a_reload_would_make_of_a_file(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before a reload (or a SIGHUP, whose supervisor cannot see the catalog), an
    operator checks an edited rules file against the served model's catalog."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    get_settings.cache_clear()
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    fits = runner.invoke(app, ["rules", "check", str(shipped)])
    assert fits.exit_code == 0, fits.output
    said = " ".join(fits.stdout.split())
    assert "against the catalog of model 'nextbest' version 1" in said and "fits it" in said
    misspelt = tmp_path / "rules.yaml"
    misspelt.write_text(shipped.read_text().replace("\n  email:\n", "\n  emial:\n", 1))
    noted = runner.invoke(app, ["rules", "check", str(misspelt), "--model", "champion"])
    assert noted.exit_code == 1, noted.output
    said = " ".join(noted.output.split())
    assert "did you mean 'email' for 'emial'?" in said, said
    assert "a reload would take it (`strict: true` would refuse it)" in said, said
    misspelt.write_text("strict: true\n" + misspelt.read_text())
    refused = runner.invoke(app, ["rules", "check", str(misspelt)])
    assert refused.exit_code == 2, refused.output
    assert "strict: true, and the rules do not fit" in " ".join(refused.output.split())
    misspelt.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
    invalid = runner.invoke(app, ["rules", "check", str(misspelt)])
    assert invalid.exit_code == 2 and "channels.email.max_contacts" in invalid.output
    gone = runner.invoke(app, ["rules", "check", str(tmp_path / "none.yaml")])
    assert gone.exit_code == 2 and "none.yaml: no such file" in gone.output


def test_rules_check_before_any_model_checks_the_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the first model is trained (a service set up first, or a SIGHUP to one
    serving nothing yet) a valid file passes and says its catalog fit was not checked;
    an invalid one is still refused, and no registry is created by the check."""
    models = tmp_path / "models"
    models.mkdir()  # made, empty: nothing trained into it yet
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    get_settings.cache_clear()
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    fits = runner.invoke(app, ["rules", "check", str(shipped)])
    assert fits.exit_code == 0, fits.output
    said = " ".join(fits.stdout.split())
    assert "is valid; model 'nextbest' has no version with alias 'champion' yet" in said, said
    assert "fit to a catalog was not checked" in said, said
    evaluated = runner.invoke(app, ["evaluate"])  # asks the registry the same way
    assert evaluated.exit_code == 2 and "has no 'champion' version" in evaluated.output
    assert not any(models.iterdir())  # asking made no registry
    invalid = tmp_path / "rules.yaml"
    invalid.write_text("channels:\n  email: {max_contacts: -1, per_days: 28}\n")
    refused = runner.invoke(app, ["rules", "check", str(invalid)])
    assert refused.exit_code == 2 and "channels.email.max_contacts" in refused.output
    # A directory is refused as serve and a reload refuse it, not as a missing file.
    folder = tmp_path / "rules.d"
    folder.mkdir()
    not_a_file = runner.invoke(app, ["rules", "check", str(folder)])
    said = " ".join(not_a_file.output.split())
    assert not_a_file.exit_code == 2 and "rules.d cannot be read: Is a directory" in said, said
    asked = runner.invoke(app, ["rules", "check", str(shipped), "--model", "champion"])
    assert asked.exit_code == 2, asked.output  # asked for a catalog there is none of
    assert "has no version with alias 'champion'" in " ".join(asked.output.split())
    # A multi-worker server's SIGHUP runs the same check: nothing served yet, nothing
    # to lose, so the restart goes ahead (it was refused until a model existed).
    from nextbest.cli.serve import restart_problem

    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(shipped))
    monkeypatch.setenv("NEXTBEST_AUTH_ENABLED", "false")
    get_settings.cache_clear()
    assert restart_problem(get_settings()) is None
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(invalid))
    get_settings.cache_clear()
    assert "channels.email.max_contacts" in str(restart_problem(get_settings()))


def test_explain_answers_as_the_api_would_and_logs_nothing(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A support question ("why did Dr X get this, why not that?") asked through the
    API is logged as a served answer; `nextbest explain` gives the same answer, its
    reasons and every exclusion, and writes nothing to the recommendation log."""
    import shutil
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from fastapi.testclient import TestClient

    from nextbest.api.app import create_app

    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    store = tmp_path / "serve.db"
    for name, value in {
        "NEXTBEST_MODELS_DIR": str(models),
        "NEXTBEST_DATABASE_URL": f"sqlite:///{store}",
        "NEXTBEST_RULES_FILE": str(Path(__file__).parents[2] / "training" / "rules.yaml"),
        "NEXTBEST_EPSILON": "0",  # no random pick: the two answers must agree
        "NEXTBEST_HOLDOUT_RATE": "0",
        "NEXTBEST_AUTH_ENABLED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    hcp = str(pd.read_csv(trained.data_dir / "hcps.csv", dtype=str)["hcp_id"].iat[3])
    # Each answer compared is decided for one moment, the day after the history ends:
    # on the clock, gaps in the reasons ("no rep visit in 9 weeks") count on at the
    # cut-off's time of day and approval windows close at midnight, between two asks.
    last = pd.read_csv(trained.data_dir / "interactions.csv")["timestamp"].max()
    on = f"{(pd.Timestamp(last) + pd.Timedelta(days=1)):%Y-%m-%d}T12:00:00"
    result = runner.invoke(app, ["explain", hcp, "--json", "--date", on])
    assert result.exit_code == 0, result.output
    said = json.loads(result.stdout)
    assert said["logged"] is False and said["hcp_id"] == hcp
    assert said["items"] and all(item["reasons"] for item in said["items"])
    assert said["excluded"], "a catalog of 40 actions leaves some out"
    assert not store.exists()  # nothing logged, and no log made before the first serve
    text = runner.invoke(app, ["explain", hcp, "--date", on])
    assert text.exit_code == 0 and "nothing is logged" in text.stdout, text.output
    # --as-of, as picks names its decision date, is the same option.
    as_of = runner.invoke(app, ["explain", hcp, "--json", "--as-of", on])
    assert as_of.exit_code == 0 and json.loads(as_of.stdout) == said, as_of.output
    # The ranking, whatever the exploration rate: no random pick from run to run.
    monkeypatch.setenv("NEXTBEST_EPSILON", "1")
    get_settings.cache_clear()
    for _ in range(3):
        again = json.loads(runner.invoke(app, ["explain", hcp, "--json", "--date", on]).stdout)
        assert again["items"] == said["items"] and not any(i["explored"] for i in again["items"])
    assert "without exploration" in runner.invoke(app, ["explain", hcp, "--date", on]).stdout
    monkeypatch.setenv("NEXTBEST_EPSILON", "0")
    get_settings.cache_clear()
    assert f"1. {said['items'][0]['action_id']} " in text.stdout
    with TestClient(create_app(get_settings())) as client:
        asked = {"hcp_id": hcp, "explain": True, "date": on}
        served = client.post("/v1/recommendations", json=asked).json()
    assert [i["action_id"] for i in served["items"]] == [i["action_id"] for i in said["items"]]
    assert [i["reasons"] for i in served["items"]] == [i["reasons"] for i in said["items"]]
    assert served["excluded"] == said["excluded"]
    with sqlite3.connect(store) as db:  # the API's answer is logged, the command's not
        assert db.execute("SELECT count(*) FROM recommendations").fetchone() == (1,)
    # An e-mail an hour ago: each e-mail action is left out by the cool-down, named with
    # its line in the rules file and when it lifts.
    contact = datetime.now(UTC) - timedelta(hours=1, minutes=5)
    with TestClient(create_app(get_settings())) as client:
        delivered = {"event_id": "explain-email", "event_type": "delivered", "hcp_id": hcp}
        client.post(
            "/v1/feedback",
            json={**delivered, "channel": "email", "occurred_at": contact.isoformat()},
        ).raise_for_status()
    cooled = " ".join(runner.invoke(app, ["explain", hcp]).stdout.split())
    shipped = (Path(__file__).parents[2] / "training" / "rules.yaml").read_text().splitlines()
    email = shipped.index("  email:")
    line = next(n for n, row in enumerate(shipped, start=1) if n > email and "cooldown" in row)
    # The minute the cool-down is over, rounded up: at the time said it is lifted.
    lifts = (contact + timedelta(days=3, minutes=1)).replace(second=0, microsecond=0)
    assert (
        "cool-down: last email contact 1 hour ago, minimum gap 3 days "
        f"(channels.email.cooldown_days, rules.yaml line {line}), lifts "
        f"{lifts:%Y-%m-%d %H:%M} UTC"
    ) in cooled, cooled
    unknown = runner.invoke(app, ["explain", "NO-SUCH-HCP"])
    assert unknown.exit_code == 2
    assert "hcp_id 'NO-SUCH-HCP' is not known to the served model" in unknown.output
    bad = runner.invoke(app, ["explain", hcp, "--channel", "fax"])
    assert bad.exit_code == 2 and "fax" in bad.output, bad.output
    # Erased: every action is left out by a rule, which "not worth its cost" hid.
    assert runner.invoke(app, ["erase", hcp, "--yes"]).exit_code == 0
    erased = runner.invoke(app, ["explain", hcp]).stdout
    assert "no item: no action is allowed (below)" in erased, erased


def test_retrain_allowed_history_only_says_once_that_no_feedback_joined(
    trained, env_settings: Path
) -> None:
    """Nothing in the recommendation log: the note of --allow-history-only says what the
    log lacks and what the version learned from; a second note saying again that no
    logged decision joined the history repeated it."""
    import shutil

    shutil.copytree(trained.settings.resolved_models_dir, env_settings)
    args = ["--data", str(trained.data_dir), "--config", str(FAST), "--allow-history-only"]
    result = runner.invoke(app, ["retrain", *args])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert said.count("holds no logged decision with an outcome") == 1, said
    assert "no logged decision with an outcome joined the history" not in said, said
    assert said.count("evaluation slice is the newest of") == 1, said
    assert (
        "note: --allow-history-only: the recommendation log "
        f"(sqlite:///{env_settings / 'nextbest.db'}) holds no logged decision with an "
        "outcome: no decision was served; this version learned from the history in the "
        "data directory alone, and its evaluation slice is the newest of that history"
    ) in said, said
