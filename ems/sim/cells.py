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


class StackPlant:
    def __init__(self, clusters: int, cells: int, capacity_ah: float, soc_pct: float, seed: int = 1,
                 r_cell_ohm: float = 0.25e-3, r_cluster_ohm: float = 5e-3, ambient_degc: float = 25.0,
                 rated_a: float = 140.0):
        rng = np.random.default_rng(seed)
        shape = (clusters, cells)
        self.capacity_ah = capacity_ah * rng.normal(1.0, 0.01, shape).clip(0.95, 1.05)
        self.r_ohm = r_cell_ohm * rng.normal(1.0, 0.05, shape).clip(0.8, 1.2)
        self.soc = np.clip(soc_pct / 100.0 + rng.normal(0.0, 0.005, shape), 0.0, 1.0)
        self.temp_degc = np.full(shape, ambient_degc) + rng.normal(0.0, 0.3, shape)
        self.ambient_degc = ambient_degc
        self.r_cluster_ohm = r_cluster_ohm
        self.rated_a = rated_a
        self.connected = np.ones(clusters, dtype=np.uint8)
        self.cluster_i_a = np.zeros(clusters)
        self.cell_fault_v = {}       # (cluster, cell) → forced voltage reading (sensor fault)
        self._r_cluster = self.r_ohm.sum(axis=1) + r_cluster_ohm     # resistances do not change: sum once
        self._cap_flat = self.capacity_ah.ravel()
        self._cap_total = float(self.capacity_ah.sum())
        self._thermal_s = 0.0
        self._since_sync_s = 0.0
        self.temp_version = 0        # bumped when cell temperatures change (the link copies them only then)
        self.refresh()

    def refresh(self) -> None:
        """Recompute OCV (and its segment slopes) and the cell voltages at rest, e.g. after SOC was set."""
        self._sync_ocv()
        self.cell_v = self._ocv.copy()

    def _sync_ocv(self) -> None:
        pct = self.soc * 100.0
        self._ocv = np.interp(pct, OCV_SOC_PCT, OCV_V)
        seg = np.clip(np.searchsorted(OCV_SOC_PCT, pct, side="right") - 1, 0, len(_SLOPE_V_PER_SOC) - 1)
        self._slope = _SLOPE_V_PER_SOC[seg]
        self._ocv_c = self._ocv.sum(axis=1)
        self._since_sync_s = 0.0

    def bus_voltage(self, total_i_a: float = 0.0) -> float:
        on = self.connected.astype(bool)
        if not on.any():
            return 0.0
        g = 1.0 / self._r_cluster[on]
        return float(((self._ocv_c[on] * g).sum() - total_i_a) / g.sum())

    def step(self, total_i_a: float, dt_s: float) -> None:
        """Advance by dt_s with total_i_a (> 0 discharging) drawn from the connected clusters."""
        on = self.connected.astype(bool)
        i = np.zeros(len(on))
        if on.any():
            v_bus = self.bus_voltage(total_i_a)
            i[on] = (self._ocv_c[on] - v_bus) / self._r_cluster[on]
        self.cluster_i_a = i
        di = i[:, None]
        dsoc = di * (-dt_s / 3600.0) / self.capacity_ah
        self.soc += dsoc
        np.clip(self.soc, 0.0, 1.0, out=self.soc)
        # first-order thermal model (1 kJ/K per cell, 0.5 W/K to the air); its time constant is ~30 min,
        # so it is stepped every 10 s with the current of the moment
        self._thermal_s += dt_s
        if self._thermal_s >= 10.0:
            h = self._thermal_s
            self.temp_degc += h * (di ** 2 * self.r_ohm - 0.5 * (self.temp_degc - self.ambient_degc)) / 1000.0
            self._thermal_s = 0.0
            self.temp_version += 1
        # OCV is piecewise linear in SOC: along the cached segment slope it is exact; a full lookup every
        # RESYNC_S catches cells that crossed into the next segment
        self._since_sync_s += dt_s
        if self._since_sync_s >= RESYNC_S:
            self._sync_ocv()
        else:
            self._ocv += self._slope * dsoc
            self._ocv_c = self._ocv.sum(axis=1)
        self.cell_v = self._ocv - di * self.r_ohm

    # ------------------------------------------------------------------ what the BMS reports
    def cluster_voltage(self) -> np.ndarray:
        return self.cell_v.sum(axis=1)

    def limits(self):
        """BMS charge/discharge current limits per cluster and the prohibit flags (BCU behaviour): charging
        tapers to zero as the highest cell reaches 3.60 V or its SOC reaches full, discharging as the lowest
        cell falls to 2.85 V or its SOC reaches empty."""
        vmax, vmin = self.cell_v.max(axis=1), self.cell_v.min(axis=1)
        smax, smin = self.soc.max(axis=1), self.soc.min(axis=1)
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
        return float(100.0 * np.dot(self.soc.ravel(), self._cap_flat) / self._cap_total)
