"""The BMS on CAN (python-can): SocketCAN on the board, the `virtual` interface in tests and simulation.

`BmsCanLink` is the EMS side: it drains received frames, decodes them (bad frames are counted, never
raised), writes cell frames into the native core's arrays, keeps the stack values with their arrival
times, supervises each message's timeout (a message older than its timeout reads as None, the
staleness rule) and sends the inverter keep-alive (0x305) the protocol expects every second.
`SimBmsCan` is the simulated BMS: it sends the same messages from the plant.
"""
from __future__ import annotations

import can
import numpy as np

from ems.comm.can_codec import CellAssembler, encode_cells, load_database

STACK_MESSAGES = {           # message → timeout, s (the battery sends them about every second)
    "BatteryLimits": 3.0,
    "BatterySocSoh": 3.0,
    "BatteryActualValues": 3.0,
    "BatteryProtectionsAlarms": 3.0,
    "BatteryRequestFlags": 3.0,
}
OPTIONAL_MESSAGES = {        # sent by some batteries only: supervised once seen, never "lost" before
    "BatteryAlarmsWarnings": 3.0,
}
# 0x35A's two-bit states that mean "active", by sender convention (see the DBC's comment)
ALARM_35A_ACTIVE = {"sma": (1,), "victron": (1, 2)}
KEEPALIVE_PERIOD_S = 1.0
CLUSTER_TIMEOUT_S = 3.0
# per-cluster table columns (ClusterStatus 0x680 + ClusterLimits 0x6C0)
CL_V, CL_I, CL_INSULATION, CL_CHG_A, CL_DCHG_A, CL_CONNECTED, CL_CHG_PROHIBITED, CL_DCHG_PROHIBITED = range(8)


def open_bus(interface: str = "virtual", channel: str = "ems0", **kw) -> can.BusABC:
    """SocketCAN on the board (interface="socketcan", channel="can0"), the virtual bus in tests."""
    return can.Bus(interface=interface, channel=channel, **kw)


