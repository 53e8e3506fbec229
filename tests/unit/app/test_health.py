"""beat's health: the age of the last reconcile pass, which beat schedules and a worker runs."""

from __future__ import annotations

from worker.app.health import beat_alive
from worker.store.jobs import JobStore


def test_beat_is_alive_while_reconcile_passes_keep_arriving(store: JobStore) -> None:
    assert beat_alive(store, 15.0, 1000.0) == (False, "no reconcile pass has run yet")
    store.mark_reconciled(1000.0)
    assert beat_alive(store, 15.0, 1030.0)[0] is True
    ok, why = beat_alive(store, 15.0, 1071.0)
    assert not ok and why == "the last reconcile pass ran 71s ago (more than 70s)"
