"""`python -m tests.gpio_run run --config SITE …`: the real `ems` command line with libgpiod's real bindings,
only `gpiod.request_lines` replaced by a line request whose input levels are read from the JSON file named by
$EMS_TEST_GPIO_LEVELS ({"<offset>": 0 | 1}) at every read, and whose output writes go to $EMS_TEST_GPIO_OUTPUTS.
There is no GPIO chip in this sandbox (no gpio-sim module); this is the closest the board's path gets here."""
import json
import os
import sys

import gpiod
from gpiod.line import Direction, Value


class FileRequest:
    def __init__(self, config, output_values):
        self.settings = {o: s for offsets, s in config.items() for o in offsets}
        self.outputs = {o: v for o, v in (output_values or {}).items()}
        self._write()

    def get_values(self, lines=None):
        try:
            with open(os.environ["EMS_TEST_GPIO_LEVELS"]) as fh:
                levels = {int(k): v for k, v in json.load(fh).items()}
        except (OSError, ValueError):
            levels = {}
        return [Value.ACTIVE if levels.get(o) else Value.INACTIVE for o in (lines or self.settings)]

    def set_values(self, values):
        for o, v in values.items():
            assert self.settings[o].direction == Direction.OUTPUT, f"write to input line {o}"
        self.outputs.update(values)
        self._write()

    def _write(self):
        path = os.environ.get("EMS_TEST_GPIO_OUTPUTS")
        if path:
            with open(path + ".tmp", "w") as fh:
                json.dump({str(o): int(v == Value.ACTIVE) for o, v in self.outputs.items()}, fh)
            os.replace(path + ".tmp", path)

    def release(self):
        pass


def request_lines(path, config, consumer=None, event_buffer_size=None, output_values=None):
    return FileRequest(config, output_values)


gpiod.request_lines = request_lines

if __name__ == "__main__":
    from ems.cli import main
    sys.exit(main(sys.argv[1:]))
