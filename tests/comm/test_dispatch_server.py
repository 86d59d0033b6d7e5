"""The dispatch server with real clients: pysunspec2 (SunSpec scan, read, write WSet) and pymodbus."""
import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sunspec2.modbus.client as ss_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from ems.comm.dispatch import SUNSPEC_BASE, DispatchServer, register_map_markdown
from ems.comm.modbus_server import HOLDING, IoThread
from ems.config.schema import SiteConfig
from ems.control.clock import VirtualClock
from ems.control.controller import Controller
from ems.comm.net import free_port
from ems.site.clock import SiteClock
from ems.sim.runner import SimLink


@pytest.fixture
def served():
    def make(clock=None, **dispatch):
        cfg = SiteConfig()
        cfg = dataclasses.replace(cfg, dispatch=dataclasses.replace(cfg.dispatch, **dispatch))
        srv = DispatchServer(cfg, clock=clock)
        port = free_port()
        io.serve_tcp({1: srv.image}, "127.0.0.1", port)
        return cfg, srv, port
    io = IoThread()
    yield make
    io.stop()


def modbus(port):
    c = ModbusTcpClient("127.0.0.1", port=port)
    assert c.connect()
    return c


def sunspec(port):
    d = ss_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    d.scan()
    return d


def drain(srv):
    out = []
    while not srv.commands.empty():
        out.append(srv.commands.get())
    return [c for c in out if c[0] != "log"]


def test_sunspec_client_discovers_the_models(served):
    cfg, srv, port = served()
    d = sunspec(port)
    assert {1, 701, 702, 704, 713, 715} <= {k for k in d.models if isinstance(k, int)}
    assert d.common[0].Mn.value == "open-ems"
    assert d.DERCapacity[0].WMaxRtg.cvalue == pytest.approx(cfg.pcs.rated_power_w)
    assert d.DERCtl[0].LocRemCtl.value == 1                      # LOCAL at start
    d.close()


def test_writes_in_local_mode_are_refused_and_change_nothing(served):
    _, srv, port = served()
    d = sunspec(port)
    words = srv.image.get_words(HOLDING, SUNSPEC_BASE, 400)
    c = d.DERCtlAC[0]
    c.WSetEna.value, c.WSetMod.value, c.WSet.cvalue = 1, 1, 20_000
    with pytest.raises(Exception, match="exception: 1"):
        c.write()
    m = modbus(port)
    r = m.write_registers(1, [0, 20_000], device_id=1)              # native active power setpoint
    assert r.isError() and r.exception_code == 1
    assert srv.image.get_words(HOLDING, SUNSPEC_BASE, 400) == words and drain(srv) == []
    d.close()
    m.close()


def test_remote_wset_is_followed_by_the_pcs_and_expires_as_a_lease(served):
    cfg, srv, port = served()
    clock = VirtualClock(datetime(2026, 6, 1, 12, tzinfo=timezone.utc))
    ctrl = Controller(cfg, clock)
    link = SimLink(cfg, ctrl, "clear", "flat", 20_000.0)
    plant = link.plant

    def run(seconds):
        for _ in range(int(seconds)):
            link.read()
            srv.apply(ctrl)
            ctrl.slow_tick()
            srv.publish(ctrl)
            cmd = ctrl.fast_tick(1000.0)
            ctrl.explain()
            link.actuate(cmd, clock.now(), 1.0)
            clock.advance(1.0)

    run(3)
    m = modbus(port)
    assert not m.write_register(0, 1, device_id=1).isError()       # remote mode
    d = sunspec(port)
    assert d.DERCtl[0].LocRemCtl.value == 0                         # REMOTE
    c = d.DERCtlAC[0]
    c.WSetEna.value, c.WSetMod.value, c.WSet.cvalue, c.WSetRvrtTms.value = 1, 1, 30_000, 20
    c.write()
    run(5)
    assert plant.flows.pcs_w == pytest.approx(30_000, abs=500)      # the PCS follows the SunSpec setpoint
    assert ctrl.status.strategy == "dispatch"
    r = m.read_input_registers(0, count=24, device_id=1)
    assert r.registers[18] == 1 and 0 < r.registers[19] <= 20      # dispatch active, lease remaining
    kinds = [e["kind"] for e in ctrl.events.recent]
    assert "remote_write" in kinds
    run(20)
    assert "lease_expired" in [e["kind"] for e in ctrl.events.recent]
    assert ctrl.status.strategy != "dispatch"
    d.close()
    m.close()


