"""The adversarial benchmark's most important cases, in this process at the quick size.

``benchmarks/adversarial.py`` runs each case against real parts (a private redis-server,
the sandbox, real worker and beat processes at the default request budgets) and judges it:
one credit of its own per key and confirmed by that very entry, or the DLQ with an honest
reason and no credit. Here the cases the issue ranks first run once for the module (about
80 s) and each must come out OK; the table prints with ``-n 0 -s`` or on a failure.
"""

from __future__ import annotations

import pytest

from benchmarks import adversarial
from benchmarks.adversarial import Result

pytestmark = pytest.mark.integration

CASES = [
    "livelock",
    "lag_past_settle",
    "persons_credit_echoed",
    "persons_credit_no_echo",
    "persons_credit_chargebee",
    "deep_listing",
    "oldest_first",
    "refusal_after_unknown",
    "lost_redis",
    "duplicate_alarm",
]


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    done = adversarial.run(CASES, quick=True, out=lambda line: print(line, flush=True))
    print("\n" + adversarial.table(done.results), flush=True)
    print(f"{len(done.results)} cases in {done.seconds:.0f} s; worker logs in {done.logs}")
    return {result.name: result for result in done.results}


@pytest.mark.parametrize("name", CASES)
def test_the_case_ends_truthfully(results: dict[str, Result], name: str) -> None:
    result = results[name]
    assert result.verdict == "OK", "\n".join(
        [f"{name}: {result.verdict}", *result.problems, *result.notes, *result.stories]
    )
