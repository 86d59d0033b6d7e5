"""Pmeteroffset (000_… 3.4.2.3): hold a constant grid exchange; grid-connected only."""
from ems.strategies.base import TARGET, Request, Strategy, decision


class Pmeteroffset(Strategy):
    name = "pmeteroffset"

    def __init__(self, cfg):
        self.cfg = cfg.pmeteroffset

    def decide(self, snap):
        if not self.cfg.enabled or not snap.on_grid:
            return None
        target = snap.grid_neutral_pcs_w(self.cfg.grid_w)
        if target is None:
            return None
        return decision(f"Pmeteroffset: grid held at {self.cfg.grid_w / 1000:.1f} kW", Request(TARGET, target))
