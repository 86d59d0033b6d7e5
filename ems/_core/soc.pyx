# cython: language_level=3
"""SOC estimation per cell, rolled up to pack, cluster and stack, with an uncertainty bound.

Every tick (cheap, O(clusters)): the cluster current is counted into per-cluster accumulators, and the
rest timer runs. Every EP_STEP_S (the cell step, O(cells), about once a second like the BMS's cell
frames): each cell's SOC moves by the counted charge over its PACK's capacity, its sigma grows, and the
anchors that apply correct it:

- full: a cell at v_full (less two voltage sigmas: noise) while charging at or below the taper current (the
  end of CV) or at rest is at 100 %; when the BMS reports charge prohibited, the cluster's highest cell is full and the other
  cells move with it (keeping their differences). Empty likewise at v_empty / discharge prohibited.
- OCV: once per rest, when the cell voltages have relaxed: at least EP_REST_S at |I| <= idle current, and
  the cluster's mean cell voltage settling slower than EP_RELAX_RATE (a least-squares line over the rest
  with exponential forgetting, EP_RELAX_TAU_S: the voltage's own settling rate, not a fixed time). The
  cell's voltage is taken with the cluster's common-mode noise removed (the cell's deviation from the
  mean, plus the fitted mean). The update is made only where the curve beats the noise at that SOC:
  the SOC interval that the voltage ± 2 sigma (noise, table, hysteresis, the relaxation still to come)
  maps to must be narrow (sigma <= EP_OCV_MAX_SIG) - on LFP's flat middle 1 mV is ~1 % SOC, and near the
  edge of a plateau a linearised slope would claim far more than the curve says. Then a scalar
  iterated-Kalman update, weighted by the same measurement variance.
- knee (EP_KNEE = 1, the Kalman-type filter under load): the same update while current flows, with the
  voltage corrected by R0·I and R0·I added to the measurement error, on the very steep ends only.

Hysteresis is one state per cluster (Plett's one-state model): it moves toward +1 with charge and -1 with
discharge, e-folding every EP_HYST_AH_FRAC of capacity; the OCV a cell shows is ocv(s) + h × hyst(s), where
hyst is the half-width on the same grid as the OCV table (it varies along the curve: LFP's is wider at low
SOC, where a fixed width would be off by about as much as the curve is informative). It is looked up at the
SOC the voltage says, not at the prior, which may be far off.

Sigma (1 standard deviation, fraction) grows with what counting cannot know: the current sensor's gain
error (SE_GAIN_ERR: the datasheet's until SOH's capacity, learned from the sensor's own readings, has
absorbed it) and the capacity's error (SE_CAP_ERR: the configured one until SOH knows better; independent, so
their root sum of squares) on the net charge moved since the cluster's last anchor, the offset's
remaining error over the time a current was counted (nothing is counted in the zero deadband, so there
the offset adds nothing), and the rated current over any time the current was unknown (NaN). Those
errors are systematic, so sigma grows linearly, not as a random walk. The bound reported is
EP_BOUND_K × sigma. The current is counted less SE_OFFSET_A, the offset SOH learns, and a current within
the zero deadband EP_ZERO_A counts as zero (BMS practice: at rest the sensor shows only its offset).

Anchors are also reported per cluster for SOH: the SOC an anchor measured (mean of the anchored cells),
its variance and the net counted charge at that moment (SE_ANCHOR_*). A current step of at least
EP_R_STEP_A between two cell steps at most 2 s apart gives a resistance sample (SE_R_*).
"""
from libc.stdint cimport uint8_t, int32_t
from libc.math cimport isnan, fabs, exp, sqrt, NAN

from ems._core.layout cimport *
from ems._core.common cimport dmin, dmax, clamp
from ems._core.checks cimport require_c_contiguous, require_len

cdef double R_PAIR_MAX_S = 2.0      # a resistance sample needs its two cell steps at most this far apart
cdef double MIN_SLOPE_V = 1e-6      # slope floor in the Kalman update (V per unit SOC)
cdef double RELAX_TAIL_S = 3600.0   # the relaxation still to come at the update is taken as the settling rate
                                    # times this (an exponential tail of up to 1 h)


