"""Peak shaving and valley filling (000_… 3.4.2.4, 001_…): inside a window, grid import is held at or
below the peak power and at or above the valley power. Both are hard bounds, so they hold under any
time-of-use plan or self-use running below them. Grid-connected only; grid meter lost: inactive (the
feed-in limit above already forbids discharge then)."""
from ems.strategies.base import GE, LE, Request, Strategy, decision
from ems.strategies.schedule import Window


class PeakShaving(Strategy):
    name = "peak_shaving"

    def __init__(self, cfg):
        self.windows = [(Window.of(w), w) for w in cfg.peak_shaving.windows]

    def decide(self, snap):
        if not snap.on_grid:
            return None
        for window, w in self.windows:
            if window.contains(snap.time):
                at_peak = snap.grid_neutral_pcs_w(w.peak_w)
                at_valley = snap.grid_neutral_pcs_w(w.valley_w)
                if at_peak is None:
                    return None
                return decision(f"peak shaving: grid import {w.valley_w / 1000:.1f} … {w.peak_w / 1000:.1f} kW",
                                Request(GE, at_peak), Request(LE, at_valley))
        return None
