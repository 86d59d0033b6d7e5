"""CAN frames of the battery-to-inverter protocol and the project's cell-level messages (drivers/can/*.dbc),
encoded and decoded with cantools.

`FrameDecoder` never raises on input: an unknown ID or a frame of the wrong length is dropped and counted
(DESIGN.md: bad input gets counted, never a crash). `CellAssembler` writes decoded cell frames straight into
the native core's cell arrays and marks those cells fresh, so the fast path sees cell data the moment it
arrives; a cell whose frame stops arriving goes stale by age (`stale_cells`).
"""
from __future__ import annotations

from collections import Counter
from importlib import resources

import cantools
import numpy as np

CELL_V_ID = 0x600
CELL_T_ID = 0x640
CELLS_PER_V_FRAME = 3
CELLS_PER_T_FRAME = 6
_V_SIGNALS = ("cell_a_v", "cell_b_v", "cell_c_v")
_T_SIGNALS = ("cell_a_degc", "cell_b_degc", "cell_c_degc", "cell_d_degc", "cell_e_degc", "cell_f_degc")
T_NOT_AVAILABLE_RAW = 0xFF
# messages whose older / newer variants differ in length: frame ID → accepted lengths. A shorter frame
# decodes without the newer signals (0x355: the older 4-byte SOC/SOH, the newer adds SOC in 0.01 %); a
# longer one's padding is ignored (senders that always send 8 bytes).
VARIANT_LENGTHS = {0x355: (4, 6, 8)}


def load_database(name: str = "battery_inverter.dbc") -> cantools.database.Database:
    path = resources.files("ems.drivers").joinpath("can", name)
    return cantools.database.load_string(path.read_text(encoding="ascii"), database_format="dbc")


class FrameDecoder:
    def __init__(self, db=None):
        self.db = db or load_database()
        self.counters: Counter = Counter()

    def decode(self, frame_id: int, data: bytes) -> tuple[str, dict] | None:
        """(message name, signals) or None for a frame that cannot be trusted (counted by reason)."""
        try:
            msg = self.db.get_message_by_frame_id(frame_id)
        except KeyError:
            self.counters["unknown_id"] += 1
            return None
        n = len(data)
        if n != msg.length and n not in VARIANT_LENGTHS.get(frame_id, ()):
            self.counters["wrong_length"] += 1
            return None
        try:
            signals = msg.decode(bytes(data[:msg.length]), decode_choices=False, scaling=True,
                                 allow_truncated=n < msg.length)
        except Exception:                      # cantools raises several types on malformed payloads
            self.counters["malformed"] += 1
            return None
        self.counters["ok"] += 1
        return msg.name, signals


class CellAssembler:
    """Cell frames → cell_v / cell_t / fresh arrays of shape (clusters, cells)."""

    def __init__(self, cell_v: np.ndarray, cell_t: np.ndarray, fresh: np.ndarray, db=None):
        self.cell_v, self.cell_t, self.fresh = cell_v, cell_t, fresh
        self.clusters, self.cells = cell_v.shape
        self.decoder = FrameDecoder(db)
        self.v_seen_s = np.full(cell_v.shape, -np.inf)
        self.t_seen_s = np.full(cell_v.shape, -np.inf)

    def feed(self, frame_id: int, data: bytes, now_s: float) -> bool:
        decoded = self.decoder.decode(frame_id, data)
        if decoded is None:
            return False
        name, sig = decoded
        if name not in ("ClusterCellVoltages", "ClusterCellTemperatures"):
            return False
        c, g = int(sig["cluster"]), int(sig["group"])
        per = CELLS_PER_V_FRAME if name == "ClusterCellVoltages" else CELLS_PER_T_FRAME
        first = g * per
        if c >= self.clusters or first >= self.cells:
            self.decoder.counters["out_of_stack"] += 1
            return False
        if name == "ClusterCellVoltages":
            for k, s in enumerate(_V_SIGNALS):
                if first + k < self.cells:
                    self.cell_v[c, first + k] = sig[s]
                    self.v_seen_s[c, first + k] = now_s
        else:
            raw = data[2:8]
            for k, s in enumerate(_T_SIGNALS):
                if first + k < self.cells:
                    self.cell_t[c, first + k] = np.nan if raw[k] == T_NOT_AVAILABLE_RAW else sig[s]
                    self.t_seen_s[c, first + k] = now_s
        return True

    def stale_cells(self, now_s: float, max_age_s: float) -> None:
        """Mark cells fresh only while both their voltage and temperature are recent enough."""
        np.copyto(self.fresh, ((now_s - self.v_seen_s) <= max_age_s) & ((now_s - self.t_seen_s) <= max_age_s),
                  casting="unsafe")


def encode_cells(cell_v: np.ndarray, cell_t: np.ndarray, db=None) -> list[tuple[int, bytes]]:
    """All cell frames of a stack (the simulated BMS's side); NaN temperatures are sent as not available."""
    db = db or load_database()
    mv, mt = db.get_message_by_frame_id(CELL_V_ID), db.get_message_by_frame_id(CELL_T_ID)
    clusters, cells = cell_v.shape
    frames = []
    for c in range(clusters):
        for g in range(-(-cells // CELLS_PER_V_FRAME)):
            vals = {s: 0.0 for s in _V_SIGNALS}
            for k, s in enumerate(_V_SIGNALS):
                i = g * CELLS_PER_V_FRAME + k
                if i < cells:
                    vals[s] = float(np.clip(cell_v[c, i], 0.0, 65.535))
            frames.append((CELL_V_ID, mv.encode({"cluster": c, "group": g, **vals})))
        for g in range(-(-cells // CELLS_PER_T_FRAME)):
            vals, missing = {}, []
            for k, s in enumerate(_T_SIGNALS):
                i = g * CELLS_PER_T_FRAME + k
                t = cell_t[c, i] if i < cells else np.nan
                vals[s] = float(np.clip(t, -40.0, 87.0)) if np.isfinite(t) else -40.0
                if not np.isfinite(t):
                    missing.append(k)
            data = bytearray(mt.encode({"cluster": c, "group": g, **vals}))
            for k in missing:
                data[2 + k] = T_NOT_AVAILABLE_RAW
            frames.append((CELL_T_ID, bytes(data)))
    return frames
