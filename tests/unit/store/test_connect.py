"""``worker.store.connect``: which Redis a URL names, Sentinels included."""

from __future__ import annotations

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from worker.settings import Settings
from worker.store.connect import (
    RETRIES,
    is_sentinel,
    parse_sentinel_url,
    probe_client,
    redis_client,
)


def test_a_sentinel_url_names_every_sentinel_and_the_master_s_database_and_login() -> None:
    named = parse_sentinel_url("sentinel://:p%40ss@h1:26379/2;sentinel://h2:26380/2;sentinel://h3")
    assert named.sentinels == [("h1", 26379), ("h2", 26380), ("h3", 26379)]
    assert (named.db, named.username, named.password) == (2, None, "p@ss")
    assert is_sentinel("SENTINEL://h1:26379/0") and not is_sentinel("redis://h1:6379/0")


def test_a_part_that_is_not_a_sentinel_is_refused() -> None:
    with pytest.raises(ValueError, match="sentinel://host"):
        parse_sentinel_url("sentinel://h1:26379/0;redis://h2:6379/0")


def test_a_sentinel_url_gives_a_client_of_the_named_master_and_a_plain_url_a_plain_one() -> None:
    client = redis_client("sentinel://127.0.0.1:1/3", master="books", decode_responses=True)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "books"
    assert pool.connection_kwargs["db"] == 3
    plain = redis_client("redis://127.0.0.1:1/4")
    assert isinstance(plain, redis.Redis) and plain.connection_pool.connection_kwargs["db"] == 4


@pytest.mark.parametrize("url", ["sentinel://127.0.0.1:1/0", "redis://127.0.0.1:1/0"])
def test_a_probe_client_tries_once_and_bounds_every_socket_while_the_store_s_retries(
    url: str,
) -> None:
    """A health probe must answer within its prober's patience: no retries, and a timeout on
    each socket (the Sentinels' too), where the store's own client rides a failover out."""
    probe = probe_client(Settings(redis_url=url), timeout=0.5)
    kwargs = probe.connection_pool.connection_kwargs
    assert kwargs["retry"].get_retries() == 0
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.5
    pool = probe.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        sentinel_kwargs = pool.sentinel_manager.sentinel_kwargs
        assert sentinel_kwargs["socket_timeout"] == sentinel_kwargs["socket_connect_timeout"] == 0.5
        store = redis_client(url).connection_pool.connection_kwargs
        assert store["retry"].get_retries() == RETRIES
