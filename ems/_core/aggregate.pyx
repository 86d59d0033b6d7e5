# cython: language_level=3
"""Cell aggregation: min/max/mean/spread of cell voltage and temperature per pack, cluster and stack.

A cell's voltage is valid when its data is fresh and the value lies inside the sensor's physical range
[v_lo, v_hi]; the same for temperature. Invalid values (NaN, out of range, stale) are counted and never
enter a mean or an extreme, so one broken sensor cannot poison the statistics; the counts feed the
sensor-fault rows of the protection table. There is no outlier rejection: a plausible cell far from
the others is exactly what protection must see. Ties keep the first cell (lowest index), like argmin.

Speed: a pack whose cells are all fresh, finite and in range (the normal case) is summarised by the
vector block statistics of block_stats.h without a test per cell; any other pack takes the per-cell
path. Extremes are located afterwards by scanning only the pack that holds each one.
"""
from libc.stdint cimport uint8_t, int32_t
from libc.math cimport NAN, INFINITY, isnan

from ems._core.layout cimport *
from ems._core.checks cimport require_c_contiguous

cdef extern from "block_stats.h" nogil:
    const char* EMS_SIMD_NAME
    void ems_block_stats(const double* x, Py_ssize_t n, double* out)
    void ems_block_stats_scalar(const double* x, Py_ssize_t n, double* out)
    int ems_all_ones(const uint8_t* flags, Py_ssize_t n)

SIMD = EMS_SIMD_NAME.decode()


cdef inline Py_ssize_t block_valid_stats(const double* x, const uint8_t* fresh, bint all_fresh, Py_ssize_t n,
                                         double lo, double hi, double* out) noexcept nogil:
    """min, max, sum of the valid values of x[0..n) into out; returns how many were valid."""
    cdef Py_ssize_t k, cnt = 0
    cdef double a, mn = INFINITY, mx = -INFINITY, s = 0.0
    if all_fresh:
        ems_block_stats(x, n, out)
        if out[0] >= lo and out[1] <= hi and not isnan(out[2]):
            return n
    for k in range(n):
        if fresh[k]:
            a = x[k]
            if lo <= a <= hi:          # false for NaN
                cnt += 1
                s += a
                if a < mn:
                    mn = a
                if a > mx:
                    mx = a
    out[0] = mn
    out[1] = mx
    out[2] = s
    return cnt


cdef inline int32_t locate(const double* x, const uint8_t* fresh, Py_ssize_t per_pack, Py_ssize_t n_packs,
                           const double* pack_f, Py_ssize_t col, double value, double lo, double hi) noexcept nogil:
    """Index of the first valid cell equal to value: first pack whose statistic equals it, then its cells."""
    cdef Py_ssize_t p, k
    cdef double a
    for p in range(n_packs):
        if pack_f[p * PACK_F_COLS + col] == value:
            for k in range(p * per_pack, (p + 1) * per_pack):
                a = x[k]
                if a == value and fresh[k] and lo <= a <= hi:
                    return <int32_t>k
    return -1


