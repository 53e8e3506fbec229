"""The Lua scripts as files (issue 16): how they are composed and registered, what their
headers and bodies look like, and that they spell no job field, state or key Python does not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path
from typing import Any

import fakeredis
import lupa.lua51
import pytest
import redis

from tests.fixtures.paths import ROOT
from worker.budget import CLASS_SPAN, TURN_ARGS
from worker.domain.fields import JobField
from worker.domain.grant import Provider
from worker.domain.states import DlqReason, JobState
from worker.store import lua
from worker.store.keys import Keys
from worker.store.moves import MOVE_LAYOUT, MOVE_REQUEST

LUA = Path(str(files("worker.store.lua")))
NAMES = sorted(p.name for p in LUA.glob("*.lua"))
# A helper defines functions for the scripts that use it; a script is what Redis runs.
HELPERS = {
    "budget_clock.lua",
    "budget_turn.lua",
    "dlq.lua",
    "era.lua",
    "move.lua",
    "schedule.lua",
    "scope.lua",
    "words.lua",
}
SCRIPTS = sorted(set(NAMES) - HELPERS)
# Files that touch no job hash: the budget's, the provider's visibility hash, the store's era.
NOT_JOBS = {n for n in NAMES if n.startswith("budget_")} | {"record_visibility.lua", "era.lua"}
# Quoted words in the job scripts that are not field names: the attempt modes a move takes,
# the tags of the scripts' replies, and the counters hash's field.
PROTOCOL = {
    "keep",
    "incr",
    "decr",
    "reset",
    "claimed",
    "checked",
    "started",
    "wait",
    "other",
    "missing",
    "purged",
    "stale",
    "confirm_again",
    "interactive",  # the lane of a job accepted before lanes existed
}


def body(name: str) -> str:
    """The file's Lua without comments."""
    return re.sub(r"--[^\n]*", "", lua.text(name))


def header(name: str) -> str:
    lines = lua.text(name).splitlines()
    return "\n".join(
        line
        for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("--"))]
    )


# -- the loader -----------------------------------------------------------------------


def test_every_lua_file_is_a_helper_or_a_script_the_code_loads() -> None:
    assert set(HELPERS) <= set(NAMES)
    loaded = set()
    for path in (ROOT / "worker").rglob("*.py"):
        loaded |= set(re.findall(r'lua\.script\([^"]*"([a-z_]+\.lua)"', path.read_text()))
    assert loaded == set(SCRIPTS)


def test_a_script_carries_the_helpers_it_uses_each_once_helpers_first() -> None:
    text = lua.source("begin_post.lua")
    order = [name for name in NAMES if lua.text(name) in text]
    assert set(order) == {
        "begin_post.lua",
        "move.lua",
        "words.lua",
        "scope.lua",
        "dlq.lua",
        "schedule.lua",
        "budget_turn.lua",
        "budget_clock.lua",
        "era.lua",
    }
    for name in order:
        assert text.count(lua.text(name)) == 1
    at = {name: text.index(lua.text(name)) for name in order}
    for name in order:
        assert all(at[helper] < at[name] for helper in lua.uses(name)), name
    assert text.endswith(lua.text("begin_post.lua"))


