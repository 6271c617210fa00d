"""A log line that may repeat at most once per period (floods of bad input must not flood the log)."""

from __future__ import annotations

import time
from typing import Callable


class RateLimit:
    """``ready()`` is True at most once per ``period_s``; ``suppressed`` counts the Falses since."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.clock = clock
        self.suppressed = 0
        self._next = float("-inf")

    def ready(self) -> bool:
        now = self.clock()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self.period_s
        return True

    def take_suppressed(self) -> int:
        """Suppressed count since the last call (for an 'and N more' suffix)."""
        n, self.suppressed = self.suppressed, 0
        return n
