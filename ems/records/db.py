"""The history database: one SQLite file in WAL mode (DESIGN.md `records/`).

Why these settings:
- WAL: readers (CLI, HTTP API) never block the writer and the writer never blocks them; a crash leaves the
  last committed state, the WAL is replayed on the next open.
- synchronous=FULL: every commit is on the medium before it returns, so a power loss loses at most what was
  not yet committed (the current storage interval). Commits are rare (one per interval plus event batches),
  so the fsync cost does not matter.
- One writer connection, in the recorder's thread; the loops never touch SQLite.

Times are UTC seconds since the epoch (REAL); the site's time zone is in `meta` for local-day reports.
Energy counters are cumulative watt-hours per device; a report is a difference of counters, so a gap in
the samples (controller off, missed interval) never loses or double-counts energy.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- one row per device per storage interval, at the interval's end
CREATE TABLE IF NOT EXISTS samples (
    device_id INTEGER NOT NULL,
    t REAL NOT NULL,
    p_w REAL,               -- mean power over the interval, sign as in DESIGN.md for that device
    e_in_wh REAL NOT NULL,  -- cumulative energy in:  import / charge / load consumption
    e_out_wh REAL NOT NULL, -- cumulative energy out: export / discharge / generation
    soc_pct REAL,           -- battery stack only
    PRIMARY KEY (device_id, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY,
    code INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    raised_at REAL NOT NULL,
    cleared_at REAL,
    raise_detail TEXT NOT NULL DEFAULT '',
    clear_detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alarms_raised ON alarms (raised_at);
CREATE INDEX IF NOT EXISTS alarms_active ON alarms (cleared_at) WHERE cleared_at IS NULL;
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    kind TEXT NOT NULL,          -- operation | system
    action TEXT NOT NULL,
    user TEXT NOT NULL DEFAULT '',
    device_id INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS log_t ON log (t);
CREATE TABLE IF NOT EXISTS peak_exceedances (   -- grid import above a peak shaving limit, one row per episode
    id INTEGER PRIMARY KEY,
    t_start REAL NOT NULL,
    t_end REAL NOT NULL,
    limit_w REAL NOT NULL,
    max_excess_w REAL NOT NULL,
    energy_wh REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS peak_exceedances_t ON peak_exceedances (t_start);
CREATE TABLE IF NOT EXISTS fault_records (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    code INTEGER,
    device_id INTEGER,
    path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    device_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    protocol TEXT NOT NULL,
    model TEXT NOT NULL,
    address TEXT NOT NULL,
    cycle_ms REAL,
    status TEXT NOT NULL,
    last_seen REAL
);
CREATE TABLE IF NOT EXISTS live (key TEXT PRIMARY KEY, t REAL NOT NULL, value TEXT NOT NULL);
-- requests from the CLI to the running controller (ems reset-faults)
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    action TEXT NOT NULL,
    user TEXT NOT NULL,
    done_at REAL,
    result TEXT
);
"""


class DatabaseError(RuntimeError):
    pass


def connect(path: str | Path, readonly: bool = False, timeout_s: float = 5.0) -> sqlite3.Connection:
    """Open the history database. Read-only opens never create or change anything (a missing file is an
    error naming the path); a writer creates the schema and sets WAL."""
    p = Path(path)
    try:
        if readonly:
            if not p.exists():
                raise DatabaseError(f"{p}: no such database (give --db PATH of a history.sqlite)")
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=timeout_s)
            _check_schema(con, p)
            return con
        p.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(p, timeout=timeout_s, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.executescript(SCHEMA)
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            con.commit()
        elif int(row[0]) != SCHEMA_VERSION:
            raise DatabaseError(f"{p}: schema version {row[0]}, this ems reads {SCHEMA_VERSION}")
        return con
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"{p}: {exc}") from None


def _check_schema(con: sqlite3.Connection, p: Path) -> None:
    try:
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"{p}: not an ems history database ({exc})") from None
    if row is None or int(row[0]) != SCHEMA_VERSION:
        raise DatabaseError(f"{p}: schema version {row[0] if row else 'missing'}, this ems reads {SCHEMA_VERSION}")


def meta(con: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return row[0] if row else default
