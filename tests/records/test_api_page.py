"""The page's side of the API over real loopback HTTP (no browser): the cookie session and its CSRF token,
the security headers, the static files, the live feed and its stream, the schema and the history series."""
import http.client
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from ems.records.api import MAX_STREAMS, MAX_STREAMS_PER_CLIENT, Api, ApiServer
from ems.records.auth import Users
from ems.records.live import LiveFeed
from ems.records.recorder import Recorder
from tests.records.test_api import PW

STATUS = {"time": "2026-12-01T10:00:00+00:00", "site": "t", "grid_w": 1000.0, "pv_w": 0.0, "load_w": 1000.0,
          "pcs_w": 0.0, "soc_pct": 50.0, "active_alarms": []}


class _Buffers:
    def __init__(self, C=2, N=8, P=2):
        from ems._core import layout as L
        self.cell_v = np.full((C, N), 3.3)
        self.cell_t = np.full((C, N), 25.0)
        self.fresh = np.ones((C, N), np.uint8)
        self.balancing = np.zeros((C, N), np.uint8)
        self.balancing[1, 3] = 1
        self.bypass = np.zeros((C, P), np.uint8)
        self.cluster_in = np.zeros((C, L.CL_IN_COLS))
        self.cluster_flags = np.zeros((C, L.CL_FLAG_COLS), np.uint8)
        self.soc_out = np.zeros((C, L.SOC_COLS))
        self.agg_f = np.zeros((C, L.AGG_F_COLS))
        self.agg_i = np.zeros((C, L.AGG_I_COLS), np.int32)


