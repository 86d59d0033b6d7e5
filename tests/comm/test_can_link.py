import itertools

import can
import numpy as np
import pytest

from ems.comm.can_link import BmsCanLink, open_bus
from ems.sim.bms_can import SimBmsCan

_channels = itertools.count()


@pytest.fixture
def buses():
    ch = f"ems-test-{next(_channels)}"
    ems_bus, bms_bus = open_bus("virtual", ch), open_bus("virtual", ch)
    yield ems_bus, bms_bus
    ems_bus.shutdown()
    bms_bus.shutdown()


def link(ems_bus, clusters=2, cells=12):
    cv, ct, fresh = np.full((clusters, cells), np.nan), np.full((clusters, cells), np.nan), np.zeros(
        (clusters, cells), np.uint8)
    return BmsCanLink(ems_bus, cv, ct, fresh), cv, ct, fresh


def send_stack(bms, **kw):
    args = dict(voltage_v=52.0, current_a=-30.0, temperature_degc=24.5, soc_pct=61, soh_pct=98, charge_limit_a=100.0,
                discharge_limit_a=120.0, charge_voltage_v=56.0, discharge_voltage_v=46.0, charge_enable=True,
                discharge_enable=True)
    args.update(kw)
    bms.send_stack(**args)


def test_stack_messages_arrive_decoded_with_our_current_sign(buses):
    ems_bus, bms_bus = buses
    lk, *_ = link(ems_bus)
    send_stack(SimBmsCan(bms_bus))
    assert lk.poll(now_s=0.0) == 5
    assert lk.value("BatteryLimits", 0.0)["discharge_current_limit_a"] == pytest.approx(120.0)
    assert lk.value("BatterySocSoh", 0.0)["soc_pct"] == 61
    # charging 30 A (our sign −30) travels as +30 in the protocol
    assert lk.value("BatteryActualValues", 0.0)["current_a"] == pytest.approx(30.0)
    assert lk.value("BatteryRequestFlags", 0.0)["charge_enable"] == 1


def test_cell_frames_fill_the_core_arrays_and_mark_cells_fresh(buses):
    ems_bus, bms_bus = buses
    lk, cv, ct, fresh = link(ems_bus)
    v = np.linspace(3.2, 3.4, 24).reshape(2, 12)
    t = np.full((2, 12), 26.0)
    SimBmsCan(bms_bus).send_cells(v, t)
    lk.poll(now_s=1.0)
    assert np.allclose(cv, v, atol=0.0005) and np.allclose(ct, t) and fresh.all()


def test_a_message_past_its_timeout_reads_as_none_and_is_reported_lost(buses):
    ems_bus, bms_bus = buses
    lk, *_ = link(ems_bus)
    send_stack(SimBmsCan(bms_bus))
    lk.poll(now_s=10.0)
    assert lk.lost(10.0) == set()
    assert lk.value("BatteryLimits", 12.9) is not None
    assert lk.value("BatteryLimits", 13.1) is None
    assert "BatteryLimits" in lk.lost(13.1)


def test_cells_go_stale_when_their_frames_stop(buses):
    ems_bus, bms_bus = buses
    lk, cv, ct, fresh = link(ems_bus)
    SimBmsCan(bms_bus).send_cells(np.full((2, 12), 3.3), np.full((2, 12), 25.0))
    lk.poll(now_s=0.0)
    lk.poll(now_s=6.0)
    assert not fresh.any()


def test_the_ems_sends_the_keepalive_every_second(buses):
    ems_bus, bms_bus = buses
    lk, *_ = link(ems_bus)
    bms = SimBmsCan(bms_bus)
    for t in np.arange(0.0, 3.05, 0.1):
        lk.poll(now_s=float(t))
    bms.drain()
    assert bms.keepalives_seen == 4        # at 0, 1, 2 and 3 s


