"""A parallel slave follows its master (docs/parallel.md): the master's setpoint while its lease holds,
else the configured fallback — standby (0 W), or self-use on this unit's own grid meter reading limited
to its share: pcs + share × grid, within its share of the site's last limits. Every unit in fallback
self-use thus takes its share of the grid's error, and together they take it once (N units each taking
all of it would overshoot N-fold).

It sits where external dispatch sits in the priority order: protection, BMS limits, one-click shutdown and
the safety inputs of this unit still bound it (a slave never waits for the master to protect itself).
"""
from ems.strategies.base import TARGET, Request, Strategy, decision


class ParallelFollow(Strategy):
    name = "parallel"

    def decide(self, snap):
        view = snap.parallel
        if view is None:
            return None
        if view.setpoint_w is not None:
            return decision(f"{view.reason}: {view.setpoint_w / 1000:.1f} kW", Request(TARGET, view.setpoint_w))
        if view.state == "waiting" or view.fallback == "standby":
            return decision(f"{view.reason}: standby", Request(TARGET, 0.0))
        target = snap.grid_neutral_pcs_w()
        if target is None:
            return decision(f"{view.reason}: fallback self-use without a grid reading: standby", Request(TARGET, 0.0))
        own = snap.pcs_w + view.share * (target - snap.pcs_w)
        own = min(max(own, -view.fallback_charge_w), view.fallback_discharge_w)
        return decision(f"{view.reason}: fallback self-use, {view.share * 100:.1f} % share", Request(TARGET, own))
