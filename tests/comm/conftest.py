"""Fixtures shared by the device-communication tests."""
import pytest

from ems.comm.modbus_server import IoThread


@pytest.fixture
def io():
    """One I/O thread (asyncio loop) for the servers and clients of a test, stopped after it."""
    t = IoThread()
    yield t
    t.stop()
