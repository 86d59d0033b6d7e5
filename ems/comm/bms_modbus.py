"""The BMS on Modbus (a BCU or BAU on Modbus TCP, shared/seeds/004_…: BMU → BCU → BAU → EMS): the profile's
per-cluster arrays, read by the Modbus engine as blocks, into the native core's cell arrays and the cluster
table — the same table the CAN link fills, so the device layer treats both alike."""
from __future__ import annotations

import numpy as np

from ems.comm.can_link import (CL_CHG_A, CL_CHG_PROHIBITED, CL_CONNECTED, CL_DCHG_A, CL_DCHG_PROHIBITED, CL_I,
                               CL_INSULATION, CL_V, CLUSTER_TIMEOUT_S)
from ems.comm.cell_wait import CellWait

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
        # a cell is stale past its comm-loss age, or twice its own poll interval (temperatures are read slowly)
        self._age_v = max(cell_max_age_s, 2 * d.profile.interval_s("cell_voltage_v"))
        self._age_t = max(cell_max_age_s, 2 * d.profile.interval_s("cell_temperature_degc"))
        self._cell_wait = CellWait(max(self._age_v, self._age_t))
        self.cells_awaited = True            # a stale cell is the link's, not its sensor's (ems.comm.cell_wait)
        self._reads = -1                     # the engine's array reads when last copied
        self._aged_s = -np.inf               # when the cells' ages were last looked at
        self._oldest_s = -np.inf             # the oldest cluster value's arrival

    def poll(self, now_s: float) -> None:
        """Copy what the engine read since the last poll (the reads arrive about once a second; the fast loop
        polls a hundred times as often) and age the cells every 100 ms."""
        d = self._d
        moved = d.array_reads != self._reads
        if moved:
            self._reads = d.array_reads
            for name, col in self.columns.items():
                self.cluster[:, col] = d.arrays[name][:, 0]
            flags = self.cluster[:, _FLAGS]
            self.cluster[:, _FLAGS] = np.where(np.isnan(flags), 0.0, flags)     # an unreadable flag: not set
            np.copyto(self.cell_v, d.arrays["cell_voltage_v"])
            np.copyto(self.cell_t, d.arrays["cell_temperature_degc"])
            self._oldest_s = min(float(d.array_at_s[name][:, 0].min()) for name in self.columns)
        if moved or now_s - self._aged_s >= 0.1:
            self._aged_s = now_s
            np.copyto(self.fresh, ((now_s - d.array_at_s["cell_voltage_v"]) <= self._age_v)
                      & ((now_s - d.array_at_s["cell_temperature_degc"]) <= self._age_t), casting="unsafe")
        self.cells_awaited = self._cell_wait.awaited(now_s, d.last_seen_s)

    def clusters_fresh(self, now_s: float, timeout_s: float = CLUSTER_TIMEOUT_S) -> bool:
        return now_s - self._oldest_s <= timeout_s

    @property
    def cluster_updates(self) -> int:
        return self._reads

    def command(self, open_mask: int) -> None:
        """Open tripped clusters' contactors (a profile without open_contactors_mask cannot: the PCS is zeroed)."""
        if self._can_open:
            self.engine.hold(self.device, "open_contactors_mask", int(open_mask), self.refresh_s)
