"""The dispatch server for SCADA and cloud: Modbus TCP (and RTU when configured), unit ID 1, port 1502.

It serves two maps from one register image:
- SunSpec at 40000 ('SunS'), so standard clients discover it: models 1 (common), 701 (AC measurements),
  702 (capacity), 704 (AC controls: WSet / WSetPct / VarSet with reversion timers), 713 (storage: SOC,
  SOH, energy) and 715 (DER control: local/remote state, start/stop, alarm reset, heartbeats). The layout
  comes from the SunSpec Alliance's model definitions shipped with pysunspec2, never retyped here.
- the native map (`drivers/modbus/ems/ems_dispatch.toml`): the manual's PCS active/reactive setpoints,
  PCS on/off, fault clear, local/remote mode, data queries and the clock (read: EMS → SCADA timing, the
  time at the moment of the read; write: SCADA → EMS timing, when [dispatch] clock_from_scada).

Rules for every write (DESIGN.md, bad input): only from an allowed client address (else ILLEGAL_FUNCTION),
only in remote mode except the mode switch, heartbeats and the clock (else ILLEGAL_FUNCTION), only to
writable points (else ILLEGAL_ADDRESS), only within range (else ILLEGAL_VALUE). A refused write changes
nothing. Accepted writes become commands for the controller, queued here and applied by the control
thread at its next fast tick; setpoints are leases (704's reversion timer when set, else [dispatch]
lease_s). Every accepted write is logged with the client's address.

`register_map_markdown()` renders docs/dispatch.md's tables from the same objects the server uses.
"""
from __future__ import annotations

import logging
import math
import queue
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from pymodbus.constants import ExcCodes

from ems import __version__
from ems.comm.modbus_server import HOLDING, INPUT, ProfileImage, RegisterImage, WriteRefused, decode_write
from ems.comm.net import normalise_address
from ems.comm.profiles import Profile, shipped_profiles
from ems.comm.sunspec_layout import SUNSPEC_BASE, Point, chain
from ems.parallel.block import in_command_block, status_block
from ems.parallel.slave import CommandCheck, IdConflict
from ems.parallel.status import unit_state

log = logging.getLogger("ems.dispatch")

MODELS = (1, 701, 702, 704, 713, 715)
NOT_IMPLEMENTED = {"int16": 0x8000, "uint16": 0xFFFF, "enum16": 0xFFFF, "bitfield16": 0xFFFF, "sunssf": 0x8000,
                   "int32": 0x80000000, "uint32": 0xFFFFFFFF, "enum32": 0xFFFFFFFF, "bitfield32": 0xFFFFFFFF,
                   "acc32": 0}
_FMT = {"int16": ">h", "uint16": ">H", "enum16": ">H", "bitfield16": ">H", "sunssf": ">h", "int32": ">i",
        "uint32": ">I", "enum32": ">I", "bitfield32": ">I", "acc32": ">I"}
# points a client may write, and what each does (the rest of the RW points in the models is not supported
# and refused with ILLEGAL_ADDRESS, so a client learns at once instead of believing a write took effect)
SUNSPEC_WRITABLE = {
    (704, "WSetEna"): "enable (1) / disable (0) the active power setpoint",
    (704, "WSetMod"): "0 WSetPct of WMaxRtg, 1 WSet in watts",
    (704, "WSet"): "active power setpoint, W (> 0 discharging)",
    (704, "WSetPct"): "active power setpoint, % of WMaxRtg",
    (704, "WSetRvrtTms"): "reversion time, s: the setpoint is a lease of this length (0: [dispatch] lease_s)",
    (704, "VarSetEna"): "enable (1) / disable (0) the reactive power setpoint",
    (704, "VarSetMod"): "4 VarSet in var (the only mode supported)",
    (704, "VarSet"): "reactive power setpoint, var",
    (704, "VarSetRvrtTms"): "reversion time of the reactive setpoint, s",
    (715, "ControllerHb"): "controller heartbeat: any value (accepted in local mode too)",
    (715, "AlarmReset"): "write 1: clear latched faults",
    (715, "OpCtl"): "0 stop, 1 start the PCS",
}
# the grid operator's limits in the native map → the controller's names (ems.control.controller.GRID_LIMITS)
GRID_LIMIT_REGISTERS = {"grid_pcs_limit_w": "pcs_limit_w", "grid_feed_in_limit_w": "feed_in_limit_w",
                        "grid_ramp_w_per_s": "ramp_w_per_s"}
