"""The protection table: what the fast loop watches, at which limits, and which code it reports.

Each row is one monitored quantity with three levels (foxBMS: maximum operating limit → derate,
recommended safety limit → warning, maximum safety limit → fault/trip). Codes are the manual's BMS
codes (shared/seeds/000_…, "BMS troubleshooting"). The manual gives codes, not thresholds: the default
limits below are for LFP cells (operating range 2.8–3.6 V per shared/seeds/004_…) and are meant to be
set per cell datasheet in the site config.

Levels: 1 operating limit (derating starts, no alarm code), 2 warning (`warn_code`), 3 fault
(`fault_code`, latched until the condition is gone and a reset is requested).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ems._core import layout as L

OFF = math.inf  # a level that is not used: its threshold is never crossed


@dataclass(frozen=True)
class ProtectionRow:
    name: str
    source: int                 # layout.SRC_*
    direction: int              # +1 too high is bad, -1 too low is bad
    thresholds: tuple[float, float, float]   # operating, warning, fault (±OFF: level unused)
    hysteresis: tuple[float, float, float]
    set_ms: tuple[float, float, float]       # debounce: condition held this long before the level sets
    clear_ms: tuple[float, float, float]     # condition gone this long before the level clears
    warn_code: int | None
    fault_code: int | None
    when: int = L.WHEN_ALWAYS
    derate: int = 0             # layout.DIR_CHARGE | layout.DIR_DISCHARGE
    trips: bool = True
    description: str = ""

    def validate(self) -> None:
        """Raise ValueError naming the row and the offending values."""
        if self.direction not in (1, -1):
            raise ValueError(f"protection row {self.name!r}: direction must be +1 or -1, got {self.direction}")
        if not 0 <= self.source < L.SRC_COUNT:
            raise ValueError(f"protection row {self.name!r}: unknown source {self.source}")
        used = [t for t in self.thresholds if not math.isinf(t)]
        if any(math.isnan(t) for t in self.thresholds):
            raise ValueError(f"protection row {self.name!r}: a threshold is NaN")
        ordered = used == sorted(used) if self.direction > 0 else used == sorted(used, reverse=True)
        if not ordered:
            raise ValueError(
                f"protection row {self.name!r}: thresholds {self.thresholds} must run operating → warning → "
                f"fault {'upwards' if self.direction > 0 else 'downwards'}")
        for what, values in (("hysteresis", self.hysteresis), ("set_ms", self.set_ms), ("clear_ms", self.clear_ms)):
            if any(not (v >= 0.0) or math.isinf(v) for v in values):
                raise ValueError(f"protection row {self.name!r}: {what} {values} must be finite and >= 0")
        if self.derate and any(math.isinf(self.thresholds[i]) for i in (0, 2)):
            raise ValueError(f"protection row {self.name!r}: derating needs an operating and a fault threshold")
        if self.when not in (L.WHEN_ALWAYS, L.WHEN_CHARGING, L.WHEN_NOT_CHARGING):
            raise ValueError(f"protection row {self.name!r}: unknown 'when' {self.when}")

    def code_for_level(self, level: int) -> int | None:
        return {2: self.warn_code, 3: self.fault_code}.get(level)


@dataclass(frozen=True)
class BatteryRatings:
    """What the default limits scale with."""
    cells_per_cluster: int = 396
    rated_charge_a: float = 140.0      # 0.5 C of a 280 Ah cell
    rated_discharge_a: float = 140.0


def _high(w, f, o=OFF):
    return (o, w, f)


def default_rows(r: BatteryRatings = BatteryRatings()) -> list[ProtectionRow]:
    """The default LFP table. Delays: operating level at once, warning 1 s, fault 1 s unless noted."""
    n = r.cells_per_cluster
    std_set = (0.0, 1000.0, 1000.0)
    std_clr = (1000.0, 1000.0, 1000.0)
    V, T = 0.05, 3.0
    C, D, B = L.DIR_CHARGE, L.DIR_DISCHARGE, L.DIR_CHARGE | L.DIR_DISCHARGE
    rows = [
        ProtectionRow("cell_over_voltage", L.SRC_CELL_V_MAX, +1, (3.50, 3.60, 3.65), (V, V, V), std_set, std_clr,
                      40006, 40006, derate=C, description="Cell_over_volt: single cell overvoltage"),
        ProtectionRow("cell_under_voltage", L.SRC_CELL_V_MIN, -1, (3.00, 2.80, 2.70), (V, V, V), std_set, std_clr,
                      40007, 40007, derate=D, description="Cell_low_volt: single cell undervoltage"),
        ProtectionRow("overvoltage_shutdown", L.SRC_CELL_V_MAX, +1, (OFF, OFF, 3.75), (0, 0, V), (0, 0, 200.0),
                      std_clr, None, 40062, description="Overvoltage shutdown fault"),
        ProtectionRow("undervoltage_shutdown", L.SRC_CELL_V_MIN, -1, (-OFF, -OFF, 2.50), (0, 0, V), (0, 0, 200.0),
                      std_clr, None, 40063, description="Undervoltage shutdown fault"),
        ProtectionRow("cell_over_temp_charge", L.SRC_CELL_T_MAX, +1, (45.0, 50.0, 55.0), (T, T, T), std_set, std_clr,
                      40003, 40003, when=L.WHEN_CHARGING, derate=C, description="Cell_over_temp while charging"),
        ProtectionRow("cell_over_temp_discharge", L.SRC_CELL_T_MAX, +1, (50.0, 55.0, 60.0), (T, T, T), std_set,
                      std_clr, 40003, 40003, when=L.WHEN_NOT_CHARGING, derate=D,
                      description="Cell_over_temp while discharging or at rest"),
        ProtectionRow("cell_low_temp_charge", L.SRC_CELL_T_MIN, -1, (5.0, 2.0, 0.0), (T, T, T), std_set, std_clr,
                      40004, 40004, when=L.WHEN_CHARGING, derate=C, description="Chag_low_temp: charging at low temperature"),
        ProtectionRow("cell_low_temp_discharge", L.SRC_CELL_T_MIN, -1, (-10.0, -15.0, -20.0), (T, T, T), std_set,
                      std_clr, 40005, 40005, when=L.WHEN_NOT_CHARGING, derate=D,
                      description="Dchg_low_temp: discharging at low temperature"),
        ProtectionRow("cell_temp_difference", L.SRC_CELL_T_SPREAD, +1, _high(8.0, 15.0), (0, 2.0, 2.0), std_set,
                      std_clr, 40008, 40008, description="Cell_temp_diff"),
        ProtectionRow("cell_voltage_difference", L.SRC_CELL_V_SPREAD, +1, _high(0.30, 0.50), (0, V, V), std_set,
                      std_clr, 50000, 50000, description="Cell_volt_diff"),
        ProtectionRow("cluster_over_voltage", L.SRC_CLUSTER_V, +1, _high(3.60 * n, 3.65 * n), (0, 0.05 * n, 0.05 * n),
                      std_set, std_clr, 50003, 50003, description="Cluster_over_volt"),
        ProtectionRow("cluster_under_voltage", L.SRC_CLUSTER_V, -1, (-OFF, 2.80 * n, 2.70 * n), (0, 0.05 * n, 0.05 * n),
                      std_set, std_clr, 50004, 50004, description="Cluster_low_volt"),
        ProtectionRow("charge_over_current", L.SRC_CHARGE_A, +1, _high(1.05 * r.rated_charge_a, 1.20 * r.rated_charge_a),
                      (0, 5.0, 5.0), (0, 1000.0, 100.0), std_clr, 30005, 40000,
                      description="Module_chag_over_current (warning) / Chag_over_current (fault)"),
        ProtectionRow("discharge_over_current", L.SRC_DISCHARGE_A, +1,
                      _high(1.05 * r.rated_discharge_a, 1.20 * r.rated_discharge_a), (0, 5.0, 5.0),
                      (0, 1000.0, 100.0), std_clr, 30006, 40001,
                      description="Module_dchg_over_current (warning) / Dchg_over_current (fault)"),
        ProtectionRow("insulation", L.SRC_INSULATION_KOHM, -1, (-OFF, 500.0, 100.0), (0, 50.0, 50.0),
                      (0, 5000.0, 5000.0), (5000.0, 5000.0, 5000.0), 40009, 40009, description="Insulation_err"),
        ProtectionRow("pole_over_temp", L.SRC_POLE_T, +1, (65.0, 75.0, 85.0), (T, T, T), std_set, std_clr,
                      40002, 40002, derate=B, description="Pole_over_temp"),
        ProtectionRow("hv_box_over_temp", L.SRC_HVBOX_T, +1, (70.0, 80.0, 90.0), (T, T, T), std_set, std_clr,
                      50008, 50008, derate=B, description="HV_box_over_temp"),
        ProtectionRow("temp_sensor_fault", L.SRC_T_SENSOR_INVALID, +1, _high(0.5, 0.5), (0, 0.25, 0.25),
                      (0, 1000.0, 5000.0), std_clr, 40011, 40011,
                      description="Temp_sen_err: a cell, pole or HV-box temperature is invalid or stale"),
        ProtectionRow("cell_data_fault", L.SRC_V_SENSOR_INVALID, +1, _high(0.5, 0.5), (0, 0.25, 0.25),
                      (0, 1000.0, 5000.0), std_clr, 40010, 40010,
                      description="LMU_com_err: a cell voltage is invalid or stale (cannot protect that cell)"),
        ProtectionRow("current_sensor_fault", L.SRC_CURRENT_MISSING, +1, _high(0.5, 0.5), (0, 0.25, 0.25),
                      (0, 500.0, 2000.0), std_clr, 40021, 40021, description="Current_sensor_err"),
        ProtectionRow("cluster_voltage_fault", L.SRC_CLUSTER_V_MISSING, +1, _high(0.5, 0.5), (0, 0.25, 0.25),
                      (0, 500.0, 2000.0), std_clr, 40014, 40014, description="Total_volt_err"),
        ProtectionRow("insulation_monitor_fault", L.SRC_INSULATION_MISSING, +1, _high(0.5, OFF), (0, 0.25, 0),
                      (0, 10000.0, 0), std_clr, 40067, None, trips=False,
                      description="ISO link exception: no insulation reading"),
        ProtectionRow("soc_low", L.SRC_SOC_MEAN, -1, (-OFF, 5.0, -OFF), (0, 2.0, 0), (0, 5000.0, 0), std_clr,
                      30007, None, trips=False, description="SOC low"),
    ]
    return rows


# What a cell of a chemistry can physically be set to: a threshold outside is a typo (mV for V, °F for °C),
# not a datasheet value. Sources not named here are bounded only by the row's own ordering.
PHYSICAL_BOUNDS = {
    "LFP": {L.SRC_CELL_V_MAX: (2.0, 4.0), L.SRC_CELL_V_MIN: (2.0, 4.0), L.SRC_CELL_T_MAX: (-40.0, 100.0),
            L.SRC_CELL_T_MIN: (-40.0, 100.0), L.SRC_CELL_V_SPREAD: (0.0, 2.0), L.SRC_CELL_T_SPREAD: (0.0, 60.0),
            L.SRC_POLE_T: (-40.0, 150.0), L.SRC_HVBOX_T: (-40.0, 150.0), L.SRC_SOC_MEAN: (0.0, 100.0)},
    "custom": {L.SRC_CELL_V_MAX: (0.5, 5.0), L.SRC_CELL_V_MIN: (0.5, 5.0), L.SRC_CELL_T_MAX: (-60.0, 150.0),
               L.SRC_CELL_T_MIN: (-60.0, 150.0), L.SRC_CELL_V_SPREAD: (0.0, 5.0), L.SRC_CELL_T_SPREAD: (0.0, 100.0),
               L.SRC_POLE_T: (-60.0, 200.0), L.SRC_HVBOX_T: (-60.0, 200.0), L.SRC_SOC_MEAN: (0.0, 100.0)},
}
ROW_NAMES = tuple(r.name for r in default_rows())


def override_rows(rows: list[ProtectionRow], overrides, chemistry: str = "LFP") -> list[ProtectionRow]:
    """The rows with the site's [[protection.rows]] entries applied (each names a row and gives any of
    levels / hysteresis / set_ms / clear_ms, three values each: operating, warning, fault). Raises
    ValueError naming the entry: an unknown row, a level the default does not use, levels out of order,
    a threshold outside the chemistry's physical range."""
    by_name = {r.name: r for r in rows}
    out = dict(by_name)
    bounds = PHYSICAL_BOUNDS.get(chemistry, PHYSICAL_BOUNDS["custom"])
    seen = set()
    for i, o in enumerate(overrides):
        where = f"protection.rows[{i}] ({o.name})"
        if o.name not in by_name:
            raise ValueError(f"{where}: no such row; the rows are {', '.join(by_name)}")
        if o.name in seen:
            raise ValueError(f"{where}: the row is named twice")
        seen.add(o.name)
        row = by_name[o.name]
        changes = {}
        for key, attr in (("levels", "thresholds"), ("hysteresis", "hysteresis"), ("set_ms", "set_ms"),
                          ("clear_ms", "clear_ms")):
            values = getattr(o, key)
            if not values:
                continue
            if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                       for v in values):
                raise ValueError(f"{where}: {key} must be three finite numbers (operating, warning, fault), got "
                                 f"{values!r}")
            values = tuple(float(v) for v in values)
            if key == "levels":
                # a level the shipped row does not use stays unused (its code and action are not defined)
                values = tuple(old if math.isinf(old) else new for old, new in zip(row.thresholds, values))
                lo, hi = bounds.get(row.source, (-math.inf, math.inf))
                bad = [v for v in values if not math.isinf(v) and not lo <= v <= hi]
                if bad:
                    raise ValueError(f"{where}: levels {bad} outside the physical range {lo:g} … {hi:g} of a "
                                     f"{chemistry} cell for this quantity")
            changes[attr] = values
        new = dataclasses.replace(row, **changes)
        try:
            new.validate()
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        out[o.name] = new
    return [out[r.name] for r in rows]


