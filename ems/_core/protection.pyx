# cython: language_level=3
"""Protection as a table (foxBMS style): one generic evaluator, every quantity a row.

Each row watches one measured quantity (its Source) per cluster and has three levels: 0 operating
limit (the derating starts), 1 warning, 2 fault. A level sets when its threshold has been violated
continuously for its set delay (the debounce, counted in milliseconds so it stays right when the loop
runs slower) and clears when the value has been back past threshold ∓ hysteresis for its clear delay.
Levels 0 and 1 clear by themselves; level 2 latches: it clears only when the condition is gone *and* a
reset is requested.

A latched fault blocks both current directions at once. If the row trips, the cluster's trip is
pending with the allowed currents already forced to zero (the controller commands the PCS to zero and
stops it at once); the cluster is tripped (open the contactors) when the pending time has reached
`trip_delay_ms` and the measured cluster current is at most `trip_open_a`, or when it has reached
`trip_max_wait_ms` whatever the current (a PCS that does not stop, a current that is not measured):
contactors are not opened under load while the current is still coming down.

A NaN value freezes the row: nothing sets, nothing clears, the timers hold. Missing measurements are
themselves watched by the sensor rows (SRC_*_MISSING, SRC_*_SENSOR_INVALID), and derating treats NaN
as "no current allowed", so a lost value never silently passes as healthy.
"""
from libc.stdint cimport uint8_t, int8_t, int32_t
from libc.math cimport isnan, fabs, NAN, INFINITY

from ems._core.layout cimport *
from ems._core.checks cimport require_c_contiguous, require_len


cdef void fill_sources(
    Py_ssize_t n_clusters, const double* cl_agg_f, const int32_t* cl_agg_i, const double* cl_in,
    const double* soc_out, double* src,
) noexcept nogil:
    """src has shape (SRC_COUNT, C). soc_out may be NULL (then SRC_SOC_MEAN is NaN)."""
    cdef Py_ssize_t c, C = n_clusters
    cdef const double* a
    cdef const double* m
    cdef double i_a
    cdef bint lost, awaited
    for c in range(C):
        a = cl_agg_f + c * AGG_F_COLS
        m = cl_in + c * CL_IN_COLS
        src[SRC_CELL_V_MAX * C + c] = a[AGG_V_MAX]
        src[SRC_CELL_V_MIN * C + c] = a[AGG_V_MIN]
        src[SRC_CELL_T_MAX * C + c] = a[AGG_T_MAX]
        src[SRC_CELL_T_MIN * C + c] = a[AGG_T_MIN]
        src[SRC_CELL_V_SPREAD * C + c] = a[AGG_V_SPREAD]
        src[SRC_CELL_T_SPREAD * C + c] = a[AGG_T_SPREAD]
        src[SRC_CLUSTER_V * C + c] = m[CL_V]
        i_a = m[CL_I]
        if isnan(i_a):
            src[SRC_CHARGE_A * C + c] = NAN
            src[SRC_DISCHARGE_A * C + c] = NAN
        else:
            src[SRC_CHARGE_A * C + c] = -i_a if i_a < 0.0 else 0.0
            src[SRC_DISCHARGE_A * C + c] = i_a if i_a > 0.0 else 0.0
        src[SRC_INSULATION_KOHM * C + c] = m[CL_INSULATION]
        src[SRC_POLE_T * C + c] = m[CL_POLE_T]
        src[SRC_HVBOX_T * C + c] = m[CL_HVBOX_T]
        # a lost BMS link is battery_lost (the supervisor's alarm and safe state), not a fault of every sensor
        # behind it: the sensor rows hold their state, so the link's return needs no reset. Cells arrive in
        # their own, slower frames: while the link is silent, or back for less than one cell age, a stale
        # cell is the link's (awaited), so the cell rows hold too (derating still gives no current for it)
        lost = m[CL_LINK_LOST] > 0.5
        awaited = lost or m[CL_CELLS_AWAITED] > 0.5
        src[SRC_T_SENSOR_INVALID * C + c] = NAN if awaited else (
            <double>cl_agg_i[c * AGG_I_COLS + AGG_T_INVALID]
            + (1.0 if isnan(m[CL_POLE_T]) else 0.0) + (1.0 if isnan(m[CL_HVBOX_T]) else 0.0))
        src[SRC_V_SENSOR_INVALID * C + c] = NAN if awaited else <double>cl_agg_i[c * AGG_I_COLS + AGG_V_INVALID]
        src[SRC_CURRENT_MISSING * C + c] = NAN if lost else (1.0 if isnan(i_a) else 0.0)
        src[SRC_CLUSTER_V_MISSING * C + c] = NAN if lost else (1.0 if isnan(m[CL_V]) else 0.0)
        src[SRC_INSULATION_MISSING * C + c] = NAN if lost else (1.0 if isnan(m[CL_INSULATION]) else 0.0)
        src[SRC_SOC_MEAN * C + c] = soc_out[c * SOC_COLS + SOC_MEAN] if soc_out != NULL else NAN


