"""Battery stack plant: C parallel clusters of N series LFP cells, each an equivalent circuit.

Every cell has its own capacity and series resistance (drawn once, seeded), an LFP OCV curve and a
thermal state. Parallel clusters share the DC bus: cluster currents follow from equal terminal voltage,
I_c = (OCV_c − V_bus) / R_c with ΣI_c = I_total, so a weaker or emptier cluster carries less current,
as in a real stack. The BMS model reports charge/discharge limits and the prohibit flags the way a
BCU/BAU does, so the controller's anchors and limits are exercised.
"""
from __future__ import annotations

import numpy as np

# LFP open-circuit voltage vs SOC: flat plateau (≈ 85 mV from 20 to 80 %), steep ends
OCV_SOC_PCT = np.array([0, 2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 100], dtype=float)
OCV_V = np.array([2.60, 2.95, 3.10, 3.20, 3.23, 3.25, 3.275, 3.29, 3.30, 3.31, 3.325, 3.335, 3.34, 3.36,
                  3.42, 3.55])
_SLOPE_V_PER_SOC = np.diff(OCV_V) / (np.diff(OCV_SOC_PCT) / 100.0)     # dOCV/dSOC of each linear segment
RESYNC_S = 10.0     # full OCV lookup at least this often; in between OCV moves along the cached segment slope
# every breakpoint lies on a 0.1 % grid, so the segment of any SOC is a table lookup at floor(SOC in 0.1 %)
assert np.allclose(OCV_SOC_PCT * 10, np.round(OCV_SOC_PCT * 10))
_SEG_LUT = np.clip(np.searchsorted(OCV_SOC_PCT, np.arange(1001) / 10.0, side="right") - 1, 0, len(OCV_V) - 2)


