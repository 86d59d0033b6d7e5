"""The simulated site over loopback protocols: the controller reaches meters, PCS and BMS only through the
Modbus engine and the CAN link (what `ems run` does)."""
import dataclasses
import time
from datetime import datetime, timezone

import can
import pytest

from ems.comm.can_codec import load_database
from ems.comm.modbus_server import IoThread
from ems.config.schema import SiteConfig
from ems.control.clock import RealClock
from ems.control.controller import Controller
from ems.sim.devices import ProtocolSiteLink
from ems.sim.plant import Plant


@pytest.fixture
def site():
    io = IoThread()
    cfg = SiteConfig()
    ctrl = Controller(cfg, RealClock(), max_age_s=1.5)
    plant = Plant(cfg, "clear", "flat", 30_000.0)
    link = ProtocolSiteLink(plant, ctrl, io)
    yield cfg, ctrl, plant, link
    link.close()
    io.stop()


def run(ctrl, link, seconds, until=None):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        link.read()
        if n % 20 == 0:
            ctrl.slow_tick()
        cmd = ctrl.fast_tick(10.0)
        link.actuate(cmd, datetime.now(timezone.utc), 0.01)
        n += 1
        if until is not None and until():
            return True
        time.sleep(0.005)
    return False


def test_controller_runs_the_site_over_modbus_and_can(site):
    cfg, ctrl, plant, link = site
    assert run(ctrl, link, 6.0, until=lambda: abs(plant.flows.pcs_w) > 1000)    # self-use discharges to cover load
    assert ctrl._fresh("grid_w") is not None and ctrl._bms_fresh()
    assert link.sim.pcs_setpoint.get() != 0.0                                 # the setpoint arrived over Modbus
    assert link.sim.bms.keepalives_seen > 0                                   # 0x305 over CAN
    assert not [a for a in ctrl.status.active_alarms if a[0] in (4, 5, 7)]


@pytest.mark.parametrize("device, code", [("grid_meter", 5), ("pcs", 4), ("pv", 21), ("air_conditioner", 22),
                                          ("bms", 7)])
def test_each_silent_device_raises_its_comm_alarm_and_recovers(device, code):
    """Over the real protocols: a Modbus device stops answering (its server goes silent), the BMS stops
    sending CAN frames; the manual's alarm rises, and clears by itself when the device is back."""
    io = IoThread()
    cfg = SiteConfig()
    cfg = dataclasses.replace(cfg, air_conditioner=dataclasses.replace(cfg.air_conditioner, enabled=True))
    ctrl = Controller(cfg, RealClock(), max_age_s=2.5)       # inside it: every device's poll (AC: 1 s)
    plant = Plant(cfg, "clear", "flat", 30_000.0)
    link = ProtocolSiteLink(plant, ctrl, io)

    def alarmed():
        return any(c == code for c, _ in ctrl.status.active_alarms)
    try:
        run(ctrl, link, 2.0)
        assert not alarmed()
        if device == "bms":
            link.lost.add("bms")
        else:
            link.sim.mute(device, True)
        assert run(ctrl, link, 8.0, until=alarmed)
        if device == "bms":
            link.lost.discard("bms")
        else:
            link.sim.mute(device, False)
        assert run(ctrl, link, 10.0, until=lambda: not alarmed())
    finally:
        link.close()
        io.stop()


def test_cell_over_voltage_frame_zeroes_the_pcs_over_modbus(site):
    cfg, ctrl, plant, link = site
    assert run(ctrl, link, 6.0, until=lambda: abs(link.sim.pcs_setpoint.get()) > 1000)
    db = load_database()
    m = db.get_message_by_name("ClusterCellVoltages")
    link.sim.bus.send(can.Message(arbitration_id=m.frame_id, is_extended_id=False,
                                  data=m.encode({"cluster": 0, "group": 0, "cell_a_v": 3.9, "cell_b_v": 3.3,
                                                 "cell_c_v": 3.3})))
    assert run(ctrl, link, 3.0, until=lambda: link.sim.pcs_setpoint.get() == 0.0)
    assert any(e["kind"] == "trip" and e["code"] in (40006, 40062) for e in ctrl.events.recent)   # protection, not staleness
    assert ctrl._bms_fresh()
