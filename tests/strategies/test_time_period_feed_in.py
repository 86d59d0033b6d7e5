from ems.strategies.base import TARGET
from ems.strategies.time_period_feed_in import TimePeriodFeedIn
from tests.strategies.harness import cfg, snap, wants

TPF = {"enabled": True, "cutoff_soc_pct": 20.0,
       "periods": [{"start": "17:00", "end": "19:00", "feed_in_w": 15e3}, {"start": "20:00", "end": "21:00", "feed_in_w": 0.0}]}


def test_discharges_so_the_grid_feed_in_meets_the_period_target():
    # importing 10 kW with the PCS idle: 25 kW more gives 15 kW feed-in
    assert wants(TimePeriodFeedIn(cfg(time_period_feed_in=TPF)), snap(at="2026-06-22 17:30", grid_w=10e3)) == [(TARGET, 25e3)]


def test_a_zero_target_only_covers_the_load():
    assert wants(TimePeriodFeedIn(cfg(time_period_feed_in=TPF)), snap(at="2026-06-22 20:30", grid_w=8e3)) == [(TARGET, 8e3)]


def test_once_the_cut_off_is_reached_it_stays_off_until_charged_above_it():
    s = TimePeriodFeedIn(cfg(time_period_feed_in=TPF))
    assert wants(s, snap(at="2026-06-22 17:30", soc=20.0)) == []
    assert wants(s, snap(at="2026-06-22 20:30", soc=20.0)) == [], "still locked in the next period"
    s.decide(snap(at="2026-06-23 12:00", soc=25.0))
    assert wants(s, snap(at="2026-06-23 17:30", soc=24.0, grid_w=0.0)) == [(TARGET, 15e3)]


def test_silent_outside_its_periods_and_when_disabled():
    assert wants(TimePeriodFeedIn(cfg(time_period_feed_in=TPF)), snap(at="2026-06-22 12:00")) is None
    assert wants(TimePeriodFeedIn(cfg()), snap(at="2026-06-22 17:30")) is None
