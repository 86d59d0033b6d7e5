# cython: language_level=3
"""Passive balancing targets per cell, and the PACK bypass decisions (shared/seeds/001_…).

Balancing: a valid cell bleeds when it is more than `on_mv` above its cluster's lowest cell (and at
least `v_min_balance`, because on the flat LFP plateau a voltage difference says little about charge);
it stops when it is back within `off_mv` (hysteresis, off < on). Only clusters whose supervisor allows
balancing in the present state do it; a cell with invalid data never bleeds.

Bypass (when the function is enabled): the BMS takes faulty PACKs out of the string. A PACK is faulty by
the manual's list: over-temperature of poles or cells, low charging / discharging temperature of cells,
over- or under-voltage of cells, temperature-sensor fault, wiring-harness (voltage sampling) fault. The
thresholds are the warning levels of the protection table ("general" alarms), with its hysteresis to
release. Consistency calibration bypasses the highest-SOC PACKs while charging and the lowest-SOC PACKs
while discharging, in the grid/off-grid and direction modes the installer enabled, until the PACK is
back within the release spread. Faulty PACKs go first, then consistency candidates by how far they are
out. No bypass is granted that would take the remaining string voltage below the PCS DC window's
minimum or exceed the per-cluster maximum; a faulty PACK refused for that reason is counted as denied
(protection still acts on the underlying fault).
"""
from libc.stdint cimport uint8_t, int32_t
from libc.math cimport isnan
from libc.string cimport memset

from ems._core.layout cimport *
from ems._core.common cimport dmin, dmax
from ems._core.checks cimport require_c_contiguous, require_len



cdef extern from "block_stats.h" nogil:
    int ems_all_zero(const uint8_t* flags, Py_ssize_t n)
    int32_t ems_balance_block(const double* x, const uint8_t* fresh, uint8_t* state, Py_ssize_t n,
                              double lo, double hi, double on_at, double off_at)
    int32_t ems_balance_block_scalar(const double* x, const uint8_t* fresh, uint8_t* state, Py_ssize_t n,
                                     double lo, double hi, double on_at, double off_at)


cdef void balance_cells(
    Py_ssize_t n_clusters, Py_ssize_t n_cells, Py_ssize_t n_packs, const double* cell_v, const uint8_t* fresh,
    double v_lo, double v_hi, const double* cl_agg_f, const double* pack_f, const uint8_t* cl_flags,
    double on_mv, double off_mv, double v_min_balance, uint8_t* balance, int32_t* count,
) noexcept nogil:
    cdef Py_ssize_t c, p, i, run, per_pack = n_cells // n_packs
    cdef bint skip
    cdef double vmin, on_at, off_at, pack_max
    cdef int32_t n
    for c in range(n_clusters):
        vmin = cl_agg_f[c * AGG_F_COLS + AGG_V_MIN]
        n = 0
        if not cl_flags[c * CL_FLAG_COLS + CLF_BALANCE_ALLOWED] or isnan(vmin):
            memset(balance + c * n_cells, 0, n_cells)
        else:
            on_at = dmax(vmin + on_mv * 1e-3, v_min_balance)
            off_at = vmin + off_mv * 1e-3
            # nothing can change in a pack with no cell bleeding and none above the start threshold;
            # the other packs are processed in runs of neighbours, so the vector blocks stay long
            run = -1
            for p in range(n_packs + 1):
                skip = True
                if p < n_packs:
                    i = c * n_cells + p * per_pack
                    pack_max = pack_f[(c * n_packs + p) * PACK_F_COLS + PACK_V_MAX]
                    skip = not (pack_max > on_at) and ems_all_zero(balance + i, per_pack)
                if not skip and run < 0:
                    run = p
                elif skip and run >= 0:
                    i = c * n_cells + run * per_pack
                    n += ems_balance_block(cell_v + i, fresh + i, balance + i, (p - run) * per_pack,
                                           v_lo, v_hi, on_at, off_at)
                    run = -1
        count[c] = n


