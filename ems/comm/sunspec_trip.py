"""The PCS's grid-connection protection on SunSpec's DER trip models (IEEE 1547-2018): 707 low voltage,
708 high voltage, 709 low frequency, 710 high frequency. One home for how the manual's stages (001_… PCS
Remote Maintenance: stage 1 and 2 over/under-voltage ratio and time, over/under-frequency value and time)
sit on the models' curves, used by the profile loader (the registers), the protection service (writes and
read-back) and the simulated PCS (curve adoption).

Each model holds `NCrvSet` stored curves of `NPt` points; each curve has a must-trip, a may-trip and a
momentary-cessation curve. Curve 1 is the active one (read-only on a device); a client writes another
curve and asks the device to adopt it (`AdptCrvReq` = its index), which copies it into curve 1 and
reports `AdptCrvRslt` (0 in progress, 1 completed, 2 failed). The stages are the must-trip curve's first
two points, in order of time: point 1 is stage 2 (the severe, fast one), point 2 is stage 1. The may-trip
and momentary-cessation curves are copied from the active curve unchanged, so adopting the new curve
changes nothing but the stages.

Register names: `m707_crv1_musttrip_pt2_v` (curve 1, must-trip, point 2, voltage), `m709_crv2_maytrip_actpt`,
`m708_adptcrvreq`; scale factors `m707_v_sf`, `m709_hz_sf`, `m707_tms_sf` (as every SunSpec point's).
"""
from __future__ import annotations

MODELS = {"uv": 707, "ov": 708, "uf": 709, "of": 710}
STAGE_OF_MODEL = {m: s for s, m in MODELS.items()}
VALUE_POINT = {707: "V", 708: "V", 709: "Hz", 710: "Hz"}        # the curve's x: % of nominal voltage, or Hz
CURVES = ("MustTrip", "MayTrip", "MomCess")
ACTIVE, EDIT = 1, 2            # curve 1 is the device's active curve; curve 2 is written, then adopted
STAGE_POINT = {2: 1, 1: 2}     # the manual's stage → its must-trip point (in order of time: the fast one first)
ADOPT_DONE, ADOPT_FAILED = 1, 2
KEYS = {"group", "ratio_pct", "hz", "time_s", "max_age_s"}
# the bounds of a point copied unchanged (may-trip, momentary cessation): physical, not the device's own
COPY_RANGE = {"V": (0.0, 300.0), "Hz": (0.0, 100.0), "Tms": (0.0, 1e6)}


def sf_name(mid: int, point: str) -> str:
    return f"m{mid}_{point.lower()}_sf"


def point_name(mid: int, curve: int, kind: str, pt: int, field: str) -> str:
    return f"m{mid}_crv{curve}_{kind.lower()}_pt{pt}_{field.lower()}"


def actpt_name(mid: int, curve: int, kind: str) -> str:
    return f"m{mid}_crv{curve}_{kind.lower()}_actpt"


def stage_registers(mid: int, curve: int) -> dict[str, str]:
    """The manual's parameter (`uv1_ratio_pct`, `of2_time_s` …) → the register of `curve` that carries it."""
    s = STAGE_OF_MODEL[mid]
    key = "ratio_pct" if s in ("ov", "uv") else "hz"
    out = {}
    for stage, pt in STAGE_POINT.items():
        out[f"{s}{stage}_{key}"] = point_name(mid, curve, "MustTrip", pt, VALUE_POINT[mid])
        out[f"{s}{stage}_time_s"] = point_name(mid, curve, "MustTrip", pt, "Tms")
    return out


