"""Registry versions carry the artifact format they were written in; others are refused."""

from __future__ import annotations

import pytest

from nextbest import registry
from nextbest.learning.scoring import ARTIFACT_FORMAT, ScoringModel


def test_a_registered_version_is_stamped_with_format_and_code_version(trained) -> None:
    tags = (
        registry.client(trained.settings)
        .get_model_version(trained.settings.model_name, trained.version)
        .tags
    )
    assert tags[registry.FORMAT_TAG] == str(ARTIFACT_FORMAT)
    assert tags[registry.CODE_TAG]
    assert isinstance(registry.load_version(trained.settings, trained.version), ScoringModel)


def test_a_version_in_another_format_is_refused_with_what_to_do(own_copy, trained) -> None:
    client = registry.client(own_copy)
    current = client.get_model_version(own_copy.model_name, trained.version)
    old = client.create_model_version(own_copy.model_name, current.source, run_id=current.run_id)
    client.set_model_version_tag(own_copy.model_name, old.version, registry.FORMAT_TAG, "0")
    client.set_model_version_tag(own_copy.model_name, old.version, registry.CODE_TAG, "0.0.1")
    with pytest.raises(registry.RegistryError) as refused:
        registry.load_version(own_copy, str(old.version))
    message = str(refused.value)
    assert f"version {old.version} was written by nextbest 0.0.1 in artifact format 0" in message
    assert f"reads format {ARTIFACT_FORMAT}" in message and "nextbest retrain" in message
