"""The simulated site's devices speaking real protocols on loopback, so `ems run` drives the controller
through exactly the code a board runs: meters (the manual's DTSU666-H at addresses 101 / 121 / 182 behind
one Modbus TCP "RS485 gateway"), the PCS, the PV inverter and the air conditioner as Modbus TCP servers,
the BMS on python-can's virtual bus. Each device serves the same profile the controller's engine reads.

The simulated PCS and PV inverter behave like real ones towards the EMS: they take setpoints only within
their profile's ranges, and fall back (PCS to zero power, PV to unlimited) when no setpoint arrives for
their command timeout.
"""
from __future__ import annotations

import dataclasses
import socket
import time

import can
import numpy as np

from ems.comm.can_link import BmsCanLink, SimBmsCan
from ems.comm.modbus_server import IoThread, ProfileImage
from ems.comm.profiles import shipped_profiles
from ems.comm.site_io import SiteIo, build_engine
from ems.config.schema import ModbusDevice
from ems.sim.runner import SiteLink

METER_UNITS = {"grid_meter": 101, "pv_meter": 121, "dg_meter": 182}    # the manual's meter addresses
STACK_PERIOD_S = 0.1          # stack and cluster frames
CELL_PERIOD_S = 1.0           # cell voltage and temperature frames


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Commanded:
    """A device's received command with its own timeout (the device-side safety of a real PCS)."""

    def __init__(self, fallback: float, timeout_s: float = 10.0):
        self.value, self.fallback, self.timeout_s, self.at_s = fallback, fallback, timeout_s, -1e18

    def set(self, value: float) -> None:
        self.value, self.at_s = value, time.monotonic()

    def get(self) -> float:
        return self.value if time.monotonic() - self.at_s <= self.timeout_s else self.fallback


