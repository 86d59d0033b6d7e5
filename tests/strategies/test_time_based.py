from ems.strategies.base import TARGET
from ems.strategies.time_based import TimeBased
from tests.strategies.harness import cfg, snap, wants

GROUPS = {"groups": [
    {"days": "weekdays", "start": "01:00", "end": "05:00", "mode": "charge", "power_w": 40e3, "cutoff_soc_pct": 90},
    {"days": "all", "start": "17:00", "end": "21:00", "mode": "discharge", "power_w": 30e3, "cutoff_soc_pct": 20},
]}


def test_charges_at_the_group_power_inside_a_charge_group():
    assert wants(TimeBased(cfg(time_based=GROUPS)), snap(at="2026-06-22 02:00", soc=50)) == [(TARGET, -40e3)]


def test_charging_stops_at_the_cut_off_soc():
    assert wants(TimeBased(cfg(time_based=GROUPS)), snap(at="2026-06-22 02:00", soc=90)) == [(TARGET, 0.0)]


def test_groups_apply_only_on_their_days():
    assert wants(TimeBased(cfg(time_based=GROUPS)), snap(at="2026-06-27 02:00")) is None   # a Saturday


def test_discharges_until_the_cut_off_then_charge_only():
    s = TimeBased(cfg(time_based=GROUPS))
    assert wants(s, snap(at="2026-06-22 18:00", soc=60)) == [(TARGET, 30e3)]
    assert wants(s, snap(at="2026-06-22 18:00", soc=20, grid_w=10e3)) == [(TARGET, 0.0)]
    assert wants(s, snap(at="2026-06-22 18:00", soc=20, grid_w=-8e3)) == [(TARGET, -8e3)]


def test_outside_every_group_it_is_silent_so_self_use_runs():
    assert wants(TimeBased(cfg(time_based=GROUPS)), snap(at="2026-06-22 12:00")) is None


def test_the_end_time_is_exclusive():
    assert wants(TimeBased(cfg(time_based=GROUPS)), snap(at="2026-06-22 05:00")) is None
