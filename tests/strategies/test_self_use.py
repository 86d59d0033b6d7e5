from ems.strategies.base import TARGET
from ems.strategies.self_use import SelfUse
from tests.strategies.harness import cfg, snap, wants


def test_discharges_to_cover_the_load_so_the_grid_reads_zero():
    assert wants(SelfUse(cfg()), snap(grid_w=30e3, pcs_w=5e3)) == [(TARGET, 35e3)]


def test_stores_pv_surplus_instead_of_exporting():
    assert wants(SelfUse(cfg()), snap(grid_w=-12e3, pcs_w=0.0)) == [(TARGET, -12e3)]


def test_no_discharge_at_or_below_reserve_soc_but_charging_continues():
    s = SelfUse(cfg(self_use={"reserve_soc_pct": 20.0}))
    assert wants(s, snap(soc=20.0, grid_w=30e3)) == [(TARGET, 0.0)]
    assert wants(s, snap(soc=20.0, grid_w=-5e3)) == [(TARGET, -5e3)]


def test_discharge_resumes_only_above_reserve_plus_return_difference():
    s = SelfUse(cfg(self_use={"reserve_soc_pct": 20.0, "return_difference_pct": 2.0}))
    s.decide(snap(soc=19.0, grid_w=30e3))
    assert wants(s, snap(soc=21.5, grid_w=30e3)) == [(TARGET, 0.0)]
    assert wants(s, snap(soc=22.5, grid_w=30e3)) == [(TARGET, 30e3)]


def test_grid_meter_lost_leaves_the_battery_idle():
    assert wants(SelfUse(cfg()), snap(grid_w=None)) == [(TARGET, 0.0)]
