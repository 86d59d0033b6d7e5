"""The parallel group as the site file describes it: the slaves' IDs and dispatch addresses (ranges
expanded), and the checks an installer gets from `ems config check` before anything runs."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

EMS_DEVICE_ID = 0x01000000
MAX_UNITS = 1000


@dataclass(frozen=True)
class UnitAddress:
    id: int
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"unit {self.id} ({self.host}:{self.port})"


def unit_device_id(parallel_id: int) -> int:
    """The device ID a parallel unit's alarms carry on the master: the manual's EMS ID, instance = the
    parallel ID (0x01000000 + N)."""
    return EMS_DEVICE_ID + parallel_id


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:1502') → (host, port); ValueError with what is wrong."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError("not HOST:PORT (e.g. \"192.168.1.12:1502\")")
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not 1 … 65535")
    return host, int(port)


def slave_units(par) -> list[UnitAddress]:
    """The master's slaves: [[parallel.slaves]] then [[parallel.slave_ranges]] expanded, in that order.
    ValueError (naming the entry) on an address that does not parse or a range that runs out of addresses."""
    out = []
    for i, s in enumerate(par.slaves):
        try:
            host, port = parse_address(s.address)
        except ValueError as exc:
            raise ValueError(f"parallel.slaves[{i}].address: {exc}") from None
        out.append(UnitAddress(s.id, host, port))
    for i, r in enumerate(par.slave_ranges):
        key = f"parallel.slave_ranges[{i}]"
        if r.last_id < r.first_id:
            raise ValueError(f"{key}.last_id: {r.last_id} is below first_id {r.first_id}")
        try:
            host, port = parse_address(r.first_address)
        except ValueError as exc:
            raise ValueError(f"{key}.first_address: {exc}") from None
        n = r.last_id - r.first_id + 1
        if r.step == "port" and port + n - 1 > 65535:
            raise ValueError(f"{key}: {n} ports from {port} run past 65535")
        ip = ipaddress.ip_address(host)
        for k in range(n):
            if r.step == "port":
                out.append(UnitAddress(r.first_id + k, host, port + k))
            else:
                try:
                    out.append(UnitAddress(r.first_id + k, str(ip + k), port))
                except ipaddress.AddressValueError:
                    raise ValueError(f"{key}: {n} addresses from {host} run past the address space") from None
    return out


def check(cfg) -> list[tuple[str, object, str]]:
    """The [parallel] section's consistency: (key, value, why) for each problem."""
    par, out = cfg.parallel, []
    if not par.enabled:
        return out
    if par.unit_id > par.units:
        out.append(("parallel.unit_id", par.unit_id, f"outside the group: IDs are 1 … units ({par.units})"))
    if par.role == "slave":
        _check_slave(cfg, out)
        if not par.backup_master:
            return out
        others = {par.unit_id, par.master_id}
        _check_units(cfg, out, others, par.units - 2, "the backup lists the units it commands when it takes over: "
                     "units must be that plus the master and itself")
        try:
            parse_address(par.master_dispatch)
        except ValueError as exc:
            out.append(("parallel.master_dispatch", par.master_dispatch, f"{exc}: the backup watches the master there"))
        if par.takeover_s < par.lease_s:
            out.append(("parallel.takeover_s", par.takeover_s, f"below parallel.lease_s ({par.lease_s:g} s)"))
        if not any(d.role == "grid_meter" for d in cfg.devices.modbus):
            out.append(("parallel.backup_master", True, "the backup runs the site's strategies when it takes over: it "
                        "needs the site's grid meter in [[devices.modbus]] (role grid_meter)"))
        return out
    _check_units(cfg, out, {par.unit_id}, par.units - 1, "units must be that plus the master")
    return out


