"""The topic and payload convention of the uplink, version 1 (docs/cloud.md; the one home of every name).

    {prefix}/{site}/v1/online            retained   "online" / "offline" (the broker's last will)
    {prefix}/{site}/v1/samples           QoS 1      one message per storage interval: every device's row
    {prefix}/{site}/v1/events            QoS 1      the event and operation log, one message per entry
    {prefix}/{site}/v1/alarms/history    QoS 1      each alarm raised, and again when it clears
    {prefix}/{site}/v1/alarms/active     retained   the active alarms now, at once when the list changes
    {prefix}/{site}/v1/status            retained   SOC with its bound, strategy and why, uplink backlog …
    {prefix}/{site}/v1/devices           retained   the equipment list with comm states, when it changes

Every payload is a JSON object with "v": 1 and "site"; the streams carry "seq" (the history database's
own key: a consumer drops a repeat by it) and times as UNIX seconds ("t") and ISO 8601 ("time").
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from ems.control.events import device_hex  # noqa: F401 - the one home; the uplink's payloads use it

VERSION = 1
STREAMS = ("samples", "events", "alarms/history")


def topic(prefix: str, site: str, name: str) -> str:
    return f"{prefix}/{site}/v{VERSION}/{name}"


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def payload(site: str, **fields) -> bytes:
    return json.dumps({"v": VERSION, "site": site, **fields}, separators=(",", ":"), allow_nan=False).encode()