class SimSiteDevices:
    def __init__(self, plant, io: IoThread, can_channel: str, host: str = "127.0.0.1"):
        self.plant = plant
        self.io = io
        self.host = host
        profiles = shipped_profiles()
        self.profiles = profiles
        self.meters = {"grid_meter": ProfileImage(profiles["DTSU666-H"]), "pv_meter": ProfileImage(profiles["DTSU666-H"])}
        if plant.generator is not None:
            self.meters["dg_meter"] = ProfileImage(profiles["DTSU666-H"])
        self.pcs_setpoint = _Commanded(0.0)
        self.pcs_run = _Commanded(0.0)
        self.pv_limit = _Commanded(float("inf"))
        self.pcs = ProfileImage(profiles["SIM-PCS"], self._pcs_write)
        self.pv = ProfileImage(profiles["SIM-PV"], self._pv_write)
        self.ac = ProfileImage(profiles["SIM-AC"], lambda *a: None) if plant.cabinet is not None else None
        self.ports = {"meters": free_port(host), "pcs": free_port(host), "pv_inverter": free_port(host)}
        io.serve_tcp({METER_UNITS[r]: img for r, img in self.meters.items()}, host, self.ports["meters"])
        io.serve_tcp({1: self.pcs}, host, self.ports["pcs"])
        io.serve_tcp({1: self.pv}, host, self.ports["pv_inverter"])
        if self.ac is not None:
            self.ports["air_conditioner"] = free_port(host)
            io.serve_tcp({1: self.ac}, host, self.ports["air_conditioner"])
        self.bus = can.Bus(interface="virtual", channel=can_channel, receive_own_messages=False)
        self.bms = SimBmsCan(self.bus)
        self.open_contactors: tuple[int, ...] = ()
        self._next_stack_s = self._next_cells_s = -1e18
        for img in self.meters.values():          # what the simulated grid holds constant, published once
            img.publish_many({"phase_a_voltage_v": 230.0, "phase_b_voltage_v": 230.0, "phase_c_voltage_v": 230.0,
                              "frequency_hz": 50.0})
        self._cmd = self.bms.db.get_message_by_name("EmsCommand")

    # ------------------------------------------------------------------ what the EMS sees
    def device_configs(self) -> list[ModbusDevice]:
        """The controller's `[[devices.modbus]]` for this simulated site."""
        out = [ModbusDevice(name=role, role=role, model="DTSU666-H", host=self.host, port=self.ports["meters"],
                            unit_id=METER_UNITS[role]) for role in self.meters]
        out.append(ModbusDevice(name="pcs", role="pcs", model="SIM-PCS", host=self.host, port=self.ports["pcs"]))
        out.append(ModbusDevice(name="pv_inverter", role="pv_inverter", model="SIM-PV", host=self.host,
                                port=self.ports["pv_inverter"]))
        if self.ac is not None:
            out.append(ModbusDevice(name="air_conditioner", role="air_conditioner", model="SIM-AC", host=self.host,
                                    port=self.ports["air_conditioner"]))
        return out

    def _pcs_write(self, name: str, value: float, client) -> None:
        if name == "active_power_setpoint_w":
            self.pcs_setpoint.set(value)
        elif name == "run_command":
            self.pcs_run.set(value)
        elif name == "setpoint_timeout_s":
            self.pcs_setpoint.timeout_s = self.pcs_run.timeout_s = value

    def _pv_write(self, name: str, value: float, client) -> None:
        if name == "active_power_limit_w":
            self.pv_limit.set(value)
        elif name == "limit_timeout_s":
            self.pv_limit.timeout_s = value

    # ------------------------------------------------------------------ plant → protocols
    def publish(self, now_s: float) -> None:
        p, f = self.plant, self.plant.flows
        for role, value in (("grid_meter", f.grid_w), ("pv_meter", f.pv_w), ("dg_meter", f.dg_w)):
            img = self.meters.get(role)
            if img is not None:
                img.publish_many({"active_power_w": value, "phase_a_active_power_w": value / 3,
                                  "phase_b_active_power_w": value / 3, "phase_c_active_power_w": value / 3})
        st = p.stack
        running = abs(f.pcs_w) > 1.0
        self.pcs.publish_many({"active_power_w": round(f.pcs_w), "reactive_power_var": 0,
                               "dc_voltage_v": float(np.mean(st.cluster_voltage())),
                               "dc_current_a": float(np.clip(np.sum(st.cluster_i_a), -3276.0, 3276.0)),
                               "grid_frequency_hz": 50.0, "status_word": int(running) | 4})
        self.pv.publish_many({"active_power_w": round(f.pv_w), "status_word": int(f.pv_w > 0)})
        if self.ac is not None:
            self.ac.publish("cabinet_temperature_degc", p.cabinet.t_degc)

    def publish_bms(self, now_s: float, sensor_faults=()) -> None:
        """The BMS's cyclic CAN frames: stack and cluster values every 100 ms, cells every second."""
        st = self.plant.stack
        if now_s >= self._next_stack_s:
            chg, dchg, chp, dchp = st.limits()
            self.bms.send_clusters(st.cluster_voltage(), st.cluster_i_a, chg, dchg, st.connected, chp, dchp)
            self.bms.send_stack(float(np.mean(st.cluster_voltage())), float(np.sum(st.cluster_i_a)),
                                float(np.nanmean(st.temp_degc)), st.true_soc_pct(), 100.0, float(np.sum(chg)),
                                float(np.sum(dchg)), 0.0, 0.0, not chp.any(), not dchp.any())
            self._next_stack_s = now_s + STACK_PERIOD_S
        if now_s >= self._next_cells_s:
            cell_v, cell_t = st.cell_v.copy(), st.temp_degc.copy()
            # a faulty reading, as the BMS reports it (a snapshot: the latency bench adds one from its thread)
            for (cl, k), v in tuple(st.cell_fault_v.items()):
                cell_v[cl, k] = v
            for cl, k in sensor_faults:
                cell_t[cl, k] = np.nan
            self.bms.send_cells(cell_v, cell_t)
            self._next_cells_s = now_s + CELL_PERIOD_S

    def mute(self, device: str, silent: bool) -> None:
        """Scenario comm_loss / comm_restore: the device stops (or resumes) answering."""
        images = {"grid_meter": [self.meters["grid_meter"]], "pv": [self.meters["pv_meter"], self.pv],
                  "pcs": [self.pcs], "air_conditioner": [self.ac] if self.ac else []}
        for img in images.get(device, []):
            img.silent = silent

    # ------------------------------------------------------------------ protocols → plant
    def commands(self) -> tuple[float, bool, float | None, tuple[int, ...]]:
        """(PCS setpoint W, PCS run, PV limit W or None, clusters to open) as the devices received them."""
        while (msg := self.bus.recv(timeout=0.0)) is not None:
            if msg.arbitration_id == 0x305:
                self.bms.keepalives_seen += 1
            elif msg.arbitration_id == self._cmd.frame_id:
                try:
                    mask = int(self._cmd.decode(bytes(msg.data))["open_contactors_mask"])
                except Exception:       # a malformed command is ignored, as a BMS would
                    continue
                self.open_contactors = tuple(c for c in range(32) if mask >> c & 1)
        limit = self.pv_limit.get()
        return (self.pcs_setpoint.get(), self.pcs_run.get() >= 1.0, None if limit == float("inf") else limit,
                self.open_contactors)

    def close(self) -> None:
        self.bus.shutdown()



