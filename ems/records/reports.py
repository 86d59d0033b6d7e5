"""Reports and electricity statistics (000_… §3.5.3, §3.5.5) from the energy counters.

Every figure is a difference of cumulative counters at bucket edges (local time of the site), so a report
over a gap in the data (controller off) shows the energy where it was measured and never double-counts.
Daily reports come at 5 / 10 / 30 / 60-minute intervals, monthly per day, annual per month.

Not built: the manual's "query time point" (48 half-hour points) of the monthly and annual reports.
"""
from __future__ import annotations

import bisect
import calendar
import sqlite3
from datetime import date, datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo

from ems.control.events import EMS_ID, GRID_METER_ID, PCS_ID, PV_ID, STACK_ID
from ems.records.energy import DG_METER_ID
from ems.records.queries import QueryError, check_year, site_tz

INTERVALS_MIN = (5, 10, 30, 60)
# report column → (device, "in" | "out")
ENERGY_COLUMNS = {
    "pv_kwh": (PV_ID, "out"),
    "load_kwh": (EMS_ID, "in"),
    "charge_kwh": (PCS_ID, "in"),
    "discharge_kwh": (PCS_ID, "out"),
    "import_kwh": (GRID_METER_ID, "in"),
    "export_kwh": (GRID_METER_ID, "out"),
    "generator_kwh": (DG_METER_ID, "out"),
    "battery_dc_charge_kwh": (STACK_ID, "in"),
    "battery_dc_discharge_kwh": (STACK_ID, "out"),
}
DEVICES = sorted({d for d, _ in ENERGY_COLUMNS.values()})


def parse_interval(text: str | int) -> int:
    s = str(text).strip().lower()
    try:
        minutes = int(s[:-1]) * 60 if s.endswith("h") else int(s.rstrip("m").rstrip("min"))
    except ValueError:
        minutes = -1
    if minutes not in INTERVALS_MIN:
        raise QueryError(f"interval {str(text)[:40]!r}: one of 5m, 10m, 30m, 60m (the manual's daily report intervals)")
    return minutes


def _day(text: str, what: str) -> date:
    try:
        d = date.fromisoformat(text[:10] if len(text) >= 10 else text)
    except ValueError:
        raise QueryError(f"{what} {text[:40]!r}: not a date (YYYY-MM-DD)") from None
    check_year(d.year, what, text[:40])
    return d


def _month(text: str) -> tuple[int, int]:
    try:
        d = datetime.strptime(text[:7], "%Y-%m")
    except ValueError:
        raise QueryError(f"month {text[:40]!r}: give YYYY-MM (or a date in it)") from None
    check_year(d.year, "month", text[:40])
    return d.year, d.month


def _year(text: str) -> int:
    try:
        y = int(text[:4])
    except ValueError:
        y = None
    if y is None or len(text) < 4:
        raise QueryError(f"year {text[:40]!r}: give YYYY (or a date in it)")
    check_year(y, "year", text[:40])
    return y


def _local(d: date, tz: ZoneInfo) -> float:
    return datetime.combine(d, dtime(0), tz).timestamp()


def edges_for(kind: str, when: str, tz: ZoneInfo, interval_min: int = 60) -> list[tuple[str, float]]:
    """Bucket edges (label, epoch s) of a daily / monthly / annual report in local time."""
    if kind == "daily":
        d = _day(when, "date")
        start, end = _local(d, tz), _local(d + timedelta(days=1), tz)      # 23 or 25 h on DST days
        n = int(round((end - start) / (interval_min * 60)))
        return [(datetime.fromtimestamp(start + k * interval_min * 60, tz).strftime("%H:%M"),
                 start + k * interval_min * 60) for k in range(n)] + [("end", end)]
    if kind == "monthly":
        y, m = _month(when)
        days = calendar.monthrange(y, m)[1]
        return [(date(y, m, k + 1).isoformat(), _local(date(y, m, k + 1), tz)) for k in range(days)] + \
            [("end", _local(date(y + (m == 12), m % 12 + 1, 1), tz))]
    if kind == "annual":
        y = _year(when)
        return [(f"{y}-{m:02d}", _local(date(y, m, 1), tz)) for m in range(1, 13)] + [("end", _local(date(y + 1, 1, 1), tz))]
    raise QueryError(f"report {kind!r}: daily, monthly or annual")


def _counters_at(con, t: float) -> dict[int, tuple[float, float, float | None]]:
    """Each device's counters at the last sample at or before t (absent: no sample yet)."""
    out = {}
    for dev in DEVICES:
        row = con.execute("SELECT e_in_wh, e_out_wh, soc_pct FROM samples WHERE device_id=? AND t<=? "
                          "ORDER BY t DESC LIMIT 1", (dev, t)).fetchone()
        if row is not None:
            out[dev] = row
    return out


