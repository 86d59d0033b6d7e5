"""The controller's device layer: Modbus engine and BMS CAN link in, commands out, once per fast tick.

Which register feeds which reading is decided by the device's role; a profile used in a role must have
the registers that role needs (checked when the site starts, with the missing names in the error):

| role            | reads (→ controller)                        | writes (held, refreshed)                          |
|-----------------|---------------------------------------------|---------------------------------------------------|
| grid_meter      | active_power_w → grid_w                     |                                                   |
| pv_meter        | active_power_w → pv_w                       |                                                   |
| dg_meter        | active_power_w → dg_w                       |                                                   |
| pcs             | active_power_w → pcs_w                      | active_power_setpoint_w, run_command (+ setpoint_timeout_s once) |
| pv_inverter     | active_power_w → pv_w (when no pv_meter)    | active_power_limit_w (+ limit_timeout_s once)     |
| air_conditioner | cabinet_temperature_degc → cabinet_t_degc   |                                                   |

A reading reaches the controller only when a new sample arrived and decoded to a value: a device that
stops answering simply stops updating, and the controller's staleness rule raises its comm-loss alarm
and takes the safe state. The BMS is read from CAN: cell frames land in the core's arrays inside the
link; cluster status and limits go to the controller while every cluster's frames are recent.
"""
from __future__ import annotations

import can

from ems.comm.can_link import (BmsCanLink, CL_CHG_A, CL_CHG_PROHIBITED, CL_CONNECTED, CL_DCHG_A, CL_DCHG_PROHIBITED,
                               CL_I, CL_INSULATION, CL_V)
from ems.comm.modbus_client import Device, Link, ModbusEngine
from ems.comm.profiles import Profile, shipped_profiles
from ems.control.events import AIRCON_ID, GRID_METER_ID, PCS_ID, PV_ID

ROLE_READS = {
    "grid_meter": {"active_power_w": "grid_w"},
    "pv_meter": {"active_power_w": "pv_w"},
    "dg_meter": {"active_power_w": "dg_w"},
    "pcs": {"active_power_w": "pcs_w"},
    "pv_inverter": {"active_power_w": "pv_w"},
    "air_conditioner": {"cabinet_temperature_degc": "cabinet_t_degc"},
}
ROLE_WRITES = {
    "pcs": ("active_power_setpoint_w", "run_command", "setpoint_timeout_s"),
    "pv_inverter": ("active_power_limit_w", "limit_timeout_s"),
}
ROLE_DEVICE_IDS = {"grid_meter": GRID_METER_ID, "pv_meter": 0x05020000, "dg_meter": 0x05090000, "pcs": PCS_ID,
                   "pv_inverter": PV_ID, "air_conditioner": AIRCON_ID}


def check_role(profile: Profile, role: str) -> None:
    need = set(ROLE_READS.get(role, {})) | set(ROLE_WRITES.get(role, ()))
    missing = sorted(n for n in need if n not in profile.registers)
    if missing:
        raise ValueError(f"profile {profile.model} ({profile.path}) cannot serve as {role}: missing register(s) "
                         f"{', '.join(missing)}")
    for n in ROLE_WRITES.get(role, ()):
        if not profile.registers[n].writable:
            raise ValueError(f"profile {profile.model}: {n} must be writable to serve as {role}")


def build_engine(cfg, io, profiles: dict[str, Profile] | None = None) -> tuple[ModbusEngine, dict[str, str]]:
    """The site's Modbus engine from `[[devices.modbus]]`: devices on the same line share a channel.
    Returns the engine and role → device name."""
    profiles = profiles or shipped_profiles()
    engine = ModbusEngine(io, cfg.loops.fast_period_ms / 1000.0)
    lines: dict[Link, list[Device]] = {}
    roles: dict[str, str] = {}
    dv = cfg.devices
    for d in dv.modbus:
        p = profiles[d.model]
        check_role(p, d.role)
        link = Link(d.transport, d.host, d.port, d.serial_port, d.baudrate, timeout_s=d.timeout_ms / 1000.0,
                    gap_ms=d.gap_ms)
        if d.transport == "rtu":        # one channel per serial line, whatever the other settings say
            link = next((lk for lk in lines if lk.transport == "rtu" and lk.serial_port == d.serial_port), link)
        init = {}
        if d.role == "pcs":
            init["setpoint_timeout_s"] = dv.pcs_command_timeout_s
        elif d.role == "pv_inverter":
            init["limit_timeout_s"] = dv.pcs_command_timeout_s
        lines.setdefault(link, []).append(Device(d.name, p, d.unit_id, ROLE_DEVICE_IDS[d.role], d.role, init))
        roles[d.role] = d.name
    for link, devices in lines.items():
        engine.add(link, devices)
    return engine, roles


