"""The site configuration schema: every parameter with its default, range and unit.

Defaults and ranges follow the manuals where they give them (shared/seeds/000_… installer manual,
001_… function reference, 003_… off-grid parameters); where they are silent the choice is ours and the
doc string says so. `ems config template` prints this file's content as a commented TOML template.
"""
from __future__ import annotations

from dataclasses import dataclass

from ems.config.fields import section, spec

CONFIG_VERSION = 2          # the site file schema this program reads; firmware/migrations/vNNNN.py lead to it


@dataclass
class Site:
    name: str = spec("demo", doc="site name shown in the status view")
    config_version: int = spec(CONFIG_VERSION, 1, CONFIG_VERSION, "", "schema version of this file: `ems update` migrates older files "
                               "forward (firmware/migrations)")
    timezone: str = spec("Europe/Berlin", doc="IANA time zone of the site; schedules are local time")
    latitude_deg: float = spec(48.1, -90.0, 90.0, "deg", "for the simulated PV day curve")


@dataclass
class Loops:
    fast_period_ms: float = spec(10.0, 1.0, 1000.0, "ms", "fast loop: protection, limits, setpoint (DESIGN.md)")
    slow_period_ms: float = spec(1000.0, 100.0, 60000.0, "ms", "slow loop: strategies")


@dataclass
class Battery:
    clusters: int = spec(1, 1, 32, "", "battery clusters in parallel")
    cells_per_cluster: int = spec(240, 1, 400, "", "cells in series per cluster")
    packs_per_cluster: int = spec(15, 1, 256, "", "PACKs per cluster (cells_per_cluster must divide evenly)")
    cell_capacity_ah: float = spec(280.0, 1.0, 2000.0, "Ah", "rated cell capacity (LFP 280 Ah, 004_…)")
    rated_charge_a: float = spec(140.0, 1.0, 2000.0, "A", "rated charge current per cluster")
    rated_discharge_a: float = spec(140.0, 1.0, 2000.0, "A", "rated discharge current per cluster")
    initial_soc_pct: float = spec(50.0, 0.0, 100.0, "%", "SOC assumed at first start (no saved state)")
    chemistry: str = spec("LFP", choices=("LFP", "custom"), doc="cell chemistry: LFP ships its OCV table; custom "
                          "needs ocv_table")
    ocv_table: str = spec("", doc="CSV soc_pct,ocv_v: the cell's open-circuit voltage at 25 °C, mean of charge and "
                          "discharge (empty: the chemistry's shipped table; relative paths from the config file)")
    cell_full_v: float = spec(3.60, 1.0, 5.0, "V", "a cell at this voltage at the end of charge is full (LFP 3.60)")
    cell_empty_v: float = spec(2.80, 0.5, 5.0, "V", "a cell at this voltage at the end of discharge is empty (LFP 2.80)")


@dataclass
class ProtectionOverride:
    name: str = spec("cell_over_voltage", doc="the row (docs/protection.md lists them: cell_over_voltage, "
                     "cell_under_voltage, cell_over_temp_charge …)")
    levels: list = spec([], doc="operating limit (derating starts), warning, fault: three numbers in the row's "
                        "unit (V, °C, A …), running towards the bad side; empty: the default", max_items=3)
    hysteresis: list = spec([], doc="clearing hysteresis of each level; empty: the default", max_items=3)
    set_ms: list = spec([], doc="debounce of each level, ms: violated this long before it sets", max_items=3)
    clear_ms: list = spec([], doc="each level clears after the value is back past threshold ∓ hysteresis this "
                          "long, ms", max_items=3)


@dataclass
class Protection:
    """The fast loop's protection table (docs/protection.md): the LFP defaults for the site's battery,
    with the OEM's limits per cell datasheet in [[protection.rows]]."""
    trip_delay_ms: float = spec(200.0, 0.0, 5000.0, "ms", "a tripping fault holds the currents at zero this long "
                                "before the contactors may open")
    trip_open_current_a: float = spec(5.0, 0.0, 2000.0, "A", "... and then they open once the cluster's measured "
                                      "current is at most this (never under load)")
    trip_max_wait_ms: float = spec(2000.0, 0.0, 60000.0, "ms", "... or after this long pending, whatever the "
                                   "current (a PCS that does not stop; no current reading)")
    rows: list = spec([], doc="row overrides: name plus any of levels, hysteresis, set_ms, clear_ms",
                      max_items=64, item=ProtectionOverride)


@dataclass
class Pcs:
    rated_power_w: float = spec(100_000.0, 1_000.0, 10_000_000.0, "W", "PCS rated active power")
    rated_apparent_va: float = spec(0.0, 0.0, 10_000_000.0, "VA", "PCS rated apparent power S: active and reactive "
                                    "setpoints together stay within P² + Q² ≤ S² (active power first); 0: equal to "
                                    "rated_power_w")
    ramp_w_per_s: float = spec(50_000.0, 0.0, 10_000_000.0, "W/s", "setpoint ramp, 0 = none")
    deadband_w: float = spec(100.0, 0.0, 100_000.0, "W", "setpoint changes smaller than this are not sent")

    @property
    def apparent_va(self) -> float:
        """S: rated_apparent_va, or the rated active power when that is 0 (never below it)."""
        return max(self.rated_apparent_va or self.rated_power_w, self.rated_power_w)


@dataclass
class Pv:
    installed_ac_w: float = spec(100_000.0, 0.0, 100_000_000.0, "W", "AC side PV installed power (000_… 3.3.4)")


@dataclass
class Grid:
    feed_in_limit_mode: str = spec("percent", doc="fixed_w: max_feed_in_w; percent: grid connection coefficient × "
                                   "installed PV power (001_… self-consumption)", choices=("fixed_w", "percent"))
    max_feed_in_w: float = spec(0.0, 0.0, 100_000_000.0, "W", "fixed grid feed-in limit (mode fixed_w)")
    grid_connection_coefficient_pct: float = spec(100.0, 0.0, 100.0, "%",
                                                  "feed-in limit as % of installed PV (mode percent)")


