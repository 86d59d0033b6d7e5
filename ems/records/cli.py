"""`ems status | alarms | log | report | stats | reset-faults` and `ems devices --db`: the history database
from the command line. Each reads the database given by --db (a running site's, or a simulation's
DIR/history.sqlite) and never changes it, except reset-faults, which leaves a request for the running
controller."""
from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path

from ems.records import db as DB
from ems.records import queries as Q
from ems.records import reports as R

DEFAULT_DB = Path(".ems-state/history.sqlite")


def add_parsers(sub) -> None:
    def db_arg(p):
        p.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"history database (default {DEFAULT_DB}; a "
                       "simulation's is OUT/history.sqlite)")

    p = sub.add_parser("status", help="the running controller's last published status and active alarms")
    db_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("alarms", help="alarm history (newest first), with the catalogue's level and remedy")
    db_arg(p)
    p.add_argument("--since", help="YYYY-MM-DD or YYYY-MM-DDTHH:MM (site local time unless an offset is given)")
    p.add_argument("--until", help="same forms as --since; exclusive")
    p.add_argument("--code", type=int, help="one code")
    p.add_argument("--level", help="mild|moderate|severe, event|warning|fault, or urgent|important|common|prompt")
    p.add_argument("--device", help="device ID, e.g. 0x02010000")
    p.add_argument("--active", action="store_true", help="only alarms not cleared")
    p.add_argument("--csv", action="store_true", help="CSV export (all columns, remedy included)")
    p = sub.add_parser("log", help="operation and system log (newest first)")
    db_arg(p)
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--kind", choices=("operation", "system"))
    p.add_argument("--user")
    p.add_argument("--csv", action="store_true")
    p = sub.add_parser("report", help="daily (5/10/30/60-min), monthly (per day) or annual (per month) energy report")
    db_arg(p)
    p.add_argument("kind", choices=("daily", "monthly", "annual"))
    p.add_argument("date", help="daily: YYYY-MM-DD; monthly: YYYY-MM; annual: YYYY")
    p.add_argument("--interval", default="60m", help="daily report interval: 5m, 10m, 30m or 60m (default 60m)")
    p.add_argument("--csv", action="store_true")
    p = sub.add_parser("stats", help="electricity statistics of a day, month or year: totals, shares, breakdown")
    db_arg(p)
    p.add_argument("period", choices=("day", "month", "year"))
    p.add_argument("date", help="YYYY-MM-DD, YYYY-MM or YYYY")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("reset-faults", help="ask the running controller to reset latched faults (logged with your "
                                            "user name)")
    db_arg(p)
    p.add_argument("--timeout", type=float, default=5.0, help="wait this long for the controller, s (0.5 … 60)")


def _open(path: Path):
    try:
        return DB.connect(path, readonly=True)
    except DB.DatabaseError as exc:
        print(f"ems: {exc}", file=sys.stderr)
        return None


def run(args) -> int:
    """Dispatch one of this module's commands; 0 ok, 1 no database / bad query, 2 bad arguments."""
    if args.command == "reset-faults":
        return _reset_faults(args)
    con = _open(args.db)
    if con is None:
        return 1
    try:
        return _read(args, con)
    except Q.QueryError as exc:
        print(f"ems {args.command}: {exc}", file=sys.stderr)
        return 2
    finally:
        con.close()


