"""The SOC/SOH estimator against an independent physics model: PyBaMM (`pip install .[validate]`).

Every case is a ~56 h, 1 s trace of one LFP/graphite cell (PyBaMM's `Prada2013` parameters, 2.3 Ah,
2.0–3.6 V, isothermal), simulated by PyBaMM's SPMe or DFN, then measured the way a BMS measures it:
current gain +0.5 %, offset +0.05 % of 1 C, voltage noise 2 mV quantised to 1 mV, optionally a ±10 mV
hysteresis on the voltage (Plett's one-state model). The estimator gets the OCV table an OEM would
measure (PyBaMM at C/50: the mean of charge and discharge on a 0.5 % grid; as the hysteresis column half
the gap of relaxed points, 5 % pulses with 1 h rests, the way a lab measures it), an initial SOC 20
points off, and the datasheet defaults, and runs as `ems replay-soc` runs it (`CellReplay`).

Days (issue 18): day 1 discharge blocks, PV-like charging, a full charge (CC 0.5 C to 3.6 V, CV to C/20),
an evening discharge and a night's rest; day 2 partial cycling between about 25 and 85 % without a full
charge; day 3 the same, ending in a full charge. Variants: the 280 Ah cases scale the measured current
and the configured capacity by 280 / 2.3 (the same electrochemistry at another size); `flat` cuts the
graphite's staging steps to 40 % (OCV ~70 mV over 20–80 % instead of ~140); `rests` = short (every rest 15 min)
or long (every rest ≥ 4 h); the aged case tells the estimator the new cell's capacity, with the 20 %
uncertainty docs/soc.md asks for on used cells, while the cell has 88 % of it.

Truth: SOC = the charge in the cell over its capacity, both from PyBaMM's own discharge-capacity counter
with the capacity measured at C/50 between the cut-offs. Metrics after the first full charge: RMSE, max
error, bias, coverage of the true error by the bound, the bound's mean width (±), plain counting from
the true start, and the SOH error of the learned capacity; then issue 18's goals. Deterministic: the
noise is seeded. About 70 s for the 12 cases (5 PyBaMM simulations).

    python -m validation.pybamm_suite [--json build/validate/pybamm.json] [--cases spme_2.3,…]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GAIN = 1.005
OFFSET_C = 0.0005
V_NOISE = 0.002
HYST_V = 0.010
NOMINAL_AH = 2.3


@dataclass(frozen=True)
class Case:
    name: str
    model: str = "SPMe"
    scale_ah: float = NOMINAL_AH         # the cell size the estimator is told (current scaled to match)
    hysteresis: bool = False
    aged: float = 1.0                    # true capacity / the capacity the estimator is told
    initial_error_pts: float = -20.0
    flat: bool = False                   # the OCV flattened to ~70 mV over 20–80 % (Prada2013's is ~140 mV)
    rests: str = "mixed"                 # "mixed" (1–8 h), "short" (every rest 15 min), "long" (every rest ≥ 4 h)


CASES = (
    Case("spme_2.3"), Case("spme_2.3_hyst", hysteresis=True), Case("spme_280", scale_ah=280.0),
    Case("spme_280_hyst", scale_ah=280.0, hysteresis=True), Case("dfn_2.3", model="DFN"),
    Case("dfn_280", model="DFN", scale_ah=280.0), Case("spme_2.3_high_start", initial_error_pts=+20.0),
    Case("spme_2.3_flat", flat=True), Case("spme_280_flat_hyst", scale_ah=280.0, flat=True, hysteresis=True),
    Case("spme_2.3_short_rests", rests="short"), Case("spme_2.3_long_rests", rests="long"),
    Case("spme_280_aged", scale_ah=280.0, aged=0.88),
)


def _pybamm():
    try:
        import pybamm
    except ImportError:
        sys.exit("validation.pybamm_suite needs PyBaMM: pip install .[validate]")
    pybamm.set_logging_level("ERROR")
    return pybamm


def _flat_graphite(base):
    """Graphite's OCP with its staging steps cut to 40 % between stoichiometry ~0.15 and ~0.72 (SOC ~18–88 % of
    this cell): the full cell's OCV then rises ~70 mV over 20–80 % instead of ~140 mV, as flat as the
    flattest LFP cells; the steep ends stay."""
    pybamm = _pybamm()

    def ocp(sto):
        u = base(sto)
        w = 0.5 * (pybamm.tanh((sto - 0.15) / 0.03) - pybamm.tanh((sto - 0.72) / 0.03))
        return u - 0.6 * w * (u - 0.135)
    return ocp


def _rest(step: str, rests: str) -> str:
    if not step.startswith("Rest for ") or rests == "mixed":
        return step
    n, unit = step.split()[2:4]
    minutes = float(n) * (60.0 if unit.startswith("hour") else 1.0)
    minutes = 15.0 if rests == "short" else max(minutes, 240.0)
    return f"Rest for {minutes:g} minutes"


def _steps(rests: str = "mixed") -> list[str]:
    """The three days as PyBaMM experiment steps (C-rates: the same at any cell size)."""
    day1 = ["Discharge at 0.3C for 40 minutes or until 2.0 V", "Rest for 2 hours",
            "Discharge at 0.5C for 30 minutes or until 2.0 V", "Rest for 1 hour",
            "Charge at 0.1C for 1 hour or until 3.6 V", "Charge at 0.25C for 1 hour or until 3.6 V",
            "Charge at 0.5C until 3.6 V", "Hold at 3.6 V until C/20", "Rest for 2 hours",
            "Discharge at 0.4C for 90 minutes or until 2.0 V", "Rest for 8 hours"]
    partial = ["Charge at 0.3C for 150 minutes or until 3.6 V", "Rest for 1 hour",
               "Discharge at 0.3C for 150 minutes or until 2.0 V", "Rest for 2 hours",
               "Charge at 0.2C for 200 minutes or until 3.6 V", "Rest for 3 hours",
               "Discharge at 0.5C for 80 minutes or until 2.0 V", "Rest for 4 hours"]
    day3 = partial[:6] + ["Charge at 0.5C until 3.6 V", "Hold at 3.6 V until C/20", "Rest for 2 hours",
                          "Discharge at 0.3C for 1 hour or until 2.0 V", "Rest for 1 hour"]
    return [_rest(x, rests) for x in day1 + partial + day3]


def _relaxed_gap_mv(pybamm, model, pv, cap: float, grid: np.ndarray) -> np.ndarray:
    """Half the gap between the relaxed OCV after discharge and after charge (mV, on the SOC grid), the
    way a lab measures hysteresis: pulses of 5 % at C/10 down from full and back up, each followed by a
    1 h rest, the voltage read at the end of the rest. (The gap of the continuous C/50 branches is mostly
    polarisation, not hysteresis: taken as hysteresis it puts every rest anchor off by the polarisation.)"""
    pulse = ["Discharge at C/10 for 30 minutes or until 2.0 V", "Rest for 1 hour"]
    back = ["Charge at C/10 for 30 minutes or until 3.6 V", "Rest for 1 hour"]
    sim = pybamm.Simulation(model, parameter_values=pv, experiment=pybamm.Experiment(
        ["Charge at 0.5C until 3.6 V", "Hold at 3.6 V until C/20", "Rest for 1 hour"] + pulse * 19 + back * 19,
        period="1 minute"))
    s = sim.solve(initial_soc=0.5)
    i = s["Current [A]"].entries
    v = s["Voltage [V]"].entries
    q = s["Discharge capacity [A.h]"].entries
    moving = np.abs(i) > 1e-9
    first = np.flatnonzero(moving & (i > 0))[0]            # the first discharge pulse starts at "full"
    q_full = q[first]
    # the last sample of each rest after a pulse: at rest, and the next one moves (or the trace ends)
    ends = [k for k in range(first, len(i)) if not moving[k] and (k + 1 == len(i) or moving[k + 1])]
    pts = {1.0: [], -1.0: []}
    for k in ends:
        last = np.flatnonzero(moving[:k])[-1]
        pts[float(np.sign(i[last]))].append((1.0 - (q[k] - q_full) / cap, v[k]))
    (sd, vd), (sc, vc) = (np.array(sorted(pts[x])).T for x in (1.0, -1.0))
    # only where both branches were measured; beyond, the nearest measured gap
    lo, hi = max(sd[0], sc[0]), min(sd[-1], sc[-1])
    g = np.clip(grid, lo, hi)
    gap = (np.interp(g, sc, vc) - np.interp(g, sd, vd)) / 2.0 * 1000.0
    return np.clip(gap, 0.0, 200.0)


def simulate(model_name: str, cache: dict, flat: bool = False, rests: str = "mixed") -> dict:
    """PyBaMM's truth for a model: time, current (A, > 0 discharging), voltage, SOC (fraction), and the
    C/50 OCV table and capacity. Cached per model, OCV and profile."""
    key = (model_name, flat, rests)
    if key in cache:
        return cache[key]
    pybamm = _pybamm()
    model = {"SPMe": pybamm.lithium_ion.SPMe, "DFN": pybamm.lithium_ion.DFN}[model_name]()
    pv = pybamm.ParameterValues("Prada2013")
    if flat:
        pv.update({"Negative electrode OCP [V]": _flat_graphite(pv["Negative electrode OCP [V]"])})
    # the scale the traces are judged on: 100 % is the full charge a trace gets (CC 0.5 C to 3.6 V, CV to
    # C/20), 0 % the 2.0 V cut-off at C/50; from there C/50 down and back up give the capacity and the OCV
    slow = pybamm.Simulation(model, parameter_values=pv, experiment=pybamm.Experiment(
        ["Charge at 0.5C until 3.6 V", "Hold at 3.6 V until C/20", "Rest for 2 hours",
         "Discharge at C/50 until 2.0 V", "Rest for 1 hour", "Charge at C/50 until 3.6 V"], period="60 seconds"))
    s = slow.solve(initial_soc=0.5)
    q = s["Discharge capacity [A.h]"].entries
    v = s["Voltage [V]"].entries
    i = s["Current [A]"].entries
    first_dis = np.flatnonzero(i > 0)[0]
    dis = (i > 0) & (np.arange(len(i)) >= first_dis)
    chg = (i < 0) & (np.arange(len(i)) > np.flatnonzero(dis)[-1])
    q_full = q[first_dis]
    cap = float(q[dis].max() - q_full)
    soc_dis = 1.0 - (q[dis] - q_full) / cap
    soc_chg = 1.0 - (q[chg] - q_full) / cap
    grid = np.linspace(0.0, 1.0, 201)                # 0.5 %: the steep ends need it (C/50 gives the points)
    ocv_d = np.interp(grid, soc_dis[::-1], v[dis][::-1])
    order = np.argsort(soc_chg)
    ocv_c = np.interp(grid, soc_chg[order], v[chg][order])
    ocv = (ocv_d + ocv_c) / 2.0
    ocv = np.maximum.accumulate(ocv + np.arange(len(ocv)) * 1e-6)      # strictly increasing for the table
    half_gap_mv = _relaxed_gap_mv(pybamm, model, pv, cap, grid)         # what a lab measures as hysteresis
    sim = pybamm.Simulation(model, parameter_values=pv, experiment=pybamm.Experiment(_steps(rests),
                                                                                     period="1 second"))
    sol = sim.solve(initial_soc=0.6)
    t = sol["Time [s]"].entries
    cur = sol["Current [A]"].entries
    volt = sol["Voltage [V]"].entries
    qd = sol["Discharge capacity [A.h]"].entries
    # the charge in the cell: its SOC at the start (PyBaMM's initial_soc is of its stoichiometry window, which
    # the cut-offs narrow): found from the first full charge, where the truth is 100 %
    full = np.flatnonzero((np.abs(cur) < cap / 20.0 * 1.05) & (volt > 3.599))
    q_full = qd[full[0]] if len(full) else qd.min()
    soc = 1.0 - (qd - q_full) / cap
    tt, keep = np.unique(np.round(t), return_index=True)
    out = {"t": tt, "i": cur[keep], "v": volt[keep], "soc": soc[keep], "cap": cap, "ocv_grid": grid * 100.0,
           "ocv": ocv, "half_gap_mv": half_gap_mv, "first_full": float(t[full[0]]) if len(full) else None}
    cache[key] = out
    return out


def _hysteresis(i_a: np.ndarray, dt: np.ndarray, cap_ah: float) -> np.ndarray:
    """Plett's one-state hysteresis, e-folding every 5 % of the capacity: +1 after charge, −1 after discharge."""
    h = np.zeros_like(i_a)
    x = -1.0
    for k in range(len(i_a)):
        dq = -i_a[k] * dt[k] / 3600.0 / (0.05 * cap_ah)
        x = x + (np.sign(dq) - x) * (1.0 - math.exp(-abs(dq))) if dq else x
        h[k] = x
    return h


