import signal
import subprocess
import sys
import time


def test_ems_run_prints_a_status_line_per_second_when_not_a_terminal(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ems", "run", "--duration", "2.5", "--speed", "60",
                           "--state", str(tmp_path / "state.json"), "--no-history"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "grid" in line]
    assert 2 <= len(lines) <= 4
    assert "soc" in lines[0] and "strategy self_use" in lines[0]
    assert "stopped: PCS at 0 W" in proc.stdout
    assert (tmp_path / "state.json").is_file()


def test_ems_run_in_real_time_reports_the_cpu_time_of_the_simulated_site(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ems", "run", "--duration", "2", "--no-history", "--state",
                           str(tmp_path / "state.json")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # real protocols (speed 1): the footprint benchmark subtracts this from the process's CPU time
    sim = next(line for line in proc.stdout.splitlines() if line.startswith("simulated site:"))
    cpu_s, over_s = float(sim.split()[2]), float(sim.split()[-2])
    assert 0 < cpu_s < over_s and 2.0 <= over_s < 10.0


def test_sigterm_stops_cleanly_with_pcs_at_zero_and_exit_code_0(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "ems", "run", "--speed", "10", "--state",
                             str(tmp_path / "state.json"), "--db", str(tmp_path / "h.sqlite")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "grid" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped: PCS at 0 W" in out
    assert (tmp_path / "state.json").is_file()


def test_run_refuses_a_bad_config_and_bad_arguments(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_text("[pcs]\nrated_power_w = -5\n")
    p = subprocess.run([sys.executable, "-m", "ems", "run", "--config", str(bad)], capture_output=True, text=True)
    assert p.returncode == 1 and "pcs.rated_power_w" in p.stderr
    p = subprocess.run([sys.executable, "-m", "ems", "run", "--speed", "0"], capture_output=True, text=True)
    assert p.returncode == 2 and "--speed" in p.stderr


def test_saved_state_is_restored_on_the_next_start(tmp_path):
    import json
    state = tmp_path / "state.json"
    subprocess.run([sys.executable, "-m", "ems", "run", "--duration", "1.5", "--speed", "600", "--state", str(state),
                    "--no-history"],
                   capture_output=True, text=True, timeout=60, check=True)
    data = json.loads(state.read_text())
    # move the saved battery well away from the configured 50 % (how far a short run moves it depends on
    # the time of day the test runs at), keeping the file exactly as `ems run` wrote it otherwise
    data["cell_soc"] = [[min(s * 1.4, 1.0) for s in row] for row in data["cell_soc"]]
    saved = 100.0 * sum(map(sum, data["cell_soc"])) / sum(map(len, data["cell_soc"]))
    state.write_text(json.dumps(data))
    db = tmp_path / "history.sqlite"
    p = subprocess.run([sys.executable, "-m", "ems", "run", "--duration", "1.2", "--speed", "1", "--state", str(state),
                        "--db", str(db)], capture_output=True, text=True, timeout=60, check=True)
    first = [line for line in p.stdout.splitlines() if "soc" in line][0]
    soc = float(first.split("soc")[1].split("%")[0])
    assert abs(soc - saved) < 0.5 and abs(soc - 50.0) > 0.5
    # the run over the real protocols recorded its start, stop, live status and equipment list
    import sqlite3
    con = sqlite3.connect(db)
    assert {a for (a,) in con.execute("SELECT action FROM log")} >= {"start", "stop"}
    assert con.execute("SELECT count(*) FROM devices WHERE protocol LIKE 'modbus%'").fetchone()[0] >= 3
    assert con.execute("SELECT count(*) FROM live").fetchone()[0] == 1


def test_the_sped_up_clock_steps_its_simulated_wall_time_and_not_its_periods():
    from datetime import datetime, timedelta, timezone
    from ems.sim.live import ScaledClock
    start = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    clock = ScaledClock(60.0, start=start, set_system=lambda when: (_ for _ in ()).throw(AssertionError("system")))
    mono = clock.monotonic_s()
    clock.set_wall(start + timedelta(hours=5))
    assert abs((clock.now() - (start + timedelta(hours=5))).total_seconds()) < 5.0
    assert clock.monotonic_s() - mono < 5.0


def test_the_real_time_clock_follows_the_system_clock_and_sets_it_through_the_board():
    from datetime import datetime, timedelta, timezone
    from ems.sim.live import ScaledClock
    asked = []
    clock = ScaledClock(set_system=asked.append)
    assert clock.follows_system
    assert abs((clock.now() - datetime.now(timezone.utc)).total_seconds()) < 0.5
    when = datetime.now(timezone.utc) + timedelta(minutes=3)
    clock.set_wall(when)
    assert asked == [when]
