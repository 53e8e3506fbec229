"""Many threads on one process's sockets: does any call lose its socket to another thread?

    .venv/bin/python benchmarks/fd_stress.py [--requests N] [--threads T] [--latency S]
        [--deadline-share F] [--redis-threads R] [--kill-every S] [--redis-url URL]
        [--without-guard] [--seconds-max S]

What a creditq worker (`-P threads -c 32`) does at once, in one process: T threads share one
``InveterateClient`` (as the worker's ``ClientPool`` does) and make N provider calls in all
against the in-process sandbox (POSTs, listing reads, key checks), a share of them under a
call deadline of a few milliseconds that fires mid-call, so httpcore closes that connection
itself. Meanwhile R threads use Redis as a worker does: SET and GET through one shared client
(each reads back what it wrote: a reply handed to the wrong caller is counted), and broker
traffic through ``worker.app.broker``'s transport (publishes, a consumer, acknowledgements from
other threads), while Redis drops every client connection every ``--kill-every`` seconds
(all the server's clients: on by default only with the private Redis).

An EBADF ("[Errno 9] Bad file descriptor") anywhere is a descriptor closed by a thread that
did not own it: the issue 20 failure. Prints the figures (requests, threads, EBADF, crossed
replies, other errors by kind, new connections, open descriptors before and after, seconds)
and exits 1 on any EBADF or crossed reply. ``--without-guard`` runs httpcore's own pool with
the limits before issue 20 (keep-alive 5 of 10): the failure this measures, for comparison.
Redis: ``--redis-url`` (a database of its own: kombu keeps its unacked set there), else a
private redis-server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpcore
import httpx
import redis
from kombu import Connection, Exchange, Producer, Queue  # type: ignore[attr-defined]
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.app.broker import Transport  # noqa: E402
from worker.domain.grant import CreditGrant  # noqa: E402
from worker.errors import ProviderError  # noqa: E402
from worker.providers.deadline import call_deadline  # noqa: E402
from worker.providers.inveterate import InveterateClient  # noqa: E402
from worker.sandbox.harness import Sandbox  # noqa: E402
from worker.sandbox.options import DEFAULT_INVETERATE_KEY  # noqa: E402
from worker.store.embedded import EmbeddedRedis  # noqa: E402

EBADF_TEXTS = ("[Errno 9]", "Bad file descriptor")
KEY_PREFIX = "fd-stress:"
QUEUE_NAME = "fd-stress"
# The limits creditq had before issue 20, for --without-guard.
LIMITS_BEFORE = httpx.Limits(max_connections=10, max_keepalive_connections=5, keepalive_expiry=30)


@dataclass
class Tally:
    """What every thread saw, under one lock."""

    calls: int = 0
    redis_ops: int = 0
    broker_acks: int = 0
    ebadf: int = 0
    crossed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, where: str, exc: BaseException) -> None:
        text = exc.message if isinstance(exc, ProviderError) else str(exc)
        with self.lock:
            if any(marker in text for marker in EBADF_TEXTS):
                self.ebadf += 1
                self.errors[f"{where}: {text[:90]}"] += 1
            else:
                self.errors[f"{where}: {type(exc).__name__}"] += 1

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


@dataclass(frozen=True)
class Options:
    requests: int
    threads: int
    latency: float
    deadline_share: float
    redis_threads: int
    kill_every: float
    without_guard: bool
    seconds_max: float


@dataclass
class Figures:
    requests: int
    threads: int
    redis_threads: int
    ebadf: int
    crossed: int
    redis_ops: int
    broker_acks: int
    connections: int
    fds_before: int
    fds_after: int
    seconds: float
    errors: dict[str, int]

    @property
    def clean(self) -> bool:
        return self.ebadf == 0 and self.crossed == 0

    def lines(self) -> list[str]:
        rows = [
            f"requests          {self.requests}",
            f"http threads      {self.threads}",
            f"redis threads     {self.redis_threads}",
            f"EBADF             {self.ebadf}",
            f"crossed replies   {self.crossed}",
            f"redis ops         {self.redis_ops}",
            f"broker acks       {self.broker_acks}",
            f"new connections   {self.connections}",
            f"fds before/after  {self.fds_before}/{self.fds_after}",
            f"seconds           {self.seconds:.1f}",
        ]
        rows += [f"  {count:6d}  {kind}" for kind, count in sorted(self.errors.items())]
        return rows


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class CountingBackend(httpcore.NetworkBackend):
    """The client's network backend, counting the connections it opens: a pool that churns
    (closes idle connections and opens new ones) shows here."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner
        self.opened = 0

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        self.opened += 1  # under the GIL; a figure, not an invariant
        return self.inner.connect_tcp(*args, **kwargs)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def provider_client(url: str, without_guard: bool) -> tuple[InveterateClient, CountingBackend]:
    """One client for every thread, as the worker's ``ClientPool`` keeps one per provider."""
    key = SecretStr(DEFAULT_INVETERATE_KEY)
    if without_guard:
        client = InveterateClient(url, key, 5.0, limits=LIMITS_BEFORE)
    else:
        client = InveterateClient(url, key, 5.0)
    pool = client._http._transport._pool  # type: ignore[attr-defined]
    if without_guard:
        pool.__class__ = httpcore.ConnectionPool
    counting = CountingBackend(pool._network_backend)
    pool._network_backend = counting
    return client, counting


