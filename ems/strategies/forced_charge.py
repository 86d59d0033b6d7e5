"""Forced charging (001_…): manual — charge until the charging cut-off SOC, then exit; undervoltage —
always enabled, entered when the battery reports under-voltage, left when it cannot be charged or
reaches the cut-off SOC."""
from ems.strategies.base import TARGET, Request, Strategy, decision


class ForcedCharge(Strategy):
    name = "forced_charge"

    def __init__(self, cfg):
        self.cfg = cfg.forced_charge
        self.undervoltage_active = False

    def decide(self, snap):
        cut = self.cfg.cutoff_soc_pct
        soc = snap.soc_pct
        if snap.undervoltage and not snap.charge_prohibited:
            self.undervoltage_active = True
        if self.undervoltage_active:
            if snap.charge_prohibited or (soc is not None and soc >= cut):
                self.undervoltage_active = False
            else:
                return decision(f"undervoltage forced charging at {self.cfg.undervoltage_power_w / 1000:.1f} kW",
                                Request(TARGET, -self.cfg.undervoltage_power_w))
        if snap.operator.forced_charge:
            if soc is None:
                return decision("forced charging: SOC unknown, holding", Request(TARGET, 0.0))
            if soc >= cut or snap.charge_prohibited:
                return decision(f"forced charging done at {soc:.1f} %", finished=True)
            return decision(f"forced charging to {cut:g} % at {self.cfg.power_w / 1000:.1f} kW",
                            Request(TARGET, -self.cfg.power_w))
        return None
