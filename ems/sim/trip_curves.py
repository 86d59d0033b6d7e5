"""The simulated SunSpec PCS's trip curves (models 707–710, ems.comm.sunspec_trip): its settings as
delivered, and curve adoption as a device does it — `AdptCrvReq = n` checks curve n (its must-trip points
in order of time, stage 2 beyond stage 1) and copies it into the active curve 1, reporting `AdptCrvRslt`
1 (completed) or 2 (failed: the active curve is left as it was)."""
from __future__ import annotations

from ems.comm import sunspec_trip as st
from ems.comm.pcs_protection import stage_order_problems

# scale factors as the device serves them: 0.1 % of nominal voltage, 0.01 Hz, 0.01 s
SF = {"V": -1, "Hz": -2, "Tms": -2}


def publish_defaults(store, profile, defaults: dict[str, float]) -> None:
    """Every curve the device stores set to `defaults` (prot_ov1_ratio_pct … as PCS_PROTECTION_DEFAULTS):
    the stages on the must-trip curve, a may-trip curve 0.1 s behind it, no momentary cessation."""
    regs = profile.registers
    for mid in st.MODELS.values():
        x = st.VALUE_POINT[mid]
        store.publish_many({st.sf_name(mid, x): SF[x], st.sf_name(mid, "Tms"): SF["Tms"],
                            f"m{mid}_adptcrvrslt": st.ADOPT_DONE})
        n_pt = st.n_points(regs, mid)
        for curve in range(st.ACTIVE, st.EDIT + 1):
            for k, name in st.stage_registers(mid, curve).items():
                store.publish(name, defaults[f"prot_{k}"])
            store.publish_many({st.actpt_name(mid, curve, "MustTrip"): 2, st.actpt_name(mid, curve, "MayTrip"): 2,
                                st.actpt_name(mid, curve, "MomCess"): 0})
            for pt in range(1, n_pt + 1):
                must = {f: store.value(st.point_name(mid, curve, "MustTrip", pt, f)) for f in (x, "Tms")}
                if pt > 2 or must[x] is None:
                    must = {x: 0.0, "Tms": 0.0}          # points beyond the active ones
                store.publish_many({st.point_name(mid, curve, "MayTrip", pt, x): must[x],
                                    st.point_name(mid, curve, "MayTrip", pt, "Tms"): must["Tms"] + 0.1,
                                    st.point_name(mid, curve, "MomCess", pt, x): 0.0,
                                    st.point_name(mid, curve, "MomCess", pt, "Tms"): 0.0})


def adopt(store, profile, name: str, index: float) -> bool:
    """A write of `m7xx_adptcrvreq`: adopt curve `index` if it is a stored curve that passes the device's
    checks. Returns whether the write was one (other registers: False, nothing done)."""
    if not (name.startswith("m") and name.endswith("_adptcrvreq")):
        return False
    mid = int(name[1:4])
    n_crv = int(store.value(f"model_{mid}_ncrvset") or 0)
    ok = st.EDIT <= int(index) <= n_crv and _conforms(store, mid, int(index))
    if ok:
        copy = st.curve_copy(mid, st.n_points(profile.registers, mid), src=int(index), dst=st.ACTIVE)
        store.publish_many({dst: store.value(src) for dst, src in copy.items()})
    store.publish(f"m{mid}_adptcrvrslt", st.ADOPT_DONE if ok else st.ADOPT_FAILED)
    return True


def _conforms(store, mid: int, curve: int) -> bool:
    """The curve's stages in the manual's order, two active must-trip points (what the device checks on
    adoption; the rule is the protection service's own, ems.comm.pcs_protection)."""
    values = {k: store.value(name) for k, name in st.stage_registers(mid, curve).items()}
    if None in values.values() or store.value(st.actpt_name(mid, curve, "MustTrip")) != 2:
        return False
    return not stage_order_problems(st.STAGE_OF_MODEL[mid], values)