def http_worker(
    client: InveterateClient, calls: int, options: Options, tally: Tally, seed: int
) -> None:
    """One worker thread's provider calls: mostly POSTs, some reads and checks; a share under
    a deadline of 1-15 ms, which ends the call in a read or write and closes its connection."""
    rng = random.Random(seed)
    for n in range(calls):
        customer = f"cust-{seed}-{n % 7}"
        kind = rng.random()
        try:
            with contextlib.ExitStack() as stack:
                if rng.random() < options.deadline_share:
                    stack.enter_context(call_deadline(rng.uniform(0.001, 0.015)))
                if kind < 0.6:
                    grant = CreditGrant(
                        idempotency_key=f"fd-{seed}-{n}",
                        provider="inveterate",
                        customer_id=customer,
                        amount=Decimal("1.00"),
                        currency_code="USD",
                    )
                    client.submit(grant, f"cq-{seed:08x}{n:08x}")
                elif kind < 0.9:
                    client.list_page(customer, None, 5)
                else:
                    client.check()
        except ProviderError as exc:
            if "deadline" not in exc.message:
                tally.failed("http", exc)
        tally.count("calls")


def redis_worker(client: redis.Redis, stop: threading.Event, tally: Tally, seed: int) -> None:
    """SET then GET of a value only this thread writes, through the shared client: a reply
    that is not the value written went to the wrong caller."""
    n = 0
    while not stop.is_set():
        key, value = f"{KEY_PREFIX}{seed}", f"{seed}:{n}"
        try:
            client.set(key, value, ex=60)
            got = client.get(key)
            if got is not None and got != value:
                tally.count("crossed")
            tally.count("redis_ops", 2)
        except (redis.RedisError, OSError) as exc:
            tally.failed("redis", exc)
            stop.wait(0.01)  # Redis just dropped us: a moment to come back
        n += 1


def broker_traffic(url: str, stop: threading.Event, tally: Tally, ackers: int) -> list[Any]:
    """A publisher, a consumer and ``ackers`` threads acknowledging on the consumer's channel
    (Celery's thread pool acknowledges from the task's thread): ``worker.app.broker``'s shared
    client under several threads. Returns the threads, started."""
    exchange: Any = Exchange(QUEUE_NAME, type="direct")  # type: ignore[no-untyped-call]
    bindings: Any = Queue(QUEUE_NAME, exchange, routing_key=QUEUE_NAME)  # type: ignore[no-untyped-call]
    received: queue.Queue[Any] = queue.Queue(maxsize=256)

    def publish(conn: Any) -> None:
        producer: Any = Producer(conn.channel(), exchange, routing_key=QUEUE_NAME)  # type: ignore[no-untyped-call]
        while not stop.is_set():
            try:
                producer.publish({"n": 1}, declare=[bindings], retry=False)
            except (*conn.connection_errors, OSError) as exc:
                tally.failed("publish", exc)
                stop.wait(0.01)  # Redis just dropped us: a moment to come back

    def consume(conn: Any) -> None:
        bound = bindings(conn.channel())
        while not stop.is_set():
            try:
                message = bound.get(no_ack=False)
            except (*conn.connection_errors, OSError) as exc:
                tally.failed("consume", exc)
                stop.wait(0.01)
                continue
            if message is not None:
                received.put(message)

    def acknowledge() -> None:
        while not stop.is_set() or not received.empty():
            try:
                message = received.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                message.ack()
                tally.count("broker_acks")
            except (redis.RedisError, OSError) as exc:
                tally.failed("ack", exc)

    def connected(body: Callable[[Any], None]) -> Callable[[], None]:
        def run() -> None:
            conn: Any = Connection(url, transport=Transport)  # type: ignore[no-untyped-call]
            try:
                body(conn)
            except BaseException as exc:  # counted, so that a broken harness cannot pass
                tally.failed("broker thread", exc)
            finally:
                with contextlib.suppress(Exception):
                    conn.release()

        return run

    targets: list[Callable[[], None]] = [
        connected(publish),
        connected(consume),
        *[acknowledge] * ackers,
    ]
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    return threads