def test_native_setpoint_and_release(served):
    cfg, srv, port = served(start_remote=True)
    m = modbus(port)
    assert not m.write_registers(1, [0xFFFF, 0xB1E0], device_id=1).isError()     # −20 000 W
    assert drain(srv) == [("dispatch_w", -20_000.0, None)]
    r = m.write_registers(1, [0x7FFF, 0xFFFF], device_id=1)                        # beyond ±10 MW
    assert r.isError() and r.exception_code == 3 and drain(srv) == []
    assert not m.write_register(7, 1, device_id=1).isError()
    assert drain(srv) == [("release", None, None)]
    assert not m.write_register(0, 0, device_id=1).isError()                       # back to local
    assert drain(srv) == [("release", None, None)] and not srv.remote
    m.close()


T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


def words_of(t: datetime) -> list[int]:
    s = int(t.timestamp())
    return [s >> 16, s & 0xFFFF]


def utc_s(words) -> int:
    return words[0] << 16 | words[1]


def test_the_clock_register_reads_the_ems_time_at_the_moment_of_the_read(served):
    clock = VirtualClock(T0)
    _, srv, port = served(clock)
    m = modbus(port)
    assert utc_s(m.read_holding_registers(8, count=2, device_id=1).registers) == int(T0.timestamp())
    clock.advance(30.0)                       # no publish in between: the read itself is fresh
    assert utc_s(m.read_holding_registers(0, count=10, device_id=1).registers[8:]) == int(T0.timestamp()) + 30
    m.close()


def test_the_time_zone_offset_is_served_with_daylight_saving(served):
    clock = VirtualClock(T0)                  # June: Europe/Berlin is UTC+2
    cfg, srv, port = served(clock)
    srv.publish(Controller(cfg, clock))
    m = modbus(port)
    assert m.read_input_registers(24, count=1, device_id=1).registers == [120]
    clock.set_wall(datetime(2026, 12, 1, 12, tzinfo=timezone.utc))
    srv.publish(Controller(cfg, clock))
    assert m.read_input_registers(24, count=1, device_id=1).registers == [60]
    m.close()


def test_scada_sets_the_ems_clock_in_local_mode_when_allowed(served):
    clock = VirtualClock(T0)
    cfg, srv, port = served(clock, clock_from_scada=True)
    ctrl = Controller(cfg, clock)
    m = modbus(port)
    scada_time = T0 + timedelta(hours=1, seconds=7)
    assert not m.write_registers(8, words_of(scada_time), device_id=1).isError()
    assert not srv.remote                     # the clock is not dispatch: local mode takes it
    srv.apply(ctrl)
    assert abs((clock.now() - scada_time).total_seconds()) < 1.0
    assert clock.monotonic_s() == 0.0         # the periods did not jump
    ev = [e for e in ctrl.events.recent if e["kind"] == "clock_set"]
    assert len(ev) == 1 and "+3607" in ev[0]["detail"]
    assert utc_s(m.read_holding_registers(8, count=2, device_id=1).registers) == int(scada_time.timestamp())
    m.close()


def test_a_scada_time_within_the_tolerance_does_not_step_the_clock(served):
    clock = VirtualClock(T0)
    cfg, srv, port = served(clock, clock_from_scada=True, clock_step_min_s=2.0)
    ctrl = Controller(cfg, clock)
    m = modbus(port)
    clock.advance(0.9)                        # SCADA is 0.9 s behind the EMS
    assert not m.write_registers(8, words_of(T0), device_id=1).isError()
    srv.apply(ctrl)
    assert clock.now() == T0 + timedelta(seconds=0.9)
    assert [e["kind"] for e in ctrl.events.recent if e["name"] == "clock"] == ["clock_sync"]
    m.close()


