"""`ems run --config FILE`: the controller on the site the file describes, in real time — the board's program.

The fast loop sleeps to absolute deadlines (no drift); the slow loop runs every slow period; the view
refreshes every second (ems.site.view). The devices are exactly those of the site file (ems.site.devices);
what the controller shows and serves is what they reported. SIGINT and SIGTERM stop cleanly: PCS commanded
to zero and stop (and the write confirmed), state saved, exit code 0.
"""
from __future__ import annotations

import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from ems.comm.dispatch import DispatchServer
from ems.comm.modbus_server import ConnectionLimits, IoThread
from ems.config.schema import SiteConfig
from ems.control.controller import Commands, Controller
from ems.control.events import EventLog
from ems.control.protection_table import rows_for
from ems.parallel.view import parallel_view
from ems.site.clock import SiteClock
from ems.site.devices import SiteDevices, SiteError, bms_measures_insulation
from ems.site.state import PeriodicSaver, load_state, save_state
from ems.site.view import panel, status_line

INSULATION_SOURCES = ("insulation", "insulation_monitor_fault")


def protection_rows(cfg: SiteConfig) -> list:
    """The site's protection table (defaults and its [protection] rows); without the insulation rows when its BMS does not
    report insulation (the PCS's and BMS's own monitors cover it; the EMS cannot)."""
    rows = rows_for(cfg)
    if not bms_measures_insulation(cfg):
        rows = [r for r in rows if r.name not in INSULATION_SOURCES]
    return rows


def start_dispatch(cfg: SiteConfig, io: IoThread, say, clock=None) -> DispatchServer | None:
    """The SCADA / cloud dispatch server, when enabled: Modbus TCP, and RTU too when a serial port is set,
    both serving one register image. A port that cannot be opened is reported and the site runs on without
    it (safe: nobody can dispatch through it); with neither open, under local control only."""
    d = cfg.dispatch
    if not d.server_enabled:
        return None
    server = DispatchServer(cfg, clock=clock)
    listening = 0
    try:
        io.serve_tcp({d.unit_id: server.image}, d.host, d.port, name="dispatch server",
                     limits=ConnectionLimits(d.max_connections, d.max_connections_per_client, d.idle_timeout_s,
                                             priority=frozenset(server.allowed | parallel_master(cfg))))
        say(f"dispatch server: modbus tcp {d.host}:{d.port} unit {d.unit_id} (SunSpec at 40000, native map at 0)")
        listening += 1
    except Exception as exc:         # address in use, no permission …
        print(f"ems run: dispatch server on {d.host}:{d.port} not started ({exc})", file=sys.stderr)
    if d.rtu_port:
        try:
            io.serve_rtu({d.unit_id: server.image}, d.rtu_port, d.rtu_baudrate, d.rtu_parity, d.rtu_stopbits)
            say(f"dispatch server: modbus rtu {d.rtu_port} {d.rtu_baudrate} {d.rtu_parity}{d.rtu_stopbits} "
                f"unit {d.unit_id}")
            listening += 1
        except Exception as exc:     # no such device, busy, no permission …
            print(f"ems run: dispatch server on {d.rtu_port} not started ({exc})", file=sys.stderr)
    if not listening:
        print("ems run: no dispatch port open: local control only", file=sys.stderr)
        return None
    return server


def parallel_master(cfg: SiteConfig) -> set[str]:
    """A slave's master address: its connection is never evicted for others."""
    from ems.comm.net import normalise_address
    par = cfg.parallel
    master = normalise_address(par.master_address) if par.enabled and par.role == "slave" else None
    return {master} if master else set()


