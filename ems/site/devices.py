"""The site's devices as the site file names them, and nothing else: the Modbus engine for every
`[[devices.modbus]]` (TCP or RTU), the BMS on the configured CAN interface or on Modbus, the dry contacts on
the configured backend — wired into one `SiteIo`.

Start-up rules: a serial port, CAN interface or GPIO chip that does not exist is a clear error naming its key
(`SiteError`, all of them at once); a device that exists but does not answer is not an error: it gets its
comm-loss alarm and its safe state, and the controller runs on.
"""
from __future__ import annotations

import os
import time

from ems.comm.bms_modbus import ModbusBms
from ems.comm.can_bus import CanConfigError, CanPort, check_interface
from ems.comm.can_link import BmsCanLink
from ems.comm.can_profiles import can_profiles
from ems.comm.dry_contacts import make_backend
from ems.comm.profiles import site_profiles
from ems.comm.site_io import SiteIo, build_engine
from ems.control.events import STACK_ID


class SiteError(RuntimeError):
    """The site file names hardware this machine does not have; one line per problem, each naming its key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def preflight(cfg) -> list[str]:
    """Hardware the site file names that does not exist here (checked before anything is opened)."""
    problems = []
    for i, d in enumerate(cfg.devices.modbus):
        if d.transport == "rtu" and not os.path.exists(d.serial_port):
            problems.append(f"devices.modbus[{i}].serial_port = {d.serial_port!r}: no such serial port ({d.name})")
    if cfg.devices.bms == "can":
        try:
            check_interface(cfg.devices.can_interface, cfg.devices.can_channel)
        except CanConfigError as exc:
            problems.append(str(exc))
    dc = cfg.dry_contacts
    if dc.backend == "gpio" and not os.path.exists(dc.gpio_chip):
        problems.append(f"dry_contacts.gpio_chip = {dc.gpio_chip!r}: no such GPIO chip on this machine")
    return problems


def bms_measures_insulation(cfg) -> bool:
    """Whether the site's BMS reports insulation resistance (its protection rows are dropped otherwise:
    a reading the BMS never sends is not a fault of its insulation monitor)."""
    if cfg.devices.bms == "modbus":
        d = next(d for d in cfg.devices.modbus if d.role == "bms")
        return "cluster_insulation_kohm" in site_profiles(cfg.devices.profiles_dir)[d.model].arrays
    p = can_profiles(cfg.devices.profiles_dir)[cfg.devices.can_profile]
    return "insulation_kohm" in p.cluster


class SiteDevices:
    """The devices of one site, opened (`io`: the process's I/O thread); `buffers`: the core's arrays the
    BMS writes cells into."""

    def __init__(self, cfg, io, buffers):
        problems = preflight(cfg)
        if problems:
            raise SiteError(problems)
        self.cfg = cfg
        dv = cfg.devices
        self.profiles = site_profiles(dv.profiles_dir)
        self.engine, self.roles = build_engine(cfg, io, self.profiles)
        b = buffers
        self.can = None
        if dv.bms == "can":
            self.can = CanPort(dv.can_interface, dv.can_channel, dv.can_host, dv.can_port,
                               silence_reopen_s=max(dv.bms_comm_loss_s, 2.0))
            self.bms = BmsCanLink(self.can, b.cell_v, b.cell_t, b.fresh, can_profiles(dv.profiles_dir)[dv.can_profile],
                                  cell_max_age_s=dv.bms_comm_loss_s, alarm_encoding=dv.can_alarm_encoding)
        else:
            self.bms = ModbusBms(self.engine, self.roles["bms"], b.cell_v, b.cell_t, b.fresh,
                                 cell_max_age_s=next(d.comm_loss_s for d in dv.modbus if d.role == "bms"),
                                 refresh_s=dv.setpoint_refresh_s)
        try:
            self.contacts = make_backend(cfg.dry_contacts, self.engine, dv.setpoint_refresh_s)
        except RuntimeError as exc:           # GpioError: lines held by another process, a kernel refusal …
            if self.can is not None:
                self.can.shutdown()
            raise SiteError([f"dry_contacts.gpio_lines: {exc}"]) from exc
        self.io = SiteIo(cfg, self.engine, self.roles, self.bms, self.contacts)
        self.engine.start()

    def describe(self) -> list[str]:
        """One line per device: what the controller talks to (printed at start)."""
        lines = [f"{r['name']}: {r['role']} {r['model']} at {r['address']}" for r in self.engine.status()]
        dv = self.cfg.devices
        if self.can is not None:
            lines.append(f"bms: CAN {dv.can_profile} on {self.can.label}")
        dc = self.cfg.dry_contacts
        lines.append({"gpio": f"dry contacts: GPIO {dc.gpio_chip} ({len(dc.gpio_lines)} lines)",
                      "modbus": f"dry contacts: I/O module {dc.io_device} ({len(dc.channels)} channels)",
                      "memory": "dry contacts: none wired"}[dc.backend])
        return lines

    def rows(self) -> list[dict]:
        """The equipment list's Modbus and CAN rows (status, last seen) for records and the view."""
        rows = self.engine.status()
        if self.can is not None:
            link = self.bms
            last, now = link.last_rx_s, time.monotonic()
            rows.append({"name": "bms", "device_id": STACK_ID, "role": "bms", "protocol": "can",
                         "model": self.cfg.devices.can_profile, "address": self.can.label, "cycle_ms": 100.0,
                         "status": "online" if link.clusters_fresh(now) else self.can.state,
                         "last_seen_s_ago": None if last is None else round(now - last, 3),
                         "requests": 0, "errors": self.can.errors + link.send_errors + link.counters["malformed"]
                         + link.counters["wrong_length"], "timeouts": 0})
        return rows

    def stop_commands(self, timeout_s: float = 1.0) -> bool:
        """Wait until every held command (the stop and zero-power writes) has reached its device."""
        return self.engine.flush(timeout_s)

    def close(self) -> None:
        self.engine.stop()
        if self.can is not None:
            self.can.shutdown()
        close = getattr(self.contacts, "close", None)
        if close is not None:
            close()
