"""Each kernel and the full fast-loop tick, native vs NumPy reference, at 1, 8 and 32 clusters × 396 cells.

Per-kernel native figures include the Python call into the kernel (argument checks, memoryview set-up);
the `tick` case is the fast loop as the supervisor runs it: one call, every stage, no argument parsing.
"""
import numpy as np
import pytest

from ems._core import aggregate as agg_k
from ems._core import arbitrate as arb_k
from ems._core import balance as bal_k
from ems._core import derate as der_k
from ems._core import layout as L
from ems._core import protection as prot_k
from ems._core import soc as soc_k
from benchmarks.site import CELLS, PACKS, make_site
from tests import reference as ref

CLUSTERS = [1, 8, 32]
DT_MS = 10.0


def _p(b):
    return b.params


def _rest_on_the_steep_end(b):
    """The SOC step's worst case: every cell at rest, relaxed, on the steep low end (~6 % on the shipped
    table), so every cell takes the OCV update (re-armed each call). Returns the estimator parameters."""
    rng = np.random.default_rng(3)
    b.cell_v[:] = rng.normal(3.12, 0.002, b.cell_v.shape)
    b.cluster_in[:, L.CL_I] = 0.0
    ep = b.est_params.copy()
    ep[L.EP_STEP_S] = 0.0
    ep[L.EP_REST_S] = 1.0
    ep[L.EP_RELAX_TAU_S] = 1.0           # a settling fit from the second call on ...
    ep[L.EP_RELAX_RATE] = 1.0            # ... that always says "relaxed"
    b.agg_f[:, L.AGG_V_MIN], b.agg_f[:, L.AGG_V_MAX] = b.cell_v.min(axis=1), b.cell_v.max(axis=1)
    b.agg_f[:, L.AGG_V_MEAN] = b.cell_v.mean(axis=1)
    b.est_state[:, L.SE_REST_S] = 1e5
    return ep


def kernel_case(case, fp):
    b, p = fp.buffers, fp.buffers.params
    fp.tick(DT_MS)     # fill every intermediate array once
    if case == "tick":
        return lambda: fp.tick(DT_MS)
    if case == "aggregate":
        return lambda: agg_k.aggregate(b.cell_v, b.cell_t, b.fresh, PACKS, p[L.TP_V_LO], p[L.TP_V_HI], p[L.TP_T_LO],
                                       p[L.TP_T_HI], b.agg_f, b.agg_i, b.pack_f, b.pack_i, b.stack_f, b.stack_i)
    if case == "protection":
        def run():
            prot_k.fill(b.agg_f, b.agg_i, b.cluster_in, b.soc_out, b.sources)
            prot_k.evaluate(b.table_f, b.table_i, b.sources, b.cluster_in, p[L.TP_IDLE_A], DT_MS,
                            p[L.TP_TRIP_DELAY_MS], False, b.prot_bits, b.prot_timers, b.prot_level, b.prot_changed,
                            b.cluster_prot, b.trip_timer_ms)
        return run
    if case == "derate":
        out2 = np.zeros(2)
        return lambda: der_k.derate(b.table_f, b.table_i, b.sources, b.cluster_in, b.cluster_flags, b.cluster_prot,
                                    p[L.TP_STACK_MAX_CHG_A], p[L.TP_STACK_MAX_DCHG_A], b.derated, out2)
    if case == "soc":
        # the cell step itself (every call; in the tick it runs once per est_params' step period, 1 s)
        ep = b.est_params.copy()
        ep[L.EP_STEP_S] = 0.0
        return lambda: soc_k.step(b.cell_v, b.cell_t, b.fresh, b.cluster_in, b.cluster_flags, b.agg_i, b.agg_f,
                                  b.capacity_ah, p, ep, b.ocv_v, b.hyst_v, b.cell_soc, b.cell_sig, b.est_state, DT_MS / 1e3,
                                  b.charge_ah, b.soc_pct, b.soc_out, b.anchored, b.stack_soc)
    if case == "soc_rest":
        ep = _rest_on_the_steep_end(b)

        def run():
            b.est_state[:, L.SE_REST_DONE] = 0.0
            soc_k.step(b.cell_v, b.cell_t, b.fresh, b.cluster_in, b.cluster_flags, b.agg_i, b.agg_f, b.capacity_ah, p, ep,
                       b.ocv_v, b.hyst_v, b.cell_soc, b.cell_sig, b.est_state, DT_MS / 1e3, b.charge_ah, b.soc_pct,
                       b.soc_out, b.anchored, b.stack_soc)
            b.cell_soc[:] = 0.3
        return run
    if case == "balance":
        def run():
            bal_k.balance(b.cell_v, b.fresh, p[L.TP_V_LO], p[L.TP_V_HI], b.agg_f, b.pack_f, b.cluster_flags, p[L.TP_BAL_ON_MV],
                          p[L.TP_BAL_OFF_MV], p[L.TP_BAL_V_MIN], b.balancing, b.balance_count)
            bal_k.bypass(b.pack_f, b.pack_i, b.pack_pole_t, b.soc_pct, b.cluster_in, CELLS // PACKS, b.bypass_params,
                         b.bypass, b.bypass_denied)
        return run
    if case == "arbitrate":
        def run():
            t = arb_k.arbitrate(b.req_kind, b.req_value, b.req_active, 400e3, 400e3, b.req_status, b.interval)
            s = arb_k.setpoint(t, b.results[L.TO_SETPOINT_W], 400e3, 400e3, p[L.TP_RAMP_W_PER_S], DT_MS / 1e3,
                               p[L.TP_DEADBAND_W])
            arb_k.distribute(s, b.cl_chg_w, b.cl_dchg_w, b.cl_e_chg, b.cl_e_dchg, b.cl_online, b.cluster_w, b.work)
        return run
    raise KeyError(case)


