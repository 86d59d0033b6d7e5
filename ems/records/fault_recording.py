"""Fault recording (000_… §3.3.3 "Automatically save fault recording file"): the last N seconds of fast-loop
data in a ring, saved to a CSV named after the time and the code when a cluster trips.

`record()` runs on the fast loop after every tick: it copies a dozen values into a preallocated NumPy row,
no allocation, no I/O. On a trip the ring is copied (in time order) and handed to the recorder's writer
thread, which writes the file; the loop never waits on the disk.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ems._core import layout as L

COLUMNS = ("t_s", "cell_v_max_v", "cell_v_min_v", "cell_t_max_degc", "cell_t_min_degc", "stack_i_a",
           "cluster_i_max_a", "cluster_i_min_a", "charge_limit_w", "discharge_limit_w", "stack_charge_limit_a",
           "stack_discharge_limit_a", "target_w", "setpoint_w", "soc_pct")


class FaultRing:
    def __init__(self, seconds: float, fast_period_s: float):
        self.rows = max(2, int(math.ceil(seconds / fast_period_s)) + 1)
        self.data = np.full((self.rows, len(COLUMNS)), np.nan)
        self.n = 0                     # rows written so far (the ring holds the last `rows`)
        self.pending: list[tuple[float, int | None, int]] = []    # trips seen this tick: (t, code, device)

    def record(self, t_s: float, b) -> None:
        """One row from the core's buffers after a fast tick."""
        row = self.data[self.n % self.rows]
        sf, res, cl = b.stack_f, b.results, b.cluster_in
        row[0] = t_s
        row[1] = sf[L.AGG_V_MAX]
        row[2] = sf[L.AGG_V_MIN]
        row[3] = sf[L.AGG_T_MAX]
        row[4] = sf[L.AGG_T_MIN]
        i = cl[:, L.CL_I]
        row[5] = i.sum()
        row[6] = i.max()
        row[7] = i.min()
        row[8] = res[L.TO_CHG_LIMIT_W]
        row[9] = res[L.TO_DCHG_LIMIT_W]
        row[10] = res[L.TO_STACK_CHG_A]
        row[11] = res[L.TO_STACK_DCHG_A]
        row[12] = res[L.TO_TARGET_W]
        row[13] = res[L.TO_SETPOINT_W]
        row[14] = b.stack_soc[L.SOC_MEAN]
        self.n += 1

    def trip(self, t_s: float, code: int | None, device_id: int) -> None:
        self.pending.append((t_s, code, device_id))

    def take(self) -> list[tuple[float, int | None, int, np.ndarray]]:
        """Recordings due (after this tick's row is in): (t, code, device, rows in time order)."""
        if not self.pending:
            return []
        k = self.n % self.rows
        ordered = np.concatenate([self.data[k:], self.data[:k]]) if self.n >= self.rows else self.data[:self.n].copy()
        out = [(t, code, dev, ordered) for t, code, dev in self.pending]
        self.pending = []
        return out


def file_name(t_s: float, code: int | None, device_id: int) -> str:
    stamp = datetime.fromtimestamp(t_s, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{stamp}Z_{code if code is not None else 'trip'}_0x{device_id:08X}.csv"


def write_file(directory: Path, t_s: float, code: int | None, device_id: int, rows: np.ndarray) -> Path:
    """Write one recording (temp file, then rename: a crash never leaves half a file under the final name)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name(t_s, code, device_id)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for r in rows:
            fh.write(",".join("" if math.isnan(v) else f"{v:.6g}" if k else f"{v:.3f}" for k, v in enumerate(r)) + "\n")
    tmp.replace(path)
    return path