SCALE_FACTORS = {"W_SF": 1, "Var_SF": 1, "Hz_SF": -2, "WSet_SF": 0, "WSetPct_SF": -1, "VarSet_SF": 0,
                 "VarSetPct_SF": -1, "WH_SF": 1, "Pct_SF": -1, "VA_SF": 1, "PF_SF": -3, "A_SF": -1, "V_SF": -1}


@dataclass(frozen=True)
class SetpointPair:
    """A SunSpec enable point and the setpoint it enables: an enable needs a valid, fresh setpoint."""
    enable: str
    mode: str
    value_by_mode: dict            # mode point's value → the value point it selects
    reversion: str
    command: str                   # the controller command it becomes
    label: str

    @property
    def points(self) -> set[str]:
        return {self.enable, self.mode, self.reversion, *self.value_by_mode.values()}


SETPOINT_PAIRS = (
    SetpointPair("WSetEna", "WSetMod", {1: "WSet", 0: "WSetPct"}, "WSetRvrtTms", "dispatch_w", "active_power"),
    SetpointPair("VarSetEna", "VarSetMod", {4: "VarSet"}, "VarSetRvrtTms", "reactive_var", "reactive_power"),
)


def _signed_marker(sunspec_type: str) -> int:
    """The "not implemented" raw value as `SunSpecMap.raw` reads it (signed types negative)."""
    raw = NOT_IMPLEMENTED[sunspec_type]
    fmt = _FMT[sunspec_type]
    return struct.unpack(fmt, struct.pack(fmt.upper(), raw))[0]


class SunSpecMap:
    """The SunSpec models' points at their addresses (from pysunspec2's model definitions) and the words
    of the whole block, ready to serve: 'SunS', the models, the end marker."""

    def __init__(self, models=MODELS, base: int = SUNSPEC_BASE):
        self.base = base
        layout = chain(models, base)
        self.models, self.model_addr, self.points = layout.models, layout.model_addr, layout.points
        self.end = layout.end                     # after the end marker (0xFFFF, 0)
        self._by_address = {p.address: p for p in self.points.values()}
        self.words = [0] * (self.end - base)
        self.words[0:2] = [0x5375, 0x6E53]        # 'SunS'
        for mid, m in self.models.items():
            self.set_words(self.model_addr[mid], list(struct.unpack(f">{m.len}H", m.get_mb())))
        self.words[-2:] = [0xFFFF, 0]
        for (mid, name), p in self.points.items():
            if p.type == "sunssf" and name in SCALE_FACTORS:
                self.set_raw(mid, name, SCALE_FACTORS[name])

    def set_words(self, address: int, words: list[int]) -> None:
        self.words[address - self.base:address - self.base + len(words)] = words

    def point(self, mid: int, name: str) -> Point:
        return self.points[(mid, name)]

    def point_at(self, address: int) -> Point | None:
        return self._by_address.get(address)

    def set_raw(self, mid: int, name: str, raw: int | None) -> None:
        p = self.points[(mid, name)]
        if raw is None:
            raw = NOT_IMPLEMENTED[p.type]
        if p.type == "string":
            data = str(raw).encode()[:2 * p.size].ljust(2 * p.size, b"\0")
        else:
            fmt = _FMT[p.type]
            lo, hi = _limits(fmt)
            data = struct.pack(fmt, min(max(int(raw), lo), hi))
        self.set_words(p.address, list(struct.unpack(f">{len(data) // 2}H", data)))

    @staticmethod
    def sf(point: Point) -> int:
        return SCALE_FACTORS.get(point.sf, 0) if point.sf else 0

    def set_value(self, mid: int, name: str, value: float | None) -> None:
        """Engineering value → raw with the point's scale factor (None → not implemented)."""
        p = self.points[(mid, name)]
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            self.set_raw(mid, name, None)
        elif p.type == "string":
            self.set_raw(mid, name, value)
        else:
            self.set_raw(mid, name, round(value / 10 ** self.sf(p)))

    def decode(self, p: Point, words: list[int]) -> float:
        raw = struct.unpack(_FMT[p.type], struct.pack(f">{p.size}H", *words))[0]
        return raw * 10 ** self.sf(p)

    def raw(self, p: Point) -> int:
        off = p.address - self.base
        return struct.unpack(_FMT[p.type], struct.pack(f">{p.size}H", *self.words[off:off + p.size]))[0]

    def value(self, p: Point) -> float:
        """The point's engineering value as served (raw × 10^scale factor)."""
        return self.raw(p) * 10 ** self.sf(p)


