"""Schema building blocks: a field carries its default, range, unit and the manual it comes from."""
from __future__ import annotations

import dataclasses
import re
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def spec(default: Any, lo: float | None = None, hi: float | None = None, unit: str = "", doc: str = "",
         choices: tuple | None = None, max_items: int | None = None, item: type | None = None,
         str_ok: bool = False):
    """A dataclass field with its validation metadata. `item`: the dataclass of each list entry;
    `str_ok`: a list field that also takes a string (days = "weekdays")."""
    meta = dict(lo=lo, hi=hi, unit=unit, doc=doc, choices=choices, max_items=max_items, item=item, str_ok=str_ok)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls):
    """A config section: a nested dataclass, default-constructed."""
    return dataclasses.field(default_factory=cls, metadata=dict(section=True))


def parse_hhmm(text: str) -> int:
    """'HH:MM' → minutes after midnight; '24:00' is the end of the day."""
    if not isinstance(text, str) or not _HHMM.match(text):
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00–24:00)")
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def parse_days(days) -> frozenset[int]:
    """['mon', 'tue'] or 'all' / 'weekdays' / 'weekend' → weekday numbers (Monday = 0)."""
    named = {"all": DAYS, "weekdays": DAYS[:5], "weekend": DAYS[5:]}
    if isinstance(days, str):
        days = list(named.get(days, [days]))
    if not isinstance(days, (list, tuple)) or not days:
        raise ValueError(f"{days!r} is not a list of days ({', '.join(DAYS)}) or all/weekdays/weekend")
    out = set()
    for d in days:
        if d not in DAYS:
            raise ValueError(f"{d!r} is not a day ({', '.join(DAYS)})")
        out.add(DAYS.index(d))
    return frozenset(out)


def parse_mmdd(text: str) -> tuple[int, int]:
    """'MM-DD' → (month, day); 02-29 is allowed (a season boundary in leap years)."""
    import datetime

    if not isinstance(text, str) or len(text) != 5 or text[2] != "-":
        raise ValueError(f"{text!r} is not a day of the year MM-DD")
    try:
        datetime.date(2024, int(text[:2]), int(text[3:]))
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the year MM-DD") from None
    return int(text[:2]), int(text[3:])
