import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from ems._core import balance as bal_k
from ems._core import layout as L
from ems.control.fastpath import BypassParams, FastPathParams, bypass_vector
from ems.control.protection_table import BatteryRatings, ProtectionTable, default_rows
from tests import reference as ref
from tests.helpers import V_RANGE, run_aggregate
from tests.generators import stacks

TABLE = ProtectionTable(default_rows(BatteryRatings(cells_per_cluster=16)))


class Balancer:
    def __init__(self, v, allowed=True):
        self.v = v
        C, N = v.shape
        self.fresh = np.ones((C, N), np.uint8)
        self.flags = np.zeros((C, L.CL_FLAG_COLS), np.uint8)
        self.flags[:, L.CLF_BALANCE_ALLOWED] = 1 if allowed else 0
        self.state = np.zeros((C, N), np.uint8)
        self.count = np.zeros(C, np.int32)

    def step(self, on_mv=30.0, off_mv=10.0, v_min=3.35):
        agg = run_aggregate(self.v, np.full(self.v.shape, 25.0), self.fresh, 1)
        bal_k.balance(self.v, self.fresh, *V_RANGE, agg["cluster_f"], agg["pack_f"], self.flags, on_mv, off_mv, v_min,
                      self.state, self.count)
        return self


def test_cells_above_cluster_minimum_plus_threshold_balance():
    b = Balancer(np.array([[3.40, 3.42, 3.45, 3.50]])).step()
    assert b.state[0].tolist() == [0, 0, 1, 1]
    assert b.count[0] == 2


def test_balancing_stops_only_within_the_off_threshold():
    b = Balancer(np.array([[3.40, 3.45]])).step()
    assert b.state[0, 1] == 1
    b.v[0, 1] = 3.42            # 20 mV above minimum: inside on (30) but outside off (10): keeps bleeding
    b.step()
    assert b.state[0, 1] == 1
    b.v[0, 1] = 3.409
    b.step()
    assert b.state[0, 1] == 0


def test_no_balancing_on_the_flat_plateau_below_the_minimum_voltage():
    b = Balancer(np.array([[3.20, 3.30]])).step()
    assert b.count[0] == 0


def test_no_balancing_where_the_state_does_not_allow_it():
    b = Balancer(np.array([[3.40, 3.50]]), allowed=False).step()
    assert b.count[0] == 0


def test_a_cell_with_invalid_data_never_balances():
    b = Balancer(np.array([[3.40, 3.50, 3.50]]))
    b.fresh[0, 2] = 0
    b.step()
    assert b.state[0].tolist() == [0, 1, 0]


def test_off_threshold_above_on_threshold_is_refused():
    b = Balancer(np.array([[3.40, 3.50]]))
    with pytest.raises(ValueError, match="off_mv < on_mv"):
        b.step(on_mv=10.0, off_mv=20.0)


@given(stacks(), st.data())
def test_balancing_matches_reference(stack, data):
    v, t, fresh, P = stack
    C, N = v.shape
    agg = run_aggregate(v, t, fresh, P)
    flags = np.zeros((C, L.CL_FLAG_COLS), np.uint8)
    flags[:, L.CLF_BALANCE_ALLOWED] = data.draw(st.lists(st.sampled_from([0, 1]), min_size=C, max_size=C))
    prev = np.array(data.draw(st.lists(st.sampled_from([0, 1]), min_size=C * N, max_size=C * N)),
                    np.uint8).reshape(C, N)
    state, count = prev.copy(), np.zeros(C, np.int32)
    bal_k.balance(v, fresh, *V_RANGE, agg["cluster_f"], agg["pack_f"], flags, 30.0, 10.0, 3.0, state, count)
    want, want_count = ref.balance(v, fresh, *V_RANGE, agg["cluster_f"], flags, 30.0, 10.0, 3.0, prev)
    assert_array_equal(state, want)
    assert_array_equal(count, want_count)


