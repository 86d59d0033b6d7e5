"""Reading the history database: alarms, logs, equipment list, live status, as plain rows (dicts) that the
CLI prints, the HTTP API returns as JSON, and both export as CSV. Read-only; never blocks the recorder (WAL)."""
from __future__ import annotations

import csv
import io
import json
import time
from datetime import date, datetime, time as dtime
from zoneinfo import ZoneInfo

from ems.control.events import EMS_ID, GRID_METER_ID, PCS_ID, PV_ID, STACK_ID
from ems.records import db as DB
from ems.records.catalogue import LEVELS, STATUSES, CLOUD_LEVELS, catalogue


class QueryError(ValueError):
    """A bad filter (date, level …): the message says what is allowed."""


# the years a query or report may name: the records are epoch seconds of this controller's life; beyond
# these, date arithmetic (the day after 9999-12-31) overflows instead of answering
FIRST_YEAR, LAST_YEAR = 1970, 2999


def check_year(year: int, what: str, text: str) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise QueryError(f"{what} {text!r}: the year must be {FIRST_YEAR} … {LAST_YEAR}")


def site_tz(con) -> ZoneInfo:
    return ZoneInfo(DB.meta(con, "timezone", "UTC") or "UTC")


def parse_time(text: str | None, tz: ZoneInfo, what: str) -> float | None:
    """'YYYY-MM-DD' (local midnight) or an ISO date-time (local unless it carries an offset) → epoch s."""
    if text is None or text == "":
        return None
    try:
        if len(text) == 10:
            dt = datetime.combine(date.fromisoformat(text), dtime(0), tz)
        else:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=tz)
    except (ValueError, OverflowError):
        raise QueryError(f"{what} {text[:40]!r}: not a date (YYYY-MM-DD) or date-time "
                         "(YYYY-MM-DDTHH:MM[:SS][+hh:mm])") from None
    check_year(dt.year, what, text[:40])
    return dt.timestamp()


def local_iso(t: float | None, tz: ZoneInfo) -> str:
    return "" if t is None else datetime.fromtimestamp(t, tz).isoformat(timespec="seconds")


ALARM_COLUMNS = ("id", "raised_at", "cleared_at", "code", "name", "device_id", "status", "level", "cloud",
                 "description", "raise_detail", "clear_detail", "remedy")


def alarms(con, since: str | None = None, until: str | None = None, code: int | None = None,
           level: str | None = None, device: str | None = None, active: bool = False, limit: int = 10000) -> list[dict]:
    """Alarm history (newest first). `level`: a level (mild/moderate/severe), a status (event/warning/fault)
    or a cloud level (urgent/important/common/prompt) — the catalogue decides which codes match."""
    tz = site_tz(con)
    where, args = [], []
    t0, t1 = parse_time(since, tz, "--since"), parse_time(until, tz, "--until")
    if t0 is not None:
        where.append("(raised_at >= ? OR cleared_at IS NULL OR cleared_at >= ?)")
        args += [t0, t0]
    if t1 is not None:
        where.append("raised_at < ?")
        args.append(t1)
    if code is not None:
        where.append("code = ?")
        args.append(int(code))
    if device:
        try:
            where.append("device_id = ?")
            args.append(int(device, 16) if device.lower().startswith("0x") else int(device))
        except ValueError:
            raise QueryError(f"device {device!r}: give a device ID like 0x05000000") from None
    if active:
        where.append("cleared_at IS NULL")
    sql = "SELECT id, code, device_id, raised_at, cleared_at, raise_detail, clear_detail FROM alarms"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY raised_at DESC, id DESC LIMIT ?"
    args.append(int(limit))
    if level is not None and level not in LEVELS + STATUSES + CLOUD_LEVELS:
        raise QueryError(f"level {level!r}: one of {', '.join(LEVELS + STATUSES + CLOUD_LEVELS)}")
    cat = catalogue()
    rows = []
    for rid, c, dev, raised, cleared, rd, cd in con.execute(sql, args):
        e = cat.get(c)
        if level is not None and level not in (e.level, e.status, e.cloud):
            continue
        rows.append({"id": rid, "raised_at": local_iso(raised, tz), "cleared_at": local_iso(cleared, tz), "code": c,
                     "name": e.name, "device_id": f"0x{dev:08X}", "status": e.status, "level": e.level,
                     "cloud": e.cloud, "description": e.description, "raise_detail": rd, "clear_detail": cd,
                     "remedy": e.remedy})
    return rows


LOG_COLUMNS = ("id", "time", "kind", "action", "user", "device_id", "detail")


