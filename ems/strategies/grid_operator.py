"""The grid operator's dispatch (001_… South Australia dispatch): the grid company limits the PCS's power,
the site's feed-in and the PCS's ramp rate, each a lease (the controller drops one when it lapses). Ranked
with the grid-operator limits: above the customer's strategies (forced charging, dispatch, plans,
self-use), below protection, shutdown and off-grid / generator control. The ramp is applied by the
controller to the fast path's setpoint ramp; PV is curtailed to the feed-in limit by the controller as for
the site's own feed-in limit."""
from ems.strategies.base import GE, LE, Request, Strategy, decision


class GridOperator(Strategy):
    name = "grid_operator"

    def decide(self, snap):
        limits = snap.operator.grid_limits
        if not limits:
            return None
        requests, why = [], []
        pcs_limit = limits.get("pcs_limit_w")
        if pcs_limit is not None:
            requests += [Request(LE, pcs_limit), Request(GE, -pcs_limit)]
            why.append(f"|PCS| ≤ {pcs_limit / 1000:.1f} kW")
        feed_in = limits.get("feed_in_limit_w")
        if feed_in is not None:
            if snap.grid_w is None or snap.pcs_w is None:
                requests.append(Request(LE, 0.0))        # the export cannot be seen: no discharge (as feed_in_limit)
                why.append("feed-in limit without a grid reading: no discharge")
            else:
                requests.append(Request(LE, snap.pcs_w + snap.grid_w + feed_in))
                why.append(f"feed-in ≤ {feed_in / 1000:.1f} kW")
        if "ramp_w_per_s" in limits:
            why.append(f"ramp ≤ {limits['ramp_w_per_s'] / 1000:.1f} kW/s")
        return decision("grid operator: " + ", ".join(why), *requests)
