from ems.strategies.base import TARGET
from ems.strategies.soc_calibration import SocCalibration
from tests.strategies.harness import cfg, snap, wants

CAL = {"charge_power_w": 60e3, "discharge_power_w": 25e3}


def test_manual_calibration_charges_until_charge_is_prohibited_then_discharges_back():
    s = SocCalibration(cfg(soc_calibration=CAL))
    s.request(True)
    assert wants(s, snap(soc=40)) == [(TARGET, -60e3)]
    assert wants(s, snap(soc=99)) == [(TARGET, -60e3)]
    assert wants(s, snap(soc=100, charge_prohibited=True)) == [(TARGET, 25e3)]
    assert wants(s, snap(soc=45)) == [(TARGET, 25e3)]
    d = s.decide(snap(soc=39.9))
    assert d.finished and s.phase == "idle"


def test_calibration_discharge_stops_at_the_reserve_soc_if_that_is_higher():
    s = SocCalibration(cfg(soc_calibration=CAL, self_use={"reserve_soc_pct": 30.0}))
    s.request(True)
    s.decide(snap(soc=10))
    s.decide(snap(soc=100, charge_prohibited=True))
    assert wants(s, snap(soc=31)) == [(TARGET, 25e3)]
    assert s.decide(snap(soc=29.9)).finished


def test_calibration_needs_the_grid_and_a_chargeable_battery():
    s = SocCalibration(cfg(soc_calibration=CAL))
    s.request(True)
    assert wants(s, snap(soc=40, on_grid=False)) == []
    assert s.phase == "idle"


def test_cancel_stops_a_running_calibration():
    s = SocCalibration(cfg(soc_calibration=CAL))
    s.request(True)
    s.decide(snap(soc=40))
    s.request(False)
    assert wants(s, snap(soc=41)) is None


def test_periodic_calibration_starts_after_its_time_and_comes_back_after_the_period():
    s = SocCalibration(cfg(soc_calibration={**CAL, "periodic_enabled": True, "period_days": 7, "start_time": "10:00"}))
    assert wants(s, snap(at="2026-06-22 09:59", soc=40)) is None
    assert wants(s, snap(at="2026-06-22 10:00", soc=40)) == [(TARGET, -60e3)]
    s.decide(snap(at="2026-06-22 14:00", soc=100, charge_prohibited=True))
    assert s.decide(snap(at="2026-06-22 18:00", soc=39)).finished
    assert wants(s, snap(at="2026-06-28 11:00", soc=40)) is None
    assert wants(s, snap(at="2026-06-29 11:00", soc=40)) == [(TARGET, -60e3)]
