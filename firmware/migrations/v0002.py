"""Config schema 1 → 2: the SOC estimator's thresholds in C-rate and its OCV gate in SOC (issue 18).

[soc_estimation]
- zero_current_a (A)  → zero_current_c (C-rate): the same current over the cell's capacity
                        ([battery] cell_capacity_ah, 280 Ah when not set), within the new key's 0…0.2 C.
- ocv_min_slope_mv_per_pct → ocv_max_sigma_pct: the gate is now the SOC the voltage's noise spans. On a
                        straight stretch of slope S (mV/%) a noise of sigma_v (voltage_sigma_mv, 4 when not
                        set) says the SOC to sigma_v / S %, so the old minimum slope becomes that maximum
                        (3 mV/% with 4 mV: 1.33 %), within 0.1…20 %.
rest_min keeps its name and value; it is now the minimum rest (the update also waits for the voltage to
settle, relaxed_mv_per_h, new, default 1 mV/h).
"""
MIGRATION_FROM = 1
MIGRATION_TO = 2


def migrate(doc: dict) -> dict:
    est = doc.get("soc_estimation")
    if isinstance(est, dict):
        if "zero_current_a" in est:
            cap = doc.get("battery", {}).get("cell_capacity_ah", 280.0)
            amps = est.pop("zero_current_a")
            if isinstance(amps, (int, float)) and isinstance(cap, (int, float)) and cap > 0:
                est["zero_current_c"] = round(min(max(float(amps) / float(cap), 0.0), 0.2), 6)
        if "ocv_min_slope_mv_per_pct" in est:
            slope = est.pop("ocv_min_slope_mv_per_pct")
            sigma_v = est.get("voltage_sigma_mv", 4.0)
            if isinstance(slope, (int, float)) and slope > 0 and isinstance(sigma_v, (int, float)):
                est["ocv_max_sigma_pct"] = round(min(max(float(sigma_v) / float(slope), 0.1), 20.0), 4)
    doc.setdefault("site", {})["config_version"] = MIGRATION_TO
    return doc
