"""Small network helpers shared by the runtime, the simulated site and the tests."""
from __future__ import annotations

import ipaddress
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (the kernel's choice; another process could take it before it is bound)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    """A loopback address (or "localhost"): the simulated site and a plain-text broker are allowed only there."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_address(address) -> str | None:
    """An IP address in its canonical text (IPv6 compressed, IPv4-mapped IPv6 as IPv4), so allowlist
    entries and client addresses compare equal however they were written; None when it is not one."""
    if not isinstance(address, str):
        return None
    try:
        ip = ipaddress.ip_address(address.strip().split("%")[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)