def test_uses_is_read_from_the_header_only(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = {
        "a.lua": "-- a\n-- uses: b.lua, c.lua\nlocal x = 1\n-- uses: d.lua\n",
        "b.lua": "-- uses: c.lua\n",
        "c.lua": "-- c\n",
    }
    monkeypatch.setattr(lua, "text", texts.__getitem__)
    assert lua.uses("a.lua") == ["b.lua", "c.lua"]
    assert lua._composition("a.lua", ()) == ["c.lua", "b.lua", "a.lua"]


def test_helpers_that_use_each_other_in_a_circle_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = {"a.lua": "-- uses: b.lua\n", "b.lua": "-- uses: a.lua\n"}
    monkeypatch.setattr(lua, "text", texts.__getitem__)
    with pytest.raises(ValueError, match=r"a\.lua -> b\.lua -> a\.lua"):
        lua._composition("a.lua", ())


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_compiles_as_redis_runs_it(name: str) -> None:
    compile_error = lupa.lua51.LuaRuntime().eval(
        "function(text, name) local _, err = loadstring(text, name) return err end"
    )
    assert compile_error(lua.source(name), name) is None


def test_a_script_is_registered_once_per_client() -> None:
    first, second = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    script = lua.script(first, "transition.lua")
    assert lua.script(first, "transition.lua") is script
    assert lua.script(second, "transition.lua") is not script
    assert script.sha == lua.script(second, "transition.lua").sha


# -- headers and bodies -----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_file_opens_with_a_header_naming_itself(name: str) -> None:
    assert lua.text(name).startswith(f"-- {name}: ")


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_header_names_its_keys_and_argv_and_what_it_returns(name: str) -> None:
    head, code = header(name), body(name)
    for ref in sorted(set(re.findall(r"(?:KEYS|ARGV)\[\d+\]", code))):
        assert re.search(rf"^-- {re.escape(ref)} [a-z_]+", head, re.M), (name, ref)
    assert "Returns" in head, name


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_reads_keys_and_argv_into_named_locals_at_the_top(name: str) -> None:
    lines = [line for line in body(name).splitlines() if line.strip()]
    top = next((i for i, line in enumerate(lines) if not line.startswith("local ")), len(lines))
    for i, line in enumerate(lines):
        if re.search(r"\b(KEYS|ARGV)\b", line):
            assert i < top, (name, line)


def test_helpers_read_no_keys_or_argv() -> None:
    for name in HELPERS:
        assert not re.search(r"\b(KEYS|ARGV)\b", body(name)), name


def test_the_move_arguments_are_named_alike_in_python_and_lua() -> None:
    text = body("move.lua")
    for table, names in (("MOVE_LAYOUT", MOVE_LAYOUT), ("MOVE_REQUEST", MOVE_REQUEST)):
        found = re.search(rf"local {table} = \{{([^}}]*)\}}", text)
        assert found is not None, table
        assert tuple(re.findall(r"'([a-z_]+)'", found.group(1))) == names


def test_the_turn_arguments_are_named_alike_in_python_and_lua() -> None:
    found = re.search(r"local TURN = \{([^}]*)\}", body("budget_turn.lua"))
    assert found is not None
    assert tuple(re.findall(r"'([a-z_]+)'", found.group(1))) == TURN_ARGS
    listed = re.findall(r"^-- (?:KEYS|ARGV)\[\d+\] ([a-z_]+)", header("budget_acquire.lua"), re.M)
    assert tuple(listed) == TURN_ARGS
    span = re.search(r"local CLASS_SPAN = (\d+)", body("budget_turn.lua"))
    assert span is not None and int(span.group(1)) == CLASS_SPAN


def test_transition_s_header_lists_the_move_arguments_in_order() -> None:
    listed = re.findall(r"^--   ([a-z_]+)", header("transition.lua"), re.M)
    assert listed[: len(MOVE_LAYOUT) + len(MOVE_REQUEST)] == [*MOVE_LAYOUT, *MOVE_REQUEST]


def test_a_move_request_built_in_a_script_names_every_argument_of_a_move() -> None:
    """confirm_seen.lua builds its moves' requests by name: one it leaves out reads as nil in
    move.lua (a promotion check once failed every confirmation on it)."""
    code = body("confirm_seen.lua")
    table = code[code.index("local request = {") + len("local request") : code.index("fields = {")]
    assert set(re.findall(r"([a-z_]+) = ", table)) == set(MOVE_REQUEST)


# -- names: fields, states, keys --------------------------------------------------------


def quoted(name: str) -> set[str]:
    """The quoted snake_case words of a file, outside its tables of argument names."""
    code = re.sub(r"local [A-Z_]+ = \{[^}]*\}", "", body(name))
    return set(re.findall(r"'([a-z][a-z_]*)'", code))


def test_every_job_field_the_scripts_spell_is_a_job_field() -> None:
    fields = {f.value for f in JobField}
    for name in sorted(set(NAMES) - NOT_JOBS):
        stray = quoted(name) - fields - PROTOCOL
        assert not stray, f"{name} spells {sorted(stray)}: add them to JobField"


def test_the_scripts_read_and_write_the_job_fields_python_reads() -> None:
    spelled = set().union(*(quoted(n) for n in set(NAMES) - NOT_JOBS)) - PROTOCOL
    assert {
        "state",
        "attempts",
        "version",
        "dlq_reason",
        "first_post_at",
        "in_flight_until",
        "outcome_unknown",
        "alarm",
    } <= spelled


@pytest.mark.parametrize("name", NAMES)
def test_no_script_spells_a_state_or_a_key_prefix(name: str) -> None:
    code = body(name)
    assert "creditq" not in code and ":dlq" not in code
    if name not in NOT_JOBS:  # the budget counts 'confirmed' grants: a counter, not a state
        assert not quoted(name) & {s.value for s in JobState}, name


def run(source: str, *args: str) -> list[str]:
    client = fakeredis.FakeRedis(decode_responses=True)
    return list(client.eval(source, 0, *args))  # type: ignore[arg-type]


def test_the_scripts_compose_the_key_names_keys_py_spells() -> None:
    probe = (
        lua.source("scope.lua") + "\nreturn {customer_scope(ARGV[1], ARGV[2], ARGV[3]), "
        "provider_scope(ARGV[1], ARGV[2])}"
    )
    for prefix, named in ((Keys.PENDING_PREFIX, Keys.pending), (Keys.CLAIMED_PREFIX, None)):
        got = run(probe, prefix, "inveterate", "cust:1")
        if named is None:
            assert got[0] == Keys.claimed("inveterate", "cust:1")
        else:
            assert got == [named("inveterate", "cust:1"), named("inveterate", None)]
    sets = lua.source("dlq.lua") + (
        "\nreturn dlq_sets({dlq_all = ARGV[1], dlq_by_provider = ARGV[2], "
        "dlq_by_reason = ARGV[3]}, ARGV[4], ARGV[5])"
    )
    got = run(sets, *Keys.dlq_layout(), Provider.CHARGEBEE.value, DlqReason.REFUSED.value)
    assert got == [Keys.dlq(), Keys.dlq(provider="chargebee"), Keys.dlq(reason="refused")]
    by_state = lua.source("scope.lua") + "\nreturn {state_scope(ARGV[1], ARGV[2], ARGV[3])}"
    got = run(by_state, Keys.INDEX_PREFIX, JobState.DEAD.value, Provider.INVETERATE.value)
    assert got == [Keys.index(JobState.DEAD, Provider.INVETERATE.value)]


# -- shipping -----------------------------------------------------------------------------


def test_the_package_data_names_every_lua_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["worker.store.lua"]
    assert all(any(fnmatch(name, p) for p in patterns) for name in NAMES)


def test_a_built_package_carries_the_lua_files(tmp_path: Path) -> None:
    """What a non-editable install copies: setuptools' build_py of a copy of the source."""
    src = tmp_path / "src"
    src.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, src / part)
    for package in ("worker", "tasks"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = tmp_path / "build"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(built),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (built / "worker/store/lua").glob("*.lua")) == NAMES


