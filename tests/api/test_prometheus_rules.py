"""docs/prometheus-rules.yml, the alerting rules an operator loads into Prometheus: each
rule is whole, and every series and label it reads is one a real /metrics serves, so a
renamed metric cannot leave an alert that never fires."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

RULES = Path(__file__).parents[2] / "docs" / "prometheus-rules.yml"
# The sample names of each metric type, from its family's name.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}
SERIES = re.compile(r"\b(nextbest_[a-z_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-z_]+)\s*(=~|!=|!~|=)\s*"')


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _served(client: TestClient) -> dict[str, set[str]]:
    """Every sample name /metrics serves after a recommendation and a feedback post,
    with the label names its samples carry (a labelled metric not yet used has none)."""
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    assert client.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200
    client.post("/v1/feedback", json={"event_id": "e1", "event_type": "opened", "hcp_id": "x"})
    scraped = client.get("/metrics")
    assert scraped.status_code == 200, scraped.text
    served: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scraped.text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            served.setdefault(family.name + suffix, set())
        for sample in family.samples:
            served.setdefault(sample.name, set()).update(sample.labels)
    return served


def test_every_rule_is_whole_and_named_once() -> None:
    rules = _rules()
    assert len(rules) >= 10
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names), names
    for rule in rules:
        assert re.fullmatch(r"Nextbest[A-Z][A-Za-z]+", rule["alert"]), rule
        assert rule["labels"]["severity"] in {"page", "ticket", "info"}, rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        expr = rule["expr"]
        for opening, closing in ("()", "[]", "{}"):
            assert expr.count(opening) == expr.count(closing), (rule["alert"], expr)
        assert expr.count('"') % 2 == 0, (rule["alert"], expr)


def test_every_series_and_label_the_rules_read_is_served(client: TestClient) -> None:
    served = _served(client)
    read = 0
    for rule in _rules():
        for name, matchers in SERIES.findall(rule["expr"]):
            assert name in served, f"{rule['alert']} reads {name}, which /metrics does not serve"
            read += 1
            labels = {label for label, _ in MATCHER.findall(matchers)}
            # Checked where the metric has samples now: their labels are all it has.
            if served[name]:
                unknown = labels - served[name] - {"instance", "job"}
                assert not unknown, f"{rule['alert']}: {name} has no label {unknown}"
    assert read >= 10


def test_the_operations_docs_point_at_the_rules() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    assert "[prometheus-rules.yml](prometheus-rules.yml)" in docs
