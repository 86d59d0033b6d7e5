"""[cloud]'s consistency (for `ems config check`) and the connection settings it makes."""
from __future__ import annotations

import re

from ems.cloud.topics import STREAMS
from ems.comm.net import is_loopback

SITE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check(cfg) -> list[tuple[str, object, str]]:
    c, out = cfg.cloud, []
    if not c.enabled:
        return out
    if not SITE_ID.match(c.site_id):
        out.append(("cloud.site_id", c.site_id, "letters, digits, - and _ only (1 … 64): it is a topic level"))
    if not SITE_ID.match(c.topic_prefix):
        out.append(("cloud.topic_prefix", c.topic_prefix, "letters, digits, - and _ only: no /, + or #"))
    plain_ok = c.allow_plain_loopback and is_loopback(c.host)
    if not c.tls and not plain_ok:
        out.append(("cloud.tls", False, "TLS is required (only a loopback broker with allow_plain_loopback may do "
                    "without)"))
    if c.allow_plain_loopback and not is_loopback(c.host):
        out.append(("cloud.allow_plain_loopback", True, f"the broker {c.host} is not on a loopback address"))
    if bool(c.cert_file) != bool(c.key_file):
        out.append(("cloud.key_file" if c.cert_file else "cloud.cert_file", "", "a client certificate needs its key "
                    "and a key its certificate"))
    if c.username and not c.password_file:
        out.append(("cloud.password_file", "", f"user {c.username!r} needs its password file"))
    if c.password_file and not c.username:
        out.append(("cloud.username", "", "a password file needs the user name"))
    if not plain_ok and not (c.username or c.cert_file):
        out.append(("cloud.username", "", "the broker must authenticate the EMS: username + password_file, or "
                    "cert_file + key_file"))
    if not SITE_ID.match(c.home_assistant_prefix):
        out.append(("cloud.home_assistant_prefix", c.home_assistant_prefix, "letters, digits, - and _ only"))
    for i, stream in enumerate(c.send):
        if stream not in STREAMS:
            out.append((f"cloud.send[{i}]", stream, f"one of {', '.join(STREAMS)}"))
        elif stream in c.send[:i]:
            out.append((f"cloud.send[{i}]", stream, "given twice"))
    seen = set()
    for i, ident in enumerate(c.identities):
        if not SITE_ID.match(ident.name):
            out.append((f"cloud.identities[{i}].name", ident.name, "letters, digits, - and _ only: it is a topic level"))
        if ident.name in seen:
            out.append((f"cloud.identities[{i}].name", ident.name, "given twice"))
        seen.add(ident.name)
    if c.remote and not c.identities:
        out.append(("cloud.identities", [], "remote operation needs at least one identity with its role"))
    if not cfg.records.storage_interval_min:
        out.append(("records.storage_interval_min", 0, "the cloud uplink sends the history's samples: store them"))
    return out
