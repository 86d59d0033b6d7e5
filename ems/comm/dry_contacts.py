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
    def read_inputs(self) -> dict[str, bool]: ...

    def write_outputs(self, outputs: dict[str, bool]) -> None: ...


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

    def write_outputs(self, outputs: dict[str, bool]) -> None:
        unknown = set(outputs) - set(DO_NAMES)
        if unknown:
            raise ValueError(f"unknown dry-contact outputs {sorted(unknown)}; known: {', '.join(DO_NAMES)}")
        self.outputs.update(outputs)


def make_backend(dc) -> ContactBackend:
    """The backend the config's `[dry_contacts]` section asks for."""
    if dc.backend == "gpio":
        from ems.comm.gpio_contacts import GpioContacts
        return GpioContacts(dc.gpio_chip, dc.gpio_lines)
    return MemoryContacts()


class Debouncer:
    """An input changes only after its new level has held for debounce_ms (time-based, loop-rate free)."""

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

    def update(self, raw: dict[str, bool], now_s: float) -> dict[str, bool]:
        """Feed raw levels; returns the inputs whose debounced, polarity-corrected state changed."""
        changed = {}
        for name in (raw.keys() | self.inverted) if self.inverted else raw:
            level = raw.get(name, False)
            active = (not level) if name in self.inverted else level
            if active == self.stable.get(name, False):
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
