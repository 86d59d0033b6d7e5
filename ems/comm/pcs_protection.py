"""The PCS's grid-connection protection (001_… PCS Remote Maintenance): stage 1 and stage 2 over- and
under-voltage (ratio of nominal and trip time) and over- and under-frequency (value and trip time), queried
and set through the PCS's profile — vendor registers named `prot_{ov,uv,of,uf}{1,2}_{ratio_pct|hz,time_s}`
(the simulated PCS has them; SunSpec 707–710 for a SunSpec PCS is not built yet).

A change is checked against the profile's ranges and the stages' order (stage 2 is the severe one: beyond
stage 1 and no slower), written, and read back: it is reported done only once the PCS reads back what was
written. The EMS then keeps the values written (they are held like setpoints, refreshed hourly), so a
PCS that restarts with other settings gets them again.
"""
from __future__ import annotations

import time

STAGES = ("ov", "uv", "of", "uf")
POINTS = tuple(f"{s}{n}_{k}" for s in STAGES for n in (1, 2)
               for k in (("ratio_pct" if s in ("ov", "uv") else "hz"), "time_s"))
REFRESH_S = 3600.0


class ProtectionError(ValueError):
    def __init__(self, *reasons: str):
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


class PcsProtection:
    def __init__(self, engine, device: str):
        self.engine, self.device = engine, device
        regs = engine.device(device).profile.registers
        self.registers = {p: regs[f"prot_{p}"] for p in POINTS if f"prot_{p}" in regs}

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
        return {p: self.engine.value(self.device, r.name) for p, r in self.registers.items()}

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
                reasons.append(str(exc))
                continue
            out[k] = float(v)
        now = {**self.query(), **out}
        for s in STAGES:
            key = "ratio_pct" if s in ("ov", "uv") else "hz"
            a, b = now.get(f"{s}1_{key}"), now.get(f"{s}2_{key}")
            ta, tb = now.get(f"{s}1_time_s"), now.get(f"{s}2_time_s")
            if a is not None and b is not None and (b <= a if s in ("ov", "of") else b >= a):
                reasons.append(f"{s}2_{key} {b:g} must be beyond stage 1's {a:g} (stage 2 is the severe one)")
            if ta is not None and tb is not None and tb > ta:
                reasons.append(f"{s}2_time_s {tb:g} s must be no slower than stage 1's {ta:g} s")
        if reasons:
            raise ProtectionError(*reasons)
        return out

    def set(self, changes: dict, timeout_s: float = 15.0) -> dict:
        """Check, write, read back; returns {"written": {k: value}, "read_back": {k: value}}; ProtectionError
        with the reasons when refused or not read back in time."""
        values = self.check(changes)
        for k, v in values.items():
            self.engine.hold(self.device, self.registers[k].name, v, refresh_s=REFRESH_S)
        deadline = time.monotonic() + timeout_s
        back = {}
        while time.monotonic() < deadline:
            back = {k: self.engine.value(self.device, self.registers[k].name) for k in values}
            if all(b is not None and abs(b - values[k]) <= self.registers[k].scale / 2 + 1e-9
                   and self._read_after(k) for k, b in back.items()):
                return {"written": values, "read_back": back}
            time.sleep(0.1)
        raise ProtectionError(f"the PCS did not read back {values} within {timeout_s:g} s (it reads {back})")

    def _read_after(self, k: str) -> bool:
        """The value was read after it was written (not the old reading that happened to match)."""
        sample = self.engine.sample(self.device, self.registers[k].name)
        sent = self.engine.sent_at(self.device, self.registers[k].name)
        return sample is not None and sent is not None and sample[1] >= sent
