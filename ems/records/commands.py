"""Commands from the HTTP API's thread to the control loop, which carries them out between its ticks."""
from __future__ import annotations

import queue
import threading


NOT_CONFIRMED = "not confirmed: the control loop did not take the command in time"
# the operator commands the API and the cloud offer → (controller command, value type)
COMMANDS = {
    "fault_reset": ("fault_reset", None),
    "one_click_shutdown": ("one_click_shutdown", bool),
    "forced_charge": ("forced_charge", bool),
    "pcs_off": ("pcs_off", bool),
    "soc_calibration": ("soc_calibration", bool),
    "generator": ("generator", bool),
}


class CommandBridge:
    """API thread → control loop: the loop carries commands out between its ticks (`drain`)."""

    def __init__(self):
        self._q: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, name: str, value, user: str, timeout_s: float = 3.0):
        """Carry out a command; "reconfigure" (value: a validated SiteConfig) answers (applied sections,
        sections that need a restart), every other command a text."""
        done, result = threading.Event(), {}
        self._q.put((name, value, user, done, result))
        if not done.wait(timeout_s):
            # still queued: the loop carries it out when it next drains (the caller must not say otherwise)
            return NOT_CONFIRMED
        return result.get("result", "")

    def drain(self, ctrl) -> None:
        while not self._q.empty():
            name, value, user, done, result = self._q.get_nowait()
            try:
                if name == "reconfigure":
                    result["result"] = ctrl.reconfigure(value)
                elif name in ("dispatch_w", "reactive_var") and isinstance(value, dict):   # a lease of its own
                    ctrl.command(name, value["value"], lease_s=value.get("lease_s"), source=user)
                    result["result"] = "done"
                else:
                    ctrl.command(name, value, source=user)
                    result["result"] = "done"
            except ValueError as exc:
                result["result"] = f"refused: {exc}"
            done.set()
