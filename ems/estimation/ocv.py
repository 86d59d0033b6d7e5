"""Open-circuit voltage tables: read `soc_pct,ocv_v[,hysteresis_mv]` CSV, check it, resample it for the core.

The core looks OCV up on a uniform SOC grid (one multiply, no search), so a table of any spacing is
resampled by linear interpolation onto GRID_POINTS points; between the given points that is exactly the
piecewise-linear curve of the file. The voltage bands where the curve can be informative are found here,
once, so the hot path compares a voltage with two numbers before it maps the voltage through the curve.

The optional third column is the hysteresis half-width at each point (charge branch − mean, mV). LFP's is
not constant (wider at low SOC); a table without it gets [soc_estimation] hysteresis_mv everywhere.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

HEADER = ["soc_pct", "ocv_v"]
HYST_COLUMN = "hysteresis_mv"
HYST_MAX_MV = 200.0
GRID_POINTS = 401          # 0.25 % SOC spacing: finer than any table we ship or expect
DEFAULT_TABLES = {"LFP": "lfp_ocv.csv"}     # the full / empty volts are [battery] defaults (schema.py)


class OcvError(ValueError):
    """A bad OCV table; the message names the file and line."""


@dataclass(frozen=True)
class OcvTable:
    soc_pct: np.ndarray          # as given, strictly increasing, 0 … 100
    ocv_v: np.ndarray            # strictly increasing
    source: str
    hyst_mv: np.ndarray | None = None      # half-width per point, mV; None: not in the file

    @property
    def grid_v(self) -> np.ndarray:
        """OCV on the uniform grid the core uses (GRID_POINTS over 0–100 %)."""
        return np.interp(np.linspace(0.0, 100.0, GRID_POINTS), self.soc_pct, self.ocv_v)

    def grid_hyst_v(self, default_mv: float) -> np.ndarray:
        """The hysteresis half-width on the same grid, V: the table's column, or default_mv everywhere."""
        if self.hyst_mv is None:
            return np.full(GRID_POINTS, default_mv / 1000.0)
        return np.interp(np.linspace(0.0, 100.0, GRID_POINTS), self.soc_pct, self.hyst_mv) / 1000.0

    def ocv(self, soc_pct):
        return np.interp(soc_pct, self.soc_pct, self.ocv_v)

    def soc(self, ocv_v):
        return np.interp(ocv_v, self.ocv_v, self.soc_pct)

    def steep_bands(self, min_slope_mv_per_pct: float) -> tuple[float, float]:
        """(v_lo, v_hi): the curve is at least min_slope steep everywhere from 0 % up to v_lo's SOC and from
        v_hi's SOC up to 100 %. A band that does not exist is returned as -inf / +inf."""
        grid = self.grid_v
        slope = np.diff(grid) / (100.0 / (GRID_POINTS - 1)) * 1000.0          # mV per %
        steep = slope >= min_slope_mv_per_pct
        lo_n = int(np.argmin(steep)) if not steep.all() else len(steep)     # leading steep segments
        hi_n = int(np.argmin(steep[::-1])) if not steep.all() else len(steep)
        v_lo = float(grid[lo_n]) if lo_n > 0 else -math.inf
        v_hi = float(grid[len(grid) - 1 - hi_n]) if hi_n > 0 else math.inf
        return v_lo, v_hi

    def informative_bands(self, sigma_v: float, max_sigma_pct: float) -> tuple[float, float]:
        """(v_lo, v_hi): an OCV reading with noise sigma_v can say the SOC to within max_sigma_pct (its ± 2
        sigma mapped through the curve, over 4) only at or below v_lo or at or above v_hi. The core's per-cell
        gate is the same test with the whole measurement variance (hysteresis, relaxation): larger, so these
        bands are a necessary condition, checked first because it is two comparisons. An informative stretch
        in the middle of the curve widens the bands to include it. Missing bands are -inf / +inf."""
        grid = self.grid_v
        soc = np.linspace(0.0, 1.0, GRID_POINTS)
        v = np.linspace(grid[0], grid[-1], 20 * GRID_POINTS)
        sig = 0.25 * (np.interp(v + 2 * sigma_v, grid, soc) - np.interp(v - 2 * sigma_v, grid, soc)) * 100.0
        ok = sig <= max_sigma_pct
        s_v = np.interp(v, grid, soc)
        lower, upper = ok & (s_v <= 0.5), ok & (s_v > 0.5)
        step = v[1] - v[0]                 # the scan's resolution: the bands are widened by one step
        v_lo = float(v[lower].max() + step) if lower.any() else -math.inf
        v_hi = float(v[upper].min() - step) if upper.any() else math.inf
        return v_lo, v_hi


