"""The shipped config migrations (firmware/migrations) carry an installer's old site file forward."""
from pathlib import Path

import pytest

from ems.board.migrate import load_steps, migrate_doc
from ems.config import CONFIG_VERSION, ConfigError, site_from_dict

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "firmware" / "migrations").glob("v*.py"))


def test_the_shipped_migrations_lead_to_this_programs_schema():
    steps = load_steps(SHIPPED)
    assert sorted(steps) == list(range(1, CONFIG_VERSION))


def test_a_version_1_soc_section_is_refused_as_it_is_and_loads_after_the_migration():
    old = {"site": {"name": "Plant 7"}, "battery": {"cell_capacity_ah": 100.0},
           "soc_estimation": {"zero_current_a": 0.5, "ocv_min_slope_mv_per_pct": 2.0, "voltage_sigma_mv": 3.0,
                              "rest_min": 45.0}}
    with pytest.raises(ConfigError, match="zero_current_a"):
        site_from_dict({k: dict(v) for k, v in old.items()})
    doc, done = migrate_doc({k: dict(v) for k, v in old.items()}, load_steps(SHIPPED), CONFIG_VERSION)
    assert done and doc["site"]["config_version"] == CONFIG_VERSION
    cfg = site_from_dict(doc)
    est = cfg.soc_estimation
    assert est.zero_current_c == pytest.approx(0.005)            # 0.5 A of a 100 Ah cell
    assert est.ocv_max_sigma_pct == pytest.approx(1.5)           # 3 mV of noise on 2 mV/%
    assert est.rest_min == 45.0 and cfg.site.name == "Plant 7"


def test_a_version_1_file_without_the_old_keys_only_gets_its_version():
    doc, _ = migrate_doc({"site": {"name": "x"}}, load_steps(SHIPPED), CONFIG_VERSION)
    assert doc == {"site": {"name": "x", "config_version": CONFIG_VERSION}}
    site_from_dict(doc)
