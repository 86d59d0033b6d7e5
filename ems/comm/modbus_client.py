"""The Modbus client engine (pymodbus, TCP and RTU): polls devices as their profiles describe and writes
setpoints, on the I/O thread's asyncio loop so the control loop never waits on a device.

One `Channel` per connection (a TCP endpoint or an RS485 line) carries one or more devices and sends one
request at a time, with the line's inter-request gap (slow RS485 devices need one). Per device, the
registers of a poll group and function are merged into block reads (adjacent registers, or across gaps up
to the profile's `merge_gap`, at most `max_block` registers). Priorities: writes first, then the most
overdue read, fastest groups first on ties. A group whose interval is at or below the fast loop period
is polled as often as the line allows.

Failures: a timeout or error counts against the device; after `fail_threshold` in a row it is offline
and polled only after a backoff that doubles up to `max_backoff_s`; a dropped connection is reopened
with the same backoff. Values carry their arrival time and read as None past their register's
`max_age_s` (staleness is a value); the device layer turns that into the safe state and the manual's
comm-loss alarm. When the device answers again its status returns to online by itself.

Setpoints are *held*: `hold()` writes a value at once when it changes and again every `refresh_s`, so a
PCS with a command timeout never falls back while the EMS is alive.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from ems.comm.modbus_arrays import decode_array, plan_array_blocks
from ems.comm.profiles import ArraySpec, Profile
from ems.comm.registers import Register

log = logging.getLogger("ems.comm.client")


@dataclass(frozen=True)
class Link:
    """A connection: Modbus TCP (host, port) or RTU on a serial line (serial_port, baudrate …)."""
    transport: str = "tcp"                # tcp | rtu
    host: str = "127.0.0.1"
    port: int = 502
    serial_port: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout_s: float = 0.5
    gap_ms: float = 0.0                   # pause between two requests on this line

    @property
    def label(self) -> str:
        return f"tcp://{self.host}:{self.port}" if self.transport == "tcp" else \
            f"rtu://{self.serial_port}@{self.baudrate}-{self.bytesize}{self.parity}{self.stopbits}"


@dataclass
class Block:
    function: int
    address: int
    count: int
    registers: list[Register]
    group: str
    interval_s: float
    next_due_s: float = 0.0
    # array blocks (a BMS's clusters and cells): (word offset in the block, array, cluster, first element, elements)
    parts: list[tuple[int, ArraySpec, int, int, int]] = field(default_factory=list)


def plan_blocks(profile: Profile) -> list[Block]:
    """Merged reads of a profile: per group and function, registers in address order, joined while the
    gap is at most merge_gap and the block stays within max_block registers."""
    blocks: list[Block] = []
    for group, interval_ms in profile.groups.items():
        for function in (3, 4):
            regs = profile.block(group, function)
            current: list[Register] = []
            for r in regs:
                if current:
                    start = current[0].address
                    end = current[-1].address + current[-1].count
                    if r.address - end > profile.merge_gap or r.address + r.count - start > profile.max_block:
                        blocks.append(_block(current, group, interval_ms))
                        current = []
                current.append(r)
            if current:
                blocks.append(_block(current, group, interval_ms))
    return blocks


def _block(regs: list[Register], group: str, interval_ms: float) -> Block:
    start = regs[0].address
    return Block(regs[0].function, start, regs[-1].address + regs[-1].count - start, list(regs), group,
                 interval_ms / 1000.0)


@dataclass
class Device:
    """A device on a channel: its profile, unit ID, and what the engine knows of it."""
    name: str
    profile: Profile
    unit_id: int = 1
    device_id: int = 0                    # the manual's device ID (0x05000000 grid meter …), for listings
    role: str = ""
    init_writes: dict[str, float] = field(default_factory=dict)   # written once after every (re)connect
    status: str = "never seen"            # never seen | online | offline
    last_seen_s: float | None = None      # monotonic
    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    fails_in_row: int = 0
    backoff_s: float = 0.0
    retry_at_s: float = 0.0
    values: dict[str, tuple[float | None, float]] = field(default_factory=dict)   # name → (value, at_s)
    blocks: list[Block] = field(default_factory=list)
    clusters: int = 0                     # a BMS's stack shape: its arrays are read for these clusters × cells
    cells: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)      # name → (clusters, elements) values
    array_at_s: dict[str, np.ndarray] = field(default_factory=dict)  # … and each element's arrival time
    array_reads: int = 0                  # array blocks stored so far (a reader copies only when it moved)
    _init_done: bool = False
    _chain_reported: bool = False

    @property
    def identified(self) -> bool:
        """The device is the one the profile describes (SunSpec: its model chain matched); always True for
        profiles without identity registers."""
        for name, want in self.profile.expected.items():
            v = self.values.get(name)
            if v is None or v[0] != want:
                return False
        return True

    def sf(self, r: Register) -> float | None:
        """The latest value of r's scale-factor register (None: not read yet or not applicable)."""
        if r.scale_factor is None:
            return None
        v = self.values.get(r.scale_factor)
        return None if v is None else v[0]

    def __post_init__(self):
        self.blocks = plan_blocks(self.profile)
        if self.profile.arrays:
            self.blocks += [Block(f, a, n, [], g, i, parts=parts)
                            for f, a, n, g, i, parts in plan_array_blocks(self.profile, self.clusters, self.cells)]
            for a in self.profile.arrays.values():
                shape = (self.clusters, a.elements(self.cells))
                self.arrays[a.name] = np.full(shape, np.nan)
                self.array_at_s[a.name] = np.full(shape, -np.inf)
        self.init_writes = {**self.profile.init_writes, **self.init_writes}
        for name in self.init_writes:
            if name not in self.profile.registers or not self.profile.registers[name].writable:
                raise ValueError(f"{self.name}: init write {name!r} is not a writable register of "
                                 f"{self.profile.model}")


