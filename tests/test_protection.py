import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal, assert_allclose

from ems._core import layout as L
from ems._core import protection as prot_k
from ems.control.protection_table import BatteryRatings, ProtectionRow, ProtectionTable, default_rows
from tests import reference as ref

ROWS = default_rows(BatteryRatings(cells_per_cluster=16, rated_charge_a=100.0, rated_discharge_a=100.0))
TABLE = ProtectionTable(ROWS)
DT = 10.0          # ms
TRIP_DELAY = 200.0

HEALTHY = {
    L.SRC_CELL_V_MAX: 3.35, L.SRC_CELL_V_MIN: 3.25, L.SRC_CELL_T_MAX: 27.0, L.SRC_CELL_T_MIN: 24.0,
    L.SRC_CELL_V_SPREAD: 0.02, L.SRC_CELL_T_SPREAD: 3.0, L.SRC_CLUSTER_V: 3.3 * 16, L.SRC_CHARGE_A: 0.0,
    L.SRC_DISCHARGE_A: 0.0, L.SRC_INSULATION_KOHM: 5000.0, L.SRC_POLE_T: 30.0, L.SRC_HVBOX_T: 30.0,
    L.SRC_T_SENSOR_INVALID: 0.0, L.SRC_V_SENSOR_INVALID: 0.0, L.SRC_CURRENT_MISSING: 0.0,
    L.SRC_CLUSTER_V_MISSING: 0.0, L.SRC_INSULATION_MISSING: 0.0, L.SRC_SOC_MEAN: 50.0,
}


class Harness:
    """One cluster against the protection kernel; each step is one fast-loop tick."""

    def __init__(self, table=TABLE, clusters=1):
        self.table = table
        Q, C = len(table.rows), clusters
        self.src = np.zeros((L.SRC_COUNT, C))
        for s, v in HEALTHY.items():
            self.src[s] = v
        self.cl_in = np.zeros((C, L.CL_IN_COLS))
        self.bits = np.zeros((Q, C), np.uint8)
        self.timers = np.zeros((Q, C, L.PS_T_COLS))
        self.level = np.zeros((Q, C), np.int8)
        self.changed = np.zeros((Q, C), np.uint8)
        self.cl_prot = np.zeros((C, L.CLP_COLS), np.uint8)
        self.trip_t = np.zeros(C)

    def current(self, amps):
        self.cl_in[:, L.CL_I] = amps
        return self

    def run_ms(self, ms, reset=False):
        for _ in range(int(round(ms / DT))):
            prot_k.evaluate(self.table.table_f, self.table.table_i, self.src, self.cl_in, 1.0, DT, TRIP_DELAY,
                            reset, self.bits, self.timers, self.level, self.changed, self.cl_prot, self.trip_t)
        return self

    def level_of(self, name):
        return int(self.level[self.table.index(name), 0])

    @property
    def trip_pending(self):
        return bool(self.cl_prot[0, L.CLP_TRIP_PENDING])

    @property
    def tripped(self):
        return bool(self.cl_prot[0, L.CLP_TRIPPED])

    @property
    def currents_allowed(self):
        return bool(self.cl_prot[0, L.CLP_CHG_ALLOWED]) and bool(self.cl_prot[0, L.CLP_DCHG_ALLOWED])


def _beyond(row, lv, margin=1e-3):
    """A value that violates level lv of row (and not, where possible, the next level)."""
    thr = row.thresholds[lv]
    nxt = row.thresholds[lv + 1] if lv < 2 else math.inf * row.direction
    if math.isinf(nxt):
        return thr + row.direction * max(abs(thr) * margin, 0.01)
    return (thr + nxt) / 2 if nxt != thr else thr + row.direction * 0.01


def _back_inside(row, lv, inside_hysteresis):
    thr, hyst = row.thresholds[lv], row.hysteresis[lv]
    if inside_hysteresis:
        return thr - row.direction * hyst / 2
    return thr - row.direction * (hyst + max(abs(thr) * 1e-3, 0.01))


def _prepare(h, row):
    if row.when == L.WHEN_CHARGING:
        h.current(-50.0)
    elif row.when == L.WHEN_NOT_CHARGING:
        h.current(10.0)
    return h


WARN_ROWS = [r for r in ROWS if not math.isinf(r.thresholds[1]) and r.warn_code is not None]
FAULT_ROWS = [r for r in ROWS if not math.isinf(r.thresholds[2]) and r.fault_code is not None]


