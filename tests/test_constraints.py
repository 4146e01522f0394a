"""constraints.txt pins a version of everything pyproject.toml asks for, within what
it asks: a dependency added or narrowed without `make lock` is named here, not left
for pip to refuse on a clean clone's `make install`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pinned() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt line {number}: {line!r} is not name==version"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _asked() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *extras["dev"], *extras["bench"]]]


def test_every_dependency_is_pinned_within_what_pyproject_asks() -> None:
    pins = _pinned()
    problems = []
    for requirement in _asked():
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name}: not in constraints.txt")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}: pinned {pinned}, pyproject asks {requirement}")
    assert not problems, "run `make lock`: " + "; ".join(problems)


def test_nextbest_itself_is_not_pinned() -> None:
    # pip refuses a constraint on the editable project it installs.
    assert "nextbest" not in _pinned()
