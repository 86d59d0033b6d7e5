"""The board's dry contacts on a Linux GPIO character device, through libgpiod's Python bindings (`gpiod` ≥ 2,
the kernel's GPIO v2 uAPI; the sysfs interface is deprecated).

All lines are requested once, in one request, at start: inputs with their bias, outputs driven inactive
(every output's safe state: generator not started, loads not shed, no trip). A line that another process
holds, a missing chip or a kernel error is a `GpioError` naming the chip and line — at start, before the
site runs. Reads and writes move raw levels only; polarity (normally-closed loops) and debounce stay in
`dry_contacts.Debouncer`, shared with the in-memory backend.

`gpiod` is imported when this backend is built, so a desk install does not need it (`pip install
'ems[board]'` on the board).
"""
from __future__ import annotations

from ems.control.io_map import DO_NAMES, KNOWN_INPUTS

CONSUMER = "ems"


class GpioError(RuntimeError):
    """The GPIO chip or a line cannot be used."""


class GpioContacts:
    """`ContactBackend` on GPIO lines. `lines`: the config's `[[dry_contacts.gpio_lines]]` (name, line, bias).
    `gpiod`: the bindings module (tests hand in one whose `request_lines` is backed by memory)."""

    def __init__(self, chip: str, lines, gpiod=None):
        if gpiod is None:
            try:
                import gpiod
            except ImportError as exc:
                raise GpioError("dry_contacts.backend = 'gpio' needs libgpiod's Python bindings: "
                                "pip install 'ems[board]'") from exc
        Bias, Direction, Value = gpiod.line.Bias, gpiod.line.Direction, gpiod.line.Value
        self._active, self._inactive = Value.ACTIVE, Value.INACTIVE
        biases = {"as_is": Bias.AS_IS, "pull_up": Bias.PULL_UP, "pull_down": Bias.PULL_DOWN,
                  "disabled": Bias.DISABLED}
        self.inputs = {g.name: g.line for g in lines if g.name in KNOWN_INPUTS}
        self.outputs = {g.name: g.line for g in lines if g.name in DO_NAMES}
        unknown = [g.name for g in lines if g.name not in self.inputs and g.name not in self.outputs]
        if unknown:
            raise GpioError(f"GPIO lines for unknown contacts {unknown}")
        config = {(g.line,): gpiod.LineSettings(direction=Direction.INPUT, bias=biases[g.bias])
                  for g in lines if g.name in self.inputs}
        if self.outputs:
            config[tuple(self.outputs.values())] = gpiod.LineSettings(direction=Direction.OUTPUT)
        self.chip = chip
        try:
            self._request = gpiod.request_lines(chip, consumer=CONSUMER, config=config,
                                                output_values={o: Value.INACTIVE for o in self.outputs.values()})
        except (OSError, ValueError) as exc:
            raise GpioError(f"cannot request GPIO lines {sorted(g.line for g in lines)} on {chip}: {exc}") from exc
        self._in_offsets = tuple(self.inputs.values())
        self._written: dict[str, bool] = {name: False for name in self.outputs}

    def wired_inputs(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def read_inputs(self) -> dict[str, bool]:
        """Raw levels of the wired inputs (True = line active). An input not wired is absent (reads inactive)."""
        if not self._in_offsets:
            return {}
        try:
            values = self._request.get_values(self._in_offsets)
        except OSError as exc:
            raise GpioError(f"reading GPIO inputs on {self.chip}: {exc}") from exc
        return {name: v == self._active for name, v in zip(self.inputs, values)}

    def write_outputs(self, outputs: dict[str, bool]) -> None:
        """Drive the wired outputs that changed; outputs the site has no line for are not driven."""
        unknown = set(outputs) - set(DO_NAMES)
        if unknown:
            raise ValueError(f"unknown dry-contact outputs {sorted(unknown)}; known: {', '.join(DO_NAMES)}")
        changed = {self.outputs[n]: (self._active if v else self._inactive)
                   for n, v in outputs.items() if n in self.outputs and self._written[n] != bool(v)}
        if not changed:
            return
        try:
            self._request.set_values(changed)
        except OSError as exc:
            raise GpioError(f"writing GPIO outputs on {self.chip}: {exc}") from exc
        for n, v in outputs.items():
            if n in self.outputs:
                self._written[n] = bool(v)

    def close(self) -> None:
        """Release the lines: outputs go back to the kernel (and the board's default level)."""
        self._request.release()