@pytest.mark.parametrize("row", WARN_ROWS, ids=[f"{r.name}-{r.warn_code}" for r in WARN_ROWS])
def test_warning_sets_after_its_debounce_delay_and_reports_the_manual_code(row):
    h = _prepare(Harness(), row)
    h.src[row.source] = _beyond(row, 1)
    set_ms = row.set_ms[1]
    if set_ms >= 2 * DT:
        h.run_ms(set_ms - DT)
        assert h.level_of(row.name) < 2, "a warning must wait for its debounce delay"
    h.run_ms(2 * DT)
    assert h.level_of(row.name) == 2
    assert row.code_for_level(2) == row.warn_code


@pytest.mark.parametrize("row", WARN_ROWS, ids=[r.name for r in WARN_ROWS])
def test_warning_debounce_restarts_when_the_value_dips_back(row):
    if row.set_ms[1] < 4 * DT:
        pytest.skip("no debounce on this level")
    h = _prepare(Harness(), row)
    for _ in range(3):
        h.src[row.source] = _beyond(row, 1)
        h.run_ms(row.set_ms[1] * 0.6)
        h.src[row.source] = _back_inside(row, 1, inside_hysteresis=False)
        h.run_ms(DT)
    assert h.level_of(row.name) < 2


@pytest.mark.parametrize("row", WARN_ROWS, ids=[r.name for r in WARN_ROWS])
def test_warning_clears_only_past_its_hysteresis_and_after_its_clear_delay(row):
    h = _prepare(Harness(), row)
    h.src[row.source] = _beyond(row, 1)
    h.run_ms(row.set_ms[1] + DT)
    assert h.level_of(row.name) == 2
    if row.hysteresis[1] > 0:
        h.src[row.source] = _back_inside(row, 1, inside_hysteresis=True)
        h.run_ms(row.clear_ms[1] * 2 + DT)
        assert h.level_of(row.name) == 2, "inside the hysteresis band the warning must hold"
    h.src[row.source] = _back_inside(row, 1, inside_hysteresis=False)
    if row.clear_ms[1] >= 2 * DT:
        h.run_ms(row.clear_ms[1] - DT)
        assert h.level_of(row.name) == 2, "a warning must wait for its clear delay"
    h.run_ms(2 * DT)
    assert h.level_of(row.name) < 2


@pytest.mark.parametrize("row", FAULT_ROWS, ids=[f"{r.name}-{r.fault_code}" for r in FAULT_ROWS])
def test_fault_latches_blocks_current_and_clears_only_when_gone_and_reset(row):
    h = _prepare(Harness(), row)
    h.src[row.source] = _beyond(row, 2)
    if row.set_ms[2] >= 2 * DT:
        h.run_ms(row.set_ms[2] - DT)
        assert h.level_of(row.name) < 3
        assert h.currents_allowed
    h.run_ms(2 * DT)
    assert h.level_of(row.name) == 3 and row.code_for_level(3) == row.fault_code
    assert not h.currents_allowed
    if row.trips:
        assert h.trip_pending and not h.tripped, "currents go to zero before the contactors open"
        h.run_ms(TRIP_DELAY)
        assert h.tripped and not h.trip_pending
    # a reset while the condition is still there changes nothing
    h.run_ms(DT, reset=True)
    assert h.level_of(row.name) == 3
    # condition gone: still latched without a reset
    h.src[row.source] = HEALTHY[row.source]
    h.run_ms(row.clear_ms[2] + 5 * DT)
    assert h.level_of(row.name) == 3 and not h.currents_allowed
    h.run_ms(DT, reset=True)
    assert h.level_of(row.name) < 3
    assert h.currents_allowed and not h.tripped and not h.trip_pending


def test_over_temperature_rows_follow_the_current_direction():
    h = Harness()
    h.src[L.SRC_CELL_T_MAX] = 57.0       # above the charge fault limit (55), below the discharge one (60)
    h.current(20.0).run_ms(2000)        # discharging: only the discharge row applies
    assert h.level_of("cell_over_temp_charge") == 0
    assert h.level_of("cell_over_temp_discharge") == 2
    h.current(-20.0).run_ms(1000 + 2 * DT)
    assert h.level_of("cell_over_temp_charge") == 3
    assert ROWS[TABLE.index("cell_over_temp_charge")].fault_code == 40003


