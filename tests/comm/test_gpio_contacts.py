"""The GPIO dry-contact backend against libgpiod's real Python bindings. There is no GPIO chip in this
sandbox (no gpio-sim module), so only `request_lines` is replaced: by a line request held in memory that
checks the request the way the kernel would (each offset once, outputs given initial values)."""
import types

import gpiod
import pytest
from gpiod.line import Bias, Direction, Value

from ems.comm.dry_contacts import Debouncer, make_backend
from ems.comm.gpio_contacts import GpioContacts, GpioError
from ems.config.load import ConfigError, site_from_dict
from ems.config.schema import DryContacts, GpioLine


class MemoryRequest:
    def __init__(self, config, output_values):
        self.settings = {}
        for offsets, settings in config.items():
            assert isinstance(settings, gpiod.LineSettings)
            for o in offsets:
                assert o not in self.settings, f"offset {o} requested twice"
                self.settings[o] = settings
        self.levels = {o: Value.INACTIVE for o in self.settings}
        for o, v in (output_values or {}).items():
            assert self.settings[o].direction == Direction.OUTPUT, f"initial value for input {o}"
            self.levels[o] = v
        self.writes = []
        self.released = False

    def get_values(self, lines=None):
        return [self.levels[o] for o in (lines if lines is not None else self.settings)]

    def set_values(self, values):
        for o, v in values.items():
            assert self.settings[o].direction == Direction.OUTPUT, f"write to input line {o}"
            assert isinstance(v, Value)
        self.levels.update(values)
        self.writes.append(dict(values))

    def release(self):
        self.released = True


def memory_gpiod():
    made = {}

    def request_lines(path, config, consumer=None, event_buffer_size=None, output_values=None):
        if path != "/dev/gpiochip0":
            raise FileNotFoundError(2, "No such file or directory", path)
        made["request"] = MemoryRequest(config, output_values)
        made["consumer"] = consumer
        return made["request"]
    return types.SimpleNamespace(line=gpiod.line, LineSettings=gpiod.LineSettings, request_lines=request_lines), made


LINES = [GpioLine("epo", 5, "pull_up"), GpioLine("fire_action", 6), GpioLine("rrcr_k1", 7, "pull_down"),
         GpioLine("generator_start", 17), GpioLine("trip", 18)]


def test_inputs_are_requested_with_their_bias_and_outputs_start_inactive():
    mod, made = memory_gpiod()
    GpioContacts("/dev/gpiochip0", LINES, gpiod=mod)
    req = made["request"]
    assert made["consumer"] == "ems"
    assert req.settings[5].direction == Direction.INPUT and req.settings[5].bias == Bias.PULL_UP
    assert req.settings[7].bias == Bias.PULL_DOWN and req.settings[6].bias == Bias.AS_IS
    assert req.settings[17].direction == Direction.OUTPUT
    assert req.levels[17] == Value.INACTIVE and req.levels[18] == Value.INACTIVE


def test_line_levels_read_as_named_inputs():
    mod, made = memory_gpiod()
    gc = GpioContacts("/dev/gpiochip0", LINES, gpiod=mod)
    made["request"].levels[6] = Value.ACTIVE
    assert gc.read_inputs() == {"epo": False, "fire_action": True, "rrcr_k1": False}


def test_an_nc_epo_loop_on_gpio_goes_through_the_shared_debouncer():
    mod, made = memory_gpiod()
    gc = GpioContacts("/dev/gpiochip0", LINES, gpiod=mod)
    d = Debouncer(50.0, inverted=("epo",))
    made["request"].levels[5] = Value.ACTIVE            # loop closed: healthy
    assert d.update(gc.read_inputs(), 0.0)["epo"] is False, "the first reading, as it is: not active"
    made["request"].levels[5] = Value.INACTIVE          # wire broken / button pressed
    d.update(gc.read_inputs(), 1.0)
    assert d.update(gc.read_inputs(), 1.05) == {"epo": True}


def test_outputs_are_written_only_when_they_change_and_unwired_ones_are_skipped():
    mod, made = memory_gpiod()
    gc = GpioContacts("/dev/gpiochip0", LINES, gpiod=mod)
    req = made["request"]
    gc.write_outputs({"generator_start": True, "trip": False, "sg_ready_1": True})
    assert req.writes == [{17: Value.ACTIVE}]
    gc.write_outputs({"generator_start": True, "trip": False})
    assert len(req.writes) == 1, "nothing changed: no write"
    gc.write_outputs({"generator_start": False})
    assert req.writes[-1] == {17: Value.INACTIVE}
    with pytest.raises(ValueError, match="unknown dry-contact outputs"):
        gc.write_outputs({"coffee_machine": True})
    gc.close()
    assert req.released


def test_a_missing_chip_through_the_real_bindings_is_a_clear_error():
    with pytest.raises(GpioError, match="/dev/gpiochip-none"):
        GpioContacts("/dev/gpiochip-none", LINES)


def test_a_file_that_is_no_gpio_chip_is_a_clear_error(tmp_path):
    fake = tmp_path / "gpiochip0"
    fake.write_bytes(b"")
    with pytest.raises(GpioError, match="cannot request GPIO lines"):
        GpioContacts(str(fake), LINES)


def test_the_config_picks_the_backend():
    assert type(make_backend(DryContacts())).__name__ == "MemoryContacts"
    with pytest.raises(GpioError):
        make_backend(DryContacts(backend="gpio", gpio_chip="/dev/gpiochip-none", gpio_lines=LINES))


@pytest.mark.parametrize("lines, key, why", [
    ([{"name": "doorbell", "line": 1}], "gpio_lines[0].name", "not a dry-contact input or output"),
    ([{"name": "epo", "line": 1}, {"name": "epo", "line": 2}], "gpio_lines[1].name", "wired twice"),
    ([{"name": "epo", "line": 1}, {"name": "water", "line": 1}], "gpio_lines[1].line", "already used by 'epo'"),
    ([{"name": "epo", "line": 1, "bias": "sideways"}], "gpio_lines[0].bias", ""),
    ([], "gpio_lines", "needs the lines"),
])
def test_bad_gpio_wiring_is_refused_with_the_key(lines, key, why):
    with pytest.raises(ConfigError) as e:
        site_from_dict({"dry_contacts": {"backend": "gpio", "gpio_lines": lines}})
    assert key in str(e.value) and why in str(e.value)
