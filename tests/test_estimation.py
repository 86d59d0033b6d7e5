"""OCV tables, the replay tool, SOH fitting, configuration and the controller's use of the bound."""
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from ems._core import layout as L
from ems.config.load import ConfigError, site_from_dict
from ems.estimation.ocv import OcvError, default_table, parse
from ems.estimation.replay import TraceError, read_trace, replay
from ems.estimation.soh import SohTracker


# ---------------------------------------------------------------- OCV tables
def test_the_shipped_lfp_table_is_flat_in_the_middle_and_steep_at_the_ends():
    t = default_table("LFP")
    assert 60.0 < 1000 * (t.ocv(80) - t.ocv(20)) < 100.0
    lo, hi = t.steep_bands(3.0)
    assert t.soc(lo) <= 20.0 and t.soc(hi) >= 90.0
    assert t.grid_v.shape == (401,) and (np.diff(t.grid_v) > 0).all()


@pytest.mark.parametrize("text, message", [
    ("soc,v\n0,3\n100,3.5\n", "line 1: the header"),
    ("soc_pct,ocv_v\n0,3.0\n50,abc\n100,3.5\n", "line 3: not a number"),
    ("soc_pct,ocv_v\n0,3.0\n50,3.3\n40,3.31\n100,3.5\n", "line 4: soc_pct must increase"),
    ("soc_pct,ocv_v\n0,3.0\n50,3.3\n60,3.3\n100,3.5\n", "line 4: ocv_v must increase"),
    ("soc_pct,ocv_v\n0,3.0\n50,nan\n100,3.5\n", "line 3: values must be finite"),
    ("soc_pct,ocv_v\n10,3.0\n100,3.5\n", "from soc_pct 0 to 100"),
    ("soc_pct,ocv_v\n0,3.0\n100,7\n", "line 3: ocv_v 7 outside"),
    ("soc_pct,ocv_v,hysteresis_mv\n0,3.0,20\n100,3.5\n", "line 3: expected 3 values, got 2"),
    ("soc_pct,ocv_v,hysteresis_mv\n0,3.0,20\n100,3.5,-1\n", "line 3: hysteresis_mv -1 outside"),
    ("soc_pct,ocv_v,hyst\n0,3.0,20\n100,3.5,10\n", "line 1: the header"),
])
def test_a_bad_ocv_table_is_refused_with_its_line(text, message):
    with pytest.raises(OcvError, match=message):
        parse(text, "t.csv")


def test_a_hysteresis_column_gives_the_width_along_the_curve_and_its_absence_the_configured_one():
    t = parse("soc_pct,ocv_v,hysteresis_mv\n0,2.8,30\n20,3.25,10\n100,3.5,10\n", "t.csv")
    g = t.grid_hyst_v(default_mv=12.0)
    assert g.shape == t.grid_v.shape
    assert g[0] == pytest.approx(0.030) and g[40] == pytest.approx(0.020) and g[-1] == pytest.approx(0.010)
    plain = parse("soc_pct,ocv_v\n0,2.8\n100,3.5\n", "t.csv")
    assert (plain.grid_hyst_v(default_mv=12.0) == 0.012).all()


def test_the_config_check_names_a_bad_ocv_table_and_a_custom_chemistry_without_one(tmp_path):
    bad = tmp_path / "ocv.csv"
    bad.write_text("soc_pct,ocv_v\n0,3.0\n50,2.9\n100,3.5\n")
    with pytest.raises(ConfigError) as exc:
        site_from_dict({"battery": {"ocv_table": "ocv.csv"}}, base_dir=tmp_path)
    assert "battery.ocv_table" in str(exc.value) and "line 3" in str(exc.value)
    with pytest.raises(ConfigError, match="custom"):
        site_from_dict({"battery": {"chemistry": "custom"}})
    good = tmp_path / "good.csv"
    good.write_text("soc_pct,ocv_v\n0,2.5\n50,3.3\n100,3.6\n")
    cfg = site_from_dict({"battery": {"chemistry": "custom", "ocv_table": "good.csv"}}, base_dir=tmp_path)
    assert cfg.battery.ocv_table == str(good)


# ---------------------------------------------------------------- replay
TRACE = "t_s,current_a,voltage_v,temp_degc\n" + "".join(f"{t},28.0,3.25,25\n" for t in range(0, 3601, 10))


