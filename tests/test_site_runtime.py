"""`ems run --config` as the board runs it, against `ems sim-site` as another process on loopback: the controller
talks only to the devices the site file names, over Modbus TCP and CAN (socketcand), and shows only what
they report."""
import signal
import socket
import sys
import threading
import time

import pytest
from pymodbus.client import ModbusTcpClient

from ems.comm.net import free_port
from tests.procs import EmsRun, control, sim_site, status_lines

INVALID_S32 = (0x8000, 0x0000)


def base_site(tmp_path, body: str = ""):
    """A site file for a test: its own dispatch port (no clash with another run), no devices of its own unless
    `body` names them (the simulated site adds its own on free loopback ports)."""
    f = tmp_path / "base.toml"
    f.write_text(f'[site]\nname = "test site"\n[dispatch]\nport = {free_port()}\n' + body)
    return f


def dispatch_port(site_file) -> int:
    from ems.config.load import load_site
    return load_site(site_file).dispatch.port


def native_inputs(port: int) -> list[int]:
    """The controller's own values as its dispatch server serves them (a pymodbus client)."""
    c = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    try:
        assert c.connect()
        r = c.read_input_registers(0, count=24, device_id=1)
        assert not r.isError()
        return r.registers
    finally:
        c.close()


def alarms_of(line: str) -> str:
    return line.split(" alarms ", 1)[1].split("  devices ")[0]


@pytest.fixture
def two_processes(tmp_path):
    sim = sim_site(tmp_path, base_site(tmp_path))
    run = EmsRun("--config", str(sim.site_file), "--no-history", "--state", str(tmp_path / "state.json"))
    yield sim, run
    run.stop()
    sim.stop()


def test_ems_run_controls_the_simulated_site_in_another_process_and_both_stop_on_sigint(two_processes):
    sim, run = two_processes
    # live control within a few seconds: self-use discharges to cover the load, the setpoint reaches the PCS
    deadline = time.monotonic() + 15
    truth = {}
    while time.monotonic() < deadline:
        truth = control(sim, kind="truth")["truth"]
        if abs(truth["pcs_setpoint_w"]) > 1000 and abs(truth["pcs_w"]) > 1000:
            break
        time.sleep(0.2)
    assert abs(truth["pcs_setpoint_w"]) > 1000 and abs(truth["pcs_w"]) > 1000, truth
    assert truth["keepalives"] > 0, "0x305 reached the BMS over CAN (socketcand)"
    line = run.wait_for(lambda s: " soc " in s and " pcs " in s and "alarms none" in s)
    assert line is not None, run.text() + "".join(run.err)
    assert "SIMULATED" not in line, "a site file's devices are real to the controller"
    writes = control(sim, kind="writes", since=0.0)["writes"]
    assert {(d, n) for _, d, n, _ in writes} >= {("pcs", "active_power_setpoint_w"), ("pcs", "run_command"),
                                                   ("pcs", "setpoint_timeout_s"), ("pv_inverter", "active_power_limit_w"),
                                                   ("dio", "do_bits")}
    assert run.stop(signal.SIGINT) == 0
    assert "stopped: PCS commanded to 0 W and stop (written)" in run.text()
    last = [w for w in control(sim, kind="writes", since=0.0)["writes"] if w[2] == "active_power_setpoint_w"][-1]
    assert last[3] == 0.0, "the clean stop's zero reached the PCS"
    sim.proc.send_signal(signal.SIGINT)
    assert sim.proc.wait(10) == 0


def test_killing_the_simulated_site_raises_4_5_7_and_the_safe_state_then_it_recovers_without_a_reset(two_processes):
    sim, run = two_processes
    port = dispatch_port(sim.site_file)
    assert run.wait_for(lambda s: "alarms none" in s and " pcs " in s and "pcs     0.0" not in s, 20) is not None
    sim.proc.kill()                                     # the whole cabinet's devices gone at once
    sim.proc.wait()
    killed = time.monotonic()
    line = run.wait_for(lambda s: all(f"({c})" in alarms_of(s) for c in (4, 5, 7)) if " alarms " in s else False,
                        timeout_s=15, since=killed)
    assert line is not None, run.text()
    assert time.monotonic() - killed <= 2 * 5.0 + 2.0, "within twice the comm-loss ages (5 s)"
    regs = native_inputs(port)
    assert (regs[4], regs[5]) == INVALID_S32, "PCS power it no longer measures is served as not available"
    assert regs[15:17] == [0, 0], "the PCS setpoint is zero (the safe state of battery_lost)"
    assert " pcs       —" in line or "pcs       — kW" in line or "pcs     —" in line
    # the same devices come back on the same addresses
    back = sim_site(sim.site_file.parent, sim.site_file, write_site=False)
    try:
        revived = time.monotonic()
        assert run.wait_for(lambda s: "alarms none" in s, timeout_s=45, since=revived) is not None, run.text()
    finally:
        back.stop()


