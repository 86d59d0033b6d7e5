"""The battery's learned state across restarts: every cell's SOC and its uncertainty, the hysteresis, the
learned current offset and capacity, SOH — knowledge of the cells, not a setting (a factory reset keeps it)."""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np

from ems._core import layout as L
from ems.config.files import write_atomic
from ems.control.controller import Controller

log = logging.getLogger("ems.state")


def snapshot(ctrl: Controller) -> dict:
    """The state to save, copied out of the core's buffers (cheap: the fast loop's thread takes it; the
    conversion to JSON and the write happen elsewhere)."""
    b = ctrl.fast.buffers
    return {"version": 2, "saved_at": ctrl.clock.now().isoformat(),
            "cell_soc": b.cell_soc.copy(), "cell_sigma": b.cell_sig.copy(),
            "hysteresis": b.est_state[:, L.SE_HYST].copy(), "offset_a": b.est_state[:, L.SE_OFFSET_A].copy(),
            "offset_bound_a": b.est_state[:, L.SE_OFFSET_BOUND_A].copy(),
            "capacity_error": b.est_state[:, L.SE_CAP_ERR].copy(),
            "gain_error": b.est_state[:, L.SE_GAIN_ERR].copy(),
            "capacity_ah": b.capacity_ah.copy(), "soh": ctrl.soh.to_dict(),
            "soc_pct": float(b.stack_soc[L.SOC_MEAN])}


def write_snapshot(state: dict, path: Path) -> None:
    """The snapshot as JSON, written atomically and durably (ems.config.files.write_atomic)."""
    out = {k: (np.round(v, 6).tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    write_atomic(path, json.dumps(out).encode())


def save_state(ctrl: Controller, path: Path) -> None:
    """The SOC estimate (every cell's SOC and sigma, hysteresis, the learned current offset) and SOH survive
    a restart (written atomically and durably)."""
    write_snapshot(snapshot(ctrl), path)


class PeriodicSaver:
    """Saves the state every `interval_s` and soon after every SOC anchor, so a power loss or a kill -9
    costs at most that much of the estimate. The fast loop only takes the snapshot (`poll`); a writer
    thread turns it into JSON and writes it (an fsync on an SD card can take tens of ms)."""

    def __init__(self, path: Path, interval_s: float = 60.0):
        self.path, self.interval_s = Path(path), interval_s
        self._last_s: float | None = None
        self._anchors: np.ndarray | None = None
        self._pending: dict | None = None
        self._cv = threading.Condition()
        self._stop = False
        self.saved = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="ems-state", daemon=True)
        self._thread.start()

    def poll(self, ctrl: Controller, now_s: float) -> bool:
        """Call from the slow loop; True when a save was started."""
        anchors = ctrl.fast.buffers.est_state[:, L.SE_ANCHOR_SEQ]
        anchored = self._anchors is not None and not np.array_equal(anchors, self._anchors)
        if self._last_s is not None and now_s - self._last_s < self.interval_s and not anchored:
            if self._anchors is None:
                self._anchors = anchors.copy()
            return False
        self._last_s, self._anchors = now_s, anchors.copy()
        with self._cv:
            self._pending = snapshot(ctrl)
            self._cv.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._stop:
                    self._cv.wait()
                if self._pending is None:
                    return
                state, self._pending = self._pending, None
            try:
                write_snapshot(state, self.path)
                self.saved += 1
            except OSError as exc:                 # a full or read-only disk: logged, the loop runs on
                self.errors += 1
                log.error("state not saved to %s: %s", self.path, exc)

    def close(self) -> None:
        """Finish the write in progress or pending, then stop (the final save is the caller's: save_state)."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(5.0)


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
            if "gain_error" in state:
                b.est_state[:, L.SE_GAIN_ERR] = np.array(state["gain_error"], dtype=float).clip(0.0, 1.0)
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
