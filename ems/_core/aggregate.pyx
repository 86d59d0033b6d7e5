# cython: language_level=3
"""Cell aggregation: min/max/mean/spread of cell voltage and temperature per pack, cluster and stack.

A cell's voltage is valid when its data is fresh and the value lies inside the sensor's physical range
[v_lo, v_hi]; the same for temperature. Invalid values (NaN, out of range, stale) are counted and never
enter a mean or an extreme, so one broken sensor cannot poison the statistics; the counts feed the
sensor-fault rows of the protection table. There is no outlier rejection: a plausible cell far from
the others is exactly what protection must see. Ties keep the first cell (lowest index), like argmin.
"""
from libc.stdint cimport uint8_t, int32_t
from libc.math cimport NAN, INFINITY

from ems._core.layout cimport *
from ems._core.checks cimport require_c_contiguous


cdef void aggregate_cells(
    Py_ssize_t n_clusters, Py_ssize_t n_cells, Py_ssize_t n_packs,
    const double* cell_v, const double* cell_t, const uint8_t* fresh,
    double v_lo, double v_hi, double t_lo, double t_hi,
    double* cl_f, int32_t* cl_i, double* pack_f, int32_t* pack_i,
    double* stk_f, int32_t* stk_i,
) noexcept nogil:
    cdef Py_ssize_t c, p, k, i, base, per_pack = n_cells // n_packs
    cdef double x, pv_min, pv_max, pv_sum, pt_min, pt_max
    cdef double cv_min, cv_max, cv_sum, ct_min, ct_max, ct_sum
    cdef double sv_sum = 0.0, st_sum = 0.0
    cdef Py_ssize_t pv_n, pt_n, cv_n, ct_n, sv_n = 0, st_n = 0
    cdef int32_t cv_min_i, cv_max_i, ct_min_i, ct_max_i
    cdef double* cf
    cdef double* pf
    cdef int32_t* ci

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
        cv_min_i = -1; cv_max_i = -1; ct_min_i = -1; ct_max_i = -1
        for p in range(n_packs):
            pv_min = INFINITY; pv_max = -INFINITY; pv_sum = 0.0; pv_n = 0
            pt_min = INFINITY; pt_max = -INFINITY; pt_n = 0
            base = c * n_cells + p * per_pack
            for k in range(per_pack):
                i = base + k
                if fresh[i]:
                    x = cell_v[i]
                    if v_lo <= x <= v_hi:          # false for NaN
                        pv_n += 1
                        pv_sum += x
                        if x < pv_min:
                            pv_min = x
                        if x > pv_max:
                            pv_max = x
                        if x < cv_min:
                            cv_min = x
                            cv_min_i = <int32_t>(i - c * n_cells)
                        if x > cv_max:
                            cv_max = x
                            cv_max_i = <int32_t>(i - c * n_cells)
                    x = cell_t[i]
                    if t_lo <= x <= t_hi:
                        pt_n += 1
                        ct_sum += x
                        if x < pt_min:
                            pt_min = x
                        if x > pt_max:
                            pt_max = x
                        if x < ct_min:
                            ct_min = x
                            ct_min_i = <int32_t>(i - c * n_cells)
                        if x > ct_max:
                            ct_max = x
                            ct_max_i = <int32_t>(i - c * n_cells)
            pf = pack_f + (c * n_packs + p) * PACK_F_COLS
            if pv_n > 0:
                pf[PACK_V_MIN] = pv_min
                pf[PACK_V_MAX] = pv_max
                pf[PACK_V_MEAN] = pv_sum / pv_n
            else:
                pf[PACK_V_MIN] = NAN
                pf[PACK_V_MAX] = NAN
                pf[PACK_V_MEAN] = NAN
            if pt_n > 0:
                pf[PACK_T_MIN] = pt_min
                pf[PACK_T_MAX] = pt_max
            else:
                pf[PACK_T_MIN] = NAN
                pf[PACK_T_MAX] = NAN
            pack_i[(c * n_packs + p) * PACK_I_COLS + PACK_V_INVALID] = <int32_t>(per_pack - pv_n)
            pack_i[(c * n_packs + p) * PACK_I_COLS + PACK_T_INVALID] = <int32_t>(per_pack - pt_n)
            cv_sum += pv_sum
            cv_n += pv_n
            ct_n += pt_n

        cf = cl_f + c * AGG_F_COLS
        ci = cl_i + c * AGG_I_COLS
        ci[AGG_V_INVALID] = <int32_t>(n_cells - cv_n)
        ci[AGG_T_INVALID] = <int32_t>(n_cells - ct_n)
        ci[AGG_V_MIN_CELL] = cv_min_i
        ci[AGG_V_MAX_CELL] = cv_max_i
        ci[AGG_T_MIN_CELL] = ct_min_i
        ci[AGG_T_MAX_CELL] = ct_max_i
        stk_i[STK_V_INVALID] = stk_i[STK_V_INVALID] + ci[AGG_V_INVALID]
        stk_i[STK_T_INVALID] = stk_i[STK_T_INVALID] + ci[AGG_T_INVALID]
        if cv_n > 0:
            cf[AGG_V_MIN] = cv_min
            cf[AGG_V_MAX] = cv_max
            cf[AGG_V_MEAN] = cv_sum / cv_n
            cf[AGG_V_SPREAD] = cv_max - cv_min
            sv_sum += cv_sum
            sv_n += cv_n
            if cv_min < stk_f[AGG_V_MIN]:
                stk_f[AGG_V_MIN] = cv_min
                stk_i[STK_V_MIN_CLUSTER] = <int32_t>c
                stk_i[STK_V_MIN_CELL] = cv_min_i
            if cv_max > stk_f[AGG_V_MAX]:
                stk_f[AGG_V_MAX] = cv_max
                stk_i[STK_V_MAX_CLUSTER] = <int32_t>c
                stk_i[STK_V_MAX_CELL] = cv_max_i
        else:
            cf[AGG_V_MIN] = NAN
            cf[AGG_V_MAX] = NAN
            cf[AGG_V_MEAN] = NAN
            cf[AGG_V_SPREAD] = NAN
        if ct_n > 0:
            cf[AGG_T_MIN] = ct_min
            cf[AGG_T_MAX] = ct_max
            cf[AGG_T_MEAN] = ct_sum / ct_n
            cf[AGG_T_SPREAD] = ct_max - ct_min
            st_sum += ct_sum
            st_n += ct_n
            if ct_min < stk_f[AGG_T_MIN]:
                stk_f[AGG_T_MIN] = ct_min
                stk_i[STK_T_MIN_CLUSTER] = <int32_t>c
                stk_i[STK_T_MIN_CELL] = ct_min_i
            if ct_max > stk_f[AGG_T_MAX]:
                stk_f[AGG_T_MAX] = ct_max
                stk_i[STK_T_MAX_CLUSTER] = <int32_t>c
                stk_i[STK_T_MAX_CELL] = ct_max_i
        else:
            cf[AGG_T_MIN] = NAN
            cf[AGG_T_MAX] = NAN
            cf[AGG_T_MEAN] = NAN
            cf[AGG_T_SPREAD] = NAN

    if sv_n > 0:
        stk_f[AGG_V_MEAN] = sv_sum / sv_n
        stk_f[AGG_V_SPREAD] = stk_f[AGG_V_MAX] - stk_f[AGG_V_MIN]
    else:
        stk_f[AGG_V_MIN] = NAN
        stk_f[AGG_V_MAX] = NAN
        stk_f[AGG_V_MEAN] = NAN
        stk_f[AGG_V_SPREAD] = NAN
    if st_n > 0:
        stk_f[AGG_T_MEAN] = st_sum / st_n
        stk_f[AGG_T_SPREAD] = stk_f[AGG_T_MAX] - stk_f[AGG_T_MIN]
    else:
        stk_f[AGG_T_MIN] = NAN
        stk_f[AGG_T_MAX] = NAN
        stk_f[AGG_T_MEAN] = NAN
        stk_f[AGG_T_SPREAD] = NAN


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
