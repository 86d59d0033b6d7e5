"""Cabinets on one AC bus behind one grid meter (`ems sim-site --ac-bus`): a parallel site simulated as one
sim-site per cabinet. The sim-site that serves the site's grid meter reads the other cabinets' simulated
PCS power over Modbus TCP (as a current transformer on each feeder would measure it) and puts it into
its grid balance: grid = load − PV − own PCS − the other cabinets' PCS. Loopback only, like the rest."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ems.comm.modbus_client import Device, Link, ModbusEngine
from ems.comm.profiles import shipped_profiles
from ems.config.load import load_site


class AcBus:
    def __init__(self, io, site_files: list[Path]):
        self.engine = ModbusEngine(io, 0.05)
        profiles = shipped_profiles()
        self.names: list[str] = []
        for k, path in enumerate(site_files):
            cfg = load_site(path)
            pcs = next((d for d in cfg.devices.modbus if d.role == "pcs"), None)
            if pcs is None:
                raise ValueError(f"{path}: no PCS in [[devices.modbus]]: nothing on the AC bus to read")
            name = f"bus{k}:{pcs.name}"
            # a CT reads continuously: every group at the plant's pace, not the controller's poll intervals
            profile = dataclasses.replace(profiles[pcs.model], groups={g: 20.0 for g in profiles[pcs.model].groups})
            self.engine.add(Link("tcp", pcs.host, pcs.port, timeout_s=0.3), [Device(name, profile, pcs.unit_id)])
            self.names.append(name)
        self.engine.start()

    def pcs_w(self) -> float:
        """The other cabinets' PCS power now (> 0 discharging into the bus); a cabinet not read counts 0."""
        return sum(self.engine.value(n, "active_power_w") or 0.0 for n in self.names)

    def stop(self) -> None:
        self.engine.stop()