def test_a_site_whose_devices_do_not_speak_modbus_raises_4_and_5_and_runs_on(tmp_path):
    mute = socket.socket()                   # accepts connections and never answers
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    held = []
    threading.Thread(target=lambda: held.extend(mute.accept() for _ in range(8)), daemon=True).start()
    silent_port, closed_port = mute.getsockname()[1], free_port()
    site = base_site(tmp_path, f'''
[devices]
can_interface = "virtual"
can_channel = "ems-nobody"
[[devices.modbus]]
name = "pcs"
role = "pcs"
model = "SIM-PCS"
port = {silent_port}
timeout_ms = 300
[[devices.modbus]]
name = "grid_meter"
role = "grid_meter"
model = "DTSU666-H"
port = {closed_port}
unit_id = 101
''')
    run = EmsRun("--config", str(site), "--no-history", "--state", str(tmp_path / "state.json"))
    try:
        line = run.wait_for(lambda s: " alarms " in s and "(4)" in alarms_of(s) and "(5)" in alarms_of(s), 20)
        assert line is not None, run.text() + "".join(run.err)
        t = time.monotonic()
        assert run.wait_for(lambda s: " alarms " in s, 3, since=t) is not None, "it keeps running"
        assert all(" pcs       — kW" in s for s in status_lines(run)), "no PCS power it did not measure"
        regs = native_inputs(dispatch_port(site))
        assert (regs[4], regs[5]) == INVALID_S32 and (regs[0], regs[1]) == INVALID_S32
        assert "no PV meter or inverter" in run.text()
    finally:
        assert run.stop() == 0
        mute.close()


def test_hardware_the_site_file_names_but_the_machine_lacks_is_a_clear_error_naming_the_key(tmp_path):
    site = base_site(tmp_path, '''
[devices]
can_interface = "socketcan"
can_channel = "can9"
[[devices.modbus]]
name = "grid_meter"
role = "grid_meter"
model = "DTSU666-H"
transport = "rtu"
serial_port = "/dev/ttyEMS-missing"
unit_id = 101
''')
    run = EmsRun("--config", str(site), "--no-history", "--state", str(tmp_path / "state.json"))
    assert run.proc.wait(30) == 1
    err = "".join(run.err)
    assert "devices.modbus[0].serial_port = '/dev/ttyEMS-missing': no such serial port" in err
    assert "devices.can_channel = 'can9': no such CAN interface" in err


def test_ems_run_without_a_site_file_runs_the_demo_as_two_processes_and_says_simulated(tmp_path):
    run = EmsRun("--no-history", "--state", str(tmp_path / "st" / "state.json"), cwd=tmp_path)
    try:
        line = run.wait_for(lambda s: s.startswith("SIMULATED") and " soc " in s and "alarms none" in s, 30)
        assert line is not None, run.text() + "".join(run.err)
        pid = int(run.text().split("ems sim-site (pid ")[1].split(")")[0])
        assert (tmp_path / "st" / "demo-site.toml").is_file()
    finally:
        assert run.stop(signal.SIGINT) == 0
    assert "stopped: PCS commanded to 0 W and stop (written)" in run.text()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(")")[1].split()[0] == "Z":
                    break                        # reaped by nobody yet, but gone
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the simulated site outlived the controller")


