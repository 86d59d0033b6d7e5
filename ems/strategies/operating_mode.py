"""Chint operating modes (002_… 6.4.2.8) where they add to the AlphaESS functions.

- self_consumption: the self-use strategy below runs (nothing here).
- full_feed_in: PV serves the load, then the grid, then the battery; the battery discharges to maximise
  grid feed-in. As a request: discharge as far as allowed — the feed-in limit above narrows it, so PV
  beyond load + feed-in limit charges the battery. The self-use reserve SOC still holds.
- emergency_charging: charge fully and quickly (grid and PV), then hold the charge (no discharge) until
  another mode is chosen.
- tou: rules by season, day class (weekday / weekend / holiday) and time window choose what runs —
  self_consumption, full_feed_in, grid_charge, discharge or idle; outside every rule the base mode runs.
- forced_off_grid: the site islands (grid relay opened, DO `grid_relay_open`) for a runtime test, only
  with a high SOC and a small load and while mains are present; it returns to the grid early at the
  return SOC, if the load grows too big, or when another mode is chosen. The off-grid strategy runs the
  island meanwhile.
- pv_only: storage disabled, PV straight to load and grid (battery held at zero).
"""
from __future__ import annotations

from datetime import date

from ems.config.fields import parse_hhmm, parse_mmdd
from ems.strategies.base import TARGET, Request, Strategy, decision

BIG_W = 1e12        # "as much as allowed": clamped into the feasible interval by the arbiter


class OperatingMode(Strategy):
    name = "operating_mode"

    def __init__(self, cfg):
        self.cfg = cfg.operating_mode
        self.reserve_pct = cfg.self_use.reserve_soc_pct
        self.seasons = [(s.name, parse_mmdd(s.start), parse_mmdd(s.end)) for s in self.cfg.seasons]
        self.holidays_fixed = {h for h in self.cfg.holidays if len(h) == 5}
        self.holidays_dated = {date.fromisoformat(h) for h in self.cfg.holidays if len(h) == 10}
        self.rules = [(r, parse_hhmm(r.start), parse_hhmm(r.end)) for r in self.cfg.tou_rules]

    def season_of(self, d: date) -> str | None:
        md = (d.month, d.day)
        for name, start, end in self.seasons:
            if (start <= md <= end) if start <= end else (md >= start or md <= end):
                return name
        return None

    def day_class(self, d: date) -> str:
        if d in self.holidays_dated or f"{d.month:02d}-{d.day:02d}" in self.holidays_fixed:
            return "holiday"
        return "weekend" if d.weekday() >= 5 else "weekday"

    def _full_feed_in(self, snap, label):
        if snap.soc_pct is None or snap.soc_pct <= self.reserve_pct:
            return decision(f"{label}: at reserve {self.reserve_pct:g} %, PV surplus only", Request(TARGET, -BIG_W))
        return decision(f"{label}: battery discharges for grid feed-in", Request(TARGET, BIG_W))

    islanded = False

    def _forced_off_grid(self, snap):
        c = self.cfg
        soc, load = snap.soc_pct, snap.load_w
        mains = snap.di.get("grid_present", snap.on_grid)
        if not self.islanded:
            if mains and soc is not None and load is not None and soc >= c.forced_off_grid_min_soc_pct \
                    and load <= c.forced_off_grid_max_load_w:
                self.islanded = True
        elif not mains or soc is None or soc <= c.forced_off_grid_return_soc_pct or \
                (load is not None and load > c.forced_off_grid_max_load_w):
            self.islanded = False
        if self.islanded:
            return decision("forced off-grid: islanded for a runtime test, grid as backup",
                            outputs={"grid_relay_open": True})
        return decision("forced off-grid: on grid (needs high SOC, small load, mains present)",
                        outputs={"grid_relay_open": False})

    def decide(self, snap):
        mode = self.cfg.mode
        if mode != "forced_off_grid" and self.islanded:
            self.islanded = False
            return decision("forced off-grid ended: back on grid", outputs={"grid_relay_open": False})
        if mode == "forced_off_grid":
            return self._forced_off_grid(snap)
        if mode == "self_consumption" or not snap.on_grid:
            return None
        if mode == "pv_only":
            return decision("PV mode: storage disabled", Request(TARGET, 0.0))
        if mode == "full_feed_in":
            return self._full_feed_in(snap, "full feed-in")
        if mode == "emergency_charging":
            if snap.charge_prohibited or (snap.soc_pct is not None and snap.soc_pct >= 100.0):
                return decision("emergency charging: full, holding the charge", Request(TARGET, 0.0))
            return decision(f"emergency charging at {self.cfg.emergency_charge_power_w / 1000:.0f} kW",
                            Request(TARGET, -self.cfg.emergency_charge_power_w))
        d = snap.time.date()
        season, day_class = self.season_of(d), self.day_class(d)
        minute = snap.time.hour * 60 + snap.time.minute
        for i, (r, start, end) in enumerate(self.rules):
            if (r.season in ("all", season) and r.day_class in ("all", day_class) and start <= minute < end):
                label = f"TOU rule {i + 1} ({season or 'no season'}, {day_class}, {r.start}-{r.end})"
                soc = snap.soc_pct
                if r.mode == "grid_charge":
                    if soc is None or soc >= r.cutoff_soc_pct:
                        return decision(f"{label}: charged to {r.cutoff_soc_pct:g} %", Request(TARGET, 0.0))
                    return decision(f"{label}: charging {r.power_w / 1000:.1f} kW", Request(TARGET, -r.power_w))
                if r.mode == "discharge":
                    if soc is None or soc <= max(r.cutoff_soc_pct, self.reserve_pct):
                        return decision(f"{label}: discharge cut-off reached", Request(TARGET, 0.0))
                    return decision(f"{label}: discharging {r.power_w / 1000:.1f} kW", Request(TARGET, r.power_w))
                if r.mode == "idle":
                    return decision(f"{label}: battery idle", Request(TARGET, 0.0))
                if r.mode == "full_feed_in":
                    return self._full_feed_in(snap, label)
                return None          # self_consumption: the self-use strategy below runs
        if self.cfg.tou_base_mode == "full_feed_in":
            return self._full_feed_in(snap, "TOU base mode full feed-in")
        return None
