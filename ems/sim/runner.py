"""Runs the controller against the simulated plant: on a virtual clock as fast as possible (`ems simulate`)
or in real time (`ems run`). `SiteLink` is the simulated device layer: it carries plant readings to the
controller and commands back, and it is where a device's communication can be lost."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from ems.config.schema import SiteConfig
from ems.control.clock import VirtualClock
from ems.control.controller import Commands, Controller
from ems.comm.dry_contacts import Debouncer, MemoryContacts
from ems.control.io_map import DO_NAMES
from ems.control.events import EventLog, JsonlSink
from ems.sim.plant import Plant
from ems.sim.scenario import Event, Simulation

COLUMNS = ["time", "grid_w", "pv_w", "load_w", "pcs_w", "dg_w", "soc_pct", "strategy", "pcs_limit_charge_w",
           "pcs_limit_discharge_w", "pcs_setpoint_w", "unserved_w", "true_soc_pct"] + [f"do_{n}" for n in DO_NAMES]
# one %-format per row: the CSV is written at every simulated step, so this is on the hot path
ROW = "%s,%.1f,%.1f,%.1f,%.1f,%.1f,%.3f,%s,%.1f,%.1f,%.1f,%.1f,%.3f" + ",%d" * len(DO_NAMES) + "\n"


class SiteLink:
    """Plant ⇄ controller, once per fast tick."""

    def __init__(self, plant: Plant, ctrl: Controller):
        self.plant = plant
        self.ctrl = ctrl
        dc = ctrl.cfg.dry_contacts
        self.contacts = MemoryContacts()
        self.debouncer = Debouncer(dc.debounce_ms, tuple(dc.inverted_inputs))
        for name in dc.inverted_inputs:          # a healthy normally-closed loop reads closed (level 1)
            self.contacts.set_input(name, True)
        self.lost: set[str] = set()
        self.sensor_faults: set[tuple[int, int]] = set()
        self._temp_version = -1
        self._faults_sent: set[tuple[int, int]] = set()

    def read(self) -> None:
        self._read_site()
        self._read_devices()

    def _read_devices(self) -> None:
        """Meters, PCS, air conditioner and BMS straight from the plant (the fast in-process path)."""
        p, c, f = self.plant, self.ctrl, self.plant.flows
        if "grid_meter" not in self.lost:
            c.update_meter("grid_w", f.grid_w)
        if "pv" not in self.lost:
            c.update_meter("pv_w", f.pv_w)
        if "pcs" not in self.lost:
            c.update_meter("pcs_w", f.pcs_w)
        c.update_meter("dg_w", f.dg_w)
        if p.cabinet is not None and "air_conditioner" not in self.lost:
            c.update_meter("cabinet_t_degc", p.cabinet.t_degc)
        if "bms" not in self.lost:
            st = p.stack
            chg, dchg, chp, dchp = st.limits()
            fresh_t = st.temp_version != self._temp_version or self.sensor_faults != self._faults_sent
            c.update_bms(st.cell_v, st.temp_degc if fresh_t else None, st.cluster_voltage(), st.cluster_i_a, chg,
                         dchg, st.connected, chp, dchp)
            self._temp_version, self._faults_sent = st.temp_version, set(self.sensor_faults)
            # faulty sensors corrupt the reading on its way, not the cell
            b = c.fast.buffers
            for (cl, k), v in st.cell_fault_v.items():
                b.cell_v[cl, k] = v
            for cl, k in self.sensor_faults:
                b.cell_t[cl, k] = np.nan

    def _read_site(self) -> None:
        """What has no protocol of its own here: grid state, dry contacts, irradiance and charger demand."""
        p, c = self.plant, self.ctrl
        c.update_meter("irradiance_w_m2", p.irradiance_w_m2)
        if p.charger_w > 0:
            c.update_meter("charger_demand_w", p.charger_demand_w(c.clock.now().astimezone(c.tz)))
        c.set_on_grid(p.grid_connected)
        c.set_di("grid_present", p.grid_available)
        # dry contacts: raw levels → debounce and polarity → the controller
        for name, active in self.debouncer.update(self.contacts.read_inputs(), c.clock.monotonic_s()).items():
            c.set_di(name, active)
        if p.generator is not None:
            c.set_di("generator_feedback", p.generator.running)
            if c.cfg.dual_power.enabled:         # the ATS reports which side it is on
                c.set_di("ats_grid", p.grid_connected or not p.generator.running)

    def apply(self, ev: Event) -> None:
        a, p, c = ev.args, self.plant, self.ctrl
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
        elif ev.kind == "cell_fault_clear":
            p.stack.cell_fault_v.pop((a["cluster"], a["cell"]), None)
            self.sensor_faults.discard((a["cluster"], a["cell"]))
        elif ev.kind == "sensor_fault":
            self.sensor_faults.add((a["cluster"], a["cell"]))
        elif ev.kind == "comm_loss":
            self.lost.add(a["device"])
        elif ev.kind == "comm_restore":
            self.lost.discard(a["device"])
        elif ev.kind == "di":
            # the scenario speaks of the contact being closed (active); an inverted (NC) input reads the opposite
            closed = bool(a["closed"])
            self.contacts.set_input(a["name"], (not closed) if a["name"] in self.debouncer.inverted else closed)
        elif ev.kind == "dispatch":
            c.command("dispatch_w", a.get("value_w"))
        elif ev.kind == "command":
            c.command(a["name"], a.get("value", True))
        elif ev.kind in ("generator_fail", "generator_repair"):
            if p.generator is None:
                raise ValueError("the site has no generator (generator.enabled = false)")
            p.generator.failed = ev.kind == "generator_fail"

    def actuate(self, cmd: Commands, local, dt_s: float):
        self._outputs(cmd)
        return self.plant.step(local, dt_s, cmd.pcs_setpoint_w, cmd.pcs_run, cmd.pv_limit_w, cmd.open_contactors)

    def _outputs(self, cmd: Commands) -> None:
        """Dry-contact outputs (in-memory relays) to the plant."""
        self.contacts.write_outputs(cmd.outputs)
        p, out = self.plant, self.contacts.outputs
        if p.generator is not None:
            p.generator.commanded = out["generator_start"]
        p.shed_general, p.shed_important = out["shed_general_load"], out["shed_important_load"]
        p.shed_chargers = out["shed_chargers"]
        p.grid_relay_open = out["grid_relay_open"]
        if p.cabinet is not None:
            p.cabinet.cooling, p.cabinet.heating = out["ac_cooling"], out["ac_heating"]


@dataclass
class Summary:
    steps: int
    wall_s: float
    max_balance_error_w: float
    final_soc_pct: float
    events: int


def fresh_history(out: Path) -> Path:
    """A simulation's history.sqlite (and its fault recordings) start empty on every run."""
    path = out / "history.sqlite"
    for p in (path, out / "history.sqlite-wal", out / "history.sqlite-shm"):
        p.unlink(missing_ok=True)
    faults = out / "faults"
    if faults.is_dir():
        for f in faults.glob("*.csv"):
            f.unlink()
    return path


