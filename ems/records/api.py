"""The local HTTP JSON API (aiohttp, in a thread of its own): the history, alarms, logs, reports and
equipment list the CLI shows; parameters read and changed; operator commands; users and roles; the
maintenance page (remote restart, factory settings, clock).

Why aiohttp: a maintained HTTP server with request-size limits, keep-alive and proper parsing
(http.server in the standard library is documented as not for production), wheels for aarch64, and it runs
on its own asyncio loop here, away from the control loop and the Modbus I/O thread.

Every answer is JSON ({"error": …} with a 4xx status on refusal); `?format=csv` exports alarms, logs,
reports and the device list as CSV. Every change (parameters, commands, users, logins) is written to the
operation log with the user who made it. docs/records.md lists the routes and the role table.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

from ems.comm.limits import ConnectionGate, GatedProtocol, Throttle
from ems.config.describe import describe
from ems.config.load import ConfigError
from ems.control.controller import LIVE_SECTIONS
from ems.records import db as DB
from ems.records import queries as Q
from ems.records import reports as R
from ems.records.auth import (OPERATIONAL_SECTIONS, PERMISSIONS, ROLES, AuthError, Users, allowed, manage_rule)
from ems.records.catalogue import catalogue
from ems.records.commands import COMMANDS, NOT_CONFIRMED, CommandBridge
from ems.records.params import apply_changes, current, flatten, section_of
from ems.web.page import add_page_routes
from ems.web.session import (SAFE_METHODS, check_csrf, clear_session_cookie, csrf_token, keep_alive, request_token,
                             set_session_cookie)

MAX_BODY = 64 * 1024
MAX_STREAMS = 16            # live streams (SSE) open at once, all clients together
MAX_STREAMS_PER_CLIENT = 5  # … from one address (a laptop with five pages open)
STREAM_POLL_S = 0.2         # a stream looks for a new publish this often (no thread per stream)
MAX_BUNDLE_BYTES = 512 * 1024 * 1024     # an update bundle (every wheel for the board): streamed, not buffered


MAX_JSON_DEPTH = 8          # the deepest body any route takes is 3 ({"section": {"key": [..]}})


def _depth(value, limit: int = MAX_JSON_DEPTH + 1) -> int:
    """Nesting depth of a parsed JSON value, counted no further than `limit` (no recursion)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if d >= limit:
            return d
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _csv(rows, columns, name: str) -> web.Response:
    return web.Response(text=Q.to_csv(rows, columns), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


class Api:
    def __init__(self, db_path: Path, config_path: Path | None, users: Users, commands: CommandBridge | None = None,
                 maintenance=None, live=None, parallel=None):
        self.db_path, self.config_path, self.users, self.commands = Path(db_path), config_path, users, commands
        self.parallel = parallel            # () → the parallel group's view (ems.parallel.view), None: not offered
        self.maintenance = maintenance      # ems.board.maintenance.RemoteMaintenance, None: not offered
        self.live = live                    # ems.records.live.LiveFeed of the running site, None: not offered
        self.streams: dict[str, int] = {}   # open live streams per client address (bounded: MAX_STREAMS…)
        self._failed_logins = Throttle(60.0, 256)

    # ------------------------------------------------------------------ plumbing
    def _db(self) -> sqlite3.Connection:
        return DB.connect(self.db_path, readonly=True)

    def _read(self, fn, *args):
        """fn(connection, *args) on a read-only connection opened for this request."""
        con = self._db()
        try:
            return fn(con, *args)
        finally:
            con.close()

    def _log(self, user: str, action: str, detail: str) -> None:
        con = DB.connect(self.db_path)
        try:
            with con:
                con.execute("INSERT INTO log (t, kind, action, user, device_id, detail) VALUES (?, 'operation', ?, ?, "
                            "NULL, ?)", (time.time(), action, user, detail))
        finally:
            con.close()

    def _who(self, request: web.Request, permission: str) -> tuple[str, str]:
        """The user and role of the request: a bearer token (API clients), or the page's session cookie,
        which for every change must come with its CSRF token in X-CSRF-Token (web/session.py)."""
        token = request_token(request)
        user, role = self.users.session(token)
        if token is not None and not request.headers.get("Authorization") and request.method not in SAFE_METHODS:
            check_csrf(request, token)
        if not allowed(role, permission):
            raise AuthError(403, f"role {role} may not {permission.replace('_', ' ')}")
        return user, role

    @staticmethod
    async def _body(request: web.Request) -> dict:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AuthError(400, "body must be a JSON object") from None
        except RecursionError:
            raise AuthError(400, "body: JSON nested too deep") from None
        except ValueError as exc:        # e.g. an integer of thousands of digits (Python's conversion limit)
            raise AuthError(400, f"body: not a JSON value this API takes ({str(exc)[:80]})") from None
        if not isinstance(data, dict):
            raise AuthError(400, "body must be a JSON object")
        if _depth(data) > MAX_JSON_DEPTH:
            raise AuthError(400, f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return data

    @web.middleware
    async def errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except AuthError as exc:
            return _json({"error": str(exc)}, exc.status)
        except (Q.QueryError, DB.DatabaseError) as exc:
            return _json({"error": str(exc)}, 400)
        except ConfigError as exc:
            return _json({"error": "invalid parameters: nothing was changed",
                          "problems": [str(p) for p in exc.problems],
                          "fields": [{"key": p.key, "message": p.message} for p in exc.problems]}, 400)
        except web.HTTPException:
            raise
        except Exception as exc:      # never a crash, never a stack trace to the client
            import logging
            logging.getLogger("ems.api").exception("API error on %s %s", request.method, request.path)
            return _json({"error": f"internal error: {type(exc).__name__}"}, 500)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.errors], client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/api/health", self.health)
        r.add_get("/api/session", self.session)
        r.add_get("/api/live", self.live_status)
        r.add_get("/api/live/stream", self.live_stream)
        r.add_get("/api/live/history", self.live_history)
        r.add_get("/api/battery", self.battery)
        r.add_get("/api/cells", self.cells)
        add_page_routes(app)
        r.add_post("/api/setup", self.setup)
        r.add_post("/api/login", self.login)
        r.add_post("/api/logout", self.logout)
        r.add_get("/api/status", self.status)
        r.add_get("/api/alarms", self.alarms)
        r.add_get("/api/catalogue", self.catalogue)
        r.add_get("/api/log", self.log)
        r.add_get("/api/reports/{kind}", self.report)
        r.add_get("/api/stats/{period}", self.stats)
        r.add_get("/api/history/power", self.power_history)
        r.add_get("/api/devices", self.devices)
        r.add_get("/api/parallel", self.parallel_group)
        r.add_get("/api/parameters", self.parameters)
        r.add_get("/api/schema", self.schema)
        r.add_patch("/api/parameters", self.change_parameters)
        r.add_post("/api/commands/{name}", self.command)
        r.add_get("/api/users", self.list_users)
        r.add_post("/api/users", self.create_user)
        r.add_patch("/api/users/{name}", self.modify_user)
        r.add_delete("/api/users/{name}", self.delete_user)
        r.add_post("/api/password", self.own_password)
        r.add_get("/api/maintenance/clock", self.clock)
        r.add_post("/api/maintenance/clock", self.set_clock)
        r.add_post("/api/maintenance/restart", self.restart)
        r.add_post("/api/maintenance/factory-reset", self.factory_reset)
        r.add_get("/api/maintenance/updates", self.updates)
        r.add_post("/api/maintenance/updates", self.reserve_update)
        r.add_delete("/api/maintenance/updates/{task}", self.cancel_update)
        return app

    # ------------------------------------------------------------------ open routes
    async def health(self, request):
        return _json({"ok": True, "setup_required": self.users.count() == 0})

    async def setup(self, request):
        body = await self._body(request)
        self.users.setup(body.get("username"), body.get("password"))
        self._log(body["username"], "user:setup", "first-run setup: admin created")
        return _json({"created": body["username"], "role": "admin"}, 201)

    async def login(self, request):
        body = await self._body(request)
        name = body.get("username")
        try:
            token, role, expires = self.users.login(name, body.get("password"))
        except AuthError as exc:
            # one operation-log row per name per interval, with how many were held back: a flood of bad
            # logins cannot fill the database (the lockout itself is in Users)
            who = str(name)[:64]
            ok, more = self._failed_logins.allow(who)
            if ok:
                self._log(who, "login_failed", str(exc)[:200] + (f" (and {more} more failed logins for this name)"
                                                                  if more else ""))
            raise
        self._log(name, "login", f"role {role}")
        if body.get("cookie") is True:        # the page: the token goes into an HttpOnly cookie, never to its script
            resp = _json({"user": name, "role": role, "expires": expires, "csrf": csrf_token(token)})
            set_session_cookie(resp, token, request)
            return resp
        return _json({"token": token, "role": role, "expires": expires})

    async def session(self, request):
        """The page's own session (after a reload): who, and the CSRF token its changes must carry."""
        user, role = self._who(request, "read")
        token = request_token(request)
        return _json({"user": user, "role": role, "csrf": csrf_token(token),
                      "permissions": sorted(p for p in PERMISSIONS if allowed(role, p)),
                      "live_sections": sorted(LIVE_SECTIONS)})

    async def logout(self, request):
        user, _ = self._who(request, "read")
        self.users.logout(request_token(request))
        self._log(user, "logout", "")
        resp = _json({"logged_out": user})
        clear_session_cookie(resp)
        return resp

    # ------------------------------------------------------------------ the live view (the page)
    def _live(self, request):
        self._who(request, "read")
        if self.live is None:
            raise AuthError(409, "no controller is running with this API")
        return self.live

    async def live_status(self, request):
        _, status = self._live(request).status()
        if status is None:
            raise AuthError(503, "the controller has not published its first status yet")
        return _json(status)

    async def live_history(self, request):
        return _json(self._live(request).history())

    async def battery(self, request):
        data = self._live(request).battery()
        if data is None:
            raise AuthError(503, "the controller has not published its first status yet")
        return _json(data)

    async def cells(self, request):
        data = self._live(request).cells()
        if data is None:
            raise AuthError(503, "the controller has not published its first status yet")
        return _json(data)

    async def live_stream(self, request):
        """Server-Sent Events: one `status` event per publish (1 Hz), a comment every 15 s when there is none.
        Bounded (MAX_STREAMS); the stream keeps its connection from the idle timer while it delivers."""
        live = self._live(request)
        peer = request.remote or "?"
        if sum(self.streams.values()) >= MAX_STREAMS:
            raise AuthError(503, f"{MAX_STREAMS} live streams are open: close a page first")
        if self.streams.get(peer, 0) >= MAX_STREAMS_PER_CLIENT:
            raise AuthError(503, f"{MAX_STREAMS_PER_CLIENT} live streams are open from this address: close a page first")
        self.streams[peer] = self.streams.get(peer, 0) + 1
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
            await resp.prepare(request)
            seq, last_sent = -1, time.monotonic()
            while True:
                new, status = live.status()
                now = time.monotonic()
                if new != seq and status is not None:
                    seq = new
                    await resp.write(b"event: status\ndata: " + json.dumps(status, ensure_ascii=False).encode() + b"\n\n")
                    last_sent = now
                    keep_alive(request)
                elif now - last_sent > 15.0:
                    await resp.write(b": still here\n\n")
                    last_sent = now
                    keep_alive(request)
                await asyncio.sleep(STREAM_POLL_S)
        except ConnectionResetError:             # the page went away: the stream's normal end
            return resp
        finally:
            self.streams[peer] -= 1
            if not self.streams[peer]:
                del self.streams[peer]

    # ------------------------------------------------------------------ reading
    def _q(self, request, key):
        v = request.query.get(key)
        return v if v not in (None, "") else None

    async def status(self, request):
        self._who(request, "read")
        return _json({"live": self._read(Q.live_status), "active_alarms": self._read(Q.alarms, None, None, None, None,
                                                                                           None, True)})

    async def alarms(self, request):
        self._who(request, "read")
        code = self._q(request, "code")
        try:
            code = int(code) if code is not None else None
        except ValueError:
            raise AuthError(400, f"code {code[:40]!r}: a whole number") from None
        rows = self._read(Q.alarms, self._q(request, "since"), self._q(request, "until"), code,
                          self._q(request, "level"), self._q(request, "device"),
                          request.query.get("active") in ("1", "true"))
        if request.query.get("format") == "csv":
            return _csv(rows, Q.ALARM_COLUMNS, "alarms")
        return _json(rows)

    async def catalogue(self, request):
        self._who(request, "read")
        return _json([e.__dict__ for e in catalogue().entries.values()])

    async def log(self, request):
        self._who(request, "read")
        rows = self._read(Q.log_entries, self._q(request, "since"), self._q(request, "until"),
                          self._q(request, "kind"), self._q(request, "user"))
        if request.query.get("format") == "csv":
            return _csv(rows, Q.LOG_COLUMNS, "log")
        return _json(rows)

    async def report(self, request):
        self._who(request, "read")
        kind, when = request.match_info["kind"], self._q(request, "date")
        if when is None:
            raise AuthError(400, "give ?date=YYYY-MM-DD (daily), YYYY-MM (monthly) or YYYY (annual)")
        rows = self._read(R.report, kind, when, request.query.get("interval", "60m"))
        if request.query.get("format") == "csv":
            return _csv(rows, R.REPORT_COLUMNS, f"report_{kind}_{when}")
        return _json(rows)

    async def power_history(self, request):
        self._who(request, "read")
        return _json(self._read(Q.power_series, self._q(request, "since"), self._q(request, "until")))

    async def stats(self, request):
        self._who(request, "read")
        when = self._q(request, "date")
        if when is None:
            raise AuthError(400, "give ?date=YYYY-MM-DD, YYYY-MM or YYYY")
        return _json(self._read(R.stats, request.match_info["period"], when))

    async def parallel_group(self, request):
        """The parallel group: this unit's role and state; on a master every unit, its share, its state."""
        self._who(request, "read")
        if self.parallel is None:
            raise AuthError(404, "not a running site: the parallel group is known to `ems run` only")
        return _json(self.parallel())

    async def devices(self, request):
        self._who(request, "read")
        rows = self._read(Q.devices)
        if request.query.get("format") == "csv":
            return _csv(rows, Q.DEVICE_COLUMNS, "devices")
        return _json(rows)

    # ------------------------------------------------------------------ changing
    async def parameters(self, request):
        self._who(request, "read")
        return _json({"file": str(self.config_path) if self.config_path else None,
                      "parameters": current(self.config_path)})

    async def schema(self, request):
        """Every section's keys with type, default, range, unit, choices and help, for the settings forms."""
        self._who(request, "read")
        return _json(describe(LIVE_SECTIONS, OPERATIONAL_SECTIONS))

    async def change_parameters(self, request):
        user, role = self._who(request, "read")
        body = await self._body(request)
        if self.config_path is None:
            raise AuthError(409, "this controller runs without a site file: parameters cannot be changed here")
        for key in flatten(body):
            section = section_of(key)
            need = "parameters_operational" if section in OPERATIONAL_SECTIONS else "parameters_installation"
            if not allowed(role, need):
                raise AuthError(403, f"role {role} may not change [{section}] parameters")
        cfg, done = apply_changes(self.config_path, body)
        for key, old, new in done:
            self._log(user, "parameter_write", f"{key}: {old!r} → {new!r}")
        saved = [k for k, _, _ in done]
        live: list[str] = []
        pending: list[str] = []
        why_not = None
        live_keys = [k for k in saved if section_of(k) in LIVE_SECTIONS]
        if self.commands is not None:        # the running controller takes strategy sections within one tick
            result = await asyncio.get_running_loop().run_in_executor(
                None, self.commands.submit, "reconfigure", cfg, f"api:{user}")
            if isinstance(result, tuple):      # taken: every strategy section is live (unchanged ones too)
                live = live_keys
            elif result == NOT_CONFIRMED:      # still queued: the loop takes it at its next slow tick
                pending, why_not = live_keys, result
            else:                              # saved, but the controller refused it: say why
                why_not = str(result)
        else:
            why_not = "no controller is running with this API"
        later = [k for k in saved if k not in live and k not in pending]
        return _json({"saved": saved, "file": str(self.config_path), "applied_live": live, "pending_live": pending,
                      "after_restart": later, "restart_required": bool(later), "not_live_because": why_not})

    async def command(self, request):
        user, _ = self._who(request, "command")
        name = request.match_info["name"]
        if name not in COMMANDS:
            raise AuthError(404, f"no command {name!r}; known: {', '.join(COMMANDS)}")
        body = await self._body(request) if request.can_read_body else {}
        target, kind = COMMANDS[name]
        value = body.get("value", True)
        if kind is bool and not isinstance(value, bool):
            raise AuthError(400, f"{name}: value must be true or false")
        if self.commands is None:
            raise AuthError(409, "no controller is running with this API")
        result = self.commands.submit(target, value, f"api:{user}")
        return _json({"command": name, "value": value, "result": result}, 200 if result == "done" else 409)

    async def list_users(self, request):
        self._who(request, "users")
        return _json(self.users.list())

    async def create_user(self, request):
        user, role = self._who(request, "users")
        body = await self._body(request)
        target_role = body.get("role")
        if target_role not in ROLES:
            raise AuthError(400, f"role must be one of {', '.join(ROLES)}")
        manage_rule(user, role, str(body.get("username")), target_role, "create")
        self.users.create(body.get("username"), target_role, body.get("password"))
        self._log(user, "user:create", f"{body['username']} ({target_role})")
        return _json({"created": body["username"], "role": target_role}, 201)

    async def modify_user(self, request):
        user, role = self._who(request, "read")
        name = request.match_info["name"]
        body = await self._body(request)
        target_role = self.users.role_of(name)
        if target_role is None:
            raise AuthError(404, f"no user {name!r}")
        if not allowed(role, "users"):
            raise AuthError(403, f"role {role} may only change its own password (POST /api/password)")
        manage_rule(user, role, name, target_role, "modify")
        new_role = body.get("role")
        if new_role is not None and role != "admin":
            manage_rule(user, role, name, new_role, "create")    # an installer cannot promote anyone
            if name == user:
                raise AuthError(403, "only an admin changes roles")
        self.users.modify(name, new_role, body.get("password"))
        changed = [k for k in ("role", "password") if body.get(k) is not None]
        self._log(user, "user:modify", f"{name}: {', '.join(changed) or 'nothing'}")
        return _json({"modified": name, "changed": changed})

    async def delete_user(self, request):
        user, role = self._who(request, "users")
        name = request.match_info["name"]
        target_role = self.users.role_of(name)
        if target_role is None:
            raise AuthError(404, f"no user {name!r}")
        if name == user:
            raise AuthError(409, "a user cannot delete itself")
        manage_rule(user, role, name, target_role, "delete")
        self.users.delete(name)
        self._log(user, "user:delete", name)
        return _json({"deleted": name})

    async def own_password(self, request):
        user, _ = self._who(request, "read")
        body = await self._body(request)
        if not self.users.verify(user, body.get("old_password")):
            raise AuthError(403, "old password is wrong")
        self.users.modify(user, password=body.get("new_password"))
        self._log(user, "user:password", "own password changed")
        return _json({"modified": user, "changed": ["password"]})


    # ------------------------------------------------------------------ maintenance (000_… 3.3.4.2)
    def _maint(self, request, permission: str):
        user, _ = self._who(request, permission)
        if self.maintenance is None:
            raise AuthError(409, "no controller is running with this API")
        return user, self.maintenance

    async def clock(self, request):
        """The EMS clock and what sets it: NTP (where systemd says), SCADA ([dispatch] clock_from_scada), the
        maintenance page (POST, always there for the maintenance role)."""
        _, m = self._maint(request, "read")
        scada = bool(current(self.config_path)["dispatch"]["clock_from_scada"]) if self.config_path else False
        return _json(await asyncio.get_running_loop().run_in_executor(None, m.clock_info, scada))

    async def set_clock(self, request):
        from ems.board.maintenance import MaintenanceRefused
        user, m = self._maint(request, "maintenance")
        body = await self._body(request)
        try:
            done = m.set_clock_request(body.get("time", ""))
        except MaintenanceRefused as exc:
            raise AuthError(409 if exc.conflict else 400, str(exc)) from None
        self._log(user, "clock_set", f"{done['set']} ({done['step_s']:+.1f} s)")
        return _json(done)

    async def restart(self, request):
        user, m = self._maint(request, "maintenance")
        self._log(user, "restart", "remote restart of the EMS")
        m.restart(f"remote restart by api:{user}")
        return _json({"restarting": True}, 202)

    async def factory_reset(self, request):
        from ems.board.maintenance import MaintenanceRefused
        user, m = self._maint(request, "maintenance")
        body = await self._body(request)
        try:
            done = m.factory_reset_request(body, f"factory reset by api:{user}")
        except MaintenanceRefused as exc:
            raise AuthError(409 if exc.conflict else 400, str(exc)) from None
        self._log(user, "factory_reset", "; ".join(done))
        return _json({"done": done, "restarting": True}, 202)

    async def updates(self, request):
        _, m = self._maint(request, "read")
        try:
            return _json(m.updates())
        except OSError as exc:
            raise AuthError(409, str(exc)) from None

    async def reserve_update(self, request):
        """The bundle is the request body (application/octet-stream), streamed to a file under the update
        folder with a size cap; ?at=ISO time with zone (absent: now), ?deadline_s= (30 … 3600, 300),
        ?allow_downgrade=true to install an older version (admin only; logged)."""
        from ems.board.bundle import BundleError
        from ems.board.migrate import MigrationError
        from ems.board.slots import UpdateError
        user, m = self._maint(request, "upgrade")
        try:
            at = datetime.fromisoformat(request.query["at"]) if "at" in request.query else datetime.now(timezone.utc)
            deadline_s = float(request.query.get("deadline_s", 300))
        except ValueError as exc:
            raise AuthError(400, f"at / deadline_s: {exc}") from None
        if at.tzinfo is None:
            raise AuthError(400, "at needs a time zone, e.g. 2026-11-22T02:00:00+01:00")
        if not 30.0 <= deadline_s <= 3600.0:
            raise AuthError(400, f"deadline_s must be 30 … 3600, got {deadline_s:g}")
        downgrade = request.query.get("allow_downgrade", "false")
        if downgrade not in ("true", "false", "1", "0"):
            raise AuthError(400, f"allow_downgrade {downgrade[:20]!r}: true or false")
        downgrade = downgrade in ("true", "1")
        if downgrade and self.users.role_of(user) != "admin":
            raise AuthError(403, "only an admin may allow a downgrade")
        try:
            folder = m.upload_dir()
        except OSError as exc:
            raise AuthError(409, str(exc)) from None
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".bundle", dir=folder)
        upload = Path(name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_BUNDLE_BYTES:
                        raise AuthError(413, f"bundle larger than {MAX_BUNDLE_BYTES >> 20} MB")
                    fh.write(chunk)
            loop = asyncio.get_running_loop()
            try:
                task = await loop.run_in_executor(None, m.reserve_update, upload, at, deadline_s, f"api:{user}",
                                                  downgrade)
            except (BundleError, UpdateError, MigrationError) as exc:
                raise AuthError(400, f"bundle refused, nothing reserved: {exc}") from None
        finally:
            upload.unlink(missing_ok=True)
        self._log(user, "update_reserved", f"{task['version']} at {task['at']} (task {task['id']})"
                  + (" — downgrade allowed explicitly" if downgrade else ""))
        return _json(task, 201)

    async def cancel_update(self, request):
        user, m = self._maint(request, "upgrade")
        task_id = request.match_info["task"]
        try:
            ok = m.cancel_update(task_id)
        except OSError as exc:
            raise AuthError(409, str(exc)) from None
        if not ok:
            raise AuthError(404, f"no reserved upgrade {task_id!r}")
        self._log(user, "update_cancelled", task_id)
        return _json({"cancelled": task_id})


class ApiServer:
    """The API on its own thread and event loop. `port` 0 picks a free port (tests); `.port` is the real one."""

    def __init__(self, api: Api, host: str, port: int, limits=None):
        """limits: (max connections, per client address, idle timeout s); default [api]'s defaults."""
        self.api, self.host, self.port = api, host, port
        total, per_client, idle_s = limits or (64, 16, 300.0)
        self.gate = ConnectionGate("http api", total, per_client, idle_s, logging.getLogger("ems.api"))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ems-api", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(self.api.app(), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            handler = self._runner.server
            # every connection through the gate: capped in all and per client address, closed when idle
            self._listener = self._loop.run_until_complete(self._loop.create_server(
                lambda: GatedProtocol(handler(), self.gate), self.host, self.port, backlog=128))
            self.port = self._listener.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._listener.close()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._error is None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)


def start_api(cfg, db_path: Path, config_path: Path | None, out, commands: CommandBridge | None,
              maintenance=None, live=None, parallel=None) -> ApiServer | None:
    """`ems run`'s API; a port that cannot be opened is reported and the site runs on without it."""
    a = cfg.api
    users = Users(Path(db_path).with_name("auth.sqlite"), a.session_ttl_min * 60.0)
    try:
        server = ApiServer(Api(db_path, config_path, users, commands, maintenance, live, parallel), a.host, a.port,
                           (a.max_connections, a.max_connections_per_client, a.idle_timeout_s))
    except OSError as exc:
        import sys
        print(f"ems run: HTTP API on {a.host}:{a.port} not started ({exc})", file=sys.stderr)
        return None
    note = " (first run: POST /api/setup creates the admin)" if users.count() == 0 else ""
    out.write(f"http api: http://{a.host}:{server.port}/api{note}\n")
    out.write(f"local page: http://{a.host}:{server.port}/\n")
    return server
