"""Grid feed-in limit: fixed W or grid connection coefficient × installed PV (001_… self-consumption),
with the RRCR dry contacts K1–K4 replacing the coefficient when enabled (001_…, 000_… 3.4.8).

The battery never discharges into an export beyond the limit: pcs ≤ pcs_now + grid_now + limit. PV beyond
what load and battery take is curtailed by the controller using `limit_w`. Grid meter lost: no discharge
at all (we cannot see the export), the designed safe state.
"""
from ems.strategies.base import LE, Request, Strategy, decision


class FeedInLimit(Strategy):
    name = "feed_in_limit"

    def __init__(self, cfg):
        self.grid = cfg.grid
        self.rrcr = cfg.rrcr
        self.installed_w = cfg.pv.installed_ac_w

    def coefficient_pct(self, snap) -> tuple[float, str]:
        if self.rrcr.enabled:
            closed = [(getattr(self.rrcr, f"k{i}_pct"), f"K{i}") for i in (1, 2, 3, 4) if snap.di.get(f"rrcr_k{i}")]
            if closed:
                pct, contact = min(closed)        # several closed: the most restrictive holds
                return pct, f"RRCR {contact}"
        return self.grid.grid_connection_coefficient_pct, "grid connection coefficient"

    def limit_w(self, snap) -> tuple[float, str]:
        """The export limit in W now, and where it comes from."""
        if self.grid.feed_in_limit_mode == "fixed_w" and not (self.rrcr.enabled and any(
                snap.di.get(f"rrcr_k{i}") for i in (1, 2, 3, 4))):
            return self.grid.max_feed_in_w, "fixed feed-in limit"
        pct, source = self.coefficient_pct(snap)
        return self.installed_w * pct / 100.0, f"{source} {pct:g} %"

    def decide(self, snap):
        if not snap.on_grid:
            return None
        limit, source = self.limit_w(snap)
        neutral = snap.grid_neutral_pcs_w(-limit)
        if neutral is None:
            return decision("grid meter lost: no discharge (export unknown)", Request(LE, 0.0))
        return decision(f"feed-in ≤ {limit / 1000:.1f} kW ({source})", Request(LE, neutral))
