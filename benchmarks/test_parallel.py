"""A master over 1000 units (issue 20): the whole cycle (update from the last read, site arbitration,
distribution, commands, one FC23 per unit over loopback and the answers back), the distribution alone
(benchmarks/test_kernels.py's distribute-1000-units, kernel vs the NumPy reference), and how soon a unit's
share moves to the others after it drops out. 999 light units serve in one process of their own
(ems.sim.parallel_units); the master's group and link run here, on the runtime's own classes."""
from __future__ import annotations

import dataclasses
import time

import pytest

from ems.comm.modbus_server import IoThread
from ems.config.schema import SiteConfig
from ems.control.controller import Controller
from ems.parallel.group import ParallelGroup
from ems.parallel.link import ParallelLink
from ems.parallel.units import UnitAddress
from ems.site.clock import SiteClock
from ems.strategies.base import TARGET
from tests.parallel.test_scale import free_run, start_units

UNITS = 999


@pytest.fixture(scope="module")
def master():
    first = free_run(UNITS)
    units_proc = start_units(first, UNITS, lease_s=5.0)
    base = SiteConfig()
    par = dataclasses.replace(base.parallel, enabled=True, role="master", unit_id=1, units=UNITS + 1,
                              timeout_ms=500.0)
    cfg = dataclasses.replace(base, parallel=par)
    clock = SiteClock()
    ctrl = Controller(cfg, clock)
    addresses = [UnitAddress(2 + k, "127.0.0.1", first + k) for k in range(UNITS)]
    group = ParallelGroup(cfg, addresses, clock.monotonic_s())
    io = IoThread("bench-parallel")
    link = ParallelLink(io, group, addresses, 0.5, 1, clock.monotonic_s)
    ctrl.group = group

    def cycle() -> None:
        """One master cycle as the slow tick runs it, waiting for the link's answers."""
        group.update(ctrl, clock.monotonic_s())
        group.req_active[:] = 0
        group.req_kind[0], group.req_value[0], group.req_active[0] = TARGET, 30e6, 1
        group.plan()
        n = link.cycles
        link.submit(group.command_plan())
        while link.cycles == n:
            time.sleep(0.0005)
    for _ in range(3):                 # connect, and let every unit answer once
        cycle()
    yield {"cycle": cycle, "group": group, "link": link, "ctrl": ctrl, "units": units_proc, "clock": clock}
    link.stop()
    io.stop()
    units_proc.stdin.close()
    units_proc.wait(20)


def test_bench_master_cycle_1000_units(benchmark, master):
    assert int(master["group"].online[1:].sum()) == UNITS
    benchmark.group = "parallel-master-cycle"
    benchmark.extra_info.update(kind="parallel", case="master_cycle_1000_units", units=UNITS + 1)
    took: list[float] = []

    def timed() -> None:
        t0 = time.perf_counter()
        master["cycle"]()
        took.append(time.perf_counter() - t0)
    benchmark.pedantic(timed, rounds=100, iterations=1, warmup_rounds=1)
    took.sort()
    link_s = sorted(list(master["link"].cycle_s)[-100:])
    benchmark.extra_info.update(p50_s=took[len(took) // 2], p99_s=took[int(len(took) * 0.99) - 1],
                                link_only_p50_s=link_s[len(link_s) // 2])


def test_bench_share_moves_after_a_unit_drops_out(benchmark, master):
    """From `stop K` (the unit's server closed) to the cycle that carries the new shares, with the runtime's
    rule: a slow tick each second, and a re-plan at once when a cycle shows a change."""
    g, link, ctrl, proc = master["group"], master["link"], master["ctrl"], master["units"]
    dropped = iter(range(100, 200))

    def drop() -> None:
        k = next(dropped)
        proc.stdin.write(f"stop {k}\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("stop")
        t_next_slow = time.monotonic() + 1.0
        while True:
            if time.monotonic() >= t_next_slow:
                master["cycle"]()
                t_next_slow += 1.0
            elif g.changed.is_set():
                ctrl.parallel_replan()
                n = link.cycles
                link.submit(g.command_plan())
                while link.cycles == n:
                    time.sleep(0.0005)
            if g.online[k + 1] == 0 and g.out_w[k + 1] == 0.0:
                return
            time.sleep(0.001)
    benchmark.group = "parallel-share-move"
    benchmark.extra_info.update(kind="parallel", case="share_move_after_drop", units=UNITS + 1)
    benchmark.pedantic(drop, rounds=5, iterations=1)


def test_bench_master_control_thread_share_1000_units(benchmark):
    """What the master's control thread spends per slow tick on a group of 1000 (the link's work is on the
    I/O thread): the cycle's results into the arrays, the site totals (snapshot and dispatch map), the plan,
    the command arrays. It delays one fast tick a second by this much."""
    from tests.parallel.test_parallel_units import slave_state
    from ems.parallel.group import Outcome
    base = SiteConfig()
    par = dataclasses.replace(base.parallel, enabled=True, role="master", unit_id=1, units=UNITS + 1)
    cfg = dataclasses.replace(base, parallel=par)
    clock = SiteClock()
    ctrl = Controller(cfg, clock)
    g = ParallelGroup(cfg, [UnitAddress(2 + k, "127.0.0.1", 20000 + k) for k in range(UNITS)], 0.0)
    states = [slave_state(2 + k, 20.0 + 60.0 * k / UNITS, units=UNITS + 1) for k in range(UNITS)]

    def tick() -> None:
        g.take_cycle([Outcome(True, s, at_s=clock.monotonic_s()) for s in states])   # (the I/O thread's, in setup)
        t = time.perf_counter()
        g.update(ctrl, clock.monotonic_s())
        g.site()
        g.site()
        g.req_active[:] = 0
        g.req_kind[0], g.req_value[0], g.req_active[0] = TARGET, 30e6, 1
        g.plan()
        g.command_plan()
        took.append(time.perf_counter() - t)
    took: list[float] = []
    benchmark.group = "parallel-control-thread"
    benchmark.extra_info.update(kind="parallel", case="control_thread_1000_units", units=UNITS + 1)
    benchmark.pedantic(tick, rounds=50, iterations=1)
    took.sort()
    benchmark.extra_info.update(p50_s=took[len(took) // 2], p99_s=took[int(len(took) * 0.99) - 1])
