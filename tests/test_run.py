import json
import signal
import sqlite3
import subprocess
import sys

from tests.procs import EmsRun, status_lines


def test_ems_run_prints_a_status_line_per_second_when_not_a_terminal(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ems", "run", "--duration", "3", "--state",
                           str(tmp_path / "state.json"), "--no-history"], capture_output=True, text=True, timeout=90,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " grid " in line and " soc " in line]
    assert 2 <= len(lines) <= 5
    assert all(line.startswith("SIMULATED ") for line in lines), "the demo says what it is on every line"
    assert "strategy self_use" in lines[-1] and "mode local" in lines[-1]
    assert "stopped: PCS commanded to 0 W and stop (written)" in proc.stdout
    assert (tmp_path / "state.json").is_file()


def test_sigterm_stops_cleanly_with_pcs_at_zero_and_exit_code_0(tmp_path):
    run = EmsRun("--state", str(tmp_path / "state.json"), "--db", str(tmp_path / "h.sqlite"), cwd=tmp_path)
    try:
        assert run.wait_for(lambda s: " soc " in s and " grid " in s, 30) is not None, "".join(run.err)
    finally:
        assert run.stop(signal.SIGTERM) == 0, "".join(run.err)
    assert "stopped: PCS commanded to 0 W and stop (written)" in run.text()
    assert (tmp_path / "state.json").is_file()


def test_run_refuses_a_bad_config_and_bad_arguments(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_text("[pcs]\nrated_power_w = -5\n")
    p = subprocess.run([sys.executable, "-m", "ems", "run", "--config", str(bad)], capture_output=True, text=True)
    assert p.returncode == 1 and "pcs.rated_power_w" in p.stderr
    p = subprocess.run([sys.executable, "-m", "ems", "run", "--duration", "0"], capture_output=True, text=True)
    assert p.returncode == 2 and "--duration" in p.stderr
    p = subprocess.run([sys.executable, "-m", "ems", "run", "--speed", "60"], capture_output=True, text=True)
    assert p.returncode == 2, "ems run is real time: a sped-up desk run is `ems simulate`"


def test_saved_state_is_restored_on_the_next_start(tmp_path):
    state = tmp_path / "state.json"
    subprocess.run([sys.executable, "-m", "ems", "run", "--duration", "1.5", "--state", str(state), "--no-history"],
                   capture_output=True, text=True, timeout=90, check=True, cwd=tmp_path)
    data = json.loads(state.read_text())
    # move the saved battery well away from the configured 50 %, keeping the file as `ems run` wrote it otherwise
    data["cell_soc"] = [[min(s * 1.4, 1.0) for s in row] for row in data["cell_soc"]]
    saved = 100.0 * sum(map(sum, data["cell_soc"])) / sum(map(len, data["cell_soc"]))
    state.write_text(json.dumps(data))
    db = tmp_path / "history.sqlite"
    run = EmsRun("--duration", "3", "--state", str(state), "--db", str(db), cwd=tmp_path)
    assert run.proc.wait(90) == 0, "".join(run.err)
    assert f"state restored from {state}" in run.text()
    soc = [float(line.split(" soc ")[1].split()[0]) for line in status_lines(run) if " soc   —" not in line]
    assert soc and abs(soc[0] - saved) < 0.5 and abs(soc[0] - 50.0) > 0.5
    # the run over the real protocols recorded its start, stop, live status and equipment list
    con = sqlite3.connect(db)
    assert {a for (a,) in con.execute("SELECT action FROM log")} >= {"start", "stop"}
    assert con.execute("SELECT count(*) FROM devices WHERE protocol LIKE 'modbus%'").fetchone()[0] >= 3
    live = json.loads(con.execute("SELECT value FROM live WHERE key = 'status'").fetchone()[0])
    assert live["simulated"] is True and {d["name"] for d in live["devices"]} >= {"pcs", "grid_meter", "bms"}


def test_the_site_clock_follows_the_system_clock_and_sets_it_through_the_board():
    from datetime import datetime, timedelta, timezone

    import pytest

    from ems.site.clock import SiteClock
    asked = []
    clock = SiteClock(set_system=asked.append)
    assert abs((clock.now() - datetime.now(timezone.utc)).total_seconds()) < 0.5
    when = datetime.now(timezone.utc) + timedelta(minutes=3)
    clock.set_wall(when)
    assert asked == [when]
    with pytest.raises(PermissionError):
        SiteClock().set_wall(when)
