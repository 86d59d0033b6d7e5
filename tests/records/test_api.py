"""The HTTP API over real loopback HTTP: first-run setup, logins, every role's forbidden actions, parameter
changes validated and saved atomically, commands reaching a real controller."""
import json
import threading
import urllib.error
import urllib.request

import pytest

from ems.config.load import load_site
from ems.control.clock import VirtualClock
from ems.control.controller import Controller
from ems.records.api import Api, ApiServer
from ems.records.auth import Users
from ems.records.commands import CommandBridge
from ems.records.recorder import Recorder

PW = "correct horse 1"


class Client:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}/api"
        self.token = None

    def call(self, method, path, body=None, raw=False):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
                return r.status, text if raw else json.loads(text)
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                return e.code, json.loads(text)
            except ValueError:                # aiohttp's own pages (413, 414): not JSON
                return e.code, {"error": text}

    def login(self, user, pw=PW):
        status, body = self.call("POST", "/login", {"username": user, "password": pw})
        assert status == 200, body
        self.token = body["token"]
        return self


def maintenance_api(db, config, auth, maintenance, **roles):
    """An API with a maintenance page over a fresh history database (Recorder's schema), its admin made by
    first-run setup and one user per role given (name=role); returns the server and logged-in clients."""
    from ems.records.recorder import Recorder
    Recorder(db, timezone="UTC").stop()
    server = ApiServer(Api(db, config, Users(auth), None, maintenance), "127.0.0.1", 0)
    admin = Client(server.port)
    assert admin.call("POST", "/setup", {"username": "admin", "password": PW})[0] == 201
    clients = {"admin": admin.login("admin")}
    for name, role in roles.items():
        assert admin.call("POST", "/users", {"username": name, "role": role, "password": PW})[0] == 201
        clients[name] = Client(server.port).login(name)
    return server, clients


@pytest.fixture
def site(tmp_path):
    cfg_path = tmp_path / "site.toml"
    cfg_path.write_text('[site]\nname = "api-test"\n\n[self_use]\nreserve_soc_pct = 10.0\n')
    cfg = load_site(cfg_path)
    db = tmp_path / "history.sqlite"
    Recorder(db, timezone="UTC").stop()                       # an (empty) history database
    ctrl = Controller(cfg, VirtualClock(__import__("datetime").datetime(2026, 1, 1,
                                                                         tzinfo=__import__("datetime").timezone.utc)))
    bridge = CommandBridge()
    stop = threading.Event()

    def loop():                       # the control loop's side: carry commands out between "ticks"
        while not stop.is_set():
            bridge.drain(ctrl)
            stop.wait(0.01)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    server = ApiServer(Api(db, cfg_path, Users(tmp_path / "auth.sqlite"), bridge), "127.0.0.1", 0)
    admin = Client(server.port)
    assert admin.call("GET", "/health")[1]["setup_required"] is True
    assert admin.call("POST", "/setup", {"username": "admin", "password": PW})[0] == 201
    admin.login("admin")
    for name, role in (("inst", "installer"), ("ops", "operator"), ("owner", "end_user")):
        assert admin.call("POST", "/users", {"username": name, "role": role, "password": PW})[0] == 201
    yield server, cfg_path, ctrl, db
    stop.set()
    server.stop()


def test_setup_happens_once_and_needs_a_real_password(site):
    server, *_ = site
    c = Client(server.port)
    assert c.call("POST", "/setup", {"username": "mallory", "password": PW})[0] == 409
    assert c.call("GET", "/status")[0] == 401
    assert c.call("POST", "/login", {"username": "admin", "password": "wrong password"})[0] == 401


def test_end_user_reads_but_changes_nothing_except_its_password(site):
    server, cfg_path, ctrl, _ = site
    c = Client(server.port).login("owner")
    before = cfg_path.read_text()
    assert c.call("GET", "/status")[0] == 200 and c.call("GET", "/alarms")[0] == 200
    assert c.call("GET", "/parameters")[1]["parameters"]["self_use"]["reserve_soc_pct"] == 10.0
    assert c.call("PATCH", "/parameters", {"self_use.reserve_soc_pct": 20})[0] == 403
    assert c.call("POST", "/commands/fault_reset")[0] == 403
    assert c.call("GET", "/users")[0] == 403
    assert c.call("POST", "/users", {"username": "x", "role": "end_user", "password": PW})[0] == 403
    assert c.call("PATCH", "/users/owner", {"role": "admin"})[0] == 403
    assert cfg_path.read_text() == before
    assert c.call("POST", "/password", {"old_password": PW, "new_password": "another pass 2"})[0] == 200
    assert c.call("GET", "/status")[0] == 401                     # the password change ended the session
    Client(server.port).login("owner", "another pass 2")