def test_the_controller_process_never_imports_the_simulator():
    import subprocess
    import sys
    code = ("import sys, ems.cli, ems.site.runtime, ems.site.with_sim\n"
            "bad = sorted(m for m in sys.modules if m.startswith('ems.sim'))\n"
            "print(bad)\nsys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_runtime_package_has_no_import_of_the_simulator_anywhere():
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "ems"
    offenders = []
    for pkg in ("site", "comm", "control", "records", "board", "config", "strategies", "estimation"):
        for f in (root / pkg).glob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{f.name}: {n}" for n in names if n.startswith("ems.sim")]
    assert offenders == []


def test_gpio_contacts_reach_the_controller_in_ems_run(tmp_path):
    """The board's GPIO backend in `ems run` (libgpiod's bindings, the chip's line request in a file): the
    EPO line closing stops the PCS and raises 52; the controller drives its trip output line."""
    import json
    from pathlib import Path

    import tomli_w

    from ems.config.load import read_toml
    sim = sim_site(tmp_path, base_site(tmp_path))
    raw = read_toml(sim.site_file)
    chip = tmp_path / "gpiochip0"
    chip.write_text("")                               # the device node the site names (preflight checks it exists)
    raw["dry_contacts"] = {"backend": "gpio", "gpio_chip": str(chip), "debounce_ms": 50.0,
                           "gpio_lines": [{"name": "epo", "line": 5}, {"name": "trip", "line": 17}]}
    site = tmp_path / "gpio-site.toml"
    site.write_bytes(tomli_w.dumps(raw).encode())
    levels, outputs = tmp_path / "levels.json", tmp_path / "outputs.json"
    levels.write_text(json.dumps({"5": 0}))
    root = Path(__file__).resolve().parents[1]
    run = EmsRun("--config", str(site), "--no-history", "--state", str(tmp_path / "state.json"), cwd=root,
                 env={"EMS_TEST_GPIO_LEVELS": str(levels), "EMS_TEST_GPIO_OUTPUTS": str(outputs)},
                 python=[sys.executable, "-m", "tests.gpio_run"])
    try:
        assert run.wait_for(lambda s: "alarms none" in s and " pcs " in s, 30) is not None, run.text() + "".join(run.err)
        assert "dry contacts: GPIO" in run.text()
        assert json.loads(outputs.read_text()) == {"17": 0}, "the trip output driven inactive at start"
        levels.write_text(json.dumps({"5": 1}))       # the EPO button pressed
        t = time.monotonic()
        line = run.wait_for(lambda s: " alarms " in s and "(52)" in alarms_of(s), 10, since=t)
        assert line is not None, run.text()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and control(sim, kind="truth")["truth"]["pcs_run"]:
            time.sleep(0.1)
        assert control(sim, kind="truth")["truth"]["pcs_run"] is False, "the PCS got the stop"
        levels.write_text(json.dumps({"5": 0}))
        t = time.monotonic()
        assert run.wait_for(lambda s: "alarms none" in s, 10, since=t) is not None
    finally:
        assert run.stop() == 0, "".join(run.err)
        sim.stop()


@pytest.mark.parametrize("body, bms_word", [
    ('[devices]\nbms = "modbus"\n', "bau: bms SIM-BAU"),                         # a BAU on Modbus TCP
    # the stack-only protocol is a low-voltage one (0.01 V up to 327 V): a 48 V stack of 16 cells
    ('[devices]\ncan_profile = "CAN-BATTERY-INVERTER"\n[battery]\ncells_per_cluster = 16\npacks_per_cluster = 1\n'
     '[pcs]\nrated_power_w = 50000.0\n', "CAN-BATTERY-INVERTER"),
], ids=["modbus-bau", "can-stack-only"])
def test_the_bms_on_modbus_or_on_the_stack_only_protocol_drives_the_controller(tmp_path, body, bms_word):
    sim = sim_site(tmp_path, base_site(tmp_path, body))
    run = EmsRun("--config", str(sim.site_file), "--no-history", "--state", str(tmp_path / "state.json"))
    try:
        line = run.wait_for(lambda s: "alarms none" in s and " soc  " in s and " soc   —" not in s, 25)
        assert line is not None, run.text() + "".join(run.err)
        assert bms_word in run.text()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and abs(control(sim, kind="truth")["truth"]["pcs_w"]) <= 1000:
            time.sleep(0.2)
        assert abs(control(sim, kind="truth")["truth"]["pcs_w"]) > 1000, "the battery is dispatched on its data"
    finally:
        assert run.stop() == 0
        sim.stop()


def test_gpio_lines_the_kernel_refuses_are_a_clear_start_up_error(tmp_path):
    fake = tmp_path / "gpiochip0"
    fake.write_text("")                     # exists, but is no GPIO chip: libgpiod's request fails
    site = base_site(tmp_path, f'''
[devices]
can_interface = "virtual"
[dry_contacts]
backend = "gpio"
gpio_chip = "{fake}"
gpio_lines = [{{ name = "epo", line = 5 }}]
''')
    run = EmsRun("--config", str(site), "--no-history", "--state", str(tmp_path / "state.json"))
    assert run.proc.wait(30) == 1
    err = "".join(run.err)
    assert "dry_contacts.gpio_lines: cannot request GPIO lines [5]" in err and "Traceback" not in err


def test_the_periodic_saver_writes_on_its_interval_and_after_an_anchor(tmp_path):
    from datetime import datetime, timezone

    from ems._core import layout as L
    from ems.config.schema import SiteConfig
    from ems.control.clock import VirtualClock
    from ems.control.controller import Controller
    from ems.site.state import PeriodicSaver

    ctrl = Controller(SiteConfig(), VirtualClock(datetime(2026, 6, 1, tzinfo=timezone.utc)))
    saver = PeriodicSaver(tmp_path / "state.json", interval_s=60.0)
    try:
        assert saver.poll(ctrl, 0.0)                 # the first poll saves
        assert not saver.poll(ctrl, 30.0)
        ctrl.fast.buffers.est_state[0, L.SE_ANCHOR_SEQ] += 1
        assert saver.poll(ctrl, 31.0)                # an anchor: saved at once
        assert not saver.poll(ctrl, 60.0) and saver.poll(ctrl, 91.5)
    finally:
        saver.close()
    assert saver.saved >= 1 and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]     # no temp file left


def test_a_bms_outage_over_can_recovers_by_itself(two_processes):
    """Issue 17 item 17 on the two-process path: 8 s without CAN frames, then the BMS is back."""
    sim, run = two_processes
    assert run.wait_for(lambda s: " soc " in s and "alarms none" in s) is not None, "".join(run.err)
    control(sim, kind="comm_loss", device="bms")
    assert run.wait_for(lambda s: "battery_lost" in s, 15, since=time.monotonic()) is not None
    time.sleep(8)
    control(sim, kind="comm_restore", device="bms")
    back = time.monotonic()
    line = run.wait_for(lambda s: " soc " in s and "alarms none" in s and "bms online" in s, 15, since=back)
    assert line is not None, "\n".join(status_lines(run, back)[-3:])
