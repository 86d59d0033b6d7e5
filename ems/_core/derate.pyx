# cython: language_level=3
"""Current derating: a trapezoid per protection row, the BMS's own limits, and the stack limit.

For every row with a derating mask, the allowed current is full up to the row's operating limit
(level 0 threshold) and falls linearly to zero at its safety limit (level 2, fault threshold). The
cluster's factor per direction is the smallest over its rows; a NaN value gives factor 0 (we cannot
show it is safe). The cluster limit is rated current × factor, then the lower of that and the BMS's
reported limit (a missing BMS limit counts as 0 A: staleness is a safe state). A cluster whose
protection blocks a direction (a fault latched or a trip pending) or whose contactor is open gets 0.

Stack limit = connected clusters × the weakest connected cluster, capped by the stack rating: parallel
strings share current by impedance, so the weakest one bounds them all.
"""
from libc.stdint cimport uint8_t, int32_t
from libc.math cimport isnan, isinf

from ems._core.layout cimport *
from ems._core.common cimport dmin, dmax
from ems._core.checks cimport require_c_contiguous, require_len


cdef inline double trapezoid(double x, double op, double safety, int direction) noexcept nogil:
    if isnan(x):
        return 0.0
    if direction > 0:
        if x <= op:
            return 1.0
        if x >= safety:
            return 0.0
        return (safety - x) / (safety - op)
    if x >= op:
        return 1.0
    if x <= safety:
        return 0.0
    return (x - safety) / (op - safety)


cdef void derate_clusters(
    Py_ssize_t n_rows, Py_ssize_t n_clusters, const double* tab_f, const int32_t* tab_i,
    const double* src, const double* cl_in, const uint8_t* cl_flags, const uint8_t* cl_prot,
    double stack_max_chg_a, double stack_max_dchg_a, double* out, double* stack_out,
) noexcept nogil:
    cdef Py_ssize_t q, c, C = n_clusters, n_conn = 0
    cdef const double* tf
    cdef const int32_t* ti
    cdef const double* m
    cdef double f, fc, fd, chg, dchg, bms, weakest_chg = 1e300, weakest_dchg = 1e300
    cdef int mask
    for c in range(C):
        fc = 1.0
        fd = 1.0
        for q in range(n_rows):
            ti = tab_i + q * PT_I_COLS
            mask = ti[PT_DERATE]
            if mask == 0:
                continue
            tf = tab_f + q * PT_F_COLS
            if isinf(tf[PT_THR0]) or isinf(tf[PT_THR2]):
                continue     # a disabled level: no trapezoid to follow
            f = trapezoid(src[ti[PT_SOURCE] * C + c], tf[PT_THR0], tf[PT_THR2], ti[PT_DIR])
            if mask & DIR_CHARGE:
                fc = dmin(fc, f)
            if mask & DIR_DISCHARGE:
                fd = dmin(fd, f)
        m = cl_in + c * CL_IN_COLS
        chg = dmax(m[CL_RATED_CHG_A], 0.0) * fc
        dchg = dmax(m[CL_RATED_DCHG_A], 0.0) * fd
        bms = m[CL_BMS_CHG_A]
        chg = 0.0 if isnan(bms) else dmin(chg, dmax(bms, 0.0))
        bms = m[CL_BMS_DCHG_A]
        dchg = 0.0 if isnan(bms) else dmin(dchg, dmax(bms, 0.0))
        if not cl_flags[c * CL_FLAG_COLS + CLF_CONNECTED]:
            chg = 0.0
            dchg = 0.0
        if not cl_prot[c * CLP_COLS + CLP_CHG_ALLOWED]:
            chg = 0.0
        if not cl_prot[c * CLP_COLS + CLP_DCHG_ALLOWED]:
            dchg = 0.0
        if isnan(chg):
            chg = 0.0
        if isnan(dchg):
            dchg = 0.0
        out[c * DR_COLS + DR_CHG_A] = chg
        out[c * DR_COLS + DR_DCHG_A] = dchg
        out[c * DR_COLS + DR_CHG_FACTOR] = fc
        out[c * DR_COLS + DR_DCHG_FACTOR] = fd
        if cl_flags[c * CL_FLAG_COLS + CLF_CONNECTED]:
            n_conn += 1
            weakest_chg = dmin(weakest_chg, chg)
            weakest_dchg = dmin(weakest_dchg, dchg)
    if n_conn == 0:
        stack_out[0] = 0.0
        stack_out[1] = 0.0
    else:
        stack_out[0] = dmin(n_conn * weakest_chg, dmax(stack_max_chg_a, 0.0))
        stack_out[1] = dmin(n_conn * weakest_dchg, dmax(stack_max_dchg_a, 0.0))


def derate(const double[:, ::1] table_f, const int32_t[:, ::1] table_i, const double[:, ::1] sources,
           const double[:, ::1] cluster_in, const uint8_t[:, ::1] cluster_flags,
           const uint8_t[:, ::1] cluster_prot, double stack_max_chg_a, double stack_max_dchg_a,
           double[:, ::1] out, double[::1] stack_out):
    """Per-cluster current limits into out (C, DR_COLS); stack [charge_a, discharge_a] into stack_out."""
    cdef Py_ssize_t Q = table_f.shape[0], C = sources.shape[1]
    require_c_contiguous("table_f", Q, table_f.shape[1], Q, PT_F_COLS)
    require_c_contiguous("table_i", table_i.shape[0], table_i.shape[1], Q, PT_I_COLS)
    require_c_contiguous("sources", sources.shape[0], C, SRC_COUNT, C)
    require_c_contiguous("cluster_in", cluster_in.shape[0], cluster_in.shape[1], C, CL_IN_COLS)
    require_c_contiguous("cluster_flags", cluster_flags.shape[0], cluster_flags.shape[1], C, CL_FLAG_COLS)
    require_c_contiguous("cluster_prot", cluster_prot.shape[0], cluster_prot.shape[1], C, CLP_COLS)
    require_c_contiguous("out", out.shape[0], out.shape[1], C, DR_COLS)
    require_len("stack_out", stack_out.shape[0], 2)
    if Q == 0 or C == 0:
        raise ValueError("derating needs at least one table row and one cluster")
    for q in range(Q):
        if not 0 <= table_i[q, PT_SOURCE] < SRC_COUNT:
            raise ValueError(f"protection row {q}: source {table_i[q, PT_SOURCE]} is not a known quantity")
    with nogil:
        derate_clusters(Q, C, &table_f[0, 0], &table_i[0, 0], &sources[0, 0], &cluster_in[0, 0],
                        &cluster_flags[0, 0], &cluster_prot[0, 0], stack_max_chg_a, stack_max_dchg_a,
                        &out[0, 0], &stack_out[0])
