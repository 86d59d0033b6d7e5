"""The equipment list as the manual shows it (000_… §3.5, device list): device ID, name, protocol, model,
address, poll cycle, status, last seen. `ems devices` probes each configured Modbus device once with the
engine itself (the same code that polls it in operation); the BMS on CAN is listed as configured."""
from __future__ import annotations

import time

from ems.comm.modbus_server import IoThread
from ems.comm.profiles import shipped_profiles
from ems.comm.site_io import build_engine
from ems.control.events import EMS_ID, STACK_ID, cluster_id

COLUMNS = ("device_id", "name", "protocol", "model", "address", "cycle_ms", "status", "last_seen_s_ago")


def equipment_rows(cfg, timeout_s: float = 1.0) -> list[dict]:
    rows = [{"device_id": f"0x{EMS_ID:08X}", "name": "EMS", "protocol": "-", "model": "open-ems",
             "address": "-", "cycle_ms": cfg.loops.fast_period_ms, "status": "running", "last_seen_s_ago": 0.0}]
    can_addr = f"{cfg.devices.can_interface}:{cfg.devices.can_channel}"
    rows.append({"device_id": f"0x{STACK_ID:08X}", "name": "Battery stack", "protocol": "can", "model": "-",
                 "address": can_addr, "cycle_ms": 100.0, "status": "not probed", "last_seen_s_ago": None})
    for c in range(cfg.battery.clusters):
        rows.append({"device_id": f"0x{cluster_id(c):08X}", "name": f"Battery cluster{c + 1:02d}", "protocol": "can",
                     "model": "-", "address": can_addr, "cycle_ms": 100.0, "status": "not probed",
                     "last_seen_s_ago": None})
    if cfg.devices.modbus:
        io = IoThread("ems-devices")
        try:
            engine, _ = build_engine(cfg, io)
            engine.start()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and any(r["status"] == "never seen" for r in engine.status()):
                time.sleep(0.02)
            for r in engine.status():
                rows.append({**r, "device_id": f"0x{r['device_id']:08X}",
                             "status": "offline" if r["status"] == "never seen" else r["status"]})
            engine.stop()
        finally:
            io.stop()
    return rows


def profile_rows() -> list[dict]:
    return [{"model": p.model, "kind": p.kind, "vendor": p.vendor, "registers": len(p.registers),
             "groups": ", ".join(f"{g} {ms:g} ms" for g, ms in p.groups.items()), "file": p.path}
            for p in shipped_profiles().values()]


def format_rows(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    cols = [c for c in (COLUMNS if "device_id" in rows[0] else tuple(rows[0])) if c in rows[0]]
    text = [[("" if r.get(c) is None else f"{r[c]:g}" if isinstance(r.get(c), float) else str(r[c])) for c in cols]
            for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in text]
    return "\n".join(lines)
