"""A single LFP cell for validating SOC/SOH estimation, built unlike the estimator's own model.

The estimator assumes: an OCV table + one hysteresis state of fixed width + one series resistance. This
plant has instead:
- an analytic OCV with two plateaus (a phase step near 62 %), exponential knees, ~70 mV from 20 to 80 %;
- an entropic term (OCV moves with temperature);
- hysteresis whose half-width depends on SOC (wider at low SOC) and that moves with its own throughput
  constant;
- a series resistance with an Arrhenius temperature dependence and three RC pairs (20 s, 15 min, 70 min:
  LFP's slow relaxation);
- a thermal model (I²R heating, ambient that swings over the day);
- a coulombic efficiency below 1 and a capacity that is an input (aged cells);
- sensors: current gain +0.5 % and offset +0.05 % of 1C, voltage noise 2 mV (1 sigma) with 1 mV steps,
  temperature noise.
Everything is seeded; a run is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

T_REF_K = 298.15


def ocv_v(soc: float, temp_degc: float = 25.0) -> float:
    """The plant's mean open-circuit voltage (between its charge and discharge branches)."""
    s = min(max(soc, 0.0), 1.0)
    u = (3.262 + 0.075 * (s - 0.5) + 0.012 * math.tanh((s - 0.62) / 0.03)
         - 0.09 * math.exp(-s / 0.045) - 0.40 * math.exp(-s / 0.012)
         + 0.045 * math.exp((s - 1.0) / 0.02) + 0.30 * math.exp((s - 1.0) / 0.006))
    entropic = (0.10 - 0.25 * math.exp(-s / 0.1)) * 1e-3        # V/K, changes sign at low SOC
    return u + entropic * (temp_degc - 25.0)


def hysteresis_half_v(soc: float) -> float:
    return (8.0 + 20.0 * math.exp(-soc / 0.08)) * 1e-3


def measured_ocv_table(points=(0, 1, 2, 3, 5, 7.5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 65, 70, 80, 90, 95, 97, 98,
                               99, 100), noise_v: float = 0.001, seed: int = 7) -> str:
    """The OCV table an OEM would measure on this cell at 25 °C, as CSV: the mean of the charge and discharge
    branches after rest, and half their gap (the hysteresis column), each branch read to ±1 mV."""
    rng = np.random.default_rng(seed)
    rows = ["soc_pct,ocv_v,hysteresis_mv"]
    last = 0.0
    for p in points:
        up = ocv_v(p / 100.0) + hysteresis_half_v(p / 100.0) + rng.normal(0.0, noise_v)
        down = ocv_v(p / 100.0) - hysteresis_half_v(p / 100.0) + rng.normal(0.0, noise_v)
        v = max(round((up + down) / 2.0, 4), last + 0.0005)
        last = v
        rows.append(f"{p:g},{v:.4f},{max(up - down, 0.0) / 2.0 * 1000.0:.1f}")
    return "\n".join(rows) + "\n"


@dataclass
class LfpCellPlant:
    capacity_ah: float = 280.0
    soc: float = 0.5
    seed: int = 1
    ambient_mean_degc: float = 25.0
    ambient_swing_degc: float = 10.0
    r0_ohm: float = 0.30e-3
    rc: tuple = ((0.12e-3, 20.0), (0.20e-3, 900.0), (0.15e-3, 4200.0))
    activation_k: float = 2500.0
    coulombic_eff: float = 0.9995
    hyst_ah_frac: float = 0.03
    gain_err: float = 0.005
    offset_frac_c: float = 0.0005
    v_noise_v: float = 0.002
    v_step_v: float = 0.001
    t_noise_degc: float = 0.3
    heat_capacity_j_per_k: float = 6000.0
    cooling_w_per_k: float = 1.5
    temp_degc: float = 25.0
    h: float = -1.0                    # hysteresis state, -1 discharge branch … +1 charge branch
    v_rc: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    t_s: float = 0.0
    current_a: float = 0.0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    # ------------------------------------------------------------------ physics
    def r0(self) -> float:
        return self.r0_ohm * math.exp(self.activation_k * (1.0 / (self.temp_degc + 273.15) - 1.0 / T_REF_K))

    def ocv_now(self) -> float:
        return ocv_v(self.soc, self.temp_degc) + self.h * hysteresis_half_v(self.soc)

    def terminal_v(self, i_a: float) -> float:
        """Terminal voltage with current i_a (> 0 discharging) flowing now."""
        return self.ocv_now() - i_a * self.r0() - sum(self.v_rc)

    def cv_current(self, v_cv: float) -> float:
        """The (negative) current that holds the terminal at v_cv."""
        return (self.ocv_now() - sum(self.v_rc) - v_cv) / self.r0()

    def ambient(self) -> float:
        return self.ambient_mean_degc + self.ambient_swing_degc * math.sin(2 * math.pi * (self.t_s / 86400.0 - 0.375))

    def step(self, i_a: float, dt_s: float) -> None:
        dq = i_a * dt_s / 3600.0
        self.soc = min(max(self.soc - (dq if dq > 0 else dq * self.coulombic_eff) / self.capacity_ah, 0.0), 1.0)
        if dq != 0.0:
            target = -1.0 if dq > 0 else 1.0
            self.h = target + (self.h - target) * math.exp(-abs(dq) / (self.hyst_ah_frac * self.capacity_ah))
        k = self.activation_k * (1.0 / (self.temp_degc + 273.15) - 1.0 / T_REF_K)
        for j, (r, tau) in enumerate(self.rc):
            a = math.exp(-dt_s / tau)
            self.v_rc[j] = self.v_rc[j] * a + i_a * r * math.exp(k) * (1.0 - a)
        heat = i_a * i_a * (self.r0() + sum(r for r, _ in self.rc)) - self.cooling_w_per_k * (self.temp_degc - self.ambient())
        self.temp_degc += heat * dt_s / self.heat_capacity_j_per_k
        self.t_s += dt_s
        self.current_a = i_a

    # ------------------------------------------------------------------ sensors
    def measure(self) -> tuple[float, float, float]:
        """(current_a, voltage_v, temp_degc) as the BMS reports them."""
        i = self.current_a * (1.0 + self.gain_err) + self.offset_frac_c * self.capacity_ah
        v = self.terminal_v(self.current_a) + self.rng.normal(0.0, self.v_noise_v)
        v = round(v / self.v_step_v) * self.v_step_v
        t = self.temp_degc + self.rng.normal(0.0, self.t_noise_degc)
        return i, v, t