def test_replay_writes_one_row_per_input_row_and_counts_the_charge():
    out = io.StringIO()
    replay(io.StringIO(TRACE), out, 280.0, default_table(), 50.0)
    rows = out.getvalue().splitlines()
    assert rows[0] == "t_s,soc_pct,soc_bound_pct" and len(rows) == 1 + 361
    t, soc, bound = map(float, rows[-1].split(","))
    assert t == 3600.0 and soc == pytest.approx(40.0, abs=0.01) and 0 < bound <= 100


@pytest.mark.parametrize("text, message", [
    ("t_s,current_a,voltage_v\n0,1,3.3\n", "line 1: missing column"),
    ("t_s,current_a,voltage_v,temp_degc\n0,1,3.3,25\n0,1,3.3,25\n", "line 3: t_s 0 does not increase"),
    ("t_s,current_a,voltage_v,temp_degc\n0,1,3.3,25\n1,nan,3.3,25\n", "line 3: current_a is nan"),
    ("t_s,current_a,voltage_v,temp_degc\n0,1,3.3,25\n1,1,x,25\n", "line 3: voltage_v is not a number"),
    ("t_s,current_a,voltage_v,temp_degc\n0,1,330,25\n", "line 2: voltage_v 330 is not a cell voltage"),
    ("", "empty file"),
])
def test_replay_refuses_bad_input_with_the_line_number(text, message):
    with pytest.raises(TraceError, match=message):
        list(read_trace(io.StringIO(text), "in.csv"))


