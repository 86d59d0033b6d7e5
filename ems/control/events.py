"""Events as the outside world sees them: one dict per event with time, kind, code, name, device_id, detail."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Callable

EMS_ID = 0x01000000
STACK_ID = 0x02000000
GRID_METER_ID = 0x05000000
PV_METER_ID = 0x05020000
DG_METER_ID = 0x05090000
PV_ID = 0x03000000
PCS_ID = 0x06000000
AIRCON_ID = 0x07000000


def cluster_id(n: int) -> int:
    return 0x02010000 + n


def device_hex(device_id: int) -> str:
    return f"0x{device_id:08X}"


class EventLog:
    """Collects events and hands each to the sinks (events.jsonl in a simulation, the history recorder)."""

    def __init__(self):
        self.sinks: list[Callable[[dict], None]] = []
        self.recent: list[dict] = []

    def emit(self, time: datetime, kind: str, code: int | None = None, name: str = "",
             device_id: int = EMS_ID, detail: str = "", user: str = "", data: dict | None = None) -> dict:
        """`user`: who did it, for operations (a login name, `cli:<os user>`, a Modbus client address).
        `data`: machine-readable figures of the event (a peak exceedance's), for the records."""
        ev = {"time": time.isoformat(), "kind": kind, "code": code, "name": name,
              "device_id": device_hex(device_id), "detail": detail, "user": user}
        if data is not None:
            ev["data"] = data
        self.recent.append(ev)
        del self.recent[:-200]
        for sink in self.sinks:
            sink(ev)
        return ev


class JsonlSink:
    def __init__(self, path):
        self.fh = open(path, "w", encoding="utf-8")

    def __call__(self, ev: dict) -> None:
        self.fh.write(json.dumps(ev, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.fh.close()