@pytest.mark.parametrize("words, allowed, clients, code", [
    (words_of(T0), False, ["127.0.0.1"], 1),                                         # timing from SCADA off
    (words_of(datetime(2023, 12, 31, tzinfo=timezone.utc)), True, ["127.0.0.1"], 3),  # before 2024
    (words_of(T0)[:1], True, ["127.0.0.1"], 2),                                      # half of the u32
    (words_of(T0), True, ["10.9.9.9"], 1),                                           # client not allowed
], ids=["off", "before-2024", "partial", "not-allowed"])
def test_bad_clock_writes_are_refused_and_change_nothing(served, words, allowed, clients, code):
    clock = VirtualClock(T0 + timedelta(days=3))
    _, srv, port = served(clock, clock_from_scada=allowed, allowed_clients=clients)
    m = modbus(port)
    r = m.write_registers(8, words, device_id=1)
    assert r.isError() and r.exception_code == code
    assert drain(srv) == [] and clock.now() == T0 + timedelta(days=3)
    m.close()


def test_a_clock_the_system_refuses_to_set_is_an_event_and_the_controller_runs_on(served):
    clock = SiteClock()                       # real time, no permission to set the system clock given
    cfg, srv, port = served(clock, clock_from_scada=True)
    ctrl = Controller(cfg, clock)
    m = modbus(port)
    assert not m.write_registers(8, words_of(datetime.now(timezone.utc) + timedelta(hours=2)), device_id=1).isError()
    srv.apply(ctrl)
    ev = [e for e in ctrl.events.recent if e["name"] == "clock"]
    assert [e["kind"] for e in ev] == ["clock_set_failed"] and "system clock" in ev[0]["detail"]
    assert abs((clock.now() - datetime.now(timezone.utc)).total_seconds()) < 1.0
    ctrl.fast_tick(10.0)
    m.close()


def test_writes_from_clients_outside_the_allowlist_are_refused(served):
    _, srv, port = served(allowed_clients=["10.9.9.9"])
    m = modbus(port)
    r = m.write_register(0, 1, device_id=1)
    assert r.isError() and r.exception_code == 1 and not srv.remote
    assert not m.read_holding_registers(SUNSPEC_BASE, count=2, device_id=1).isError()   # reads stay open
    m.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(address=st.one_of(st.integers(0, 40), st.integers(SUNSPEC_BASE, SUNSPEC_BASE + 420), st.integers(0, 65530)),
       words=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8))
def test_random_writes_in_local_mode_change_nothing_and_never_break_the_server(served_once, address, words):
    srv, m = served_once
    before = (srv.image.get_words(HOLDING, 0, 8), srv.image.get_words(HOLDING, SUNSPEC_BASE, 420))
    hb = srv.ss.point(715, "ControllerHb").address
    r = m.write_registers(address, words, device_id=1)
    if not r.isError():                       # in local mode only the mode switch and the SCADA's heartbeat
        assert address == 0 or (address == hb and len(words) == 2)
        m.write_register(0, 0, device_id=1)
        drain(srv)
    after = (srv.image.get_words(HOLDING, 0, 8), srv.image.get_words(HOLDING, SUNSPEC_BASE, 420))
    if address == hb:                         # the heartbeat's own words may change, nothing else
        off = hb - SUNSPEC_BASE
        after = (after[0], after[1][:off] + before[1][off:off + 2] + after[1][off + 2:])
    assert after == before or address == 0
    assert not m.read_holding_registers(SUNSPEC_BASE, count=2, device_id=1).isError()


@pytest.fixture(scope="module")
def served_once():
    io = IoThread()
    srv = DispatchServer(SiteConfig())
    port = free_port()
    io.serve_tcp({1: srv.image}, "127.0.0.1", port)
    m = modbus(port)
    yield srv, m
    m.close()
    io.stop()


