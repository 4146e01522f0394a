"""Business levers: validated with named errors, applied in arbitration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams, load_train_config
from nextbest.learning.levers import Lever, Levers, load_levers

CATALOG = pd.DataFrame(
    {
        "action_id": ["a1", "a2", "a3"],
        "channel": ["email", "rep_visit", "rep_visit"],
        "topic": ["dosing", "dosing", "safety"],
        "content_id": ["c1", "c2", "c3"],
    }
)


def test_levers_multiply_and_add_per_scope() -> None:
    levers = Levers.model_validate(
        {
            "channel": {"rep_visit": {"weight": 2.0, "cost_weight": 0.5}},
            "topic": {"dosing": {"weight": 1.5, "offset": -0.1}},
            "content_id": {"c3": {"offset": 0.3}},
        }
    )
    weight, cost_weight, offset = levers.per_action(CATALOG)
    np.testing.assert_allclose(weight, [1.5, 3.0, 2.0])
    np.testing.assert_allclose(cost_weight, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(offset, [-0.1, -0.1, 0.3])
    assert levers.unknown_keys(CATALOG) == []
    assert Levers.model_validate({"topic": {"dozing": {}}}).unknown_keys(CATALOG) == [
        "topic.dozing"
    ]
    assert levers.as_params()["levers.channel.rep_visit.weight"] == 2.0


def test_keys_matching_nothing_are_refused_at_their_line_with_the_catalog_value_meant(
    tmp_path: Path,
) -> None:
    """'Dosing' never applied to the catalog's 'dosing', and a lever for a channel the
    catalog lacks changed nothing: each was a note after the training, and the version
    was registered without the levers the brand asked for."""
    (tmp_path / "levers.yaml").write_text(
        "channel:\n  emial: {}\n  sms: {offset: 0.1}\n"
        "topic:\n  Dosing: {weight: 2}\n  Safety Data: {}\n"
        "content_id:\n  C3: {}\n"
    )
    (tmp_path / "train.yaml").write_text(
        "seed: 1\nvalue_per_engagement:\n  email: 1.0\n  Rep Vist: 2.0\nlevers: levers.yaml\n"
    )
    config = load_train_config(tmp_path / "train.yaml")
    catalog = CATALOG.assign(topic=["dosing", "dosing", "safety_data"])
    weight, _, _ = config.levers.per_action(catalog)
    np.testing.assert_allclose(weight, [1.0, 1.0, 1.0])  # matched as written, as before
    levers, train = tmp_path / "levers.yaml", tmp_path / "train.yaml"
    assert config.catalog_mismatch(catalog) == (
        f"levers in {levers}, line 2: channel.emial: no channel of the catalog is 'emial' "
        f"(did you mean 'email'?); levers in {levers}, line 3: channel.sms: no channel of "
        f"the catalog is 'sms'; levers in {levers}, line 5: topic.Dosing: no topic of the "
        "catalog is 'Dosing' (the catalog has 'dosing': a topic is matched exactly as the "
        f"catalog writes it); levers in {levers}, line 6: topic.Safety Data: no topic of the "
        "catalog is 'Safety Data' (the catalog has 'safety_data': a topic is matched exactly "
        f"as the catalog writes it); levers in {levers}, line 8: content_id.C3: no content_id "
        "of the catalog is 'C3' (the catalog has 'c3': a content_id is matched exactly as the "
        f"catalog writes it); training config {train}, line 4: value_per_engagement.rep_vist: "
        "no channel of the catalog is 'rep_vist' (did you mean 'rep_visit'?) (the catalog's "
        "channels: email, rep_visit; topics: dosing, safety_data; content_ids: c1, c2, c3): "
        "a key naming nothing in the catalog changes no score; write it as the catalog does, "
        "or take it out"
    )
    # Inline levers are named at their lines of train.yaml.
    train.write_text("seed: 1\nlevers:\n  topic:\n    launch: {weight: 2}\n")
    said = load_train_config(train).catalog_mismatch(CATALOG)
    assert said is not None
    assert said.startswith(
        f"levers in training config {train} (levers), line 4: topic.launch: no topic of the "
        "catalog is 'launch' (the catalog's topics: dosing, safety): "
    )
    # Keys the catalog has, channels in any spelling, are no mismatch.
    train.write_text("levers: {channel: {Rep Visit: {offset: -0.2}}, topic: {dosing: {}}}\n")
    assert load_train_config(train).catalog_mismatch(CATALOG) is None
    assert TrainConfig().catalog_mismatch(CATALOG) is None


def test_a_key_naming_a_catalog_value_and_more_is_told_the_value_meant() -> None:
    """A campaign's lever written ``email_newsletter`` or ``Dosing 2026 Q3`` was refused
    with no word of the catalog's email or dosing, which a request's channel gets."""
    levers = Levers.model_validate(
        {"channel": {"email_newsletter": {}}, "topic": {"Dosing 2026 Q3": {"weight": 2}}}
    )
    assert levers.unmatched(CATALOG) == [
        (
            "channel",
            "email_newsletter",
            "no channel of the catalog is 'email_newsletter' (did you mean 'email'?)",
        ),
        (
            "topic",
            "Dosing 2026 Q3",
            "no topic of the catalog is 'Dosing 2026 Q3' (the catalog has 'dosing': a topic "
            "is matched exactly as the catalog writes it)",
        ),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("channel: {email: {weight: -1}}", r"channel\.email\.weight"),
        ("channel: {email: {wieght: 2}}", r"channel\.email\.wieght: Extra inputs"),
        ("segment: {}", "segment: Extra inputs"),
        ("channel: {email: {offset: lots}}", r"channel\.email\.offset"),
        ("channel: [email", r"line 1, column 16: not valid YAML: expected ',' or ']'"),
        # Infinity made scores that are not JSON; NaN closed the channel without a word.
        ("channel: {email: {offset: .inf}}", r"channel\.email\.offset: Input should be a finite"),
        ("topic: {dosing: {weight: .nan}}", r"topic\.dosing\.weight: Input should be a finite"),
        ("channel: {Email: {}, email: {}}", r"channel: .*names channel 'email' a second time"),
    ],
)
def test_bad_levers_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "levers.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_levers(path)
    assert str(path) in str(info.value)


# Two sections with the same keys: the key path alone would leave the reader looking.
TRAIN_YAML = """\
seed: 1
engagement:
  n_estimators: 200
  learning_rate: 0.08
