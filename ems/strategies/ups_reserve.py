"""UPS reserve (001_…): below the discharge cut-off SOC the battery is force-charged; above it the
forced charging exits.

The cut-off is a floor that persists: at or below it nothing discharges the battery (a lower strategy,
self-use, would otherwise discharge what was just charged — and the controller flipped between 20 kW
charging and discharging 688 times in 34 minutes). The forced charging ends at cutoff + half the return
difference, inside the floor, which ends only above cutoff + return_difference_pct: after a forced charge
the battery idles until PV lifts it past the band, instead of self-use discharging it straight back.
"""
from ems.strategies.base import LE, TARGET, Request, Strategy, decision


class UpsReserve(Strategy):
    name = "ups_reserve"

    def __init__(self, cfg):
        self.cfg = cfg.ups_reserve
        self.active = False            # forced charging
        self.floor = False             # no discharge

    def decide(self, snap):
        if not self.cfg.enabled or snap.soc_pct is None:
            self.active = self.floor = False
            return None
        cut, soc = self.cfg.cutoff_soc_pct, snap.soc_pct
        resume = min(cut + self.cfg.return_difference_pct, 100.0)
        charged = min(cut + self.cfg.return_difference_pct / 2.0, 100.0)
        if soc < cut:
            self.active = True
        elif soc >= charged:
            self.active = False
        if soc <= cut:
            self.floor = True
        elif soc > resume:
            self.floor = False
        if self.active:
            return decision(f"UPS reserve: SOC {soc:.1f} % below {cut:g} %, charging to {charged:g} %",
                            Request(TARGET, -self.cfg.power_w))
        if self.floor:
            return decision(f"UPS reserve: at the {cut:g} % reserve, no discharge until {resume:g} %", Request(LE, 0.0))
        return None
