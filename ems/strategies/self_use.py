"""Self-consumption (000_… 3.4.2.1, 001_…): the battery covers the load and stores the PV surplus so the
grid meter reads zero. At or below the reserve SOC it may only charge, until SOC is back above reserve +
return difference. The feed-in limit and everything above it bound what this asks for."""
from ems.strategies.base import TARGET, Request, Strategy, decision


class SelfUse(Strategy):
    name = "self_use"

    def __init__(self, cfg):
        self.cfg = cfg.self_use
        self.reserve_hold = False

    def decide(self, snap):
        target = snap.grid_neutral_pcs_w()
        if target is None:
            return decision("self-use: grid meter lost, battery idle", Request(TARGET, 0.0))
        soc, reserve = snap.soc_pct, self.cfg.reserve_soc_pct
        if soc is None or soc <= reserve:
            self.reserve_hold = True
        elif soc > reserve + self.cfg.return_difference_pct:
            self.reserve_hold = False
        if self.reserve_hold and target > 0.0:
            return decision(f"self-use: at reserve {reserve:g} %, no discharge", Request(TARGET, 0.0))
        verb = "discharging to cover load" if target > 0 else "storing PV surplus" if target < 0 else "balanced"
        return decision(f"self-use: {verb}", Request(TARGET, target))
