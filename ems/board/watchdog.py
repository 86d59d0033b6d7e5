"""The service watchdog: systemd restarts the controller when WATCHDOG=1 stops arriving.

The ping is not a sign of life of the process but of the fast loop: it is sent only while the fast loop
has completed a tick recently (`max_tick_age_s`) and no tick has overrun its period by more than
`max_overrun_s`. A loop that hangs (deadlock, a blocking call, a stuck device driver) or crawls stops the
pings, and systemd kills and restarts the service (WatchdogSec= in firmware/ems.service). The ping is
sent at half the watchdog period, as sd_watchdog_enabled(3) recommends.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ems.board.sdnotify import Notifier, watchdog_interval_s


@dataclass
class LoopWatchdog:
    notifier: Notifier
    period_s: float | None                 # systemd's watchdog period (None: no watchdog asked for)
    max_tick_age_s: float = 1.0            # the last completed fast tick must be this recent
    max_overrun_s: float = 0.5             # one tick taking longer than this is a sick loop
    clock: callable = time.monotonic
    last_tick_s: float | None = None
    last_ping_s: float = -1e18
    sick_reason: str = ""
    pings: int = 0
    missed: int = 0                        # pings withheld because the loop was not healthy

    @classmethod
    def from_env(cls, **kw) -> "LoopWatchdog":
        return cls(Notifier(), watchdog_interval_s(), **kw)

    def ready(self, status: str = "") -> None:
        self.notifier.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def tick_done(self, tick_duration_s: float) -> None:
        """Called by the fast loop after every tick."""
        now = self.clock()
        self.last_tick_s = now
        if tick_duration_s > self.max_overrun_s:
            self.sick_reason = f"tick took {tick_duration_s * 1000:.0f} ms"
        else:
            self.sick_reason = ""

    def healthy(self) -> tuple[bool, str]:
        now = self.clock()
        if self.last_tick_s is None:
            return False, "no fast tick yet"
        age = now - self.last_tick_s
        if age > self.max_tick_age_s:
            return False, f"last fast tick {age:.1f} s ago"
        if self.sick_reason:
            return False, self.sick_reason
        return True, ""

    def poll(self) -> bool:
        """Ping systemd if due and the loop is healthy; returns True when a ping was sent."""
        if self.period_s is None:
            return False
        now = self.clock()
        if now - self.last_ping_s < self.period_s / 2.0:
            return False
        ok, _ = self.healthy()
        if not ok:
            self.missed += 1
            return False
        if self.notifier.notify("WATCHDOG=1"):
            self.last_ping_s = now
            self.pings += 1
            return True
        return False

    def stopping(self) -> None:
        self.notifier.notify("STOPPING=1")
