"""A real MQTT broker for the tests: Debian's Mosquitto on a loopback port, with its own configuration made
here — TLS with a test CA (cryptography), a password file (mosquitto_passwd), ACLs — started and stopped
as the tests need (an outage is a stopped broker)."""
from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ems.comm.net import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
USERS = {"ems": "ems-secret-1", "cloud": "cloud-secret-1", "operator": "operator-secret-1",
         "viewer": "viewer-secret-1", "installer": "installer-secret-1"}


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, srv_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ems test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    import ipaddress
    srv = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
           .issuer_name(ca_name).public_key(srv_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                          critical=False)
           .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    _write_key(srv_key, paths[2])
    _write_key(ca_key, folder / "ca.key")          # to sign client certificates (client_cert)
    return paths


def client_cert(folder: Path, name: str, ca_folder: Path) -> tuple[Path, Path]:
    """A client certificate for `name` (its CN, the broker's user name) signed by the CA in `ca_folder`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = x509.load_pem_x509_certificate((ca_folder / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_folder / "ca.key").read_bytes(), None)
    key = _key()
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{name}.pem", folder / f"{name}.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, paths[1])
    return paths


def start_mosquitto(conf: Path, port: int, timeout_s: float = 10.0) -> subprocess.Popen:
    """Mosquitto on `conf`, once it listens on the loopback `port`."""
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not listen")


class Broker:
    def __init__(self, folder: Path, site: str = "site-1"):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca, cert, key = make_ca(folder)
        self.port = free_port()
        self.cert_port = free_port()            # a second listener: clients authenticate by certificate
        passwd = folder / "passwd"
        passwd.write_text("")
        for user, pw in USERS.items():
            subprocess.run([PASSWD, "-b", str(passwd), user, pw], check=True, capture_output=True)
        acl = folder / "acl"
        # each identity writes its own request topic and reads its own replies (docs/cloud.md's ACL)
        acl.write_text(f"pattern write ems/+/v1/request/%u\npattern read ems/+/v1/reply/%u\n\n"
                       f"user ems\ntopic readwrite ems/{site}/#\ntopic write homeassistant/sensor/ems_{site}/#\n\n"
                       f"user cloud\ntopic read ems/#\ntopic read homeassistant/#\n")
        self.log = folder / "mosquitto.log"
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\ncafile {self.ca}\ncertfile {cert}\nkeyfile {key}\n"
            f"listener {self.cert_port} 127.0.0.1\ncafile {self.ca}\ncertfile {cert}\nkeyfile {key}\n"
            "require_certificate true\nuse_identity_as_username true\n"
            f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\npersistence true\n"
            f"persistence_location {folder}/\n"
            f"log_dest file {self.log}\nlog_type error\nlog_type warning\nlog_type notice\nuser root\n"
            "max_queued_messages 100000\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> Broker:
        self.proc = start_mosquitto(self.conf, self.port, timeout_s)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Operator:
    """Someone operating the site from the cloud: a real MQTT client as one identity, asking and waiting for
    the answer on its reply topic."""

    def __init__(self, broker: Broker, user: str, site: str = "site-1"):
        import paho.mqtt.client as mqtt
        import ssl
        import json
        self.user, self.site, self.replies = user, site, {}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"op-{user}-{time.monotonic_ns()}")
        c.tls_set_context(ssl.create_default_context(cafile=str(broker.ca)))
        c.username_pw_set(user, USERS[user])
        c.on_message = lambda cl, ud, m: self.replies.setdefault(json.loads(m.payload).get("id"), json.loads(m.payload))
        ready = __import__("threading").Event()
        c.on_subscribe = lambda *a, **k: ready.set()
        c.on_connect = lambda cl, ud, fl, rc, pr=None: cl.subscribe(f"ems/{site}/v1/reply/{user}", qos=1)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        ready.wait(10)
        self.client, self.n = c, 0

    def ask(self, timeout_s: float = 10.0, topic_user: str | None = None, **request) -> dict | None:
        import json
        self.n += 1
        rid = f"{self.user}-{self.n}"
        self.client.publish(f"ems/{self.site}/v1/request/{topic_user or self.user}",
                            json.dumps({"id": rid, **request}), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if rid in self.replies:
                return self.replies[rid]
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    """The cloud's side: a real MQTT client (paho) over TLS as user "cloud", keeping every message."""

    def __init__(self, broker: Broker, topics: str = "ems/#,homeassistant/#", user: str = "cloud",
                 client_id: str | None = None):
        """client_id: a fixed one keeps a persistent session (its QoS 1 messages wait while it is away)."""
        import paho.mqtt.client as mqtt
        import ssl
        import json
        self.messages: list[tuple[float, str, dict, bool]] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{user}-{time.monotonic_ns()}",
                        clean_session=client_id is None)
        c.tls_set_context(ssl.create_default_context(cafile=str(broker.ca)))
        c.username_pw_set(user, USERS[user])
        c.on_message = lambda cl, ud, m: self.messages.append((time.time(), m.topic, json.loads(m.payload), m.retain))
        c.on_connect = lambda cl, ud, fl, rc, pr=None: cl.subscribe([(t, 1) for t in topics.split(",")])
        c.reconnect_delay_set(0.1, 0.5)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        self.client = c

    def of(self, suffix: str) -> list[dict]:
        return [m for _, t, m, _ in list(self.messages) if t.endswith(suffix)]

    def wait(self, predicate, timeout_s: float = 10.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            v = predicate()
            if v:
                return v
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