uplift:
  n_estimators: 1500
  learning_rate: {rate}
{extra}"""


@pytest.mark.parametrize(
    ("rate", "extra", "said"),
    [
        pytest.param(
            "2",
            "",
            "line 7: uplift.learning_rate: Input should be less than or equal to 1 (read 2, a "
            "whole number)",
            id="bad-value",
        ),
        pytest.param(
            "0.03",
            "  num_leafs: 7\n",
            "line 8: uplift.num_leafs: Extra inputs are not permitted (did you mean 'num_leaves'?)",
            id="unknown-key",
        ),
        pytest.param(
            "0.03",
            "calibraton_fraction: 0.2\n",
            "line 8: calibraton_fraction: Extra inputs are not permitted (did you mean "
            "'calibration_fraction'?)",
            id="unknown-key-at-the-top",
        ),
        pytest.param(
            "0.03",
            "levers:\n  channel:\n    email:\n      weight: -1\n",
            "line 11: channel.email.weight: Input should be greater than or equal to 0 (read -1, "
            "a whole number)",
            id="inline-levers-at-their-line-in-train-yaml",
        ),
        pytest.param(
            "0.03",
            "levers:\n  channel:\n    email: {weight: 2}\n  segment: {}\n  chanel: {}\n",
            "line 11: segment: Extra inputs are not permitted (allowed here: channel, topic, "
            "content_id); "
            "line 12: chanel: Extra inputs are not permitted (did you mean 'channel'?)",
            id="inline-levers-unknown-scope",
        ),
        pytest.param(
            "0",
            "eval_fraction: 1\n",
            "line 7: uplift.learning_rate: Input should be greater than 0 (read 0, a whole "
            "number); line 8: eval_fraction: Input should be less than 1 (read 1, a whole number)",
            id="each-problem-its-line",
        ),
        # Not a train.yaml key (docs/learning.md, section 2), and near none: the keys
        # the section takes are named.
        pytest.param(
            "0.03",
            "  early_stopping_rounds: 50\n",
            "line 8: uplift.early_stopping_rounds: Extra inputs are not permitted (allowed "
            "here: n_estimators, learning_rate, num_leaves, min_child_samples)",
            id="unknown-key-near-none",
        ),
        # LightGBM stops at more leaves than this, once the features are built.
        pytest.param(
            "0.03",
            "  num_leaves: 310000\n",
            "line 8: uplift.num_leaves: Input should be less than or equal to 131072 (read "
            "310000, a whole number)",
            id="more-leaves-than-lightgbm-grows",
        ),
    ],
)
def test_train_config_errors_name_the_line(
    tmp_path: Path, rate: str, extra: str, said: str
) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(TRAIN_YAML.format(rate=rate, extra=extra))
    with pytest.raises(ValueError) as refused:
        load_train_config(path)
    inline = " (levers)" if "levers:" in extra else ""
    who = f"levers in training config {path}{inline}" if inline else f"training config {path}"
    assert str(refused.value) == f"{who}, {said}"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        pytest.param(
            "channel:\n  email:\n    weight: 2\n  rep_visit:\n    weight: -1\n",
            "line 5: channel.rep_visit.weight: Input should be greater than or equal to 0 (read "
            "-1, a whole number)",
            id="bad-value",
        ),
        pytest.param(
            "topic:\n  dosing:\n    weight: 2\n    wieght: 3\n",
            "line 4: topic.dosing.wieght: Extra inputs are not permitted (did you mean 'weight'?)",
            id="unknown-key",
        ),
        # A key that is no text (pydantic's loc ends in '[key]'): the line of the key.
        pytest.param(
            "content_id:\n  c1: {}\n  123: {offset: 1}\n",
            "line 3: content_id.123.[key]: Input should be a valid string (read 123, a whole "
            "number: quote it if it is text)",
            id="key-not-text",
        ),
    ],
)
def test_levers_file_errors_name_the_line(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "levers.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as refused:
        load_levers(path)
    assert str(refused.value) == f"levers in {path}, {said}"


def test_a_missing_levers_file_is_named_at_the_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text("seed: 3\n\nlevers: missing.yaml\n")
    with pytest.raises(ValueError, match=r"train\.yaml, line 3: levers: .*missing\.yaml does not"):
        load_train_config(tmp_path / "train.yaml")


def test_train_config_reads_levers_file_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "levers.yaml").write_text("channel: {rep_visit: {offset: -0.2}}\n")
    (tmp_path / "train.yaml").write_text("levers: levers.yaml\nseed: 3\n")
    config = load_train_config(tmp_path / "train.yaml")
    assert config.levers.channel["rep_visit"].offset == -0.2
    (tmp_path / "train.yaml").write_text("levers: missing.yaml\n")
    with pytest.raises(ValueError, match=r"levers: .*missing\.yaml does not exist .*next to"):
        load_train_config(tmp_path / "train.yaml")


def test_a_section_whose_entries_are_all_commented_out_is_its_defaults(tmp_path: Path) -> None:
    """As the shipped file is edited: every key of a section commented out leaves the
    section's name alone, which YAML reads as null; it was refused ("Input should be a
    valid dictionary"), where an empty `levers:` and the rules file's sections are not."""
    path = tmp_path / "train.yaml"
    path.write_text(
        "engagement:\n#  n_estimators: 200\nuplift:\nvalue_per_engagement:\nlevers:\nseed: 4\n"
    )
    config = load_train_config(path)
    assert config.model_dump() == TrainConfig(seed=4).model_dump()
    # A section that is something else than settings is still refused at its line.
    path.write_text("seed: 4\nengagement: 200\n")
    with pytest.raises(ValueError, match=r"line 2: engagement: Input should be a valid dict"):
        load_train_config(path)


