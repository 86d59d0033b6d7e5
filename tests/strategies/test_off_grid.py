import pytest

from ems.strategies.off_grid import OffGrid
from tests.strategies.harness import cfg, snap

GRADED = {"graded_load_enabled": True, "general_load_cutoff_soc_pct": 30, "general_load_access_soc_pct": 40,
          "important_load_cutoff_soc_pct": 15, "important_load_access_soc_pct": 25,
          "load_cutoff_soc_pct": 10, "load_access_soc_pct": 20, "stop_ess_soc_pct": 5}


def shed(o, **kw):
    d = dict(o.decide(snap(on_grid=False, **kw)).outputs)
    return d["shed_general_load"], d["shed_important_load"]


def test_all_loads_are_shed_at_the_load_cut_off_and_reconnected_at_access():
    o = OffGrid(cfg(off_grid={"load_cutoff_soc_pct": 10.0, "load_access_soc_pct": 20.0, "stop_ess_soc_pct": 5.0}))
    assert shed(o, soc=50) == (False, False)
    assert shed(o, soc=10) == (True, True)
    assert shed(o, soc=15) == (True, True)
    assert shed(o, soc=20) == (False, False)


def test_the_stop_ess_soc_may_not_be_above_the_load_cut_off():
    import pytest as _pytest
    from ems.config import ConfigError
    with _pytest.raises(ConfigError, match="stop_ess_soc_pct"):
        cfg(off_grid={"stop_ess_soc_pct": 20.0, "load_cutoff_soc_pct": 15.0})


def test_discharge_prohibited_sheds_every_load():
    assert shed(OffGrid(cfg()), soc=50, discharge_prohibited=True) == (True, True)


def test_graded_loads_shed_general_first_then_important_and_restore_in_turn():
    o = OffGrid(cfg(off_grid=GRADED))
    assert shed(o, soc=30) == (True, False)
    assert shed(o, soc=15) == (True, True)
    assert shed(o, soc=24) == (True, True)
    assert shed(o, soc=25) == (True, False)
    assert shed(o, soc=40) == (False, False)


def test_everything_is_restored_when_grid_or_generator_returns():
    o = OffGrid(cfg(off_grid=GRADED))
    shed(o, soc=12)
    d = dict(o.decide(snap(on_grid=False, soc=12, di={"generator_feedback": True})).outputs)
    assert d["shed_general_load"] is False and d["shed_important_load"] is False
    d = dict(o.decide(snap(on_grid=True, soc=12)).outputs)
    assert d["shed_general_load"] is False


def test_ats_prealarm_with_its_own_hysteresis():
    o = OffGrid(cfg())
    assert dict(o.decide(snap(on_grid=False, soc=15)).outputs)["ats_prealarm"] is True
    assert dict(o.decide(snap(on_grid=False, soc=18)).outputs)["ats_prealarm"] is True
    assert dict(o.decide(snap(on_grid=False, soc=20)).outputs)["ats_prealarm"] is False


def test_pv_setpoint_formula_and_charging_protection():
    o = OffGrid(cfg())
    # below the charging protection SOC: 0.8 × chargeable power + 0.98 × load
    d = o.decide(snap(on_grid=False, soc=50, grid_w=0.0, pv_w=10e3, pcs_w=20e3, charge_limit_w=50e3))
    assert d.pv_limit_w == pytest.approx(0.8 * 50e3 + 0.98 * 30e3)
    d = o.decide(snap(on_grid=False, soc=90, grid_w=0.0, pv_w=10e3, pcs_w=20e3, charge_limit_w=50e3))
    assert d.pv_limit_w == pytest.approx(0.98 * 30e3), "at the protection SOC PV only follows the load"
    d = o.decide(snap(on_grid=False, soc=88.5, grid_w=0.0, pv_w=10e3, pcs_w=20e3, charge_limit_w=50e3))
    assert d.pv_limit_w == pytest.approx(0.98 * 30e3), "inside the deadband it stays protected"
    d = o.decide(snap(on_grid=False, soc=87.5, grid_w=0.0, pv_w=10e3, pcs_w=20e3, charge_limit_w=50e3))
    assert d.pv_limit_w > 0.98 * 30e3


def test_stop_ess_soc_shuts_the_pcs_down_until_irradiance_returns():
    from dataclasses import replace
    o = OffGrid(cfg(off_grid={"stop_ess_soc_pct": 8.0, "load_cutoff_soc_pct": 10.0}))
    d = o.decide(replace(snap(on_grid=False, soc=8.0), irradiance_w_m2=0.0))
    assert d.pcs_stop and d.pv_limit_w == 0.0
    d = o.decide(replace(snap(on_grid=False, soc=8.0), irradiance_w_m2=20.0))
    assert d.pcs_stop, "below the start irradiance it stays stopped"
    d = o.decide(replace(snap(on_grid=False, soc=8.0), irradiance_w_m2=60.0))
    assert not d.pcs_stop and dict(d.outputs)["shed_general_load"], "started without load, PV recharges"


def test_chargers_are_cut_off_below_the_charger_stop_soc_with_a_return_margin():
    from dataclasses import replace
    o = OffGrid(cfg(off_grid={"chargers_fitted": True, "charger_stop_soc_pct": 50.0}))

    def chargers_shed(soc):
        return dict(o.decide(replace(snap(on_grid=False, soc=soc), charger_demand_w=5e3)).outputs)["shed_chargers"]
    assert chargers_shed(60) is False
    assert chargers_shed(49.9) is True
    assert chargers_shed(51) is True
    assert chargers_shed(52) is False


def test_chargers_only_get_what_is_left_beyond_the_conventional_load():
    from dataclasses import replace
    o = OffGrid(cfg(off_grid={"chargers_fitted": True, "conventional_load_w": 30e3}))
    s = snap(on_grid=False, soc=80, discharge_limit_w=40e3, pv_w=0.0)
    assert dict(o.decide(replace(s, charger_demand_w=8e3)).outputs)["shed_chargers"] is False
    assert dict(o.decide(replace(s, charger_demand_w=15e3)).outputs)["shed_chargers"] is True
