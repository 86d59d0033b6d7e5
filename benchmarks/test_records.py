"""History database: sample insert rate, report query times over a year of 5-minute data, size per year.

The year is written the way the recorder writes it (one row per device per 5-minute interval, counters
cumulative), directly with executemany so that building it takes seconds; the queries are the ones the
CLI and the API run. Reference for the report times: a plain full scan of the month's samples (what a
report would cost without the counter design)."""
import os
import sqlite3

import numpy as np
import pytest

from ems.records import db as DB
from ems.records import reports as R
from ems.records.energy import CHANNELS
from ems.records.recorder import Recorder

YEAR_START = 1767225600.0        # 2026-01-01T00:00:00Z
INTERVALS = 365 * 288


@pytest.fixture(scope="module")
def year_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("year") / "history.sqlite"
    rec = Recorder(path, interval_min=5, retention_days=0, timezone="UTC")
    rec.stop()
    con = DB.connect(path)
    rng = np.random.default_rng(1)
    t = YEAR_START + 300.0 * np.arange(1, INTERVALS + 1)
    with con:
        for dev in CHANNELS:
            p = rng.uniform(0, 50_000, INTERVALS)
            e = np.cumsum(p * 300 / 3600)
            soc = rng.uniform(10, 90, INTERVALS) if dev == 0x02000000 else [None] * INTERVALS
            con.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                            zip([dev] * INTERVALS, t.tolist(), p.tolist(), e.tolist(), (e / 2).tolist(), list(soc)))
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


def test_sample_insert_rate(benchmark, tmp_path):
    """One storage interval committed the way the recorder does it (6 rows, synchronous=FULL)."""
    con = DB.connect(tmp_path / "h.sqlite")
    state = {"t": YEAR_START}

    def one_interval():
        state["t"] += 300.0
        with con:
            con.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                            [(d, state["t"], 1.0, 2.0, 3.0, None) for d in CHANNELS])
    benchmark.pedantic(one_interval, rounds=200, iterations=1)
    benchmark.extra_info.update(kind="records", case="insert_interval", rows=len(CHANNELS))


@pytest.mark.parametrize("kind, when", [("monthly", "2026-07"), ("annual", "2026"), ("daily", "2026-07-15")])
def test_report_query_over_a_year(benchmark, year_db, kind, when):
    con = DB.connect(year_db, readonly=True)
    rows = benchmark(R.report, con, kind, when, "5m")
    assert rows and rows[0]["load_kwh"] > 0
    benchmark.extra_info.update(kind="records", case=f"report_{kind}",
                                db_mb_per_year=round(os.path.getsize(year_db) / 1e6, 1))


def test_month_full_scan_reference(benchmark, year_db):
    con = sqlite3.connect(f"file:{year_db}?mode=ro", uri=True)
    lo = YEAR_START + 181 * 86400
    benchmark(lambda: con.execute("SELECT device_id, sum(p_w), min(soc_pct), max(soc_pct) FROM samples WHERE t > ? "
                                  "AND t <= ? GROUP BY device_id", (lo, lo + 31 * 86400)).fetchall())
    benchmark.extra_info.update(kind="records", case="month_full_scan_reference")