def test_bad_frames_are_counted_and_never_raise(buses):
    ems_bus, bms_bus = buses
    lk, *_ = link(ems_bus)
    for msg in (can.Message(arbitration_id=0x351, data=b"\x01\x02", is_extended_id=False),
                can.Message(arbitration_id=0x7FF, data=bytes(8), is_extended_id=False),
                can.Message(arbitration_id=0x18FF50E5, data=bytes(8), is_extended_id=True),
                can.Message(arbitration_id=0x600, data=b"\x05\x00\x00\x00\x00\x00\x00\x00", is_extended_id=False)):
        bms_bus.send(msg)
    assert lk.poll(now_s=0.0) == 4
    c = lk.counters
    assert c["wrong_length"] == 1 and c["unknown_id"] == 1 and c["ignored"] == 1 and c["out_of_stack"] == 1


def _35a(alarms: int, warnings: int = 0) -> can.Message:
    return can.Message(arbitration_id=0x35A, is_extended_id=False,
                       data=alarms.to_bytes(4, "little") + warnings.to_bytes(4, "little"))


def test_battery_flags_come_from_0x359_bits_and_0x35a_states_per_encoding(buses):
    ems_bus, bms_bus = buses
    sma, *_ = link(ems_bus)
    send_stack(SimBmsCan(bms_bus), protections={"protection_cell_over_voltage": 1, "alarm_high_temperature": 1})
    bms_bus.send(_35a(0b01 << 2 | 0b10 << 4, 0b10 << 6))       # high V raised, low V "10", warning high T "10"
    sma.poll(now_s=0.0)
    assert sma.flags(0.0) == {"protection_cell_over_voltage": "protection", "alarm_high_temperature": "alarm",
                              "alarm_high_voltage": "alarm"}, "SMA: 10 means cleared"
    assert sma.flags(5.0) == {}, "stale messages carry no flags"


def test_victron_style_0x35a_reads_01_and_10_as_active(buses):
    ems_bus, bms_bus = buses
    cv, ct, fresh = np.full((1, 3), np.nan), np.full((1, 3), np.nan), np.zeros((1, 3), np.uint8)
    lk = BmsCanLink(ems_bus, cv, ct, fresh, alarm_encoding="victron")
    bms_bus.send(_35a(0b10 << 4 | 0b11 << 8, 0b01 << 6))       # low V alarm, reserved 11 ignored, high T warning
    lk.poll(now_s=0.0)
    assert lk.flags(0.0) == {"alarm_low_voltage": "alarm", "warning_high_temperature": "warning"}
    with pytest.raises(ValueError, match="alarm_encoding"):
        BmsCanLink(ems_bus, cv, ct, fresh, alarm_encoding="pylon")


def test_0x35a_is_supervised_only_once_the_battery_sends_it(buses):
    ems_bus, bms_bus = buses
    lk, *_ = link(ems_bus)
    send_stack(SimBmsCan(bms_bus))
    lk.poll(now_s=0.0)
    assert "BatteryAlarmsWarnings" not in lk.lost(1.0), "a battery without 0x35A is not 'lost'"
    bms_bus.send(_35a(0))
    lk.poll(now_s=1.0)
    assert "BatteryAlarmsWarnings" in lk.lost(5.0)


def test_the_bms_soc_prefers_the_newer_high_resolution_value(buses):
    ems_bus, bms_bus = buses
    lk, *_ = link(ems_bus)
    send_stack(SimBmsCan(bms_bus), soc_pct=61.37)
    lk.poll(now_s=0.0)
    assert lk.soc_pct(0.0) == pytest.approx(61.37)
    bms_bus.send(can.Message(arbitration_id=0x355, is_extended_id=False, data=bytes([40, 0, 99, 0])))
    lk.poll(now_s=0.5)
    assert lk.soc_pct(0.5) == 40.0, "an older battery's whole-percent SOC"


