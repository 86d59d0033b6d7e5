"""`ems simulate`'s in-process transports: the Modbus engine's and the BMS link's interfaces over the simulated
site's devices, on the virtual clock. The controller still reads and actuates through `SiteIo` — the same
device layer as `ems run` — so the two cannot drift apart; only the words on the wire and the CAN frames are
left out (the codec has tests of its own, and `ems sim-site` carries them for real)."""
from __future__ import annotations

import math

import numpy as np

from ems.comm.roles import ROLE_DEVICE_IDS
from ems.comm.can_link import (CL_CHG_A, CL_CHG_PROHIBITED, CL_CONNECTED, CL_DCHG_A, CL_DCHG_PROHIBITED, CL_I,
                               CL_INSULATION, CL_V)


class _Device:
    def __init__(self, name: str, role: str, profile):
        self.name, self.role, self.profile = name, role, profile


class DirectModbus:
    """`sample` reads a simulated device's value now (a silent device's last sample stays, so the controller
    sees it go stale); `hold` writes through the device's own write handler after the register's range check,
    at once when the value changes and again every refresh_s, as the engine does."""

    def __init__(self, site, now_s):
        self.site, self.now_s = site, now_s
        self._devices = {n: _Device(n, role, p) for n, (role, p) in site.devices.items()}
        self._last: dict[tuple[str, str], tuple] = {}
        self._held: dict[tuple[str, str], tuple[float, float]] = {}

    def device(self, name: str) -> _Device:
        return self._devices[name]

    def sample(self, device: str, name: str):
        store = self.site.stores[device]
        key = (device, name)
        if store.silent:
            return self._last.get(key)
        s = (store.value(name), self.now_s())
        self._last[key] = s
        return s

    def hold(self, device: str, name: str, value: float, refresh_s: float = 1.0) -> None:
        key, now = (device, name), self.now_s()
        last = self._held.get(key)
        if last is not None and last[0] == value and now - last[1] < refresh_s:
            return
        self._devices[device].profile.registers[name].check(value)
        store = self.site.stores[device]
        if not store.silent:
            store.write(name, float(value))
            self._held[key] = (value, now)

    def status(self) -> list[dict]:
        return [{"name": n, "device_id": ROLE_DEVICE_IDS[d.role], "role": d.role, "protocol": "sim",
                 "model": d.profile.model,
                 "address": "in-process", "cycle_ms": None, "status": "offline" if self.site.stores[n].silent
                 else "online", "last_seen_s_ago": None, "requests": 0, "errors": 0, "timeouts": 0}
                for n, d in self._devices.items()]

    def flush(self, timeout_s: float = 1.0) -> bool:
        return True


class DirectBms:
    """The BMS link's interface over the simulated stack: cells into the core's arrays (temperatures only when
    they changed: the cell model updates them slowly), the cluster table from the BMS model."""

    def __init__(self, site, cell_v: np.ndarray, cell_t: np.ndarray, fresh: np.ndarray):
        self.site = site
        self.cell_v, self.cell_t, self.fresh = cell_v, cell_t, fresh
        self.cluster = np.zeros((cell_v.shape[0], 8))
        self._temp_version = -1
        self._faults_sent: set = set()
        self._fresh = False
        self.cluster_updates = 0
        self.cells_awaited = False          # cells arrive with every poll, never after the clusters

    def poll(self, now_s: float) -> None:
        site = self.site
        self._fresh = not site.silent_bms
        if not self._fresh:
            return
        st = site.plant.stack
        self.cluster_updates += 1
        chg, dchg, chp, dchp = st.limits()
        t = self.cluster
        t[:, CL_V], t[:, CL_I], t[:, CL_CHG_A], t[:, CL_DCHG_A] = st.cluster_voltage(), st.cluster_i_a, chg, dchg
        t[:, CL_CONNECTED], t[:, CL_CHG_PROHIBITED], t[:, CL_DCHG_PROHIBITED] = st.connected, chp, dchp
        t[:, CL_INSULATION] = 5000.0
        self.cell_v[:] = st.cell_v
        for (cl, k), v in st.cell_fault_v.items():          # a faulty reading, as the BMS reports it
            self.cell_v[cl, k] = v
        if st.temp_version != self._temp_version or site.sensor_faults != self._faults_sent:
            self.cell_t[:] = st.temp_degc
            for cl, k in site.sensor_faults:
                self.cell_t[cl, k] = math.nan
            self._temp_version, self._faults_sent = st.temp_version, set(site.sensor_faults)
        self.fresh[:] = 1

    def clusters_fresh(self, now_s: float, timeout_s: float = 3.0) -> bool:
        return self._fresh

    def command(self, open_mask: int) -> None:
        self.site.open_mask = int(open_mask)
