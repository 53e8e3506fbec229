"""The job store's durability verdict: what a worker refuses at start, and why."""

from __future__ import annotations

from worker.store.durability import judge, refusal


def test_a_redis_that_keeps_nothing_on_disk_is_refused_in_one_line() -> None:
    verdict = judge({"appendonly": "no", "save": "", "maxmemory-policy": "noeviction"})
    line = refusal(verdict)
    assert line is not None and "\n" not in line
    assert "keeps nothing on disk" in line and "CREDITQ_ALLOW_VOLATILE_REDIS" in line


def test_an_evicting_redis_is_refused_even_with_aof() -> None:
    verdict = judge(
        {
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "maxmemory-policy": "volatile-lru",
        }
    )
    assert verdict.problems == ["maxmemory-policy volatile-lru evicts keys under memory pressure"]


def test_aof_that_fsyncs_every_write_is_accepted_on_any_redis() -> None:
    aof = judge(
        {
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "maxmemory-policy": "noeviction",
        },
        "7.0.15",
    )
    assert refusal(aof) is None and aof.warnings == []


def test_aof_fsynced_every_second_is_accepted_only_where_creditq_can_wait_for_it() -> None:
    """Redis 7.2+ has WAITAOF, which creditq sends before each POST; on an older Redis a
    crash can lose the move before a POST, and the POST would go out again."""
    config = {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": "",
        "maxmemory-policy": "noeviction",
    }
    assert refusal(judge(config, "7.2.4")) is None
    old = refusal(judge(config, "7.0.15"))
    assert old is not None and "appendfsync always" in old and "7.2" in old
    assert refusal(judge(config, None)) is not None  # unknown: assume the worst


def test_snapshots_alone_are_refused() -> None:
    rdb = judge({"appendonly": "no", "save": "3600 1", "maxmemory-policy": "noeviction"}, "7.4.0")
    line = refusal(rdb)
    assert line is not None and "only RDB snapshots" in line