@dataclass
class Rrcr:
    enabled: bool = spec(False, doc="German ripple control receiver: K1–K4 replace the grid connection coefficient")
    k1_pct: float = spec(100.0, 0.0, 100.0, "%", "grid connection coefficient while K1 is closed")
    k2_pct: float = spec(60.0, 0.0, 100.0, "%", "… while K2 is closed")
    k3_pct: float = spec(30.0, 0.0, 100.0, "%", "… while K3 is closed")
    k4_pct: float = spec(0.0, 0.0, 100.0, "%", "… while K4 is closed")
    fault_delay_s: float = spec(10.0, 1.0, 600.0, "s", "no contact closed for this long raises RRCR_fault (5009): "
                                "a receiver always closes one (000_… 5009); meanwhile, and until one closes, the "
                                "most restrictive of k1–k4 limits the export (ours: the manual gives no delay)")


@dataclass
class Sec14a:
    enabled: bool = spec(False, doc="German §14a: a dry contact limits the PCS's AC-side grid draw")
    max_grid_draw_w: float = spec(4200.0, 0.0, 1_000_000.0, "W", "AC-side draw while triggered (001_…: 4.2 kW)")


@dataclass
class SelfUse:
    reserve_soc_pct: float = spec(10.0, 0.0, 100.0, "%", "self-use reserve SOC: no discharge at or below it")
    return_difference_pct: float = spec(2.0, 0.0, 20.0, "%", "discharge resumes above reserve + this (our choice)")


@dataclass
class TimeGroup:
    days: list = spec(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], doc="weekdays, or all/weekdays/weekend", str_ok=True)
    start: str = spec("00:00", doc="HH:MM local time")
    end: str = spec("06:00", doc="HH:MM local time, after start (a group may not cross midnight)")
    mode: str = spec("charge", choices=("charge", "discharge"))
    power_w: float = spec(50_000.0, 0.0, 10_000_000.0, "W", "charge or discharge power")
    cutoff_soc_pct: float = spec(100.0, 0.0, 100.0, "%", "charge stops at / discharge stops at this SOC")


@dataclass
class TimeBased:
    groups: list = spec([], doc="up to 28 weekly groups; outside all groups self-consumption runs (001_…)",
                        max_items=28, item=TimeGroup)
    return_difference_pct: float = spec(2.0, 0.5, 20.0, "%", "a group whose cut-off was reached resumes only "
                                        "past cut-off ± this, or in its next window (our choice)")


@dataclass
class Pmeteroffset:
    enabled: bool = spec(False, doc="hold a constant grid exchange instead of self-use (000_… 3.4.2.3)")
    grid_w: float = spec(0.0, -10_000_000.0, 10_000_000.0, "W", "grid power to hold, > 0 importing")


@dataclass
class PeakWindow:
    days: list = spec(["mon", "tue", "wed", "thu", "fri"], doc="weekdays, or all/weekdays/weekend", str_ok=True)
    start: str = spec("08:00", doc="HH:MM")
    end: str = spec("20:00", doc="HH:MM, after start")
    peak_w: float = spec(80_000.0, -10_000_000.0, 10_000_000.0, "W", "grid import is held at or below this")
    valley_w: float = spec(-10_000_000.0, -10_000_000.0, 10_000_000.0, "W",
                           "grid import is held at or above this (valley filling)")


@dataclass
class PeakShaving:
    windows: list = spec([], doc="peak shaving / valley filling windows (000_… 3.4.2.4)", max_items=28,
                         item=PeakWindow)
    margin_sigma: float = spec(1.0, 0.0, 10.0, "", "the battery aims this many standard deviations of the load's "
                               "tick-to-tick change below the peak (a limit, not a target; our choice)")
    min_margin_w: float = spec(500.0, 0.0, 1_000_000.0, "W", "... and at least this far below it (the margin costs "
                               "energy, margin × window hours: an energy-tight site may set less)")
    variability_ticks: int = spec(120, 5, 3600, "", "slow ticks the load's variability is averaged over")


@dataclass
class ForcedCharge:
    power_w: float = spec(50_000.0, 0.0, 10_000_000.0, "W", "manual forced charging power")
    cutoff_soc_pct: float = spec(100.0, 1.0, 100.0, "%", "manual and undervoltage forced charging stop here")
    undervoltage_power_w: float = spec(20_000.0, 0.0, 10_000_000.0, "W",
                                       "undervoltage forced charging power (always enabled, 001_…)")


@dataclass
class UpsReserve:
    enabled: bool = spec(False, doc="keep the battery above a reserve by charging (001_… UPS RESERVE)")
    cutoff_soc_pct: float = spec(30.0, 0.0, 100.0, "%", "below this SOC the battery is charged")
    power_w: float = spec(30_000.0, 0.0, 10_000_000.0, "W", "charging power while below the reserve")
    return_difference_pct: float = spec(2.0, 0.5, 20.0, "%", "forced charging ends at cutoff + half this, discharge "
                                        "is allowed again above cutoff + this (our choice: the manual's exit at the "
                                        "cut-off itself hands over to a discharge that undoes it)")


@dataclass
class SocCalibration:
    charge_power_w: float = spec(50_000.0, 0.0, 10_000_000.0, "W", "calibration charge power (001_…: full power)")
    discharge_power_w: float = spec(30_000.0, 0.0, 10_000_000.0, "W",
                                    "calibration discharge power after the BMS reports charge prohibited")
    periodic_enabled: bool = spec(False, doc="periodic (automatic) SOC calibration (001_…)")
    period_days: int = spec(30, 1, 365, "d", "calibration cycle")
    start_time: str = spec("10:00", doc="HH:MM: on a calibration day, calibration starts after this time")


