"""Footprint of the controller process alone, as the board runs it: `ems run --config SITE` (history and API on)
against `ems sim-site` in a process of its own on loopback. Start-up to the first control tick (systemd's
READY=1, sent after the first tick), resident memory, CPU share of one core at the default loop rates
(10 ms / 1 s), split by thread (the fast loop, the Modbus / socketcand I/O thread, the rest); the simulated
site's own CPU is reported beside it, never counted.

Sites: the demo (one cluster, BMS on CAN) and a container of 32 clusters × 396 cells with its BAU on Modbus
TCP — and, for comparison, the same 32 clusters on CAN (6,336 cell frames a second: more than a 500 kbit/s
bus carries, which is why such stacks report through a BAU on Ethernet).

Reported by benchmarks/report.py; never asserted in tests.
"""
import os
import socket
import subprocess
import sys
import time

import pytest

from ems.comm.net import free_port
from tests.procs import sim_site

C32 = "[battery]\nclusters = 32\ncells_per_cluster = 396\npacks_per_cluster = 9\n[pcs]\nrated_power_w = 3000000.0\n" \
      "[pv]\ninstalled_ac_w = 2000000.0\n"
SITES = {"demo": "", "32_clusters_bau": C32 + '[devices]\nbms = "modbus"\n', "32_clusters_can": C32}
WINDOW_S = 20.0
SETTLE_S = 8.0


def _cpu_s(pid: int, tid: str | None = None) -> float:
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = open(path).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")      # utime + stime


def _threads(pid: int) -> dict[str, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = _cpu_s(pid, tid)
        except OSError:
            pass
    return out


def _rss_mb(pid: int) -> tuple[float, float]:
    st = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(st["VmRSS"].split()[0]) / 1024, int(st["VmHWM"].split()[0]) / 1024


def measure(site: str, tmp_path) -> dict:
    base = tmp_path / "base.toml"
    base.write_text(f"[dispatch]\nport = {free_port()}\n[api]\nport = {free_port()}\n" + SITES[site])
    sim = sim_site(tmp_path, base)
    sock_path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(60.0)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    run_s = SETTLE_S + WINDOW_S + 4.0
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "ems", "run", "--config", str(sim.site_file), "--duration", str(run_s),
                          "--state", str(tmp_path / "state.json"), "--db", str(tmp_path / "history.sqlite")],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        while not srv.recv(4096).startswith(b"READY=1"):
            pass
        startup_s = time.monotonic() - t0
        main_tid = str(p.pid)
        time.sleep(SETTLE_S)
        c0, s0, th0, w0 = _cpu_s(p.pid), _cpu_s(sim.proc.pid), _threads(p.pid), time.monotonic()
        time.sleep(WINDOW_S)
        dt = time.monotonic() - w0
        cpu, sim_cpu, th1 = (_cpu_s(p.pid) - c0) / dt, (_cpu_s(sim.proc.pid) - s0) / dt, _threads(p.pid)
        rss, peak = _rss_mb(p.pid)
        per = sorted(((th1[t] - th0.get(t, 0.0)) / dt, t) for t in th1)
        fast = next(c for c, t in per if t == main_tid)
        io = max((c for c, t in per if t != main_tid), default=0.0)      # the busiest other thread: the I/O loop
    finally:
        p.communicate(timeout=60)
        srv.close()
        sim.stop()
    return {"startup_s": startup_s, "cpu_pct": 100 * cpu, "fast_loop_thread_pct": 100 * fast,
            "io_thread_pct": 100 * io, "other_threads_pct": 100 * (cpu - fast - io), "sim_cpu_pct": 100 * sim_cpu,
            "rss_mb": rss, "rss_peak_mb": peak}


@pytest.mark.parametrize("site", list(SITES))
def test_footprint_of_the_controller_process(benchmark, site, tmp_path):
    result = {}
    benchmark.pedantic(lambda: result.update(measure(site, tmp_path)), rounds=1, iterations=1)
    benchmark.extra_info.update(case=f"footprint_{site}", kind="footprint", **result)
