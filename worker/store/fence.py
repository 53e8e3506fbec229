"""Before a POST, behind Sentinels: a majority of them name, as the master, the very server
that holds the move into ``submitting``.

The store's era (``lua/era.lua``) finds a promotion after the fact; it cannot stop a master
that has not learnt it lost its place. In a partition that leaves the old master, a replica
and some workers on one side, that old master goes on taking moves, and ``WAIT`` is answered
by the replica beside it; the Sentinels on the other side promote another replica, whose
workers then read the listing, find nothing yet, and POST the same job. A POST leaves only
when a majority of the Sentinels name the server that holds its move (by ``run_id``, which
tells a restarted or replaced server from the one that was there before) and none of them
holds it down or fails it over: a worker on the minority's side cannot reach a majority, and
one on the majority's side reaches Sentinels that name another master. The window left is
the time between the Sentinels' answer and the POST's departure (milliseconds) against the
Sentinels' ``down-after-milliseconds`` (seconds).

A plain Redis has no fence (``fence_for`` answers None): there is nothing to fail over to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool

# How long one Sentinel may take to answer; the answers stop as soon as a majority agrees.
ANSWER_TIMEOUT_SECONDS = 0.5
# Flags under which a Sentinel does not vouch for the master it names.
DOUBTS = ("s_down", "o_down", "failover_in_progress")


@dataclass(frozen=True)
class Verdict:
    """Whether the Sentinels vouch for the server, and in words why (or why not)."""

    confirmed: bool
    why: str


def verdict(states: Sequence[Mapping[str, Any] | None], run_id: str, total: int) -> Verdict:
    """Pure: the verdict on the Sentinels' answers (``SENTINEL MASTER``; None for one that
    did not answer) for the server whose ``run_id`` holds the move; ``total`` Sentinels in
    all, of which more than half must vouch for it."""
    needed = total // 2 + 1
    vouch = sum(
        1
        for state in states
        if state is not None
        and state.get("runid") == run_id
        and not any(doubt in str(state.get("flags", "")) for doubt in DOUBTS)
    )
    answered = sum(1 for state in states if state is not None)
    said = f"{vouch} of {total} Sentinels vouch for this master ({answered} answered)"
    return Verdict(vouch >= needed, said)


class SentinelFence:
    """The Sentinels of one master name, asked before each POST."""

    def __init__(self, sentinels: Sequence[tuple[str, int]], service: str) -> None:
        self.service = service
        self.sentinels = [
            redis.Redis(
                host=host,
                port=port,
                socket_timeout=ANSWER_TIMEOUT_SECONDS,
                socket_connect_timeout=ANSWER_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),  # one try: a silent Sentinel is a "no"
                decode_responses=True,
            )
            for host, port in sentinels
        ]

    def vouches_for(self, run_id: str) -> Verdict:
        """Ask the Sentinels one by one, stopping once a majority vouches."""
        states: list[Mapping[str, Any] | None] = []
        for sentinel in self.sentinels:
            try:
                state = sentinel.sentinel_master(self.service)
            except (redis.RedisError, OSError):
                state = None
            states.append(state if isinstance(state, Mapping) else None)
            found = verdict(states, run_id, len(self.sentinels))
            if found.confirmed:
                return found
        return verdict(states, run_id, len(self.sentinels))


def fence_for(client: redis.Redis) -> SentinelFence | None:
    """The fence of a store client made behind Sentinels (``connect.redis_client``)."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    sentinels = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ]
    return SentinelFence(sentinels, pool.service_name)
