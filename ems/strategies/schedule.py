"""Weekly windows (days + start/end in local time), parsed once from the config."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ems.config.fields import parse_days, parse_hhmm


@dataclass(frozen=True)
class Window:
    days: frozenset[int]
    start_min: int
    end_min: int

    @classmethod
    def of(cls, entry) -> "Window":
        return cls(parse_days(getattr(entry, "days", "all")), parse_hhmm(entry.start), parse_hhmm(entry.end))

    def contains(self, t: datetime) -> bool:
        minute = t.hour * 60 + t.minute
        return t.weekday() in self.days and self.start_min <= minute < self.end_min
