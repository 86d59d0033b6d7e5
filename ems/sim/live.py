"""`ems run`: the controller in real time on the simulated site, with a live view.

The fast loop sleeps to absolute deadlines (no drift); the slow loop runs every slow period; the view
refreshes every second — a full-screen panel on a terminal, one plain status line otherwise. SIGINT and
SIGTERM stop cleanly: PCS commanded to zero, state saved, exit code 0.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from ems._core import layout as L
from ems.config.schema import SiteConfig
from ems.control.controller import Commands, Controller
from ems.control.events import EventLog
from ems.sim.plant import Plant
from ems.comm.dispatch import DispatchServer
from ems.comm.modbus_server import IoThread
from ems.sim.devices import ProtocolSiteLink
from ems.sim.runner import SiteLink


class ScaledClock:
    """Real time, optionally sped up (speed 60: one simulated minute per second) for desk demos.

    In real time (speed 1, no start given) the wall time is the system's, so a step of the system clock
    (NTP, `ems clock set`, SCADA → EMS timing) reaches the schedules; `set_wall` then sets the system clock
    through `set_system` (ems.board.maintenance.set_clock). Sped up, the wall time is simulated and
    `set_wall` only steps it. The periods run on the monotonic clock either way and never jump."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None, set_system=None):
        self.speed = speed
        self._t0 = time.monotonic()
        self._start = (start or datetime.now(timezone.utc)).astimezone(timezone.utc)
        self.follows_system = speed == 1.0 and start is None
        self._set_system = set_system

    def monotonic_s(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def now(self) -> datetime:
        if self.follows_system:
            return datetime.now(timezone.utc)
        return self._start + timedelta(seconds=self.monotonic_s())

    def set_wall(self, when: datetime) -> None:
        """Step the wall clock to `when`; raises (PermissionError, ValueError) when the system refuses."""
        if not self.follows_system:
            self._start += when.astimezone(timezone.utc) - self.now()
        elif self._set_system is None:
            raise PermissionError("this run does not set the system clock")
        else:
            self._set_system(when)


def save_state(ctrl: Controller, path: Path) -> None:
    """The SOC estimate (every cell's SOC and sigma, hysteresis, the learned current offset) and SOH survive
    a restart (written atomically: temp file, then rename)."""
    b = ctrl.fast.buffers
    state = {"version": 2, "saved_at": ctrl.clock.now().isoformat(),
             "cell_soc": b.cell_soc.round(6).tolist(), "cell_sigma": b.cell_sig.round(6).tolist(),
             "hysteresis": b.est_state[:, L.SE_HYST].tolist(), "offset_a": b.est_state[:, L.SE_OFFSET_A].tolist(),
             "offset_bound_a": b.est_state[:, L.SE_OFFSET_BOUND_A].tolist(),
             "capacity_error": b.est_state[:, L.SE_CAP_ERR].tolist(),
             "capacity_ah": b.capacity_ah.tolist(), "soh": ctrl.soh.to_dict(),
             "soc_pct": float(b.stack_soc[L.SOC_MEAN])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def load_state(ctrl: Controller, path: Path) -> bool:
    """Restore a saved estimate; False (and nothing changed) when the file is unreadable or from another
    stack shape. Version 1 files (pack charge only) restore each PACK's SOC to its cells."""
    b = ctrl.fast.buffers
    try:
        state = json.loads(path.read_text())
        if "cell_soc" in state:
            soc = np.array(state["cell_soc"], dtype=float)
            sig = np.array(state["cell_sigma"], dtype=float)
            cap = np.array(state["capacity_ah"], dtype=float)
            if soc.shape != b.cell_soc.shape or sig.shape != b.cell_sig.shape or cap.shape != b.capacity_ah.shape:
                return False
            if not (np.isfinite(soc).all() and np.isfinite(sig).all() and (cap > 0).all()):
                return False
            hyst = np.array(state["hysteresis"], dtype=float)
            off = np.array(state["offset_a"], dtype=float)
            off_b = np.array(state["offset_bound_a"], dtype=float)
            b.cell_soc[:] = soc.clip(0.0, 1.0)
            b.cell_sig[:] = sig.clip(0.0, 1.0)
            b.capacity_ah[:] = cap
            b.est_state[:, L.SE_HYST] = hyst.clip(-1.0, 1.0)
            b.est_state[:, L.SE_OFFSET_A] = off
            b.est_state[:, L.SE_OFFSET_BOUND_A] = off_b
            if "capacity_error" in state:          # absent in files written before it was kept
                b.est_state[:, L.SE_CAP_ERR] = np.array(state["capacity_error"], dtype=float).clip(0.0, 1.0)
            ctrl.soh.restore(state.get("soh", []))
        else:
            q = np.array(state["charge_ah"], dtype=float)
            if q.shape != b.charge_ah.shape or not np.isfinite(q).all():
                return False
            per = b.cell_soc.shape[1] // q.shape[1]
            b.cell_soc[:] = np.repeat((q / b.capacity_ah).clip(0.0, 1.0), per, axis=1)
            b.cell_sig[:] = ctrl.cfg.soc_estimation.initial_sigma_pct / 100.0
        b.est_state[:, L.SE_PEND_S] = b.est_params[L.EP_STEP_S]        # results at the first tick
        return True
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def status_line(ctrl: Controller, plant: Plant, local: datetime) -> str:
    f, b, s = plant.flows, ctrl.fast.buffers, ctrl.status
    alarms = ",".join(f"{name}({code})" for (code, _), name in sorted(s.active_alarms.items())) or "none"
    return (f"{local:%Y-%m-%d %H:%M:%S} grid {f.grid_w / 1000:7.1f} kW  pv {f.pv_w / 1000:6.1f} kW  "
            f"load {f.load_w / 1000:6.1f} kW  pcs {f.pcs_w / 1000:7.1f} kW  soc {b.stack_soc[L.SOC_MEAN]:5.1f} %  "
            f"strategy {s.strategy}: {s.reason}  alarms {alarms}")


def panel(ctrl: Controller, plant: Plant, local: datetime, site: str) -> str:
    f, b, s = plant.flows, ctrl.fast.buffers, ctrl.status
    lines = [
        f"\x1b[H\x1b[2J ems — {site}    {local:%Y-%m-%d %H:%M:%S %Z}    (Ctrl-C stops)",
        "",
        f"  grid   {f.grid_w / 1000:8.1f} kW   ({'importing' if f.grid_w > 0 else 'exporting'})",
        f"  PV     {f.pv_w / 1000:8.1f} kW",
        f"  load   {f.load_w / 1000:8.1f} kW",
        f"  PCS    {f.pcs_w / 1000:8.1f} kW   ({'discharging' if f.pcs_w > 0 else 'charging' if f.pcs_w < 0 else 'idle'})",
        f"  SOC    {b.stack_soc[L.SOC_MEAN]:8.1f} %    limits: charge {b.results[L.TO_CHG_LIMIT_W] / 1000:.1f} kW, "
        f"discharge {b.results[L.TO_DCHG_LIMIT_W] / 1000:.1f} kW",
        "",
        f"  strategy: {s.strategy}",
        f"  why:      {s.reason}" + (f"  (held by {', '.join(s.held_by)})" if s.held_by else ""),
        "",
        "  active alarms:",
    ]
    lines += [f"    {code:>6}  {name}  (0x{dev:08X})" for (code, dev), name in sorted(s.active_alarms.items())] or \
        ["    none"]
    return "\n".join(lines) + "\n"


def start_dispatch(cfg: SiteConfig, io: IoThread, out, clock=None) -> DispatchServer | None:
    """The SCADA / cloud dispatch server, when enabled: Modbus TCP, and RTU too when a serial port is set,
    both serving one register image. A port that cannot be opened is reported and the site runs on without
    it (safe: nobody can dispatch through it); with neither open, under local control only."""
    d = cfg.dispatch
    if not d.server_enabled:
        return None
    server = DispatchServer(cfg, clock=clock)
    listening = 0
    try:
        io.serve_tcp({d.unit_id: server.image}, d.host, d.port)
        out.write(f"dispatch server: modbus tcp {d.host}:{d.port} unit {d.unit_id} (SunSpec at 40000, native map at 0)\n")
        listening += 1
    except Exception as exc:         # address in use, no permission …
        print(f"ems run: dispatch server on {d.host}:{d.port} not started ({exc})", file=sys.stderr)
    if d.rtu_port:
        try:
            io.serve_rtu({d.unit_id: server.image}, d.rtu_port, d.rtu_baudrate, d.rtu_parity, d.rtu_stopbits)
            out.write(f"dispatch server: modbus rtu {d.rtu_port} {d.rtu_baudrate} {d.rtu_parity}{d.rtu_stopbits} "
                      f"unit {d.unit_id}\n")
            listening += 1
        except Exception as exc:     # no such device, busy, no permission …
            print(f"ems run: dispatch server on {d.rtu_port} not started ({exc})", file=sys.stderr)
    if not listening:
        print("ems run: no dispatch port open: local control only", file=sys.stderr)
        return None
    return server


class FastPeriod:
    """One fast-loop period of `ems run`, in the order a board runs it: read the devices, apply dispatch
    commands, the slow loop when due (with the dispatch server's published values), the fast tick, the
    explanation, then the actuators. The latency benchmark drives the same object."""

    def __init__(self, cfg: SiteConfig, ctrl: Controller, link, dispatch: DispatchServer | None, clock,
                 speed: float = 1.0, records=None):
        self.cfg, self.ctrl, self.link, self.dispatch, self.clock, self.speed = cfg, ctrl, link, dispatch, clock, speed
        self.records = records
        self.tz = ZoneInfo(cfg.site.timezone)
        self.slow_every = max(1, int(round(cfg.loops.slow_period_ms / cfg.loops.fast_period_ms)))
        self.local: datetime | None = None

    def period(self, n: int) -> float | None:
        """Run period number `n`; returns the slow loop's duration in s when it ran, else None."""
        ctrl, dispatch = self.ctrl, self.dispatch
        self.link.read()
        if dispatch is not None:
            dispatch.apply(ctrl)
        slow_s = None
        if n % self.slow_every == 0:
            t_slow = time.monotonic()
            ctrl.slow_tick()
            if dispatch is not None:
                dispatch.publish(ctrl)
            if self.records is not None:
                self.records.after_slow_tick()
            slow_s = time.monotonic() - t_slow
        cmd = ctrl.fast_tick(self.cfg.loops.fast_period_ms * self.speed)
        if self.records is not None:
            self.records.after_fast_tick()
        if n % self.slow_every == 0:
            ctrl.explain()
        self.local = self.clock.now().astimezone(self.tz)
        self.link.actuate(cmd, self.local, self.cfg.loops.fast_period_ms / 1000.0 * self.speed)
        return slow_s


def run_live(cfg: SiteConfig, duration_s: float | None = None, speed: float = 1.0, out=None,
             state_path: Path | None = None, pv_profile: str = "cloudy", load_profile: str = "commercial",
             load_peak_w: float = 80_000.0, probe: dict | None = None, protocols: bool = True,
             db_path: Path | None = None, config_path: Path | None = None, board_root: Path | None = None,
             watchdog=None) -> int:
    """probe (benchmarks): a dict that receives 'tick_start_s' and 'slow_s' arrays (monotonic seconds).
    db_path: the history database (alarms, logs, samples, fault recordings beside it); None: no history.
    config_path: the site file the HTTP API saves parameter changes to (None: the API cannot change them).
    protocols: reach the simulated devices over loopback Modbus TCP and virtual CAN (the board's code
    path); False keeps the in-process device path of `ems simulate`.
    board_root: the board layout (ems.board.slots) whose update trial this run confirms once healthy.
    watchdog: a LoopWatchdog (default: systemd's, from $NOTIFY_SOCKET / $WATCHDOG_USEC; inert on a desk)."""
    from ems.board.rt import DeadlineSleeper, apply_realtime
    from ems.board.slots import BoardPaths
    from ems.board.update import HealthConfirm
    from ems.board.watchdog import LoopWatchdog
    out = out or sys.stdout
    tty = out.isatty()
    from ems.board.maintenance import set_clock
    # SCADA → EMS timing sets the system clock in real time (the hardware clock written in the background)
    clock = ScaledClock(speed, set_system=lambda when: set_clock(when, wait_rtc=False))
    ctrl = Controller(cfg, clock, EventLog())
    restored = state_path is not None and load_state(ctrl, state_path)
    plant = Plant(cfg, pv_profile, load_profile, load_peak_w)
    if restored:     # the simulated battery is where the saved counters say it is
        b = ctrl.fast.buffers
        soc = float(b.cell_soc.mean())
        plant.stack.set_soc(plant.stack.soc + soc - plant.stack.soc.mean())
    io = IoThread() if protocols else None
    link = ProtocolSiteLink(plant, ctrl, io) if protocols else SiteLink(plant, ctrl)
    dispatch = start_dispatch(cfg, io, out, clock) if io is not None else None
    tz = ZoneInfo(cfg.site.timezone)
    records = api = None
    stop = {"at": None}               # monotonic time to stop at (a signal: now; the API: shortly)
    board = BoardPaths(board_root) if board_root is not None else None

    def request_stop(reason: str) -> None:
        """The API's remote restart / factory reset: a clean stop half a second from now (the answer
        reaches the client first); systemd starts the service again."""
        out.write(f"{reason}: stopping (the service manager starts the EMS again)\n")
        stop["at"] = time.monotonic() + 0.5

    if db_path is not None:
        from ems.records.site import SiteRecords
        records = SiteRecords(cfg, ctrl, db_path, wall_clock=time.time,
                              devices_fn=link.engine.status if protocols else None)
        records.start()
        if cfg.api.enabled:
            from ems.records.api import start_api
            from ems.board.maintenance import RemoteMaintenance
            maint = RemoteMaintenance(clock, request_stop, board)
            api = start_api(cfg, db_path, config_path, out, commands=records.commands, maintenance=maint)
    loop = FastPeriod(cfg, ctrl, link, dispatch, clock, speed, records)

    def _stop(signum, frame):
        stop["at"] = time.monotonic()

    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    fast_s = cfg.loops.fast_period_ms / 1000.0
    slow_every = loop.slow_every
    bc = cfg.board
    rt = None
    if bc.lock_memory or bc.rt_priority or bc.cpu >= 0:       # this thread is the fast loop's
        rt = apply_realtime(bc.lock_memory, bc.rt_priority, bc.cpu if bc.cpu >= 0 else None)
        out.write(rt.text() + "\n")
    sleeper = DeadlineSleeper(bc.absolute_deadlines)
    wd = watchdog or LoopWatchdog.from_env(max_tick_age_s=bc.watchdog_tick_age_ms / 1000.0,
                                          max_overrun_s=bc.watchdog_overrun_ms / 1000.0)
    health = HealthConfirm(board, bc.health_confirm_s)
    start = time.monotonic()
    deadline = start
    next_view = start
    n = 0
    capacity = int((duration_s or 0) / fast_s) + 16 if probe is not None else 0
    tick_start = np.zeros(capacity)
    slow_s = np.zeros(capacity // max(slow_every, 1) + 2)
    try:
        while stop["at"] is None or time.monotonic() < stop["at"]:
            if n < capacity:
                tick_start[n] = time.monotonic()
            t_tick = time.monotonic()
            t_slow = loop.period(n)
            wd.tick_done(time.monotonic() - t_tick)
            if n == 0:
                wd.ready(f"controlling {cfg.site.name}")
            wd.poll()
            if t_slow is not None:
                if n // slow_every < len(slow_s):
                    slow_s[n // slow_every] = t_slow
                health.observe(wd.healthy()[0])
                if health.result:
                    out.write(f"update: {health.result}\n")
                    health.result = None
            local = loop.local
            n += 1
            now = time.monotonic()
            if now >= next_view:
                out.write(panel(ctrl, plant, local, cfg.site.name) if tty else status_line(ctrl, plant, local) + "\n")
                out.flush()
                next_view += 1.0
            if duration_s is not None and now - start >= duration_s:
                break
            deadline += fast_s
            delay = deadline - time.monotonic()
            if delay > 0:
                sleeper.sleep_until(deadline)
            elif delay < -1.0:
                deadline = time.monotonic()      # far behind (suspended?): resynchronise, do not burst
    finally:
        wd.stopping()
        if rt is not None:
            rt.restore()
        # clean stop: PCS to zero at once, state saved
        link.actuate(Commands(pcs_setpoint_w=0.0, pcs_run=False), clock.now().astimezone(tz), fast_s)
        if io is not None:
            link.engine.flush(1.0)       # the zero-power and stop writes reach the PCS before we go
            plant.step(clock.now().astimezone(tz), fast_s, *link.sim.commands())
            link.close()
            io.stop()
        if state_path is not None:
            save_state(ctrl, state_path)
        if api is not None:
            api.stop()
        if records is not None:
            records.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if probe is not None:
            probe["tick_start_s"] = tick_start[:min(n, capacity)]
            probe["slow_s"] = slow_s[:min(n // slow_every + 1, len(slow_s))]
        out.write(f"stopped: PCS at {plant.flows.pcs_w:.0f} W" + (f", state saved to {state_path}" if state_path else "")
                  + "\n")
        if io is not None:         # how much of this process was the simulated site, not the controller
            out.write(f"simulated site: {link.sim_cpu_s:.2f} s CPU in the control thread over "
                      f"{time.monotonic() - start:.1f} s\n")
        out.flush()
    return 0
