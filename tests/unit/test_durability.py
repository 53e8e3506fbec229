"""The job store's durability verdict: what a worker refuses at start, and why."""

from __future__ import annotations

from worker.durability import judge, refusal


def test_a_redis_that_keeps_nothing_on_disk_is_refused_in_one_line() -> None:
    verdict = judge({"appendonly": "no", "save": "", "maxmemory-policy": "noeviction"})
    line = refusal(verdict)
    assert line is not None and "\n" not in line
    assert "keeps nothing on disk" in line and "CREDITQ_ALLOW_VOLATILE_REDIS" in line


def test_an_evicting_redis_is_refused_even_with_aof() -> None:
    verdict = judge({"appendonly": "yes", "save": "", "maxmemory-policy": "volatile-lru"})
    assert verdict.problems == ["maxmemory-policy volatile-lru evicts keys under memory pressure"]


def test_aof_with_noeviction_is_accepted_and_snapshots_alone_only_warn() -> None:
    aof = judge({"appendonly": "yes", "appendfsync": "everysec", "save": "",
                 "maxmemory-policy": "noeviction"})  # fmt: skip
    assert refusal(aof) is None and aof.warnings == []
    rdb = judge({"appendonly": "no", "save": "3600 1", "maxmemory-policy": "noeviction"})
    assert refusal(rdb) is None and len(rdb.warnings) == 1