def test_ems_replay_soc_cli_writes_nothing_on_bad_input(tmp_path):
    good = tmp_path / "in.csv"
    good.write_text(TRACE)
    p = subprocess.run([sys.executable, "-m", "ems", "replay-soc", str(good), "--capacity-ah", "280",
                        "--initial-soc", "50"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 362 and "capacity" in p.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text(TRACE + "3600,1,3.3,25\n")
    p = subprocess.run([sys.executable, "-m", "ems", "replay-soc", str(bad), "--capacity-ah", "280"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == "" and "line 363" in p.stderr
    p = subprocess.run([sys.executable, "-m", "ems", "replay-soc", str(good), "--capacity-ah", "-3"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--capacity-ah" in p.stderr


# ---------------------------------------------------------------- SOH
def _anchors(tracker, anchors):
    """Feed (soc, net_ah, t_h) anchors through a fake core state, as the kernel would report them."""
    se = np.zeros((1, L.SE_COLS))
    out = np.zeros((1, L.SOC_COLS))
    for k, (soc, net, t_h) in enumerate(anchors, start=1):
        se[0, [L.SE_ANCHOR_SEQ, L.SE_ANCHOR_SOC, L.SE_ANCHOR_VAR, L.SE_ANCHOR_NET_AH]] = k, soc, 1e-4, net
        out[0, L.SOC_AH_DISCHARGED] += abs(net)
        tracker.observe(se, out, t_h * 3600.0)


def test_soh_finds_capacity_and_current_offset_from_anchor_pairs():
    q, b = 238.0, 0.2                       # an 85 % cell, a sensor reading 0.2 A high
    net, t, anchors = 0.0, 0.0, []
    rng = np.random.default_rng(1)
    soc = 1.0
    for day in range(12):
        t += 24.0
        low = float(rng.uniform(0.05, 0.15)) if day % 3 else 1.0
        net += q * (soc - low) + b * 24.0
        anchors.append((low, net, t))
        soc = low
    tr = SohTracker(1, 280.0, 0.01, 0.3)
    _anchors(tr, [(1.0, 0.0, 0.0)] + [(s + rng.normal(0, 0.005), n, t) for s, n, t in anchors])
    cs = tr.clusters[0]
    assert cs.capacity_ah == pytest.approx(q, rel=0.02)
    assert cs.offset_a == pytest.approx(b, abs=0.1)
    cap = np.full((1, 2), 280.0)
    se = np.zeros((1, L.SE_COLS))
    se[0, L.SE_CAP_ERR] = 0.20                     # told "used cells, capacity ±20 %"
    tr.apply(cap, se, 0.20)
    assert cap[0, 0] == pytest.approx(cs.capacity_ah) and se[0, L.SE_OFFSET_A] == pytest.approx(cs.offset_a)
    # the bound now grows with the learned capacity's error (floored at 1 %), not the configured 20 %
    assert se[0, L.SE_CAP_ERR] == pytest.approx(max(cs.capacity_sigma_ah / cs.capacity_ah, 0.01))
    assert se[0, L.SE_CAP_ERR] < 0.05


def test_soh_learns_nothing_from_anchors_close_together():
    tr = SohTracker(1, 280.0, 0.01, 0.3)
    _anchors(tr, [(1.0, 0.0, 0.0), (0.95, 14.0, 1.0), (0.9, 28.0, 2.0)])
    assert tr.clusters[0].capacity_ah is None and tr.clusters[0].offset_a is None


# ---------------------------------------------------------------- the controller
def test_the_controller_reports_the_bound_and_asks_for_calibration_when_it_is_too_wide():
    from tests.test_controller import Site
    s = Site(start="2026-06-22T22:00:00+02:00", pv="none",
             soc_estimation={"calibration_bound_pct": 8.0, "calibration_auto": True}).run(3)
    b = s.ctrl.fast.buffers
    assert s.ctrl.snapshot.soc_bound_pct == pytest.approx(b.stack_soc[L.SOC_BOUND], abs=0.01)
    b.cell_sig[:] = 0.06                               # ±12 %: too wide
    b.est_state[:, L.SE_PEND_S] = 10.0                 # roll up at the next tick
    s.run(3)
    assert any(e["kind"] == "soc_calibration_requested" for e in s.ctrl.events.recent)
    assert s.ctrl._by_name["soc_calibration"].phase == "charging"


def test_saved_estimate_and_soh_survive_a_restart(tmp_path):
    from ems.site.state import load_state, save_state
    from tests.test_controller import Site
    s = Site().run(2)
    b = s.ctrl.fast.buffers
    b.cell_soc[:] = 0.73
    b.cell_sig[:] = 0.02
    b.est_state[:, L.SE_OFFSET_A] = 0.25
    b.est_state[:, L.SE_CAP_ERR] = 0.013
    s.ctrl.soh.clusters[0].capacity_ah = 270.0
    path = tmp_path / "state.json"
    save_state(s.ctrl, path)
    t = Site()
    assert load_state(t.ctrl, path)
    tb = t.ctrl.fast.buffers
    assert (tb.cell_soc == 0.73).all() and (tb.cell_sig == 0.02).all()
    assert (tb.est_state[:, L.SE_OFFSET_A] == 0.25).all() and t.ctrl.soh.clusters[0].capacity_ah == 270.0
    assert (tb.est_state[:, L.SE_CAP_ERR] == 0.013).all()
    data = json.loads(path.read_text())
    data["cell_soc"][0][0] = math.nan
    path.write_text(json.dumps(data))
    u = Site()
    before = u.ctrl.fast.buffers.cell_soc.copy()
    assert not load_state(u.ctrl, path)
    assert (u.ctrl.fast.buffers.cell_soc == before).all()


def test_a_version_1_state_file_restores_each_packs_soc_to_its_cells(tmp_path):
    from ems.site.state import load_state
    from tests.test_controller import Site
    s = Site()
    b = s.ctrl.fast.buffers
    q = b.capacity_ah * 0.3
    q[0, 0] = b.capacity_ah[0, 0] * 0.9
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"charge_ah": q.tolist(), "soc_pct": 30.0}))
    assert load_state(s.ctrl, path)
    per = b.cell_soc.shape[1] // b.capacity_ah.shape[1]
    assert (b.cell_soc[0, :per] == 0.9).all() and (b.cell_soc[0, per:] == pytest.approx(0.3))
    assert (b.cell_sig == 0.15).all()                  # the old file knew no uncertainty: the initial one


def test_the_controller_counts_with_a_learned_capacity_and_logs_it():
    from tests.test_controller import Site
    s = Site(pv="none").run(2)
    b = s.ctrl.fast.buffers
    for k, (soc, net) in enumerate([(1.0, 0.0), (0.1, 225.0), (1.0, 0.0), (0.1, 225.0)], start=1):
        b.est_state[0, [L.SE_ANCHOR_SEQ, L.SE_ANCHOR_SOC, L.SE_ANCHOR_VAR, L.SE_ANCHOR_NET_AH]] = 1e6 + k, soc, 1e-5, net
        s.run(1)                                       # the slow tick reads each anchor
    assert b.capacity_ah[0] == pytest.approx(250.0, rel=0.01)     # 225 Ah over 90 %
    assert any(e["kind"] == "soh_update" and "250" in e["detail"] for e in s.ctrl.events.recent)


def test_the_same_trace_at_2_3_and_280_ah_gives_the_same_soc():
    """Issue 18: every current threshold and noise term is a C-rate, so the estimator does not care how big
    the cell is. One day of the project's LFP cell (rest, partial cycles, a full charge) measured at 2.3 Ah,
    and the same trace with its current scaled to 280 Ah: the SOC agrees within 0.5 points throughout."""
    import numpy as np

    from ems.config.schema import SocEstimation
    from ems.estimation.ocv import default_table
    from ems.estimation.replay import CellReplay, Sample
    from ems.sim.lfp_cell import LfpCellPlant

    cell = LfpCellPlant(capacity_ah=280.0, soc=0.55, ambient_swing_degc=0.0)
    c = cell.capacity_ah
    plan = [(0.0, 1800), (0.3 * c, 3600), (0.0, 3600), (-0.25 * c, 4 * 3600), (0.0, 1800), (0.4 * c, 5400),
            (0.0, 7200), (-0.5 * c, 3 * 3600), (0.0, 3600), (0.2 * c, 3600), (0.0, 3600)]
    trace = []
    t = 0.0
    for i_a, seconds in plan:
        for _ in range(seconds // 5):
            if i_a < 0 and cell.terminal_v(i_a) >= 3.6:      # CV at the top
                i_a = max(cell.cv_current(3.6), -0.5 * c)
            cell.step(i_a, 5.0)
            t += 5.0
            trace.append((t,) + cell.measure())
    table, est = default_table("LFP"), SocEstimation()
    runs = {}
    for size in (2.3, 280.0):
        k = size / 280.0
        r = CellReplay(size, table, est, 45.0)
        runs[size] = np.array([r.step(Sample(t, i * k, v, temp))[0] for t, i, v, temp in trace])
    diff = np.abs(runs[2.3] - runs[280.0])
    assert diff.max() <= 0.5, (diff.max(), int(diff.argmax()))


def test_a_learned_capacity_outside_a_plausible_ageing_range_is_reported_not_used():
    """Issue 18: a capacity estimate is applied only when its own uncertainty is small and it agrees with
    the configured capacity within a plausible ageing range (60–105 %)."""
    from ems.estimation.soh import ClusterSoh, capacity_verdict

    pairs = [(0.5, 100.0, 10.0, 1e-4, 0.01, 1.0)] * 2
    for q, sigma, used, says in ((250.0, 1.0, True, "used"), (0.37 * 280, 0.5, False, "outside the plausible"),
                                 (300.0, 1.0, False, "outside the plausible"), (250.0, 20.0, False, "known to"),
                                 (None, None, False, "not learned"), (0.0, 0.1, False, "no capacity"),
                                 (-5.0, 0.1, False, "no capacity")):
        cs = ClusterSoh(rated_ah=280.0, capacity_ah=q, capacity_sigma_ah=sigma, pairs=list(pairs))
        got, why = capacity_verdict(cs, 0.02)
        assert (got is not None) == used and says in why, (q, why)


def test_one_capacity_pair_is_enough_only_when_it_spans_half_the_soc():
    """Anchors near full and near empty measure the capacity in one pair; two anchors 30–50 % apart need a
    second pair to agree with before the capacity is counted with."""
    from ems.estimation.soh import ClusterSoh, capacity_verdict

    for swing, used in ((0.84, True), (0.5, True), (0.35, False)):
        cs = ClusterSoh(rated_ah=280.0, capacity_ah=250.0, capacity_sigma_ah=1.0,
                        pairs=[(swing, 250.0 * swing, 3.0, 1e-4, 0.01, 1.0)])
        got, why = capacity_verdict(cs, 0.02)
        assert (got is not None) == used, (swing, why)
        if not used:
            assert "two needed, or one at least 50 % SOC apart" in why


def test_the_ocv_gate_bands_hold_every_voltage_that_can_say_the_soc_well_enough():
    """informative_bands is the cheap pre-check of the kernel's gate: every voltage whose ± 2 sigma maps to
    an SOC sigma within the limit lies at or below v_lo or at or above v_hi, and the bands tighten as
    the limit does."""
    t = default_table("LFP")
    soc = np.linspace(0.0, 100.0, 4001)
    v = t.ocv(soc)
    for sigma_v, limit in ((0.004, 1.5), (0.002, 1.0), (0.010, 3.0)):
        lo, hi = t.informative_bands(sigma_v, limit)
        sig = 0.25 * (t.soc(v + 2 * sigma_v) - t.soc(v - 2 * sigma_v))
        ok = sig <= limit
        assert ((v[ok] <= lo) | (v[ok] >= hi)).all()
        assert t.soc(lo) < 30.0 and t.soc(hi) > 85.0        # the flat middle is never informative
    lo_tight, hi_tight = t.informative_bands(0.004, 0.5)
    lo, hi = t.informative_bands(0.004, 1.5)
    assert lo_tight <= lo and hi_tight >= hi
