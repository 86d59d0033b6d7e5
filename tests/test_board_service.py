"""The service side of the board: systemd notification and watchdog, the real-time settings, the health
confirmation of an update, factory reset and clock checks."""
import io
import os
import socket
import threading
from datetime import datetime, timezone

import pytest

from ems.board import maintenance, rt, slots
from ems.board.sdnotify import Notifier, watchdog_interval_s
from ems.board.update import HealthConfirm
from ems.board.watchdog import LoopWatchdog


# a site with no Modbus devices and its BMS on an in-process CAN bus nobody sends on
NO_DEVICES = {"devices": {"can_interface": "virtual", "can_channel": "ems-board-test"}}


class NotifySocket:
    """systemd's side of sd_notify: a real AF_UNIX datagram socket, read by a thread."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path, self.messages, self._stop = str(path), [], False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue

    def close(self):
        self._stop = True
        self.t.join()
        self.sock.setblocking(False)
        while True:                              # what arrived after the reader's last look
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.sock.close()


def test_notifications_reach_the_socket_and_are_inert_outside_systemd(tmp_path):
    srv = NotifySocket(tmp_path / "notify")
    n = Notifier(srv.path)
    assert n.notify("READY=1", "STATUS=up")
    Notifier("").notify("READY=1")                        # no $NOTIFY_SOCKET: nothing, no error
    srv.close()
    assert srv.messages == ["READY=1\nSTATUS=up"]
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000"}) == 2.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None   # another process's
    assert watchdog_interval_s({"WATCHDOG_USEC": "x"}) is None and watchdog_interval_s({}) is None


def test_the_watchdog_is_fed_only_while_the_fast_loop_is_healthy():
    t = [0.0]
    wd = LoopWatchdog(Notifier(""), period_s=2.0, max_tick_age_s=1.0, max_overrun_s=0.5, clock=lambda: t[0])
    sent = []
    wd.notifier.notify = lambda *f: sent.append(f) or True
    assert not wd.poll()                                   # no tick yet: not healthy
    wd.tick_done(0.002)
    assert wd.poll() and sent == [("WATCHDOG=1",)]
    t[0] = 0.5
    assert not wd.poll()                                   # not due yet (every period / 2)
    t[0] = 1.2                                             # due, but the loop has not ticked for 1.2 s: a hang
    assert not wd.poll() and wd.healthy() == (False, "last fast tick 1.2 s ago")
    wd.tick_done(0.8)                                      # it ticks again, but one tick took 800 ms
    assert not wd.poll() and "800 ms" in wd.healthy()[1]
    wd.tick_done(0.003)
    assert wd.poll() and wd.pings == 2 and wd.missed == 3       # before the first tick, the hang, the overrun


def test_ems_run_says_ready_feeds_the_watchdog_and_says_stopping(tmp_path):
    from ems.config import site_from_dict
    from ems.site.runtime import run_site
    srv = NotifySocket(tmp_path / "notify")
    wd = LoopWatchdog(Notifier(srv.path), period_s=0.2)
    # a site whose devices never answer: the loop is healthy all the same (comm loss is an alarm, not a hang)
    run_site(site_from_dict(NO_DEVICES), 1.5, out=io.StringIO(), watchdog=wd)
    srv.close()
    assert srv.messages[0].startswith("READY=1") and srv.messages[-1] == "STOPPING=1"
    assert srv.messages.count("WATCHDOG=1") >= 5           # every 0.1 s over 1.5 s, less start-up


def test_deadline_sleeps_end_after_the_deadline_and_realtime_settings_are_reported_and_undone():
    import time
    s = rt.DeadlineSleeper()
    for _ in range(5):
        deadline = time.monotonic() + 0.003
        s.sleep_until(deadline)
        assert time.monotonic() >= deadline
    before = (os.sched_getscheduler(0), os.sched_getaffinity(0))
    rep = rt.apply_realtime(lock=True, priority=10, cpu=0)
    assert len(rep.applied) + len(rep.refused) == 3        # each setting either applied or said why not
    if "SCHED_FIFO priority 10" in rep.applied:
        assert os.sched_getscheduler(0) == os.SCHED_FIFO
    rep.restore()
    assert (os.sched_getscheduler(0), os.sched_getaffinity(0)) == before
    assert rt.apply_realtime(False, 0, None).text() == "real-time: off"


def test_a_trial_version_confirms_itself_after_running_healthy_long_enough(tmp_path):
    from tests.test_board_update import make_wheel
    paths = slots.BoardPaths(tmp_path)
    paths.slots.mkdir(parents=True)
    for s in ("a", "b"):
        slots.install_slot(paths, s, [make_wheel(tmp_path, "0.1.0")], {"version": f"0.{s}"})
    slots.switch_link(paths.current, "slots/a")
    slots.begin(paths, {"version": "0.b"}, 600)
    slots.switch(paths)
    t = [0.0]
    hc = HealthConfirm(paths, confirm_s=60, clock=lambda: t[0])
    for now, ok in [(0, True), (30, True), (40, False), (50, True), (100, True)]:
        t[0] = now
        hc.observe(ok)
    assert slots.read_state(paths)["trial"] is not None     # the 40 s hiccup restarted the count
    t[0] = 111
    hc.observe(True)
    assert hc.result == "confirmed" and slots.read_state(paths)["trial"] is None
    assert HealthConfirm(None, 60).done                      # not on a board: nothing to do


def test_factory_reset_restores_the_site_file_and_keeps_history_unless_asked(tmp_path, capsys):
    from ems.cli import main
    paths = slots.BoardPaths(tmp_path)
    paths.etc.mkdir(parents=True)
    paths.data.mkdir(parents=True)
    (paths.etc / "factory-site.toml").write_text('[site]\nname = "factory"\n')
    paths.config.write_text('[site]\nname = "changed"\n')
    (paths.data / "history.sqlite").write_text("h")
    (paths.data / "state.json").write_text("{}")
    assert main(["factory-reset", "--root", str(tmp_path)]) == 1       # without --yes: says, does nothing
    assert "changed" in paths.config.read_text()
    assert main(["factory-reset", "--root", str(tmp_path), "--yes"]) == 0
    assert "factory" in paths.config.read_text() and (paths.data / "history.sqlite").exists()
    assert "changed" in (paths.etc / "site.toml.before-reset").read_text()
    maintenance.factory_reset(paths, wipe_history=True)
    assert not (paths.data / "history.sqlite").exists() and (paths.data / "state.json").exists()
    (paths.etc / "factory-site.toml").unlink()
    assert main(["factory-reset", "--root", str(tmp_path), "--yes"]) == 1
    assert "no factory site file" in capsys.readouterr().err


def test_a_clock_outside_the_plausible_range_or_without_zone_is_refused(capsys):
    from ems.cli import main
    with pytest.raises(ValueError, match="outside"):
        maintenance.set_clock(datetime(2001, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match="zone"):
        maintenance.set_clock(datetime(2027, 1, 1))
    assert main(["clock", "set", "2026-11-21T10:00:00"]) == 1
    assert "no time zone" in capsys.readouterr().err


def _board_with_factory_file(root):
    paths = slots.BoardPaths(root)
    paths.etc.mkdir(parents=True)
    paths.data.mkdir(parents=True)
    (paths.etc / "factory-site.toml").write_text('[site]\nname = "factory"\n')
    paths.config.write_text('[site]\nname = "changed"\n')
    return paths


def test_maintenance_over_the_api_is_for_installers_and_admins_and_refuses_bad_input(tmp_path):
    from datetime import timedelta
    from ems.control.clock import VirtualClock
    from tests.records.test_api import maintenance_api
    paths = _board_with_factory_file(tmp_path / "root")
    t0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    clock, stops = VirtualClock(t0), []
    m = maintenance.RemoteMaintenance(clock, stops.append, paths)
    server, c = maintenance_api(paths.data / "history.sqlite", paths.config, tmp_path / "auth.sqlite", m,
                                inst="installer", ops="operator")
    admin, ops, inst = c["admin"], c["ops"], c["inst"]
    try:
        clk = ops.call("GET", "/maintenance/clock")[1]
        assert clk["utc"] == t0.isoformat()
        # what sets the clock: NTP as systemd says (None: cannot be asked here), SCADA per the site file, manual
        assert clk["sync"]["ntp_synchronized"] in (True, False, None) and clk["sync"]["manual"] is True
        assert clk["sync"]["scada_sets_clock"] is False
        for path, body in (("/maintenance/restart", None), ("/maintenance/factory-reset", {"confirm": True}),
                           ("/maintenance/clock", {"time": "2026-06-01T15:00:00+00:00"})):
            assert ops.call("POST", path, body)[0] == 403                  # an operator dispatches, not maintains
        assert stops == [] and clock.now() == t0 and "changed" in paths.config.read_text()
        for bad in ("2026-06-01T15:00:00", "2001-01-01T00:00:00+00:00", "yesterday", 7):
            status, body = inst.call("POST", "/maintenance/clock", {"time": bad})
            assert status == 400 and "zone" in body["error"] and clock.now() == t0
        status, body = inst.call("POST", "/maintenance/clock", {"time": "2026-06-01T14:30:00+02:00"})
        assert status == 200 and body["step_s"] == 1800.0 and clock.now() == t0 + timedelta(minutes=30)
        assert inst.call("POST", "/maintenance/factory-reset", {})[0] == 400          # must confirm
        assert inst.call("POST", "/maintenance/factory-reset", {"confirm": True, "wipe_history": True})[0] == 400
        assert "changed" in paths.config.read_text() and stops == []
        status, body = inst.call("POST", "/maintenance/factory-reset", {"confirm": True})
        assert status == 202 and "factory" in paths.config.read_text() and "history kept" in body["done"]
        assert inst.call("POST", "/maintenance/restart")[0] == 202
        assert stops == ["factory reset by api:inst", "remote restart by api:inst"]
        log = admin.call("GET", "/log?kind=operation")[1]
        assert {"clock_set", "factory_reset", "restart"} <= {e["action"] for e in log if e["user"] == "inst"}
    finally:
        server.stop()


def test_a_factory_reset_over_the_api_stops_ems_run_cleanly_for_the_service_manager_to_restart(tmp_path):
    import json
    import time
    import urllib.request
    from ems.config import site_from_dict
    from ems.comm.net import free_port
    from ems.site.runtime import run_site
    from tests.records.test_api import PW, Client
    paths = _board_with_factory_file(tmp_path)
    port = free_port()
    cfg = site_from_dict({"api": {"port": port}, "dispatch": {"server_enabled": False}, **NO_DEVICES})
    answers = {}

    def operator():                            # the installer at the SCADA's maintenance page
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        c = Client(port)
        c.call("POST", "/setup", {"username": "admin", "password": PW})
        c.login("admin")
        answers["reset"] = c.call("POST", "/maintenance/factory-reset", {"confirm": True})
    t = threading.Thread(target=operator, daemon=True)
    t.start()
    out = io.StringIO()
    started = time.monotonic()
    assert run_site(cfg, 60.0, out=out, db_path=paths.data / "history.sqlite", config_path=paths.config,
                    board_root=tmp_path, state_path=paths.state_file) == 0
    t.join(5)
    assert time.monotonic() - started < 30                  # stopped by the request, not by the 60 s
    assert answers["reset"][0] == 202 and "factory" in paths.config.read_text()
    text = out.getvalue()
    assert "factory reset by api:admin: stopping" in text and "stopped:" in text
    assert json.loads(paths.state_file.read_text())["version"] == 2       # the clean stop saved the state
