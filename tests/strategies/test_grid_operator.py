"""The grid operator's dispatch (001_… South Australia): PCS power limit, site feed-in limit and ramp rate,
each a lease, ranked with the grid-operator limits."""
from __future__ import annotations

from types import MappingProxyType

import pytest

from ems._core import layout as L
from ems.config import site_from_dict
from ems.control.controller import Controller
from ems.strategies.base import GE, LE
from ems.strategies.grid_operator import GridOperator
from tests.strategies.harness import snap, wants


def with_limits(**limits):
    return snap(grid_w=20_000, pcs_w=30_000, grid_limits=MappingProxyType(limits))


def test_the_pcs_limit_bounds_both_ways_and_the_feed_in_limit_the_export():
    s = GridOperator()
    assert wants(s, snap()) is None
    assert wants(s, with_limits(pcs_limit_w=10_000)) == [(LE, 10_000), (GE, -10_000)]
    # importing 20 kW with the PCS at 30 kW: the export may be 5 kW, so the PCS may give 55 kW
    assert wants(s, with_limits(feed_in_limit_w=5_000)) == [(LE, 55_000)]
    assert wants(s, snap(grid_w=None, grid_limits=MappingProxyType({"feed_in_limit_w": 0.0}))) == [(LE, 0.0)]


def test_the_limits_are_leases_and_the_ramp_goes_to_the_fast_path():
    from datetime import datetime, timezone

    from ems.control.clock import VirtualClock
    fake_clock = VirtualClock(datetime(2026, 6, 22, 12, tzinfo=timezone.utc))
    cfg = site_from_dict({"pcs": {"ramp_w_per_s": 50_000}})
    ctrl = Controller(cfg, fake_clock)
    ctrl.command("grid_operator", {"pcs_limit_w": 10_000, "ramp_w_per_s": 2_000, "lease_s": 5}, source="remote")
    assert ctrl.build_snapshot().operator.grid_limits == {"pcs_limit_w": 10_000.0, "ramp_w_per_s": 2_000.0}
    assert ctrl.fast.buffers.params[L.TP_RAMP_W_PER_S] == 2_000
    fake_clock.advance(6)
    assert dict(ctrl.build_snapshot().operator.grid_limits) == {}
    assert ctrl.fast.buffers.params[L.TP_RAMP_W_PER_S] == 50_000               # the site's own again
    assert any(e["kind"] == "lease_expired" and "grid_operator" in e["name"] for e in ctrl.events.recent)
    with pytest.raises(ValueError):
        ctrl.command("grid_operator", {"pcs_limit_w": -1}, source="remote")
    with pytest.raises(ValueError):
        ctrl.command("grid_operator", {"export": 5}, source="remote")