def _read(args, con) -> int:
    c = args.command
    if c == "status":
        live = Q.live_status(con)
        active = Q.alarms(con, active=True)
        if args.json:
            print(json.dumps({"live": live, "active_alarms": active}, indent=2, ensure_ascii=False))
            return 0
        print(_status_text(live, active))
        return 0
    if c == "alarms":
        rows = Q.alarms(con, args.since, args.until, args.code, args.level, args.device, args.active)
        if args.csv:
            sys.stdout.write(Q.to_csv(rows, Q.ALARM_COLUMNS))
        else:
            print(Q.format_table(rows, ("raised_at", "cleared_at", "code", "name", "device_id", "status", "level",
                                        "cloud", "raise_detail")))
        return 0
    if c == "log":
        rows = Q.log_entries(con, args.since, args.until, args.kind, args.user)
        if args.csv:
            sys.stdout.write(Q.to_csv(rows, Q.LOG_COLUMNS))
        else:
            print(Q.format_table(rows, ("time", "kind", "action", "user", "device_id", "detail")))
        return 0
    if c == "report":
        rows = R.report(con, args.kind, args.date, args.interval)
        if args.csv:
            sys.stdout.write(Q.to_csv(rows, R.REPORT_COLUMNS))
        else:
            print(Q.format_table(rows, R.REPORT_COLUMNS))
        return 0
    if c == "stats":
        st = R.stats(con, args.period, args.date)
        if args.json:
            print(json.dumps(st, indent=2))
            return 0
        print(f"{args.period} {args.date}: totals (kWh)")
        for k, v in st["totals_kwh"].items():
            print(f"  {k:<26} {v:12.3f}")
        for k, v in st["kpis"].items():
            print(f"  {k:<26} {'-' if v is None else f'{v:12.2f}'}")
        print()
        print(Q.format_table(st["breakdown"]))
        return 0
    if c == "devices":
        rows = Q.devices(con)
        sys.stdout.write(Q.to_csv(rows, Q.DEVICE_COLUMNS) if args.csv else Q.format_table(rows, Q.DEVICE_COLUMNS) + "\n")
        return 0
    raise AssertionError(c)


def _status_text(live: dict | None, active: list[dict]) -> str:
    if live is None:
        lines = ["no status published yet (the controller has not run with this database)"]
    else:
        state = "running" if live.get("running") else "stopped"
        age = live.get("published_s_ago", 0)
        if live.get("running") and age > 30:
            state = f"not responding (last status {age:.0f} s ago)"

        def kw(k):
            v = live.get(k)
            return "   -  " if v is None else f"{v / 1000:7.1f} kW"
        soc, bound = live.get("soc_pct"), live.get("soc_bound_pct")
        soc_text = "-" if soc is None else f"{soc:.1f} %" + ("" if bound is None else f" ± {bound:.1f}")
        lines = [f"site {live.get('site')}  ems {live.get('version')}  {state}  at {live.get('time')}",
                 f"  strategy  {live.get('strategy')}: {live.get('reason')}",
                 f"  grid {kw('grid_w')}  pv {kw('pv_w')}  load {kw('load_w')}  pcs {kw('pcs_w')}  "
                 f"soc {soc_text}",
                 f"  limits    charge {live.get('charge_limit_w', 0) / 1000:.1f} kW, discharge "
                 f"{live.get('discharge_limit_w', 0) / 1000:.1f} kW; setpoint {live.get('setpoint_w', 0) / 1000:.1f} kW"]
        if live.get("comm_lost"):
            lines.append(f"  comm lost {', '.join(live['comm_lost'])}")
    lines.append(f"  active alarms: {len(active) or 'none'}")
    lines += [f"    {a['code']:>6} {a['name']:<24} {a['device_id']}  {a['level']:<8} since {a['raised_at']}"
              for a in active]
    return "\n".join(lines)


def _reset_faults(args) -> int:
    if not 0.5 <= args.timeout <= 60.0:
        print(f"ems reset-faults: --timeout must be 0.5 … 60 s, got {args.timeout}", file=sys.stderr)
        return 2
    try:
        if not Path(args.db).exists():
            raise DB.DatabaseError(f"{args.db}: no such database (give --db PATH of a running site's history.sqlite)")
        con = DB.connect(args.db)
    except DB.DatabaseError as exc:
        print(f"ems: {exc}", file=sys.stderr)
        return 1
    try:
        user = f"cli:{getpass.getuser()}"
        rid = Q.request(con, "fault_reset", user)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            result = Q.request_result(con, rid)
            if result is not None:
                print(f"fault reset: {result} (logged as {user})")
                return 0 if result == "done" else 1
            time.sleep(0.1)
        with con:        # nobody took it: withdraw it, so a later start does not act on a stale request
            con.execute("UPDATE requests SET done_at=?, result='not taken: no controller running' WHERE id=? AND "
                        "done_at IS NULL", (time.time(), rid))
        print(f"ems reset-faults: no controller answered within {args.timeout:g} s (is `ems run` running with "
              f"--db {args.db}?)", file=sys.stderr)
        return 1
    finally:
        con.close()
