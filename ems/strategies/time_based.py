"""Time-based charge/discharge (001_…): up to 28 weekly groups, each with its power and cut-off SOC.

Charge group: charge at the group's power until the cut-off SOC, then the battery stops charging.
Discharge group: discharge at the group's power until the cut-off SOC, then charge enabled / discharge
disabled (PV surplus may still charge it). Outside every group this strategy is silent and
self-consumption runs.

A cut-off once reached holds for the rest of the window unless SOC moves past it by the return difference
([time_based] return_difference_pct): PV charging a discharge group's battery just above its cut-off
does not start the group's full discharge again, and again, every few seconds.
"""
from ems.strategies.base import TARGET, Request, Strategy, decision
from ems.strategies.schedule import Window


class TimeBased(Strategy):
    name = "time_based"

    def __init__(self, cfg):
        self.groups = [(Window.of(g), g) for g in cfg.time_based.groups]
        self.rd = cfg.time_based.return_difference_pct
        self.reached = [False] * len(self.groups)       # the group's cut-off was reached in this window

    def decide(self, snap):
        for i, (window, g) in enumerate(self.groups):
            if not window.contains(snap.time):
                self.reached[i] = False
                continue
            soc = snap.soc_pct
            label = f"time group {i + 1} ({g.start}-{g.end})"
            if g.mode == "charge":
                if soc is None or soc >= g.cutoff_soc_pct:
                    self.reached[i] = True
                elif soc < g.cutoff_soc_pct - self.rd:
                    self.reached[i] = False
                if self.reached[i]:
                    return decision(f"{label}: charge cut-off {g.cutoff_soc_pct:g} % reached", Request(TARGET, 0.0))
                return decision(f"{label}: charging {g.power_w / 1000:.1f} kW to {g.cutoff_soc_pct:g} %",
                                Request(TARGET, -g.power_w))
            if soc is None or soc <= g.cutoff_soc_pct:
                self.reached[i] = True
            elif soc > g.cutoff_soc_pct + self.rd:
                self.reached[i] = False
            if not self.reached[i]:
                return decision(f"{label}: discharging {g.power_w / 1000:.1f} kW to {g.cutoff_soc_pct:g} %",
                                Request(TARGET, g.power_w))
            neutral = snap.grid_neutral_pcs_w()
            return decision(f"{label}: discharge cut-off {g.cutoff_soc_pct:g} % reached, charge only",
                            Request(TARGET, min(neutral, 0.0) if neutral is not None else 0.0))
        return None
