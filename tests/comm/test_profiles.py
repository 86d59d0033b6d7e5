import pytest

from ems.comm.profiles import ProfileError, load_profile, shipped_profiles

GOOD = """
[device]
kind = "meter"
vendor = "test"
model = "T1"

[groups]
fast = { interval_ms = 200 }

[[register]]
name = "p_w"
address = 10
function = 4
type = "s32"
unit = "W"
group = "fast"
"""


def write(tmp_path, text, name="p.toml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_the_shipped_profiles_load_and_are_valid():
    profiles = shipped_profiles()
    assert {"SIM-PCS", "SIM-AC"} <= set(profiles)
    pcs = profiles["SIM-PCS"]
    assert pcs.kind == "pcs" and pcs.registers["active_power_setpoint_w"].writable
    assert [r.name for r in pcs.block("fast", 4)][:2] == ["active_power_w", "reactive_power_var"]


def test_a_good_profile_loads(tmp_path):
    p = load_profile(write(tmp_path, GOOD))
    assert p.registers["p_w"].count == 2 and p.groups == {"fast": 200.0}


def problems(tmp_path, text):
    with pytest.raises(ProfileError) as exc:
        load_profile(write(tmp_path, text))
    return exc.value.problems


def test_overlapping_registers_are_named_with_file_and_line(tmp_path):
    probs = problems(tmp_path, GOOD + """
[[register]]
name = "q_var"
address = 11
function = 4
type = "s16"
unit = "var"
group = "fast"
""")
    path, line, msg = probs[0]
    assert path.endswith("p.toml") and line == 18 and "overlaps p_w" in msg and "line 10" in msg


def test_the_same_address_in_another_function_does_not_overlap(tmp_path):
    load_profile(write(tmp_path, GOOD + """
[[register]]
name = "setpoint_w"
address = 10
function = 3
type = "s32"
unit = "W"
group = "fast"
writable = true
min = -1000
max = 1000
"""))


@pytest.mark.parametrize("change, expect, line", [
    ('type = "s32"', 'type = "int7"', 14),
    ('unit = "W"', 'unit = "horsepower"', 15),
    ('group = "fast"', 'group = "medium"', 16),
    ('function = 4', 'function = 6', 13),
    ('name = "p_w"', 'name = "P W"', 11),
])
def test_bad_fields_are_reported_with_the_line_of_the_key(tmp_path, change, expect, line):
    probs = problems(tmp_path, GOOD.replace(change, expect))
    assert probs and probs[0][1] == line


def test_a_writable_register_needs_a_range(tmp_path):
    probs = problems(tmp_path, GOOD.replace('group = "fast"', 'group = "fast"\nwritable = true').replace(
        "function = 4", "function = 3"))
    assert "write range" in probs[0][2]


def test_unknown_keys_and_a_bad_kind_are_reported(tmp_path):
    probs = problems(tmp_path, GOOD.replace('kind = "meter"', 'kind = "toaster"').replace(
        'unit = "W"', 'unit = "W"\nscaling = 2'))
    messages = " ".join(p[2] for p in probs)
    assert "toaster" in messages and "scaling" in messages


def test_a_toml_syntax_error_names_the_line(tmp_path):
    probs = problems(tmp_path, GOOD + "\n[[register]\nname = 3\n")
    assert "TOML syntax" in probs[0][2] and probs[0][1] > 0