def test_low_temperature_charging_fault_is_40004_and_discharging_is_40005():
    h = Harness()
    h.src[L.SRC_CELL_T_MIN] = -1.0
    h.current(-20.0).run_ms(1100)
    assert h.level_of("cell_low_temp_charge") == 3 and h.level_of("cell_low_temp_discharge") == 0
    codes = {r.name: r.fault_code for r in ROWS}
    assert codes["cell_low_temp_charge"] == 40004 and codes["cell_low_temp_discharge"] == 40005


def test_manual_codes_are_all_in_the_default_table():
    codes = {c for r in ROWS for c in (r.warn_code, r.fault_code) if c is not None}
    for code in (40000, 40001, 40002, 40003, 40004, 40005, 40006, 40007, 40008, 40009, 40062, 40063,
                 50000, 50003, 50004, 50008, 30005, 30006, 30007):
        assert code in codes, code


def test_a_nan_value_neither_sets_nor_clears_a_level():
    h = Harness()
    h.src[L.SRC_CELL_V_MAX] = 3.70
    h.run_ms(1100)
    assert h.level_of("cell_over_voltage") == 3
    h.src[L.SRC_CELL_V_MAX] = np.nan
    h.run_ms(2000, reset=True)
    assert h.level_of("cell_over_voltage") == 3, "a fault we cannot see any more is not known to be gone"


def test_debounce_is_counted_in_time_so_a_slower_loop_trips_at_the_same_moment():
    fast, slow = Harness(), Harness()
    for h in (fast, slow):
        h.src[L.SRC_DISCHARGE_A] = 150.0         # fault level 120 A, 100 ms
    for _ in range(9):
        prot_k.evaluate(TABLE.table_f, TABLE.table_i, fast.src, fast.cl_in, 1.0, 10.0, TRIP_DELAY, False,
                        fast.bits, fast.timers, fast.level, fast.changed, fast.cl_prot, fast.trip_t)
    prot_k.evaluate(TABLE.table_f, TABLE.table_i, slow.src, slow.cl_in, 1.0, 90.0, TRIP_DELAY, False,
                    slow.bits, slow.timers, slow.level, slow.changed, slow.cl_prot, slow.trip_t)
    assert fast.level_of("discharge_over_current") == slow.level_of("discharge_over_current") < 3
    for h, dt in ((fast, 10.0), (slow, 10.0)):
        prot_k.evaluate(TABLE.table_f, TABLE.table_i, h.src, h.cl_in, 1.0, dt, TRIP_DELAY, False,
                        h.bits, h.timers, h.level, h.changed, h.cl_prot, h.trip_t)
    assert fast.level_of("discharge_over_current") == slow.level_of("discharge_over_current") == 3


def test_changed_flags_report_each_level_change_once():
    h = Harness()
    h.src[L.SRC_CELL_V_MAX] = 3.55          # operating limit (3.50) crossed → derating at once
    h.run_ms(DT)
    k = TABLE.index("cell_over_voltage")
    assert h.level[k, 0] == 1 and h.changed[k, 0] == 1
    h.run_ms(DT)
    assert h.changed[k, 0] == 0


def test_a_row_with_unordered_thresholds_is_refused_with_its_name():
    bad = ProtectionRow("cell_ov_typo", L.SRC_CELL_V_MAX, +1, (3.6, 3.5, 3.65), (0, 0, 0), (0, 0, 0), (0, 0, 0),
                        40006, 40006)
    with pytest.raises(ValueError, match="cell_ov_typo"):
        ProtectionTable([bad])


def test_an_unknown_source_is_refused():
    table = ProtectionTable(ROWS)
    table_i = table.table_i.copy()
    table_i[0, L.PT_SOURCE] = 99
    h = Harness()
    with pytest.raises(ValueError, match="source"):
        prot_k.evaluate(table.table_f, table_i, h.src, h.cl_in, 1.0, DT, TRIP_DELAY, False, h.bits, h.timers,
                        h.level, h.changed, h.cl_prot, h.trip_t)


# ---------------------------------------------------------------- kernel == reference
source_value = st.one_of(st.floats(-50.0, 6000.0), st.sampled_from([np.nan, 0.0, 1.0, 3.65, 3.75, 2.5, 55.0]))


