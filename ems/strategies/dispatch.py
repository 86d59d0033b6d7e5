"""External dispatch (SCADA / cloud): the remote setpoint while its lease holds (DESIGN.md: every
command is a lease). The controller expires the lease; this strategy only follows what is current."""
from ems.strategies.base import TARGET, Request, Strategy, decision


class Dispatch(Strategy):
    name = "dispatch"

    def decide(self, snap):
        w = snap.operator.dispatch_w
        if w is None:
            return None
        return decision(f"remote dispatch {w / 1000:.1f} kW", Request(TARGET, w))
