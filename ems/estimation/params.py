"""The SOC estimator's configuration as the native core takes it: one parameter vector and an OCV grid."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ems._core import layout as L
from ems.config.schema import SocEstimation
from ems.estimation.ocv import OcvTable, default_table


@dataclass(frozen=True)
class Estimator:
    params: np.ndarray          # (EP_COLS,) float64
    ocv_v: np.ndarray           # OCV on the core's uniform SOC grid, V
    hyst_v: np.ndarray          # hysteresis half-width on the same grid, V
    initial_sigma: float        # fraction
    capacity_error: float       # fraction: the SOH capacity is used once it is known better than this


DEFAULT_OFFSET_C = 0.001          # current sensor offset when the datasheet figure is not set: 0.1 % of 1 C
DEFAULT_R0_MOHM_AH = 140.0        # cell resistance × capacity when not set (0.5 mΩ for a 280 Ah LFP cell)
UNIFORM_SIGMA = 1.0 / math.sqrt(3.0)   # a bound's standard uncertainty (uniform distribution)
RELAX_FIT_S = 600.0               # forgetting time of the settling-rate fit at rest: long enough to average 1 mV
                                  # steps and a BMS's noise, short enough to follow the relaxation's own tail


def offset_a(est: SocEstimation, cell_capacity_ah: float) -> float:
    """The current sensor's offset bound, A: the datasheet figure, or 0.1 % of the cell's 1 C current."""
    return est.current_offset_a or DEFAULT_OFFSET_C * cell_capacity_ah


def sensor_sigmas(est: SocEstimation, cell_capacity_ah: float) -> tuple[float, float]:
    """(gain error, fraction; offset, A) as 1-sigma uncertainties. The datasheet gives bounds: an error known
    only to lie within ± a is taken as uniform over it, u = a / √3 (GUM, JCGM 100:2008, 4.3.7). Counting
    them as 1 sigma made the bound twice as wide as the sensor allows."""
    return (est.current_gain_error_pct / 100.0 * UNIFORM_SIGMA, offset_a(est, cell_capacity_ah) * UNIFORM_SIGMA)


def rest_current_a(est: SocEstimation, cell_capacity_ah: float) -> float:
    """|I| at or below this is rest (the core's idle current), A."""
    return est.rest_current_c * cell_capacity_ah


def estimator_for(est: SocEstimation, table: OcvTable, cell_capacity_ah: float) -> Estimator:
    """Every current threshold and noise term scales with the cell (C-rate), so one configuration works
    for a 2.3 Ah and a 280 Ah cell alike; the datasheet figures (gain, offset in A) are taken as given."""
    p = np.zeros(L.EP_COLS, dtype=np.float64)
    p[L.EP_STEP_S] = est.step_s
    p[L.EP_GAIN_ERR], p[L.EP_OFFSET_A] = sensor_sigmas(est, cell_capacity_ah)
    p[L.EP_CAP_ERR] = est.capacity_error_pct / 100.0
    p[L.EP_TAPER_A] = est.taper_c * cell_capacity_ah
    p[L.EP_SIG_FULL] = est.sigma_full_pct / 100.0
    p[L.EP_SIG_EMPTY] = est.sigma_empty_pct / 100.0
    p[L.EP_SIG_SHIFT] = est.sigma_shift_pct / 100.0
    p[L.EP_REST_S] = est.rest_min * 60.0
    p[L.EP_REST_V_LO], p[L.EP_REST_V_HI] = table.informative_bands(est.voltage_sigma_mv / 1000.0, est.ocv_max_sigma_pct)
    p[L.EP_OCV_MAX_SIG] = est.ocv_max_sigma_pct / 100.0
    p[L.EP_RELAX_RATE] = est.relaxed_mv_per_h / 1000.0 / 3600.0
    p[L.EP_RELAX_TAU_S] = RELAX_FIT_S
    p[L.EP_KNEE_V_LO], p[L.EP_KNEE_V_HI] = table.steep_bands(est.knee_min_slope_mv_per_pct)
    p[L.EP_SIG_V] = est.voltage_sigma_mv / 1000.0
    p[L.EP_HYST_AH_FRAC] = est.hysteresis_throughput_pct / 100.0
    p[L.EP_R0_OHM] = (est.cell_resistance_mohm or DEFAULT_R0_MOHM_AH / cell_capacity_ah) / 1000.0
    p[L.EP_T_MIN], p[L.EP_T_MAX] = est.ocv_temp_min_degc, est.ocv_temp_max_degc
    p[L.EP_SIG_MIN] = est.sigma_min_pct / 100.0
    p[L.EP_BOUND_K] = est.bound_sigmas
    p[L.EP_R_STEP_A] = est.resistance_step_c * cell_capacity_ah
    p[L.EP_KNEE] = 1.0 if est.knee_filter else 0.0
    p[L.EP_ZERO_A] = est.zero_current_c * cell_capacity_ah
    return Estimator(p, np.ascontiguousarray(table.grid_v), table.grid_hyst_v(est.hysteresis_mv),
                     est.initial_sigma_pct / 100.0, est.capacity_error_pct / 100.0)


def default_estimator(cell_capacity_ah: float = 280.0) -> Estimator:
    """The defaults of [soc_estimation] with the shipped LFP table."""
    return estimator_for(SocEstimation(), default_table("LFP"), cell_capacity_ah)


def initial_state(clusters: int, params: np.ndarray) -> np.ndarray:
    """A fresh estimator state (C, SE_COLS). The pending time starts at the step period, so the first call
    makes a cell step and every result is valid from then on; the offset and capacity errors start at their
    configured bounds."""
    st = np.zeros((clusters, L.SE_COLS), dtype=np.float64)
    st[:, L.SE_PEND_S] = params[L.EP_STEP_S]
    st[:, L.SE_PREV_I] = np.nan
    st[:, L.SE_PREV_V] = np.nan
    st[:, L.SE_OFFSET_BOUND_A] = params[L.EP_OFFSET_A]
    st[:, L.SE_CAP_ERR] = params[L.EP_CAP_ERR]
    st[:, L.SE_RX_RATE] = np.nan
    st[:, L.SE_GAIN_ERR] = params[L.EP_GAIN_ERR]
    return st