cdef Py_ssize_t evaluate_table(
    Py_ssize_t n_rows, Py_ssize_t n_clusters, const double* tab_f, const int32_t* tab_i,
    const double* src, const double* cl_in, double idle_a, double dt_ms, double trip_delay_ms,
    bint reset_request, uint8_t* bits, double* timers, int8_t* level, uint8_t* changed,
    uint8_t* cl_prot, double* trip_timer_ms, double trip_open_a, double trip_max_wait_ms,
) noexcept nogil:
    cdef Py_ssize_t q, c, L, k, n_changed = 0, C = n_clusters
    cdef const double* tf
    cdef const int32_t* ti
    cdef double* tm
    cdef double x, thr, hyst, i_a
    cdef int direction, when, new_level
    cdef bint charging, violated, gone, any_fault, any_trip
    cdef uint8_t b, mask
    cdef uint8_t* cp

    for c in range(C):
        i_a = cl_in[c * CL_IN_COLS + CL_I]
        charging = i_a < -idle_a            # NaN current counts as not charging
        any_fault = False
        any_trip = False
        for q in range(n_rows):
            tf = tab_f + q * PT_F_COLS
            ti = tab_i + q * PT_I_COLS
            k = q * C + c
            tm = timers + k * PS_T_COLS
            x = src[ti[PT_SOURCE] * C + c]
            direction = ti[PT_DIR]
            when = ti[PT_WHEN]
            b = bits[k]
            if not isnan(x):
                for L in range(3):
                    thr = tf[PT_THR0 + L]
                    hyst = tf[PT_HYST0 + L]
                    if (when == WHEN_CHARGING and not charging) or (when == WHEN_NOT_CHARGING and charging):
                        # the row does not apply in this current direction: its condition is gone
                        violated = False
                        gone = True
                    elif direction > 0:
                        violated = x > thr
                        gone = x < thr - hyst
                    else:
                        violated = x < thr
                        gone = x > thr + hyst
                    mask = <uint8_t>(1 << L)
                    if not (b & mask):
                        if violated:
                            tm[PS_SET0 + L] += dt_ms
                            if tm[PS_SET0 + L] >= tf[PT_SET_MS0 + L]:
                                b |= mask
                                tm[PS_SET0 + L] = 0.0
                                tm[PS_CLR0 + L] = 0.0
                        else:
                            tm[PS_SET0 + L] = 0.0
                    else:
                        if gone:
                            tm[PS_CLR0 + L] += dt_ms
                        else:
                            tm[PS_CLR0 + L] = 0.0
                        if tm[PS_CLR0 + L] >= tf[PT_CLR_MS0 + L] and (L < 2 or reset_request):
                            b &= <uint8_t>~mask
                            tm[PS_CLR0 + L] = 0.0
                            tm[PS_SET0 + L] = 0.0
            if b & 4:
                any_fault = True
                if ti[PT_TRIPS]:
                    any_trip = True
            new_level = 3 if b & 4 else (2 if b & 2 else (1 if b & 1 else 0))
            if bits[k] != b:
                bits[k] = b
            if level[k] != new_level:
                level[k] = <int8_t>new_level
                changed[k] = 1
                n_changed += 1
            else:
                changed[k] = 0

        cp = cl_prot + c * CLP_COLS
        if any_trip:
            if not cp[CLP_TRIPPED]:
                if not cp[CLP_TRIP_PENDING]:
                    cp[CLP_TRIP_PENDING] = 1
                    trip_timer_ms[c] = 0.0
                trip_timer_ms[c] += dt_ms
                i_a = cl_in[c * CL_IN_COLS + CL_I]
                if trip_timer_ms[c] >= trip_delay_ms and (
                        (not isnan(i_a) and fabs(i_a) <= trip_open_a) or trip_timer_ms[c] >= trip_max_wait_ms):
                    cp[CLP_TRIPPED] = 1
                    cp[CLP_TRIP_PENDING] = 0
        else:
            cp[CLP_TRIP_PENDING] = 0
            cp[CLP_TRIPPED] = 0
            trip_timer_ms[c] = 0.0
        cp[CLP_CHG_ALLOWED] = 0 if any_fault else 1
        cp[CLP_DCHG_ALLOWED] = 0 if any_fault else 1
    return n_changed