def test_docs_carry_the_register_map_the_server_serves():
    doc = (Path(__file__).parents[2] / "docs" / "dispatch.md").read_text(encoding="utf-8")
    assert register_map_markdown() in doc, "docs/dispatch.md is stale: run `ems dispatch-map >> …` (see the doc)"


def test_the_same_map_is_served_over_rtu_on_a_serial_port(tmp_path):
    """`[dispatch] rtu_port`: a real pymodbus RTU client on the other end of a serial line reads the SunSpec
    marker and dispatches; writes from the wired line are accepted (no address to allowlist) and logged."""
    from pymodbus.client import ModbusSerialClient

    from ems.site.runtime import start_dispatch
    from tests.comm.serial_pair import SerialPair
    pair = SerialPair()
    io = IoThread()
    try:
        cfg = SiteConfig()
        port = free_port()
        cfg = dataclasses.replace(cfg, dispatch=dataclasses.replace(cfg.dispatch, port=port, rtu_port=pair.ports[0],
                                                                    rtu_baudrate=19200, start_remote=True))
        said = []
        srv = start_dispatch(cfg, io, said.append)
        assert any(f"modbus rtu {pair.ports[0]} 19200 N1 unit 1" in line for line in said)
        c = ModbusSerialClient(pair.ports[1], baudrate=19200, timeout=1.0)
        assert c.connect()
        r = c.read_holding_registers(SUNSPEC_BASE, count=2, device_id=1)
        assert not r.isError() and r.registers == [0x5375, 0x6E53]               # 'SunS'
        assert not c.write_registers(1, [0, 15_000], device_id=1).isError()
        cmds = []
        while not srv.commands.empty():
            cmds.append(srv.commands.get())
        assert ("dispatch_w", 15_000.0, None) in cmds
        assert ("log", f"serial:{pair.ports[0]}", "active_power_setpoint_w", 15_000.0) in cmds
        r = c.write_registers(1, [0x7FFF, 0xFFFF], device_id=1)                  # out of range: refused
        assert r.isError() and r.exception_code == 3
        c.close()
    finally:
        io.stop()
        pair.close()


def test_a_missing_rtu_port_is_reported_and_tcp_still_serves(capsys):
    from ems.site.runtime import start_dispatch
    io = IoThread()
    try:
        port = free_port()
        cfg = SiteConfig()
        cfg = dataclasses.replace(cfg, dispatch=dataclasses.replace(cfg.dispatch, port=port,
                                                                    rtu_port="/dev/ttyEMS-none"))
        srv = start_dispatch(cfg, io, lambda line: None)
        assert srv is not None
        assert "/dev/ttyEMS-none not started" in capsys.readouterr().err
        m = modbus(port)
        assert not m.read_holding_registers(SUNSPEC_BASE, count=2, device_id=1).isError()
        m.close()
    finally:
        io.stop()



def test_the_grid_operator_limits_the_pcs_over_the_native_map_with_a_lease(served):
    clock = VirtualClock(T0)
    cfg, srv, port = served(clock)
    ctrl = Controller(cfg, clock)
    m = modbus(port)
    r = m.write_registers(10, [0, 40_000], device_id=1)
    assert r.isError() and r.exception_code == 1                  # local mode: refused like every dispatch write
    assert not m.write_register(0, 1, device_id=1).isError()      # remote
    assert not m.write_registers(10, [0, 40_000, 0, 5_000, 0, 2_000], device_id=1).isError()
    srv.apply(ctrl)
    assert dict(ctrl.build_snapshot().operator.grid_limits) == {"pcs_limit_w": 40_000, "feed_in_limit_w": 5_000,
                                                                 "ramp_w_per_s": 2_000}
    r = m.write_registers(10, [0x0098, 0x9681], device_id=1)      # 10 000 001 W: beyond the register's range
    assert r.isError() and r.exception_code == 3
    assert not m.write_register(16, 1, device_id=1).isError()     # release: all of them end now
    srv.apply(ctrl)
    assert dict(ctrl.build_snapshot().operator.grid_limits) == {}
    m.close()
