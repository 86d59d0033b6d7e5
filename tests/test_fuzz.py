"""Issue 17's probes as the project's own tests: a few seconds of the dispatch-server fuzzer against a real
`ems run` process (the long run is `make fuzz`)."""
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