class StackPlant:
    """State between resyncs is per cluster: every cell of a series string carries the same current, so
    what changed since the last resync is one number per cluster, the charge drawn (q_ah). Cell SOC, OCV
    and voltage follow from it exactly along each cell's OCV segment; every RESYNC_S the cell SOCs are
    materialised, clipped and the OCV looked up afresh."""

    def __init__(self, clusters: int, cells: int, capacity_ah: float, soc_pct: float, seed: int = 1,
                 r_cell_ohm: float = 0.25e-3, r_cluster_ohm: float = 5e-3, ambient_degc: float = 25.0,
                 rated_a: float = 140.0):
        rng = np.random.default_rng(seed)
        shape = (clusters, cells)
        self.capacity_ah = capacity_ah * rng.normal(1.0, 0.01, shape).clip(0.95, 1.05)
        self.r_ohm = r_cell_ohm * rng.normal(1.0, 0.05, shape).clip(0.8, 1.2)
        self.temp_degc = np.full(shape, ambient_degc) + rng.normal(0.0, 0.3, shape)
        self.ambient_degc = ambient_degc
        self.r_cluster_ohm = r_cluster_ohm
        self.rated_a = rated_a
        self.connected = np.ones(clusters, dtype=np.uint8)
        self.cluster_i_a = np.zeros(clusters)
        self.cell_fault_v = {}       # (cluster, cell) → forced voltage reading (sensor fault)
        self._cells = cells
        self.r_ohm_cluster = self.r_ohm.sum(axis=1)                  # resistances do not change: sum once
        self._r_cluster = self.r_ohm_cluster + r_cluster_ohm
        self._cap_total = float(self.capacity_ah.sum())
        self._cap_min = self.capacity_ah.min(axis=1)
        self._tmp = np.zeros(shape)                                   # per-step buffer: no allocation per step
        self.cell_v = np.zeros(shape)
        self._thermal_s = 0.0
        self.temp_version = 0        # bumped when cell temperatures change (the link copies them only then)
        self.set_soc(np.clip(soc_pct / 100.0 + rng.normal(0.0, 0.005, shape), 0.0, 1.0))

    # ------------------------------------------------------------------ state
    @property
    def soc(self) -> np.ndarray:
        """Cell SOC (fraction), computed: the state since the last resync is per cluster."""
        return self._soc_sync - self._q_ah[:, None] / self.capacity_ah

    def set_soc(self, soc) -> None:
        """Set every cell's SOC (fraction) and the voltages at rest."""
        self._soc_sync = np.clip(np.array(soc, dtype=float) * np.ones_like(self.capacity_ah), 0.0, 1.0)
        self._q_ah = np.zeros(self.capacity_ah.shape[0])
        self._sync()
        np.copyto(self.cell_v, self._ocv_sync)

    def _sync(self) -> None:
        if self._q_ah.any():
            self._soc_sync = np.clip(self.soc, 0.0, 1.0)
            self._q_ah[:] = 0.0
        pct = self._soc_sync * 100.0
        seg = _SEG_LUT[(pct * 10.0).astype(np.intp)]
        slope = _SLOPE_V_PER_SOC[seg]
        self._ocv_sync = OCV_V[seg] + slope * (self._soc_sync - OCV_SOC_PCT[seg] / 100.0)
        self._dv_per_ah = slope / self.capacity_ah                      # OCV drop per Ah drawn, per cell
        self._ocv_c_sync = self._ocv_sync.sum(axis=1)
        self._dv_per_ah_c = self._dv_per_ah.sum(axis=1)
        self._smax_sync = self._soc_sync.max(axis=1)
        self._smin_sync = self._soc_sync.min(axis=1)
        self._soc_cap_sync = float((self._soc_sync * self.capacity_ah).sum())
        self._since_sync_s = 0.0

    def _ocv_c(self) -> np.ndarray:
        return self._ocv_c_sync - self._q_ah * self._dv_per_ah_c

    # ------------------------------------------------------------------ dynamics
    def bus_voltage(self, total_i_a: float = 0.0) -> float:
        on = self.connected.astype(bool)
        if not on.any():
            return 0.0
        g = 1.0 / self._r_cluster[on]
        return float(((self._ocv_c()[on] * g).sum() - total_i_a) / g.sum())

    def step(self, total_i_a: float, dt_s: float) -> None:
        """Advance by dt_s with total_i_a (> 0 discharging) drawn from the connected clusters."""
        on = self.connected.astype(bool)
        i = np.zeros(len(on))
        if on.any():
            v_bus = self.bus_voltage(total_i_a)
            i[on] = (self._ocv_c()[on] - v_bus) / self._r_cluster[on]
        self.cluster_i_a = i
        self._q_ah += i * (dt_s / 3600.0)
        # first-order thermal model (1 kJ/K per cell, 0.5 W/K to the air); its time constant is ~30 min,
        # so it is stepped every 10 s with the current of the moment
        self._thermal_s += dt_s
        if self._thermal_s >= 10.0:
            h = self._thermal_s
            di = i[:, None]
            self.temp_degc += h * (di ** 2 * self.r_ohm - 0.5 * (self.temp_degc - self.ambient_degc)) / 1000.0
            self._thermal_s = 0.0
            self.temp_version += 1
        self._since_sync_s += dt_s
        if self._since_sync_s >= RESYNC_S:
            self._sync()
        # cell voltage = OCV along its segment − I·R
        tmp = self._tmp
        np.multiply(self._dv_per_ah, self._q_ah[:, None], out=tmp)
        np.subtract(self._ocv_sync, tmp, out=self.cell_v)
        np.multiply(self.r_ohm, i[:, None], out=tmp)
        self.cell_v -= tmp

    # ------------------------------------------------------------------ what the BMS reports
    def cluster_voltage(self) -> np.ndarray:
        return self.cell_v.sum(axis=1)

    def limits(self):
        """BMS charge/discharge current limits per cluster and the prohibit flags (BCU behaviour): charging
        tapers to zero as the highest cell reaches 3.60 V or its SOC reaches full, discharging as the lowest
        cell falls to 2.85 V or its SOC reaches empty. SOC extremes are bounded from the last resync the
        conservative way (the smallest cell moves fastest), so the BMS stops a little early, never late."""
        vmax, vmin = self.cell_v.max(axis=1), self.cell_v.min(axis=1)
        moved = self._q_ah / self._cap_min                  # SOC the smallest cell has moved since the resync
        smax = self._smax_sync + np.maximum(-moved, 0.0)
        smin = self._smin_sync - np.maximum(moved, 0.0)
        chg = self.rated_a * np.minimum(np.minimum(np.maximum((3.60 - vmax) / 0.05, 0.0), 1.0),
                                        np.maximum((1.0 - smax) / 0.02, 0.0))
        dchg = self.rated_a * np.minimum(np.minimum(np.maximum((vmin - 2.85) / 0.10, 0.0), 1.0),
                                         np.maximum(smin / 0.02, 0.0))
        # end of charge / discharge: below the termination current (5 % of rated, like a CV cut-off) the BMS
        # prohibits the direction altogether instead of tapering for ever
        chg = np.where(chg < 0.05 * self.rated_a, 0.0, np.minimum(chg, self.rated_a))
        dchg = np.where(dchg < 0.05 * self.rated_a, 0.0, np.minimum(dchg, self.rated_a))
        return chg, dchg, (chg <= 0.0).astype(np.uint8), (dchg <= 0.0).astype(np.uint8)

    def true_soc_pct(self) -> float:
        """The plant's real state of charge (what an estimator should find), capacity-weighted."""
        return 100.0 * (self._soc_cap_sync - self._cells * float(self._q_ah.sum())) / self._cap_total