def parse(text: str, source: str) -> OcvTable:
    rows = list(csv.reader(text.splitlines()))
    header = [h.strip() for h in rows[0]] if rows else []
    if header not in (HEADER, HEADER + [HYST_COLUMN]):
        raise OcvError(f"{source}: line 1: the header must be 'soc_pct,ocv_v' or 'soc_pct,ocv_v,{HYST_COLUMN}'")
    cols = len(header)
    soc, v, hy = [], [], []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not x.strip() for x in row):
            continue
        if len(row) != cols:
            raise OcvError(f"{source}: line {n}: expected {cols} values, got {len(row)}")
        try:
            vals = [float(x) for x in row]
        except ValueError:
            raise OcvError(f"{source}: line {n}: not a number: {','.join(row)!r}") from None
        if not all(math.isfinite(x) for x in vals):
            raise OcvError(f"{source}: line {n}: values must be finite numbers")
        s, u = vals[0], vals[1]
        if cols == 3:
            if not 0.0 <= vals[2] <= HYST_MAX_MV:
                raise OcvError(f"{source}: line {n}: {HYST_COLUMN} {vals[2]:g} outside 0..{HYST_MAX_MV:g}")
            hy.append(vals[2])
        if not 0.0 <= s <= 100.0:
            raise OcvError(f"{source}: line {n}: soc_pct {s:g} outside 0..100")
        if not 0.5 <= u <= 5.0:
            raise OcvError(f"{source}: line {n}: ocv_v {u:g} outside 0.5..5 V")
        if soc and s <= soc[-1]:
            raise OcvError(f"{source}: line {n}: soc_pct must increase (got {s:g} after {soc[-1]:g})")
        if v and u <= v[-1]:
            raise OcvError(f"{source}: line {n}: ocv_v must increase with SOC (got {u:g} after {v[-1]:g}); "
                           "a flat step makes SOC ambiguous")
        soc.append(s)
        v.append(u)
    if len(soc) < 2 or soc[0] != 0.0 or soc[-1] != 100.0:
        raise OcvError(f"{source}: the table must run from soc_pct 0 to 100 with at least 2 points")
    return OcvTable(np.array(soc), np.array(v), source, np.array(hy) if cols == 3 else None)


def load(path: str | Path) -> OcvTable:
    from ems.config.files import FileRefused, read_text_bounded

    p = Path(path)
    try:
        text = read_text_bounded(p, what="OCV table")
    except FileRefused as e:
        raise OcvError(str(e)) from None
    return parse(text, str(p))


def default_table(chemistry: str = "LFP") -> OcvTable:
    name = DEFAULT_TABLES[chemistry]
    return parse(resources.files("ems.estimation").joinpath(name).read_text(), f"ems/estimation/{name}")


def table_for(battery) -> OcvTable:
    """The OCV table a battery config section names: its file, or its chemistry's shipped table."""
    if battery.ocv_table:
        return load(battery.ocv_table)
    if battery.chemistry not in DEFAULT_TABLES:
        raise OcvError(f"chemistry {battery.chemistry!r} ships no OCV table; set battery.ocv_table")
    return default_table(battery.chemistry)