cdef inline double ocv_at(const double* ocv, Py_ssize_t m, double s, double* slope) noexcept nogil:
    """OCV (V) at SOC s (fraction) on the uniform table ocv[0..m-1] over 0..1; slope in V per unit SOC."""
    cdef double x = clamp(s, 0.0, 1.0) * (m - 1)
    cdef Py_ssize_t j = <Py_ssize_t>x
    if j >= m - 1:
        j = m - 2
    slope[0] = (ocv[j + 1] - ocv[j]) * (m - 1)
    return ocv[j] + (x - j) * (ocv[j + 1] - ocv[j])


cdef inline double soc_at(const double* ocv, Py_ssize_t m, double v) noexcept nogil:
    """SOC (fraction) whose OCV is v, by bisection on the strictly increasing table."""
    cdef Py_ssize_t lo = 0, hi = m - 1, mid
    if v <= ocv[0]:
        return 0.0
    if v >= ocv[m - 1]:
        return 1.0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ocv[mid] <= v:
            lo = mid
        else:
            hi = mid
    return (lo + (v - ocv[lo]) / (ocv[hi] - ocv[lo])) / (m - 1)


cdef inline double table_at(const double* a, Py_ssize_t m, double s) noexcept nogil:
    """Linear interpolation of a[0..m-1] on the uniform grid over SOC 0..1."""
    cdef double x = clamp(s, 0.0, 1.0) * (m - 1)
    cdef Py_ssize_t j = <Py_ssize_t>x
    if j >= m - 1:
        j = m - 2
    return a[j] + (x - j) * (a[j + 1] - a[j])


cdef inline double kalman_update(const double* ocv, Py_ssize_t m, double s, double var, double v_ocv,
                                 double r_var, double s_meas, double* var_out) noexcept nogil:
    """Scalar iterated extended Kalman update of SOC s (variance var) with the measured OCV v_ocv (variance
    r_var). The iteration starts where the curve says (s_meas: linearised there, the first step is a weighted
    mean of prior and measurement) and takes three Gauss-Newton steps: the curve bends sharply where it is
    informative, and a linearisation at a far-off prior would overshoot."""
    cdef double xi = s_meas, h = 0.0, o, k = 0.0
    cdef int it
    for it in range(3):
        o = ocv_at(ocv, m, xi, &h)
        h = dmax(h, MIN_SLOPE_V)
        k = var * h / (h * h * var + r_var)
        xi = clamp(s + k * (v_ocv - o - h * (s - xi)), 0.0, 1.0)
    var_out[0] = dmax((1.0 - k * h) * var, 0.0)
    return xi


cdef inline void reset_settling(double* se) noexcept nogil:
    se[SE_RX_S0] = 0.0
    se[SE_RX_S1] = 0.0
    se[SE_RX_S2] = 0.0
    se[SE_RX_SY] = 0.0
    se[SE_RX_SXY] = 0.0
    se[SE_RX_RATE] = NAN


cdef inline double settle(double* se, double v, double dt, double tau, double* v_fit) noexcept nogil:
    """Add the mean cell voltage v (dt after the last sample) to the rest's settling fit: a least-squares
    line with exponential forgetting (time constant tau), x relative to the newest sample so the sums stay
    small. Returns the slope (V/s, NaN until a tau of rest is in it) and the line's value now (v_fit)."""
    cdef double lam = exp(-dt / tau), det, b
    se[SE_RX_S2] = lam * (se[SE_RX_S2] - 2.0 * dt * se[SE_RX_S1] + dt * dt * se[SE_RX_S0])
    se[SE_RX_S1] = lam * (se[SE_RX_S1] - dt * se[SE_RX_S0])
    se[SE_RX_SXY] = lam * (se[SE_RX_SXY] - dt * se[SE_RX_SY])
    se[SE_RX_S0] = lam * se[SE_RX_S0] + 1.0
    se[SE_RX_SY] = lam * se[SE_RX_SY] + v
    det = se[SE_RX_S0] * se[SE_RX_S2] - se[SE_RX_S1] * se[SE_RX_S1]
    v_fit[0] = v
    if se[SE_REST_S] < tau or not (det > 0.0):
        return NAN
    b = (se[SE_RX_S0] * se[SE_RX_SXY] - se[SE_RX_S1] * se[SE_RX_SY]) / det
    v_fit[0] = (se[SE_RX_SY] - b * se[SE_RX_S1]) / se[SE_RX_S0]
    return b


