"""The README's two newcomer commands and .ci/run stay in step (CI runs what a newcomer runs)."""

from __future__ import annotations

import re

from tests.fixtures.paths import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "the README starts with a sh block of the two commands"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_the_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = readme_commands()
    assert demo.endswith("creditq demo") and "pip install" in demo
    assert tests.endswith("pytest") and '".[test]"' in tests


def test_ci_runs_exactly_the_readme_test_command_and_fails_on_no_tests() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^TEST_COMMAND='(.*)'$", script, re.M)
    assert command and command.group(1) == readme_commands()[1]
    assert '"$status" -eq 5' in script and "set -euo pipefail" in script


def test_every_setting_is_documented_in_the_readme_with_its_default() -> None:
    from worker.settings import Settings

    text = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`CREDITQ_{name.upper()}`" in text, name
