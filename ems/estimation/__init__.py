"""SOC and SOH estimation around the native core's per-cell estimator (docs/soc.md).

ocv: OCV tables (CSV, the shipped LFP table, steep bands) · params: config → the core's parameter vector ·
soh: capacity and resistance per cluster from the core's anchors · replay: `ems replay-soc`.
"""
