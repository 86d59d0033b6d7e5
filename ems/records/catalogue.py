"""The alarm catalogue: `alarm_codes.toml` loaded, checked and looked up.

Everything about a code (name, description, status, level, cloud level, remedy) lives in that one file;
the controller, the records and the CLI look it up here. A code that is raised but not in the catalogue
is still recorded (a BMS may report a code we have never seen) and shows as "unknown code".
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STATUSES = ("event", "warning", "fault")
LEVELS = ("mild", "moderate", "severe")
CLOUD_LEVELS = ("urgent", "important", "common", "prompt")
SOURCES = ("EMS", "PCS", "BMS", "ems-own")


@dataclass(frozen=True)
class AlarmCode:
    code: int
    source: str
    name: str
    description: str
    status: str          # event | warning | fault
    level: str           # mild | moderate | severe
    cloud: str           # urgent | important | common | prompt
    remedy: str


class CatalogueError(ValueError):
    pass


class Catalogue:
    def __init__(self, entries: dict[int, AlarmCode]):
        self.entries = entries

    def __contains__(self, code: int) -> bool:
        return code in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, code: int) -> AlarmCode:
        """The entry of `code`; an unknown code gets a stand-in (fault, severe) so it is never hidden."""
        e = self.entries.get(code)
        if e is None:
            return AlarmCode(code, "unknown", f"code_{code}", "unknown code (not in the catalogue)", "fault",
                             "severe", "urgent", "Contact the installer or the EMS supplier with this code.")
        return e

    def name(self, code: int) -> str:
        return self.get(code).name

    def codes(self, status: str | None = None, level: str | None = None) -> list[int]:
        return sorted(c for c, e in self.entries.items()
                      if (status is None or e.status == status) and (level is None or e.level == level))


def parse(text: str, source: str = "alarm_codes.toml") -> Catalogue:
    """Parse and check a catalogue; every problem is reported with the code it belongs to."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{source}: {exc}") from None
    problems: list[str] = []
    levels, cloud = raw.get("levels", {}), raw.get("cloud", {})
    for st in STATUSES:
        if levels.get(st) not in LEVELS:
            problems.append(f"[levels] {st} must be one of {', '.join(LEVELS)}")
    for key in LEVELS + ("event",):
        if cloud.get(key) not in CLOUD_LEVELS:
            problems.append(f"[cloud] {key} must be one of {', '.join(CLOUD_LEVELS)}")
    entries: dict[int, AlarmCode] = {}
    for i, e in enumerate(raw.get("code", [])):
        where = f"code[{i}] ({e.get('code', '?')})"
        code = e.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or not 0 < code < 2**31:
            problems.append(f"{where}: code must be a positive whole number")
            continue
        if code in entries:
            problems.append(f"{where}: code {code} appears twice")
        unknown = set(e) - {"code", "source", "name", "description", "status", "level", "remedy"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("name", "description", "remedy"):
            if not isinstance(e.get(key), str) or not e[key].strip():
                problems.append(f"{where}: {key} must be a non-empty string")
        if e.get("source") not in SOURCES:
            problems.append(f"{where}: source must be one of {', '.join(SOURCES)}")
        status = e.get("status")
        if status not in STATUSES:
            problems.append(f"{where}: status must be one of {', '.join(STATUSES)}")
            continue
        level = e.get("level", levels.get(status))
        if level not in LEVELS:
            problems.append(f"{where}: level must be one of {', '.join(LEVELS)}")
            continue
        entries[code] = AlarmCode(code, e.get("source", ""), e.get("name", ""), e.get("description", ""), status,
                                  level, cloud.get("event" if status == "event" else level, ""), e.get("remedy", ""))
    names = [a.name for a in entries.values()]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"name {n!r} is used by more than one code")
    if problems:
        raise CatalogueError(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))
    return Catalogue(entries)


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The shipped catalogue (loaded once)."""
    text = resources.files("ems.records").joinpath("alarm_codes.toml").read_text(encoding="utf-8")
    return parse(text)
