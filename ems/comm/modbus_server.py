"""Modbus servers on pymodbus: the simulated site's devices and the dispatch server share this.

A `RegisterImage` holds one device's words (holding table for function 3/6/16, input table for 4) behind
a lock, so the control thread can publish values while the I/O thread serves them. Every write request
goes through the image's `validate` hook *before* anything is stored: a refused write gets a Modbus
exception and changes nothing (pymodbus applies the words only when the hook returns no exception).

pymodbus 3.16 serves `SimDevice`s (the `ModbusServerContext` family is deprecated for removal in v4);
its per-device `action` coroutine is our hook for both reads (copy fresh words in) and writes (validate).
The client's address is not passed to that hook, so the connection handler puts it in a context variable
first (`client_address()`); a serial line reports "serial:<port>".
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from ems.comm.limits import ConnectionGate, IdleTimer, RateLimitedLog, peer_host
from ems.comm.profiles import Profile
from ems.comm.registers import Register

log = logging.getLogger("ems.comm.server")

_CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("modbus_client", default=None)
HOLDING, INPUT, COILS, DISCRETE = 3, 4, 1, 2
_TABLE = {3: HOLDING, 6: HOLDING, 16: HOLDING, 22: HOLDING, 23: HOLDING, 4: INPUT, 1: COILS, 5: COILS, 15: COILS,
          2: DISCRETE}


def client_address() -> str | None:
    """The address of the client whose request is being served (inside a validate hook)."""
    return _CLIENT.get()


class WriteRefused(Exception):
    """Raised by a validate hook: the write gets `code` as its Modbus exception and changes nothing."""

    def __init__(self, code: ExcCodes, reason: str):
        super().__init__(reason)
        self.code = code


class RegisterImage:
    """The words of one device. `spans` are the (table, first address, count) ranges it serves; a read
    or write outside them gets ILLEGAL_ADDRESS. `validate(table, address, words, client)` is called for
    every write before it is applied; it raises WriteRefused to refuse it."""

    def __init__(self, spans: list[tuple[int, int, int]],
                 validate: Callable[[int, int, list[int], str | None], None] | None = None):
        self.spans = sorted(spans)
        self.words: dict[int, dict[int, int]] = {HOLDING: {}, INPUT: {}}
        for table, first, count in self.spans:
            for a in range(first, first + count):
                self.words[table][a] = 0
        self.validate = validate
        # called with (table, address, count) before a read is served: words computed at read time (the
        # dispatch server's clock) are fresh to the request, not to the last slow tick
        self.on_read: Callable[[int, int, int], None] | None = None
        self.lock = threading.Lock()
        self.refused = 0            # writes refused (counted for the equipment list / tests)
        self.accepted = 0
        self.silent = False         # simulation: the device behind a gateway stops answering
        self._refused_log = RateLimitedLog(log)    # refused writes: one line per client and reason per interval

    def set_words(self, table: int, address: int, words: list[int]) -> None:
        with self.lock:
            t = self.words[table]
            for i, w in enumerate(words):
                t[address + i] = w

    def get_words(self, table: int, address: int, count: int) -> list[int]:
        with self.lock:
            t = self.words[table]
            return [t.get(address + i, 0) for i in range(count)]

    def sim_device(self, unit_id: int) -> SimDevice:
        """The pymodbus device serving this image (non-shared tables: holding and input apart)."""
        blocks: dict[int, list[SimData]] = {HOLDING: [], INPUT: []}
        for table, first, count in self.spans:
            blocks[table].append(SimData(first, count=count, values=0, datatype=DataType.REGISTERS))
        # pymodbus needs one entry per table: an unused bit / register far away stands in for an empty one
        coils = [SimData(0, values=False, datatype=DataType.BITS)]
        for table in (HOLDING, INPUT):
            if not blocks[table]:
                blocks[table].append(SimData(0xFFFE, count=1, values=0, datatype=DataType.INVALID))
        return SimDevice(unit_id, simdata=(coils, list(coils), blocks[HOLDING], blocks[INPUT]),
                         action=self._action)

    async def _action(self, function_code, start_address, address, count, registers, set_values):
        if self.silent:                      # what a Modbus gateway answers for a dead serial device
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = _TABLE.get(function_code)
        if set_values is None:               # read: serve the latest words
            if table not in (HOLDING, INPUT):
                return None                  # coils / discrete inputs: a stand-in bit, reads as 0
            if self.on_read is not None:
                try:
                    self.on_read(table, address, count)
                except Exception:            # a broken hook must not kill the server: serve what is there
                    log.exception("read hook failed")
            fresh = self.get_words(table, address, count)
            registers[address - start_address:address - start_address + count] = fresh
            return None
        words = [int(v) for v in set_values]
        try:
            if self.validate is None:
                raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, "read-only device")
            # coil writes (FC05/FC15) go through the same rules: none of our devices has a writable coil,
            # so they are refused (by the allowlist first, where there is one)
            self.validate(table, address, words, client_address())
            if table not in (HOLDING, INPUT):
                raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, "no writable coils")
        except WriteRefused as exc:
            self.refused += 1
            client = client_address()
            self._refused_log.warning(f"{client}:{int(exc.code)}", "write refused: table %d address %d words %s from %s: %s",
                             table or 0, address, words[:8], client, exc)
            return exc.code
        except Exception:                    # a broken hook must not kill the server: refuse the write
            self.refused += 1
            log.exception("write hook failed; write refused")
            return ExcCodes.DEVICE_FAILURE
        self.set_words(table, address, words)
        self.accepted += 1
        return None


def profile_spans(profile: Profile, clusters: int = 0, cells: int = 0) -> list[tuple[int, int, int]]:
    """One span per function from the profile's first to its last register (gaps read as zero); a BMS
    profile's arrays for a stack of `clusters` × `cells` included."""
    spans = []
    for function in (HOLDING, INPUT):
        ranges = [(r.address, r.address + r.count) for r in profile.registers.values() if r.function == function]
        ranges += [(a.address, a.address + a.cluster_stride * (clusters - 1) + a.words * a.elements(cells))
                   for a in profile.arrays.values() if a.function == function and clusters > 0]
        if ranges:
            first = min(lo for lo, _ in ranges)
            spans.append((function, first, max(hi for _, hi in ranges) - first))
    return spans


