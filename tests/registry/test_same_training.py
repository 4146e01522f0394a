"""A training job run twice registers the same model twice: said, not silent."""

from __future__ import annotations

from nextbest import registry
from nextbest.contract import load_dataset
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.train import train

# The shared fixture's configuration: its version 1 was trained with it.
FAST = TrainConfig(
    engagement=EngagementParams(n_estimators=40, num_leaves=15),
    uplift=UpliftParams(n_estimators=60, learning_rate=0.08),
)


def _as_the_fixture_code(settings, version: str, monkeypatch) -> None:
    """Train as the shared fixture's code did: a commit or an edit made while the
    suite runs (after the fixture trained) is other code."""
    client = registry.client(settings)
    run = client.get_run(client.get_model_version(settings.model_name, version).run_id)
    monkeypatch.setattr(registry, "source_commit", lambda: run.data.tags[registry.SOURCE_TAG])
    monkeypatch.setattr(registry, "source_edits", lambda: run.data.tags.get(registry.EDITS_TAG))


def test_a_version_trained_again_on_the_same_data_and_parameters_is_named(
    trained, own_copy, monkeypatch
) -> None:
    settings = own_copy
    _as_the_fixture_code(settings, trained.version, monkeypatch)
    data = load_dataset(trained.data_dir)
    if registry.code_unnamed() is not None:  # the fixture trained an edited checkout
        monkeypatch.setattr(registry, "source_commit", lambda: "c" * 40)
        first = registry.log_training_run(train(data, config=FAST), settings).version
    else:
        first = trained.version
    again = registry.log_training_run(train(data, config=FAST), settings).version
    assert registry.same_training(settings, again) == [first]
    assert registry.same_training(settings, first) == []  # nothing older
    # Other parameters (a smaller model): another model, nothing said.
    other = TrainConfig(
        engagement=EngagementParams(n_estimators=20, num_leaves=15),
        uplift=UpliftParams(n_estimators=60, learning_rate=0.08),
    )
    changed = registry.log_training_run(train(data, config=other), settings).version
    assert registry.same_training(settings, changed) == []


def test_two_runs_of_an_edited_checkout_are_one_model_when_their_edits_are(
    trained, own_copy, monkeypatch
) -> None:
    """Uncommitted edits differ from run to run under one `+modified` commit: runs are
    named a job run twice when their edits are the same (their digest, EDITS_TAG), and
    not when the edits differ or were not recorded (a run from before they were, or
    edits git could not read): they were, while the edits changed the model."""
    settings = own_copy
    monkeypatch.setattr(registry, "source_commit", lambda: "e" * 40 + "+modified")
    data = load_dataset(trained.data_dir)
    monkeypatch.setattr(registry, "source_edits", lambda: None)
    unrecorded = registry.log_training_run(train(data, config=FAST), settings).version
    again = registry.log_training_run(train(data, config=FAST), settings).version
    assert registry.same_training(settings, again) == [], (unrecorded, again)

    monkeypatch.setattr(registry, "source_edits", lambda: "1" * 64)
    first = registry.log_training_run(train(data, config=FAST), settings).version
    assert registry.same_training(settings, first) == []
    (listed,) = [v for v in registry.list_versions(settings) if v.version == first]
    assert listed.source_edits_sha256 == "1" * 64  # `nextbest models --json` says it
    run = registry.client(settings).get_run(listed.run_id)
    assert run.data.tags[registry.EDITS_TAG] == "1" * 64
    same = registry.log_training_run(train(data, config=FAST), settings).version
    assert registry.same_training(settings, same) == [first]

    monkeypatch.setattr(registry, "source_edits", lambda: "2" * 64)
    other = registry.log_training_run(train(data, config=FAST), settings).version
    assert registry.same_training(settings, other) == []


def test_the_same_data_and_parameters_on_other_code_is_another_model(
    trained, own_copy, monkeypatch
) -> None:
    settings = own_copy
    monkeypatch.setattr(registry, "source_commit", lambda: "0" * 40 + "+modified")
    again = registry.log_training_run(
        train(load_dataset(trained.data_dir), config=FAST), settings
    ).version
    assert registry.same_training(settings, again) == []


def test_an_older_version_whose_run_the_tracking_store_lacks_is_not_compared(
    trained, own_copy, monkeypatch, tmp_path
) -> None:
    """Trained with NEXTBEST_TRACKING_URI on a new store while the registry is the old
    one: the older versions' runs are not there. `nextbest train` registered the
    version, then ended in MLflow's traceback (`Run with id=... not found`) where it
    looks for a repeat; an older version it cannot read is no repeat it can name."""
    _as_the_fixture_code(own_copy, trained.version, monkeypatch)
    settings = own_copy.model_copy(
        update={
            "tracking_uri": f"sqlite:///{tmp_path / 'new-tracking.db'}",
            "registry_uri": f"sqlite:///{own_copy.resolved_models_dir / 'mlflow.db'}",
        }
    )
    data = load_dataset(trained.data_dir)
    again = registry.log_training_run(train(data, config=FAST), settings).version
    assert again == "2"
    assert registry.same_training(settings, again) == []
