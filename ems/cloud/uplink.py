"""The cloud uplink (a thread of its own, beside the recorder): the history database after each stream's
cursor, published in order with QoS 1; a cursor moves only past messages the broker acknowledged, and is
stored atomically (ems.cloud.cursor). The broker away for minutes or days, the EMS killed mid-backlog:
the next connection resends from the cursor, bounded by the history's retention. The retained topics
(active alarms, status, devices) are the state now and are republished on every (re)connection.

It reads the database the recorder writes (its own read-only connection, WAL), never the controller's
objects: the control loop does not know it exists. paho-mqtt's network thread carries the connection
(TLS, keep-alive, reconnect with backoff); this thread decides what to send.
"""
from __future__ import annotations

import collections
import json
import logging
import sqlite3
import ssl
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from ems.comm.net import is_loopback
from ems.cloud.cursor import Cursors
from ems.cloud.topics import STREAMS, device_hex, iso, payload, topic
from ems.comm.limits import RateLimitedLog
from ems.records import db as DB
from ems.records.catalogue import catalogue

log = logging.getLogger("ems.cloud")
MAX_WAITING = 256            # requests queued for the uplink's thread; more are dropped (and counted)
MAX_REQUEST_BYTES = 16 * 1024
POLL_S = 0.2                 # the database is looked at this often: an alarm is out within this and a commit
ACK_TIMEOUT_S = 10.0


class UplinkError(RuntimeError):
    """A [cloud] setting that cannot work on this machine (a key file missing …): `ems run` says so at start."""