def test_a_levers_section_or_entry_whose_settings_are_all_commented_out_is_neutral(
    tmp_path: Path,
) -> None:
    """As levers.yaml is edited: its examples are commented out under a section's
    name, which YAML reads as null; it was refused ("Input should be a valid
    dictionary"), where train.yaml reads such a section as its defaults."""
    path = tmp_path / "levers.yaml"
    path.write_text(
        "channel:\n#  rep_visit: {cost_weight: 1.2}\ntopic:\n  dosing:\n#    weight: 1.3\n"
    )
    levers = load_levers(path)
    assert levers.channel == {}
    assert levers.topic == {"dosing": Lever()}
    np.testing.assert_allclose(levers.per_action(CATALOG), [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    # What is no mapping is said in the file's terms, at its line.
    path.write_text("channel:\n  email: {offset: 1}\n  rep_visit: 2\n")
    with pytest.raises(ValueError) as refused:
        load_levers(path)
    assert str(refused.value) == (
        f"levers in {path}, line 3: channel.rep_visit: Value error, a lever is a mapping of "
        "weight, cost_weight and offset, such as {offset: -0.01}, not 2"
    )
    config = tmp_path / "train.yaml"
    config.write_text("seed: 1\nlevers: [email]\n")
    with pytest.raises(ValueError) as refused:
        load_train_config(config)
    assert str(refused.value) == (
        f"levers in training config {config} (levers), line 2: Value error, levers are a "
        "mapping of up to three sections, channel, topic and content_id, each naming "
        "catalog values; not ['email']"
    )


def test_a_negative_seed_is_refused_at_its_line(tmp_path: Path) -> None:
    """numpy's samplers (max_rows_per_model, the offline evaluation's) refuse a negative
    seed: a run on data large enough to be sampled stopped after building the features,
    with "expected non-negative integer" and no key named."""
    path = tmp_path / "train.yaml"
    path.write_text("max_rows_per_model: 1000\nseed: -1\n")
    with pytest.raises(ValueError) as refused:
        load_train_config(path)
    assert str(refused.value) == (
        f"training config {path}, line 2: seed: Input should be greater than or equal to 0 "
        "(read -1, a whole number)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: true\n", r"seed: Input should be a valid integer"),
        (
            "engagement: {learning_rate: '0.08'}\n",
            r"engagement\.learning_rate: '0.08' was read as text \(it is quoted\): write 0.08 "
            "without quotes",
        ),
        ("engagement: {n_estimators: 200.5}\n", r"engagement\.n_estimators: Input should be"),
        ("value_per_engagement: {email: .inf}\n", r"value_per_engagement: .*finite numbers"),
    ],
)
def test_train_config_takes_no_number_in_disguise(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "train.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_train_config(tmp_path / "train.yaml")
    (tmp_path / "train.yaml").write_text("engagement: {learning_rate: 1}\n")  # an int is a float
    assert load_train_config(tmp_path / "train.yaml").engagement.learning_rate == 1.0


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # Taken as 1.0 and 1.5 without a word, where train.yaml refuses the same values.
        (
            "channel:\n  email: {cost_weight: true}\n",
            "line 2: channel.email.cost_weight: Input should be a valid number (read true, "
            "true/false)",
        ),
        (
            "topic:\n  dosing:\n    weight: '1.5'\n",
            "line 3: topic.dosing.weight: '1.5' was read as text (it is quoted): write 1.5 "
            "without quotes",
        ),
        (
            "content_id:\n  c1: {offset: '-1'}\n",
            "line 2: content_id.c1.offset: '-1' was read as text (it is quoted): write -1 "
            "without quotes",
        ),
    ],
)
def test_levers_take_no_number_in_disguise(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "levers.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as refused:
        load_levers(path)
    assert str(refused.value) == f"levers in {path}, {said}"
    # Integers are numbers.
    path.write_text("channel:\n  email: {weight: 2, cost_weight: 1, offset: -1}\n")
    assert load_levers(path).channel["email"].weight == 2.0


def test_channel_keys_are_spelled_as_catalog_channels(tmp_path: Path) -> None:
    # 'Email' was no catalog channel: its lever and value were ignored with a note.
    (tmp_path / "train.yaml").write_text(
        "value_per_engagement: {Email: 2.0}\nlevers: {channel: {Rep Visit: {offset: -0.2}}}\n"
    )
    config = load_train_config(tmp_path / "train.yaml")
    assert config.value_per_engagement == {"email": 2.0}
    assert list(config.levers.channel) == ["rep_visit"]
    assert config.levers.unknown_keys(CATALOG) == []


def test_project_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_train_config(root / "training" / "train.yaml")
    assert isinstance(config.levers, Levers)


def test_the_levers_files_examples_uncommented_train_on_the_simulated_world(
    tmp_path: Path,
) -> None:
    """Its content_id example named C0007, which no simulated catalog has (C007): it
    changed nothing, and is now refused; each example must name what `nextbest
    simulate` writes, so that a data scientist trying them sees them act."""
    from nextbest.simulate import simulate_world

    shipped = (Path(__file__).resolve().parents[2] / "training" / "levers.yaml").read_text()
    examples = shipped[shipped.index("# Examples") :].splitlines()[1:]
    uncommented = [line[2:] for line in examples if line.startswith("# ")]
    (tmp_path / "levers.yaml").write_text("\n".join(uncommented) + "\n")
    (tmp_path / "train.yaml").write_text("levers: levers.yaml\n")
    config = load_train_config(tmp_path / "train.yaml")
    assert set(config.levers.as_params()) >= {
        "levers.channel.rep_visit.cost_weight",
        "levers.topic.new_indication.weight",
    }
    assert config.levers.content_id, "the examples name a content_id"
    catalog = simulate_world(n_hcps=50, periods=2, seed=0).catalog
    assert config.catalog_mismatch(catalog) is None


def test_levers_change_the_served_score(learned) -> None:  # type: ignore[no-untyped-def]
    model = learned.result.model
    actions = np.arange(model.n_actions)
    uplift = np.full(model.n_actions, 0.5)
    before = model.net_value(uplift, actions)
    np.testing.assert_allclose(before, 0.5 - model.action_cost)
    channel = str(model.catalog["channel"].iat[0])
    model_with = type(model)(
        **{
            **{f: getattr(model, f) for f in model.__dataclass_fields__},
            "levers": Levers.model_validate({"channel": {channel: {"offset": -10.0}}}),
        }
    )
    after = model_with.net_value(uplift, actions)
    hit = model.catalog["channel"].to_numpy() == channel
    np.testing.assert_allclose(after[hit], before[hit] - 10.0)
    np.testing.assert_allclose(after[~hit], before[~hit])


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text("seed: 1\neval_fraction: 0.1\nseed: 2\n")
    twice = (
        r"train\.yaml, line 3, column 1: not valid YAML: found the key 'seed' a second time "
        r"\(first on line 1\)"
    )
    with pytest.raises(ValueError, match=twice):
        load_train_config(tmp_path / "train.yaml")
    (tmp_path / "train.yaml").write_text("engagement: {num_leaves: 7}\nuplift: {num_leaves: 7}\n")
    assert load_train_config(tmp_path / "train.yaml").uplift.num_leaves == 7  # same key, two maps


def test_reasons_and_exclusions_state_the_levers_so_their_numbers_add_up(learned) -> None:  # type: ignore[no-untyped-def]
    import re

    from nextbest.policy.exploration import EpsilonGreedy
    from nextbest.service.recommend import Recommender

    model = learned.result.model
    channel = str(model.catalog["channel"].iat[0])
    bent = type(model)(
        **{
            **{f: getattr(model, f) for f in model.__dataclass_fields__},
            "levers": Levers.model_validate({"channel": {channel: {"cost_weight": 1.5}}}),
        }
    )
    recommender = Recommender(
        model=bent, version="1", exploration=EpsilonGreedy(epsilon=0, holdout_rate=0)
    )
    lead = re.compile(r"expected ([+-][\d.]+) outcome versus no contact, for a cost of ([\d.]+)")
    cut = re.compile(r"expected ([+-][\d.]+) outcome for a cost of ([\d.]+)(.*) \(net value (.*)\)")
    served = excluded = 0
    for hcp in model.hcps["hcp_id"].astype(str).tolist()[:100]:
        rec = recommender.recommend(hcp_id=hcp, k=5, channel=channel, explain_exclusions=True)
        for item in rec.items:
            gain, cost = map(float, lead.match(item.reasons[0]).groups())  # type: ignore[union-attr]
            assert "(business levers: cost x1.5)" in item.reasons[0]
            assert item.score == pytest.approx(gain - 1.5 * cost, abs=0.03)  # each rounded
            served += 1
        for why in rec.excluded.values():
            for said in why:
                if (m := cut.search(said)) is not None:
                    assert m.group(3) == ", business levers: cost x1.5"
                    gain, cost, net = float(m.group(1)), float(m.group(2)), float(m.group(4))
                    assert net == pytest.approx(gain - 1.5 * cost, abs=0.03)  # each rounded
                    excluded += 1
    assert served and excluded
    greedy = EpsilonGreedy(epsilon=0, holdout_rate=0)
    plain = Recommender(model=model, version="1", exploration=greedy)
    hcp = str(model.hcps["hcp_id"].iat[0])
    said = plain.recommend(hcp_id=hcp, k=5, explain_exclusions=True)
    assert not any("levers" in r for item in said.items for r in item.reasons)


def test_a_run_names_its_config_files_and_says_what_zero_fractions_switch_off(
    tmp_path: Path,
) -> None:
    from nextbest.contract import load_dataset
    from nextbest.learning.train import train
    from nextbest.simulate import simulate_world

    assert Levers().as_params() == {"levers": "none"}
    assert load_train_config(None).source == "built-in defaults"
    world = simulate_world(n_hcps=400, periods=6, seed=3)
    world.write(tmp_path / "world", fmt="parquet")
    (tmp_path / "levers.yaml").write_text("channel: {email: {cost_weight: 2}}\n")
    path = tmp_path / "train.yaml"
    path.write_text(
        "eval_fraction: 0\ncalibration_fraction: 0\nlevers: levers.yaml\n"
        "engagement: {n_estimators: 30}\nuplift: {n_estimators: 40}\n"
    )
    config = load_train_config(path)
    result = train(load_dataset(tmp_path / "world"), config=config)
    assert result.params["config.file"] == str(path)
    assert result.params["config.levers"] == str(tmp_path / "levers.yaml")
    assert result.params["levers.channel.email.cost_weight"] == 2.0
    # No calibration slice, so no early stopping: every tree asked for is kept.
    assert result.params["engagement.trees"] == 30
    said = " ".join(result.notes)
    assert "no evaluation: eval_fraction 0 of" in said
    assert "calibration_fraction 0: engagement probabilities are LightGBM's own" in said
    assert "auc" not in " ".join(result.metrics).lower()


def test_interactions_dated_after_now_are_left_out_and_said(tmp_path: Path) -> None:
    # One mistyped year made 2099 the model's cut-off: every request before then refused.
    from nextbest.contract import load_dataset
    from nextbest.learning.readiness import interaction_notes
    from nextbest.learning.train import train
    from nextbest.simulate import simulate_world

    world = simulate_world(n_hcps=400, periods=6, seed=3)
    world.write(tmp_path / "world", fmt="csv")
    path = tmp_path / "world" / "interactions.csv"
    lines = path.read_text().splitlines()
    header, last = lines[0].split(","), lines[-1].split(",")
    last[header.index("timestamp")] = "2099-01-01"
    path.write_text("\n".join([*lines, ",".join(last)]) + "\n")
    dataset = load_dataset(tmp_path / "world")
    assert any(
        "1 interaction is dated after now" in n for n in interaction_notes(dataset.interactions)
    )
    config = TrainConfig(
        engagement=EngagementParams(n_estimators=30), uplift=UpliftParams(n_estimators=40)
    )
    before = pd.Timestamp.now(tz="UTC").tz_localize(None)
    result = train(dataset, config=config)
    assert before <= result.model.as_of <= pd.Timestamp.now(tz="UTC").tz_localize(None)
    assert any("1 interaction(s) dated after now (the latest 2099-01-01" in n for n in result.notes)
