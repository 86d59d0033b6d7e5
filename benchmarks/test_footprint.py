"""Footprint of `ems run` as the board runs it (a separate process, devices over loopback Modbus TCP and
virtual CAN, history and API on): start-up time to the first control tick (systemd's READY=1, sent after
the first tick), resident memory, CPU share of one core at the default loop rates (10 ms / 1 s). The
simulated site runs in the same process; its control-thread CPU time (which `ems run` reports at its stop)
is subtracted for the controller's own share (which still includes the simulated devices' side of the
loopback Modbus in the I/O thread: an upper bound).

Reported by benchmarks/report.py; never asserted in tests.
"""
import os
import re
import socket
import subprocess
import sys
import time

import pytest

SITES = {
    "demo": "",
    "32_clusters": "[battery]\nclusters = 32\ncells_per_cluster = 396\npacks_per_cluster = 9\n"
                   "[pcs]\nrated_power_w = 3000000.0\n[pv]\ninstalled_ac_w = 2000000.0\n",
}
RUN_S = 30.0          # measured window: the last 20 s of it
WINDOW_S = 20.0


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")     # utime + stime


def _rss_mb(pid: int) -> tuple[float, float]:
    st = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(st["VmRSS"].split()[0]) / 1024, int(st["VmHWM"].split()[0]) / 1024


def measure(site: str, tmp_path) -> dict:
    cfg = tmp_path / "site.toml"
    cfg.write_text(SITES[site])
    sock_path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(30.0)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "ems", "run", "--config", str(cfg), "--duration", str(RUN_S),
                          "--state", str(tmp_path / "state.json"), "--db", str(tmp_path / "history.sqlite")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        while not srv.recv(4096).startswith(b"READY=1"):
            pass
        startup_s = time.monotonic() - t0
        time.sleep(RUN_S - WINDOW_S - startup_s)
        c0, w0 = _cpu_s(p.pid), time.monotonic()
        time.sleep(WINDOW_S)
        cpu = (_cpu_s(p.pid) - c0) / (time.monotonic() - w0)
        rss, peak = _rss_mb(p.pid)
    finally:
        stdout, _ = p.communicate(timeout=60)
        srv.close()
    m = re.search(r"simulated site: ([\d.]+) s CPU in the control thread over ([\d.]+) s", stdout)
    sim_pct = 100 * float(m.group(1)) / float(m.group(2))
    return {"startup_s": startup_s, "cpu_pct": 100 * cpu, "sim_cpu_pct": sim_pct, "controller_cpu_pct": 100 * cpu - sim_pct,
            "rss_mb": rss, "rss_peak_mb": peak}


@pytest.mark.parametrize("site", list(SITES))
def test_footprint_of_ems_run(benchmark, site, tmp_path):
    result = {}
    benchmark.pedantic(lambda: result.update(measure(site, tmp_path)), rounds=1, iterations=1)
    benchmark.extra_info.update(case=f"footprint_{site}", kind="footprint", **result)
