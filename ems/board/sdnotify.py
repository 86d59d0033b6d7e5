"""systemd's notification protocol (sd_notify(3)): one datagram to the AF_UNIX socket in $NOTIFY_SOCKET.

Twenty lines of standard library; no dependency needed. Outside systemd (no $NOTIFY_SOCKET) every call is
a no-op, so `ems run` behaves the same on a desk.
"""
from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            # "@name" is an abstract socket (leading NUL byte)
            self._target = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send 'KEY=value' fields (READY=1, WATCHDOG=1, STATUS=…, STOPPING=1); False if not sent."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._target)
        except OSError:
            self.errors += 1          # systemd gone or socket full: the watchdog will tell, not us
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s(env: dict | None = None) -> float | None:
    """systemd's watchdog period from $WATCHDOG_USEC (and $WATCHDOG_PID, if it names another process)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
