"""The PCS's grid-connection protection (001_… PCS Remote Maintenance): stage 1 and stage 2 over- and
under-voltage (ratio of nominal and trip time) and over- and under-frequency (value and trip time), queried
and set through the PCS's profile, on one of two carriers:

- vendor registers named `prot_{ov,uv,of,uf}{1,2}_{ratio_pct|hz,time_s}` (the simulated PCS SIM-PCS);
- SunSpec's DER trip models 707–710 (SUNSPEC-PCS, `ems.comm.sunspec_trip`): the stages are written to the
  model's second stored curve (its may-trip and momentary-cessation curves copied from the active one),
  the PCS is asked to adopt it, and the active curve is read back.

A change is checked against the profile's ranges and the stages' order (stage 2 is the severe one: beyond
stage 1 and no slower), written, and read back: it is reported done only once the PCS reads back what was
written. The EMS then keeps the values written (they are held like setpoints, refreshed hourly), so a
PCS that restarts with other settings gets them again.
"""
from __future__ import annotations

import time

from ems.comm import sunspec_trip as trip

STAGES = ("ov", "uv", "of", "uf")
POINTS = tuple(f"{s}{n}_{k}" for s in STAGES for n in (1, 2)
               for k in (("ratio_pct" if s in ("ov", "uv") else "hz"), "time_s"))
REFRESH_S = 3600.0


def stage_order_problems(s: str, values: dict) -> list[str]:
    """Stage `s` ("ov", "uv", "of", "uf") in `values` (`ov1_ratio_pct` …; a value not known is not checked):
    stage 2 is the severe one, beyond stage 1 and no slower."""
    key = "ratio_pct" if s in ("ov", "uv") else "hz"
    a, b = values.get(f"{s}1_{key}"), values.get(f"{s}2_{key}")
    ta, tb = values.get(f"{s}1_time_s"), values.get(f"{s}2_time_s")
    out = []
    if a is not None and b is not None and (b <= a if s in ("ov", "of") else b >= a):
        out.append(f"{s}2_{key} {b:g} must be beyond stage 1's {a:g} (stage 2 is the severe one)")
    if ta is not None and tb is not None and tb > ta:
        out.append(f"{s}2_time_s {tb:g} s must be no slower than stage 1's {ta:g} s")
    return out


class ProtectionError(ValueError):
    def __init__(self, *reasons: str):
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


