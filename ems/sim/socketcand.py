"""A socketcand server (the protocol of linux-can/socketcand, raw mode) on loopback: how the simulated BMS
reaches a controller in another process on a machine without a kernel vcan module. The controller connects
with python-can's own socketcand client (`[devices] can_interface = "socketcand"`), exactly as it would to a
socketcand gateway in front of a real CAN bus.

Protocol (raw mode): the server greets `< hi >`; the client sends `< open <bus> >` (answered `< ok >`) and
`< rawmode >` (answered `< ok >`); then the server streams `< frame <id hex> <secs>.<usecs> <data hex> >` and
the client sends `< send <id hex> <dlc> <byte hex> … >`. Bounded: a few clients, short lines; anything else
is dropped and counted, never raised.
"""
from __future__ import annotations

import asyncio
import logging
import time

import can

log = logging.getLogger("ems.sim.socketcand")
MAX_CLIENTS = 4
MAX_LINE = 256
GREETING_PAUSE_S = 0.05      # python-can's client reads each handshake answer with one recv: never run them together


def frame_text(msg: can.Message) -> bytes:
    ident = f"{msg.arbitration_id:08X}" if msg.is_extended_id else f"{msg.arbitration_id:03X}"
    t = msg.timestamp or time.time()
    return f"< frame {ident} {int(t)}.{int((t % 1) * 1e6):06d} {bytes(msg.data).hex().upper()} >".encode()


def parse_send(text: str) -> can.Message | None:
    """`< send 6E0 8 1 0 0 0 0 0 0 0 >` → a message; None for anything malformed."""
    parts = text.strip("<> ").split()
    if len(parts) < 3 or parts[0] != "send":
        return None
    try:
        ident, dlc = int(parts[1], 16), int(parts[2])
        data = bytes(int(b, 16) for b in parts[3:3 + dlc])
    except ValueError:
        return None
    if not 0 <= dlc <= 8 or len(data) != dlc or not 0 <= ident < (1 << 29):
        return None
    return can.Message(arbitration_id=ident, is_extended_id=len(parts[1]) > 3, data=data)


class SocketcandServer:
    """Serve one bus: `send(msg)` (any thread) queues a frame for every client in raw mode, `flush()` sends the
    queue; frames the clients send arrive at `on_frame(msg)` on the server's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, bus_name: str, on_frame):
        self.loop, self.bus_name, self.on_frame = loop, bus_name, on_frame
        self.clients: set[asyncio.StreamWriter] = set()
        self._raw: set[asyncio.StreamWriter] = set()
        self._queue: list[bytes] = []
        self.server: asyncio.base_events.Server | None = None
        self.dropped = 0

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._client, host, port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.clients) >= MAX_CLIENTS:
            writer.close()
            return
        self.clients.add(writer)
        try:
            writer.write(b"< hi >")
            await writer.drain()
            buf = b""
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                buf += data
                while b">" in buf:
                    end = buf.index(b">") + 1
                    start = buf.rfind(b"<", 0, end)
                    line, buf = (buf[start:end] if start >= 0 else b""), buf[end:]
                    await self._line(line.decode("ascii", "replace"), writer)
                if len(buf) > MAX_LINE:          # no closing '>' in sight: garbage
                    buf = b""
                    self.dropped += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients.discard(writer)
            self._raw.discard(writer)
            writer.close()

    async def _line(self, line: str, writer: asyncio.StreamWriter) -> None:
        if line.startswith("< open "):
            ok = line.split()[2] == self.bus_name if len(line.split()) > 2 else False
            writer.write(b"< ok >" if ok else b"< error no such bus >")
        elif line == "< rawmode >":
            writer.write(b"< ok >")
            await writer.drain()
            await asyncio.sleep(GREETING_PAUSE_S)
            self._raw.add(writer)
        elif line.startswith("< send "):
            msg = parse_send(line)
            if msg is None:
                self.dropped += 1
            else:
                self.on_frame(msg)
        else:
            self.dropped += 1

    def send(self, msg: can.Message) -> None:
        self._queue.append(frame_text(msg))

    def flush(self) -> None:
        """Hand the queued frames to the server's loop (one call per step, not one per frame)."""
        if not self._queue:
            return
        data, self._queue = b"".join(self._queue), []
        self.loop.call_soon_threadsafe(self._write, data)

    def send_now(self, msgs) -> float:
        """Write frames at once (on the server's loop); returns when they were handed to the sockets."""
        self._write(b"".join(frame_text(m) for m in msgs))
        return time.monotonic()

    def _write(self, data: bytes) -> None:
        for w in list(self._raw):
            if w.transport.get_write_buffer_size() > 1 << 20:      # a client that does not read: drop it
                w.close()
                self._raw.discard(w)
                continue
            w.write(data)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.clients):
                w.close()
            await self.server.wait_closed()
