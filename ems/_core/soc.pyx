# cython: language_level=3
"""SOC/SOE counting per pack and cluster: the machinery that SOC estimation builds on.

Packs in a cluster are in series and carry the cluster current. Each pack keeps its charge q_ah
(float64, the state) against its own capacity: discharging removes I·dt, charging adds η·|I|·dt
(charge efficiency), and q is clamped to [0, capacity]. A NaN current counts nothing (the current-sensor
row of the protection table raises the fault).

Anchors reset the counting where the battery itself says where it is:
- full: a pack whose highest valid cell reaches v_full while not discharging is set to 100 %; when the
  BMS reports charge prohibited, the fullest pack is taken as full and all packs of the cluster move up
  by the same amount, keeping their differences.
- empty: likewise at v_empty (lowest cell) or discharge prohibited, down to 0 %.

SOE: the series string can deliver only until its weakest pack is empty, and absorb only until its
fullest pack is full, so SOE_dchg = min(q) × nominal cluster voltage, SOE_chg = min(capacity − q) × V.
"""
from libc.stdint cimport uint8_t
from libc.math cimport isnan

from ems._core.layout cimport *
from ems._core.common cimport dmin, dmax, clamp
from ems._core.checks cimport require_c_contiguous, require_len


cdef void count_soc(
    Py_ssize_t n_clusters, Py_ssize_t n_packs, const double* cl_in, const uint8_t* cl_flags,
    const double* pack_f, const double* cap_ah, double* q_ah, double dt_s, double eta_charge,
    double v_full, double v_empty, double idle_a, double cluster_nominal_v,
    double* soc_pct, double* out, uint8_t* anchored, double* stack_out,
) noexcept nogil:
    cdef Py_ssize_t c, p, k, P = n_packs
    cdef double i_a, dq, cap, q, s, s_min, s_max, q_sum, cap_sum, room_min, q_min, shift
    cdef double stk_q = 0.0, stk_cap = 0.0, stk_dchg = 0.0, stk_chg = 0.0
    cdef double stk_min = 1e300, stk_max = -1e300
    cdef uint8_t a
    cdef double* o
    for c in range(n_clusters):
        i_a = cl_in[c * CL_IN_COLS + CL_I]
        dq = 0.0
        if not isnan(i_a):
            if i_a > 0.0:
                dq = -i_a * dt_s / 3600.0
            else:
                dq = -i_a * eta_charge * dt_s / 3600.0
            o = out + c * SOC_COLS
            if i_a > 0.0:
                o[SOC_AH_DISCHARGED] += i_a * dt_s / 3600.0
            else:
                o[SOC_AH_CHARGED] += -i_a * dt_s / 3600.0
        a = 0
        for p in range(P):
            k = c * P + p
            cap = cap_ah[k]
            q = clamp(q_ah[k] + dq, 0.0, cap)
            # voltage anchors per pack (false for NaN pack statistics)
            if pack_f[k * PACK_F_COLS + PACK_V_MAX] >= v_full and not (i_a > idle_a):
                q = cap
                a |= ANCHOR_FULL
            elif pack_f[k * PACK_F_COLS + PACK_V_MIN] <= v_empty and not (i_a < -idle_a):
                q = 0.0
                a |= ANCHOR_EMPTY
            q_ah[k] = q
        # BMS flags anchor the cluster: its fullest pack is full / its emptiest pack is empty
        if cl_flags[c * CL_FLAG_COLS + CLF_CHG_PROHIBITED]:
            shift = 1.0
            for p in range(P):
                k = c * P + p
                if cap_ah[k] > 0.0:
                    shift = dmin(shift, 1.0 - q_ah[k] / cap_ah[k])
            if shift > 0.0:
                for p in range(P):
                    k = c * P + p
                    q_ah[k] = clamp(q_ah[k] + shift * cap_ah[k], 0.0, cap_ah[k])
            a |= ANCHOR_FULL
        elif cl_flags[c * CL_FLAG_COLS + CLF_DCHG_PROHIBITED]:
            shift = 1.0
            for p in range(P):
                k = c * P + p
                if cap_ah[k] > 0.0:
                    shift = dmin(shift, q_ah[k] / cap_ah[k])
            if shift > 0.0:
                for p in range(P):
                    k = c * P + p
                    q_ah[k] = clamp(q_ah[k] - shift * cap_ah[k], 0.0, cap_ah[k])
            a |= ANCHOR_EMPTY
        anchored[c] = a

        s_min = 1e300
        s_max = -1e300
        q_sum = 0.0
        cap_sum = 0.0
        q_min = 1e300
        room_min = 1e300
        for p in range(P):
            k = c * P + p
            cap = cap_ah[k]
            q = q_ah[k]
            s = 100.0 * q / cap if cap > 0.0 else 0.0
            soc_pct[k] = s
            s_min = dmin(s_min, s)
            s_max = dmax(s_max, s)
            q_sum += q
            cap_sum += cap
            q_min = dmin(q_min, q)
            room_min = dmin(room_min, cap - q)
        o = out + c * SOC_COLS
        o[SOC_MIN] = s_min
        o[SOC_MAX] = s_max
        o[SOC_MEAN] = 100.0 * q_sum / cap_sum if cap_sum > 0.0 else 0.0
        o[SOC_SOE_DCHG_WH] = q_min * cluster_nominal_v
        o[SOC_SOE_CHG_WH] = room_min * cluster_nominal_v
        stk_q += q_sum
        stk_cap += cap_sum
        stk_dchg += o[SOC_SOE_DCHG_WH]
        stk_chg += o[SOC_SOE_CHG_WH]
        stk_min = dmin(stk_min, s_min)
        stk_max = dmax(stk_max, s_max)
    stack_out[SOC_MIN] = stk_min
    stack_out[SOC_MAX] = stk_max
    stack_out[SOC_MEAN] = 100.0 * stk_q / stk_cap if stk_cap > 0.0 else 0.0
    stack_out[SOC_SOE_DCHG_WH] = stk_dchg
    stack_out[SOC_SOE_CHG_WH] = stk_chg
    stack_out[SOC_AH_CHARGED] = 0.0
    stack_out[SOC_AH_DISCHARGED] = 0.0
    for c in range(n_clusters):
        stack_out[SOC_AH_CHARGED] += out[c * SOC_COLS + SOC_AH_CHARGED]
        stack_out[SOC_AH_DISCHARGED] += out[c * SOC_COLS + SOC_AH_DISCHARGED]