def _limits(fmt: str) -> tuple[int, int]:
    bits = struct.calcsize(fmt) * 8
    if fmt[-1].islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


class DispatchServer:
    """The dispatch server's state and write rules. `apply(ctrl)` (fast loop) hands accepted commands to
    the controller; `publish(ctrl)` (slow loop) refreshes the data both maps serve."""

    # native holding registers a client may write in local mode too: they are not dispatch
    LOCAL_MODE_WRITABLE = frozenset({"control_mode", "clock_utc_s"})

    def __init__(self, cfg, rated_power_w: float | None = None, battery_wh: float | None = None, clock=None):
        """clock: the controller's (now(), and set_wall(when) to take SCADA → EMS timing); None: the
        system's wall time, read only (clock writes refused)."""
        self.cfg = cfg
        self.clock = clock
        self.tz = ZoneInfo(cfg.site.timezone)
        d = cfg.dispatch
        self.allowed = {normalise_address(a) for a in d.allowed_clients}
        self.unit_id = d.unit_id
        self.remote = bool(d.start_remote)
        self.native: Profile = shipped_profiles()["EMS-DISPATCH"]
        self.ss = SunSpecMap()
        self.rated_w = rated_power_w or cfg.pcs.rated_power_w
        self.rated_va = max(cfg.pcs.apparent_va, self.rated_w)
        w, va = self.rated_w, self.rated_va
        self._sunspec_limits = {"WSetEna": (0, 1), "WSetMod": (0, 1), "WSet": (-w, w), "WSetPct": (-100, 100),
                                "WSetRvrtTms": (0, 86400), "VarSetEna": (0, 1), "VarSetMod": (4, 4),
                                "VarSet": (-va, va), "VarSetRvrtTms": (0, 86400), "ControllerHb": (0, 0xFFFFFFFF),
                                "AlarmReset": (0, 1), "OpCtl": (0, 1)}
        # a value point's last write (monotonic s): an enable takes only a setpoint younger than its lease
        self._written_s: dict[str, float] = {}
        # the I/O thread (writes) and the control thread (publish) both change the SunSpec words
        self._ss_lock = threading.Lock()
        b = cfg.battery
        self.battery_wh = battery_wh or b.clusters * b.cells_per_cluster * b.cell_capacity_ah * 3.2
        self.parallel = CommandCheck(cfg, self.rated_w)     # the master's commands, on a slave
        self.parallel_commands = 0                          # accepted (not logged one by one: one per second)
        self._unit_rated_w, self._unit_wh = self.rated_w, self.battery_wh
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self._native_img = ProfileImage(self.native)
        spans = [(t, a, n) for t, a, n in self._native_img.spans] + [(HOLDING, SUNSPEC_BASE, len(self.ss.words))]
        self.image = RegisterImage(spans, self._validate)
        self._clock_reg = self.native.registers["clock_utc_s"]
        self.image.on_read = self._fresh_clock
        self._init_static()
        self._sync_native_holding()
        self._sync_sunspec()

    # ------------------------------------------------------------------ static content
    def _init_static(self) -> None:
        ss = self.ss
        for name, value in (("Mn", "open-ems"), ("Md", "EMS controller"), ("Vr", __version__),
                            ("SN", self.cfg.site.name)):
            ss.set_value(1, name, value)
        ss.set_raw(1, "DA", self.unit_id)
        ss.set_raw(701, "ACType", 2)
        ss.set_value(702, "WMaxRtg", self.rated_w)
        ss.set_value(702, "WChaRteMaxRtg", self.rated_w)
        ss.set_value(702, "WDisChaRteMaxRtg", self.rated_w)
        ss.set_value(713, "WHRtg", self.battery_wh)
        ss.set_raw(704, "WSetMod", 1)
        ss.set_raw(704, "WSetEna", 0)
        ss.set_raw(704, "VarSetMod", 4)
        ss.set_raw(704, "VarSetEna", 0)
        ss.set_raw(704, "WSetRvrtTms", 0)
        ss.set_raw(704, "VarSetRvrtTms", 0)
        ss.set_raw(715, "ControllerHb", 0)
        ss.set_raw(715, "AlarmReset", 0)
        ss.set_raw(715, "OpCtl", 1)
        ss.set_raw(715, "DERHb", 0)

    def _sync_sunspec(self) -> None:
        self.ss.set_raw(715, "LocRemCtl", 0 if self.remote else 1)    # SunSpec: 0 REMOTE, 1 LOCAL
        self.image.set_words(HOLDING, SUNSPEC_BASE, list(self.ss.words))

    def _sync_native_holding(self) -> None:
        img = self._native_img
        img.publish("control_mode", 1 if self.remote else 0)
        for table, first, count in img.spans:
            self.image.set_words(table, first, img.get_words(table, first, count))

    # ------------------------------------------------------------------ writes (I/O thread)
    def _client_allowed(self, client: str | None) -> bool:
        if (client or "").startswith("serial:"):
            return True
        return normalise_address(client) in self.allowed

    def _validate(self, table: int, address: int, words: list[int], client: str | None) -> None:
        if table == HOLDING and in_command_block(address, len(words)):
            self._parallel_write(address, words, client)      # its own rule: only the master's address
            return
        # the allowlist first: a client outside it learns nothing about the map from its write attempts
        if not self._client_allowed(client):
            raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, f"client {client} is not in [dispatch] allowed_clients")
        if table != HOLDING:
            raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, "only holding registers are writable")
        if address >= SUNSPEC_BASE:
            changes = self._sunspec_write(address, words)
        else:
            changes = self._native_write(address, words)
        for name, value, command in changes:
            if command is not None:
                self.commands.put(command)
            log.info("dispatch write from %s: %s = %s", client, name, value)
            self.commands.put(("log", client, name, value))

    def _parallel_write(self, address: int, words: list[int], client: str | None) -> None:
        """The master's command (ems.parallel.slave): checked here, applied by the control thread. An ID
        conflict is refused and reported to the control thread (57)."""
        try:
            cmd = self.parallel.check(address, words, client)
        except IdConflict as exc:
            self.commands.put(("parallel_conflict", str(exc), None))
            raise
        self.parallel_commands += 1
        self._native_img.set_words(HOLDING, address, words)     # the last command stays readable
        self.commands.put(("parallel", cmd, None))

    # a parallel slave follows its master: a setpoint written to it directly would be taken and do nothing
    SLAVE_REFUSED = frozenset({"active_power_setpoint_w", "reactive_power_setpoint_var", "setpoint_release",
                               *GRID_LIMIT_REGISTERS, "grid_limits_release",
                               "WSetEna", "WSetMod", "WSet", "WSetPct", "WSetRvrtTms", "VarSetEna", "VarSetMod",
                               "VarSet", "VarSetRvrtTms"})

    def _refuse_on_slave(self, names) -> None:
        if self.parallel.slave and any(n in self.SLAVE_REFUSED for n in names):
            raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, f"this unit is parallel slave {self.cfg.parallel.unit_id}: "
                               f"dispatch the site through its master (unit {self.cfg.parallel.master_id})")

    def _native_write(self, address: int, words: list[int]):
        decoded = decode_write(self._native_img._by_address, HOLDING, address, words)
        self._refuse_on_slave(r.name for r, _ in decoded)
        if not self.remote and any(r.name not in self.LOCAL_MODE_WRITABLE for r, _ in decoded):
            raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, "local mode: switch control_mode to 1 (remote) first")
        if any(r.name == "clock_utc_s" for r, _ in decoded):
            if not self.cfg.dispatch.clock_from_scada:
                raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, "SCADA → EMS timing is off ([dispatch] clock_from_scada)")
            if self.clock is None or not hasattr(self.clock, "set_wall"):
                raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, "this EMS cannot set its clock")
        for r, value in decoded:
            limit = {"active_power_setpoint_w": self.rated_w, "reactive_power_setpoint_var": self.rated_va}.get(r.name)
            if limit is not None and abs(value) > limit:
                raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"{r.name}: {value:g} outside ±{limit:g} (the PCS rating)")
        out = []
        for r, value in decoded:        # all checked: now apply
            out.append((r.name, value, self._native_command(r.name, value)))
        self._sync_native_holding()
        return out

    def _native_command(self, name: str, value: float):
        if name == "control_mode":
            return self._set_remote(value >= 1)
        if name == "active_power_setpoint_w":
            self._native_img.publish(name, value)
            return ("dispatch_w", value, None)
        if name == "reactive_power_setpoint_var":
            self._native_img.publish(name, value)
            return ("reactive_var", value, None)
        if name == "pcs_on":
            self._native_img.publish(name, value)
            return ("pcs_off", value < 1, None)
        if name == "fault_clear":
            return ("fault_reset", True, None)
        if name == "setpoint_release":
            return ("release", None, None)
        if name in GRID_LIMIT_REGISTERS:
            self._native_img.publish(name, value)
            return ("grid_operator", {GRID_LIMIT_REGISTERS[name]: value}, None)
        if name == "grid_limits_release":
            return ("grid_operator", dict.fromkeys(GRID_LIMIT_REGISTERS.values()), None)
        if name == "clock_utc_s":         # applied by the control thread; the queue's delay is made up there
            return ("clock", (value, time.monotonic()), None)
        return None

    # ------------------------------------------------------------------ the clock (I/O thread)
    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(timezone.utc)

    def _fresh_clock(self, table: int, address: int, count: int) -> None:
        """Before a read that covers clock_utc_s: the EMS time at this moment (EMS → SCADA timing)."""
        r = self._clock_reg
        if table == HOLDING and address < r.address + r.count and address + count > r.address:
            self.image.set_words(HOLDING, r.address, r.to_words(int(self._now().timestamp())))

    def _set_remote(self, remote: bool):
        changed = remote != self.remote
        self.remote = remote
        self._sync_sunspec()
        if changed and not remote:
            return ("release", None, None)      # back to local control: remote setpoints end now
        return ("mode", remote, None)

    def _sunspec_write(self, address: int, words: list[int]):
        with self._ss_lock:
            return self._sunspec_write_locked(address, words)

    def _sunspec_write_locked(self, address: int, words: list[int]):
        ss = self.ss
        decoded = []
        a = address
        while a < address + len(words):
            p = ss.point_at(a)
            if p is None or (p.model, p.name) not in SUNSPEC_WRITABLE:
                raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"SunSpec address {a} is not a supported writable point")
            chunk = words[a - address:a - address + p.size]
            if len(chunk) != p.size:
                raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"{p.name}: partial write")
            decoded.append((p, ss.decode(p, chunk), chunk))
            a += p.size
        self._refuse_on_slave(p.name for p, _, _ in decoded)
        only_heartbeat = all(p.name == "ControllerHb" for p, _, _ in decoded)
        if not self.remote and not only_heartbeat:
            raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, "local mode: switch to remote (native register 0) first")
        for p, value, _ in decoded:
            self._check_sunspec_range(p, value)
        # apply to the words, work out what it commands, and put every word back if that is refused: a
        # refused request changes nothing
        saved = list(ss.words)
        now_s = time.monotonic()
        for p, value, chunk in decoded:
            ss.set_words(p.address, chunk)
        written = {p.name for p, _, _ in decoded}
        try:
            commands = self._sunspec_commands(written, now_s)
        except WriteRefused:
            ss.words[:] = saved
            raise
        for name in written:
            self._written_s[name] = now_s
        out = [(f"{p.model}.{p.name}", value, None) for p, value, _ in decoded] + commands
        self._sync_sunspec()
        return out

    def _check_sunspec_range(self, p: Point, value: float) -> None:
        lo, hi = self._sunspec_limits[p.name]
        if not lo <= value <= hi:
            raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"{p.model}.{p.name}: {value:g} outside {lo:g} … {hi:g}")

    def _enabled_setpoint(self, pair: SetpointPair, written_now: set[str], now_s: float) -> tuple[float, int]:
        """The value an enabled pair dispatches and its reversion time; WriteRefused (ILLEGAL_VALUE) when
        there is no valid one: never written, the "not implemented" marker, out of range, or older than
        its lease."""
        ss = self.ss
        mode = ss.raw(ss.point(704, pair.mode))
        name = pair.value_by_mode.get(mode)
        if name is None:
            raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"704.{pair.mode} = {mode}: not a supported mode")
        p = ss.point(704, name)
        raw = ss.raw(p)
        tms = ss.raw(ss.point(704, pair.reversion))
        lease_s = tms or self.cfg.dispatch.lease_s
        written = now_s if name in written_now else self._written_s.get(name)
        if written is None or raw == _signed_marker(p.type):
            raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"704.{pair.enable} = 1 without a setpoint: write 704.{name} first")
        if now_s - written > lease_s:
            raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"704.{pair.enable} = 1: 704.{name} was written "
                               f"{now_s - written:.0f} s ago, older than its lease of {lease_s:g} s: write it again")
        value = ss.value(p)
        if name == "WSetPct":
            value = value / 100.0 * self.rated_w
        self._check_sunspec_range(p, ss.value(p))
        return value, tms

    def _sunspec_commands(self, written: set[str], now_s: float):
        ss, out = self.ss, []
        for pair in SETPOINT_PAIRS:
            if not written & pair.points:
                continue
            if ss.raw(ss.point(704, pair.enable)) == 1:
                value, tms = self._enabled_setpoint(pair, written, now_s)
                out.append((f"704.{pair.label}", value, (pair.command, value, tms or None)))
            else:
                out.append((f"704.{pair.label}", 0.0, (pair.command, None, None)))
        if "AlarmReset" in written and ss.raw(ss.point(715, "AlarmReset")) == 1:
            out.append(("715.alarm_reset", 1, ("fault_reset", True, None)))
            ss.set_raw(715, "AlarmReset", 0)
        if "OpCtl" in written:
            out.append(("715.op_ctl", ss.raw(ss.point(715, "OpCtl")),
                        ("pcs_off", ss.raw(ss.point(715, "OpCtl")) == 0, None)))
        return out

    # ------------------------------------------------------------------ control thread
    def apply(self, ctrl) -> int:
        """Hand the queued remote commands to the controller (fast loop); returns how many."""
        n = 0
        if self.commands.empty():           # the common case, without an exception per tick
            return n
        while True:
            try:
                item = self.commands.get_nowait()
            except queue.Empty:
                return n
            n += 1
            if item[0] == "log":
                _, client, name, value = item
                ctrl.events.emit(ctrl.clock.now(), "remote_write", None, name, detail=f"{value!r} from {client}")
                continue
            name, value, lease_s = item
            if name == "mode":
                continue
            if name == "parallel":
                ctrl.parallel_command(value)
                continue
            if name == "parallel_conflict":
                ctrl.parallel_conflict(value)
                continue
            if name == "clock":
                self._apply_clock(ctrl, *value)
                continue
            if name == "release":
                ctrl.command("dispatch_w", None, source="remote")
                ctrl.command("reactive_var", None, source="remote")
            elif name in ("dispatch_w", "reactive_var"):
                ctrl.command(name, value, lease_s=lease_s, source="remote")
            else:
                try:
                    ctrl.command(name, value, source="remote")
                except ValueError as exc:      # range-checked at the write already; never stop the loop on one
                    log.error("dispatch command %s = %r not taken: %s", name, value, exc)

    def _apply_clock(self, ctrl, utc_s: float, received_mono_s: float) -> None:
        """SCADA → EMS timing: step the wall clock to the SCADA's time (plus the time the write waited in
        the queue) unless it is already within [dispatch] clock_step_min_s. A refusal (no CAP_SYS_TIME) is
        logged and kept as an event; the controller runs on."""
        now = self.clock.now()
        when = datetime.fromtimestamp(utc_s + (time.monotonic() - received_mono_s), timezone.utc)
        step_s = (when - now).total_seconds()
        if abs(step_s) < self.cfg.dispatch.clock_step_min_s:
            ctrl.events.emit(now, "clock_sync", None, "clock", detail=f"within {self.cfg.dispatch.clock_step_min_s:g} s "
                             f"of the SCADA time ({step_s:+.1f} s): not stepped")
            return
        try:
            self.clock.set_wall(when)
        except (OSError, ValueError) as exc:
            log.error("SCADA → EMS timing: cannot set the clock to %s: %s", when.isoformat(), exc)
            ctrl.events.emit(now, "clock_set_failed", None, "clock", detail=f"{when.isoformat()}: {exc}")
            return
        log.warning("clock stepped %+.1f s by SCADA timing: %s → %s", step_s, now.isoformat(), when.isoformat())
        ctrl.events.emit(self.clock.now(), "clock_set", None, "clock",
                         detail=f"{now.isoformat()} → {when.isoformat()} ({step_s:+.1f} s)", user="remote")

    def publish(self, ctrl) -> None:
        """The site's data into both maps (slow loop, or faster)."""
        from ems._core import layout as L
        f = ctrl.fresh
        b = ctrl.fast.buffers
        grid, pv, pcs = f("grid_w"), f("pv_w"), f("pcs_w")
        dg = f("dg_w") if ctrl.readings["dg_w"].at_s > -1e17 else 0.0
        soc = float(b.stack_soc[L.SOC_MEAN]) if ctrl.bms_fresh() else None
        chg, dchg = float(b.results[L.TO_CHG_LIMIT_W]), float(b.results[L.TO_DCHG_LIMIT_W])
        if ctrl.group is not None:          # a master is the site: SCADA sees the group's totals
            site = ctrl.group.site()
            pcs, soc, chg, dchg = site["pcs_w"], site["soc_pct"], site["charge_limit_w"], site["discharge_limit_w"]
            self._site_ratings(site)
        load = None if None in (grid, pv, pcs, dg) else grid + pv + pcs + dg
        disp = ctrl._dispatch
        remaining = max(0.0, disp[1] - ctrl.clock.monotonic_s()) if disp else 0.0
        alarms = sorted(code for code, _ in ctrl.status.active_alarms)
        c = ctrl.commands
        clip = lambda v: None if v is None else max(min(v, 2e9), -2e9)     # noqa: E731
        self._native_img.publish_many({
            "grid_power_w": clip(grid), "pv_power_w": clip(pv), "pcs_power_w": clip(pcs), "load_power_w": clip(load),
            "generator_power_w": clip(dg), "soc_pct": soc, "charge_limit_w": clip(chg),
            "discharge_limit_w": clip(dchg), "pcs_setpoint_w": clip(c.pcs_setpoint_w),
            "remote_mode": int(self.remote), "dispatch_active": int(disp is not None and remaining > 0),
            "lease_remaining_s": min(round(remaining), 65535), "active_alarms": min(len(alarms), 65535),
            "first_alarm_code": alarms[0] if alarms else 0, "pcs_running": int(c.pcs_run),
            "utc_offset_min": self._now().astimezone(self.tz).utcoffset().total_seconds() / 60.0})
        for table, first, count in self._native_img.spans:
            if table == INPUT:
                self.image.set_words(table, first, self._native_img.get_words(table, first, count))
        self.publish_parallel(ctrl)
        with self._ss_lock:
            self._publish_sunspec(ctrl, pcs, soc, alarms, disp, remaining)

    def publish_parallel(self, ctrl) -> None:
        """The status block, what the master reads of this unit (every slow tick, and ~10 times a second on a
        parallel unit: a trip or a lost BMS reaches the master's next cycle, not one a slow period later)."""
        if not self.cfg.parallel.enabled:
            return
        sb = status_block()
        self._native_img.publish_many(unit_state(ctrl))
        self.image.set_words(HOLDING, sb.address, self._native_img.get_words(HOLDING, sb.address, sb.count))

    def _site_ratings(self, site: dict) -> None:
        """A master: the site's rating (the units seen) bounds the setpoints SCADA may write and is what
        SunSpec 702 and 713 report."""
        rated = max(site["rated_w"], self._unit_rated_w)
        if rated != self.rated_w:
            self.rated_w = rated
            self.rated_va = max(self.cfg.pcs.apparent_va * rated / self._unit_rated_w, rated)
            w = rated
            self._sunspec_limits.update(WSet=(-w, w), VarSet=(-self.rated_va, self.rated_va))
            with self._ss_lock:
                for name in ("WMaxRtg", "WChaRteMaxRtg", "WDisChaRteMaxRtg"):
                    self.ss.set_value(702, name, rated)
        wh = site["energy_chg_wh"] + site["energy_dchg_wh"]
        if wh > 0:
            self.battery_wh = wh
            with self._ss_lock:
                self.ss.set_value(713, "WHRtg", wh)

    def _publish_sunspec(self, ctrl, pcs, soc, alarms, disp, remaining) -> None:
        ss, c = self.ss, ctrl.commands
        ss.set_value(701, "W", pcs)
        ss.set_value(701, "Var", c.pcs_reactive_var if pcs is not None else None)
        ss.set_value(701, "Hz", 50.0 if pcs is not None else None)
        ss.set_raw(701, "St", int(c.pcs_run))
        ss.set_raw(701, "InvSt", 3 if c.pcs_run and pcs and abs(pcs) > 1 else (1 if c.pcs_run else 0))
        ss.set_raw(701, "ConnSt", int(ctrl.on_grid))
        ss.set_value(713, "SoC", soc)
        ss.set_value(713, "WHAvail", None if soc is None else self.battery_wh * soc / 100.0)
        ss.set_raw(713, "Sta", 2 if any(a >= 40000 for a in alarms) else (1 if alarms else 0))
        ss.set_raw(715, "DERHb", (ss.raw(ss.point(715, "DERHb")) + 1) & 0xFFFFFFFF)
        ss.set_raw(704, "WSetRvrtRem", round(remaining) if disp else 0)
        if disp is None and ss.raw(ss.point(704, "WSetEna")) == 1:
            ss.set_raw(704, "WSetEna", 0)          # the lease ran out: the setpoint is no longer enabled
        if ctrl._reactive is None and ss.raw(ss.point(704, "VarSetEna")) == 1:
            ss.set_raw(704, "VarSetEna", 0)
        self.image.set_words(HOLDING, SUNSPEC_BASE, list(ss.words))


