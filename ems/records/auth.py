"""Users, roles and sessions of the local API (000_… §3.2, 002_… §2.1).

Roles, from most to least: admin; installer (the manual's "advanced user"); operator (the cloud's O&M
engineer); end_user (the cloud's owner: read-only, plus their own password). What each may do is the
PERMISSIONS table; user management follows the manual's installer table (§3.2): an installer creates,
modifies and deletes end users and modifies only itself among the others.

- Passwords: Argon2id (argon2-cffi, memory-hard; OWASP's 19 MiB / 2 passes / 1 lane). Never stored or
  logged in clear. There is no default password: the first admin is created by the first-run setup.
- Sessions: a random bearer token; only its SHA-256 is stored. It expires `ttl` after its last use.
- Five wrong passwords for one user lock that user's logins for a minute (logged).

Users live in their own file (auth.sqlite next to the history) so a factory reset of either is separate.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("admin", "installer", "operator", "end_user")
# parameters an operator may change: the strategies' settings; the rest is installation (installer, admin)
OPERATIONAL_SECTIONS = ("self_use", "time_based", "pmeteroffset", "peak_shaving", "forced_charge", "ups_reserve",
                        "soc_calibration", "time_period_feed_in", "sg_ready", "generator", "off_grid",
                        "operating_mode", "air_conditioner")
PERMISSIONS = {
    "read": ("admin", "installer", "operator", "end_user"),          # status, alarms, logs, reports, parameters
    "command": ("admin", "installer", "operator"),                   # fault reset, start/stop, forced charge …
    "parameters_operational": ("admin", "installer", "operator"),
    "parameters_installation": ("admin", "installer"),
    "users": ("admin", "installer"),                                  # within manage_rule() below
    "maintenance": ("admin", "installer"),                            # restart, factory reset, clock (000_… 3.3.4.2)
    "upgrade": ("admin", "installer", "operator"),                    # the cloud's Upgrade Management (002_… 2.1)
}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256
LOCK_AFTER = 5
LOCK_S = 60.0
MAX_TRACKED_FAILURES = 1024     # names with recent failed logins kept for the lockout (bounded memory)

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL,
                                  created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (token_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL, expires REAL NOT NULL);
"""


