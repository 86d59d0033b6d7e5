"""The clock of a running site: wall time for schedules and timestamps, the monotonic clock for periods."""
from __future__ import annotations

import time
from datetime import datetime, timezone


class SiteClock:
    """The system's wall time (a step by NTP, `ems clock set` or SCADA → EMS timing reaches the schedules at
    once) and the monotonic clock for every period (which never jumps). `set_wall` sets the system clock
    through `set_system` (ems.board.maintenance.set_clock); without it, setting is refused."""

    def __init__(self, set_system=None):
        self._t0 = time.monotonic()
        self._set_system = set_system

    def monotonic_s(self) -> float:
        return time.monotonic() - self._t0

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def set_wall(self, when: datetime) -> None:
        """Step the wall clock to `when`; raises (PermissionError, ValueError) when the system refuses."""
        if self._set_system is None:
            raise PermissionError("this run does not set the system clock")
        self._set_system(when)