def _first_after(con, dev: int, t: float):
    return con.execute("SELECT e_in_wh, e_out_wh, soc_pct FROM samples WHERE device_id=? AND t>? ORDER BY t LIMIT 1",
                       (dev, t)).fetchone()


def buckets(con, edges: list[tuple[str, float]]) -> list[dict]:
    """Energy per bucket (kWh) between consecutive edges, the SOC at each bucket's end and its range."""
    at = [_counters_at(con, t) for _, t in edges]
    rows = []
    for k in range(len(edges) - 1):
        a, b = at[k], at[k + 1]
        row = {"period": edges[k][0]}
        for col, (dev, side) in ENERGY_COLUMNS.items():
            i = 0 if side == "in" else 1
            base = a.get(dev) or _first_after(con, dev, edges[k][1])   # history starts inside this bucket
            row[col] = round((b[dev][i] - base[i]) / 1000.0, 6) if dev in b and base else 0.0
        lo, hi = edges[k][1], edges[k + 1][1]
        soc = con.execute("SELECT min(soc_pct), max(soc_pct) FROM samples WHERE device_id=? AND t>? AND t<=?",
                          (STACK_ID, lo, hi)).fetchone()
        row["soc_end_pct"] = b[STACK_ID][2] if STACK_ID in b and soc[0] is not None else None
        row["soc_min_pct"], row["soc_max_pct"] = soc
        rows.append(row)
    return rows


REPORT_COLUMNS = ("period",) + tuple(ENERGY_COLUMNS) + ("soc_end_pct", "soc_min_pct", "soc_max_pct",
                                                        "peak_exceedances", "peak_max_excess_kw", "peak_excess_kwh")


def _exceedances(con, edges: list[tuple[str, float]]) -> list[dict]:
    """Per bucket between consecutive edges: the peak exceedance episodes that started in it (how many,
    the largest excess, the energy above), from one query over the whole span."""
    try:
        rows = con.execute("SELECT t_start, max_excess_w, energy_wh FROM peak_exceedances WHERE t_start >= ? "
                           "AND t_start < ?", (edges[0][1], edges[-1][1])).fetchall()
    except sqlite3.OperationalError:  # a database from before the table existed: nothing recorded
        rows = []
    starts = [t for _, t in edges]
    out = [{"n": 0, "max": 0.0, "e": 0.0} for _ in edges[:-1]]
    for t, mx, e in rows:
        b = out[bisect.bisect_right(starts, t) - 1]
        b["n"], b["max"], b["e"] = b["n"] + 1, max(b["max"], mx), b["e"] + e
    return [{"peak_exceedances": b["n"], "peak_max_excess_kw": round(b["max"] / 1000.0, 3),
             "peak_excess_kwh": round(b["e"] / 1000.0, 4)} for b in out]


def report(con, kind: str, when: str, interval: str | int = 60) -> list[dict]:
    """daily DATE [interval], monthly YYYY-MM, annual YYYY: rows of REPORT_COLUMNS."""
    minutes = parse_interval(interval) if kind == "daily" else 60
    edges = edges_for(kind, when, site_tz(con), minutes)
    rows = buckets(con, edges)
    for row, peak in zip(rows, _exceedances(con, edges)):
        row.update(peak)
    return rows


STATS_PERIODS = {"day": ("daily", 60), "month": ("monthly", 60), "year": ("annual", 60)}


def stats(con, period: str, when: str) -> dict:
    """Electricity statistics of a day (per hour), month (per day) or year (per month): totals, the
    breakdown, and the shares an operator asks about."""
    if period not in STATS_PERIODS:
        raise QueryError(f"period {period!r}: day, month or year")
    kind, minutes = STATS_PERIODS[period]
    edges = edges_for(kind, when, site_tz(con), minutes)
    rows = buckets(con, edges)
    total = {col: round(sum(r[col] for r in rows), 3) for col in ENERGY_COLUMNS}
    pv, load, exp, imp = total["pv_kwh"], total["load_kwh"], total["export_kwh"], total["import_kwh"]
    supplied = pv + total["discharge_kwh"] - total["charge_kwh"] + imp - exp + total["generator_kwh"]
    kpis = {
        "self_consumption_pct": round(100.0 * (1.0 - exp / pv), 2) if pv > 0 else None,
        # the share of the load not drawn from the grid (import that charged the battery counts against it)
        "self_sufficiency_pct": round(100.0 * (1.0 - min(imp, load) / load), 2) if load > 0 else None,
        "balance_error_pct": round(100.0 * (supplied - load) / load, 3) if load > 0 else None,
    }
    peak = _exceedances(con, [edges[0], edges[-1]])[0]
    return {"period": period, "when": when, "totals_kwh": total, "kpis": kpis, "peak": peak,
            "breakdown": [{k: r[k] for k in ("period",) + tuple(ENERGY_COLUMNS)} for r in rows]}
