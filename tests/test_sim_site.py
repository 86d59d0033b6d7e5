"""`ems sim-site`: its socketcand server spoken to by python-can's own client, its control channel, its
refusals — every input bounded, every bad one answered and counted, nothing crashes."""
import asyncio
import json
import socket
import subprocess
import sys
import threading
import time

import can
import pytest

from ems.comm.net import free_port
from ems.sim.socketcand import MAX_CLIENTS, SocketcandServer, parse_send
from tests.procs import control, sim_site


@pytest.fixture
def server():
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    got = []
    srv = SocketcandServer(loop, "can0", got.append)
    port = free_port()
    asyncio.run_coroutine_threadsafe(srv.start("127.0.0.1", port), loop).result(5)
    yield srv, port, got
    asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)


def test_python_cans_socketcand_client_receives_the_frames_and_sends_back(server):
    srv, port, got = server
    bus = can.Bus(interface="socketcand", channel="can0", host="127.0.0.1", port=port)
    try:
        time.sleep(0.1)
        srv.send(can.Message(arbitration_id=0x351, data=bytes.fromhex("1402740e740ecc01"), is_extended_id=False))
        srv.send(can.Message(arbitration_id=0x18FF50E5, data=b"\x01", is_extended_id=True))
        srv.flush()
        a, b = bus.recv(2.0), bus.recv(2.0)
        assert (a.arbitration_id, bytes(a.data), a.is_extended_id) == (0x351, bytes.fromhex("1402740e740ecc01"), False)
        assert (b.arbitration_id, b.is_extended_id) == (0x18FF50E5, True)
        bus.send(can.Message(arbitration_id=0x305, data=bytes([7] + [0] * 7), is_extended_id=False))
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got and got[0].arbitration_id == 0x305 and got[0].data[0] == 7
    finally:
        bus.shutdown()


def test_garbage_from_a_client_is_dropped_and_counted_and_the_clients_are_bounded(server):
    srv, port, got = server
    s = socket.create_connection(("127.0.0.1", port))
    assert s.recv(16) == b"< hi >"
    s.sendall(b"< open can7 >")
    assert s.recv(64).startswith(b"< error")
    s.sendall(b"< send XYZ 9 1 >< send 123 2 1 >< nonsense >" + b"A" * 1000)
    time.sleep(0.2)
    assert got == [] and srv.dropped >= 3
    extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CLIENTS)]
    time.sleep(0.2)
    assert extra[-1].recv(16) == b"", "beyond the client limit: closed"
    for c in extra + [s]:
        c.close()
    assert parse_send("< send 6E0 3 1 2 3 >").data == bytes([1, 2, 3])


def test_the_control_channel_answers_events_truth_and_refusals(tmp_path):
    sim = sim_site(tmp_path)
    try:
        assert control(sim, kind="truth")["truth"]["grid_available"] is True
        assert control(sim, kind="grid_outage") == {"ok": True, "applied_at_s": pytest.approx(time.monotonic(), abs=5)}
        assert control(sim, kind="truth")["truth"]["grid_available"] is False
        assert control(sim, kind="pcs_fault", code=100470)["ok"]
        for bad, words in (({"kind": "meteor_strike"}, "one of"), ({"kind": "dispatch", "value_w": 5}, "operator's"),
                           ({"kind": "pcs_fault", "code": 40006}, "PCS code"), ({"kind": "di", "name": "epo"},
                                                                                  "needs closed")):
            answer = control(sim, **bad)
            assert not answer["ok"] and words in answer["error"], answer
        host, port = sim.control.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"{not json\n")
            assert "not JSON" in json.loads(s.makefile().readline())["error"]
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"x" * 70_000 + b"\n")
            assert "too long" in s.makefile().readline()
        assert control(sim, kind="truth")["ok"], "still serving"
    finally:
        sim.stop()


def test_the_simulated_site_serves_loopback_addresses_only(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text('[[devices.modbus]]\nname = "pcs"\nrole = "pcs"\nmodel = "SIM-PCS"\nhost = "192.168.1.20"\n')
    p = subprocess.run([sys.executable, "-m", "ems", "sim-site", "--config", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1 and "devices.modbus[0].host = '192.168.1.20'" in p.stderr and "loopback" in p.stderr