@dataclass
class _Hold:
    value: float
    refresh_s: float
    sent_value: float | None = None
    sent_at_s: float = -1e18
    failures: int = 0


class Channel:
    def __init__(self, link: Link, devices: list[Device], fast_period_s: float = 0.01, fail_threshold: int = 3,
                 max_backoff_s: float = 30.0):
        self.link = link
        self.devices = devices
        self.fast_period_s = fast_period_s
        self.fail_threshold = fail_threshold
        self.max_backoff_s = max_backoff_s
        self.client = None
        self.holds: dict[tuple[str, str], _Hold] = {}
        self.writes_sent = 0
        self.write_errors = 0
        self._wake: asyncio.Event | None = None
        self._connect_backoff_s = 0.0
        self._stop = False

    # ------------------------------------------------------------------ connection
    def _make_client(self):
        lk = self.link
        if lk.transport == "tcp":
            return AsyncModbusTcpClient(lk.host, port=lk.port, timeout=lk.timeout_s, retries=0,
                                        reconnect_delay=0, reconnect_delay_max=0)
        return AsyncModbusSerialClient(lk.serial_port, baudrate=lk.baudrate, parity=lk.parity,
                                       stopbits=lk.stopbits, bytesize=lk.bytesize, timeout=lk.timeout_s, retries=0,
                                       reconnect_delay=0, reconnect_delay_max=0)

    async def _ensure_connected(self) -> bool:
        if self.client is not None and self.client.connected:
            return True
        if self.client is not None:
            self.client.close()
        self.client = self._make_client()
        try:
            ok = await self.client.connect()
        except (OSError, ModbusException) as exc:
            log.debug("%s: connect failed: %s", self.link.label, exc)
            ok = False
        if ok:
            self._connect_backoff_s = 0.0
            for d in self.devices:
                d._init_done = False
            for h in self.holds.values():
                h.sent_value = None                    # resend held setpoints on the new connection
            log.info("%s: connected", self.link.label)
            return True
        self._connect_backoff_s = min(max(self._connect_backoff_s * 2, 0.5), self.max_backoff_s)
        for d in self.devices:
            self._failed(d, time.monotonic(), timeout=False, count=False)
        return False

    # ------------------------------------------------------------------ requests
    async def _read(self, d: Device, b: Block) -> None:
        if b.group != "sunspec" and not d.identified:
            return                  # nothing is read from a device before it is the one the profile maps
        now = time.monotonic()
        d.requests += 1
        try:
            if b.function == 3:
                rr = await self.client.read_holding_registers(b.address, count=b.count, device_id=d.unit_id)
            else:
                rr = await self.client.read_input_registers(b.address, count=b.count, device_id=d.unit_id)
        except asyncio.TimeoutError:
            self._failed(d, now, timeout=True)
            return
        except ModbusException as exc:
            self._failed(d, now, timeout="timeout" in str(exc).lower() or "no response" in str(exc).lower())
            return
        if rr.isError() or len(rr.registers) < b.count:
            self._failed(d, now, timeout=False)
            return
        at = time.monotonic()
        words = rr.registers
        if b.parts:
            self._store_arrays(d, b, words, at)
            self._ok(d, at)
            return
        # scale factors first: the values in the same block are decoded with the ones just read
        for r in sorted(b.registers, key=lambda r: r.scale_factor is not None):
            off = r.address - b.address
            try:
                value = r.decode(words[off:off + r.count], d.sf(r))
            except ValueError:
                value = None
            d.values[r.name] = (value, at)
        if b.group == "sunspec" and not d.identified:
            if not d._chain_reported:
                log.error("%s: not the device its profile %s maps (SunSpec model chain differs): nothing is "
                          "read or written", d.name, d.profile.model)
                d._chain_reported = True
        else:
            d._chain_reported = False
        self._ok(d, at)

    @staticmethod
    def _store_arrays(d: Device, b: Block, words: list[int], at: float) -> None:
        w = np.asarray(words[:b.count], dtype=np.uint16)
        for off, a, c, e0, k in b.parts:
            d.arrays[a.name][c, e0:e0 + k] = decode_array(a, w[off:off + k * a.words])
            d.array_at_s[a.name][c, e0:e0 + k] = at
        d.array_reads += 1

    async def _write(self, d: Device, name: str, value: float) -> bool:
        r = d.profile.registers[name]
        if not d.identified:
            return False                       # never write at addresses the device may not have
        try:
            words = r.encode(value, d.sf(r))   # range checked in hold(); here only the scale factor can miss
        except ValueError:
            return False                       # its scale factor not read yet: the next refresh retries
        d.requests += 1
        try:
            rr = await self.client.write_registers(r.address, words, device_id=d.unit_id)
        except (asyncio.TimeoutError, ModbusException):
            self.write_errors += 1
            self._failed(d, time.monotonic(), timeout=True)
            return False
        if rr.isError():
            self.write_errors += 1
            d.errors += 1
            log.warning("%s: write %s = %s refused: %s", d.name, name, value, rr)
            return False
        self.writes_sent += 1
        self._ok(d, time.monotonic())
        return True

    def _ok(self, d: Device, at: float) -> None:
        if d.status != "online":
            log.info("%s (%s): online", d.name, self.link.label)
        d.status, d.last_seen_s, d.fails_in_row, d.backoff_s = "online", at, 0, 0.0

    def _failed(self, d: Device, now: float, timeout: bool, count: bool = True) -> None:
        if count:
            d.errors += 1
            d.timeouts += int(timeout)
        d.fails_in_row += 1
        if d.fails_in_row >= self.fail_threshold:
            if d.status != "offline":
                log.warning("%s (%s): offline after %d failed requests", d.name, self.link.label, d.fails_in_row)
            d.status = "offline"
            d.backoff_s = min(max(d.backoff_s * 2, 1.0), self.max_backoff_s)
            d.retry_at_s = now + d.backoff_s

    # ------------------------------------------------------------------ scheduling
    def _next_write(self, now: float):
        for (dev, name), h in self.holds.items():
            d = self._device(dev)
            if d.status == "offline" and now < d.retry_at_s:
                continue
            if h.sent_value != h.value or now - h.sent_at_s >= h.refresh_s:
                return d, name, h
        return None

    def _next_read(self, now: float):
        best = None
        for d in self.devices:
            if d.status == "offline" and now < d.retry_at_s:
                continue
            for b in d.blocks:
                key = (b.next_due_s, b.interval_s)
                if best is None or key < best[0]:
                    best = (key, d, b)
        return best

    def _device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    async def run(self) -> None:
        self._wake = asyncio.Event()
        gap = self.link.gap_ms / 1000.0
        while not self._stop:
            if not await self._ensure_connected():
                await self._sleep(self._connect_backoff_s)
                continue
            now = time.monotonic()
            for d in self.devices:
                if not d._init_done and d.init_writes and not (d.status == "offline" and now < d.retry_at_s):
                    d._init_done = all([await self._write(d, n, v) for n, v in d.init_writes.items()])
            w = self._next_write(now)
            if w is not None:
                d, name, h = w
                value = h.value
                if await self._write(d, name, value):
                    h.sent_value, h.sent_at_s, h.failures = value, time.monotonic(), 0
                else:
                    h.failures += 1
                    h.sent_at_s = time.monotonic()     # retry at the next refresh, not in a tight loop
                    h.sent_value = value if h.failures >= 3 else None
                if gap:
                    await self._sleep(gap)
                continue
            r = self._next_read(now)
            if r is None:
                await self._sleep(0.1)
                continue
            (due, _), d, b = r
            if due > now:
                await self._sleep(due - now)
                continue
            # schedule from the due time (no drift), but never queue a backlog behind a slow line
            b.next_due_s = max(due + max(b.interval_s, self.fast_period_s), now)
            await self._read(d, b)
            if d.status == "offline":
                for other in d.blocks:
                    other.next_due_s = max(other.next_due_s, d.retry_at_s)
            if gap:
                await self._sleep(gap)

    async def _sleep(self, s: float) -> None:
        """Sleep, but wake at once when a new setpoint is held."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(s, 0.0))
        except asyncio.TimeoutError:
            pass

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self.wake()
        if self.client is not None:
            self.client.close()


class ModbusEngine:
    """All channels of the site on one I/O loop (ems.comm.modbus_server.IoThread). Thread-safe for its
    users: `value()` and `hold()` are called from the control thread."""

    def __init__(self, io, fast_period_s: float = 0.01):
        # pymodbus logs every failed connect at ERROR; the engine counts failures and reports each device's
        # status itself (and logs the transitions), so pymodbus's own lines would only repeat it
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.io = io
        self.fast_period_s = fast_period_s
        self.channels: list[Channel] = []
        self._by_device: dict[str, tuple[Channel, Device]] = {}
        self._tasks: list = []

    def add(self, link: Link, devices: list[Device]) -> Channel:
        for d in devices:
            if d.name in self._by_device:
                raise ValueError(f"device name {d.name!r} used twice")
        for ch in self.channels:
            if ch.link == link or (link.transport == "rtu" and ch.link.serial_port == link.serial_port):
                raise ValueError(f"{link.label} already has a channel; put its devices in one add()")
        ch = Channel(link, devices, self.fast_period_s)
        self.channels.append(ch)
        for d in devices:
            self._by_device[d.name] = (ch, d)
        return ch

    def start(self) -> None:
        async def spawn():
            return [asyncio.ensure_future(ch.run()) for ch in self.channels]
        self._tasks = self.io.call(spawn())

    def stop(self) -> None:
        def _stop():
            for ch in self.channels:
                ch.stop()
        self.io.loop.call_soon_threadsafe(_stop)

    def device(self, name: str) -> Device:
        return self._by_device[name][1]

    def value(self, device: str, name: str, now_s: float | None = None) -> float | None:
        """The register's latest value, None when never read or older than its max_age_s."""
        d = self._by_device[device][1]
        entry = d.values.get(name)
        if entry is None:
            return None
        value, at = entry
        now = time.monotonic() if now_s is None else now_s
        return value if now - at <= d.profile.registers[name].max_age_s else None

    def sample(self, device: str, name: str) -> tuple[float | None, float] | None:
        """(value, arrival time) of the latest read, for callers that track new samples."""
        return self._by_device[device][1].values.get(name)

    def hold(self, device: str, name: str, value: float, refresh_s: float = 1.0, again: bool = False) -> None:
        """Keep `value` written to a writable register: at once when it changes, then every refresh_s.
        again: write it now even if it is held already with this value (a request register: a SunSpec
        AdptCrvReq asks the device to act on every write)."""
        ch, d = self._by_device[device]
        key = (device, name)
        h = ch.holds.get(key)
        if h is not None and h.value == value and h.refresh_s == refresh_s:
            if again:
                h.sent_value = None
                self.io.loop.call_soon_threadsafe(ch.wake)
            return                           # held already: the channel refreshes it by itself
        r = d.profile.registers.get(name)
        if r is None or not r.writable:
            raise ValueError(f"{device}: {name!r} is not a writable register of {d.profile.model}")
        r.check(value)                       # range and type checked here, in the caller's thread
        if h is None:
            ch.holds[key] = _Hold(float(value), refresh_s)
        elif h.value != value or h.refresh_s != refresh_s:
            h.value, h.refresh_s = float(value), refresh_s
        else:
            return
        self.io.loop.call_soon_threadsafe(ch.wake)

    def sent_at(self, device: str, name: str) -> float | None:
        """When a held value was last written (monotonic s), None when it has not been yet."""
        h = self._by_device[device][0].holds.get((device, name))
        return None if h is None or h.sent_value is None else h.sent_at_s

    def flush(self, timeout_s: float = 1.0) -> bool:
        """Wait (control thread) until every held value has been written once; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(h.sent_value == h.value for ch in self.channels for h in list(ch.holds.values())):
                return True
            time.sleep(0.001)
        return False

    def status(self) -> list[dict]:
        rows = []
        now = time.monotonic()
        for ch in self.channels:
            for d in ch.devices:
                rows.append({"name": d.name, "device_id": d.device_id, "role": d.role, "protocol": "modbus-" +
                             ch.link.transport, "model": d.profile.model, "address": f"{ch.link.label}#{d.unit_id}",
                             "cycle_ms": min(d.profile.groups.values()) if d.profile.groups else None,
                             "status": d.status,
                             "last_seen_s_ago": None if d.last_seen_s is None else round(now - d.last_seen_s, 3),
                             "requests": d.requests, "errors": d.errors, "timeouts": d.timeouts})
        return rows