def drop_connections(url: str, every: float, stop: threading.Event, tally: Tally) -> None:
    """Redis hangs up on every other client now and then (a restart, a proxy's timeout):
    each client reconnects in its own thread, the close paths the stress wants running."""
    admin = redis.Redis.from_url(url)
    while not stop.wait(every):
        with contextlib.suppress(redis.RedisError):
            admin.client_kill_filter(_type="normal", skipme=True)
            tally.count("redis_ops")
    admin.close()


@contextlib.contextmanager
def private_redis(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


def run(options: Options, redis_url: str | None = None) -> Figures:
    tally = Tally()
    fds_before = open_fds()
    started = time.monotonic()
    with private_redis(redis_url) as url, Sandbox(latency=options.latency) as sandbox:
        client, backend = provider_client(sandbox.url, options.without_guard)
        stop = threading.Event()
        store = redis.Redis.from_url(url, decode_responses=True)
        helpers = [
            threading.Thread(target=redis_worker, args=(store, stop, tally, i), daemon=True)
            for i in range(options.redis_threads)
        ]
        if options.kill_every > 0:
            helpers.append(
                threading.Thread(
                    target=drop_connections,
                    args=(url, options.kill_every, stop, tally),
                    daemon=True,
                )
            )
        for helper in helpers:
            helper.start()
        broker = broker_traffic(url, stop, tally, ackers=max(options.redis_threads // 2, 1))
        per_thread = -(-options.requests // options.threads)
        workers = [
            threading.Thread(target=http_worker, args=(client, per_thread, options, tally, i))
            for i in range(options.threads)
        ]
        for worker in workers:
            worker.start()
        deadline = started + options.seconds_max
        for worker in workers:
            worker.join(timeout=max(deadline - time.monotonic(), 0.1))
        stop.set()
        for thread in [*helpers, *broker]:
            thread.join(timeout=10)
        seconds = time.monotonic() - started
        if any(worker.is_alive() for worker in workers):
            tally.errors["the run did not end by --seconds-max"] += 1
        client.close()
        store.close()
        with contextlib.suppress(redis.RedisError):
            keys = [f"{KEY_PREFIX}{i}" for i in range(options.redis_threads)]
            redis.Redis.from_url(url).delete(*keys, QUEUE_NAME, f"_kombu.binding.{QUEUE_NAME}")
    return Figures(
        requests=tally.calls,
        threads=options.threads,
        redis_threads=options.redis_threads,
        ebadf=tally.ebadf,
        crossed=tally.crossed,
        redis_ops=tally.redis_ops,
        broker_acks=tally.broker_acks,
        connections=backend.opened,
        fds_before=fds_before,
        fds_after=open_fds(),
        seconds=seconds,
        errors=dict(tally.errors),
    )


def parse(argv: list[str] | None) -> tuple[Options, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=30_000, help="provider calls in all")
    parser.add_argument("--threads", type=int, default=32, help="threads making them")
    parser.add_argument("--latency", type=float, default=0.0, help="sandbox delay per call, s")
    parser.add_argument(
        "--deadline-share",
        type=float,
        default=0.05,
        help="share of calls under a deadline that fires mid-call",
    )
    parser.add_argument("--redis-threads", type=int, default=8, help="threads on the shared client")
    parser.add_argument(
        "--kill-every",
        type=float,
        default=None,
        help="seconds between Redis dropping all its clients (0: never; "
        "default 0.5 on the private Redis, 0 with --redis-url)",
    )
    parser.add_argument("--redis-url", default=None, help="else a private redis-server")
    parser.add_argument(
        "--without-guard",
        action="store_true",
        help="httpcore's own pool and the limits before issue 20",
    )
    parser.add_argument("--seconds-max", type=float, default=600.0, help="give up after this")
    args = parser.parse_args(argv)
    options = Options(
        requests=args.requests,
        threads=args.threads,
        latency=args.latency,
        deadline_share=args.deadline_share,
        redis_threads=args.redis_threads,
        kill_every=args.kill_every
        if args.kill_every is not None
        else (0 if args.redis_url else 0.5),
        without_guard=args.without_guard,
        seconds_max=args.seconds_max,
    )
    return options, args.redis_url


def main(argv: list[str] | None = None) -> int:
    options, redis_url = parse(argv)
    figures = run(options, redis_url)
    print("\n".join(figures.lines()))
    return 0 if figures.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
