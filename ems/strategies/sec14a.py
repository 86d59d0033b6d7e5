"""German §14a (001_…): while the dry contact is triggered, the PCS's AC-side draw from the grid is
limited (4.2 kW). It restricts every strategy below it; only off-grid and generator control rank higher."""
from ems.strategies.base import GE, Request, Strategy, decision


class Sec14a(Strategy):
    name = "sec14a"

    def __init__(self, cfg):
        self.cfg = cfg.sec14a

    def decide(self, snap):
        if not self.cfg.enabled or not snap.di.get("sec14a", False):
            return None
        limit = self.cfg.max_grid_draw_w
        return decision(f"§14a triggered: PCS grid draw ≤ {limit / 1000:.1f} kW", Request(GE, -limit))
