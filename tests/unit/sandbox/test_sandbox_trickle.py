"""How a trickle fault cuts a body: enough pieces, small gaps, the same JSON value."""

from __future__ import annotations

import json

import pytest

from worker.sandbox.trickle import STEP_SECONDS, gap, pieces


def test_long_body_is_cut_into_one_piece_per_step_and_kept_whole() -> None:
    body = b"x" * 1000
    cut = pieces(body, "text/plain", 2.0)
    assert len(cut) == 10 and b"".join(cut) == body
    assert max(len(piece) for piece in cut) - min(len(piece) for piece in cut) <= 1


def test_short_json_body_is_padded_so_every_step_has_a_byte() -> None:
    body = b'{"message":"ok","data":{}}'
    cut = pieces(body, "application/json", 30.0)
    assert len(cut) == 150 and all(cut)
    joined = b"".join(cut)
    assert joined.startswith(body) and json.loads(joined) == json.loads(body)


def test_short_body_of_another_type_is_not_padded() -> None:
    cut = pieces(b"<p>", "text/html", 30.0)
    assert cut == [b"<", b"p", b">"]


@pytest.mark.parametrize("hold", [0.0, 0.05, 0.2, 0.9, 61.0])
def test_the_gap_never_exceeds_a_step_for_json(hold: float) -> None:
    cut = pieces(b"{}", "application/json", hold)
    assert gap(hold, len(cut)) <= STEP_SECONDS
    assert gap(hold, len(cut)) * len(cut) == pytest.approx(hold)


def test_an_empty_body_is_one_empty_piece() -> None:
    assert pieces(b"", "text/plain", 1.0) == [b""]
    assert gap(1.0, 0) == 0.0
