from ems.strategies.base import EQ, GE, LE, TARGET
from ems.strategies.dispatch import Dispatch
from ems.strategies.one_click_shutdown import OneClickShutdown
from ems.strategies.peak_shaving import PeakShaving
from ems.strategies.pmeteroffset import Pmeteroffset
from ems.strategies.sec14a import Sec14a
from tests.strategies.harness import cfg, snap, wants

WINDOW = {"windows": [{"days": "weekdays", "start": "08:00", "end": "20:00", "peak_w": 50e3, "valley_w": 5e3}]}


def test_peak_shaving_holds_grid_import_below_the_peak_by_its_margin():
    # importing 70 kW with the PCS charging 10 kW: it must deliver at least 10 kW (−10 + 70 − 50) plus the
    # margin (a steady load: the minimum, 0.5 kW)
    assert wants(PeakShaving(cfg(peak_shaving=WINDOW)), snap(at="2026-06-22 10:00", grid_w=70e3, pcs_w=-10e3))[0] == (GE, 10.5e3)


def test_the_peak_margin_grows_with_the_load_variability():
    s = PeakShaving(cfg(peak_shaving={**WINDOW, "margin_sigma": 2.0, "min_margin_w": 0.0, "variability_ticks": 10}))
    for k in range(60):
        s.decide(snap(at=f"2026-06-22 10:00:{k:02d}", grid_w=70e3 + (3e3 if k % 2 else -3e3), pcs_w=0.0))
    assert 10e3 < s.margin_w() < 13e3               # changes of ±6 kW: σ ≈ 6 kW, margin ≈ 12 kW


def test_valley_filling_holds_grid_import_at_or_above_the_valley():
    assert wants(PeakShaving(cfg(peak_shaving=WINDOW)), snap(at="2026-06-22 10:00", grid_w=2e3, pcs_w=0.0))[1] == (LE, -3e3)


def test_peak_shaving_only_inside_its_window_and_on_grid():
    s = PeakShaving(cfg(peak_shaving=WINDOW))
    assert wants(s, snap(at="2026-06-22 21:00", grid_w=70e3)) is None
    assert wants(s, snap(at="2026-06-22 10:00", grid_w=70e3, on_grid=False)) is None


def test_pmeteroffset_holds_a_constant_grid_exchange():
    s = Pmeteroffset(cfg(pmeteroffset={"enabled": True, "grid_w": 10e3}))
    assert wants(s, snap(grid_w=25e3, pcs_w=0.0)) == [(TARGET, 15e3)]
    assert wants(Pmeteroffset(cfg()), snap()) is None


def test_sec14a_limits_pcs_grid_draw_to_4_2_kw_while_triggered():
    s = Sec14a(cfg(sec14a={"enabled": True}))
    assert wants(s, snap(di={"sec14a": True})) == [(GE, -4200.0)]
    assert wants(s, snap(di={"sec14a": False})) is None


def test_one_click_shutdown_holds_the_pcs_at_zero():
    assert wants(OneClickShutdown(), snap(one_click_shutdown=True)) == [(EQ, 0.0)]
    assert wants(OneClickShutdown(), snap()) is None


def test_dispatch_follows_the_remote_setpoint_while_it_stands():
    assert wants(Dispatch(), snap(dispatch_w=-25e3)) == [(TARGET, -25e3)]
    assert wants(Dispatch(), snap()) is None
