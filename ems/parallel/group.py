"""The master's view of the parallel group (control thread): every unit's last state, the site's totals, the
site-level arbitration of the strategies' requests, the distribution over the units, and the alarms.

Unit 0 is the master's own cabinet (its state from its own controller); units 1 … are the slaves in the
order of the site file. The link (ems.parallel.link, I/O thread) hands in each cycle's results with
`take_cycle`; `plan` (slow tick) turns the site's requests into one setpoint per unit:

1. the site limits are the sums of the available units' charge and discharge limits;
2. the requests are narrowed against them in priority order (the same kernel as a single cabinet's);
3. the site target is shared in proportion to each unit's available energy within its limits (the
   distribution kernel, water-filling: what a capped unit cannot take goes to the others);
4. the master's own share goes to its own fast loop, the others' to the link as leases.

A unit is available when its last transaction in the latest cycle succeeded, it reports itself available
(BMS and PCS alive, no trip, PCS running, no safety input) and its IDs agree; a unit that is not gets no
share from the next plan on, which the master makes at once when a cycle shows a change (not only at the
next slow tick). A unit silent for [parallel] unit_lost_s raises 56, an ID conflict 57, both with the unit's
device ID (0x01000000 + its parallel ID).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ems._core import arbitrate as arb_k
from ems._core import layout as L
from ems.parallel.block import AVAILABLE, FLAG_NAMES, ROLE_SLAVE, STATE_FOLLOWING, STATE_NAMES
from ems.parallel.status import unit_state
from ems.parallel.units import UnitAddress, unit_device_id

PARALLEL_COMM_LOST, PARALLEL_ID_FAULT = 56, 57      # the manual's EMS codes (ems/records/alarm_codes.toml)


@dataclass
class Outcome:
    """One unit's transaction in a cycle (from the link)."""
    ok: bool
    values: dict | None = None        # the status block, when read
    error: str = ""
    refused: bool = False             # the unit answered with an exception (its reason in error)
    at_s: float = 0.0


@dataclass(frozen=True)
class CommandPlan:
    """One cycle's commands to the slaves, as arrays (index k: slave k, unit index k + 1)."""
    master_id: int
    units: int
    seq: int
    lease_s: float
    release: bool
    ids: np.ndarray
    setpoint_w: np.ndarray
    share: np.ndarray
    fallback_charge_w: np.ndarray
    fallback_discharge_w: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def command(self, k: int) -> dict:
        """Slave k's command block values (ems.parallel.block.command_block names)."""
        return {"parallel_cmd_master_id": self.master_id, "parallel_cmd_unit_id": int(self.ids[k]),
                "parallel_cmd_units": self.units, "parallel_cmd_seq": self.seq,
                "parallel_cmd_setpoint_w": round(float(self.setpoint_w[k])),
                "parallel_cmd_lease_s": round(self.lease_s), "parallel_cmd_share_ppm": round(float(self.share[k]) * 1e6),
                "parallel_cmd_fallback_charge_w": round(float(self.fallback_charge_w[k])),
                "parallel_cmd_fallback_discharge_w": round(float(self.fallback_discharge_w[k])),
                "parallel_cmd_release": int(self.release)}


@dataclass
class UnitView:
    address: UnitAddress | None       # None: the master itself
    state: dict = field(default_factory=dict)
    ok: bool = False
    seen_s: float = -1e18             # last good transaction (monotonic)
    error: str = "not contacted yet"
    id_fault: str = ""
    lost: bool = False
    held_by: int = 0                  # another master holds the unit now (a backup master in control)
    id_key: tuple = ()                # the IDs its id_fault was worked out from


