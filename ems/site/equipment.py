"""The equipment list as the manual shows it (000_… §3.5, device list): device ID, name, protocol, model,
address, poll cycle, status, last seen. `ems devices --config SITE` probes each device of the site file once
with the same code that drives it in operation — the Modbus engine, the BMS's CAN link (or its Modbus
arrays), the dry-contact backend — so an installer checks the wiring before starting the service."""
from __future__ import annotations

import time

import numpy as np

from ems.comm.can_bus import CanPort
from ems.comm.can_link import BmsCanLink
from ems.comm.can_profiles import can_profiles
from ems.comm.modbus_server import IoThread
from ems.comm.profiles import site_profiles
from ems.comm.site_io import build_engine
from ems.control.events import EMS_ID, STACK_ID, cluster_id
from ems.site.devices import preflight

COLUMNS = ("device_id", "name", "protocol", "model", "address", "cycle_ms", "status", "last_seen_s_ago")


def _gpio_row(cfg) -> dict:
    dc = cfg.dry_contacts
    row = {"device_id": f"0x{EMS_ID:08X}", "name": "dry contacts", "protocol": "gpio", "model": "-",
           "address": dc.gpio_chip, "cycle_ms": cfg.loops.fast_period_ms, "last_seen_s_ago": None}
    try:
        from ems.comm.gpio_contacts import GpioContacts
        gc = GpioContacts(dc.gpio_chip, dc.gpio_lines)
        levels = gc.read_inputs()
        gc.close()
        return {**row, "status": "online " + " ".join(f"{k}={int(v)}" for k, v in sorted(levels.items())),
                "last_seen_s_ago": 0.0}
    except Exception as exc:              # no chip, lines held by the running service …
        return {**row, "status": f"error: {exc}"}


def equipment_rows(cfg, timeout_s: float = 1.0) -> list[dict]:
    rows = [{"device_id": f"0x{EMS_ID:08X}", "name": "EMS", "protocol": "-", "model": "open-ems",
             "address": "-", "cycle_ms": cfg.loops.fast_period_ms, "status": "running", "last_seen_s_ago": 0.0}]
    missing = preflight(cfg)
    dv, b = cfg.devices, cfg.battery
    io = IoThread("ems-devices")
    port = None
    try:
        engine, roles = build_engine(cfg, io, site_profiles(dv.profiles_dir))
        engine.start()
        link = None
        if dv.bms == "can" and not any(p.startswith("devices.can_") for p in missing):
            port = CanPort(dv.can_interface, dv.can_channel, dv.can_host, dv.can_port)
            shape = (b.clusters, b.cells_per_cluster)
            link = BmsCanLink(port, np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, np.uint8),
                              can_profiles(dv.profiles_dir)[dv.can_profile], alarm_encoding=dv.can_alarm_encoding)
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if link is not None:
                link.poll(time.monotonic())
            if all(r["status"] != "never seen" for r in engine.status()) and (link is None or
                                                                           link.clusters_fresh(time.monotonic())):
                break
            time.sleep(0.02)
        if dv.bms == "can":
            where = f"socketcand:{dv.can_host}:{dv.can_port}/{dv.can_channel}" if dv.can_interface == "socketcand" \
                else f"{dv.can_interface}:{dv.can_channel}"
            problem = next((p for p in missing if p.startswith("devices.can_")), None)
            ok = link is not None and link.clusters_fresh(time.monotonic())
            status = problem or ("online" if ok else f"offline ({port.state})" if port else "offline")
            rows.append({"device_id": f"0x{STACK_ID:08X}", "name": "Battery stack", "protocol": "can",
                         "model": dv.can_profile, "address": where, "cycle_ms": 100.0, "status": status,
                         "last_seen_s_ago": 0.0 if ok else None})
            now = time.monotonic()
            for c in range(b.clusters):
                fresh = link is not None and all(now - seen[c] <= 3.0 for seen in link.cluster_seen_s.values())
                rows.append({"device_id": f"0x{cluster_id(c):08X}", "name": f"Battery cluster{c + 1:02d}",
                             "protocol": "can", "model": "-", "address": where, "cycle_ms": 100.0,
                             "status": "online" if fresh else problem or "offline",
                             "last_seen_s_ago": 0.0 if fresh else None})
        for r in engine.status():
            gone = next((p for p in missing if f"({r['name']})" in p), None)
            rows.append({**r, "device_id": f"0x{r['device_id']:08X}",
                         "status": gone or ("offline" if r["status"] == "never seen" else r["status"])})
        engine.stop()
    finally:
        if port is not None:
            port.shutdown()
        io.stop()
    if cfg.dry_contacts.backend == "gpio":
        rows.append(_gpio_row(cfg))
    return rows


def profile_rows(profiles_dir: str | None = None) -> list[dict]:
    rows = [{"model": p.model, "kind": p.kind, "vendor": p.vendor, "registers": len(p.registers) + len(p.arrays),
             "groups": ", ".join(f"{g} {ms:g} ms" for g, ms in p.groups.items()), "file": p.path}
            for p in site_profiles(profiles_dir).values()]
    rows += [{"model": p.model, "kind": f"bms (can, {p.level})", "vendor": p.vendor,
              "registers": len(p.cluster) + len(p.stack) + len(p.cells), "groups": "-", "file": p.path}
             for p in can_profiles(profiles_dir).values()]
    return rows


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
