"""A fleet of light simulated sites on one broker (the cloud side's load test): N MQTT clients over TLS in
one process, driven by one thread (paho's own loop calls, no thread per client), each publishing its
status every `cycle_s` with QoS 1 and a sequence number, and an alarm now and then with the time it was
raised. Prints one JSON line at the end: what was published and the process's CPU time."""
from __future__ import annotations

import argparse
import json
import os
import random
import ssl
import time

import paho.mqtt.client as mqtt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--user", default="fleet")
    ap.add_argument("--password", required=True)
    ap.add_argument("--cycle-s", type=float, default=1.0)
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--alarms-per-s", type=float, default=5.0)
    a = ap.parse_args(argv)
    ctx = ssl.create_default_context(cafile=a.ca)
    clients = []
    for k in range(a.sites):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-{k}")
        c.tls_set_context(ctx)
        c.username_pw_set(a.user, a.password)
        c.max_inflight_messages_set(100)
        c.connect("127.0.0.1", a.port, keepalive=120)
        clients.append(c)
    for _ in range(50):                       # the handshakes
        for c in clients:
            c.loop(timeout=0)
    print(json.dumps({"ready": True}), flush=True)
    published = alarms = 0
    seq = [0] * a.sites
    start = time.monotonic()
    next_at = [start + a.cycle_s * k / a.sites for k in range(a.sites)]    # spread over the cycle
    next_alarm = start
    cpu0 = os.times()
    while time.monotonic() - start < a.duration_s:
        now = time.monotonic()
        for k, c in enumerate(clients):
            if now >= next_at[k]:
                seq[k] += 1
                c.publish(f"ems/site-{k}/v1/status", json.dumps({"v": 1, "site": f"site-{k}", "seq": seq[k],
                                                                   "t": time.time(), "soc_pct": 50.0}), qos=1)
                published += 1
                next_at[k] += a.cycle_s
        if a.alarms_per_s and now >= next_alarm:
            k = random.randrange(a.sites)
            clients[k].publish(f"ems/site-{k}/v1/alarms/history",
                               json.dumps({"v": 1, "site": f"site-{k}", "seq": alarms, "t": time.time(),
                                           "state": "raised", "code": 5}), qos=1)
            alarms += 1
            next_alarm += 1.0 / a.alarms_per_s
        for c in clients:
            c.loop(timeout=0)
        time.sleep(0.01)                      # a round every ~10 ms: the CPU figure is the clients', not a spin
    for _ in range(200):                      # the last acknowledgements
        for c in clients:
            c.loop(timeout=0)
    cpu = os.times()
    print(json.dumps({"published": published, "alarms": alarms, "seq": seq,
                      "cpu_s": (cpu.user - cpu0.user) + (cpu.system - cpu0.system),
                      "wall_s": time.monotonic() - start}), flush=True)
    for c in clients:
        c.disconnect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
