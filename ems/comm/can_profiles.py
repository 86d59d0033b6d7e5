"""CAN BMS profiles: a BMS vendor's protocol as data — a DBC (decoded by cantools) plus a TOML file that maps
its signals to the quantities the controller uses, in drivers/can/<model>.toml (or the site's own
`profiles_dir/can/`).

```toml
[device]
kind = "bms"
model = "EMS-CAN-CELLS"
dbc = "battery_inverter.dbc"      # beside this file
level = "cell"                    # cell: every cell and cluster; stack: the stack's values only

[messages]                        # supervised messages and their timeouts, s
ClusterStatus = 3.0
[optional_messages]               # supervised only once the BMS has sent them
BatteryAlarmsWarnings = 3.0

[cluster]                         # level cell: per-cluster values; each message carries the cluster index
index = "cluster"
voltage_v = "ClusterStatus.voltage_v"
current_a = "ClusterStatus.current_a"              # > 0 discharging (DESIGN.md)
...
[cells.voltage_v]                 # cell frames: N cells each, first cell = group × N
message = "ClusterCellVoltages"
cluster = "cluster"
group = "group"
signals = ["cell_a_v", "cell_b_v", "cell_c_v"]
not_available = 65535             # optional raw value: no reading

[stack]                           # level stack (required there) or informational
current_a = { signal = "BatteryActualValues.current_a", scale = -1.0 }   # the protocol counts charging > 0
[command]                         # optional: the EMS opens a tripped cluster's contactors
message = "EmsCommand"
open_contactors = "open_contactors_mask"
counter = "alive_counter"
period_s = 1.0
[keepalive]                       # optional: what the BMS expects from the inverter
message = "InverterKeepAlive"
counter = "alive_counter"
period_s = 1.0
[flags]                           # optional: the battery's own protection / alarm flags (informational)
bits = "BatteryProtectionsAlarms"       # one bit per flag
states = "BatteryAlarmsWarnings"        # two bits per flag (0x35A), read per [devices] can_alarm_encoding
```

Every reference is checked against the DBC when the profile loads; problems come as `file:line: message`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import cantools

from ems.comm.profiles import load_folder
from ems.comm.toml_check import Checker, ProfileError, header_lines, key_line, read_profile_toml

LEVELS = ("cell", "stack")
CLUSTER_QUANTITIES = {"voltage_v": True, "current_a": True, "charge_limit_a": True, "discharge_limit_a": True,
                      "connected": True, "charge_prohibited": True, "discharge_prohibited": True,
                      "insulation_kohm": False}                       # quantity → required at level cell
STACK_QUANTITIES = {"voltage_v": True, "current_a": True, "temperature_degc": True, "charge_limit_a": True,
                    "discharge_limit_a": True, "soc_pct": False, "soh_pct": False, "charge_enable": False,
                    "discharge_enable": False}                        # quantity → required at level stack
CELL_QUANTITIES = ("voltage_v", "temperature_degc")
TOP_KEYS = {"device", "messages", "optional_messages", "cluster", "cells", "stack", "command", "keepalive", "flags"}
DEVICE_KEYS = {"kind", "vendor", "model", "dbc", "level", "description"}


@dataclass(frozen=True)
class SignalRef:
    message: str
    signal: str
    scale: float = 1.0          # applied after the DBC's own scaling (-1: the protocol's sign is the opposite)


@dataclass(frozen=True)
class CellMessage:
    message: str
    cluster: str                # signal holding the cluster index
    group: str                  # signal holding the group: its first cell is group × len(signals)
    signals: tuple[str, ...]
    not_available: int | None = None


@dataclass
class Periodic:
    message: str
    counter: str | None
    period_s: float
    open_contactors: str | None = None


@dataclass
class CanProfile:
    path: str
    model: str
    vendor: str
    level: str
    db: cantools.database.Database
    timeouts: dict[str, float]
    optional: dict[str, float]
    cluster_index: str | None = None
    cluster: dict[str, SignalRef] = field(default_factory=dict)
    stack: dict[str, SignalRef] = field(default_factory=dict)
    cells: dict[str, CellMessage] = field(default_factory=dict)
    command: Periodic | None = None
    keepalive: Periodic | None = None
    flag_bits: str | None = None
    flag_states: str | None = None


def load_can_profile(path: str | Path) -> CanProfile:
    path = Path(path)
    data, lines = read_profile_toml(path)
    ck = Checker(path, lines)
    ck.unknown_keys(data, TOP_KEYS, 0, "top level")
    dev = data.get("device", {}) if isinstance(data.get("device"), dict) else {}
    dev_line = (header_lines(lines, "device") or [1])[0]
    ck.unknown_keys(dev, DEVICE_KEYS, dev_line, "[device]")
    if dev.get("kind") != "bms":
        ck.bad(key_line(lines, dev_line, "kind"), f"[device] kind {dev.get('kind')!r} must be \"bms\"")
    level = dev.get("level")
    if level not in LEVELS:
        ck.bad(key_line(lines, dev_line, "level"), f"[device] level {level!r} must be cell or stack")
    db = None
    dbc = dev.get("dbc")
    if not isinstance(dbc, str):
        ck.bad(key_line(lines, dev_line, "dbc"), "[device] dbc must name the DBC file beside this profile")
    else:
        try:
            db = cantools.database.load_string((path.parent / dbc).read_text(encoding="ascii"), database_format="dbc")
        except (OSError, UnicodeError, cantools.database.UnsupportedDatabaseFormatError, ValueError) as exc:
            ck.bad(key_line(lines, dev_line, "dbc"), f"[device] dbc {dbc!r}: {exc}")
    if db is None:
        raise ProfileError(ck.problems)
    refs = _Refs(ck, db)
    timeouts = refs.timeouts(data.get("messages", {}), "messages")
    optional = refs.timeouts(data.get("optional_messages", {}), "optional_messages")
    p = CanProfile(str(path), dev.get("model", path.stem), str(dev.get("vendor", "")), level or "cell", db,
                   timeouts, optional)
    cl = data.get("cluster", {})
    cl_line = (header_lines(lines, "cluster") or [0])[0]
    if cl:
        ck.unknown_keys(cl, set(CLUSTER_QUANTITIES) | {"index"}, cl_line, "[cluster]")
        p.cluster_index = cl.get("index")
        p.cluster = {q: r for q in CLUSTER_QUANTITIES if (r := refs.signal(cl, q, cl_line, "cluster")) is not None}
        for q, r in p.cluster.items():
            if not isinstance(p.cluster_index, str) or not refs.has(r.message, p.cluster_index):
                ck.bad(key_line(lines, cl_line, "index"), f"[cluster] index {p.cluster_index!r} must be a signal "
                                                           f"of every cluster message ({r.message} has none)")
                break
    st = data.get("stack", {})
    st_line = (header_lines(lines, "stack") or [0])[0]
    ck.unknown_keys(st, set(STACK_QUANTITIES), st_line, "[stack]")
    p.stack = {q: r for q in STACK_QUANTITIES if (r := refs.signal(st, q, st_line, "stack")) is not None}
    for q in CELL_QUANTITIES:
        raw = (data.get("cells") or {}).get(q)
        if raw is not None:
            cell = refs.cells(raw, q)
            if cell is not None:
                p.cells[q] = cell
    ck.unknown_keys(data.get("cells") or {}, set(CELL_QUANTITIES), (header_lines(lines, "cells") or [0])[0],
                    "[cells]")
    p.command = refs.periodic(data.get("command"), "command", open_contactors=True)
    p.keepalive = refs.periodic(data.get("keepalive"), "keepalive")
    fl = data.get("flags", {})
    fl_line = (header_lines(lines, "flags") or [0])[0]
    ck.unknown_keys(fl, {"bits", "states"}, fl_line, "[flags]")
    for key in ("bits", "states"):
        if key in fl and fl[key] not in refs.signals:
            ck.bad(key_line(lines, fl_line, key), f"[flags] {key}: no message {fl[key]!r} in the DBC")
    p.flag_bits, p.flag_states = fl.get("bits"), fl.get("states")
    required = CLUSTER_QUANTITIES if p.level == "cell" else STACK_QUANTITIES
    have = p.cluster if p.level == "cell" else p.stack
    section = "cluster" if p.level == "cell" else "stack"
    for q, needed in required.items():
        if needed and q not in have:
            ck.bad(max(cl_line if p.level == "cell" else st_line, 1), f"[{section}] level {p.level} needs {q}")
    if p.level == "cell":
        for q in CELL_QUANTITIES:
            if q not in p.cells:
                ck.bad(1, f"[cells.{q}] level cell needs the {q} frames")
    if ck.problems:
        raise ProfileError(ck.problems)
    return p


class _Refs:
    """Checks references to the DBC's messages and signals, reporting at the line of their key."""

    def __init__(self, ck: Checker, db):
        self.ck, self.db = ck, db
        self.signals = {m.name: {s.name for s in m.signals} for m in db.messages}

    def has(self, message: str, signal: str) -> bool:
        return signal in self.signals.get(message, ())

    def timeouts(self, raw, table: str) -> dict[str, float]:
        line = (header_lines(self.ck.lines, table) or [0])[0]
        out = {}
        for name, t in (raw or {}).items():
            if name not in self.signals:
                self.ck.bad(key_line(self.ck.lines, line, name), f"[{table}] no message {name!r} in the DBC")
            elif isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 3600:
                self.ck.bad(key_line(self.ck.lines, line, name), f"[{table}] {name}: timeout must be a number of "
                                                                  f"seconds above 0 up to 3600, got {t!r}")
            else:
                out[name] = float(t)
        return out

    def signal(self, table: dict, key: str, header: int, section: str) -> SignalRef | None:
        raw = table.get(key)
        if raw is None:
            return None
        line = key_line(self.ck.lines, header, key)
        scale = 1.0
        if isinstance(raw, dict):
            unknown = set(raw) - {"signal", "scale"}
            if unknown:
                self.ck.bad(line, f"[{section}] {key}: unknown keys {sorted(unknown)} (known: signal, scale)")
            scale = raw.get("scale", 1.0)
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
                self.ck.bad(line, f"[{section}] {key}: scale must be a non-zero number")
                scale = 1.0
            raw = raw.get("signal")
        if not isinstance(raw, str) or raw.count(".") != 1:
            self.ck.bad(line, f"[{section}] {key}: must be \"Message.signal\" (or {{ signal = …, scale = … }})")
            return None
        message, signal = raw.split(".")
        if not self.has(message, signal):
            self.ck.bad(line, f"[{section}] {key}: no signal {signal!r} in message {message!r} of the DBC")
            return None
        return SignalRef(message, signal, float(scale))

    def cells(self, raw, q: str) -> CellMessage | None:
        line = (header_lines(self.ck.lines, f"cells.{q}") or [0])[0]
        where = f"[cells.{q}]"
        if not isinstance(raw, dict):
            self.ck.bad(line, f"{where} must be a table")
            return None
        self.ck.unknown_keys(raw, {"message", "cluster", "group", "signals", "not_available"}, line, where)
        msg, sigs = raw.get("message"), raw.get("signals")
        if msg not in self.signals:
            self.ck.bad(key_line(self.ck.lines, line, "message"), f"{where} no message {msg!r} in the DBC")
            return None
        names = [raw.get("cluster"), raw.get("group")] + (list(sigs) if isinstance(sigs, list) else [])
        missing = [n for n in names if not isinstance(n, str) or not self.has(msg, n)]
        if not isinstance(sigs, list) or not sigs or missing:
            self.ck.bad(line, f"{where} cluster, group and signals must be signals of {msg} (missing: {missing})")
            return None
        na = raw.get("not_available")
        if na is not None and (isinstance(na, bool) or not isinstance(na, int)):
            self.ck.bad(key_line(self.ck.lines, line, "not_available"), f"{where} not_available must be a raw integer")
            na = None
        return CellMessage(msg, raw["cluster"], raw["group"], tuple(sigs), na)

    def periodic(self, raw, table: str, open_contactors: bool = False) -> Periodic | None:
        if raw is None:
            return None
        line = (header_lines(self.ck.lines, table) or [0])[0]
        keys = {"message", "counter", "period_s"} | ({"open_contactors"} if open_contactors else set())
        self.ck.unknown_keys(raw, keys, line, f"[{table}]")
        msg = raw.get("message")
        if msg not in self.signals:
            self.ck.bad(key_line(self.ck.lines, line, "message"), f"[{table}] no message {msg!r} in the DBC")
            return None
        for key in keys - {"message", "period_s"}:
            if key in raw and not self.has(msg, raw[key]):
                self.ck.bad(key_line(self.ck.lines, line, key), f"[{table}] {key}: no signal {raw[key]!r} in {msg}")
                return None
        if open_contactors and "open_contactors" not in raw:
            self.ck.bad(line, f"[{table}] needs open_contactors (the signal whose bit N opens cluster N)")
            return None
        period = self.ck.number(raw, "period_s", line, f"[{table}]", 1.0, 0.0, 60.0, lo_open=True)
        return Periodic(msg, raw.get("counter"), float(period), raw.get("open_contactors"))


@lru_cache(maxsize=1)
def _shipped() -> tuple[tuple[str, CanProfile], ...]:
    out: dict[str, CanProfile] = {}
    problems: list = []
    load_folder(resources.files("ems.drivers").joinpath("can"), out, problems, load_can_profile, recursive=False)
    if problems:
        raise ProfileError(problems)
    return tuple(out.items())


def can_profiles(profiles_dir: str | Path | None = None) -> dict[str, CanProfile]:
    """The shipped CAN BMS profiles plus the site's own (`<profiles_dir>/can/*.toml`)."""
    out = dict(_shipped())
    folder = Path(profiles_dir) / "can" if profiles_dir else None
    if folder is not None and folder.is_dir():
        problems: list = []
        load_folder(folder, out, problems, load_can_profile, recursive=False)
        if problems:
            raise ProfileError(problems)
    return out
