"""Device communication: CAN over-voltage frame → PCS zero-power write at the simulated PCS's Modbus server
(`ems run`'s fast period on loopback with the default 10 ms fast loop), and the engine's poll throughput.

Reported by benchmarks/report.py; never asserted in tests. EMS_LATENCY_TRIALS sets the trial count.
"""
import dataclasses
import os
import threading
import time

import can
import numpy as np

from ems.comm.can_codec import load_database
from ems.comm.modbus_client import Device, Link, ModbusEngine
from ems.comm.modbus_server import IoThread, ProfileImage
from ems.comm.profiles import shipped_profiles
from ems.config.schema import SiteConfig
from ems.control.clock import RealClock
from ems.control.controller import Controller
from ems.control.protection_table import BatteryRatings, default_rows
from ems.comm.net import free_port
from ems.sim.live import FastPeriod
from ems.sim.plant import Plant

TRIALS = int(os.environ.get("EMS_LATENCY_TRIALS", "1000"))
TRIALS_DEFAULT_FILTER = int(os.environ.get("EMS_LATENCY_TRIALS_DEFAULT_FILTER", "50"))
V_INJECTED = 3.90          # one cell far above the 3.75 V over-voltage shutdown threshold
V_NORMAL = 3.30


def _rows(filter_ms: float | None):
    """The default protection table; `filter_ms` replaces the over-voltage shutdown row's fault set delay
    (its noise filter, 200 ms by default) and clear delay, so the comm and control path can be timed alone."""
    rows = default_rows(BatteryRatings(cells_per_cluster=SiteConfig().battery.cells_per_cluster))
    if filter_ms is None:
        return rows
    return [dataclasses.replace(r, set_ms=(0.0, 0.0, filter_ms), clear_ms=(0.0, 0.0, filter_ms))
            if r.name == "overvoltage_shutdown" else r for r in rows]


def _latency_trials(n: int, filter_ms: float | None) -> tuple[np.ndarray, int]:
    """n trials of: one ClusterCellVoltages frame with a cell at 3.90 V on the virtual CAN bus (at a random
    phase of the 10 ms fast loop, as a real frame arrives) → the zero active-power write arriving at the
    simulated PCS's Modbus server. Between trials the cell is restored, the fault reset and the PCS back at
    20 kW. Returns (latencies in s, trials that produced no write within 2 s)."""
    io = IoThread()
    cfg = SiteConfig()
    ctrl = Controller(cfg, RealClock(), protection_rows=_rows(filter_ms))
    plant = Plant(cfg, "clear", "flat", 30_000.0)
    link = ProtocolSiteLink(plant, ctrl, io)
    period = FastPeriod(cfg, ctrl, link, None, RealClock())
    zero_at = {"t": None}
    arrived = threading.Event()
    orig = link.sim._pcs_write

    def on_write(name, value, client):              # runs on the I/O thread when the write arrives
        orig(name, value, client)
        if name == "active_power_setpoint_w" and value == 0.0 and zero_at["t"] is None:
            zero_at["t"] = time.perf_counter()
            arrived.set()
    link.sim.pcs.on_write = on_write
    mv = load_database().get_message_by_name("ClusterCellVoltages")

    def first_cells(v_first: float) -> can.Message:
        return can.Message(arbitration_id=mv.frame_id, is_extended_id=False, data=mv.encode(
            {"cluster": 0, "group": 0, "cell_a_v": v_first, "cell_b_v": V_NORMAL, "cell_c_v": V_NORMAL}))

    stop = threading.Event()

    def loop():                                     # `ems run`'s fast period at 10 ms absolute deadlines
        k, deadline = 0, time.monotonic()
        while not stop.is_set():
            period.period(k)
            k += 1
            deadline += cfg.loops.fast_period_ms / 1000.0
            time.sleep(max(0.0, deadline - time.monotonic()))
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    out, lost = [], 0
    rng = np.random.default_rng(7)
    faults = plant.stack.cell_fault_v
    try:
        ctrl.command("dispatch_w", 20_000.0, lease_s=1e9)   # a steady discharge the trip must cut
        while len(out) < n:
            give_up = time.monotonic() + 20.0
            while abs(link.sim.pcs_setpoint.get()) < 1000:  # running again: reset until the trip has cleared
                ctrl.command("fault_reset", source="bench")
                time.sleep(0.05)
                if time.monotonic() > give_up:
                    raise RuntimeError("the site did not recover from the last trial's trip")
            time.sleep(0.02 + rng.uniform(0.0, cfg.loops.fast_period_ms / 1000.0))
            zero_at["t"] = None
            arrived.clear()
            t0 = time.perf_counter()
            link.sim.bus.send(first_cells(V_INJECTED))
            faults[(0, 0)] = V_INJECTED             # the BMS keeps reporting it in its cyclic frames
            if arrived.wait(2.0):
                out.append(zero_at["t"] - t0)
            else:
                lost += 1
                if lost > max(10, n // 10):
                    raise RuntimeError(f"{lost} trials without a zero write: the bench is broken")
            faults.pop((0, 0), None)
            link.sim.bus.send(first_cells(V_NORMAL))
    finally:
        stop.set()
        t.join(2.0)
        link.close()
        io.stop()
    return np.array(out), lost


def _report(benchmark, case: str, filter_ms: float | None, trials: int) -> None:
    lat_s, lost = benchmark.pedantic(_latency_trials, args=(trials, filter_ms), rounds=1, iterations=1)
    lat = lat_s * 1e3
    benchmark.extra_info.update(case=case, kind="latency", trials=int(len(lat)), lost=lost,
                                p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
                                max_ms=float(lat.max()))


def test_bench_can_overvoltage_to_pcs_zero_write(benchmark):
    """The comm and control path: the shutdown row's filter set to 0 ms."""
    _report(benchmark, "can_to_pcs_zero", 0.0, TRIALS)


def test_bench_can_overvoltage_to_pcs_zero_write_default_filter(benchmark):
    """End to end with the default table: the 200 ms over-voltage filter plus the path above."""
    _report(benchmark, "can_to_pcs_zero_default_filter", None, TRIALS_DEFAULT_FILTER)


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
