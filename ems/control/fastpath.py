"""The fast path as the supervisor sees it: every array the native core works on, allocated once.

`CoreBuffers` owns the arrays (inputs the comm layer writes, state the kernels keep, results the
supervisor reads); `FastPath` binds them to the compiled tick once and runs it. Nothing is allocated per
tick. Protection level changes are turned into `ProtectionEvent`s here, outside the hot path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ems._core import layout as L
from ems._core.tick import FastTick
from ems.control.protection_table import BatteryRatings, ProtectionTable, default_rows
from ems.estimation.params import Estimator, default_estimator, initial_state

LEVEL_NAMES = {0: "normal", 1: "derating", 2: "warning", 3: "fault"}


@dataclass(frozen=True)
class StackShape:
    clusters: int = 1
    cells_per_cluster: int = 396
    packs_per_cluster: int = 9
    max_requests: int = 16

    def validate(self) -> None:
        if not 1 <= self.clusters <= 32:
            raise ValueError(f"clusters must be 1..32, got {self.clusters}")
        if not 1 <= self.cells_per_cluster <= 400:
            raise ValueError(f"cells_per_cluster must be 1..400, got {self.cells_per_cluster}")
        if not 1 <= self.packs_per_cluster <= L.MAX_PACKS:
            raise ValueError(f"packs_per_cluster must be 1..{L.MAX_PACKS}, got {self.packs_per_cluster}")
        if self.cells_per_cluster % self.packs_per_cluster:
            raise ValueError(f"cells_per_cluster ({self.cells_per_cluster}) must be a multiple of "
                             f"packs_per_cluster ({self.packs_per_cluster})")
        if self.max_requests < 0:
            raise ValueError(f"max_requests must be >= 0, got {self.max_requests}")


@dataclass(frozen=True)
class FastPathParams:
    """Scalar settings of the fast loop; defaults for an LFP stack of 280 Ah cells."""
    cell_v_sensor_range_v: tuple[float, float] = (0.5, 5.0)
    cell_t_sensor_range_degc: tuple[float, float] = (-40.0, 120.0)
    idle_current_a: float = 1.0
    trip_delay_ms: float = 200.0
    trip_open_current_a: float = math.inf     # a pending trip opens at once after the delay, whatever the current
    trip_max_wait_ms: float = 0.0
    stack_max_charge_a: float = 4480.0
    stack_max_discharge_a: float = 4480.0
    charge_efficiency: float = 0.999
    cell_full_v: float = 3.60
    cell_empty_v: float = 2.80
    cell_nominal_v: float = 3.20
    balance_on_mv: float = 30.0
    balance_off_mv: float = 10.0
    balance_min_cell_v: float = 3.35
    pcs_max_charge_w: float = 1_000_000.0
    pcs_max_discharge_w: float = 1_000_000.0
    ramp_w_per_s: float = 0.0
    deadband_w: float = 0.0

    def vector(self, cells_per_cluster: int) -> np.ndarray:
        p = np.zeros(L.TP_COLS, dtype=np.float64)
        p[L.TP_V_LO], p[L.TP_V_HI] = self.cell_v_sensor_range_v
        p[L.TP_T_LO], p[L.TP_T_HI] = self.cell_t_sensor_range_degc
        p[L.TP_IDLE_A] = self.idle_current_a
        p[L.TP_TRIP_DELAY_MS] = self.trip_delay_ms
        p[L.TP_TRIP_OPEN_A] = self.trip_open_current_a
        p[L.TP_TRIP_MAX_WAIT_MS] = self.trip_max_wait_ms
        p[L.TP_STACK_MAX_CHG_A] = self.stack_max_charge_a
        p[L.TP_STACK_MAX_DCHG_A] = self.stack_max_discharge_a
        p[L.TP_ETA_CHARGE] = self.charge_efficiency
        p[L.TP_V_FULL] = self.cell_full_v
        p[L.TP_V_EMPTY] = self.cell_empty_v
        p[L.TP_CLUSTER_NOMINAL_V] = self.cell_nominal_v * cells_per_cluster
        p[L.TP_BAL_ON_MV] = self.balance_on_mv
        p[L.TP_BAL_OFF_MV] = self.balance_off_mv
        p[L.TP_BAL_V_MIN] = self.balance_min_cell_v
        p[L.TP_PCS_MAX_CHG_W] = self.pcs_max_charge_w
        p[L.TP_PCS_MAX_DCHG_W] = self.pcs_max_discharge_w
        p[L.TP_RAMP_W_PER_S] = self.ramp_w_per_s
        p[L.TP_DEADBAND_W] = self.deadband_w
        finite = np.ones(L.TP_COLS, bool)
        finite[L.TP_TRIP_OPEN_A] = False          # infinity: any current (the kernel's default)
        if not np.isfinite(p[finite]).all() or np.isnan(p[L.TP_TRIP_OPEN_A]):
            raise ValueError("fast-path parameters must be finite numbers")
        if not 0.0 < self.charge_efficiency <= 1.0:
            raise ValueError(f"charge_efficiency must be in (0, 1], got {self.charge_efficiency}")
        if not 0.0 <= self.balance_off_mv < self.balance_on_mv:
            raise ValueError("balance_off_mv must be >= 0 and below balance_on_mv")
        if self.cell_empty_v >= self.cell_full_v:
            raise ValueError("cell_empty_v must be below cell_full_v")
        return p


@dataclass(frozen=True)
class BypassParams:
    """Battery bypass and consistency calibration (shared/seeds/001_…)."""
    enabled: bool = False
    consistency_modes: int = 0       # 1 on-grid charging, 2 on-grid discharging, 4 off-grid charging, 8 off-grid discharging
    spread_on_pct: float = 5.0
    spread_off_pct: float = 2.0
    pcs_dc_min_v: float = 0.0
    max_per_cluster: int = 2


def bypass_vector(bp: BypassParams, table: ProtectionTable, fp: FastPathParams, on_grid: bool = True) -> np.ndarray:
    """The bypass kernel's parameters; its fault thresholds are the table's warning levels (one home)."""
    v = np.zeros(L.BP_COLS, dtype=np.float64)
    v[L.BP_ENABLED] = 1.0 if bp.enabled else 0.0
    v[L.BP_CONSISTENCY_MODES] = bp.consistency_modes
    v[L.BP_ON_GRID] = 1.0 if on_grid else 0.0
    v[L.BP_SPREAD_ON_PCT] = bp.spread_on_pct
    v[L.BP_SPREAD_OFF_PCT] = bp.spread_off_pct
    v[L.BP_DC_MIN_V] = bp.pcs_dc_min_v
    v[L.BP_MAX_PER_CLUSTER] = bp.max_per_cluster
    v[L.BP_IDLE_A] = fp.idle_current_a
    warn = 1
    v[L.BP_CELL_OV_V] = table.threshold("cell_over_voltage", warn)
    v[L.BP_CELL_UV_V] = table.threshold("cell_under_voltage", warn)
    v[L.BP_CELL_OT_CHG_DEGC] = table.threshold("cell_over_temp_charge", warn)
    v[L.BP_CELL_OT_DCHG_DEGC] = table.threshold("cell_over_temp_discharge", warn)
    v[L.BP_CELL_LT_CHG_DEGC] = table.threshold("cell_low_temp_charge", warn)
    v[L.BP_CELL_LT_DCHG_DEGC] = table.threshold("cell_low_temp_discharge", warn)
    v[L.BP_POLE_OT_DEGC] = table.threshold("pole_over_temp", warn)
    v[L.BP_V_HYST] = table.table_f[table.index("cell_over_voltage"), L.PT_HYST1]
    v[L.BP_T_HYST] = table.table_f[table.index("cell_over_temp_charge"), L.PT_HYST1]
    v[L.BP_NOMINAL_CELL_V] = fp.cell_nominal_v
    if not 0 <= bp.consistency_modes <= 15:
        raise ValueError(f"consistency_modes is a 4-bit mask (0..15), got {bp.consistency_modes}")
    if not 0.0 <= bp.spread_off_pct < bp.spread_on_pct:
        raise ValueError("spread_off_pct must be >= 0 and below spread_on_pct")
    return v


@dataclass
class CoreBuffers:
    """Every array of the fast path. Attribute names are the FastTick binding names."""
    shape: StackShape
    table: ProtectionTable
    params: np.ndarray
    bypass_params: np.ndarray
    capacity_ah: np.ndarray
    est_params: np.ndarray
    ocv_v: np.ndarray            # OCV on the estimator's uniform SOC grid, V
    hyst_v: np.ndarray           # its hysteresis half-width on the same grid, V

    def __post_init__(self) -> None:
        C, N, P, K = (self.shape.clusters, self.shape.cells_per_cluster, self.shape.packs_per_cluster,
                      self.shape.max_requests)
        Q = len(self.table.rows)
        f64, u8, i8, i32 = np.float64, np.uint8, np.int8, np.int32
        self.table_f, self.table_i = self.table.table_f, self.table.table_i
        # inputs: cells and clusters as the comm layer writes them; NaN / fresh=0 where unknown
        self.cell_v = np.full((C, N), np.nan, f64)
        self.cell_t = np.full((C, N), np.nan, f64)
        self.fresh = np.zeros((C, N), u8)
        self.cluster_in = np.full((C, L.CL_IN_COLS), np.nan, f64)
        self.cluster_flags = np.zeros((C, L.CL_FLAG_COLS), u8)
        self.pack_pole_t = np.full((C, P), np.nan, f64)
        self.req_kind = np.zeros(K, i8)
        self.req_value = np.zeros(K, f64)
        self.req_active = np.zeros(K, u8)
        self.req_status = np.zeros(K, u8)
        # aggregation
        self.agg_f = np.zeros((C, L.AGG_F_COLS), f64)
        self.agg_i = np.zeros((C, L.AGG_I_COLS), i32)
        self.pack_f = np.zeros((C, P, L.PACK_F_COLS), f64)
        self.pack_i = np.zeros((C, P, L.PACK_I_COLS), i32)
        self.stack_f = np.zeros(L.AGG_F_COLS, f64)
        self.stack_i = np.zeros(L.STK_I_COLS, i32)
        # protection (state persists between ticks)
        self.sources = np.zeros((L.SRC_COUNT, C), f64)
        self.prot_bits = np.zeros((Q, C), u8)
        self.prot_timers = np.zeros((Q, C, L.PS_T_COLS), f64)
        self.prot_level = np.zeros((Q, C), i8)
        self.prot_changed = np.zeros((Q, C), u8)
        self.cluster_prot = np.zeros((C, L.CLP_COLS), u8)
        self.trip_timer_ms = np.zeros(C, f64)
        self.derated = np.zeros((C, L.DR_COLS), f64)
        # SOC estimation: cell_soc, cell_sig (fractions) and est_state are the state; soc_out carries the
        # throughput accumulators; charge_ah (pack charge) is a result
        self.cell_soc = np.full((C, N), 0.5, f64)
        self.cell_sig = np.full((C, N), 0.15, f64)
        self.est_state = initial_state(C, self.est_params)
        self.charge_ah = self.capacity_ah * 0.5
        self.soc_pct = np.zeros((C, P), f64)
        self.soc_out = np.zeros((C, L.SOC_COLS), f64)
        self.anchored = np.zeros(C, u8)
        self.stack_soc = np.zeros(L.SOC_COLS, f64)
        # balancing and bypass (their outputs are also their hysteresis state)
        self.balancing = np.zeros((C, N), u8)
        self.balance_count = np.zeros(C, i32)
        self.bypass = np.zeros((C, P), u8)
        self.bypass_denied = np.zeros(C, i32)
        # arbitration, setpoint, distribution
        self.results = np.zeros(L.TO_COLS, f64)
        self.interval = np.zeros(2, f64)
        self.cluster_w = np.zeros(C, f64)
        self.cl_chg_w = np.zeros(C, f64)
        self.cl_dchg_w = np.zeros(C, f64)
        self.cl_e_chg = np.zeros(C, f64)
        self.cl_e_dchg = np.zeros(C, f64)
        self.cl_online = np.zeros(C, u8)
        self.work = np.zeros(C, u8)


@dataclass(frozen=True)
class ProtectionEvent:
    row: str
    cluster: int
    level: int            # 0 normal, 1 derating, 2 warning, 3 fault
    code: int | None      # the manual's code for warning/fault levels

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES[self.level]


@dataclass
class FastPath:
    """A bound fast path: build once, then `tick()` every fast-loop period."""
    shape: StackShape = field(default_factory=StackShape)
    params: FastPathParams = field(default_factory=FastPathParams)
    bypass: BypassParams = field(default_factory=BypassParams)
    rows: list | None = None
    cell_capacity_ah: float = 280.0
    estimator: Estimator | None = None

    def __post_init__(self) -> None:
        self.shape.validate()
        if not (self.cell_capacity_ah > 0 and math.isfinite(self.cell_capacity_ah)):
            raise ValueError(f"cell_capacity_ah must be > 0, got {self.cell_capacity_ah}")
        rows = self.rows if self.rows is not None else default_rows(
            BatteryRatings(cells_per_cluster=self.shape.cells_per_cluster))
        self.table = ProtectionTable(list(rows))
        cap = np.full((self.shape.clusters, self.shape.packs_per_cluster), self.cell_capacity_ah, np.float64)
        if self.estimator is None:
            self.estimator = default_estimator(self.cell_capacity_ah)
        self.buffers = CoreBuffers(self.shape, self.table, self.params.vector(self.shape.cells_per_cluster),
                                   bypass_vector(self.bypass, self.table, self.params), cap,
                                   self.estimator.params.copy(), self.estimator.ocv_v.copy(),
                                   self.estimator.hyst_v.copy())
        self.set_soc(50.0, 100.0 * self.estimator.initial_sigma)
        self._tick = FastTick(self.buffers)

    def set_soc(self, soc_pct, sigma_pct: float) -> None:
        """Set every cell's SOC estimate (scalar or (C, N) array, %) and its uncertainty (1 sigma, %); the
        next tick makes a cell step, so every SOC result follows at once."""
        b = self.buffers
        b.cell_soc[:] = np.clip(np.asarray(soc_pct, dtype=np.float64) / 100.0, 0.0, 1.0)
        b.cell_sig[:] = min(max(sigma_pct / 100.0, 0.0), 1.0)
        b.est_state[:, L.SE_PEND_S] = max(b.est_state[0, L.SE_PEND_S], b.est_params[L.EP_STEP_S])

    def tick(self, dt_ms: float, reset_request: bool = False) -> float:
        """Run one fast-loop tick; returns the PCS setpoint in W (> 0 discharging)."""
        return self._tick.run(dt_ms, reset_request)

    def events(self) -> list[ProtectionEvent]:
        """Protection levels that changed in the last tick (read after `tick`)."""
        b = self.buffers
        if b.results[L.TO_N_CHANGED] == 0:
            return []
        out = []
        for q, c in zip(*np.nonzero(b.prot_changed)):
            row = self.table.rows[q]
            lvl = int(b.prot_level[q, c])
            out.append(ProtectionEvent(row.name, int(c), lvl, row.code_for_level(lvl)))
        return out

    def set_request(self, slot: int, kind: int, value_w: float, active: bool = True) -> None:
        b = self.buffers
        if not 0 <= slot < self.shape.max_requests:
            raise IndexError(f"request slot {slot} outside 0..{self.shape.max_requests - 1}")
        if kind not in (L.REQ_LE, L.REQ_GE, L.REQ_EQ, L.REQ_TARGET):
            raise ValueError(f"unknown request kind {kind}")
        b.req_kind[slot], b.req_value[slot], b.req_active[slot] = kind, value_w, 1 if active else 0
