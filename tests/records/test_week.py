"""A simulated week recorded like a real site: reports, statistics and alarms match what the scenario did."""
import csv
import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ems.records import db as DB
from ems.records import queries as Q
from ems.records import reports as R
from ems.records.fault_recording import COLUMNS as FAULT_COLUMNS
from ems.sim.scenario import load_scenario


def _timeseries(out):
    with open(out / "timeseries.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    col = {k: np.array([float(r[k]) for r in rows]) for k in ("grid_w", "pv_w", "load_w", "pcs_w")}
    step_h = load_scenario(Path(__file__).with_name("week.toml"))[1].step_s / 3600.0
    return {"pv_kwh": col["pv_w"].sum() * step_h / 1000, "load_kwh": col["load_w"].sum() * step_h / 1000,
            "import_kwh": np.clip(col["grid_w"], 0, None).sum() * step_h / 1000,
            "export_kwh": np.clip(-col["grid_w"], 0, None).sum() * step_h / 1000,
            "charge_kwh": np.clip(-col["pcs_w"], 0, None).sum() * step_h / 1000,
            "discharge_kwh": np.clip(col["pcs_w"], 0, None).sum() * step_h / 1000}


def test_week_energy_matches_the_simulation_within_one_percent(week):
    out, _ = week
    truth = _timeseries(out)
    con = DB.connect(out / "history.sqlite", readonly=True)
    st = R.stats(con, "month", "2026-06")
    for key, value in truth.items():
        assert st["totals_kwh"][key] == pytest.approx(value, rel=0.01), key
    assert abs(st["kpis"]["balance_error_pct"]) < 0.01
    # the daily reports at every interval add up to the month's days
    days = {r["period"]: r for r in R.report(con, "monthly", "2026-06")}
    for interval in ("5m", "10m", "30m", "60m"):
        rows = R.report(con, "daily", "2026-06-03", interval)
        assert len(rows) == 24 * 60 // int(interval[:-1])
        assert sum(r["pv_kwh"] for r in rows) == pytest.approx(days["2026-06-03"]["pv_kwh"], abs=1e-3)
    annual = R.report(con, "annual", "2026")
    assert annual[5]["load_kwh"] == pytest.approx(st["totals_kwh"]["load_kwh"], abs=1e-2)
    assert annual[0]["load_kwh"] == 0 and annual[6]["load_kwh"] == 0


def test_alarm_history_matches_the_events(week):
    out, events = week
    raised = sorted((e["code"], e["device_id"]) for e in events if e["kind"] == "alarm_raised")
    cleared = sorted((e["code"], e["device_id"]) for e in events if e["kind"] == "alarm_cleared")
    con = DB.connect(out / "history.sqlite", readonly=True)
    rows = Q.alarms(con)
    assert sorted((a["code"], a["device_id"]) for a in rows) == raised
    # what was still active at the end of the run was closed by the stop, not left open for ever
    assert sorted((a["code"], a["device_id"]) for a in rows if a["clear_detail"]) == cleared
    epo = Q.alarms(con, code=52)
    assert len(epo) == 1 and epo[0]["raised_at"].startswith("2026-06-05T04:00") and epo[0]["cleared_at"]
    ops = Q.log_entries(con, kind="operation")
    assert [o["action"] for o in ops] == ["operation:fault_reset"]


def test_a_trip_saves_a_fault_recording_named_after_time_and_code(week):
    out, events = week
    con = DB.connect(out / "history.sqlite", readonly=True)
    recs = Q.fault_records(con)
    trips = [e for e in events if e["kind"] == "trip"]
    assert trips and len(recs) >= 1
    first = recs[-1]
    assert first["code"] == 40006 and first["device_id"] == "0x02010000"
    name = first["path"].rsplit("/", 1)[-1]
    assert name.startswith("20260602T040000") and "_40006_0x02010000" in name
    with open(first["path"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == FAULT_COLUMNS and len(rows) >= 2
    assert max(float(r[1]) for r in rows[1:]) >= 3.9 - 1e-6       # the faulty cell is in the recording


def test_csv_exports_open_as_tables(week):
    out, _ = week
    con = DB.connect(out / "history.sqlite", readonly=True)
    for rows, cols in ((Q.alarms(con), Q.ALARM_COLUMNS), (Q.log_entries(con), Q.LOG_COLUMNS),
                       (Q.devices(con), Q.DEVICE_COLUMNS), (R.report(con, "daily", "2026-06-02", "5m"), R.REPORT_COLUMNS)):
        text = Q.to_csv(rows, cols)
        parsed = list(csv.DictReader(io.StringIO(text)))
        assert tuple(parsed[0].keys()) == cols and len(parsed) == len(rows)
    remedy = next(csv.DictReader(io.StringIO(Q.to_csv(Q.alarms(con, code=52), Q.ALARM_COLUMNS))))["remedy"]
    assert "emergency stop" in remedy and "," in remedy          # quoted field survives the round trip


def test_the_database_is_intact_and_in_wal_mode(week):
    out, _ = week
    con = sqlite3.connect(out / "history.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
