"""Device profiles: a Modbus register map as a TOML file in drivers/modbus/<kind>/<model>.toml.

Adding a device model is adding a file. A profile is validated when it is loaded: every problem (unknown
type, unit or key, overlapping registers, a writable register without range, a group that is not defined
…) is reported with the file and the line of the register it concerns.

SunSpec devices: `[device] sunspec_chain = [1, 701, …]` names the models in the order the device serves
them, and a register gives `point = "704.WSet"` instead of an address: address, type, unit, the
not-implemented marker and the scale-factor register come from pysunspec2's model definitions
(`sunspec_layout`). The loader adds the chain's identifying registers (the 'SunS' marker, each model's ID
and length, the end marker, group "sunspec"); the engine reads and writes nothing else on the device until
they match (`Profile.expected`), so a device with another model chain is never written at wrong addresses.
`[device.init_writes]` lists values written once after every connect (e.g. SunSpec's WSetEna).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ems.comm.registers import TYPES, WORD_ORDERS, Register
from ems.comm.sunspec_layout import REGISTER_TYPES as SUNSPEC_TYPES
from ems.comm.sunspec_layout import UNITS as SUNSPEC_UNITS
from ems.comm.sunspec_layout import chain as sunspec_chain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

UNITS = {"", "W", "kW", "var", "kvar", "VA", "kVA", "V", "A", "Hz", "Wh", "kWh", "varh", "kvarh", "%", "degC", "s",
         "ms", "min", "Ah", "kOhm", "pf"}
KINDS = ("meter", "pcs", "pv_inverter", "air_conditioner", "dcdc", "sts", "ems")
REGISTER_KEYS = {"name", "address", "function", "type", "unit", "scale", "offset", "word_order", "group",
                 "max_age_s", "invalid", "writable", "min", "max", "description", "point", "scale_factor"}
SUNSPEC_GROUP_MS = 60_000.0      # the chain's identity is re-read every minute (a swapped device is noticed)


class ProfileError(ValueError):
    def __init__(self, problems: list[tuple[str, int, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}:{line}: {msg}" for path, line, msg in problems))


@dataclass
class Profile:
    path: str
    kind: str
    vendor: str
    model: str
    groups: dict[str, float]                     # name → poll interval, ms
    registers: dict[str, Register] = field(default_factory=dict)
    merge_gap: int = 0          # unused registers a merged read may span (0: only adjacent registers merge)
    max_block: int = 125        # registers per read request (Modbus allows 125; some devices take fewer)
    init_writes: dict[str, float] = field(default_factory=dict)   # written once after every connect
    expected: dict[str, int] = field(default_factory=dict)        # register → value that identifies the device

    def block(self, group: str, function: int) -> list[Register]:
        return sorted((r for r in self.registers.values() if r.group == group and r.function == function),
                      key=lambda r: r.address)


def _register_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), start=1) if re.match(r"\s*\[\[\s*register\s*\]\]", line)]


def _key_line(lines: list[str], header: int, key: str) -> int:
    """The line of `key = …` inside the table whose header is on line `header` (else the header's line)."""
    for n in range(header, len(lines)):          # lines after the header (0-based index = line number)
        if re.match(r"\s*\[", lines[n]):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[n]):
            return n + 1
    return header


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = getattr(exc, "lineno", None) or (int(m.group(1)) if m else 0)
        raise ProfileError([(str(path), line, f"TOML syntax: {exc}")]) from None
    problems: list[tuple[str, int, str]] = []

    def bad(line: int, msg: str) -> None:
        problems.append((str(path), line, msg))

    dev = data.get("device", {})
    kind = dev.get("kind")
    if kind not in KINDS:
        bad(1, f"[device] kind {kind!r} must be one of {', '.join(KINDS)}")
    default_order = dev.get("word_order", "big")
    if default_order not in WORD_ORDERS:
        bad(1, f"[device] word_order {default_order!r} must be big or little")
    merge_gap, max_block = dev.get("merge_gap", 0), dev.get("max_block", 125)
    if not isinstance(merge_gap, int) or not 0 <= merge_gap <= 100:
        bad(1, f"[device] merge_gap {merge_gap!r} must be an integer 0 … 100")
        merge_gap = 0
    if not isinstance(max_block, int) or not 2 <= max_block <= 125:
        bad(1, f"[device] max_block {max_block!r} must be an integer 2 … 125")
        max_block = 125
    layout = None
    if "sunspec_chain" in dev:
        try:
            layout = sunspec_chain([int(m) for m in dev["sunspec_chain"]])
        except (KeyError, TypeError, ValueError) as exc:
            bad(1, f"[device] sunspec_chain {dev['sunspec_chain']!r}: not a list of SunSpec model IDs ({exc})")
    groups = {}
    for name, g in data.get("groups", {}).items():
        ms = g.get("interval_ms") if isinstance(g, dict) else None
        if not isinstance(ms, (int, float)) or not 1 <= ms <= 3_600_000:
            bad(1, f"[groups] {name}: interval_ms must be 1 … 3600000")
        else:
            groups[name] = float(ms)
    headers = _register_lines(text)
    text_lines = text.splitlines()
    regs: dict[str, Register] = {}
    for i, raw in enumerate(data.get("register", [])):
        line = headers[i] if i < len(headers) else 0

        def at(key: str, header=line) -> int:
            return _key_line(text_lines, header, key)

        for key in raw:
            if key not in REGISTER_KEYS:
                bad(at(key), f"register {raw.get('name', i)}: unknown key {key!r}")
        if "point" in raw:
            raw = _sunspec_register(raw, layout, lambda msg: bad(at("point"), msg))
            if raw is None:
                continue
        name, typ, unit = raw.get("name"), raw.get("type"), raw.get("unit", "")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            bad(at("name"), f"register name {name!r} must be lower_snake_case")
            continue
        if name in regs:
            bad(line, f"register {name}: defined twice (first at line {regs[name].line})")
            continue
        if typ not in TYPES:
            bad(at("type"), f"register {name}: type {typ!r} must be one of {', '.join(TYPES)}")
            continue
        if unit not in UNITS:
            bad(at("unit"), f"register {name}: unknown unit {unit!r} (known: {', '.join(sorted(u for u in UNITS if u))})")
        address, function = raw.get("address"), raw.get("function", 3)
        if not isinstance(address, int) or not 0 <= address <= 0xFFFF - TYPES[typ][0] + 1:
            bad(at("address"), f"register {name}: address {address!r} must be 0 … 65535 (and fit its {typ})")
            continue
        if function not in (3, 4):
            bad(at("function"), f"register {name}: function {function!r} must be 3 (holding) or 4 (input)")
            continue
        scale = raw.get("scale", 1.0)
        if not isinstance(scale, (int, float)) or scale == 0 or not math.isfinite(scale):
            bad(at("scale"), f"register {name}: scale must be a non-zero number")
            continue
        group = raw.get("group", "slow")
        if group not in groups:
            bad(at("group"), f"register {name}: group {group!r} is not defined in [groups]")
        writable = bool(raw.get("writable", False))
        lo, hi = raw.get("min"), raw.get("max")
        if writable and (function != 3 or not isinstance(lo, (int, float)) or not isinstance(hi, (int, float))
                         or lo > hi):
            bad(line, f"register {name}: a writable register needs function 3 and a write range min ≤ max")
        order = raw.get("word_order", default_order)
        if order not in WORD_ORDERS:
            bad(at("word_order"), f"register {name}: word_order {order!r} must be big or little")
            order = "big"
        regs[name] = Register(name, address, function, typ, unit, float(scale), float(raw.get("offset", 0.0)),
                              order, group, float(raw.get("max_age_s", 10.0)), raw.get("invalid"), writable,
                              lo, hi, line, str(raw.get("description", "")), raw.get("scale_factor"))
    expected: dict[str, int] = {}
    if layout is not None:
        groups.setdefault("sunspec", SUNSPEC_GROUP_MS)
        for hname, (address, words, value) in layout.headers().items():
            regs[hname] = Register(hname, address, 3, "u32" if words == 2 else "u16", "", group="sunspec",
                                   max_age_s=3 * SUNSPEC_GROUP_MS / 1000.0, description="SunSpec chain identity")
            expected[hname] = value
    for r in regs.values():
        sf = regs.get(r.scale_factor) if r.scale_factor else None
        if r.scale_factor and (sf is None or sf.type != "s16" or sf.function != r.function or sf.scale_factor):
            bad(r.line, f"register {r.name}: scale_factor {r.scale_factor!r} must name an s16 register of the "
                        f"same function without a scale factor of its own")
    init_writes = dev.get("init_writes", {})
    for n, v in init_writes.items() if isinstance(init_writes, dict) else ():
        r = regs.get(n)
        try:
            if r is None:
                raise ValueError(f"{n!r} is not a register of this profile")
            r.check(v)
        except ValueError as exc:
            bad(1, f"[device.init_writes] {exc}")
    by_function: dict[int, list[Register]] = {}
    for r in regs.values():
        by_function.setdefault(r.function, []).append(r)
    for function, rs in by_function.items():
        rs.sort(key=lambda r: r.address)
        for a, b in zip(rs, rs[1:]):
            if b.address < a.address + a.count:
                bad(b.line, f"register {b.name} (address {b.address}) overlaps {a.name} "
                            f"(address {a.address}, {a.count} register(s), line {a.line})")
    if problems:
        raise ProfileError(problems)
    return Profile(str(path), kind, dev.get("vendor", ""), dev.get("model", path.stem), groups, regs, merge_gap,
                   max_block, {n: float(v) for n, v in init_writes.items()}, expected)


