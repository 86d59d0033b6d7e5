"""CAN frames of the battery-to-inverter protocol and the project's cell-level messages (drivers/can/*.dbc),
encoded and decoded with cantools.

`FrameDecoder` never raises on input: an unknown ID or a frame of the wrong length is dropped and counted
(DESIGN.md: bad input gets counted, never a crash). Which message means what is the BMS profile's business
(ems.comm.can_profiles); the link (ems.comm.can_link) writes cell frames straight into the core's arrays.
"""
from __future__ import annotations

from collections import Counter
from importlib import resources

import cantools

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