@given(st.data())
def test_protection_matches_reference_over_random_sequences(data):
    C = data.draw(st.integers(1, 3))
    steps = data.draw(st.integers(1, 25))
    kernel = Harness(clusters=C)
    want = ref.ProtectionState(len(ROWS), C)
    for _ in range(steps):
        for s in range(L.SRC_COUNT):
            for c in range(C):
                if data.draw(st.booleans()):
                    kernel.src[s, c] = data.draw(source_value)
        kernel.cl_in[:, L.CL_I] = data.draw(st.lists(st.sampled_from([np.nan, -50.0, -1.0, 0.0, 1.0, 30.0]),
                                                     min_size=C, max_size=C))
        dt = data.draw(st.sampled_from([1.0, 10.0, 100.0, 600.0]))
        reset = data.draw(st.booleans())
        n = prot_k.evaluate(TABLE.table_f, TABLE.table_i, kernel.src, kernel.cl_in, 1.0, dt, TRIP_DELAY, reset,
                            kernel.bits, kernel.timers, kernel.level, kernel.changed, kernel.cl_prot,
                            kernel.trip_t)
        n_ref = ref.protection_step(TABLE.table_f, TABLE.table_i, kernel.src, kernel.cl_in, 1.0, dt,
                                    TRIP_DELAY, reset, want)
        assert n == n_ref
        assert_array_equal(kernel.bits, want.bits)
        assert_array_equal(kernel.level, want.level)
        assert_array_equal(kernel.changed, want.changed)
        assert_array_equal(kernel.cl_prot, want.cl_prot)
        assert_allclose(kernel.timers, want.timers, rtol=0, atol=0)
        assert_allclose(kernel.trip_t, want.trip_timer, rtol=0, atol=0)


def test_sources_match_reference(rng):
    from tests.helpers import run_aggregate, healthy_cluster_inputs
    v = rng.uniform(3.0, 3.6, (3, 16))
    t = rng.uniform(10, 40, (3, 16))
    v[1, 3] = np.nan
    out = run_aggregate(v, t, np.ones((3, 16), np.uint8), 2)
    cl_in = healthy_cluster_inputs(3)
    cl_in[0, L.CL_I] = np.nan
    cl_in[1, L.CL_I] = -40.0
    cl_in[2, L.CL_POLE_T] = np.nan
    soc = np.zeros((3, L.SOC_COLS))
    soc[:, L.SOC_MEAN] = (10.0, 50.0, 90.0)
    got = np.zeros((L.SRC_COUNT, 3))
    prot_k.fill(out["cluster_f"], out["cluster_i"], cl_in, soc, got)
    assert_allclose(got, ref.sources(out["cluster_f"], out["cluster_i"], cl_in, soc), equal_nan=True)
    assert got[L.SRC_CHARGE_A, 1] == 40.0 and got[L.SRC_CURRENT_MISSING, 0] == 1.0
    assert got[L.SRC_T_SENSOR_INVALID, 2] == 1.0 and got[L.SRC_V_SENSOR_INVALID, 1] == 1.0


def test_a_lost_bms_link_holds_the_sensor_fault_rows_instead_of_tripping_them(rng):
    """battery_lost is the supervisor's alarm and safe state; the cells behind the link are not each faulty,
    so their sensor rows neither rise nor fall while it is lost, and its return needs no reset."""
    from tests.helpers import run_aggregate, healthy_cluster_inputs
    v = np.full((2, 16), np.nan)
    out = run_aggregate(v, v.copy(), np.zeros((2, 16), np.uint8), 2)        # every cell stale
    cl_in = healthy_cluster_inputs(2)
    cl_in[:, [L.CL_V, L.CL_I]] = np.nan
    cl_in[1, L.CL_LINK_LOST] = 1.0
    got, soc = np.zeros((L.SRC_COUNT, 2)), np.zeros((2, L.SOC_COLS))
    prot_k.fill(out["cluster_f"], out["cluster_i"], cl_in, soc, got)
    assert_allclose(got, ref.sources(out["cluster_f"], out["cluster_i"], cl_in, soc), equal_nan=True)
    sensor_rows = (L.SRC_T_SENSOR_INVALID, L.SRC_V_SENSOR_INVALID, L.SRC_CURRENT_MISSING, L.SRC_CLUSTER_V_MISSING)
    assert all(got[k, 0] >= 1.0 for k in sensor_rows), "a live link with dead sensors: the rows see it"
    assert all(np.isnan(got[k, 1]) for k in sensor_rows), "a lost link: the rows hold"


def test_docs_carry_the_default_protection_rows():
    from pathlib import Path

    from ems.control.protection_table import rows_markdown
    doc = (Path(__file__).parents[1] / "docs" / "protection.md").read_text(encoding="utf-8")
    assert rows_markdown() in doc, "docs/protection.md is stale: paste rows_markdown()'s table"
