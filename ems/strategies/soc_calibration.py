"""Manual and periodic SOC calibration (001_…, 000_… 3.4.3).

Start: charge at full (calibration) power, PV first, grid for the rest, while the battery can be charged.
When the BMS reports charge prohibited (the counting anchors at full), the calibration discharge starts;
calibration exits when SOC falls below the SOC it started at, or to the self-use reserve SOC.
Periodic: on the next calibration date, after the start time; the next date is then `period_days` on.
"""
from __future__ import annotations

from datetime import date, timedelta

from ems.config.fields import parse_hhmm
from ems.strategies.base import TARGET, Request, Strategy, decision


class SocCalibration(Strategy):
    name = "soc_calibration"

    def __init__(self, cfg):
        self.cfg = cfg.soc_calibration
        self.reserve_pct = cfg.self_use.reserve_soc_pct
        self.start_min = parse_hhmm(self.cfg.start_time)
        self.phase = "idle"              # idle → charging → discharging → idle
        self.start_soc: float | None = None
        self.next_date: date | None = None
        self.requested = False

    def request(self, on: bool) -> None:
        """Manual start (True) or cancel (False)."""
        self.requested = on
        if not on:
            self.phase = "idle"

    def _periodic_due(self, snap) -> bool:
        if not self.cfg.periodic_enabled:
            return False
        today = snap.time.date()
        if self.next_date is None:
            self.next_date = today
        return today >= self.next_date and snap.time.hour * 60 + snap.time.minute >= self.start_min

    def decide(self, snap):
        soc = snap.soc_pct
        if self.phase == "idle" and (self.requested or self._periodic_due(snap)):
            if not snap.on_grid or soc is None or snap.charge_prohibited:
                return decision("SOC calibration waiting: needs grid and a chargeable battery")
            self.phase, self.start_soc, self.requested = "charging", soc, False
            if self.cfg.periodic_enabled:
                self.next_date = snap.time.date() + timedelta(days=self.cfg.period_days)
        if self.phase == "charging":
            if snap.charge_prohibited:
                self.phase = "discharging"
            else:
                return decision(f"SOC calibration: charging at {self.cfg.charge_power_w / 1000:.0f} kW until the BMS "
                                "reports full", Request(TARGET, -self.cfg.charge_power_w))
        if self.phase == "discharging":
            floor = max(self.start_soc or 0.0, self.reserve_pct)
            if soc is None or soc < floor or soc <= self.reserve_pct:
                self.phase = "idle"
                return decision("SOC calibration finished" + (f" at {soc:.1f} %" if soc is not None else ""),
                                finished=True)
            return decision(f"SOC calibration: discharging back to {floor:.0f} %",
                            Request(TARGET, self.cfg.discharge_power_w))
        return None
