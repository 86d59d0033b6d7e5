import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ems._core import derate as derate_k
from ems._core import layout as L
from ems.control.protection_table import BatteryRatings, ProtectionTable, default_rows
from tests import reference as ref
from tests.test_protection import HEALTHY

TABLE = ProtectionTable(default_rows(BatteryRatings(cells_per_cluster=16)))


def _setup(C):
    src = np.zeros((L.SRC_COUNT, C))
    for s, v in HEALTHY.items():
        src[s] = v
    cl_in = np.zeros((C, L.CL_IN_COLS))
    cl_in[:, [L.CL_RATED_CHG_A, L.CL_RATED_DCHG_A, L.CL_BMS_CHG_A, L.CL_BMS_DCHG_A]] = 100.0
    flags = np.zeros((C, L.CL_FLAG_COLS), np.uint8)
    flags[:, L.CLF_CONNECTED] = 1
    prot = np.ones((C, L.CLP_COLS), np.uint8)
    prot[:, [L.CLP_TRIP_PENDING, L.CLP_TRIPPED]] = 0
    return src, cl_in, flags, prot


def _run(src, cl_in, flags, prot, stack_max=(1e9, 1e9)):
    C = src.shape[1]
    out = np.zeros((C, L.DR_COLS))
    stack = np.zeros(2)
    derate_k.derate(TABLE.table_f, TABLE.table_i, src, cl_in, flags, prot, *stack_max, out, stack)
    return out, stack


def test_full_current_up_to_the_operating_limit_then_linear_to_zero_at_the_safety_limit():
    src, cl_in, flags, prot = _setup(1)
    for vmax, want in ((3.45, 100.0), (3.50, 100.0), (3.575, 50.0), (3.65, 0.0), (3.70, 0.0)):
        src[L.SRC_CELL_V_MAX] = vmax
        out, _ = _run(src, cl_in, flags, prot)
        assert out[0, L.DR_CHG_A] == pytest.approx(want), vmax
        assert out[0, L.DR_DCHG_A] == pytest.approx(100.0), "high cell voltage only derates charging"


def test_low_temperature_derates_charging_before_discharging():
    src, cl_in, flags, prot = _setup(1)
    src[L.SRC_CELL_T_MIN] = 2.5         # charge: operating 5, safety 0 → 50 %
    out, _ = _run(src, cl_in, flags, prot)
    assert out[0, L.DR_CHG_A] == pytest.approx(50.0)
    assert out[0, L.DR_DCHG_A] == pytest.approx(100.0)


def test_the_lower_of_table_and_bms_limit_wins_and_a_missing_bms_limit_means_zero():
    src, cl_in, flags, prot = _setup(2)
    cl_in[0, L.CL_BMS_CHG_A] = 30.0
    cl_in[1, L.CL_BMS_DCHG_A] = np.nan
    out, _ = _run(src, cl_in, flags, prot)
    assert out[0, L.DR_CHG_A] == pytest.approx(30.0)
    assert out[1, L.DR_DCHG_A] == 0.0


def test_an_unknown_measurement_allows_no_current_in_the_directions_it_guards():
    src, cl_in, flags, prot = _setup(1)
    src[L.SRC_CELL_T_MAX, 0] = np.nan
    out, _ = _run(src, cl_in, flags, prot)
    assert out[0, L.DR_CHG_A] == 0.0 and out[0, L.DR_DCHG_A] == 0.0


def test_protection_block_forces_the_cluster_to_zero():
    src, cl_in, flags, prot = _setup(2)
    prot[1, L.CLP_CHG_ALLOWED] = 0
    prot[1, L.CLP_DCHG_ALLOWED] = 0
    out, stack = _run(src, cl_in, flags, prot)
    assert out[1, L.DR_CHG_A] == 0.0 and out[0, L.DR_CHG_A] == 100.0
    assert stack[0] == 0.0, "a connected cluster at zero holds the whole stack at zero (pending trip)"


def test_stack_limit_is_connected_clusters_times_the_weakest_capped_by_the_rating():
    src, cl_in, flags, prot = _setup(3)
    cl_in[1, L.CL_BMS_DCHG_A] = 40.0
    flags[2, L.CLF_CONNECTED] = 0
    out, stack = _run(src, cl_in, flags, prot)
    assert out[2, L.DR_DCHG_A] == 0.0
    assert stack[1] == pytest.approx(2 * 40.0)
    assert stack[0] == pytest.approx(2 * 100.0)
    _, capped = _run(src, cl_in, flags, prot, stack_max=(150.0, 1e9))
    assert capped[0] == pytest.approx(150.0)


def test_no_connected_cluster_gives_a_zero_stack_limit():
    src, cl_in, flags, prot = _setup(2)
    flags[:, L.CLF_CONNECTED] = 0
    _, stack = _run(src, cl_in, flags, prot)
    assert stack.tolist() == [0.0, 0.0]


# include values inside the derating bands (between operating and safety limits) of the default rows
values = st.one_of(st.floats(-60, 6000), st.sampled_from([np.nan, 3.5, 3.65, 0.0, 5.0, 45.0, 55.0, 3.575, 2.85, 47.5,
                                                          52.5, 3.5, -12.5, 70.0, 75.0]))


@given(st.data())
def test_derating_matches_reference(data):
    C = data.draw(st.integers(1, 4))
    src, cl_in, flags, prot = _setup(C)
    for s in range(L.SRC_COUNT):
        src[s] = data.draw(st.lists(values, min_size=C, max_size=C))
    for col in (L.CL_BMS_CHG_A, L.CL_BMS_DCHG_A, L.CL_RATED_CHG_A, L.CL_RATED_DCHG_A):
        cl_in[:, col] = data.draw(st.lists(st.one_of(st.floats(-10, 300), st.just(np.nan)), min_size=C, max_size=C))
    flags[:, L.CLF_CONNECTED] = data.draw(st.lists(st.sampled_from([0, 1]), min_size=C, max_size=C))
    prot[:, L.CLP_CHG_ALLOWED] = data.draw(st.lists(st.sampled_from([0, 1]), min_size=C, max_size=C))
    prot[:, L.CLP_DCHG_ALLOWED] = data.draw(st.lists(st.sampled_from([0, 1]), min_size=C, max_size=C))
    smax = data.draw(st.tuples(st.floats(-5, 1000), st.floats(-5, 1000)))
    out, stack = _run(src, cl_in, flags, prot, smax)
    want_out, want_stack = ref.derate(TABLE.table_f, TABLE.table_i, src, cl_in, flags, prot, *smax)
    assert_allclose(out, want_out, rtol=1e-12, atol=1e-9)
    assert_allclose(stack, want_stack, rtol=1e-12, atol=1e-9)
