"""State of health per cluster: capacity from charge between anchors, resistance from current steps, trend.

Capacity and current offset. Between two anchors that measured SOC s1 and s2 the counter saw a net charge Δq; Δq = Q·(s1 − s2).
Both sides have errors: Δq from the current sensor (gain × throughput, offset × time), Δs from the anchors
(their variances). Ordinary least squares on noisy x is biased toward zero, so the fit is a weighted total
least squares through the origin (Plett's "approximate weighted TLS"): Q minimises
Σ (Δq − Q·Δs)² / (σq² + Q²·σs²). It is solved by reweighting (the weights depend on Q), with a fading
memory per pair so the estimate follows ageing. Only pairs at least MIN_SWING apart count: a capacity
from a small SOC swing is mostly anchor noise.

Resistance. The core reports one sample per current step (the mean cell voltage's change over the current's
change, cell steps at most 2 s apart): a ~1 s DC resistance. Samples are averaged exponentially.

Trend. One point per day (capacity, resistance); the trend is the least-squares slope over the last 90 days.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ems._core import layout as L

MIN_SWING = 0.3            # SOC fraction between the two anchors of a pair that measures capacity
ONE_PAIR_SWING = 0.5       # one pair this wide is enough to use a capacity (anchors near full and near empty)
MIN_OFFSET_H = 6.0         # hours between the two anchors of a pair that measures the current offset
FADING = 0.98              # weight kept by older pairs per new pair
R_ALPHA = 0.05             # exponential average of resistance samples
TREND_DAYS = 90
MAX_POINTS = 400
GAIN_RESIDUAL = 0.25       # share of the gain error left once counting uses a learned capacity
CAP_ERR_FLOOR = 0.01       # a learned capacity's error is never taken as smaller: it drifts with temperature and age
Q_FLOOR_FRAC = 0.1 / 280.0  # a counted charge is never known better than this fraction of the capacity (0.1 Ah at
                            # 280 Ah): relative, so a 2.3 Ah cell and a 280 Ah cell learn alike
AGEING_RANGE = (0.6, 1.05)  # a learned capacity outside this share of the configured one is reported, not used:
                            # cells do not grow, and below 60 % a battery is scrap, not a measurement


@dataclass
class ClusterSoh:
    rated_ah: float
    capacity_ah: float | None = None
    capacity_sigma_ah: float | None = None
    offset_a: float | None = None                      # current sensor offset (measured − true), A
    offset_sigma_a: float | None = None
    pairs: list = field(default_factory=list)          # (Δs, Δq, Δt h, var_s, var_q, weight)
    last_anchor: tuple | None = None                   # (soc, var, net_ah, throughput_ah, t_s)
    anchor_seq: float = 0.0
    resistance_ohm: float | None = None
    r_seq: float = 0.0
    r_samples: int = 0
    history: list = field(default_factory=list)        # (day, capacity_ah, resistance_ohm)

    @property
    def soh_pct(self) -> float | None:
        return None if self.capacity_ah is None else 100.0 * self.capacity_ah / self.rated_ah

    def fit(self) -> None:
        """Δq = Q·Δs + b·Δt: capacity Q and the current offset b together (an offset looks like charge
        that went nowhere: two full charges days apart measure it directly). Reweighted least squares with
        the total-least-squares weights 1 / (σq² + Q²·σs²)."""
        if not self.pairs:
            return
        ds, dq, dt, vs, vq, w = (np.array(x, dtype=float) for x in zip(*self.pairs))
        has_q = bool((np.abs(ds) >= MIN_SWING).any())
        has_b = bool((dt >= MIN_OFFSET_H).any())
        cols = ([ds] if has_q else []) + ([dt] if has_b else [])
        if not cols:
            return
        a = np.stack(cols, axis=1)
        q = self.capacity_ah or self.rated_ah
        y = dq if has_q else dq - q * ds             # without a swing, Q is not measured: use the one we have
        theta = cov = None
        for _ in range(20):
            wt = w / (vq + q * q * vs)
            m = a.T @ (a * wt[:, None])
            if np.linalg.cond(m) > 1e12:
                return
            cov = np.linalg.inv(m)
            theta = cov @ (a.T @ (wt * y))
            q_new = float(theta[0]) if has_q else q
            if abs(q_new - q) < 1e-9 * max(abs(q), 1.0):
                break
            q = q_new
        if has_q:
            self.capacity_ah, self.capacity_sigma_ah = float(theta[0]), math.sqrt(float(cov[0, 0]))
        if has_b:
            self.offset_a, self.offset_sigma_a = float(theta[-1]), math.sqrt(float(cov[-1, -1]))

    def trend(self) -> dict:
        pts = self.history[-TREND_DAYS:]
        out = {"capacity_ah_per_30d": None, "resistance_ohm_per_30d": None}
        if len(pts) < 7:
            return out
        d = np.array([p[0] for p in pts], dtype=float)
        for i, key in ((1, "capacity_ah_per_30d"), (2, "resistance_ohm_per_30d")):
            y = np.array([np.nan if p[i] is None else p[i] for p in pts], dtype=float)
            ok = ~np.isnan(y)
            if ok.sum() >= 7 and np.ptp(d[ok]) > 0:
                out[key] = float(np.polyfit(d[ok], y[ok], 1)[0] * 30.0)
        return out


class SohTracker:
    """Reads the core's anchor and resistance records once per slow tick; one ClusterSoh per cluster."""

    def __init__(self, clusters: int, rated_ah: float, gain_err: float, offset_a: float):
        self.clusters = [ClusterSoh(rated_ah) for _ in range(clusters)]
        self.gain_err = gain_err
        self.offset_bound_a = offset_a
        self._seen = np.full((clusters, 2), np.nan)          # the anchor and resistance counters last read

    def observe(self, est_state: np.ndarray, soc_out: np.ndarray, t_s: float) -> list[int]:
        """Take new anchors and resistance samples; returns the clusters whose capacity estimate changed."""
        changed = []
        seq = est_state[:, [L.SE_ANCHOR_SEQ, L.SE_R_SEQ]]
        new = np.flatnonzero((seq != self._seen).any(axis=1))      # most slow ticks: none (one vector test)
        self._seen = seq
        for c in new:
            c = int(c)
            cs = self.clusters[c]
            se = est_state[c]
            thru = float(soc_out[c, L.SOC_AH_CHARGED] + soc_out[c, L.SOC_AH_DISCHARGED])
            if se[L.SE_R_SEQ] != cs.r_seq:
                cs.r_seq = float(se[L.SE_R_SEQ])
                r = float(se[L.SE_R_OHM])
                if math.isfinite(r) and r > 0.0:
                    cs.resistance_ohm = r if cs.resistance_ohm is None else (1 - R_ALPHA) * cs.resistance_ohm + R_ALPHA * r
                    cs.r_samples += 1
            if se[L.SE_ANCHOR_SEQ] == cs.anchor_seq:
                continue
            cs.anchor_seq = float(se[L.SE_ANCHOR_SEQ])
            anchor = (float(se[L.SE_ANCHOR_SOC]), float(se[L.SE_ANCHOR_VAR]), float(se[L.SE_ANCHOR_NET_AH]), thru, t_s)
            prev = cs.last_anchor
            cs.last_anchor = anchor
            if prev is None:
                continue
            dt_h = (anchor[4] - prev[4]) / 3600.0
            if abs(anchor[0] - prev[0]) < MIN_SWING and dt_h < MIN_OFFSET_H:
                continue
            ds = prev[0] - anchor[0]
            dq = anchor[2] - prev[2]
            var_s = prev[1] + anchor[1]
            var_q = (self.gain_err * abs(dq)) ** 2 + (Q_FLOOR_FRAC * cs.rated_ah) ** 2
            cs.pairs = [(a, b, t, vs, vq, w * FADING) for a, b, t, vs, vq, w in cs.pairs][-200:]
            cs.pairs.append((ds, dq, dt_h, var_s, var_q, 1.0))
            cs.fit()
            changed.append(c)
        return changed

    def apply(self, capacity_ah: np.ndarray, est_state: np.ndarray, max_rel_sigma: float) -> None:
        """Count with what was learned, where it is known well enough: each cluster's capacity (all its
        PACKs; its error then grows the bound instead of the configured one) and its current offset (whose
        remaining error then grows the bound instead of the datasheet's; never below a quarter of it, the
        offset drifts with temperature). Counting with a learned capacity also leaves only GAIN_RESIDUAL of
        the gain error in the bound."""
        for c, cs in enumerate(self.clusters):
            q = learned_capacity(cs, max_rel_sigma)
            if q is not None:
                capacity_ah[c, :] = q
                est_state[c, L.SE_CAP_ERR] = min(max_rel_sigma, max(cs.capacity_sigma_ah / q, CAP_ERR_FLOOR))
                # the capacity was learned from the sensor's own readings: counting with it cancels the gain
                # error, all but what differs between charge and discharge and drifts with temperature
                est_state[c, L.SE_GAIN_ERR] = GAIN_RESIDUAL * self.gain_err
            if cs.offset_a is not None and cs.offset_sigma_a is not None and cs.offset_sigma_a < self.offset_bound_a \
                    and abs(cs.offset_a) <= 3.0 * self.offset_bound_a:
                est_state[c, L.SE_OFFSET_A] = cs.offset_a
                est_state[c, L.SE_OFFSET_BOUND_A] = max(cs.offset_sigma_a, 0.25 * self.offset_bound_a)

    def daily_point(self, day: int) -> None:
        for cs in self.clusters:
            if cs.history and cs.history[-1][0] == day:
                cs.history[-1] = (day, cs.capacity_ah, cs.resistance_ohm)
            else:
                cs.history.append((day, cs.capacity_ah, cs.resistance_ohm))
                del cs.history[:-MAX_POINTS]

    def summary(self) -> list[dict]:
        return [{"cluster": c, "capacity_ah": cs.capacity_ah, "capacity_sigma_ah": cs.capacity_sigma_ah,
                 "soh_pct": cs.soh_pct, "pairs": len(cs.pairs), "offset_a": cs.offset_a,
                 "offset_sigma_a": cs.offset_sigma_a, "resistance_mohm":
                     None if cs.resistance_ohm is None else cs.resistance_ohm * 1000.0,
                 "resistance_samples": cs.r_samples, **cs.trend()} for c, cs in enumerate(self.clusters)]

    # ---------------------------------------------------------------- persistence (the state file)
    def to_dict(self) -> list[dict]:
        return [{"capacity_ah": cs.capacity_ah, "capacity_sigma_ah": cs.capacity_sigma_ah, "offset_a": cs.offset_a,
                 "offset_sigma_a": cs.offset_sigma_a, "pairs": cs.pairs,
                 "last_anchor": cs.last_anchor, "resistance_ohm": cs.resistance_ohm, "r_samples": cs.r_samples,
                 "history": cs.history} for cs in self.clusters]

    def restore(self, data: list[dict]) -> bool:
        if not isinstance(data, list) or len(data) != len(self.clusters):
            return False
        for cs, d in zip(self.clusters, data):
            cs.capacity_ah, cs.capacity_sigma_ah = d.get("capacity_ah"), d.get("capacity_sigma_ah")
            cs.offset_a, cs.offset_sigma_a = d.get("offset_a"), d.get("offset_sigma_a")
            cs.pairs = [tuple(p) for p in d.get("pairs", [])]
            cs.last_anchor = None      # the counters restart at zero: an old anchor cannot pair with a new one
            cs.resistance_ohm, cs.r_samples = d.get("resistance_ohm"), int(d.get("r_samples", 0))
            cs.history = [tuple(p) for p in d.get("history", [])]
        return True