class ProtocolSiteLink(SiteLink):
    """`SiteLink` for `ems run`: meters, PCS, PV inverter, air conditioner and BMS reached only through the
    Modbus engine and the CAN link, against the simulated devices above. Dry contacts stay on the
    in-memory backend (the board's GPIO backend sits behind the same interface); irradiance, grid state
    and charger demand are plant values without a device of their own yet."""

    def __init__(self, plant, ctrl, io: IoThread):
        super().__init__(plant, ctrl)
        channel = f"ems-sim-{id(self):x}"
        self.sim = SimSiteDevices(plant, io, channel)
        devices = dataclasses.replace(ctrl.cfg.devices, modbus=self.sim.device_configs(), can_interface="virtual",
                                      can_channel=channel)
        cfg = dataclasses.replace(ctrl.cfg, devices=devices)
        self.engine, roles = build_engine(cfg, io)
        self.bms_bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        b = ctrl.fast.buffers
        self.site_io = SiteIo(cfg, self.engine, roles, BmsCanLink(self.bms_bus, b.cell_v, b.cell_t, b.fresh,
                                                                       alarm_encoding=devices.can_alarm_encoding))
        self.engine.start()
        # CPU time the simulated site (plant model, device images, BMS frames) takes in the control thread:
        # the footprint benchmark subtracts it to estimate the controller's own share
        self.sim_cpu_s = 0.0

    def _read_devices(self) -> None:
        now = time.monotonic()
        t_cpu = time.thread_time()
        if "bms" not in self.lost:
            self.sim.publish_bms(now, self.sensor_faults)
        self.sim.publish(now)
        self.sim_cpu_s += time.thread_time() - t_cpu
        self.site_io.read(self.ctrl, now)

    def actuate(self, cmd, local, dt_s: float):
        self._outputs(cmd)
        self.site_io.actuate(cmd, time.monotonic())
        t_cpu = time.thread_time()
        sp, run, pv_limit, opened = self.sim.commands()
        flows = self.plant.step(local, dt_s, sp, run, pv_limit, opened)
        self.sim_cpu_s += time.thread_time() - t_cpu
        return flows

    def apply(self, ev) -> None:
        super().apply(ev)
        if ev.kind in ("comm_loss", "comm_restore"):
            self.sim.mute(ev.args["device"], ev.kind == "comm_loss")

    def close(self) -> None:
        self.engine.stop()
        self.bms_bus.shutdown()
        self.sim.close()
