"""Device communication: CAN over-voltage frame → PCS zero-power write at the simulated PCS's Modbus server
(the whole protection path on loopback with the default 10 ms fast loop), and the engine's poll throughput.

Reported by benchmarks/report.py; never asserted in tests. EMS_LATENCY_TRIALS sets the trial count.
"""
import os
import threading
import time
from datetime import datetime, timezone

import can
import numpy as np

from ems.comm.can_codec import load_database
from ems.comm.modbus_client import Device, Link, ModbusEngine
from ems.comm.modbus_server import IoThread, ProfileImage
from ems.comm.profiles import shipped_profiles
from ems.config.schema import SiteConfig
from ems.control.clock import RealClock
from ems.control.controller import Controller
from ems.sim.devices import ProtocolSiteLink, free_port
from ems.sim.plant import Plant

TRIALS = int(os.environ.get("EMS_LATENCY_TRIALS", "1000"))


def _latency_trials(n: int) -> np.ndarray:
    io = IoThread()
    cfg = SiteConfig()
    ctrl = Controller(cfg, RealClock())
    plant = Plant(cfg, "clear", "flat", 30_000.0)
    link = ProtocolSiteLink(plant, ctrl, io)
    zero_at = {"t": None}
    arrived = threading.Event()
    orig = link.sim._pcs_write

    def on_write(name, value, client):              # runs on the I/O thread when the write arrives
        orig(name, value, client)
        if name == "active_power_setpoint_w" and value == 0.0 and zero_at["t"] is None:
            zero_at["t"] = time.perf_counter()
            arrived.set()
    link.sim.pcs.on_write = on_write
    db = load_database()
    mv = db.get_message_by_name("ClusterCellVoltages")

    def cells(v_first):
        frames = []
        for g in range(cfg.battery.cells_per_cluster // 3):
            frames.append(can.Message(arbitration_id=mv.frame_id, is_extended_id=False, data=mv.encode(
                {"cluster": 0, "group": g, "cell_a_v": v_first if g == 0 else 3.30, "cell_b_v": 3.30, "cell_c_v": 3.30})))
        return frames

    stop = threading.Event()

    def loop():                                     # the fast loop, 10 ms absolute deadlines
        n_tick, deadline = 0, time.monotonic()
        while not stop.is_set():
            link.read()
            if n_tick % 100 == 0:
                ctrl.slow_tick()
            cmd = ctrl.fast_tick(10.0)
            link.actuate(cmd, datetime.now(timezone.utc), 0.01)
            n_tick += 1
            deadline += 0.01
            time.sleep(max(0.0, deadline - time.monotonic()))
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    out = []
    try:
        ctrl.command("dispatch_w", 20_000.0, lease_s=1e9)   # a steady discharge the trip must cut
        for _ in range(n):
            give_up = time.monotonic() + 10.0
            while abs(link.sim.pcs_setpoint.get()) < 1000:  # running again: reset until the trip has cleared
                link.sim.bus.send(cells(3.30)[0])
                ctrl.command("fault_reset", source="bench")
                time.sleep(0.05)
                if time.monotonic() > give_up:
                    raise RuntimeError("the site did not recover from the last trial's trip")
            time.sleep(0.02)
            zero_at["t"] = None
            arrived.clear()
            t0 = time.perf_counter()
            link.sim.bus.send(cells(3.90)[0])           # one cell over its fault limit, one frame
            if arrived.wait(2.0):
                out.append(zero_at["t"] - t0)
            link.sim.bus.send(cells(3.30)[0])
    finally:
        stop.set()
        t.join(2.0)
        link.close()
        io.stop()
    return np.array(out)


def test_bench_can_overvoltage_to_pcs_zero_write(benchmark):
    lat = benchmark.pedantic(_latency_trials, args=(TRIALS,), rounds=1, iterations=1) * 1e3
    benchmark.extra_info.update(case="can_to_pcs_zero", kind="latency", trials=int(len(lat)),
                                p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
                                max_ms=float(lat.max()))


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
