"""The BMS on Modbus (a BCU or BAU on Modbus TCP, shared/seeds/004_…: BMU → BCU → BAU → EMS): the profile's
per-cluster arrays, read by the Modbus engine as blocks, into the native core's cell arrays and the cluster
table — the same table the CAN link fills, so the device layer treats both alike."""
from __future__ import annotations

import numpy as np

from ems.comm.can_link import (CL_CHG_A, CL_CHG_PROHIBITED, CL_CONNECTED, CL_DCHG_A, CL_DCHG_PROHIBITED, CL_I,
                               CL_INSULATION, CL_V, CLUSTER_TIMEOUT_S)

_COLUMNS = {"cluster_voltage_v": CL_V, "cluster_current_a": CL_I, "cluster_insulation_kohm": CL_INSULATION,
            "cluster_charge_limit_a": CL_CHG_A, "cluster_discharge_limit_a": CL_DCHG_A,
            "cluster_connected": CL_CONNECTED, "cluster_charge_prohibited": CL_CHG_PROHIBITED,
            "cluster_discharge_prohibited": CL_DCHG_PROHIBITED}
_FLAGS = (CL_CONNECTED, CL_CHG_PROHIBITED, CL_DCHG_PROHIBITED)


class ModbusBms:
    def __init__(self, engine, device: str, cell_v: np.ndarray, cell_t: np.ndarray, fresh: np.ndarray,
                 cell_max_age_s: float = 5.0, refresh_s: float = 1.0):
        self.engine, self.device = engine, device
        self.cell_v, self.cell_t, self.fresh = cell_v, cell_t, fresh
        self.cell_max_age_s, self.refresh_s = cell_max_age_s, refresh_s
        d = engine.device(device)
        self._d = d
        self.columns = {name: col for name, col in _COLUMNS.items() if name in d.arrays}
        self.cluster = np.zeros((cell_v.shape[0], 8))
        self.cluster[:, CL_INSULATION] = np.nan
        self._can_open = "open_contactors_mask" in d.profile.registers

    def poll(self, now_s: float) -> None:
        d = self._d
        for name, col in self.columns.items():
            self.cluster[:, col] = d.arrays[name][:, 0]
        flags = self.cluster[:, _FLAGS]
        self.cluster[:, _FLAGS] = np.where(np.isnan(flags), 0.0, flags)     # an unreadable flag: not set
        np.copyto(self.cell_v, d.arrays["cell_voltage_v"])
        np.copyto(self.cell_t, d.arrays["cell_temperature_degc"])
        age = self.cell_max_age_s
        np.copyto(self.fresh, ((now_s - d.array_at_s["cell_voltage_v"]) <= age)
                  & ((now_s - d.array_at_s["cell_temperature_degc"]) <= age), casting="unsafe")

    def clusters_fresh(self, now_s: float, timeout_s: float = CLUSTER_TIMEOUT_S) -> bool:
        return all(bool((now_s - self._d.array_at_s[name][:, 0] <= timeout_s).all()) for name in self.columns)

    def command(self, open_mask: int) -> None:
        """Open tripped clusters' contactors (a profile without open_contactors_mask cannot: the PCS is zeroed)."""
        if self._can_open:
            self.engine.hold(self.device, "open_contactors_mask", int(open_mask), self.refresh_s)
