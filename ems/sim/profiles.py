"""PV and load profiles for the simulated site: built-in named ones, or a CSV of (hour of day, W)."""
from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np


def clear_sky_fraction(local: datetime, latitude_deg: float) -> float:
    """Share of rated PV output under a clear sky: sun elevation from day of year and solar hour."""
    doy = local.timetuple().tm_yday
    dst_h = (local.dst().total_seconds() / 3600.0) if local.dst() else 0.0
    solar_h = local.hour + local.minute / 60.0 + local.second / 3600.0 - dst_h
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    lat = math.radians(latitude_deg)
    hour_angle = math.radians(15.0 * (solar_h - 12.0))
    sin_elev = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    return sin_elev ** 1.2 if sin_elev > 0 else 0.0


class Clouds:
    """A seeded, mean-reverting cloud factor in [0.2, 1] (1 = clear)."""

    def __init__(self, seed: int, cloudy: bool):
        self.rng = np.random.default_rng(seed)
        self.cloudy = cloudy
        self.x = 0.0

    def step(self, dt_s: float) -> float:
        if not self.cloudy:
            return 1.0
        tau = 600.0
        self.x += -self.x * dt_s / tau + 0.6 * math.sqrt(2 * dt_s / tau) * self.rng.standard_normal()
        return float(min(1.0, max(0.2, 0.75 + 0.35 * math.tanh(self.x))))


def _table(path: str):
    rows = []
    with Path(path).open(newline="") as fh:
        for n, row in enumerate(csv.reader(fh), start=1):
            if not row or row[0].strip().startswith("#") or row[0].strip() == "hour":
                continue
            try:
                rows.append((float(row[0]), float(row[1])))
            except (ValueError, IndexError):
                raise ValueError(f"{path} line {n}: expected 'hour,w' numbers, got {row!r}") from None
    if len(rows) < 2:
        raise ValueError(f"{path}: needs at least two 'hour,w' rows")
    rows.sort()
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


class LoadProfile:
    """Site consumption: 'commercial', 'residential', 'flat' (scaled to peak_w) or 'csv:PATH' (W)."""

    def __init__(self, name: str, peak_w: float, seed: int = 2):
        self.name = name
        self.peak_w = peak_w
        self.rng = np.random.default_rng(seed)
        self.table = _table(name[4:]) if name.startswith("csv:") else None
        if self.table is None and name not in ("commercial", "residential", "flat"):
            raise ValueError(f"unknown load profile {name!r} (commercial, residential, flat or csv:PATH)")
        self.step_w = 0.0

    def shape(self, local: datetime) -> float:
        h = local.hour + local.minute / 60.0
        if self.name == "flat":
            return 1.0
        if self.name == "residential":
            return 0.25 + 0.45 * math.exp(-((h - 7.5) / 1.2) ** 2) + 0.75 * math.exp(-((h - 19.5) / 2.0) ** 2)
        workday = local.weekday() < 5
        if not workday:
            return 0.30
        day = 1.0 / (1.0 + math.exp(-(h - 7.5) * 2.0)) * 1.0 / (1.0 + math.exp((h - 18.5) * 2.0))
        return 0.25 + 0.75 * day - 0.12 * math.exp(-((h - 12.5) / 0.6) ** 2)

    def value(self, local: datetime) -> float:
        if self.table is not None:
            h = local.hour + local.minute / 60.0 + local.second / 3600.0
            base = float(np.interp(h, *self.table))
        else:
            base = self.peak_w * self.shape(local) * (1.0 + 0.03 * self.rng.standard_normal())
        return max(base + self.step_w, 0.0)


class PvProfile:
    """PV available power: 'clear', 'cloudy' (day curve × clouds) or 'csv:PATH' (W by hour of day)."""

    def __init__(self, name: str, installed_w: float, latitude_deg: float, seed: int = 3):
        self.name = name
        self.installed_w = installed_w
        self.latitude_deg = latitude_deg
        self.table = _table(name[4:]) if name.startswith("csv:") else None
        if self.table is None and name not in ("clear", "cloudy", "none"):
            raise ValueError(f"unknown PV profile {name!r} (clear, cloudy, none or csv:PATH)")
        self.clouds = Clouds(seed, name == "cloudy")
        self.scale = 1.0

    def value(self, local: datetime, dt_s: float) -> float:
        if self.name == "none":
            return 0.0
        if self.table is not None:
            h = local.hour + local.minute / 60.0 + local.second / 3600.0
            return max(float(np.interp(h, *self.table)) * self.scale, 0.0)
        return self.installed_w * clear_sky_fraction(local, self.latitude_deg) * self.clouds.step(dt_s) * self.scale
