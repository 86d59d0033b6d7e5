"""The simulated site: grid, PV, load, PCS and battery stack with the power balance
load_w = pv_w + pcs_w + grid_w + dg_w holding at every step (DESIGN.md signs)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


from ems.config.schema import SiteConfig
from ems.sim.cells import StackPlant
from ems.sim.profiles import LoadProfile, PvProfile


@dataclass
class Flows:
    grid_w: float = 0.0
    pv_w: float = 0.0
    load_w: float = 0.0
    pcs_w: float = 0.0
    dg_w: float = 0.0
    unserved_w: float = 0.0       # load that could not be supplied (off-grid beyond PV + battery)


class Pcs:
    """Follows its setpoint with a ramp, within its rating and what the battery contactors allow."""

    def __init__(self, rated_w: float, ramp_w_per_s: float, efficiency: float = 0.97, standby_share: float = 0.003):
        self.rated_w = rated_w
        self.ramp_w_per_s = ramp_w_per_s
        self.efficiency = efficiency
        self.standby_w = standby_share * rated_w     # drawn from the battery whenever the PCS runs
        self.running = True
        self.p_w = 0.0

    def follow(self, setpoint_w: float, dt_s: float, run: bool, battery_available: bool) -> float:
        target = setpoint_w if (run and battery_available) else 0.0
        target = min(max(target, -self.rated_w), self.rated_w)
        if not (run and battery_available):
            self.p_w = 0.0          # stop / contactors open: the PCS stops at once
            return self.p_w
        step = self.ramp_w_per_s * dt_s if self.ramp_w_per_s > 0 else float("inf")
        self.p_w += min(max(target - self.p_w, -step), step)
        return self.p_w

    def dc_power_w(self) -> float:
        p = self.p_w / self.efficiency if self.p_w > 0 else self.p_w * self.efficiency
        return p + (self.standby_w if self.running else 0.0)


class DieselGenerator:
    """Starts a fixed delay after its start command (unless failed); stops at once when released."""

    def __init__(self, rated_w: float, start_delay_s: float = 30.0):
        self.rated_w = rated_w
        self.start_delay_s = start_delay_s
        self.commanded = False
        self.running = False
        self.failed = False          # scenario: it will not start
        self._since_s = 0.0

    def step(self, dt_s: float) -> None:
        if not self.commanded or self.failed:
            self.running, self._since_s = False, 0.0
            return
        self._since_s += dt_s
        self.running = self._since_s >= self.start_delay_s


class Cabinet:
    """Cabinet air as one thermal node: outside air through the walls, the cells' I²R heat, the air
    conditioner's cooling or heating. Outside air follows a daily curve (warmest at 15:00)."""

    def __init__(self, outside_mean_degc: float = 25.0, outside_swing_degc: float = 7.0,
                 capacity_j_per_k: float = 200e3, ua_w_per_k: float = 60.0, cooling_w: float = 6e3,
                 heating_w: float = 3e3):
        self.outside_mean_degc, self.outside_swing_degc = outside_mean_degc, outside_swing_degc
        self.capacity_j_per_k, self.ua_w_per_k = capacity_j_per_k, ua_w_per_k
        self.cooling_w, self.heating_w = cooling_w, heating_w
        self.cooling = self.heating = False
        self.t_degc = outside_mean_degc

    def outside_degc(self, local: datetime) -> float:
        h = local.hour + local.minute / 60.0
        return self.outside_mean_degc + self.outside_swing_degc * math.cos(2 * math.pi * (h - 15.0) / 24.0)

    def step(self, local: datetime, dt_s: float, cell_heat_w: float) -> float:
        q = cell_heat_w + self.ua_w_per_k * (self.outside_degc(local) - self.t_degc)
        q += (self.heating_w if self.heating else 0.0) - (self.cooling_w if self.cooling else 0.0)
        self.t_degc += dt_s * q / self.capacity_j_per_k
        return self.t_degc


