"""A scenario: a site config plus a [simulation] section (start, duration, step, profiles, timed events)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ems.config.load import ConfigError, Problem, load_site, read_toml
from ems.config.schema import SiteConfig
from ems.control.io_map import KNOWN_INPUTS

EVENT_FIELDS = {
    "grid_outage": (), "grid_return": (),
    "pv_scale": ("value",), "load_step": ("value_w",),
    "cell_fault": ("cluster", "cell", "voltage_v"), "cell_fault_clear": ("cluster", "cell"),
    "sensor_fault": ("cluster", "cell"),
    "comm_loss": ("device",), "comm_restore": ("device",),
    "di": ("name", "closed"),
    "dispatch": (),                      # value_w optional: omitted = cancel the remote setpoint
    "command": ("name",),                # one_click_shutdown / forced_charge / generator (value) / fault_reset …
    "generator_fail": (), "generator_repair": (),
    "pcs_fault": ("code",), "pcs_fault_clear": ("code",),   # the PCS reports (or stops reporting) a manual code
}
DEVICES = ("grid_meter", "pcs", "bms", "pv", "air_conditioner", "io_module")
COMMANDS = ("one_click_shutdown", "forced_charge", "fault_reset", "soc_calibration", "generator")
MAX_EVENTS = 10_000
MAX_AFTER_H = 24 * 366


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    args: dict


@dataclass
class Simulation:
    start: datetime
    duration_s: float
    step_s: float = 1.0
    pv_profile: str = "clear"
    load_profile: str = "commercial"
    load_peak_w: float = 80_000.0
    seed: int = 1
    outside_mean_degc: float = 25.0
    outside_swing_degc: float = 7.0
    charger_w: float = 0.0
    events: list[Event] = field(default_factory=list)


def _parse_time(value, start: datetime | None, key: str, problems: list[Problem]) -> datetime | None:
    if isinstance(value, datetime):
        t = value
    elif isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            problems.append(Problem(key, value, "not an ISO 8601 date-time"))
            return None
    else:
        problems.append(Problem(key, value, "must be an ISO 8601 date-time with UTC offset"))
        return None
    if t.tzinfo is None:
        problems.append(Problem(key, value, "needs a UTC offset, e.g. 2026-06-21T00:00:00+02:00"))
        return None
    return t


def parse_simulation(raw: dict, site: SiteConfig, source: str = "scenario") -> Simulation:
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise ConfigError([Problem("simulation", raw, "a [simulation] table is required")], source)
    known = {"start", "duration_h", "step_s", "pv_profile", "load_profile", "load_peak_w", "seed", "events",
             "outside_mean_degc", "outside_swing_degc", "charger_w"}
    for k in raw:
        if k not in known:
            problems.append(Problem(f"simulation.{k}", raw[k], f"unknown key; known: {', '.join(sorted(known))}"))
    start = _parse_time(raw.get("start"), None, "simulation.start", problems)
    dur = raw.get("duration_h", 24.0)
    if not isinstance(dur, (int, float)) or isinstance(dur, bool) or not 0 < dur <= 24 * 366:
        problems.append(Problem("simulation.duration_h", dur, "allowed 0 … 8784 h"))
        dur = 24.0
    step = raw.get("step_s", 1.0)
    if not isinstance(step, (int, float)) or isinstance(step, bool) or not 0.01 <= step <= 60:
        problems.append(Problem("simulation.step_s", step, "allowed 0.01 … 60 s"))
        step = 1.0
    peak = raw.get("load_peak_w", 80_000.0)
    if not isinstance(peak, (int, float)) or isinstance(peak, bool) or not 0 <= peak <= 1e8:
        problems.append(Problem("simulation.load_peak_w", peak, "allowed 0 … 1e8 W"))
        peak = 80_000.0
    sim = Simulation(start=start or datetime.fromisoformat("2026-01-01T00:00:00+00:00"), duration_s=dur * 3600.0,
                     step_s=float(step), pv_profile=str(raw.get("pv_profile", "clear")),
                     load_profile=str(raw.get("load_profile", "commercial")), load_peak_w=float(peak),
                     seed=int(raw.get("seed", 1)) if isinstance(raw.get("seed", 1), int) else 1)
    for name, lo, hi in (("outside_mean_degc", -40.0, 55.0), ("outside_swing_degc", 0.0, 30.0),
                         ("charger_w", 0.0, 1e8)):
        v = raw.get(name, getattr(sim, name))
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
            problems.append(Problem(f"simulation.{name}", v, f"allowed {lo:g} … {hi:g}"))
        else:
            setattr(sim, name, float(v))
    for name, value, choices in (("pv_profile", sim.pv_profile, ("clear", "cloudy", "none")),
                                 ("load_profile", sim.load_profile, ("commercial", "residential", "flat"))):
        if value.startswith("csv:"):
            if not Path(value[4:]).is_file():
                problems.append(Problem(f"simulation.{name}", value, "CSV file not found"))
        elif value not in choices:
            problems.append(Problem(f"simulation.{name}", value, f"one of {', '.join(choices)} or csv:PATH"))
    events = raw.get("events", [])
    if not isinstance(events, list):
        problems.append(Problem("simulation.events", events, "must be a list of tables ([[simulation.events]])"))
        events = []
    elif len(events) > MAX_EVENTS:
        problems.append(Problem("simulation.events", f"{len(events)} events", f"at most {MAX_EVENTS}"))
        events = events[:MAX_EVENTS]
    for i, ev in enumerate(events):
        event = parse_event(ev, site, f"simulation.events[{i}]", problems, sim.start)
        if event is not None:
            sim.events.append(event)
    if problems:
        raise ConfigError(problems, source)
    sim.events.sort(key=lambda e: e.at)
    return sim


def parse_event(ev, site: SiteConfig, key: str, problems: list[Problem], start: datetime | None = None,
                timed: bool = True) -> Event | None:
    """One scenario event (a [[simulation.events]] table, or a control-channel request when not `timed`);
    None after reporting its problems."""
    if not isinstance(ev, dict):
        problems.append(Problem(key, ev, "must be a table"))
        return None
    kind = ev.get("kind")
    if kind not in EVENT_FIELDS:
        problems.append(Problem(f"{key}.kind", kind, f"one of {', '.join(EVENT_FIELDS)}"))
        return None
    if not timed:
        at = start
    elif "at" in ev:
        at = _parse_time(ev["at"], start, f"{key}.at", problems)
    elif isinstance(ev.get("after_h"), (int, float)) and not isinstance(ev["after_h"], bool) and start is not None:
        if not 0 <= ev["after_h"] <= MAX_AFTER_H:          # NaN fails this too
            problems.append(Problem(f"{key}.after_h", ev["after_h"], f"allowed 0 … {MAX_AFTER_H} h after the start"))
            return None
        at = start + timedelta(hours=ev["after_h"])
    else:
        problems.append(Problem(key, ev, "needs 'at' (ISO date-time) or 'after_h' (hours after start)"))
        return None
    missing = [f for f in EVENT_FIELDS[kind] if f not in ev]
    if missing:
        problems.append(Problem(key, ev, f"{kind} needs {', '.join(missing)}"))
        return None
    args = {k: v for k, v in ev.items() if k not in ("kind", "at", "after_h")}
    before = len(problems)
    if kind in ("comm_loss", "comm_restore") and args["device"] not in DEVICES:
        problems.append(Problem(f"{key}.device", args["device"], f"one of {', '.join(DEVICES)}"))
    if kind == "di" and (args["name"] not in KNOWN_INPUTS or not isinstance(args["closed"], bool)):
        problems.append(Problem(f"{key}.name", args["name"], f"one of {', '.join(KNOWN_INPUTS)}, closed true or false"))
    if kind in ("generator_fail", "generator_repair") and not site.generator.enabled:
        problems.append(Problem(f"{key}.kind", kind, "the site has no generator (generator.enabled = false)"))
    if kind == "command" and args["name"] not in COMMANDS:
        problems.append(Problem(f"{key}.name", args["name"], f"one of {', '.join(COMMANDS)}"))
    if kind in ("cell_fault", "cell_fault_clear", "sensor_fault"):
        c, k = args.get("cluster"), args.get("cell")
        if not (isinstance(c, int) and 0 <= c < site.battery.clusters and isinstance(k, int)
                and 0 <= k < site.battery.cells_per_cluster):
            problems.append(Problem(key, f"cluster {c}, cell {k}", "outside the stack (0-based indices)"))
    if kind in ("pcs_fault", "pcs_fault_clear"):
        from ems.records.catalogue import catalogue
        if args["code"] not in catalogue() or not 100000 <= args["code"] < 200000:
            problems.append(Problem(f"{key}.code", args["code"], "a PCS code of the alarm catalogue (1000xx)"))
    for name in ("value", "value_w", "voltage_v"):
        v = args.get(name)
        if name in args and kind != "command" and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                   or not math.isfinite(v) or abs(v) > 1e9):
            problems.append(Problem(f"{key}.{name}", v, "must be a finite number (|x| ≤ 1e9)"))
    if kind == "command" and "value" in args and not isinstance(args["value"], bool):
        problems.append(Problem(f"{key}.value", args["value"], "must be true or false"))
    if kind == "pv_scale" and isinstance(args.get("value"), (int, float)) and not 0 <= args["value"] <= 10:
        problems.append(Problem(f"{key}.value", args["value"], "a PV scale of 0 … 10"))
    if len(problems) > before or at is None:
        return None
    return Event(at, kind, args)


def load_scenario(path) -> tuple[SiteConfig, Simulation]:
    raw = read_toml(path)
    site_problems = None
    try:
        site = load_site(path, raw)
    except ConfigError as exc:
        site_problems = exc.problems
        site = SiteConfig()
    try:
        sim = parse_simulation(raw.get("simulation"), site, str(path))
    except ConfigError as exc:
        raise ConfigError((site_problems or []) + exc.problems, str(path)) from None
    if site_problems:
        raise ConfigError(site_problems, str(path))
    return site, sim
