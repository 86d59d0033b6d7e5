from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from ems.config import site_from_dict
from ems.sim.cells import OCV_SOC_PCT, OCV_V, StackPlant
from ems.sim.plant import Pcs, Plant
from ems.sim.profiles import LoadProfile, PvProfile, clear_sky_fraction

NOON = datetime(2026, 6, 22, 13, 0, tzinfo=ZoneInfo("Europe/Berlin"))
NIGHT = datetime(2026, 6, 22, 1, 0, tzinfo=ZoneInfo("Europe/Berlin"))


def test_lfp_ocv_curve_is_flat_in_the_middle_and_monotonic():
    assert np.all(np.diff(OCV_V) > 0)
    mid = np.interp([20, 80], OCV_SOC_PCT, OCV_V)
    assert 0.05 < mid[1] - mid[0] < 0.10


def test_cells_differ_in_capacity_and_resistance():
    st = StackPlant(2, 16, 280.0, 50.0)
    assert st.capacity_ah.std() > 0 and st.r_ohm.std() > 0


def test_discharging_lowers_soc_by_the_charge_drawn():
    st = StackPlant(1, 16, 280.0, 50.0)
    q0 = (st.soc * st.capacity_ah).sum()
    t0 = st.true_soc_pct()
    for _ in range(3600):
        st.step(28.0, 1.0)
    assert (q0 - (st.soc * st.capacity_ah).sum()) / 16 == pytest.approx(28.0, rel=1e-6)
    assert t0 - st.true_soc_pct() == pytest.approx(100 * 28.0 * 16 / st.capacity_ah.sum(), rel=1e-6)


def test_parallel_clusters_share_current_so_that_their_voltages_match():
    st = StackPlant(2, 16, 280.0, 50.0)
    soc = st.soc
    soc[1] -= 0.2               # cluster 1 emptier: lower OCV, so it takes less discharge current
    st.set_soc(soc)
    st.step(100.0, 1.0)
    assert st.cluster_i_a.sum() == pytest.approx(100.0)
    assert st.cluster_i_a[1] < st.cluster_i_a[0]
    v = st.cell_v.sum(axis=1) - st.cluster_i_a * st.r_cluster_ohm
    assert v[0] == pytest.approx(v[1], abs=1e-3)      # equal but for the SOC moved during the step


def test_an_open_contactor_carries_no_current():
    st = StackPlant(2, 16, 280.0, 50.0)
    st.connected[1] = 0
    st.step(50.0, 1.0)
    assert st.cluster_i_a[1] == 0.0 and st.cluster_i_a[0] == pytest.approx(50.0)


def test_bms_limits_taper_to_charge_prohibited_at_full():
    st = StackPlant(1, 16, 280.0, 99.9)
    st.step(-140.0, 60.0)
    chg, dchg, chp, dchp = st.limits()
    assert chg[0] < 140.0 and dchp[0] == 0
    st.set_soc(1.0)
    st.step(0.0, 1.0)
    assert st.limits()[2][0] == 1


def test_pcs_follows_its_setpoint_with_its_ramp_and_rating():
    pcs = Pcs(rated_w=100e3, ramp_w_per_s=10e3)
    assert pcs.follow(50e3, 1.0, True, True) == 10e3
    for _ in range(20):
        pcs.follow(500e3, 1.0, True, True)
    assert pcs.p_w == 100e3
    assert pcs.follow(50e3, 1.0, False, True) == 0.0, "a stop command stops it at once"


def test_pv_follows_a_day_curve():
    assert clear_sky_fraction(NIGHT, 48.0) == 0.0
    assert 0.7 < clear_sky_fraction(NOON, 48.0) <= 1.0
    winter = NOON.replace(month=12, day=21)
    assert clear_sky_fraction(winter, 48.0) < clear_sky_fraction(NOON, 48.0)


def test_clouds_reduce_pv_and_are_reproducible():
    p1, p2 = PvProfile("cloudy", 100e3, 48.0, seed=5), PvProfile("cloudy", 100e3, 48.0, seed=5)
    s1 = [p1.value(NOON, 60.0) for _ in range(100)]
    s2 = [p2.value(NOON, 60.0) for _ in range(100)]
    assert s1 == s2 and min(s1) < max(s1) <= PvProfile("clear", 100e3, 48.0).value(NOON, 60.0) + 1e-9


def test_load_profile_from_csv(tmp_path):
    f = tmp_path / "load.csv"
    f.write_text("hour,w\n0,1000\n12,5000\n24,1000\n")
    assert LoadProfile(f"csv:{f}", 0.0).value(NOON.replace(hour=6)) == pytest.approx(3000.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1000\nnoon,x\n")
    with pytest.raises(ValueError, match="line 2"):
        LoadProfile(f"csv:{bad}", 0.0)


def test_power_balance_holds_on_grid_and_off_grid():
    plant = Plant(site_from_dict({}), "clear", "commercial")
    for sp in (50e3, -30e3, 0.0):
        f = plant.step(NOON, 1.0, sp)
        assert f.load_w == pytest.approx(f.pv_w + f.pcs_w + f.grid_w + f.dg_w, abs=1e-6)
    plant.grid_available = False
    for _ in range(5):
        f = plant.step(NOON, 1.0, 0.0)
        assert f.grid_w == 0.0
        assert f.load_w == pytest.approx(f.pv_w + f.pcs_w + f.dg_w, abs=1e-6)


def test_off_grid_load_beyond_pcs_and_pv_is_not_served():
    plant = Plant(site_from_dict({}), "none", "flat", load_peak_w=150e3)
    plant.grid_available = False
    f = plant.step(NIGHT, 1.0, 0.0)
    assert f.pcs_w == pytest.approx(100e3) and f.unserved_w == pytest.approx(f.load_w + f.unserved_w - 100e3)


def test_incremental_ocv_matches_a_full_lookup_across_segment_boundaries():
    st = StackPlant(2, 16, 280.0, 31.0)
    for _ in range(7200):                       # 2 h at 0.5 C through several OCV segments
        st.step(280.0, 1.0)
    fresh = np.interp(st.soc * 100.0, OCV_SOC_PCT, OCV_V)
    ocv_now = st.cell_v + st.r_ohm * st.cluster_i_a[:, None]
    assert np.abs(ocv_now - fresh).max() < 1e-3
    assert st.true_soc_pct() < 10.0


def test_the_segment_lookup_gives_the_ocv_curve_exactly():
    st = StackPlant(1, 1001, 280.0, 50.0)
    st.set_soc(np.linspace(0.0, 1.0, 1001)[None, :])
    assert np.allclose(st.cell_v, np.interp(np.linspace(0, 100, 1001), OCV_SOC_PCT, OCV_V), atol=1e-12)