class BmsCanLink:
    def __init__(self, bus: can.BusABC, cell_v: np.ndarray, cell_t: np.ndarray, fresh: np.ndarray,
                 timeouts_s: dict[str, float] | None = None, cell_max_age_s: float = 5.0,
                 alarm_encoding: str = "sma"):
        if alarm_encoding not in ALARM_35A_ACTIVE:
            raise ValueError(f"alarm_encoding must be one of {sorted(ALARM_35A_ACTIVE)}, got {alarm_encoding!r}")
        self.alarm_encoding = alarm_encoding
        self.bus = bus
        self.db = load_database()
        self.cells = CellAssembler(cell_v, cell_t, fresh, self.db)
        self.timeouts_s = dict(STACK_MESSAGES, **OPTIONAL_MESSAGES, **(timeouts_s or {}))
        self.cell_max_age_s = cell_max_age_s
        self.latest: dict[str, tuple[dict, float]] = {}
        self._keepalive = self.db.get_message_by_name("InverterKeepAlive")
        self._next_keepalive_s = -1.0
        self._alive = 0
        n = cell_v.shape[0]
        self.cluster = np.zeros((n, 8))
        self.cluster_status_s = np.full(n, -np.inf)     # arrival time of each cluster's last status frame
        self.cluster_limits_s = np.full(n, -np.inf)

    @property
    def counters(self):
        return self.cells.decoder.counters

    def poll(self, now_s: float, max_frames: int = 100_000) -> int:
        """Drain what has arrived (non-blocking); returns how many frames were taken."""
        n = 0
        while n < max_frames:
            msg = self.bus.recv(timeout=0.0)
            if msg is None:
                break
            n += 1
            if msg.is_extended_id or msg.is_remote_frame or msg.is_error_frame:
                self.counters["ignored"] += 1
                continue
            if msg.arbitration_id in (0x600, 0x640):
                self.cells.feed(msg.arbitration_id, bytes(msg.data), now_s)
                continue
            decoded = self.cells.decoder.decode(msg.arbitration_id, bytes(msg.data))
            if decoded is not None:
                name, signals = decoded
                if name in ("ClusterStatus", "ClusterLimits"):
                    self._cluster_frame(name, signals, now_s)
                else:
                    self.latest[name] = (signals, now_s)
        self.cells.stale_cells(now_s, self.cell_max_age_s)
        if now_s >= self._next_keepalive_s:
            self._alive = (self._alive + 1) % 256
            self.bus.send(can.Message(arbitration_id=self._keepalive.frame_id, is_extended_id=False,
                                      data=self._keepalive.encode({"alive_counter": self._alive})))
            self._next_keepalive_s = now_s + KEEPALIVE_PERIOD_S
        return n

    def _cluster_frame(self, name: str, sig: dict, now_s: float) -> None:
        c = int(sig["cluster"])
        if c >= self.cluster.shape[0]:
            self.counters["out_of_stack"] += 1
            return
        row = self.cluster[c]
        if name == "ClusterStatus":
            row[CL_V], row[CL_I], row[CL_INSULATION] = sig["voltage_v"], sig["current_a"], sig["insulation_kohm"]
            row[CL_CONNECTED], row[CL_CHG_PROHIBITED] = sig["connected"], sig["charge_prohibited"]
            row[CL_DCHG_PROHIBITED] = sig["discharge_prohibited"]
            self.cluster_status_s[c] = now_s
        else:
            row[CL_CHG_A], row[CL_DCHG_A] = sig["charge_current_limit_a"], sig["discharge_current_limit_a"]
            self.cluster_limits_s[c] = now_s

    def clusters_fresh(self, now_s: float, timeout_s: float = CLUSTER_TIMEOUT_S) -> bool:
        """Every cluster's status and limits arrived within timeout_s (else the stack counts as lost)."""
        return bool((now_s - self.cluster_status_s <= timeout_s).all()
                    and (now_s - self.cluster_limits_s <= timeout_s).all())

    def value(self, message: str, now_s: float) -> dict | None:
        """The message's latest signals, or None once older than its timeout (or never received)."""
        entry = self.latest.get(message)
        if entry is None or now_s - entry[1] > self.timeouts_s.get(message, 3.0):
            return None
        return entry[0]

    def lost(self, now_s: float) -> set[str]:
        """Messages past their timeout; an optional message counts only once it has been received."""
        return {m for m in self.timeouts_s if self.value(m, now_s) is None
                and (m not in OPTIONAL_MESSAGES or m in self.latest)}

    def soc_pct(self, now_s: float) -> float | None:
        """The BMS's SOC: the newer 0x355's 0.01 % value when the battery sends it, else the whole percent."""
        v = self.value("BatterySocSoh", now_s)
        if v is None:
            return None
        return float(v.get("soc_hires_pct", v["soc_pct"]))

    def flags(self, now_s: float) -> dict[str, str]:
        """The battery's own active protections, alarms and warnings: flag → "protection" / "alarm" /
        "warning", from 0x359 (bits) and 0x35A (two-bit states, read per `alarm_encoding`)."""
        out: dict[str, str] = {}
        p = self.value("BatteryProtectionsAlarms", now_s)
        for name, v in (p or {}).items():
            if name != "module_count" and v:
                out[name] = "protection" if name.startswith("protection_") else "alarm"
        a = self.value("BatteryAlarmsWarnings", now_s)
        active = ALARM_35A_ACTIVE[self.alarm_encoding]
        for name, v in (a or {}).items():
            if int(v) in active:
                out[name] = "alarm" if name.startswith("alarm_") else "warning"
        return out


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
    """The simulated battery on the bus: stack messages and cell frames from a StackPlant-like source."""

    def __init__(self, bus: can.BusABC):
        self.bus = bus
        self.db = load_database()
        self.keepalives_seen = 0

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
            self.bus.send(can.Message(arbitration_id=m.frame_id, is_extended_id=False, data=_encode_clipped(m, signals)))

    def send_clusters(self, voltage_v, current_a, charge_limit_a, discharge_limit_a, connected, charge_prohibited,
                      discharge_prohibited, insulation_kohm=5000.0) -> None:
        """Per-cluster status (current > 0 discharging, our sign) and limits, one frame pair per cluster."""
        st, lim = self.db.get_message_by_name("ClusterStatus"), self.db.get_message_by_name("ClusterLimits")
        for c in range(len(voltage_v)):
            self.bus.send(can.Message(arbitration_id=st.frame_id, is_extended_id=False, data=st.encode({
                "cluster": c, "connected": int(bool(connected[c])), "charge_prohibited": int(bool(charge_prohibited[c])),
                "discharge_prohibited": int(bool(discharge_prohibited[c])),
                "voltage_v": float(np.clip(voltage_v[c], 0.0, 6553.5)),
                "current_a": float(np.clip(current_a[c], -3276.8, 3276.7)),
                "insulation_kohm": float(np.clip(insulation_kohm, 0, 65535))})))
            self.bus.send(can.Message(arbitration_id=lim.frame_id, is_extended_id=False, data=lim.encode({
                "cluster": c, "charge_current_limit_a": float(np.clip(charge_limit_a[c], 0.0, 6553.5)),
                "discharge_current_limit_a": float(np.clip(discharge_limit_a[c], 0.0, 6553.5))})))

    def send_cells(self, cell_v: np.ndarray, cell_t: np.ndarray) -> None:
        for fid, data in encode_cells(cell_v, cell_t, self.db):
            self.bus.send(can.Message(arbitration_id=fid, is_extended_id=False, data=data))

    def drain(self) -> None:
        """Take what the EMS sent (keep-alives)."""
        while (msg := self.bus.recv(timeout=0.0)) is not None:
            if msg.arbitration_id == 0x305:
                self.keepalives_seen += 1
