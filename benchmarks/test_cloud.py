"""The cloud side under a fleet (issue 21): 1000 light simulated sites (tests/cloud/fleet.py, one process)
on one local Mosquitto over TLS, at 1 s and at the manual's 300 s status cycle, and a consumer (a real
paho client) taking everything: messages lost (goal 0), the broker's and the publishers' CPU, and the
alarms' latency from raised to the consumer (p50, p99). Reported, never asserted, except that nothing
is lost."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from tests.cloud.broker import USERS, Broker, Subscriber

SITES = 1000


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("cycle_s, duration_s", [(1.0, 20.0), (300.0, 20.0)], ids=["cycle_1s", "cycle_300s"])
def test_bench_fleet_of_a_thousand_sites_on_one_broker(benchmark, tmp_path, cycle_s, duration_s):
    USERS.setdefault("fleet", "fleet-secret-1")
    broker = Broker(tmp_path / "broker")
    broker.conf.write_text(broker.conf.read_text().replace("max_queued_messages 100000",
                                                          "max_queued_messages 1000000\nmax_connections -1"))
    (tmp_path / "broker" / "acl").write_text("user fleet\ntopic write ems/#\n\nuser cloud\ntopic read ems/#\n")
    import subprocess as sp
    sp.run(["mosquitto_passwd", "-b", str(tmp_path / "broker" / "passwd"), "fleet", USERS["fleet"]], check=True)
    broker.start()
    sub = Subscriber(broker, topics="ems/#")
    fleet = subprocess.Popen([sys.executable, "-m", "tests.cloud.fleet", "--sites", str(SITES), "--port",
                              str(broker.port), "--ca", str(broker.ca), "--password", USERS["fleet"], "--cycle-s",
                              str(cycle_s), "--duration-s", str(duration_s)], stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(fleet.stdout.readline())["ready"]
        b0 = _cpu_s(broker.proc.pid)
        t0 = time.monotonic()
        summary = benchmark.pedantic(lambda: json.loads(fleet.stdout.readline()), rounds=1, iterations=1)
        wall = time.monotonic() - t0
        broker_cpu = _cpu_s(broker.proc.pid) - b0
        time.sleep(2.0)                                   # the consumer's last messages
        got = {}
        latency = []
        for at, topic, m, _ in list(sub.messages):
            if topic.endswith("/status"):
                got.setdefault(m["site"], set()).add(m["seq"])
            elif topic.endswith("/alarms/history"):
                latency.append(at - m["t"])
        lost = sum(n - len(got.get(f"site-{k}", set())) for k, n in enumerate(summary["seq"]))
        alarms_lost = summary["alarms"] - len(latency)
        latency.sort()
        p99 = latency[min(len(latency) - 1, int(len(latency) * 0.99))] if latency else None
        benchmark.extra_info.update(
            kind="cloud_fleet", case=f"fleet_{SITES}_sites_cycle_{cycle_s:g}s", sites=SITES, cycle_s=cycle_s,
            published=summary["published"], lost=lost, alarms=summary["alarms"], alarms_lost=alarms_lost,
            broker_cpu_pct=100.0 * broker_cpu / wall, publisher_cpu_pct=100.0 * summary["cpu_s"] / summary["wall_s"],
            alarm_p50_ms=statistics.median(latency) * 1e3 if latency else None,
            alarm_p99_ms=p99 * 1e3 if p99 is not None else None)
        print(benchmark.extra_info)
        assert lost == 0 and alarms_lost == 0, benchmark.extra_info
    finally:
        fleet.kill()
        sub.close()
        broker.stop()