def simulate(cfg: SiteConfig, sim: Simulation, out_dir: str | Path | None, write: bool = True) -> Summary:
    """Run a scenario on a virtual clock; write timeseries.csv, events.jsonl and history.sqlite (alarms, logs,
    samples, fault recordings under faults/) into out_dir."""
    tz = ZoneInfo(cfg.site.timezone)
    clock = VirtualClock(sim.start)
    log = EventLog()
    sink = fh = None
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and write:
        out.mkdir(parents=True, exist_ok=True)
        sink = JsonlSink(out / "events.jsonl")
        log.sinks.append(sink)
        fh = open(out / "timeseries.csv", "w", newline="", encoding="utf-8")
    ctrl = Controller(cfg, clock, log)
    records = None
    if out is not None and write:
        from ems.records.site import SiteRecords
        records = SiteRecords(cfg, ctrl, fresh_history(out), fast_period_s=sim.step_s)
        records.start()
    plant = Plant(cfg, sim.pv_profile, sim.load_profile, sim.load_peak_w, sim.seed, sim.outside_mean_degc,
                  sim.outside_swing_degc, sim.charger_w)
    link = SiteLink(plant, ctrl)
    step = sim.step_s
    n_steps = int(round(sim.duration_s / step))
    slow_every = max(1, int(round(cfg.loops.slow_period_ms / 1000.0 / step)))
    pending = list(sim.events)
    if fh:
        fh.write(",".join(COLUMNS) + "\n")
    worst = 0.0
    t0 = time.perf_counter()
    b = ctrl.fast.buffers
    from ems._core import layout as L
    try:
        for n in range(n_steps):
            now = clock.now()
            while pending and pending[0].at <= now:
                link.apply(pending.pop(0))
            link.read()
            if n % slow_every == 0:
                ctrl.slow_tick()
                if records:
                    records.after_slow_tick()
            cmd = ctrl.fast_tick(step * 1000.0)
            if records:
                records.after_fast_tick()
            if n % slow_every == 0:
                ctrl.explain()
            local = now.astimezone(tz)
            f = link.actuate(cmd, local, step)
            worst = max(worst, abs(f.load_w - (f.pv_w + f.pcs_w + f.grid_w + f.dg_w)))
            if fh:
                soc = b.stack_soc[L.SOC_MEAN] if ctrl._bms_fresh() else math.nan
                fh.write(ROW % (local.isoformat(timespec="seconds"), f.grid_w, f.pv_w, f.load_w, f.pcs_w, f.dg_w, soc,
                                ctrl.status.strategy, b.results[L.TO_CHG_LIMIT_W], b.results[L.TO_DCHG_LIMIT_W],
                                cmd.pcs_setpoint_w, f.unserved_w, plant.stack.true_soc_pct(),
                                *[cmd.outputs[n] for n in DO_NAMES]))
            clock.advance(step)
    finally:
        if records:
            records.stop()
        if fh:
            fh.close()
        if sink:
            sink.close()
    return Summary(n_steps, time.perf_counter() - t0, worst, plant.stack.true_soc_pct(), len(log.recent))