def log_entries(con, since: str | None = None, until: str | None = None, kind: str | None = None,
                user: str | None = None, limit: int = 10000) -> list[dict]:
    """Operation and system log (newest first)."""
    tz = site_tz(con)
    if kind is not None and kind not in ("operation", "system"):
        raise QueryError(f"kind {kind!r}: operation or system")
    where, args = [], []
    for cond, val in (("t >= ?", parse_time(since, tz, "--since")), ("t < ?", parse_time(until, tz, "--until")),
                      ("kind = ?", kind), ("user = ?", user)):
        if val is not None:
            where.append(cond)
            args.append(val)
    sql = "SELECT id, t, kind, action, user, device_id, detail FROM log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY t DESC, id DESC LIMIT ?"
    args.append(int(limit))
    return [{"id": i, "time": local_iso(t, tz), "kind": k, "action": a, "user": u,
             "device_id": "" if d is None else f"0x{d:08X}", "detail": det}
            for i, t, k, a, u, d, det in con.execute(sql, args)]


DEVICE_COLUMNS = ("device_id", "name", "protocol", "model", "address", "cycle_ms", "status", "last_seen")


def devices(con) -> list[dict]:
    tz = site_tz(con)
    return [{"device_id": f"0x{d:08X}", "name": n, "protocol": p, "model": m, "address": a, "cycle_ms": c,
             "status": s, "last_seen": local_iso(ls, tz)}
            for d, n, p, m, a, c, s, ls in con.execute("SELECT * FROM devices ORDER BY device_id")]


def live_status(con) -> dict | None:
    """The running controller's last published status, with its age in seconds."""
    row = con.execute("SELECT t, value FROM live WHERE key='status'").fetchone()
    if row is None:
        return None
    status = json.loads(row[1])
    status["published_s_ago"] = round(max(0.0, time.time() - row[0]), 1)
    return status


def fault_records(con) -> list[dict]:
    tz = site_tz(con)
    return [{"time": local_iso(t, tz), "code": c, "device_id": "" if d is None else f"0x{d:08X}", "path": p}
            for t, c, d, p in con.execute("SELECT t, code, device_id, path FROM fault_records ORDER BY t DESC")]


def to_csv(rows: list[dict], columns: tuple | None = None) -> str:
    """CSV with a header row (RFC 4180 quoting; opens in spreadsheet programs as is)."""
    out = io.StringIO()
    cols = list(columns or (rows[0].keys() if rows else ()))
    w = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in cols})
    return out.getvalue()


def format_table(rows: list[dict], columns: tuple | None = None) -> str:
    if not rows:
        return "(none)"
    cols = list(columns or rows[0].keys())
    text = [["" if r.get(c) is None else f"{r[c]:.3f}".rstrip("0").rstrip(".") if isinstance(r.get(c), float)
             else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip() for t in text]
    return "\n".join(lines)


def request(con, action: str, user: str, t: float | None = None) -> int:
    """Queue a request for the running controller (it polls the table about twice a second)."""
    with con:
        cur = con.execute("INSERT INTO requests (t, action, user) VALUES (?, ?, ?)", (t or time.time(), action, user))
    return int(cur.lastrowid)


def request_result(con, req_id: int) -> str | None:
    row = con.execute("SELECT result FROM requests WHERE id=?", (req_id,)).fetchone()
    return row[0] if row else None


POWER_SERIES = {"grid_w": GRID_METER_ID, "pv_w": PV_ID, "load_w": EMS_ID, "pcs_w": PCS_ID}   # load: EMS_ID (records.md)
MAX_SERIES_DAYS = 62          # a month of storage intervals and then some: 62 × 288 rows per series at 5 min


def power_series(con, since: str | None, until: str | None) -> dict:
    """Mean power per storage interval (grid, PV, load, PCS, W, signs as everywhere) and the stack's SOC,
    column by column on one time axis (epoch s, the interval's end), for the history charts. `since`
    default: 24 h before `until` (default: now); at most MAX_SERIES_DAYS."""
    tz = site_tz(con)
    hi = parse_time(until, tz, "until") if until else time.time()
    lo = parse_time(since, tz, "since") if since else hi - 86400.0
    if hi <= lo:
        raise QueryError("until must be after since")
    if hi - lo > MAX_SERIES_DAYS * 86400.0:
        raise QueryError(f"at most {MAX_SERIES_DAYS} days at a time")
    ids = list(POWER_SERIES.values()) + [STACK_ID]
    rows = con.execute(f"SELECT device_id, t, p_w, soc_pct FROM samples WHERE t > ? AND t <= ? AND device_id IN "
                       f"({','.join('?' * len(ids))}) ORDER BY t", (lo, hi, *ids)).fetchall()
    times = sorted({t for _, t, _, _ in rows})
    at = {t: i for i, t in enumerate(times)}
    out = {"t": times, **{k: [None] * len(times) for k in POWER_SERIES}, "soc_pct": [None] * len(times)}
    name = {v: k for k, v in POWER_SERIES.items()}
    for dev, t, p, soc in rows:
        if dev == STACK_ID:
            out["soc_pct"][at[t]] = soc
        else:
            out[name[dev]][at[t]] = p
    return out
