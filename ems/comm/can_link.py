"""The BMS on CAN, the EMS side: python-can (SocketCAN on the board, a socketcand server between processes,
the `virtual` interface in tests), decoded as the site's CAN BMS profile says (ems.comm.can_profiles).

`BmsCanLink` drains received frames without blocking, decodes them (bad frames are counted, never raised),
writes cell frames straight into the native core's arrays and keeps their age (a cell whose frames stop
goes stale), keeps each cluster's values with their arrival times and each stack message with its own, and
sends what the BMS expects from the EMS: the keep-alive and the contactor command (on change and every
period). A stack-level profile fills one cluster from the stack's values and every cell of it with the
stack's average cell (voltage / cells in series) and its one temperature (docs/devices.md says what
protection that costs).

The bus may be a python-can bus or an `ems.comm.can_bus.CanPort` (which reopens itself); an error of the bus
is counted and reported by it, never raised into the control loop.
"""
from __future__ import annotations

import can
import numpy as np

from ems.comm.cell_wait import CellWait
from ems.comm.can_codec import FrameDecoder
from ems.comm.can_profiles import CanProfile, can_profiles

# 0x35A's two-bit states that mean "active", by sender convention (see the DBC's comment)
ALARM_35A_ACTIVE = {"sma": (1,), "victron": (1, 2)}
CLUSTER_TIMEOUT_S = 3.0
# per-cluster table columns
CL_V, CL_I, CL_INSULATION, CL_CHG_A, CL_DCHG_A, CL_CONNECTED, CL_CHG_PROHIBITED, CL_DCHG_PROHIBITED = range(8)
_CLUSTER_COLUMNS = {"voltage_v": CL_V, "current_a": CL_I, "insulation_kohm": CL_INSULATION, "charge_limit_a": CL_CHG_A,
                    "discharge_limit_a": CL_DCHG_A, "connected": CL_CONNECTED, "charge_prohibited": CL_CHG_PROHIBITED,
                    "discharge_prohibited": CL_DCHG_PROHIBITED}


def open_bus(interface: str = "virtual", channel: str = "ems0", **kw) -> can.BusABC:
    """SocketCAN on the board (interface="socketcan", channel="can0"), the virtual bus in tests."""
    return can.Bus(interface=interface, channel=channel, **kw)


class _Cells:
    """One cell quantity's frames → its core array: raw signals scaled here so a 'not available' raw value
    becomes NaN before scaling can hide it."""

    def __init__(self, db, spec, out: np.ndarray):
        m = db.get_message_by_name(spec.message)
        self.frame_id, self.message, self.spec, self.out = m.frame_id, m, spec, out
        sig = {s.name: s for s in m.signals}
        self.scale = [(name, float(sig[name].scale), float(sig[name].offset)) for name in spec.signals]
        self.index = {name: (float(sig[name].scale), float(sig[name].offset)) for name in (spec.cluster, spec.group)}
        self.seen_s = np.full(out.shape, -np.inf)

    def feed(self, data: bytes, now_s: float, counters) -> None:
        try:
            raw = self.message.decode(data, decode_choices=False, scaling=False)
        except Exception:                      # cantools raises several types on malformed payloads
            counters["malformed"] += 1
            return
        sc, oc = self.index[self.spec.cluster]
        sg, og = self.index[self.spec.group]
        c, first = int(raw[self.spec.cluster] * sc + oc), int(raw[self.spec.group] * sg + og) * len(self.scale)
        clusters, cells = self.out.shape
        if not (0 <= c < clusters and 0 <= first < cells):
            counters["out_of_stack"] += 1
            return
        na = self.spec.not_available
        for k, (name, scale, offset) in enumerate(self.scale):
            i = first + k
            if i < cells:
                r = raw[name]
                self.out[c, i] = np.nan if r == na else r * scale + offset
                self.seen_s[c, i] = now_s
        counters["ok"] += 1