# ---------------------------------------------------------------------- duty cycles
V_CV = 3.60
V_CUTOFF = 2.80
CV_END_C = 0.03        # CV termination current (C/33)


class Cycler:
    """Drives the plant through day programmes: charge (to full with CC-CV, or to a SOC), discharge (to a SOC
    or the cut-off voltage) with currents that change every few minutes (PV and load), and rests."""

    def __init__(self, plant: LfpCellPlant, rated_ah: float, dt_s: float = 1.0, seed: int = 3):
        self.p = plant
        self.c = rated_ah              # 1C in A of the *rated* cell (an aged cell sees the same currents)
        self.dt = dt_s
        self.rng = np.random.default_rng(seed)
        self.full_events: list[float] = []

    def _current(self, lo_c: float, hi_c: float, t_next: list) -> float:
        if self.p.t_s >= t_next[0]:
            t_next[0] = self.p.t_s + float(self.rng.uniform(120, 900))
            t_next[1] = float(self.rng.uniform(lo_c, hi_c)) * self.c
        return t_next[1]

    def rest(self, seconds: float):
        end = self.p.t_s + seconds
        while self.p.t_s < end:
            self.p.step(0.0, self.dt)
            yield

    def rest_until(self, t_s: float):
        yield from self.rest(max(t_s - self.p.t_s, 0.0))

    def charge_full(self, lo_c=0.15, hi_c=0.5):
        t_next = [0.0, 0.0]
        while True:
            i = -self._current(lo_c, hi_c, t_next)
            i = max(i, self.p.cv_current(V_CV))
            if -i <= CV_END_C * self.c:            # end of CV: termination current reached
                self.full_events.append(self.p.t_s)
                return
            self.p.step(i, self.dt)
            yield

    def charge_to(self, soc: float, lo_c=0.1, hi_c=0.5):
        t_next = [0.0, 0.0]
        while self.p.soc < soc:
            i = max(-self._current(lo_c, hi_c, t_next), self.p.cv_current(V_CV))
            if -i <= CV_END_C * self.c:
                return
            self.p.step(i, self.dt)
            yield

    def discharge_to(self, soc: float | None, lo_c=0.1, hi_c=0.6, short_rests: bool = False):
        t_next = [0.0, 0.0]
        while soc is None or self.p.soc > soc:
            i = self._current(lo_c, hi_c, t_next)
            if self.p.terminal_v(i) <= V_CUTOFF:
                return
            if short_rests and self.rng.random() < 1.0 / 3600.0:
                yield from self.rest(float(self.rng.uniform(300, 1800)))
                t_next[0] = 0.0
            self.p.step(i, self.dt)
            yield

    def day(self, kind: str):
        """One day: 'full' (CC-CV to full by day), 'partial' (no full charge, short rests), 'deep' (to the
        discharge cut-off voltage, then a full charge)."""
        start = self.p.t_s
        r = self.rng
        yield from self.rest_until(start + 6 * 3600)
        if kind == "full":
            yield from self.charge_full()
            yield from self.rest(float(r.uniform(1800, 3 * 3600)))
            yield from self.discharge_to(float(r.uniform(0.25, 0.6)), short_rests=True)
            yield from self.rest_until(start + 17 * 3600)
            yield from self.discharge_to(float(r.uniform(0.08, 0.3)))
        elif kind == "partial":
            yield from self.charge_to(float(r.uniform(0.6, 0.88)))
            yield from self.rest(float(r.uniform(300, 1800)))
            yield from self.discharge_to(float(r.uniform(0.35, 0.5)), short_rests=True)
            yield from self.rest(float(r.uniform(600, 3600)))
            yield from self.charge_to(float(r.uniform(0.6, 0.8)))
            yield from self.rest_until(start + 17 * 3600)
            yield from self.discharge_to(float(r.uniform(0.2, 0.4)))
        elif kind == "deep":
            yield from self.discharge_to(None, 0.2, 0.5)
            yield from self.rest(float(r.uniform(1800, 7200)))
            yield from self.charge_full()
            yield from self.rest_until(start + 17 * 3600)
            yield from self.discharge_to(float(r.uniform(0.1, 0.3)))
        else:
            raise ValueError(f"unknown day kind {kind!r}")
        yield from self.rest_until(start + 86400)