@dataclass
class SocEstimation:
    """SOC/SOH estimation (docs/soc.md). Sensor figures are the datasheet bounds, not the actual errors."""
    charge_efficiency_pct: float = spec(99.9, 90.0, 100.0, "%", "coulombic efficiency of charging (LFP ≈ 99.9)")
    save_interval_s: float = spec(60.0, 5.0, 3600.0, "s", "the estimate (and SOH) is saved this often and after "
                                  "every anchor, so a power loss costs at most this much (ems run --state)")
    current_gain_error_pct: float = spec(1.0, 0.0, 10.0, "%", "current sensor gain error bound (datasheet)")
    current_offset_a: float = spec(0.0, 0.0, 100.0, "A", "current sensor offset bound (datasheet); 0: 0.1 % of the "
                                   "cell's 1 C current (0.28 A at 280 Ah)")
    zero_current_c: float = spec(0.002, 0.0, 0.2, "C", "a current within ± this (C-rate: fraction of the capacity "
                                 "per hour) counts as zero, the sensor's offset at rest; 0 if the string feeds "
                                 "auxiliary loads that small")
    rest_current_c: float = spec(0.004, 0.0, 0.2, "C", "a current within ± this (C-rate) is rest: the rest timer "
                                 "before an OCV update runs, hysteresis does not move (1.1 A at 280 Ah)")
    capacity_error_pct: float = spec(2.0, 0.0, 50.0, "%", "uncertainty of the capacity used for counting "
                                     "(2 % for new cells; say 20 % for used cells of unknown SOH): the bound grows "
                                     "with it until SOH has learned the capacity better")
    initial_sigma_pct: float = spec(15.0, 0.1, 50.0, "%", "SOC uncertainty (1 sigma) at first start, no saved state")
    bound_sigmas: float = spec(2.0, 1.0, 5.0, "", "the reported bound is this many sigmas (2 ≈ 95 %)")
    step_s: float = spec(1.0, 0.0, 60.0, "s", "per-cell update period (the BMS's cell data period; 0 = every tick)")
    taper_c: float = spec(0.05, 0.0, 1.0, "C", "end of charge / discharge: current at or below this (C-rate) at the "
                          "full / empty voltage")
    rest_min: float = spec(10.0, 1.0, 1440.0, "min", "minimum rest before the open-circuit voltage is used; the "
                           "update also waits until the voltage has settled (relaxed_mv_per_h)")
    relaxed_mv_per_h: float = spec(1.0, 0.01, 100.0, "mV/h", "the cells have relaxed when their mean voltage settles "
                                   "slower than this (LFP after a hard discharge: hours; the rest that does not get "
                                   "there gives no update)")
    ocv_max_sigma_pct: float = spec(1.5, 0.1, 20.0, "%", "an OCV update is made only where the voltage (± 2 sigma: "
                                    "noise, table, hysteresis, relaxation) says the SOC to within this (1 sigma): "
                                    "never on LFP's flat middle")
    knee_filter: bool = spec(True, doc="also correct under load on the steep ends of the curve (Kalman update with "
                             "the I·R uncertainty)")
    knee_min_slope_mv_per_pct: float = spec(10.0, 0.1, 1000.0, "mV/%", "… where the curve is at least this steep")
    voltage_sigma_mv: float = spec(4.0, 0.1, 100.0, "mV", "cell voltage measurement + OCV table error (1 sigma)")
    hysteresis_mv: float = spec(10.0, 0.0, 200.0, "mV", "OCV hysteresis half-width (charge side above discharge "
                                "side), used where the OCV table has no hysteresis_mv column")
    hysteresis_throughput_pct: float = spec(5.0, 0.1, 100.0, "%", "throughput (of capacity) that moves the "
                                            "hysteresis 63 % of the way to its new side")
    cell_resistance_mohm: float = spec(0.0, 0.0, 10_000.0, "mΩ", "cell resistance for the voltage under load (and "
                                       "its uncertainty); 0: 140 mΩ·Ah over the capacity (0.5 mΩ at 280 Ah, 61 mΩ "
                                       "at 2.3 Ah: resistance scales inversely with cell size)")
    ocv_temp_min_degc: float = spec(10.0, -40.0, 80.0, "°C", "OCV updates only between these cell temperatures")
    ocv_temp_max_degc: float = spec(45.0, -40.0, 80.0, "°C", "")
    sigma_full_pct: float = spec(1.0, 0.1, 20.0, "%", "uncertainty of a full anchor (1 sigma)")
    sigma_empty_pct: float = spec(2.0, 0.1, 20.0, "%", "uncertainty of an empty anchor (1 sigma)")
    sigma_shift_pct: float = spec(3.0, 0.1, 50.0, "%", "uncertainty of cells moved with their cluster's anchored cell")
    sigma_min_pct: float = spec(0.3, 0.0, 10.0, "%", "sigma never falls below this")
    resistance_step_c: float = spec(0.2, 0.01, 5.0, "C", "a current step this large gives a resistance sample")
    calibration_bound_pct: float = spec(10.0, 0.0, 100.0, "%", "ask for a SOC calibration (a full charge) when the "
                                        "stack's bound is wider than this; 0 = never")
    calibration_auto: bool = spec(False, doc="start the SOC calibration (a full charge, from the grid if PV is "
                                  "short) by itself when the bound is too wide; off: only an event asks for it")
    capacity_learning: bool = spec(True, doc="count with the SOH capacity once it is known to within "
                                   "capacity_error_pct")


@dataclass
class FeedInPeriod:
    start: str = spec("17:00", doc="HH:MM local time")
    end: str = spec("20:00", doc="HH:MM, after start (periods may not cross midnight)")
    feed_in_w: float = spec(10_000.0, 0.0, 100_000_000.0, "W", "grid feed-in target in this period (0: cover the load)")


@dataclass
class TimePeriodFeedIn:
    enabled: bool = spec(False, doc="forced battery discharge to a grid feed-in target in daily periods (001_…)")
    cutoff_soc_pct: float = spec(20.0, 0.0, 100.0, "%", "one discharge cut-off SOC for all periods")
    periods: list = spec([], doc="up to 6 daily periods", max_items=6, item=FeedInPeriod)


