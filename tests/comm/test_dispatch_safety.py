"""What a SCADA (or an attacker on its network) must not make the dispatch server do — issue 17, items 1–6,
each probe with real clients and raw frames on loopback."""
import dataclasses
import logging
import socket
import struct
import time

import pytest
from pymodbus.client import ModbusTcpClient

from ems.comm.dispatch import SUNSPEC_BASE, DispatchServer
from ems.comm.limits import RateLimitedLog
from ems.comm.modbus_server import HOLDING, ConnectionLimits, IoThread
from ems.comm.net import free_port
from ems.config.schema import SiteConfig
from ems.control.controller import limit_reactive

from tests.comm.test_dispatch_server import drain, modbus


@pytest.fixture
def served():
    def make(limits=None, pcs=None, **dispatch):
        cfg = SiteConfig()
        cfg = dataclasses.replace(cfg, dispatch=dataclasses.replace(cfg.dispatch, **dispatch))
        if pcs:
            cfg = dataclasses.replace(cfg, pcs=dataclasses.replace(cfg.pcs, **pcs))
        srv = DispatchServer(cfg)
        port = free_port()
        io.serve_tcp({1: srv.image}, "127.0.0.1", port, limits=limits)
        return srv, port
    io = IoThread()
    yield make
    io.stop()


def addr(srv, name):
    return srv.ss.point(704, name).address


def s32(v):
    return [(v >> 16) & 0xFFFF, v & 0xFFFF]


def remote(port):
    m = modbus(port)
    assert not m.write_register(0, 1, device_id=1).isError()
    return m


def refused(r, code=3):
    return r.isError() and r.exception_code == code


# ---------------------------------------------------------------------------------------------- item 1
def test_sunspec_enable_without_a_setpoint_dispatches_nothing(served):
    srv, port = served()
    m = remote(port)
    drain(srv)
    before = srv.image.get_words(HOLDING, SUNSPEC_BASE, 420)
    assert refused(m.write_register(addr(srv, "WSetEna"), 1, device_id=1))          # WSet is the marker
    assert refused(m.write_registers(addr(srv, "WSetEna"), [1, 0], device_id=1))    # WSetPct mode: marker too
    assert refused(m.write_register(addr(srv, "VarSetEna"), 1, device_id=1))
    assert drain(srv) == [] and srv.image.get_words(HOLDING, SUNSPEC_BASE, 420) == before
    assert srv.ss.raw(srv.ss.point(704, "WSetEna")) == 0
    # with a setpoint written first, the enable is taken
    assert not m.write_registers(addr(srv, "WSet"), s32(20_000), device_id=1).isError()
    assert not m.write_register(addr(srv, "WSetEna"), 1, device_id=1).isError()
    assert ("dispatch_w", 20_000.0, None) in drain(srv)
    m.close()


def test_an_enable_takes_no_setpoint_older_than_its_lease(served):
    srv, port = served()
    m = remote(port)
    assert not m.write_registers(addr(srv, "VarSet"), s32(5_000), device_id=1).isError()
    assert not m.write_registers(addr(srv, "VarSetRvrtTms"), s32(1), device_id=1).isError()
    drain(srv)
    time.sleep(1.3)
    r = m.write_register(addr(srv, "VarSetEna"), 1, device_id=1)
    assert refused(r) and drain(srv) == []
    assert not m.write_registers(addr(srv, "VarSet"), s32(5_000), device_id=1).isError()
    assert not m.write_register(addr(srv, "VarSetEna"), 1, device_id=1).isError()
    assert ("reactive_var", 5_000.0, 1) in drain(srv)
    m.close()


# ---------------------------------------------------------------------------------------------- item 2
def test_reactive_and_native_setpoints_are_bounded_by_the_pcs_rating(served):
    srv, port = served(pcs={"rated_power_w": 100_000.0, "rated_apparent_va": 110_000.0})
    m = remote(port)
    drain(srv)
    assert refused(m.write_registers(3, s32(10_000_000), device_id=1))     # native reactive: 10 Mvar
    assert refused(m.write_registers(1, s32(150_000), device_id=1))        # native active above the rating
    assert refused(m.write_registers(addr(srv, "VarSet"), s32(120_000), device_id=1))
    assert drain(srv) == []
    assert not m.write_registers(3, s32(110_000), device_id=1).isError()   # up to S
    assert drain(srv) == [("reactive_var", 110_000.0, None)]
    m.close()


@pytest.mark.parametrize("p_w, q_var, s_va", [(100_000, 50_000, 100_000), (60_000, -200_000, 100_000),
                                              (-80_000, 90_000, 100_000), (0, 10_000_000, 120_000)])
def test_the_reactive_setpoint_sent_keeps_p_and_q_within_s(p_w, q_var, s_va):
    pcs = dataclasses.replace(SiteConfig().pcs, rated_power_w=100_000.0, rated_apparent_va=float(s_va))
    q = limit_reactive(q_var, p_w, pcs)
    assert p_w ** 2 + q ** 2 <= s_va ** 2 * (1 + 1e-12)
    assert q * q_var >= 0 and abs(q) <= abs(q_var)          # same sign, never more than asked


