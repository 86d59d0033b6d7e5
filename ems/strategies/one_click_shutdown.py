"""One-click shutdown (001_…): while enabled, the PCS is held at zero power (and told to stop)."""
from ems.strategies.base import EQ, Request, Strategy, decision


class OneClickShutdown(Strategy):
    name = "one_click_shutdown"

    def decide(self, snap):
        if not snap.operator.one_click_shutdown:
            return None
        return decision("one-click shutdown: PCS held at 0 W", Request(EQ, 0.0))