@dataclass
class SgReadyChannel:
    enabled: bool = spec(False, doc="SG Ready dry-contact channel (001_…)")
    mode: str = spec("auto", doc="on / off: relay energised in the period; auto: by SOC and feed-in power",
                     choices=("on", "off", "auto"))
    start: str = spec("10:00", doc="HH:MM, period for on / off modes")
    end: str = spec("16:00", doc="HH:MM")
    soc_condition: str = spec("at_least", doc="auto: SOC at least / at most soc_pct (load on N/O / N/C terminal)",
                              choices=("at_least", "at_most"))
    soc_pct: float = spec(80.0, 0.0, 100.0, "%", "auto: the SOC condition's threshold")
    switch_on_feed_in_w: float = spec(3_000.0, 0.0, 100_000_000.0, "W", "auto: load on above this feed-in")
    switch_off_feed_in_w: float = spec(1_000.0, 0.0, 100_000_000.0, "W",
                                       "auto: load off below this feed-in or when buying from the grid")


@dataclass
class SgReady:
    channel_1: SgReadyChannel = section(SgReadyChannel)
    channel_2: SgReadyChannel = section(SgReadyChannel)


@dataclass
class Generator:
    enabled: bool = spec(False, doc="diesel generator on the site (000_… 3.4.4)")
    start_stop_mode: str = spec("soc", doc="soc: start/stop SOC; time: between start and stop time; manual: "
                                "operator command", choices=("soc", "time", "manual"))
    start_soc_pct: float = spec(25.0, 0.0, 100.0, "%", "start at or below this SOC (003_…: SOC for starting DG)")
    stop_soc_pct: float = spec(80.0, 0.0, 100.0, "%", "stop at or above this SOC (003_…: SOC for stopping DG)")
    start_time: str = spec("18:00", doc="HH:MM, time mode (may be after stop_time: runs over midnight)")
    stop_time: str = spec("06:00", doc="HH:MM, time mode")
    power_mode: str = spec("rated", doc="rated: PCS draws rated_output_pct × rating − load; battery: the set charge "
                           "power, capped by that (000_… 3.4.4)", choices=("rated", "battery"))
    rated_power_w: float = spec(50_000.0, 1_000.0, 10_000_000.0, "W", "generator rating")
    rated_output_pct: float = spec(80.0, 10.0, 100.0, "%", "share of the rating the generator is loaded to")
    charge_power_w: float = spec(20_000.0, 0.0, 10_000_000.0, "W", "battery power mode: charging power")
    startup_timeout_min: float = spec(5.0, 0.0, 15.0, "min", "no running feedback by then: GC_Fault (25) (003_…)")


@dataclass
class OffGrid:
    load_cutoff_soc_pct: float = spec(15.0, 0.0, 100.0, "%", "off-grid: all loads off at or below this SOC or when "
                                      "discharge is prohibited (001_… off-grid; default ours, above the stop-ESS SOC)")
    load_access_soc_pct: float = spec(25.0, 0.0, 100.0, "%", "… and back on at or above this SOC")
    graded_load_enabled: bool = spec(False, doc="graded load shedding by dry contacts (000_… 3.4.6)")
    general_load_cutoff_soc_pct: float = spec(30.0, 0.0, 100.0, "%", "general loads off at or below this SOC")
    general_load_access_soc_pct: float = spec(40.0, 0.0, 100.0, "%", "general loads back on at or above this SOC")
    important_load_cutoff_soc_pct: float = spec(15.0, 0.0, 100.0, "%", "important loads off at or below this SOC")
    important_load_access_soc_pct: float = spec(25.0, 0.0, 100.0, "%", "important loads back on at or above this SOC")
    charging_protection_soc_pct: float = spec(90.0, 0.0, 100.0, "%", "PV limited so charging stops here (003_…)")
    charging_protection_deadband_pct: float = spec(2.0, 0.0, 100.0, "%", "… and charging resumes below it less this")
    ats_prealarm_soc_pct: float = spec(15.0, 0.0, 100.0, "%", "ESS shutdown pre-alarm to the ATS at or below (003_…)")
    ats_prealarm_clear_soc_pct: float = spec(20.0, 0.0, 100.0, "%", "… cleared at or above (003_…)")
    stop_ess_soc_pct: float = spec(10.0, 0.0, 100.0, "%", "off-grid without generator: the ESS is shut down at or "
                                   "below this SOC (003_…)")
    irradiance_start_w_m2: float = spec(50.0, 0.0, 100.0, "W/m2", "a stopped ESS starts again for PV at this "
                                        "irradiance (003_…: irradiance for starting PV)")
    chargers_fitted: bool = spec(False, doc="EV chargers on the backup side (003_… charger parameters)")
    charger_stop_soc_pct: float = spec(50.0, 0.0, 100.0, "%", "off-grid: chargers are cut off below this SOC, "
                                       "keeping the energy for conventional loads (003_…)")
    conventional_load_w: float = spec(10_000.0, 1.0, 10_000_000.0, "W", "demand of all loads except chargers; "
                                      "chargers only get what ESS and PV give beyond it (003_…)")
    ess_charging_power_factor: float = spec(0.80, 0.0, 1.0, "", "PV setpoint = factor × chargeable power + K2 × load")
    load_factor_k2: float = spec(0.98, 0.0, 1.0, "", "PV setpoint = K2 × load once charging is protected (003_…)")


@dataclass
class DualPower:
    enabled: bool = spec(False, doc="an ATS switches between mains and generator (000_… 3.4.5)")


