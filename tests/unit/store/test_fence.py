"""The Sentinels' vouching before a POST (``worker.store.fence.verdict``): pure, no servers."""

from __future__ import annotations

from typing import Any

from worker.store.fence import verdict

ME = "a" * 40


def named(run_id: str = ME, flags: str = "master") -> dict[str, Any]:
    return {"runid": run_id, "flags": flags}


def test_a_majority_naming_this_server_vouches_for_it() -> None:
    assert verdict([named(), named(), None], ME, 3).confirmed
    assert verdict([named()], ME, 1).confirmed


def test_a_minority_is_not_enough_even_if_the_others_are_silent() -> None:
    """A worker on the minority's side of a partition reaches only the Sentinels there."""
    found = verdict([named(), None, None], ME, 3)
    assert (
        not found.confirmed and found.why == "1 of 3 Sentinels vouch for this master (1 answered)"
    )
    assert not verdict([named(), named()], ME, 4).confirmed


def test_sentinels_naming_another_server_do_not_vouch() -> None:
    """The majority's side promoted a replica: its run_id is not this server's."""
    assert not verdict([named("b" * 40), named("b" * 40), named()], ME, 3).confirmed


def test_a_sentinel_that_holds_the_master_down_or_fails_it_over_does_not_vouch() -> None:
    for doubt in ("master,s_down", "master,s_down,o_down", "master,failover_in_progress"):
        assert not verdict([named(flags=doubt), named(flags=doubt), named()], ME, 3).confirmed
