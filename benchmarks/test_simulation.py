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


class _Pages:
    """N browsers' worth of load on the API while the controller runs: each holds the live stream open
    (1 Hz) and polls the battery page's endpoints as the page does (/api/battery every 2 s, /api/cells, all
    32 × 396 cells, every 5 s)."""

    def __init__(self, port: int, n: int, seconds: float):
        import threading
        self.port, self.n, self.seconds = port, n, seconds
        self.events = 0
        self.bytes = 0
        self.errors = 0
        self.threads = [threading.Thread(target=self._page, daemon=True) for _ in range(n)]

    def _call(self, method, path, body=None, token=None):
        import json
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
        self.bytes += len(data)
        return json.loads(data)

    def start(self):
        import time
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/api/health")["setup_required"]:
                    self._call("POST", "/api/setup", {"username": "bench", "password": "bench password 1"})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.token = self._call("POST", "/api/login", {"username": "bench", "password": "bench password 1"})["token"]
        for t in self.threads:
            t.start()

    def _page(self):
        import http.client
        import threading
        import time
        end = time.monotonic() + self.seconds

        def poll():
            nxt_b = nxt_c = 0.0
            while time.monotonic() < end:
                now = time.monotonic()
                try:
                    if now >= nxt_b:
                        self._call("GET", "/api/battery", token=self.token)
                        nxt_b = now + 2.0
                    if now >= nxt_c:
                        self._call("GET", "/api/cells", token=self.token)
                        nxt_c = now + 5.0
                except OSError:
                    self.errors += 1
                time.sleep(0.1)
        threading.Thread(target=poll, daemon=True).start()
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            c.request("GET", "/api/live/stream", headers={"Authorization": f"Bearer {self.token}"})
            r = c.getresponse()
            while time.monotonic() < end:
                line = r.readline()
                if not line:
                    break
                self.bytes += len(line)
                if line.startswith(b"event: status"):
                    self.events += 1
            c.close()
        except OSError:
            self.errors += 1


@pytest.mark.parametrize("site", list(SITES))
@pytest.mark.parametrize("pages", [0, 5])
def test_bench_realtime_loop_jitter_with_open_pages(benchmark, pages, site, tmp_path):
    """The controller must not notice the page: 60 s of a site in real time with 0 and 5 open pages (each:
    the live stream and the battery page's polls), period error of the 10 ms fast loop."""
    import threading
    import tomli_w
    port = free_port()
    base = tmp_path / "base.toml"
    base.write_bytes(tomli_w.dumps({"dispatch": {"port": free_port()}, "api": {"port": port},
                                    **SITES[site]}).encode())
    sim = sim_site(tmp_path, base)
    probe = {}
    load = _Pages(port, pages, 55.0)
    if pages:
        threading.Timer(3.0, load.start).start()
    try:
        benchmark.pedantic(run_site, args=(load_site(sim.site_file), 60.0),
                           kwargs=dict(out=io.StringIO(), probe=probe, db_path=tmp_path / "history.sqlite"),
                           rounds=1, iterations=1)
    finally:
        sim.stop()
    period_ms = np.diff(probe["tick_start_s"]) * 1e3
    err = np.abs(period_ms - 10.0)
    slow_ms = probe["slow_s"] * 1e3
    benchmark.extra_info.update(
        case=f"realtime_jitter_{site}_{pages}_pages", kind="jitter", ticks=int(len(period_ms)), rt="",
        pages=pages, stream_events=load.events, page_bytes=load.bytes, page_errors=load.errors,
        jitter_p50_ms=float(np.percentile(err, 50)), jitter_p99_ms=float(np.percentile(err, 99)),
        jitter_p999_ms=float(np.percentile(err, 99.9)), jitter_max_ms=float(err.max()),
        slow_loop_p50_ms=float(np.percentile(slow_ms, 50)), slow_loop_p99_ms=float(np.percentile(slow_ms, 99)),
    )
