"""Energy counters: power readings integrated into cumulative watt-hours per device, cut at storage-interval
boundaries. Runs on the loop thread (a few float operations per slow tick); the rows it returns go to the
recorder's writer thread.

A reading holds until the next one (zero-order hold, as the plant and the meters step), so the energy of
[t_prev, t] is p_prev × (t − t_prev). An interval boundary inside that span splits it exactly. A missing
reading (stale meter) adds nothing: energy during a comm loss is not invented.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ems.control.events import EMS_ID, GRID_METER_ID, PCS_ID, PV_ID, STACK_ID

DG_METER_ID = 0x05090000

# device → (reading, how its sign splits into energy in / out). "+in": a positive reading counts as energy
# in (grid import, load consumption); "+out": a positive reading counts as energy out (PCS and battery
# discharge, PV and generator output). DESIGN.md sign conventions.
CHANNELS = {
    GRID_METER_ID: ("grid_w", "+in"),
    PCS_ID: ("pcs_w", "+out"),
    STACK_ID: ("dc_w", "+out"),
    PV_ID: ("pv_w", "+out"),
    DG_METER_ID: ("dg_w", "+out"),
    EMS_ID: ("load_w", "+in"),       # the site's load (computed from the balance), kept under the EMS
}
DEVICE_NAMES = {GRID_METER_ID: "grid meter", PCS_ID: "PCS (AC)", STACK_ID: "battery stack (DC)", PV_ID: "PV",
                DG_METER_ID: "diesel generator", EMS_ID: "site load"}


@dataclass
class Counter:
    e_in_wh: float = 0.0
    e_out_wh: float = 0.0
    p_last: float | None = None      # reading holding since t_last
    p_dt: float = 0.0                # ∫p dt over the current interval (W·s), for the mean power
    dt_seen: float = 0.0             # seconds of the current interval with a reading

    def add(self, sign_in: bool, dt_s: float) -> None:
        p = self.p_last
        if p is None or dt_s <= 0.0:
            return
        wh = p * dt_s / 3600.0
        if (wh > 0.0) == sign_in:
            self.e_in_wh += abs(wh)
        else:
            self.e_out_wh += abs(wh)
        self.p_dt += p * dt_s
        self.dt_seen += dt_s


@dataclass
class EnergyCounters:
    interval_s: float                          # storage interval; 0 = no samples
    counters: dict = field(default_factory=lambda: {d: Counter() for d in CHANNELS})
    t_last: float | None = None
    soc_pct: float | None = None

    def restore(self, totals: dict[int, tuple[float, float]]) -> None:
        """Continue from the last stored counters (a restart does not reset the totals)."""
        for dev, (e_in, e_out) in totals.items():
            if dev in self.counters:
                self.counters[dev].e_in_wh, self.counters[dev].e_out_wh = e_in, e_out

    def start_rows(self, t_s: float) -> list[tuple]:
        """The counters as they stand at a start: the baseline the first interval's energy is measured from."""
        return [(dev, t_s, None, c.e_in_wh, c.e_out_wh, None) for dev, c in self.counters.items()]

    def observe(self, t_s: float, readings: dict[str, float | None], soc_pct: float | None) -> list[tuple]:
        """Integrate up to `t_s` with the held readings, then hold the new ones. Returns the sample rows
        (device_id, t, p_w, e_in_wh, e_out_wh, soc_pct) of every interval boundary passed."""
        rows: list[tuple] = []
        if self.t_last is not None and t_s > self.t_last:
            t = self.t_last
            if self.interval_s > 0:
                b = (math.floor(t / self.interval_s) + 1) * self.interval_s
                while b <= t_s:
                    self._integrate(b - t)
                    rows += self._rows(b)
                    t = b
                    b += self.interval_s
            self._integrate(t_s - t)
        if self.t_last is None or t_s >= self.t_last:
            self.t_last = t_s
        for dev, (key, _) in CHANNELS.items():
            v = readings.get(key)
            self.counters[dev].p_last = v if v is not None and math.isfinite(v) else None
        self.soc_pct = soc_pct if soc_pct is not None and math.isfinite(soc_pct) else None
        return rows

    def flush(self, t_s: float) -> list[tuple]:
        """Rows at `t_s` for a clean stop: the current interval's energy is kept (not a boundary)."""
        rows = self.observe(t_s, {}, self.soc_pct)
        return rows + self._rows(t_s)

    def _integrate(self, dt_s: float) -> None:
        for dev, (_, sign) in CHANNELS.items():
            self.counters[dev].add(sign == "+in", dt_s)

    def _rows(self, t: float) -> list[tuple]:
        rows = []
        for dev, c in self.counters.items():
            p = c.p_dt / c.dt_seen if c.dt_seen > 0 else None
            rows.append((dev, t, p, c.e_in_wh, c.e_out_wh, self.soc_pct if dev == STACK_ID else None))
            c.p_dt = c.dt_seen = 0.0
        return rows
