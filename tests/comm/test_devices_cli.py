"""`ems devices`, `ems dispatch-map` and the [[devices.modbus]] configuration checks."""
import subprocess
import sys

import pytest

from ems.comm.dispatch import register_map_markdown
from ems.comm.registers import Register
from ems.config.load import ConfigError, site_from_dict


def ems(*args):
    return subprocess.run([sys.executable, "-m", "ems", *args], capture_output=True, text=True, timeout=60)


def test_devices_lists_the_shipped_profiles():
    p = ems("devices", "--profiles")
    assert p.returncode == 0
    for model in ("DTSU666-H", "SIM-PCS", "SIM-PV", "SIM-AC", "EMS-DISPATCH"):
        assert model in p.stdout


def test_devices_probes_configured_devices_and_reports_a_dead_one_offline(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[[devices.modbus]]\nname = "grid_meter"\nrole = "grid_meter"\nmodel = "DTSU666-H"\n'
                    'host = "127.0.0.1"\nport = 1\nunit_id = 101\n')
    p = ems("devices", "--config", str(site), "--timeout", "0.3")
    assert p.returncode == 0, p.stderr
    row = next(line for line in p.stdout.splitlines() if "grid_meter" in line)
    assert "0x05000000" in row and "DTSU666-H" in row and "offline" in row and "tcp://127.0.0.1:1#101" in row
    assert "0x01000000" in p.stdout and "Battery cluster01" in p.stdout
    stack = next(line for line in p.stdout.splitlines() if "Battery stack" in line)
    assert "devices.can_channel = 'can0': no such CAN interface" in stack, "the board's can0 is not on this desk"


def test_devices_refuses_a_bad_timeout_and_a_bad_config(tmp_path):
    assert ems("devices", "--timeout", "0").returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[[devices.modbus]]\nname = "x"\nrole = "pcs"\nmodel = "DTSU666-H"\n')
    p = ems("devices", "--config", str(bad))
    assert p.returncode == 1 and "role pcs needs a pcs" in p.stderr


def test_dispatch_map_prints_the_served_map():
    p = ems("dispatch-map")
    assert p.returncode == 0 and p.stdout == register_map_markdown()


def test_device_config_problems_are_all_reported():
    with pytest.raises(ConfigError) as exc:
        site_from_dict({"devices": {"modbus": [{"name": "a", "role": "pcs", "model": "SIM-PCS"},
                                               {"name": "a", "role": "pcs", "model": "NOPE", "transport": "rtu"}]},
                        "dispatch": {"allowed_clients": ["10.0.0.1", "not-an-ip"]}})
    text = str(exc.value)
    for needle in ("used twice", "one per role", "no such profile", "needs its serial port", "not an IP address"):
        assert needle in text


def test_a_served_register_sends_the_invalid_marker_for_not_available():
    r = Register("p", 0, 4, "s32", "W", invalid=-2147483648)
    assert r.decode(r.to_words(None)) is None
    assert r.decode(r.to_words(-1234.0)) == -1234.0
    f = Register("f", 0, 3, "float32", "W")
    assert f.decode(f.to_words(None)) is None
    with pytest.raises(ValueError, match="no invalid marker"):
        Register("u", 0, 4, "u16", "").to_words(None)