class ProfileImage(RegisterImage):
    """A device that serves a profile: `publish(name, value)` sets readings; a write to a writable
    register within its range reaches `on_write(name, value, client)`; anything else is refused. It
    serves its profile's identity registers (SunSpec chain) from the start. Registers with a scale
    factor are published and written in the scale its scale-factor register holds: publish that first."""

    def __init__(self, profile: Profile, on_write: Callable[[str, float, str | None], None] | None = None,
                 clusters: int = 0, cells: int = 0):
        """`clusters`, `cells`: the stack whose arrays a BMS profile serves."""
        self.profile = profile
        self.on_write = on_write
        self._by_address = {(r.function, r.address): r for r in profile.registers.values()}
        super().__init__(profile_spans(profile, clusters, cells), self._validate)
        self.publish_many(profile.expected)

    def _sf(self, r: Register) -> float | None:
        return None if r.scale_factor is None else self.value(r.scale_factor)

    def publish(self, name: str, value: float | None) -> None:
        r = self.profile.registers[name]
        self.set_words(r.function, r.address, r.to_words(value, self._sf(r)))

    def publish_many(self, values: dict[str, float | None]) -> None:
        for name, value in values.items():
            self.publish(name, value)

    def value(self, name: str) -> float | None:
        r = self.profile.registers[name]
        return r.decode(self.get_words(r.function, r.address, r.count), self._sf(r))

    def _validate(self, table: int, address: int, words: list[int], client: str | None) -> None:
        decoded = decode_write(self._by_address, table, address, words, self._sf)
        if self.on_write is not None:
            for r, value in decoded:
                self.on_write(r.name, value, client)


def decode_write(by_address: dict, table: int, address: int, words: list[int],
                 sf_of: Callable[[Register], float | None] = lambda r: None) -> list[tuple[Register, float]]:
    """A write request against a profile's registers ((function, address) → Register): every register it
    touches must be writable, written whole and within its range, else WriteRefused (nothing applies).
    `sf_of(register)`: the scale factor it is written in (SunSpec), None when it has none."""
    decoded: list[tuple[Register, float]] = []
    a = address
    while a < address + len(words):
        r = by_address.get((table, a))
        if r is None or not r.writable:
            raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"address {a} is not a writable register")
        chunk = words[a - address:a - address + r.count]
        if len(chunk) != r.count:
            raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"{r.name}: partial write of a {r.type}")
        value = r.decode(chunk, sf_of(r))
        if value is None or not (r.min <= value <= r.max):
            raise WriteRefused(ExcCodes.ILLEGAL_VALUE, f"{r.name}: {value} outside {r.min:g} … {r.max:g}")
        decoded.append((r, value))
        a += r.count
    return decoded


