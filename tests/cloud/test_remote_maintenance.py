"""The maintenance page's actions over MQTT as the API has them (000_… 3.3.4.2: the clock, factory settings),
and the remote dispatch's reactive power: requests handled by RemoteOperation with a real board root and a
real controller behind the command bridge."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import pytest

from ems.board import maintenance
from ems.board.slots import BoardPaths
from ems.config import site_from_dict
from ems.control.clock import VirtualClock
from ems.control.controller import Controller
from ems.cloud.remote import RemoteOperation
from ems.records.commands import CommandBridge

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


def site(**extra):
    return site_from_dict({"cloud": {"enabled": True, "host": "127.0.0.1", "tls": False, "allow_plain_loopback": True,
                                     "remote": True, "identities": [{"name": "inst", "role": "installer"},
                                                                    {"name": "ops", "role": "operator"}]}, **extra})


@pytest.fixture
def board(tmp_path):
    paths = BoardPaths(tmp_path / "root")
    paths.etc.mkdir(parents=True)
    paths.data.mkdir(parents=True)
    (paths.etc / "factory-site.toml").write_text('[site]\nname = "factory"\n')
    paths.config.write_text('[site]\nname = "changed"\n')
    clock, stops = VirtualClock(T0), []
    op = RemoteOperation(site(), None, None, None, maintenance=maintenance.RemoteMaintenance(clock, stops.append, paths))
    return op, clock, stops, paths


def ask(op, who: str, **req) -> dict:
    return op.handle(who, json.dumps({"id": "r1", **req}).encode())


def test_the_clock_is_read_by_any_role_and_set_by_an_installer_with_a_zone(board):
    op, clock, _, _ = board
    r = ask(op, "ops", action="clock_get")
    assert r["ok"] and r["result"]["utc"] == T0.isoformat() and r["result"]["sync"]["scada_sets_clock"] is False
    r = ask(op, "ops", action="clock_set", time="2026-06-01T12:10:00+00:00")
    assert not r["ok"] and "may not change the clock" in r["error"]
    for bad, words in (("2026-06-01T12:10:00", "time zone"), ("2001-01-01T00:00:00+00:00", "outside 2024"),
                       ("noon", "ISO 8601")):
        r = ask(op, "inst", action="clock_set", time=bad)
        assert not r["ok"] and words in r["error"], (bad, r)
    assert clock.now() == T0, "a refused time changes nothing"
    r = ask(op, "inst", action="clock_set", time="2026-06-01T12:10:00+00:00")
    assert r["ok"] and r["result"]["step_s"] == 600.0, r
    assert clock.now() == datetime(2026, 6, 1, 12, 10, tzinfo=timezone.utc)


def test_factory_settings_need_confirmation_and_the_maintenance_role_and_keep_the_history(board):
    op, _, stops, paths = board
    (paths.data / "history.sqlite").write_bytes(b"history")
    assert "may not restore factory settings" in ask(op, "ops", action="factory_reset", confirm=True)["error"]
    assert 'send {"confirm": true}' in ask(op, "inst", action="factory_reset")["error"]
    assert "only on the board" in ask(op, "inst", action="factory_reset", confirm=True, wipe_history=True)["error"]
    assert 'name = "changed"' in paths.config.read_text() and stops == []
    r = ask(op, "inst", action="factory_reset", confirm=True)
    assert r["ok"] and r["result"]["restarting"] and any("restored" in d for d in r["result"]["done"]), r
    assert 'name = "factory"' in paths.config.read_text()
    assert stops == ["factory reset by cloud:inst"], "then the clean stop that applies it"
    assert (paths.data / "history.sqlite").read_bytes() == b"history"


def test_off_the_board_factory_settings_are_refused_with_the_reason():
    op = RemoteOperation(site(), None, None, None,
                         maintenance=maintenance.RemoteMaintenance(VirtualClock(T0), lambda reason: None, None))
    r = ask(op, "inst", action="factory_reset", confirm=True)
    assert not r["ok"] and "--board-root" in r["error"], r


def test_the_remote_dispatch_sets_reactive_power_as_a_lease_of_its_own():
    cfg = site(pcs={"rated_power_w": 100_000.0, "rated_apparent_va": 110_000.0})
    clock = VirtualClock(T0)
    ctrl, bridge = Controller(cfg, clock), CommandBridge()
    op = RemoteOperation(cfg, None, bridge, None)
    stop = threading.Event()

    def loop():                                  # the control loop's side of the bridge
        while not stop.is_set():
            bridge.drain(ctrl)
            stop.wait(0.01)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        r = ask(op, "ops", action="dispatch", reactive_var=20_000, lease_s=30)
        assert r["ok"] and r["result"] == {"reactive_var": "done"}, r
        assert ctrl._reactive[0] == 20_000.0 and ctrl._dispatch is None, "active power left as it was"
        r = ask(op, "ops", action="dispatch", value_w=10_000, reactive_var=200_000)
        assert not r["ok"] and "reactive_var: a number within ±110000 var" in r["error"], r
        assert ctrl._dispatch is None and ctrl._reactive[0] == 20_000.0, "nothing applied"
        assert "value_w and/or reactive_var" in ask(op, "ops", action="dispatch", lease_s=30)["error"]
        r = ask(op, "ops", action="dispatch", value_w=10_000, reactive_var=None)
        assert r["ok"] and ctrl._dispatch[0] == 10_000.0 and ctrl._reactive is None, r
    finally:
        stop.set()
        t.join()
