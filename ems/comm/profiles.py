"""Device profiles: a Modbus register map as a TOML file in drivers/modbus/<kind>/<model>.toml.

Adding a device model is adding a file: shipped in the package, or in the site's own folder
(`[devices] profiles_dir`, by default `drivers/` beside the site file: `/etc/ems/drivers/modbus/…` on a board),
which is read next to the shipped ones so an installer adds a device without rebuilding a signed bundle.

A profile is validated when it is loaded: every problem (an unknown key anywhere, an unknown type, unit or
group, overlapping registers, a writable register without range, an age that is not a positive number …)
is reported with the file and the line of the key it concerns.

SunSpec devices: `[device] sunspec_chain = [1, 701, …]` names the models in the order the device serves
them, and a register gives `point = "704.WSet"` instead of an address: address, type, unit, the
not-implemented marker and the scale-factor register come from pysunspec2's model definitions
(`sunspec_layout`). The loader adds the chain's identifying registers (the 'SunS' marker, each model's ID
and length, the end marker, group "sunspec"); the engine reads and writes nothing else on the device until
they match (`Profile.expected`), so a device with another model chain is never written at wrong addresses.
Models with repeating groups (the DER trip curves 707–710) need `sunspec_counts = { 707 = { NPt = 2,
NCrvSet = 2 } }` as the device reports them; those counts are part of the identity too. `[sunspec_trip]`
makes the registers of the trip curves that carry the PCS's grid protection (`ems.comm.sunspec_trip`).
`[device.init_writes]` lists values written once after every connect (e.g. SunSpec's WSetEna).

Status and fault words: a register may name its bits (`flags = { running = 0, grid_forming = 3 }`) and map
bits to the alarm catalogue's codes (`alarm_bits = { 0 = 100117 }`: the PCS's fault word raises the manual's
PCS code with its remedy). BMS profiles (kind "bms") add per-cluster `[[array]]`s (cluster values, cells),
decoded as blocks (ems.comm.modbus_client).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ems.comm.registers import TYPES, WORD_ORDERS, Register
from ems.comm.toml_check import Checker, ProfileError, header_lines, key_line, read_profile_toml
from ems.comm.sunspec_layout import REGISTER_TYPES as SUNSPEC_TYPES
from ems.comm.sunspec_layout import UNITS as SUNSPEC_UNITS
from ems.comm import sunspec_trip
from ems.comm.sunspec_layout import chain as sunspec_chain

UNITS = {"", "W", "kW", "var", "kvar", "VA", "kVA", "V", "A", "Hz", "Wh", "kWh", "varh", "kvarh", "%", "degC", "s",
         "ms", "min", "Ah", "kOhm", "pf"}
KINDS = ("meter", "pcs", "pv_inverter", "air_conditioner", "dcdc", "sts", "ems", "bms", "io_module")
TOP_KEYS = {"device", "groups", "register", "array", "sunspec_trip"}
DEVICE_KEYS = {"kind", "vendor", "model", "word_order", "merge_gap", "max_block", "sunspec_chain", "sunspec_counts",
               "init_writes", "description"}
REGISTER_KEYS = {"name", "address", "function", "type", "unit", "scale", "offset", "word_order", "group",
                 "max_age_s", "invalid", "writable", "min", "max", "description", "point", "scale_factor", "flags",
                 "alarm_bits"}
ARRAY_KEYS = {"name", "address", "function", "type", "unit", "scale", "offset", "count", "cluster_stride", "bit",
              "invalid", "group", "max_age_s", "description"}
SUNSPEC_GROUP_MS = 60_000.0      # the chain's identity is re-read every minute (a swapped device is noticed)


@dataclass(frozen=True)
class ArraySpec:
    """A per-cluster block of values (a BMS's cluster values or its cells): cluster c's first element is at
    `address + c × cluster_stride`; `count` elements ("cells": the site's cells per cluster)."""
    name: str
    address: int
    function: int
    type: str
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    count: int | str = 1
    cluster_stride: int = 0
    bit: int | None = None            # a flag: bit `bit` of each element's word
    invalid: int | None = None
    group: str = "slow"
    max_age_s: float = 10.0
    line: int = 0
    description: str = ""

    @property
    def words(self) -> int:
        return TYPES[self.type][0]

    def elements(self, cells: int) -> int:
        return cells if self.count == "cells" else int(self.count)


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
    arrays: dict[str, ArraySpec] = field(default_factory=dict)    # per-cluster blocks (BMS)

    def block(self, group: str, function: int) -> list[Register]:
        return sorted((r for r in self.registers.values() if r.group == group and r.function == function),
                      key=lambda r: r.address)

    def flag(self, name: str) -> tuple[Register, int] | None:
        """The status-word register and bit of a named flag (e.g. grid_forming), None if the device has none."""
        for r in self.registers.values():
            for n, bit in r.flags:
                if n == name:
                    return r, bit
        return None

    def alarm_registers(self) -> list[Register]:
        return [r for r in self.registers.values() if r.alarm_bits]

    def interval_s(self, name: str) -> float:
        """How often a register or array is polled, s."""
        r = self.registers.get(name) or self.arrays[name]
        return self.groups[r.group] / 1000.0


# ---------------------------------------------------------------------------------------------- loading
def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    data, lines = read_profile_toml(path)
    ck = Checker(path, lines)
    ck.unknown_keys(data, TOP_KEYS, 0, "top level")
    dev = data.get("device", {})
    dev_line = (header_lines(lines, "device") or [1])[0]
    if not isinstance(dev, dict):
        ck.bad(dev_line, "[device] must be a table")
        dev = {}
    ck.unknown_keys(dev, DEVICE_KEYS, dev_line, "[device]")
    kind = dev.get("kind")
    if kind not in KINDS:
        ck.bad(key_line(lines, dev_line, "kind"), f"[device] kind {kind!r} must be one of {', '.join(KINDS)}")
    for key in ("vendor", "model", "description"):
        if key in dev and not isinstance(dev[key], str):
            ck.bad(key_line(lines, dev_line, key), f"[device] {key} must be a string")
    default_order = dev.get("word_order", "big")
    if default_order not in WORD_ORDERS:
        ck.bad(key_line(lines, dev_line, "word_order"), f"[device] word_order {default_order!r} must be big or little")
        default_order = "big"
    merge_gap = ck.number(dev, "merge_gap", dev_line, "[device]", 0, 0, 100, integer=True)
    max_block = ck.number(dev, "max_block", dev_line, "[device]", 125, 2, 125, integer=True)
    layout = None
    if "sunspec_chain" in dev:
        counts = _sunspec_counts(dev.get("sunspec_counts", {}), ck, key_line(lines, dev_line, "sunspec_counts"))
        try:
            layout = sunspec_chain([int(m) for m in dev["sunspec_chain"]], counts=counts)
        except (KeyError, TypeError, ValueError) as exc:
            ck.bad(key_line(lines, dev_line, "sunspec_chain"),
                   f"[device] sunspec_chain {dev['sunspec_chain']!r}: not a list of SunSpec model IDs the "
                   f"device serves ({str(exc).strip(chr(34))})")
    elif "sunspec_counts" in dev:
        ck.bad(key_line(lines, dev_line, "sunspec_counts"), "[device] sunspec_counts needs sunspec_chain")
    groups = _groups(data.get("groups", {}), ck)
    regs = _registers(data.get("register", []), ck, layout, groups, default_order)
    if "sunspec_trip" in data:
        trip_line = (header_lines(lines, "sunspec_trip") or [1])[0]
        spec = data["sunspec_trip"]
        if layout is None or not isinstance(spec, dict):
            ck.bad(trip_line, "[sunspec_trip] must be a table, in a profile with sunspec_chain")
        else:
            raw, problems = sunspec_trip.profile_registers(spec, layout.counts)
            for msg in problems:
                ck.bad(trip_line, msg)
            for name, r in _registers(raw, ck, layout, groups, default_order, line=trip_line).items():
                if name in regs:
                    ck.bad(trip_line, f"[sunspec_trip] register {name}: also defined at line {regs[name].line}")
                regs.setdefault(name, r)
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
            ck.bad(r.line, f"register {r.name}: scale_factor {r.scale_factor!r} must name an s16 register of the "
                           f"same function without a scale factor of its own")
    init_writes = dev.get("init_writes", {})
    if not isinstance(init_writes, dict):
        ck.bad(key_line(lines, dev_line, "init_writes"), "[device] init_writes must be a table")
        init_writes = {}
    for n, v in init_writes.items():
        r = regs.get(n)
        try:
            if r is None:
                raise ValueError(f"{n!r} is not a register of this profile")
            r.check(v)
        except ValueError as exc:
            ck.bad((header_lines(lines, "device.init_writes") or [dev_line])[0], f"[device.init_writes] {exc}")
    arrays = _arrays(data.get("array", []), ck, groups, default_order)
    if arrays and kind != "bms":
        ck.bad(arrays[next(iter(arrays))].line, "[[array]] is for BMS profiles (kind = \"bms\")")
    _check_overlaps(regs, ck)
    if ck.problems:
        raise ProfileError(ck.problems)
    return Profile(str(path), kind, dev.get("vendor", ""), dev.get("model", path.stem), groups, regs, merge_gap,
                   max_block, {n: float(v) for n, v in init_writes.items()}, expected, arrays)


def _groups(raw, ck: Checker) -> dict[str, float]:
    line = (header_lines(ck.lines, "groups") or [1])[0]
    if not isinstance(raw, dict):
        ck.bad(line, "[groups] must be a table of name = { interval_ms = … }")
        return {}
    groups = {}
    for name, g in raw.items():
        at = key_line(ck.lines, line, name)
        if not isinstance(g, dict):
            ck.bad(at, f"[groups] {name}: must be {{ interval_ms = … }}")
            continue
        for key in g:
            if key != "interval_ms":
                ck.bad(at, f"[groups] {name}: unknown key {key!r} (known: interval_ms)")
        ms = g.get("interval_ms")
        if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not 1 <= ms <= 3_600_000:
            ck.bad(at, f"[groups] {name}: interval_ms must be a number 1 … 3600000, got {ms!r}")
        else:
            groups[name] = float(ms)
    return groups


def _sunspec_counts(raw, ck: Checker, line: int) -> dict[int, dict[str, int]]:
    """`sunspec_counts = { 707 = { NPt = 2, NCrvSet = 2 } }` → {707: {...}} (TOML keys are strings)."""
    out: dict[int, dict[str, int]] = {}
    if not isinstance(raw, dict):
        ck.bad(line, "[device] sunspec_counts must be a table of model = { Point = count }")
        return out
    for mid, counts in raw.items():
        if not str(mid).isdigit() or not isinstance(counts, dict):
            ck.bad(line, f"[device] sunspec_counts: {mid!r} = {counts!r} must be model = {{ Point = count }}")
            continue
        out[int(mid)] = dict(counts)
    return out


def _registers(raw_list, ck: Checker, layout, groups: dict, default_order: str,
               line: int | None = None) -> dict[str, Register]:
    """`line`: the line every register's problems are reported at (registers made from another table)."""
    headers = header_lines(ck.lines, "register") if line is None else []
    regs: dict[str, Register] = {}
    fixed = line
    for i, raw in enumerate(raw_list if isinstance(raw_list, list) else []):
        line = fixed if fixed is not None else (headers[i] if i < len(headers) else 0)

        def at(key: str, header=line) -> int:
            return key_line(ck.lines, header, key)

        if not isinstance(raw, dict):
            ck.bad(line, "[[register]] must be a table")
            continue
        where = f"register {raw.get('name', i)}"
        ck.unknown_keys(raw, REGISTER_KEYS, line, where)
        if "point" in raw:
            raw = _sunspec_register(raw, layout, lambda msg: ck.bad(at("point"), msg))
            if raw is None:
                continue
        name, typ, unit = raw.get("name"), raw.get("type"), raw.get("unit", "")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            ck.bad(at("name"), f"register name {name!r} must be lower_snake_case")
            continue
        where = f"register {name}"
        if name in regs:
            ck.bad(line, f"{where}: defined twice (first at line {regs[name].line})")
            continue
        if typ not in TYPES:
            ck.bad(at("type"), f"{where}: type {typ!r} must be one of {', '.join(TYPES)}")
            continue
        if unit not in UNITS:
            ck.bad(at("unit"), f"{where}: unknown unit {unit!r} (known: {', '.join(sorted(u for u in UNITS if u))})")
        address, function = raw.get("address"), raw.get("function", 3)
        if not isinstance(address, int) or isinstance(address, bool) or not 0 <= address <= 0xFFFF - TYPES[typ][0] + 1:
            ck.bad(at("address"), f"{where}: address {address!r} must be 0 … 65535 (and fit its {typ})")
            continue
        if function not in (3, 4) or isinstance(function, bool):
            ck.bad(at("function"), f"{where}: function {function!r} must be 3 (holding) or 4 (input)")
            continue
        scale = ck.number(raw, "scale", line, where, 1.0)
        if scale == 0:
            ck.bad(at("scale"), f"{where}: scale must be a non-zero number")
            continue
        offset = ck.number(raw, "offset", line, where, 0.0)
        max_age = ck.number(raw, "max_age_s", line, where, 10.0, 0.0, 86_400.0, lo_open=True)
        invalid = raw.get("invalid")
        if invalid is not None and (isinstance(invalid, bool) or not isinstance(invalid, (int, float))):
            ck.bad(at("invalid"), f"{where}: invalid must be the raw number that means 'not available'")
            invalid = None
        group = raw.get("group", "slow")
        if group not in groups:
            ck.bad(at("group"), f"{where}: group {group!r} is not defined in [groups]")
        writable = raw.get("writable", False)
        if not isinstance(writable, bool):
            ck.bad(at("writable"), f"{where}: writable must be true or false")
            writable = False
        lo = ck.number(raw, "min", line, where, None)
        hi = ck.number(raw, "max", line, where, None)
        if writable and (function != 3 or lo is None or hi is None or lo > hi):
            ck.bad(line, f"{where}: a writable register needs function 3 and a write range min ≤ max")
        order = raw.get("word_order", default_order)
        if order not in WORD_ORDERS:
            ck.bad(at("word_order"), f"{where}: word_order {order!r} must be big or little")
            order = "big"
        if "description" in raw and not isinstance(raw["description"], str):
            ck.bad(at("description"), f"{where}: description must be a string")
        flags = _bit_table(raw, "flags", typ, ck, at("flags"), where, lambda k, v: (
            isinstance(k, str) and re.fullmatch(r"[a-z][a-z0-9_]*", k) and isinstance(v, int)), "name = bit")
        alarm_bits = _bit_table(raw, "alarm_bits", typ, ck, at("alarm_bits"), where, None, "bit = code")
        regs[name] = Register(name, address, function, typ, unit, float(scale), float(offset), order, group,
                              float(max_age), invalid, writable, lo, hi, line, str(raw.get("description", "")),
                              raw.get("scale_factor"), flags, alarm_bits)
    return regs


def _bit_table(raw: dict, key: str, typ: str, ck: Checker, line: int, where: str, ok, form: str) -> tuple:
    """`flags = { name = bit }` → ((name, bit), …); `alarm_bits = { bit = code }` → ((bit, code), …), the codes
    checked against the alarm catalogue."""
    table = raw.get(key)
    if table is None:
        return ()
    bits = TYPES.get(typ, (1,))[0] * 16
    if not isinstance(table, dict) or typ not in ("u16", "u32"):
        ck.bad(line, f"{where}: {key} must be a table {{ {form} }} on a u16 or u32 register")
        return ()
    out = []
    if key == "flags":
        for name, bit in table.items():
            if not ok(name, bit) or isinstance(bit, bool) or not 0 <= bit < bits:
                ck.bad(line, f"{where}: flags {name} = {bit!r}: a lower_snake_case name and a bit 0 … {bits - 1}")
                continue
            out.append((name, bit))
        return tuple(out)
    from ems.records.catalogue import catalogue     # codes have one home: the alarm catalogue
    cat = catalogue()
    for bit, code in table.items():
        if not (isinstance(bit, str) and bit.isdigit() and int(bit) < bits):
            ck.bad(line, f"{where}: alarm_bits key {bit!r} must be a bit number 0 … {bits - 1}")
            continue
        if not isinstance(code, int) or isinstance(code, bool) or code not in cat:
            ck.bad(line, f"{where}: alarm_bits {bit} = {code!r} is not a code of the alarm catalogue")
            continue
        out.append((int(bit), code))
    return tuple(sorted(out))


def _arrays(raw_list, ck: Checker, groups: dict, default_order: str) -> dict[str, ArraySpec]:
    headers = header_lines(ck.lines, "array")
    out: dict[str, ArraySpec] = {}
    for i, raw in enumerate(raw_list if isinstance(raw_list, list) else []):
        line = headers[i] if i < len(headers) else 0
        if not isinstance(raw, dict):
            ck.bad(line, "[[array]] must be a table")
            continue
        name = raw.get("name")
        where = f"array {name if isinstance(name, str) else i}"
        ck.unknown_keys(raw, ARRAY_KEYS, line, where)
        at = lambda key: key_line(ck.lines, line, key)     # noqa: E731 - local shorthand
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in out:
            ck.bad(at("name"), f"{where}: name must be lower_snake_case and unique")
            continue
        typ = raw.get("type")
        if typ not in TYPES or typ == "float32":
            ck.bad(at("type"), f"{where}: type {typ!r} must be one of u16, s16, u32, s32")
            continue
        address = ck.number(raw, "address", line, where, None, 0, 0xFFFF, integer=True)
        function = raw.get("function", 3)
        if function not in (3, 4) or isinstance(function, bool):
            ck.bad(at("function"), f"{where}: function {function!r} must be 3 (holding) or 4 (input)")
            continue
        count = raw.get("count", 1)
        if count != "cells" and not (isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= 1024):
            ck.bad(at("count"), f"{where}: count must be \"cells\" (the site's cells per cluster) or 1 … 1024")
            continue
        stride = ck.number(raw, "cluster_stride", line, where, 0, 0, 0xFFFF, integer=True)
        bit = ck.number(raw, "bit", line, where, None, 0, TYPES[typ][0] * 16 - 1, integer=True)
        scale = ck.number(raw, "scale", line, where, 1.0)
        group = raw.get("group", "slow")
        if group not in groups:
            ck.bad(at("group"), f"{where}: group {group!r} is not defined in [groups]")
        unit = raw.get("unit", "")
        if unit not in UNITS:
            ck.bad(at("unit"), f"{where}: unknown unit {unit!r}")
        invalid = ck.number(raw, "invalid", line, where, None, integer=True)
        if address is None or scale == 0:
            continue
        out[name] = ArraySpec(name, address, function, typ, unit, float(scale),
                              float(ck.number(raw, "offset", line, where, 0.0)), count, stride, bit, invalid, group,
                              float(ck.number(raw, "max_age_s", line, where, 10.0, 0.0, 86_400.0, lo_open=True)),
                              line, str(raw.get("description", "")))
    return out


def _check_overlaps(regs: dict[str, Register], ck: Checker) -> None:
    by_function: dict[int, list[Register]] = {}
    for r in regs.values():
        by_function.setdefault(r.function, []).append(r)
    for function, rs in by_function.items():
        rs.sort(key=lambda r: r.address)
        for a, b in zip(rs, rs[1:]):
            if b.address < a.address + a.count:
                ck.bad(b.line, f"register {b.name} (address {b.address}) overlaps {a.name} "
                               f"(address {a.address}, {a.count} register(s), line {a.line})")


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


# ---------------------------------------------------------------------------------------------- sets of profiles
def load_folder(root, into: dict, problems: list, loader=None, recursive: bool = True) -> None:
    """Every *.toml in `root` (below it too when `recursive`; a Path or an importlib Traversable), in name
    order, loaded by `loader` (default: a Modbus profile) into `into` by model; problems collected. A file
    already loaded (the shipped folder itself, when a site file sits at the top of an editable install) is
    skipped; a model defined twice is a problem."""
    loader = loader or load_profile
    known = {str(Path(p.path).resolve()) for p in into.values()}
    for f in sorted(root.iterdir(), key=lambda p: p.name):
        if f.is_dir():
            if recursive:
                load_folder(f, into, problems, loader, recursive)
        elif f.name.endswith(".toml") and str(Path(str(f)).resolve()) not in known:
            try:
                p = loader(Path(str(f)))
            except ProfileError as exc:
                problems += exc.problems
                continue
            if p.model in into:
                problems.append((p.path, 1, f"model {p.model} already defined in {into[p.model].path}: give this "
                                            "profile a model name of its own"))
                continue
            into[p.model] = p


@lru_cache(maxsize=1)
def _shipped() -> tuple[tuple[str, Profile], ...]:
    out: dict[str, Profile] = {}
    problems: list = []
    load_folder(resources.files("ems.drivers").joinpath("modbus"), out, problems)
    if problems:
        raise ProfileError(problems)
    return tuple(out.items())


def shipped_profiles() -> dict[str, Profile]:
    """Every Modbus profile shipped in drivers/modbus, by model (parsed once per process)."""
    return dict(_shipped())


def site_profiles(profiles_dir: str | Path | None) -> dict[str, Profile]:
    """The shipped profiles plus the site's own (`<profiles_dir>/modbus/**/*.toml`); a folder that does not
    exist adds nothing. ProfileError lists every problem of the site's files (a model defined twice too)."""
    out = shipped_profiles()
    folder = Path(profiles_dir) / "modbus" if profiles_dir else None
    if folder is not None and folder.is_dir():
        problems: list = []
        load_folder(folder, out, problems)
        if problems:
            raise ProfileError(problems)
    return out
