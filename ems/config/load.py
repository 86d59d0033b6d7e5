"""Loading and validating a site file: every problem is reported with its key, its value and what is allowed.

Nothing half-valid is ever returned: either a complete SiteConfig or a ConfigError listing all problems.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from datetime import date
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ems.config.fields import parse_days, parse_hhmm, parse_mmdd
from ems.config.schema import SiteConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 boards
    import tomli as tomllib


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.message}"


class ConfigError(ValueError):
    def __init__(self, problems: list[Problem], source: str = "config"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _range_text(meta) -> str:
    lo, hi, unit = meta.get("lo"), meta.get("hi"), meta.get("unit") or ""
    return f"allowed {lo:g} … {hi:g} {unit}".rstrip()


def _scalar(value: Any, default: Any, meta: dict, key: str, problems: list[Problem]) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            problems.append(Problem(key, value, "must be true or false"))
            return default
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(Problem(key, value, f"must be a whole number, {_range_text(meta)}"))
            return default
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(Problem(key, value, f"must be a number, {_range_text(meta)}"))
            return default
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            problems.append(Problem(key, value, "must be a string"))
            return default
    elif isinstance(default, list):
        if not isinstance(value, list) and not (meta.get("str_ok") and isinstance(value, str)):
            problems.append(Problem(key, value, "must be a list"))
            return default
    choices = meta.get("choices")
    if choices and value not in choices:
        problems.append(Problem(key, value, f"must be one of {', '.join(choices)}"))
        return default
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and isinstance(value, (int, float)) and not (lo <= value <= hi):
        problems.append(Problem(key, value, _range_text(meta)))
        return default
    return value


def _build(cls, data: Any, prefix: str, problems: list[Problem]):
    if not isinstance(data, dict):
        problems.append(Problem(prefix or "(top level)", data, "must be a table"))
        data = {}
    known = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in known:
            problems.append(Problem(f"{prefix}{k}", data[k], f"unknown key; known here: {', '.join(sorted(known))}"))
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.metadata.get("section"):
            kwargs[f.name] = _build(f.default_factory, data.get(f.name, {}), key + ".", problems)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name not in data:
            kwargs[f.name] = default
            continue
        value = _scalar(data[f.name], default, f.metadata, key, problems)
        item = f.metadata.get("item")
        if item is not None and isinstance(value, list):
            max_items = f.metadata.get("max_items")
            if max_items is not None and len(value) > max_items:
                problems.append(Problem(key, f"{len(value)} entries", f"at most {max_items} allowed"))
                value = value[:max_items]
            value = [_build(item, entry, f"{key}[{i}].", problems) for i, entry in enumerate(value)]
        kwargs[f.name] = value
    return cls(**kwargs)


def _check_windows(entries, key: str, problems: list[Problem], indexed: bool = True) -> None:
    """Days and times parse; end after start (no crossing midnight); no two entries overlap on a day."""
    parsed = []
    for i, e in enumerate(entries):
        k = f"{key}[{i}]" if indexed else key
        try:
            days = parse_days(getattr(e, "days", "all"))
            start, end = parse_hhmm(e.start), parse_hhmm(e.end)
        except ValueError as exc:
            problems.append(Problem(k, {"days": getattr(e, "days", "all"), "start": e.start, "end": e.end}, str(exc)))
            continue
        if end <= start:
            problems.append(Problem(f"{k}.end", e.end, f"must be after start {e.start} (periods may not cross midnight)"))
            continue
        for j, (odays, ostart, oend) in parsed:
            if days & odays and start < oend and ostart < end:
                problems.append(Problem(k, f"{e.start}-{e.end}", f"overlaps {key}[{j}] on a shared day"))
        parsed.append((i, (days, start, end)))


def _check_gpio_lines(dc, problems: list[Problem]) -> None:
    """Each GPIO line names a known input or output, once, on a line of its own."""
    from ems.control.io_map import DO_NAMES, KNOWN_INPUTS
    names: set[str] = set()
    offsets: dict[int, str] = {}
    for i, g in enumerate(dc.gpio_lines):
        key = f"dry_contacts.gpio_lines[{i}]"
        if g.name not in KNOWN_INPUTS and g.name not in DO_NAMES:
            problems.append(Problem(f"{key}.name", g.name, "not a dry-contact input or output; inputs: "
                                    f"{', '.join(KNOWN_INPUTS)}; outputs: {', '.join(DO_NAMES)}"))
        elif g.name in names:
            problems.append(Problem(f"{key}.name", g.name, "wired twice"))
        names.add(g.name)
        if g.line in offsets:
            problems.append(Problem(f"{key}.line", g.line, f"already used by {offsets[g.line]!r}"))
        offsets.setdefault(g.line, g.name)
    if dc.backend == "gpio" and not dc.gpio_lines:
        problems.append(Problem("dry_contacts.gpio_lines", [], "backend 'gpio' needs the lines it is wired to"))


def _check_channels(cfg: SiteConfig, problems: list[Problem]) -> None:
    """Backend modbus: the I/O module exists; each channel names a known input or output, once; an input
    channel (or an output channel) is used once."""
    from ems.control.io_map import DO_NAMES, KNOWN_INPUTS
    dc = cfg.dry_contacts
    if dc.backend != "modbus":
        if dc.channels:
            problems.append(Problem("dry_contacts.channels", f"{len(dc.channels)} entries",
                                    "channels are for backend 'modbus' (an I/O module)"))
        return
    io = [d for d in cfg.devices.modbus if d.role == "io_module"]
    if not any(d.name == dc.io_device for d in io):
        problems.append(Problem("dry_contacts.io_device", dc.io_device, "backend 'modbus' needs the name of a "
                                f"[[devices.modbus]] entry with role io_module (have: {[d.name for d in io]})"))
    names: set[str] = set()
    used: dict[tuple[str, int], str] = {}
    for i, c in enumerate(dc.channels):
        key = f"dry_contacts.channels[{i}]"
        bank = "input" if c.name in KNOWN_INPUTS else "output" if c.name in DO_NAMES else None
        if bank is None:
            problems.append(Problem(f"{key}.name", c.name, "not a dry-contact input or output; inputs: "
                                    f"{', '.join(KNOWN_INPUTS)}; outputs: {', '.join(DO_NAMES)}"))
            continue
        if c.name in names:
            problems.append(Problem(f"{key}.name", c.name, "wired twice"))
        names.add(c.name)
        if (bank, c.channel) in used:
            problems.append(Problem(f"{key}.channel", c.channel, f"{bank} channel already used by "
                                                                 f"{used[(bank, c.channel)]!r}"))
        used.setdefault((bank, c.channel), c.name)
    if not dc.channels:
        problems.append(Problem("dry_contacts.channels", [], "backend 'modbus' needs the channels it is wired to"))


def _wired(dc) -> set[str] | None:
    """The contacts the backend wires (None: backend memory, where a test or simulation sets any)."""
    if dc.backend == "gpio":
        return {g.name for g in dc.gpio_lines}
    if dc.backend == "modbus":
        return {c.name for c in dc.channels}
    return None


def _check_devices(cfg: SiteConfig, problems: list[Problem]) -> None:
    """Device entries name a profile (shipped or the site's own) of the right kind; names are unique; one
    device per role (the controller reads one grid meter, one PCS …); an RTU device names its serial port and
    shares its line's framing; each role's poll interval fits inside its comm-loss age; the BMS is reachable
    the way [devices] bms says."""
    from ems.comm.can_profiles import can_profiles
    from ems.comm.profiles import ProfileError, site_profiles
    from ems.comm.roles import ROLE_KINDS, check_role, poll_interval_s
    dv = cfg.devices
    try:
        profiles = site_profiles(dv.profiles_dir)
    except ProfileError as exc:         # a broken profile is reported, not raised
        problems.append(Problem("devices.profiles_dir", dv.profiles_dir or "drivers", f"profile error:\n{exc}"))
        profiles = {}
    names, roles = set(), set()
    lines: dict[str, tuple[int, tuple]] = {}
    for i, d in enumerate(dv.modbus):
        key = f"devices.modbus[{i}]"
        if d.name in names:
            problems.append(Problem(f"{key}.name", d.name, "used twice; device names must be unique"))
        names.add(d.name)
        if d.role in roles:
            problems.append(Problem(f"{key}.role", d.role, "a second device with this role; one per role"))
        roles.add(d.role)
        p = profiles.get(d.model)
        if p is None:
            problems.append(Problem(f"{key}.model", d.model, f"no such profile; known: {', '.join(sorted(profiles))}"))
        elif p.kind != ROLE_KINDS[d.role]:
            problems.append(Problem(f"{key}.model", d.model, f"is a {p.kind} profile; role {d.role} needs a "
                                                             f"{ROLE_KINDS[d.role]}"))
        else:
            try:
                check_role(p, d.role)
            except ValueError as exc:
                problems.append(Problem(f"{key}.model", d.model, str(exc)))
            else:
                poll = poll_interval_s(p, d.role)
                if d.comm_loss_s < 2 * poll:
                    problems.append(Problem(f"{key}.comm_loss_s", d.comm_loss_s, f"{d.model} polls what role {d.role} "
                                            f"reads every {poll:g} s: the comm-loss age must be at least twice that "
                                            f"({2 * poll:g} s), or one late answer raises a false alarm"))
        if d.transport == "rtu":
            if not d.serial_port:
                problems.append(Problem(f"{key}.serial_port", d.serial_port, "an RTU device needs its serial port"))
            framing = (d.baudrate, d.parity, d.bytesize, d.stopbits)
            first = lines.setdefault(d.serial_port, (i, framing))
            if first[1] != framing:
                problems.append(Problem(key, f"{d.baudrate} {d.bytesize}{d.parity}{d.stopbits}", f"devices on "
                                        f"{d.serial_port} share one line: same baud rate, data bits, parity and stop "
                                        f"bits as devices.modbus[{first[0]}]"))
    if dv.bms == "modbus" and "bms" not in roles:
        problems.append(Problem("devices.bms", dv.bms, "needs a [[devices.modbus]] entry with role bms"))
    if dv.bms == "can":
        if "bms" in roles:
            problems.append(Problem("devices.bms", dv.bms, "a [[devices.modbus]] entry has role bms: set "
                                                           "devices.bms = \"modbus\" to use it"))
        try:
            cp = can_profiles(dv.profiles_dir).get(dv.can_profile)
        except ProfileError as exc:
            problems.append(Problem("devices.profiles_dir", dv.profiles_dir or "drivers", f"CAN profile error:\n{exc}"))
            cp = False
        if cp is None:
            problems.append(Problem("devices.can_profile", dv.can_profile, "no such CAN BMS profile; known: "
                                    + ", ".join(sorted(can_profiles()))))
        elif cp and cp.level == "stack":
            if cfg.battery.clusters != 1:
                problems.append(Problem("battery.clusters", cfg.battery.clusters, f"{dv.can_profile} reports the "
                                        "stack only: the EMS sees one cluster (set battery.clusters = 1)"))
            ref = cp.stack["voltage_v"]
            top = cp.db.get_message_by_name(ref.message).get_signal_by_name(ref.signal).maximum
            full = cfg.battery.cells_per_cluster * cfg.battery.cell_full_v
            if top is not None and full > top * abs(ref.scale):
                problems.append(Problem("battery.cells_per_cluster", cfg.battery.cells_per_cluster,
                                        f"{dv.can_profile} carries the stack voltage up to {top:g} V; this stack "
                                        f"reaches {full:g} V when full (a low-voltage protocol: use a profile that "
                                        "carries the stack's voltage)"))
    _check_channels(cfg, problems)
    wired = _wired(cfg.dry_contacts)
    for i, name in enumerate(cfg.dry_contacts.inverted_inputs):
        if wired is not None and name not in wired:
            problems.append(Problem(f"dry_contacts.inverted_inputs[{i}]", name, "not wired: a normally-closed input "
                                    "that is not wired would read active (for an EPO: the PCS stopped)"))


def _check_protection(cfg: SiteConfig, problems: list[Problem]) -> None:
    from ems.control.protection_table import rows_for

    pr = cfg.protection
    if pr.trip_max_wait_ms < pr.trip_delay_ms:
        problems.append(Problem("protection.trip_max_wait_ms", pr.trip_max_wait_ms,
                                f"below protection.trip_delay_ms ({pr.trip_delay_ms:g} ms)"))
    try:
        rows_for(cfg)
    except ValueError as exc:
        problems.append(Problem("protection.rows", "…", str(exc)))


def _check_allowlist(cfg: SiteConfig, problems: list[Problem]) -> None:
    """[dispatch] allowed_clients: each an IP address (client addresses are compared in canonical form,
    so "0:0:0:0:0:0:0:1" and "::1" are one entry; an integer or a host name would match nobody)."""
    from ems.comm.net import normalise_address

    for i, a in enumerate(cfg.dispatch.allowed_clients):
        if normalise_address(a) is None:
            problems.append(Problem(f"dispatch.allowed_clients[{i}]", a, "not an IP address (e.g. \"10.0.0.5\" or "
                                    "\"::1\"): it would match no client"))


def _cross_check(cfg: SiteConfig, problems: list[Problem]) -> None:
    b = cfg.battery
    if b.cells_per_cluster % b.packs_per_cluster:
        problems.append(Problem("battery.packs_per_cluster", b.packs_per_cluster,
                                f"must divide battery.cells_per_cluster ({b.cells_per_cluster}) evenly"))
    try:
        from zoneinfo import ZoneInfo
        ZoneInfo(cfg.site.timezone)
    except Exception:
        problems.append(Problem("site.timezone", cfg.site.timezone, "not a known IANA time zone (e.g. Europe/Berlin)"))
    rated = cfg.pcs.rated_power_w
    if 0 < cfg.pcs.rated_apparent_va < rated:
        problems.append(Problem("pcs.rated_apparent_va", cfg.pcs.rated_apparent_va,
                                f"below pcs.rated_power_w ({rated:g} W): S is at least P (0: equal to it)"))
    _check_allowlist(cfg, problems)
    from ems.parallel.units import check as check_parallel
    problems.extend(Problem(k, v, why) for k, v, why in check_parallel(cfg))
    from ems.cloud.config import check as check_cloud
    problems.extend(Problem(k, v, why) for k, v, why in check_cloud(cfg))
    _check_protection(cfg, problems)
    _check_devices(cfg, problems)
    _check_windows(cfg.time_based.groups, "time_based.groups", problems)
    for i, g in enumerate(cfg.time_based.groups):
        if g.power_w > rated:
            problems.append(Problem(f"time_based.groups[{i}].power_w", g.power_w, f"above pcs.rated_power_w ({rated:g} W)"))
    _check_windows(cfg.peak_shaving.windows, "peak_shaving.windows", problems)
    for i, w in enumerate(cfg.peak_shaving.windows):
        if w.valley_w >= w.peak_w:
            problems.append(Problem(f"peak_shaving.windows[{i}].valley_w", w.valley_w,
                                    f"must be below peak_w ({w.peak_w:g} W)"))
    _check_windows(cfg.time_period_feed_in.periods, "time_period_feed_in.periods", problems)
    try:
        parse_hhmm(cfg.soc_calibration.start_time)
    except ValueError as exc:
        problems.append(Problem("soc_calibration.start_time", cfg.soc_calibration.start_time, str(exc)))
    for n in (1, 2):
        ch = getattr(cfg.sg_ready, f"channel_{n}")
        key = f"sg_ready.channel_{n}"
        if ch.mode in ("on", "off"):
            _check_windows([ch], key, problems, indexed=False)
        if ch.switch_off_feed_in_w > ch.switch_on_feed_in_w:
            problems.append(Problem(f"{key}.switch_off_feed_in_w", ch.switch_off_feed_in_w,
                                    f"must not exceed switch_on_feed_in_w ({ch.switch_on_feed_in_w:g} W)"))
    g, o = cfg.generator, cfg.off_grid
    pairs = [("generator.start_soc_pct", g.start_soc_pct, "generator.stop_soc_pct", g.stop_soc_pct),
             ("off_grid.load_cutoff_soc_pct", o.load_cutoff_soc_pct, "off_grid.load_access_soc_pct", o.load_access_soc_pct),
             ("off_grid.general_load_cutoff_soc_pct", o.general_load_cutoff_soc_pct,
              "off_grid.general_load_access_soc_pct", o.general_load_access_soc_pct),
             ("off_grid.important_load_cutoff_soc_pct", o.important_load_cutoff_soc_pct,
              "off_grid.important_load_access_soc_pct", o.important_load_access_soc_pct),
             ("off_grid.ats_prealarm_soc_pct", o.ats_prealarm_soc_pct,
              "off_grid.ats_prealarm_clear_soc_pct", o.ats_prealarm_clear_soc_pct)]
    for low_key, low, high_key, high in pairs:
        if low >= high:
            problems.append(Problem(low_key, low, f"must be below {high_key} ({high:g} %)"))
    for key in ("generator.start_time", "generator.stop_time"):
        try:
            parse_hhmm(getattr(g, key.split(".")[1]))
        except ValueError as exc:
            problems.append(Problem(key, getattr(g, key.split(".")[1]), str(exc)))
    if o.stop_ess_soc_pct > o.load_cutoff_soc_pct:
        problems.append(Problem("off_grid.stop_ess_soc_pct", o.stop_ess_soc_pct,
                                f"must not exceed load_cutoff_soc_pct ({o.load_cutoff_soc_pct:g} %): loads are shed "
                                "before the ESS stops"))
    if o.graded_load_enabled and o.important_load_cutoff_soc_pct >= o.general_load_cutoff_soc_pct:
        problems.append(Problem("off_grid.important_load_cutoff_soc_pct", o.important_load_cutoff_soc_pct,
                                f"must be below general_load_cutoff_soc_pct ({o.general_load_cutoff_soc_pct:g} %): "
                                "general loads are shed first"))
    _check_operating_mode(cfg, problems)
    from ems.control.io_map import KNOWN_INPUTS
    for i, name in enumerate(cfg.dry_contacts.inverted_inputs):
        if name not in KNOWN_INPUTS:
            problems.append(Problem(f"dry_contacts.inverted_inputs[{i}]", name,
                                    f"not an input; known: {', '.join(KNOWN_INPUTS)}"))
    _check_gpio_lines(cfg.dry_contacts, problems)
    ac = cfg.air_conditioner
    if ac.heating_stop_degc >= ac.cooling_stop_degc:
        problems.append(Problem("air_conditioner.heating_stop_degc", ac.heating_stop_degc,
                                f"must be below cooling_stop_degc ({ac.cooling_stop_degc:g} °C)"))
    if cfg.bypass.spread_off_pct >= cfg.bypass.spread_on_pct:
        problems.append(Problem("bypass.spread_off_pct", cfg.bypass.spread_off_pct,
                                f"must be below bypass.spread_on_pct ({cfg.bypass.spread_on_pct:g} %)"))
    for key, value in (("forced_charge.power_w", cfg.forced_charge.power_w),
                       ("soc_calibration.charge_power_w", cfg.soc_calibration.charge_power_w),
                       ("soc_calibration.discharge_power_w", cfg.soc_calibration.discharge_power_w),
                       ("forced_charge.undervoltage_power_w", cfg.forced_charge.undervoltage_power_w),
                       ("ups_reserve.power_w", cfg.ups_reserve.power_w)):
        if value > rated:
            problems.append(Problem(key, value, f"above pcs.rated_power_w ({rated:g} W)"))
    if cfg.loops.slow_period_ms < cfg.loops.fast_period_ms:
        problems.append(Problem("loops.slow_period_ms", cfg.loops.slow_period_ms,
                                f"must not be shorter than loops.fast_period_ms ({cfg.loops.fast_period_ms:g} ms)"))


def _check_operating_mode(cfg: SiteConfig, problems: list[Problem]) -> None:
    om = cfg.operating_mode
    names = set()
    for i, sea in enumerate(om.seasons):
        for part in ("start", "end"):
            try:
                parse_mmdd(getattr(sea, part))
            except ValueError as exc:
                problems.append(Problem(f"operating_mode.seasons[{i}].{part}", getattr(sea, part), str(exc)))
        if sea.name in names or sea.name == "all":
            problems.append(Problem(f"operating_mode.seasons[{i}].name", sea.name, "must be unique and not 'all'"))
        names.add(sea.name)
    for i, h in enumerate(om.holidays):
        try:
            if isinstance(h, str) and len(h) == 5:
                parse_mmdd(h)
            else:
                date.fromisoformat(h)
        except (ValueError, TypeError):
            problems.append(Problem(f"operating_mode.holidays[{i}]", h, 'not a date "YYYY-MM-DD" or "MM-DD"'))
    for i, r in enumerate(om.tou_rules):
        if r.season != "all" and r.season not in names:
            problems.append(Problem(f"operating_mode.tou_rules[{i}].season", r.season,
                                    f"no such season (defined: {', '.join(sorted(names)) or 'none'}, or all)"))
        try:
            if parse_hhmm(r.end) <= parse_hhmm(r.start):
                problems.append(Problem(f"operating_mode.tou_rules[{i}].end", r.end, f"must be after start {r.start}"))
        except ValueError as exc:
            problems.append(Problem(f"operating_mode.tou_rules[{i}]", f"{r.start}-{r.end}", str(exc)))
    if om.forced_off_grid_return_soc_pct >= om.forced_off_grid_min_soc_pct:
        problems.append(Problem("operating_mode.forced_off_grid_return_soc_pct", om.forced_off_grid_return_soc_pct,
                                f"must be below forced_off_grid_min_soc_pct ({om.forced_off_grid_min_soc_pct:g} %)"))
    if om.mode == "tou" and not om.tou_rules:
        problems.append(Problem("operating_mode.tou_rules", [], "tou mode needs at least one rule"))
    _check_estimation(cfg, problems)
    si = cfg.records.storage_interval_min
    if si and 60 % si:
        problems.append(Problem("records.storage_interval_min", si, "must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, "
                                "20, 30 or 60) so samples fall on report boundaries; 0 = no storage"))


def _check_estimation(cfg: SiteConfig, problems: list[Problem]) -> None:
    from ems.estimation.ocv import OcvError, table_for
    b, e = cfg.battery, cfg.soc_estimation
    if b.cell_empty_v >= b.cell_full_v:
        problems.append(Problem("battery.cell_empty_v", b.cell_empty_v, f"must be below battery.cell_full_v "
                                f"({b.cell_full_v:g} V)"))
    if b.chemistry == "custom" and not b.ocv_table:
        problems.append(Problem("battery.ocv_table", b.ocv_table, "chemistry 'custom' needs its OCV table (CSV "
                                "soc_pct,ocv_v)"))
    elif b.ocv_table:
        try:
            table_for(b)
        except OcvError as exc:
            problems.append(Problem("battery.ocv_table", b.ocv_table, str(exc)))
    if e.ocv_temp_min_degc >= e.ocv_temp_max_degc:
        problems.append(Problem("soc_estimation.ocv_temp_min_degc", e.ocv_temp_min_degc,
                                f"must be below ocv_temp_max_degc ({e.ocv_temp_max_degc:g} °C)"))


def site_from_dict(data: dict, source: str = "config", base_dir: str | Path | None = None) -> SiteConfig:
    """`base_dir`: relative file names in the config (battery.ocv_table) are relative to it."""
    problems: list[Problem] = []
    cfg = _build(SiteConfig, data, "", problems)
    if base_dir is not None and cfg.battery.ocv_table and not Path(cfg.battery.ocv_table).is_absolute():
        cfg.battery.ocv_table = str(Path(base_dir) / cfg.battery.ocv_table)
    if base_dir is not None:        # the cloud's key files: relative to the site file
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            value = getattr(cfg.cloud, key)
            if value and not Path(value).is_absolute():
                setattr(cfg.cloud, key, str(Path(base_dir) / value))
    if base_dir is not None:        # the site's own profiles: drivers/ beside the site file unless it says otherwise
        cfg.devices.profiles_dir = str((Path(base_dir) / (cfg.devices.profiles_dir or "drivers")).resolve())
    _cross_check(cfg, problems)      # on the values that passed (a bad value was replaced by its default)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def read_toml(path: str | Path) -> dict:
    """A site file's tables; ConfigError for anything that is not a readable TOML file of sane size and
    depth (binary, UTF-16, a directory, unreadable, nesting deeper than Python's recursion, an integer
    beyond Python's digit limit)."""
    from ems.config.files import MAX_SITE_BYTES, FileRefused, read_text_bounded

    p = Path(path)
    try:
        text = read_text_bounded(p, MAX_SITE_BYTES, "site file")
    except FileRefused as exc:
        raise ConfigError([Problem("(file)", str(p), str(exc).removeprefix(f"{p}: "))], str(p)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("(syntax)", str(p), str(exc))], str(p)) from None
    except RecursionError:
        raise ConfigError([Problem("(syntax)", str(p), "arrays or tables nested too deep")], str(p)) from None
    except ValueError as exc:           # an integer with thousands of digits (Python's int conversion limit)
        raise ConfigError([Problem("(syntax)", str(p), "a number with thousands of digits (more than Python reads "
                                       "as an integer): no parameter takes that")], str(p)) from None


def load_site(path: str | Path, data: dict | None = None) -> SiteConfig:
    """Read and validate a site file (extra top-level tables such as [simulation] are the caller's)."""
    raw = read_toml(path) if data is None else data
    raw = {k: v for k, v in raw.items() if k != "simulation"}
    return site_from_dict(raw, str(path), base_dir=Path(path).parent)
