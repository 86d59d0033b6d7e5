"""Issue 17's probes as the project's own tests: a few seconds of the dispatch-server fuzzer against a real
`ems run` process (the long run is `make fuzz`)."""
import sys
import time

from tests.fuzz_dispatch import fuzz, fuzz_target


def test_seconds_of_fuzzing_accept_no_write_and_keep_scada_served(tmp_path):
    with fuzz_target(tmp_path) as (port, run):
        report = fuzz("127.0.0.1", port, 6.0, seed=int(time.time()) % 1000, pid=run.proc.pid)
        assert report["alive"] and report["final_probe"], report
        assert report["writes_accepted_against_rules"] == 0, report["violations"]
        assert report["probe_failures"] == 0, report
        assert report["frames"] > 50 and report["answers"] > 10, report        # it did fuzz (a loaded machine is slow)
        assert report["fds_end"] <= report["fds_start"] + 4, report
        assert report["rss_kb_end"] - report["rss_kb_start"] < 20_000, report
        assert not any(line.startswith("Traceback") for line in run.err), "".join(run.err[-40:])


def test_kill_minus_9_leaves_a_sound_database_and_a_recent_state_that_is_restored(tmp_path):
    """Issue 17 item 18: the estimate is saved periodically (here every 5 s), so a kill costs at most that."""
    from tests.kill_loop import SAVE_INTERVAL_S, kill_cycles

    report = kill_cycles(tmp_path, cycles=2, seed=int(time.time()) % 1000, min_s=3.0, max_s=5.0)
    assert report["cycles"] == 2 and report["db_corrupt"] == 0, report
    assert report["state_unreadable"] == 0 and report["state_too_old"] == 0, report
    assert report["max_state_age_s"] <= SAVE_INTERVAL_S + 2.0
    assert report["details"][1]["restored"] and report["restore_mismatch"] == 0, report


def test_a_thousand_idle_sockets_cannot_starve_scada_or_the_api(tmp_path):
    """Issue 17 item 6, as found: 1,100 idle sockets against a controller limited to 1,024 file
    descriptors. They are refused at the caps (dispatch 32 / 8 per address, API 64 / 16), so the SCADA's
    reads and the API's answers go on and the controller holds its descriptors."""
    import os
    import socket
    import urllib.request

    from ems.comm.net import free_port
    from tests.fuzz_dispatch import probe, proc_stats
    from tests.procs import EmsRun, sim_site

    dport, aport = free_port(), free_port()
    base = tmp_path / "base.toml"
    base.write_text(f'[site]\nname = "flood"\n[dispatch]\nport = {dport}\n[api]\nport = {aport}\n')
    sim = sim_site(tmp_path, base)
    run = EmsRun("--config", str(sim.site_file), "--db", str(tmp_path / "h.sqlite"), "--state",
                 str(tmp_path / "state.json"), python=["prlimit", "--nofile=1024:1024", sys.executable, "-m", "ems"])
    held = []
    try:
        assert run.wait_for(lambda s: "http api" in s, 20) is not None, "".join(run.err)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not probe("127.0.0.1", dport):
            time.sleep(0.2)
        for i in range(1100):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i % 50}", 0))            # 50 attacking addresses
            s.connect(("127.0.0.1", dport if i % 2 else aport))
            held.append(s)
        assert probe("127.0.0.1", dport), "SCADA starved"      # the allowlisted SCADA has its own slots
        time.sleep(6.0)                                         # idle past evict_idle_s: room is made
        assert probe("127.0.0.1", dport, source="127.0.1.1"), "a reader starved"                 # at an address of its own
        with urllib.request.urlopen(f"http://127.0.0.1:{aport}/api/health", timeout=5) as r:     # room made
            assert r.status == 200
        fds = proc_stats(run.proc.pid)["fds"]
        assert fds < 200, fds                                 # 32 + 64 admitted, the rest closed at once
        assert sum(1 for line in run.err if "Traceback" in line) == 0, "".join(run.err[-20:])
        assert sum(1 for line in run.err if "refused" in line) <= 10      # logged once per interval
    finally:
        for s in held:
            s.close()
        run.stop()
        sim.stop()
