"""Builders of kernel output arrays, so tests read as behaviour, not as buffer plumbing."""
import numpy as np

from ems._core import aggregate as agg_k
from ems._core import layout as L

V_RANGE = (0.5, 5.0)
T_RANGE = (-40.0, 120.0)


def run_aggregate(v, t, fresh, P, v_range=V_RANGE, t_range=T_RANGE):
    C, N = v.shape
    out = dict(
        cluster_f=np.zeros((C, L.AGG_F_COLS)), cluster_i=np.zeros((C, L.AGG_I_COLS), np.int32),
        pack_f=np.zeros((C, P, L.PACK_F_COLS)), pack_i=np.zeros((C, P, L.PACK_I_COLS), np.int32),
        stack_f=np.zeros(L.AGG_F_COLS), stack_i=np.zeros(L.STK_I_COLS, np.int32),
    )
    agg_k.aggregate(v, t, fresh, P, *v_range, *t_range, **out)
    return out


def healthy_cluster_inputs(C, cells_per_cluster=16, current_a=0.0, rated_a=100.0):
    cl_in = np.zeros((C, L.CL_IN_COLS))
    cl_in[:, L.CL_V] = 3.3 * cells_per_cluster
    cl_in[:, L.CL_I] = current_a
    cl_in[:, L.CL_INSULATION] = 5000.0
    cl_in[:, L.CL_POLE_T] = 25.0
    cl_in[:, L.CL_HVBOX_T] = 25.0
    cl_in[:, [L.CL_BMS_CHG_A, L.CL_BMS_DCHG_A, L.CL_RATED_CHG_A, L.CL_RATED_DCHG_A]] = rated_a
    return cl_in
