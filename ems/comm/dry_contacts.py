"""Dry contacts: one DI/DO interface, backends behind it, and input debounce.

The controller sees debounced, polarity-corrected inputs by name (`ems.control.io_map`: EPO, fire, water,
SPD, RRCR K1–K4, §14a, ATS and generator feedback …) and drives outputs by name. A backend only moves
raw levels: `MemoryContacts` for tests and simulation, `gpio_contacts.GpioContacts` (Linux GPIO character
device through libgpiod) for the board; `make_backend` picks one from `[dry_contacts] backend`.

Polarity: safety loops are often wired normally closed (a broken wire must read as "pressed"), so an
input can be inverted: raw level 0 then means closed/active.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ems.control.io_map import DO_NAMES, KNOWN_INPUTS


class ContactBackend(Protocol):
    def read_inputs(self) -> dict[str, bool] | None: ...

    def write_outputs(self, outputs: dict[str, bool]) -> None: ...

    def wired_inputs(self) -> tuple[str, ...]: ...


@dataclass
class MemoryContacts:
    """Raw input levels set by a test or the simulated site; the last outputs written."""
    inputs: dict[str, bool] = field(default_factory=dict)
    outputs: dict[str, bool] = field(default_factory=lambda: {name: False for name in DO_NAMES})

    def set_input(self, name: str, level: bool) -> None:
        if name not in KNOWN_INPUTS:
            raise ValueError(f"unknown dry-contact input {name!r}; known: {', '.join(KNOWN_INPUTS)}")
        self.inputs[name] = bool(level)

    def read_inputs(self) -> dict[str, bool]:
        return dict(self.inputs)

    def wired_inputs(self) -> tuple[str, ...]:
        return KNOWN_INPUTS            # a test or simulation may set any input

    def write_outputs(self, outputs: dict[str, bool]) -> None:
        unknown = set(outputs) - set(DO_NAMES)
        if unknown:
            raise ValueError(f"unknown dry-contact outputs {sorted(unknown)}; known: {', '.join(DO_NAMES)}")
        self.outputs.update(outputs)


def make_backend(dc, modbus=None, refresh_s: float = 1.0) -> ContactBackend | None:
    """The backend the config's `[dry_contacts]` section asks for (None: nothing wired, backend memory in
    `ems run`); `modbus`: the engine that reaches the I/O module of backend modbus."""
    if dc.backend == "gpio":
        from ems.comm.gpio_contacts import GpioContacts
        return GpioContacts(dc.gpio_chip, dc.gpio_lines)
    if dc.backend == "modbus":
        return ModbusContacts(modbus, dc.io_device, dc.channels, refresh_s)
    return MemoryContacts()


class Debouncer:
    """An input changes only after its new level has held for debounce_ms (time-based, loop-rate free). Its
    first reading is taken as it is: at start there is no earlier level to bounce from, and an EPO pressed
    while the EMS starts must act at once."""

    def __init__(self, debounce_ms: float, inverted: tuple[str, ...] = ()):
        if not debounce_ms >= 0:
            raise ValueError(f"debounce_ms must be >= 0, got {debounce_ms}")
        unknown = set(inverted) - set(KNOWN_INPUTS)
        if unknown:
            raise ValueError(f"cannot invert unknown inputs {sorted(unknown)}")
        self.debounce_s = debounce_ms / 1000.0
        self.inverted = frozenset(inverted)
        self.stable: dict[str, bool] = {}
        self._pending: dict[str, tuple[bool, float]] = {}
        self._last: dict[str, bool] | None = None

    def update(self, raw: dict[str, bool], now_s: float) -> dict[str, bool]:
        """Feed raw levels; returns the inputs whose debounced, polarity-corrected state changed."""
        if not self._pending and raw == self._last:
            return {}                        # nothing moved and nothing is waiting out its debounce
        self._last = dict(raw)
        changed = {}
        for name in (raw.keys() | self.inverted) if self.inverted else raw:
            level = raw.get(name, False)
            active = (not level) if name in self.inverted else level
            if name not in self.stable:         # the first reading: no earlier level to bounce from
                self.stable[name] = changed[name] = active
                continue
            if active == self.stable[name]:
                self._pending.pop(name, None)
                continue
            since = self._pending.get(name)
            if since is None or since[0] != active:
                self._pending[name] = (active, now_s)
                since = self._pending[name]
            if now_s - since[1] >= self.debounce_s - 1e-9:      # float time: 5.05 − 5.0 < 0.05
                self.stable[name] = active
                self._pending.pop(name, None)
                changed[name] = active
        return changed


class ModbusContacts:
    """`ContactBackend` on a Modbus I/O module ([[devices.modbus]] role io_module): input N is bit N of its
    `di_bits` word, output N bit N of `do_bits` (held and refreshed like a setpoint). `read_inputs` answers
    None while no new reading of the inputs has arrived (the device layer supervises its age)."""

    def __init__(self, modbus, device: str, channels, refresh_s: float = 1.0):
        self.modbus, self.device, self.refresh_s = modbus, device, refresh_s
        self.inputs = {c.name: c.channel for c in channels if c.name in KNOWN_INPUTS}
        self.outputs = {c.name: c.channel for c in channels if c.name in DO_NAMES}
        self._seen_at: float | None = None
        self._bits: int | None = None
        self._levels: dict[str, bool] = {}

    def wired_inputs(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def read_inputs(self) -> dict[str, bool] | None:
        sample = self.modbus.sample(self.device, "di_bits")
        if sample is None or sample[1] == self._seen_at or sample[0] is None:
            return None
        self._seen_at = sample[1]
        bits = int(sample[0])
        if bits != self._bits:                # the same word: the same levels (a new reading all the same)
            self._bits = bits
            self._levels = {name: bool(bits >> ch & 1) for name, ch in self.inputs.items()}
        return self._levels

    def write_outputs(self, outputs: dict[str, bool]) -> None:
        mask = 0
        for name, ch in self.outputs.items():
            if outputs.get(name):
                mask |= 1 << ch
        self.modbus.hold(self.device, "do_bits", mask, self.refresh_s)
