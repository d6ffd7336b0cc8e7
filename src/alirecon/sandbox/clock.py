"""A simulated clock for the sandbox provider: frozen by default, or running at a chosen speed.

Why: the sandbox publishes and deletes files by the provider's schedule (a week of days, a 7-day
retention), which no test or demo can wait for in real time. Tests freeze the clock and move it by hand;
``alirecon sandbox serve --speed X`` lets it run X times faster than real time. The server and the code
under test read the same clock, from any thread.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

__all__ = ["SimClock"]


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"simulated time needs an aware datetime, got {dt!r}")
    return dt.astimezone(UTC)


class SimClock:
    """Simulated time: ``now()`` is ``start`` plus ``speed`` times the real time elapsed since then.

    ``speed`` 0 (the default) freezes the clock, so only ``set`` and ``advance`` move it. Thread-safe:
    the sandbox server reads it on its own event loop while a test or the CLI moves it.
    """

    def __init__(self, start: datetime | None = None, *, speed: float = 0.0) -> None:
        if speed < 0:
            raise ValueError(f"clock speed must be >= 0, got {speed}")
        self._lock = threading.Lock()
        self._speed = float(speed)
        self._anchor = _utc(start) if start is not None else datetime.now(UTC)
        self._anchor_real = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        """The simulated time, an aware UTC datetime."""
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> datetime:
        if not self._speed:
            return self._anchor
        return self._anchor + timedelta(seconds=(time.monotonic() - self._anchor_real) * self._speed)

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (aware); a running clock keeps running from there."""
        when = _utc(when)
        with self._lock:
            self._anchor, self._anchor_real = when, time.monotonic()

    def advance(self, delta: timedelta) -> datetime:
        """Move simulated time by ``delta`` (may be negative) and return the new time."""
        with self._lock:
            self._anchor, self._anchor_real = self._now_locked() + delta, time.monotonic()
            return self._anchor

    def __repr__(self) -> str:
        return f"SimClock({self.now().isoformat()}, speed={self._speed:g})"
