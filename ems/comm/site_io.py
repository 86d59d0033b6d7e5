"""The controller's device layer: the site's devices in, commands out, once per fast tick.

`SiteIo` is the one place where devices meet the controller, on the board and in every simulation: the
Modbus side (the engine on the board; `ems simulate` hands in an in-process stand-in with the same
`sample` / `hold` / `device` interface), the BMS (CAN link or Modbus BMS: both fill the core's cell arrays
and a cluster table), the dry contacts (GPIO, a Modbus I/O module, or none). Which register feeds which
reading is decided by the device's role (ems.comm.roles).

A reading reaches the controller only when a new sample arrived and decoded to a value: a device that stops
answering simply stops updating, and the controller's staleness rule raises its comm-loss alarm (per
device, after its `comm_loss_s`) and takes the safe state. The controller sees only what the devices
report; a role the site has no device for stays unknown (`notes()` says what that means at start).

Grid state: the `grid_present` contact when one is wired, else the PCS's `grid_forming` flag when its
profile has one, else the grid is assumed present (off-grid functions then never engage). Either way the
site is off grid while the EMS holds its own grid relay open (forced off-grid).
"""
from __future__ import annotations

import logging
import time

from ems.comm.can_link import (CL_CHG_A, CL_CHG_PROHIBITED, CL_CONNECTED, CL_DCHG_A, CL_DCHG_PROHIBITED, CL_I,
                               CL_INSULATION, CL_V)
from ems.comm.dry_contacts import Debouncer
from ems.comm.modbus_client import Device, Link, ModbusEngine
from ems.comm.profiles import Profile, shipped_profiles
from ems.comm.roles import ROLE_COMM, ROLE_DEVICE_IDS, ROLE_READS, check_role
from ems.control.io_map import SAFETY_INPUTS

log = logging.getLogger("ems.site_io")
GPIO_AGE_S = 1.0        # the board's own lines are read every tick: a chip that stops answering shows within 1 s


def build_engine(cfg, io, profiles: dict[str, Profile] | None = None) -> tuple[ModbusEngine, dict[str, str]]:
    """The site's Modbus engine from `[[devices.modbus]]`: devices on the same line share a channel.
    Returns the engine and role → device name."""
    profiles = profiles or shipped_profiles()
    engine = ModbusEngine(io, cfg.loops.fast_period_ms / 1000.0)
    lines: dict[Link, list[Device]] = {}
    roles: dict[str, str] = {}
    dv, b = cfg.devices, cfg.battery
    for d in dv.modbus:
        p = profiles[d.model]
        check_role(p, d.role)
        link = Link(d.transport, d.host, d.port, d.serial_port, d.baudrate, d.parity, d.stopbits, d.bytesize,
                    timeout_s=d.timeout_ms / 1000.0, gap_ms=d.gap_ms)
        if d.transport == "rtu":        # one channel per serial line, whatever the other settings say
            link = next((lk for lk in lines if lk.transport == "rtu" and lk.serial_port == d.serial_port), link)
        init = {}
        if d.role == "pcs":
            init["setpoint_timeout_s"] = dv.pcs_command_timeout_s
        elif d.role == "pv_inverter":
            init["limit_timeout_s"] = dv.pcs_command_timeout_s
        shape = (b.clusters, b.cells_per_cluster) if d.role == "bms" else (0, 0)
        lines.setdefault(link, []).append(Device(d.name, p, d.unit_id, ROLE_DEVICE_IDS[d.role], d.role, init,
                                                 clusters=shape[0], cells=shape[1]))
        roles[d.role] = d.name
    for link, devices in lines.items():
        engine.add(link, devices)
    return engine, roles


