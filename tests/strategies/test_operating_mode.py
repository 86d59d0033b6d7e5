from datetime import date

from ems.strategies.base import TARGET
from ems.strategies.operating_mode import BIG_W, OperatingMode
from tests.strategies.harness import cfg, snap, wants

SEASONS = [{"name": "summer", "start": "04-01", "end": "09-30"}, {"name": "winter", "start": "10-01", "end": "03-31"}]
RULES = [
    {"season": "winter", "day_class": "weekday", "start": "00:00", "end": "06:00", "mode": "grid_charge", "power_w": 30e3,
     "cutoff_soc_pct": 90},
    {"season": "all", "day_class": "holiday", "start": "10:00", "end": "16:00", "mode": "idle"},
    {"season": "summer", "day_class": "all", "start": "18:00", "end": "21:00", "mode": "discharge", "power_w": 20e3,
     "cutoff_soc_pct": 30},
]


def tou(**extra):
    return OperatingMode(cfg(operating_mode={"mode": "tou", "seasons": SEASONS, "holidays": ["12-25", "2026-06-24"],
                                             "tou_rules": RULES, **extra}))


def test_self_consumption_mode_leaves_it_to_the_self_use_strategy():
    assert wants(OperatingMode(cfg()), snap()) is None


def test_full_feed_in_asks_for_all_the_discharge_the_limits_allow():
    assert wants(OperatingMode(cfg(operating_mode={"mode": "full_feed_in"})), snap(soc=60)) == [(TARGET, BIG_W)]


def test_full_feed_in_at_reserve_only_stores_pv_surplus():
    s = OperatingMode(cfg(operating_mode={"mode": "full_feed_in"}, self_use={"reserve_soc_pct": 20}))
    assert wants(s, snap(soc=20)) == [(TARGET, -BIG_W)]


def test_emergency_charging_charges_fully_then_holds():
    s = OperatingMode(cfg(operating_mode={"mode": "emergency_charging", "emergency_charge_power_w": 80e3}))
    assert wants(s, snap(soc=40)) == [(TARGET, -80e3)]
    assert wants(s, snap(soc=100, charge_prohibited=True)) == [(TARGET, 0.0)]


def test_tou_rules_follow_season_and_day_class():
    s = tou()
    assert wants(s, snap(at="2026-01-12 03:00", soc=50)) == [(TARGET, -30e3)]       # winter Monday night
    assert wants(s, snap(at="2026-01-17 03:00", soc=50)) is None                    # winter Saturday: no rule
    assert wants(s, snap(at="2026-07-13 03:00", soc=50)) is None                    # summer: rule is winter-only
    assert wants(s, snap(at="2026-07-13 19:00", soc=50)) == [(TARGET, 20e3)]        # summer evening discharge


def test_holidays_are_their_own_day_class_fixed_and_dated():
    s = tou()
    assert wants(s, snap(at="2026-12-25 12:00")) == [(TARGET, 0.0)]
    assert wants(s, snap(at="2026-06-24 12:00")) == [(TARGET, 0.0)]
    assert wants(s, snap(at="2026-12-28 03:00", soc=50)) == [(TARGET, -30e3)], "an ordinary winter weekday"


def test_tou_cut_off_socs_hold():
    s = tou()
    assert wants(s, snap(at="2026-01-12 03:00", soc=90)) == [(TARGET, 0.0)]
    assert wants(s, snap(at="2026-07-13 19:00", soc=30)) == [(TARGET, 0.0)]


def test_a_season_may_wrap_over_new_year():
    assert tou().season_of(date(2026, 1, 5)) == "winter"


def test_tou_base_mode_full_feed_in_outside_the_rules():
    assert wants(tou(tou_base_mode="full_feed_in"), snap(at="2026-07-13 12:00", soc=60)) == [(TARGET, BIG_W)]


def test_pv_only_mode_holds_the_battery_at_zero():
    assert wants(OperatingMode(cfg(operating_mode={"mode": "pv_only"})), snap(grid_w=20e3)) == [(TARGET, 0.0)]


def forced(**om):
    return OperatingMode(cfg(operating_mode={"mode": "forced_off_grid", "forced_off_grid_min_soc_pct": 80.0,
                                             "forced_off_grid_max_load_w": 30e3, "forced_off_grid_return_soc_pct": 30.0,
                                             **om}))


def relay(o, **kw):
    return dict(o.decide(snap(**kw)).outputs)["grid_relay_open"]


def test_forced_off_grid_needs_high_soc_small_load_and_mains():
    o = forced()
    assert relay(o, soc=70, grid_w=10e3) is False
    assert relay(o, soc=85, grid_w=40e3) is False
    assert relay(o, soc=85, grid_w=10e3, di={"grid_present": False}) is False
    assert relay(o, soc=85, grid_w=10e3, di={"grid_present": True}) is True


def test_forced_off_grid_returns_early_at_the_return_soc_or_on_a_big_load():
    o = forced()
    relay(o, soc=85, grid_w=10e3, di={"grid_present": True})
    assert relay(o, soc=50, on_grid=False, pcs_w=12e3, grid_w=0.0, di={"grid_present": True}) is True
    assert relay(o, soc=30, on_grid=False, pcs_w=12e3, grid_w=0.0, di={"grid_present": True}) is False
    relay(o, soc=85, grid_w=10e3, di={"grid_present": True})
    assert relay(o, soc=85, on_grid=False, pcs_w=45e3, grid_w=0.0, di={"grid_present": True}) is False
