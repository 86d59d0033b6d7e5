"""The simulated site: the plant behind simulated devices that speak the site's own profiles.

Each `[[devices.modbus]]` of the site file becomes a simulated device of its role, holding its profile's
registers in a store: a `ProfileImage` that a Modbus server serves (`ems sim-site`, another process), or a
`ValueStore` read in-process (`ems simulate`, on a virtual clock). The device publishes the plant's values by
register name and takes writes by register name as a real one would — a PCS and PV inverter take setpoints
only within their profile's ranges and fall back (PCS to zero power, PV to unlimited) when no setpoint
arrives for their command timeout. The BMS sends its CAN frames (or serves its Modbus arrays); the I/O
module carries the dry contacts, wired as the site file says, normally-closed loops included.

Scenario events (grid outage, faults, contacts, comm loss …) change the plant or the devices; they arrive
from a scenario's timeline or over the sim-site's control channel.
"""
from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from ems.comm.modbus_server import ProfileImage
from ems.comm.profiles import Profile, site_profiles
from ems.comm.sunspec_trip import has_trip_curves
from ems.comm.roles import ROLE_READS
from ems.control.io_map import DO_NAMES, KNOWN_INPUTS
from ems.sim.bms_can import SimBmsCan
from ems.sim import trip_curves
from ems.sim.plant import Plant

STACK_PERIOD_S = 0.1          # stack and cluster frames
CELL_PERIOD_S = 1.0           # cell voltage and temperature frames
NOMINAL_V, NOMINAL_HZ = 230.0, 50.0
# scenario comm_loss / comm_restore device names → the roles that go silent
MUTE_ROLES = {"grid_meter": ("grid_meter",), "pv": ("pv_meter", "pv_inverter"), "pcs": ("pcs",), "bms": ("bms",),
              "air_conditioner": ("air_conditioner",), "io_module": ("io_module",)}


# the simulated PCS's grid-connection protection as delivered: stage 1 / 2 over- and under-voltage (% of
# nominal, s) and over- and under-frequency (Hz, s)
PCS_PROTECTION_DEFAULTS = {
    "prot_ov1_ratio_pct": 110.0, "prot_ov1_time_s": 3.0, "prot_ov2_ratio_pct": 115.0, "prot_ov2_time_s": 0.2,
    "prot_uv1_ratio_pct": 85.0, "prot_uv1_time_s": 3.0, "prot_uv2_ratio_pct": 45.0, "prot_uv2_time_s": 0.3,
    "prot_of1_hz": 51.5, "prot_of1_time_s": 0.1, "prot_of2_hz": 52.0, "prot_of2_time_s": 0.1,
    "prot_uf1_hz": 47.5, "prot_uf1_time_s": 0.1, "prot_uf2_hz": 47.0, "prot_uf2_time_s": 0.1,
}


class ValueStore:
    """A device's registers held as engineering values, read in-process (`ems simulate`): the same publish /
    value / silent interface as the ProfileImage a server serves, without the words between."""

    def __init__(self, profile: Profile, on_write=None):
        self.profile, self.on_write = profile, on_write
        self.values: dict[str, float | None] = dict(profile.expected)
        self.silent = False

    def publish(self, name: str, value: float | None) -> None:
        self.values[name] = value

    def publish_many(self, values: dict) -> None:
        self.values.update(values)

    def value(self, name: str) -> float | None:
        return self.values.get(name)

    def write(self, name: str, value: float, client: str = "sim") -> None:
        if self.on_write is not None:
            self.on_write(name, value, client)
        self.values[name] = value            # kept, as a device keeps what was written (read back)


class _Commanded:
    """A device's received command with its own timeout (the device-side safety of a real PCS)."""

    def __init__(self, now_s, fallback: float, timeout_s: float = 10.0):
        self.now_s = now_s
        self.value, self.fallback, self.timeout_s, self.at_s = fallback, fallback, timeout_s, -math.inf

    def set(self, value: float) -> None:
        self.value, self.at_s = value, self.now_s()

    def get(self) -> float:
        return self.value if self.now_s() - self.at_s <= self.timeout_s else self.fallback


