"""Time-period grid feed-in (001_…): in up to 6 daily periods the battery discharges so that the grid
feed-in meets each period's target (0: the system output only covers the load), within the maximum
feed-in limit above it. One cut-off SOC for all periods: once reached inside a period, the function stays
off — even within a period — until the battery is charged above the cut-off again."""
from ems.strategies.base import TARGET, Request, Strategy, decision
from ems.strategies.schedule import Window


class TimePeriodFeedIn(Strategy):
    name = "time_period_feed_in"

    def __init__(self, cfg):
        self.cfg = cfg.time_period_feed_in
        self.periods = [(Window.of(p), p) for p in self.cfg.periods]      # daily: no days given = every day
        self.locked = False

    def decide(self, snap):
        if not self.cfg.enabled or not snap.on_grid or snap.soc_pct is None:
            return None
        if snap.soc_pct <= self.cfg.cutoff_soc_pct:
            self.locked = True
        elif self.locked and snap.soc_pct > self.cfg.cutoff_soc_pct:
            self.locked = False
        for window, p in self.periods:
            if window.contains(snap.time):
                if self.locked:
                    return decision(f"grid feed-in period {p.start}-{p.end}: cut-off SOC {self.cfg.cutoff_soc_pct:g} % reached")
                target = snap.grid_neutral_pcs_w(-p.feed_in_w)
                if target is None:
                    return None
                return decision(f"grid feed-in period {p.start}-{p.end}: feeding in {p.feed_in_w / 1000:.1f} kW",
                                Request(TARGET, target))
        return None