cdef inline void move_cluster_to(double* soc, double* sig, Py_ssize_t n, Py_ssize_t anchor, double target,
                                 double sig_anchor, double sig_shift, double sig_min) noexcept nogil:
    """The anchored cell goes to target (0 or 1), every other cell of the cluster by the same SOC."""
    cdef double shift = target - soc[anchor]
    cdef Py_ssize_t k
    for k in range(n):
        soc[k] = clamp(soc[k] + shift, 0.0, 1.0)
        sig[k] = dmax(dmin(sig[k], sig_shift), sig_min)
    soc[anchor] = target
    sig[anchor] = dmax(sig_anchor, sig_min)


cdef void step_cells(
    Py_ssize_t c, Py_ssize_t N, Py_ssize_t P, const double* cell_v, const double* cell_t, const uint8_t* fresh,
    const double* cl_in, const uint8_t* cl_flags, const int32_t* agg_i, const double* agg_f,
    const double* cap_ah, const double* tp, const double* ep, const double* ocv, const double* hyst,
    Py_ssize_t m, double hyst_max, double* cell_soc, double* cell_sig, double* se, uint8_t* anchored,
) noexcept nogil:
    cdef Py_ssize_t n_per = N // P, p, j, k, k0 = c * N, mx
    cdef double i_now = cl_in[c * CL_IN_COLS + CL_I]
    cdef double dch = se[SE_PEND_DCHG_AH], ch = se[SE_PEND_CHG_AH]
    cdef double ps = se[SE_PEND_S], pu = se[SE_PEND_UNKNOWN_S]
    cdef double net = dch - tp[TP_ETA_CHARGE] * ch
    cdef double idle = tp[TP_IDLE_A], taper = ep[EP_TAPER_A]
    cdef double rated, cap, inv, dsoc, dsig, s, g, var, v, t, vc, sm, r_var
    cdef double ir_v = 0.0, ir_abs, h = se[SE_HYST], cap_mean = 0.0, hk, hv, r_var_ir
    cdef double n_anch = 0.0, sum_soc = 0.0, sum_var = 0.0, vmean, sig_min = ep[EP_SIG_MIN], band_lo, band_hi
    cdef double v_lo = agg_f[c * AGG_F_COLS + AGG_V_MIN], v_hi = agg_f[c * AGG_F_COLS + AGG_V_MAX], margin
    cdef bint known = not isnan(i_now), resting, knee, look, full_ok, empty_ok, v_ok
    cdef int kinds = 0
    cdef double rate = NAN, v_fit = 0.0, v_cm = 0.0, r_sd, sig_m, relax_v = 0.0
    vmean = agg_f[c * AGG_F_COLS + AGG_V_MEAN]

    cdef double n_old = se[SE_NET_SINCE_AH], n_new = n_old + net
    se[SE_NET_AH] += net + se[SE_OFFSET_A] * ps / 3600.0
    se[SE_NET_SINCE_AH] = n_new
    # hysteresis moves with the throughput of this step (discharge first, then charge)
    for p in range(P):
        cap_mean += cap_ah[c * P + p]
    cap_mean /= P
    hk = ep[EP_HYST_AH_FRAC] * cap_mean
    if hk > 0.0:
        if dch > 0.0:
            h = -1.0 + (h + 1.0) * exp(-dch / hk)
        if ch > 0.0:
            h = 1.0 + (h - 1.0) * exp(-ch / hk)
    h = clamp(h, -1.0, 1.0)
    se[SE_HYST] = h

    # the settling of the mean cell voltage at rest (the fit is reset by the tick when the rest ends)
    if known and se[SE_REST_S] > 0.0 and not isnan(vmean):
        rate = settle(se, vmean, ps, ep[EP_RELAX_TAU_S], &v_fit)
        v_cm = v_fit - vmean              # the cluster's common-mode noise, taken out of every cell voltage
        relax_v = fabs(rate) * RELAX_TAIL_S
    se[SE_RX_RATE] = rate
    resting = (known and se[SE_REST_S] >= ep[EP_REST_S] and se[SE_REST_DONE] == 0.0
               and fabs(rate) <= ep[EP_RELAX_RATE])      # False while the rate is NaN
    knee = known and ep[EP_KNEE] > 0.0 and fabs(i_now) > idle
    full_ok = known and i_now <= idle and i_now >= -taper
    empty_ok = known and i_now >= -idle and i_now <= taper
    if known:
        ir_v = i_now * ep[EP_R0_OHM]      # terminal = OCV + h·hyst − I·R0 (I > 0 discharging)
    ir_abs = fabs(ir_v)
    r_var_ir = 0.0 if resting else ir_abs * ir_abs      # under load the I·R0 error adds to the voltage's
    look = resting or knee
    if look and not isnan(v_lo) and not isnan(v_hi):
        # the cluster's lowest and highest valid cell bound every cell's corrected voltage: when neither can be
        # on a steep end, no cell is, and the per-cell checks are skipped (most steps under load)
        band_lo = ep[EP_REST_V_LO] if resting else ep[EP_KNEE_V_LO]
        band_hi = ep[EP_REST_V_HI] if resting else ep[EP_KNEE_V_HI]
        margin = 0.0 if resting else ir_abs
        if (v_lo + v_cm + ir_v - fabs(h) * hyst_max + margin > band_lo
                and v_hi + v_cm + ir_v + fabs(h) * hyst_max - margin < band_hi):
            look = False
    rated = dmax(cl_in[c * CL_IN_COLS + CL_RATED_CHG_A], cl_in[c * CL_IN_COLS + CL_RATED_DCHG_A])

    for p in range(P):
        cap = cap_ah[c * P + p]
        if not (cap > 0.0):
            continue
        inv = 1.0 / cap
        dsoc = net * inv
        # Gain and capacity errors are systematic: their SOC error is proportional to the net charge moved
        # since the anchor (it shrinks again on the way back); the offset's grows with counted time; an unknown
        # current may have moved charge at up to the rated current (1C if no rating).
        # (the gain and the capacity errors are independent: their root sum of squares)
        dsig = (sqrt(se[SE_GAIN_ERR] * se[SE_GAIN_ERR] + se[SE_CAP_ERR] * se[SE_CAP_ERR]) * (fabs(n_new) - fabs(n_old))
                + se[SE_OFFSET_BOUND_A] * se[SE_PEND_COUNTED_S] / 3600.0 + (rated if rated > 0.0 else cap) * pu / 3600.0) * inv
        for j in range(n_per):
            k = k0 + p * n_per + j
            s = clamp(cell_soc[k] - dsoc, 0.0, 1.0)
            g = clamp(cell_sig[k] + dsig, sig_min, 1.0)
            v = cell_v[k]
            v_ok = fresh[k] != 0 and v >= tp[TP_V_LO] and v <= tp[TP_V_HI]
            if resting:
                v = v + v_cm
            if v_ok:
                if full_ok and v >= tp[TP_V_FULL] - 2.0 * ep[EP_SIG_V]:
                    s = 1.0
                    g = ep[EP_SIG_FULL]
                    kinds |= ANCHOR_FULL
                    n_anch += 1.0
                    sum_soc += 1.0
                    sum_var += g * g
                elif empty_ok and v <= tp[TP_V_EMPTY] + 2.0 * ep[EP_SIG_V]:
                    s = 0.0
                    g = ep[EP_SIG_EMPTY]
                    kinds |= ANCHOR_EMPTY
                    n_anch += 1.0
                    sum_var += g * g
                elif look:
                    t = cell_t[k]
                    # the OCV the voltage says; the hysteresis width at the prior SOC is close enough to
                    # decide whether it is on a steep end (a few mV, the bands are wide)
                    vc = v + ir_v - h * table_at(hyst, m, s)
                    # under load the I·R drop may be anywhere from 0 to twice the model's: the voltage must
                    # lie in the steep band for all of them
                    if (t >= tp[TP_T_LO] and t <= tp[TP_T_HI] and t >= ep[EP_T_MIN] and t <= ep[EP_T_MAX]
                            and ((resting and (vc <= ep[EP_REST_V_LO] or vc >= ep[EP_REST_V_HI]))
                                 or (not resting and (vc + ir_abs <= ep[EP_KNEE_V_LO]
                                                      or vc - ir_abs >= ep[EP_KNEE_V_HI])))):
                        # ... but the update takes the width at the SOC the voltage says: the prior may be
                        # far off, and on LFP's low end the width changes by several mV over a few points
                        hv = table_at(hyst, m, soc_at(ocv, m, vc))
                        vc = v + ir_v - h * hv
                        # hysteresis: the state is uncertain away from ±1, and the width is known to ±50 %
                        r_var = (ep[EP_SIG_V] * ep[EP_SIG_V] + (hv * (1.0 - fabs(h))) ** 2 + (0.5 * hv) ** 2
                                 + r_var_ir + (relax_v * relax_v if resting else 0.0))
                        # what the voltage says, through the curve itself: the SOC interval of ± 2 sigma
                        r_sd = sqrt(r_var)
                        sig_m = 0.25 * (soc_at(ocv, m, vc + 2.0 * r_sd) - soc_at(ocv, m, vc - 2.0 * r_sd))
                        if sig_m <= ep[EP_OCV_MAX_SIG]:
                            sm = soc_at(ocv, m, vc)
                            s = kalman_update(ocv, m, s, g * g, vc, r_var, sm, &var)
                            # the errors of repeated voltage updates are correlated (the same table, the
                            # same I·R error): together they know no more than one of them
                            g = dmax(sqrt(var), sig_m)
                            kinds |= ANCHOR_OCV if resting else ANCHOR_KNEE
                            n_anch += 1.0
                            sum_soc += sm
                            sum_var += sig_m * sig_m
            cell_soc[k] = s
            cell_sig[k] = dmax(g, sig_min)

    # the BMS's flags: its highest (lowest) cell is full (empty); the others move by the same SOC
    mx = agg_i[c * AGG_I_COLS + AGG_V_MAX_CELL]
    if cl_flags[c * CL_FLAG_COLS + CLF_CHG_PROHIBITED] and known and i_now <= idle and 0 <= mx < N:
        move_cluster_to(cell_soc + k0, cell_sig + k0, N, mx, 1.0, ep[EP_SIG_FULL], ep[EP_SIG_SHIFT], sig_min)
        kinds |= ANCHOR_FULL
        n_anch = 1.0
        sum_soc = 1.0
        sum_var = ep[EP_SIG_FULL] * ep[EP_SIG_FULL]
    mx = agg_i[c * AGG_I_COLS + AGG_V_MIN_CELL]
    if cl_flags[c * CL_FLAG_COLS + CLF_DCHG_PROHIBITED] and known and i_now >= -idle and 0 <= mx < N:
        move_cluster_to(cell_soc + k0, cell_sig + k0, N, mx, 0.0, ep[EP_SIG_EMPTY], ep[EP_SIG_SHIFT], sig_min)
        kinds |= ANCHOR_EMPTY
        n_anch = 1.0
        sum_soc = 0.0
        sum_var = ep[EP_SIG_EMPTY] * ep[EP_SIG_EMPTY]

    if n_anch > 0.0:
        se[SE_ANCHOR_SEQ] += 1.0
        se[SE_ANCHOR_SOC] = sum_soc / n_anch
        se[SE_ANCHOR_VAR] = sum_var / n_anch
        se[SE_ANCHOR_NET_AH] = se[SE_NET_AH]
        se[SE_NET_SINCE_AH] = 0.0
    anchored[c] = <uint8_t>kinds
    if resting:
        se[SE_REST_DONE] = 1.0
    # resistance from a current step: the mean cell voltage's change over the current's change
    if (known and not isnan(se[SE_PREV_I]) and not isnan(vmean) and not isnan(se[SE_PREV_V])
            and ps <= R_PAIR_MAX_S and fabs(i_now - se[SE_PREV_I]) >= ep[EP_R_STEP_A]):
        v = -(vmean - se[SE_PREV_V]) / (i_now - se[SE_PREV_I])
        if v > 0.0:
            se[SE_R_SEQ] += 1.0
            se[SE_R_OHM] = v
    se[SE_PREV_I] = i_now
    se[SE_PREV_V] = vmean
    se[SE_PEND_DCHG_AH] = 0.0
    se[SE_PEND_CHG_AH] = 0.0
    se[SE_PEND_S] = 0.0
    se[SE_PEND_UNKNOWN_S] = 0.0
    se[SE_PEND_COUNTED_S] = 0.0