class SiteIo:
    def __init__(self, cfg, engine: ModbusEngine, roles: dict[str, str], bms: BmsCanLink | None):
        self.cfg = cfg
        self.engine = engine
        self.roles = roles
        self.bms = bms
        self.invert = {d.name for d in cfg.devices.modbus if d.invert}
        reads = []
        for role, name in roles.items():
            for reg, reading in ROLE_READS.get(role, {}).items():
                if role == "pv_inverter" and "pv_meter" in roles:
                    continue            # the PV meter is the reading of record
                reads.append((name, reg, reading))
        self._reads = reads
        self._seen: dict[tuple[str, str], float] = {}
        regs = {role: engine.device(name).profile.registers for role, name in roles.items()}
        self._pcs_sp = regs["pcs"]["active_power_setpoint_w"] if "pcs" in regs else None
        q = regs.get("pcs", {}).get("reactive_power_setpoint_var")
        self._pcs_q = q if q is not None and q.writable else None
        self._pv_limit = regs["pv_inverter"]["active_power_limit_w"] if "pv_inverter" in regs else None
        self._sent_open: tuple[int, ...] | None = None
        self._open_sent_at_s = -1e18
        self._alive = 0

    def read(self, ctrl, now_s: float) -> None:
        for dev, reg, reading in self._reads:
            sample = self.engine.sample(dev, reg)
            if sample is None or self._seen.get((dev, reg)) == sample[1]:
                continue
            self._seen[(dev, reg)] = sample[1]
            value = sample[0]
            if value is not None:
                ctrl.update_meter(reading, -value if dev in self.invert and reading.endswith("_w") else value)
        if self.bms is not None:
            self.bms.poll(now_s)
            if self.bms.clusters_fresh(now_s):
                t = self.bms.cluster
                ctrl.update_bms(None, None, t[:, CL_V], t[:, CL_I], t[:, CL_CHG_A], t[:, CL_DCHG_A], t[:, CL_CONNECTED],
                                t[:, CL_CHG_PROHIBITED], t[:, CL_DCHG_PROHIBITED], t[:, CL_INSULATION])

    def actuate(self, cmd, now_s: float) -> None:
        refresh = self.cfg.devices.setpoint_refresh_s
        if self._pcs_sp is not None:
            pcs, r = self.roles["pcs"], self._pcs_sp
            self.engine.hold(pcs, r.name, round(min(max(cmd.pcs_setpoint_w, r.min), r.max)), refresh)
            self.engine.hold(pcs, "run_command", 1 if cmd.pcs_run else 0, refresh)
            if self._pcs_q is not None:
                q = self._pcs_q
                self.engine.hold(pcs, q.name, round(min(max(cmd.pcs_reactive_var, q.min), q.max)), refresh)
        if self._pv_limit is not None:
            r = self._pv_limit
            limit = r.max if cmd.pv_limit_w is None else min(max(cmd.pv_limit_w, r.min), r.max)
            self.engine.hold(self.roles["pv_inverter"], r.name, round(limit), refresh)
        if self.bms is not None:
            opened = tuple(cmd.open_contactors)
            if opened != self._sent_open or now_s - self._open_sent_at_s >= 1.0:
                self._send_command(opened)
                self._sent_open, self._open_sent_at_s = opened, now_s

    def _send_command(self, opened: tuple[int, ...]) -> None:
        m = self.bms.db.get_message_by_name("EmsCommand")
        mask = 0
        for c in opened:
            mask |= 1 << c
        self._alive = (self._alive + 1) % 256
        self.bms.bus.send(can.Message(arbitration_id=m.frame_id, is_extended_id=False, data=m.encode(
            {"open_contactors_mask": mask, "fault_reset": 0, "alive_counter": self._alive})))

