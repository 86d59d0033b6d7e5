"""One master and three slaves, each an `ems run --config` process with its own simulated cabinet (`ems
sim-site`), all on loopback: the failure cases of the manual's alarms 56 and 57."""
from __future__ import annotations

import signal
import statistics
import time

import pytest
from pymodbus.client import ModbusTcpClient

from ems.parallel.block import command_block
from tests.parallel.group import ParallelSite
from tests.procs import control

SOCS = [50.0, 30.0, 50.0, 70.0]       # master, slaves 2, 3, 4


def commanded_w(port: int) -> float:
    """The last setpoint the master wrote to the slave at `port` (its command block stays readable)."""
    cb = command_block()
    c = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    c.connect()
    try:
        return cb.decode(c.read_holding_registers(cb.address, count=cb.count, device_id=1).registers)[
            "parallel_cmd_setpoint_w"]
    finally:
        c.close()


def truth(sim) -> dict:
    return control(sim, kind="truth")["truth"]


def wait(predicate, timeout_s: float, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(step_s)
    return None


@pytest.fixture
def site(tmp_path):
    ps = ParallelSite(tmp_path, slaves=3, lease_s=2.0, socs=SOCS)
    try:
        yield ps.start()
    finally:
        ps.stop()


def test_one_site_of_four_cabinets_through_every_failure_the_manual_alarms(site):
    m = site.master
    assert m.wait_for(lambda s: "parallel 4/4 units" in s, 30), m.text()[-2000:] + "".join(m.err[-20:])
    time.sleep(6)                     # settle: each PCS ramps to its share
    # self-use on the site's meter: the grid at zero, the power split by the energy each unit can give
    grid = [truth(site.sims[0])["grid_w"] for _ in range(20) if time.sleep(0.2) is None]
    assert abs(statistics.mean(grid)) < 3000, grid        # of a load of 80 kW
    pcs = [truth(s)["pcs_w"] for s in site.sims]    # sims[0] the master's cabinet, then slaves 2, 3, 4
    total = sum(pcs)
    assert total > 40_000, pcs                       # the flat 80 kW load, PV none
    for p, soc in zip(pcs, SOCS):
        assert p / total == pytest.approx(soc / sum(SOCS), abs=0.05), (pcs, SOCS)

    # a slave stops: its share goes to the others within 2 s, the master alarms the unit's loss (56)
    before = [commanded_w(site.ports[k]) for k in (1, 3)]
    t0 = time.monotonic()
    site.slaves[1].stop(signal.SIGTERM)
    moved = wait(lambda: all(commanded_w(site.ports[k]) > b + 5000 for k, b in zip((1, 3), before)), 4.0)
    took = time.monotonic() - t0
    assert moved and took < 2.0, (took, before, [commanded_w(site.ports[k]) for k in (1, 3)])
    assert m.wait_for(lambda s: "parallel 3/4 units" in s and "EMS_parallel_comm_lost(56)" in s, 5, t0), \
        m.text()[-1500:]

    # the master stops: 56 on every remaining slave within 2 × the lease, each takes its fallback (standby)
    t1 = time.monotonic()
    m.stop(signal.SIGTERM)
    for k in (0, 2):
        s = site.slaves[k]
        line = s.wait_for(lambda x: "EMS_parallel_comm_lost(56)" in x and "fallback" in x, 2 * site.lease_s + 1.5, t1)
        assert line, s.text()[-1500:]
    assert wait(lambda: all(abs(truth(site.sims[k])["pcs_w"]) < 1000 for k in (1, 3)), 5), \
        [truth(site.sims[k])["pcs_w"] for k in (1, 3)]

    # the master comes back: the slaves follow again by themselves (no reset), 56 clears
    t2 = time.monotonic()
    site.master = m = site.start_master()
    for k in (0, 2):
        s = site.slaves[k]
        assert s.wait_for(lambda x: "following" in x and "alarms none" in x, 20, t2), s.text()[-1500:]
    assert m.wait_for(lambda s: "parallel 3/4 units" in s, 20, t2), m.text()[-1500:]


def test_two_units_with_one_id_are_an_id_fault_on_the_master_and_the_unit(tmp_path):
    ps = ParallelSite(tmp_path, slaves=2, lease_s=2.0, ids=[2, 2])     # the second slave is set to ID 2 as well
    try:
        ps.start()
        m = ps.master
        line = m.wait_for(lambda s: "EMS_parallel_id_fault(57)" in s and "parallel 2/3 units" in s, 30)
        assert line and line.count("(57)") == 1, m.text()[-2000:]          # the one unit, not the other
        s = ps.slaves[1]
        assert s.wait_for(lambda x: "EMS_parallel_id_fault(57)" in x, 10), s.text()[-1500:]
        # the unit with the right ID at the right address is not disturbed
        assert ps.slaves[0].wait_for(lambda x: "following" in x and "alarms none" in x, 10)
    finally:
        ps.stop()


def test_the_backup_master_takes_over_when_the_master_is_silent_and_hands_back_without_a_gap(tmp_path):
    ps = ParallelSite(tmp_path, slaves=2, lease_s=2.0, socs=[50.0, 50.0, 50.0], backup=True, takeover_s=2.0)
    try:
        ps.start()
        m, backup, slave = ps.master, ps.slaves[0], ps.slaves[1]
        assert m.wait_for(lambda s: "parallel 3/3 units" in s, 30), m.text()[-2000:] + "".join(m.err[-20:])
        assert slave.wait_for(lambda s: "following master 1" in s, 10)
        t0 = time.monotonic()
        m.stop(signal.SIGTERM)
        # the slave loses its master (56), then follows the backup: 56 clears, the backup commands the group
        assert slave.wait_for(lambda s: "EMS_parallel_comm_lost(56)" in s, 2 * ps.lease_s + 1.5, t0)
        line = slave.wait_for(lambda s: "following backup master 2" in s and "alarms none" in s,
                              ps.lease_s + ps.takeover_s + 5, t0)
        assert line, slave.text()[-2000:]
        assert backup.wait_for(lambda s: "parallel 2/2 units" in s, 5, t0), backup.text()[-2000:]
        time.sleep(6)                                   # the backup's self-use on the site meter settles
        grid = [truth(ps.sims[0])["grid_w"] for _ in range(15) if time.sleep(0.2) is None]
        assert abs(statistics.mean(grid)) < 5000, grid
        assert abs(truth(ps.sims[2])["pcs_w"]) > 10_000          # the slave carries its share under the backup
        # the master returns: it commands nothing while the backup holds the units, then takes them back
        t1 = time.monotonic()
        ps.master = m = ps.start_master()
        assert m.wait_for(lambda s: "parallel 3/3 units" in s, ps.takeover_s + 15, t1), m.text()[-2000:]
        assert slave.wait_for(lambda s: "following master 1" in s, 5, t1), slave.text()[-1500:]
        assert backup.wait_for(lambda s: "following master 1" in s and "alarms none" in s, 10, t1), \
            backup.text()[-1500:]
        # handed back without a gap: the slave never lost its master on the way, nobody saw an ID fault
        assert not [s for t, s in slave.lines if t >= t1 and "EMS_parallel_comm_lost(56)" in s]
        assert not [s for r in (m, backup, slave) for t, s in r.lines if t >= t0 and "(57)" in s]
    finally:
        ps.stop()
