"""The reference fleet stack's files (examples/fleet/) as an installer would use them: the fleet broker from
fleet-broker.conf with fleet.acl, a board's Mosquitto from site-bridge.conf bridging to it, and the EMS's
uplink on the board's loopback broker — samples out to the fleet, a request in and its answer back, one
site unable to write another's topics. Only paths, ports, the site ID and passwords are replaced. Telegraf
and Grafana are not packaged by Debian: their files are checked against the topic convention only."""
from __future__ import annotations

import json
import re
import subprocess
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest

from ems.cloud.topics import STREAMS, topic
from ems.cloud.uplink import Uplink
from ems.comm.net import free_port
from ems.config import site_from_dict
from tests.cloud.broker import PASSWD, USERS, Operator, Subscriber, make_ca, start_mosquitto
from tests.cloud.test_uplink import T0, history

FLEET = Path(__file__).resolve().parents[2] / "examples" / "fleet"
SITE_PW = "site-secret-1"


def _sub(text: str, pairs: dict[str, str]) -> str:
    for pattern, value in pairs.items():
        text, n = re.subn(pattern, value, text, flags=re.M)
        assert n, f"{pattern!r} is not in the reference file any more"
    return text


@pytest.fixture
def stack(tmp_path):
    """The fleet broker and the board's bridge, both from the reference files."""
    ca, cert, key = make_ca(tmp_path)
    passwd = tmp_path / "fleet.passwd"
    passwd.write_text("")
    for user, pw in {**USERS, "site-1": SITE_PW, "site-2": SITE_PW}.items():
        subprocess.run([PASSWD, "-b", str(passwd), user, pw], check=True, capture_output=True)
    (tmp_path / "fleet.acl").write_text((FLEET / "fleet.acl").read_text())
    fleet_port, local_port = free_port(), free_port()
    (tmp_path / "fleet-data").mkdir()
    (tmp_path / "site-data").mkdir()
    run_here = f"user root\nlog_dest file {tmp_path}/LOG\n"
    fleet_conf = tmp_path / "fleet-broker.conf"
    fleet_conf.write_text(_sub((FLEET / "fleet-broker.conf").read_text(), {
        r"^listener 8883$": f"listener {fleet_port} 127.0.0.1", r"^cafile .*$": f"cafile {ca}",
        r"^certfile .*$": f"certfile {cert}", r"^keyfile .*$": f"keyfile {key}",
        r"^password_file .*$": f"password_file {passwd}", r"^acl_file .*$": f"acl_file {tmp_path}/fleet.acl",
        r"^persistence_location .*$": f"persistence_location {tmp_path}/fleet-data/", r"^log_dest syslog$": ""})
        + run_here.replace("LOG", "fleet.log"))
    site_conf = tmp_path / "site-bridge.conf"
    site_conf.write_text(_sub((FLEET / "site-bridge.conf").read_text(), {
        r"^listener 1883 127.0.0.1$": f"listener {local_port} 127.0.0.1",
        r"^persistence_location .*$": f"persistence_location {tmp_path}/site-data/",
        r"^address mqtt.example.net:8883$": f"address 127.0.0.1:{fleet_port}", r"^bridge_cafile .*$": f"bridge_cafile {ca}",
        r"werkstrasse-12": "site-1", r"^remote_password change-me$": f"remote_password {SITE_PW}"})
        + run_here.replace("LOG", "site.log"))
    procs = [start_mosquitto(fleet_conf, fleet_port), start_mosquitto(site_conf, local_port)]
    yield SimpleNamespace(port=fleet_port, ca=ca, local_port=local_port, procs=procs, fleet_conf=fleet_conf)
    for p in procs:
        p.terminate()
        p.wait(10)


