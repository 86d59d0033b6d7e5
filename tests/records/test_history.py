"""The recorder on a real SQLite file: energy counters at interval boundaries, restart, alarms, pruning."""
import sqlite3
from datetime import datetime, timezone

import pytest

from ems.control.events import GRID_METER_ID, PCS_ID, PV_ID
from ems.records import db as DB
from ems.records import queries as Q
from ems.records import reports as R
from ems.records.recorder import Recorder

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()     # a Monday, 00:00 UTC


def _iso(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _run(rec, t0, seconds, step=1.0, **readings):
    t = t0
    while t <= t0 + seconds:
        rec.observe(t, readings, 50.0)
        t += step


def test_samples_land_on_interval_boundaries_with_exact_energy(tmp_path):
    rec = Recorder(tmp_path / "h.sqlite", interval_min=5, retention_days=0, timezone="UTC")
    rec.start(T0)
    # 10 kW import, 6 kW PV, 4 kW discharge for one hour: load 20 kW
    _run(rec, T0, 3600, grid_w=10_000.0, pv_w=6_000.0, pcs_w=4_000.0, dg_w=0.0, load_w=20_000.0, dc_w=4_100.0)
    rec.stop(T0 + 3600)
    con = DB.connect(tmp_path / "h.sqlite", readonly=True)
    ts = [t for (t,) in con.execute("SELECT t FROM samples WHERE device_id=? ORDER BY t", (GRID_METER_ID,))]
    assert ts[0] == T0 and ts[1] == T0 + 300 and all((t - T0) % 300 == 0 for t in ts)
    row = R.report(con, "daily", "2026-03-02", "60m")[0]
    assert row["import_kwh"] == pytest.approx(10.0) and row["pv_kwh"] == pytest.approx(6.0)
    assert row["discharge_kwh"] == pytest.approx(4.0) and row["load_kwh"] == pytest.approx(20.0)
    assert row["export_kwh"] == 0 and row["charge_kwh"] == 0
    p = con.execute("SELECT p_w FROM samples WHERE device_id=? AND t=?", (PV_ID, T0 + 300)).fetchone()[0]
    assert p == pytest.approx(6000.0)


def test_a_restart_continues_the_counters_and_a_gap_adds_no_energy(tmp_path):
    path = tmp_path / "h.sqlite"
    rec = Recorder(path, interval_min=5, retention_days=0, timezone="UTC")
    rec.start(T0)
    _run(rec, T0, 1800, pcs_w=-12_000.0)                   # charging 12 kW for 30 min: 6 kWh
    rec.stop(T0 + 1800)
    rec = Recorder(path, interval_min=5, retention_days=0, timezone="UTC")   # off for an hour, then on again
    rec.start(T0 + 5400)
    _run(rec, T0 + 5400, 1800, pcs_w=-12_000.0)
    rec.stop(T0 + 7200)
    con = DB.connect(path, readonly=True)
    rows = R.report(con, "daily", "2026-03-02", "30m")
    assert [round(r["charge_kwh"], 6) for r in rows[:4]] == [6.0, 0.0, 0.0, 6.0]
    last = con.execute("SELECT max(e_in_wh) FROM samples WHERE device_id=?", (PCS_ID,)).fetchone()[0]
    assert last == pytest.approx(12_000.0)


def test_alarms_raise_clear_and_are_closed_at_the_next_start(tmp_path):
    path = tmp_path / "h.sqlite"
    rec = Recorder(path, interval_min=5, retention_days=0, timezone="UTC")
    rec.start(T0)
    for kind, t, code in (("alarm_raised", T0 + 10, 5), ("alarm_cleared", T0 + 20, 5), ("alarm_raised", T0 + 30, 52)):
        rec.event({"time": _iso(t), "kind": kind, "code": code, "name": "", "device_id": "0x05000000" if code == 5
                   else "0x01000000", "detail": kind, "user": ""})
    rec.stop()
    con = DB.connect(path, readonly=True)
    assert [a["code"] for a in Q.alarms(con, active=True)] == [52]
    con.close()
    rec = Recorder(path, interval_min=5, retention_days=0, timezone="UTC")
    rec.start(T0 + 100)
    rec.stop()
    con = DB.connect(path, readonly=True)
    assert Q.alarms(con, active=True) == []
    epo = Q.alarms(con, code=52)[0]
    assert epo["clear_detail"] == "controller restarted"
    assert [a["code"] for a in Q.alarms(con, level="severe")] == [52, 5]
    assert Q.alarms(con, level="warning") == []


def test_retention_prunes_old_rows_in_the_writer_thread(tmp_path):
    path = tmp_path / "h.sqlite"
    now = T0 + 10 * 86400
    rec = Recorder(path, interval_min=5, retention_days=3, timezone="UTC", wall_clock=lambda: now)
    rec.start(T0)
    _run(rec, T0, 86400, step=60.0, grid_w=1000.0)              # day 1: older than 3 days
    rec.log(T0, "system", "old", detail="old entry")
    rec.stop(T0 + 86400)
    rec = Recorder(path, interval_min=5, retention_days=3, timezone="UTC", wall_clock=lambda: now)
    rec.flush()
    rec.stop()
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM log WHERE action='old'").fetchone()[0] == 0


def test_read_only_opening_refuses_what_is_not_a_history_database(tmp_path):
    with pytest.raises(DB.DatabaseError, match="no such database"):
        DB.connect(tmp_path / "none.sqlite", readonly=True)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(DB.DatabaseError, match="not an ems history database"):
        DB.connect(junk, readonly=True)
    assert not (tmp_path / "none.sqlite").exists()


def test_a_failed_write_is_counted_and_flagged_then_clears(tmp_path):
    path = tmp_path / "h.sqlite"
    rec = Recorder(path, interval_min=5, retention_days=0, timezone="UTC")
    blocker = sqlite3.connect(path, timeout=0.1)
    blocker.execute("BEGIN EXCLUSIVE")            # another writer holds the file: our commit cannot get in
    rec.log(T0, "system", "blocked")
    import time
    deadline = time.monotonic() + 15
    while rec.write_error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rec.write_error and rec.dropped_ops >= 1
    blocker.rollback()
    rec.log(T0, "system", "after")
    rec.flush()
    assert rec.write_error is None
    rec.stop()