def test_cells_are_awaited_while_the_link_is_silent_and_for_one_cell_age_after_it_returns(buses):
    """ems.comm.cell_wait: silent = no frame for half a cell age (2.5 s of 5 s)."""
    ems_bus, bms_bus = buses
    lk, *_ = link(ems_bus)
    bms = SimBmsCan(bms_bus)
    lk.poll(now_s=0.0)
    assert lk.cells_awaited, "nothing heard yet"
    for t in (0.0, 2.0, 4.0, 4.9):
        send_stack(bms)
        lk.poll(now_s=t)
    assert lk.cells_awaited, "up for less than one cell age"
    send_stack(bms)
    lk.poll(now_s=5.1)
    assert not lk.cells_awaited, "up for a cell age: a stale cell is now its sensor's"
    lk.poll(now_s=7.5)
    assert not lk.cells_awaited, "2.4 s without a frame is not yet silence"
    lk.poll(now_s=7.7)
    assert lk.cells_awaited, "silent"
    send_stack(bms)
    lk.poll(now_s=20.0)
    assert lk.cells_awaited, "just back"
    send_stack(bms)
    lk.poll(now_s=25.1)
    assert not lk.cells_awaited


class _CanSite:
    """A controller fed through the device layer (SiteIo) by a CAN link, on a virtual clock, from a simulated
    BMS that sends its cluster and stack frames every 100 ms and, when asked, its cells."""

    def __init__(self, buses):
        from datetime import datetime

        from ems.comm.site_io import SiteIo
        from ems.config import site_from_dict
        from ems.control.clock import VirtualClock
        from ems.control.controller import Controller
        ems_bus, bms_bus = buses
        self.cfg = site_from_dict({})
        self.clock = VirtualClock(datetime.fromisoformat("2026-06-22T22:00:00+02:00"))
        self.ctrl = Controller(self.cfg, self.clock)
        self.ctrl.supervise({"bms": 5.0})
        b = self.ctrl.fast.buffers
        self.shape = b.cell_v.shape
        self.link = BmsCanLink(ems_bus, b.cell_v, b.cell_t, b.fresh, cell_max_age_s=5.0)
        self.io = SiteIo(self.cfg, None, {}, self.link)
        self.bms = SimBmsCan(bms_bus)

    def run(self, seconds: float, frames: bool = True, cells: bool = True) -> "_CanSite":
        C = self.shape[0]
        for n in range(int(round(seconds / 0.1))):
            if frames:
                self.bms.send_clusters(np.full(C, 800.0), np.zeros(C), np.full(C, 100.0), np.full(C, 100.0),
                                       np.ones(C), np.zeros(C), np.zeros(C))
                if cells and n % 10 == 0:
                    self.bms.send_cells(np.full(self.shape, 3.3), np.full(self.shape, 25.0))
            self.io.read(self.ctrl, self.clock.monotonic_s())
            if n % 10 == 0:
                self.ctrl.slow_tick()
            self.ctrl.fast_tick(100.0)
            self.clock.advance(0.1)
        return self

    def codes(self) -> set[int]:
        return {code for code, _ in self.ctrl.status.active_alarms}


def test_a_link_that_dies_before_its_first_cell_frames_latches_no_sensor_fault(buses):
    """The CI failure of 2026-12-01: the BMS's cluster frames came, its cells had not yet, and the link went
    silent; the cells were stale on a link not yet lost, for five seconds, and 40010/40011 latched."""
    s = _CanSite(buses).run(0.5, cells=False)
    s.run(12.0, frames=False)
    assert 7 in s.codes() and not s.codes() & {40010, 40011}
    s.run(8.0)
    assert s.codes() == set(), "back without a reset"


def test_cells_that_never_come_on_a_live_link_are_a_sensor_fault_after_their_age_and_debounce(buses):
    """The wait is bounded: one cell age (5 s), then the row's own debounce (warning 1 s, fault 5 s)."""
    s = _CanSite(buses).run(5.5, cells=False)
    assert not s.codes() & {40010, 40011}
    s.run(1.6, cells=False)
    assert {40010, 40011} <= s.codes()
    s.run(5.0, cells=False)
    assert [f for f in s.ctrl.status.active_alarms if f[0] == 40010], "the fault level, latched"
