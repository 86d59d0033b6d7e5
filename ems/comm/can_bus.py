"""The BMS's CAN bus as the controller holds it: opened from the site file, checked at start, reopened after a
failure — without the control loop ever waiting on it.

Interfaces (python-can): `socketcan` on the board (`can_channel = "can0"`, the kernel's SocketCAN), `socketcand`
(a socketcand server at can_host:can_port: a CAN-over-TCP gateway, and how `ems sim-site` serves its simulated
BMS to another process on a machine without a vcan module), `virtual` (python-can's in-process bus, tests).

`CanPort` opens the bus in a thread of its own (a TCP connect and handshake can take seconds; the fast loop
must not), and reopens it with a doubling backoff (0.5 s … 10 s) after an error of the bus, or after
`silence_reopen_s` without a frame: python-can's socketcand client reads a closed connection as silence, so a
restarted gateway is only noticed that way (on SocketCAN a reopen is harmless). Errors are counted and
logged once per state change, never per frame.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

import can

log = logging.getLogger("ems.comm.can")
INTERFACES = ("socketcan", "socketcand", "virtual")


class CanConfigError(ValueError):
    """The site names a CAN interface that cannot exist here (the message names the key)."""


def check_interface(interface: str, channel: str) -> None:
    """At start: a SocketCAN channel must be a network interface of this machine (`ip link` lists them)."""
    if interface not in INTERFACES:
        raise CanConfigError(f"devices.can_interface = {interface!r}: one of {', '.join(INTERFACES)}")
    if interface == "socketcan" and not os.path.exists(f"/sys/class/net/{channel}"):
        raise CanConfigError(f"devices.can_channel = {channel!r}: no such CAN interface on this machine "
                             "(`ip link` lists them; is the CAN driver loaded and the interface up?)")


def open_can(interface: str, channel: str, host: str = "127.0.0.1", port: int = 29536,
             connect_timeout_s: float = 2.0) -> can.BusABC:
    """One python-can bus (blocking: call it off the control thread for socketcand)."""
    if interface == "socketcand":
        # python-can's client retries a refused connect in a tight loop for 10 s, logging each try: probe first
        with socket.create_connection((host, port), timeout=connect_timeout_s):
            pass
        logging.getLogger("can.interfaces.socketcand.socketcand").setLevel(logging.ERROR)  # "incomplete message"
        return can.Bus(interface="socketcand", channel=channel, host=host, port=port, tcp_tune=True)
    if interface == "virtual":
        return can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    return can.Bus(interface="socketcan", channel=channel)


class CanPort:
    """A bus that reopens itself; `recv(timeout=0.0)` and `send(msg)` as on a python-can bus (recv answers
    None while it is down, send raises can.CanOperationError)."""

    MIN_BACKOFF_S, MAX_BACKOFF_S = 0.5, 10.0

    def __init__(self, interface: str, channel: str, host: str = "127.0.0.1", port: int = 29536,
                 silence_reopen_s: float = 5.0, opener=open_can, clock=time.monotonic):
        self.interface, self.channel, self.host, self.port = interface, channel, host, port
        self.silence_reopen_s = silence_reopen_s
        self._opener, self._clock = opener, clock
        self._bus: can.BusABC | None = None
        self._opening: threading.Thread | None = None
        self._opened: can.BusABC | None = None
        self._open_error: str | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._last_rx = clock()
        self.state = "connecting"
        self.errors = 0
        self._reported: str | None = None
        self._closed = False
        self._start_open()

    @property
    def label(self) -> str:
        where = f"{self.host}:{self.port}/" if self.interface == "socketcand" else ""
        return f"{self.interface}:{where}{self.channel}"

    # ------------------------------------------------------------------ opening (a thread of its own)
    def _start_open(self) -> None:
        def run():
            try:
                bus = self._opener(self.interface, self.channel, self.host, self.port)
            except Exception as exc:         # refused, no such interface, handshake failed …
                self._open_error = f"{type(exc).__name__}: {exc}"
                return
            if self._closed:
                bus.shutdown()
            else:
                self._opened = bus
        self._open_error, self._opened = None, None
        self._opening = threading.Thread(target=run, name="ems-can-open", daemon=True)
        self._opening.start()

    def _service(self) -> None:
        """Take a finished open, or schedule the next one (control thread, never blocks)."""
        now = self._clock()
        if self._opening is not None and not self._opening.is_alive():
            self._opening = None
            if self._opened is not None:
                self._bus, self._opened = self._opened, None
                self._backoff_s, self._last_rx, self.state = 0.0, now, "connected"
                self._report(f"{self.label}: connected")
            else:
                self._down(now, self._open_error or "open failed")
        if self._bus is None and self._opening is None and now >= self._retry_at and not self._closed:
            self._start_open()

    def _down(self, now: float, why: str, quiet: bool = False) -> None:
        if self._bus is not None:
            try:
                self._bus.shutdown()
            except Exception:                # a broken bus may fail to close too
                pass
            self._bus = None
        self.state = "down"
        self._backoff_s = min(max(self._backoff_s * 2, self.MIN_BACKOFF_S), self.MAX_BACKOFF_S)
        self._retry_at = now + (0.0 if quiet else self._backoff_s)
        if not quiet:
            self._report(f"{self.label}: down ({why}); retrying every ≤ {self.MAX_BACKOFF_S:g} s")

    def _report(self, text: str) -> None:
        """Log a change of state once: a silent bus reopened quietly, then connected again, logs nothing."""
        state = text.split(" (")[0]
        if state != self._reported:
            (log.info if state.endswith("connected") else log.warning)(text)
            self._reported = state

    # ------------------------------------------------------------------ the bus interface
    def recv(self, timeout: float | None = 0.0) -> can.Message | None:
        if self._bus is None:
            self._service()
            if self._bus is None:
                return None
        try:
            msg = self._bus.recv(timeout=timeout)
        except (can.CanError, OSError) as exc:
            self.errors += 1
            self._down(self._clock(), str(exc))
            return None
        now = self._clock()
        if msg is not None:
            self._last_rx = now
        elif now - self._last_rx > self.silence_reopen_s:
            self._down(now, f"no frame for {self.silence_reopen_s:g} s", quiet=True)
        return msg

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if self._bus is None:
            raise can.CanOperationError(f"{self.label} is {self.state}")
        try:
            self._bus.send(msg, timeout=timeout)
        except (can.CanError, OSError) as exc:
            self.errors += 1
            self._down(self._clock(), str(exc))
            raise can.CanOperationError(str(exc)) from exc

    def shutdown(self) -> None:
        self._closed = True
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None
        t = self._opening
        if t is not None:
            t.join(3.0)
        if self._opened is not None:
            self._opened.shutdown()
            self._opened = None
