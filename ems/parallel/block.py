"""The parallel block of the dispatch server's native map, encoded and decoded from the map's profile
(drivers/modbus/ems/ems_dispatch.toml: the one home of the addresses, types and ranges).

COMMAND (holding 100 …, master → slave) is written whole in one request; STATUS (holding 120 …, slave →
master) is read whole. The master does both in one FC23 (read/write multiple registers) per unit and cycle.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ems.comm.profiles import shipped_profiles
from ems.comm.registers import Register

# unit_flags bits
AVAILABLE, BMS_LOST, PCS_LOST, TRIP, PCS_STOPPED, SAFETY_STOP, CHARGE_PROHIBITED, DISCHARGE_PROHIBITED = range(8)
FLAG_NAMES = ("available", "bms_lost", "pcs_lost", "trip", "pcs_stopped", "safety_stop", "charge_prohibited",
              "discharge_prohibited")
# parallel_role and parallel_state values
ROLE_SINGLE, ROLE_MASTER, ROLE_SLAVE = 0, 1, 2
ROLES = {"master": ROLE_MASTER, "slave": ROLE_SLAVE}
STATE_SINGLE, STATE_FOLLOWING, STATE_FALLBACK, STATE_WAITING, STATE_ID_FAULT, STATE_MASTER = range(6)
STATE_NAMES = ("single", "following", "fallback", "waiting", "id_fault", "master")


@dataclass(frozen=True)
class Block:
    """A run of registers written or read as one: `encode(values)` → words, `decode(words)` → values."""
    registers: tuple[Register, ...]

    @property
    def address(self) -> int:
        return self.registers[0].address

    @property
    def count(self) -> int:
        last = self.registers[-1]
        return last.address + last.count - self.address

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.registers)

    def encode(self, values: dict) -> list[int]:
        """Words for the whole block; every register's value is needed (range-checked where writable)."""
        words = [0] * self.count
        for r in self.registers:
            v = values[r.name]
            w = r.encode(v) if r.writable else r.to_words(v)
            words[r.address - self.address:r.address - self.address + r.count] = w
        return words

    def decode(self, words: list[int]) -> dict:
        if len(words) < self.count:
            raise ValueError(f"parallel block at {self.address}: {len(words)} words, {self.count} needed")
        return {r.name: r.decode(words[r.address - self.address:r.address - self.address + r.count])
                for r in self.registers}


def _block(prefix_start: int, prefix_end: int) -> Block:
    regs = sorted((r for r in shipped_profiles()["EMS-DISPATCH"].registers.values()
                   if r.function == 3 and prefix_start <= r.address < prefix_end), key=lambda r: r.address)
    return Block(tuple(regs))


@lru_cache(maxsize=1)
def command_block() -> Block:
    return _block(100, 120)


@lru_cache(maxsize=1)
def status_block() -> Block:
    return _block(120, 200)


def in_command_block(address: int, count: int) -> bool:
    """Whether a write touches the command block at all."""
    b = command_block()
    return address < b.address + b.count and address + count > b.address
