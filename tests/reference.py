"""Plain-NumPy reference implementations of every native kernel.

Written independently of the Cython code (vectorised where the Cython loops), they define what the
kernels must compute. Property tests assert kernel == reference on random inputs; the benchmarks time
both in the same run.
"""
from __future__ import annotations

import math

import numpy as np

from ems._core import layout as L


# ---------------------------------------------------------------- aggregation
def _stats(x: np.ndarray, ok: np.ndarray, axis: int):
    n = ok.sum(axis=axis)
    lo = np.where(ok, x, np.inf).min(axis=axis)
    hi = np.where(ok, x, -np.inf).max(axis=axis)
    lo_i = np.where(ok, x, np.inf).argmin(axis=axis)
    hi_i = np.where(ok, x, -np.inf).argmax(axis=axis)
    s = np.where(ok, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
    none = n == 0
    lo = np.where(none, np.nan, lo)
    hi = np.where(none, np.nan, hi)
    mean = np.where(none, np.nan, mean)
    lo_i = np.where(none, -1, lo_i)
    hi_i = np.where(none, -1, hi_i)
    return lo, hi, mean, lo_i, hi_i, n


def aggregate(cell_v, cell_t, fresh, n_packs, v_lo, v_hi, t_lo, t_hi):
    C, N = cell_v.shape
    f = fresh.astype(bool)
    with np.errstate(invalid="ignore"):
        okv = f & (cell_v >= v_lo) & (cell_v <= v_hi)
        okt = f & (cell_t >= t_lo) & (cell_t <= t_hi)
    cl_f = np.zeros((C, L.AGG_F_COLS))
    cl_i = np.zeros((C, L.AGG_I_COLS), np.int32)
    vmin, vmax, vmean, vmin_i, vmax_i, vn = _stats(cell_v, okv, 1)
    tmin, tmax, tmean, tmin_i, tmax_i, tn = _stats(cell_t, okt, 1)
    cl_f[:, L.AGG_V_MIN], cl_f[:, L.AGG_V_MAX], cl_f[:, L.AGG_V_MEAN] = vmin, vmax, vmean
    cl_f[:, L.AGG_V_SPREAD] = vmax - vmin
    cl_f[:, L.AGG_T_MIN], cl_f[:, L.AGG_T_MAX], cl_f[:, L.AGG_T_MEAN] = tmin, tmax, tmean
    cl_f[:, L.AGG_T_SPREAD] = tmax - tmin
    cl_i[:, L.AGG_V_MIN_CELL], cl_i[:, L.AGG_V_MAX_CELL] = vmin_i, vmax_i
    cl_i[:, L.AGG_T_MIN_CELL], cl_i[:, L.AGG_T_MAX_CELL] = tmin_i, tmax_i
    cl_i[:, L.AGG_V_INVALID], cl_i[:, L.AGG_T_INVALID] = N - vn, N - tn

    n = N // n_packs
    pv = cell_v.reshape(C, n_packs, n)
    pt = cell_t.reshape(C, n_packs, n)
    pokv = okv.reshape(C, n_packs, n)
    pokt = okt.reshape(C, n_packs, n)
    pack_f = np.zeros((C, n_packs, L.PACK_F_COLS))
    pack_i = np.zeros((C, n_packs, L.PACK_I_COLS), np.int32)
    a, b, m, _, _, cnt = _stats(pv, pokv, 2)
    pack_f[..., L.PACK_V_MIN], pack_f[..., L.PACK_V_MAX], pack_f[..., L.PACK_V_MEAN] = a, b, m
    pack_i[..., L.PACK_V_INVALID] = n - cnt
    a, b, _, _, _, cnt = _stats(pt, pokt, 2)
    pack_f[..., L.PACK_T_MIN], pack_f[..., L.PACK_T_MAX] = a, b
    pack_i[..., L.PACK_T_INVALID] = n - cnt

    stk_f = np.zeros(L.AGG_F_COLS)
    stk_i = np.zeros(L.STK_I_COLS, np.int32)
    for okx, x, cols, loc in ((okv, cell_v, (L.AGG_V_MIN, L.AGG_V_MAX, L.AGG_V_MEAN, L.AGG_V_SPREAD),
                               (L.STK_V_MIN_CLUSTER, L.STK_V_MAX_CLUSTER)),
                              (okt, cell_t, (L.AGG_T_MIN, L.AGG_T_MAX, L.AGG_T_MEAN, L.AGG_T_SPREAD),
                               (L.STK_T_MIN_CLUSTER, L.STK_T_MAX_CLUSTER))):
        lo, hi, mean, lo_i, hi_i, _ = _stats(x.ravel(), okx.ravel(), 0)
        stk_f[cols[0]], stk_f[cols[1]], stk_f[cols[2]], stk_f[cols[3]] = lo, hi, mean, hi - lo
        for k, idx in ((loc[0], lo_i), (loc[1], hi_i)):
            stk_i[k], stk_i[k + 1] = (idx // N, idx % N) if idx >= 0 else (-1, -1)
    stk_i[L.STK_V_INVALID] = cl_i[:, L.AGG_V_INVALID].sum()
    stk_i[L.STK_T_INVALID] = cl_i[:, L.AGG_T_INVALID].sum()
    return cl_f, cl_i, pack_f, pack_i, stk_f, stk_i


# ---------------------------------------------------------------- protection
def sources(cl_f, cl_i, cl_in, soc_out):
    C = cl_f.shape[0]
    s = np.zeros((L.SRC_COUNT, C))
    s[L.SRC_CELL_V_MAX] = cl_f[:, L.AGG_V_MAX]
    s[L.SRC_CELL_V_MIN] = cl_f[:, L.AGG_V_MIN]
    s[L.SRC_CELL_T_MAX] = cl_f[:, L.AGG_T_MAX]
    s[L.SRC_CELL_T_MIN] = cl_f[:, L.AGG_T_MIN]
    s[L.SRC_CELL_V_SPREAD] = cl_f[:, L.AGG_V_SPREAD]
    s[L.SRC_CELL_T_SPREAD] = cl_f[:, L.AGG_T_SPREAD]
    s[L.SRC_CLUSTER_V] = cl_in[:, L.CL_V]
    i = cl_in[:, L.CL_I]
    s[L.SRC_CHARGE_A] = np.where(np.isnan(i), np.nan, np.clip(-i, 0.0, None))
    s[L.SRC_DISCHARGE_A] = np.where(np.isnan(i), np.nan, np.clip(i, 0.0, None))
    s[L.SRC_INSULATION_KOHM] = cl_in[:, L.CL_INSULATION]
    s[L.SRC_POLE_T] = cl_in[:, L.CL_POLE_T]
    s[L.SRC_HVBOX_T] = cl_in[:, L.CL_HVBOX_T]
    s[L.SRC_T_SENSOR_INVALID] = (cl_i[:, L.AGG_T_INVALID] + np.isnan(cl_in[:, L.CL_POLE_T])
                                 + np.isnan(cl_in[:, L.CL_HVBOX_T]))
    s[L.SRC_V_SENSOR_INVALID] = cl_i[:, L.AGG_V_INVALID]
    s[L.SRC_CURRENT_MISSING] = np.isnan(i)
    s[L.SRC_CLUSTER_V_MISSING] = np.isnan(cl_in[:, L.CL_V])
    s[L.SRC_INSULATION_MISSING] = np.isnan(cl_in[:, L.CL_INSULATION])
    lost = cl_in[:, L.CL_LINK_LOST] > 0.5        # the BMS link is lost: the sensor rows hold
    for k in (L.SRC_T_SENSOR_INVALID, L.SRC_V_SENSOR_INVALID, L.SRC_CURRENT_MISSING, L.SRC_CLUSTER_V_MISSING,
              L.SRC_INSULATION_MISSING):
        s[k] = np.where(lost, np.nan, s[k])
    s[L.SRC_SOC_MEAN] = soc_out[:, L.SOC_MEAN] if soc_out is not None else np.nan
    return s


class ProtectionState:
    def __init__(self, Q, C):
        self.bits = np.zeros((Q, C), np.uint8)
        self.timers = np.zeros((Q, C, L.PS_T_COLS))
        self.level = np.zeros((Q, C), np.int8)
        self.changed = np.zeros((Q, C), np.uint8)
        self.cl_prot = np.zeros((C, L.CLP_COLS), np.uint8)
        self.trip_timer = np.zeros(C)


def protection_step(table_f, table_i, src, cl_in, idle_a, dt_ms, trip_delay_ms, reset, st: ProtectionState,
                    trip_open_a=math.inf, trip_max_wait_ms=0.0):
    x = src[table_i[:, L.PT_SOURCE], :]
    direction = table_i[:, L.PT_DIR][:, None]
    when = table_i[:, L.PT_WHEN][:, None]
    with np.errstate(invalid="ignore"):
        charging = (cl_in[:, L.CL_I] < -idle_a)[None, :]
    applies = (when == L.WHEN_ALWAYS) | ((when == L.WHEN_CHARGING) & charging) | (
        (when == L.WHEN_NOT_CHARGING) & ~charging)
    valid = ~np.isnan(x)
    bits = st.bits.copy()
    for lv in range(3):
        thr = table_f[:, L.PT_THR0 + lv][:, None]
        hyst = table_f[:, L.PT_HYST0 + lv][:, None]
        set_ms = table_f[:, L.PT_SET_MS0 + lv][:, None]
        clr_ms = table_f[:, L.PT_CLR_MS0 + lv][:, None]
        with np.errstate(invalid="ignore"):
            violated = np.where(direction > 0, x > thr, x < thr) & applies
            gone = np.where(direction > 0, x < thr - hyst, x > thr + hyst) | ~applies
        mask = np.uint8(1 << lv)
        active = (bits & mask) != 0
        set_t = st.timers[..., L.PS_SET0 + lv]
        clr_t = st.timers[..., L.PS_CLR0 + lv]
        # inactive levels: debounce
        idle = valid & ~active
        set_t[idle & ~violated] = 0.0
        counting = idle & violated
        set_t[counting] += dt_ms
        sets = counting & (set_t >= set_ms)
        # active levels: clear after the condition has been gone long enough (faults also need reset)
        on = valid & active
        clr_t[on & ~gone] = 0.0
        clr_t[on & gone] += dt_ms
        clears = on & (clr_t >= clr_ms) & (lv < 2 or bool(reset))
        bits[sets] |= mask
        set_t[sets] = 0.0
        clr_t[sets] = 0.0
        bits[clears] &= np.uint8(~mask & 0xFF)
        clr_t[clears] = 0.0
        set_t[clears] = 0.0
    new_level = np.where(bits & 4, 3, np.where(bits & 2, 2, np.where(bits & 1, 1, 0))).astype(np.int8)
    st.changed[:] = new_level != st.level
    st.level[:] = new_level
    st.bits[:] = bits
    fault = (bits & 4) != 0
    any_fault = fault.any(axis=0)
    any_trip = (fault & (table_i[:, L.PT_TRIPS][:, None] != 0)).any(axis=0)
    cp = st.cl_prot
    for c in range(cp.shape[0]):
        if any_trip[c]:
            if not cp[c, L.CLP_TRIPPED]:
                if not cp[c, L.CLP_TRIP_PENDING]:
                    cp[c, L.CLP_TRIP_PENDING] = 1
                    st.trip_timer[c] = 0.0
                st.trip_timer[c] += dt_ms
                i_a = cl_in[c, L.CL_I]
                if st.trip_timer[c] >= trip_delay_ms and (
                        (not math.isnan(i_a) and abs(i_a) <= trip_open_a) or st.trip_timer[c] >= trip_max_wait_ms):
                    cp[c, L.CLP_TRIPPED], cp[c, L.CLP_TRIP_PENDING] = 1, 0
        else:
            cp[c, L.CLP_TRIP_PENDING] = cp[c, L.CLP_TRIPPED] = 0
            st.trip_timer[c] = 0.0
    cp[:, L.CLP_CHG_ALLOWED] = ~any_fault
    cp[:, L.CLP_DCHG_ALLOWED] = ~any_fault
    return int(st.changed.sum())


# ---------------------------------------------------------------- derating
def derate(table_f, table_i, src, cl_in, cl_flags, cl_prot, stack_max_chg_a, stack_max_dchg_a):
    C = src.shape[1]
    fc = np.ones(C)
    fd = np.ones(C)
    for q in range(table_f.shape[0]):
        mask = table_i[q, L.PT_DERATE]
        op, sl = table_f[q, L.PT_THR0], table_f[q, L.PT_THR2]
        if mask == 0 or np.isinf(op) or np.isinf(sl):
            continue
        x = src[table_i[q, L.PT_SOURCE]]
        frac = (sl - x) / (sl - op) if table_i[q, L.PT_DIR] > 0 else (x - sl) / (op - sl)
        f = np.where(np.isnan(x), 0.0, np.clip(frac, 0.0, 1.0))
        if mask & L.DIR_CHARGE:
            fc = np.minimum(fc, f)
        if mask & L.DIR_DISCHARGE:
            fd = np.minimum(fd, f)
    chg = np.clip(cl_in[:, L.CL_RATED_CHG_A], 0.0, None) * fc
    dchg = np.clip(cl_in[:, L.CL_RATED_DCHG_A], 0.0, None) * fd
    bc, bd = cl_in[:, L.CL_BMS_CHG_A], cl_in[:, L.CL_BMS_DCHG_A]
    chg = np.where(np.isnan(bc), 0.0, np.minimum(chg, np.clip(bc, 0.0, None)))
    dchg = np.where(np.isnan(bd), 0.0, np.minimum(dchg, np.clip(bd, 0.0, None)))
    conn = cl_flags[:, L.CLF_CONNECTED] != 0
    chg = np.where(conn & (cl_prot[:, L.CLP_CHG_ALLOWED] != 0), chg, 0.0)
    dchg = np.where(conn & (cl_prot[:, L.CLP_DCHG_ALLOWED] != 0), dchg, 0.0)
    chg = np.nan_to_num(chg, nan=0.0)
    dchg = np.nan_to_num(dchg, nan=0.0)
    out = np.stack([chg, dchg, fc, fd], axis=1)
    n = conn.sum()
    if n == 0:
        stack = np.zeros(2)
    else:
        stack = np.array([min(n * chg[conn].min(), max(stack_max_chg_a, 0.0)),
                          min(n * dchg[conn].min(), max(stack_max_dchg_a, 0.0))])
    return out, stack


# ---------------------------------------------------------------- SOC counting
def _ocv(ocv, s):
    m = len(ocv)
    x = np.clip(s, 0.0, 1.0) * (m - 1)
    j = np.minimum(x.astype(np.intp), m - 2)
    return ocv[j] + (x - j) * (ocv[j + 1] - ocv[j]), (ocv[j + 1] - ocv[j]) * (m - 1)


def _on_grid(a, s):
    """a on the uniform SOC grid at s; NaN where s is NaN (a cell without a voltage)."""
    return np.where(np.isnan(s), np.nan, _ocv(a, np.nan_to_num(s))[0])


def _soc_of(ocv, v):
    return np.interp(v, ocv, np.linspace(0.0, 1.0, len(ocv)))


def _settle(se, v, dt, tau):
    """The rest's settling fit (soc.pyx settle): a forgetting least-squares line; (slope V/s, value now)."""
    lam = np.exp(-dt / tau)
    s0, s1, s2, sy, sxy = se[L.SE_RX_S0:L.SE_RX_SXY + 1]
    s2 = lam * (s2 - 2 * dt * s1 + dt * dt * s0)
    s1 = lam * (s1 - dt * s0)
    sxy = lam * (sxy - dt * sy)
    s0 = lam * s0 + 1.0
    sy = lam * sy + v
    se[L.SE_RX_S0:L.SE_RX_SXY + 1] = s0, s1, s2, sy, sxy
    det = s0 * s2 - s1 * s1
    if se[L.SE_REST_S] < tau or not det > 0:
        return np.nan, v
    b = (s0 * sxy - s1 * sy) / det
    return b, (sy - b * s1) / s0


class SocReference:
    """The SOC estimator (ems/_core/soc.pyx) in NumPy: per-tick accumulation, cell step, roll-up."""

    def __init__(self, cell_soc, cell_sig, state, out_acc):
        self.soc, self.sig, self.se = cell_soc.copy(), cell_sig.copy(), state.copy()
        self.acc = out_acc.copy()          # (C, 2): Ah charged, discharged
        self.out = np.zeros((cell_soc.shape[0], L.SOC_COLS))
        self.stack = np.zeros(L.SOC_COLS)
        self.charge_ah = None
        self.soc_pct = None
        self.anchored = np.zeros(cell_soc.shape[0], np.uint8)

    def step(self, cell_v, cell_t, fresh, cl_in, cl_flags, agg_i, agg_f, cap, tp, ep, ocv, hyst, dt_s):
        se = self.se
        C, N = cell_v.shape
        P = cap.shape[1]
        i = cl_in[:, L.CL_I] - se[:, L.SE_OFFSET_A]
        with np.errstate(invalid="ignore"):
            i = np.where(np.abs(i) <= ep[L.EP_ZERO_A], 0.0, i)
            nan = np.isnan(i)
            dch = np.where(~nan & (i > 0), i, 0.0) * dt_s / 3600.0
            ch = np.where(~nan & (i <= 0), -i, 0.0) * dt_s / 3600.0
            rest = ~nan & (np.abs(i) <= tp[L.TP_IDLE_A])
        se[:, L.SE_PEND_UNKNOWN_S] += np.where(nan, dt_s, 0.0)
        se[:, L.SE_PEND_COUNTED_S] += np.where(~nan & (i != 0.0), dt_s, 0.0)
        se[:, L.SE_PEND_DCHG_AH] += dch
        se[:, L.SE_PEND_CHG_AH] += ch
        self.acc[:, 0] += ch
        self.acc[:, 1] += dch
        se[:, L.SE_REST_S] = np.where(rest, se[:, L.SE_REST_S] + dt_s, 0.0)
        se[:, L.SE_REST_DONE] = np.where(rest, se[:, L.SE_REST_DONE], 0.0)
        broken = ~rest
        se[broken, L.SE_RX_S0:L.SE_RX_SXY + 1] = 0.0          # the rest's settling fit starts again
        se[broken, L.SE_RX_RATE] = np.nan
        se[:, L.SE_PEND_S] += dt_s
        self.out[:, L.SOC_AH_CHARGED], self.out[:, L.SOC_AH_DISCHARGED] = self.acc[:, 0], self.acc[:, 1]
        self.stack[L.SOC_AH_CHARGED], self.stack[L.SOC_AH_DISCHARGED] = self.acc[:, 0].sum(), self.acc[:, 1].sum()
        if not (se[:, L.SE_PEND_S] >= ep[L.EP_STEP_S]).any():
            self.anchored[:] = 0
            return
        n_per = N // P
        for c in range(C):
            self._cell_step(c, cell_v[c], cell_t[c], fresh[c], cl_in[c], cl_flags[c], agg_i[c], agg_f[c], cap[c],
                            tp, ep, ocv, hyst, n_per)
        self._roll_up(cap, tp, ep, n_per)

    def _cell_step(self, c, v, t, fresh, cl, flags, agg_i, agg_f, cap, tp, ep, ocv, hyst, n_per):
        se = self.se[c]
        i_now = cl[L.CL_I]
        dch, ch, ps, pu = se[L.SE_PEND_DCHG_AH], se[L.SE_PEND_CHG_AH], se[L.SE_PEND_S], se[L.SE_PEND_UNKNOWN_S]
        net = dch - tp[L.TP_ETA_CHARGE] * ch
        n_old = se[L.SE_NET_SINCE_AH]
        n_new = n_old + net
        se[L.SE_NET_AH] += net + se[L.SE_OFFSET_A] * ps / 3600.0
        se[L.SE_NET_SINCE_AH] = n_new
        hk = ep[L.EP_HYST_AH_FRAC] * cap.mean()
        h = se[L.SE_HYST]
        if hk > 0:
            if dch > 0:
                h = -1.0 + (h + 1.0) * np.exp(-dch / hk)
            if ch > 0:
                h = 1.0 + (h - 1.0) * np.exp(-ch / hk)
        h = min(max(h, -1.0), 1.0)
        se[L.SE_HYST] = h
        known = not np.isnan(i_now)
        idle, taper = tp[L.TP_IDLE_A], ep[L.EP_TAPER_A]
        vmean = agg_f[L.AGG_V_MEAN]
        rate, v_cm = np.nan, 0.0
        if known and se[L.SE_REST_S] > 0 and not np.isnan(vmean):
            rate, v_fit = _settle(se, vmean, ps, ep[L.EP_RELAX_TAU_S])
            v_cm = v_fit - vmean
        se[L.SE_RX_RATE] = rate
        relax_v = abs(rate) * 3600.0 if not np.isnan(rate) else 0.0
        resting = (known and se[L.SE_REST_S] >= ep[L.EP_REST_S] and se[L.SE_REST_DONE] == 0
                   and bool(abs(rate) <= ep[L.EP_RELAX_RATE]))
        knee = known and ep[L.EP_KNEE] > 0 and abs(i_now) > idle
        full_ok = known and -taper <= i_now <= idle
        empty_ok = known and -idle <= i_now <= taper
        ir_v = i_now * ep[L.EP_R0_OHM] if known else 0.0
        ir = abs(ir_v)
        rated = max(cl[L.CL_RATED_CHG_A], cl[L.CL_RATED_DCHG_A])
        rated = rated if rated > 0 else None
        capc = np.repeat(cap, n_per)
        dsoc = net / capc
        dsig = (np.hypot(se[L.SE_GAIN_ERR], se[L.SE_CAP_ERR]) * (abs(n_new) - abs(n_old)) + se[L.SE_OFFSET_BOUND_A] * se[L.SE_PEND_COUNTED_S] / 3600.0
                + (rated if rated is not None else capc) * pu / 3600.0) / capc
        s = np.clip(self.soc[c] - dsoc, 0.0, 1.0)
        g = np.clip(self.sig[c] + dsig, ep[L.EP_SIG_MIN], 1.0)
        with np.errstate(invalid="ignore"):
            v_ok = (fresh != 0) & (v >= tp[L.TP_V_LO]) & (v <= tp[L.TP_V_HI])
            if resting:
                v = v + v_cm            # the cluster's common-mode noise out
            full = v_ok & full_ok & (v >= tp[L.TP_V_FULL] - 2 * ep[L.EP_SIG_V])
            empty = v_ok & ~full & empty_ok & (v <= tp[L.TP_V_EMPTY] + 2 * ep[L.EP_SIG_V])
            vc = v + ir_v - h * _on_grid(hyst, s)           # the band check: width at the prior SOC
            t_ok = (t >= tp[L.TP_T_LO]) & (t <= tp[L.TP_T_HI]) & (t >= ep[L.EP_T_MIN]) & (t <= ep[L.EP_T_MAX])
            if resting:
                band = (vc <= ep[L.EP_REST_V_LO]) | (vc >= ep[L.EP_REST_V_HI])
            elif knee:
                band = (vc + ir <= ep[L.EP_KNEE_V_LO]) | (vc - ir >= ep[L.EP_KNEE_V_HI])
            else:
                band = np.zeros_like(v_ok)
        upd = v_ok & ~full & ~empty & t_ok & band
        kinds = 0
        sums = [0.0, 0.0, 0.0]
        if full.any():
            kinds |= L.ANCHOR_FULL
            sums = [sums[0] + full.sum(), sums[1] + full.sum(), sums[2] + full.sum() * ep[L.EP_SIG_FULL] ** 2]
        if empty.any():
            kinds |= L.ANCHOR_EMPTY
            sums = [sums[0] + empty.sum(), sums[1], sums[2] + empty.sum() * ep[L.EP_SIG_EMPTY] ** 2]
        if upd.any():
            hv = _on_grid(hyst, _soc_of(ocv, vc[upd]))      # the update: width where the voltage says
            vc = vc.copy()
            vc[upd] = v[upd] + ir_v - h * hv
            r_u = (ep[L.EP_SIG_V] ** 2 + (hv * (1 - abs(h))) ** 2 + (0.5 * hv) ** 2
                   + (relax_v ** 2 if resting else ir * ir))
            sig_m = 0.25 * (_soc_of(ocv, vc[upd] + 2 * np.sqrt(r_u)) - _soc_of(ocv, vc[upd] - 2 * np.sqrt(r_u)))
            keep = sig_m <= ep[L.EP_OCV_MAX_SIG]          # only where the curve says the SOC to within this
            idx = np.flatnonzero(upd)
            upd = np.zeros_like(upd)
            upd[idx[keep]] = True
            r_u = np.broadcast_to(r_u, keep.shape)[keep]
            sig_m = sig_m[keep]
        if upd.any():
            x0, var = s[upd], g[upd] ** 2
            xi = _soc_of(ocv, vc[upd])
            for _ in range(3):
                o, hh = _ocv(ocv, xi)
                hh = np.maximum(hh, 1e-6)
                k = var * hh / (hh * hh * var + r_u)
                xi = np.clip(x0 + k * (vc[upd] - o - hh * (x0 - xi)), 0.0, 1.0)
            post = np.maximum((1 - k * hh) * var, 0.0)
            sm = _soc_of(ocv, vc[upd])
            s[upd] = xi
            g[upd] = np.maximum(np.sqrt(post), sig_m)
            kinds |= L.ANCHOR_OCV if resting else L.ANCHOR_KNEE
            sums = [sums[0] + upd.sum(), sums[1] + sm.sum(), sums[2] + (sig_m ** 2).sum()]
        s = np.where(full, 1.0, np.where(empty, 0.0, s))
        g = np.where(full, ep[L.EP_SIG_FULL], np.where(empty, ep[L.EP_SIG_EMPTY], g))
        g = np.maximum(g, ep[L.EP_SIG_MIN])
        N = len(s)
        mx = agg_i[L.AGG_V_MAX_CELL]
        if flags[L.CLF_CHG_PROHIBITED] and known and i_now <= idle and 0 <= mx < N:
            s = np.clip(s + (1.0 - s[mx]), 0.0, 1.0)
            g = np.maximum(np.minimum(g, ep[L.EP_SIG_SHIFT]), ep[L.EP_SIG_MIN])
            s[mx], g[mx] = 1.0, max(ep[L.EP_SIG_FULL], ep[L.EP_SIG_MIN])
            kinds |= L.ANCHOR_FULL
            sums = [1.0, 1.0, ep[L.EP_SIG_FULL] ** 2]
        mn = agg_i[L.AGG_V_MIN_CELL]
        if flags[L.CLF_DCHG_PROHIBITED] and known and i_now >= -idle and 0 <= mn < N:
            s = np.clip(s - s[mn], 0.0, 1.0)
            g = np.maximum(np.minimum(g, ep[L.EP_SIG_SHIFT]), ep[L.EP_SIG_MIN])
            s[mn], g[mn] = 0.0, max(ep[L.EP_SIG_EMPTY], ep[L.EP_SIG_MIN])
            kinds |= L.ANCHOR_EMPTY
            sums = [1.0, 0.0, ep[L.EP_SIG_EMPTY] ** 2]
        self.soc[c], self.sig[c] = s, g
        if sums[0] > 0:
            se[L.SE_ANCHOR_SEQ] += 1
            se[L.SE_ANCHOR_SOC], se[L.SE_ANCHOR_VAR] = sums[1] / sums[0], sums[2] / sums[0]
            se[L.SE_ANCHOR_NET_AH] = se[L.SE_NET_AH]
            se[L.SE_NET_SINCE_AH] = 0.0
        self.anchored[c] = kinds
        if resting:
            se[L.SE_REST_DONE] = 1.0
        if (known and not np.isnan(se[L.SE_PREV_I]) and not np.isnan(vmean) and not np.isnan(se[L.SE_PREV_V])
                and ps <= 2.0 and abs(i_now - se[L.SE_PREV_I]) >= ep[L.EP_R_STEP_A]):
            r = -(vmean - se[L.SE_PREV_V]) / (i_now - se[L.SE_PREV_I])
            if r > 0:
                se[L.SE_R_SEQ] += 1
                se[L.SE_R_OHM] = r
        se[L.SE_PREV_I], se[L.SE_PREV_V] = i_now, vmean
        se[[L.SE_PEND_DCHG_AH, L.SE_PEND_CHG_AH, L.SE_PEND_S, L.SE_PEND_UNKNOWN_S, L.SE_PEND_COUNTED_S]] = 0.0

    def _roll_up(self, cap, tp, ep, n_per):
        C, N = self.soc.shape
        P = cap.shape[1]
        s = self.soc.reshape(C, P, n_per)
        g = self.sig.reshape(C, P, n_per)
        pack = s.mean(axis=2)
        self.soc_pct = 100.0 * pack
        self.charge_ah = pack * cap
        o = self.out
        capsum = cap.sum(axis=1)
        o[:, L.SOC_MIN] = 100.0 * self.soc.min(axis=1)
        o[:, L.SOC_MAX] = 100.0 * self.soc.max(axis=1)
        o[:, L.SOC_MEAN] = 100.0 * (pack * cap).sum(axis=1) / capsum
        v_nom = tp[L.TP_CLUSTER_NOMINAL_V]
        o[:, L.SOC_SOE_DCHG_WH] = np.maximum((s * cap[..., None]).min(axis=(1, 2)), 0.0) * v_nom
        o[:, L.SOC_SOE_CHG_WH] = np.maximum(((1 - s) * cap[..., None]).min(axis=(1, 2)), 0.0) * v_nom
        o[:, L.SOC_BOUND] = np.minimum(100.0 * ep[L.EP_BOUND_K] * (g.mean(axis=2) * cap).sum(axis=1) / capsum, 100.0)
        o[:, L.SOC_BOUND_MAX] = np.minimum(100.0 * ep[L.EP_BOUND_K] * self.sig.max(axis=1), 100.0)
        st = self.stack
        st[L.SOC_MIN], st[L.SOC_MAX] = o[:, L.SOC_MIN].min(), o[:, L.SOC_MAX].max()
        st[L.SOC_MEAN] = (o[:, L.SOC_MEAN] * capsum).sum() / capsum.sum()
        st[L.SOC_SOE_DCHG_WH], st[L.SOC_SOE_CHG_WH] = o[:, L.SOC_SOE_DCHG_WH].sum(), o[:, L.SOC_SOE_CHG_WH].sum()
        st[L.SOC_BOUND] = (o[:, L.SOC_BOUND] * capsum).sum() / capsum.sum()
        st[L.SOC_BOUND_MAX] = o[:, L.SOC_BOUND_MAX].max()


# ---------------------------------------------------------------- balancing and bypass
def balance(cell_v, fresh, v_lo, v_hi, cl_f, cl_flags, on_mv, off_mv, v_min_bal, prev):
    vmin = cl_f[:, L.AGG_V_MIN][:, None]
    allowed = (cl_flags[:, L.CLF_BALANCE_ALLOWED] != 0)[:, None] & ~np.isnan(vmin)
    with np.errstate(invalid="ignore"):
        ok = (fresh != 0) & (cell_v >= v_lo) & (cell_v <= v_hi)
        keep = (prev != 0) & (cell_v > vmin + off_mv * 1e-3)
        start = (prev == 0) & (cell_v > np.maximum(vmin + on_mv * 1e-3, v_min_bal))
    bal = allowed & ok & (keep | start)
    return bal.astype(np.uint8), bal.sum(axis=1).astype(np.int32)


def bypass(pack_f, pack_i, pole_t, soc, cl_in, cells_per_pack, bp, prev):
    C, P = soc.shape
    dec = np.zeros((C, P), np.uint8)
    denied = np.zeros(C, np.int32)
    if bp[L.BP_ENABLED] < 0.5:
        return dec, denied
    idle = bp[L.BP_IDLE_A]
    for c in range(C):
        i = cl_in[c, L.CL_I]
        charging, discharging = i < -idle, i > idle
        bit = (1 if charging else 2) if bp[L.BP_ON_GRID] >= 0.5 else (4 if charging else 8)
        consistency = (charging or discharging) and (int(bp[L.BP_CONSISTENCY_MODES]) & bit) != 0
        vmean = pack_f[c, :, L.PACK_V_MEAN]
        pack_v = np.where(np.isnan(vmean), bp[L.BP_NOMINAL_CELL_V], vmean) * cells_per_pack
        remaining = pack_v.sum()
        ot = bp[L.BP_CELL_OT_CHG_DEGC] if charging else bp[L.BP_CELL_OT_DCHG_DEGC]
        lt = bp[L.BP_CELL_LT_CHG_DEGC] if charging else bp[L.BP_CELL_LT_DCHG_DEGC]
        cands = []
        for p in range(P):
            was = prev[c, p] == L.BYP_FAULT
            hv = bp[L.BP_V_HYST] if was else 0.0
            ht = bp[L.BP_T_HYST] if was else 0.0
            f = pack_f[c, p]
            faulty = (pack_i[c, p].sum() > 0 or f[L.PACK_V_MAX] > bp[L.BP_CELL_OV_V] - hv
                      or f[L.PACK_V_MIN] < bp[L.BP_CELL_UV_V] + hv or f[L.PACK_T_MAX] > ot - ht
                      or f[L.PACK_T_MIN] < lt + ht or pole_t[c, p] > bp[L.BP_POLE_OT_DEGC] - ht)
            if faulty:
                cands.append((1e9, p, L.BYP_FAULT))
            elif consistency:
                spread = soc[c, p] - soc[c].min() if charging else soc[c].max() - soc[c, p]
                if spread > bp[L.BP_SPREAD_ON_PCT] or (prev[c, p] == L.BYP_CONSISTENCY
                                                      and spread > bp[L.BP_SPREAD_OFF_PCT]):
                    cands.append((spread, p, L.BYP_CONSISTENCY))
        cands.sort(key=lambda t: -t[0])   # stable: equal keys keep pack order
        n = 0
        for _, p, why in cands:
            if n < int(bp[L.BP_MAX_PER_CLUSTER]) and remaining - pack_v[p] >= bp[L.BP_DC_MIN_V]:
                dec[c, p] = why
                remaining -= pack_v[p]
                n += 1
            elif why == L.BYP_FAULT:
                denied[c] += 1
    return dec, denied


# ---------------------------------------------------------------- arbitration and setpoint
def arbitrate(kind, value, active, charge_limit_w, discharge_limit_w):
    lo, hi = -charge_limit_w, discharge_limit_w
    status = np.zeros(len(kind), np.uint8)
    for k in range(len(kind)):
        v = value[k]
        if not active[k]:
            status[k] = L.RS_INACTIVE
        elif np.isnan(v) or kind[k] not in (L.REQ_LE, L.REQ_GE, L.REQ_EQ, L.REQ_TARGET):
            status[k] = L.RS_DROPPED
        elif kind[k] == L.REQ_TARGET:
            c = min(max(v, lo), hi)
            status[k] = L.RS_APPLIED if c == v else L.RS_CLAMPED
            lo = hi = c
        else:
            new_lo = max(lo, v) if kind[k] in (L.REQ_GE, L.REQ_EQ) else lo
            new_hi = min(hi, v) if kind[k] in (L.REQ_LE, L.REQ_EQ) else hi
            if new_lo > new_hi:
                status[k] = L.RS_DROPPED
            else:
                lo, hi = new_lo, new_hi
                status[k] = L.RS_APPLIED
    target = lo if lo > 0 else (hi if hi < 0 else 0.0)
    return target, status, (lo, hi)


def setpoint(target, prev, charge_limit_w, discharge_limit_w, ramp, dt_s, deadband):
    prev = 0.0 if np.isnan(prev) else prev
    target = 0.0 if np.isnan(target) else target
    t = prev if (target != 0.0 and abs(target - prev) < deadband) else target
    if ramp > 0:
        t = min(max(t, prev - ramp * dt_s), prev + ramp * dt_s)
    return min(max(t, -charge_limit_w), discharge_limit_w)


def distribute(total, chg_max, dchg_max, e_chg, e_dchg, online):
    out = np.zeros(len(chg_max))
    if np.isnan(total) or total == 0:
        return out, (total if np.isnan(total) else 0.0)
    cap, w, sign = (dchg_max, e_dchg, 1.0) if total > 0 else (chg_max, e_chg, -1.0)
    free = (online != 0) & (cap > 0) & (w > 0)
    need = abs(total)
    while need > 1e-9:
        wsum = w[free].sum()
        if wsum <= 0:
            break
        with np.errstate(over="ignore", invalid="ignore"):   # subnormal weight sums, as in the kernel
            over = free & (out + need * w / wsum >= cap)
        if over.any():
            need -= (cap[over] - out[over]).sum()
            out[over] = cap[over]
            free &= ~over
        else:
            out[free] += need * w[free] / wsum
            need = 0.0
    given = out.sum()
    return sign * out, sign * (abs(total) - given)


# ---------------------------------------------------------------- the full tick
class ReferenceTick:
    """The fast-loop tick composed from the references above, on a CoreBuffers' inputs and its own state."""

    def __init__(self, buffers):
        b = buffers
        self.b = b
        C, P = b.capacity_ah.shape
        self.prot = ProtectionState(b.table_f.shape[0], C)
        self.soc = SocReference(b.cell_soc, b.cell_sig, b.est_state,
                                b.soc_out[:, [L.SOC_AH_CHARGED, L.SOC_AH_DISCHARGED]])
        self.soc.soc_pct, self.soc.charge_ah = b.soc_pct.copy(), b.charge_ah.copy()   # results until the next step
        self.soc.out[:], self.soc.stack[:] = b.soc_out, b.stack_soc
        self.balancing = b.balancing.copy()
        self.bypass = b.bypass.copy()
        self.setpoint_w = 0.0

    def run(self, dt_ms, reset=False):
        b, p = self.b, self.b.params
        C, N = b.cell_v.shape
        P = b.capacity_ah.shape[1]
        dt_s = dt_ms * 1e-3
        cl_f, cl_i, pack_f, pack_i, stk_f, stk_i = aggregate(b.cell_v, b.cell_t, b.fresh, P, p[L.TP_V_LO],
                                                             p[L.TP_V_HI], p[L.TP_T_LO], p[L.TP_T_HI])
        r = self.soc
        r.step(b.cell_v, b.cell_t, b.fresh, b.cluster_in, b.cluster_flags, cl_i, cl_f, b.capacity_ah, p,
               b.est_params, b.ocv_v, b.hyst_v, dt_s)
        soc, soc_out, anchored, stack_soc = r.soc_pct, r.out.copy(), r.anchored.copy(), r.stack.copy()
        src = sources(cl_f, cl_i, b.cluster_in, soc_out)
        n_changed = protection_step(b.table_f, b.table_i, src, b.cluster_in, p[L.TP_IDLE_A], dt_ms,
                                    p[L.TP_TRIP_DELAY_MS], reset, self.prot, p[L.TP_TRIP_OPEN_A],
                                    p[L.TP_TRIP_MAX_WAIT_MS])
        derated, stack_a = derate(b.table_f, b.table_i, src, b.cluster_in, b.cluster_flags, self.prot.cl_prot,
                                  p[L.TP_STACK_MAX_CHG_A], p[L.TP_STACK_MAX_DCHG_A])
        self.balancing, bal_count = balance(b.cell_v, b.fresh, p[L.TP_V_LO], p[L.TP_V_HI], cl_f, b.cluster_flags,
                                            p[L.TP_BAL_ON_MV], p[L.TP_BAL_OFF_MV], p[L.TP_BAL_V_MIN],
                                            self.balancing)
        self.bypass, denied = bypass(pack_f, pack_i, b.pack_pole_t, soc, b.cluster_in, N // P, b.bypass_params,
                                     self.bypass)
        v = b.cluster_in[:, L.CL_V]
        with np.errstate(invalid="ignore"):
            ok = (b.cluster_flags[:, L.CLF_CONNECTED] != 0) & ~np.isnan(v) & (v > 0)
        v_dc = v[ok].mean() if ok.any() else 0.0
        chg_w = min(stack_a[0] * v_dc, max(p[L.TP_PCS_MAX_CHG_W], 0.0))
        dchg_w = min(stack_a[1] * v_dc, max(p[L.TP_PCS_MAX_DCHG_W], 0.0))
        target, status, interval = arbitrate(b.req_kind, b.req_value, b.req_active, chg_w, dchg_w)
        self.setpoint_w = setpoint(target, self.setpoint_w, chg_w, dchg_w, p[L.TP_RAMP_W_PER_S], dt_s,
                                   p[L.TP_DEADBAND_W])
        online = ok & (self.prot.cl_prot[:, L.CLP_TRIPPED] == 0)
        vv = np.where(ok, v, 0.0)
        cluster_w, unallocated = distribute(self.setpoint_w, np.where(ok, derated[:, 0] * vv, 0.0),
                                            np.where(ok, derated[:, 1] * vv, 0.0), soc_out[:, L.SOC_SOE_CHG_WH],
                                            soc_out[:, L.SOC_SOE_DCHG_WH], online)
        return dict(agg_f=cl_f, agg_i=cl_i, pack_f=pack_f, pack_i=pack_i, stack_f=stk_f, stack_i=stk_i,
                    charge_ah=r.charge_ah, soc_pct=soc, soc_out=soc_out, cell_soc=r.soc, cell_sig=r.sig, anchored=anchored, stack_soc=stack_soc,
                    sources=src, prot_bits=self.prot.bits, prot_level=self.prot.level,
                    cluster_prot=self.prot.cl_prot, derated=derated, balancing=self.balancing,
                    balance_count=bal_count, bypass=self.bypass, bypass_denied=denied, req_status=status,
                    cluster_w=cluster_w, n_changed=n_changed, chg_w=chg_w, dchg_w=dchg_w, target=target,
                    setpoint=self.setpoint_w, unallocated=unallocated, stack_a=stack_a)
