"""Whose fault a stale cell is: its link's or its sensor's.

A BMS sends its cluster values often (CAN: every 100 ms) and its cells in slower frames (every second or
more). A cell counts as stale `cell_age_s` after its last frame, and the link as lost (battery_lost, 7) one
comm-loss age after the last cluster data. Without more, a link that dies shortly after it came up — before
the cells' first frames arrived, or with the cells' last frames up to one cell period older than the
clusters' — shows stale cells on a "live" link for seconds, and the cell-sensor rows of the protection
table (cell_data_fault 40010, temp_sensor_fault 40011) latch faults that need a reset for what was only a
link outage.

So a stale cell is *awaited*, not failed, while
- the link is silent: no frame of any kind for half a cell age (well before any cell goes stale), or
- the link came back less than one cell age ago (the cells have not had their age to arrive).
While awaited, the cell-sensor rows hold their state (`CL_CELLS_AWAITED`); derating still allows no
current for a cell without data, so nothing is allowed that the data does not support. A cell whose frames
stop while the link lives is a sensor fault as before: one cell age, then the row's own debounce.
"""
from __future__ import annotations


class CellWait:
    def __init__(self, cell_age_s: float):
        if not cell_age_s > 0.0:
            raise ValueError(f"cell age must be > 0 s, got {cell_age_s}")
        self.cell_age_s = float(cell_age_s)
        self.silent_after_s = 0.5 * self.cell_age_s
        self._up_since_s: float | None = None      # when frames resumed after the last silence

    def awaited(self, now_s: float, last_rx_s: float | None) -> bool:
        """True while a stale cell is the link's: silent now, or back for less than one cell age.
        last_rx_s: when the link's last frame (or answer) of any kind arrived; None: never."""
        if last_rx_s is None or now_s - last_rx_s > self.silent_after_s:
            self._up_since_s = None
            return True
        if self._up_since_s is None:
            self._up_since_s = last_rx_s
        return now_s - self._up_since_s <= self.cell_age_s
