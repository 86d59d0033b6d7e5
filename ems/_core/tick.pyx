# cython: language_level=3
"""The full fast-loop tick: aggregation → SOC estimation → protection → derating → balancing and bypass →
arbitration → setpoint → distribution, all without the GIL on arrays bound once.

FastTick keeps typed views of the caller's arrays (a CoreBuffers object, ems.control.fastpath), checked
once at construction, so a tick pays no argument parsing and allocates nothing. The supervisor writes
inputs and requests into those arrays between ticks and reads the results back.
"""
from libc.stdint cimport uint8_t, int8_t, int32_t
from libc.math cimport isnan

from ems._core.layout cimport *
from ems._core.common cimport dmin, dmax
from ems._core.aggregate cimport aggregate_cells
from ems._core.protection cimport fill_sources, evaluate_table
from ems._core.derate cimport derate_clusters
from ems._core.soc cimport estimate_soc
from ems._core.balance cimport balance_cells, decide_bypass
from ems._core.arbitrate cimport narrow_requests, next_setpoint, distribute_power


def _shape(name, arr, shape, dtype):
    if tuple(arr.shape) != tuple(shape) or arr.dtype != dtype or not arr.flags.c_contiguous:
        raise ValueError(f"buffer {name!r} must be a C-contiguous {dtype} array of shape {tuple(shape)}, "
                         f"got {arr.dtype} {tuple(arr.shape)}")
    return arr


