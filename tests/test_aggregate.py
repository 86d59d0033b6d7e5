import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from ems._core import aggregate as agg_k
from ems._core import layout as L
from tests import reference as ref
from tests.helpers import T_RANGE, V_RANGE, run_aggregate
from tests.generators import stacks


def assert_same_as_reference(v, t, fresh, P):
    got = run_aggregate(v, t, fresh, P)
    want = ref.aggregate(v, t, fresh, P, *V_RANGE, *T_RANGE)
    for name, w in zip(("cluster_f", "cluster_i", "pack_f", "pack_i", "stack_f", "stack_i"), want):
        if w.dtype.kind == "f":
            assert_allclose(got[name], w, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=name)
        else:
            assert_array_equal(got[name], w, err_msg=name)


@given(stacks())
def test_aggregation_matches_reference_on_random_stacks(stack):
    assert_same_as_reference(*stack)


def test_aggregation_matches_reference_on_a_full_size_stack(rng):
    v = rng.uniform(3.0, 3.5, (32, 400))
    t = rng.uniform(15, 35, (32, 400))
    fresh = (rng.random((32, 400)) > 0.01).astype(np.uint8)
    v[rng.random((32, 400)) < 0.01] = np.nan
    assert_same_as_reference(v, t, fresh, 25)


def test_nan_and_out_of_range_cells_do_not_poison_the_mean_and_are_counted():
    v = np.full((1, 8), 3.30)
    v[0, 2] = np.nan
    v[0, 5] = 9.9          # outside the sensor's physical range
    t = np.full((1, 8), 25.0)
    out = run_aggregate(v, t, np.ones((1, 8), np.uint8), 2)
    assert out["cluster_f"][0, L.AGG_V_MEAN] == pytest.approx(3.30)
    assert out["cluster_f"][0, L.AGG_V_MAX] == pytest.approx(3.30)
    assert out["cluster_i"][0, L.AGG_V_INVALID] == 2
    assert out["pack_i"][0, :, L.PACK_V_INVALID].tolist() == [1, 1]
    assert out["stack_i"][L.STK_V_INVALID] == 2


def test_stale_cells_are_invalid_for_voltage_and_temperature():
    v = np.full((2, 4), 3.3)
    t = np.full((2, 4), 25.0)
    v[1, 3], t[1, 3] = 3.9, 80.0   # would be the extremes, but the data is stale
    fresh = np.ones((2, 4), np.uint8)
    fresh[1, 3] = 0
    out = run_aggregate(v, t, fresh, 1)
    assert out["stack_f"][L.AGG_V_MAX] == pytest.approx(3.3)
    assert out["stack_f"][L.AGG_T_MAX] == pytest.approx(25.0)
    assert out["cluster_i"][1, L.AGG_V_INVALID] == 1 and out["cluster_i"][1, L.AGG_T_INVALID] == 1


def test_a_plausible_cell_far_from_the_mean_is_reported_with_its_location():
    v = np.full((3, 10), 3.30)
    v[2, 7] = 3.72            # plausible reading, 0.4 V above the others: protection must see it
    t = np.full((3, 10), 25.0)
    t[1, 4] = -5.0
    out = run_aggregate(v, t, np.ones((3, 10), np.uint8), 2)
    s, si = out["stack_f"], out["stack_i"]
    assert s[L.AGG_V_MAX] == pytest.approx(3.72)
    assert (si[L.STK_V_MAX_CLUSTER], si[L.STK_V_MAX_CELL]) == (2, 7)
    assert (si[L.STK_T_MIN_CLUSTER], si[L.STK_T_MIN_CELL]) == (1, 4)
    assert out["cluster_f"][2, L.AGG_V_SPREAD] == pytest.approx(0.42)
    assert out["cluster_i"][2, L.AGG_V_MAX_CELL] == 7


def test_a_cluster_with_no_valid_cell_reports_nan_and_no_location():
    v = np.full((2, 4), 3.3)
    t = np.full((2, 4), 25.0)
    fresh = np.ones((2, 4), np.uint8)
    fresh[0] = 0
    out = run_aggregate(v, t, fresh, 2)
    assert np.isnan(out["cluster_f"][0, L.AGG_V_MIN]) and np.isnan(out["cluster_f"][0, L.AGG_T_MEAN])
    assert out["cluster_i"][0, L.AGG_V_MIN_CELL] == -1
    assert out["stack_f"][L.AGG_V_MIN] == pytest.approx(3.3)   # the other cluster still counts


def test_cells_not_divisible_into_packs_is_refused():
    v = np.full((1, 10), 3.3)
    with pytest.raises(ValueError, match="multiple of packs"):
        run_aggregate(v, v.copy(), np.ones((1, 10), np.uint8), 3)


def test_wrong_output_shape_is_refused_before_anything_is_written():
    v = np.full((2, 4), 3.3)
    cluster_f = np.full((2, L.AGG_F_COLS - 1), -7.0)
    with pytest.raises(ValueError, match="cluster_f"):
        agg_k.aggregate(v, v.copy(), np.ones((2, 4), np.uint8), 1, *V_RANGE, *T_RANGE, cluster_f,
                        np.zeros((2, L.AGG_I_COLS), np.int32), np.zeros((2, 1, L.PACK_F_COLS)),
                        np.zeros((2, 1, L.PACK_I_COLS), np.int32), np.zeros(L.AGG_F_COLS),
                        np.zeros(L.STK_I_COLS, np.int32))
    assert (cluster_f == -7.0).all()


finite_values = st.lists(st.one_of(st.floats(-50.0, 130.0), st.sampled_from([0.0, -0.0, 3.3, 3.3])), min_size=1,
                         max_size=70)


@given(finite_values)
def test_vector_block_statistics_equal_the_scalar_fallback(values):
    x = np.array(values, dtype=np.float64)
    vec, sca = agg_k.block_stats(x, True), agg_k.block_stats(x, False)
    assert vec[0] == sca[0] == x.min()
    assert vec[1] == sca[1] == x.max()
    assert vec[2] == pytest.approx(sca[2], rel=1e-12, abs=1e-12)


def test_the_simd_path_in_use_is_named():
    assert agg_k.SIMD in ("sse2", "scalar")
