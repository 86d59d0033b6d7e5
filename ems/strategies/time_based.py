"""Time-based charge/discharge (001_…): up to 28 weekly groups, each with its power and cut-off SOC.

Charge group: charge at the group's power until the cut-off SOC, then the battery stops charging.
Discharge group: discharge at the group's power until the cut-off SOC, then charge enabled / discharge
disabled (PV surplus may still charge it). Outside every group this strategy is silent and
self-consumption runs.
"""
from ems.strategies.base import TARGET, Request, Strategy, decision
from ems.strategies.schedule import Window


class TimeBased(Strategy):
    name = "time_based"

    def __init__(self, cfg):
        self.groups = [(Window.of(g), g) for g in cfg.time_based.groups]

    def decide(self, snap):
        for i, (window, g) in enumerate(self.groups):
            if not window.contains(snap.time):
                continue
            soc = snap.soc_pct
            label = f"time group {i + 1} ({g.start}-{g.end})"
            if g.mode == "charge":
                if soc is None or soc >= g.cutoff_soc_pct:
                    return decision(f"{label}: charge cut-off {g.cutoff_soc_pct:g} % reached", Request(TARGET, 0.0))
                return decision(f"{label}: charging {g.power_w / 1000:.1f} kW to {g.cutoff_soc_pct:g} %",
                                Request(TARGET, -g.power_w))
            if soc is not None and soc > g.cutoff_soc_pct:
                return decision(f"{label}: discharging {g.power_w / 1000:.1f} kW to {g.cutoff_soc_pct:g} %",
                                Request(TARGET, g.power_w))
            neutral = snap.grid_neutral_pcs_w()
            return decision(f"{label}: discharge cut-off {g.cutoff_soc_pct:g} % reached, charge only",
                            Request(TARGET, min(neutral, 0.0) if neutral is not None else 0.0))
        return None
