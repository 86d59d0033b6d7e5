from ems.strategies.air_conditioner import AirConditioner
from tests.strategies.harness import cfg, snap

AC = {"enabled": True, "cooling_stop_degc": 25.0, "cooling_return_diff_degc": 5.0, "heating_stop_degc": 10.0,
      "heating_return_diff_degc": 4.0}


def state(a, t):
    from dataclasses import replace
    return dict(a.decide(replace(snap(), cabinet_t_degc=t)).outputs)


def test_cooling_starts_at_stop_point_plus_return_difference_and_stops_at_the_stop_point():
    a = AirConditioner(cfg(air_conditioner=AC))
    assert state(a, 29.0)["ac_cooling"] is False
    assert state(a, 30.0)["ac_cooling"] is True
    assert state(a, 26.0)["ac_cooling"] is True
    assert state(a, 25.0)["ac_cooling"] is False


def test_heating_starts_at_stop_point_minus_return_difference_and_stops_at_the_stop_point():
    a = AirConditioner(cfg(air_conditioner=AC))
    assert state(a, 7.0)["ac_heating"] is False
    assert state(a, 6.0)["ac_heating"] is True
    assert state(a, 9.0)["ac_heating"] is True
    assert state(a, 10.0)["ac_heating"] is False


def test_without_a_reading_the_commands_are_withdrawn():
    a = AirConditioner(cfg(air_conditioner=AC))
    state(a, 31.0)
    assert state(a, None) == {"ac_cooling": False, "ac_heating": False}


def test_disabled_does_nothing():
    assert AirConditioner(cfg()).decide(snap()) is None