@dataclass
class Bypass:
    enabled: bool = spec(False, doc="battery bypass: the BMS takes faulty PACKs out of the string (001_…)")
    consistency_on_grid_charge: bool = spec(False, doc="consistency calibration while grid-connected and charging")
    consistency_on_grid_discharge: bool = spec(False, doc="… grid-connected and discharging")
    consistency_off_grid_charge: bool = spec(False, doc="… off-grid and charging")
    consistency_off_grid_discharge: bool = spec(False, doc="… off-grid and discharging")
    spread_on_pct: float = spec(5.0, 0.1, 50.0, "%", "a PACK this far out of line is bypassed (our default)")
    spread_off_pct: float = spec(2.0, 0.0, 50.0, "%", "… until it is back within this")
    pcs_dc_min_v: float = spec(0.0, 0.0, 2000.0, "V", "the remaining string voltage never goes below the PCS DC window")
    max_per_cluster: int = spec(2, 0, 64, "", "at most this many PACKs bypassed per cluster")


@dataclass
class Season:
    name: str = spec("summer", doc="season name used by TOU rules")
    start: str = spec("04-01", doc="MM-DD first day")
    end: str = spec("09-30", doc="MM-DD last day (may wrap over new year)")


@dataclass
class TouRule:
    season: str = spec("all", doc="a season's name, or all")
    day_class: str = spec("all", doc="weekday, weekend, holiday or all (holidays are their own class)",
                          choices=("weekday", "weekend", "holiday", "all"))
    start: str = spec("00:00", doc="HH:MM")
    end: str = spec("06:00", doc="HH:MM, after start")
    mode: str = spec("grid_charge", doc="what runs in this window", choices=(
        "self_consumption", "full_feed_in", "grid_charge", "discharge", "idle"))
    power_w: float = spec(20_000.0, 0.0, 10_000_000.0, "W", "grid_charge / discharge power")
    cutoff_soc_pct: float = spec(100.0, 0.0, 100.0, "%", "grid_charge stops at, discharge stops at this SOC")


@dataclass
class OperatingMode:
    mode: str = spec("self_consumption", doc="Chint operating modes (002_… 6.4.2.8): self_consumption, "
                     "full_feed_in (PV to load, grid, then battery; battery discharges for feed-in), "
                     "emergency_charging (charge fully, then hold), tou (rules below, base mode outside them), "
                     "forced_off_grid (island for a runtime test, grid as backup), pv_only (storage disabled)",
                     choices=("self_consumption", "full_feed_in", "emergency_charging", "tou", "forced_off_grid",
                              "pv_only"))
    tou_base_mode: str = spec("self_consumption", doc="tou: what runs outside every rule",
                              choices=("self_consumption", "full_feed_in"))
    emergency_charge_power_w: float = spec(100_000.0, 0.0, 10_000_000.0, "W", "emergency charging power")
    forced_off_grid_min_soc_pct: float = spec(80.0, 0.0, 100.0, "%", "forced off-grid starts only at or above this SOC")
    forced_off_grid_max_load_w: float = spec(30_000.0, 0.0, 100_000_000.0, "W",
                                             "… and only while the site load is at or below this")
    forced_off_grid_return_soc_pct: float = spec(30.0, 0.0, 100.0, "%", "back on grid at or below this SOC (early return)")
    seasons: list = spec([], doc="named seasons for TOU rules", max_items=12, item=Season)
    holidays: list = spec([], doc='holiday dates, "YYYY-MM-DD" or every year "MM-DD"')
    tou_rules: list = spec([], doc="TOU windows by season and day class; the first match wins", max_items=48,
                           item=TouRule)


@dataclass
class AirConditioner:
    enabled: bool = spec(False, doc="cabinet air conditioner (000_… 3.3.4, 3.5.4; outdoor products)")
    cooling_stop_degc: float = spec(25.0, 0.0, 50.0, "degC", "refrigeration stop point: cooling stops here")
    cooling_return_diff_degc: float = spec(5.0, 0.5, 20.0, "degC", "cooling restarts at stop point + this")
    heating_stop_degc: float = spec(10.0, -20.0, 30.0, "degC", "heating stop point: heating stops here")
    heating_return_diff_degc: float = spec(5.0, 0.5, 20.0, "degC", "heating restarts at stop point − this")


GPIO_BIASES = ("as_is", "pull_up", "pull_down", "disabled")


@dataclass
class GpioLine:
    name: str = spec("epo", doc="dry-contact input or output (docs/devices.md lists them)")
    line: int = spec(0, 0, 1023, "", "line offset on the GPIO chip")
    bias: str = spec("as_is", choices=GPIO_BIASES, doc="input bias (outputs ignore it)")


@dataclass
class IoChannel:
    name: str = spec("epo", doc="dry-contact input or output (docs/devices.md lists them)")
    channel: int = spec(0, 0, 31, "", "channel of the I/O module: bit N of its input word for an input, of its "
                        "output word for an output")


@dataclass
class DryContacts:
    debounce_ms: float = spec(50.0, 0.0, 10_000.0, "ms", "an input must hold its new level this long")
    inverted_inputs: list = spec([], doc='inputs wired normally closed (open = active), e.g. ["epo"]')
    backend: str = spec("memory", choices=("memory", "gpio", "modbus"), doc="gpio: the board's GPIO lines "
                        "(Linux GPIO character device via libgpiod); modbus: a Modbus I/O module "
                        "([[devices.modbus]] role io_module); memory: none wired (in `ems run` every input reads "
                        "open, so a normally-closed input reads active)")
    gpio_chip: str = spec("/dev/gpiochip0", doc="GPIO character device of the dry-contact lines")
    gpio_lines: list = spec([], doc="which GPIO line each input and output is wired to", max_items=64, item=GpioLine)
    io_device: str = spec("", doc="backend modbus: the name of the [[devices.modbus]] entry (role io_module)")
    channels: list = spec([], doc="backend modbus: which channel of the I/O module each input and output is "
                          "wired to", max_items=64, item=IoChannel)