class ForgetfulRedis(fakeredis.FakeRedis):
    """A server that forgets the script ``forgets`` times right after it was loaded: what a
    failover looks like from a client whose load and EVALSHA reached different servers."""

    def __init__(self, forgets: int) -> None:
        super().__init__()
        self.forgets = forgets
        self.disconnects = 0
        original = self.connection_pool.disconnect

        def disconnect(*args: object, **kwargs: object) -> None:
            self.disconnects += 1
            original(*args, **kwargs)  # type: ignore[arg-type]

        self.connection_pool.disconnect = disconnect  # type: ignore[method-assign]

    def script_load(self, script: str) -> str:  # type: ignore[override]
        sha = str(super().script_load(script))
        if self.forgets > 0:
            self.forgets -= 1
            self.script_flush()
        return sha


def no_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []
    monkeypatch.setattr(lua.time, "sleep", pauses.append)
    return pauses


def test_a_script_forgotten_between_its_load_and_its_call_is_sent_again_on_fresh_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses = no_pauses(monkeypatch)
    client = ForgetfulRedis(forgets=2)
    assert lua.script(client, "budget_paused_for.lua")(keys=["p"], args=[""]) == 0
    assert client.disconnects == 2 and pauses == list(lua.RELOAD_PAUSES_SECONDS[:2])


def test_a_script_the_server_never_keeps_fails_as_no_script_after_a_few_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses = no_pauses(monkeypatch)
    client = ForgetfulRedis(forgets=100)
    with pytest.raises(redis.exceptions.NoScriptError):
        lua.script(client, "budget_paused_for.lua")(keys=["p"], args=[""])
    assert pauses == list(lua.RELOAD_PAUSES_SECONDS)


def forgetful_pipeline(client: fakeredis.FakeRedis, forgets: int) -> Any:
    """A pipeline whose server forgets its scripts right after redis-py loaded them, the
    first ``forgets`` times: its connection made again to a new master (a failover)."""
    pipe = client.pipeline(transaction=False)
    load = pipe.load_scripts
    left = [forgets]

    def load_then_forget() -> None:
        load()
        if left[0] > 0:
            left[0] -= 1
            client.script_flush()

    pipe.load_scripts = load_then_forget
    return pipe


def test_a_pipeline_whose_scripts_the_server_forgot_is_sent_once_more() -> None:
    client = fakeredis.FakeRedis()
    pipe = forgetful_pipeline(client, forgets=1)
    lua.script(client, "budget_paused_for.lua")(keys=["p"], args=[""], client=pipe)
    pipe.execute_command("PING")
    assert lua.execute(pipe) == [0, True]


def test_a_pipeline_whose_scripts_the_server_keeps_forgetting_raises_no_script() -> None:
    client = fakeredis.FakeRedis()
    pipe = forgetful_pipeline(client, forgets=2)
    lua.script(client, "budget_paused_for.lua")(keys=["p"], args=[""], client=pipe)
    with pytest.raises(redis.exceptions.NoScriptError):
        lua.execute(pipe)


def test_a_pipeline_in_which_some_script_ran_is_not_sent_again() -> None:
    """Sent again, the script that ran would run twice."""
    client = fakeredis.FakeRedis()
    pipe = client.pipeline(transaction=False)
    lua.script(client, "budget_paused_for.lua")(keys=["p"], args=[""], client=pipe)
    pipe.execute_command("EVALSHA", "0" * 40, 0)  # a script no server knows
    with pytest.raises(redis.exceptions.NoScriptError):
        lua.execute(pipe)
    assert len(pipe.command_stack) == 0
