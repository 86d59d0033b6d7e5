import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from ems._core import layout as L
from ems._core import soc as soc_k
from tests import reference as ref

V_NOM = 16 * 3.2


class Counter:
    def __init__(self, C=1, P=2, cap_ah=280.0, soc_pct=50.0):
        self.cap = np.full((C, P), cap_ah)
        self.q = self.cap * soc_pct / 100.0
        self.cl_in = np.zeros((C, L.CL_IN_COLS))
        self.flags = np.zeros((C, L.CL_FLAG_COLS), np.uint8)
        self.pack_f = np.full((C, P, L.PACK_F_COLS), 3.3)
        self.soc = np.zeros((C, P))
        self.out = np.zeros((C, L.SOC_COLS))
        self.anchored = np.zeros(C, np.uint8)
        self.stack = np.zeros(L.SOC_COLS)

    def step(self, current_a, dt_s, eta=0.98):
        self.cl_in[:, L.CL_I] = current_a
        soc_k.count(self.cl_in, self.flags, self.pack_f, self.cap, self.q, dt_s, eta, 3.60, 2.80, 1.0, V_NOM,
                    self.soc, self.out, self.anchored, self.stack)
        return self


def test_discharging_one_hour_at_28_a_removes_ten_percent_of_280_ah():
    c = Counter()
    for _ in range(3600):
        c.step(28.0, 1.0)
    assert c.soc[0, 0] == pytest.approx(40.0, abs=1e-9)
    assert c.out[0, L.SOC_AH_DISCHARGED] == pytest.approx(28.0)


def test_charging_counts_with_the_charge_efficiency():
    c = Counter()
    c.step(-280.0, 360.0, eta=0.95)      # 28 Ah offered, 26.6 Ah stored
    assert c.q[0, 0] == pytest.approx(140.0 + 26.6)
    assert c.out[0, L.SOC_AH_CHARGED] == pytest.approx(28.0)


def test_float64_accumulators_do_not_lose_millisecond_steps():
    c = Counter(soc_pct=50.0)
    for _ in range(100_000):            # 100 s in 1 ms steps at 1 A: 2.8e-7 Ah per step
        c.step(1.0, 0.001)
    assert c.out[0, L.SOC_AH_DISCHARGED] == pytest.approx(100.0 / 3600.0, rel=1e-9)


def test_soc_is_clamped_between_empty_and_full():
    c = Counter(soc_pct=99.0)
    c.step(-1000.0, 3600.0)
    assert c.soc[0].max() == 100.0
    c.step(1000.0, 3600.0 * 2)
    assert c.soc[0].min() == 0.0


def test_a_pack_reaching_full_cell_voltage_while_charging_is_anchored_at_100():
    c = Counter(soc_pct=80.0)
    c.pack_f[0, 1, L.PACK_V_MAX] = 3.62
    c.step(-50.0, 1.0)
    assert c.soc[0, 1] == 100.0
    assert c.soc[0, 0] < 81.0
    assert c.anchored[0] & L.ANCHOR_FULL


def test_full_anchor_is_not_taken_while_discharging():
    c = Counter(soc_pct=80.0)
    c.pack_f[0, 1, L.PACK_V_MAX] = 3.62   # a voltage spike under load is no anchor
    c.step(50.0, 1.0)
    assert c.soc[0, 1] < 80.0
    assert c.anchored[0] == 0


def test_empty_anchor_at_low_cell_voltage():
    c = Counter(soc_pct=12.0)
    c.pack_f[0, 0, L.PACK_V_MIN] = 2.79
    c.step(20.0, 1.0)
    assert c.soc[0, 0] == 0.0 and c.anchored[0] & L.ANCHOR_EMPTY


def test_charge_prohibited_moves_the_fullest_pack_to_100_keeping_differences():
    c = Counter(P=3)
    c.q[0] = c.cap[0] * np.array([0.90, 0.85, 0.80])
    c.flags[0, L.CLF_CHG_PROHIBITED] = 1
    c.step(0.0, 1.0)
    assert_allclose(c.soc[0], [100.0, 95.0, 90.0])
    assert c.out[0, L.SOC_MAX] == 100.0 and c.out[0, L.SOC_MIN] == pytest.approx(90.0)


