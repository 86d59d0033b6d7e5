"""A backup master ([parallel] backup_master on a slave): it follows the master like any slave, and takes
the group over when the master has been silent — its own lease from the master lapsed, then
[parallel] takeover_s more — and hands it back once the master has run again for takeover_s.

Never two masters at once: every slave takes a master's commands only while no other master's lease holds
on it (ems.parallel.slave.CommandCheck), so the backup's first commands are taken only where the master's
lease has expired, and the master's again only where the backup's has — or at once where the backup's
last command said it hands back (`parallel_cmd_release`). While the backup is in control its own unit
refuses the master's commands, and the master, seeing its units held by another master, commands nothing
(ems.parallel.group: yielding) until they are free.

In control the backup is a master: the site's strategies on its own view of the site meters (its site file
names them), the group of its [parallel] slaves (every unit but the master and itself) and its own cabinet.
"""
from __future__ import annotations

import dataclasses

from ems.parallel.block import ROLE_MASTER
from ems.parallel.group import ParallelGroup
from ems.parallel.link import ParallelLink
from ems.parallel.slave import Command
from ems.parallel.units import UnitAddress, parse_address, slave_units


class BackupMaster:
    def __init__(self, cfg, ctrl, io, now_s: float):
        par = cfg.parallel
        self.par = par
        # as a master: the site strategies' config and the group's (commands carry this unit's ID as master)
        self.cfg_master = dataclasses.replace(cfg, parallel=dataclasses.replace(par, role="master"))
        units = slave_units(par)
        host, port = parse_address(par.master_dispatch)
        self.group = ParallelGroup(self.cfg_master, units, now_s)
        self.link = ParallelLink(io, self.group, units, par.timeout_ms / 1000.0, par.modbus_unit_id,
                                 ctrl.clock.monotonic_s, watch=UnitAddress(par.master_id, host, port))
        self.state = "standby"                 # standby | acting | handing_back
        self.master_ok_since: float | None = None
        self._last_beat: int | None = None
        self._release_cycle = 0

    def tick(self, ctrl, dispatch, now_s: float) -> None:
        """Before the slow tick: take over, hand back, or stand down."""
        f = ctrl.follower
        if self.state == "standby":
            if f.lapsed(now_s) and now_s - f.expires_s >= self.par.takeover_s:
                self._take_over(ctrl, dispatch, now_s)
        elif self.state == "acting":
            if self._master_running(now_s):
                self.master_ok_since = self.master_ok_since if self.master_ok_since is not None else now_s
            else:
                self.master_ok_since = None
            if self.master_ok_since is not None and now_s - self.master_ok_since >= self.par.takeover_s:
                self.state, self.group.release = "handing_back", True
                self._release_cycle = self.link.cycles
                ctrl.events.emit(ctrl.clock.now(), "parallel_hand_back", None, "parallel",
                                 detail=f"master {self.par.master_id} has run for {self.par.takeover_s:g} s: the units "
                                        "are handed back with this cycle's commands")
        elif self.state == "handing_back" and self.link.cycles >= self._release_cycle + 1:
            self._stand_down(ctrl, dispatch)

    def _master_running(self, now_s: float) -> bool:
        """The master answers as the master and its heartbeat moves (a stuck EMS's does not)."""
        w = self.group.watch
        if w is None or not w.ok or not w.values or now_s - w.at_s > 3.0:
            return False
        v = w.values
        beat = int(v.get("unit_heartbeat") or 0)
        moved = self._last_beat is not None and beat != self._last_beat
        self._last_beat = beat
        return moved and int(v.get("parallel_role") or 0) == ROLE_MASTER and int(v.get("parallel_id") or 0) == \
            self.par.master_id

    def _take_over(self, ctrl, dispatch, now_s: float) -> None:
        self.state, self.group.release, self.master_ok_since, self._last_beat = "acting", False, None, None
        self.group.started_s = now_s            # its units get unit_lost_s from now to answer
        if dispatch is not None:
            dispatch.parallel.acting = True
        ctrl.take_over(self.cfg_master, self.group)
        ctrl.events.emit(ctrl.clock.now(), "parallel_take_over", None, "parallel",
                         detail=f"master {self.par.master_id} silent for its lease and {self.par.takeover_s:g} s: "
                                f"unit {self.par.unit_id} (backup master) takes the group")

    def _stand_down(self, ctrl, dispatch) -> None:
        self.state, self.group.release = "standby", False
        # its own cabinet holds its last share for a lease, until the master's first command (no dip to standby)
        own = float(self.group.out_w[0])
        p = self.par
        ctrl.follower.take(Command(p.unit_id, p.unit_id, p.units, self.group.seq, own, p.lease_s, 0.0, 0.0, 0.0,
                                   "self"), ctrl.clock.monotonic_s())
        ctrl.stand_down()
        if dispatch is not None:
            dispatch.parallel.acting = False
        ctrl.events.emit(ctrl.clock.now(), "parallel_stand_down", None, "parallel",
                         detail=f"unit {self.par.unit_id} follows master {self.par.master_id} again")
