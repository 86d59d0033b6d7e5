from ems.strategies.base import LE
from ems.strategies.feed_in_limit import FeedInLimit
from tests.strategies.harness import cfg, snap, wants


def test_percent_mode_limits_export_to_the_grid_connection_coefficient_of_installed_pv():
    s = FeedInLimit(cfg(grid={"grid_connection_coefficient_pct": 70.0}, pv={"installed_ac_w": 100e3}))
    # exporting 10 kW now with the PCS idle: the PCS may discharge at most 60 kW more before export hits 70 kW
    assert wants(s, snap(grid_w=-10e3, pcs_w=0.0)) == [(LE, 60e3)]


def test_fixed_mode_uses_max_feed_in_w():
    s = FeedInLimit(cfg(grid={"feed_in_limit_mode": "fixed_w", "max_feed_in_w": 5e3}))
    assert wants(s, snap(grid_w=2e3, pcs_w=10e3)) == [(LE, 17e3)]


def test_zero_export_forbids_discharging_into_the_grid():
    s = FeedInLimit(cfg(grid={"feed_in_limit_mode": "fixed_w", "max_feed_in_w": 0.0}))
    assert wants(s, snap(grid_w=-3e3, pcs_w=0.0)) == [(LE, -3e3)]


def test_rrcr_contacts_replace_the_coefficient_and_the_most_restrictive_wins():
    s = FeedInLimit(cfg(rrcr={"enabled": True, "k2_pct": 60.0, "k3_pct": 30.0}, pv={"installed_ac_w": 100e3}))
    assert s.limit_w(snap(di={"rrcr_k2": True}))[0] == 60e3
    assert s.limit_w(snap(di={"rrcr_k2": True, "rrcr_k3": True}))[0] == 30e3
    assert s.limit_w(snap(di={}))[0] == 0.0         # no contact closed: the most restrictive step (K4 0 %)


def test_rrcr_with_no_contact_closed_raises_5009_after_its_delay_and_limits_export_meanwhile():
    """Issue 17 item 13: the wiring fault the manual names (5009: at least one contact is always closed)."""
    s = FeedInLimit(cfg(rrcr={"enabled": True, "k3_pct": 30.0, "k4_pct": 20.0, "fault_delay_s": 10.0},
                        pv={"installed_ac_w": 100e3}))
    assert s.decide(snap(at="2026-06-22 12:00:00", di={"rrcr_k1": True})).alarms == ()
    first = s.decide(snap(at="2026-06-22 12:00:01", grid_w=-5e3, di={}))
    assert first.alarms == () and first.requests[0].value_w == 15e3        # 20 kW export: 15 kW more at most
    assert s.decide(snap(at="2026-06-22 12:00:10", di={})).alarms == ()    # 9 s: a receiver switching steps
    assert s.decide(snap(at="2026-06-22 12:00:11", di={})).alarms == (5009,)
    assert s.decide(snap(at="2026-06-22 12:00:12", di={"rrcr_k2": True})).alarms == ()   # a contact closes: gone


def test_a_fixed_limit_stays_when_it_is_tighter_than_the_rrcr_fallback():
    s = FeedInLimit(cfg(grid={"feed_in_limit_mode": "fixed_w", "max_feed_in_w": 5e3},
                        rrcr={"enabled": True, "k4_pct": 30.0}, pv={"installed_ac_w": 100e3}))
    assert s.limit_w(snap(di={}))[0] == 5e3


def test_rrcr_also_overrides_a_fixed_limit_while_a_contact_is_closed():
    s = FeedInLimit(cfg(grid={"feed_in_limit_mode": "fixed_w", "max_feed_in_w": 50e3},
                        rrcr={"enabled": True, "k4_pct": 0.0}))
    assert s.limit_w(snap(di={"rrcr_k4": True}))[0] == 0.0


def test_meter_lost_means_no_discharge():
    assert wants(FeedInLimit(cfg()), snap(grid_w=None)) == [(LE, 0.0)]


def test_off_grid_has_no_feed_in_limit():
    assert wants(FeedInLimit(cfg()), snap(on_grid=False)) is None