@dataclass
class Dispatch:
    lease_s: float = spec(60.0, 1.0, 3600.0, "s", "a remote setpoint expires after this unless refreshed")
    server_enabled: bool = spec(True, doc="Modbus TCP dispatch server for SCADA / cloud (SunSpec at 40000 + native map)")
    host: str = spec("127.0.0.1", doc="address the dispatch server listens on (0.0.0.0: every interface)")
    port: int = spec(1502, 1, 65535, "", "dispatch server TCP port")
    unit_id: int = spec(1, 1, 247, "", "dispatch server Modbus unit ID")
    allowed_clients: list = spec(["127.0.0.1", "::1"], doc="client addresses whose writes are accepted "
                                 "(reads are open to every client that can connect)")
    start_remote: bool = spec(False, doc="start in remote mode (the manual's default is local control)")
    rtu_port: str = spec("", doc="serial device for the same map over Modbus RTU, e.g. /dev/ttyS2 (empty: TCP "
                         "only); a wired line has no address, so its writes skip allowed_clients")
    rtu_baudrate: int = spec(9600, 1200, 230400, "baud", "RTU baud rate")
    rtu_parity: str = spec("N", choices=("N", "E", "O"), doc="RTU parity: none, even, odd")
    rtu_stopbits: int = spec(1, 1, 2, "", "RTU stop bits")
    clock_from_scada: bool = spec(False, doc="SCADA → EMS timing: a write of the native clock_utc_s register sets "
                                  "the EMS clock (off: refused; leave off where the board has NTP)")
    clock_step_min_s: float = spec(2.0, 0.0, 3600.0, "s", "a SCADA time closer than this to the EMS clock "
                                   "changes nothing (no needless steps of the wall clock)")
    max_connections: int = spec(32, 1, 1000, "", "TCP connections the dispatch server takes at once (more are "
                                "closed at connect, logged once per 10 s)")
    max_connections_per_client: int = spec(8, 1, 1000, "", "... of which from one client address")
    idle_timeout_s: float = spec(120.0, 5.0, 86400.0, "s", "a connection that sends no request for this long is "
                                 "closed (SCADA reconnects; a dead peer frees its slot)")


@dataclass
class ParallelUnit:
    id: int = spec(2, 1, 1000, "", "the unit's parallel ID (its own [parallel] unit_id)")
    address: str = spec("127.0.0.1:1502", doc="HOST:PORT of the unit's dispatch server (its [dispatch] host and port)")


@dataclass
class ParallelRange:
    first_id: int = spec(2, 1, 1000, "", "the first unit's parallel ID")
    last_id: int = spec(2, 1, 1000, "", "the last unit's parallel ID (IDs first_id … last_id, one per unit)")
    first_address: str = spec("127.0.0.1:1502", doc="HOST:PORT of the first unit's dispatch server")
    step: str = spec("host", choices=("host", "port"), doc="the next unit is at the next IP address (host: same "
                     "port) or the next port (port: same host)")


@dataclass
class Parallel:
    """Parallel EMS (000_… 3.4.1 Single/Parallel Machine Setting; 004_…: up to 1,000 units): several cabinets,
    each with its own EMS, act as one site. The master runs the site's strategies on the site meters and
    shares the site's power over the units; each slave keeps its own protection and follows its share as a
    lease (docs/parallel.md)."""
    enabled: bool = spec(False, doc="parallel operation (off: a single machine)")
    role: str = spec("master", choices=("master", "slave"), doc="master: runs the site's strategies and "
                     "dispatches the units; slave: follows the master")
    unit_id: int = spec(1, 1, 1000, "", "this unit's EMS parallel operation ID (unique in the group)")
    units: int = spec(1, 1, 1000, "", "EMS parallel operation quantity: the units in the group, master included")
    master_id: int = spec(1, 1, 1000, "", "slave: the master's parallel ID (a command from another ID is refused)")
    master_address: str = spec("127.0.0.1", doc="slave: the master's IP address: only it may write the parallel "
                               "commands (whatever [dispatch] allowed_clients says)")
    slaves: list = spec([], doc="master: each slave's parallel ID and dispatch server address", max_items=999,
                        item=ParallelUnit)
    slave_ranges: list = spec([], doc="master: slaves at consecutive addresses (IDs first_id … last_id)",
                              max_items=64, item=ParallelRange)
    modbus_unit_id: int = spec(1, 1, 247, "", "master: the Modbus unit ID of the slaves' dispatch servers (their "
                               "[dispatch] unit_id)")
    lease_s: float = spec(3.0, 1.0, 60.0, "s", "a master's setpoint holds this long on the slave unless rewritten "
                          "(the master rewrites it every slow tick); then the slave raises 56 and takes its fallback")
    timeout_ms: float = spec(300.0, 20.0, 5000.0, "ms", "master: a unit that does not answer within this is left "
                             "out of the next distribution (below the slow period)")
    unit_lost_s: float = spec(3.0, 0.5, 600.0, "s", "master: a unit silent this long raises 56 for it")
    fallback: str = spec("standby", choices=("standby", "self_use"), doc="slave, when the master's lease lapses: "
                         "standby (0 W) or self-use on its own grid meter reading, limited to its share of the site's "
                         "last limits")
    backup_id: int = spec(0, 0, 1000, "", "slave: the backup master's parallel ID (0: none): its commands are taken "
                          "only once the master's lease has lapsed here, and then the master's only once the backup's "
                          "has (or the backup hands back): never two masters at once")
    backup_address: str = spec("", doc="slave: the backup master's IP address (only it may write as the backup)")
    backup_master: bool = spec(False, doc="slave: this unit is the group's backup master: it takes over (site "
                               "strategies, the slaves listed here) when the master has been silent for its lease plus "
                               "takeover_s, and hands back once the master has run again for takeover_s")
    takeover_s: float = spec(5.0, 1.0, 600.0, "s", "backup master: the wait after its own lease from the master "
                             "lapsed before it takes over (and the master's healthy run before it hands back)")
    master_dispatch: str = spec("", doc="backup master: HOST:PORT of the master's dispatch server, watched for its "
                                "return while the backup is in control")