def fill(const double[:, ::1] cluster_f, const int32_t[:, ::1] cluster_i, const double[:, ::1] cluster_in,
         soc_out, double[:, ::1] sources):
    """Fill sources (SRC_COUNT, C) from aggregation results, cluster measurements and SOC (or None)."""
    cdef Py_ssize_t C = cluster_f.shape[0]
    cdef const double[:, ::1] soc
    cdef const double* soc_p = NULL
    require_c_contiguous("cluster_f", C, cluster_f.shape[1], C, AGG_F_COLS)
    require_c_contiguous("cluster_i", cluster_i.shape[0], cluster_i.shape[1], C, AGG_I_COLS)
    require_c_contiguous("cluster_in", cluster_in.shape[0], cluster_in.shape[1], C, CL_IN_COLS)
    require_c_contiguous("sources", sources.shape[0], sources.shape[1], SRC_COUNT, C)
    if soc_out is not None:
        soc = soc_out
        require_c_contiguous("soc_out", soc.shape[0], soc.shape[1], C, SOC_COLS)
        soc_p = &soc[0, 0]
    with nogil:
        fill_sources(C, &cluster_f[0, 0], &cluster_i[0, 0], &cluster_in[0, 0], soc_p, &sources[0, 0])


def evaluate(const double[:, ::1] table_f, const int32_t[:, ::1] table_i, const double[:, ::1] sources,
             const double[:, ::1] cluster_in, double idle_a, double dt_ms, double trip_delay_ms,
             bint reset_request, uint8_t[:, ::1] bits, double[:, :, ::1] timers, int8_t[:, ::1] level,
             uint8_t[:, ::1] changed, uint8_t[:, ::1] cluster_prot, double[::1] trip_timer_ms,
             double trip_open_a=INFINITY, double trip_max_wait_ms=0.0):
    """Run the protection table for one tick; returns how many (row, cluster) levels changed.
    trip_open_a / trip_max_wait_ms: when a pending trip opens the contactors (default: at the delay).

    State arrays (bits, timers, level, cluster_prot, trip_timer_ms) belong to the caller and persist
    between ticks; start them at zero.
    """
    cdef Py_ssize_t Q = table_f.shape[0], C = sources.shape[1], q
    cdef Py_ssize_t n
    require_c_contiguous("table_f", Q, table_f.shape[1], Q, PT_F_COLS)
    require_c_contiguous("table_i", table_i.shape[0], table_i.shape[1], Q, PT_I_COLS)
    require_c_contiguous("sources", sources.shape[0], C, SRC_COUNT, C)
    require_c_contiguous("cluster_in", cluster_in.shape[0], cluster_in.shape[1], C, CL_IN_COLS)
    require_c_contiguous("bits", bits.shape[0], bits.shape[1], Q, C)
    require_c_contiguous("level", level.shape[0], level.shape[1], Q, C)
    require_c_contiguous("changed", changed.shape[0], changed.shape[1], Q, C)
    if (timers.shape[0], timers.shape[1], timers.shape[2]) != (Q, C, PS_T_COLS):
        raise ValueError(f"timers must have shape {(Q, C, PS_T_COLS)}")
    require_c_contiguous("cluster_prot", cluster_prot.shape[0], cluster_prot.shape[1], C, CLP_COLS)
    require_len("trip_timer_ms", trip_timer_ms.shape[0], C)
    for q in range(Q):
        if not 0 <= table_i[q, PT_SOURCE] < SRC_COUNT:
            raise ValueError(f"protection row {q}: source {table_i[q, PT_SOURCE]} is not a known quantity")
    if Q == 0 or C == 0:
        raise ValueError("the protection table needs at least one row and one cluster")
    with nogil:
        n = evaluate_table(Q, C, &table_f[0, 0], &table_i[0, 0], &sources[0, 0], &cluster_in[0, 0],
                           idle_a, dt_ms, trip_delay_ms, reset_request, &bits[0, 0], &timers[0, 0, 0],
                           &level[0, 0], &changed[0, 0], &cluster_prot[0, 0], &trip_timer_ms[0],
                           trip_open_a, trip_max_wait_ms)
    return n
