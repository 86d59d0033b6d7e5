# cython: language_level=3
"""Arbitration of power requests, the setpoint ramp, and distribution over parallel units.

Requests are bounds on battery power (W, > 0 discharging) in priority order, highest first. They narrow
the feasible interval that starts as the protection/BMS limits [−charge limit, +discharge limit]:
`LE v` lowers the top, `GE v` raises the bottom, `EQ v` pins both; a hard request that does not meet the
interval (or is NaN, or of an unknown kind) is dropped with status RS_DROPPED and the interval stays as
it was, so it can never push the result outside the limits. `TARGET v` is a strategy's wish: it is
clamped into what is still feasible (RS_CLAMPED when it moved) and pins the interval there. The
result is the point of the final interval nearest to zero: with no request, the battery idles.

The setpoint then moves toward that target by at most ramp × dt, ignores moves smaller than the
deadband (except a move to exactly zero), and is finally clamped into the hard limits: a limit that
shrinks (a pending trip) is obeyed at once, whatever the ramp.

Distribution shares a total over units in proportion to the energy each can still deliver (discharge)
or absorb (charge), capped by each unit's limit; what a capped unit cannot take is shared again among
the others (water-filling). What no unit can take is returned, never silently lost.
"""
from libc.stdint cimport uint8_t, int8_t
from libc.math cimport isnan, fabs

from ems._core.layout cimport *
from ems._core.common cimport dmin, dmax, clamp
from ems._core.checks cimport require_len


cdef double narrow_requests(
    Py_ssize_t n_requests, const int8_t* kind, const double* value_w, const uint8_t* active,
    double lo_w, double hi_w, uint8_t* status, double* interval,
) noexcept nogil:
    cdef Py_ssize_t k
    cdef double v, lo = lo_w, hi = hi_w, c
    cdef int8_t kd
    for k in range(n_requests):
        if not active[k]:
            status[k] = RS_INACTIVE
            continue
        v = value_w[k]
        kd = kind[k]
        if isnan(v):
            status[k] = RS_DROPPED
        elif kd == REQ_LE:
            if v < lo:
                status[k] = RS_DROPPED
            else:
                hi = dmin(hi, v)
                status[k] = RS_APPLIED
        elif kd == REQ_GE:
            if v > hi:
                status[k] = RS_DROPPED
            else:
                lo = dmax(lo, v)
                status[k] = RS_APPLIED
        elif kd == REQ_EQ:
            if v < lo or v > hi:
                status[k] = RS_DROPPED
            else:
                lo = v
                hi = v
                status[k] = RS_APPLIED
        elif kd == REQ_TARGET:
            c = clamp(v, lo, hi)
            status[k] = RS_APPLIED if c == v else RS_CLAMPED
            lo = c
            hi = c
        else:
            status[k] = RS_DROPPED
    interval[0] = lo
    interval[1] = hi
    if lo > 0.0:
        return lo
    if hi < 0.0:
        return hi
    return 0.0


cdef double next_setpoint(
    double target_w, double prev_w, double lo_w, double hi_w, double ramp_w_per_s, double dt_s,
    double deadband_w,
) noexcept nogil:
    cdef double t, step
    if isnan(prev_w):
        prev_w = 0.0
    if isnan(target_w):
        target_w = 0.0
    t = target_w
    if target_w != 0.0 and fabs(target_w - prev_w) < deadband_w:
        t = prev_w
    if ramp_w_per_s > 0.0:
        step = ramp_w_per_s * dt_s
        t = clamp(t, prev_w - step, prev_w + step)
    return clamp(t, lo_w, hi_w)


