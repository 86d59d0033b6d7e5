import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from ems._core import arbitrate as arb_k
from ems._core import layout as L
from tests import reference as ref

LE, GE, EQ, TARGET = L.REQ_LE, L.REQ_GE, L.REQ_EQ, L.REQ_TARGET


def arbitrate(requests, charge_limit_w=100e3, discharge_limit_w=100e3):
    K = len(requests)
    kind = np.array([r[0] for r in requests], np.int8)
    value = np.array([r[1] for r in requests], np.float64)
    active = np.ones(K, np.uint8)
    status = np.zeros(K, np.uint8)
    interval = np.zeros(2)
    target = arb_k.arbitrate(kind, value, active, charge_limit_w, discharge_limit_w, status, interval)
    return target, status.tolist(), tuple(interval)


def test_no_request_idles_the_battery():
    assert arbitrate([])[0] == 0.0


def test_requests_narrow_the_interval_in_priority_order():
    target, status, interval = arbitrate([(LE, 30e3), (GE, -20e3), (TARGET, 50e3)])
    assert target == 30e3
    assert status == [L.RS_APPLIED, L.RS_APPLIED, L.RS_CLAMPED]
    assert interval == (30e3, 30e3)


def test_an_infeasible_hard_request_is_dropped_and_reported_never_overriding_a_higher_one():
    # a higher-priority forced charge (≤ −20 kW) beats a lower feed-in rule that wants ≥ 0
    target, status, _ = arbitrate([(LE, -20e3), (GE, 0.0), (TARGET, 10e3)])
    assert status == [L.RS_APPLIED, L.RS_DROPPED, L.RS_CLAMPED]
    assert target == -20e3


def test_the_result_always_stays_inside_the_bms_limits():
    target, status, _ = arbitrate([(EQ, 80e3)], charge_limit_w=10e3, discharge_limit_w=50e3)
    assert status == [L.RS_DROPPED] and target == 0.0
    target, status, _ = arbitrate([(TARGET, 80e3)], charge_limit_w=10e3, discharge_limit_w=50e3)
    assert status == [L.RS_CLAMPED] and target == 50e3


def test_nan_and_unknown_requests_are_dropped():
    _, status, _ = arbitrate([(LE, np.nan), (9, 5.0)])
    assert status == [L.RS_DROPPED, L.RS_DROPPED]


def test_inactive_requests_are_skipped():
    kind = np.array([EQ, TARGET], np.int8)
    value = np.array([5e3, -7e3])
    active = np.array([0, 1], np.uint8)
    status = np.zeros(2, np.uint8)
    t = arb_k.arbitrate(kind, value, active, 1e5, 1e5, status, np.zeros(2))
    assert t == -7e3 and status.tolist() == [L.RS_INACTIVE, L.RS_APPLIED]


def test_an_interval_away_from_zero_picks_its_nearest_point():
    assert arbitrate([(GE, 5e3)])[0] == 5e3
    assert arbitrate([(LE, -5e3)])[0] == -5e3


def test_negative_limits_are_refused():
    with pytest.raises(ValueError, match="limits"):
        arbitrate([], charge_limit_w=-1.0)


def test_ramp_limits_the_step_and_deadband_holds_small_moves():
    assert arb_k.setpoint(50e3, 0.0, 1e5, 1e5, 10e3, 0.5, 0.0) == 5e3
    assert arb_k.setpoint(5.2e3, 5e3, 1e5, 1e5, 0.0, 0.01, 500.0) == 5e3
    assert arb_k.setpoint(0.0, 200.0, 1e5, 1e5, 0.0, 0.01, 500.0) == 0.0, "a move to zero ignores the deadband"


def test_a_shrinking_limit_is_obeyed_at_once_whatever_the_ramp():
    assert arb_k.setpoint(50e3, 50e3, 1e5, 0.0, 1e3, 0.01, 0.0) == 0.0


def test_distribution_follows_available_energy_and_refills_from_capped_units():
    out = np.zeros(3)
    rest = arb_k.distribute(90e3, np.full(3, 50e3), np.array([50e3, 50e3, 20e3]), np.ones(3),
                            np.array([100.0, 100.0, 200.0]), np.ones(3, np.uint8), out, np.zeros(3, np.uint8))
    # by energy unit 2 would get 45 kW, but it is capped at 20 kW; the rest splits evenly
    assert_allclose(out, [35e3, 35e3, 20e3])
    assert rest == pytest.approx(0.0)


