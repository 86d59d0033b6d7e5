"""kill -9 of a writer mid-flight: the database stays intact and keeps everything committed before the kill."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from ems.control.events import GRID_METER_ID

WRITER = r"""
import sys
from datetime import datetime, timezone
from ems.records.recorder import Recorder
path, t0 = sys.argv[1], float(sys.argv[2])
rec = Recorder(path, interval_min=5, retention_days=0, timezone="UTC")
rec.start(t0)
t = t0
while True:
    for _ in range(300):            # one 5-minute interval of 1 s readings, plus an event now and then
        rec.observe(t, {"grid_w": 3600.0, "load_w": 3600.0}, 50.0)
        t += 1.0
    rec.event({"time": datetime.fromtimestamp(t, timezone.utc).isoformat(), "kind": "di_changed", "code": None,
               "name": "spd", "device_id": "0x01000000", "detail": "closed", "user": ""})
    rec.flush()
    print(t - 1.0, flush=True)     # every sample up to here is committed
"""


def test_kill_9_never_corrupts_and_loses_at_most_the_current_interval(tmp_path):
    path = tmp_path / "history.sqlite"
    rnd = random.Random(7)
    t0 = 1_780_000_200.0             # a multiple of 300 s
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(t0)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": os.getcwd()})
        committed = []
        deadline = time.monotonic() + rnd.uniform(1.0, 2.5)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            committed.append(float(line))
        proc.send_signal(signal.SIGKILL)       # mid-flight: the writer is inside its next batch
        proc.wait()
        assert committed, "the writer committed nothing before the kill"
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        last = con.execute("SELECT max(t) FROM samples WHERE device_id=?", (GRID_METER_ID,)).fetchone()[0]
        # the last committed batch ended at reading t; its newest boundary sample is t − 299 s
        assert last >= committed[-1] - 299.0
        # counters stay monotonic across every kill and restart
        e = [v for (v,) in con.execute("SELECT e_in_wh FROM samples WHERE device_id=? ORDER BY t", (GRID_METER_ID,))]
        assert all(b >= a for a, b in zip(e, e[1:]))
        con.close()
        t0 = last + 300.0 - (last % 300.0)      # the next run starts after what survived
