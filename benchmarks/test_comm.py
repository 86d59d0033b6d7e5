"""Device communication across processes: a CAN cell over-voltage frame from the simulated BMS (`ems sim-site`,
another process, over socketcand on loopback) → the zero active-power write arriving at the simulated PCS's
Modbus server in that process, with the controller's own fast period (the board's code path, SiteIo over the
Modbus engine and the CAN link) at 10 ms absolute deadlines; and the engine's poll throughput.

t0 is when the simulated BMS wrote the frame carrying the faulty cell to its socket (at a random phase of the
controller's 10 ms loop, as a real frame arrives); the write's arrival is logged by the simulated PCS (both
on the machine's monotonic clock). Also reported: how long until
the fast tick that first sees the frame starts (transport plus the wait for the next tick: 0 … 10 ms).

Reported by benchmarks/report.py; never asserted in tests. EMS_LATENCY_TRIALS sets the trial count.
"""
import dataclasses
import os
import threading
import time

import numpy as np

from ems.comm.modbus_client import Device, Link, ModbusEngine
from ems.comm.modbus_server import IoThread, ProfileImage
from ems.comm.net import free_port
from ems.comm.profiles import shipped_profiles
from ems.config.load import load_site
from ems.config.schema import SiteConfig
from ems.control.controller import Controller
from ems.control.protection_table import BatteryRatings, default_rows
from ems.site.clock import SiteClock
from ems.site.devices import SiteDevices
from ems.site.runtime import FastPeriod
from tests.procs import control, sim_site

TRIALS = int(os.environ.get("EMS_LATENCY_TRIALS", "1000"))
TRIALS_DEFAULT_FILTER = int(os.environ.get("EMS_LATENCY_TRIALS_DEFAULT_FILTER", "50"))
V_INJECTED = 3.90          # one cell far above the 3.75 V over-voltage shutdown threshold


def _rows(filter_ms: float | None):
    """The default protection table; `filter_ms` replaces the over-voltage shutdown row's fault set delay
    (its noise filter, 200 ms by default) and clear delay, so the comm and control path can be timed alone."""
    rows = default_rows(BatteryRatings(cells_per_cluster=SiteConfig().battery.cells_per_cluster))
    if filter_ms is None:
        return rows
    return [dataclasses.replace(r, set_ms=(0.0, 0.0, filter_ms), clear_ms=(0.0, 0.0, filter_ms))
            if r.name == "overvoltage_shutdown" else r for r in rows]


def _zero_write_after(sim, t0: float, timeout_s: float = 2.0) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for t, dev, name, value in control(sim, kind="writes", since=t0)["writes"]:
            if dev == "pcs" and name == "active_power_setpoint_w" and value == 0.0:
                return t
        time.sleep(0.002)
    return None


def _latency_trials(n: int, filter_ms: float | None, tmp_path) -> tuple[np.ndarray, np.ndarray, int]:
    base = tmp_path / "base.toml"
    base.write_text("[dispatch]\nserver_enabled = false\n")
    sim = sim_site(tmp_path, base)
    cfg = load_site(sim.site_file)
    clock = SiteClock()
    ctrl = Controller(cfg, clock, protection_rows=_rows(filter_ms))
    io = IoThread()
    devices = SiteDevices(cfg, io, ctrl.fast.buffers)
    devices.io.attach(ctrl)
    period = FastPeriod(cfg, ctrl, devices.io, None, clock)
    seen = {"t": None}
    stop = threading.Event()

    def loop():                                     # the controller's fast period at 10 ms absolute deadlines
        k, deadline = 0, time.monotonic()
        cell = ctrl.fast.buffers.cell_v
        while not stop.is_set():
            start = time.monotonic()
            period.period(k)
            if seen["t"] is None and cell[0, 0] > 3.8:
                seen["t"] = start
            k += 1
            deadline += cfg.loops.fast_period_ms / 1000.0
            time.sleep(max(0.0, deadline - time.monotonic()))
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    out, seen_at, lost = [], [], 0
    rng = np.random.default_rng(7)
    try:
        ctrl.command("dispatch_w", 20_000.0, lease_s=1e9)   # a steady discharge the trip must cut
        while len(out) < n:
            give_up = time.monotonic() + 30.0
            while abs(control(sim, kind="truth")["truth"]["pcs_setpoint_w"]) < 1000:   # running again
                ctrl.command("fault_reset", source="bench")
                time.sleep(0.05)
                if time.monotonic() > give_up:
                    raise RuntimeError("the site did not recover from the last trial's trip")
            time.sleep(0.02 + rng.uniform(0.0, cfg.loops.fast_period_ms / 1000.0))
            seen["t"] = None
            t0 = control(sim, kind="cell_fault", cluster=0, cell=0, voltage_v=V_INJECTED, now=True)["sent_at_s"]
            t1 = _zero_write_after(sim, t0)
            if t1 is not None and seen["t"] is not None:
                out.append(t1 - t0)
                seen_at.append(max(seen["t"] - t0, 0.0))
            else:
                lost += 1
                if lost > max(10, n // 10):
                    raise RuntimeError(f"{lost} trials without a zero write: the bench is broken")
            control(sim, kind="cell_fault_clear", cluster=0, cell=0)
    finally:
        stop.set()
        t.join(2.0)
        devices.close()
        io.stop()
        sim.stop()
    return np.array(out), np.array(seen_at), lost


def _report(benchmark, case: str, filter_ms: float | None, trials: int, tmp_path) -> None:
    lat_s, seen_s, lost = benchmark.pedantic(_latency_trials, args=(trials, filter_ms, tmp_path), rounds=1,
                                             iterations=1)
    lat, seen = lat_s * 1e3, seen_s * 1e3
    benchmark.extra_info.update(case=case, kind="latency", trials=int(len(lat)), lost=lost,
                                p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
                                max_ms=float(lat.max()), seen_p50_ms=float(np.percentile(seen, 50)),
                                seen_p99_ms=float(np.percentile(seen, 99)))


def test_bench_can_overvoltage_to_pcs_zero_write(benchmark, tmp_path):
    """The comm and control path: the shutdown row's filter set to 0 ms."""
    _report(benchmark, "can_to_pcs_zero", 0.0, TRIALS, tmp_path)


def test_bench_can_overvoltage_to_pcs_zero_write_default_filter(benchmark, tmp_path):
    """End to end with the default table: the 200 ms over-voltage filter plus the path above."""
    _report(benchmark, "can_to_pcs_zero_default_filter", None, TRIALS_DEFAULT_FILTER, tmp_path)


def _poll_throughput(seconds: float = 3.0) -> float:
    io = IoThread()
    p = shipped_profiles()["DTSU666-H"]
    img = ProfileImage(p)
    port = free_port()
    io.serve_tcp({101: img}, "127.0.0.1", port)
    eng = ModbusEngine(io, fast_period_s=0.0)
    p_fast = type(p)(p.path, p.kind, p.vendor, p.model, {"fast": 0.001, "slow": 0.001}, p.registers, p.merge_gap,
                     p.max_block)
    eng.add(Link(port=port), [Device("meter", p_fast, 101)])
    eng.start()
    time.sleep(0.5)
    n0 = eng.device("meter").requests
    time.sleep(seconds)
    rate = (eng.device("meter").requests - n0) / seconds
    eng.stop()
    io.stop()
    return rate


def test_bench_engine_poll_throughput(benchmark):
    rate = benchmark.pedantic(_poll_throughput, rounds=1, iterations=1)
    benchmark.extra_info.update(case="poll_throughput", kind="throughput", requests_per_s=float(rate))