cdef void roll_up(
    Py_ssize_t c, Py_ssize_t N, Py_ssize_t P, const double* cap_ah, const double* cell_soc,
    const double* cell_sig, double bound_k, double cluster_nominal_v, double* charge_ah, double* soc_pct,
    double* o,
) noexcept nogil:
    cdef Py_ssize_t n_per = N // P, p, j, k
    cdef double cap, s, sum_s, sum_g, q_sum = 0.0, cap_sum = 0.0, sig_sum = 0.0, g_max = 0.0
    cdef double s_min = 1e300, s_max = -1e300, dchg_ah = 1e300, chg_ah = 1e300
    for p in range(P):
        cap = cap_ah[c * P + p]
        sum_s = 0.0
        sum_g = 0.0
        for j in range(n_per):
            k = c * N + p * n_per + j
            s = cell_soc[k]
            sum_s += s
            sum_g += cell_sig[k]
            g_max = dmax(g_max, cell_sig[k])
            s_min = dmin(s_min, s)
            s_max = dmax(s_max, s)
            dchg_ah = dmin(dchg_ah, s * cap)
            chg_ah = dmin(chg_ah, (1.0 - s) * cap)
        sum_s /= n_per
        soc_pct[c * P + p] = 100.0 * sum_s
        charge_ah[c * P + p] = sum_s * cap
        q_sum += sum_s * cap
        sig_sum += sum_g / n_per * cap
        cap_sum += cap
    o[SOC_MIN] = 100.0 * s_min
    o[SOC_MAX] = 100.0 * s_max
    o[SOC_MEAN] = 100.0 * q_sum / cap_sum if cap_sum > 0.0 else 0.0
    o[SOC_SOE_DCHG_WH] = dmax(dchg_ah, 0.0) * cluster_nominal_v
    o[SOC_SOE_CHG_WH] = dmax(chg_ah, 0.0) * cluster_nominal_v
    o[SOC_BOUND] = dmin(100.0 * bound_k * sig_sum / cap_sum, 100.0) if cap_sum > 0.0 else 100.0
    o[SOC_BOUND_MAX] = dmin(100.0 * bound_k * g_max, 100.0)


