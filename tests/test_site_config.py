"""Site files and device profiles the way an installer writes them: every problem named with its key (or its
file and line), nothing half-valid accepted."""
from pathlib import Path

import pytest

from ems.comm.can_profiles import can_profiles, load_can_profile
from ems.comm.profiles import ProfileError, load_profile, site_profiles
from ems.config.load import ConfigError, load_site, site_from_dict

ROOT = Path(__file__).resolve().parents[1]
METER = {"name": "grid_meter", "role": "grid_meter", "model": "DTSU666-H", "unit_id": 101}


def problems(data) -> str:
    with pytest.raises(ConfigError) as exc:
        site_from_dict(data)
    return str(exc.value)


def test_the_commissioning_example_passes_the_check():
    cfg = load_site(ROOT / "examples" / "sites" / "real_site.toml")
    assert [d.transport for d in cfg.devices.modbus] == ["tcp", "rtu", "rtu"]
    assert cfg.devices.can_interface == "socketcan" and cfg.dry_contacts.backend == "gpio"


@pytest.mark.parametrize("device, key, words", [
    ({"comm_loss_s": 0.6}, "devices.modbus[0].comm_loss_s", "at least twice that"),
    ({"transport": "rtu", "serial_port": ""}, "devices.modbus[0].serial_port", "needs its serial port"),
    ({"parity": "X"}, "devices.modbus[0].parity", "must be one of N, E, O"),
    ({"bytesize": 6}, "devices.modbus[0].bytesize", "allowed 7 … 8"),
    ({"model": "SIM-PCS"}, "devices.modbus[0].model", "role grid_meter needs a meter"),
])
def test_bad_device_entries_are_refused_with_their_key(device, key, words):
    text = problems({"devices": {"modbus": [{**METER, **device}]}})
    assert key in text and words in text, text


def test_devices_on_one_rs485_line_must_share_its_framing():
    rtu = {"transport": "rtu", "serial_port": "/dev/ttyS1"}
    text = problems({"devices": {"modbus": [{**METER, **rtu}, {**METER, "name": "pv", "role": "pv_meter", "unit_id": 121,
                                                               "parity": "E", **rtu}]}})
    assert "devices.modbus[1]" in text and "share one line" in text


@pytest.mark.parametrize("data, key, words", [
    ({"devices": {"can_profile": "NOPE"}}, "devices.can_profile", "no such CAN BMS profile"),
    ({"devices": {"can_profile": "CAN-BATTERY-INVERTER"}, "battery": {"clusters": 2}}, "battery.clusters",
     "reports the stack only"),
    ({"devices": {"can_profile": "CAN-BATTERY-INVERTER"}}, "battery.cells_per_cluster", "up to 327.67 V"),
    ({"devices": {"bms": "modbus"}}, "devices.bms", "needs a [[devices.modbus]] entry with role bms"),
    ({"devices": {"can_interface": "slcan"}}, "devices.can_interface", "must be one of"),
    ({"dry_contacts": {"backend": "modbus"}}, "dry_contacts.io_device", "role io_module"),
    ({"dry_contacts": {"backend": "gpio", "gpio_lines": [{"name": "water", "line": 3}], "inverted_inputs": ["epo"]}},
     "dry_contacts.inverted_inputs[0]", "not wired"),
    ({"dry_contacts": {"backend": "modbus", "io_device": "io", "channels": [{"name": "epo", "channel": 1},
                                                                          {"name": "water", "channel": 1}]},
      "devices": {"modbus": [{"name": "io", "role": "io_module", "model": "SIM-DIO"}]}},
     "dry_contacts.channels[1].channel", "already used by 'epo'"),
])
def test_bms_and_contact_wiring_problems_name_their_key(data, key, words):
    text = problems(data)
    assert key in text and words in text, text


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


METER_PROFILE = '''[device]
kind = "meter"
vendor = "acme"
model = "ACME-M1"

[groups]
fast = { interval_ms = 500 }

[[register]]
name = "active_power_w"
address = 0
function = 4
type = "s32"
unit = "W"
group = "fast"
max_age_s = 3.0
'''