def start_parallel(cfg: SiteConfig, ctrl: Controller, io: IoThread, say):
    """A master: the group (ctrl.group) and the link to its slaves; a backup master: its BackupMaster (its
    link idle until it takes over). Returns (link, backup); (None, None) on a slave or a single machine."""
    par = cfg.parallel
    if not par.enabled:
        return None, None
    if par.role == "slave":
        say(f"parallel: slave, unit {par.unit_id} of {par.units}, master {par.master_id} at {par.master_address} "
            f"(lease {par.lease_s:g} s, fallback {par.fallback})"
            + (f", backup master {par.backup_id} at {par.backup_address}" if par.backup_id and not par.backup_master
               else ""))
        if not par.backup_master:
            return None, None
        from ems.parallel.backup import BackupMaster
        backup = BackupMaster(cfg, ctrl, io, ctrl.clock.monotonic_s())
        say(f"parallel: this unit is the backup master: it takes over {len(backup.group.units) - 1} unit(s) when "
            f"master {par.master_id} has been silent for its lease and {par.takeover_s:g} s")
        return backup.link, backup
    from ems.parallel.group import ParallelGroup
    from ems.parallel.link import ParallelLink
    from ems.parallel.units import slave_units
    units = slave_units(par)
    ctrl.group = ParallelGroup(cfg, units, ctrl.clock.monotonic_s())
    say(f"parallel: master, unit {par.unit_id} of {par.units}: {len(units)} slave(s) over Modbus TCP (FC23 per "
        f"unit and slow tick, timeout {par.timeout_ms:g} ms, lease {par.lease_s:g} s)")
    return ParallelLink(io, ctrl.group, units, par.timeout_ms / 1000.0, par.modbus_unit_id,
                        ctrl.clock.monotonic_s), None


def start_uplink(cfg: SiteConfig, db_path: Path | None, say, config_path: Path | None = None, commands=None,
                 site_io=None, maintenance=None):
    """The cloud uplink ([cloud], ems.cloud.uplink) when enabled; a setting this machine cannot meet (a missing
    key file) or a run without history is reported and the site runs on without it."""
    c = cfg.cloud
    if not c.enabled:
        return None
    if db_path is None:
        print("ems run: [cloud] uplink off: it sends the history, and this run keeps none (--no-history)",
              file=sys.stderr)
        return None
    from ems.cloud.uplink import Uplink, UplinkError
    remote = None
    if c.remote:
        from ems.cloud.remote import RemoteOperation
        from ems.comm.pcs_protection import PcsProtection
        protection = PcsProtection.for_site(getattr(site_io, "modbus", None), getattr(site_io, "roles", {}))
        remote = RemoteOperation(cfg, config_path, commands, db_path, protection, maintenance)
    try:
        uplink = Uplink(cfg, db_path, Path(db_path).with_name("uplink-cursor.json"), remote=remote)
    except (UplinkError, OSError, ValueError) as exc:
        print(f"ems run: [cloud] uplink not started: {exc}", file=sys.stderr)
        return None
    uplink.start()
    say(f"cloud: MQTT{'S' if c.tls else ''} {c.host}:{c.port} as site {c.site_id} (topics {c.topic_prefix}/"
        f"{c.site_id}/v1/…; status every {c.upload_cycle_s:g} s, samples each storage interval, alarms at once"
        + (f"; requests from {', '.join(i.name for i in c.identities)}" if remote is not None else "") + ")")
    return uplink


class FastPeriod:
    """One fast-loop period, in the order a board runs it: read the devices, apply dispatch commands, the
    slow loop when due (with the dispatch server's published values), the fast tick, the explanation, then
    the actuators. The latency benchmark drives the same object."""

    def __init__(self, cfg: SiteConfig, ctrl: Controller, site_io, dispatch: DispatchServer | None, clock,
                 records=None, link=None, backup=None):
        self.cfg, self.ctrl, self.site_io, self.dispatch, self.clock = cfg, ctrl, site_io, dispatch, clock
        self.records = records
        self.link = link                     # a master's link to its slaves (ems.parallel.link)
        self.backup = backup                 # a backup master's takeover logic (ems.parallel.backup)
        self.tz = ZoneInfo(cfg.site.timezone)
        self.slow_every = max(1, int(round(cfg.loops.slow_period_ms / cfg.loops.fast_period_ms)))
        # a parallel unit's status block is refreshed at ~10 Hz between slow ticks (ems.comm.dispatch)
        self.status_every = max(1, int(round(100.0 / cfg.loops.fast_period_ms))) \
            if cfg.parallel.enabled and dispatch is not None else 0
        self.local: datetime | None = None

    def period(self, n: int) -> float | None:
        """Run period number `n`; returns the slow loop's duration in s when it ran, else None."""
        ctrl, dispatch = self.ctrl, self.dispatch
        self.site_io.read(ctrl, time.monotonic())
        if dispatch is not None:
            dispatch.apply(ctrl)
        slow_s = None
        if n % self.slow_every == 0:
            t_slow = time.monotonic()
            if self.backup is not None:
                self.backup.tick(ctrl, dispatch, ctrl.clock.monotonic_s())
            ctrl.slow_tick()
            if dispatch is not None:
                dispatch.publish(ctrl)
            if self.records is not None:
                self.records.after_slow_tick()
            if self.link is not None and ctrl.group is not None:
                self.link.submit(ctrl.group.command_plan())
            slow_s = time.monotonic() - t_slow
        elif self.link is not None and ctrl.group is not None and ctrl.group.changed.is_set():
            ctrl.parallel_replan()           # a unit came or went: its share moves now, not at the next slow tick
            self.link.submit(ctrl.group.command_plan())
        cmd = ctrl.fast_tick(self.cfg.loops.fast_period_ms)
        if self.records is not None:
            self.records.after_fast_tick()
        if n % self.slow_every == 0:
            ctrl.explain()
        elif self.status_every and n % self.status_every == 0:
            dispatch.publish_parallel(ctrl)
        self.local = self.clock.now().astimezone(self.tz)
        self.site_io.actuate(cmd, time.monotonic())
        return slow_s


