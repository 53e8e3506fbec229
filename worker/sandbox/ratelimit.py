"""A sliding-window request budget, the way providers throttle an account.

Both providers state budgets per minute and count every call; a sliding log of
admitted call times is exact for that and small at these rates. Refused calls
are not logged, so a client that backs off as told gets through again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """Admit at most ``limit`` calls in any ``window`` seconds (limit and window per call,
    so the sandbox can be reconfigured while running)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: deque[float] = deque()

    def admit(self, limit: int, window: float) -> float | None:
        """None if the call may proceed (and it is counted), else seconds until it could."""
        with self._lock:
            now = self._clock()
            while self._admitted and self._admitted[0] <= now - window:
                self._admitted.popleft()
            if len(self._admitted) < limit:
                self._admitted.append(now)
                return None
            # The oldest call leaves the window at admitted[-limit] + window.
            return max(self._admitted[-limit] + window - now, 0.0)

    def reset(self) -> None:
        with self._lock:
            self._admitted.clear()
