"""The recorder: everything the loops hand to the history database, written by one thread of its own.

The loop side (`event`, `observe`, `live`, `devices`, `fault_recording`) only appends to a queue: no SQLite,
no file I/O, no lock held across a write. The writer thread drains the queue and commits a batch at a time;
retention pruning runs in the same thread in small batches, so it never blocks the loops either.

A write that fails (disk full, read-only medium) is logged and counted and sets `write_error`; the control
loop raises history_write_fault (5014) from it and clears it after the next good commit.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import datetime
from pathlib import Path

from ems.control.events import EMS_ID
from ems.records import db as DB
from ems.records.energy import EnergyCounters
from ems.records.fault_recording import write_file

log = logging.getLogger("ems.records")

OPERATION_KINDS = ("operation", "remote_write", "parameter_write", "user", "login")
PRUNE_EVERY_S = 3600.0
PRUNE_BATCH = 5000


def _ts(ev_time: str) -> float:
    return datetime.fromisoformat(ev_time).timestamp()


class Recorder:
    def __init__(self, path: str | Path, interval_min: float = 5.0, retention_days: float = 180.0,
                 fault_dir: str | Path | None = None, site: str = "", timezone: str = "UTC",
                 wall_clock=time.time):
        """`wall_clock`: what "now" is for pruning (the virtual clock's in a simulation)."""
        self.path = Path(path)
        self.retention_s = retention_days * 86400.0
        self.fault_dir = Path(fault_dir) if fault_dir else self.path.parent / "faults"
        self.energy = EnergyCounters(interval_min * 60.0)
        self.wall_clock = wall_clock
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()    # CLI requests for the loop: (id, action, user)
        self.write_error: str | None = None
        self.errors = 0
        self.dropped_ops = 0
        self.commits = 0
        self._seen_requests: set[int] = set()
        self._stop = threading.Event()
        # the schema and the counters to continue from, before anything is queued
        con = DB.connect(self.path)
        try:
            totals = {dev: (e_in, e_out) for dev, e_in, e_out in con.execute(
                "SELECT device_id, e_in_wh, e_out_wh FROM samples s WHERE t = "
                "(SELECT max(t) FROM samples WHERE device_id = s.device_id)")}
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [("site", site), ("timezone", timezone), ("storage_interval_min", str(interval_min)),
                             ("retention_days", str(retention_days))])
            con.commit()
        finally:
            con.close()
        self.energy.restore(totals)
        self._thread = threading.Thread(target=self._run, name="ems-recorder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ loop side (never blocks)
    def start(self, t_s: float, detail: str = "") -> None:
        """The controller starts: alarms left active by the last run are closed (they are raised again if
        still present), and the start is logged."""
        self._q.put(("start", t_s, detail))
        self._q.put(("samples", self.energy.start_rows(t_s)))

    def event(self, ev: dict) -> None:
        """EventLog sink."""
        self._q.put(("event", ev))

    def observe(self, t_s: float, readings: dict, soc_pct: float | None) -> None:
        rows = self.energy.observe(t_s, readings, soc_pct)
        if rows:
            self._q.put(("samples", rows))

    def live(self, t_s: float, status: dict) -> None:
        self._q.put(("live", t_s, status))

    def devices(self, rows: list[dict]) -> None:
        self._q.put(("devices", rows))

    def fault_recording(self, t_s: float, code: int | None, device_id: int, rows) -> None:
        self._q.put(("fault", t_s, code, device_id, rows))

    def request_done(self, req_id: int, result: str, t_s: float) -> None:
        self._q.put(("request_done", req_id, result, t_s))

    def log(self, t_s: float, kind: str, action: str, user: str = "", detail: str = "",
            device_id: int | None = None) -> None:
        self._q.put(("log", t_s, kind, action, user, device_id, detail))

    def stop(self, t_s: float | None = None, timeout_s: float = 10.0) -> None:
        """Write the current interval's counters and everything queued, then close."""
        if t_s is not None:
            rows = self.energy.flush(t_s)
            if rows:
                self._q.put(("samples", rows))
            self._q.put(("log", t_s, "system", "stop", "", EMS_ID, "controller stopped"))
        self._stop.set()
        self._q.put(("wake",))
        self._thread.join(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything queued so far is committed (tests, simulation end)."""
        done = threading.Event()
        self._q.put(("barrier", done))
        done.wait(timeout_s)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        con = DB.connect(self.path)
        next_prune = 0.0
        next_requests = 0.0
        try:
            while True:
                try:
                    ops = [self._q.get(timeout=0.5)]
                except queue.Empty:
                    ops = []
                while len(ops) < 5000:
                    try:
                        ops.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                barriers = [op[1] for op in ops if op[0] == "barrier"]
                self._commit(con, [op for op in ops if op[0] not in ("barrier", "wake")])
                for b in barriers:
                    b.set()
                now = time.monotonic()
                if now >= next_requests:
                    self._poll_requests(con)
                    next_requests = now + 0.5
                if self.retention_s > 0 and now >= next_prune:
                    self._prune(con)
                    next_prune = now + PRUNE_EVERY_S
                if self._stop.is_set() and self._q.empty():
                    break
        finally:
            con.close()

    def _commit(self, con, ops: list) -> None:
        if not ops:
            return
        try:
            with con:
                for op in ops:
                    self._apply(con, op)
            self.commits += 1
            if self.write_error is not None:
                log.warning("history writes work again")
            self.write_error = None
        except Exception as exc:        # disk full, I/O error, locked: history is lost, control goes on
            self.errors += 1
            self.dropped_ops += len(ops)
            self.write_error = f"{type(exc).__name__}: {exc}"
            log.error("history write failed, %d record(s) lost: %s", len(ops), exc)

    def _apply(self, con, op: tuple) -> None:
        kind = op[0]
        if kind == "samples":
            con.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)", op[1])
        elif kind == "event":
            self._event(con, op[1])
        elif kind == "start":
            _, t, detail = op
            con.execute("UPDATE alarms SET cleared_at=?, clear_detail='controller restarted' WHERE cleared_at IS NULL",
                        (t,))
            con.execute("INSERT INTO log (t, kind, action, user, device_id, detail) VALUES (?, 'system', 'start', '', ?, ?)",
                        (t, EMS_ID, detail))
        elif kind == "log":
            con.execute("INSERT INTO log (t, kind, action, user, device_id, detail) VALUES (?, ?, ?, ?, ?, ?)", op[1:])
        elif kind == "live":
            con.execute("INSERT OR REPLACE INTO live VALUES ('status', ?, ?)", (op[1], json.dumps(op[2])))
        elif kind == "devices":
            con.execute("DELETE FROM devices")
            con.executemany("INSERT INTO devices VALUES (:device_id, :name, :protocol, :model, :address, :cycle_ms, "
                            ":status, :last_seen)", op[1])
        elif kind == "fault":
            _, t, code, dev, rows = op
            path = write_file(self.fault_dir, t, code, dev, rows)
            con.execute("INSERT INTO fault_records (t, code, device_id, path) VALUES (?, ?, ?, ?)",
                        (t, code, dev, str(path)))
            con.execute("INSERT INTO log (t, kind, action, user, device_id, detail) VALUES (?, 'system', "
                        "'fault_recording', '', ?, ?)", (t, dev, f"{len(rows)} rows saved to {path.name}"))
        elif kind == "request_done":
            _, rid, result, t = op
            con.execute("UPDATE requests SET done_at=?, result=? WHERE id=?", (t, result, rid))

    def _event(self, con, ev: dict) -> None:
        t = _ts(ev["time"])
        dev = int(ev["device_id"], 16) if ev.get("device_id") else EMS_ID
        kind = ev["kind"]
        if kind == "alarm_raised":
            con.execute("INSERT INTO alarms (code, device_id, raised_at, raise_detail) VALUES (?, ?, ?, ?)",
                        (ev["code"], dev, t, ev.get("detail", "")))
        elif kind == "alarm_cleared":
            con.execute("UPDATE alarms SET cleared_at=?, clear_detail=? WHERE code=? AND device_id=? AND "
                        "cleared_at IS NULL", (t, ev.get("detail", ""), ev["code"], dev))
        else:
            if kind == "peak_exceeded" and isinstance(ev.get("data"), dict):
                d = ev["data"]
                con.execute("INSERT INTO peak_exceedances (t_start, t_end, limit_w, max_excess_w, energy_wh) "
                            "VALUES (?, ?, ?, ?, ?)", (_ts(d["start"]), _ts(d["end"]), d["limit_w"],
                                                       d["max_excess_w"], d["energy_wh"]))
            log_kind = "operation" if kind in OPERATION_KINDS else "system"
            action = kind if not ev.get("name") else f"{kind}:{ev['name']}"
            detail = ev.get("detail", "")
            if ev.get("code") is not None:
                detail = f"code {ev['code']}; {detail}"
            con.execute("INSERT INTO log (t, kind, action, user, device_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
                        (t, log_kind, action, ev.get("user", ""), dev, detail))

    def _poll_requests(self, con) -> None:
        try:
            # a request older than a minute was given up by its CLI: never act on it late
            rows = con.execute("SELECT id, action, user FROM requests WHERE done_at IS NULL AND t > ?",
                               (time.time() - 60.0,)).fetchall()
        except Exception as exc:
            log.error("reading CLI requests failed: %s", exc)
            return
        for rid, action, user in rows:
            if rid not in self._seen_requests:
                self._seen_requests.add(rid)
                self.inbox.put((rid, action, user))

    def _prune(self, con) -> None:
        """Delete what is older than the retention, PRUNE_BATCH rows per transaction; queued writes go
        between the batches (the loops never wait: they only ever append to the queue)."""
        cutoff = self.wall_clock() - self.retention_s
        statements = (
            # samples is WITHOUT ROWID: delete by key
            "DELETE FROM samples WHERE (device_id, t) IN (SELECT device_id, t FROM samples WHERE t < ? LIMIT ?)",
            "DELETE FROM alarms WHERE id IN (SELECT id FROM alarms WHERE cleared_at < ? LIMIT ?)",
            "DELETE FROM log WHERE id IN (SELECT id FROM log WHERE t < ? LIMIT ?)",
            "DELETE FROM peak_exceedances WHERE id IN (SELECT id FROM peak_exceedances WHERE t_start < ? LIMIT ?)",
            "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE t < ? LIMIT ?)",
        )
        try:
            for sql in statements:
                while True:
                    with con:
                        n = con.execute(sql, (cutoff, PRUNE_BATCH)).rowcount
                    if n < PRUNE_BATCH:
                        break
                    time.sleep(0)           # let the loop side's queue in between batches
            old = con.execute("SELECT id, path FROM fault_records WHERE t < ?", (cutoff,)).fetchall()
            for rid, path in old:
                Path(path).unlink(missing_ok=True)
            with con:
                con.executemany("DELETE FROM fault_records WHERE id=?", [(r,) for r, _ in old])
        except Exception as exc:
            log.error("retention pruning failed: %s", exc)
