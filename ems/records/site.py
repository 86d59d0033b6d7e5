"""The records of one running site: what the loops call after their ticks (`ems run` and `ems simulate`
share it). Everything here runs on the loop thread and only hands data to the recorder's queue."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ems import __version__
from ems._core import layout as L
from ems.control.events import EMS_ID, STACK_ID, cluster_id, device_hex
from ems.records.catalogue import catalogue
from ems.records.commands import CommandBridge
from ems.records.fault_recording import FaultRing
from ems.records.live import LiveFeed
from ems.records.recorder import Recorder

HISTORY_WRITE_FAULT = 5014       # history_write_fault in the alarm catalogue
LIVE_EVERY_S = 5.0
DEVICES_EVERY_S = 30.0


class SiteRecords:
    def __init__(self, cfg, ctrl, path: str | Path, wall_clock=None, devices_fn=None,
                 fast_period_s: float | None = None, status_extra=None, live: bool = False):
        """`devices_fn()`: rows of the site's devices' live status (the engine's), if any; `status_extra()`: more
        of the running site's state for the status view (local/remote mode, SIMULATED).
        `fast_period_s`: the fast tick's length (a simulation's step; default [loops] fast_period_ms).
        `wall_clock`: seconds since the epoch for pruning (default: the controller's clock).
        `live`: keep a LiveFeed for the local page (`ems run` with the API; a simulation has no page)."""
        self.cfg, self.ctrl = cfg, ctrl
        rc = cfg.records
        self.recorder = Recorder(path, rc.storage_interval_min, rc.retention_days, site=cfg.site.name,
                                 timezone=cfg.site.timezone,
                                 wall_clock=wall_clock or (lambda: ctrl.clock.now().timestamp()))
        fast_s = fast_period_s or cfg.loops.fast_period_ms / 1000.0
        self.ring = FaultRing(rc.fault_recording_s, fast_s) if rc.fault_recording else None
        self.devices_fn = devices_fn
        self.status_extra = status_extra
        self._next_live = self._next_devices = -math.inf
        self._write_alarm = False
        self._recorded: dict[int, float] = {}      # device → time of its last fault recording
        self.commands = CommandBridge()            # from the HTTP API, carried out between ticks
        self.live = LiveFeed() if live else None   # what the local page shows, once a second while one is open
        ctrl.events.sinks.append(self._on_event)

    def _now_s(self) -> float:
        return self.ctrl.clock.now().timestamp()

    def start(self) -> None:
        self.recorder.start(self._now_s(), f"ems {__version__}, site {self.cfg.site.name}")

    def _on_event(self, ev: dict) -> None:
        self.recorder.event(ev)
        if ev["kind"] == "trip" and self.ring is not None:
            # one recording per cluster trip: "pending" and "contactors open" of the same trip share it
            t, dev = self._now_s(), int(ev["device_id"], 16)
            if t - self._recorded.get(dev, -math.inf) >= self.cfg.records.fault_recording_s:
                self._recorded[dev] = t
                self.ring.trip(t, ev["code"], dev)

    def after_fast_tick(self) -> None:
        if self.ring is None:
            return
        self.ring.record(self._now_s(), self.ctrl.fast.buffers)
        if self.ring.pending:
            for t, code, dev, rows in self.ring.take():
                self.recorder.fault_recording(t, code, dev, rows)

    def after_slow_tick(self) -> None:
        ctrl, snap = self.ctrl, self.ctrl.snapshot
        t = self._now_s()
        if snap is not None:
            b = ctrl.fast.buffers
            dc_w = None
            if snap.soc_pct is not None:          # the BMS is fresh
                v, i = b.cluster_in[:, L.CL_V], b.cluster_in[:, L.CL_I]
                dc = float(np.nansum(v * i))
                dc_w = dc if math.isfinite(dc) else None
            self.recorder.observe(t, {"grid_w": snap.grid_w, "pv_w": snap.pv_w, "pcs_w": snap.pcs_w,
                                      "dg_w": snap.dg_w, "load_w": snap.load_w, "dc_w": dc_w}, snap.soc_pct)
        status = None
        if t >= self._next_live:
            status = self.status_dict()
            self.recorder.live(t, status)
            self._next_live = t + LIVE_EVERY_S
        if self.live is not None and (status is not None or self.live.watched()):
            self.live.publish(status or self.status_dict(), ctrl.fast.buffers)
        if t >= self._next_devices:
            self.recorder.devices(self.device_rows(t))
            self._next_devices = t + DEVICES_EVERY_S
        self.commands.drain(ctrl)
        while not self.recorder.inbox.empty():
            rid, action, user = self.recorder.inbox.get_nowait()
            self.recorder.request_done(rid, self._request(action, user), t)
        failing = self.recorder.write_error is not None
        if failing != self._write_alarm:
            self._write_alarm = failing
            ctrl.external_alarm(HISTORY_WRITE_FAULT, failing, self.recorder.write_error or "writes work again")

    def _request(self, action: str, user: str) -> str:
        """A request from the CLI (`ems reset-faults`): carried out as a local operation by that user."""
        if action == "fault_reset":
            self.ctrl.command("fault_reset", True, source=user)
            return "done"
        return f"refused: unknown action {action!r}"

    def stop(self) -> None:
        self.recorder.live(self._now_s(), {**self.status_dict(), "running": False})
        self.recorder.stop(self._now_s())

    # ------------------------------------------------------------------ views
    def status_dict(self) -> dict:
        ctrl, snap, b = self.ctrl, self.ctrl.snapshot, self.ctrl.fast.buffers
        s = ctrl.status
        return {
            "time": ctrl.clock.now().isoformat(), "site": self.cfg.site.name, "version": __version__,
            "running": True, "strategy": s.strategy, "reason": s.reason, "held_by": list(s.held_by),
            "on_grid": ctrl.on_grid,
            "grid_w": snap.grid_w if snap else None, "pv_w": snap.pv_w if snap else None,
            "pcs_w": snap.pcs_w if snap else None, "load_w": snap.load_w if snap else None,
            "dg_w": snap.dg_w if snap else None, "soc_pct": snap.soc_pct if snap else None,
            "soc_bound_pct": snap.soc_bound_pct if snap else None, "soh": ctrl.soh.summary(),
            "charge_limit_w": float(b.results[L.TO_CHG_LIMIT_W]),
            "discharge_limit_w": float(b.results[L.TO_DCHG_LIMIT_W]),
            "setpoint_w": float(ctrl.commands.pcs_setpoint_w), "pcs_run": bool(ctrl.commands.pcs_run),
            "active_alarms": [{"code": code, "device_id": device_hex(dev), "label": label,
                               "level": catalogue().get(code).level}
                              for (code, dev), label in sorted(s.active_alarms.items())],
            "disabled_strategies": dict(ctrl.disabled), "comm_lost": sorted(ctrl.comm_lost),
            "history": {"commits": self.recorder.commits, "write_errors": self.recorder.errors,
                        "lost_records": self.recorder.dropped_ops},
            "devices": [{"name": r["name"], "role": r.get("role", ""), "status": r["status"],
                         "last_seen_s_ago": r.get("last_seen_s_ago"), "address": r["address"]}
                        for r in (self.devices_fn() if self.devices_fn is not None else [])],
            **(self.status_extra() if self.status_extra is not None else {}),
        }

    def device_rows(self, t: float) -> list[dict]:
        """The equipment list with live status: EMS and battery from the controller, the site's devices from
        `devices_fn` (the Modbus engine's rows; a CAN BMS is the battery rows here)."""
        cfg, lost = self.cfg, self.ctrl.comm_lost
        dv = cfg.devices
        others = self.devices_fn() if self.devices_fn is not None else []
        if dv.bms == "modbus":         # the BAU's own row is the battery rows here (one device ID each)
            bau = next((r for r in others if r.get("role") == "bms"), None)
            protocol, addr = (bau["protocol"], bau["address"]) if bau else ("modbus", "-")
        else:
            protocol = "can"
            addr = (f"socketcand:{dv.can_host}:{dv.can_port}/{dv.can_channel}" if dv.can_interface == "socketcand"
                    else f"{dv.can_interface}:{dv.can_channel}")
        bms = "lost" if "bms" in lost else "online"
        rows = [{"device_id": EMS_ID, "name": "EMS", "protocol": "-", "model": "open-ems", "address": "-",
                 "cycle_ms": cfg.loops.fast_period_ms, "status": "running", "last_seen": t},
                {"device_id": STACK_ID, "name": "Battery stack", "protocol": protocol, "model": "-", "address": addr,
                 "cycle_ms": 100.0, "status": bms, "last_seen": None if bms == "lost" else t}]
        rows += [{"device_id": cluster_id(c), "name": f"Battery cluster{c + 1:02d}", "protocol": protocol,
                  "model": "-", "address": addr, "cycle_ms": 100.0, "status": bms,
                  "last_seen": None if bms == "lost" else t} for c in range(cfg.battery.clusters)]
        if others:
            for r in others:
                if r["protocol"] == "can" or r.get("role") == "bms":
                    continue                 # the battery rows above
                seen = r.get("last_seen_s_ago")
                rows.append({"device_id": r["device_id"], "name": r["name"], "protocol": r["protocol"],
                             "model": r["model"], "address": r["address"], "cycle_ms": r["cycle_ms"],
                             "status": r["status"], "last_seen": None if seen is None else t - seen})
        return rows
