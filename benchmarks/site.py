"""A realistic stack for the benchmarks: LFP cells near 3.3 V with spread, a few warm cells, currents flowing."""
import numpy as np

from ems._core import layout as L
from ems.control.fastpath import BypassParams, FastPath, FastPathParams, StackShape

CELLS = 396
PACKS = 9          # 1P44S packs, as in shared/seeds/004_…


def make_site(clusters: int, seed: int = 7) -> FastPath:
    rng = np.random.default_rng(seed)
    fp = FastPath(StackShape(clusters, CELLS, PACKS, max_requests=16),
                  FastPathParams(ramp_w_per_s=50e3, deadband_w=100.0),
                  BypassParams(enabled=True, consistency_modes=15, pcs_dc_min_v=1000.0))
    b = fp.buffers
    b.cell_v[:] = rng.normal(3.33, 0.01, (clusters, CELLS))
    b.cell_t[:] = rng.normal(27.0, 1.5, (clusters, CELLS))
    b.fresh[:] = 1
    b.fresh[0, 5] = 0                                   # one stale cell, as in the field
    b.cluster_in[:, L.CL_V] = b.cell_v.sum(axis=1)
    b.cluster_in[:, L.CL_I] = rng.normal(-60.0, 2.0, clusters)
    b.cluster_in[:, L.CL_INSULATION] = 3000.0
    b.cluster_in[:, [L.CL_POLE_T, L.CL_HVBOX_T]] = 30.0
    b.cluster_in[:, [L.CL_BMS_CHG_A, L.CL_BMS_DCHG_A, L.CL_RATED_CHG_A, L.CL_RATED_DCHG_A]] = 140.0
    b.cluster_flags[:, L.CLF_CONNECTED] = 1
    b.cluster_flags[:, L.CLF_BALANCE_ALLOWED] = 1
    b.cell_soc[:] = rng.uniform(0.46, 0.54, (clusters, CELLS))
    # a priority-ordered request list as the slow loop would leave it
    kinds = [L.REQ_LE, L.REQ_GE, L.REQ_LE, L.REQ_GE, L.REQ_TARGET]
    values = [400e3, -400e3, 300e3, -350e3, -120e3]
    b.req_kind[:5], b.req_value[:5], b.req_active[:5] = kinds, values, 1
    return fp
