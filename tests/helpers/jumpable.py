"""A lab clock's source that a test moves ahead at once: a long wait in the lab, none in the test."""
from __future__ import annotations

import time


class Jumpable:
    """Real monotonic time that a test can move ahead at once (to see what a long wait does)."""

    def __init__(self) -> None:
        self._time = time.monotonic
        self.ahead = 0.0

    def __call__(self) -> float:
        return self._time() + self.ahead
