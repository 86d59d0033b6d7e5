"""Peak shaving and valley filling (000_… 3.4.2.4, 001_…): inside a window, grid import is held at or
below the peak power and at or above the valley power. Both are hard bounds, so they hold under any
time-of-use plan or self-use running below them. Grid-connected only; grid meter lost: inactive (the
feed-in limit above already forbids discharge then).

A contracted peak is a limit, not a target: the battery aims below it by a margin that follows the load's
recent variability (margin_sigma × the standard deviation of the net load's change from one slow tick to
the next, at least min_margin_w), since the PCS answers the load one tick late. With the simulator's 3 %/s
load noise, aiming at the limit itself left import more than 2 kW above it in 17 % of window steps.
Every time import does exceed the limit is counted as an episode (start, end, maximum excess, energy above
the limit): the controller logs it and the records' statistics and reports sum them up.
"""
import math
from dataclasses import dataclass

from ems.strategies.base import GE, LE, Request, Strategy, decision
from ems.strategies.schedule import Window


@dataclass
class Exceedance:
    start: object                   # site time (datetime)
    end: object
    limit_w: float
    max_excess_w: float
    energy_wh: float


class PeakShaving(Strategy):
    name = "peak_shaving"
    MERGE_S = 10.0                  # an import back above the limit within this is the same episode
    MAX_EPISODE_S = 900.0           # a longer one is reported in parts (the records see it as it goes)

    def __init__(self, cfg):
        self.cfg = cfg.peak_shaving
        self.windows = [(Window.of(w), w) for w in cfg.peak_shaving.windows]
        self._last_net_w = None
        self._var_w2 = 0.0          # EWMA of the squared tick-to-tick change of the net load
        self._alpha = 1.0 / max(self.cfg.variability_ticks, 1)
        self._episode: Exceedance | None = None
        self._last_t = None
        self.finished: list[Exceedance] = []       # taken by the controller each slow tick

    def margin_w(self) -> float:
        return max(self.cfg.min_margin_w, self.cfg.margin_sigma * math.sqrt(self._var_w2))

    def _observe(self, snap, limit_w):
        net = None if snap.grid_w is None or snap.pcs_w is None else snap.grid_w + snap.pcs_w
        if net is not None:
            if self._last_net_w is not None:
                d = net - self._last_net_w
                self._var_w2 += self._alpha * (d * d - self._var_w2)
            self._last_net_w = net
        dt_s = 0.0 if self._last_t is None else max((snap.time - self._last_t).total_seconds(), 0.0)
        self._last_t = snap.time
        ep = self._episode
        excess = None if snap.grid_w is None or limit_w is None else snap.grid_w - limit_w
        if excess is not None and excess > 0.0:
            if ep is None:
                ep = self._episode = Exceedance(snap.time, snap.time, limit_w, 0.0, 0.0)
            ep.end = snap.time
            ep.max_excess_w = max(ep.max_excess_w, excess)
            ep.energy_wh += excess * dt_s / 3600.0
        elif ep is not None and (limit_w is None or (snap.time - ep.end).total_seconds() >= self.MERGE_S):
            self.finished.append(ep)
            self._episode = None
        if self._episode is not None and (snap.time - self._episode.start).total_seconds() >= self.MAX_EPISODE_S:
            self.finished.append(self._episode)
            self._episode = None

    def decide(self, snap):
        window = next((w for win, w in self.windows if win.contains(snap.time)), None) if snap.on_grid else None
        self._observe(snap, window.peak_w if window is not None else None)
        if window is None:
            return None
        margin = self.margin_w()
        at_peak = snap.grid_neutral_pcs_w(window.peak_w - margin)
        at_valley = snap.grid_neutral_pcs_w(window.valley_w)
        if at_peak is None:
            return None
        return decision(f"peak shaving: grid import {window.valley_w / 1000:.1f} … {window.peak_w / 1000:.1f} kW "
                        f"(aiming {margin / 1000:.1f} kW below the peak)", Request(GE, at_peak), Request(LE, at_valley))