@dataclass(frozen=True)
class ConnectionLimits:
    """How many TCP connections a server takes (in all, and from one client address), and how long a
    connection may send nothing before it is closed. Pending requests per connection are bounded too."""
    max_total: int = 64
    max_per_client: int = 32
    idle_timeout_s: float = 600.0
    max_pending: int = 16           # pipelined requests queued on one connection; beyond: SERVER_DEVICE_BUSY
    priority: frozenset = frozenset()   # addresses not counted against max_total (the dispatch allowlist)
    evict_idle_s: float = 5.0       # a full server closes the connection idle the longest, if at least this


class _Handler(ServerRequestHandler):
    """pymodbus's connection handler, with what a server facing SCADA clients needs on top of it:

    - the client's address in a context variable while a request is served (the validate hooks decide on it);
    - pipelined requests: every complete frame in a received chunk is a request, answered in order. pymodbus
      3.16.1 decodes one frame per chunk into a single `last_pdu` slot and clears its receive buffer when it
      sends a response, so the second of two back-to-back requests was never answered;
    - FC23 (read/write multiple) atomic: its read range is checked before the write is applied (pymodbus
      writes first and may then answer the read with an exception, leaving the write applied);
    - connection limits (per server and per client address) and an idle timeout;
    - a Modbus TCP stream with a protocol ID other than 0 cannot be resynchronised: the connection is closed
      (pymodbus would wait, holding the garbage, until its buffer overflowed).
    """

    def __init__(self, owner, *args):
        super().__init__(owner, *args)
        self.peer: str | None = None
        self._pending: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._timer: IdleTimer | None = None
        self._admitted = False

    # ---------------------------------------------------------------- connection
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        info = transport.get_extra_info("peername")
        if info is None:                 # a serial line: named after its port, one "connection", no gate
            src = self.comm_params.source_address
            self.peer = f"serial:{src[0] if src else self.comm_params.host}"
        else:
            self.peer = peer_host(transport)
            gate: ConnectionGate | None = getattr(self.server, "gate", None)
            if gate is not None:
                if not gate.admit(self.peer):
                    self.close()
                    return
                self._admitted = True
                self._timer = IdleTimer(gate, transport, self.peer)
        limits = getattr(self.server, "limits", ConnectionLimits())
        self._pending = asyncio.Queue(limits.max_pending)
        self._worker = asyncio.ensure_future(self._serve_in_order())

    def connection_lost(self, exc) -> None:
        # pymodbus skips callback_disconnected for a connection it closed itself (is_closing): release here
        # too, or every stream closed for a bad protocol ID would keep its slot in the gate for good
        self._release()
        super().connection_lost(exc)

    def callback_disconnected(self, exc) -> None:
        super().callback_disconnected(exc)
        self._release()

    def _release(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._admitted:
            self._admitted = False
            self.server.gate.release(self.peer)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.touch()
        super().data_received(data)

    # ---------------------------------------------------------------- requests
    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        """Every complete frame in `data` is queued as a request; returns the bytes used (a partial frame
        stays in the receive buffer for the next chunk)."""
        if self._pending is None:        # refused at connect: nothing is served
            return len(data)
        used = 0
        while used < len(data):
            chunk = data[used:]
            if self.peer and not self.peer.startswith("serial:") and len(chunk) >= 6:
                why = _not_modbus_tcp(chunk)
                if why:
                    _BAD_STREAM.warning(self.peer, "modbus: connection from %s closed: %s", self.peer, why)
                    self.close()
                    return len(data)
            try:
                n, pdu = self.framer.handleFrame(chunk, 0, 0)
            except ModbusIOException:      # a frame that is not a request we can decode: answer it, go on
                n, dev_id, tid, frame_data = self.framer.decode(chunk)
                fc = frame_data[0] if frame_data else 0
                # a function pymodbus knows that failed to decode has a bad field; an unknown one is unsupported
                code = ExcCodes.ILLEGAL_VALUE if fc in self.framer.decoder.pdu_table else ExcCodes.ILLEGAL_FUNCTION
                self._queue(ExceptionResponse(fc & 0x7F, exception_code=code, device_id=dev_id, transaction=tid),
                            addr)
                used += n or len(chunk)
                continue
            if n == 0:
                break
            used += n
            if pdu is not None:
                self._queue(self.trace_pdu(False, pdu), addr)
        return used

    def _queue(self, item, addr) -> None:
        try:
            self._pending.put_nowait((item, addr))
        except asyncio.QueueFull:
            if isinstance(item, ExceptionResponse):
                return
            busy = ExceptionResponse(item.function_code, exception_code=ExcCodes.DEVICE_BUSY,
                                     device_id=item.dev_id, transaction=item.transaction_id)
            self.server_send(busy, addr)

    async def _serve_in_order(self) -> None:
        while True:
            item, addr = await self._pending.get()
            if isinstance(item, ExceptionResponse):
                self.server_send(item, addr)
                continue
            self.last_pdu, self.last_addr = item, addr
            token = _CLIENT.set(self.peer)
            try:
                if item.function_code == 23 and not await self._fc23_read_ok(item):
                    resp = ExceptionResponse(23, ExcCodes.ILLEGAL_ADDRESS)
                    resp.transaction_id, resp.dev_id = item.transaction_id, item.dev_id
                    self.server_send(resp, addr)
                    continue
                await self.handle_request()
            except asyncio.CancelledError:
                raise
            except Exception:                # never let one request end the connection's service
                log.exception("request handling failed")
            finally:
                _CLIENT.reset(token)
                self.last_pdu = None

    async def _fc23_read_ok(self, pdu) -> bool:
        """Whether FC23's read part can be served (checked before its write is applied)."""
        if not 1 <= pdu.read_count <= 0x7D:
            return True                      # pymodbus refuses this one itself, before writing
        try:
            got = await self.server.context.async_getValues(pdu.dev_id, 3, pdu.read_address, pdu.read_count)
        except Exception:                    # an unknown device: pymodbus answers that one itself
            return True
        return not isinstance(got, ExcCodes)

    def send(self, data: bytes, addr: tuple | None = None) -> None:
        """pymodbus clears the receive buffer when it sends: keep a partial next request instead."""
        pending = self.recv_buffer
        super().send(data, addr)
        self.recv_buffer = pending


_BAD_STREAM = RateLimitedLog(log)


def _not_modbus_tcp(head: bytes) -> str | None:
    """Why an MBAP header cannot start a Modbus TCP frame (a stream that is out of step cannot be
    resynchronised: the connection is closed), None when it can."""
    if head[2:4] != b"\0\0":
        return f"protocol ID {head[2:4].hex()} is not Modbus"
    length = int.from_bytes(head[4:6], "big")
    if not 2 <= length <= 254:               # unit ID + PDU: an ADU is at most 260 bytes
        return f"MBAP length {length} outside 2 … 254"
    return None


class TcpServer(ModbusTcpServer):
    def __init__(self, *args, limits: ConnectionLimits | None = None, name: str = "modbus", **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits or ConnectionLimits()
        self.gate = ConnectionGate(name, self.limits.max_total, self.limits.max_per_client,
                                   self.limits.idle_timeout_s, log, priority=self.limits.priority,
                                   evict_idle_s=self.limits.evict_idle_s)

    def callback_new_connection(self):
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class SerialServer(ModbusSerialServer):
    """RTU on a serial port; its requests carry the client "serial:<port>" (a wired line has no address)."""

    def callback_new_connection(self):
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class IoThread:
    """One asyncio loop in a daemon thread for the Modbus servers and clients of a process, so the
    control loop never waits on a socket. `call(coro)` runs a coroutine there and returns its result."""

    def __init__(self, name: str = "ems-io"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.servers: list = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro, timeout_s: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def serve_tcp(self, devices: dict[int, RegisterImage], host: str = "127.0.0.1", port: int = 502,
                  limits: ConnectionLimits | None = None, name: str = "modbus") -> TcpServer:
        """Start a Modbus TCP server for the images (unit ID → image); returns once it listens."""
        async def start():
            server = TcpServer([img.sim_device(uid) for uid, img in devices.items()], address=(host, port),
                               limits=limits, name=name)
            await server.serve_forever(background=True)
            return server
        server = self.call(start())
        self.servers.append(server)
        return server

    def serve_rtu(self, devices: dict[int, RegisterImage], port: str, baudrate: int = 9600, parity: str = "N",
                  stopbits: int = 1, bytesize: int = 8) -> SerialServer:
        """Start a Modbus RTU server on a serial port for the images; the port is opened before this returns
        (a missing or busy port raises OSError here, not later in the I/O thread)."""
        import serial                   # pyserial: open once to report a bad port at start, clearly
        serial.Serial(port, baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize).close()

        async def start():
            server = SerialServer([img.sim_device(uid) for uid, img in devices.items()], port=port,
                                  baudrate=baudrate, parity=parity, stopbits=stopbits, bytesize=bytesize,
                                  reconnect_delay=1.0)
            await server.serve_forever(background=True)
            return server
        server = self.call(start())
        self.servers.append(server)
        return server

    def stop(self) -> None:
        async def shutdown():
            for s in self.servers:
                await s.shutdown()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.loop.is_running():
            try:
                self.call(shutdown(), 5.0)
            except Exception:          # stopping: log, never raise past here
                log.exception("server shutdown")
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
        self.servers.clear()