def profile_registers(spec: dict, counts: dict[int, dict[str, int]]) -> tuple[list[dict], list[str]]:
    """`[sunspec_trip]` of a profile → the registers (raw tables with `point`, as a profile file writes them)
    and the problems. spec: group, max_age_s, ratio_pct = {ov = [lo, hi], uv = …}, hz = {of = …, uf = …},
    time_s = [lo, hi] (the device's ranges of the must-trip points it accepts)."""
    problems = [f"[sunspec_trip] unknown key {k!r} (known: {', '.join(sorted(KEYS))})" for k in spec if k not in KEYS]
    group = spec.get("group", "slow")
    max_age_s = spec.get("max_age_s", 15.0)
    ranges: dict[str, tuple[float, float]] = {}
    for table, stages in (("ratio_pct", ("ov", "uv")), ("hz", ("of", "uf"))):
        t = spec.get(table, {})
        for s in stages:
            ranges[s] = _range(t.get(s) if isinstance(t, dict) else None, f"[sunspec_trip] {table}.{s}", problems)
    time_range = _range(spec.get("time_s"), "[sunspec_trip] time_s", problems)
    regs: list[dict] = []
    for mid in MODELS.values():
        c = counts.get(mid)
        if c is None:
            problems.append(f"[sunspec_trip]: model {mid} must be in sunspec_chain with its sunspec_counts")
            continue
        n_pt, n_crv = c.get("NPt", 0), c.get("NCrvSet", 0)
        if n_pt < 2 or n_crv < EDIT:
            problems.append(f"[sunspec_trip]: model {mid} needs NPt >= 2 (two stages) and NCrvSet >= 2 (an active "
                            f"curve and one to write), has NPt {n_pt}, NCrvSet {n_crv}")
            continue
        x = VALUE_POINT[mid]
        common = {"group": group, "max_age_s": max_age_s}
        regs += [{"name": sf_name(mid, x), "point": f"{mid}.{x}_SF", **common},
                 {"name": sf_name(mid, "Tms"), "point": f"{mid}.Tms_SF", **common},
                 {"name": f"m{mid}_adptcrvreq", "point": f"{mid}.AdptCrvReq", "writable": True, "min": 0,
                  "max": n_crv, **common},
                 {"name": f"m{mid}_adptcrvrslt", "point": f"{mid}.AdptCrvRslt", **common}]
        for curve in (ACTIVE, EDIT):
            w = {"writable": True} if curve == EDIT else {}
            for kind in CURVES:
                regs.append({"name": actpt_name(mid, curve, kind), "point": f"{mid}.Crv[{curve}].{kind}.ActPt",
                             **common, **({**w, "min": 0, "max": n_pt} if w else {})})
                for pt in range(1, n_pt + 1):
                    must = kind == "MustTrip" and pt in STAGE_POINT.values()
                    x_rng = ranges.get(STAGE_OF_MODEL[mid]) if must else COPY_RANGE[x]
                    t_rng = time_range if must else COPY_RANGE["Tms"]
                    regs.append({"name": point_name(mid, curve, kind, pt, x),
                                 "point": f"{mid}.Crv[{curve}].{kind}.Pt[{pt}].{x}", **common, **w,
                                 **({"min": x_rng[0], "max": x_rng[1]} if x_rng and w else {})})
                    regs.append({"name": point_name(mid, curve, kind, pt, "Tms"),
                                 "point": f"{mid}.Crv[{curve}].{kind}.Pt[{pt}].Tms", **common, **w,
                                 **({"min": t_rng[0], "max": t_rng[1]} if t_rng and w else {})})
    return regs, problems


def _range(raw, where: str, problems: list[str]) -> tuple[float, float] | None:
    ok = (isinstance(raw, list) and len(raw) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw) and raw[0] < raw[1])
    if not ok:
        problems.append(f"{where}: the device's range [low, high] is required, got {raw!r}")
        return None
    return float(raw[0]), float(raw[1])


def curve_copy(mid: int, n_pt: int, src: int, dst: int) -> dict[str, str]:
    """Register of curve `dst` → the register of curve `src` it takes (every curve kind, every point)."""
    x = VALUE_POINT[mid]
    out = {}
    for kind in CURVES:
        out[actpt_name(mid, dst, kind)] = actpt_name(mid, src, kind)
        for pt in range(1, n_pt + 1):
            for f in (x, "Tms"):
                out[point_name(mid, dst, kind, pt, f)] = point_name(mid, src, kind, pt, f)
    return out


def n_points(registers, mid: int) -> int:
    """How many points per curve a profile's registers carry for model `mid`."""
    n = 0
    while point_name(mid, ACTIVE, "MustTrip", n + 1, "Tms") in registers:
        n += 1
    return n


def has_trip_curves(registers) -> bool:
    return all(f"m{mid}_adptcrvreq" in registers for mid in MODELS.values())
