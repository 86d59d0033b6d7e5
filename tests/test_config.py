import subprocess
import sys
import tomllib

import pytest

from ems.config import ConfigError, SiteConfig, load_site, site_from_dict
from ems.config.template import template


def problems_of(data):
    with pytest.raises(ConfigError) as exc:
        site_from_dict(data)
    return {p.key: p for p in exc.value.problems}


def test_defaults_are_a_valid_site():
    assert site_from_dict({}) == SiteConfig()


def test_the_template_parses_back_to_the_defaults():
    assert site_from_dict(tomllib.loads(template())) == SiteConfig()


def test_an_out_of_range_value_is_reported_with_key_value_and_range():
    p = problems_of({"battery": {"clusters": 40}})["battery.clusters"]
    assert p.value == 40 and "1 … 32" in p.message


def test_every_error_is_reported_not_just_the_first():
    probs = problems_of({"battery": {"clusters": 0, "cell_capacity_ah": "big"}, "pcs": {"ramp_w_per_s": -1},
                         "self_use": {"bogus": 1}})
    assert set(probs) == {"battery.clusters", "battery.cell_capacity_ah", "pcs.ramp_w_per_s", "self_use.bogus"}
    assert "unknown key" in probs["self_use.bogus"].message


def test_wrong_types_are_refused():
    probs = problems_of({"rrcr": {"enabled": "yes"}, "battery": {"clusters": 2.5}})
    assert "true or false" in probs["rrcr.enabled"].message
    assert "whole number" in probs["battery.clusters"].message


def test_time_groups_may_not_cross_midnight_or_overlap():
    probs = problems_of({"time_based": {"groups": [
        {"start": "22:00", "end": "02:00"},
        {"days": "weekdays", "start": "01:00", "end": "03:00"},
        {"days": ["mon"], "start": "02:30", "end": "04:00"},
        {"days": ["sat"], "start": "02:30", "end": "04:00"},
    ]}})
    assert "cross midnight" in probs["time_based.groups[0].end"].message
    assert "overlaps time_based.groups[1]" in probs["time_based.groups[2]"].message
    assert "time_based.groups[3]" not in probs


def test_more_than_28_time_groups_is_refused():
    groups = [{"days": ["mon"], "start": f"{h:02d}:00", "end": f"{h:02d}:30"} for h in range(24)]
    groups += [{"days": ["tue"], "start": f"{h:02d}:00", "end": f"{h:02d}:30"} for h in range(5)]
    assert "at most 28" in problems_of({"time_based": {"groups": groups}})["time_based.groups"].message


def test_valley_must_be_below_peak_and_powers_within_the_pcs_rating():
    probs = problems_of({"peak_shaving": {"windows": [{"peak_w": 10e3, "valley_w": 20e3}]},
                         "forced_charge": {"power_w": 500e3}})
    assert "below peak_w" in probs["peak_shaving.windows[0].valley_w"].message
    assert "rated_power_w" in probs["forced_charge.power_w"].message


def test_bad_times_days_and_timezone_are_named():
    probs = problems_of({"site": {"timezone": "Mars/Olympus"},
                         "time_based": {"groups": [{"days": ["monday"], "start": "7:00"}]}})
    assert "time zone" in probs["site.timezone"].message
    assert "time_based.groups[0]" in probs


def test_cells_must_divide_into_packs():
    assert "divide" in problems_of({"battery": {"cells_per_cluster": 240, "packs_per_cluster": 7}})[
        "battery.packs_per_cluster"].message


def test_a_toml_syntax_error_is_a_config_error(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text("[battery\nclusters = 2\n")
    with pytest.raises(ConfigError, match="syntax"):
        load_site(f)


def test_config_check_cli_exit_codes(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[battery]\nclusters = 2\n")
    bad.write_text("[battery]\nclusters = 99\n")
    ok = subprocess.run([sys.executable, "-m", "ems", "config", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    no = subprocess.run([sys.executable, "-m", "ems", "config", "check", str(bad)], capture_output=True, text=True)
    assert no.returncode == 1 and "battery.clusters = 99" in no.stderr and "1 … 32" in no.stderr


def test_config_template_cli_prints_every_section():
    out = subprocess.run([sys.executable, "-m", "ems", "config", "template"], capture_output=True, text=True).stdout
    for section in ("[battery]", "[grid]", "[self_use]", "[time_based]", "[peak_shaving]", "[rrcr]", "[sec14a]"):
        assert section in out


def test_protection_limits_are_set_per_datasheet_in_the_site_file():
    """Issue 17 item 19: [protection] rows override the LFP defaults, validated."""
    from ems.config import site_from_dict
    from ems.config.load import ConfigError
    from ems.control.clock import VirtualClock
    from ems.control.controller import Controller
    from datetime import datetime, timezone

    cfg = site_from_dict({"protection": {"trip_delay_ms": 300.0, "rows": [
        {"name": "cell_over_voltage", "levels": [3.45, 3.55, 3.62], "set_ms": [0, 500, 800]},
        {"name": "cell_over_temp_charge", "levels": [40, 45, 50], "hysteresis": [2, 2, 2]}]}})
    ctrl = Controller(cfg, VirtualClock(datetime(2026, 1, 1, tzinfo=timezone.utc)))
    table = ctrl.fast.table
    assert [table.threshold("cell_over_voltage", lv) for lv in range(3)] == [3.45, 3.55, 3.62]
    assert table.rows[table.index("cell_over_voltage")].set_ms == (0.0, 500.0, 800.0)
    assert table.threshold("cell_over_temp_charge", 2) == 50.0
    assert table.threshold("cell_under_voltage", 2) == 2.70            # untouched rows keep their defaults
    for bad, why in (({"name": "cell_over_voltage", "levels": [3.60, 3.55, 3.62]}, "operating → warning → fault"),
                     ({"name": "cell_over_voltage", "levels": [3450, 3550, 3620]}, "physical range"),
                     ({"name": "cell_under_voltage", "levels": [3.0, 2.8]}, "three finite numbers"),
                     ({"name": "no_such_row", "levels": [1, 2, 3]}, "no such row"),
                     ({"name": "cell_over_voltage", "set_ms": [0, -1, 5]}, "finite and >= 0")):
        with pytest.raises(ConfigError, match=why):
            site_from_dict({"protection": {"rows": [bad]}})
    with pytest.raises(ConfigError, match="below protection.trip_delay_ms"):
        site_from_dict({"protection": {"trip_delay_ms": 500.0, "trip_max_wait_ms": 100.0}})