def test_the_controller_never_sends_more_than_s(tmp_path):
    from datetime import datetime, timezone

    from ems.control.clock import VirtualClock
    from ems.control.controller import Controller
    from ems.sim.runner import SimLink

    cfg = SiteConfig()
    clock = VirtualClock(datetime(2026, 6, 1, 12, tzinfo=timezone.utc))
    ctrl = Controller(cfg, clock)
    link = SimLink(cfg, ctrl, "clear", "flat", 20_000.0)
    ctrl.command("dispatch_w", 80_000.0, source="remote")
    ctrl.command("reactive_var", -10_000_000.0, source="remote")
    worst = 0.0
    for _ in range(300):
        link.read()
        ctrl.slow_tick() if _ % 10 == 0 else None
        c = ctrl.fast_tick(100.0)
        worst = max(worst, (c.pcs_setpoint_w ** 2 + c.pcs_reactive_var ** 2) ** 0.5)
        link.actuate(c, clock.now(), 0.1)
        clock.advance(0.1)
    assert 0 < worst <= cfg.pcs.apparent_va + 1e-6


# ---------------------------------------------------------------------------------------------- item 3
def test_fc23_refused_for_its_read_changes_nothing(served):
    srv, port = served(start_remote=True)
    m = modbus(port)
    before = srv.image.get_words(HOLDING, 0, 8)
    r = m.readwrite_registers(read_address=30_000, read_count=2, write_address=1, values=s32(20_000), device_id=1)
    assert r.isError() and r.exception_code == 2
    assert drain(srv) == [] and srv.image.get_words(HOLDING, 0, 8) == before
    r = m.readwrite_registers(read_address=0, read_count=4, write_address=1, values=s32(20_000), device_id=1)
    assert not r.isError() and drain(srv) == [("dispatch_w", 20_000.0, None)]
    m.close()


# ---------------------------------------------------------------------------------------------- item 4
def test_a_request_with_a_bad_field_gets_illegal_value_for_its_own_function(served):
    _, port = served()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(mbap_read(5, SUNSPEC_BASE, 126))              # more than 125 registers
        (f,) = recv_frames(s, 1)
        assert f[7] == 0x83 and f[8] == 3


def test_coil_writes_are_refused_like_every_write(served):
    srv, port = served(allowed_clients=["10.9.9.9"])
    m = modbus(port)
    for r in (m.write_coil(0, True, device_id=1), m.write_coils(0, [True], device_id=1)):
        assert refused(r, 1)                      # outside the allowlist: ILLEGAL_FUNCTION, as for registers
    m.close()
    srv2, port2 = served()                        # an allowed client: there are no coils to write
    m = modbus(port2)
    assert m.write_coil(0, True, device_id=1).isError() and drain(srv2) == []
    m.close()


# ---------------------------------------------------------------------------------------------- item 5
def mbap_read(tid, address, count, unit=1, fc=3):
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, fc, address, count)


def recv_frames(sock, n, timeout_s=2.0):
    sock.settimeout(timeout_s)
    buf, frames = b"", []
    while len(frames) < n:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 6 and len(buf) >= 6 + struct.unpack(">H", buf[4:6])[0]:
            size = 6 + struct.unpack(">H", buf[4:6])[0]
            frames.append(buf[:size])
            buf = buf[size:]
    return frames


def test_back_to_back_requests_on_one_connection_are_all_answered_in_order(served):
    _, port = served()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for pair in range(30):
            t1, t2 = 2 * pair + 1, 2 * pair + 2
            s.sendall(mbap_read(t1, SUNSPEC_BASE, 2) + mbap_read(t2, 0, 1, fc=4))
            frames = recv_frames(s, 2)
            assert [struct.unpack(">H", f[:2])[0] for f in frames] == [t1, t2]
        # ten in one chunk, the last one split across two sends
        burst = b"".join(mbap_read(100 + i, SUNSPEC_BASE, 2) for i in range(10))
        s.sendall(burst[:-5])
        time.sleep(0.05)
        s.sendall(burst[-5:])
        frames = recv_frames(s, 10)
        assert [struct.unpack(">H", f[:2])[0] for f in frames] == list(range(100, 110))
        assert all(f[9:13] == b"SunS" for f in frames)


def test_a_stream_that_is_not_modbus_tcp_is_closed(served):
    _, port = served()
    for junk in (b"GET / HTTP/1.1\r\n\r\n", struct.pack(">HHHB", 1, 0, 300, 1) + b"\x03" * 20,
                 struct.pack(">HHHB", 1, 0, 1, 1)):
        with socket.create_connection(("127.0.0.1", port)) as s:   # not Modbus; an MBAP length > 254 or < 2
            s.sendall(junk)
            s.settimeout(2.0)
            assert s.recv(100) == b""
    m = modbus(port)                              # the server serves on
    assert not m.read_holding_registers(SUNSPEC_BASE, count=2, device_id=1).isError()
    m.close()


