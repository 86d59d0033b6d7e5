from __future__ import annotations

import shutil

import pytest

from tests.cloud.broker import MOSQUITTO, Broker


@pytest.fixture
def broker(tmp_path):
    if not shutil.which("mosquitto") and not __import__("os").path.exists(MOSQUITTO):
        pytest.fail("no mosquitto for the cloud tests: run `make test` (it installs Debian's mosquitto) or "
                    "`bash tools/mosquitto.sh` as root")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()
