"""A slave's side of parallel operation: the master's commands checked (I/O thread, inside the dispatch
server's write hook), then held as a lease (control thread) that the `parallel` strategy follows.

A command is refused (Modbus exception, nothing changes) when:
- this unit is not a slave, or the writer is not its [parallel] master_address (ILLEGAL_FUNCTION);
- the write is not the whole command block in one request (ILLEGAL_ADDRESS);
- it names another master ID, another unit ID or another unit count than this unit's (ILLEGAL_VALUE, and
  the ID conflict is alarmed here as 57: the master alarms it on its side when it sees the refusal);
- the setpoint is beyond ± this unit's PCS rating (ILLEGAL_VALUE).

When the lease lapses (the master silent for `parallel_cmd_lease_s`, or for the slave's own [parallel]
lease_s after its start) the slave raises 56 and takes its fallback; the next valid command clears 56 and
the slave follows again, without a reset.

With a backup master ([parallel] backup_id): its commands are taken from its backup_address too, but never
while the other master's lease holds here — the interlock is this check's own record of which master
holds the unit until when (the I/O thread takes every write in turn, so two masters cannot both pass it).
A refused master gets ILLEGAL_FUNCTION and reads `parallel_following_id` to see who holds the unit. A
backup handing back sends a last command with `parallel_cmd_release = 1`: the unit is free for the master
at once (it keeps the backup's setpoint until the master's first command or the lease's end).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pymodbus.constants import ExcCodes

from ems.comm.modbus_server import WriteRefused
from ems.comm.net import normalise_address
from ems.parallel.block import command_block

CONFLICT_HOLD_LEASES = 3      # 57 clears this many leases after the last conflicting command (or at a valid one)


@dataclass(frozen=True)
class Command:
    master_id: int
    unit_id: int
    units: int
    seq: int
    setpoint_w: float
    lease_s: float
    share: float                  # 0 … 1
    fallback_charge_w: float      # magnitudes, W
    fallback_discharge_w: float
    client: str
    release: bool = False         # a backup's last command: the unit is free for the master at once


class IdConflict(WriteRefused):
    """A command for another unit, master or group size: refused, and alarmed (57) on this unit."""


class CommandCheck:
    """The write rules of the command block (called by the dispatch server's write hook)."""

    def __init__(self, cfg, rated_w: float, now=time.monotonic):
        self.par = cfg.parallel
        self.slave = self.par.enabled and self.par.role == "slave"
        self.master = normalise_address(self.par.master_address)
        self.backup = normalise_address(self.par.backup_address) if self.par.backup_id else None
        self.rated_w = rated_w
        self.now = now
        self.holder: tuple[int, float] | None = None    # (master ID, lease end): who may command this unit now
        self.acting = False           # this unit is the backup master in control: it takes no command itself

    def check(self, address: int, words: list[int], client: str | None) -> Command:
        par, block = self.par, command_block()
        if not self.slave:
            why = "parallel operation is off on this unit" if not par.enabled else "this unit is the master"
            raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, f"parallel command refused: {why}")
        source = normalise_address(client)
        if source != self.master and (self.backup is None or source != self.backup):
            raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, f"parallel command from {client}: only the master "
                               f"{par.master_address} ([parallel] master_address)"
                               + (f" or the backup {par.backup_address}" if self.backup else "") + " may write it")
        if self.acting:
            raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, f"unit {par.unit_id} is the backup master in control: "
                               "it hands back once the master has run again for [parallel] takeover_s")
        if address != block.address or len(words) != block.count:
            raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"parallel command: write all {block.count} registers from "
                               f"{block.address} in one request")
        try:
            v = block.decode(words)
            for r in block.registers:
                if v[r.name] is None or not r.min <= v[r.name] <= r.max:
                    raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"{r.name}: {v[r.name]} outside {r.min:g} … {r.max:g}")
        except ValueError as exc:
            raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"parallel command: {exc}") from None
        mid = int(v["parallel_cmd_master_id"])
        expected = ({par.master_id} if source == self.master else set()) | \
            ({par.backup_id} if self.backup is not None and source == self.backup else set())
        if mid not in expected:        # (master and backup may share an address on a desk: either ID then)
            raise IdConflict(ExcCodes.ILLEGAL_VALUE, f"command from master ID {mid} at {client}; this unit takes "
                             f"commands there from ID {' or '.join(str(e) for e in sorted(expected))}")
        if v["parallel_cmd_unit_id"] != par.unit_id:
            raise IdConflict(ExcCodes.ILLEGAL_VALUE, f"command for unit ID {v['parallel_cmd_unit_id']:g} reached unit "
                             f"ID {par.unit_id}: two units share an ID or an address is wrong")
        if v["parallel_cmd_units"] != par.units:
            raise IdConflict(ExcCodes.ILLEGAL_VALUE, f"the master counts {v['parallel_cmd_units']:g} units, this unit "
                             f"{par.units} ([parallel] units)")
        sp = v["parallel_cmd_setpoint_w"]
        if abs(sp) > self.rated_w:
            raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"parallel_cmd_setpoint_w: {sp:g} outside ±{self.rated_w:g} "
                               "(this unit's PCS rating)")
        now, held = self.now(), self.holder
        if held is not None and held[0] != mid and now < held[1]:
            raise WriteRefused(ExcCodes.ILLEGAL_FUNCTION, f"unit {par.unit_id} follows master {held[0]} for "
                               f"{held[1] - now:.1f} s more: a second master is refused (never two at once)")
        release = bool(v["parallel_cmd_release"])
        self.holder = None if release else (mid, now + float(v["parallel_cmd_lease_s"]))
        return Command(mid, int(v["parallel_cmd_unit_id"]), int(v["parallel_cmd_units"]),
                       int(v["parallel_cmd_seq"]), float(sp), float(v["parallel_cmd_lease_s"]),
                       v["parallel_cmd_share_ppm"] / 1e6, float(v["parallel_cmd_fallback_charge_w"]),
                       float(v["parallel_cmd_fallback_discharge_w"]), client or "", release)