def reference_case(case, fp):
    b, p = fp.buffers, fp.buffers.params
    fp.tick(DT_MS)
    if case == "tick":
        rt = ref.ReferenceTick(b)
        return lambda: rt.run(DT_MS)
    if case == "aggregate":
        return lambda: ref.aggregate(b.cell_v, b.cell_t, b.fresh, PACKS, p[L.TP_V_LO], p[L.TP_V_HI], p[L.TP_T_LO],
                                     p[L.TP_T_HI])
    if case == "protection":
        st = ref.ProtectionState(b.table_f.shape[0], b.cell_v.shape[0])

        def run():
            src = ref.sources(b.agg_f, b.agg_i, b.cluster_in, b.soc_out)
            ref.protection_step(b.table_f, b.table_i, src, b.cluster_in, p[L.TP_IDLE_A], DT_MS,
                                p[L.TP_TRIP_DELAY_MS], False, st)
        return run
    if case == "derate":
        return lambda: ref.derate(b.table_f, b.table_i, b.sources, b.cluster_in, b.cluster_flags, b.cluster_prot,
                                  p[L.TP_STACK_MAX_CHG_A], p[L.TP_STACK_MAX_DCHG_A])
    if case == "soc":
        ep = b.est_params.copy()
        ep[L.EP_STEP_S] = 0.0
        r = ref.SocReference(b.cell_soc, b.cell_sig, b.est_state, np.zeros((b.cell_v.shape[0], 2)))
        return lambda: r.step(b.cell_v, b.cell_t, b.fresh, b.cluster_in, b.cluster_flags, b.agg_i, b.agg_f,
                              b.capacity_ah, p, ep, b.ocv_v, b.hyst_v, DT_MS / 1e3)
    if case == "soc_rest":
        ep = _rest_on_the_steep_end(b)
        r = ref.SocReference(b.cell_soc, b.cell_sig, b.est_state, np.zeros((b.cell_v.shape[0], 2)))

        def run():
            r.se[:, L.SE_REST_DONE] = 0.0
            r.step(b.cell_v, b.cell_t, b.fresh, b.cluster_in, b.cluster_flags, b.agg_i, b.agg_f, b.capacity_ah, p, ep,
                   b.ocv_v, b.hyst_v, DT_MS / 1e3)
            r.soc[:] = 0.3
        return run
    if case == "balance":
        def run():
            ref.balance(b.cell_v, b.fresh, p[L.TP_V_LO], p[L.TP_V_HI], b.agg_f, b.cluster_flags, p[L.TP_BAL_ON_MV],
                        p[L.TP_BAL_OFF_MV], p[L.TP_BAL_V_MIN], b.balancing)
            ref.bypass(b.pack_f, b.pack_i, b.pack_pole_t, b.soc_pct, b.cluster_in, CELLS // PACKS, b.bypass_params,
                       b.bypass)
        return run
    if case == "arbitrate":
        def run():
            t, _, _ = ref.arbitrate(b.req_kind, b.req_value, b.req_active, 400e3, 400e3)
            s = ref.setpoint(t, b.results[L.TO_SETPOINT_W], 400e3, 400e3, p[L.TP_RAMP_W_PER_S], DT_MS / 1e3,
                             p[L.TP_DEADBAND_W])
            ref.distribute(s, b.cl_chg_w, b.cl_dchg_w, b.cl_e_chg, b.cl_e_dchg, b.cl_online)
        return run
    raise KeyError(case)


CASES = ["aggregate", "protection", "derate", "soc", "soc_rest", "balance", "arbitrate", "tick"]


@pytest.mark.parametrize("impl", ["kernel", "reference"])
@pytest.mark.parametrize("clusters", CLUSTERS)
@pytest.mark.parametrize("case", CASES)
def test_bench(benchmark, case, clusters, impl):
    fp = make_site(clusters)
    fn = (kernel_case if impl == "kernel" else reference_case)(case, fp)
    benchmark.group = f"{case}-{clusters}x{CELLS}"
    benchmark.extra_info.update(case=case, clusters=clusters, cells_per_cluster=CELLS, impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_bench_distribute_1000_units(benchmark, impl):
    rng = np.random.default_rng(5)
    M = 1000
    cap = rng.uniform(50e3, 250e3, M)
    e = rng.uniform(0.0, 500e3, M)
    online = np.ones(M, np.uint8)
    out, work = np.zeros(M), np.zeros(M, np.uint8)
    total = 0.8 * cap.sum()
    benchmark.group = "distribute-1000-units"
    benchmark.extra_info.update(case="distribute_1000_units", clusters=0, cells_per_cluster=0, units=M, impl=impl)
    if impl == "kernel":
        benchmark(lambda: arb_k.distribute(total, cap, cap, e, e, online, out, work))
    else:
        benchmark(lambda: ref.distribute(total, cap, cap, e, e, online))