# ---------------------------------------------------------------------------------------------- item 6
def connect_from(source, port):
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_by_server(s, timeout_s=2.0):
    s.settimeout(timeout_s)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_connections_are_capped_per_client_and_in_all_and_scada_still_reads(served, caplog):
    srv, port = served(limits=ConnectionLimits(max_total=12, max_per_client=4, idle_timeout_s=600))
    caplog.set_level(logging.WARNING, "ems.comm.server")
    flood = [connect_from("127.0.0.2", port) for _ in range(200)]
    time.sleep(0.3)
    kept = [s for s in flood if not closed_by_server(s, 0.05)]
    assert len(kept) == 4                         # the rest were closed at connect
    m = modbus(port)                              # SCADA at another address reads on
    assert not m.read_holding_registers(SUNSPEC_BASE, count=2, device_id=1).isError()
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refusals) <= 2                # once per interval, not 196 lines
    for s in flood:
        s.close()
    m.close()


def test_a_full_server_makes_room_by_closing_the_longest_idle_and_scada_always_has_a_slot(served):
    srv, port = served(limits=ConnectionLimits(max_total=2, max_per_client=2, idle_timeout_s=600, evict_idle_s=0.3,
                                               priority=frozenset({"127.0.0.1"})))
    a, b = connect_from("127.0.0.5", port), connect_from("127.0.0.6", port)
    time.sleep(0.1)
    early = connect_from("127.0.0.7", port)
    assert closed_by_server(early, 1.0)           # full, nobody idle long enough
    scada = connect_from("127.0.0.1", port)       # the allowlist is not counted against the total
    scada.sendall(mbap_read(3, SUNSPEC_BASE, 2))
    assert recv_frames(scada, 1)
    time.sleep(0.4)
    b.sendall(mbap_read(4, SUNSPEC_BASE, 2))      # b is busy, a idles
    assert recv_frames(b, 1)
    late = connect_from("127.0.0.7", port)
    late.sendall(mbap_read(5, SUNSPEC_BASE, 2))
    assert recv_frames(late, 1)                   # admitted: a was closed for it
    assert closed_by_server(a, 1.0) and not closed_by_server(b, 0.2)
    for s in (b, late, scada):
        s.close()


def test_an_idle_connection_is_closed_and_frees_its_slot(served):
    srv, port = served(limits=ConnectionLimits(max_total=2, max_per_client=1, idle_timeout_s=0.5))
    s = connect_from("127.0.0.3", port)
    second = connect_from("127.0.0.3", port)
    assert closed_by_server(second, 1.0)          # over the per-client cap
    s.sendall(mbap_read(1, SUNSPEC_BASE, 2))
    assert recv_frames(s, 1)
    assert closed_by_server(s, 2.0)               # then idle for 0.5 s: closed
    again = connect_from("127.0.0.3", port)
    again.sendall(mbap_read(2, SUNSPEC_BASE, 2))
    assert recv_frames(again, 1)
    again.close()


def test_refused_writes_are_logged_once_per_interval(served, caplog):
    srv, port = served(allowed_clients=["10.9.9.9"])
    caplog.set_level(logging.WARNING, "ems.comm.server")
    m = modbus(port)
    for _ in range(50):
        assert m.write_register(0, 1, device_id=1).isError()
    m.close()
    lines = [r for r in caplog.records if "write refused" in r.getMessage()]
    assert len(lines) == 1


def test_rate_limited_log_reports_how_many_it_held_back(caplog):
    log = logging.getLogger("test.ratelog")
    caplog.set_level(logging.WARNING, "test.ratelog")
    rl = RateLimitedLog(log, interval_s=0.2)
    for _ in range(5):
        rl.warning("k", "event")
    time.sleep(0.25)
    rl.warning("k", "event")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["event", "event (and 4 more like it in the last 0.2 s)"] and rl.events == 6


def test_streams_closed_for_garbage_give_their_slot_back(served):
    """Found by the fuzzer: a connection the server closed itself (not Modbus) kept its slot, so eight
    garbage streams locked their address out for good, and 32 from a few addresses every client."""
    srv, port = served(limits=ConnectionLimits(max_total=6, max_per_client=2, idle_timeout_s=600))
    for _ in range(20):
        s = connect_from("127.0.0.4", port)
        s.sendall(b"\x00\x01\x2a\x08garbage-not-modbus")
        assert closed_by_server(s, 2.0)
        s.close()
    time.sleep(0.2)
    s = connect_from("127.0.0.4", port)
    s.sendall(mbap_read(9, SUNSPEC_BASE, 2))
    assert recv_frames(s, 1), "the address was locked out"
    s.close()
