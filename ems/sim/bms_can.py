"""The simulated BMS on CAN: the project's cell protocol (EMS-CAN-CELLS) with the de-facto stack messages
(0x351 … 0x35C) beside it, from the simulated stack. It only sends; what the EMS sends back (keep-alive,
contactor command) it takes with `take`."""
from __future__ import annotations

import can
import numpy as np

from ems.comm.can_codec import load_database

CELLS_PER_V_FRAME = 3
CELLS_PER_T_FRAME = 6
_V_SIGNALS = ("cell_a_v", "cell_b_v", "cell_c_v")
_T_SIGNALS = ("cell_a_degc", "cell_b_degc", "cell_c_degc", "cell_d_degc", "cell_e_degc", "cell_f_degc")
T_NOT_AVAILABLE_RAW = 0xFF


def encode_cells(cell_v: np.ndarray, cell_t: np.ndarray, db=None) -> list[tuple[int, bytes]]:
    """All cell frames of a stack; NaN temperatures are sent as not available."""
    db = db or load_database()
    mv, mt = db.get_message_by_name("ClusterCellVoltages"), db.get_message_by_name("ClusterCellTemperatures")
    clusters, cells = cell_v.shape
    frames = []
    for c in range(clusters):
        for g in range(-(-cells // CELLS_PER_V_FRAME)):
            vals = {s: 0.0 for s in _V_SIGNALS}
            for k, s in enumerate(_V_SIGNALS):
                i = g * CELLS_PER_V_FRAME + k
                if i < cells:
                    vals[s] = float(np.clip(cell_v[c, i], 0.0, 65.535))
            frames.append((mv.frame_id, mv.encode({"cluster": c, "group": g, **vals})))
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
            frames.append((mt.frame_id, bytes(data)))
    return frames


def _encode_clipped(message, signals: dict) -> bytes:
    """Encode with every value clipped into its signal's range: the low-voltage protocol's 327 V / 3276 A
    scales cannot carry a container stack's totals, and a clipped value beats a frame that is never sent."""
    out = {}
    for s in message.signals:
        v = signals[s.name]
        if s.minimum is not None and s.maximum is not None and not isinstance(v, str):
            v = min(max(v, s.minimum), s.maximum)
        out[s.name] = v
    return message.encode(out)


class SimBmsCan:
    """The simulated battery on a bus (anything with python-can's `send`)."""

    def __init__(self, bus):
        self.bus = bus
        self.db = load_database()
        self.keepalives_seen = 0
        self.open_mask = 0
        self._cmd = self.db.get_message_by_name("EmsCommand")

    def _send(self, frame_id: int, data: bytes) -> None:
        self.bus.send(can.Message(arbitration_id=frame_id, is_extended_id=False, data=data))

    def send_stack(self, voltage_v: float, current_a: float, temperature_degc: float, soc_pct: float,
                   soh_pct: float, charge_limit_a: float, discharge_limit_a: float, charge_voltage_v: float,
                   discharge_voltage_v: float, charge_enable: bool, discharge_enable: bool,
                   protections: dict | None = None) -> None:
        db = self.db
        frames = {
            "BatteryLimits": {"charge_voltage_limit_v": charge_voltage_v, "charge_current_limit_a": charge_limit_a,
                              "discharge_current_limit_a": discharge_limit_a,
                              "discharge_voltage_limit_v": discharge_voltage_v},
            "BatterySocSoh": {"soc_pct": round(soc_pct), "soh_pct": round(soh_pct),
                              "soc_hires_pct": min(max(soc_pct, 0.0), 100.0)},
            # the protocol counts charging current as positive: our sign (> 0 discharging) is flipped here
            "BatteryActualValues": {"voltage_v": voltage_v, "current_a": -current_a,
                                    "temperature_degc": temperature_degc},
            "BatteryProtectionsAlarms": {s.name: 0 for s in db.get_message_by_name("BatteryProtectionsAlarms").signals}
                                        | (protections or {}) | {"module_count": 1},
            "BatteryRequestFlags": {"full_charge_request": 0, "force_charge_request_2": 0, "force_charge_request_1": 0,
                                    "discharge_enable": int(discharge_enable), "charge_enable": int(charge_enable)},
        }
        for name, signals in frames.items():
            m = db.get_message_by_name(name)
            self._send(m.frame_id, _encode_clipped(m, signals))

    def send_clusters(self, voltage_v, current_a, charge_limit_a, discharge_limit_a, connected, charge_prohibited,
                      discharge_prohibited, insulation_kohm=5000.0) -> None:
        """Per-cluster status (current > 0 discharging, our sign) and limits, one frame pair per cluster."""
        st, lim = self.db.get_message_by_name("ClusterStatus"), self.db.get_message_by_name("ClusterLimits")
        for c in range(len(voltage_v)):
            self._send(st.frame_id, st.encode({
                "cluster": c, "connected": int(bool(connected[c])), "charge_prohibited": int(bool(charge_prohibited[c])),
                "discharge_prohibited": int(bool(discharge_prohibited[c])),
                "voltage_v": float(np.clip(voltage_v[c], 0.0, 6553.5)),
                "current_a": float(np.clip(current_a[c], -3276.8, 3276.7)),
                "insulation_kohm": float(np.clip(insulation_kohm, 0, 65535))}))
            self._send(lim.frame_id, lim.encode({
                "cluster": c, "charge_current_limit_a": float(np.clip(charge_limit_a[c], 0.0, 6553.5)),
                "discharge_current_limit_a": float(np.clip(discharge_limit_a[c], 0.0, 6553.5))}))

    def send_cells(self, cell_v: np.ndarray, cell_t: np.ndarray) -> None:
        for fid, data in encode_cells(cell_v, cell_t, self.db):
            self._send(fid, data)

    def take(self, msg) -> None:
        """A frame from the EMS: the keep-alive is counted; the contactor command is obeyed (a malformed one
        is ignored, as a BMS would)."""
        if msg.arbitration_id == 0x305:
            self.keepalives_seen += 1
        elif msg.arbitration_id == self._cmd.frame_id:
            try:
                self.open_mask = int(self._cmd.decode(bytes(msg.data))["open_contactors_mask"])
            except Exception:
                pass

    def drain(self) -> None:
        """Take what the EMS sent on this side's bus."""
        while (msg := self.bus.recv(timeout=0.0)) is not None:
            self.take(msg)