class AuthError(Exception):
    """status: the HTTP status the API answers with (400 bad input, 401 not logged in, 403 forbidden,
    404 no such user, 409 conflict, 429 locked)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def allowed(role: str, permission: str) -> bool:
    return role in PERMISSIONS.get(permission, ())


def manage_rule(actor: str, actor_role: str, target: str, target_role: str, action: str) -> None:
    """Raise AuthError(403) unless `actor` may `action` (create / modify / delete) `target` (000_… §3.2)."""
    if actor_role == "admin":
        return
    if actor_role == "installer":
        if target_role == "end_user" and action in ("create", "modify", "delete"):
            return
        if action == "modify" and target == actor:
            return
    raise AuthError(403, f"role {actor_role} may not {action} user {target!r} (role {target_role})")


def check_password(pw) -> None:
    if not isinstance(pw, str) or not MIN_PASSWORD <= len(pw) <= MAX_PASSWORD:
        raise AuthError(400, f"password must be {MIN_PASSWORD} … {MAX_PASSWORD} characters")


class Users:
    def __init__(self, path: str | Path, ttl_s: float = 8 * 3600.0):
        self.path = Path(path)
        self.ttl_s = ttl_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}
        with self._con() as con:
            con.executescript(SCHEMA)

    def _con(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=5.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    # ------------------------------------------------------------------ users
    def count(self) -> int:
        with self._con() as con:
            return con.execute("SELECT count(*) FROM users").fetchone()[0]

    def role_of(self, name: str) -> str | None:
        with self._con() as con:
            row = con.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def list(self) -> list[dict]:
        with self._con() as con:
            return [{"name": n, "role": r, "created": c}
                    for n, r, c in con.execute("SELECT name, role, created FROM users ORDER BY name")]

    def setup(self, name, password) -> None:
        """First run: create the admin. Refused once any user exists."""
        with self._lock:
            if self.count():
                raise AuthError(409, "setup is done: log in as an admin to manage users")
            self._insert(name, "admin", password)

    def create(self, name, role, password) -> None:
        with self._lock:
            self._insert(name, role, password)

    def _insert(self, name, role, password) -> None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise AuthError(400, "user name: 1 … 32 of a-z 0-9 _ . -, starting with a letter or digit")
        if role not in ROLES:
            raise AuthError(400, f"role must be one of {', '.join(ROLES)}")
        check_password(password)
        try:
            with self._con() as con:
                con.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (name, role, _hasher.hash(password), time.time()))
        except sqlite3.IntegrityError:
            raise AuthError(409, f"user {name!r} exists") from None

    def modify(self, name: str, role: str | None = None, password: str | None = None) -> None:
        with self._lock, self._con() as con:
            row = con.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise AuthError(404, f"no user {name!r}")
            if role is not None:
                if role not in ROLES:
                    raise AuthError(400, f"role must be one of {', '.join(ROLES)}")
                if row[0] == "admin" and role != "admin" and self._admins(con) == 1:
                    raise AuthError(409, "the last admin cannot lose the admin role")
            if password is not None:
                check_password(password)
            if role is not None:
                con.execute("UPDATE users SET role=? WHERE name=?", (role, name))
            if password is not None:
                con.execute("UPDATE users SET hash=? WHERE name=?", (_hasher.hash(password), name))
                con.execute("DELETE FROM sessions WHERE user=?", (name,))     # other logins end with the old password

    def delete(self, name: str) -> None:
        with self._lock, self._con() as con:
            row = con.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise AuthError(404, f"no user {name!r}")
            if row[0] == "admin" and self._admins(con) == 1:
                raise AuthError(409, "the last admin cannot be deleted")
            con.execute("DELETE FROM users WHERE name=?", (name,))
            con.execute("DELETE FROM sessions WHERE user=?", (name,))

    @staticmethod
    def _admins(con) -> int:
        return con.execute("SELECT count(*) FROM users WHERE role='admin'").fetchone()[0]

    def verify(self, name, password) -> bool:
        if not isinstance(name, str) or not isinstance(password, str):
            return False
        with self._con() as con:
            row = con.execute("SELECT hash FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            _hasher.hash("timing-equaliser")     # an unknown name costs as much as a wrong password
            return False
        try:
            return _hasher.verify(row[0], password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    # ------------------------------------------------------------------ sessions
    def login(self, name, password) -> tuple[str, str, float]:
        """→ (token, role, expires). Raises AuthError 401 (wrong) or 429 (locked after repeated failures)."""
        now = time.time()
        if not isinstance(name, str) or not NAME_RE.match(name) or not isinstance(password, str) \
                or len(password) > MAX_PASSWORD:
            # no user can have this name (or password): refused without a lockout entry, so a flood of
            # made-up names costs no memory
            raise AuthError(401, "wrong user name or password")
        with self._lock:
            fails, since = self._failures.get(name, (0, 0.0))
        if fails >= LOCK_AFTER and now - since < LOCK_S:
            raise AuthError(429, f"too many failed logins for {name!r}: try again in {LOCK_S - (now - since):.0f} s")
        if not self.verify(name, password):
            self._count_failure(name, fails, since, now)
            raise AuthError(401, "wrong user name or password")
        with self._lock:
            self._failures.pop(name, None)
        token = secrets.token_urlsafe(32)
        expires = now + self.ttl_s
        with self._con() as con:
            con.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            con.execute("INSERT INTO sessions VALUES (?, ?, ?)", (_sha(token), name, expires))
        return token, self.role_of(name), expires

    def _count_failure(self, name: str, fails: int, since: float, now: float) -> None:
        with self._lock:
            if name not in self._failures and len(self._failures) >= MAX_TRACKED_FAILURES:
                for key, (_, t) in list(self._failures.items()):     # expired entries first
                    if now - t >= LOCK_S:
                        del self._failures[key]
                if len(self._failures) >= MAX_TRACKED_FAILURES:     # then the oldest
                    del self._failures[min(self._failures, key=lambda k: self._failures[k][1])]
            self._failures[name] = (fails + 1 if now - since < LOCK_S else 1, now)

    def session(self, token: str | None) -> tuple[str, str]:
        """→ (user, role) of a valid token, extending its expiry; AuthError 401 otherwise."""
        if not token:
            raise AuthError(401, "log in first (POST /api/login), then send Authorization: Bearer <token>")
        now = time.time()
        with self._con() as con:
            row = con.execute("SELECT s.user, u.role, s.expires FROM sessions s JOIN users u ON u.name = s.user "
                              "WHERE s.token_sha256=?", (_sha(token),)).fetchone()
            if row is None or row[2] < now:
                raise AuthError(401, "session expired or unknown: log in again")
            con.execute("UPDATE sessions SET expires=? WHERE token_sha256=?", (now + self.ttl_s, _sha(token)))
        return row[0], row[1]

    def logout(self, token: str) -> None:
        with self._con() as con:
            con.execute("DELETE FROM sessions WHERE token_sha256=?", (_sha(token),))


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
