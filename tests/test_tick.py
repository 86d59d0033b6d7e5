import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from ems._core import layout as L
from ems._core.tick import FastTick
from ems.control.fastpath import BypassParams, FastPath, FastPathParams, StackShape
from tests import reference as ref


def healthy_site(clusters=2, cells=32, packs=4, **params):
    fp = FastPath(StackShape(clusters, cells, packs, max_requests=4), FastPathParams(**params),
                  BypassParams(enabled=True, consistency_modes=15, pcs_dc_min_v=80.0))
    b = fp.buffers
    b.cell_v[:] = 3.30
    b.cell_t[:] = 25.0
    b.fresh[:] = 1
    b.cluster_in[:, L.CL_V] = 3.30 * cells
    b.cluster_in[:, L.CL_I] = 0.0
    b.cluster_in[:, L.CL_INSULATION] = 5000.0
    b.cluster_in[:, [L.CL_POLE_T, L.CL_HVBOX_T]] = 25.0
    b.cluster_in[:, [L.CL_BMS_CHG_A, L.CL_BMS_DCHG_A, L.CL_RATED_CHG_A, L.CL_RATED_DCHG_A]] = 140.0
    b.cluster_flags[:, L.CLF_CONNECTED] = 1
    b.cluster_flags[:, L.CLF_BALANCE_ALLOWED] = 1
    return fp


def test_healthy_stack_follows_a_dispatch_target_inside_its_limits():
    fp = healthy_site()
    fp.set_request(0, L.REQ_TARGET, 20e3)
    sp = fp.tick(10.0)
    assert sp == 20e3
    b = fp.buffers
    assert b.results[L.TO_DCHG_LIMIT_W] == pytest.approx(2 * 140.0 * 3.3 * 32)
    assert b.cluster_w.sum() == pytest.approx(20e3)
    assert fp.events() == []


def test_an_over_voltage_cell_zeroes_the_setpoint_before_the_contactors_open():
    fp = healthy_site()
    fp.set_request(0, L.REQ_TARGET, -20e3)
    fp.tick(10.0)
    b = fp.buffers
    b.cell_v[1, 17] = 3.70           # above the 3.65 V fault limit
    b.cluster_in[:, L.CL_I] = -30.0
    sp = None
    for _ in range(100):             # 1 s debounce at 10 ms
        sp = fp.tick(10.0)
    assert b.cluster_prot[1, L.CLP_TRIP_PENDING] == 1 and b.cluster_prot[1, L.CLP_TRIPPED] == 0
    assert sp == 0.0, "a pending trip forces the power to zero at once"
    events = {(e.row, e.cluster, e.level, e.code) for e in fp.events()}
    assert ("cell_over_voltage", 1, 3, 40006) in events
    for _ in range(20):              # 200 ms trip delay
        fp.tick(10.0)
    assert b.cluster_prot[1, L.CLP_TRIPPED] == 1 and b.results[L.TO_ANY_TRIPPED] == 1.0


def test_bms_limit_lost_means_no_power():
    fp = healthy_site()
    fp.set_request(0, L.REQ_TARGET, 30e3)
    fp.buffers.cluster_in[:, L.CL_BMS_DCHG_A] = np.nan
    assert fp.tick(10.0) == 0.0


def test_reset_clears_a_fault_whose_condition_is_gone():
    fp = healthy_site()
    b = fp.buffers
    b.cluster_in[0, L.CL_INSULATION] = 50.0      # below the 100 kOhm fault limit
    for _ in range(510):
        fp.tick(10.0)
    assert b.prot_level[fp.table.index("insulation"), 0] == 3
    b.cluster_in[0, L.CL_INSULATION] = 5000.0
    for _ in range(510):
        fp.tick(10.0)
    assert b.prot_level[fp.table.index("insulation"), 0] == 3
    fp.tick(10.0, reset_request=True)
    assert b.prot_level[fp.table.index("insulation"), 0] == 0
    assert b.cluster_prot[0, L.CLP_CHG_ALLOWED] == 1


def test_a_buffer_of_the_wrong_shape_is_refused_at_binding():
    fp = healthy_site()
    fp.buffers.cell_t = np.zeros((2, 31))
    with pytest.raises(ValueError, match="cell_t"):
        FastTick(fp.buffers)


def test_bad_stack_shapes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="multiple"):
        FastPath(StackShape(1, 30, 4))
    with pytest.raises(ValueError, match="clusters"):
        FastPath(StackShape(33, 16, 1))
    with pytest.raises(ValueError, match="charge_efficiency"):
        FastPath(StackShape(1, 16, 1), FastPathParams(charge_efficiency=0.0))