cdef double distribute_power(
    Py_ssize_t n_units, double total_w, const double* chg_max_w, const double* dchg_max_w,
    const double* e_chg_wh, const double* e_dchg_wh, const uint8_t* online, double* out_w,
    uint8_t* work,
) noexcept nogil:
    cdef Py_ssize_t m
    cdef double need, wsum, share, cap_m, given = 0.0, sign
    cdef const double* cap
    cdef const double* w
    cdef bint saturated_any
    for m in range(n_units):
        out_w[m] = 0.0
    if isnan(total_w) or total_w == 0.0:
        return 0.0 if not isnan(total_w) else total_w
    if total_w > 0.0:
        cap = dchg_max_w
        w = e_dchg_wh
        sign = 1.0
    else:
        cap = chg_max_w
        w = e_chg_wh
        sign = -1.0
    need = fabs(total_w)
    for m in range(n_units):
        work[m] = 1 if (online[m] and cap[m] > 0.0 and w[m] > 0.0) else 0
    while need > 1e-9:
        wsum = 0.0
        for m in range(n_units):
            if work[m]:
                wsum += w[m]
        if wsum <= 0.0:
            break
        saturated_any = False
        for m in range(n_units):
            if work[m] and out_w[m] + need * w[m] / wsum >= cap[m]:
                saturated_any = True
                break
        if saturated_any:
            # give every unit that would overflow its full limit, then share the rest again
            share = need
            for m in range(n_units):
                if work[m] and out_w[m] + share * w[m] / wsum >= cap[m]:
                    need -= cap[m] - out_w[m]
                    out_w[m] = cap[m]
                    work[m] = 0
        else:
            for m in range(n_units):
                if work[m]:
                    out_w[m] += need * w[m] / wsum
            need = 0.0
    for m in range(n_units):
        given += out_w[m]
        out_w[m] *= sign
    return sign * (fabs(total_w) - given)


def arbitrate(const int8_t[::1] kind, const double[::1] value_w, const uint8_t[::1] active,
              double charge_limit_w, double discharge_limit_w, uint8_t[::1] status, double[::1] interval):
    """Narrow [−charge_limit_w, +discharge_limit_w] by the requests in priority order.

    Returns the target power (W); writes each request's status and the final interval [lo, hi].
    """
    cdef Py_ssize_t K = kind.shape[0]
    cdef double r
    require_len("value_w", value_w.shape[0], K)
    require_len("active", active.shape[0], K)
    require_len("status", status.shape[0], K)
    require_len("interval", interval.shape[0], 2)
    if not (charge_limit_w >= 0.0 and discharge_limit_w >= 0.0):
        raise ValueError(f"limits must be >= 0 W (got charge {charge_limit_w}, discharge {discharge_limit_w})")
    with nogil:
        r = narrow_requests(K, &kind[0] if K else NULL, &value_w[0] if K else NULL,
                            &active[0] if K else NULL, -charge_limit_w, discharge_limit_w,
                            &status[0] if K else NULL, &interval[0])
    return r


def setpoint(double target_w, double prev_w, double charge_limit_w, double discharge_limit_w,
             double ramp_w_per_s, double dt_s, double deadband_w):
    """Next PCS setpoint (W) from the target: deadband, ramp, then the hard limits."""
    if not (charge_limit_w >= 0.0 and discharge_limit_w >= 0.0):
        raise ValueError(f"limits must be >= 0 W (got charge {charge_limit_w}, discharge {discharge_limit_w})")
    return next_setpoint(target_w, prev_w, -charge_limit_w, discharge_limit_w, ramp_w_per_s, dt_s,
                         deadband_w)


def distribute(double total_w, const double[::1] charge_max_w, const double[::1] discharge_max_w,
               const double[::1] e_charge_wh, const double[::1] e_discharge_wh, const uint8_t[::1] online,
               double[::1] out_w, uint8_t[::1] work):
    """Share total_w over M units into out_w; returns the power no unit could take (W)."""
    cdef Py_ssize_t M = out_w.shape[0]
    cdef double r
    for name, arr in (("charge_max_w", charge_max_w), ("discharge_max_w", discharge_max_w),
                      ("e_charge_wh", e_charge_wh), ("e_discharge_wh", e_discharge_wh),
                      ("online", online), ("work", work)):
        require_len(name, arr.shape[0], M)
    if M == 0:
        raise ValueError("distribution needs at least one unit")
    with nogil:
        r = distribute_power(M, total_w, &charge_max_w[0], &discharge_max_w[0], &e_charge_wh[0],
                             &e_discharge_wh[0], &online[0], &out_w[0], &work[0])
    return r
