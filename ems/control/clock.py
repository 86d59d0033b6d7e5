"""The injected clock: the same loops run in real time on the board and at full speed in simulation."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone


class RealClock:
    """Wall time for timestamps, the monotonic clock for periods (immune to clock steps)."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic_s(self) -> float:
        return time.monotonic()


class VirtualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("the virtual clock needs a time-zone-aware start time")
        self._start = start.astimezone(timezone.utc)
        self._elapsed_s = 0.0

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed_s)

    def monotonic_s(self) -> float:
        return self._elapsed_s

    def set_wall(self, when: datetime) -> None:
        """Step the wall clock to `when` (SCADA → EMS timing in a simulation); the periods do not move."""
        self._start += when.astimezone(timezone.utc) - self.now()

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"time only moves forward (got {seconds} s)")
        self._elapsed_s += seconds