def _check_slave(cfg, out: list) -> None:
    par = cfg.parallel
    if par.master_id == par.unit_id:
        out.append(("parallel.master_id", par.master_id, "is this unit's own ID (parallel.unit_id)"))
    if par.master_id > par.units:
        out.append(("parallel.master_id", par.master_id, f"outside the group: IDs are 1 … units ({par.units})"))
    for key in ("master_address",) + (("backup_address",) if par.backup_id and not par.backup_master else ()):
        try:
            ipaddress.ip_address(getattr(par, key))
        except ValueError:
            out.append((f"parallel.{key}", getattr(par, key), "not an IP address: it would match no client"))
    if par.backup_id:
        if par.backup_id == par.master_id:
            out.append(("parallel.backup_id", par.backup_id, "is the master's ID: the backup is another unit"))
        if par.backup_id > par.units:
            out.append(("parallel.backup_id", par.backup_id, f"outside the group: IDs are 1 … units ({par.units})"))
        if par.backup_master and par.backup_id != par.unit_id:
            out.append(("parallel.backup_id", par.backup_id, f"this unit is the backup (backup_master): its backup_id "
                        f"is its own ID {par.unit_id} or 0"))
        if not par.backup_master and par.backup_id == par.unit_id:
            out.append(("parallel.backup_id", par.backup_id, "is this unit's own ID: set backup_master = true on it"))
    if (par.slaves or par.slave_ranges) and not par.backup_master:
        out.append(("parallel.slaves", "…", "a slave lists no slaves (only the master and a backup master do)"))
    if not cfg.dispatch.server_enabled:
        out.append(("dispatch.server_enabled", False, "a slave takes the master's commands on its dispatch "
                    "server: enable it"))
    if par.fallback == "self_use" and not any(d.role == "grid_meter" for d in cfg.devices.modbus):
        out.append(("parallel.fallback", "self_use", "needs a grid meter in [[devices.modbus]] (role "
                    "grid_meter); without one choose standby"))


def _check_units(cfg, out: list, not_listed: set[int], count: int, count_why: str) -> None:
    """A commanding unit's list of units: parses, the right count, IDs and addresses once each."""
    par = cfg.parallel
    try:
        units = slave_units(par)
    except ValueError as exc:
        key, _, why = str(exc).partition(": ")
        out.append((key, "…", why))
        return
    if len(units) != count:
        out.append(("parallel.units", par.units, f"{len(units)} unit(s) listed: {count_why} ({len(units)} + "
                    f"{par.units - count})"))
    seen_id: dict[int, UnitAddress] = {}
    seen_addr: dict[tuple[str, int], UnitAddress] = {}
    for u in units:
        if u.id in not_listed:
            out.append(("parallel.slaves", u.id, f"ID {u.id} is this unit's own or its master's: the master is "
                        "listed once"))
        elif u.id in seen_id:
            out.append(("parallel.slaves", u.id, f"ID {u.id} is given twice ({seen_id[u.id].host}:"
                        f"{seen_id[u.id].port} and {u.host}:{u.port})"))
        if u.id > par.units:
            out.append(("parallel.slaves", u.id, f"ID {u.id} is outside the group: IDs are 1 … units ({par.units})"))
        key = (ipaddress.ip_address(u.host).compressed, u.port)
        if key in seen_addr:
            out.append(("parallel.slaves", f"{u.host}:{u.port}", f"address given twice (IDs {seen_addr[key].id} "
                        f"and {u.id})"))
        seen_id.setdefault(u.id, u)
        seen_addr.setdefault(key, u)
    if par.timeout_ms >= cfg.loops.slow_period_ms:
        out.append(("parallel.timeout_ms", par.timeout_ms, f"must be below loops.slow_period_ms "
                    f"({cfg.loops.slow_period_ms:g} ms): a cycle must end before the next"))
    if par.lease_s * 1000.0 < 2 * cfg.loops.slow_period_ms:
        out.append(("parallel.lease_s", par.lease_s, f"shorter than two slow periods "
                    f"({2 * cfg.loops.slow_period_ms / 1000:g} s): one late cycle would drop every slave"))
