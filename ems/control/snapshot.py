"""The frozen, timestamped view of the site that strategies decide on (DESIGN.md: snapshot per tick).

A measurement past its max age is None, never a stale number: each strategy has a designed fallback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class Operator:
    """Commands from operators and SCADA as they stand this tick."""
    one_click_shutdown: bool = False
    forced_charge: bool = False
    dispatch_w: float | None = None        # the remote setpoint, None once its lease expired
    generator_on: bool = False             # manual generator start (start/stop mode "manual")
    fault_reset: bool = False              # a fault reset was requested since the last slow tick
    grid_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))   # the grid operator's,
    # while their leases hold: pcs_limit_w (|PCS| ≤), feed_in_limit_w (site export ≤), ramp_w_per_s


@dataclass(frozen=True)
class Snapshot:
    time: datetime                         # local time of the site
    grid_w: float | None                   # > 0 importing
    pv_w: float | None
    pcs_w: float | None                    # > 0 discharging
    dg_w: float | None
    soc_pct: float | None                  # stack SOC; None when the BMS is lost
    charge_limit_w: float                  # from the fast path (protection, BMS, derating)
    discharge_limit_w: float
    charge_prohibited: bool = False        # the BMS says: full
    discharge_prohibited: bool = False     # the BMS says: empty
    undervoltage: bool = False             # cell under-voltage warning or discharge prohibited
    on_grid: bool = True
    cabinet_t_degc: float | None = None    # cabinet air temperature from the air conditioner
    irradiance_w_m2: float | None = None   # plane-of-array irradiance from a data logger, if fitted
    charger_demand_w: float | None = None  # what the EV chargers ask for, if fitted
    soc_bound_pct: float | None = None     # the stack SOC's uncertainty bound, ± percentage points
    di: Mapping[str, bool] = field(default_factory=lambda: MappingProxyType({}))
    operator: Operator = field(default_factory=Operator)
    parallel: object | None = None          # a slave: the master's lease (ems.parallel.slave.FollowView)

    @property
    def load_w(self) -> float | None:
        """Site consumption from the balance load = pv + pcs + grid + dg (DESIGN.md signs)."""
        parts = (self.pv_w, self.pcs_w, self.grid_w, self.dg_w)
        return None if any(p is None for p in parts) else sum(parts)

    def grid_neutral_pcs_w(self, grid_target_w: float = 0.0) -> float | None:
        """The PCS power that would bring the grid meter to grid_target_w, other flows unchanged."""
        if self.grid_w is None or self.pcs_w is None:
            return None
        return self.pcs_w + self.grid_w - grid_target_w