def run_case(case: Case, cache: dict, seed: int = 7) -> dict:
    from ems.config.schema import SocEstimation
    from ems.estimation.ocv import OcvTable
    from ems.estimation.replay import CellReplay, Sample

    tr = simulate(case.model, cache, case.flat, case.rests)
    rng = np.random.default_rng(seed)
    scale = case.scale_ah / NOMINAL_AH
    cap_told = tr["cap"] * scale / case.aged          # the capacity the estimator is given
    i_meas = tr["i"] * scale * GAIN + OFFSET_C * tr["cap"] * scale
    v = tr["v"].copy()
    dt = np.diff(tr["t"], prepend=tr["t"][0])
    if case.hysteresis:
        v = v + HYST_V * _hysteresis(tr["i"], dt, tr["cap"])
    v_meas = np.round((v + rng.normal(0.0, V_NOISE, len(v))) * 1000.0) / 1000.0
    # the table an OEM would measure on this cell: the mean of the C/50 branches and half their gap as the
    # hysteresis column (the synthetic hysteresis widens the gap by its ±10 mV)
    table = OcvTable(tr["ocv_grid"], tr["ocv"], "pybamm C/50",
                     tr["half_gap_mv"] + (HYST_V * 1000.0 if case.hysteresis else 0.0))
    start = float(np.clip(tr["soc"][0] * 100.0 + case.initial_error_pts, 0.0, 100.0))
    # used cells of unknown SOH: the capacity's uncertainty as docs/soc.md says to configure it (20 %)
    est = SocEstimation(capacity_error_pct=20.0) if case.aged < 1.0 else SocEstimation()
    r = CellReplay(cap_told, table, est, start, full_v=3.60, empty_v=2.0)
    soc = np.empty(len(v))
    bound = np.empty(len(v))
    for k in range(len(v)):
        soc[k], bound[k] = r.step(Sample(float(tr["t"][k]), float(i_meas[k]), float(v_meas[k]), 25.0))
    truth = tr["soc"] * 100.0
    # plain counting from the true start, with the same measured current and the told capacity
    counted = truth[0] - np.cumsum(i_meas * dt) / 3600.0 / cap_told * 100.0
    after = tr["t"] >= (tr["first_full"] or 0.0)
    err = soc[after] - truth[after]
    cerr = counted[after] - truth[after]
    s = r.soh.summary()[0]
    learned = s["capacity_ah"]
    true_cap = tr["cap"] * scale
    return {"case": case.name, "rmse": float(np.sqrt(np.mean(err ** 2))), "max": float(np.abs(err).max()),
            "bias": float(err.mean()), "coverage": float(np.mean(np.abs(err) <= bound[after] + 1e-9)),
            "mean_bound": float(bound[after].mean()), "counting_rmse": float(np.sqrt(np.mean(cerr ** 2))),
            "soh_error_pct": None if learned is None else float((learned / true_cap - 1.0) * 100.0),
            "capacity_used_ah": float(r.capacity_ah[0, 0]), "true_capacity_ah": float(true_cap),
            "soh_applied": bool(r.capacity_ah[0, 0] != cap_told)}