# ---------------------------------------------------------------- bypass
class Bypass:
    """C clusters of P packs × 16 cells; pack statistics written directly."""

    def __init__(self, C=1, P=6, **params):
        self.P = P
        self.pack_f = np.zeros((C, P, L.PACK_F_COLS))
        self.pack_f[..., [L.PACK_V_MIN, L.PACK_V_MAX, L.PACK_V_MEAN]] = 3.30
        self.pack_f[..., [L.PACK_T_MIN, L.PACK_T_MAX]] = 25.0
        self.pack_i = np.zeros((C, P, L.PACK_I_COLS), np.int32)
        self.pole_t = np.full((C, P), np.nan)
        self.soc = np.full((C, P), 50.0)
        self.cl_in = np.zeros((C, L.CL_IN_COLS))
        defaults = dict(enabled=True, consistency_modes=15, pcs_dc_min_v=0.0, max_per_cluster=2)
        defaults.update(params)
        self.params = bypass_vector(BypassParams(**defaults), TABLE, FastPathParams())
        self.decision = np.zeros((C, P), np.uint8)
        self.denied = np.zeros(C, np.int32)

    def step(self, current_a=0.0):
        self.cl_in[:, L.CL_I] = current_a
        bal_k.bypass(self.pack_f, self.pack_i, self.pole_t, self.soc, self.cl_in, 16, self.params, self.decision,
                     self.denied)
        return self


@pytest.mark.parametrize("fault", ["over_voltage", "under_voltage", "over_temp", "low_temp_charge",
                                   "temp_sensor", "harness", "pole_over_temp"])
def test_a_faulty_pack_from_the_manuals_list_is_bypassed(fault):
    b = Bypass()
    f = b.pack_f[0, 3]
    current = 0.0
    if fault == "over_voltage":
        f[L.PACK_V_MAX] = 3.61
    elif fault == "under_voltage":
        f[L.PACK_V_MIN] = 2.79
    elif fault == "over_temp":
        f[L.PACK_T_MAX] = 56.0
    elif fault == "low_temp_charge":
        f[L.PACK_T_MIN] = 1.0
        current = -20.0
    elif fault == "temp_sensor":
        b.pack_i[0, 3, L.PACK_T_INVALID] = 1
    elif fault == "harness":
        b.pack_i[0, 3, L.PACK_V_INVALID] = 2
    elif fault == "pole_over_temp":
        b.pole_t[0, 3] = 76.0
    b.step(current)
    assert b.decision[0].tolist() == [0, 0, 0, L.BYP_FAULT, 0, 0]


def test_fault_bypass_releases_only_past_the_hysteresis():
    b = Bypass()
    b.pack_f[0, 1, L.PACK_V_MAX] = 3.61
    b.step()
    b.pack_f[0, 1, L.PACK_V_MAX] = 3.58         # below 3.60 but within the 50 mV hysteresis
    b.step()
    assert b.decision[0, 1] == L.BYP_FAULT
    b.pack_f[0, 1, L.PACK_V_MAX] = 3.50
    b.step()
    assert b.decision[0, 1] == L.BYP_NONE


def test_consistency_bypasses_the_highest_soc_packs_while_charging():
    b = Bypass()
    b.soc[0] = [50, 51, 60, 58, 50, 52]
    b.step(-50.0)
    assert b.decision[0].tolist() == [0, 0, 2, 2, 0, 0]


def test_consistency_bypasses_the_lowest_soc_packs_while_discharging():
    b = Bypass()
    b.soc[0] = [50, 40, 60, 58, 43, 52]
    b.step(50.0)
    assert b.decision[0].tolist() == [0, 2, 0, 0, 2, 0]


def test_consistency_only_in_the_enabled_modes():
    b = Bypass(consistency_modes=2)        # on-grid discharging only
    b.soc[0] = [50, 51, 60, 58, 50, 52]
    b.step(-50.0)
    assert b.decision.sum() == 0
    b.params[L.BP_ON_GRID] = 0.0           # off-grid discharging: not enabled either
    b.soc[0] = [50, 40, 60, 58, 43, 52]
    b.step(50.0)
    assert b.decision.sum() == 0


def test_consistency_bypass_holds_until_the_release_spread():
    b = Bypass()
    b.soc[0] = [50, 50, 56, 50, 50, 50]
    b.step(-50.0)
    assert b.decision[0, 2] == L.BYP_CONSISTENCY
    b.soc[0, 2] = 53.0                         # below start (5) but above release (2)
    b.step(-50.0)
    assert b.decision[0, 2] == L.BYP_CONSISTENCY
    b.soc[0, 2] = 51.0
    b.step(-50.0)
    assert b.decision[0, 2] == L.BYP_NONE