def test_operator_commands_and_strategy_parameters_but_not_installation_or_users(site):
    server, cfg_path, ctrl, db = site
    c = Client(server.port).login("ops")
    status, body = c.call("POST", "/commands/one_click_shutdown", {"value": True})
    assert status == 200 and body["result"] == "done" and ctrl.operator["one_click_shutdown"] is True
    assert c.call("POST", "/commands/one_click_shutdown", {"value": "yes"})[0] == 400
    assert c.call("POST", "/commands/format_disk")[0] == 404
    status, body = c.call("PATCH", "/parameters", {"self_use.reserve_soc_pct": 15})
    assert status == 200 and body["applied_live"] == ["self_use.reserve_soc_pct"] and not body["restart_required"]
    assert ctrl._by_name["self_use"].cfg.reserve_soc_pct == 15.0, "the running controller took it"
    assert c.call("PATCH", "/parameters", {"battery.clusters": 2})[0] == 403
    assert c.call("PATCH", "/parameters", {"dispatch": {"allowed_clients": ["0.0.0.0"]}})[0] == 403
    assert c.call("GET", "/users")[0] == 403
    assert "reserve_soc_pct = 15" in cfg_path.read_text()
    log = Client(server.port).login("admin").call("GET", "/log?kind=operation")[1]
    actions = {(e["action"], e["user"]) for e in log}
    assert ("parameter_write", "ops") in actions and ("login", "ops") in actions
    assert any("10.0 → 15" in e["detail"] for e in log)


def test_an_invalid_parameter_change_is_refused_with_the_reason_and_changes_nothing(site):
    server, cfg_path, ctrl, _ = site
    c = Client(server.port).login("inst")
    before = cfg_path.read_text()
    status, body = c.call("PATCH", "/parameters", {"self_use.reserve_soc_pct": 150, "battery.clusters": 2})
    assert status == 400 and "nothing was changed" in body["error"]
    assert any("reserve_soc_pct" in p and "0 … 100" in p for p in body["problems"])
    assert c.call("PATCH", "/parameters", {"self_use.no_such_key": 1})[0] == 400
    assert c.call("PATCH", "/parameters", b"{not json")[0] == 400
    assert cfg_path.read_text() == before
    status, body = c.call("PATCH", "/parameters", {"battery": {"clusters": 2}})
    assert status == 200 and body["restart_required"] is True and body["after_restart"] == ["battery.clusters"]
    assert ctrl.cfg.battery.clusters == 1, "a battery change waits for the restart"
    assert load_site(cfg_path).battery.clusters == 2 and load_site(cfg_path).site.name == "api-test"


def test_installer_manages_end_users_only(site):
    server, *_ = site
    c = Client(server.port).login("inst")
    assert c.call("POST", "/users", {"username": "owner2", "role": "end_user", "password": PW})[0] == 201
    assert c.call("POST", "/users", {"username": "inst2", "role": "installer", "password": PW})[0] == 403
    assert c.call("PATCH", "/users/owner2", {"password": "new password 3"})[0] == 200
    assert c.call("PATCH", "/users/owner2", {"role": "installer"})[0] == 403
    assert c.call("PATCH", "/users/ops", {"password": "new password 3"})[0] == 403
    assert c.call("PATCH", "/users/admin", {"password": "new password 3"})[0] == 403
    assert c.call("DELETE", "/users/ops")[0] == 403
    assert c.call("DELETE", "/users/owner2")[0] == 200
    assert c.call("POST", "/users", {"username": "Bad Name", "role": "end_user", "password": PW})[0] == 400
    assert c.call("POST", "/users", {"username": "short", "role": "end_user", "password": "1234"})[0] == 400


def test_the_last_admin_stays_and_logins_lock_after_repeated_failures(site):
    server, *_ = site
    a = Client(server.port).login("admin")
    assert a.call("DELETE", "/users/admin")[0] == 409
    assert a.call("PATCH", "/users/admin", {"role": "operator"})[0] == 409
    c = Client(server.port)
    codes = [c.call("POST", "/login", {"username": "ops", "password": "bad guess"})[0] for _ in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    assert c.call("POST", "/login", {"username": "ops", "password": PW})[0] == 429   # locked even when right


def test_csv_export_over_http(site):
    server, *_ = site
    c = Client(server.port).login("owner")
    status, text = c.call("GET", "/alarms?format=csv", raw=True)
    assert status == 200 and text.startswith("id,raised_at,cleared_at,code")
    assert c.call("GET", "/reports/daily?date=2026-13-01")[0] == 400
    assert c.call("GET", "/reports/daily?date=2026-01-01&interval=7m")[0] == 400
    assert c.call("GET", "/reports/daily?date=2026-01-01&interval=10m")[0] == 200


def test_a_change_the_loop_has_not_confirmed_yet_is_reported_pending_not_after_restart(tmp_path):
    """The control loop drains commands once a slow tick; one that is late (a loaded board) still carries
    the change out, so the answer must not claim it waits for a restart."""
    cfg_path = tmp_path / "site.toml"
    cfg_path.write_text('[site]\nname = "late"\n')
    db = tmp_path / "history.sqlite"
    Recorder(db, timezone="UTC").stop()
    bridge = CommandBridge()                       # nobody drains it: the loop is late
    server = ApiServer(Api(db, cfg_path, Users(tmp_path / "auth.sqlite"), bridge), "127.0.0.1", 0)
    try:
        admin = Client(server.port)
        assert admin.call("POST", "/setup", {"username": "admin", "password": PW})[0] == 201
        admin.login("admin")
        status, body = admin.call("PATCH", "/parameters", {"self_use.reserve_soc_pct": 20, "battery.clusters": 2})
        assert status == 200 and body["applied_live"] == [] and body["pending_live"] == ["self_use.reserve_soc_pct"]
        assert body["after_restart"] == ["battery.clusters"] and "not confirmed" in body["not_live_because"]
    finally:
        server.stop()