def goals(rows: list[dict]) -> list[tuple[str, bool]]:
    """Issue 18's goals, after the first full charge, every case."""
    applied = [r for r in rows if r["soh_applied"]]
    return [
        ("SOC RMSE ≤ 1.5 %", all(r["rmse"] <= 1.5 for r in rows)),
        ("SOC max error ≤ 3 %", all(r["max"] <= 3.0 for r in rows)),
        ("bound covers the true error ≥ 95 % of the time", all(r["coverage"] >= 0.95 for r in rows)),
        ("mean bound ≤ ± 5 points", all(r["mean_bound"] <= 5.0 for r in rows)),
        ("SOH capacity within ± 2 % once applied", all(abs(r["soh_error_pct"]) <= 2.0 for r in applied)),
        ("no case worse than plain counting from the true start", all(r["rmse"] <= r["counting_rmse"] for r in rows)),
    ]


def table(rows: list[dict]) -> str:
    head = ("case", "RMSE", "max", "bias", "coverage", "±bound", "counting", "SOH err %")
    lines = ["  ".join(f"{h:>10}" for h in head)]
    for r in rows:
        soh = "—" if r["soh_error_pct"] is None else f"{r['soh_error_pct']:+.1f}"
        lines.append("  ".join(f"{x:>10}" for x in (r["case"], f"{r['rmse']:.2f}", f"{r['max']:.2f}",
                                                        f"{r['bias']:+.2f}", f"{r['coverage']:.2f}",
                                                        f"{r['mean_bound']:.1f}", f"{r['counting_rmse']:.2f}", soh)))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=Path("build/validate/pybamm.json"))
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    args = ap.parse_args(argv)
    chosen = [c for c in CASES if not args.cases or c.name in args.cases.split(",")]
    cache: dict = {}
    rows = []
    t0 = time.time()
    for c in chosen:
        rows.append(run_case(c, cache))
        print(f"{c.name}: done ({time.time() - t0:.0f} s)", file=sys.stderr)
    print("SOC after the first full charge, percentage points (PyBaMM Prada2013 LFP):")
    print(table(rows))
    print("goals:")
    for text, met in goals(rows):
        print(f"  {'met    ' if met else 'NOT MET'} {text}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
