"""The parallel block of the dispatch server's native map, encoded and decoded from the map's profile
(drivers/modbus/ems/ems_dispatch.toml: the one home of the addresses, types and ranges).

COMMAND (holding 100 …, master → slave) is written whole in one request; STATUS (holding 120 …, slave →
master) is read whole. The master does both in one FC23 (read/write multiple registers) per unit and cycle.
"""
from __future__ import annotations

import struct
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
STATE_SINGLE, STATE_FOLLOWING, STATE_FALLBACK, STATE_WAITING, STATE_ID_FAULT, STATE_MASTER, STATE_ACTING = range(7)
STATE_NAMES = ("single", "following", "fallback", "waiting", "id_fault", "master", "acting")


_CODES = {"u16": "H", "s16": "h", "u32": "I", "s32": "i"}


class Block:
    """A run of registers written or read as one: `encode(values)` → words, `decode(words)` → values. One
    struct format for the whole run (the master codes 1000 units' blocks per cycle; a register at a time
    took longer than the transactions); the registers' scale, offset, invalid marker and write range apply."""

    def __init__(self, registers: tuple[Register, ...]):
        self.registers = registers
        self.address = registers[0].address
        last = registers[-1]
        self.count = last.address + last.count - self.address
        self.names = tuple(r.name for r in registers)
        fmt, at = ">", self.address
        for r in registers:
            if r.type not in _CODES or r.word_order != "big":
                raise ValueError(f"{r.name}: the parallel block takes big-endian integer registers only")
            fmt += "H" * (r.address - at) + _CODES[r.type]       # a gap reads as filler words
            at = r.address + r.count
        self._fmt = struct.Struct(fmt)
        self._slots, k, at = [], 0, self.address
        for r in registers:
            k += r.address - at
            self._slots.append(k)
            k += 1
            at = r.address + r.count
        self._words = struct.Struct(f">{self.count}H")

    def encode(self, values: dict) -> list[int]:
        """Words for the whole block; every register's value is needed (range-checked where writable)."""
        fields = [0] * len(self._fmt.format[1:])
        for r, k in zip(self.registers, self._slots):
            v = values[r.name]
            if r.writable:
                r.check(v)
            if v is None:
                if r.invalid is None:
                    raise ValueError(f"{r.name}: no invalid marker to send for 'not available'")
                raw = int(r.invalid)
            else:
                raw = int(round((v - r.offset) / r.scale))
            fields[k] = raw
        try:
            return list(self._words.unpack(self._fmt.pack(*fields)))
        except struct.error as exc:
            raise ValueError(f"parallel block at {self.address}: a value does not fit its type ({exc})") from None

    def decode(self, words: list[int]) -> dict:
        if len(words) < self.count:
            raise ValueError(f"parallel block at {self.address}: {len(words)} words, {self.count} needed")
        raw = self._fmt.unpack(self._words.pack(*words[:self.count]))
        out = {}
        for r, k in zip(self.registers, self._slots):
            x = raw[k]
            out[r.name] = None if r.invalid is not None and x == r.invalid else x * r.scale + r.offset
        return out


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
