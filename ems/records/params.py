"""Parameter reads and changes for the API: a change is validated by the same loader as the site file and
saved atomically; an invalid change is refused with every problem and changes nothing.

A running controller takes a saved change of a strategy section live, within one slow tick (ems.control.
controller.LIVE_SECTIONS); any other section takes effect at the next restart, and the API's answer says
which is which. The file is rewritten by tomli-w, so comments in it are not kept.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import tomli_w

from ems.config.files import write_atomic
from ems.config.load import ConfigError, Problem, read_toml, site_from_dict
from ems.config.schema import SiteConfig

SECTIONS = frozenset(f.name for f in dataclasses.fields(SiteConfig))


def current(path: Path | None) -> dict:
    """The effective configuration (defaults filled in) as a plain dict."""
    cfg = site_from_dict({k: v for k, v in read_toml(path).items() if k != "simulation"}, str(path),
                         base_dir=Path(path).parent) if path else SiteConfig()
    return dataclasses.asdict(cfg)


def flatten(changes: dict) -> dict[str, object]:
    """{"self_use": {"reserve_soc_pct": 15}} or {"self_use.reserve_soc_pct": 15} → dotted keys."""
    flat = {}
    for k, v in changes.items():
        if isinstance(v, dict) and "." not in k:
            for k2, v2 in v.items():
                flat[f"{k}.{k2}"] = v2
        else:
            flat[k] = v
    return flat


def apply_changes(path: Path, changes: dict) -> tuple[SiteConfig, list[tuple[str, object, object]]]:
    """Validate and save. Returns the new configuration and (key, old, new) per change; raises ConfigError
    (nothing written) when any key is unknown or any value is out of range."""
    if not isinstance(changes, dict) or not changes:
        raise ConfigError([Problem("(request)", changes, "give an object of changes, e.g. "
                                   '{"self_use.reserve_soc_pct": 15}')], "parameters")
    raw = read_toml(path)
    new = copy.deepcopy(raw)
    done = []
    problems = []
    for key, value in flatten(changes).items():
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            problems.append(Problem(key, value, "key must be section.name (lists are changed as a whole)"))
            continue
        section, name = parts
        if section not in SECTIONS:
            problems.append(Problem(key, value, f"[{section}] is not a section of the controller's parameters"
                                    + (" ([simulation] is `ems simulate`'s: edit it in the file)"
                                       if section == "simulation" else "")))
            continue
        table = new.setdefault(section, {})
        if not isinstance(table, dict):
            problems.append(Problem(section, table, "not a table"))
            continue
        old = table.get(name)
        table[name] = value
        done.append((key, old, value))
    if problems:
        raise ConfigError(problems, "parameters")
    # validated exactly as the site file is (relative paths from its folder); raises on any problem
    cfg = site_from_dict({k: v for k, v in new.items() if k != "simulation"}, "parameters", base_dir=Path(path).parent)
    save_atomic(path, new)
    return cfg, done


def save_atomic(path: Path, data: dict) -> None:
    """The site file as TOML, atomically and durably: after a power loss it is the old or the new one."""
    write_atomic(path, tomli_w.dumps(data).encode())


def section_of(key: str) -> str:
    return key.split(".", 1)[0]
