"""Bounds on what the network can make the controller do: connections per server and per client address,
idle connections closed, and log lines that cannot flood the journal.

One home for these, shared by the dispatch server (Modbus TCP on pymodbus) and the HTTP API (aiohttp):
an attacker or a misconfigured SCADA that opens a thousand sockets gets refused at the cap, and the file
descriptors the control loop and the other servers need stay free (the service unit raises LimitNOFILE
as well, docs/board.md).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict


class Throttle:
    """At most one event per key per `interval_s` gets through; the ones held back are counted and handed
    to the next that passes. Bounded: beyond `max_keys` keys the oldest is forgotten."""

    def __init__(self, interval_s: float = 10.0, max_keys: int = 256):
        self.interval_s, self.max_keys = interval_s, max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.events = 0                    # every event, passed or not (tests, status)

    def allow(self, key: str) -> tuple[bool, int]:
        """(whether this event passes, how many were held back for `key` since the last that passed)."""
        now = time.monotonic()
        with self._lock:
            self.events += 1
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] += 1
                return False, 0
            if last is None and len(self._last) >= self.max_keys:
                oldest = min(self._last, key=self._last.get)
                self._last.pop(oldest)
                self._suppressed.pop(oldest, None)
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)


class RateLimitedLog:
    """A warning per key at most once per `interval_s`: the first event of an interval is logged at once,
    the ones after it are counted and reported with the next line ("… and 412 more in 10 s")."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, max_keys: int = 256):
        self.log = logger
        self.throttle = Throttle(interval_s, max_keys)

    @property
    def events(self) -> int:
        return self.throttle.events

    def warning(self, key: str, fmt: str, *args) -> bool:
        """Log `fmt % args` unless `key` was logged less than interval_s ago; True when it was logged."""
        ok, more = self.throttle.allow(key)
        if not ok:
            return False
        if more:
            fmt += f" (and {more} more like it in the last {self.throttle.interval_s:g} s)"
        self.log.warning(fmt, *args)
        return True


class ConnectionGate:
    """Admits a connection when the server has fewer than `max_total` and its client address fewer than
    `max_per_client`; `idle_timeout_s` is how long a connection may send nothing before it is closed.

    A full server makes room: the connection that has sent nothing for the longest (at least
    `evict_idle_s`) is closed for the newcomer, so idle sockets from many addresses cannot hold every slot.
    `priority` addresses (the dispatch server's allowlist: the SCADA) are not counted against max_total
    at all, only against their own per-address cap. Call from the server's event loop."""

    def __init__(self, name: str, max_total: int, max_per_client: int, idle_timeout_s: float,
                 logger: logging.Logger, log_interval_s: float = 10.0, priority=frozenset(),
                 evict_idle_s: float = 5.0):
        self.name, self.max_total, self.max_per_client = name, max_total, max_per_client
        self.idle_timeout_s, self.evict_idle_s = idle_timeout_s, evict_idle_s
        self.priority = frozenset(priority)
        self.per_client: dict[str, int] = defaultdict(int)
        self.active = 0                  # admitted connections outside `priority`
        self.refused = 0
        self.idle_closed = 0
        self.evicted = 0
        self.timers: set = set()         # IdleTimers of the admitted connections outside `priority`
        self._evicting: set = set()      # ... of those closed to make room, until they are gone
        self._log = RateLimitedLog(logger, log_interval_s)
        self._lock = threading.Lock()

    def admit(self, peer: str) -> bool:
        with self._lock:
            if self.per_client[peer] >= self.max_per_client:
                why = f"{self.per_client[peer]} connections from this address (max {self.max_per_client})"
            elif peer in self.priority or self.active - len(self._evicting) < self.max_total or self._evict():
                self.per_client[peer] += 1
                if peer not in self.priority:
                    self.active += 1
                return True
            else:
                why = f"{self.active} connections open (max {self.max_total}), none idle for {self.evict_idle_s:g} s"
            self.refused += 1
        self._log.warning("refused", "%s: connection from %s refused: %s", self.name, peer, why)
        return False

    def _evict(self) -> bool:
        """Close the connection idle the longest (at least evict_idle_s) to make room; False if none is."""
        idle = [t for t in self.timers if t not in self._evicting and t.idle_s() >= self.evict_idle_s]
        if not idle:
            return False
        victim = max(idle, key=lambda t: t.idle_s())
        self._evicting.add(victim)
        self.evicted += 1
        victim.transport.close()
        return True

    def release(self, peer: str) -> None:
        with self._lock:
            if peer not in self.priority:
                self.active -= 1
            self.per_client[peer] -= 1
            if self.per_client[peer] <= 0:
                del self.per_client[peer]

    def track(self, timer) -> None:
        if timer.peer not in self.priority:
            self.timers.add(timer)

    def untrack(self, timer) -> None:
        self.timers.discard(timer)
        self._evicting.discard(timer)

    def closed_idle(self, peer: str) -> None:
        self.idle_closed += 1
        self._log.warning("idle", "%s: connection from %s closed after %g s without a request", self.name, peer,
                          self.idle_timeout_s)


def peer_host(transport: asyncio.BaseTransport) -> str:
    info = transport.get_extra_info("peername")
    return str(info[0]) if isinstance(info, tuple) else str(info)


class IdleTimer:
    """Closes `transport` when `touch()` was not called for the gate's idle timeout."""

    def __init__(self, gate: ConnectionGate, transport: asyncio.BaseTransport, peer: str):
        self.gate, self.transport, self.peer = gate, transport, peer
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._handle = self._loop.call_later(gate.idle_timeout_s, self._check)
        gate.track(self)

    def touch(self) -> None:
        self._last = self._loop.time()

    def idle_s(self) -> float:
        return self._loop.time() - self._last

    def _check(self) -> None:
        left = self._last + self.gate.idle_timeout_s - self._loop.time()
        if left > 0:
            self._handle = self._loop.call_later(left, self._check)
            return
        self.gate.closed_idle(self.peer)
        self.transport.close()

    def cancel(self) -> None:
        self._handle.cancel()
        self.gate.untrack(self)


class GatedProtocol(asyncio.Protocol):
    """An asyncio protocol in front of another (aiohttp's request handler): admits the connection through
    the gate, closes it when idle, and passes everything else through."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate):
        self.inner, self.gate = inner, gate
        self.peer: str | None = None
        self.timer: IdleTimer | None = None

    def connection_made(self, transport) -> None:
        peer = peer_host(transport)
        if not self.gate.admit(peer):
            transport.abort()
            return
        self.peer = peer
        self.timer = IdleTimer(self.gate, transport, peer)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.touch()
            self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received() if self.timer is not None else None

    def connection_lost(self, exc) -> None:
        if self.timer is None:
            return
        self.timer.cancel()
        self.gate.release(self.peer)
        self.timer = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.timer is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.timer is not None:
            self.inner.resume_writing()