class ParallelGroup:
    def __init__(self, cfg, units: list[UnitAddress], now_s: float, max_requests: int = 32):
        self.cfg, self.par = cfg, cfg.parallel
        self.units = [UnitView(None)] + [UnitView(u) for u in units]
        self.ids = np.array([self.par.unit_id] + [u.id for u in units], np.int64)
        M = len(self.units)
        self.M = M
        self.chg_w = np.zeros(M)
        self.dchg_w = np.zeros(M)
        self.e_chg = np.zeros(M)
        self.e_dchg = np.zeros(M)
        self.online = np.zeros(M, np.uint8)
        self.rated_w = np.zeros(M)            # each unit's PCS rating as it reports it (0: not seen yet)
        self.answering = np.zeros(M, np.uint8)   # its last transaction succeeded
        self.following = np.zeros(M, bool)       # it reports following a master
        self.pcs_w = np.full(M, np.nan)          # its reported PCS power (NaN: not known)
        self.soc_pct = np.full(M, np.nan)
        self.out_w = np.zeros(M)
        self.work = np.zeros(M, np.uint8)
        self.req_kind = np.zeros(max_requests, np.int8)
        self.req_value = np.zeros(max_requests)
        self.req_active = np.zeros(max_requests, np.uint8)
        self.req_status = np.zeros(max_requests, np.uint8)
        self._hard_active = np.zeros(max_requests, np.uint8)
        self._hard_status = np.zeros(max_requests, np.uint8)
        self.interval = np.zeros(2)
        self.window = np.zeros(2)
        self.site_target_w = 0.0
        self.unallocated_w = 0.0
        self.seq = 0
        self.started_s = now_s
        self.cycles = 0
        self._lock = threading.Lock()
        self._pending: list[Outcome | None] | None = None
        self.release = False                  # a backup handing back: the next commands free the units at once
        self.yielding_to = 0                  # another master holds units: this one commands nothing
        self._yield_was = 0
        self.watch: Outcome | None = None     # a backup: the master's own status block, read each cycle
        self.changed = threading.Event()      # set by the link when a cycle moved a unit in or out
        self.events: list[tuple[str, int, str]] = []     # (kind, unit index, detail) since the last slow tick

    # ------------------------------------------------------------------ from the link (I/O thread)
    def take_cycle(self, outcomes: list[Outcome | None], watch: Outcome | None = None) -> None:
        """A finished cycle: outcome per slave (index 1 …; None: not attempted); a backup's read of its master."""
        with self._lock:
            self._pending = outcomes
            if watch is not None:
                self.watch = watch
            before = self.online[1:].copy()
        now_ok = np.array([o is not None and o.ok and self._usable(i + 1, o.values) for i, o in enumerate(outcomes)],
                          np.uint8)
        if len(now_ok) and (now_ok != before).any():
            self.changed.set()

    def _usable(self, i: int, v: dict | None) -> bool:
        return bool(v) and (int(v.get("unit_flags") or 0) >> AVAILABLE) & 1 == 1 and not self._id_problem(i, v)

    def _id_problem(self, i: int, v: dict) -> str:
        want = int(self.ids[i])
        got = int(v.get("parallel_id") or 0)
        if got == 0 and not int(v.get("unit_heartbeat") or 0):
            return ""                        # starting: its status not published yet (and not available either)
        if got != want:
            return f"answers as unit {got}, configured as unit {want}"
        if int(v.get("parallel_role") or 0) != ROLE_SLAVE:
            return "is not configured as a slave ([parallel] role)"
        if int(v.get("parallel_units") or 0) != self.par.units:
            return f"counts {int(v.get('parallel_units') or 0)} units, the master {self.par.units}"
        return ""

    # ------------------------------------------------------------------ control thread
    def update(self, ctrl, now_s: float) -> None:
        """The latest cycle's results and the master's own state into the arrays (slow tick, or at once
        after a change); alarms and events for units that came or went."""
        with self._lock:
            pending, self._pending = self._pending, None
        self.changed.clear()
        own = self.units[0]
        own.state, own.ok, own.seen_s, own.error = unit_state(ctrl), True, now_s, ""
        if pending is not None:
            self.cycles += 1
            for k, o in enumerate(pending):
                if o is not None:
                    self._take(k + 1, o)
        self.yielding_to = next((u.held_by for u in self.units if u.held_by), 0)
        if self.yielding_to != self._yield_was:
            self.events.append(("parallel_yield", 0, f"master {self.yielding_to} holds the units: this one commands "
                                "nothing until they are free" if self.yielding_to else "the units take this master's "
                                "commands again"))
            self._yield_was = self.yielding_to
        max_age_s = self.cfg.loops.slow_period_ms / 1000.0 * 2 + self.par.timeout_ms / 1000
        nan = float("nan")
        for i, u in enumerate(self.units):
            s = u.state
            answering = bool(u.ok and s)
            avail = bool(answering and now_s - u.seen_s <= max_age_s
                         and (int(s.get("unit_flags") or 0) >> AVAILABLE) & 1 and not u.id_fault)
            was = bool(self.online[i])
            self.online[i] = avail
            self.answering[i] = answering
            if s:
                self.rated_w[i] = float(s.get("unit_rated_power_w") or 0.0)
                pcs, soc = s.get("unit_pcs_power_w"), s.get("unit_soc_pct")
                self.pcs_w[i] = nan if pcs is None else pcs
                self.soc_pct[i] = nan if soc is None else soc
                self.following[i] = int(s.get("parallel_state") or 0) == STATE_FOLLOWING
            if avail:
                self.chg_w[i] = float(s.get("unit_charge_max_w") or 0.0)
                self.dchg_w[i] = float(s.get("unit_discharge_max_w") or 0.0)
                self.e_chg[i] = float(s.get("unit_charge_energy_wh") or 0.0)
                self.e_dchg[i] = float(s.get("unit_discharge_energy_wh") or 0.0)
            else:
                self.chg_w[i] = self.dchg_w[i] = self.e_chg[i] = self.e_dchg[i] = 0.0
            if was != avail and i:
                why = "available" if avail else (u.id_fault or (u.error if not u.ok else self._flags_text(s)))
                self.events.append(("parallel_unit_in" if avail else "parallel_unit_out", i, why))
            lost = i > 0 and now_s - max(u.seen_s, self.started_s) > self.par.unit_lost_s
            if lost != u.lost:
                u.lost = lost
                self._alarm(ctrl, PARALLEL_COMM_LOST, i, lost,
                            f"no answer for {self.par.unit_lost_s:g} s: {u.error}" if lost else "answering again")

    def _take(self, i: int, o: Outcome) -> None:
        u = self.units[i]
        if o.ok:
            u.ok, u.state, u.seen_s, u.error, u.held_by = True, o.values or {}, o.at_s, "", 0
            v = u.state
            key = (v.get("parallel_id"), v.get("parallel_role"), v.get("parallel_units"), bool(v.get("unit_heartbeat")))
            if key != u.id_key:              # the IDs rarely change: checked when they do
                u.id_key, u.id_fault = key, self._id_problem(i, v)
            return
        u.ok, u.error, u.held_by, u.id_key = False, o.error, 0, ()
        if o.refused and o.values:               # the unit refused the command: its own view of itself
            other = int(o.values.get("parallel_following_id") or 0)
            u.id_fault = self._id_problem(i, o.values)
            if not u.id_fault and other not in (0, self.par.unit_id):
                u.held_by, u.seen_s, u.state = other, o.at_s, o.values   # alive, another master's: no alarm
                u.error = f"held by master {other}"
            elif not u.id_fault:
                u.id_fault = f"refused the command: {o.error}"
        elif o.refused:
            u.id_fault = f"refused the command: {o.error}"

    def alarms(self, ctrl) -> None:
        """57 per unit while its IDs disagree (slow tick)."""
        for i, u in enumerate(self.units[1:], 1):
            active = bool(u.id_fault)
            key = (PARALLEL_ID_FAULT, unit_device_id(int(self.ids[i])))
            if active != (key in ctrl.status.active_alarms):
                self._alarm(ctrl, PARALLEL_ID_FAULT, i, active, u.id_fault if active else "IDs agree again")

    def _alarm(self, ctrl, code: int, i: int, active: bool, detail: str) -> None:
        ctrl.external_alarm(code, active, f"{self.label(i)}: {detail}", unit_device_id(int(self.ids[i])),
                            holder="parallel")

    def label(self, i: int) -> str:
        u = self.units[i]
        return f"unit {int(self.ids[i])}" + (f" ({u.address.host}:{u.address.port})" if u.address else " (master)")

    @staticmethod
    def _flags_text(s: dict) -> str:
        flags = int(s.get("unit_flags") or 0) if s else 0
        bad = [FLAG_NAMES[b] for b in range(1, len(FLAG_NAMES)) if flags >> b & 1]
        return "not available: " + (", ".join(bad) or "reported unavailable")

    # ------------------------------------------------------------------ site totals
    def site(self) -> dict:
        """Site totals over the units that answered: PCS power (None when no unit's is known), SOC
        weighted by energy, limits and energies of the available units, the rating of the units seen."""
        ans = self.answering.astype(bool)
        told = ans & self.online.astype(bool) & self.following
        told[0] = False                          # the master's own: its measured power
        # a following unit counts with what it was told (its reported power is up to a cycle old); a unit whose
        # PCS is not known is out of the distribution (its own loop holds it at zero): the site's PCS power is
        # the units' that are known, unknown only when none is
        measured = ans & ~told & ~np.isnan(self.pcs_w)
        known = int(told.sum() + measured.sum())
        pcs = float(self.out_w[told].sum() + self.pcs_w[measured].sum())
        with_soc = self.online.astype(bool) & ans & ~np.isnan(self.soc_pct)
        e = (self.e_chg + self.e_dchg)[with_soc]
        e_sum = float(e.sum())
        soc = float((self.soc_pct[with_soc] * e).sum() / e_sum) if e_sum > 0 else None
        rated = float(self.rated_w[ans].sum())
        return {"pcs_w": pcs if known else None, "soc_pct": soc,
                "charge_limit_w": float(self.chg_w.sum()), "discharge_limit_w": float(self.dchg_w.sum()),
                "energy_chg_wh": float(self.e_chg.sum()), "energy_dchg_wh": float(self.e_dchg.sum()),
                "rated_w": rated, "online": int(self.online.sum()), "units": self.M}

    # ------------------------------------------------------------------ the plan
    def plan(self) -> float:
        """Site arbitration and distribution of the requests in req_*; returns the master's own share (W)."""
        chg, dchg = float(self.chg_w.sum()), float(self.dchg_w.sum())
        self.site_target_w = arb_k.arbitrate(self.req_kind, self.req_value, self.req_active, chg, dchg,
                                             self.req_status, self.interval)
        # the hard bounds alone (no strategy's wish): the window each slave's fallback gets its share of
        np.copyto(self._hard_active, self.req_active)
        self._hard_active[self.req_kind == L.REQ_TARGET] = 0
        arb_k.arbitrate(self.req_kind, self.req_value, self._hard_active, chg, dchg, self._hard_status, self.window)
        self.redistribute()
        return float(self.out_w[0])

    def redistribute(self) -> None:
        self.out_w[:] = 0.0
        if self.yielding_to:
            # another master holds the group: this one commands each unit what it does now, so the first command
            # a unit takes once it is free changes nothing (a bumpless transfer), and its own cabinet idles
            for i, u in enumerate(self.units[1:], 1):
                self.out_w[i] = float(u.state.get("unit_setpoint_w") or 0.0) if u.state else 0.0
            self.unallocated_w = 0.0
        elif self.online.any():
            self.unallocated_w = arb_k.distribute(self.site_target_w, self.chg_w, self.dchg_w, self.e_chg,
                                                  self.e_dchg, self.online, self.out_w, self.work)
        else:
            self.unallocated_w = self.site_target_w
        self.seq = (self.seq + 1) & 0xFFFF

    def shares(self) -> np.ndarray:
        """Each unit's fraction of the site power (by energy when the site is idle)."""
        total = float(self.out_w.sum())
        if abs(total) > 1.0:
            return np.clip(self.out_w / total, 0.0, 1.0)
        e = (self.e_chg + self.e_dchg) * self.online
        return e / e.sum() if e.sum() > 0 else np.zeros(self.M)

    def command_plan(self) -> CommandPlan:
        """This cycle's commands as arrays (the control thread's part: microseconds at 1000 units; the link
        expands them per unit on the I/O thread)."""
        shares = self.shares()[1:]
        rated = self.rated_w[1:]
        sp = np.where(rated > 0, np.clip(self.out_w[1:], -rated, rated), self.out_w[1:])
        lo, hi = float(self.window[0]), float(self.window[1])
        return CommandPlan(self.par.unit_id, self.par.units, self.seq, self.par.lease_s, self.release,
                           self.ids[1:].copy(), sp, shares.copy(), np.minimum(max(-lo, 0.0) * shares, 1e7),
                           np.minimum(max(hi, 0.0) * shares, 1e7))

    def commands(self) -> list[dict]:
        """The command block's values for each slave (index 0 of the result is unit 1)."""
        plan = self.command_plan()
        return [plan.command(k) for k in range(len(plan))]

    def rows(self) -> list[dict]:
        """The group for the status views and the API: each unit, its share, its state."""
        shares = self.shares()
        out = []
        for i, u in enumerate(self.units):
            s = u.state or {}
            state = s.get("parallel_state")
            out.append({"id": int(self.ids[i]), "address": f"{u.address.host}:{u.address.port}" if u.address else "master",
                        "online": bool(self.online[i]), "answering": u.ok,
                        "state": STATE_NAMES[int(state)] if state is not None and 0 <= int(state) < len(STATE_NAMES)
                        else "unknown", "share_pct": round(float(shares[i]) * 100, 2),
                        "setpoint_w": round(float(self.out_w[i])), "pcs_w": s.get("unit_pcs_power_w"),
                        "soc_pct": s.get("unit_soc_pct"), "charge_max_w": s.get("unit_charge_max_w"),
                        "discharge_max_w": s.get("unit_discharge_max_w"), "error": u.error, "id_fault": u.id_fault,
                        "lost": u.lost, "held_by": u.held_by})
        return out