def _password(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UplinkError(f"cloud.password_file {path}: {exc.strerror or exc}") from None
    return text.splitlines()[0] if text else ""


class Uplink:
    def __init__(self, cfg, db_path: Path, cursor_path: Path, now=time.time, remote=None):
        """remote: an ems.cloud.remote.RemoteOperation when [cloud] remote is on (requests are taken then)."""
        c = cfg.cloud
        self.cfg, self.c, self.db_path, self.now = cfg, c, Path(db_path), now
        self.site = c.site_id
        self.cursors = Cursors(cursor_path, STREAMS)
        self.connected = threading.Event()
        self.state = "starting"
        self.last_error = ""
        self.sent = {s: 0 for s in STREAMS}
        self.streams = tuple(s for s in STREAMS if s in self.c.send)     # [cloud] send: what is queued and sent
        self.connects = 0
        self.refusals = 0
        self.backlog: dict[str, int] = {}
        self._warn = RateLimitedLog(log, 60.0)
        self._stop = threading.Event()
        self._published_state: dict[str, str] = {}    # retained topic → the payload's content last published
        self._next_status = 0.0
        self.live_until = 0.0                 # an operator's faster status cycle, until this time (a lease)
        self.live_cycle_s = 0.0
        self._discovery_done = False
        self._con: sqlite3.Connection | None = None
        self.remote = remote
        if remote is not None:
            remote.uplink = self
            remote.reply = lambda identity, answer: self.client.publish(
                self._t(f"reply/{identity}"), payload(self.site, time=iso(self.now()), **answer), qos=1)
        self.requests: collections.deque = collections.deque()     # (identity, payload) from paho's thread
        self.dropped_requests = 0
        self._socket_error = ""               # paho's last socket error (its log), for the status
        self.client = self._client()
        self._thread = threading.Thread(target=self._run, name="ems-cloud", daemon=True)

    # ------------------------------------------------------------------ the connection
    def _client(self) -> mqtt.Client:
        c = self.c
        cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ems-{self.site}", clean_session=True,
                         protocol=mqtt.MQTTv311)
        if c.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                value = getattr(c, key)
                if value and not Path(value).is_file():
                    raise UplinkError(f"cloud.{key} {value}: no such file")
            ctx = ssl.create_default_context(cafile=c.ca_file or None)
            if c.cert_file:
                ctx.load_cert_chain(c.cert_file, c.key_file)
            cl.tls_set_context(ctx)
        elif not (c.allow_plain_loopback and is_loopback(c.host)):
            raise UplinkError("cloud.tls = false is allowed only for a loopback broker with allow_plain_loopback")
        if c.username:
            cl.username_pw_set(c.username, _password(c.password_file))
        cl.will_set(self._t("online"), payload(self.site, state="offline"), qos=1, retain=True)
        cl.max_inflight_messages_set(max(c.batch, 20))
        cl.reconnect_delay_set(1, 60)
        cl.on_connect = self._on_connect
        cl.on_connect_fail = self._on_connect_fail
        cl.on_log = self._on_log
        cl.on_disconnect = self._on_disconnect
        cl.on_message = self._on_message
        return cl

    def _t(self, name: str) -> str:
        return topic(self.c.topic_prefix, self.site, name)

    def _on_connect(self, client, userdata, flags, reason, properties=None) -> None:
        if reason.is_failure:
            self.refusals += 1
            self.last_error = f"broker refused the connection: {reason}"
            self.state = "refused"
            self._warn.warning("refused", "cloud: %s:%d refused the connection: %s", self.c.host, self.c.port, reason)
            return
        self.connects += 1
        self.state, self.last_error = "connected", ""
        self._published_state.clear()             # retained state is republished on every connection
        self._discovery_done = False
        log.info("cloud: connected to %s:%d as site %s", self.c.host, self.c.port, self.site)
        client.publish(self._t("online"), payload(self.site, state="online", time=iso(self.now())), qos=1, retain=True)
        if self.remote is not None:
            client.subscribe(self._t("request/+"), qos=1)
        self.connected.set()

    def _on_log(self, client, userdata, level, text) -> None:
        """paho says why a socket failed only in its log (then reports a lost connection): keep the reason."""
        if level == mqtt.MQTT_LOG_ERR and text.startswith("failed to receive on socket"):
            self._socket_error = text.split(": ", 1)[-1][:300]

    def _on_connect_fail(self, client, userdata) -> None:
        """No MQTT session at all (paho calls this inside its `except OSError`, so the error is at hand): a
        broker certificate this site does not trust, a TLS handshake the broker aborted (a client
        certificate it refuses), or no broker there. Said in the status and logged once a minute."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            self.state = "refused"
            self.last_error = f"the broker's certificate is not trusted (cloud.ca_file): {exc.verify_message}"
        elif isinstance(exc, ssl.SSLError):
            self.state = "refused"
            self.last_error = f"TLS with the broker failed (a client certificate it refuses?): {exc.reason or exc}"
        else:
            self.state = "unreachable"
            self.last_error = f"cannot reach the broker: {exc}"
        self.refusals += self.state == "refused"
        self._warn.warning(self.state, "cloud: %s:%d: %s", self.c.host, self.c.port, self.last_error)

    def _on_message(self, client, userdata, msg) -> None:
        """A request (paho's network thread): queued for this uplink's thread, bounded."""
        identity = msg.topic.rsplit("/", 1)[-1]
        if self.remote is None or not msg.topic.startswith(self._t("request/")):
            return
        if len(self.requests) >= MAX_WAITING:
            self.dropped_requests += 1
            self._warn.warning("requests", "cloud: %d requests waiting: one from %s dropped", MAX_WAITING, identity)
            return
        self.requests.append((identity, msg.payload[:MAX_REQUEST_BYTES + 1]))

    def _on_disconnect(self, client, userdata, flags, reason, properties=None) -> None:
        self.connected.clear()
        socket_error, self._socket_error = self._socket_error, ""
        if "SSL" in socket_error and self.state != "connected":
            # TLS 1.3: a broker refusing the client certificate says so after the handshake, at the first read
            self.state = "refused"
            self.refusals += 1
            self.last_error = f"TLS with the broker failed (a client certificate it refuses?): {socket_error}"
            self._warn.warning("refused", "cloud: %s:%d: %s", self.c.host, self.c.port, self.last_error)
            return
        if self.state == "connected":
            self.state = "disconnected"
        if reason is not None and getattr(reason, "is_failure", False) and self.state != "refused":
            self.last_error = f"connection lost: {reason}"
            self._warn.warning("lost", "cloud: connection to %s:%d lost (%s): the backlog waits in the history",
                               self.c.host, self.c.port, reason)

    def start(self) -> None:
        self.client.connect_async(self.c.host, self.c.port, keepalive=self.c.keepalive_s)
        self.client.loop_start()
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        try:
            if self.connected.is_set():
                self.client.publish(self._t("online"), payload(self.site, state="offline", time=iso(self.now())),
                                    qos=1, retain=True).wait_for_publish(2.0)
        except (RuntimeError, ValueError):
            pass
        self.client.disconnect()
        self.client.loop_stop()

    def status(self) -> dict:
        """For the EMS's own status (API, panel): the connection and the backlog per stream."""
        return {"enabled": True, "state": self.state, "broker": f"{self.c.host}:{self.c.port}",
                "last_error": self.last_error, "backlog": dict(self.backlog), "sent": dict(self.sent),
                "connects": self.connects, "remote": self.remote is not None,
                "requests": {"handled": self.remote.handled, "refused": self.remote.refused,
                             "dropped": self.dropped_requests} if self.remote is not None else None}

    # ------------------------------------------------------------------ the thread
    def _db(self) -> sqlite3.Connection | None:
        if self._con is None:
            try:
                self._con = DB.connect(self.db_path, readonly=True)
            except Exception as exc:          # not created yet by the recorder: next poll
                self._warn.warning("db", "cloud: history database %s not readable yet: %s", self.db_path, exc)
                return None
        return self._con

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                con = self._db()
                if con is not None:
                    self._count_backlog(con)
                    if self.connected.is_set():
                        self._cycle(con)
            except sqlite3.Error as exc:
                self._warn.warning("sqlite", "cloud: reading the history failed: %s", exc)
                if self._con is not None:
                    self._con.close()
                self._con = None
            except Exception:                 # never let the uplink thread die: log, wait, go on
                log.exception("cloud uplink cycle failed")
            self._stop.wait(POLL_S)
        if self._con is not None:            # (a connection belongs to the thread that opened it)
            self._con.close()
            self._con = None

    def _cycle(self, con) -> None:
        while self.requests:                  # requests first: an operator waits for the answer
            identity, body = self.requests.popleft()
            answer = self.remote.handle(identity, body)
            self.client.publish(self._t(f"reply/{identity}"), payload(self.site, time=iso(self.now()), **answer),
                                qos=1)
        self._retained(con)
        for stream in self.streams:
            while self.connected.is_set() and not self._stop.is_set():
                if not self._drain(con, stream):
                    break
        if not self._discovery_done and self.c.home_assistant:
            self._discovery()
        if self.now() >= self._next_status:
            self._status(con)
            live = self.now() < self.live_until
            self._next_status = self.now() + (self.live_cycle_s if live else self.c.upload_cycle_s)

    def set_live(self, cycle_s: float, lease_s: float) -> dict:
        """An operator's faster status cycle for a while (a lease; then the upload cycle again)."""
        self.live_cycle_s, self.live_until = cycle_s, self.now() + lease_s
        self._next_status = 0.0
        return {"cycle_s": cycle_s, "until": iso(self.live_until)}

    # ------------------------------------------------------------------ streams
    def _start_position(self, stream: str):
        pos = self.cursors.get(stream)
        if pos is not None:
            return pos
        return (self.now() - self.c.backfill_days * 86400.0, -1)       # first start: the last backfill_days

    def _rows(self, con, stream: str, pos, n: int) -> list[tuple[tuple, str, bytes]]:
        """Up to n messages after `pos`, in order: (position, topic, payload)."""
        t0, k0 = pos
        out = []
        if stream == "samples":
            times = [r[0] for r in con.execute("SELECT DISTINCT t FROM samples WHERE t > ? ORDER BY t LIMIT ?", (t0, n))]
            if not times:
                return out
            rows = con.execute("SELECT t, device_id, p_w, e_in_wh, e_out_wh, soc_pct FROM samples WHERE t >= ? AND "
                               "t <= ? ORDER BY t, device_id", (times[0], times[-1])).fetchall()
            by_t: dict[float, list] = {}
            for t, dev, p, e_in, e_out, soc in rows:
                by_t.setdefault(t, []).append({"device_id": device_hex(dev), "p_w": p, "e_in_wh": e_in,
                                               "e_out_wh": e_out, **({"soc_pct": soc} if soc is not None else {})})
            for t in times:
                out.append(((t, 0), self._t("samples"), payload(self.site, seq=t, t=t, time=iso(t), devices=by_t[t])))
        elif stream == "events":
            for rid, t, kind, action, user, dev, detail in con.execute(
                    "SELECT id, t, kind, action, user, device_id, detail FROM log WHERE id > ? ORDER BY id LIMIT ?",
                    (int(k0) if self.cursors.get(stream) is not None else self._first_event_id(con, t0), n)):
                out.append(((t, rid), self._t("events"), payload(self.site, seq=rid, t=t, time=iso(t), kind=kind,
                                                                 action=action, user=user, detail=detail,
                                                                 device_id=None if dev is None else device_hex(dev))))
        else:   # alarms/history: each raise at (raised_at, 2 id), each clear at (cleared_at, 2 id + 1)
            cat = catalogue()
            rows = con.execute(
                "SELECT t, k, code, device_id, detail FROM ("
                " SELECT raised_at AS t, 2 * id AS k, code, device_id, raise_detail AS detail FROM alarms"
                " UNION ALL SELECT cleared_at, 2 * id + 1, code, device_id, clear_detail FROM alarms"
                "  WHERE cleared_at IS NOT NULL)"
                " WHERE t > ? OR (t = ? AND k > ?) ORDER BY t, k LIMIT ?", (t0, t0, k0, n)).fetchall()
            for t, k, code, dev, detail in rows:
                entry = cat.get(code)
                out.append(((t, k), self._t("alarms/history"),
                            payload(self.site, seq=k, t=t, time=iso(t), state="cleared" if k % 2 else "raised",
                                    code=code, name=cat.name(code), level=getattr(entry, "level", ""),
                                    device_id=device_hex(dev), detail=detail)))
        return out

    @staticmethod
    def _first_event_id(con, t0: float) -> int:
        row = con.execute("SELECT max(id) FROM log WHERE t <= ?", (t0,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _drain(self, con, stream: str) -> bool:
        """One batch of a stream; True when a full batch went out (more may wait)."""
        msgs = self._rows(con, stream, self._start_position(stream), self.c.batch)
        if not msgs:
            return False
        infos = []
        for pos, t, body in msgs:
            info = self.client.publish(t, body, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            infos.append((pos, info))
        done = None
        for pos, info in infos:               # in order: the cursor moves past the acknowledged prefix only
            try:
                info.wait_for_publish(ACK_TIMEOUT_S)
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            done = pos
        if done is not None:
            self.cursors.set(stream, done)
            self.sent[stream] += sum(1 for pos, _ in infos if pos <= done)
        return done is not None and len(msgs) == self.c.batch and done == msgs[-1][0]

    def _count_backlog(self, con) -> None:
        for stream in self.streams:
            pos = self._start_position(stream)
            if stream == "samples":
                q, args = "SELECT count(DISTINCT t) FROM samples WHERE t > ?", (pos[0],)
            elif stream == "events":
                q, args = "SELECT count(*) FROM log WHERE t > ? OR (t = ? AND id > ?)", (pos[0], pos[0], pos[1])
            else:
                q = ("SELECT count(*) FROM (SELECT raised_at AS t, 2 * id AS k FROM alarms UNION ALL SELECT "
                     "cleared_at, 2 * id + 1 FROM alarms WHERE cleared_at IS NOT NULL) WHERE t > ? OR (t = ? AND k > ?)")
                args = (pos[0], pos[0], pos[1])
            self.backlog[stream] = int(con.execute(q, args).fetchone()[0])

    # ------------------------------------------------------------------ retained state
    def _publish_retained(self, name: str, content: dict) -> None:
        text = json.dumps(content, sort_keys=True, default=str)
        if self._published_state.get(name) == text:
            return
        info = self.client.publish(self._t(name), payload(self.site, time=iso(self.now()), **content), qos=1,
                                   retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._published_state[name] = text

    def _retained(self, con) -> None:
        cat = catalogue()
        active = [{"code": code, "name": cat.name(code), "level": getattr(cat.get(code), "level", ""),
                   "device_id": device_hex(dev), "raised": iso(t), "detail": detail}
                  for code, dev, t, detail in con.execute(
                      "SELECT code, device_id, raised_at, raise_detail FROM alarms WHERE cleared_at IS NULL "
                      "ORDER BY raised_at, id")]
        self._publish_retained("alarms/active", {"alarms": active})
        devices = [{"device_id": device_hex(r[0]), "name": r[1], "protocol": r[2], "model": r[3], "address": r[4],
                    "status": r[6]} for r in con.execute("SELECT * FROM devices ORDER BY device_id")]
        self._publish_retained("devices", {"devices": devices})

    # Home Assistant MQTT discovery: one retained config per sensor, pointing into the status topic, so a
    # Home Assistant user sees the site without writing YAML (its default discovery prefix, homeassistant/)
    HA_SENSORS = (("soc_pct", "SOC", "battery", "%"), ("soc_bound_pct", "SOC uncertainty", None, "%"),
                  ("grid_w", "Grid power", "power", "W"), ("pv_w", "PV power", "power", "W"),
                  ("pcs_w", "Battery power", "power", "W"), ("load_w", "Load power", "power", "W"),
                  ("strategy", "Strategy", None, None))

    def _discovery(self) -> None:
        device = {"identifiers": [f"ems-{self.site}"], "name": f"EMS {self.site}", "manufacturer": "open-ems",
                  "model": "EMS controller"}
        for key, name, device_class, unit in self.HA_SENSORS:
            config = {"name": name, "unique_id": f"ems_{self.site}_{key}", "state_topic": self._t("status"),
                      "value_template": f"{{{{ value_json.{key} }}}}", "availability_topic": self._t("online"),
                      "availability_template": "{{ value_json.state }}", "payload_available": "online",
                      "payload_not_available": "offline", "device": device}
            if device_class:
                config["device_class"] = device_class
            if unit:
                config.update(unit_of_measurement=unit, state_class="measurement")
            self.client.publish(f"{self.c.home_assistant_prefix}/sensor/ems_{self.site}/{key}/config",
                                json.dumps(config), qos=1, retain=True)
        self._discovery_done = True

    def _status(self, con) -> None:
        row = con.execute("SELECT t, value FROM live WHERE key = 'status'").fetchone()
        live = json.loads(row[1]) if row else {}
        keep = ("running", "strategy", "reason", "held_by", "on_grid", "grid_w", "pv_w", "pcs_w", "load_w", "dg_w",
                "soc_pct", "soc_bound_pct", "charge_limit_w", "discharge_limit_w", "setpoint_w", "pcs_run",
                "remote_mode", "simulated", "comm_lost")
        body = {k: live.get(k) for k in keep}
        body.update(measured=iso(row[0]) if row else None, uplink={"backlog": dict(self.backlog)})
        info = self.client.publish(self._t("status"), payload(self.site, time=iso(self.now()), **body), qos=1,
                                   retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._next_status = 0.0