def _sunspec_register(raw: dict, layout, bad) -> dict | None:
    """A `point = "model.Point"` register filled in from the SunSpec chain (explicit keys still win,
    e.g. a unit in our own terms); None (after reporting) when the point cannot be resolved."""
    if layout is None:
        bad("a SunSpec point needs [device] sunspec_chain")
        return None
    try:
        mid, pname = str(raw["point"]).split(".", 1)
        p = layout.points[(int(mid), pname)]
    except (ValueError, KeyError):
        bad(f"point {raw['point']!r} is not a point of the chain's models (model.Point, e.g. 704.WSet)")
        return None
    if p.type not in SUNSPEC_TYPES:
        bad(f"point {raw['point']!r}: SunSpec type {p.type} is not supported in profiles")
        return None
    typ, invalid = SUNSPEC_TYPES[p.type]
    out = {"address": p.address, "function": 3, "type": typ, "unit": SUNSPEC_UNITS.get(p.units, ""),
           "word_order": "big"}
    if invalid is not None:
        out["invalid"] = invalid
    if p.sf:
        out["scale_factor"] = raw.get("scale_factor") or f"m{mid}_{p.sf.lower()}"
    out.update({k: v for k, v in raw.items() if k != "point"})
    return out


def shipped_profiles() -> dict[str, Profile]:
    """Every Modbus profile shipped in drivers/modbus, by model."""
    out: dict[str, Profile] = {}
    root = resources.files("ems.drivers").joinpath("modbus")
    for kind_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if not kind_dir.is_dir():
            continue
        for f in sorted(kind_dir.iterdir(), key=lambda p: p.name):
            if f.name.endswith(".toml"):
                p = load_profile(Path(str(f)))
                if p.model in out:
                    raise ProfileError([(p.path, 1, f"model {p.model} already defined in {out[p.model].path}")])
                out[p.model] = p
    return out
