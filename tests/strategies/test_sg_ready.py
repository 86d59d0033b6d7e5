from ems.strategies.sg_ready import SgReady
from tests.strategies.harness import cfg, snap


def outputs(s, sn):
    return dict(s.decide(sn).outputs)


def test_on_mode_energises_the_relay_inside_its_period_only():
    s = SgReady(cfg(sg_ready={"channel_1": {"enabled": True, "mode": "on", "start": "10:00", "end": "12:00"}}))
    assert outputs(s, snap(at="2026-06-22 11:00")) == {"sg_ready_1": True}
    assert outputs(s, snap(at="2026-06-22 12:00")) == {"sg_ready_1": False}


def test_auto_at_least_switches_the_load_on_no_by_feed_in_with_hysteresis():
    s = SgReady(cfg(sg_ready={"channel_2": {"enabled": True, "mode": "auto", "soc_condition": "at_least",
                                            "soc_pct": 80.0, "switch_on_feed_in_w": 3e3, "switch_off_feed_in_w": 1e3}}))
    assert outputs(s, snap(soc=85, grid_w=-4e3)) == {"sg_ready_2": True}
    assert outputs(s, snap(soc=85, grid_w=-2e3)) == {"sg_ready_2": True}, "between the thresholds nothing changes"
    assert outputs(s, snap(soc=85, grid_w=-0.5e3)) == {"sg_ready_2": False}
    assert outputs(s, snap(soc=85, grid_w=-4e3)) == {"sg_ready_2": True}
    assert outputs(s, snap(soc=85, grid_w=500.0)) == {"sg_ready_2": False}, "buying from the grid turns it off"
    assert outputs(s, snap(soc=70, grid_w=-9e3)) == {"sg_ready_2": False}, "SOC condition not met"


def test_auto_at_most_drives_the_load_on_the_nc_terminal():
    s = SgReady(cfg(sg_ready={"channel_1": {"enabled": True, "mode": "auto", "soc_condition": "at_most",
                                            "soc_pct": 50.0}}))
    assert outputs(s, snap(soc=40, grid_w=-5e3)) == {"sg_ready_1": False}, "load on = relay released (N/C closed)"
    assert outputs(s, snap(soc=60, grid_w=-5e3)) == {"sg_ready_1": True}, "load off = relay energised (N/C open)"


def test_disabled_channels_drive_nothing():
    assert SgReady(cfg()).decide(snap()) is None