def test_charging_is_shared_by_room_to_absorb_and_offline_units_get_nothing():
    out = np.zeros(3)
    rest = arb_k.distribute(-30e3, np.full(3, 50e3), np.full(3, 50e3), np.array([100.0, 200.0, 300.0]),
                            np.ones(3), np.array([1, 1, 0], np.uint8), out, np.zeros(3, np.uint8))
    assert_allclose(out, [-10e3, -20e3, 0.0])
    assert rest == pytest.approx(0.0)


def test_power_no_unit_can_take_is_returned():
    out = np.zeros(2)
    rest = arb_k.distribute(150e3, np.full(2, 50e3), np.full(2, 50e3), np.ones(2), np.ones(2),
                            np.ones(2, np.uint8), out, np.zeros(2, np.uint8))
    assert_allclose(out, [50e3, 50e3])
    assert rest == pytest.approx(50e3)


def test_distribution_over_a_thousand_parallel_units():
    M = 1000
    rng = np.random.default_rng(3)
    cap = rng.uniform(10e3, 100e3, M)
    e = rng.uniform(0, 500e3, M)
    out = np.zeros(M)
    rest = arb_k.distribute(30e6, cap, cap, e, e, np.ones(M, np.uint8), out, np.zeros(M, np.uint8))
    assert out.sum() + rest == pytest.approx(30e6)
    assert (out <= cap + 1e-6).all()


request = st.tuples(st.sampled_from([LE, GE, EQ, TARGET, 7]),
                    st.one_of(st.floats(-2e5, 2e5), st.sampled_from([0.0, np.nan, 1e5, -1e5])),
                    st.booleans())


@given(st.lists(request, max_size=12), st.floats(0, 2e5), st.floats(0, 2e5))
def test_arbitration_matches_reference(reqs, chg, dchg):
    kind = np.array([r[0] for r in reqs], np.int8)
    value = np.array([r[1] for r in reqs], np.float64)
    active = np.array([r[2] for r in reqs], np.uint8)
    status = np.zeros(len(reqs), np.uint8)
    interval = np.zeros(2)
    t = arb_k.arbitrate(kind, value, active, chg, dchg, status, interval)
    want_t, want_status, want_interval = ref.arbitrate(kind, value, active, chg, dchg)
    assert t == want_t
    assert_array_equal(status, want_status)
    assert tuple(interval) == want_interval
    assert -chg <= t <= dchg


@given(st.floats(-2e5, 2e5), st.one_of(st.floats(-2e5, 2e5), st.just(np.nan)), st.floats(0, 2e5), st.floats(0, 2e5),
       st.floats(0, 1e5), st.sampled_from([0.001, 0.01, 1.0]), st.floats(0, 1e3))
def test_setpoint_matches_reference(target, prev, chg, dchg, ramp, dt, deadband):
    got = arb_k.setpoint(target, prev, chg, dchg, ramp, dt, deadband)
    assert got == ref.setpoint(target, prev, chg, dchg, ramp, dt, deadband)
    assert -chg <= got <= dchg


@given(st.data())
def test_distribution_matches_reference(data):
    M = data.draw(st.integers(1, 12))
    f = st.one_of(st.floats(0, 1e5), st.just(0.0))

    def vec(s):
        return np.array(data.draw(st.lists(s, min_size=M, max_size=M)), np.float64)

    chg, dchg, ec, ed = vec(f), vec(f), vec(f), vec(f)
    online = vec(st.sampled_from([0, 1])).astype(np.uint8)
    total = data.draw(st.one_of(st.floats(-1e6, 1e6), st.just(0.0)))
    out = np.zeros(M)
    rest = arb_k.distribute(total, chg, dchg, ec, ed, online, out, np.zeros(M, np.uint8))
    want, want_rest = ref.distribute(total, chg, dchg, ec, ed, online)
    assert_allclose(out, want, rtol=1e-9, atol=1e-6)
    assert rest == pytest.approx(want_rest, rel=1e-9, abs=1e-6)
    assert out.sum() + rest == pytest.approx(total, rel=1e-9, abs=1e-6)
