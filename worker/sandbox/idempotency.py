"""Chargebee's idempotency record: a key remembers its request and its answer for 30 minutes.

Only answers of requests that took effect are recorded (a credit applied, even
if a fault then hid the answer from the client): a call refused before it ran
(validation, 429, 503, an injected 500) leaves the key free, so the retry runs.
Lookup, the write and the record happen under one lock, so two concurrent
requests with one key apply once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from worker.sandbox.wire import Reply


class Verdict(Enum):
    FRESH = "fresh"  # ran now
    REPLAYED = "replayed"  # same key, same request: the recorded reply, nothing applied
    CONFLICT = "conflict"  # same key, different request: refused


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reply: Reply | None  # None for CONFLICT


@dataclass(frozen=True)
class _Record:
    fingerprint: str
    reply: Reply
    expires_at: float


class IdempotencyStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}

    def run_once(
        self, key: str, fingerprint: str, ttl: float, action: Callable[[], tuple[Reply, bool]]
    ) -> Outcome:
        """Run ``action`` (returning the reply and whether it took effect) unless ``key``
        already has a live record. Keep ``action`` quick: it runs under the lock."""
        with self._lock:
            now = self._clock()
            record = self._records.get(key)
            if record is not None and record.expires_at <= now:
                del self._records[key]
                record = None
            if record is not None:
                if record.fingerprint != fingerprint:
                    return Outcome(Verdict.CONFLICT, None)
                return Outcome(Verdict.REPLAYED, record.reply)
            reply, took_effect = action()
            if took_effect and ttl > 0:
                self._records[key] = _Record(fingerprint, reply, now + ttl)
            return Outcome(Verdict.FRESH, reply)

    def expire_all(self) -> int:
        """Forget every record now, as if the 30 minutes had passed, and say how many there
        were live: lets a test reach "the same key applies again" without waiting half an hour."""
        with self._lock:
            now = self._clock()
            live = sum(1 for record in self._records.values() if record.expires_at > now)
            self._records.clear()
            return live

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
