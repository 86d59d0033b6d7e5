"""What the operator sees: only the controller's own measurements ("—" for what it does not have), each
device's comm state and last-seen age, local / remote mode, SOC with its bound, SIMULATED when it is, and the
start-up lines kept on top of the panel."""
from datetime import datetime, timezone

from ems.config import site_from_dict
from ems.control.clock import VirtualClock
from ems.control.controller import Controller
from ems.site.view import panel, status_line

ROWS = [{"name": "pcs", "status": "offline", "last_seen_s_ago": 7.5, "address": "tcp://192.168.1.20:502#1"},
        {"name": "grid_meter", "status": "online", "last_seen_s_ago": 0.2, "address": "rtu:///dev/ttyS1@9600-8N1#101"}]


def controller():
    ctrl = Controller(site_from_dict({}), VirtualClock(datetime(2026, 6, 1, 12, tzinfo=timezone.utc)))
    ctrl.update_meter("grid_w", 12_300.0)
    ctrl.slow_tick()
    ctrl.explain()
    return ctrl


def test_the_status_line_shows_measurements_only_the_mode_and_each_device():
    ctrl = controller()
    line = status_line(ctrl, ctrl.clock.now(), ROWS, remote=True, simulated=False)
    assert "grid    12.3 kW" in line and "pcs       — kW" in line and "soc   — %" in line
    assert "mode remote" in line and "pcs offline 7.5s" in line and "grid_meter online 0.2s" in line
    assert not line.startswith("SIMULATED")
    assert status_line(ctrl, ctrl.clock.now(), ROWS, None, True).startswith("SIMULATED ")


def test_the_panel_keeps_the_start_up_lines_on_top_and_says_simulated():
    ctrl = controller()
    header = ["dispatch server: modbus tcp 0.0.0.0:502 unit 1", "no PV meter or inverter: PV power is unknown"]
    text = panel(ctrl, ctrl.clock.now(), "Cabinet 1", ROWS, remote=False, simulated=True, header=header)
    lines = text.splitlines()
    assert "SIMULATED" in lines[0] and "Cabinet 1" in lines[0]
    assert lines[2:4] == [f"  {h}" for h in header], "redrawn every second, never wiped"
    assert any("pcs" in ln and "offline" in ln and "last seen 7.5 s ago" in ln for ln in lines)
    assert any(ln.strip().startswith("PCS") and "—" in ln for ln in lines)
    assert any("mode   local" in ln for ln in lines)