cdef inline bint pack_faulty(const double* pf, const int32_t* pi, double pole_t, bint charging,
                             bint was, const double* bp) noexcept nogil:
    # `was`: already bypassed for a fault; release only past the hysteresis
    cdef double hv = bp[BP_V_HYST] if was else 0.0
    cdef double ht = bp[BP_T_HYST] if was else 0.0
    cdef double ot = bp[BP_CELL_OT_CHG_DEGC] if charging else bp[BP_CELL_OT_DCHG_DEGC]
    cdef double lt = bp[BP_CELL_LT_CHG_DEGC] if charging else bp[BP_CELL_LT_DCHG_DEGC]
    if pi[PACK_V_INVALID] > 0 or pi[PACK_T_INVALID] > 0:
        return True
    if pf[PACK_V_MAX] > bp[BP_CELL_OV_V] - hv or pf[PACK_V_MIN] < bp[BP_CELL_UV_V] + hv:
        return True
    if pf[PACK_T_MAX] > ot - ht or pf[PACK_T_MIN] < lt + ht:
        return True
    if pole_t > bp[BP_POLE_OT_DEGC] - ht:    # NaN: pole temperature not fitted on this PACK
        return True
    return False


cdef void decide_bypass(
    Py_ssize_t n_clusters, Py_ssize_t n_packs, Py_ssize_t cells_per_pack,
    const double* pack_f, const int32_t* pack_i, const double* pack_pole_t, const double* soc_pct,
    const double* cl_in, const double* bp, uint8_t* bypass, int32_t* denied,
) noexcept nogil:
    cdef Py_ssize_t c, p, k, j, n_cand, P = n_packs
    cdef Py_ssize_t cand[MAX_PACKS]
    cdef double key[MAX_PACKS]
    cdef double pack_v[MAX_PACKS]
    cdef uint8_t want[MAX_PACKS]
    cdef double i_a, remaining_v, s_min, s_max, spread, kv, v
    cdef bint charging, discharging, consistency, was
    cdef int modes = <int>bp[BP_CONSISTENCY_MODES], mode_bit
    cdef int32_t n_bypassed, max_per = <int32_t>bp[BP_MAX_PER_CLUSTER]
    for c in range(n_clusters):
        denied[c] = 0
        if bp[BP_ENABLED] < 0.5:
            for p in range(P):
                bypass[c * P + p] = BYP_NONE
            continue
        i_a = cl_in[c * CL_IN_COLS + CL_I]
        charging = i_a < -bp[BP_IDLE_A]
        discharging = i_a > bp[BP_IDLE_A]
        mode_bit = (1 if charging else 2) if bp[BP_ON_GRID] >= 0.5 else (4 if charging else 8)
        consistency = (charging or discharging) and (modes & mode_bit) != 0
        s_min = 1e300
        s_max = -1e300
        remaining_v = 0.0
        for p in range(P):
            k = c * P + p
            s_min = dmin(s_min, soc_pct[k])
            s_max = dmax(s_max, soc_pct[k])
            v = pack_f[k * PACK_F_COLS + PACK_V_MEAN]
            pack_v[p] = (v if not isnan(v) else bp[BP_NOMINAL_CELL_V]) * cells_per_pack
            remaining_v += pack_v[p]
        # rank candidates: faulty first (key 1e9), then consistency by distance out of line
        n_cand = 0
        for p in range(P):
            k = c * P + p
            was = bypass[k] == BYP_FAULT
            want[p] = BYP_NONE
            kv = -1.0
            if pack_faulty(pack_f + k * PACK_F_COLS, pack_i + k * PACK_I_COLS, pack_pole_t[k],
                           charging, was, bp):
                want[p] = BYP_FAULT
                kv = 1e9
            elif consistency:
                spread = (soc_pct[k] - s_min) if charging else (s_max - soc_pct[k])
                if spread > bp[BP_SPREAD_ON_PCT] or (bypass[k] == BYP_CONSISTENCY
                                                    and spread > bp[BP_SPREAD_OFF_PCT]):
                    want[p] = BYP_CONSISTENCY
                    kv = spread
            if want[p] != BYP_NONE:
                # insertion into cand/key, descending key, stable for equal keys
                j = n_cand
                while j > 0 and key[j - 1] < kv:
                    cand[j] = cand[j - 1]
                    key[j] = key[j - 1]
                    j -= 1
                cand[j] = p
                key[j] = kv
                n_cand += 1
        for p in range(P):
            bypass[c * P + p] = BYP_NONE
        n_bypassed = 0
        for j in range(n_cand):
            p = cand[j]
            if n_bypassed < max_per and remaining_v - pack_v[p] >= bp[BP_DC_MIN_V]:
                bypass[c * P + p] = want[p]
                remaining_v -= pack_v[p]
                n_bypassed += 1
            elif want[p] == BYP_FAULT:
                denied[c] += 1


