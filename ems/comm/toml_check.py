"""Checking a data file (a device profile) the way an installer needs it: every problem with the file and the line
of the key it concerns. Shared by the Modbus profile loader (ems.comm.profiles) and the CAN BMS profile loader
(ems.comm.can_profiles)."""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ProfileError(ValueError):
    def __init__(self, problems: list[tuple[str, int, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}:{line}: {msg}" for path, line, msg in problems))


def header_lines(lines: list[str], table: str) -> list[int]:
    """1-based lines of every `[table]` or `[[table]]` header."""
    pat = re.compile(rf"\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
    return [n for n, line in enumerate(lines, start=1) if pat.match(line)]


def key_line(lines: list[str], header: int, key: str) -> int:
    """The line of `key = …` inside the table whose header is on line `header` (else the header's line;
    header 0: the top of the file, before any table)."""
    for n in range(header, len(lines)):          # lines after the header (0-based index = line number)
        if re.match(r"\s*\[", lines[n]):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[n]):
            return n + 1
    return max(header, 1)


class Checker:
    """Collects problems of one file, each with the line of the key it concerns."""

    def __init__(self, path: Path, lines: list[str]):
        self.path, self.lines = str(path), lines
        self.problems: list[tuple[str, int, str]] = []

    def bad(self, line: int, msg: str) -> None:
        self.problems.append((self.path, line, msg))

    def unknown_keys(self, table: dict, known: set[str], header: int, where: str) -> None:
        for key in table:
            if key not in known:
                self.bad(key_line(self.lines, header, key),
                         f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")

    def number(self, raw: dict, key: str, header: int, where: str, default, lo=-math.inf, hi=math.inf,
               integer: bool = False, lo_open: bool = False):
        """raw[key] as a number within [lo, hi] ((lo, hi] with lo_open); the default (after a problem) otherwise."""
        if key not in raw:
            return default
        v = raw[key]
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if not ok or isinstance(v, bool) or (isinstance(v, float) and not math.isfinite(v)) \
                or not ((v > lo if lo_open else v >= lo) and v <= hi):
            what = "a whole number" if integer else "a number"
            rng = f" {'above' if lo_open else 'from'} {lo:g}" if lo > -math.inf else ""
            rng += f" up to {hi:g}" if hi < math.inf else ""
            self.bad(key_line(self.lines, header, key), f"{where}: {key} must be {what}{rng}, got {v!r}")
            return default
        return v


def read_profile_toml(path: Path) -> tuple[dict, list[str]]:
    text = path.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text), text.splitlines()
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = getattr(exc, "lineno", None) or (int(m.group(1)) if m else 0)
        raise ProfileError([(str(path), line, f"TOML syntax: {exc}")]) from None


