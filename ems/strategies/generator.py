"""Diesel generator control (000_… 3.4.4, 003_…): start/stop by SOC, by time slot or by hand, and the PCS
charging power while it runs.

The generator is started when the site has no grid: SOC mode starts it at or below the start SOC and
stops it at or above the stop SOC; time mode runs it between start and stop time (over midnight when the
start is later); manual mode follows the operator. Without running feedback within the startup timeout
the start has failed: GC_Fault (25) is raised, the start command is withdrawn and the generator stays
locked out until a fault reset.

While it runs, the PCS charges from it: rated mode draws rated_output_pct × rating − load (nothing if
that is negative); battery mode draws the set charging power, but never more than that headroom.
"""
from __future__ import annotations

from ems.config.fields import parse_hhmm
from ems.strategies.base import TARGET, Request, Strategy, decision

GC_FAULT = 25                    # GC_Fault in the alarm catalogue


class Generator(Strategy):
    name = "generator"

    def __init__(self, cfg):
        self.cfg = cfg.generator
        self.start_min = parse_hhmm(self.cfg.start_time)
        self.stop_min = parse_hhmm(self.cfg.stop_time)
        self.want = False
        self.start_at = None          # when the start command went out
        self.failed = False

    def _in_time_slot(self, t) -> bool:
        m = t.hour * 60 + t.minute
        if self.start_min <= self.stop_min:
            return self.start_min <= m < self.stop_min
        return m >= self.start_min or m < self.stop_min

    def decide(self, snap):
        if not self.cfg.enabled:
            return None
        if self.failed and snap.operator.fault_reset:
            self.failed = False
        soc, running = snap.soc_pct, snap.di.get("generator_feedback", False)
        if snap.on_grid:
            self.want = False
        elif self.cfg.start_stop_mode == "manual":
            self.want = snap.operator.generator_on
        elif self.cfg.start_stop_mode == "time":
            self.want = self._in_time_slot(snap.time)
        elif soc is not None:
            if soc <= self.cfg.start_soc_pct:
                self.want = True
            elif soc >= self.cfg.stop_soc_pct:
                self.want = False
        command = self.want and not self.failed
        if command and self.start_at is None:
            self.start_at = snap.time
        if not command:
            self.start_at = None
        if command and not running and (snap.time - self.start_at).total_seconds() > self.cfg.startup_timeout_min * 60:
            self.failed, command, self.start_at = True, False, None
        alarms = (GC_FAULT,) if self.failed else ()
        outputs = {"generator_start": command}
        if self.failed:
            return decision("generator failed to start: GC_Fault (25), reset to retry", outputs=outputs, alarms=alarms)
        if not command:
            return decision("generator off", outputs=outputs)
        if not running:
            return decision("generator starting", outputs=outputs)
        load = snap.load_w
        if load is None:
            return decision("generator running, load unknown: no charging", Request(TARGET, 0.0), outputs=outputs)
        net_load = load - (snap.pv_w or 0.0)
        headroom = max(self.cfg.rated_output_pct / 100.0 * self.cfg.rated_power_w - net_load, 0.0)
        charge = headroom if self.cfg.power_mode == "rated" else min(self.cfg.charge_power_w, headroom)
        return decision(f"generator running: charging {charge / 1000:.1f} kW ({self.cfg.power_mode} power mode)",
                        Request(TARGET, -charge), outputs=outputs)
