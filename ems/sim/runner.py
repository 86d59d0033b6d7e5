"""`ems simulate`: the controller against the simulated site on a virtual clock, as fast as possible.
`SimLink` carries the site's readings to the controller and its commands back through the same device layer
as `ems run` (SiteIo); a scenario's events change the site, or reach the controller as an operator's."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo


from ems.config.schema import SiteConfig
from ems.control.clock import VirtualClock
from ems.comm.dry_contacts import ModbusContacts
from ems.comm.site_io import SiteIo
from ems.control.controller import Commands, Controller
from ems.control.events import EventLog, JsonlSink
from ems.control.io_map import DO_NAMES
from ems.sim.direct import DirectBms, DirectModbus
from ems.sim.layout import sim_config
from ems.sim.scenario import Event, Simulation
from ems.sim.site import SimSite

COLUMNS = ["time", "grid_w", "pv_w", "load_w", "pcs_w", "dg_w", "soc_pct", "strategy", "pcs_limit_charge_w",
           "pcs_limit_discharge_w", "pcs_setpoint_w", "unserved_w", "true_soc_pct"] + [f"do_{n}" for n in DO_NAMES]
# one %-format per row: the CSV is written at every simulated step, so this is on the hot path
ROW = "%s,%.1f,%.1f,%.1f,%.1f,%.1f,%.3f,%s,%.1f,%.1f,%.1f,%.1f,%.3f" + ",%d" * len(DO_NAMES) + "\n"


class SimLink:
    """The simulated site in-process, reached through the device layer `ems run` uses (`SiteIo`) over the
    in-process transports (ems.sim.direct): `read()` before the ticks, `actuate(cmd, local, dt)` after them.
    Irradiance and EV charger demand have no device role yet: they are fed to the controller directly."""

    def __init__(self, cfg: SiteConfig, ctrl: Controller, pv_profile: str = "clear", load_profile: str = "commercial",
                 load_peak_w: float = 80_000.0, seed: int = 1, outside_mean_degc: float = 25.0,
                 outside_swing_degc: float = 7.0, charger_w: float = 0.0):
        self.ctrl = ctrl
        self.cfg = cfg = sim_config(cfg)
        now = ctrl.clock.monotonic_s
        self.site = SimSite(cfg, now, served=False, pv_profile=pv_profile, load_profile=load_profile,
                            load_peak_w=load_peak_w, seed=seed, outside_mean_degc=outside_mean_degc,
                            outside_swing_degc=outside_swing_degc, charger_w=charger_w)
        self.plant = self.site.plant
        self.modbus = DirectModbus(self.site, now)
        b = ctrl.fast.buffers
        roles = {d.role: d.name for d in cfg.devices.modbus}
        contacts = ModbusContacts(self.modbus, cfg.dry_contacts.io_device, cfg.dry_contacts.channels,
                                  cfg.devices.setpoint_refresh_s)
        self.io = SiteIo(cfg, self.modbus, roles, DirectBms(self.site, b.cell_v, b.cell_t, b.fresh), contacts)
        self.io.attach(ctrl)

    def read(self) -> None:
        p, c = self.plant, self.ctrl
        self.site.publish()
        c.update_meter("irradiance_w_m2", p.irradiance_w_m2)
        if p.charger_w > 0:
            c.update_meter("charger_demand_w", p.charger_demand_w(c.clock.now().astimezone(c.tz)))
        self.io.read(c, c.clock.monotonic_s())

    def apply(self, ev: Event) -> None:
        """A scenario event: the operator's (dispatch, commands) to the controller, the rest to the site."""
        a, c = ev.args, self.ctrl
        if ev.kind == "dispatch":
            c.command("dispatch_w", a.get("value_w"))
        elif ev.kind == "command":
            c.command(a["name"], a.get("value", True))
        else:
            self.site.apply(ev)

    def actuate(self, cmd: Commands, local, dt_s: float):
        self.io.actuate(cmd, self.ctrl.clock.monotonic_s())
        return self.site.step(local, dt_s)


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
    link = SimLink(cfg, ctrl, sim.pv_profile, sim.load_profile, sim.load_peak_w, sim.seed, sim.outside_mean_degc,
                   sim.outside_swing_degc, sim.charger_w)
    plant = link.plant
    records = None
    if out is not None and write:
        from ems.records.site import SiteRecords
        records = SiteRecords(link.cfg, ctrl, fresh_history(out), fast_period_s=sim.step_s,
                              devices_fn=link.modbus.status)
        records.start()
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
                soc = b.stack_soc[L.SOC_MEAN] if ctrl.bms_fresh() else math.nan
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