class SiteIo:
    """`modbus`: the engine (or its in-process stand-in); `roles`: role → device name; `bms`: a CAN link or a
    Modbus BMS (poll / clusters_fresh / command / cluster table), None without one; `contacts`: the dry-contact
    backend (read_inputs / write_outputs), None when nothing is wired."""

    def __init__(self, cfg, modbus, roles: dict[str, str], bms, contacts=None):
        self.cfg = cfg
        self.modbus = modbus
        self.roles = roles
        self.bms = bms
        self.contacts = contacts
        dc = cfg.dry_contacts
        self.debouncer = Debouncer(dc.debounce_ms, tuple(dc.inverted_inputs))
        self.invert = {d.name for d in cfg.devices.modbus if d.invert}
        self._ages = {d.name: d.comm_loss_s for d in cfg.devices.modbus}
        reads = []
        for role, name in roles.items():
            for reg, reading in ROLE_READS.get(role, {}).items():
                if reading is None or (role == "pv_inverter" and "pv_meter" in roles):
                    continue            # the I/O module is read as contacts; the PV meter is the reading of record
                reads.append((name, reg, reading))
        self._reads = reads
        self._seen: dict[tuple[str, str], float] = {}
        profile = {role: modbus.device(name).profile for role, name in roles.items()}
        regs = {role: p.registers for role, p in profile.items()}
        self._pcs_sp = regs["pcs"]["active_power_setpoint_w"] if "pcs" in regs else None
        q = regs.get("pcs", {}).get("reactive_power_setpoint_var")
        self._pcs_q = q if q is not None and q.writable else None
        self._pv_limit = regs["pv_inverter"]["active_power_limit_w"] if "pv_inverter" in regs else None
        # fault and alarm words of every device: (device, register, device id) → the bits last seen
        self._alarm_words = [(name, r, ROLE_DEVICE_IDS[role]) for role, name in roles.items()
                             for r in profile[role].alarm_registers()]
        self._alarm_bits: dict[tuple[str, str, int], bool] = {}
        wired = self._wired_inputs()
        self.grid_source = ("contact" if "grid_present" in wired else
                            "pcs" if "pcs" in profile and profile["pcs"].flag("grid_forming") else "assumed")
        self._grid_flag = profile["pcs"].flag("grid_forming") if self.grid_source == "pcs" else None
        self._raw: dict[str, bool] = {}
        self._bms_seen = -1
        self._contact_errors = 0
        self._contact_error_logged_s = -1e18

    def _wired_inputs(self) -> set[str]:
        return set(self.contacts.wired_inputs()) if self.contacts is not None else set()

    # ------------------------------------------------------------------ what the controller supervises
    def supervision(self) -> dict[str, float]:
        """Comm supervision key → comm-loss age, s, for the devices this site has."""
        out: dict[str, float] = {}
        for role, name in self.roles.items():
            key = ROLE_COMM[role]
            out[key] = min(out.get(key, 1e9), self._ages.get(name, 5.0))
        if self.bms is not None and "bms" not in out:
            out["bms"] = self.cfg.devices.bms_comm_loss_s
        if self.cfg.dry_contacts.backend == "gpio":
            out["io_module"] = GPIO_AGE_S
        return out

    def contacts_stop(self) -> bool:
        """Inputs that stop the PCS (EPO, fire, water) are wired through a backend that can be lost."""
        if self.cfg.dry_contacts.backend == "memory":
            return False
        stopping = {n for n, (_, stops) in SAFETY_INPUTS.items() if stops}
        return bool(stopping & self._wired_inputs())

    def attach(self, ctrl) -> None:
        ctrl.supervise(self.supervision(), self.contacts_stop())
        if "pv" not in self.supervision() and self.cfg.pv.installed_ac_w == 0:
            ctrl.set_constant("pv_w", 0.0)       # no PV on the site: PV power is known to be zero

    def notes(self) -> list[str]:
        """What the controller does without the roles the site has no device for (printed at start)."""
        have, cfg, out = set(self.roles), self.cfg, []
        if "grid_meter" not in have:
            out.append("no grid meter: the grid exchange is unknown, so the battery never discharges (the feed-in "
                       "limit's safe state) and self-consumption and peak shaving stay idle")
        if "pcs" not in have:
            out.append("no PCS: nothing is commanded; protection, estimation and records run")
        if not have & {"pv_meter", "pv_inverter"}:
            out.append("no PV meter or inverter: " + ("the site has no PV (pv.installed_ac_w = 0)"
                       if cfg.pv.installed_ac_w == 0 else "PV power is unknown (so is the load) and PV cannot be "
                                                          "curtailed"))
        if cfg.air_conditioner.enabled and "air_conditioner" not in have:
            out.append("air conditioner control is on but no device reads the cabinet temperature: its relays stay off")
        if cfg.generator.enabled and "dg_meter" not in have:
            out.append("no diesel meter: generator power counts as 0 W in the balance")
        if self.bms is None:
            out.append("no BMS: battery_lost (7), the PCS stays at zero power")
        out.append({"contact": "grid state: the grid_present contact",
                    "pcs": "grid state: the PCS's grid_forming flag",
                    "assumed": "grid state: no grid_present contact and no PCS flag, the grid is assumed present "
                               "(off-grid functions never engage)"}[self.grid_source])
        return out

    # ------------------------------------------------------------------ in
    def read(self, ctrl, now_s: float) -> None:
        m = self.modbus
        for dev, reg, reading in self._reads:
            sample = m.sample(dev, reg)
            if sample is None or self._seen.get((dev, reg)) == sample[1]:
                continue
            self._seen[(dev, reg)] = sample[1]
            value = sample[0]
            if value is not None:
                ctrl.update_meter(reading, -value if dev in self.invert and reading.endswith("_w") else value)
        for dev, r, dev_id in self._alarm_words:
            self._alarm_word(ctrl, dev, r, dev_id)
        if self.bms is not None:
            self.bms.poll(now_s)
            if self.bms.clusters_fresh(now_s) and self.bms.cluster_updates != self._bms_seen:
                self._bms_seen = self.bms.cluster_updates     # only news: the cluster data changes every 100 ms
                t = self.bms.cluster
                ctrl.update_bms(None, None, t[:, CL_V], t[:, CL_I], t[:, CL_CHG_A], t[:, CL_DCHG_A], t[:, CL_CONNECTED],
                                t[:, CL_CHG_PROHIBITED], t[:, CL_DCHG_PROHIBITED], t[:, CL_INSULATION])
            ctrl.cells_awaited(self.bms.cells_awaited)
        self._read_contacts(ctrl)
        self._grid_state(ctrl)

    def _alarm_word(self, ctrl, dev: str, r, dev_id: int) -> None:
        sample = self.modbus.sample(dev, r.name)
        if sample is None or sample[0] is None or self._seen.get((dev, r.name)) == sample[0]:
            return                            # nothing new: the word has not changed
        self._seen[(dev, r.name)] = sample[0]
        for bit, code in r.alarm_bits:
            active = r.bit(sample[0], bit)
            key = (dev, r.name, bit)
            if self._alarm_bits.get(key, False) != active:
                self._alarm_bits[key] = active
                ctrl.external_alarm(code, active, f"{dev} {r.name} bit {bit}", dev_id, holder=f"{dev}.{r.name}.{bit}")

    def _read_contacts(self, ctrl) -> None:
        c = self.contacts
        if c is None:
            return
        try:
            raw = c.read_inputs()
        except Exception as exc:            # a GPIO chip gone, a kernel error: supervised as io_module lost
            self._contact_errors += 1
            if time.monotonic() - self._contact_error_logged_s > 60.0:
                log.error("dry contacts: %s (%d errors so far)", exc, self._contact_errors)
                self._contact_error_logged_s = time.monotonic()
            raw = None
        if raw is not None:
            self._raw = raw
            ctrl.update_meter("contacts", 1.0)
        for name, active in self.debouncer.update(self._raw, ctrl.clock.monotonic_s()).items():
            ctrl.set_di(name, active)

    def _grid_state(self, ctrl) -> None:
        relay_open = ctrl.commands.outputs.get("grid_relay_open", False)
        if self.grid_source == "contact":
            if "grid_present" not in ctrl.di:
                return                        # not read yet: the grid state stays as it was
            present = ctrl.di["grid_present"]
        elif self.grid_source == "pcs":
            r, bit = self._grid_flag
            sample = self.modbus.sample(self.roles["pcs"], r.name)
            if sample is None or sample[0] is None:
                return                        # not read yet or stale: the grid state stays as it was
            present = not r.bit(sample[0], bit)
            relay_open = False                # the PCS's own flag already says whether the site is islanded
        else:
            present = True
        on_grid = present and not relay_open
        if on_grid != ctrl.on_grid:
            ctrl.set_on_grid(on_grid)

    # ------------------------------------------------------------------ out
    def actuate(self, cmd, now_s: float) -> None:
        refresh = self.cfg.devices.setpoint_refresh_s
        m = self.modbus
        if self._pcs_sp is not None:
            pcs, r = self.roles["pcs"], self._pcs_sp
            m.hold(pcs, r.name, round(min(max(cmd.pcs_setpoint_w, r.min), r.max)), refresh)
            m.hold(pcs, "run_command", 1 if cmd.pcs_run else 0, refresh)
            if self._pcs_q is not None:
                q = self._pcs_q
                m.hold(pcs, q.name, round(min(max(cmd.pcs_reactive_var, q.min), q.max)), refresh)
        if self._pv_limit is not None:
            r = self._pv_limit
            limit = r.max if cmd.pv_limit_w is None else min(max(cmd.pv_limit_w, r.min), r.max)
            m.hold(self.roles["pv_inverter"], r.name, round(limit), refresh)
        if self.bms is not None:
            mask = 0
            for c in cmd.open_contactors:
                mask |= 1 << c
            self.bms.command(mask)
        if self.contacts is not None:
            try:
                self.contacts.write_outputs(cmd.outputs)
            except Exception as exc:         # counted and logged like a failed read
                self._contact_errors += 1
                if time.monotonic() - self._contact_error_logged_s > 60.0:
                    log.error("dry contacts: %s", exc)
                    self._contact_error_logged_s = time.monotonic()
