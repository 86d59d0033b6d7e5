from ems.strategies.base import LE, TARGET
from ems.strategies.forced_charge import ForcedCharge
from ems.strategies.ups_reserve import UpsReserve
from tests.strategies.harness import cfg, snap, wants

FC = {"power_w": 40e3, "cutoff_soc_pct": 95.0, "undervoltage_power_w": 10e3}


def test_manual_forced_charging_charges_until_the_cut_off_then_finishes():
    s = ForcedCharge(cfg(forced_charge=FC))
    assert wants(s, snap(soc=50, forced_charge=True)) == [(TARGET, -40e3)]
    d = s.decide(snap(soc=95, forced_charge=True))
    assert d.finished and d.requests == ()


def test_undervoltage_forced_charging_is_always_enabled_and_latches():
    s = ForcedCharge(cfg(forced_charge=FC))
    assert wants(s, snap(soc=3, undervoltage=True)) == [(TARGET, -10e3)]
    assert wants(s, snap(soc=10, undervoltage=False)) == [(TARGET, -10e3)], "continues after the trigger clears"
    assert wants(s, snap(soc=95)) is None


def test_undervoltage_charging_exits_when_the_battery_cannot_be_charged():
    s = ForcedCharge(cfg(forced_charge=FC))
    s.decide(snap(soc=3, undervoltage=True))
    assert wants(s, snap(soc=3, charge_prohibited=True)) is None


def test_ups_reserve_charges_below_the_cut_off_and_exits_above_it_with_a_return_difference():
    s = UpsReserve(cfg(ups_reserve={"enabled": True, "cutoff_soc_pct": 30.0, "power_w": 20e3,
                                    "return_difference_pct": 2.0}))
    assert wants(s, snap(soc=29.0)) == [(TARGET, -20e3)]
    assert wants(s, snap(soc=30.0)) == [(TARGET, -20e3)], "at the cut-off it keeps charging"
    assert wants(s, snap(soc=30.5)) == [(TARGET, -20e3)], "… up to cut-off + half the return difference"
    assert wants(s, snap(soc=31.0)) == [(LE, 0.0)], "then no discharge (the floor) …"
    assert wants(s, snap(soc=32.0)) == [(LE, 0.0)], "… until above cut-off + the return difference"
    assert wants(s, snap(soc=32.5)) is None
    assert wants(s, snap(soc=31.0)) is None, "discharging down from above: free until the cut-off"
    assert wants(s, snap(soc=30.0)) == [(LE, 0.0)], "the cut-off is a floor: a lower strategy cannot undo it"


def test_ups_reserve_disabled_does_nothing():
    assert wants(UpsReserve(cfg()), snap(soc=5.0)) is None