def test_no_consistency_bypass_at_rest():
    b = Bypass()
    b.soc[0] = [50, 50, 70, 50, 50, 50]
    b.step(0.0)
    assert b.decision.sum() == 0


def test_never_bypasses_so_many_packs_that_the_string_leaves_the_pcs_dc_window():
    # 6 packs × 16 cells × 3.3 V = 316.8 V; minimum 260 V allows one bypass (264 V), not two (211 V)
    b = Bypass(pcs_dc_min_v=260.0, max_per_cluster=4)
    b.pack_f[0, 0, L.PACK_V_MAX] = 3.61
    b.pack_f[0, 4, L.PACK_T_MAX] = 56.0
    b.step()
    assert (b.decision[0] == L.BYP_FAULT).sum() == 1
    assert b.denied[0] == 1


def test_faulty_packs_take_precedence_over_consistency():
    b = Bypass(max_per_cluster=1)
    b.soc[0] = [50, 50, 70, 50, 50, 50]
    b.pack_f[0, 5, L.PACK_V_MAX] = 3.61
    b.step(-50.0)
    assert b.decision[0].tolist() == [0, 0, 0, 0, 0, L.BYP_FAULT]


def test_disabled_bypass_bypasses_nothing():
    b = Bypass(enabled=False)
    b.pack_f[0, 0, L.PACK_V_MAX] = 3.7
    b.step()
    assert b.decision.sum() == 0


@given(st.data())
def test_bypass_matches_reference(data):
    C, P = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 8))
    b = Bypass(C, P, pcs_dc_min_v=data.draw(st.sampled_from([0.0, 100.0, 250.0])),
               max_per_cluster=data.draw(st.integers(0, 4)),
               consistency_modes=data.draw(st.integers(0, 15)))
    b.params[L.BP_ON_GRID] = data.draw(st.sampled_from([0.0, 1.0]))

    def arr(strat, shape):
        n = int(np.prod(shape))
        return np.array(data.draw(st.lists(strat, min_size=n, max_size=n))).reshape(shape)

    vals = st.sampled_from([3.3, 3.61, 2.79, 3.56, np.nan])
    temps = st.sampled_from([25.0, 56.0, 1.0, -16.0, 52.0, np.nan])
    b.pack_f[..., L.PACK_V_MAX] = arr(vals, (C, P))
    b.pack_f[..., L.PACK_V_MIN] = arr(vals, (C, P))
    b.pack_f[..., L.PACK_V_MEAN] = arr(vals, (C, P))
    b.pack_f[..., L.PACK_T_MAX] = arr(temps, (C, P))
    b.pack_f[..., L.PACK_T_MIN] = arr(temps, (C, P))
    b.pack_i[...] = arr(st.sampled_from([0, 0, 0, 1]), (C, P, L.PACK_I_COLS))
    b.pole_t[...] = arr(st.sampled_from([np.nan, 30.0, 80.0]), (C, P))
    prev = arr(st.sampled_from([0, 1, 2]), (C, P)).astype(np.uint8)
    b.decision[...] = prev
    b.soc[...] = arr(st.floats(0, 100), (C, P))
    cur = data.draw(st.sampled_from([-50.0, 0.0, 50.0, np.nan]))
    b.step(cur)
    want, want_denied = ref.bypass(b.pack_f, b.pack_i, b.pole_t, b.soc, b.cl_in, 16, b.params, prev)
    assert_array_equal(b.decision, want)
    assert_array_equal(b.denied, want_denied)


@given(st.data())
def test_vector_balancing_block_equals_the_scalar_fallback(data):
    n = data.draw(st.integers(1, 70))
    x = np.array(data.draw(st.lists(st.sampled_from([3.30, 3.34, 3.36, 3.40, 9.0, np.nan, 0.1]), min_size=n,
                                    max_size=n)))
    fresh = np.array(data.draw(st.lists(st.sampled_from([0, 1, 1, 2]), min_size=n, max_size=n)), np.uint8)
    state = np.array(data.draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)), np.uint8)
    s_vec, s_sca = state.copy(), state.copy()
    n_vec = bal_k.balance_block(x, fresh, s_vec, *V_RANGE, 3.35, 3.32, True)
    n_sca = bal_k.balance_block(x, fresh, s_sca, *V_RANGE, 3.35, 3.32, False)
    assert_array_equal(s_vec, s_sca)
    assert n_vec == n_sca == int(s_sca.sum())
