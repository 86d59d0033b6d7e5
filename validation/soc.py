"""SOC/SOH estimator validation against the LFP cell plant (ems/sim/lfp_cell.py): `make validate`.

Each case drives one plant cell through 14 days of cycling (full charges, days without, deep discharges,
long and short rests, currents that change every few minutes, ambient 15–35 °C) and feeds its sensor
readings, row by row, to `CellReplay`: the estimator `ems replay-soc` and the controller run. The
estimator is told the rated capacity (280 Ah) and a wrong initial SOC; its OCV table is the one an OEM
would measure on this cell (±1 mV, with the hysteresis column), its sensor bounds are the datasheet
defaults of [soc_estimation]. Its capacity error is the default 2 % on new cells and 20 % on the aged ones:
what an installer knows of used cells of unknown SOH.

Prints, per case: SOC RMSE and max error over the whole trace and after the first full charge, how often
the bound covered the true error, the mean bound, and the SOH capacity error at the end.
Usage: python -m validation.soc [--days N] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from multiprocessing import Pool

import numpy as np

from ems.config.schema import SocEstimation
from ems.estimation.ocv import parse
from ems.estimation.replay import CellReplay, Sample
from ems.sim.lfp_cell import Cycler, LfpCellPlant, measured_ocv_table

RATED_AH = 280.0
AGED_CAPACITY_ERROR_PCT = 20.0
DAYS = ["partial", "full", "partial", "partial", "partial", "deep", "full", "partial", "partial", "full",
        "partial", "deep", "partial", "full"]
# name, true capacity (fraction of rated), true initial SOC, initial SOC error (points), seed
CASES = [
    ("new cell, start 20 points high", 1.00, 0.45, +20.0, 1),
    ("new cell, start 20 points low", 1.00, 0.65, -20.0, 2),
    ("aged 95 %, start 10 points high", 0.95, 0.50, +10.0, 3),
    ("aged 88 %, start 10 points low", 0.88, 0.60, -10.0, 4),
    ("aged 80 %, start 15 points high", 0.80, 0.40, +15.0, 5),
]


def run_case(case, days=DAYS, dt_s: float = 1.0) -> dict:
    name, cap_frac, soc0, err0, seed = case
    plant = LfpCellPlant(capacity_ah=RATED_AH * cap_frac, soc=soc0, seed=seed)
    cyc = Cycler(plant, RATED_AH, dt_s=dt_s, seed=seed + 100)
    table = parse(measured_ocv_table(), "measured OCV table")
    est = SocEstimation() if cap_frac == 1.0 else SocEstimation(capacity_error_pct=AGED_CAPACITY_ERROR_PCT)
    rep = CellReplay(RATED_AH, table, est, initial_soc_pct=min(max(100.0 * soc0 + err0, 0.0), 100.0))
    t, true, est, bound = [], [], [], []
    learned_t = math.inf if cap_frac != 1.0 else 0.0      # aged cells: when SOH first corrects the capacity
    for kind in days:
        for _ in cyc.day(kind):
            i, v, temp = plant.measure()
            s, b = rep.step(Sample(plant.t_s, i, v, temp))
            if learned_t == math.inf and rep.capacity_ah[0, 0] != RATED_AH:
                learned_t = plant.t_s
            t.append(plant.t_s)
            true.append(100.0 * plant.soc)
            est.append(s)
            bound.append(b)
    t, true, est, bound = map(np.asarray, (t, true, est, bound))
    err = est - true
    first_full = cyc.full_events[0] if cyc.full_events else math.inf
    after = t >= first_full
    settle_t = next((f for f in cyc.full_events if f >= learned_t), math.inf)    # the first full charge since
    settled = t >= settle_t
    soh = rep.soh.summary()[0]
    cap_true = RATED_AH * cap_frac

    def stats(mask):
        if not mask.any():
            return {"rmse_pct": None, "max_pct": None, "coverage": None, "mean_bound_pct": None}
        e = err[mask]
        return {"rmse_pct": float(np.sqrt(np.mean(e * e))), "max_pct": float(np.max(np.abs(e))),
                "coverage": float(np.mean(np.abs(e) <= bound[mask])), "mean_bound_pct": float(np.mean(bound[mask]))}

    r1s = plant.r0_ohm + sum(r * (1 - math.exp(-1.0 / tau)) for r, tau in plant.rc)
    return {
        "case": name, "capacity_true_ah": cap_true, "days": len(days), "samples": int(len(t)),
        "first_full_charge_h": first_full / 3600.0, "full_charges": len(cyc.full_events),
        "whole": stats(np.ones_like(after)), "after_first_full": stats(after),
        "capacity_learned_h": learned_t / 3600.0, "settled": stats(settled),
        "soh_capacity_ah": soh["capacity_ah"], "soh_pairs": soh["pairs"],
        "soh_error_pct": None if soh["capacity_ah"] is None else 100.0 * (soh["capacity_ah"] - cap_true) / cap_true,
        "resistance_mohm": soh["resistance_mohm"], "plant_1s_resistance_25c_mohm": r1s * 1000.0,
    }


def _fmt(x, f="{:.2f}"):
    return "–" if x is None else f.format(x)


def report(results: list[dict], out=sys.stdout) -> bool:
    print("SOC/SOH validation: LFP cell plant (ems/sim/lfp_cell.py), 14 days per case, 1 s samples", file=out)
    print("SOC errors in percentage points; 'settled' = after the first full charge (on aged cells, told the "
          "rated 280 Ah: the first full charge after SOH first corrected the capacity)", file=out)
    print(f"{'case':33} {'whole trace':>21} {'after 1st full':>14} {'settled':>21} {'learned':>8} {'SOH':>7} "
          f"{'R':>6}", file=out)
    print(f"{'':33} {'RMSE':>6} {'max':>6} {'cover':>7} {'RMSE':>6} {'max':>6} {'RMSE':>6} {'max':>6} {'cover':>7} "
          f"{'bound':>5} {'at h':>8} {'error':>7} {'mΩ':>6}", file=out)
    ok = True
    for r in results:
        w, a, st = r["whole"], r["after_first_full"], r["settled"]
        print(f"{r['case']:33} {_fmt(w['rmse_pct']):>6} {_fmt(w['max_pct']):>6} {_fmt(w['coverage'], '{:.1%}'):>7} "
              f"{_fmt(a['rmse_pct']):>6} {_fmt(a['max_pct']):>6} {_fmt(st['rmse_pct']):>6} {_fmt(st['max_pct']):>6} "
              f"{_fmt(st['coverage'], '{:.1%}'):>7} {_fmt(st['mean_bound_pct'], '{:.1f}'):>5} "
              f"{_fmt(r['capacity_learned_h'], '{:.0f}'):>8} {_fmt(r['soh_error_pct'], '{:+.2f}%'):>7} "
              f"{_fmt(r['resistance_mohm'], '{:.3f}'):>6}", file=out)
    aged = [r for r in results if r["capacity_true_ah"] != RATED_AH]
    goals = [
        ("SOC RMSE ≤ 2 % (settled)", max(r["settled"]["rmse_pct"] for r in results) <= 2.0),
        ("SOC max error ≤ 3 % (settled)", max(r["settled"]["max_pct"] for r in results) <= 3.0),
        ("bound covers the true error ≥ 95 % of the time (settled)", min(r["settled"]["coverage"] for r in results) >= 0.95),
        ("bound covers the true error ≥ 95 % of the time (whole trace)",
         min(r["whole"]["coverage"] for r in results) >= 0.95),
        ("SOH capacity within ±2 % on aged cells", all(r["soh_error_pct"] is not None and abs(r["soh_error_pct"]) <= 2.0
                                                       for r in aged)),
    ]
    print("goals:", file=out)
    for text, met in goals:
        print(f"  {'met    ' if met else 'NOT MET'} {text}", file=out)
        ok &= met
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validation.soc")
    ap.add_argument("--days", type=int, default=len(DAYS), help=f"days per case (≤ {len(DAYS)})")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    days = DAYS[:max(1, min(args.days, len(DAYS)))]
    t0 = time.perf_counter()
    with Pool(2) as pool:
        results = pool.starmap(run_case, [(c, days) for c in CASES])
    ok = report(results)
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