def request(port, method, path, body=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def page_api(tmp_path):
    db = tmp_path / "history.sqlite"
    Recorder(db, timezone="UTC").stop()
    feed = LiveFeed()
    server = ApiServer(Api(db, None, Users(tmp_path / "auth.sqlite"), None, None, feed), "127.0.0.1", 0)
    assert request(server.port, "POST", "/api/setup", {"username": "admin", "password": PW})[0] == 201
    yield server.port, feed
    server.stop()


def cookie_login(port):
    status, headers, body = request(port, "POST", "/api/login", {"username": "admin", "password": PW, "cookie": True})
    assert status == 200
    data = json.loads(body)
    assert "token" not in data                       # the page's script never holds the token
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    return cookie.split(";")[0], data["csrf"]


def test_a_cookie_session_changes_nothing_without_its_csrf_token(page_api):
    port, _ = page_api
    cookie, csrf = cookie_login(port)
    assert request(port, "GET", "/api/session", headers={"Cookie": cookie})[0] == 200       # reads need none
    status, _, body = request(port, "POST", "/api/password", {"old_password": PW, "new_password": "another one 2"},
                              headers={"Cookie": cookie})
    assert status == 403 and b"CSRF" in body
    status, _, _ = request(port, "POST", "/api/password", {"old_password": PW, "new_password": "another one 2"},
                           headers={"Cookie": cookie, "X-CSRF-Token": "0" * 64})
    assert status == 403
    status, _, _ = request(port, "POST", "/api/password", {"old_password": PW, "new_password": "another one 2"},
                           headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 200


def test_a_bearer_client_needs_no_csrf_token_and_logout_clears_the_cookie(page_api):
    port, _ = page_api
    token = json.loads(request(port, "POST", "/api/login", {"username": "admin", "password": PW})[2])["token"]
    assert request(port, "POST", "/api/users", {"username": "op", "role": "operator", "password": PW},
                   headers={"Authorization": f"Bearer {token}"})[0] == 201
    cookie, csrf = cookie_login(port)
    status, headers, _ = request(port, "POST", "/api/logout", {}, headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 200 and ('ems_session=""' in headers["Set-Cookie"] or "Max-Age=0" in headers["Set-Cookie"])
    assert request(port, "GET", "/api/session", headers={"Cookie": cookie})[0] == 401      # the session is gone


def test_every_answer_carries_the_security_headers_and_static_files_stay_in_their_folder(page_api):
    port, _ = page_api
    for path in ("/", "/static/js/app.js", "/api/health", "/api/session"):
        status, headers, _ = request(port, "GET", path)
        assert "script-src 'self'" in headers["Content-Security-Policy"] and "'unsafe-inline'" not in \
            headers["Content-Security-Policy"], path
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    for bad in ("/static/../records/api.py", "/static/%2e%2e/records/api.py", "/static/nothing.js", "/static/js"):
        assert request(port, "GET", bad)[0] == 404, bad


def test_static_files_come_gzipped_and_revalidate_by_etag(page_api):
    port, _ = page_api
    status, headers, body = request(port, "GET", "/static/vendor/uplot.mjs", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and len(body) < 60_000
    assert headers["Content-Type"].startswith("text/javascript")
    assert request(port, "GET", "/static/vendor/uplot.mjs", headers={"If-None-Match": headers["ETag"]})[0] == 304


def test_the_live_feed_publishes_once_a_second_only_while_a_page_reads_it(page_api):
    port, feed = page_api
    assert not feed.watched()
    status, _, _ = request(port, "GET", "/api/live", headers={"Authorization": "Bearer x"})
    assert status == 401
    token = json.loads(request(port, "POST", "/api/login", {"username": "admin", "password": PW})[2])["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert request(port, "GET", "/api/live", headers=auth)[0] == 503        # nothing published yet: said so
    feed.publish(STATUS, _Buffers())
    status, _, body = request(port, "GET", "/api/live", headers=auth)
    assert status == 200 and json.loads(body)["grid_w"] == 1000.0 and feed.watched()
    cells = json.loads(request(port, "GET", "/api/cells", headers=auth)[2])
    assert cells["cell_mv"][0][0] == 3300 and cells["balancing"] == [[], [3]] and cells["packs_per_cluster"] == 2
    bat = json.loads(request(port, "GET", "/api/battery", headers=auth)[2])
    assert len(bat["clusters"]) == 2 and bat["clusters"][1]["balancing_cells"] == 1
    hist = json.loads(request(port, "GET", "/api/live/history", headers=auth)[2])
    assert hist["t"] and hist["grid_w"] == [1000.0]


def test_the_live_stream_sends_each_publish_once_and_is_bounded(page_api):
    port, feed = page_api
    token = json.loads(request(port, "POST", "/api/login", {"username": "admin", "password": PW})[2])["token"]
    feed.publish(STATUS, _Buffers())
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/api/live/stream", headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    got = []

    def read():
        while len(got) < 2:
            line = r.readline()
            if line.startswith(b"data: "):
                got.append(json.loads(line[6:]))
    t = threading.Thread(target=read, daemon=True)
    t.start()
    time.sleep(0.5)
    feed.publish({**STATUS, "time": "2026-12-01T10:00:01+00:00", "grid_w": 2000.0}, _Buffers())
    t.join(5.0)
    assert [g["grid_w"] for g in got] == [1000.0, 2000.0]
    held = []

    def stream(source: str) -> tuple[int, bytes]:
        h = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
        h.request("GET", "/api/live/stream", headers={"Authorization": f"Bearer {token}"})
        r = h.getresponse()
        held.append(h)
        return r.status, b"" if r.status == 200 else r.read()
    for _ in range(MAX_STREAMS_PER_CLIENT - 1):                 # one is open from 127.0.0.1 already
        assert stream("127.0.0.1")[0] == 200
    status, body = stream("127.0.0.1")
    assert status == 503 and b"from this address" in body       # one laptop cannot take every slot
    n = MAX_STREAMS_PER_CLIENT
    for k in range(MAX_STREAMS - n):
        assert stream(f"127.0.0.{2 + k // n}")[0] == 200
    status, body = stream("127.0.0.9")
    assert status == 503 and b"16 live streams are open" in body
    for h in held + [c]:
        h.close()


def test_the_schema_describes_every_field_and_history_series_are_bounded(page_api):
    port, _ = page_api
    token = json.loads(request(port, "POST", "/api/login", {"username": "admin", "password": PW})[2])["token"]
    auth = {"Authorization": f"Bearer {token}"}
    schema = json.loads(request(port, "GET", "/api/schema", headers=auth)[2])
    su = next(s for s in schema if s["section"] == "self_use")
    f = next(f for f in su["fields"] if f["key"] == "reserve_soc_pct")
    assert (f["type"], f["lo"], f["hi"], f["unit"], su["live"]) == ("float", 0.0, 100.0, "%", True)
    groups = next(f for f in next(s for s in schema if s["section"] == "time_based")["fields"] if f["key"] == "groups")
    assert groups["type"] == "list" and {g["key"] for g in groups["item"]} >= {"days", "start", "end", "mode"}
    assert "simulation" not in {s["section"] for s in schema}
    ok = request(port, "GET", "/api/history/power?since=2026-11-01&until=2026-11-30", headers=auth)
    assert ok[0] == 200 and set(json.loads(ok[2])) == {"t", "grid_w", "pv_w", "load_w", "pcs_w", "soc_pct"}
    for q, says in (("since=2026-01-01&until=2026-12-01", b"at most 62 days"), ("since=2026-12-02&until=2026-12-01", b"after"),
                    ("since=tomorrow", b"not a date")):
        status, _, body = request(port, "GET", f"/api/history/power?{q}", headers=auth)
        assert status == 400 and says in body, q


def test_a_live_stream_that_delivers_is_not_closed_as_idle(tmp_path):
    """The connection gate closes a connection that sends nothing for idle_timeout_s; a page's stream sends
    nothing after its request, so each event it receives counts as activity (web/session.keep_alive)."""
    db = tmp_path / "history.sqlite"
    Recorder(db, timezone="UTC").stop()
    feed = LiveFeed()
    server = ApiServer(Api(db, None, Users(tmp_path / "auth.sqlite"), None, None, feed), "127.0.0.1", 0,
                       (64, 16, 2.0))
    try:
        request(server.port, "POST", "/api/setup", {"username": "admin", "password": PW})
        token = json.loads(request(server.port, "POST", "/api/login", {"username": "admin", "password": PW})[2])["token"]
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        c.request("GET", "/api/live/stream", headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        got, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 3.5:              # longer than the 2 s idle timeout
            feed.publish({**STATUS, "time": f"2026-12-01T10:00:{got:02d}+00:00"}, _Buffers())
            line = r.readline()
            while line and not line.startswith(b"data: "):
                line = r.readline()
            assert line, "the stream was closed"
            got += 1
            time.sleep(0.5)
        assert got >= 6
        c.close()
        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        idle.connect()
        time.sleep(3.5)                                 # an idle keep-alive connection is still closed
        idle.sock.settimeout(2.0)
        assert idle.sock.recv(1) == b""
    finally:
        server.stop()
