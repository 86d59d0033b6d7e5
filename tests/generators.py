"""Hypothesis strategies for stacks with NaN, stale, out-of-range and boundary cells."""
import numpy as np
from hypothesis import strategies as st

V_LO, V_HI, T_LO, T_HI = 0.5, 5.0, -40.0, 120.0

# cell voltages: mostly plausible LFP values, plus the exact sensor boundaries, out-of-range and NaN
cell_voltage = st.one_of(
    st.floats(2.0, 4.0),
    st.sampled_from([V_LO, V_HI, np.nextafter(V_HI, 10), np.nextafter(V_LO, 0), -1.0, 7.0, np.nan,
                     np.inf, -np.inf, 3.3, 3.3]),
)
cell_temperature = st.one_of(
    st.floats(-30.0, 70.0),
    st.sampled_from([T_LO, T_HI, -41.0, 121.0, np.nan, 25.0, 25.0]),
)


@st.composite
def stacks(draw, max_clusters=4, max_packs=4, max_cells_per_pack=6):
    C = draw(st.integers(1, max_clusters))
    P = draw(st.integers(1, max_packs))
    n = draw(st.integers(1, max_cells_per_pack))
    N = P * n
    v = np.array(draw(st.lists(cell_voltage, min_size=C * N, max_size=C * N)), dtype=np.float64).reshape(C, N)
    t = np.array(draw(st.lists(cell_temperature, min_size=C * N, max_size=C * N)), dtype=np.float64).reshape(C, N)
    fresh = np.array(draw(st.lists(st.sampled_from([0, 1, 1, 1]), min_size=C * N, max_size=C * N)),
                     dtype=np.uint8).reshape(C, N)
    return v, t, fresh, P
