"""Modbus register codec: raw 16-bit words ⇄ engineering values, as a device profile describes them.

value = raw × scale × 10^sf (+ offset); 32-bit types span two registers in the profile's word order ("big":
high word first, the Modbus convention; "little": low word first, common on vendor maps). `sf` is the
value of the register's `scale_factor` register when it has one (SunSpec's sunssf points: the device picks
its own power of ten) and 0 otherwise. A raw value equal to the register's invalid marker means "not
available" and decodes to None (staleness as a value); so does a value whose scale factor is not known.
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
    scale_factor: str | None = None   # name of the s16 register holding this one's power of ten (SunSpec)
    flags: tuple[tuple[str, int], ...] = ()       # named bits of a status word: (name, bit)
    alarm_bits: tuple[tuple[int, int], ...] = ()  # bits of a fault / alarm word: (bit, the catalogue's code)

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

    def _scale(self, sf: float | None) -> float | None:
        if self.scale_factor is None:
            return self.scale
        if sf is None or not -10 <= sf <= 10:       # unknown, or SunSpec's "not implemented" (-32768)
            return None
        return self.scale * 10.0 ** int(sf)

    def decode(self, words, sf: float | None = None) -> float | None:
        """Engineering value of the register's words, None for the invalid marker, a non-finite float or
        an unknown scale factor (`sf`: the value of this register's scale_factor register)."""
        raw = self._raw_from_words(words)
        if self.invalid is not None and raw == self.invalid:
            return None
        if isinstance(raw, float) and not math.isfinite(raw):
            return None
        scale = self._scale(sf)
        return None if scale is None else raw * scale + self.offset

    def bit(self, value: float | None, bit: int) -> bool | None:
        """Bit `bit` of a decoded status or fault word (None when the word is not available)."""
        return None if value is None else bool(int(value) >> bit & 1)

    def check(self, value: float) -> None:
        """ValueError unless `value` may be written to this register (writable, finite, within range)."""
        if not self.writable:
            raise ValueError(f"{self.name} is read-only")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{self.name}: {value!r} is not a finite number")
        if not (self.min <= value <= self.max):
            raise ValueError(f"{self.name}: {value:g} {self.unit} outside {self.min:g} … {self.max:g} {self.unit}")

    def encode(self, value: float, sf: float | None = None) -> list[int]:
        """Words for a write of `value` (engineering units); ValueError outside the write range or type."""
        self.check(value)
        return self.to_words(value, sf)

    def to_words(self, value: float | None, sf: float | None = None) -> list[int]:
        """Words that carry `value` (no write-range check: a device serving its own readings uses this).
        None → the invalid marker (or NaN for float32); ValueError when it does not fit the type or the
        scale factor is unknown."""
        if value is None:
            if self.type == "float32":
                value = math.nan
            elif self.invalid is None:
                raise ValueError(f"{self.name}: no invalid marker to send for 'not available'")
            else:
                return self._pack(self.invalid)
        scale = self._scale(sf)
        if scale is None:
            raise ValueError(f"{self.name}: scale factor {self.scale_factor} not known ({sf!r})")
        raw = (value - self.offset) / scale
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
