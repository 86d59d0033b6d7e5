"""Off-grid operation (001_… off-grid, 000_… 3.4.6 graded loads, 003_… off-grid parameters).

Without grid or generator the PCS forms the grid and carries the load with PV. This strategy decides what
may stay connected and how much PV may produce:
- all loads are shed at or below the load cut-off SOC or when discharge is prohibited, and reconnected at
  the load access SOC (PV recharges the battery meanwhile, the PCS running without load);
- with graded loads, general loads are shed first (their cut-off / access SOC), then important loads;
- when grid or generator returns, every load is restored at once;
- the ATS gets the ESS-shutdown pre-alarm at or below its SOC, cleared at or above the clear SOC;
- PV setpoint: below the charging protection SOC, ESS charging power factor × chargeable power + K2 × load;
  at or above it (until it falls below protection − deadband), K2 × load, so charging stops;
- chargers (when fitted) are cut off below the charger stop SOC (back 2 points above it), or while their
  demand exceeds what ESS and PV can give beyond the conventional load power (003_…);
- without a generator, the ESS is shut down at or below the stop-ESS SOC (the site goes dark rather than
  the battery deep), and started again when the irradiance reaches the PV start threshold so PV can
  recharge it (loads stay shed until the access SOC).
Relays: energised = shed / pre-alarm, so a controller that dies leaves loads connected.
"""
from ems.strategies.base import Strategy, decision


class OffGrid(Strategy):
    name = "off_grid"

    def __init__(self, cfg):
        self.cfg = cfg.off_grid
        self.shed_general = self.shed_important = False
        self.prealarm = False
        self.charge_protected = False
        self.ess_stopped = False
        self.shed_chargers = False

    def _chargers(self, snap, soc) -> bool:
        c = self.cfg
        if not c.chargers_fitted:
            return False
        if soc is None or soc < c.charger_stop_soc_pct:
            self.shed_chargers = True
        elif soc >= c.charger_stop_soc_pct + 2.0:
            self.shed_chargers = False
        demand = snap.charger_demand_w
        available = snap.discharge_limit_w + (snap.pv_w or 0.0) - c.conventional_load_w
        if demand is not None and demand > max(available, 0.0):
            return True
        return self.shed_chargers

    def decide(self, snap):
        c = self.cfg
        source = snap.on_grid or snap.di.get("generator_feedback", False)
        soc = snap.soc_pct
        if source:
            self.shed_general = self.shed_important = self.prealarm = self.charge_protected = False
            self.ess_stopped = self.shed_chargers = False
            return decision("grid or generator present: all loads connected",
                            outputs={"shed_general_load": False, "shed_important_load": False, "ats_prealarm": False,
                                     "shed_chargers": False})
        empty = soc is None or snap.discharge_prohibited
        if empty or soc <= c.load_cutoff_soc_pct:
            self.shed_general = self.shed_important = True
        if c.graded_load_enabled and soc is not None:
            if soc <= c.general_load_cutoff_soc_pct:
                self.shed_general = True
            elif soc >= c.general_load_access_soc_pct and soc >= c.load_access_soc_pct:
                self.shed_general = False
            if soc <= c.important_load_cutoff_soc_pct:
                self.shed_important = True
            elif soc >= c.important_load_access_soc_pct and soc >= c.load_access_soc_pct:
                self.shed_important = False
        elif soc is not None and not empty and soc >= c.load_access_soc_pct:
            self.shed_general = self.shed_important = False
        if soc is not None:
            if soc <= c.ats_prealarm_soc_pct:
                self.prealarm = True
            elif soc >= c.ats_prealarm_clear_soc_pct:
                self.prealarm = False
            if soc >= c.charging_protection_soc_pct:
                self.charge_protected = True
            elif soc < c.charging_protection_soc_pct - c.charging_protection_deadband_pct:
                self.charge_protected = False
        if soc is not None and soc <= c.stop_ess_soc_pct:
            self.ess_stopped = True
        if self.ess_stopped and (snap.irradiance_w_m2 or 0.0) >= c.irradiance_start_w_m2:
            self.ess_stopped = False           # PV can recharge: start again without load
            self.shed_general = self.shed_important = True
        if self.ess_stopped:
            return decision(f"off-grid: ESS stopped at stop-ESS SOC {c.stop_ess_soc_pct:g} %, waiting for "
                            "PV irradiance", pcs_stop=True, pv_limit_w=0.0,
                            outputs={"shed_general_load": True, "shed_important_load": True, "ats_prealarm": True,
                                     "shed_chargers": True})
        load = snap.load_w or 0.0
        pv_limit = c.load_factor_k2 * load
        if not self.charge_protected:
            pv_limit += c.ess_charging_power_factor * snap.charge_limit_w
        chargers_off = self._chargers(snap, soc) or self.shed_general
        shed = [n for n, on in (("general", self.shed_general), ("important", self.shed_important),
                                ("charger", chargers_off and self.cfg.chargers_fitted)) if on]
        reason = "off-grid: PCS forms the grid" + (f"; {' and '.join(shed)} loads shed" if shed else "")
        if self.charge_protected:
            reason += "; charging protection: PV follows the load"
        return decision(reason, pv_limit_w=pv_limit,
                        outputs={"shed_general_load": self.shed_general, "shed_important_load": self.shed_important,
                                 "ats_prealarm": self.prealarm, "shed_chargers": chargers_off})
