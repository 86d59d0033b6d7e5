"""examples/peak_shaving.toml over its whole day: every quarter hour of the 08:00–20:00 window holds its mean
grid import at or below the peak (0.5 % for the meter's rounding). `make test` checks the morning
(tests/test_simulate.py); this is the full window, afternoon depletion included. Exit 1 on a breach."""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from ems.config.fields import parse_hhmm
from ems.sim.runner import simulate
from ems.sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def quarter_hour_means(rows: list[dict], first_s: int, last_s: int) -> list[tuple[str, float]]:
    """(time, mean grid import W) of each 15-minute block from first_s to last_s (1 s rows from midnight)."""
    return [(rows[t]["time"], sum(float(x["grid_w"]) for x in rows[t:t + 900]) / 900)
            for t in range(first_s, last_s, 900)]


def run(hours: float | None = None) -> tuple[float, list[tuple[str, float]]]:
    cfg, sim = load_scenario(ROOT / "examples" / "peak_shaving.toml")
    if hours is not None:
        sim.duration_s = hours * 3600.0
    with tempfile.TemporaryDirectory() as out:
        simulate(cfg, sim, Path(out))
        with open(Path(out) / "timeseries.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    w = cfg.peak_shaving.windows[0]
    first_s, end_s = parse_hhmm(w.start) * 60, min(parse_hhmm(w.end) * 60, len(rows))
    return w.peak_w, quarter_hour_means(rows, first_s, end_s - 900 + 1)     # whole blocks inside the window


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    peak, means = run()
    breaches = [(t, m) for t, m in means if m > peak * 1.005]
    result = {"peak_w": peak, "quarter_hours": len(means), "max_mean_w": max(m for _, m in means),
              "breaches": breaches}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(f"peak shaving: {len(means)} quarter hours, highest mean {result['max_mean_w']:.0f} W of {peak:.0f} W, "
          f"{len(breaches)} above")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
