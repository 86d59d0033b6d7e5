"""UPS reserve (001_…): below the discharge cut-off SOC the battery is force-charged; above it the
forced charging exits."""
from ems.strategies.base import TARGET, Request, Strategy, decision


class UpsReserve(Strategy):
    name = "ups_reserve"

    def __init__(self, cfg):
        self.cfg = cfg.ups_reserve
        self.active = False

    def decide(self, snap):
        if not self.cfg.enabled or snap.soc_pct is None:
            self.active = False
            return None
        cut = self.cfg.cutoff_soc_pct
        if snap.soc_pct < cut:
            self.active = True
        elif snap.soc_pct > cut:
            self.active = False
        if not self.active:
            return None
        return decision(f"UPS reserve: SOC {snap.soc_pct:.1f} % below {cut:g} %, charging",
                        Request(TARGET, -self.cfg.power_w))