def test_a_site_reports_through_its_boards_bridge_and_is_operated_back_through_it(stack, tmp_path):
    """Samples out through the bridge, also across an outage of the fleet broker (queued on the board's
    broker meanwhile), and a request in and its answer back. The bridge must have connected once: what the
    EMS sends before that is not queued for it (Mosquitto 2.0.11; docs/cloud.md says so)."""
    from ems.cloud.remote import RemoteOperation
    db = tmp_path / "history.sqlite"
    history(db, 0)
    cfg = site_from_dict({"cloud": {"enabled": True, "host": "127.0.0.1", "port": stack.local_port, "tls": False,
                                    "allow_plain_loopback": True, "site_id": "site-1", "upload_cycle_s": 1.0,
                                    "backfill_days": 36500, "remote": True,
                                    "identities": [{"name": "operator", "role": "operator"}]}})
    sub = Subscriber(stack, client_id="fleet-consumer")     # the cloud, on the fleet broker; a persistent session
    up = Uplink(cfg, db, tmp_path / "cursor.json", remote=RemoteOperation(cfg, None, None, db))
    up.start()
    op = None
    try:
        assert sub.wait(lambda: sub.of("/v1/online"), 20), "the bridge carries the site's retained state"
        history(db, 5)
        assert sub.wait(lambda: len(sub.of("/v1/samples")) == 5, 20), sub.messages
        assert sub.wait(lambda: sub.of("homeassistant/sensor/ems_site-1/soc_pct/config"))
        stack.procs[0].terminate()                          # the fleet broker away
        stack.procs[0].wait(10)
        history(db, 9)
        assert sub.wait(lambda: up.status()["sent"]["samples"] == 9, 10), "the board's broker took them"
        assert len(sub.of("/v1/samples")) == 5, "… while the fleet could not have them"
        stack.procs[0] = start_mosquitto(stack.fleet_conf, stack.port)
        assert sub.wait(lambda: len(sub.of("/v1/samples")) == 9, 30), [m["seq"] for m in sub.of("/v1/samples")]
        assert [m["seq"] for m in sub.of("/v1/samples")] == [T0 + 60 * k for k in range(9)], "once, in order"
        op = Operator(stack, "operator")
        r = op.ask(timeout_s=15, action="live", cycle_s=1, lease_s=5)
        assert r and r["ok"], r                   # in through the bridge, answered back through it
    finally:
        if op is not None:
            op.close()
        up.stop()
        sub.close()


def test_the_fleet_acl_keeps_each_site_to_its_own_topics(stack):
    sub = Subscriber(stack)
    got = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="site-2-test")
    import ssl
    c.tls_set_context(ssl.create_default_context(cafile=str(stack.ca)))
    c.username_pw_set("site-2", SITE_PW)
    c.on_connect = lambda cl, ud, fl, rc, pr=None: got.append(rc)
    c.connect("127.0.0.1", stack.port)
    c.loop_start()
    try:
        assert sub.wait(lambda: got, 5) and not got[0].is_failure
        c.publish("ems/site-1/v1/samples", json.dumps({"seq": 1}), qos=1).wait_for_publish(5)
        c.publish("ems/site-2/v1/samples", json.dumps({"seq": 2}), qos=1).wait_for_publish(5)
        assert sub.wait(lambda: sub.of("site-2/v1/samples"), 5), "its own topic arrives"
        time.sleep(0.5)
        assert sub.of("site-1/v1/samples") == [], "another site's topic is dropped by the broker"
    finally:
        c.loop_stop()
        c.disconnect()
        sub.close()


def test_telegrafs_subscriptions_follow_the_topic_convention():
    conf = tomllib.loads((FLEET / "telegraf.conf").read_text())
    subscribed = {t for i in conf["inputs"]["mqtt_consumer"] for t in i["topics"]}
    assert subscribed == {topic("ems", "+", s) for s in ("samples", "status", "alarms/history")}
    assert set(STREAMS) - {"events"} <= {t.split("/v1/")[1] for t in subscribed}
    sample = next(i for i in conf["inputs"]["mqtt_consumer"] if i["topics"] == [topic("ems", "+", "samples")])
    keys = sample["json_v2"][0]["object"][0]["included_keys"]
    assert set(keys) == {"p_w", "e_in_wh", "e_out_wh", "soc_pct"}, "the samples' per-device fields (docs/cloud.md)"
