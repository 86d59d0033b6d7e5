from ems.strategies.base import TARGET
from ems.strategies.generator import Generator
from tests.strategies.harness import cfg, snap

GEN = {"enabled": True, "start_soc_pct": 25.0, "stop_soc_pct": 80.0, "rated_power_w": 50e3, "startup_timeout_min": 5}


def out(d):
    return dict(d.outputs)["generator_start"]


def test_soc_mode_starts_at_the_start_soc_and_stops_at_the_stop_soc_off_grid():
    g = Generator(cfg(generator=GEN))
    assert not out(g.decide(snap(soc=30, on_grid=False)))
    assert out(g.decide(snap(soc=25, on_grid=False)))
    assert out(g.decide(snap(soc=60, on_grid=False, di={"generator_feedback": True})))
    assert not out(g.decide(snap(soc=80, on_grid=False, di={"generator_feedback": True})))


def test_no_generator_while_the_grid_is_there():
    assert not out(Generator(cfg(generator=GEN)).decide(snap(soc=5, on_grid=True)))


def test_time_mode_runs_between_its_times_over_midnight():
    g = Generator(cfg(generator={**GEN, "start_stop_mode": "time", "start_time": "22:00", "stop_time": "05:00"}))
    running = {"generator_feedback": True}
    assert not out(g.decide(snap(at="2026-06-22 21:59", on_grid=False)))
    assert out(g.decide(snap(at="2026-06-22 23:00", on_grid=False, di=running)))
    assert out(g.decide(snap(at="2026-06-23 04:59", on_grid=False, di=running)))
    assert not out(g.decide(snap(at="2026-06-23 05:00", on_grid=False, di=running)))


def test_manual_mode_follows_the_operator():
    g = Generator(cfg(generator={**GEN, "start_stop_mode": "manual"}))
    assert out(g.decide(snap(on_grid=False, generator_on=True)))
    assert not out(g.decide(snap(on_grid=False, generator_on=False)))


def test_rated_power_mode_charges_with_80_percent_of_rating_minus_load():
    g = Generator(cfg(generator=GEN))
    d = g.decide(snap(soc=20, on_grid=False, di={"generator_feedback": True}, grid_w=0.0, pv_w=0.0, pcs_w=0.0, dg_w=25e3))
    assert [(r.kind, r.value_w) for r in d.requests] == [(TARGET, -(40e3 - 25e3))]


def test_rated_power_mode_draws_nothing_when_the_load_exceeds_80_percent():
    g = Generator(cfg(generator=GEN))
    d = g.decide(snap(soc=20, on_grid=False, di={"generator_feedback": True}, grid_w=0.0, pcs_w=0.0, dg_w=45e3))
    assert d.requests[0].value_w == 0.0


def test_battery_power_mode_uses_the_set_power_capped_by_the_headroom():
    g = Generator(cfg(generator={**GEN, "power_mode": "battery", "charge_power_w": 10e3}))
    d = g.decide(snap(soc=20, on_grid=False, di={"generator_feedback": True}, grid_w=0.0, pcs_w=0.0, dg_w=20e3))
    assert d.requests[0].value_w == -10e3
    d = g.decide(snap(soc=20, on_grid=False, di={"generator_feedback": True}, grid_w=0.0, pcs_w=0.0, dg_w=35e3))
    assert d.requests[0].value_w == -5e3


def test_no_feedback_within_the_startup_timeout_raises_gc_fault_until_reset():
    g = Generator(cfg(generator=GEN))
    g.decide(snap(at="2026-06-22 01:00", soc=20, on_grid=False))
    d = g.decide(snap(at="2026-06-22 01:04", soc=20, on_grid=False))
    assert out(d) and d.alarms == ()
    d = g.decide(snap(at="2026-06-22 01:06", soc=20, on_grid=False))
    assert not out(d) and d.alarms == (25,)
    d = g.decide(snap(at="2026-06-22 01:10", soc=20, on_grid=False))
    assert not out(d), "locked out until a reset"
    d = g.decide(snap(at="2026-06-22 01:11", soc=20, on_grid=False, fault_reset=True))
    assert out(d) and d.alarms == ()
