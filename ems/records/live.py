"""The running site's live view for the local page: what the controller measured at its last slow tick.

The slow loop publishes (`SiteRecords.after_slow_tick`, once a second); the HTTP thread reads. Publishing
copies a few small arrays under a lock and nothing else: the JSON is built in the HTTP thread, on request,
so a page that is open (or five) costs the loops a copy per second and no more. The database's `live` row
(every 5 s) stays what `ems status` reads; this is the faster path for a page that updates at 1 Hz.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import datetime

import numpy as np

from ems._core import layout as L


def status_time(status: dict) -> float | None:
    """The status's own time (the controller's clock), unix seconds."""
    try:
        return datetime.fromisoformat(status["time"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def _num(x) -> float | None:
    """A JSON number, or None for what was not measured (NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


WATCHED_S = 10.0       # publish every slow tick only while a page has read the feed this recently
HISTORY_POINTS = 4 * 3600      # the curves' backlog: 4 h at 1 s while watched (at 5 s, 20 h, while not)
CURVE_KEYS = ("grid_w", "pv_w", "load_w", "pcs_w", "soc_pct")


class LiveFeed:
    def __init__(self):
        self._last_read = -math.inf        # time.monotonic() of the last read from the HTTP side
        self._lock = threading.Lock()
        self.seq = 0                       # counts publishes: a stream sends each one once
        self._history: deque = deque(maxlen=HISTORY_POINTS)     # (unix s, *CURVE_KEYS) per publish
        self._status: dict | None = None
        self._cells: dict | None = None

    # ------------------------------------------------------------------ the loop's side
    def watched(self) -> bool:
        """Is a page reading? Without one the loop publishes only with its 5-s `live` row."""
        return time.monotonic() - self._last_read < WATCHED_S

    def publish(self, status: dict, buffers) -> None:
        """The status dict (SiteRecords.status_dict) and copies of the battery's arrays."""
        b = buffers
        cells = {"cell_v": b.cell_v.copy(), "cell_t": b.cell_t.copy(), "fresh": b.fresh.copy(),
                 "balancing": b.balancing.copy(), "bypass": b.bypass.copy(), "cluster_in": b.cluster_in.copy(),
                 "flags": b.cluster_flags.copy(), "soc_out": b.soc_out.copy(), "agg_f": b.agg_f.copy(),
                 "agg_i": b.agg_i.copy()}
        point = (status_time(status),) + tuple(status.get(k) for k in CURVE_KEYS)
        with self._lock:
            self._status, self._cells = status, cells
            if point[0] is not None:
                self._history.append(point)
            self.seq += 1

    # ------------------------------------------------------------------ the HTTP side
    def status(self) -> tuple[int, dict | None]:
        self._last_read = time.monotonic()
        with self._lock:
            return self.seq, self._status

    def history(self) -> dict:
        """The curves' backlog, column by column: {"t": [unix s], "grid_w": [...], ...}; None where not measured."""
        self._last_read = time.monotonic()
        with self._lock:
            rows = list(self._history)
        cols = list(zip(*rows)) if rows else [()] * (1 + len(CURVE_KEYS))
        return {"t": list(cols[0]), **{k: list(c) for k, c in zip(CURVE_KEYS, cols[1:])}}

    def battery(self) -> dict | None:
        """Stack and clusters: voltage, current, limits, SOC, contactor; each cluster's cell extremes with
        their location (cell index from 1, pack from 1)."""
        self._last_read = time.monotonic()
        with self._lock:
            c = self._cells
        if c is None:
            return None
        cl, fl, so, af, ai = c["cluster_in"], c["flags"], c["soc_out"], c["agg_f"], c["agg_i"]
        n_cells = c["cell_v"].shape[1]
        per_pack = n_cells // max(c["bypass"].shape[1], 1)
        clusters = []
        for k in range(cl.shape[0]):
            def where(col):
                i = int(ai[k, col])
                return None if i < 0 else {"cell": i + 1, "pack": i // per_pack + 1}
            clusters.append({
                "cluster": k + 1, "voltage_v": _num(cl[k, L.CL_V]), "current_a": _num(cl[k, L.CL_I]),
                "charge_limit_a": _num(cl[k, L.CL_BMS_CHG_A]), "discharge_limit_a": _num(cl[k, L.CL_BMS_DCHG_A]),
                "soc_pct": _num(so[k, L.SOC_MEAN]), "soc_bound_pct": _num(so[k, L.SOC_BOUND]),
                "contactor_closed": bool(fl[k, L.CLF_CONNECTED]), "link_lost": bool(cl[k, L.CL_LINK_LOST]),
                "cell_v_min": _num(af[k, L.AGG_V_MIN]), "cell_v_min_at": where(L.AGG_V_MIN_CELL),
                "cell_v_max": _num(af[k, L.AGG_V_MAX]), "cell_v_max_at": where(L.AGG_V_MAX_CELL),
                "cell_t_min": _num(af[k, L.AGG_T_MIN]), "cell_t_min_at": where(L.AGG_T_MIN_CELL),
                "cell_t_max": _num(af[k, L.AGG_T_MAX]), "cell_t_max_at": where(L.AGG_T_MAX_CELL),
                "balancing_cells": int(c["balancing"][k].sum()), "bypassed_packs": int(c["bypass"][k].sum())})
        return {"clusters": clusters, "cells_per_cluster": n_cells, "packs_per_cluster": int(c["bypass"].shape[1])}

    def cells(self) -> dict | None:
        """Every cell's voltage (mV, integers) and temperature (0.1 °C, integers), None where not fresh or
        not measured; balancing cells and bypassed packs as index lists. Integers keep 32 × 400 cells to
        about 200 kB of JSON."""
        self._last_read = time.monotonic()
        with self._lock:
            c = self._cells
        if c is None:
            return None
        ok = c["fresh"] != 0

        def ints(a, scale):
            # vectorised: this runs in the HTTP thread, which shares the GIL with the control loop
            good = ok & np.isfinite(a)
            out = np.where(good, np.round(a * scale), 0).astype(np.int64).astype(object)
            out[~good] = None
            return out.tolist()
        return {"cell_mv": ints(c["cell_v"], 1000.0), "cell_t_decic": ints(c["cell_t"], 10.0),
                "balancing": [np.flatnonzero(r).tolist() for r in c["balancing"]],
                "bypassed_packs": [np.flatnonzero(r).tolist() for r in c["bypass"]],
                "packs_per_cluster": int(c["bypass"].shape[1])}