def count(const double[:, ::1] cluster_in, const uint8_t[:, ::1] cluster_flags,
          const double[:, :, ::1] pack_f, const double[:, ::1] capacity_ah, double[:, ::1] charge_ah,
          double dt_s, double eta_charge, double v_full, double v_empty, double idle_a,
          double cluster_nominal_v, double[:, ::1] soc_pct, double[:, ::1] out, uint8_t[::1] anchored,
          double[::1] stack_out):
    """Count one step of dt_s seconds. charge_ah (C, P) is the state; out (C, SOC_COLS) keeps the
    throughput accumulators between calls, so it is state too."""
    cdef Py_ssize_t C = cluster_in.shape[0], P = capacity_ah.shape[1]
    require_c_contiguous("cluster_in", C, cluster_in.shape[1], C, CL_IN_COLS)
    require_c_contiguous("cluster_flags", cluster_flags.shape[0], cluster_flags.shape[1], C, CL_FLAG_COLS)
    if (pack_f.shape[0], pack_f.shape[1], pack_f.shape[2]) != (C, P, PACK_F_COLS):
        raise ValueError(f"pack_f must have shape {(C, P, PACK_F_COLS)}")
    require_c_contiguous("capacity_ah", capacity_ah.shape[0], P, C, P)
    require_c_contiguous("charge_ah", charge_ah.shape[0], charge_ah.shape[1], C, P)
    require_c_contiguous("soc_pct", soc_pct.shape[0], soc_pct.shape[1], C, P)
    require_c_contiguous("out", out.shape[0], out.shape[1], C, SOC_COLS)
    require_len("anchored", anchored.shape[0], C)
    require_len("stack_out", stack_out.shape[0], SOC_COLS)
    if C == 0 or P == 0:
        raise ValueError("SOC counting needs at least one cluster with one pack")
    if not (dt_s >= 0.0) or not (0.0 < eta_charge <= 1.0):
        raise ValueError(f"dt_s must be >= 0 (got {dt_s}) and eta_charge in (0, 1] (got {eta_charge})")
    with nogil:
        count_soc(C, P, &cluster_in[0, 0], &cluster_flags[0, 0], &pack_f[0, 0, 0], &capacity_ah[0, 0],
                  &charge_ah[0, 0], dt_s, eta_charge, v_full, v_empty, idle_a, cluster_nominal_v,
                  &soc_pct[0, 0], &out[0, 0], &anchored[0], &stack_out[0])
