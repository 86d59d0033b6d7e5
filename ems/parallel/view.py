"""The parallel group as the status views and the API show it (read from another thread: the values are
the control thread's of its last slow tick, each replaced whole, so a reader sees each unit consistent)."""
from __future__ import annotations


def parallel_view(ctrl, members: bool = True) -> dict:
    par = ctrl.cfg.parallel
    if not par.enabled:
        return {"enabled": False, "role": "single"}
    out = {"enabled": True, "role": par.role, "unit_id": par.unit_id, "units": par.units}
    if ctrl.follower is not None:
        f, now = ctrl.follower, ctrl.clock.monotonic_s()
        out.update(state=f.state(now), master_id=par.master_id, master_address=par.master_address,
                   lease_remaining_s=round(max(0.0, f.expires_s - now), 2), commands=f.commands, conflicts=f.conflicts,
                   setpoint_w=f.cmd.setpoint_w if f.cmd else None, share=f.cmd.share if f.cmd else None,
                   fallback=par.fallback)
    elif ctrl.group is not None:
        g = ctrl.group
        site = g.site()
        out.update(state="master", online=int(g.online.sum()), site=site, site_target_w=g.site_target_w,
                   unallocated_w=g.unallocated_w, cycles=g.cycles)
        if members:
            out["members"] = g.rows()
    return out