def publish_image_array(img: ProfileImage, a, values: np.ndarray) -> None:
    """A BMS array (clusters × elements, engineering values; a flag array: the raw status word) into a served
    image's words, each cluster at its stride, NaN as the invalid marker."""
    raw = values if a.bit is not None else np.where(np.isnan(values), np.nan, (values - a.offset) / a.scale)
    for c in range(values.shape[0]):
        row = raw[c]
        ints = np.where(np.isnan(row), a.invalid if a.invalid is not None else 0, np.rint(row)).astype(np.int64)
        if a.type == "s16":
            ints = np.clip(ints, -32768, 32767) & 0xFFFF
        else:
            ints = np.clip(ints, 0, 65535)
        img.set_words(a.function, a.address + c * a.cluster_stride, [int(w) for w in ints])


class SimSite:
    """The plant and its simulated devices. `served`: the stores are ProfileImages for Modbus servers and the
    BMS sends CAN frames on `can_bus` (anything with python-can's send); otherwise ValueStores read in-process.
    `now_s`: the site's monotonic clock (the real one, or a simulation's virtual one)."""

    def __init__(self, cfg, now_s, served: bool, can_bus=None, pv_profile: str = "cloudy",
                 load_profile: str = "commercial", load_peak_w: float = 80_000.0, seed: int = 1,
                 outside_mean_degc: float = 25.0, outside_swing_degc: float = 7.0, charger_w: float = 0.0):
        self.cfg, self.now_s, self.served = cfg, now_s, served
        self.plant = Plant(cfg, pv_profile, load_profile, load_peak_w, seed, outside_mean_degc, outside_swing_degc,
                           charger_w)
        profiles = site_profiles(cfg.devices.profiles_dir)
        self.devices: dict[str, tuple[str, Profile]] = {}        # name → (role, profile)
        self.stores: dict[str, ProfileImage | ValueStore] = {}
        self.by_role: dict[str, str] = {}
        self.pcs_setpoint = _Commanded(now_s, 0.0)
        self.pcs_run = _Commanded(now_s, 0.0)
        self.pv_limit = _Commanded(now_s, math.inf)
        self.do_bits = 0
        self.open_mask = 0
        self.pcs_faults: set[int] = set()         # codes the PCS reports now (scenario pcs_fault)
        self.sensor_faults: set[tuple[int, int]] = set()
        self.silent_bms = False
        for d in cfg.devices.modbus:
            p = profiles[d.model]
            on_write = self._writer(d.role, d.name)
            shape = (cfg.battery.clusters, cfg.battery.cells_per_cluster) if d.role == "bms" else (0, 0)
            store = ProfileImage(p, on_write, *shape) if served else ValueStore(p, on_write)
            self.devices[d.name], self.stores[d.name], self.by_role[d.role] = (d.role, p), store, d.name
            # SunSpec scale factors: plain units, powers in tens (a 100 kW rating fits WMaxRtg's uint16)
            sfs = {r.scale_factor: (1 if r.unit in ("W", "var", "VA") else 0)
                   for r in p.registers.values() if r.scale_factor}
            store.publish_many(sfs)
            if d.role == "pcs":                   # its grid protection as delivered (EN 50549-1-like settings)
                store.publish_many({k: v for k, v in PCS_PROTECTION_DEFAULTS.items() if k in p.registers})
                if has_trip_curves(p.registers):  # … on SunSpec's trip curves 707–710
                    trip_curves.publish_defaults(store, p, PCS_PROTECTION_DEFAULTS)
        # what each device publishes: served, every register of its profile (a real client may read any);
        # in-process, only what the device layer reads (ROLE_READS, status and fault words)
        self._roles = {d.role: (self.stores[d.name], self._wanted(d.role, self.devices[d.name][1]))
                       for d in cfg.devices.modbus}
        pcs = self.devices[self.by_role["pcs"]][1] if "pcs" in self.by_role else None
        self._pcs_flags = {n: bit for r in pcs.registers.values() for n, bit in r.flags} if pcs else {}
        self._pcs_fault_words = [(r.name, r.alarm_bits) for r in pcs.alarm_registers()] if pcs else []
        dc = cfg.dry_contacts
        self.inverted = frozenset(dc.inverted_inputs)
        self.in_channels = {c.name: c.channel for c in dc.channels if c.name in KNOWN_INPUTS}
        self.out_channels = {c.name: c.channel for c in dc.channels if c.name in DO_NAMES}
        self.contacts: dict[str, bool] = {}       # scenario-set inputs: name → closed
        self.bms = SimBmsCan(can_bus) if (served and cfg.devices.bms == "can" and can_bus is not None) else None
        self._next_stack_s = self._next_cells_s = -math.inf

    # ------------------------------------------------------------------ writes the EMS makes
    def _writer(self, role: str, device: str):
        def pcs(name, value, client):
            if trip_curves.adopt(self.stores[device], self.devices[device][1], name, value):
                return
            if name == "active_power_setpoint_w":
                self.pcs_setpoint.set(value)
            elif name == "run_command":
                self.pcs_run.set(value)
            elif name == "setpoint_timeout_s":
                self.pcs_setpoint.timeout_s = self.pcs_run.timeout_s = value
            elif name == "fault_reset" and value >= 1:
                self.pcs_faults.clear()

        def pv(name, value, client):
            if name == "active_power_limit_w":
                self.pv_limit.set(value)
            elif name == "limit_timeout_s":
                self.pv_limit.timeout_s = value

        def io(name, value, client):
            if name == "do_bits":
                self.do_bits = int(value)

        def bms(name, value, client):
            if name == "open_contactors_mask":
                self.open_mask = int(value)
        return {"pcs": pcs, "pv_inverter": pv, "io_module": io, "bms": bms}.get(role, lambda *a: None)

    def _wanted(self, role: str, p: Profile) -> set[str]:
        if self.served:
            return set(p.registers)
        return set(ROLE_READS.get(role, {})) | {r.name for r in p.registers.values() if r.flags or r.alarm_bits}

    # ------------------------------------------------------------------ plant → devices
    def _publish(self, role: str, values: dict) -> None:
        entry = self._roles.get(role)
        if entry is not None:
            store, regs = entry
            store.publish_many({k: v for k, v in values.items() if k in regs})

    def _has(self, role: str, register: str) -> bool:
        entry = self._roles.get(role)
        return entry is not None and register in entry[1]

    def publish(self) -> None:
        """The plant's state into the devices' registers (only what each profile has: this runs every step)."""
        p, f = self.plant, self.plant.flows
        volts = NOMINAL_V if p.grid_available else 0.0
        for role, value in (("grid_meter", f.grid_w), ("pv_meter", f.pv_w), ("dg_meter", f.dg_w)):
            if role not in self._roles:
                continue
            if not self.served:
                self._roles[role][0].publish("active_power_w", value)
                continue
            v = volts if role == "grid_meter" else NOMINAL_V
            self._publish(role, {"active_power_w": value, "phase_a_active_power_w": value / 3,
                                 "phase_b_active_power_w": value / 3, "phase_c_active_power_w": value / 3,
                                 "phase_a_voltage_v": v, "phase_b_voltage_v": v, "phase_c_voltage_v": v,
                                 "frequency_hz": NOMINAL_HZ if v else 0.0, "reactive_power_var": 0.0,
                                 "power_factor": 1.0})
        if "pcs" in self._roles:
            self._publish_pcs()
        self._publish("pv_inverter", {"active_power_w": round(f.pv_w), "status_word": int(f.pv_w > 0)})
        if p.cabinet is not None:
            self._publish("air_conditioner", {"cabinet_temperature_degc": p.cabinet.t_degc})
        self._publish("io_module", {"di_bits": self._di_bits()})
        if "bms" in self._roles and self.served:      # in-process, the BMS is read from the stack directly
            self._publish_bau()

    def _publish_pcs(self) -> None:
        p, f, st = self.plant, self.plant.flows, self.plant.stack
        running = abs(f.pcs_w) > 1.0
        word = 0
        for flag, on in (("running", running), ("fault", bool(self.pcs_faults)), ("remote", True),
                         ("grid_forming", not p.grid_connected)):
            bit = self._pcs_flags.get(flag)
            if bit is not None and on:
                word |= 1 << bit
        values = {"active_power_w": round(f.pcs_w), "reactive_power_var": 0, "grid_frequency_hz": NOMINAL_HZ,
                  "status_word": word, "inverter_state": 3 if running else 1,
                  "rated_power_w": self.cfg.pcs.rated_power_w}
        for name, bits in self._pcs_fault_words:      # the bits of the codes the PCS reports now
            values[name] = sum(1 << bit for bit, code in bits if code in self.pcs_faults) if self.pcs_faults else 0
        if self._has("pcs", "dc_voltage_v"):         # the costlier values only where the profile has them
            values["dc_voltage_v"] = float(np.mean(st.cluster_voltage()))
            values["dc_current_a"] = float(np.clip(np.sum(st.cluster_i_a), -3276.0, 3276.0))
        if self._has("pcs", "soc_pct"):
            values["soc_pct"] = round(st.true_soc_pct())
        self._publish("pcs", values)

    def _di_bits(self) -> int:
        """Raw input levels at the module's terminals: the plant's own signals and the scenario's contacts,
        a normally-closed loop reading 1 while healthy."""
        p = self.plant
        active = dict(self.contacts)
        active["grid_present"] = p.grid_available
        if p.generator is not None:
            active["generator_feedback"] = p.generator.running
            if self.cfg.dual_power.enabled:      # the ATS reports which side it is on
                active["ats_grid"] = p.grid_connected or not p.generator.running
        bits = 0
        for name, ch in self.in_channels.items():
            level = active.get(name, False)
            if name in self.inverted:
                level = not level
            if level:
                bits |= 1 << ch
        return bits

    def cell_readings(self) -> tuple[np.ndarray, np.ndarray]:
        """What the BMS reports of its cells: faulty sensors corrupt the reading, not the cell."""
        st = self.plant.stack
        cell_v, cell_t = st.cell_v.copy(), st.temp_degc.copy()
        for (cl, k), v in tuple(st.cell_fault_v.items()):
            cell_v[cl, k] = v
        for cl, k in self.sensor_faults:
            cell_t[cl, k] = np.nan
        return cell_v, cell_t

    def _publish_bau(self) -> None:
        """The BAU's Modbus arrays: cluster values, the status word of its flags, every cell."""
        st = self.plant.stack
        chg, dchg, chp, dchp = st.limits()
        cell_v, cell_t = self.cell_readings()
        flags = {"cluster_connected": st.connected, "cluster_charge_prohibited": chp,
                 "cluster_discharge_prohibited": dchp}
        arrays = {"cluster_voltage_v": st.cluster_voltage(), "cluster_current_a": st.cluster_i_a,
                  "cluster_charge_limit_a": chg, "cluster_discharge_limit_a": dchg,
                  "cluster_insulation_kohm": np.full(len(chg), 5000.0), "cell_voltage_v": cell_v,
                  "cell_temperature_degc": cell_t}
        name = self.by_role["bms"]
        store, p = self.stores[name], self.devices[name][1]
        words: dict[int, np.ndarray] = {}           # a status word's address → the word, its flags set
        for a in p.arrays.values():
            if a.name in flags:
                w = words.setdefault(a.address, np.zeros(len(chg), dtype=np.int64))
                w |= np.asarray(flags[a.name], dtype=np.int64) << a.bit
                publish_image_array(store, a, w[:, None].astype(float))
            else:
                publish_image_array(store, a, np.asarray(arrays[a.name], dtype=float).reshape(len(chg), -1))

    def publish_bms(self, now_s: float) -> None:
        """The BMS's cyclic CAN frames: stack and cluster values every 100 ms, cells every second."""
        if self.bms is None or self.silent_bms:
            return
        st = self.plant.stack
        if now_s >= self._next_stack_s:
            chg, dchg, chp, dchp = st.limits()
            self.bms.send_clusters(st.cluster_voltage(), st.cluster_i_a, chg, dchg, st.connected, chp, dchp)
            self.bms.send_stack(float(np.mean(st.cluster_voltage())), float(np.sum(st.cluster_i_a)),
                                float(np.nanmean(st.temp_degc)), st.true_soc_pct(), 100.0, float(np.sum(chg)),
                                float(np.sum(dchg)), 0.0, 0.0, not chp.any(), not dchp.any())
            self._next_stack_s = now_s + STACK_PERIOD_S
        if now_s >= self._next_cells_s:
            self.bms.send_cells(*self.cell_readings())
            self._next_cells_s = now_s + CELL_PERIOD_S

    # ------------------------------------------------------------------ devices → plant
    def outputs(self) -> dict[str, bool]:
        return {name: bool(self.do_bits >> ch & 1) for name, ch in self.out_channels.items()}

    def step(self, local: datetime, dt_s: float):
        """The plant one step on, with the commands as the devices received them."""
        p, out = self.plant, self.outputs()
        if p.generator is not None:
            p.generator.commanded = out.get("generator_start", False)
        p.shed_general, p.shed_important = out.get("shed_general_load", False), out.get("shed_important_load", False)
        p.shed_chargers = out.get("shed_chargers", False)
        p.grid_relay_open = out.get("grid_relay_open", False)
        if p.cabinet is not None:
            p.cabinet.cooling, p.cabinet.heating = out.get("ac_cooling", False), out.get("ac_heating", False)
        mask = self.bms.open_mask if self.bms is not None else self.open_mask
        opened = tuple(c for c in range(p.stack.connected.shape[0]) if mask >> c & 1)
        limit = self.pv_limit.get()
        return p.step(local, dt_s, self.pcs_setpoint.get(), self.pcs_run.get() >= 1.0,
                      None if limit == math.inf else limit, opened)

    # ------------------------------------------------------------------ scenario events
    def mute(self, device: str, silent: bool) -> None:
        """comm_loss / comm_restore: the device stops (or resumes) answering."""
        for role in MUTE_ROLES[device]:
            if role == "bms" and self.cfg.devices.bms == "can":
                self.silent_bms = silent
            name = self.by_role.get(role)
            if name is not None:
                self.stores[name].silent = silent

    def apply(self, ev) -> None:
        """A plant or device event (`dispatch` and `command` are the operator's: the caller's business)."""
        a, p = ev.args, self.plant
        if ev.kind == "grid_outage":
            p.grid_available = False
        elif ev.kind == "grid_return":
            p.grid_available = True
        elif ev.kind == "pv_scale":
            p.pv.scale = float(a["value"])
        elif ev.kind == "load_step":
            p.load.step_w = float(a["value_w"])
        elif ev.kind == "cell_fault":
            p.stack.cell_fault_v[(a["cluster"], a["cell"])] = float(a["voltage_v"])
            self._next_cells_s = -math.inf          # the BMS reports the fault in its next cell frames
        elif ev.kind == "cell_fault_clear":
            p.stack.cell_fault_v.pop((a["cluster"], a["cell"]), None)
            self.sensor_faults.discard((a["cluster"], a["cell"]))
            self._next_cells_s = -math.inf          # … and its end
        elif ev.kind == "sensor_fault":
            self.sensor_faults.add((a["cluster"], a["cell"]))
        elif ev.kind in ("comm_loss", "comm_restore"):
            self.mute(a["device"], ev.kind == "comm_loss")
        elif ev.kind == "di":
            if a["name"] not in self.in_channels:
                raise ValueError(f"input {a['name']!r} is not wired to the I/O module ([dry_contacts] channels)")
            self.contacts[a["name"]] = bool(a["closed"])
        elif ev.kind == "pcs_fault":
            self.pcs_faults.add(int(a["code"]))
        elif ev.kind == "pcs_fault_clear":
            self.pcs_faults.discard(int(a["code"]))
        elif ev.kind in ("generator_fail", "generator_repair"):
            if p.generator is None:
                raise ValueError("the site has no generator (generator.enabled = false)")
            p.generator.failed = ev.kind == "generator_fail"
        else:
            raise ValueError(f"{ev.kind} is not an event of the simulated site")

    def truth(self) -> dict:
        """The plant's own state (for tests and the control channel; never shown by the controller)."""
        f = self.plant.flows
        return {"grid_w": f.grid_w, "pv_w": f.pv_w, "load_w": f.load_w, "pcs_w": f.pcs_w, "dg_w": f.dg_w,
                "soc_pct": self.plant.stack.true_soc_pct(), "pcs_setpoint_w": self.pcs_setpoint.get(),
                "pcs_run": self.pcs_run.get() >= 1.0, "grid_available": self.plant.grid_available,
                "keepalives": self.bms.keepalives_seen if self.bms is not None else 0, "do_bits": self.do_bits,
                "open_mask": self.bms.open_mask if self.bms is not None else self.open_mask}

