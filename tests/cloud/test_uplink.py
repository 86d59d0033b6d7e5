"""The cloud uplink against a real Mosquitto (TLS, passwords, ACLs) and a real history database: what it
sends, in what order, and that nothing is lost while the broker is away or when the EMS dies."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ems.cloud.uplink import Uplink
from ems.config import site_from_dict
from ems.config.load import ConfigError
from ems.records import db as DB
from tests.cloud.broker import USERS, Subscriber

T0 = 1_796_000_000.0          # the history's first interval end (UNIX s)


def cloud_cfg(broker, tmp: Path, password: str = USERS["ems"], **over):
    pw = tmp / "ems.password"
    pw.write_text(password + "\n")
    return site_from_dict({"cloud": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "site_id": "site-1",
                                     "ca_file": str(broker.ca), "username": "ems", "password_file": str(pw),
                                     "upload_cycle_s": 1.0, "batch": 50, "backfill_days": 36500, **over}})


def history(path: Path, intervals: int, start: float = T0, step_s: float = 60.0) -> None:
    """Samples as the recorder writes them: two devices per storage interval."""
    con = DB.connect(path)
    with con:
        con.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                        [(dev, start + k * step_s, 1000.0 * k, 10.0 * k, 0.0, 50.0 if dev == 0x02000000 else None)
                         for k in range(intervals) for dev in (0x02000000, 0x05000000)])
    con.close()


def alarm(path: Path, code: int, t: float, cleared: float | None = None) -> None:
    con = DB.connect(path)
    with con:
        con.execute("INSERT INTO alarms (code, device_id, raised_at, cleared_at, raise_detail) VALUES (?, ?, ?, ?, ?)",
                    (code, 0x05000000, t, cleared, "no data for 5 s"))
    con.close()


def seqs(sub, stream: str) -> list:
    return [m["seq"] for m in sub.of(f"/v1/{stream}")]


def test_samples_events_alarms_and_state_reach_the_broker_in_order(broker, tmp_path):
    db = tmp_path / "history.sqlite"
    history(db, 5)
    alarm(db, 5, T0 + 30)                                  # meter_lost, active
    alarm(db, 7, T0 + 10, cleared=T0 + 20)                 # battery_lost, raised and cleared
    con = DB.connect(db)
    with con:
        con.execute("INSERT INTO log (t, kind, action, user, detail) VALUES (?, 'operation', 'fault_reset', "
                    "'admin', 'value=True')", (T0 + 40,))
        con.execute("INSERT OR REPLACE INTO live VALUES ('status', ?, ?)",
                    (T0, json.dumps({"soc_pct": 55.5, "soc_bound_pct": 3.2, "strategy": "self_use",
                                     "reason": "self-use: balanced"})))
    con.close()
    sub = Subscriber(broker)
    up = Uplink(cloud_cfg(broker, tmp_path), db, tmp_path / "cursor.json")
    up.start()
    try:
        assert sub.wait(lambda: len(sub.of("/v1/samples")) == 5), sub.messages
        assert seqs(sub, "samples") == [T0 + 60 * k for k in range(5)]
        first = sub.of("/v1/samples")[0]
        assert first["v"] == 1 and first["site"] == "site-1" and {d["device_id"] for d in first["devices"]} == \
            {"0x02000000", "0x05000000"}
        assert sub.wait(lambda: sub.of("/v1/alarms/active"))[-1]["alarms"][0]["name"] == "meter_lost"
        hist = sub.wait(lambda: len(sub.of("/v1/alarms/history")) == 3 and sub.of("/v1/alarms/history"))
        assert [(m["code"], m["state"]) for m in hist] == [(7, "raised"), (7, "cleared"), (5, "raised")]
        assert sub.wait(lambda: sub.of("/v1/events"))[0]["action"] == "fault_reset"
        status = sub.wait(lambda: sub.of("/v1/status"))[-1]
        assert status["soc_pct"] == 55.5 and status["soc_bound_pct"] == 3.2 and status["strategy"] == "self_use"
        assert sub.of("/v1/online")[-1]["state"] == "online"
        # Home Assistant discovery: a retained config per sensor, pointing into the status topic
        soc = sub.wait(lambda: sub.of("homeassistant/sensor/ems_site-1/soc_pct/config"))[-1]
        assert soc["state_topic"] == "ems/site-1/v1/status" and soc["unit_of_measurement"] == "%"
        assert soc["device_class"] == "battery" and soc["value_template"] == "{{ value_json.soc_pct }}"
        # an alarm raised now is out within a second (the retained list and the history)
        t = time.time()
        alarm(db, 4, t)
        got = sub.wait(lambda: [m for m in sub.of("/v1/alarms/history") if m["code"] == 4], 5)
        arrived = next(at for at, topic, m, _ in sub.messages if topic.endswith("history") and m["code"] == 4)
        assert got and arrived - t < 1.0, arrived - t
        assert sub.wait(lambda: up.status()["backlog"] == {"samples": 0, "events": 0, "alarms/history": 0}, 3), \
            up.status()
    finally:
        up.stop()
        sub.close()
    # a clean stop says so, retained: a cloud sees an EMS that went away
    late = Subscriber(broker)
    assert late.wait(lambda: late.of("/v1/online"))[-1]["state"] == "offline"
    late.close()


def test_a_stream_left_out_of_send_is_not_sent_and_its_cursor_waits(broker, tmp_path):
    """[cloud] send = ["alarms/history"]: the alarms go out, the samples and events do not (their cursors
    stay where they were), the retained state still does; a stream not known is refused by the check."""
    from ems.config.load import ConfigError
    db = tmp_path / "history.sqlite"
    history(db, 5)
    alarm(db, 7, T0 + 10, cleared=T0 + 20)
    sub = Subscriber(broker)
    up = Uplink(cloud_cfg(broker, tmp_path, send=["alarms/history"]), db, tmp_path / "cursor.json")
    up.start()
    try:
        assert sub.wait(lambda: len(sub.of("/v1/alarms/history")) == 2), sub.messages
        assert sub.wait(lambda: sub.of("/v1/status") and sub.of("/v1/devices"))
        time.sleep(1.5)                                   # a few more cycles
        assert sub.of("/v1/samples") == [] and sub.of("/v1/events") == []
        assert set(up.status()["backlog"]) == {"alarms/history"}
        assert up.cursors.get("samples") is None, "the samples' cursor waits where it was"
    finally:
        up.stop()
        sub.close()
    with pytest.raises(ConfigError) as e:
        cloud_cfg(broker, tmp_path, send=["samples", "weather", "samples"])
    assert "cloud.send[1] = 'weather': one of samples, events, alarms/history" in str(e.value)
    assert "cloud.send[2] = 'samples': given twice" in str(e.value)


def test_an_hour_without_the_broker_loses_nothing_and_it_arrives_once_in_order(broker, tmp_path):
    db = tmp_path / "history.sqlite"
    history(db, 1)
    sub = Subscriber(broker, client_id="cloud-consumer")         # a persistent session: it waits for us
    up = Uplink(cloud_cfg(broker, tmp_path), db, tmp_path / "cursor.json")
    up.start()
    try:
        assert sub.wait(lambda: len(sub.of("/v1/samples")) == 1)
        broker.stop()
        history(db, 61)                                           # an hour of 1-minute samples while it is away
        alarm(db, 5, T0 + 1800, cleared=T0 + 2400)
        assert sub.wait(lambda: up.status()["backlog"]["samples"] == 60 and up.status()["state"] != "connected", 10)
        broker.start()
        assert sub.wait(lambda: len(sub.of("/v1/samples")) >= 61, 40), (len(sub.of("/v1/samples")), up.status())
        time.sleep(0.5)
        assert seqs(sub, "samples") == [T0 + 60 * k for k in range(61)]      # every one, once, in order
        assert [m["state"] for m in sub.of("/v1/alarms/history")] == ["raised", "cleared"]
        assert up.status()["backlog"]["samples"] == 0
    finally:
        up.stop()
        sub.close()


CHILD = """
import sys, time
from pathlib import Path
from ems.config import site_from_dict
from ems.cloud.uplink import Uplink
import json
cfg = site_from_dict(json.loads(sys.argv[1]))
up = Uplink(cfg, Path(sys.argv[2]), Path(sys.argv[3]))
up.start()
print("started", flush=True)
time.sleep(3600)
"""


def test_the_ems_killed_mid_backlog_resumes_from_its_cursor_and_loses_nothing(broker, tmp_path):
    db = tmp_path / "history.sqlite"
    n = 3000
    history(db, n)
    cfg = cloud_cfg(broker, tmp_path)
    raw = {"cloud": {k: getattr(cfg.cloud, k) for k in ("enabled", "host", "port", "site_id", "ca_file", "username",
                                                          "password_file", "batch", "backfill_days")}}
    sub = Subscriber(broker, client_id="cloud-consumer-2")
    args = [sys.executable, "-c", CHILD, json.dumps(raw), str(db), str(tmp_path / "cursor.json")]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().startswith("started")
    assert sub.wait(lambda: len(sub.of("/v1/samples")) > 300, 30)
    child.send_signal(signal.SIGKILL)                              # kill -9 in the middle of the backlog
    child.wait(10)
    got_before = len(sub.of("/v1/samples"))
    assert got_before < n
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().startswith("started")
        assert sub.wait(lambda: len(set(seqs(sub, "samples"))) == n, 60), len(set(seqs(sub, "samples")))
        got = seqs(sub, "samples")
        first_seen = list(dict.fromkeys(got))
        assert first_seen == [T0 + 60 * k for k in range(n)]              # nothing lost, nothing out of order
        assert len(got) - n <= cfg.cloud.batch                            # at most the batch in flight is repeated
    finally:
        child.kill()
        child.wait(10)
        sub.close()


def test_a_wrong_password_is_refused_by_the_broker_and_the_ems_says_so(broker, tmp_path, caplog):
    db = tmp_path / "history.sqlite"
    history(db, 1)
    caplog.set_level(logging.WARNING, "ems.cloud")
    up = Uplink(cloud_cfg(broker, tmp_path, password="wrong"), db, tmp_path / "cursor.json")
    up.start()
    try:
        deadline = time.monotonic() + 10
        while up.status()["state"] != "refused" and time.monotonic() < deadline:
            time.sleep(0.05)
        st = up.status()
        assert st["state"] == "refused" and "authorized" in st["last_error"].lower(), st
        assert any("refused the connection" in r.getMessage() for r in caplog.records)
        assert st["backlog"]["samples"] == 1 and st["sent"]["samples"] == 0
    finally:
        up.stop()


@pytest.mark.parametrize("cloud, key, words", [
    ({"host": "10.0.0.5", "tls": False}, "cloud.tls", "TLS is required"),
    ({"host": "10.0.0.5", "tls": False, "allow_plain_loopback": True}, "cloud.allow_plain_loopback", "not on a loopback"),
    ({"username": ""}, "cloud.username", "must authenticate"),
    ({"password_file": ""}, "cloud.password_file", "needs its password file"),
    ({"site_id": "a/b"}, "cloud.site_id", "topic level"),
    ({"cert_file": "c.pem"}, "cloud.key_file", "needs its key"),
])
def test_an_uplink_without_tls_or_authentication_is_refused_by_the_check(cloud, key, words):
    base = {"enabled": True, "host": "cloud.example", "username": "ems", "password_file": "/etc/ems/cloud.pw"}
    with pytest.raises(ConfigError) as exc:
        site_from_dict({"cloud": {**base, **cloud}})
    got = {p.key: p.message for p in exc.value.problems}
    assert key in got and words in got[key], got


def test_a_loopback_broker_may_go_without_tls_only_when_the_site_says_so():
    site_from_dict({"cloud": {"enabled": True, "host": "127.0.0.1", "tls": False, "allow_plain_loopback": True}})


def _wait_state(up, state: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while up.status()["state"] != state and time.monotonic() < deadline:
        time.sleep(0.05)
    return up.status()


def test_a_broker_whose_certificate_the_site_does_not_trust_is_refused_and_said(broker, tmp_path, caplog):
    """The EMS checks the broker (a man in the middle with another CA's certificate gets nothing)."""
    from tests.cloud.broker import make_ca
    other = tmp_path / "other-ca"
    other.mkdir()
    other_ca, _, _ = make_ca(other)
    db = tmp_path / "history.sqlite"
    history(db, 1)
    caplog.set_level(logging.WARNING, "ems.cloud")
    up = Uplink(cloud_cfg(broker, tmp_path, ca_file=str(other_ca)), db, tmp_path / "cursor.json")
    up.start()
    try:
        st = _wait_state(up, "refused")
        assert st["state"] == "refused" and "certificate is not trusted" in st["last_error"], st
        assert any("certificate is not trusted" in r.getMessage() for r in caplog.records)
        assert st["sent"]["samples"] == 0 and st["backlog"]["samples"] == 1
    finally:
        up.stop()


def test_a_client_certificate_is_accepted_when_the_brokers_ca_signed_it_and_refused_otherwise(broker, tmp_path):
    """The broker's certificate listener (require_certificate, the certificate's CN as the user): the EMS's
    certificate from the fleet's CA gets in; one from another CA is refused in the TLS handshake, and said."""
    from tests.cloud.broker import client_cert, make_ca
    db = tmp_path / "history.sqlite"
    history(db, 2)
    good = client_cert(tmp_path / "good", "ems", broker.folder)
    other = tmp_path / "rogue-ca"
    other.mkdir()
    make_ca(other)
    rogue = client_cert(tmp_path / "rogue", "ems", other)
    for (cert, key), want in ((rogue, "refused"), (good, "connected")):
        cfg = cloud_cfg(broker, tmp_path, port=broker.cert_port, username="", password_file="", cert_file=str(cert),
                        key_file=str(key))
        up = Uplink(cfg, db, tmp_path / f"cursor-{want}.json")
        sub = Subscriber(broker)
        up.start()
        try:
            st = _wait_state(up, want)
            assert st["state"] == want, st
            if want == "refused":
                assert "TLS with the broker failed" in st["last_error"], st
            else:
                assert sub.wait(lambda: len(sub.of("/v1/samples")) == 2), "it reports as site-1 (CN ems)"
        finally:
            up.stop()
            sub.close()
