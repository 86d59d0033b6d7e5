"""Upgrade tasks from the cloud (002_… Upgrade Management): the bundle downloaded from a real HTTP server on
loopback (resumed after a dropped connection), verified and reserved on a board root, as an upload through
the API is; refused with the reason, and nothing reserved, when it is not what it should be."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ems.board import update
from ems.board.maintenance import RemoteMaintenance
from ems.cloud.remote import RemoteOperation
from ems.config import site_from_dict
from tests.test_board_update import board, build  # noqa: F401 - the fixture


class Files(http.server.BaseHTTPRequestHandler):
    """Serves files from `root` with Range requests; the first transfer of each is cut off half-way."""
    root: Path = Path(".")
    cut: set = set()
    ranges: list = []

    def do_GET(self):
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path not in self.cut:            # the first time: half of it, then the connection drops
            self.cut.add(self.path)
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (Files,), {"root": root, "cut": set(), "ranges": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}", handler.ranges
    srv.shutdown()


def remote(paths, role: str = "installer"):
    cfg = site_from_dict({"cloud": {"enabled": True, "host": "127.0.0.1", "tls": False, "allow_plain_loopback": True,
                                    "remote": True, "identities": [{"name": "noc", "role": role}]}})
    op = RemoteOperation(cfg, None, None, None, maintenance=RemoteMaintenance(None, lambda reason: None, paths))
    replies = []
    op.reply = lambda identity, answer: replies.append(answer)
    return op, replies


def ask(op, **req) -> dict:
    return op.handle("noc", json.dumps({"id": "r1", **req}).encode())


def wait_reply(replies, timeout_s: float = 30.0) -> dict:
    """The task's outcome (the answers before it report the download's progress)."""
    def final():
        return [r for r in replies if not (r["ok"] and r["result"]["state"] == "downloading")]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not final():
        time.sleep(0.05)
    assert final(), "no outcome from the upgrade task"
    return final()[-1]


def test_a_bundle_is_downloaded_resumed_verified_and_reserved(board, files):  # noqa: F811
    paths, key, work = board
    root, base, ranges = files
    b = build(work, key, "0.2.0")
    (root / "ems-0.2.0.bundle").write_bytes(b.read_bytes())
    op, replies = remote(paths)
    at = (datetime.now(timezone.utc) + timedelta(hours=3)).replace(microsecond=0)
    r = ask(op, action="upgrade", url=f"{base}/ems-0.2.0.bundle", at=at.isoformat(),
            sha256=hashlib.sha256(b.read_bytes()).hexdigest())
    assert r["ok"] and r["result"]["state"] == "downloading", r
    done = wait_reply(replies)
    assert done["ok"] and done["result"]["state"] == "reserved" and done["result"]["version"] == "0.2.0", done
    tasks = update.scheduled(paths)
    assert [(t["version"], t["creator"]) for t in tasks] == [("0.2.0", "cloud:noc")]
    assert not list(paths.update.glob("cloud-*"))                         # the download is not left behind
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"   # resumed
    # the download's progress, answered as it went: rising, to 100 %, before the outcome
    pcts = [r["result"]["pct"] for r in replies if r["result"]["state"] == "downloading"]
    assert len(pcts) >= 2 and pcts == sorted(pcts) and pcts[-1] == 100.0, pcts
    assert replies[-1] is done


def test_a_task_sent_again_after_a_restart_continues_the_download_the_last_process_left(board, files):  # noqa: F811
    """The EMS died mid-download: the next process, given the same task, asks only for the rest (Range)."""
    from ems.cloud.remote import download_target
    paths, key, work = board
    root, base, ranges = files
    data = build(work, key, "0.2.0").read_bytes()
    (root / "ems-0.2.0.bundle").write_bytes(data)
    url = f"{base}/ems-0.2.0.bundle"
    paths.update.mkdir(parents=True, exist_ok=True)
    part = download_target(paths.update, url).with_name(download_target(paths.update, url).name + ".part")
    part.write_bytes(data[:len(data) // 3])                     # what the killed process had
    (paths.update / "cloud-0123456789abcdef.bundle.part").write_bytes(b"another task's, dead")
    op, replies = remote(paths)
    assert ask(op, action="upgrade", url=url)["ok"]
    done = wait_reply(replies)
    assert done["ok"] and done["result"]["version"] == "0.2.0", done
    assert ranges[0] == f"bytes={len(data) // 3}-", ranges
    assert not list(paths.update.glob("cloud-*")), "neither its .part nor a dead task's is left"


@pytest.mark.parametrize("damage, words", [("sha", "is not the task's"), ("junk", "nothing reserved"),
                                           ("missing", "HTTP 404")])
def test_a_bundle_that_is_not_what_it_should_be_is_refused_and_nothing_is_reserved(board, files, damage, words):  # noqa: F811
    paths, key, work = board
    root, base, _ = files
    b = build(work, key, "0.2.0")
    (root / "b.bundle").write_bytes(b"junk" * 100 if damage == "junk" else b.read_bytes())
    op, replies = remote(paths)
    name = "nothing.bundle" if damage == "missing" else "b.bundle"
    r = ask(op, action="upgrade", url=f"{base}/{name}", sha256="0" * 64 if damage == "sha" else None)
    assert r["ok"], r
    done = wait_reply(replies)
    assert not done["ok"] and words in done["error"], done
    assert update.scheduled(paths) == []


def test_off_the_board_an_upgrade_is_refused_with_the_reason():
    op, _ = remote(None)
    r = ask(op, action="upgrade", url="http://127.0.0.1/x.bundle")
    assert not r["ok"] and "--board-root" in r["error"], r


def test_an_upgrade_needs_its_role_and_an_http_url(board):  # noqa: F811
    paths, _, _ = board
    op, _ = remote(paths, role="end_user")
    r = ask(op, action="upgrade", url="http://127.0.0.1/x.bundle")
    assert not r["ok"] and "may not start upgrades" in r["error"]
    op, replies = remote(paths)
    assert ask(op, action="upgrade", url="file:///etc/passwd")["ok"]       # taken, then refused by the download
    assert "only http and https" in wait_reply(replies)["error"]
    assert not ask(op, action="upgrade", url="http://127.0.0.1/x.bundle", at="tomorrow")["ok"]
