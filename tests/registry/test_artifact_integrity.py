"""A registered version's artifacts carry their SHA-256; altered ones are not loaded."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import joblib
import pytest

from nextbest import registry
from nextbest.learning.train import TrainResult
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings


def _register(settings: Settings, trained, *, alias: str | None = None) -> str:
    """The session's model registered again in ``settings``' own store (no training)."""
    model = registry.load_version(trained.settings, trained.version)
    result = TrainResult(model=model, metrics={}, params={"variant": "integrity"})
    return registry.log_training_run(result, settings, alias=alias).version


def _model_dir(settings: Settings, version: str) -> Path:
    with registry._model_dir(settings, version) as (root, _):
        return root


@pytest.fixture
def own_store(trained, tmp_path: Path) -> Settings:
    """A store of its own, whose artifacts a test may alter."""
    return Settings(models_dir=tmp_path / "models", seed=11)


def test_the_digest_is_what_sha256sum_gives_for_the_model_directory(own_store, trained) -> None:
    version = _register(own_store, trained)
    tags = registry.client(own_store).get_model_version(own_store.model_name, version).tags
    root = _model_dir(own_store, version)
    assert (root / "MLmodel").is_file() and any(root.rglob("scoring_model.joblib"))
    # As the docs tell an auditor to check it, without nextbest.
    shell = subprocess.run(
        "find . -type f ! -path ./registered_model_meta -printf '%P\\n' | LC_ALL=C sort "
        "| xargs sha256sum | sha256sum",
        shell=True,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert tags[registry.DIGEST_TAG] == shell.stdout.split()[0]
    # Loading it (MLflow may leave a note of the name it was loaded by) changes nothing.
    registry.load_version(own_store, version)
    (root / registry.MLFLOW_LOAD_NOTE).write_text("model_name: nextbest\n")
    registry.load_version(own_store, version)


def test_an_altered_artifact_is_refused_naming_both_digests(own_store, trained) -> None:
    version = _register(own_store, trained)
    expected = (
        registry.client(own_store)
        .get_model_version(own_store.model_name, version)
        .tags[registry.DIGEST_TAG]
    )
    artifact = next(_model_dir(own_store, version).rglob("scoring_model.joblib"))
    # Still a model that loads and scores: only the digest can tell.
    other = artifact.with_suffix(".other")
    joblib.dump(registry.load_version(own_store, version), other, compress=1)
    other.replace(artifact)
    with pytest.raises(registry.ArtifactAlteredError) as refused:
        registry.load_version(own_store, version, alias="champion")
    said = str(refused.value)
    found = refused.value.found
    assert refused.value.version == version and refused.value.expected == expected
    assert found != expected and found == registry.artifact_digest(
        registry._read_model_dir(_model_dir(own_store, version))
    )
    assert f"version {version} (alias 'champion')" in said
    assert f"SHA-256 {found}, registered as {expected}" in said
    assert "Restore the models directory from a backup" in said and "nextbest retrain" in said


def test_a_reload_onto_an_altered_version_keeps_the_old_one_serving(own_store, trained) -> None:
    first = _register(own_store, trained)
    runtime = ServingRuntime.start(own_store)
    try:
        assert runtime.model_version == first
        second = _register(own_store, trained, alias="challenger")
        artifact = next(_model_dir(own_store, second).rglob("MLmodel"))
        artifact.write_text(artifact.read_text() + "\n# edited\n")
        registry.set_alias(own_store, "champion", second)
        with pytest.raises(registry.ArtifactAlteredError):
            runtime.reload()
        assert runtime.model_version == first
        assert (runtime.last_reload_error or "").startswith("ArtifactAlteredError: ")
        assert f"version {second} (alias 'champion')" in (runtime.last_reload_error or "")
        hcp = str(runtime.recommender.hcp_ids[0])
        assert runtime.recommender.recommend(hcp_id=hcp, k=1).hcp_id == hcp
    finally:
        runtime.close()


def test_a_version_registered_without_a_digest_loads_with_one_warning(
    own_store, trained, caplog: pytest.LogCaptureFixture
) -> None:
    first = _register(own_store, trained)
    client = registry.client(own_store)
    current = client.get_model_version(own_store.model_name, first)
    # As an older nextbest registered it: no digest tag.
    legacy = str(
        client.create_model_version(
            own_store.model_name, current.source, run_id=current.run_id
        ).version
    )
    assert registry.DIGEST_TAG not in client.get_model_version(own_store.model_name, legacy).tags
    with caplog.at_level(logging.WARNING, logger="nextbest.registry"):
        for _ in range(3):
            registry.load_version(own_store, legacy)
        registry.load_version(own_store, first)
    said = [r.getMessage() for r in caplog.records if "unverified" in r.getMessage()]
    assert len(said) == 1, said
    assert f"version {legacy} was registered without an artifact_sha256 tag" in said[0]