def register_map_markdown() -> str:
    """docs/dispatch.md's register tables, from the objects the server serves."""
    native = shipped_profiles()["EMS-DISPATCH"]
    lines = ["### Native map (unit ID 1)", "",
             "| table | address | name | type | scale | unit | access | range | description |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(native.registers.values(), key=lambda r: (r.function, r.address)):
        table = "holding (03/06/16)" if r.function == 3 else "input (04)"
        rng = f"{r.min:.10g} … {r.max:.10g}" if r.writable else ""
        desc = r.description.replace("|", "/")
        lines.append(f"| {table} | {r.address} | `{r.name}` | {r.type} | {r.scale:g} | {r.unit} | "
                     f"{'RW' if r.writable else 'R'} | {rng} | {desc} |")
    ss = SunSpecMap()
    lines += ["", f"### SunSpec (holding registers from {SUNSPEC_BASE}: 'SunS', then the models, then 0xFFFF 0)", "",
              "| model | model address | length |", "|---|---|---|"]
    for mid, m in ss.models.items():
        lines.append(f"| {mid} | {ss.model_addr[mid]} | {m.len - 2} |")
    lines += ["", "Writable points (all other points read-only or refused with ILLEGAL_ADDRESS):", "",
              "| model | point | address | type | scale factor | meaning |", "|---|---|---|---|---|---|"]
    for (mid, name), meaning in SUNSPEC_WRITABLE.items():
        p = ss.point(mid, name)
        sf = f"{p.sf} = {ss.sf(p)}" if p.sf else ""
        lines.append(f"| {mid} | {name} | {p.address} | {p.type} | {sf} | {meaning} |")
    return "\n".join(lines) + "\n"

