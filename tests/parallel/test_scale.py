"""A master over 1000 units: 999 light simulated units (ems.sim.parallel_units, one process, one Modbus TCP
server each) behind one `ems run --config` master on its own simulated cabinet."""
from __future__ import annotations

import re
import subprocess
import sys
import time

from pymodbus.client import ModbusTcpClient

from ems.comm.net import free_port
from ems.parallel.block import STATE_NAMES, status_block
from tests.parallel.group import unit_config
from tests.procs import EmsRun, sim_site

UNITS = 999


def start_units(first_port: int, units: int = UNITS, lease_s: float = 3.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "ems.sim.parallel_units", "--units", str(units), "--first-port",
                             str(first_port), "--lease-s", str(lease_s)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "ready" in line, line
    return proc


def free_run(n: int) -> int:
    """A first port with n free ports after it, below the kernel's ephemeral range (where free_port's
    answers and every outgoing connection live): checked, not reserved."""
    import random
    import socket
    lo_ephemeral = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for _ in range(50):
        first = random.randrange(10_000, max(lo_ephemeral - n, 10_001))
        ok = True
        for p in range(first, first + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError("no run of free ports")


def read_status(port: int) -> dict:
    sb = status_block()
    c = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    c.connect()
    try:
        rr = c.read_holding_registers(sb.address, count=sb.count, device_id=1)
        return sb.decode(rr.registers)
    finally:
        c.close()


def test_a_master_dispatches_a_thousand_units_every_slow_tick(tmp_path):
    first = free_run(UNITS)
    units = start_units(first)
    master = sim = None
    try:
        cfg = unit_config(tmp_path / "master.toml", "master of 1000", free_port(),
                          {"role": "master", "unit_id": 1, "units": UNITS + 1, "timeout_ms": 500,
                           "slave_ranges": [{"first_id": 2, "last_id": UNITS + 1, "first_address": f"127.0.0.1:{first}",
                                             "step": "port"}]})
        sim = sim_site(tmp_path, cfg, name="master-site.toml")
        master = EmsRun("--config", str(tmp_path / "master-site.toml"), "--no-history")
        line = master.wait_for(lambda s: re.search(r"parallel 1000/1000 units", s) is not None, 60)
        assert line, master.text()[-3000:] + "".join(master.err[-20:])
        # every unit follows: a sample across the range has taken a command and echoes its sequence
        time.sleep(1.5)
        for k in (0, 1, UNITS // 2, UNITS - 1):
            st = read_status(first + k)
            assert STATE_NAMES[int(st["parallel_state"])] == "following", (k, st)
            assert st["parallel_seq_echo"] > 0
        # one unit drops out: the others take its share, the master says so (56 after unit_lost_s)
        units.stdin.write("stop 10\n")
        units.stdin.flush()
        since = time.monotonic()
        assert master.wait_for(lambda s: "parallel 999/1000 units" in s, 10, since), master.text()[-2000:]
    finally:
        if master is not None:
            master.stop()
        if sim is not None:
            sim.stop()
        units.stdin.close()
        units.wait(20)
