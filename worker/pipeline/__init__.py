"""The pipeline: what the Celery tasks in ``tasks/`` call.

Three parts, composed around one ``Mover`` (``mover.py``, the only way a part changes a job):

- ``issue.Issuer``: POST a grant once; a POST whose answer leaves its outcome unknown is
  settled by its ``unknown.Resolver`` before any other is sent (``outcome.py`` says when a
  listing's silence proves a POST did not apply);
- ``confirm.Confirmer``: the sweeps that read the providers' listings and confirm what they
  show (``lag.py`` learns how late a listing shows a credit);
- ``reconcile.Reconciler``: re-drive the work nobody is doing.

``Pipeline`` builds them and is the one object a worker process holds (``app.runtime``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from worker.app.scheduler import Scheduler
from worker.domain.grant import Provider
from worker.pipeline.confirm import Confirmer
from worker.pipeline.issue import Issuer
from worker.pipeline.lag import LearnedLag
from worker.pipeline.mover import Budget, Mover, Policy
from worker.pipeline.reconcile import Reconciler
from worker.pipeline.results import Result
from worker.providers.base import ProviderClient
from worker.providers.matching import MatchWindow
from worker.store.jobs import JobStore

__all__ = ["Pipeline", "Policy", "Result"]


class Pipeline:
    """Issue, confirm and reconcile, sharing one mover and one learned lag."""

    def __init__(
        self,
        store: JobStore,
        scheduler: Scheduler,
        clients: Callable[[Provider], ProviderClient],
        policy: Policy,
        budgets: Callable[[Provider], Budget | None] = lambda _: None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        window: MatchWindow | None = None,
    ) -> None:
        self.mover = Mover(store, scheduler, policy, budgets, clock=clock, sleep=sleep, rng=rng)
        self.lag = LearnedLag(store, policy.first_poll, policy.poll_max, clock, policy.batch)
        self.confirmer = Confirmer(self.mover, clients, self.lag, window or MatchWindow())
        self.issuer = Issuer(self.mover, clients, self.confirmer, self.lag)
        self.reconciler = Reconciler(self.mover)

    @property
    def policy(self) -> Policy:
        return self.mover.policy

    def issue(self, message: Mapping[str, Any]) -> Result:
        """One issue message: see ``Issuer.issue``."""
        return self.issuer.issue(message)

    def confirm(self, provider: str, customer_id: str, token: str = "") -> str:
        """One confirmation sweep: see ``Confirmer.confirm``."""
        return self.confirmer.confirm(provider, customer_id, token)

    def reconcile(self, limit: int = 500) -> int:
        """One reconcile pass: see ``Reconciler.reconcile``."""
        return self.reconciler.reconcile(limit)
