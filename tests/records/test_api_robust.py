"""The HTTP API under hostile input — issue 17, items 6–10: bounded connections and logins, 400 with the
reason for every malformed request (never 500), every parameter through the schema, table files bounded."""
import os
import socket
import sqlite3
import time
import urllib.parse

import pytest

from ems.config.load import ConfigError, load_site
from ems.records.api import Api, ApiServer
from ems.records.auth import MAX_TRACKED_FAILURES, Users
from ems.records.recorder import Recorder

from tests.records.test_api import PW, Client, site  # noqa: F401 - the fixture


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_failed_logins_are_bounded_in_memory_and_in_the_log(site):   # noqa: F811
    server, _, _, db = site
    c = Client(server.port)
    before = rss_kb()
    for i in range(300):                                   # 60 KB names: refused at once, nothing kept
        assert c.call("POST", "/login", {"username": f"{i}" + "x" * 60_000, "password": "wrong-pw-1"})[0] == 401
    assert len(server.api.users._failures) == 0
    for i in range(40):                                    # valid-looking unknown names: kept, bounded
        assert c.call("POST", "/login", {"username": f"u{i}", "password": "wrong-pw-1"})[0] == 401
    assert len(server.api.users._failures) == 40 <= MAX_TRACKED_FAILURES
    for _ in range(8):                                     # one name: locked after 5, one log row per minute
        c.call("POST", "/login", {"username": "ops", "password": "wrong-pw-1"})
    assert c.call("POST", "/login", {"username": "ops", "password": PW})[0] == 429
    con = sqlite3.connect(db)
    rows = con.execute("SELECT user FROM log WHERE action='login_failed'").fetchall()
    con.close()
    assert sum(1 for (u,) in rows if u == "ops") == 1
    assert len(rows) <= 1 + 40 + 300                       # never more than one per name per interval
    assert rss_kb() - before < 30_000


def test_the_lockout_table_never_outgrows_its_bound(tmp_path):
    users = Users(tmp_path / "auth.sqlite")
    users.setup("admin", PW)
    import ems.records.auth as A
    for i in range(MAX_TRACKED_FAILURES + 50):
        users._count_failure(f"n{i}", 0, 0.0, time.time())
    assert len(users._failures) == MAX_TRACKED_FAILURES
    assert A.LOCK_AFTER == 5


NESTED = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = b'{"self_use": {"reserve_soc_pct": ' + b"9" * 5000 + b"}}"


@pytest.mark.parametrize("method, path, body", [
    ("PATCH", "/parameters", NESTED),
    ("PATCH", "/parameters", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("PATCH", "/parameters", HUGE_INT),
    ("POST", "/commands/forced_charge", NESTED),
    ("POST", "/users", HUGE_INT),
    ("GET", "/reports/daily?date=0001-01-01", None),
    ("GET", "/reports/daily?date=9999-12-31", None),
    ("GET", "/reports/monthly?date=9999-12", None),
    ("GET", "/reports/annual?date=9999", None),
    ("GET", "/reports/annual?date=0", None),
    ("GET", "/stats/year?date=9999", None),
    ("GET", "/stats/month?date=0001-01", None),
    ("GET", "/stats/day?date=9999-12-31", None),
    ("GET", "/alarms?device=" + "d" * 100_000, None),
    ("GET", "/alarms?code=" + "9" * 5000, None),
    ("GET", "/alarms?since=9999-99-99", None),
    ("GET", "/log?since=0001-01-01T00:00:00&until=9999-12-31T23:59:59", None),
    ("GET", "/alarms?until=2026-01-01T00:00:00+99:00", None),
    ("GET", "/log?user=" + "u" * 100_000, None),
    ("GET", "/reports/daily?date=2026-01-01&interval=" + "9" * 5000, None),
])
def test_malformed_requests_get_400_with_the_reason(site, method, path, body):   # noqa: F811
    server, *_ = site
    c = Client(server.port).login("admin")
    status, answer = c.call(method, path, body)
    assert status in (400, 413, 414, 431), (status, answer)
    if status == 400:
        assert answer["error"] and "internal" not in answer["error"]


def test_every_parameter_goes_through_the_schema(site):   # noqa: F811
    server, cfg_path, *_ = site
    c = Client(server.port).login("admin")
    before = cfg_path.read_text()
    for change in ({"simulation.start": "not a time"}, {"simulation": {"start": "x"}}, {"nosuch.key": 1},
                   {"self_use.nosuch": 1}, {"self_use": "flat"}, {"battery.ocv_table": "/dev/zero"}):
        status, answer = c.call("PATCH", "/parameters", change)
        assert status == 400, (change, answer)
        assert cfg_path.read_text() == before


def test_a_table_file_must_be_a_regular_file_under_the_size_limit(tmp_path):
    base = tmp_path / "site.toml"
    for path, why in (("/dev/zero", "regular file"), (str(tmp_path), "regular file"),
                      (str(tmp_path / "big.csv"), "larger than")):
        if path.endswith("big.csv"):
            with open(path, "wb") as f:
                f.truncate(64 * 1024 * 1024)
        base.write_text(f'[battery]\nchemistry = "custom"\nocv_table = "{path}"\n')
        with pytest.raises(ConfigError, match=why):
            load_site(base)


def test_the_api_caps_connections_and_answers_the_rest(tmp_path):
    db = tmp_path / "history.sqlite"
    Recorder(db, timezone="UTC").stop()
    server = ApiServer(Api(db, None, Users(tmp_path / "auth.sqlite"), None), "127.0.0.1", 0, (10, 3, 600.0))
    try:
        flood = []
        for _ in range(100):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", server.port))
            flood.append(s)
        time.sleep(0.3)
        assert server.gate.active == 3
        assert Client(server.port).call("GET", "/health")[0] == 200      # another address is served
        assert len(os.listdir("/proc/self/fd")) < 400
        for s in flood:
            s.close()
    finally:
        server.stop()


def test_urlencoded_garbage_in_a_query_is_a_400(site):   # noqa: F811
    server, *_ = site
    c = Client(server.port).login("admin")
    status, _ = c.call("GET", "/alarms?level=" + urllib.parse.quote("\x00" * 10))
    assert status in (200, 400)