@dataclass
class CloudIdentity:
    name: str = spec("operator", doc="the identity's broker user name: its requests arrive on "
                     "{prefix}/{site}/v1/request/{name} (the broker's ACL must let only it write there)")
    role: str = spec("operator", choices=("admin", "installer", "operator", "end_user"),
                     doc="the manual's role it acts with (the API's permissions)")


@dataclass
class Cloud:
    """The cloud uplink over MQTT (docs/cloud.md; 000_… 3.3.4.1 "Upload cloud platform cycle(s)", 002_…): the
    site's telemetry, alarms and events to a broker, nothing lost while it is away (a cursor over the
    history database)."""
    enabled: bool = spec(False, doc="report to an MQTT broker (needs the history database: `ems run --db`)")
    host: str = spec("127.0.0.1", doc="broker address")
    port: int = spec(8883, 1, 65535, "", "broker port (8883: MQTT over TLS)")
    site_id: str = spec("site-1", doc="this site's ID in the topics ({topic_prefix}/{site_id}/v1/…): letters, "
                        "digits, - and _")
    topic_prefix: str = spec("ems", doc="the topics' first level")
    tls: bool = spec(True, doc="TLS to the broker (off only with allow_plain_loopback and a loopback host)")
    ca_file: str = spec("", doc="CA certificate (PEM) the broker's certificate must chain to (empty: the "
                        "system's)")
    cert_file: str = spec("", doc="client certificate (PEM) when the broker authenticates by certificate")
    key_file: str = spec("", doc="... and its private key (PEM)")
    username: str = spec("", doc="user name for the broker's password authentication")
    password_file: str = spec("", doc="a file holding the password (one line; readable by the EMS only): never "
                              "the password itself in the site file")
    allow_plain_loopback: bool = spec(False, doc="accept a broker on a loopback address without TLS and "
                                      "authentication (a desk or a local bridge), never any other")
    upload_cycle_s: float = spec(300.0, 1.0, 86400.0, "s", "status upload cycle (the manual's 300 s); samples go "
                                 "out at each storage interval, alarms at once")
    keepalive_s: int = spec(60, 5, 3600, "", "MQTT keep-alive: a dead connection is noticed within 1.5 × this")
    batch: int = spec(200, 1, 10000, "", "backlog messages in flight before their acknowledgements are awaited")
    backfill_days: float = spec(7.0, 0.0, 36500.0, "d", "on the first connection (no cursor yet) the history of "
                                "this many days back is sent; after that, everything since the last acknowledged")
    send: list = spec(["samples", "events", "alarms/history"], doc="the queued streams sent, each after its own "
                      "cursor: samples (each storage interval), events (the operation log), alarms/history (raised "
                      "and cleared). The retained state (online, status, active alarms, devices) is always sent; "
                      "a stream left out is not read, and its cursor waits where it was", max_items=3)
    home_assistant: bool = spec(True, doc="publish Home Assistant MQTT discovery configs (retained) for the status's "
                                "sensors: the site shows up in Home Assistant without YAML")
    home_assistant_prefix: str = spec("homeassistant", doc="Home Assistant's discovery prefix")
    live_cycle_max_s: float = spec(3600.0, 10.0, 86400.0, "s", "the longest lease an operator may ask a faster "
                                   "status cycle for")
    remote: bool = spec(False, doc="take requests from the cloud (commands, dispatch, parameters) from the "
                        "identities below, each with its role")
    identities: list = spec([], doc="who may operate the site from the cloud, and with which role",
                            max_items=64, item=CloudIdentity)


MODBUS_ROLES = ("grid_meter", "pv_meter", "dg_meter", "pcs", "pv_inverter", "air_conditioner", "bms", "io_module")


@dataclass
class ModbusDevice:
    name: str = spec("grid_meter", doc="unique name of the device on this site")
    role: str = spec("grid_meter", doc="what the controller uses it for (bms: a BCU/BAU when [devices] bms = "
                     "\"modbus\"; io_module: the dry contacts of [dry_contacts] backend = \"modbus\")",
                     choices=MODBUS_ROLES)
    model: str = spec("DTSU666-H", doc="profile model in drivers/modbus or the site's profiles_dir (`ems devices "
                      "--profiles` lists them)")
    transport: str = spec("tcp", choices=("tcp", "rtu"))
    host: str = spec("127.0.0.1", doc="TCP: device or RS485 gateway address")
    port: int = spec(502, 1, 65535, "", "TCP port")
    serial_port: str = spec("", doc="RTU: serial device, e.g. /dev/ttyS1")
    baudrate: int = spec(9600, 1200, 230400, "baud", "RTU baud rate (the manual's meters: 9600)")
    parity: str = spec("N", choices=("N", "E", "O"), doc="RTU parity: none, even, odd (devices on one line share it)")
    stopbits: int = spec(1, 1, 2, "", "RTU stop bits")
    bytesize: int = spec(8, 7, 8, "", "RTU data bits")
    unit_id: int = spec(1, 0, 247, "", "Modbus address (the manual: grid meter 101, PV meter 121, diesel 182)")
    timeout_ms: float = spec(500.0, 10.0, 10_000.0, "ms", "response timeout")
    gap_ms: float = spec(0.0, 0.0, 1000.0, "ms", "pause between requests on this line (slow RS485 devices)")
    invert: bool = spec(False, doc="meter mounted the other way round: its power sign is flipped")
    comm_loss_s: float = spec(5.0, 0.5, 600.0, "s", "no new reading for this long: the device's comm-loss alarm "
                              "and its safe state (at least twice the poll interval of what its role reads)")