def capacity_verdict(cs: ClusterSoh, max_rel_sigma: float) -> tuple[float | None, str]:
    """(the SOH capacity to count with, or None; why). It is used once it is known to within
    max_rel_sigma, from two capacity pairs at least (or one spanning ONE_PAIR_SWING), and agrees with the configured capacity within a
    plausible ageing range (AGEING_RANGE); otherwise it is reported and not applied."""
    if cs.capacity_ah is None or cs.capacity_sigma_ah is None:
        return None, "not learned (needs two anchors at least 30 % SOC apart)"
    swings = [abs(p[0]) for p in cs.pairs if abs(p[0]) >= MIN_SWING]
    if len(swings) < 2 and max(swings, default=0.0) < ONE_PAIR_SWING:
        return None, (f"not used: {len(swings)} capacity pair (two needed, or one at least "
                      f"{ONE_PAIR_SWING * 100:.0f} % SOC apart)")
    if not cs.capacity_ah > 0.0:          # anchors that moved without charge counted (a sensor that reads 0)
        return None, f"not used: the fit gives {cs.capacity_ah:.3g} Ah, no capacity"
    if cs.capacity_sigma_ah > max_rel_sigma * cs.capacity_ah:
        return None, (f"not used: ± {cs.capacity_sigma_ah / cs.capacity_ah * 100:.1f} % is not within the "
                      f"{max_rel_sigma * 100:g} % it must be known to")
    lo, hi = AGEING_RANGE
    if not lo * cs.rated_ah <= cs.capacity_ah <= hi * cs.rated_ah:
        return None, (f"not used: {cs.capacity_ah / cs.rated_ah * 100:.0f} % of the configured capacity is outside "
                      f"the plausible {lo * 100:.0f}–{hi * 100:.0f} %")
    return cs.capacity_ah, "used"


def learned_capacity(cs: ClusterSoh, max_rel_sigma: float) -> float | None:
    """The SOH capacity to count with, or None (capacity_verdict says why)."""
    return capacity_verdict(cs, max_rel_sigma)[0]