@dataclass(frozen=True)
class FollowView:
    """What the `parallel` strategy sees in the snapshot."""
    state: str                    # following | fallback | waiting | id_fault
    setpoint_w: float | None      # the master's setpoint while its lease holds
    fallback: str                 # standby | self_use
    share: float
    fallback_charge_w: float
    fallback_discharge_w: float
    reason: str = ""


class Follower:
    """The master's lease on this unit (control thread)."""

    def __init__(self, par, now_s: float):
        self.par = par
        self.cmd: Command | None = None
        self.expires_s = now_s + par.lease_s       # one lease to hear from the master after the start
        self.conflict_reason = ""
        self.conflict_until_s = -1e18
        self.commands = 0
        self.conflicts = 0

    def take(self, cmd: Command, now_s: float) -> None:
        self.cmd = cmd
        self.expires_s = now_s + cmd.lease_s
        self.commands += 1
        self.conflict_until_s = -1e18              # a valid command: the conflict is over

    def conflict(self, reason: str, now_s: float) -> None:
        self.conflicts += 1
        self.conflict_reason = reason
        self.conflict_until_s = now_s + CONFLICT_HOLD_LEASES * self.par.lease_s

    def conflicted(self, now_s: float) -> bool:
        return now_s < self.conflict_until_s

    def lapsed(self, now_s: float) -> bool:
        return now_s > self.expires_s

    def following_id(self, now_s: float) -> int:
        """The master whose lease holds now (0: none)."""
        return self.cmd.master_id if self.cmd is not None and not self.lapsed(now_s) else 0

    def state(self, now_s: float) -> str:
        if self.conflicted(now_s) and (self.cmd is None or self.lapsed(now_s)):
            return "id_fault"
        if not self.lapsed(now_s):
            return "following" if self.cmd is not None else "waiting"
        return "fallback"

    def view(self, now_s: float) -> FollowView:
        st, c = self.state(now_s), self.cmd
        share = c.share if c is not None else 0.0
        chg = c.fallback_charge_w if c is not None else 0.0
        dchg = c.fallback_discharge_w if c is not None else 0.0
        if st == "following":
            who = "backup master" if self.par.backup_id and c.master_id == self.par.backup_id else "master"
            return FollowView(st, c.setpoint_w, self.par.fallback, share, chg, dchg,
                              f"parallel: unit {self.par.unit_id} following {who} {c.master_id}")
        if st == "waiting":
            return FollowView(st, None, self.par.fallback, 0.0, 0.0, 0.0, "parallel: waiting for the master")
        why = self.conflict_reason if st == "id_fault" else "the master's lease lapsed"
        return FollowView(st, None, self.par.fallback, share, chg, dchg, f"parallel: {why}")
