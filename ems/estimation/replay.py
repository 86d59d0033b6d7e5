"""`ems replay-soc`: the controller's SOC estimator over a recorded single-cell trace.

The trace is one cell in a one-cell "stack": the same native kernel (ems._core.soc), the same parameters
as `[soc_estimation]` and the same SOH capacity learning as the running controller, one kernel call per
input row with that row's time step. Output: one row per input row.
"""
from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from typing import Iterable, TextIO

import numpy as np

from ems._core import layout as L
from ems._core import soc as soc_k
from ems.config.schema import SocEstimation
from ems.control.fastpath import FastPathParams
from ems.estimation.ocv import OcvTable
from ems.estimation.params import estimator_for, initial_state, rest_current_a, sensor_sigmas
from ems.estimation.soh import SohTracker, capacity_verdict

COLUMNS = ("t_s", "current_a", "voltage_v", "temp_degc")


class TraceError(ValueError):
    """Bad input; the message names the line."""


@dataclass
class Sample:
    t_s: float
    current_a: float
    voltage_v: float
    temp_degc: float


def read_trace(fh: TextIO, source: str = "input") -> Iterable[Sample]:
    """Yield samples, checking each line as it comes (a bad line stops the replay with its line number)."""
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        raise TraceError(f"{source}: empty file; expected the header {','.join(COLUMNS)}")
    names = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise TraceError(f"{source}: line 1: missing column(s) {', '.join(missing)}; the header must name "
                         f"{','.join(COLUMNS)}")
    idx = [names.index(c) for c in COLUMNS]
    last_t = -math.inf
    for row in reader:
        line = reader.line_num
        if not row or all(not x.strip() for x in row):
            continue
        if len(row) < len(names):
            raise TraceError(f"{source}: line {line}: {len(row)} values, the header has {len(names)}")
        vals = []
        for col, i in zip(COLUMNS, idx):
            try:
                x = float(row[i])
            except ValueError:
                raise TraceError(f"{source}: line {line}: {col} is not a number: {row[i]!r}") from None
            if not math.isfinite(x):
                raise TraceError(f"{source}: line {line}: {col} is {row[i].strip()}; values must be finite")
            vals.append(x)
        s = Sample(*vals)
        if s.t_s <= last_t:
            raise TraceError(f"{source}: line {line}: t_s {s.t_s:g} does not increase (previous {last_t:g})")
        if not 0.5 <= s.voltage_v <= 5.0:
            raise TraceError(f"{source}: line {line}: voltage_v {s.voltage_v:g} is not a cell voltage (0.5..5 V)")
        last_t = s.t_s
        yield s


