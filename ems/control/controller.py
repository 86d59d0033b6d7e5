"""The supervisor core: measurements in, fast tick, slow tick, commands out — on an injected clock.

Device drivers (or the simulated plant) call `update_*` with fresh readings; `fast_tick` runs the native
core and returns the actuator commands in the same tick (a protection trip reaches the PCS command at
once); `slow_tick` builds the frozen snapshot, runs the strategies in priority order and writes their
requests into the fast path. A strategy that raises is disabled and alarmed; the others run on.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from zoneinfo import ZoneInfo

import numpy as np

from ems._core import layout as L
from ems.config.schema import SiteConfig
from ems.control.events import EMS_ID, EventLog, cluster_id
from ems.control.io_map import COMM_ALARMS, DO_NAMES, KNOWN_INPUTS, SAFETY_INPUTS
from ems.control.fastpath import BypassParams, FastPath, FastPathParams, StackShape
from ems.control.protection_table import rows_for
from ems.control.snapshot import Operator, Snapshot
from ems.estimation.ocv import table_for
from ems.estimation.params import estimator_for, rest_current_a, sensor_sigmas
from ems.estimation.soh import SohTracker
from ems.parallel.slave import Follower
from ems.records.catalogue import catalogue
from ems.strategies import build
from ems.strategies.base import EQ, TARGET, Decision
from ems.strategies.feed_in_limit import FeedInLimit

log = logging.getLogger("ems.controller")

MAX_REQUESTS = 32
STRATEGY_FAULT_CODE = 5012      # strategy_fault in the alarm catalogue (our own code)
CATALOGUE = catalogue()


@dataclass
class Reading:
    value: float | None = None
    at_s: float = -1e18


@dataclass
class Commands:
    """What the actuators are told after a fast tick."""
    pcs_setpoint_w: float = 0.0
    pcs_run: bool = True                   # False: PCS stopped (one-click shutdown, all clusters tripped)
    pcs_reactive_var: float = 0.0          # reactive power setpoint (remote dispatch; 0 when none)
    pv_limit_w: float | None = None        # PV curtailment (feed-in limit), None = unlimited
    open_contactors: tuple[int, ...] = ()  # clusters whose trip delay elapsed
    outputs: dict = field(default_factory=lambda: {name: False for name in DO_NAMES})   # relay states
    balancing: np.ndarray | None = None    # per-cell bleed flags for the BMS


@dataclass
class Status:
    strategy: str = "idle"
    reason: str = "starting"
    held_by: tuple[str, ...] = ()
    active_alarms: dict = field(default_factory=dict)   # (code, device_id) → name


def bypass_params(cfg: SiteConfig) -> BypassParams:
    """The site's bypass settings in the core's terms (mode bits as in the manual's four sub-options)."""
    bp = cfg.bypass
    modes = (1 * bp.consistency_on_grid_charge + 2 * bp.consistency_on_grid_discharge
             + 4 * bp.consistency_off_grid_charge + 8 * bp.consistency_off_grid_discharge)
    return BypassParams(enabled=bp.enabled, consistency_modes=modes, spread_on_pct=bp.spread_on_pct,
                        spread_off_pct=bp.spread_off_pct, pcs_dc_min_v=bp.pcs_dc_min_v,
                        max_per_cluster=bp.max_per_cluster)


# a device (COMM_ALARMS key) → the reading whose freshness says it is alive ("bms": the cluster data)
DEVICE_READINGS = {"grid_meter": "grid_w", "pcs": "pcs_w", "pv": "pv_w", "dg_meter": "dg_w",
                   "air_conditioner": "cabinet_t_degc", "io_module": "contacts", "bms": None}
# sections a running controller takes live (the strategies' own); any other change applies after a restart
LIVE_SECTIONS = ("grid", "rrcr", "sec14a", "self_use", "time_based", "pmeteroffset", "peak_shaving", "forced_charge",
                 "ups_reserve", "soc_calibration", "time_period_feed_in", "sg_ready", "generator", "off_grid",
                 "operating_mode", "air_conditioner")


_MISSING = object()


def _moved(initial, value) -> bool:
    """A strategy attribute that differs from a freshly built strategy's is state it built up."""
    if initial is _MISSING:
        return True
    try:
        return bool(initial != value)
    except Exception:                # an array or an object without a plain comparison: keep the running one
        return True


def limit_reactive(q_var: float, p_w: float, pcs) -> float:
    """Reactive power within what the PCS's apparent power leaves beside the active setpoint
    (P² + Q² ≤ S², active power first: it carries the site's energy strategy and protection)."""
    s_va = pcs.apparent_va
    q_max = math.sqrt(max(s_va * s_va - p_w * p_w, 0.0))
    return max(-q_max, min(q_max, q_var))


class Controller:
    def __init__(self, cfg: SiteConfig, clock, events: EventLog | None = None, max_age_s: float = 5.0,
                 protection_rows: list | None = None):
        """`protection_rows`: the protection table (default: `protection_table.rows_for(cfg)`, the LFP
        defaults for the site's battery with its [protection] rows). `max_age_s`: the comm-loss age of every device until `supervise` gives each its own."""
        self.cfg = cfg
        self.clock = clock
        self.tz = ZoneInfo(cfg.site.timezone)
        self.events = events or EventLog()
        self.max_age_s = max_age_s
        b = cfg.battery
        self.fast = FastPath(
            StackShape(b.clusters, b.cells_per_cluster, b.packs_per_cluster, MAX_REQUESTS),
            FastPathParams(stack_max_charge_a=b.rated_charge_a * b.clusters,
                           stack_max_discharge_a=b.rated_discharge_a * b.clusters,
                           pcs_max_charge_w=cfg.pcs.rated_power_w, pcs_max_discharge_w=cfg.pcs.rated_power_w,
                           ramp_w_per_s=cfg.pcs.ramp_w_per_s, deadband_w=cfg.pcs.deadband_w,
                           charge_efficiency=cfg.soc_estimation.charge_efficiency_pct / 100.0,
                           cell_full_v=b.cell_full_v, cell_empty_v=b.cell_empty_v,
                           idle_current_a=rest_current_a(cfg.soc_estimation, b.cell_capacity_ah),
                           trip_delay_ms=cfg.protection.trip_delay_ms,
                           trip_open_current_a=cfg.protection.trip_open_current_a,
                           trip_max_wait_ms=cfg.protection.trip_max_wait_ms),
            bypass=bypass_params(cfg),
            rows=protection_rows if protection_rows is not None else rows_for(cfg),
            cell_capacity_ah=b.cell_capacity_ah,
            estimator=estimator_for(cfg.soc_estimation, table_for(b), b.cell_capacity_ah),
        )
        buf = self.fast.buffers
        self.fast.set_soc(b.initial_soc_pct, cfg.soc_estimation.initial_sigma_pct)
        buf.cluster_in[:, L.CL_RATED_CHG_A] = b.rated_charge_a
        buf.cluster_in[:, L.CL_RATED_DCHG_A] = b.rated_discharge_a
        self.soh = SohTracker(b.clusters, b.cell_capacity_ah, *sensor_sigmas(cfg.soc_estimation, b.cell_capacity_ah))
        self._soh_day = -1
        self._calibration_asked = False
        self.strategies = build(cfg)
        self._by_name = {s.name: s for s in self.strategies}
        self._feed_in = self._feed_in_limit()
        # peak exceedances since the start (the records keep every one): count, largest excess, energy above
        self.peak_totals = {"count": 0, "max_excess_w": 0.0, "energy_wh": 0.0}
        self.disabled: dict[str, str] = {}
        self.readings = {k: Reading() for k in ("grid_w", "pv_w", "pcs_w", "dg_w", "cabinet_t_degc", "irradiance_w_m2",
                                                 "charger_demand_w", "contacts")}
        self._contacts_stop = False          # the I/O module carries inputs that stop the PCS
        self._pcs_stop_by: str | None = None
        self.bms_at_s = -1e18
        self.di: dict[str, bool] = {}
        self.on_grid = True
        self.operator = {"one_click_shutdown": False, "forced_charge": False, "generator": False, "pcs_off": False}
        self._reset_for_slow = False
        self._reset_pending = False          # a fault reset for the next fast tick
        self._cells_fresh = False            # fresh[] already set to 1 since the BMS came back
        self._strategy_alarms: dict[str, set] = {}
        self._pv_setpoint: float | None = None
        self._off_grid_reason = ""
        self._dispatch: tuple[float, float] | None = None      # (value_w, expires_at_s)
        self._reactive: tuple[float, float] | None = None      # (value_var, expires_at_s)
        self._grid_op: dict[str, tuple[float, float]] = {}     # the grid operator's limits: name → (value, expires)
        self.status = Status()
        self._slots: list[tuple[str, Decision]] = []
        self._comm_lost: set[str] = set()
        self._row_codes: dict[tuple[str, int], set[int]] = {}
        self._alarm_holders: dict[tuple[int, int], set[str]] = {}   # active (code, device) → who asserts it
        self._prev_prot = None               # cluster trip flags of the last tick (edge detection)
        self._last_strategy = None
        self.commands = Commands()
        self.snapshot: Snapshot | None = None
        # parallel operation (ems.parallel): a slave follows its master's lease; a master plans for the group
        par = cfg.parallel
        self.follower = Follower(par, clock.monotonic_s()) if par.enabled and par.role == "slave" else None
        self._follow_state: str | None = None
        self.group = None                    # the master's ParallelGroup (set by the runtime)
        self._acting_parallel = None         # a backup master in control: [parallel] as a master's
        self.heartbeat = 0                   # slow ticks so far (a slave serves it: a stuck EMS stops counting)
        # which devices are supervised for comm loss, each with its age (until the device layer says: the
        # plant's full set); each gets its age to answer before it counts as lost
        self.supervise({d: max_age_s for d in ("grid_meter", "pcs", "bms", "pv")
                        + (("air_conditioner",) if cfg.air_conditioner.enabled else ())})

    def _feed_in_limit(self) -> FeedInLimit:
        """The strategy whose export limit curtails PV (a slave runs none: a stand-in from its own config)."""
        return next((s for s in self.strategies if isinstance(s, FeedInLimit)), None) or FeedInLimit(self.cfg)

    # ------------------------------------------------------------------ parallel operation
    def parallel_command(self, cmd) -> None:
        """A slave: the master's command, checked by the dispatch server (ems.parallel.slave.Command)."""
        if self.follower is not None:
            self.follower.take(cmd, self.clock.monotonic_s())
            # followed from the next fast tick on, not the next slow one: the master's site loop counts on it
            for k, (name, _) in enumerate(self._slots):
                if name == "parallel" and self.snapshot is not None and self.snapshot.parallel is not None \
                        and self.snapshot.parallel.setpoint_w is not None:
                    self.fast.buffers.req_value[k] = cmd.setpoint_w

    def parallel_conflict(self, reason: str) -> None:
        """A slave: a command for another unit, master or group size was refused (57 at the next slow tick)."""
        if self.follower is not None:
            self.follower.conflict(reason, self.clock.monotonic_s())

    def _follower_alarms(self, now) -> None:
        """A slave's 56 while the master's lease has lapsed, 57 while commands for another unit arrive."""
        f, mono = self.follower, self.clock.monotonic_s()
        state = "acting" if self.group is not None else f.state(mono)     # a backup master in control
        if state != self._follow_state:
            self.events.emit(now, "parallel_state", None, "parallel", EMS_ID,
                             detail=f"{self._follow_state or 'start'} → {state}")
            self._follow_state = state
        if f.lapsed(mono):
            self._raise(now, 56, EMS_ID, f"no command from master {self.cfg.parallel.master_id} for its lease: "
                        f"fallback {self.cfg.parallel.fallback}", holder="parallel")
        else:
            self._clear(now, 56, EMS_ID, "the master's commands arrive again", holder="parallel")
        if f.conflicted(mono):
            self._raise(now, 57, EMS_ID, f.conflict_reason, holder="parallel")
        else:
            self._clear(now, 57, EMS_ID, "no conflicting command any more", holder="parallel")

    def _as_run(self, cfg: SiteConfig) -> SiteConfig:
        """The config the strategies are built from: a backup master in control builds a master's."""
        if self._acting_parallel is None:
            return cfg
        import dataclasses
        return dataclasses.replace(cfg, parallel=self._acting_parallel)

    def take_over(self, cfg_master, group) -> None:
        """A backup master takes the group: the site's strategies (as the master's config builds them) and the
        group's plan from this slow tick on."""
        self._acting_parallel = cfg_master.parallel
        self.strategies = build(cfg_master)
        self._by_name = {s.name: s for s in self.strategies}
        self._feed_in = self._feed_in_limit()
        self.group = group

    def stand_down(self) -> None:
        """A backup master hands back: a slave's strategies again (it follows the master's next command)."""
        self.group = None
        self._acting_parallel = None
        self.strategies = build(self.cfg)
        self._by_name = {s.name: s for s in self.strategies}
        self._feed_in = self._feed_in_limit()

    def parallel_replan(self) -> None:
        """A master: a cycle moved a unit in or out of the group: share the site target again now (not only
        at the next slow tick); the runtime sends the new shares."""
        g = self.group
        g.update(self, self.clock.monotonic_s())
        g.redistribute()
        self.fast.buffers.req_value[0] = float(g.out_w[0])

    def supervise(self, devices: dict[str, float], contacts_stop: bool = False) -> None:
        """The site's devices (COMM_ALARMS keys) and their comm-loss ages, s: only these raise comm-loss alarms.
        A reading of a device the site does not have stays None (or 0 W: `constant`). contacts_stop: the
        dry-contact I/O module carries EPO / fire / water, so losing it stops the PCS (fail-safe)."""
        unknown = set(devices) - set(DEVICE_READINGS)
        if unknown:
            raise ValueError(f"unknown devices {sorted(unknown)}; known: {', '.join(DEVICE_READINGS)}")
        self.supervised = dict(devices)
        self._ages = {DEVICE_READINGS[d]: a for d, a in devices.items() if DEVICE_READINGS[d]}
        self._bms_age_s = devices.get("bms", self.max_age_s)
        self._contacts_stop = contacts_stop
        self._started_s = self.clock.monotonic_s()

    # ------------------------------------------------------------------ inputs
    def update_meter(self, name: str, value_w: float | None) -> None:
        """A meter or sensor reading: grid_w, pv_w, pcs_w, dg_w (W), cabinet_t_degc, irradiance_w_m2,
        charger_demand_w. A NaN reading counts as no reading (staleness takes over)."""
        r = self.readings.get(name)
        if r is None:
            raise ValueError(f"unknown reading {name!r}; known: {', '.join(self.readings)}")
        if value_w is not None and not math.isfinite(value_w):
            return
        r.value, r.at_s = value_w, self.clock.monotonic_s()

    def update_bms(self, cell_v, cell_t, cluster_v, cluster_i, bms_chg_a, bms_dchg_a, connected,
                   chg_prohibited, dchg_prohibited, insulation_kohm=5000.0, pole_t=25.0, hvbox_t=25.0) -> None:
        """Cluster values from the BMS. cell_v None: the cells are already in the core's arrays (the CAN
        link writes them there and keeps `fresh` by age); cell_t None: temperatures unchanged."""
        b = self.fast.buffers
        if cell_v is not None:
            b.cell_v[:] = cell_v
            if not self._cells_fresh:
                b.fresh[:] = 1
                self._cells_fresh = True
        if cell_t is not None:
            b.cell_t[:] = cell_t
        b.cluster_in[:, L.CL_V] = cluster_v
        b.cluster_in[:, L.CL_I] = cluster_i
        b.cluster_in[:, L.CL_BMS_CHG_A] = bms_chg_a
        b.cluster_in[:, L.CL_BMS_DCHG_A] = bms_dchg_a
        b.cluster_in[:, L.CL_INSULATION] = insulation_kohm
        b.cluster_in[:, L.CL_POLE_T] = pole_t
        b.cluster_in[:, L.CL_HVBOX_T] = hvbox_t
        b.cluster_flags[:, L.CLF_CONNECTED] = connected
        b.cluster_flags[:, L.CLF_CHG_PROHIBITED] = chg_prohibited
        b.cluster_flags[:, L.CLF_DCHG_PROHIBITED] = dchg_prohibited
        b.cluster_in[:, L.CL_LINK_LOST] = 0.0
        self.bms_at_s = self.clock.monotonic_s()

    def cells_awaited(self, awaited: bool) -> None:
        """The BMS link is silent or came back less than one cell age ago: a stale cell is the link's, not its
        sensor's, and the cell-sensor rows hold their state (ems.comm.cell_wait)."""
        self.fast.buffers.cluster_in[:, L.CL_CELLS_AWAITED] = 1.0 if awaited else 0.0

    def set_constant(self, name: str, value: float) -> None:
        """A reading the site knows without a device (no PV fitted: pv_w = 0): fresh for ever."""
        r = self.readings[name]
        r.value, r.at_s = value, math.inf

    def set_di(self, name: str, closed: bool) -> None:
        if name not in KNOWN_INPUTS:
            raise ValueError(f"unknown dry-contact input {name!r}; known: {', '.join(KNOWN_INPUTS)}")
        closed = bool(closed)
        was = self.di.get(name)
        self.di[name] = closed               # read at least once (an input never read counts as open)
        if (was or False) == closed:
            return
        if name in SAFETY_INPUTS:
            code, _ = SAFETY_INPUTS[name]
            if closed:
                self._raise(self.clock.now(), code, EMS_ID, f"input {name} closed")
            else:
                self._clear(self.clock.now(), code, EMS_ID, f"input {name} open")
        self.events.emit(self.clock.now(), "di_changed", None, name, detail="closed" if closed else "open")

    def safety_stop(self) -> str | None:
        """The first closed input that stops the PCS (EPO, fire, water), or None; "io_module" when the I/O
        module that carries them is lost (a safety loop that cannot be read counts as tripped)."""
        for name, (_, stops) in SAFETY_INPUTS.items():
            if stops and self.di.get(name):
                return name
        if self._contacts_stop and "io_module" in self._comm_lost:
            return "io_module"
        return None

    def set_on_grid(self, on_grid: bool) -> None:
        self.on_grid = bool(on_grid)
        # consistency calibration modes depend on grid state (bypass kernel parameter)
        self.fast.buffers.bypass_params[L.BP_ON_GRID] = 1.0 if self.on_grid else 0.0

    def command(self, name: str, value=None, lease_s: float | None = None, source: str = "local") -> None:
        """Operator / SCADA commands: one_click_shutdown, forced_charge, generator, pcs_off (True/False),
        dispatch_w (W or None), reactive_var (var or None), fault_reset, soc_calibration. Remote setpoints are
        leases: they expire after lease_s (default [dispatch] lease_s) unless renewed."""
        now = self.clock.now()
        lease = self.cfg.dispatch.lease_s if lease_s is None else float(lease_s)
        if name in ("one_click_shutdown", "forced_charge", "generator", "pcs_off"):
            self.operator[name] = bool(value)
        elif name in ("dispatch_w", "reactive_var"):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number or None, got {value!r}")
            entry = None if value is None else (float(value), self.clock.monotonic_s() + lease)
            if name == "dispatch_w":
                self._dispatch = entry
            else:
                self._reactive = entry
        elif name == "grid_operator":
            self._grid_operator(value, lease)
        elif name == "fault_reset":
            self._reset_pending = True
            self._reset_for_slow = True
        elif name == "soc_calibration":
            self._by_name["soc_calibration"].request(bool(value))
        else:
            raise ValueError(f"unknown command {name!r}")
        self.events.emit(now, "operation", None, name, detail=f"value={value!r}", user=source)

    GRID_LIMITS = ("pcs_limit_w", "feed_in_limit_w", "ramp_w_per_s")

    def _grid_operator(self, value, lease_s: float) -> None:
        """The grid operator's dispatch (001_… South Australia): {name: W or W/s ≥ 0, or None to end it} for
        pcs_limit_w, feed_in_limit_w, ramp_w_per_s, each a lease; ValueError (nothing changes) on a bad one."""
        if not isinstance(value, dict) or not value or set(value) - set(self.GRID_LIMITS) - {"lease_s"}:
            raise ValueError(f"grid_operator: an object of {', '.join(self.GRID_LIMITS)} (W, W/s, or null to end one)")
        lease = float(value.get("lease_s", lease_s))
        if not 1.0 <= lease <= 86400.0:
            raise ValueError(f"grid_operator lease_s: {lease:g} outside 1 … 86400 s")
        for k, v in value.items():
            if k != "lease_s" and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                     or not math.isfinite(v) or not 0.0 <= v <= 1e8):
                raise ValueError(f"grid_operator {k}: {v!r} is not a number 0 … 1e8 (or null)")
        until = self.clock.monotonic_s() + lease
        for k, v in value.items():
            if k == "lease_s":
                continue
            if v is None:
                self._grid_op.pop(k, None)
            else:
                self._grid_op[k] = (float(v), until)
        self._apply_ramp()

    def _grid_limits(self) -> dict[str, float]:
        """The grid operator's limits whose leases hold (an expired one is dropped, and said so)."""
        now = self.clock.monotonic_s()
        for k in [k for k, (_, until) in self._grid_op.items() if now > until]:
            del self._grid_op[k]
            self.events.emit(self.clock.now(), "lease_expired", None, f"grid_operator:{k}",
                             detail="the grid operator's limit expired")
            self._apply_ramp()
        return {k: v for k, (v, _) in self._grid_op.items()}

    def _apply_ramp(self) -> None:
        """The PCS ramp: the site's, or the grid operator's where it is slower (0 in the site file: none)."""
        own = self.cfg.pcs.ramp_w_per_s
        op = self._grid_op.get("ramp_w_per_s")
        ramp = own if op is None else (op[0] if own <= 0 else min(own, op[0]))
        if op is not None and ramp <= 0:
            ramp = 1e-6                          # a grid operator's ramp of 0: hold the setpoint
        self.fast.buffers.params[L.TP_RAMP_W_PER_S] = ramp

    # ------------------------------------------------------------------ staleness
    def fresh(self, name: str) -> float | None:
        """A reading, None past its device's comm-loss age (staleness is a value)."""
        r = self.readings[name]
        return r.value if self.clock.monotonic_s() - r.at_s <= self._ages.get(name, self.max_age_s) else None

    def bms_fresh(self) -> bool:
        return self.clock.monotonic_s() - self.bms_at_s <= self._bms_age_s

    def _supervise_comm(self, now: datetime) -> None:
        since_start = self.clock.monotonic_s() - self._started_s
        for dev, age in self.supervised.items():
            reading = DEVICE_READINGS[dev]
            ok = self.bms_fresh() if reading is None else self.fresh(reading) is not None
            code, dev_id = COMM_ALARMS[dev]
            if not ok and dev not in self._comm_lost and since_start >= age:   # one age to answer at start
                self._comm_lost.add(dev)
                self._raise(now, code, dev_id, f"no data for {age:g} s")
            elif ok and dev in self._comm_lost:
                self._comm_lost.discard(dev)
                self._clear(now, code, dev_id, "communication restored")

    # ------------------------------------------------------------------ fast loop
    def fast_tick(self, dt_ms: float) -> Commands:
        b = self.fast.buffers
        if not self.bms_fresh():
            # staleness is a value: no cell data → the core sees invalid cells and allows no current
            b.fresh[:] = 0
            self._cells_fresh = False
            b.cluster_in[:, [L.CL_V, L.CL_I, L.CL_BMS_CHG_A, L.CL_BMS_DCHG_A]] = np.nan
            b.cluster_in[:, L.CL_LINK_LOST] = 1.0      # battery_lost, not a fault of each sensor (no reset needed)
        reset, self._reset_pending = self._reset_pending, False
        sp = self.fast.tick(dt_ms, reset)
        now = None
        for ev in self.fast.events():
            now = now or self.clock.now()
            self._protection_event(now, ev)
        self._trip_events(b)
        c = self.commands
        stop = self.safety_stop()
        # a pending trip: the PCS to zero and stopped in this very tick (no ramp), so the current is down
        # before the contactors open (the core opens them once it is, or after [protection] trip_max_wait_ms)
        tripping = bool(b.results[L.TO_ANY_TRIP_PENDING])
        c.pcs_setpoint_w = 0.0 if (stop or tripping) else sp          # EPO / fire / water act in this tick too
        c.pcs_run = not (self.operator["one_click_shutdown"] or self.operator["pcs_off"] or stop or tripping
                         or self._pcs_stop_by)
        q = self._reactive
        q_var = q[0] if (q is not None and c.pcs_run and self.clock.monotonic_s() <= q[1]) else 0.0
        c.pcs_reactive_var = limit_reactive(q_var, c.pcs_setpoint_w, self.cfg.pcs)
        c.open_contactors = (tuple(int(i) for i in np.nonzero(b.cluster_prot[:, L.CLP_TRIPPED])[0])
                             if b.results[L.TO_ANY_TRIPPED] else ())
        self._set_output("trip", bool(c.open_contactors))
        c.balancing = b.balancing
        c.pv_limit_w = self._pv_limit(sp)
        return c

    def _set_output(self, name: str, energised: bool) -> None:
        outputs = self.commands.outputs
        if outputs.get(name) != energised:
            outputs[name] = energised
            self.events.emit(self.clock.now(), "do_changed", None, f"do_{name}", detail="on" if energised else "off")

    def _trip_events(self, b) -> None:
        """One 'trip' event per cluster when its trip becomes pending, and when the contactors are to open."""
        if self._prev_prot is None and not (b.results[L.TO_ANY_TRIP_PENDING] or b.results[L.TO_ANY_TRIPPED]):
            return       # the common case: nothing pending, nothing tripped, nothing was
        prot = b.cluster_prot[:, [L.CLP_TRIP_PENDING, L.CLP_TRIPPED]]
        prev = self._prev_prot if self._prev_prot is not None else np.zeros_like(prot)
        rising = np.argwhere((prot == 1) & (prev == 0))
        if len(rising):
            now = self.clock.now()
            for c, col in rising:
                faults = [r for q, r in enumerate(self.fast.table.rows) if b.prot_level[q, c] == 3 and r.trips]
                code = faults[0].fault_code if faults else None
                names = ", ".join(r.name for r in faults)
                detail = ("trip pending: currents forced to zero" if col == 0 else "trip delay elapsed: contactors open")
                self.events.emit(now, "trip", code, names, cluster_id(int(c)), detail)
        self._prev_prot = prot.copy() if prot.any() else None

    def _pv_limit(self, sp: float) -> float | None:
        """Curtail PV so the export stays within the feed-in limit once the PCS is at its setpoint; off grid,
        the PV setpoint of the off-grid strategy."""
        if self.snapshot is None:
            return None
        if not self.snapshot.on_grid:
            return self._pv_setpoint
        grid, pcs, pv = self.fresh("grid_w"), self.fresh("pcs_w"), self.fresh("pv_w")
        limit, _ = self._feed_in.limit_w(self.snapshot)
        op = self.snapshot.operator.grid_limits.get("feed_in_limit_w")
        if op is not None:                            # the grid operator's, where it is the tighter
            limit = min(limit, op)
        if grid is None or pcs is None or pv is None:
            return 0.0 if grid is None else None      # meter lost: no export can be seen, so none is allowed
        expected_grid = grid - (sp - pcs)
        excess = -limit - expected_grid
        if excess <= 0:
            return pv + (-excess)                     # headroom: PV may rise by what the limit still allows
        return max(pv - excess, 0.0)

    def _protection_event(self, now, ev) -> None:
        """Raise and clear the manual's codes as a row's level changes: warning code at level ≥ 2, fault code
        at level 3. Diffing the set per (row, cluster) clears a fault code when the level falls back to a
        warning with another code (over-current: 40000 → 30005) and never raises one code twice."""
        dev = cluster_id(ev.cluster)
        row = self.fast.table.rows[self.fast.table.index(ev.row)]
        want = {code for level, code in ((2, row.warn_code), (3, row.fault_code)) if ev.level >= level and code}
        key = (ev.row, ev.cluster)
        have = self._row_codes.get(key, set())
        for code in sorted(want - have):
            self._raise(now, code, dev, f"{ev.row}: {ev.level_name}", label=ev.row, holder=ev.row)
        for code in sorted(have - want):
            self._clear(now, code, dev, f"{ev.row}: now {ev.level_name}", holder=ev.row)
        self._row_codes[key] = want

    # ------------------------------------------------------------------ slow loop
    def build_snapshot(self) -> Snapshot:
        b = self.fast.buffers
        bms_ok = self.bms_fresh()
        soc = float(b.stack_soc[L.SOC_MEAN]) if bms_ok else None
        uv_row = self.fast.table.index("cell_under_voltage")
        dispatch = None
        if self._dispatch is not None:
            value, expires = self._dispatch
            if self.clock.monotonic_s() <= expires:
                dispatch = value
            else:
                self._dispatch = None
                self.events.emit(self.clock.now(), "lease_expired", None, "dispatch",
                                 detail="remote setpoint expired; local strategy resumes")
        pcs_w = self.fresh("pcs_w")
        chg_limit, dchg_limit = float(b.results[L.TO_CHG_LIMIT_W]), float(b.results[L.TO_DCHG_LIMIT_W])
        chg_prohibited = bool(bms_ok and b.cluster_flags[:, L.CLF_CHG_PROHIBITED].any())
        dchg_prohibited = bool(bms_ok and b.cluster_flags[:, L.CLF_DCHG_PROHIBITED].any())
        if self.group is not None:           # a master decides for the site: the group's totals
            site = self.group.site()
            pcs_w, soc = site["pcs_w"], site["soc_pct"]
            chg_limit, dchg_limit = site["charge_limit_w"], site["discharge_limit_w"]
            chg_prohibited, dchg_prohibited = chg_limit <= 0.0, dchg_limit <= 0.0
        return Snapshot(
            time=self.clock.now().astimezone(self.tz),
            grid_w=self.fresh("grid_w"), pv_w=self.fresh("pv_w"), pcs_w=pcs_w,
            dg_w=self.fresh("dg_w") if self.readings["dg_w"].at_s > -1e17 else 0.0,
            soc_pct=soc,
            charge_limit_w=chg_limit,
            discharge_limit_w=dchg_limit,
            charge_prohibited=chg_prohibited,
            discharge_prohibited=dchg_prohibited,
            undervoltage=bool(bms_ok and (b.cluster_flags[:, L.CLF_DCHG_PROHIBITED].any()
                                          or (b.prot_level[uv_row] >= 2).any())),
            on_grid=self.on_grid,
            cabinet_t_degc=self.fresh("cabinet_t_degc"),
            irradiance_w_m2=self.fresh("irradiance_w_m2"),
            charger_demand_w=self.fresh("charger_demand_w"),
            soc_bound_pct=float(b.stack_soc[L.SOC_BOUND]) if bms_ok else None,
            di=MappingProxyType(dict(self.di)),
            operator=Operator(self.operator["one_click_shutdown"] or self.safety_stop() is not None,
                              self.operator["forced_charge"], dispatch, self.operator["generator"],
                              self._reset_for_slow, MappingProxyType(self._grid_limits())),
            parallel=self.follower.view(self.clock.monotonic_s()) if self.follower is not None and self.group is None
            else None,
        )

    def slow_tick(self) -> Snapshot:
        now = self.clock.now()
        self._supervise_comm(now)
        self._estimation(now)
        self.heartbeat += 1
        if self.follower is not None:
            self._follower_alarms(now)
        if self.group is not None:
            self.group.update(self, self.clock.monotonic_s())
            self.group.alarms(self)
            for kind, i, detail in self.group.events:
                self.events.emit(now, kind, None, "parallel", detail=f"{self.group.label(i)}: {detail}")
            self.group.events.clear()
        snap = self.snapshot = self.build_snapshot()
        self._reset_for_slow = False
        slots: list[tuple[str, Decision]] = []   # in priority order
        pv_limits = []
        pcs_stop_by = None
        for s in self.strategies:
            if s.name in self.disabled:
                continue
            try:
                d = s.decide(snap)
            except Exception as exc:            # a broken strategy must not take the controller down
                log.exception("strategy %s failed; disabled", s.name)
                self.disabled[s.name] = repr(exc)
                self._raise(now, STRATEGY_FAULT_CODE, EMS_ID, f"{s.name}: {exc!r}", label=f"strategy_fault:{s.name}",
                            holder=s.name)
                continue
            if d is None:
                continue
            if d.finished:
                if s.name == "forced_charge":
                    self.operator["forced_charge"] = False
                self.events.emit(now, "strategy_finished", None, s.name, detail=d.reason)
            for name, energised in d.outputs:
                self._set_output(name, energised)
            self._strategy_alarm_events(now, s.name, set(d.alarms))
            if d.pv_limit_w is not None:
                pv_limits.append(d.pv_limit_w)
            if d.pcs_stop and pcs_stop_by is None:
                pcs_stop_by = s.name
            if s.name == "off_grid":
                self._off_grid_reason = d.reason
            slots.append((s.name, d))
        self._pv_setpoint = min(pv_limits) if pv_limits else None
        self._pcs_stop_by = pcs_stop_by
        self._write_requests(slots)
        self._peak_events(now)
        return snap

    def _peak_events(self, now) -> None:
        """Each finished peak exceedance: an event (the records keep it; stats and reports sum them)."""
        peak = self._by_name.get("peak_shaving")
        if peak is None or not peak.finished:
            return
        for ep in peak.finished:
            t = self.peak_totals
            t["count"] += 1
            t["max_excess_w"] = max(t["max_excess_w"], ep.max_excess_w)
            t["energy_wh"] += ep.energy_wh
            self.events.emit(now, "peak_exceeded", None, "peak_shaving",
                             detail=f"{ep.max_excess_w / 1000:.2f} kW above the {ep.limit_w / 1000:g} kW peak at most, "
                                    f"{ep.energy_wh:.1f} Wh above it, {ep.start:%H:%M:%S}–{ep.end:%H:%M:%S}",
                             data={"start": ep.start.isoformat(), "end": ep.end.isoformat(), "limit_w": ep.limit_w,
                                   "max_excess_w": ep.max_excess_w, "energy_wh": ep.energy_wh})
        peak.finished.clear()

    def _estimation(self, now) -> None:
        """SOH from the core's anchors; learned capacity and current offset back to the counting; a SOC
        calibration asked for when the bound is too wide (re-armed once it is back under half the width)."""
        b, e = self.fast.buffers, self.cfg.soc_estimation
        changed = self.soh.observe(b.est_state, b.soc_out, self.clock.monotonic_s())
        if changed:
            if e.capacity_learning:
                self.soh.apply(b.capacity_ah, b.est_state, e.capacity_error_pct / 100.0)
            summary = self.soh.summary()
            for c in changed:
                s = summary[c]
                if s["capacity_ah"] is not None:
                    self.events.emit(now, "soh_update", cluster_id(c), "soh",
                                     detail=f"capacity {s['capacity_ah']:.1f} Ah ± {s['capacity_sigma_ah']:.1f} "
                                            f"(SOH {s['soh_pct']:.1f} %) from {s['pairs']} anchor pairs")
        day = now.toordinal()
        if day != self._soh_day:
            self._soh_day = day
            self.soh.daily_point(day)
        bound, limit = float(b.stack_soc[L.SOC_BOUND]), e.calibration_bound_pct
        if limit > 0 and bound > limit and not self._calibration_asked and self.bms_fresh():
            self._calibration_asked = True
            self.events.emit(now, "soc_calibration_requested", None, "soc_estimation", EMS_ID,
                             detail=f"SOC bound ±{bound:.1f} % is wider than ±{limit:g} %: a full charge "
                                    + ("starts now" if e.calibration_auto else "is recommended"))
            cal = self._by_name.get("soc_calibration")
            if e.calibration_auto and cal is not None:
                cal.request(True)
        elif self._calibration_asked and bound < 0.5 * limit:
            self._calibration_asked = False

    def _strategy_alarm_events(self, now, strategy: str, active: set) -> None:
        before = self._strategy_alarms.get(strategy, set())
        for code in sorted(active - before):
            self._raise(now, code, EMS_ID, f"from {strategy}")
        for code in sorted(before - active):
            self._clear(now, code, EMS_ID, f"from {strategy}")
        self._strategy_alarms[strategy] = active

    @property
    def comm_lost(self) -> frozenset:
        """Devices whose communication is lost now (grid_meter, pcs, bms, pv, air_conditioner)."""
        return frozenset(self._comm_lost)

    def external_alarm(self, code: int, active: bool, detail: str = "", device_id: int = EMS_ID,
                       holder: str = "external") -> None:
        """An alarm owned outside the control loop (the history recorder's 5014, a device's fault word: its
        holder names it); call on the loop thread."""
        if active:
            self._raise(self.clock.now(), code, device_id, detail, holder=holder)
        else:
            self._clear(self.clock.now(), code, device_id, detail, holder=holder)

    def reconfigure(self, cfg: SiteConfig) -> tuple[list[str], list[str]]:
        """Take a validated new configuration while running: the strategy sections (LIVE_SECTIONS) at once,
        each strategy whose sections changed rebuilt with the state it had built up (a running generator keeps
        running); every other section only after a restart. Returns (sections applied, sections that need a
        restart)."""
        import dataclasses
        changed = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(self.cfg, f.name)]
        live = [n for n in changed if n in LIVE_SECTIONS]
        later = [n for n in changed if n not in LIVE_SECTIONS]
        if not live:
            return [], later
        old_cfg = self.cfg
        self.cfg = dataclasses.replace(old_cfg, **{n: getattr(cfg, n) for n in live})
        rebuilt = {s.name: s for s in build(self._as_run(self.cfg))}
        fresh_old = {s.name: s for s in build(self._as_run(old_cfg))}
        for i, s in enumerate(self.strategies):
            new = rebuilt[s.name]
            # state = what moved since the strategy was built; config-derived attributes come from the new one
            base = vars(fresh_old[s.name])
            for key, value in vars(s).items():
                if _moved(base.get(key, _MISSING), value):
                    setattr(new, key, value)
            self.strategies[i] = new
        self._by_name = {s.name: s for s in self.strategies}
        self._feed_in = self._feed_in_limit()
        self.events.emit(self.clock.now(), "parameters_applied", None, "config",
                         detail=f"applied live: {', '.join(live)}" + (f"; after restart: {', '.join(later)}"
                                                                       if later else ""))
        return live, later

    def _raise(self, now, code: int, device_id: int, detail: str, label: str | None = None,
               holder: str = "") -> None:
        """Raise an alarm once per (code, device): the active list shows `label` (default: the catalogue's
        name). Several holders may assert one code (two protection rows report 40003); it clears when the
        last lets go, so the alarm history has one raise and one clear."""
        key = (code, device_id)
        holders = self._alarm_holders.setdefault(key, set())
        first = not holders
        holders.add(holder)
        if first:
            self.status.active_alarms[key] = label or CATALOGUE.name(code)
            self.events.emit(now, "alarm_raised", code, CATALOGUE.name(code), device_id, detail)

    def _clear(self, now, code: int, device_id: int, detail: str, holder: str = "") -> None:
        key = (code, device_id)
        holders = self._alarm_holders.get(key)
        if not holders or holder not in holders:
            return
        holders.discard(holder)
        if not holders:
            del self._alarm_holders[key]
            self.status.active_alarms.pop(key, None)
            self.events.emit(now, "alarm_cleared", code, CATALOGUE.name(code), device_id, detail)

    def _write_requests(self, decisions: list[tuple[str, Decision]]) -> None:
        """Requests into the fast path's slots in priority order; each slot remembers its strategy."""
        b = self.fast.buffers
        g = self.group
        kind, value, active = (b.req_kind, b.req_value, b.req_active) if g is None else \
            (g.req_kind, g.req_value, g.req_active)
        active[:] = 0
        self._slots = []
        for name, d in decisions:
            for r in d.requests:
                k = len(self._slots)
                if k >= MAX_REQUESTS:
                    log.error("more than %d requests; %s dropped", MAX_REQUESTS, name)
                    break
                kind[k], value[k], active[k] = r.kind, r.value_w, 1
                self._slots.append((name, d))
            else:
                continue
            break
        if g is not None:
            # a master: the requests were the site's; its own cabinet gets its share, bounded by its own
            # protection and limits in its fast loop like any slave's
            own = g.plan()
            b.req_active[:] = 0
            b.req_kind[0], b.req_value[0], b.req_active[0] = L.REQ_TARGET, own, 1

    def explain(self) -> Status:
        """Which strategy set the power, and which bounds held it (read after a fast tick)."""
        b = self.fast.buffers
        active, reason, held = "idle", "no request", []
        g = self.group
        if g is None:
            target, statuses, kinds, values = b.results[L.TO_TARGET_W], b.req_status, b.req_kind, b.req_value
        else:                                # a master: the site's arbitration
            target, statuses, kinds, values = g.site_target_w, g.req_status, g.req_kind, g.req_value
        for k, (name, d) in enumerate(self._slots):
            st, kind = statuses[k], kinds[k]
            if kind in (TARGET, EQ) and st in (L.RS_APPLIED, L.RS_CLAMPED):
                active, reason = name, d.reason
                break
            if st == L.RS_APPLIED and abs(values[k] - target) < 1.0:
                held.append(name)
        if b.results[L.TO_ANY_TRIP_PENDING]:
            active, reason = "protection", "protection trip pending: battery power forced to zero"
        tripped = np.nonzero(b.cluster_prot[:, L.CLP_TRIPPED])[0]
        if len(tripped):
            held.append("protection (tripped cluster " + ", ".join(str(int(c)) for c in tripped) + ")")
        if not self.on_grid and not self.di.get("generator_feedback", False) and active != "protection":
            active, reason = "off_grid", self._off_grid_reason or "off-grid: PCS forms the grid"
        stop = self.safety_stop()
        if stop:
            active, reason = "safety_stop", f"input {stop} closed: PCS stopped"
        self.status.held_by = tuple(held)
        if active != self._last_strategy:
            self.events.emit(self.clock.now(), "strategy_changed", None, active, detail=reason)
            self._last_strategy = active
        self.status.strategy, self.status.reason = active, reason
        return self.status
