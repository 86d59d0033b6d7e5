"""One unit's state as parallel operation needs it, from its own controller: what a slave serves in its
status block and what the master uses for its own cabinet (one function for both)."""
from __future__ import annotations

from ems._core import layout as L
from ems.parallel.block import (AVAILABLE, BMS_LOST, CHARGE_PROHIBITED, DISCHARGE_PROHIBITED, PCS_LOST,
                                PCS_STOPPED, ROLE_SINGLE, ROLES, SAFETY_STOP, STATE_ACTING, STATE_MASTER,
                                STATE_NAMES, STATE_SINGLE, TRIP)


def unit_state(ctrl) -> dict:
    """The status block's values (ems.parallel.block.status_block names) for this unit now."""
    cfg, b = ctrl.cfg, ctrl.fast.buffers
    par = cfg.parallel
    bms_ok = ctrl.bms_fresh()
    pcs_w = ctrl.fresh("pcs_w")
    tripping = bool(b.results[L.TO_ANY_TRIP_PENDING])
    tripped = bool(b.results[L.TO_ANY_TRIPPED])
    run = bool(ctrl.commands.pcs_run)
    safety = ctrl.safety_stop() is not None
    chg_prohibited = bool(bms_ok and b.cluster_flags[:, L.CLF_CHG_PROHIBITED].any())
    dchg_prohibited = bool(bms_ok and b.cluster_flags[:, L.CLF_DCHG_PROHIBITED].any())
    available = bms_ok and pcs_w is not None and not tripping and run and not safety
    flags = ((available << AVAILABLE) | ((not bms_ok) << BMS_LOST) | ((pcs_w is None) << PCS_LOST)
             | ((tripping or tripped) << TRIP) | ((not run) << PCS_STOPPED) | (safety << SAFETY_STOP)
             | (chg_prohibited << CHARGE_PROHIBITED) | (dchg_prohibited << DISCHARGE_PROHIBITED))
    following = 0
    if not par.enabled:
        role, state = ROLE_SINGLE, STATE_SINGLE
    elif par.role == "master":
        role, state = ROLES["master"], STATE_MASTER
    elif ctrl.group is not None:         # the backup master in control
        role, state, following = ROLES["slave"], STATE_ACTING, par.unit_id
    else:
        role = ROLES["slave"]
        now = ctrl.clock.monotonic_s()
        state = STATE_NAMES.index(ctrl.follower.state(now))
        following = ctrl.follower.following_id(now)
    alarms = sorted(code for code, _ in ctrl.status.active_alarms)
    clip = lambda v, hi=2e9: max(0.0, min(float(v), hi))          # noqa: E731
    return {
        "parallel_id": par.unit_id if par.enabled else 0, "parallel_units": par.units, "parallel_role": role,
        "parallel_state": state, "unit_flags": flags,
        "unit_charge_max_w": clip(b.results[L.TO_CHG_LIMIT_W]) if bms_ok else 0.0,
        "unit_discharge_max_w": clip(b.results[L.TO_DCHG_LIMIT_W]) if bms_ok else 0.0,
        "unit_soc_pct": float(b.stack_soc[L.SOC_MEAN]) if bms_ok else None,
        "unit_charge_energy_wh": clip(b.soc_out[:, L.SOC_SOE_CHG_WH].sum()) if bms_ok else 0.0,
        "unit_discharge_energy_wh": clip(b.soc_out[:, L.SOC_SOE_DCHG_WH].sum()) if bms_ok else 0.0,
        "unit_pcs_power_w": None if pcs_w is None else max(-2e9, min(pcs_w, 2e9)),
        "unit_setpoint_w": max(-2e9, min(ctrl.commands.pcs_setpoint_w, 2e9)),
        "parallel_seq_echo": ctrl.follower.cmd.seq if getattr(ctrl, "follower", None) and ctrl.follower.cmd else 0,
        "unit_rated_power_w": cfg.pcs.rated_power_w,
        "unit_first_alarm": alarms[0] if alarms else 0,
        "unit_heartbeat": ctrl.heartbeat & 0xFFFF, "parallel_following_id": following,
    }
