"""The battery's learned state across restarts: every cell's SOC and its uncertainty, the hysteresis, the
learned current offset and capacity, SOH — knowledge of the cells, not a setting (a factory reset keeps it)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ems._core import layout as L
from ems.control.controller import Controller


def save_state(ctrl: Controller, path: Path) -> None:
    """The SOC estimate (every cell's SOC and sigma, hysteresis, the learned current offset) and SOH survive
    a restart (written atomically: temp file, then rename)."""
    b = ctrl.fast.buffers
    state = {"version": 2, "saved_at": ctrl.clock.now().isoformat(),
             "cell_soc": b.cell_soc.round(6).tolist(), "cell_sigma": b.cell_sig.round(6).tolist(),
             "hysteresis": b.est_state[:, L.SE_HYST].tolist(), "offset_a": b.est_state[:, L.SE_OFFSET_A].tolist(),
             "offset_bound_a": b.est_state[:, L.SE_OFFSET_BOUND_A].tolist(),
             "capacity_error": b.est_state[:, L.SE_CAP_ERR].tolist(),
             "capacity_ah": b.capacity_ah.tolist(), "soh": ctrl.soh.to_dict(),
             "soc_pct": float(b.stack_soc[L.SOC_MEAN])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def load_state(ctrl: Controller, path: Path) -> bool:
    """Restore a saved estimate; False (and nothing changed) when the file is unreadable or from another
    stack shape. Version 1 files (pack charge only) restore each PACK's SOC to its cells."""
    b = ctrl.fast.buffers
    try:
        state = json.loads(path.read_text())
        if "cell_soc" in state:
            soc = np.array(state["cell_soc"], dtype=float)
            sig = np.array(state["cell_sigma"], dtype=float)
            cap = np.array(state["capacity_ah"], dtype=float)
            if soc.shape != b.cell_soc.shape or sig.shape != b.cell_sig.shape or cap.shape != b.capacity_ah.shape:
                return False
            if not (np.isfinite(soc).all() and np.isfinite(sig).all() and (cap > 0).all()):
                return False
            hyst = np.array(state["hysteresis"], dtype=float)
            off = np.array(state["offset_a"], dtype=float)
            off_b = np.array(state["offset_bound_a"], dtype=float)
            b.cell_soc[:] = soc.clip(0.0, 1.0)
            b.cell_sig[:] = sig.clip(0.0, 1.0)
            b.capacity_ah[:] = cap
            b.est_state[:, L.SE_HYST] = hyst.clip(-1.0, 1.0)
            b.est_state[:, L.SE_OFFSET_A] = off
            b.est_state[:, L.SE_OFFSET_BOUND_A] = off_b
            if "capacity_error" in state:          # absent in files written before it was kept
                b.est_state[:, L.SE_CAP_ERR] = np.array(state["capacity_error"], dtype=float).clip(0.0, 1.0)
            ctrl.soh.restore(state.get("soh", []))
        else:
            q = np.array(state["charge_ah"], dtype=float)
            if q.shape != b.charge_ah.shape or not np.isfinite(q).all():
                return False
            per = b.cell_soc.shape[1] // q.shape[1]
            b.cell_soc[:] = np.repeat((q / b.capacity_ah).clip(0.0, 1.0), per, axis=1)
            b.cell_sig[:] = ctrl.cfg.soc_estimation.initial_sigma_pct / 100.0
        b.est_state[:, L.SE_PEND_S] = b.est_params[L.EP_STEP_S]        # results at the first tick
        return True
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False