cdef void aggregate_cells(
    Py_ssize_t n_clusters, Py_ssize_t n_cells, Py_ssize_t n_packs,
    const double* cell_v, const double* cell_t, const uint8_t* fresh,
    double v_lo, double v_hi, double t_lo, double t_hi,
    double* cl_f, int32_t* cl_i, double* pack_f, int32_t* pack_i,
    double* stk_f, int32_t* stk_i,
) noexcept nogil:
    cdef Py_ssize_t c, p, k, base, per_pack = n_cells // n_packs, nv, nt
    cdef double vs[3]
    cdef double ts[3]
    cdef double cv_min, cv_max, cv_sum, ct_min, ct_max, ct_sum
    cdef double sv_sum = 0.0, st_sum = 0.0
    cdef Py_ssize_t cv_n, ct_n, sv_n = 0, st_n = 0
    cdef bint all_fresh
    cdef double* cf
    cdef double* pf
    cdef double* cpf
    cdef int32_t* ci
    cdef int32_t* pi

    stk_f[AGG_V_MIN] = INFINITY
    stk_f[AGG_V_MAX] = -INFINITY
    stk_f[AGG_T_MIN] = INFINITY
    stk_f[AGG_T_MAX] = -INFINITY
    for k in range(STK_I_COLS):
        stk_i[k] = -1
    stk_i[STK_V_INVALID] = 0
    stk_i[STK_T_INVALID] = 0

    for c in range(n_clusters):
        cv_min = INFINITY; cv_max = -INFINITY; cv_sum = 0.0; cv_n = 0
        ct_min = INFINITY; ct_max = -INFINITY; ct_sum = 0.0; ct_n = 0
        cpf = pack_f + c * n_packs * PACK_F_COLS
        for p in range(n_packs):
            base = c * n_cells + p * per_pack
            all_fresh = ems_all_ones(fresh + base, per_pack)
            nv = block_valid_stats(cell_v + base, fresh + base, all_fresh, per_pack, v_lo, v_hi, vs)
            nt = block_valid_stats(cell_t + base, fresh + base, all_fresh, per_pack, t_lo, t_hi, ts)
            pf = cpf + p * PACK_F_COLS
            pi = pack_i + (c * n_packs + p) * PACK_I_COLS
            if nv > 0:
                pf[PACK_V_MIN] = vs[0]
                pf[PACK_V_MAX] = vs[1]
                pf[PACK_V_MEAN] = vs[2] / nv
                if vs[0] < cv_min:
                    cv_min = vs[0]
                if vs[1] > cv_max:
                    cv_max = vs[1]
            else:
                pf[PACK_V_MIN] = NAN
                pf[PACK_V_MAX] = NAN
                pf[PACK_V_MEAN] = NAN
            if nt > 0:
                pf[PACK_T_MIN] = ts[0]
                pf[PACK_T_MAX] = ts[1]
                if ts[0] < ct_min:
                    ct_min = ts[0]
                if ts[1] > ct_max:
                    ct_max = ts[1]
            else:
                pf[PACK_T_MIN] = NAN
                pf[PACK_T_MAX] = NAN
            pi[PACK_V_INVALID] = <int32_t>(per_pack - nv)
            pi[PACK_T_INVALID] = <int32_t>(per_pack - nt)
            cv_sum += vs[2]
            cv_n += nv
            ct_sum += ts[2]
            ct_n += nt

        cf = cl_f + c * AGG_F_COLS
        ci = cl_i + c * AGG_I_COLS
        base = c * n_cells
        finish_cluster(c, cell_v + base, fresh + base, per_pack, n_packs, cpf, v_lo, v_hi, n_cells,
                       cv_min, cv_max, cv_sum, cv_n, cf, ci, stk_f, stk_i, 0)
        finish_cluster(c, cell_t + base, fresh + base, per_pack, n_packs, cpf, t_lo, t_hi, n_cells,
                       ct_min, ct_max, ct_sum, ct_n, cf, ci, stk_f, stk_i, 1)
        sv_sum += cv_sum
        sv_n += cv_n
        st_sum += ct_sum
        st_n += ct_n

    finish_stack(stk_f, AGG_V_MIN, sv_sum, sv_n)
    finish_stack(stk_f, AGG_T_MIN, st_sum, st_n)


# column sets of the two quantities: voltage (q = 0) and temperature (q = 1)
cdef int32_t[2] _CL_MIN = [AGG_V_MIN, AGG_T_MIN]
cdef int32_t[2] _PACK_MIN = [PACK_V_MIN, PACK_T_MIN]
cdef int32_t[2] _PACK_MAX = [PACK_V_MAX, PACK_T_MAX]
cdef int32_t[2] _MIN_CELL = [AGG_V_MIN_CELL, AGG_T_MIN_CELL]
cdef int32_t[2] _MAX_CELL = [AGG_V_MAX_CELL, AGG_T_MAX_CELL]
cdef int32_t[2] _INVALID = [AGG_V_INVALID, AGG_T_INVALID]
cdef int32_t[2] _STK_MIN = [STK_V_MIN_CLUSTER, STK_T_MIN_CLUSTER]
cdef int32_t[2] _STK_MAX = [STK_V_MAX_CLUSTER, STK_T_MAX_CLUSTER]
cdef int32_t[2] _STK_INVALID = [STK_V_INVALID, STK_T_INVALID]


cdef inline void finish_cluster(
    Py_ssize_t c, const double* x, const uint8_t* fresh, Py_ssize_t per_pack, Py_ssize_t n_packs,
    const double* cpf, double lo, double hi, Py_ssize_t n_cells, double mn, double mx, double s,
    Py_ssize_t n, double* cf, int32_t* ci, double* stk_f, int32_t* stk_i, int q,
) noexcept nogil:
    """Cluster statistics of one quantity from its pack results, and its share of the stack's."""
    cdef int32_t col = _CL_MIN[q]      # MIN, MAX, MEAN, SPREAD are consecutive columns
    ci[_INVALID[q]] = <int32_t>(n_cells - n)
    stk_i[_STK_INVALID[q]] = stk_i[_STK_INVALID[q]] + ci[_INVALID[q]]
    if n == 0:
        cf[col] = NAN
        cf[col + 1] = NAN
        cf[col + 2] = NAN
        cf[col + 3] = NAN
        ci[_MIN_CELL[q]] = -1
        ci[_MAX_CELL[q]] = -1
        return
    cf[col] = mn
    cf[col + 1] = mx
    cf[col + 2] = s / n
    cf[col + 3] = mx - mn
    ci[_MIN_CELL[q]] = locate(x, fresh, per_pack, n_packs, cpf, _PACK_MIN[q], mn, lo, hi)
    ci[_MAX_CELL[q]] = locate(x, fresh, per_pack, n_packs, cpf, _PACK_MAX[q], mx, lo, hi)
    if mn < stk_f[col]:
        stk_f[col] = mn
        stk_i[_STK_MIN[q]] = <int32_t>c
        stk_i[_STK_MIN[q] + 1] = ci[_MIN_CELL[q]]
    if mx > stk_f[col + 1]:
        stk_f[col + 1] = mx
        stk_i[_STK_MAX[q]] = <int32_t>c
        stk_i[_STK_MAX[q] + 1] = ci[_MAX_CELL[q]]


