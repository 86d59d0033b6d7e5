"""kill -9 of a running `ems run --config … --state … --db …` in a loop, against one `ems sim-site` that runs
on (the battery does not restart with the controller). After every kill: the history database passes
SQLite's integrity check, the state file is whole, it is at most [soc_estimation] save_interval_s (plus a
slow tick) older than the kill, and the next start restores exactly what it holds.

`make test` runs two cycles (tests/test_fuzz.py); `make fuzz` runs it longer:
    python -m tests.kill_loop --cycles 30
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

SAVE_INTERVAL_S = 5.0


def _soc_of(line: str) -> float | None:
    try:
        return float(line.split(" soc ", 1)[1].split()[0])
    except (IndexError, ValueError):
        return None


def kill_cycles(tmp: Path, cycles: int, seed: int = 1, min_s: float = 2.5, max_s: float = 8.0) -> dict:
    from ems.comm.net import free_port
    from tests.procs import EmsRun, sim_site

    rng = random.Random(seed)
    base = tmp / "base.toml"
    base.write_text(f'[site]\nname = "kill loop"\n[dispatch]\nport = {free_port()}\n[api]\nenabled = false\n'
                    f'[soc_estimation]\nsave_interval_s = {SAVE_INTERVAL_S}\n')
    sim = sim_site(tmp, base)
    state, db = tmp / "state.json", tmp / "history.sqlite"
    report = {"cycles": 0, "db_corrupt": 0, "state_unreadable": 0, "state_too_old": 0, "restore_mismatch": 0,
              "max_state_age_s": 0.0, "max_restore_error_pct": 0.0, "details": []}
    try:
        for i in range(cycles):
            run = EmsRun("--config", str(sim.site_file), "--state", str(state), "--db", str(db))
            t0 = time.monotonic()
            restored = run.wait_for(lambda s: "state restored" in s, timeout_s=10) if state.exists() else None
            line = run.wait_for(lambda s: " soc " in s and _soc_of(s) is not None, timeout_s=20)
            first_soc = _soc_of(line) if line else None
            time.sleep(max(0.0, rng.uniform(min_s, max_s) - (time.monotonic() - t0)))
            killed_at = datetime.now().astimezone()
            run.proc.send_signal(signal.SIGKILL)
            run.proc.wait(10)
            report["cycles"] += 1
            detail = {"cycle": i, "ran_s": round(time.monotonic() - t0, 1), "restored": restored is not None,
                      "first_soc_pct": first_soc}
            if db.exists():
                con = sqlite3.connect(db)
                try:
                    ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                finally:
                    con.close()
                report["db_corrupt"] += not ok
            try:
                saved = json.loads(state.read_text())
                age_s = (killed_at - datetime.fromisoformat(saved["saved_at"])).total_seconds()
                detail["state_age_s"], detail["saved_soc_pct"] = round(age_s, 2), saved["soc_pct"]
                report["max_state_age_s"] = max(report["max_state_age_s"], age_s)
                if age_s > SAVE_INTERVAL_S + 2.0:
                    report["state_too_old"] += 1
            except (OSError, ValueError, KeyError):
                report["state_unreadable"] += 1
                saved = None
            if i > 0 and report["details"] and report["details"][-1].get("saved_soc_pct") is not None \
                    and first_soc is not None:
                # the first SOC this run showed is the one the last kill left in the file (rounded to 0.1)
                err = abs(first_soc - report["details"][-1]["saved_soc_pct"])
                report["max_restore_error_pct"] = max(report["max_restore_error_pct"], err)
                if err > 0.2:
                    report["restore_mismatch"] += 1
            report["details"].append(detail)
    finally:
        sim.stop()
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="build/fuzz/kill.json")
    args = ap.parse_args(argv)
    report = kill_cycles(Path(tempfile.mkdtemp(prefix="ems-kill-")), args.cycles, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "details"}, indent=1))
    bad = report["db_corrupt"] + report["state_unreadable"] + report["state_too_old"] + report["restore_mismatch"]
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