class Plant:
    GENERAL_LOAD_SHARE = 0.6         # the rest is important load (graded load shedding)

    def __init__(self, cfg: SiteConfig, pv_profile: str = "clear", load_profile: str = "commercial",
                 load_peak_w: float = 80_000.0, seed: int = 1, outside_mean_degc: float = 25.0,
                 outside_swing_degc: float = 7.0, charger_w: float = 0.0):
        b = cfg.battery
        self.stack = StackPlant(b.clusters, b.cells_per_cluster, b.cell_capacity_ah, b.initial_soc_pct, seed,
                                rated_a=b.rated_charge_a)
        self.pcs = Pcs(cfg.pcs.rated_power_w, cfg.pcs.ramp_w_per_s)
        self.pv = PvProfile(pv_profile, cfg.pv.installed_ac_w, cfg.site.latitude_deg, seed + 2)
        self.load = LoadProfile(load_profile, load_peak_w, seed + 1)
        self.grid_available = True           # mains present
        self.grid_relay_open = False         # the EMS islanded the site (forced off-grid)
        self.generator = DieselGenerator(cfg.generator.rated_power_w) if cfg.generator.enabled else None
        # the cabinet's air is modelled where an air conditioner controls it; otherwise the cells sit at 25 °C
        self.cabinet = Cabinet(outside_mean_degc, outside_swing_degc) if cfg.air_conditioner.enabled else None
        self.shed_general = self.shed_important = self.shed_chargers = False
        self.charger_w = charger_w if cfg.off_grid.chargers_fitted else 0.0   # EV chargers, 07:00–19:00
        self.flows = Flows()
        self.irradiance_w_m2 = 0.0           # what a data logger's irradiance sensor would read
        self.bus_pcs_w = 0.0                 # other cabinets' PCS on this site's AC bus (sim-site --ac-bus)

    @property
    def grid_connected(self) -> bool:
        return self.grid_available and not self.grid_relay_open

    def charger_demand_w(self, local: datetime) -> float:
        return self.charger_w if 7 <= local.hour < 19 else 0.0

    def connected_load_w(self, local: datetime) -> float:
        total = self.load.value(local)
        share = (0.0 if self.shed_general else self.GENERAL_LOAD_SHARE) + \
                (0.0 if self.shed_important else 1.0 - self.GENERAL_LOAD_SHARE)
        return total * share + (0.0 if self.shed_chargers else self.charger_demand_w(local))

    def step(self, local: datetime, dt_s: float, setpoint_w: float, pcs_run: bool = True,
             pv_limit_w: float | None = None, open_contactors=()) -> Flows:
        st = self.stack
        # the BMS opens a tripped cluster's contactors and (after a reset) closes them again
        st.connected[:] = 1
        for c in open_contactors:
            st.connected[c] = 0
        battery_ok = bool(st.connected.any())
        pv_avail = self.pv.value(local, dt_s)
        self.irradiance_w_m2 = 1000.0 * pv_avail / self.pv.installed_w if self.pv.installed_w > 0 else 0.0
        pv = pv_avail if pv_limit_w is None else min(pv_avail, max(pv_limit_w, 0.0))
        load = self.connected_load_w(local)
        gen = self.generator
        if gen is not None:
            gen.step(dt_s)
        self.pcs.running = pcs_run and battery_ok
        unserved = 0.0
        dg = 0.0
        if self.grid_connected:
            pcs = self.pcs.follow(setpoint_w, dt_s, pcs_run, battery_ok)
            grid = load - pv - pcs - self.bus_pcs_w
        elif gen is not None and gen.running:
            # the generator is the AC source (through the ATS); the PCS follows its setpoint against it
            pcs = self.pcs.follow(setpoint_w, dt_s, pcs_run, battery_ok)
            dg = load - pv - pcs
            if dg < 0.0:                       # a generator cannot take power back: PV is curtailed
                pv += dg
                dg = 0.0
            if dg > gen.rated_w:               # overload: the generator's breaker opens, the PCS forms the grid
                gen.failed = True
                gen.running = False
                dg = 0.0
                self.pcs.p_w = min(max(load - pv, -self.pcs.rated_w), self.pcs.rated_w)
                pcs = self.pcs.p_w
            grid = 0.0
        else:
            # off-grid: the PCS forms the grid and covers what PV does not; PV is curtailed to what load and
            # battery can take; load beyond PV + PCS rating + battery limits is not served
            chg, dchg, _, _ = st.limits()
            v = max(st.bus_voltage(), 1.0)
            can_dchg = min(self.pcs.rated_w, float(dchg[st.connected.astype(bool)].sum()) * v) if battery_ok else 0.0
            can_chg = min(self.pcs.rated_w, float(chg[st.connected.astype(bool)].sum()) * v) if battery_ok else 0.0
            if not pcs_run:                      # ESS shut down: no grid former, the site is dark
                self.pcs.p_w = 0.0
                unserved, load, pv = load, 0.0, 0.0
                can_dchg = can_chg = 0.0
            need = load - pv
            if need > can_dchg:
                unserved = need - can_dchg
                need = can_dchg
            if need < -can_chg:
                pv += need + can_chg           # curtail PV by the surplus the battery cannot take
                need = -can_chg
            self.pcs.p_w = need
            pcs = need
            load -= unserved
            grid = 0.0
        v_bus = max(st.bus_voltage(), 1.0)
        st.step(self.pcs.dc_power_w() / v_bus if battery_ok else 0.0, dt_s)
        if self.cabinet is not None:
            heat = float((st.cluster_i_a ** 2 * st.r_ohm_cluster).sum())
            st.ambient_degc = self.cabinet.step(local, dt_s, heat)
        self.flows = Flows(grid_w=grid, pv_w=pv, load_w=load, pcs_w=pcs, dg_w=dg, unserved_w=unserved)
        return self.flows