cdef inline void finish_stack(double* stk_f, int32_t col, double s, Py_ssize_t n) noexcept nogil:
    if n > 0:
        stk_f[col + 2] = s / n
        stk_f[col + 3] = stk_f[col + 1] - stk_f[col]
    else:
        stk_f[col] = NAN
        stk_f[col + 1] = NAN
        stk_f[col + 2] = NAN
        stk_f[col + 3] = NAN


def block_stats(const double[::1] x, bint vector=True):
    """(min, max, sum) of x by the vector block statistics or their scalar fallback (for tests)."""
    cdef double out[3]
    if x.shape[0] == 0:
        raise ValueError("block_stats needs at least one value")
    if vector:
        ems_block_stats(&x[0], x.shape[0], out)
    else:
        ems_block_stats_scalar(&x[0], x.shape[0], out)
    return out[0], out[1], out[2]


def aggregate(const double[:, ::1] cell_v, const double[:, ::1] cell_t, const uint8_t[:, ::1] fresh,
              Py_ssize_t n_packs, double v_lo, double v_hi, double t_lo, double t_hi,
              double[:, ::1] cluster_f, int32_t[:, ::1] cluster_i,
              double[:, :, ::1] pack_f, int32_t[:, :, ::1] pack_i,
              double[::1] stack_f, int32_t[::1] stack_i):
    """Aggregate a (clusters × cells) stack into the caller's preallocated output arrays.

    Shapes: cell_v, cell_t, fresh (C, N); cluster_f (C, AGG_F_COLS); cluster_i (C, AGG_I_COLS);
    pack_f (C, P, PACK_F_COLS); pack_i (C, P, PACK_I_COLS); stack_f (AGG_F_COLS,); stack_i (STK_I_COLS,).
    N must be a multiple of n_packs. Raises ValueError on a shape mismatch and writes nothing then.
    """
    cdef Py_ssize_t C = cell_v.shape[0], N = cell_v.shape[1]
    if n_packs < 1 or N % n_packs != 0:
        raise ValueError(f"cells per cluster ({N}) must be a multiple of packs per cluster ({n_packs})")
    require_c_contiguous("cell_t", cell_t.shape[0], cell_t.shape[1], C, N)
    require_c_contiguous("fresh", fresh.shape[0], fresh.shape[1], C, N)
    require_c_contiguous("cluster_f", cluster_f.shape[0], cluster_f.shape[1], C, AGG_F_COLS)
    require_c_contiguous("cluster_i", cluster_i.shape[0], cluster_i.shape[1], C, AGG_I_COLS)
    if (pack_f.shape[0], pack_f.shape[1], pack_f.shape[2]) != (C, n_packs, PACK_F_COLS):
        raise ValueError(f"pack_f must have shape {(C, n_packs, PACK_F_COLS)}")
    if (pack_i.shape[0], pack_i.shape[1], pack_i.shape[2]) != (C, n_packs, PACK_I_COLS):
        raise ValueError(f"pack_i must have shape {(C, n_packs, PACK_I_COLS)}")
    if stack_f.shape[0] != AGG_F_COLS or stack_i.shape[0] != STK_I_COLS:
        raise ValueError(f"stack_f must have {AGG_F_COLS} and stack_i {STK_I_COLS} elements")
    if C == 0 or N == 0:
        raise ValueError("the stack needs at least one cluster with at least one cell")
    with nogil:
        aggregate_cells(C, N, n_packs, &cell_v[0, 0], &cell_t[0, 0], &fresh[0, 0],
                        v_lo, v_hi, t_lo, t_hi, &cluster_f[0, 0], &cluster_i[0, 0],
                        &pack_f[0, 0, 0], &pack_i[0, 0, 0], &stack_f[0], &stack_i[0])