def test_negative_tick_period_is_refused():
    with pytest.raises(ValueError, match="dt_ms"):
        healthy_site().tick(-1.0)


@given(st.data())
def test_full_tick_matches_the_composed_reference(data):
    C = data.draw(st.integers(1, 3))
    fp = healthy_site(clusters=C, cells=8, packs=2, ramp_w_per_s=data.draw(st.sampled_from([0.0, 5e4])),
                      deadband_w=data.draw(st.sampled_from([0.0, 100.0])))
    b = fp.buffers
    want = ref.ReferenceTick(b)
    cell = st.sampled_from([3.3, 3.31, 3.45, 3.62, 3.7, 2.75, np.nan, 9.0])
    temp = st.sampled_from([25.0, 26.0, 1.0, 56.0, np.nan])
    for _ in range(data.draw(st.integers(1, 8))):
        n = C * 8
        b.cell_v[:] = np.array(data.draw(st.lists(cell, min_size=n, max_size=n))).reshape(C, 8)
        b.cell_t[:] = np.array(data.draw(st.lists(temp, min_size=n, max_size=n))).reshape(C, 8)
        b.fresh[:] = np.array(data.draw(st.lists(st.sampled_from([0, 1, 1, 1]), min_size=n, max_size=n))).reshape(C, 8)
        b.cluster_in[:, L.CL_I] = data.draw(st.lists(st.sampled_from([-100.0, -5.0, 0.0, 5.0, 100.0, 200.0, np.nan]),
                                                     min_size=C, max_size=C))
        b.cluster_in[:, L.CL_V] = data.draw(st.lists(st.sampled_from([26.4, 28.0, np.nan]), min_size=C, max_size=C))
        b.cluster_flags[:, L.CLF_CONNECTED] = data.draw(st.lists(st.sampled_from([0, 1, 1]), min_size=C, max_size=C))
        b.req_kind[:] = data.draw(st.lists(st.sampled_from([0, 1, 2, 3]), min_size=4, max_size=4))
        b.req_value[:] = data.draw(st.lists(st.floats(-3e4, 3e4), min_size=4, max_size=4))
        b.req_active[:] = data.draw(st.lists(st.sampled_from([0, 1]), min_size=4, max_size=4))
        dt = data.draw(st.sampled_from([10.0, 100.0, 1000.0]))
        reset = data.draw(st.booleans())
        sp = fp.tick(dt, reset)
        w = want.run(dt, reset)
        for name in ("agg_f", "pack_f", "stack_f", "charge_ah", "soc_pct", "soc_out", "stack_soc", "cell_soc", "cell_sig", "sources",
                     "derated", "cluster_w"):
            assert_allclose(getattr(b, name), w[name], rtol=1e-9, atol=1e-6, equal_nan=True, err_msg=name)
        for name in ("agg_i", "pack_i", "stack_i", "anchored", "prot_bits", "prot_level", "cluster_prot",
                     "balancing", "balance_count", "bypass", "bypass_denied", "req_status"):
            assert_array_equal(getattr(b, name), w[name], err_msg=name)
        assert sp == pytest.approx(w["setpoint"], rel=1e-12, abs=1e-9)
        assert b.results[L.TO_CHG_LIMIT_W] == pytest.approx(w["chg_w"], rel=1e-12)
        assert b.results[L.TO_DCHG_LIMIT_W] == pytest.approx(w["dchg_w"], rel=1e-12)
        assert b.results[L.TO_UNALLOCATED_W] == pytest.approx(w["unallocated"], rel=1e-9, abs=1e-6)
        assert b.results[L.TO_N_CHANGED] == w["n_changed"]
        assert -b.results[L.TO_CHG_LIMIT_W] <= sp <= b.results[L.TO_DCHG_LIMIT_W]


def test_the_tick_allocates_nothing_per_call():
    import tracemalloc

    fp = healthy_site(clusters=4, cells=32, packs=4)
    fp.set_request(0, L.REQ_TARGET, 5e3)
    fp.tick(10.0)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _ in range(2000):
        fp.tick(10.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the peak catches transient allocations too (a NumPy temporary of the stack would be ~10 kB)
    assert peak - base < 1024, f"{peak - base} bytes allocated at the peak of 2000 ticks"


def test_tick_results_are_read_in_place_from_the_bound_arrays():
    fp = healthy_site()
    ids = {name: id(getattr(fp.buffers, name)) for name in ("results", "cluster_w", "prot_level", "balancing")}
    fp.set_request(0, L.REQ_TARGET, 1e3)
    fp.tick(10.0)
    assert {name: id(getattr(fp.buffers, name)) for name in ids} == ids
    assert fp.buffers.results[L.TO_SETPOINT_W] == 1e3
