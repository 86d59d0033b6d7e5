"""Time-period grid feed-in (001_…): in up to 6 daily periods the battery discharges so that the grid
feed-in meets each period's target (0: the system output only covers the load), within the maximum
feed-in limit above it. One cut-off SOC for all periods: once reached inside a period, the function stays
off — even within a period — until the battery is charged above the cut-off again."""
from ems.config.fields import parse_hhmm
from ems.strategies.base import TARGET, Request, Strategy, decision


class TimePeriodFeedIn(Strategy):
    name = "time_period_feed_in"

    def __init__(self, cfg):
        self.cfg = cfg.time_period_feed_in
        self.periods = [(parse_hhmm(p.start), parse_hhmm(p.end), p) for p in self.cfg.periods]
        self.locked = False

    def decide(self, snap):
        if not self.cfg.enabled or not snap.on_grid or snap.soc_pct is None:
            return None
        if snap.soc_pct <= self.cfg.cutoff_soc_pct:
            self.locked = True
        elif self.locked and snap.soc_pct > self.cfg.cutoff_soc_pct:
            self.locked = False
        minute = snap.time.hour * 60 + snap.time.minute
        for start, end, p in self.periods:
            if start <= minute < end:
                if self.locked:
                    return decision(f"grid feed-in period {p.start}-{p.end}: cut-off SOC {self.cfg.cutoff_soc_pct:g} % reached")
                target = snap.grid_neutral_pcs_w(-p.feed_in_w)
                if target is None:
                    return None
                return decision(f"grid feed-in period {p.start}-{p.end}: feeding in {p.feed_in_w / 1000:.1f} kW",
                                Request(TARGET, target))
        return None