def test_discharge_prohibited_moves_the_emptiest_pack_to_0():
    c = Counter(P=2)
    c.q[0] = c.cap[0] * np.array([0.10, 0.04])
    c.flags[0, L.CLF_DCHG_PROHIBITED] = 1
    c.step(0.0, 1.0)
    assert_allclose(c.soc[0], [6.0, 0.0], atol=1e-12)


def test_soe_is_limited_by_the_weakest_pack_of_the_string():
    c = Counter(P=2)
    c.q[0] = np.array([140.0, 28.0])
    c.step(0.0, 1.0)
    assert c.out[0, L.SOC_SOE_DCHG_WH] == pytest.approx(28.0 * V_NOM)
    assert c.out[0, L.SOC_SOE_CHG_WH] == pytest.approx(140.0 * V_NOM)
    assert c.out[0, L.SOC_MEAN] == pytest.approx(100 * 168.0 / 560.0)


def test_nan_current_counts_nothing():
    c = Counter()
    c.step(np.nan, 3600.0)
    assert c.soc[0, 0] == 50.0


def test_bad_efficiency_is_refused_and_changes_nothing():
    c = Counter()
    q0 = c.q.copy()
    with pytest.raises(ValueError, match="eta_charge"):
        c.step(-10.0, 1.0, eta=1.5)
    assert_array_equal(c.q, q0)


@given(st.data())
def test_soc_counting_matches_reference(data):
    C, P = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    c = Counter(C, P)
    c.cap[:] = np.array(data.draw(st.lists(st.sampled_from([0.0, 100.0, 280.0, 300.0]), min_size=C * P,
                                           max_size=C * P))).reshape(C, P)
    c.q[:] = c.cap * np.array(data.draw(st.lists(st.floats(0, 1), min_size=C * P, max_size=C * P))).reshape(C, P)
    acc = np.zeros((C, 2))
    q_ref = c.q.copy()
    for _ in range(data.draw(st.integers(1, 6))):
        cur = np.array(data.draw(st.lists(st.one_of(st.floats(-500, 500), st.just(np.nan), st.just(0.0)),
                                          min_size=C, max_size=C)))
        c.pack_f[..., L.PACK_V_MAX] = np.array(data.draw(st.lists(st.sampled_from([3.3, 3.6, 3.7, np.nan]),
                                                                  min_size=C * P, max_size=C * P))).reshape(C, P)
        c.pack_f[..., L.PACK_V_MIN] = np.array(data.draw(st.lists(st.sampled_from([3.2, 2.8, 2.5, np.nan]),
                                                                  min_size=C * P, max_size=C * P))).reshape(C, P)
        c.flags[:, L.CLF_CHG_PROHIBITED] = data.draw(st.lists(st.sampled_from([0, 0, 1]), min_size=C, max_size=C))
        c.flags[:, L.CLF_DCHG_PROHIBITED] = data.draw(st.lists(st.sampled_from([0, 0, 1]), min_size=C, max_size=C))
        dt = data.draw(st.sampled_from([0.01, 1.0, 60.0]))
        c.step(cur, dt)
        c.cl_in[:, L.CL_I] = cur
        q_ref, soc, out, anch, stack, acc = ref.soc_step(c.cl_in, c.flags, c.pack_f, c.cap, q_ref, acc, dt, 0.98,
                                                         3.60, 2.80, 1.0, V_NOM)
        assert_allclose(c.q, q_ref, rtol=1e-12, atol=1e-9)
        assert_allclose(c.soc, soc, rtol=1e-12, atol=1e-9)
        assert_allclose(c.out, out, rtol=1e-12, atol=1e-9)
        assert_array_equal(c.anchored, anch)
        assert_allclose(c.stack, stack, rtol=1e-9, atol=1e-9)
