"""`ems status | alarms | log | report | stats | devices --db | reset-faults` on real databases."""
import csv
import io
import re
import threading
import time
from datetime import datetime, timezone

from ems.cli import main
from ems.config.schema import SiteConfig
from ems.control.clock import VirtualClock
from ems.control.controller import Controller
from ems.records.site import SiteRecords


def test_commands_read_a_simulations_database(week, capsys):
    out, _ = week
    db = str(out / "history.sqlite")
    assert main(["status", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "stopped" in text and re.search(r"soc \d+\.\d % ± \d+\.\d", text)      # SOC with its bound
    assert main(["alarms", "--db", db, "--level", "urgent", "--since", "2026-06-05", "--until", "2026-06-06"]) == 0
    text = capsys.readouterr().out
    assert "YX_system_epo_signal" in text and "Cell_over_volt" not in text     # the trip was on day 2
    assert main(["alarms", "--db", db, "--code", "40006", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and {r["code"] for r in rows} == {"40006"}
    assert main(["log", "--db", db, "--kind", "operation"]) == 0
    assert "fault_reset" in capsys.readouterr().out
    assert main(["report", "daily", "2026-06-03", "--interval", "5m", "--csv", "--db", db]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 288
    assert main(["report", "monthly", "2026-06", "--db", db]) == 0
    assert main(["stats", "year", "2026", "--db", db]) == 0
    assert "self_sufficiency_pct" in capsys.readouterr().out
    assert main(["devices", "--db", db, "--csv"]) == 0
    assert "0x02010001" in capsys.readouterr().out


def test_bad_arguments_get_a_clear_error(week, tmp_path, capsys):
    out, _ = week
    db = str(out / "history.sqlite")
    assert main(["report", "daily", "2026-02-30", "--db", db]) == 2
    assert "not a date" in capsys.readouterr().err
    assert main(["alarms", "--level", "loud", "--db", db]) == 2
    assert main(["report", "daily", "2026-06-03", "--interval", "7m", "--db", db]) == 2
    assert main(["status", "--db", str(tmp_path / "missing.sqlite")]) == 1
    assert "no such database" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite").exists()


def test_reset_faults_reaches_the_running_controller_and_is_logged(tmp_path, capsys):
    cfg = SiteConfig()
    ctrl = Controller(cfg, VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc)))
    db = tmp_path / "history.sqlite"
    records = SiteRecords(cfg, ctrl, db)
    records.start()
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            records.after_slow_tick()
            stop.wait(0.02)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        assert main(["reset-faults", "--db", str(db)]) == 0
        assert "fault reset: done" in capsys.readouterr().out
        assert ctrl._reset_pending
    finally:
        stop.set()
        t.join()
        records.stop()
    assert main(["log", "--db", str(db), "--kind", "operation"]) == 0
    assert "cli:" in capsys.readouterr().out
    # with no controller running the request is withdrawn, not left to act later
    t0 = time.monotonic()
    assert main(["reset-faults", "--db", str(db), "--timeout", "0.5"]) == 1
    assert time.monotonic() - t0 < 5 and "no controller answered" in capsys.readouterr().err