cdef void estimate_soc(
    Py_ssize_t C, Py_ssize_t N, Py_ssize_t P, const double* cell_v, const double* cell_t, const uint8_t* fresh,
    const double* cl_in, const uint8_t* cl_flags, const int32_t* agg_i, const double* agg_f,
    const double* cap_ah, const double* tp, const double* ep, const double* ocv, const double* hyst,
    Py_ssize_t m, double* cell_soc, double* cell_sig, double* se, double dt_s,
    double* charge_ah, double* soc_pct, double* out, uint8_t* anchored, double* stack_out,
) noexcept nogil:
    cdef Py_ssize_t c, p
    cdef double i_a, stk_q = 0.0, stk_cap = 0.0, stk_b = 0.0, cap_c
    cdef double* s
    cdef double* o
    cdef bint step = False
    cdef double hyst_max = 0.0
    for c in range(C):
        s = se + c * SE_COLS
        o = out + c * SOC_COLS
        i_a = cl_in[c * CL_IN_COLS + CL_I] - s[SE_OFFSET_A]
        if fabs(i_a) <= ep[EP_ZERO_A]:
            i_a = 0.0              # the zero-current deadband: at rest the sensor's offset is all it shows
        if isnan(i_a):
            s[SE_PEND_UNKNOWN_S] += dt_s
            s[SE_REST_S] = 0.0
            s[SE_REST_DONE] = 0.0
            reset_settling(s)
        else:
            if i_a != 0.0:
                s[SE_PEND_COUNTED_S] += dt_s
            if i_a > 0.0:
                s[SE_PEND_DCHG_AH] += i_a * dt_s / 3600.0
                o[SOC_AH_DISCHARGED] += i_a * dt_s / 3600.0
            else:
                s[SE_PEND_CHG_AH] += -i_a * dt_s / 3600.0
                o[SOC_AH_CHARGED] += -i_a * dt_s / 3600.0
            if fabs(i_a) <= tp[TP_IDLE_A]:
                s[SE_REST_S] += dt_s
            else:
                s[SE_REST_S] = 0.0
                s[SE_REST_DONE] = 0.0
                reset_settling(s)
        s[SE_PEND_S] += dt_s
        if s[SE_PEND_S] >= ep[EP_STEP_S]:
            step = True
    stack_out[SOC_AH_CHARGED] = 0.0
    stack_out[SOC_AH_DISCHARGED] = 0.0
    for c in range(C):
        stack_out[SOC_AH_CHARGED] += out[c * SOC_COLS + SOC_AH_CHARGED]
        stack_out[SOC_AH_DISCHARGED] += out[c * SOC_COLS + SOC_AH_DISCHARGED]
    if not step:
        for c in range(C):
            anchored[c] = 0
        return
    for c in range(m):
        hyst_max = dmax(hyst_max, hyst[c])
    stack_out[SOC_MIN] = 1e300
    stack_out[SOC_MAX] = -1e300
    stack_out[SOC_SOE_DCHG_WH] = 0.0
    stack_out[SOC_SOE_CHG_WH] = 0.0
    stack_out[SOC_BOUND_MAX] = 0.0
    for c in range(C):
        o = out + c * SOC_COLS
        step_cells(c, N, P, cell_v, cell_t, fresh, cl_in, cl_flags, agg_i, agg_f, cap_ah, tp, ep, ocv, hyst,
                   m, hyst_max, cell_soc, cell_sig, se + c * SE_COLS, anchored)
        roll_up(c, N, P, cap_ah, cell_soc, cell_sig, ep[EP_BOUND_K], tp[TP_CLUSTER_NOMINAL_V], charge_ah,
                soc_pct, o)
        cap_c = 0.0
        for p in range(P):
            cap_c += cap_ah[c * P + p]
        stk_q += o[SOC_MEAN] * cap_c
        stk_b += o[SOC_BOUND] * cap_c
        stk_cap += cap_c
        stack_out[SOC_MIN] = dmin(stack_out[SOC_MIN], o[SOC_MIN])
        stack_out[SOC_MAX] = dmax(stack_out[SOC_MAX], o[SOC_MAX])
        stack_out[SOC_SOE_DCHG_WH] += o[SOC_SOE_DCHG_WH]
        stack_out[SOC_SOE_CHG_WH] += o[SOC_SOE_CHG_WH]
        stack_out[SOC_BOUND_MAX] = dmax(stack_out[SOC_BOUND_MAX], o[SOC_BOUND_MAX])
    stack_out[SOC_MEAN] = stk_q / stk_cap if stk_cap > 0.0 else 0.0
    stack_out[SOC_BOUND] = stk_b / stk_cap if stk_cap > 0.0 else 100.0