def run_site(cfg: SiteConfig, duration_s: float | None = None, out=None, state_path: Path | None = None,
             db_path: Path | None = None, config_path: Path | None = None, board_root: Path | None = None,
             watchdog=None, probe: dict | None = None, simulated: bool = False) -> int:
    """Run the controller on the site's devices until a signal (or `duration_s`).
    db_path: the history database (alarms, logs, samples, fault recordings beside it); None: no history.
    config_path: the site file the HTTP API saves parameter changes to (None: the API cannot change them).
    board_root: the board layout (ems.board.slots) whose update trial this run confirms once healthy.
    watchdog: a LoopWatchdog (default: systemd's, from $NOTIFY_SOCKET / $WATCHDOG_USEC; inert on a desk).
    probe (benchmarks): a dict that receives 'tick_start_s' and 'slow_s' arrays (monotonic seconds).
    simulated: the devices are a simulated site (`ems run` without a site file): the view says so."""
    from ems.board.maintenance import RemoteMaintenance, set_clock
    from ems.board.rt import DeadlineSleeper, apply_realtime
    from ems.board.slots import BoardPaths
    from ems.board.update import HealthConfirm
    from ems.board.watchdog import LoopWatchdog
    out = out or sys.stdout
    tty = out.isatty()
    header: list[str] = []

    def say(line: str) -> None:          # a start-up line: printed now, and kept on top of the panel
        header.append(line)
        out.write(line + "\n")

    # SCADA → EMS timing sets the system clock (the hardware clock written in the background)
    clock = SiteClock(set_system=lambda when: set_clock(when, wait_rtc=False))
    ctrl = Controller(cfg, clock, EventLog(), protection_rows=protection_rows(cfg))
    if state_path is not None and load_state(ctrl, state_path):
        say(f"state restored from {state_path}")
    io = IoThread()
    try:
        devices = SiteDevices(cfg, io, ctrl.fast.buffers)
    except SiteError as exc:
        io.stop()
        print("ems run: the site file names hardware this machine does not have:\n" +
              "\n".join(f"  {p}" for p in exc.problems), file=sys.stderr)
        return 1
    site_io = devices.io
    site_io.attach(ctrl)
    if simulated:
        say("SIMULATED site: the devices below are `ems sim-site`, not a cabinet")
    for line in devices.describe():
        say(line)
    for line in site_io.notes():
        say(line)
    dispatch = start_dispatch(cfg, io, say, clock)
    link, backup = start_parallel(cfg, ctrl, io, say)
    remote = (lambda: dispatch.remote) if dispatch is not None else (lambda: None)     # noqa: E731
    records = api = uplink = None
    stop = {"at": None}               # monotonic time to stop at (a signal: now; the API: shortly)
    board = BoardPaths(board_root) if board_root is not None else None

    def request_stop(reason: str) -> None:
        """The API's remote restart / factory reset: a clean stop half a second from now (the answer
        reaches the client first); systemd starts the service again."""
        out.write(f"{reason}: stopping (the service manager starts the EMS again)\n")
        stop["at"] = time.monotonic() + 0.5

    maint = RemoteMaintenance(clock, request_stop, board)
    if db_path is not None:
        from ems.records.site import SiteRecords

        class _Say:
            def write(self, text: str) -> None:
                say(text.rstrip("\n"))
        records = SiteRecords(cfg, ctrl, db_path, wall_clock=time.time, devices_fn=devices.rows,
                              status_extra=lambda: {"simulated": simulated, "remote_mode": remote(),
                                                    "parallel": parallel_view(ctrl, members=False),
                                                    "cloud": uplink.status() if uplink is not None else
                                                    {"enabled": cfg.cloud.enabled, "state": "off"}},
                              live=cfg.api.enabled)
        records.start()
        if cfg.api.enabled:
            from ems.records.api import start_api
            api = start_api(cfg, db_path, config_path, _Say(), commands=records.commands, maintenance=maint,
                            live=records.live, parallel=lambda: parallel_view(ctrl))
    uplink = start_uplink(cfg, db_path, say, config_path, records.commands if records is not None else None, site_io,
                          maint)
    loop = FastPeriod(cfg, ctrl, site_io, dispatch, clock, records, link, backup)

    def _stop(signum, frame):
        stop["at"] = time.monotonic()

    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    fast_s = cfg.loops.fast_period_ms / 1000.0
    slow_every = loop.slow_every
    bc = cfg.board
    rt = None
    if bc.lock_memory or bc.rt_priority or bc.cpu >= 0:       # this thread is the fast loop's
        rt = apply_realtime(bc.lock_memory, bc.rt_priority, bc.cpu if bc.cpu >= 0 else None)
        say(rt.text())
    sleeper = DeadlineSleeper(bc.absolute_deadlines)
    wd = watchdog or LoopWatchdog.from_env(max_tick_age_s=bc.watchdog_tick_age_ms / 1000.0,
                                          max_overrun_s=bc.watchdog_overrun_ms / 1000.0)
    health = HealthConfirm(board, bc.health_confirm_s)
    saver = PeriodicSaver(state_path, cfg.soc_estimation.save_interval_s) if state_path is not None else None
    start = time.monotonic()
    deadline = start
    next_view = start
    n = 0
    capacity = int((duration_s or 0) / fast_s) + 16 if probe is not None else 0
    tick_start = np.zeros(capacity)
    slow_s = np.zeros(capacity // max(slow_every, 1) + 2)
    rows: list[dict] = []
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
                if saver is not None:
                    saver.poll(ctrl, time.monotonic())
                if health.result:
                    out.write(f"update: {health.result}\n")
                    health.result = None
            local = loop.local
            n += 1
            now = time.monotonic()
            if now >= next_view:
                rows = devices.rows()
                out.write(panel(ctrl, local, cfg.site.name, rows, remote(), simulated, header) if tty else
                          status_line(ctrl, local, rows, remote(), simulated) + "\n")
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
        # clean stop: PCS to zero and stopped at once, the writes confirmed before we go, state saved
        site_io.actuate(Commands(pcs_setpoint_w=0.0, pcs_run=False), time.monotonic())
        confirmed = devices.stop_commands(1.0)
        if link is not None:
            link.stop()
        if uplink is not None:
            uplink.stop()
        if saver is not None:
            saver.close()
        if state_path is not None:
            save_state(ctrl, state_path)
        if api is not None:
            api.stop()
        if records is not None:
            records.stop()
        devices.close()
        io.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if probe is not None:
            probe["tick_start_s"] = tick_start[:min(n, capacity)]
            probe["slow_s"] = slow_s[:min(n // slow_every + 1, len(slow_s))]
        pcs = "PCS commanded to 0 W and stop" + ((" (written)" if confirmed else " (not confirmed: the PCS did not "
                                                 "answer; it falls back on its own command timeout)")
                                                if "pcs" in site_io.roles else " (no PCS)")
        out.write(f"stopped: {pcs}" + (f", state saved to {state_path}" if state_path else "") + "\n")
        out.flush()
    return 0
