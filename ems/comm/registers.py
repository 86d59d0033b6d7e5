"""Modbus register codec: raw 16-bit words ⇄ engineering values, as a device profile describes them.

value = raw × scale (+ offset); 32-bit types span two registers in the profile's word order ("big": high
word first, the Modbus convention; "little": low word first, common on vendor maps). A raw value equal to
the register's invalid marker means "not available" and decodes to None (staleness as a value).
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

TYPES = {            # name → (registers, struct format of the big-endian bytes)
    "u16": (1, ">H"),
    "s16": (1, ">h"),
    "u32": (2, ">I"),
    "s32": (2, ">i"),
    "float32": (2, ">f"),
}
WORD_ORDERS = ("big", "little")


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    function: int                 # 3 holding, 4 input
    type: str
    unit: str
    scale: float = 1.0
    offset: float = 0.0
    word_order: str = "big"
    group: str = "slow"
    max_age_s: float = 10.0
    invalid: int | float | None = None
    writable: bool = False
    min: float | None = None      # write range, engineering units
    max: float | None = None
    line: int = 0                 # where the profile defines it (for error messages)
    description: str = ""

    @property
    def count(self) -> int:
        return TYPES[self.type][0]

    def _raw_from_words(self, words) -> int | float:
        if len(words) != self.count:
            raise ValueError(f"{self.name}: expected {self.count} register(s), got {len(words)}")
        if any(not (0 <= w <= 0xFFFF) for w in words):
            raise ValueError(f"{self.name}: register values must be 0…65535, got {list(words)}")
        ordered = list(words) if self.word_order == "big" else list(reversed(words))
        return struct.unpack(TYPES[self.type][1], b"".join(w.to_bytes(2, "big") for w in ordered))[0]

    def decode(self, words) -> float | None:
        """Engineering value of the register's words, None for the invalid marker or a non-finite float."""
        raw = self._raw_from_words(words)
        if self.invalid is not None and raw == self.invalid:
            return None
        if isinstance(raw, float) and not math.isfinite(raw):
            return None
        return raw * self.scale + self.offset

    def encode(self, value: float) -> list[int]:
        """Words for a write of `value` (engineering units); ValueError outside the write range or type."""
        if not self.writable:
            raise ValueError(f"{self.name} is read-only")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{self.name}: {value!r} is not a finite number")
        if not (self.min <= value <= self.max):
            raise ValueError(f"{self.name}: {value:g} {self.unit} outside {self.min:g} … {self.max:g} {self.unit}")
        return self.to_words(value)

    def to_words(self, value: float | None) -> list[int]:
        """Words that carry `value` (no write-range check: a device serving its own readings uses this).
        None → the invalid marker (or NaN for float32); ValueError when it does not fit the type."""
        if value is None:
            if self.type == "float32":
                value = math.nan
            elif self.invalid is None:
                raise ValueError(f"{self.name}: no invalid marker to send for 'not available'")
            else:
                return self._pack(self.invalid)
        raw = (value - self.offset) / self.scale
        return self._pack(raw)

    def _pack(self, raw) -> list[int]:
        if self.type != "float32":
            raw = int(round(raw))
        try:
            data = struct.pack(TYPES[self.type][1], raw)
        except struct.error:
            raise ValueError(f"{self.name}: raw {raw!r} does not fit a {self.type}") from None
        words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
        return words if self.word_order == "big" else list(reversed(words))
