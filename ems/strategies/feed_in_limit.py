"""Grid feed-in limit: fixed W or grid connection coefficient × installed PV (001_… self-consumption),
with the RRCR dry contacts K1–K4 replacing the coefficient when enabled (001_…, 000_… 3.4.8).

RRCR with no contact closed is a wiring fault or a receiver without power: the manual's 5009 RRCR_fault says
at least one contact is always closed. The export is limited at once to the most restrictive of K1–K4 (the
grid operator's order is unknown, so the tightest one it could have given holds), and 5009 is raised once
no contact has been closed for [rrcr] fault_delay_s (a receiver switching between steps opens all its
contacts for a moment).

The battery never discharges into an export beyond the limit: pcs ≤ pcs_now + grid_now + limit. PV beyond
what load and battery take is curtailed by the controller using `limit_w`. Grid meter lost: no discharge
at all (we cannot see the export), the designed safe state.
"""
from ems.strategies.base import LE, Request, Strategy, decision


class FeedInLimit(Strategy):
    name = "feed_in_limit"

    RRCR_FAULT = 5009

    def __init__(self, cfg):
        self.grid = cfg.grid
        self.rrcr = cfg.rrcr
        self.installed_w = cfg.pv.installed_ac_w
        self._none_closed_since = None          # site time since when RRCR shows no closed contact

    def _closed(self, snap) -> list[tuple[float, str]]:
        return [(getattr(self.rrcr, f"k{i}_pct"), f"K{i}") for i in (1, 2, 3, 4) if snap.di.get(f"rrcr_k{i}")]

    def coefficient_pct(self, snap) -> tuple[float, str]:
        if self.rrcr.enabled:
            closed = self._closed(snap)
            if closed:
                pct, contact = min(closed)        # several closed: the most restrictive holds
                return pct, f"RRCR {contact}"
            pct = min(getattr(self.rrcr, f"k{i}_pct") for i in (1, 2, 3, 4))
            return pct, "RRCR: no contact closed, the most restrictive step"
        return self.grid.grid_connection_coefficient_pct, "grid connection coefficient"

    def limit_w(self, snap) -> tuple[float, str]:
        """The export limit in W now, and where it comes from."""
        fixed = self.grid.feed_in_limit_mode == "fixed_w"
        if fixed and not self.rrcr.enabled:
            return self.grid.max_feed_in_w, "fixed feed-in limit"
        pct, source = self.coefficient_pct(snap)
        limit = self.installed_w * pct / 100.0
        if fixed and not self._closed(snap) and self.grid.max_feed_in_w < limit:
            return self.grid.max_feed_in_w, "fixed feed-in limit (RRCR: no contact closed)"
        return limit, f"{source} {pct:g} %"

    def rrcr_fault(self, snap) -> bool:
        """RRCR enabled and no contact closed for [rrcr] fault_delay_s (call once per slow tick)."""
        if not self.rrcr.enabled or self._closed(snap):
            self._none_closed_since = None
            return False
        if self._none_closed_since is None or snap.time < self._none_closed_since:   # a clock step back
            self._none_closed_since = snap.time
        return (snap.time - self._none_closed_since).total_seconds() >= self.rrcr.fault_delay_s

    def decide(self, snap):
        fault = self.rrcr_fault(snap)
        if not snap.on_grid:
            return None
        alarms = (self.RRCR_FAULT,) if fault else ()
        limit, source = self.limit_w(snap)
        neutral = snap.grid_neutral_pcs_w(-limit)
        if neutral is None:
            return decision("grid meter lost: no discharge (export unknown)", Request(LE, 0.0), alarms=alarms)
        return decision(f"feed-in ≤ {limit / 1000:.1f} kW ({source})", Request(LE, neutral), alarms=alarms)