def test_a_profile_in_the_sites_own_folder_loads_beside_the_shipped_ones(tmp_path):
    write(tmp_path / "drivers" / "modbus" / "meter", "acme_m1.toml", METER_PROFILE)
    site = write(tmp_path, "site.toml", '[[devices.modbus]]\nname = "m"\nrole = "grid_meter"\nmodel = "ACME-M1"\n')
    cfg = load_site(site)
    assert cfg.devices.profiles_dir == str((tmp_path / "drivers").resolve())
    assert site_profiles(cfg.devices.profiles_dir)["ACME-M1"].vendor == "acme"
    with pytest.raises(ConfigError, match="no such profile"):
        site_from_dict({"devices": {"modbus": [{"name": "m", "role": "grid_meter", "model": "ACME-M1"}]}})


def test_a_site_profile_may_not_redefine_a_shipped_model(tmp_path):
    write(tmp_path / "drivers" / "modbus", "copy.toml", METER_PROFILE.replace("ACME-M1", "DTSU666-H"))
    with pytest.raises(ConfigError) as exc:
        load_site(write(tmp_path, "site.toml", ""))
    assert "devices.profiles_dir" in str(exc.value) and "already defined" in str(exc.value)


@pytest.mark.parametrize("change, line, words", [
    (('max_age_s = 3.0', 'max_age_s = "three"'), 16, "max_age_s must be a number above 0"),
    (('max_age_s = 3.0', 'max_age_s = -1.0'), 16, "max_age_s must be a number above 0"),
    (('vendor = "acme"', 'vendor = "acme"\npolling = "fast"'), 4, "[device]: unknown key 'polling'"),
    (('fast = { interval_ms = 500 }', 'fast = { interval_ms = 500, retries = 2 }'), 7, "unknown key 'retries'"),
    (('[device]', 'wiring = "rs485"\n[device]'), 1, "top level: unknown key 'wiring'"),
    (('type = "s32"', 'type = "u32"\nalarm_bits = { 0 = 999999 }'), 14, "not a code of the alarm catalogue"),
    (('type = "s32"', 'type = "u32"\nflags = { Running = 0 }'), 14, "lower_snake_case"),
])
def test_profile_mistakes_are_reported_with_file_and_line(tmp_path, change, line, words):
    f = write(tmp_path, "p.toml", METER_PROFILE.replace(*change))
    with pytest.raises(ProfileError) as exc:
        load_profile(f)
    hits = [(ln, msg) for path, ln, msg in exc.value.problems if words in msg]
    assert hits and hits[0][0] == line, exc.value.problems
    assert str(f) in str(exc.value)


CAN_PROFILE = '''[device]
kind = "bms"
model = "ACME-CAN"
dbc = "{dbc}"
level = "stack"

[messages]
BatteryLimits = 3.0

[stack]
voltage_v = "BatteryActualValues.voltage_v"
current_a = {{ signal = "BatteryActualValues.current_a", scale = -1.0 }}
temperature_degc = "BatteryActualValues.temperature_degc"
charge_limit_a = "BatteryLimits.charge_current_limit_a"
discharge_limit_a = "BatteryLimits.{signal}"
'''


def test_a_can_bms_profile_is_a_data_file_checked_against_its_dbc(tmp_path):
    dbc = ROOT / "drivers" / "can" / "battery_inverter.dbc"
    good = write(tmp_path / "drivers" / "can", "acme.toml", CAN_PROFILE.format(dbc=dbc, signal="discharge_current_limit_a"))
    p = load_can_profile(good)
    assert p.level == "stack" and p.stack["current_a"].scale == -1.0
    assert "ACME-CAN" in can_profiles(tmp_path / "drivers")
    bad = write(tmp_path, "bad.toml", CAN_PROFILE.format(dbc=dbc, signal="discharge_limit"))
    with pytest.raises(ProfileError) as exc:
        load_can_profile(bad)
    path, line, msg = exc.value.problems[0]
    assert line == 15 and "no signal 'discharge_limit' in message 'BatteryLimits'" in msg


def test_the_shipped_can_profiles_map_the_project_cells_and_the_de_facto_stack_protocol():
    p = can_profiles()
    assert p["EMS-CAN-CELLS"].level == "cell" and set(p["EMS-CAN-CELLS"].cells) == {"voltage_v", "temperature_degc"}
    assert p["EMS-CAN-CELLS"].command.open_contactors == "open_contactors_mask"
    stack = p["CAN-BATTERY-INVERTER"]
    assert stack.level == "stack" and stack.command is None and stack.keepalive.message == "InverterKeepAlive"
