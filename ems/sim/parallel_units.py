"""Many light simulated parallel units in one process (`python -m ems.sim.parallel_units`), for the scale test
and the benchmark of a master over up to 1000 units. Each unit is a Modbus TCP server on its own loopback
port serving the dispatch map's parallel block through the slave's real command check
(ems.parallel.slave.CommandCheck) and lease (Follower); behind it a battery reduced to its energy: the PCS
follows the setpoint at once within the unit's rating, the SOC integrates it. Commands on stdin, one per
line: `stop K` closes unit K's server (a unit that drops out), `start K` opens it again.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time

from ems.comm.modbus_server import HOLDING, IoThread, ProfileImage
from ems.comm.profiles import shipped_profiles
from ems.config.schema import SiteConfig
from ems.parallel.block import (AVAILABLE, ROLE_SLAVE, STATE_NAMES, in_command_block,
                                status_block)
from ems.parallel.slave import CommandCheck, Follower


class LightUnit:
    def __init__(self, cfg: SiteConfig, unit_id: int, soc_pct: float, rated_w: float, energy_wh: float):
        self.cfg, self.id = cfg, unit_id
        self.rated_w, self.energy_wh, self.soc = rated_w, energy_wh, soc_pct
        self.check = CommandCheck(cfg, rated_w)
        self.follower = Follower(cfg.parallel, time.monotonic())
        self.image = ProfileImage(shipped_profiles()["EMS-DISPATCH"])
        self.image.validate = self._validate
        self.image.on_read = self._fresh
        self.setpoint_w = 0.0
        self.heartbeat = 0
        self._t = time.monotonic()

    def _validate(self, table, address, words, client):
        if table == HOLDING and in_command_block(address, len(words)):
            cmd = self.check.check(address, words, client)
            self.follower.take(cmd, time.monotonic())
            return
        from ems.comm.modbus_server import WriteRefused
        from pymodbus.constants import ExcCodes
        raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, "a light unit takes parallel commands only")

    def _fresh(self, table, address, count) -> None:
        """Before a read: step the battery to now and serve the state as of this moment."""
        now = time.monotonic()
        view = self.follower.view(now)
        self.setpoint_w = view.setpoint_w or 0.0
        self.soc = min(max(self.soc - self.setpoint_w * (now - self._t) / 3600.0 / self.energy_wh * 100.0, 0.0), 100.0)
        self._t = now
        self.heartbeat += 1
        sb = status_block()
        values = {"parallel_id": self.id, "parallel_units": self.cfg.parallel.units, "parallel_role": ROLE_SLAVE,
                  "parallel_state": STATE_NAMES.index(view.state), "unit_flags": 1 << AVAILABLE,
                  "unit_charge_max_w": self.rated_w if self.soc < 100 else 0.0,
                  "unit_discharge_max_w": self.rated_w if self.soc > 0 else 0.0, "unit_soc_pct": self.soc,
                  "unit_charge_energy_wh": (100 - self.soc) / 100 * self.energy_wh,
                  "unit_discharge_energy_wh": self.soc / 100 * self.energy_wh, "unit_pcs_power_w": self.setpoint_w,
                  "unit_setpoint_w": self.setpoint_w,
                  "parallel_seq_echo": self.follower.cmd.seq if self.follower.cmd else 0,
                  "unit_rated_power_w": self.rated_w, "unit_first_alarm": 56 if view.state == "fallback" else 0,
                  "unit_heartbeat": self.heartbeat & 0xFFFF,
                  "parallel_following_id": self.follower.following_id(now)}
        self.image.set_words(HOLDING, sb.address, sb.encode(values))


def unit_cfg(unit_id: int, units: int, lease_s: float) -> SiteConfig:
    base = SiteConfig()
    par = dataclasses.replace(base.parallel, enabled=True, role="slave", unit_id=unit_id, units=units, master_id=1,
                              master_address="127.0.0.1", lease_s=lease_s)
    return dataclasses.replace(base, parallel=par)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ems.sim.parallel_units", description=__doc__.split("\n")[0])
    ap.add_argument("--units", type=int, default=999, help="light units (slaves), IDs first-id …")
    ap.add_argument("--first-id", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=0, help="the group's unit count (default: units + 1)")
    ap.add_argument("--first-port", type=int, required=True, help="unit K listens on first-port + K")
    ap.add_argument("--rated-w", type=float, default=100_000.0)
    ap.add_argument("--energy-wh", type=float, default=215_000.0)
    ap.add_argument("--lease-s", type=float, default=3.0)
    a = ap.parse_args(argv)
    if not 1 <= a.units <= 1000 or a.first_port + a.units > 65535:
        ap.error("--units 1 … 1000, ports within 65535")
    size = a.group_size or a.units + 1
    io = IoThread("ems-units-io")
    units = [LightUnit(unit_cfg(a.first_id + k, size, a.lease_s), a.first_id + k, 20.0 + 60.0 * k / max(a.units, 1),
                       a.rated_w, a.energy_wh) for k in range(a.units)]
    servers = {}
    for k, u in enumerate(units):
        servers[k] = io.serve_tcp({1: u.image}, "127.0.0.1", a.first_port + k, name=f"unit {u.id}")
    print(f"parallel units ready: {a.units} units, IDs {a.first_id} … {a.first_id + a.units - 1}, ports "
          f"{a.first_port} … {a.first_port + a.units - 1}", flush=True)
    done = threading.Event()

    def commands():
        for line in sys.stdin:
            verb, _, arg = line.strip().partition(" ")
            if verb in ("stop", "start") and arg.isdigit() and int(arg) < len(units):
                k = int(arg)
                if verb == "stop" and k in servers:
                    io.call(servers.pop(k).shutdown())
                elif verb == "start" and k not in servers:
                    servers[k] = io.serve_tcp({1: units[k].image}, "127.0.0.1", a.first_port + k)
                print(f"{verb} {k} done", flush=True)
        done.set()
    threading.Thread(target=commands, daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    io.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
