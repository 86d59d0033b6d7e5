"""The simulated site's device list: what `ems sim-site` serves (and writes into the site file it hands to the
controller) when a site file names no devices, and what `ems simulate` simulates in-process.

The layout follows the manual: the meters are DTSU666-H at addresses 101 (grid), 121 (PV) and 182 (diesel)
behind one Modbus TCP "RS485 gateway"; the PCS, PV inverter and air conditioner on ports of their own; the
dry contacts on an I/O module (every input and output wired, in io_map order); the BMS on CAN through a
socketcand server (the project's cell protocol), or a BAU on Modbus TCP where the site says
`[devices] bms = "modbus"`.
"""
from __future__ import annotations

import dataclasses

from ems.config.schema import IoChannel, ModbusDevice
from ems.control.io_map import DO_NAMES, KNOWN_INPUTS

METER_UNITS = {"grid_meter": 101, "pv_meter": 121, "dg_meter": 182}    # the manual's meter addresses
IO_DEVICE = "dio"


def device_table(generator: bool = False, air_conditioner: bool = False, bms: str = "can",
                 can_profile: str = "EMS-CAN-CELLS", host: str = "127.0.0.1", port_of=lambda name: 502) -> dict:
    """The [devices] and [dry_contacts] tables of the simulated site (TOML-ready) for a site with (or without)
    a generator and an air conditioner, its BMS on `bms` ("can" or "modbus"); `port_of(name)` gives each
    server's port ("meters", "pcs", "pv_inverter", "air_conditioner", "dio", "bau", "can")."""
    meters = ["grid_meter", "pv_meter"] + (["dg_meter"] if generator else [])
    modbus = [{"name": m, "role": m, "model": "DTSU666-H", "host": host, "port": port_of("meters"),
               "unit_id": METER_UNITS[m]} for m in meters]
    modbus.append({"name": "pcs", "role": "pcs", "model": "SIM-PCS", "host": host, "port": port_of("pcs")})
    modbus.append({"name": "pv_inverter", "role": "pv_inverter", "model": "SIM-PV", "host": host,
                   "port": port_of("pv_inverter")})
    if air_conditioner:
        modbus.append({"name": "air_conditioner", "role": "air_conditioner", "model": "SIM-AC", "host": host,
                       "port": port_of("air_conditioner")})
    modbus.append({"name": IO_DEVICE, "role": "io_module", "model": "SIM-DIO", "host": host, "port": port_of("dio")})
    devices: dict = {"modbus": modbus, "bms": bms}
    if bms == "modbus":
        modbus.append({"name": "bau", "role": "bms", "model": "SIM-BAU", "host": host, "port": port_of("bau")})
    else:
        devices.update(can_interface="socketcand", can_channel="can0", can_host=host, can_port=port_of("can"),
                       can_profile=can_profile)            # the simulated BMS sends both message sets
    channels = [{"name": n, "channel": i} for i, n in enumerate(KNOWN_INPUTS)]
    channels += [{"name": n, "channel": i} for i, n in enumerate(DO_NAMES)]
    return {"devices": devices, "dry_contacts": {"backend": "modbus", "io_device": IO_DEVICE, "channels": channels}}


def sim_config(cfg):
    """`ems simulate`'s site: the file's own devices where it names them, else the simulated site's; the dry
    contacts on the simulated I/O module whatever backend the file names (the simulation is the site)."""
    t = device_table(cfg.generator.enabled, cfg.air_conditioner.enabled, cfg.devices.bms, cfg.devices.can_profile)
    devices, dc = cfg.devices, cfg.dry_contacts
    if not devices.modbus:
        extra = {k: v for k, v in t["devices"].items() if k not in ("modbus", "can_host", "can_port")}
        extra.update(can_interface="virtual", can_channel="in-process")     # in-process: no bus, no port
        devices = dataclasses.replace(devices, modbus=[ModbusDevice(**e) for e in t["devices"]["modbus"]], **extra)
    elif not any(d.role == "io_module" for d in devices.modbus):
        io = next(e for e in t["devices"]["modbus"] if e["role"] == "io_module")
        devices = dataclasses.replace(devices, modbus=list(devices.modbus) + [ModbusDevice(**io)])
    if dc.backend != "modbus":
        dc = dataclasses.replace(dc, backend="modbus", io_device=IO_DEVICE,
                                 channels=[IoChannel(**c) for c in t["dry_contacts"]["channels"]])
    return dataclasses.replace(cfg, devices=devices, dry_contacts=dc)
