"""No provider call or Redis command loses its socket to another thread (issue 20).

benchmarks/fd_stress.py at a small size, in this process: 32 threads share one provider
client (a share of their calls ended by a deadline mid-call) while others use Redis and the
worker's broker transport, and the private Redis drops every connection twice a second.
Before the pool guard, httpcore closed about one in 5,000 calls' sockets under them; the
deterministic proof of the guard is tests/unit/providers/test_pool_guard.py.
"""

from __future__ import annotations

import pytest

from benchmarks.fd_stress import Options, run

pytestmark = pytest.mark.integration

SMALL = Options(
    requests=4000,
    threads=32,
    latency=0.0,
    deadline_share=0.05,
    redis_threads=4,
    kill_every=0.5,
    without_guard=False,
    seconds_max=25.0,
)


def test_no_thread_closes_a_socket_another_is_using() -> None:
    # Its own Redis (not the tests' shared one): dropping every client is harmless there.
    figures = run(SMALL)
    report = "\n".join(figures.lines())
    assert figures.ebadf == 0, report
    assert figures.crossed == 0, report
    assert figures.requests >= SMALL.requests, report
    assert figures.redis_ops > 0 and figures.broker_acks > 0, report
    assert "the run did not end by --seconds-max" not in figures.errors, report
