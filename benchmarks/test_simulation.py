"""Simulation speed (a day at 1 s steps); the controller's real-time fast-loop jitter and slow-loop duration, with
the simulated site in a process of its own (`ems run --config` against `ems sim-site`: the board's path).

Reported by benchmarks/report.py next to the kernel table; never asserted in tests.
"""
import io
from datetime import datetime

import numpy as np
import pytest

from ems.comm.net import free_port
from ems.config import site_from_dict
from ems.config.load import load_site
from ems.sim.runner import simulate
from ems.site.runtime import run_site
from tests.procs import sim_site
from ems.sim.scenario import Simulation

SITES = {
    "demo": {},
    "32_clusters": {"battery": {"clusters": 32, "cells_per_cluster": 396, "packs_per_cluster": 9},
                    "pcs": {"rated_power_w": 3e6}, "pv": {"installed_ac_w": 2e6}},
}


@pytest.mark.parametrize("site", list(SITES))
def test_bench_simulated_day(benchmark, site, tmp_path):
    cfg = site_from_dict(SITES[site])
    peak = 80e3 if site == "demo" else 2e6
    sim = Simulation(start=datetime.fromisoformat("2026-06-22T00:00:00+02:00"), duration_s=86400.0, step_s=1.0,
                     pv_profile="cloudy", load_profile="commercial", load_peak_w=peak)
    benchmark.extra_info.update(case=f"sim_day_{site}", kind="simulation")
    benchmark.pedantic(simulate, args=(cfg, sim, tmp_path / "out"), rounds=1, iterations=1)


RT_MODES = {
    "default": {},
    # the board's real-time settings: memory locked, SCHED_FIFO 80, the fast loop pinned to CPU 1
    "realtime": {"board": {"lock_memory": True, "rt_priority": 80, "cpu": 1}},
}


@pytest.mark.parametrize("mode", list(RT_MODES))
def test_bench_realtime_loop_jitter(benchmark, mode, tmp_path):
    """60 s of the controller in real time on the demo site, its devices `ems sim-site` in another process;
    period error of the 10 ms fast loop, with and without the real-time settings (a refused setting is
    reported in the output, and the run goes on without it)."""
    import tomli_w
    base = tmp_path / "base.toml"
    base.write_bytes(tomli_w.dumps({"dispatch": {"port": free_port()}, **RT_MODES[mode]}).encode())
    sim = sim_site(tmp_path, base)
    probe = {}
    out = io.StringIO()
    try:
        benchmark.pedantic(run_site, args=(load_site(sim.site_file), 60.0), kwargs=dict(out=out, probe=probe),
                           rounds=1, iterations=1)
    finally:
        sim.stop()
    rt_line = next((line for line in out.getvalue().splitlines() if line.startswith(("real-time", "not applied"))), "")
    period_ms = np.diff(probe["tick_start_s"]) * 1e3
    err = np.abs(period_ms - 10.0)
    slow_ms = probe["slow_s"] * 1e3
    benchmark.extra_info.update(
        case=f"realtime_jitter_{mode}", kind="jitter", ticks=int(len(period_ms)), rt=rt_line if mode != "default" else "",
        jitter_p50_ms=float(np.percentile(err, 50)), jitter_p99_ms=float(np.percentile(err, 99)),
        jitter_p999_ms=float(np.percentile(err, 99.9)), jitter_max_ms=float(err.max()),
        slow_loop_p50_ms=float(np.percentile(slow_ms, 50)), slow_loop_p99_ms=float(np.percentile(slow_ms, 99)),
    )