def step(const double[:, ::1] cell_v, const double[:, ::1] cell_t, const uint8_t[:, ::1] fresh,
         const double[:, ::1] cluster_in, const uint8_t[:, ::1] cluster_flags, const int32_t[:, ::1] agg_i,
         const double[:, ::1] agg_f, const double[:, ::1] capacity_ah, const double[::1] tick_params,
         const double[::1] est_params, const double[::1] ocv_v, const double[::1] hyst_v, double[:, ::1] cell_soc,
         double[:, ::1] cell_sig,
         double[:, ::1] est_state, double dt_s, double[:, ::1] charge_ah, double[:, ::1] soc_pct,
         double[:, ::1] out, uint8_t[::1] anchored, double[::1] stack_out):
    """One call of dt_s seconds, as the tick makes it (the cell step runs when EP_STEP_S has passed).
    ocv_v and hyst_v (the OCV and its hysteresis half-width, V) are on one uniform SOC grid over 0..1.
    State: cell_soc, cell_sig (fractions), est_state, and out's throughput accumulators."""
    cdef Py_ssize_t C = cell_v.shape[0], N = cell_v.shape[1], P = capacity_ah.shape[1], m = ocv_v.shape[0]
    if C == 0 or P == 0 or N == 0 or N % P:
        raise ValueError(f"SOC estimation needs cells in whole packs, got {C}×{N} cells in {P} packs")
    for name, a in (("cell_t", cell_t), ("cell_soc", cell_soc), ("cell_sig", cell_sig)):
        require_c_contiguous(name, a.shape[0], a.shape[1], C, N)
    require_c_contiguous("fresh", fresh.shape[0], fresh.shape[1], C, N)
    require_c_contiguous("cluster_in", cluster_in.shape[0], cluster_in.shape[1], C, CL_IN_COLS)
    require_c_contiguous("cluster_flags", cluster_flags.shape[0], cluster_flags.shape[1], C, CL_FLAG_COLS)
    require_c_contiguous("agg_i", agg_i.shape[0], agg_i.shape[1], C, AGG_I_COLS)
    require_c_contiguous("agg_f", agg_f.shape[0], agg_f.shape[1], C, AGG_F_COLS)
    require_c_contiguous("capacity_ah", capacity_ah.shape[0], P, C, P)
    require_c_contiguous("est_state", est_state.shape[0], est_state.shape[1], C, SE_COLS)
    require_c_contiguous("charge_ah", charge_ah.shape[0], charge_ah.shape[1], C, P)
    require_c_contiguous("soc_pct", soc_pct.shape[0], soc_pct.shape[1], C, P)
    require_c_contiguous("out", out.shape[0], out.shape[1], C, SOC_COLS)
    require_len("tick_params", tick_params.shape[0], TP_COLS)
    require_len("est_params", est_params.shape[0], EP_COLS)
    require_len("anchored", anchored.shape[0], C)
    require_len("stack_out", stack_out.shape[0], SOC_COLS)
    if m < 2:
        raise ValueError("the OCV table needs at least 2 points")
    require_len("hyst_v", hyst_v.shape[0], m)
    if not (dt_s >= 0.0):
        raise ValueError(f"dt_s must be >= 0, got {dt_s}")
    with nogil:
        estimate_soc(C, N, P, &cell_v[0, 0], &cell_t[0, 0], &fresh[0, 0], &cluster_in[0, 0],
                     &cluster_flags[0, 0], &agg_i[0, 0], &agg_f[0, 0], &capacity_ah[0, 0], &tick_params[0],
                     &est_params[0], &ocv_v[0], &hyst_v[0], m, &cell_soc[0, 0], &cell_sig[0, 0], &est_state[0, 0], dt_s,
                     &charge_ah[0, 0], &soc_pct[0, 0], &out[0, 0], &anchored[0], &stack_out[0])