class PcsProtection:
    def __init__(self, engine, device: str):
        self.engine, self.device = engine, device
        regs = engine.device(device).profile.registers
        self.sunspec = trip.has_trip_curves(regs)
        if self.sunspec:
            # ranges from the curve that is written; values from the active curve
            self._active = {k: n for m in trip.MODELS.values() for k, n in trip.stage_registers(m, trip.ACTIVE).items()}
            names = {k: n for m in trip.MODELS.values() for k, n in trip.stage_registers(m, trip.EDIT).items()}
        else:
            self._active = names = {p: f"prot_{p}" for p in POINTS}
        self.registers = {p: regs[names[p]] for p in POINTS if names.get(p) in regs}

    @classmethod
    def for_site(cls, engine, roles: dict) -> PcsProtection | None:
        """The site's PCS, when its profile carries the protection registers."""
        name = roles.get("pcs")
        if engine is None or name is None:
            return None
        p = cls(engine, name)
        return p if len(p.registers) == len(POINTS) else None

    def query(self) -> dict:
        """The values the PCS reported last (None: not read yet, or older than the register's age)."""
        return {p: self.engine.value(self.device, self._active[p]) for p in self.registers}

    def check(self, changes: dict) -> dict[str, float]:
        reasons = []
        if not isinstance(changes, dict) or not changes:
            raise ProtectionError(f"changes: an object of {', '.join(POINTS)}")
        out = {}
        for k, v in changes.items():
            r = self.registers.get(k)
            if r is None:
                reasons.append(f"{k}: not a protection parameter ({', '.join(POINTS)})")
                continue
            try:
                r.check(v)
            except ValueError as exc:
                reasons.append(f"{k}: {exc}" if self.sunspec else str(exc))
                continue
            out[k] = float(v)
        now = {**self.query(), **out}
        for s in STAGES:
            reasons += stage_order_problems(s, now)
        if reasons:
            raise ProtectionError(*reasons)
        return out

    def set(self, changes: dict, timeout_s: float = 15.0) -> dict:
        """Check, write, read back; returns {"written": {k: value}, "read_back": {k: value}}; ProtectionError
        with the reasons when refused or not read back in time."""
        values = self.check(changes)
        if self.sunspec:
            return self._set_curves(values, timeout_s)
        for k, v in values.items():
            self.engine.hold(self.device, self.registers[k].name, v, refresh_s=REFRESH_S)
        deadline = time.monotonic() + timeout_s
        back = {}
        while time.monotonic() < deadline:
            back = {k: self.engine.value(self.device, self.registers[k].name) for k in values}
            if all(b is not None and abs(b - values[k]) <= self.registers[k].scale / 2 + 1e-9
                   and self._read_after(self.registers[k].name, self.registers[k].name) for k, b in back.items()):
                return {"written": values, "read_back": back}
            time.sleep(0.1)
        raise ProtectionError(f"the PCS did not read back {values} within {timeout_s:g} s (it reads {back})")

    def _set_curves(self, values: dict[str, float], timeout_s: float) -> dict:
        """SunSpec: per model touched, curve 2 := the active curve with the new stages; adopt it; read back."""
        eng, dev = self.engine, self.device
        regs = eng.device(dev).profile.registers
        models = sorted({trip.MODELS[k[:2]] for k in values})
        writes: dict[str, float] = {}
        for mid in models:
            copy = trip.curve_copy(mid, trip.n_points(regs, mid), src=trip.ACTIVE, dst=trip.EDIT)
            current = {dst: eng.value(dev, src) for dst, src in copy.items()}
            missing = sorted(src for dst, src in copy.items() if current[dst] is None)
            if missing:
                raise ProtectionError(f"model {mid}: the PCS's active curve is not read yet ({missing[0]} …)")
            current[trip.actpt_name(mid, trip.EDIT, "MustTrip")] = 2
            for k, name in trip.stage_registers(mid, trip.EDIT).items():
                if k in values:
                    current[name] = values[k]
            writes.update(current)
        for name, v in writes.items():     # checked first: nothing is held unless all of it can be
            try:
                regs[name].check(v)
            except ValueError as exc:      # a copied point outside what the profile lets us write
                raise ProtectionError(f"the active curve cannot be copied unchanged: {exc}") from None
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        for name, v in writes.items():     # the whole curve again, even where a value is held already
            eng.hold(dev, name, v, refresh_s=REFRESH_S, again=True)
        while not all((eng.sent_at(dev, n) or -1.0) >= t0 for n in writes):
            if time.monotonic() > deadline:
                raise ProtectionError(f"the curve could not be written to the PCS within {timeout_s:g} s")
            time.sleep(0.05)
        t_adopt = time.monotonic()
        for mid in models:                 # after the points: the channel writes holds in the order held
            eng.hold(dev, f"m{mid}_adptcrvreq", trip.EDIT, refresh_s=REFRESH_S, again=True)
        back: dict = {}
        while time.monotonic() < deadline:
            for mid in models:
                req = f"m{mid}_adptcrvreq"
                sent = eng.sent_at(dev, req)
                rslt = eng.sample(dev, f"m{mid}_adptcrvrslt")
                if sent is not None and sent >= t_adopt and rslt is not None and rslt[1] >= sent \
                        and rslt[0] == trip.ADOPT_FAILED:
                    raise ProtectionError(f"the PCS refused the new curve of model {mid} (AdptCrvRslt FAILED); "
                                          f"its active curve is unchanged")
            back = {k: eng.value(dev, self._active[k]) for k in values}
            if all(b is not None and abs(b - values[k]) <= _step(eng, dev, self._active[k]) / 2 + 1e-9
                   and self._read_after(f"m{trip.MODELS[k[:2]]}_adptcrvreq", self._active[k], t_adopt)
                   for k, b in back.items()):
                return {"written": values, "read_back": back}
            time.sleep(0.1)
        raise ProtectionError(f"the PCS did not adopt and read back {values} within {timeout_s:g} s "
                              f"(its active curve reads {back})")

    def _read_after(self, written: str, read: str, since: float = -1.0) -> bool:
        """`read` was read after `written` was written (not the old reading that happened to match)."""
        sample = self.engine.sample(self.device, read)
        sent = self.engine.sent_at(self.device, written)
        return sample is not None and sent is not None and sent >= since and sample[1] >= sent


def _step(engine, device: str, name: str) -> float:
    """The resolution a register's value is read in: its scale, × 10^SF for a SunSpec point."""
    d = engine.device(device)
    r = d.profile.registers[name]
    sf = d.sf(r) if r.scale_factor else None
    return r.scale * (10.0 ** sf if sf is not None else 1.0)