def rows_markdown(rows: list[ProtectionRow] | None = None) -> str:
    """docs/protection.md's table of the default rows (for a 396-cell cluster of 280 Ah cells at 0.5 C)."""
    lines = ["| row | what it watches | levels (operating, warning, fault) | set ms | codes (warning / fault) | trips |",
             "|---|---|---|---|---|---|"]
    for r in rows or default_rows():
        lv = ", ".join("–" if math.isinf(t) else f"{t:g}" for t in r.thresholds)
        set_ms = ", ".join(f"{t:g}" for t in r.set_ms)
        lines.append(f"| `{r.name}` | {r.description} | {lv} | {set_ms} | {r.warn_code or '–'} / {r.fault_code or '–'} "
                     f"| {'yes' if r.trips else 'no'} |")
    return "\n".join(lines) + "\n"


def rows_for(cfg) -> list[ProtectionRow]:
    """The site's protection table: the LFP defaults for its battery, with [protection] rows applied."""
    b = cfg.battery
    rows = default_rows(BatteryRatings(b.cells_per_cluster, b.rated_charge_a, b.rated_discharge_a))
    return override_rows(rows, cfg.protection.rows, b.chemistry)


@dataclass
class ProtectionTable:
    rows: list[ProtectionRow]
    table_f: np.ndarray = field(init=False)
    table_i: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("the protection table needs at least one row")
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"protection row names must be unique: {names}")
        for r in self.rows:
            r.validate()
        q = len(self.rows)
        self.table_f = np.zeros((q, L.PT_F_COLS), dtype=np.float64)
        self.table_i = np.zeros((q, L.PT_I_COLS), dtype=np.int32)
        for k, r in enumerate(self.rows):
            for lv in range(3):
                thr = r.thresholds[lv]
                if math.isinf(thr):   # "off" points away from the bad side so it is never crossed
                    thr = math.inf * r.direction
                self.table_f[k, L.PT_THR0 + lv] = thr
                self.table_f[k, L.PT_HYST0 + lv] = r.hysteresis[lv]
                self.table_f[k, L.PT_SET_MS0 + lv] = r.set_ms[lv]
                self.table_f[k, L.PT_CLR_MS0 + lv] = r.clear_ms[lv]
            self.table_i[k] = (r.source, r.direction, r.when, r.derate, int(r.trips))

    def index(self, name: str) -> int:
        for k, r in enumerate(self.rows):
            if r.name == name:
                return k
        raise KeyError(f"no protection row named {name!r}")

    def threshold(self, name: str, level: int) -> float:
        """Threshold of level 0 (operating), 1 (warning) or 2 (fault) of a row, as the kernel sees it."""
        return float(self.table_f[self.index(name), L.PT_THR0 + level])