class CellReplay:
    """One cell through the controller's estimator. `step(sample)` → (soc_pct, bound_pct)."""

    def __init__(self, capacity_ah: float, table: OcvTable, est: SocEstimation | None = None,
                 initial_soc_pct: float | None = None, full_v: float = 3.60, empty_v: float = 2.80,
                 learn_capacity: bool | None = None):
        if not (capacity_ah > 0 and math.isfinite(capacity_ah)):
            raise ValueError(f"capacity must be a positive number of Ah, got {capacity_ah}")
        est = est or SocEstimation()
        self.est = est
        self.table = table
        e = estimator_for(est, table, capacity_ah)
        self.tp = FastPathParams(charge_efficiency=est.charge_efficiency_pct / 100.0, cell_full_v=full_v,
                                 cell_empty_v=empty_v, idle_current_a=rest_current_a(est, capacity_ah)).vector(1)
        self.ep, self.ocv, self.hyst = e.params, e.ocv_v, e.hyst_v
        self.initial_sigma = e.initial_sigma
        self.learn = est.capacity_learning if learn_capacity is None else learn_capacity
        self.cap_err = e.capacity_error
        f64 = np.float64
        self.cell_v = np.zeros((1, 1), f64)
        self.cell_t = np.zeros((1, 1), f64)
        self.fresh = np.ones((1, 1), np.uint8)
        self.cl_in = np.full((1, L.CL_IN_COLS), np.nan, f64)
        self.flags = np.zeros((1, L.CL_FLAG_COLS), np.uint8)
        self.flags[0, L.CLF_CONNECTED] = 1
        self.agg_i = np.zeros((1, L.AGG_I_COLS), np.int32)
        self.agg_f = np.zeros((1, L.AGG_F_COLS), f64)
        self.capacity_ah = np.full((1, 1), capacity_ah, f64)
        self.cell_soc = np.full((1, 1), np.nan, f64)
        self.cell_sig = np.full((1, 1), self.initial_sigma, f64)
        self.state = initial_state(1, self.ep)
        self.charge_ah = np.zeros((1, 1), f64)
        self.soc_pct = np.zeros((1, 1), f64)
        self.out = np.zeros((1, L.SOC_COLS), f64)
        self.anchored = np.zeros(1, np.uint8)
        self.stack = np.zeros(L.SOC_COLS, f64)
        self.soh = SohTracker(1, capacity_ah, *sensor_sigmas(est, capacity_ah))
        if initial_soc_pct is not None:
            if not 0.0 <= initial_soc_pct <= 100.0:
                raise ValueError(f"initial SOC must be 0..100 %, got {initial_soc_pct}")
            self.cell_soc[0, 0] = initial_soc_pct / 100.0
        self._t_prev: float | None = None

    def step(self, s: Sample) -> tuple[float, float]:
        if self._t_prev is None:
            if np.isnan(self.cell_soc[0, 0]):      # no initial SOC given: the first voltage through the table
                self.cell_soc[0, 0] = float(self.table.soc(s.voltage_v)) / 100.0
            dt = 0.0
            self.state[0, L.SE_PEND_S] = self.ep[L.EP_STEP_S]       # the first row makes a cell step
        else:
            dt = s.t_s - self._t_prev
        self._t_prev = s.t_s
        self.cell_v[0, 0] = s.voltage_v
        self.cell_t[0, 0] = s.temp_degc
        self.agg_f[0, L.AGG_V_MIN] = self.agg_f[0, L.AGG_V_MAX] = self.agg_f[0, L.AGG_V_MEAN] = s.voltage_v
        self.cl_in[0, L.CL_I] = s.current_a
        self.cl_in[0, L.CL_V] = s.voltage_v
        soc_k.step(self.cell_v, self.cell_t, self.fresh, self.cl_in, self.flags, self.agg_i, self.agg_f,
                   self.capacity_ah, self.tp, self.ep, self.ocv, self.hyst, self.cell_soc, self.cell_sig, self.state, dt,
                   self.charge_ah, self.soc_pct, self.out, self.anchored, self.stack)
        if self.soh.observe(self.state, self.out, s.t_s) and self.learn:
            self.soh.apply(self.capacity_ah, self.state, self.cap_err)
        return float(self.stack[L.SOC_MEAN]), float(self.stack[L.SOC_BOUND])


def replay(inp: TextIO, out: TextIO, capacity_ah: float, table: OcvTable, initial_soc_pct: float | None,
           source: str = "input", est: SocEstimation | None = None) -> CellReplay:
    r = CellReplay(capacity_ah, table, est, initial_soc_pct)
    samples = list(read_trace(inp, source))       # the whole trace is checked before anything is written
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("t_s", "soc_pct", "soc_bound_pct"))
    for s in samples:
        soc, bound = r.step(s)
        w.writerow((repr(s.t_s), f"{soc:.3f}", f"{bound:.3f}"))
    return r


def main(args) -> int:
    from ems.estimation.ocv import OcvError, default_table, load
    try:
        table = load(args.ocv) if args.ocv else default_table("LFP")
    except OcvError as exc:
        print(f"ems replay-soc: {exc}", file=sys.stderr)
        return 1
    try:
        fh = sys.stdin if args.input == "-" else open(args.input, newline="")
    except OSError as exc:
        print(f"ems replay-soc: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return 1
    import dataclasses
    est = SocEstimation()
    for flag, key in (("current_offset_a", "current_offset_a"), ("current_gain_pct", "current_gain_error_pct"),
                      ("capacity_error_pct", "capacity_error_pct")):
        if getattr(args, flag, None) is not None:
            est = dataclasses.replace(est, **{key: getattr(args, flag)})
    with fh:
        try:
            r = replay(fh, sys.stdout, args.capacity_ah, table, args.initial_soc, args.input, est)
        except (TraceError, ValueError) as exc:
            print(f"ems replay-soc: {exc}", file=sys.stderr)
            return 1
    s = r.soh.summary()[0]
    _, verdict = capacity_verdict(r.soh.clusters[0], r.cap_err)
    cap = verdict if s["capacity_ah"] is None else \
        f"{s['capacity_ah']:.3g} Ah ± {s['capacity_sigma_ah']:.2g} ({s['soh_pct']:.1f} % of {args.capacity_ah:g}), {verdict}"
    res = "no current steps" if s["resistance_mohm"] is None else f"{s['resistance_mohm']:.3f} mΩ"
    print(f"ems replay-soc: capacity {cap}; resistance {res}", file=sys.stderr)
    return 0
