"""What every strategy is: a small object deciding power requests from a snapshot.

A strategy is a pure function of (snapshot, its config, its own state): no I/O, no clock of its own
(the time is in the snapshot). It returns a Decision — requests on battery power (W, > 0 discharging)
and the reason a person reads in the status view — or None when it has nothing to say this tick.
The arbiter applies the decisions of all strategies in priority order by narrowing (DESIGN.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from ems._core import layout as L
from ems.control.snapshot import Snapshot

LE, GE, EQ, TARGET = L.REQ_LE, L.REQ_GE, L.REQ_EQ, L.REQ_TARGET
KIND_NAMES = {LE: "≤", GE: "≥", EQ: "=", TARGET: "→"}


@dataclass(frozen=True)
class Request:
    kind: int
    value_w: float

    def __str__(self) -> str:
        return f"pcs {KIND_NAMES[self.kind]} {self.value_w / 1000:.1f} kW"


@dataclass(frozen=True)
class Decision:
    requests: tuple[Request, ...]
    reason: str
    finished: bool = False       # a one-shot function (forced charge …) reached its exit condition
    outputs: tuple[tuple[str, bool], ...] = ()   # dry-contact outputs this strategy drives: (name, energised)
    alarms: tuple[int, ...] = ()                 # codes (alarm catalogue) this strategy asserts now
    pv_limit_w: float | None = None              # PV active power setpoint, if this strategy sets one
    pcs_stop: bool = False                       # shut the PCS down (off-grid stop-ESS)


class Strategy:
    """Base class: subclasses set `name` and implement `decide`."""
    name = "strategy"

    def decide(self, snap: Snapshot) -> Decision | None:  # pragma: no cover - interface
        raise NotImplementedError


def decision(reason: str, *requests: Request, finished: bool = False, outputs: dict | None = None,
             alarms=(), pv_limit_w: float | None = None, pcs_stop: bool = False) -> Decision:
    return Decision(tuple(requests), reason, finished, tuple((outputs or {}).items()), tuple(alarms), pv_limit_w,
                    pcs_stop)