class BmsCanLink:
    def __init__(self, bus, cell_v: np.ndarray, cell_t: np.ndarray, fresh: np.ndarray,
                 profile: CanProfile | None = None, timeouts_s: dict[str, float] | None = None,
                 cell_max_age_s: float = 5.0, alarm_encoding: str = "sma"):
        if alarm_encoding not in ALARM_35A_ACTIVE:
            raise ValueError(f"alarm_encoding must be one of {sorted(ALARM_35A_ACTIVE)}, got {alarm_encoding!r}")
        self.profile = p = profile or can_profiles()["EMS-CAN-CELLS"]
        self.alarm_encoding = alarm_encoding
        self.bus = bus
        self.db = p.db
        self.decoder = FrameDecoder(p.db)
        self.cell_v, self.cell_t, self.fresh = cell_v, cell_t, fresh
        self.timeouts_s = dict(p.timeouts, **p.optional, **(timeouts_s or {}))
        self.cell_max_age_s = cell_max_age_s
        self.latest: dict[str, tuple[dict, float]] = {}
        n = cell_v.shape[0]
        self.cluster = np.zeros((n, 8))
        self.cluster[:, CL_INSULATION] = np.nan          # unknown until the BMS reports it (if it does)
        self.cells = {q: _Cells(p.db, spec, cell_v if q == "voltage_v" else cell_t) for q, spec in p.cells.items()}
        self._cell_ids = {c.frame_id: c for c in self.cells.values()}
        self._cluster_ids: dict[int, tuple[str, list[tuple[str, int, float]]]] = {}
        for q, ref in p.cluster.items():
            fid = p.db.get_message_by_name(ref.message).frame_id
            self._cluster_ids.setdefault(fid, (ref.message, []))[1].append((ref.signal, _CLUSTER_COLUMNS[q], ref.scale))
        self.cluster_seen_s = {name: np.full(n, -np.inf) for name, _ in self._cluster_ids.values()}
        self._oldest_s = -np.inf             # the oldest cluster frame's arrival (kept as frames arrive)
        self._aged_s = -np.inf
        self.last_rx_s: float | None = None  # when the last frame of any kind arrived
        self._cell_wait = CellWait(cell_max_age_s)
        self.cells_awaited = True            # a stale cell is the link's, not its sensor's (ems.comm.cell_wait)
        self.cluster_updates = 0             # cluster data taken so far (the device layer passes on only news)
        self._periodic_due = {"keepalive": -1.0, "command": -1.0}
        self._counter = {"keepalive": 0, "command": 0}
        self._open_mask: int | None = None
        self._sent_mask: int | None = None
        self.send_errors = 0

    @property
    def counters(self):
        return self.decoder.counters

    # ------------------------------------------------------------------ receive
    def poll(self, now_s: float, max_frames: int = 100_000) -> int:
        """Drain what has arrived (non-blocking); send what is due; returns how many frames were taken."""
        n = cells_in = clusters_in = 0
        while n < max_frames:
            try:
                msg = self.bus.recv(timeout=0.0)
            except (can.CanError, OSError):       # counted by a CanPort, which reopens; a bare bus: next poll
                self.counters["bus_error"] += 1
                break
            if msg is None:
                break
            n += 1
            if msg.is_extended_id or msg.is_remote_frame or msg.is_error_frame:
                self.counters["ignored"] += 1
                continue
            cells = self._cell_ids.get(msg.arbitration_id)
            if cells is not None:
                cells.feed(bytes(msg.data), now_s, self.counters)
                cells_in += 1
                continue
            decoded = self.decoder.decode(msg.arbitration_id, bytes(msg.data))
            if decoded is None:
                continue
            name, signals = decoded
            cl = self._cluster_ids.get(msg.arbitration_id)
            if cl is not None:
                self._cluster_frame(name, cl[1], signals, now_s)
                clusters_in += 1
            else:
                self.latest[name] = (signals, now_s)
        if n:
            self.last_rx_s = now_s
        self.cluster_updates += clusters_in
        if clusters_in:
            self._oldest_s = min(float(seen.min()) for seen in self.cluster_seen_s.values())
        if self.profile.level == "stack":
            self._stack_as_cluster(now_s)
        elif self.cells and (cells_in or now_s - self._aged_s >= 0.1):     # cells age every 100 ms
            self._aged_s = now_s
            v, t = self.cells["voltage_v"].seen_s, self.cells["temperature_degc"].seen_s
            age = self.cell_max_age_s
            np.copyto(self.fresh, ((now_s - v) <= age) & ((now_s - t) <= age), casting="unsafe")
        self.cells_awaited = self._cell_wait.awaited(now_s, self.last_rx_s)
        self._send_due(now_s)
        return n

    def _cluster_frame(self, name: str, columns, sig: dict, now_s: float) -> None:
        c = int(sig[self.profile.cluster_index])
        if not 0 <= c < self.cluster.shape[0]:
            self.counters["out_of_stack"] += 1
            return
        row = self.cluster[c]
        for signal, col, scale in columns:
            row[col] = float(sig[signal]) * scale
        self.cluster_seen_s[name][c] = now_s

    def _stack_as_cluster(self, now_s: float) -> None:
        """Level stack: cluster 0 from the stack's values; its cells are the stack's average cell."""
        s = {q: self.stack_value(q, now_s) for q in ("voltage_v", "current_a", "temperature_degc", "charge_limit_a",
                                                       "discharge_limit_a", "charge_enable", "discharge_enable")}
        fresh = all(s[q] is not None for q in ("voltage_v", "current_a", "temperature_degc", "charge_limit_a",
                                               "discharge_limit_a"))
        self.fresh[:] = 1 if fresh else 0
        if not fresh:
            return
        row = self.cluster[0]
        row[CL_V], row[CL_I] = s["voltage_v"], s["current_a"]
        row[CL_CHG_A], row[CL_DCHG_A] = max(s["charge_limit_a"], 0.0), max(s["discharge_limit_a"], 0.0)
        row[CL_CONNECTED] = 1.0          # contactor state is not in the protocol: an open one shows as 0 A limits
        row[CL_CHG_PROHIBITED] = float(s["charge_enable"] == 0) if s["charge_enable"] is not None else 0.0
        row[CL_DCHG_PROHIBITED] = float(s["discharge_enable"] == 0) if s["discharge_enable"] is not None else 0.0
        self.cell_v[0, :] = s["voltage_v"] / self.cell_v.shape[1]
        self.cell_t[0, :] = s["temperature_degc"]
        if self._oldest_s != now_s:
            self.cluster_updates += 1
        self._oldest_s = now_s

    def clusters_fresh(self, now_s: float, timeout_s: float = CLUSTER_TIMEOUT_S) -> bool:
        """Every cluster's messages arrived within timeout_s (else the stack counts as lost)."""
        return now_s - self._oldest_s <= timeout_s

    def value(self, message: str, now_s: float) -> dict | None:
        """The message's latest signals, or None once older than its timeout (or never received)."""
        entry = self.latest.get(message)
        if entry is None or now_s - entry[1] > self.timeouts_s.get(message, 3.0):
            return None
        return entry[0]

    def stack_value(self, quantity: str, now_s: float) -> float | None:
        """A stack quantity of the profile (×its scale), None when its message is stale or lacks the signal."""
        ref = self.profile.stack.get(quantity)
        if ref is None:
            return None
        v = self.value(ref.message, now_s)
        if v is None or ref.signal not in v:
            return None
        return float(v[ref.signal]) * ref.scale

    def lost(self, now_s: float) -> set[str]:
        """Messages past their timeout; an optional message counts only once it has been received."""
        return {m for m in self.timeouts_s if self.value(m, now_s) is None
                and (m not in self.profile.optional or m in self.latest)}

    def soc_pct(self, now_s: float) -> float | None:
        """The BMS's own SOC: the newer 0x355's 0.01 % value when the battery sends it, else the whole percent."""
        ref = self.profile.stack.get("soc_pct")
        v = self.value(ref.message, now_s) if ref is not None else None
        if v is None:
            return None
        return float(v.get("soc_hires_pct", v[ref.signal]))

    def flags(self, now_s: float) -> dict[str, str]:
        """The battery's own active protections, alarms and warnings: flag → "protection" / "alarm" /
        "warning", from the profile's bit message (0x359) and state message (0x35A, per `alarm_encoding`)."""
        out: dict[str, str] = {}
        p = self.value(self.profile.flag_bits, now_s) if self.profile.flag_bits else None
        for name, v in (p or {}).items():
            if name != "module_count" and v:
                out[name] = "protection" if name.startswith("protection_") else "alarm"
        a = self.value(self.profile.flag_states, now_s) if self.profile.flag_states else None
        active = ALARM_35A_ACTIVE[self.alarm_encoding]
        for name, v in (a or {}).items():
            if int(v) in active:
                out[name] = "alarm" if name.startswith("alarm_") else "warning"
        return out

    # ------------------------------------------------------------------ send
    def command(self, open_mask: int) -> None:
        """Clusters whose contactors the BMS is to open (bit N: cluster N): sent at once when it changes,
        then every period. A profile without a command message cannot open contactors (the PCS is zeroed)."""
        self._open_mask = int(open_mask)

    def _send_due(self, now_s: float) -> None:
        p = self.profile
        for kind, spec in (("keepalive", p.keepalive), ("command", p.command)):
            if spec is None or (kind == "command" and self._open_mask is None):
                continue
            changed = kind == "command" and self._open_mask != self._sent_mask
            if now_s < self._periodic_due[kind] and not changed:
                continue
            m = p.db.get_message_by_name(spec.message)
            self._counter[kind] = (self._counter[kind] + 1) % 256
            values = {s.name: 0 for s in m.signals}
            if spec.counter:
                values[spec.counter] = self._counter[kind]
            if kind == "command":
                values[spec.open_contactors] = self._open_mask
            try:
                self.bus.send(can.Message(arbitration_id=m.frame_id, is_extended_id=False, data=m.encode(values)))
            except (can.CanError, OSError):
                self.send_errors += 1
                continue
            self._periodic_due[kind] = now_s + spec.period_s
            if kind == "command":
                self._sent_mask = self._open_mask