@dataclass
class Devices:
    modbus: list = spec([], doc="the site's Modbus devices (TCP or RTU): `ems run --config` talks to these and "
                        "nothing else", max_items=64, item=ModbusDevice)
    bms: str = spec("can", choices=("can", "modbus"), doc="how the BMS is reached: can (can_* below) or modbus "
                    "(the [[devices.modbus]] entry with role bms, e.g. a BAU on Modbus TCP)")
    can_interface: str = spec("socketcan", doc="BMS CAN: socketcan on the board (can_channel = can0); socketcand: "
                              "a socketcand server at can_host:can_port (a CAN gateway, or `ems sim-site`); virtual: "
                              "python-can's in-process bus (tests)", choices=("socketcan", "socketcand", "virtual"))
    can_channel: str = spec("can0", doc="CAN channel of the BMS (socketcan: the network interface)")
    can_host: str = spec("127.0.0.1", doc="socketcand: the server's address")
    can_port: int = spec(29536, 1, 65535, "", "socketcand: the server's TCP port (socketcand's default 29536)")
    can_profile: str = spec("EMS-CAN-CELLS", doc="CAN BMS profile in drivers/can or the site's profiles_dir: "
                            "EMS-CAN-CELLS (cells and clusters), CAN-BATTERY-INVERTER (stack only, docs/devices.md)")
    can_alarm_encoding: str = spec("sma", choices=("sma", "victron"), doc="how the BMS sets 0x35A's two-bit "
                                   "flags: sma = 01 raised / 10 cleared; victron = 01 warning / 10 alarm")
    bms_comm_loss_s: float = spec(5.0, 0.5, 600.0, "s", "CAN BMS: no cluster data for this long is battery_lost "
                                  "(7): PCS to zero power")
    pcs_command_timeout_s: float = spec(10.0, 1.0, 600.0, "s", "written to the PCS: it returns to zero power "
                                        "when no setpoint arrives for this long")
    setpoint_refresh_s: float = spec(1.0, 0.1, 60.0, "s", "setpoints are rewritten this often (well inside the "
                                     "PCS's command timeout)")
    profiles_dir: str = spec("", doc="the site's own device profiles (<dir>/modbus/…/*.toml, <dir>/can/*.toml and "
                             "their DBCs), read next to the shipped ones; relative to the site file; empty: drivers/ "
                             "beside the site file. A folder that does not exist adds nothing")


@dataclass
class Records:
    storage_interval_min: int = spec(5, 0, 60, "min", "history sample interval, a divisor of 60; 0 = no storage "
                                     "(000_… 3.3.3: 5 min)")
    retention_days: int = spec(180, 0, 36500, "d", "history older than this is deleted; 0 = permanent (000_…: 180)")
    fault_recording: bool = spec(True, doc="automatically save a fault recording file when a cluster trips (000_…)")
    fault_recording_s: float = spec(10.0, 1.0, 120.0, "s", "fast-loop data kept before a trip")


@dataclass
class Api:
    enabled: bool = spec(True, doc="local HTTP JSON API (docs/records.md): history, alarms, parameters, users")
    host: str = spec("127.0.0.1", doc="address it listens on (0.0.0.0: every interface)")
    port: int = spec(8080, 1, 65535, "", "TCP port")
    session_ttl_min: float = spec(480.0, 1.0, 10080.0, "min", "a login token expires this long after its last use")
    max_connections: int = spec(64, 1, 1000, "", "HTTP connections taken at once (more are closed at connect)")
    max_connections_per_client: int = spec(16, 1, 1000, "", "... of which from one client address")
    idle_timeout_s: float = spec(300.0, 5.0, 86400.0, "s", "a connection that sends nothing for this long is closed")


@dataclass
class Board:
    lock_memory: bool = spec(False, doc="mlockall: no page of the controller is swapped or faulted out (needs "
                             "CAP_IPC_LOCK; docs/board.md)")
    rt_priority: int = spec(0, 0, 99, "", "SCHED_FIFO priority of the fast-loop thread (0: the normal scheduler; "
                            "needs CAP_SYS_NICE)")
    cpu: int = spec(-1, -1, 1023, "", "pin the fast-loop thread to this CPU (-1: any)")
    absolute_deadlines: bool = spec(True, doc="sleep to absolute deadlines (clock_nanosleep TIMER_ABSTIME) instead "
                                    "of relative sleeps")
    watchdog_tick_age_ms: float = spec(1000.0, 50.0, 60000.0, "ms", "systemd's watchdog is fed only while the "
                                       "last fast tick is at most this old")
    watchdog_overrun_ms: float = spec(500.0, 10.0, 60000.0, "ms", "... and no tick took longer than this")
    health_confirm_s: float = spec(60.0, 5.0, 3600.0, "s", "after an update the new version confirms itself "
                                   "once its fast loop has run healthy this long (else it is rolled back)")


@dataclass
class SiteConfig:
    site: Site = section(Site)
    loops: Loops = section(Loops)
    battery: Battery = section(Battery)
    protection: Protection = section(Protection)
    pcs: Pcs = section(Pcs)
    pv: Pv = section(Pv)
    grid: Grid = section(Grid)
    rrcr: Rrcr = section(Rrcr)
    sec14a: Sec14a = section(Sec14a)
    self_use: SelfUse = section(SelfUse)
    time_based: TimeBased = section(TimeBased)
    pmeteroffset: Pmeteroffset = section(Pmeteroffset)
    peak_shaving: PeakShaving = section(PeakShaving)
    forced_charge: ForcedCharge = section(ForcedCharge)
    ups_reserve: UpsReserve = section(UpsReserve)
    soc_calibration: SocCalibration = section(SocCalibration)
    soc_estimation: SocEstimation = section(SocEstimation)
    time_period_feed_in: TimePeriodFeedIn = section(TimePeriodFeedIn)
    sg_ready: SgReady = section(SgReady)
    bypass: Bypass = section(Bypass)
    generator: Generator = section(Generator)
    off_grid: OffGrid = section(OffGrid)
    dual_power: DualPower = section(DualPower)
    operating_mode: OperatingMode = section(OperatingMode)
    air_conditioner: AirConditioner = section(AirConditioner)
    dry_contacts: DryContacts = section(DryContacts)
    dispatch: Dispatch = section(Dispatch)
    parallel: Parallel = section(Parallel)
    cloud: Cloud = section(Cloud)
    devices: Devices = section(Devices)
    records: Records = section(Records)
    api: Api = section(Api)
    board: Board = section(Board)
