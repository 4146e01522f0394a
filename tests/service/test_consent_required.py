"""Opt-in channels: ``consent_required`` in the serving rules serves a channel only to
HCPs whose consent to it is on file, where the default is every HCP."""

from __future__ import annotations

import copy

import pytest

from nextbest import registry
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.policy.rules import ServingRules
from nextbest.service.picks import picks_frame
from nextbest.service.recommend import Recommender

OPT_IN = ServingRules.from_mapping(
    {"channels": {"webinar": {"consent_required": True}, "email": {"consent_required": True}}},
    source="rules.yaml",
)


@pytest.fixture(scope="module")
def model(trained):
    return registry.load_alias(trained.settings)[0]


@pytest.fixture(scope="module")
def without_webinar_consent(model):
    """The model of an hcps file with no consent_webinar column (a channel added to
    the catalog later): every HCP counts as consenting to webinars."""
    other = copy.copy(model)
    other.hcps = model.hcps.drop(columns=["consent_webinar"])
    return other


def _greedy(model, rules: ServingRules | None = None) -> Recommender:
    return Recommender(
        model=model,
        version="1",
        exploration=EpsilonGreedy(epsilon=0, holdout_rate=0),
        rules=rules,
    )


def _channels_served(recommender: Recommender, hcp_ids: list[str]) -> set[str]:
    recs, _ = recommender.recommend_many(hcp_ids=hcp_ids, k=10)
    return {item.channel for rec in recs for item in rec.items}


def test_an_opt_in_channel_without_consent_on_file_is_served_to_nobody(
    without_webinar_consent, caplog: pytest.LogCaptureFixture
) -> None:
    model = without_webinar_consent
    ids = [str(h) for h in model.hcps["hcp_id"][:150]]
    assert "webinar" in _channels_served(_greedy(model), ids)  # the default: everyone
    with caplog.at_level("WARNING", logger="nextbest.policy.rules"):
        opt_in = _greedy(model, OPT_IN)
    served = _channels_served(opt_in, ids)
    assert "webinar" not in served
    # E-mail consent is on file: it is served as before, to those who gave it.
    assert "email" in served
    note = (
        "channel(s) ['webinar'] need consent on file (consent_required) and the served "
        "model's hcps file has no consent_webinar column"
    )
    assert note in caplog.text and any(note in n for n in opt_in.history_rules.notes)
    # Explain says why, for every webinar action; send files follow the same rules.
    webinars = {
        a for a, c in zip(opt_in.action_ids, opt_in.action_channels, strict=True) if c == "webinar"
    }
    rec = opt_in.recommend(hcp_id=ids[0], k=5, explain_exclusions=True)
    for action in webinars:
        assert any("consent: webinar needs consent on file" in w for w in rec.excluded[action])
    picked = picks_frame(model, hcp_ids=ids, k=10, rules=OPT_IN)
    assert len(picked) and "webinar" not in set(picked["channel"])
    assert "webinar" in set(picks_frame(model, hcp_ids=ids, k=10)["channel"])


def test_consent_on_file_is_served_as_the_file_says(model) -> None:
    """With the column, consent_required changes nothing: the file's consent applies."""
    ids = [str(h) for h in model.hcps["hcp_id"][:150]]
    plain, _ = _greedy(model).recommend_many(hcp_ids=ids, k=10)
    opt_in, _ = _greedy(model, OPT_IN).recommend_many(hcp_ids=ids, k=10)
    assert [[i.action_id for i in r.items] for r in plain] == [
        [i.action_id for i in r.items] for r in opt_in
    ]


def test_consent_required_must_be_true_or_false() -> None:
    from nextbest.policy.rules import RulesError

    with pytest.raises(
        RulesError, match=r"consent_required: must be true or false \(read 'yes', text\)"
    ):
        ServingRules.from_mapping(
            {"channels": {"sms": {"consent_required": "yes"}}}, source="rules.yaml"
        )


def test_logged_picks_honour_a_send_lists_consent_as_plain_picks_do(
    trained, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send list's consent_<channel> column puts an opt-in channel's consent on file
    for its HCPs: `picks` and `picks --log` serve it to those who gave it (--log kept
    the served model's view, no column: the channel went to nobody in the file sent)."""
    import pandas as pd

    from nextbest.policy.eligibility import EligibilityIndex
    from nextbest.service.picks import logged_picks

    load_version = registry.load_version

    def without_webinar_column(*args, **kwargs):
        found = copy.copy(load_version(*args, **kwargs))
        found.hcps = found.hcps.drop(columns=["consent_webinar"])
        return found

    monkeypatch.setattr(registry, "load_version", without_webinar_column)
    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  webinar: {consent_required: true}\n")
    settings = trained.settings.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'store.db'}",
            "rules_file": rules,
            "epsilon": 0.0,
            "holdout_rate": 0.0,
        }
    )
    model = without_webinar_column(settings, trained.version)
    ids = [str(h) for h in model.hcps["hcp_id"][:150]]
    send = pd.DataFrame({"hcp_id": ids, "consent_webinar": [n % 2 == 0 for n in range(150)]})
    plain = picks_frame(
        model,
        hcp_ids=ids,
        k=10,
        rules=ServingRules.load(rules),
        eligibility=EligibilityIndex.build(model, hcps=send),
    )
    consenting = set(send["hcp_id"][send["consent_webinar"]])
    assert set(plain["hcp_id"][plain["channel"] == "webinar"]) <= consenting
    assert (plain["channel"] == "webinar").any()
    logged = logged_picks(settings, hcp_ids=ids, k=10, hcps=send).frame
    assert set(logged["hcp_id"][logged["channel"] == "webinar"]) <= consenting
    assert (logged["channel"] == "webinar").any()
    # The same picks: exploration and holdout are off.
    columns = ["hcp_id", "rank", "action_id"]
    assert logged[columns].values.tolist() == plain[columns].values.tolist()