cdef class FastTick:
    cdef readonly Py_ssize_t n_clusters, n_cells, n_packs, n_rows, n_requests
    cdef object _buffers
    # inputs
    cdef double[:, ::1] cell_v, cell_t, cluster_in, capacity_ah, pack_pole_t
    cdef uint8_t[:, ::1] fresh, cluster_flags
    cdef double[::1] params, bypass_params, est_params, ocv_v, hyst_v
    cdef int8_t[::1] req_kind
    cdef double[::1] req_value
    cdef uint8_t[::1] req_active
    cdef double[:, ::1] table_f
    cdef int32_t[:, ::1] table_i
    # state and outputs
    cdef double[:, ::1] agg_f, sources, derated, soc_out, soc_pct, charge_ah, cell_soc, cell_sig, est_state
    cdef int32_t[:, ::1] agg_i
    cdef double[:, :, ::1] pack_f, prot_timers
    cdef int32_t[:, :, ::1] pack_i
    cdef double[::1] stack_f, stack_soc, trip_timer_ms, results, interval, cluster_w
    cdef double[::1] cl_chg_w, cl_dchg_w, cl_e_chg, cl_e_dchg
    cdef int32_t[::1] stack_i, balance_count, bypass_denied
    cdef uint8_t[:, ::1] prot_bits, prot_changed, cluster_prot, balancing, bypass
    cdef int8_t[:, ::1] prot_level
    cdef uint8_t[::1] anchored, req_status, cl_online, work

    def __init__(self, buffers):
        import numpy as np
        b = buffers
        C, N, P = b.cell_v.shape[0], b.cell_v.shape[1], b.capacity_ah.shape[1]
        Q, K = b.table_f.shape[0], b.req_kind.shape[0]
        if C < 1 or N < 1 or P < 1 or N % P != 0 or P > MAX_PACKS or Q < 1:
            raise ValueError(f"bad stack shape: {C} clusters × {N} cells in {P} packs, {Q} protection rows")
        f64, u8, i8, i32 = np.dtype(np.float64), np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int32)
        self.n_clusters, self.n_cells, self.n_packs, self.n_rows, self.n_requests = C, N, P, Q, K
        self._buffers = b
        self.cell_v = _shape("cell_v", b.cell_v, (C, N), f64)
        self.cell_t = _shape("cell_t", b.cell_t, (C, N), f64)
        self.fresh = _shape("fresh", b.fresh, (C, N), u8)
        self.cluster_in = _shape("cluster_in", b.cluster_in, (C, CL_IN_COLS), f64)
        self.cluster_flags = _shape("cluster_flags", b.cluster_flags, (C, CL_FLAG_COLS), u8)
        self.capacity_ah = _shape("capacity_ah", b.capacity_ah, (C, P), f64)
        self.pack_pole_t = _shape("pack_pole_t", b.pack_pole_t, (C, P), f64)
        self.params = _shape("params", b.params, (TP_COLS,), f64)
        self.bypass_params = _shape("bypass_params", b.bypass_params, (BP_COLS,), f64)
        self.est_params = _shape("est_params", b.est_params, (EP_COLS,), f64)
        if b.ocv_v.ndim != 1 or b.ocv_v.shape[0] < 2 or not (b.ocv_v[1:] > b.ocv_v[:-1]).all():
            raise ValueError("ocv_v must be a strictly increasing table of at least 2 voltages")
        self.ocv_v = _shape("ocv_v", b.ocv_v, (b.ocv_v.shape[0],), f64)
        if b.hyst_v.ndim != 1 or not (np.isfinite(b.hyst_v).all() and (b.hyst_v >= 0.0).all()):
            raise ValueError("hyst_v must be finite half-widths >= 0 V")
        self.hyst_v = _shape("hyst_v", b.hyst_v, (b.ocv_v.shape[0],), f64)
        self.req_kind = _shape("req_kind", b.req_kind, (K,), i8)
        self.req_value = _shape("req_value", b.req_value, (K,), f64)
        self.req_active = _shape("req_active", b.req_active, (K,), u8)
        self.req_status = _shape("req_status", b.req_status, (K,), u8)
        self.table_f = _shape("table_f", b.table_f, (Q, PT_F_COLS), f64)
        self.table_i = _shape("table_i", b.table_i, (Q, PT_I_COLS), i32)
        if not ((b.table_i[:, PT_SOURCE] >= 0) & (b.table_i[:, PT_SOURCE] < SRC_COUNT)).all():
            raise ValueError("protection table: a row names an unknown source")
        self.agg_f = _shape("agg_f", b.agg_f, (C, AGG_F_COLS), f64)
        self.agg_i = _shape("agg_i", b.agg_i, (C, AGG_I_COLS), i32)
        self.pack_f = _shape("pack_f", b.pack_f, (C, P, PACK_F_COLS), f64)
        self.pack_i = _shape("pack_i", b.pack_i, (C, P, PACK_I_COLS), i32)
        self.stack_f = _shape("stack_f", b.stack_f, (AGG_F_COLS,), f64)
        self.stack_i = _shape("stack_i", b.stack_i, (STK_I_COLS,), i32)
        self.sources = _shape("sources", b.sources, (SRC_COUNT, C), f64)
        self.prot_bits = _shape("prot_bits", b.prot_bits, (Q, C), u8)
        self.prot_timers = _shape("prot_timers", b.prot_timers, (Q, C, PS_T_COLS), f64)
        self.prot_level = _shape("prot_level", b.prot_level, (Q, C), i8)
        self.prot_changed = _shape("prot_changed", b.prot_changed, (Q, C), u8)
        self.cluster_prot = _shape("cluster_prot", b.cluster_prot, (C, CLP_COLS), u8)
        self.trip_timer_ms = _shape("trip_timer_ms", b.trip_timer_ms, (C,), f64)
        self.derated = _shape("derated", b.derated, (C, DR_COLS), f64)
        self.charge_ah = _shape("charge_ah", b.charge_ah, (C, P), f64)
        self.cell_soc = _shape("cell_soc", b.cell_soc, (C, N), f64)
        self.cell_sig = _shape("cell_sig", b.cell_sig, (C, N), f64)
        self.est_state = _shape("est_state", b.est_state, (C, SE_COLS), f64)
        self.soc_pct = _shape("soc_pct", b.soc_pct, (C, P), f64)
        self.soc_out = _shape("soc_out", b.soc_out, (C, SOC_COLS), f64)
        self.anchored = _shape("anchored", b.anchored, (C,), u8)
        self.stack_soc = _shape("stack_soc", b.stack_soc, (SOC_COLS,), f64)
        self.balancing = _shape("balancing", b.balancing, (C, N), u8)
        self.balance_count = _shape("balance_count", b.balance_count, (C,), i32)
        self.bypass = _shape("bypass", b.bypass, (C, P), u8)
        self.bypass_denied = _shape("bypass_denied", b.bypass_denied, (C,), i32)
        self.results = _shape("results", b.results, (TO_COLS,), f64)
        self.interval = _shape("interval", b.interval, (2,), f64)
        self.cluster_w = _shape("cluster_w", b.cluster_w, (C,), f64)
        self.cl_chg_w = _shape("cl_chg_w", b.cl_chg_w, (C,), f64)
        self.cl_dchg_w = _shape("cl_dchg_w", b.cl_dchg_w, (C,), f64)
        self.cl_e_chg = _shape("cl_e_chg", b.cl_e_chg, (C,), f64)
        self.cl_e_dchg = _shape("cl_e_dchg", b.cl_e_dchg, (C,), f64)
        self.cl_online = _shape("cl_online", b.cl_online, (C,), u8)
        self.work = _shape("work", b.work, (C,), u8)

    @property
    def buffers(self):
        return self._buffers

    def run(self, double dt_ms, bint reset_request=False):
        """One fast-loop tick of dt_ms milliseconds. Returns the PCS setpoint (W, > 0 discharging)."""
        if not (dt_ms >= 0.0):
            raise ValueError(f"dt_ms must be >= 0, got {dt_ms}")
        with nogil:
            self._run(dt_ms, reset_request)
        return self.results[TO_SETPOINT_W]

    cdef void _run(self, double dt_ms, bint reset_request) noexcept nogil:
        cdef Py_ssize_t C = self.n_clusters, N = self.n_cells, P = self.n_packs, c, n_v
        cdef const double* tp = &self.params[0]
        cdef double* out = &self.results[0]
        cdef double dt_s = dt_ms * 1e-3, v_dc, v, chg_w, dchg_w, target
        cdef uint8_t* clp
        cdef Py_ssize_t n_changed

        aggregate_cells(C, N, P, &self.cell_v[0, 0], &self.cell_t[0, 0], &self.fresh[0, 0],
                        tp[TP_V_LO], tp[TP_V_HI], tp[TP_T_LO], tp[TP_T_HI],
                        &self.agg_f[0, 0], &self.agg_i[0, 0], &self.pack_f[0, 0, 0], &self.pack_i[0, 0, 0],
                        &self.stack_f[0], &self.stack_i[0])
        estimate_soc(C, N, P, &self.cell_v[0, 0], &self.cell_t[0, 0], &self.fresh[0, 0], &self.cluster_in[0, 0],
                     &self.cluster_flags[0, 0], &self.agg_i[0, 0], &self.agg_f[0, 0], &self.capacity_ah[0, 0], tp,
                     &self.est_params[0], &self.ocv_v[0], &self.hyst_v[0], self.ocv_v.shape[0], &self.cell_soc[0, 0],
                     &self.cell_sig[0, 0], &self.est_state[0, 0], dt_s, &self.charge_ah[0, 0],
                     &self.soc_pct[0, 0], &self.soc_out[0, 0], &self.anchored[0], &self.stack_soc[0])
        fill_sources(C, &self.agg_f[0, 0], &self.agg_i[0, 0], &self.cluster_in[0, 0], &self.soc_out[0, 0],
                     &self.sources[0, 0])
        n_changed = evaluate_table(self.n_rows, C, &self.table_f[0, 0], &self.table_i[0, 0],
                                   &self.sources[0, 0], &self.cluster_in[0, 0], tp[TP_IDLE_A], dt_ms,
                                   tp[TP_TRIP_DELAY_MS], reset_request, &self.prot_bits[0, 0],
                                   &self.prot_timers[0, 0, 0], &self.prot_level[0, 0],
                                   &self.prot_changed[0, 0], &self.cluster_prot[0, 0],
                                   &self.trip_timer_ms[0], tp[TP_TRIP_OPEN_A], tp[TP_TRIP_MAX_WAIT_MS])
        derate_clusters(self.n_rows, C, &self.table_f[0, 0], &self.table_i[0, 0], &self.sources[0, 0],
                        &self.cluster_in[0, 0], &self.cluster_flags[0, 0], &self.cluster_prot[0, 0],
                        tp[TP_STACK_MAX_CHG_A], tp[TP_STACK_MAX_DCHG_A], &self.derated[0, 0],
                        &out[TO_STACK_CHG_A])
        balance_cells(C, N, P, &self.cell_v[0, 0], &self.fresh[0, 0], tp[TP_V_LO], tp[TP_V_HI],
                      &self.agg_f[0, 0], &self.pack_f[0, 0, 0], &self.cluster_flags[0, 0], tp[TP_BAL_ON_MV], tp[TP_BAL_OFF_MV],
                      tp[TP_BAL_V_MIN], &self.balancing[0, 0], &self.balance_count[0])
        decide_bypass(C, P, N // P, &self.pack_f[0, 0, 0], &self.pack_i[0, 0, 0], &self.pack_pole_t[0, 0],
                      &self.soc_pct[0, 0], &self.cluster_in[0, 0], &self.bypass_params[0],
                      &self.bypass[0, 0], &self.bypass_denied[0])

        # current limits → power limits at the DC voltage of the connected clusters
        v_dc = 0.0
        n_v = 0
        out[TO_ANY_TRIP_PENDING] = 0.0
        out[TO_ANY_TRIPPED] = 0.0
        for c in range(C):
            clp = &self.cluster_prot[c, 0]
            if clp[CLP_TRIP_PENDING]:
                out[TO_ANY_TRIP_PENDING] = 1.0
            if clp[CLP_TRIPPED]:
                out[TO_ANY_TRIPPED] = 1.0
            v = self.cluster_in[c, CL_V]
            self.cl_online[c] = 0
            self.cl_chg_w[c] = 0.0
            self.cl_dchg_w[c] = 0.0
            if self.cluster_flags[c, CLF_CONNECTED] and not isnan(v) and v > 0.0:
                v_dc += v
                n_v += 1
                self.cl_online[c] = 0 if clp[CLP_TRIPPED] else 1
                self.cl_chg_w[c] = self.derated[c, DR_CHG_A] * v
                self.cl_dchg_w[c] = self.derated[c, DR_DCHG_A] * v
            self.cl_e_chg[c] = self.soc_out[c, SOC_SOE_CHG_WH]
            self.cl_e_dchg[c] = self.soc_out[c, SOC_SOE_DCHG_WH]
        v_dc = v_dc / n_v if n_v > 0 else 0.0
        chg_w = dmin(out[TO_STACK_CHG_A] * v_dc, dmax(tp[TP_PCS_MAX_CHG_W], 0.0))
        dchg_w = dmin(out[TO_STACK_DCHG_A] * v_dc, dmax(tp[TP_PCS_MAX_DCHG_W], 0.0))
        out[TO_DC_V] = v_dc
        out[TO_CHG_LIMIT_W] = chg_w
        out[TO_DCHG_LIMIT_W] = dchg_w

        target = narrow_requests(self.n_requests, &self.req_kind[0] if self.n_requests else NULL,
                                 &self.req_value[0] if self.n_requests else NULL,
                                 &self.req_active[0] if self.n_requests else NULL, -chg_w, dchg_w,
                                 &self.req_status[0] if self.n_requests else NULL, &self.interval[0])
        out[TO_TARGET_W] = target
        out[TO_INTERVAL_LO_W] = self.interval[0]
        out[TO_INTERVAL_HI_W] = self.interval[1]
        out[TO_SETPOINT_W] = next_setpoint(target, out[TO_SETPOINT_W], -chg_w, dchg_w,
                                           tp[TP_RAMP_W_PER_S], dt_s, tp[TP_DEADBAND_W])
        out[TO_UNALLOCATED_W] = distribute_power(C, out[TO_SETPOINT_W], &self.cl_chg_w[0],
                                                 &self.cl_dchg_w[0], &self.cl_e_chg[0], &self.cl_e_dchg[0],
                                                 &self.cl_online[0], &self.cluster_w[0], &self.work[0])
        out[TO_N_CHANGED] = <double>n_changed
