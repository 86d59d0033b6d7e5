"""The Modbus client engine against real pymodbus servers on loopback."""
import time

import pytest
from pymodbus.client import ModbusTcpClient

from ems.comm.modbus_client import Device, Link, ModbusEngine, plan_blocks
from ems.comm.modbus_server import ProfileImage
from ems.comm.profiles import load_profile, shipped_profiles
from ems.comm.net import free_port


def wait_for(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def pcs_site(io):
    p = shipped_profiles()["SIM-PCS"]
    writes = []
    img = ProfileImage(p, lambda name, value, client: writes.append((name, value, client)))
    port = free_port()
    io.serve_tcp({1: img}, "127.0.0.1", port)
    eng = ModbusEngine(io)
    eng.add(Link(port=port, timeout_s=0.2), [Device("pcs", p, 1, 0x06000000, "pcs", {"setpoint_timeout_s": 10})])
    eng.start()
    yield img, eng, writes, port
    eng.stop()


def test_blocks_merge_adjacent_registers_per_group_and_function(tmp_path):
    f = tmp_path / "m.toml"
    regs = "".join(f'[[register]]\nname = "r{a}"\naddress = {a}\nfunction = 3\ntype = "u16"\ngroup = "fast"\n'
                   for a in (0, 1, 2, 10, 11, 200))
    f.write_text('[device]\nkind = "meter"\nmerge_gap = 8\nmax_block = 12\n[groups]\nfast = { interval_ms = 100 }\n'
                 + regs)
    blocks = [(b.address, b.count) for b in plan_blocks(load_profile(f))]
    assert blocks == [(0, 12), (200, 1)]          # 0–2 and 10–11 merged across a gap of 7; 200 alone
    f.write_text(f.read_text().replace("merge_gap = 8", "merge_gap = 0"))
    assert [(b.address, b.count) for b in plan_blocks(load_profile(f))] == [(0, 3), (10, 2), (200, 1)]
    dtsu = plan_blocks(shipped_profiles()["DTSU666-H"])
    assert (0x2006, 22) in [(b.address, b.count) for b in dtsu]      # voltages … reactive power in one read


def test_engine_reads_decoded_values_and_holds_setpoints(pcs_site):
    img, eng, writes, _ = pcs_site
    img.publish_many({"active_power_w": -12_345, "dc_voltage_v": 712.3})
    assert wait_for(lambda: eng.value("pcs", "active_power_w") == -12_345)
    assert eng.value("pcs", "dc_voltage_v") == pytest.approx(712.3)
    assert ("setpoint_timeout_s", 10.0, "127.0.0.1") in writes           # init write after connecting
    eng.hold("pcs", "active_power_setpoint_w", 5000, refresh_s=0.2)
    assert wait_for(lambda: img.value("active_power_setpoint_w") == 5000)
    n = sum(1 for w in writes if w[0] == "active_power_setpoint_w")
    assert wait_for(lambda: sum(1 for w in writes if w[0] == "active_power_setpoint_w") >= n + 2, 2.0)   # refreshed
    with pytest.raises(ValueError, match="outside"):
        eng.hold("pcs", "active_power_setpoint_w", 1e12)
    with pytest.raises(ValueError, match="not a writable"):
        eng.hold("pcs", "active_power_w", 0)
    row = eng.status()[0]
    assert row["status"] == "online" and row["model"] == "SIM-PCS" and row["device_id"] == 0x06000000


def test_silent_device_goes_offline_reads_none_and_recovers(pcs_site):
    img, eng, _, _ = pcs_site
    img.publish("active_power_w", 1000)
    assert wait_for(lambda: eng.value("pcs", "active_power_w") == 1000)
    img.silent = True
    assert wait_for(lambda: eng.device("pcs").status == "offline")
    assert wait_for(lambda: eng.value("pcs", "active_power_w") is None, 4.0)   # max_age_s 2 s in the profile
    assert eng.device("pcs").errors >= 3
    img.silent = False
    img.publish("active_power_w", 2000)
    assert wait_for(lambda: eng.value("pcs", "active_power_w") == 2000, 6.0)   # after the backoff
    assert eng.device("pcs").status == "online"


def test_engine_reconnects_when_the_server_comes_back(io):
    p = shipped_profiles()["SIM-PCS"]
    port = free_port()
    eng = ModbusEngine(io)
    eng.add(Link(port=port, timeout_s=0.2), [Device("pcs", p)])
    eng.start()
    assert wait_for(lambda: eng.device("pcs").status == "offline")           # nobody listens yet
    img = ProfileImage(p)
    img.publish("active_power_w", 777)
    io.serve_tcp({1: img}, "127.0.0.1", port)
    assert wait_for(lambda: eng.value("pcs", "active_power_w") == 777, 8.0)
    eng.stop()


def test_inter_request_gap_spaces_requests(io):
    p = shipped_profiles()["SIM-PCS"]
    img = ProfileImage(p)
    port = free_port()
    io.serve_tcp({1: img}, "127.0.0.1", port)
    eng = ModbusEngine(io)
    eng.add(Link(port=port, gap_ms=100), [Device("pcs", p)])
    eng.start()
    assert wait_for(lambda: eng.device("pcs").status == "online")
    before = eng.device("pcs").requests
    time.sleep(1.0)
    assert eng.device("pcs").requests - before <= 12      # ≤ one request per 100 ms gap (+ slack)
    eng.stop()


def test_profile_server_refuses_bad_writes_and_changes_nothing(io):
    p = shipped_profiles()["SIM-PCS"]
    writes = []
    img = ProfileImage(p, lambda *w: writes.append(w))
    port = free_port()
    io.serve_tcp({1: img}, "127.0.0.1", port)
    c = ModbusTcpClient("127.0.0.1", port=port)
    assert c.connect()
    before = img.get_words(3, 0x1000, 7)
    r = c.write_register(0x1004, 7, device_id=1)                 # run_command 0 … 1
    assert r.isError() and r.exception_code == 3
    r = c.write_register(0x1000, 5, device_id=1)                 # half of an s32
    assert r.isError() and r.exception_code == 2
    r = c.write_registers(0x0000, [1, 2], device_id=1)           # input registers are not writable
    assert r.isError()
    assert img.get_words(3, 0x1000, 7) == before and writes == []
    assert not c.write_registers(0x1000, [0xFFFF, 0xEC78], device_id=1).isError()   # −5000 W
    assert writes == [("active_power_setpoint_w", -5000.0, "127.0.0.1")]
    c.close()


def test_an_rtu_line_takes_its_framing_from_the_site_file_and_reads_over_a_serial_pair(io):
    """Parity, stop bits and data bits reach the serial client (a pseudo-terminal pair carries the bytes; it
    does not check the framing itself, a real line would; it refuses most parity settings, so the line runs
    8N2 and the parity and data bits are checked on the client the engine builds)."""
    from ems.comm.modbus_client import Channel
    from tests.comm.serial_pair import SerialPair
    pair = SerialPair()
    try:
        p = shipped_profiles()["DTSU666-H"]
        img = ProfileImage(p)
        img.publish("active_power_w", 12_345.0)
        io.serve_rtu({101: img}, pair.ports[0], 19200, "N", 2)
        eng = ModbusEngine(io)
        link = Link("rtu", serial_port=pair.ports[1], baudrate=19200, parity="N", stopbits=2, bytesize=8,
                    timeout_s=0.5)
        eng.add(link, [Device("grid_meter", p, 101, 0x05000000, "grid_meter")])
        eng.start()
        try:
            assert wait_for(lambda: eng.value("grid_meter", "active_power_w") == 12_345.0, 5.0)
            params = eng.channels[0].client.comm_params
            assert (params.parity, params.stopbits, params.bytesize, params.baudrate) == ("N", 2, 8, 19200)
            assert eng.status()[0]["address"] == f"rtu://{pair.ports[1]}@19200-8N2#101"
            async def client_params():          # pymodbus builds its clients on a running loop
                return Channel(Link("rtu", serial_port="/dev/ttyS1", parity="E", bytesize=7), [])._make_client().comm_params
            even = io.call(client_params())
            assert (even.parity, even.stopbits, even.bytesize) == ("E", 1, 7)
        finally:
            eng.stop()
    finally:
        pair.close()


def test_a_modbus_bms_is_read_as_per_cluster_arrays_into_engineering_values(io):
    import numpy as np

    from ems.sim.site import publish_image_array
    p = shipped_profiles()["SIM-BAU"]
    clusters, cells = 3, 20
    img = ProfileImage(p, clusters=clusters, cells=cells)
    v = np.round(np.linspace(3.2, 3.4, clusters * cells).reshape(clusters, cells), 3)
    v[1, 7] = np.nan                                          # a cell the BAU cannot read
    publish_image_array(img, p.arrays["cell_voltage_v"], v)
    publish_image_array(img, p.arrays["cluster_current_a"], np.array([[-12.5], [0.0], [40.1]]))
    status = np.array([[0b001], [0b011], [0b101]], dtype=float)       # connected, + charge / discharge prohibited
    publish_image_array(img, p.arrays["cluster_connected"], status)
    port = free_port()
    io.serve_tcp({1: img}, "127.0.0.1", port)
    eng = ModbusEngine(io)
    eng.add(Link(port=port, timeout_s=0.5), [Device("bau", p, 1, 0x02000000, "bms", clusters=clusters, cells=cells)])
    eng.start()
    try:
        d = eng.device("bau")
        assert wait_for(lambda: np.isfinite(d.arrays["cell_voltage_v"][~np.isnan(v)]).all()
                        and np.isfinite(d.arrays["cluster_connected"]).all()
                        and np.isfinite(d.arrays["cluster_current_a"]).all(), 5.0)
        got = d.arrays["cell_voltage_v"]
        assert np.isnan(got[1, 7]) and np.allclose(got[~np.isnan(v)], v[~np.isnan(v)], atol=5e-4)
        assert d.arrays["cluster_current_a"][:, 0].tolist() == pytest.approx([-12.5, 0.0, 40.1])
        assert d.arrays["cluster_connected"][:, 0].tolist() == [1, 1, 1]
        assert d.arrays["cluster_charge_prohibited"][:, 0].tolist() == [0, 1, 0]
        assert d.arrays["cluster_discharge_prohibited"][:, 0].tolist() == [0, 0, 1]
    finally:
        eng.stop()


def test_array_planning_merges_across_clusters_and_refuses_a_stride_too_small():
    p = shipped_profiles()["SIM-BAU"]
    blocks = Device("bau", p, 1, clusters=32, cells=396).blocks
    cells = [b for b in blocks if b.group == "cells"]
    assert len(cells) == -(-32 * 400 // 125) and all(b.count <= 125 for b in blocks)
    assert sum(k for b in cells for _, a, _, _, k in b.parts) == 32 * 396
    with pytest.raises(ValueError, match="overlap"):
        Device("bau", p, 1, clusters=2, cells=401)           # 401 cells do not fit the 400-register stride