def balance(const double[:, ::1] cell_v, const uint8_t[:, ::1] fresh, double v_lo, double v_hi,
            const double[:, ::1] cluster_f, const double[:, :, ::1] pack_f, const uint8_t[:, ::1] cluster_flags,
            double on_mv, double off_mv, double v_min_balance, uint8_t[:, ::1] balancing, int32_t[::1] count):
    """Update the balancing flags (C, N) in place (they are the hysteresis state); count per cluster.

    cluster_f and pack_f are the aggregation results for the same cell data."""
    cdef Py_ssize_t C = cell_v.shape[0], N = cell_v.shape[1], P = pack_f.shape[1]
    if P < 1 or N % P != 0 or pack_f.shape[0] != C or pack_f.shape[2] != PACK_F_COLS:
        raise ValueError(f"pack_f must have shape (C, P, {PACK_F_COLS}) with N a multiple of P")
    require_c_contiguous("fresh", fresh.shape[0], fresh.shape[1], C, N)
    require_c_contiguous("cluster_f", cluster_f.shape[0], cluster_f.shape[1], C, AGG_F_COLS)
    require_c_contiguous("cluster_flags", cluster_flags.shape[0], cluster_flags.shape[1], C, CL_FLAG_COLS)
    require_c_contiguous("balancing", balancing.shape[0], balancing.shape[1], C, N)
    require_len("count", count.shape[0], C)
    if not (0.0 <= off_mv < on_mv):
        raise ValueError(f"balancing needs 0 <= off_mv < on_mv (got off {off_mv}, on {on_mv})")
    if C == 0 or N == 0:
        raise ValueError("balancing needs at least one cluster with one cell")
    with nogil:
        balance_cells(C, N, P, &cell_v[0, 0], &fresh[0, 0], v_lo, v_hi, &cluster_f[0, 0], &pack_f[0, 0, 0],
                      &cluster_flags[0, 0], on_mv, off_mv, v_min_balance, &balancing[0, 0], &count[0])


def bypass(const double[:, :, ::1] pack_f, const int32_t[:, :, ::1] pack_i,
           const double[:, ::1] pack_pole_t, const double[:, ::1] soc_pct, const double[:, ::1] cluster_in,
           Py_ssize_t cells_per_pack, const double[::1] params, uint8_t[:, ::1] decision,
           int32_t[::1] denied):
    """Update the bypass decision (C, P) in place (previous decisions give the hysteresis)."""
    cdef Py_ssize_t C = pack_f.shape[0], P = pack_f.shape[1]
    if P > MAX_PACKS:
        raise ValueError(f"at most {MAX_PACKS} packs per cluster (got {P})")
    if pack_f.shape[2] != PACK_F_COLS or (pack_i.shape[0], pack_i.shape[1], pack_i.shape[2]) != (C, P, PACK_I_COLS):
        raise ValueError("pack_f / pack_i shapes do not match (C, P, cols)")
    require_c_contiguous("pack_pole_t", pack_pole_t.shape[0], pack_pole_t.shape[1], C, P)
    require_c_contiguous("soc_pct", soc_pct.shape[0], soc_pct.shape[1], C, P)
    require_c_contiguous("cluster_in", cluster_in.shape[0], cluster_in.shape[1], C, CL_IN_COLS)
    require_c_contiguous("decision", decision.shape[0], decision.shape[1], C, P)
    require_len("params", params.shape[0], BP_COLS)
    require_len("denied", denied.shape[0], C)
    if C == 0 or P == 0 or cells_per_pack < 1:
        raise ValueError("bypass needs at least one cluster, one pack and one cell per pack")
    with nogil:
        decide_bypass(C, P, cells_per_pack, &pack_f[0, 0, 0], &pack_i[0, 0, 0], &pack_pole_t[0, 0],
                      &soc_pct[0, 0], &cluster_in[0, 0], &params[0], &decision[0, 0], &denied[0])


def balance_block(const double[::1] x, const uint8_t[::1] fresh, uint8_t[::1] state, double v_lo, double v_hi,
                  double on_at, double off_at, bint vector=True):
    """One block of cells through the vector balancing rule or its scalar fallback (for tests)."""
    cdef Py_ssize_t n = x.shape[0]
    require_len("fresh", fresh.shape[0], n)
    require_len("state", state.shape[0], n)
    if n == 0:
        return 0
    if vector:
        return ems_balance_block(&x[0], &fresh[0], &state[0], n, v_lo, v_hi, on_at, off_at)
    return ems_balance_block_scalar(&x[0], &fresh[0], &state[0], n, v_lo, v_hi, on_at, off_at)
