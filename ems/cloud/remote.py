"""Remote operation from the cloud (docs/cloud.md): requests on `{prefix}/{site}/v1/request/{identity}`,
answers on `…/reply/{identity}`. The broker's ACL lets each identity write its own request topic only, so
the topic's last level is who asks; [cloud] identities gives each one of the manual's roles, and the
API's permissions decide (ems.records.auth). What it may do goes through the API's own paths: commands
and remote dispatch through the command bridge to the control loop, parameters through the same
validation and atomic save as `PATCH /api/parameters` (a strategy section live within one slow tick).
Every request is logged with its identity; a refused one is answered with the reasons and changes
nothing. Bounded: 16 KiB a request, JSON 8 levels deep, 5 requests a second per identity, 256 waiting.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from ems.comm.limits import RateLimitedLog
from ems.config.load import ConfigError
from ems.records import db as DB
from ems.records.auth import OPERATIONAL_SECTIONS, allowed
from ems.records.commands import COMMANDS, NOT_CONFIRMED
from ems.records.api import MAX_BUNDLE_BYTES, MAX_JSON_DEPTH as MAX_DEPTH, _depth
from ems.records.params import apply_changes, current, flatten, section_of

log = logging.getLogger("ems.cloud")
MAX_REQUEST = 16 * 1024
RATE_PER_S = 5.0


class Refused(Exception):
    def __init__(self, *reasons: str):
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


def download_target(folder: Path, url: str) -> Path:
    """Where a task's bundle is downloaded: named after its URL, so a task the cloud sends again after the
    EMS restarted continues the `.part` the last process left (ems.cloud.download resumes it with Range)."""
    return folder / f"cloud-{hashlib.sha256(url.encode()).hexdigest()[:16]}.bundle"


class RemoteOperation:
    def __init__(self, cfg, config_path: Path | None, commands, db_path: Path | None, pcs_protection=None,
                 maintenance=None):
        """pcs_protection: the site PCS's grid protection (ems.comm.pcs_protection), None when it has none;
        maintenance: the board's (ems.board.maintenance.RemoteMaintenance) for upgrade tasks, None off a board."""
        self.cfg = cfg
        self.roles = {i.name: i.role for i in cfg.cloud.identities}
        self.config_path, self.commands, self.db_path = config_path, commands, db_path
        self.pcs_protection = pcs_protection
        self.maintenance = maintenance
        self.reply = None                     # (identity, answer) → published (set by the uplink)
        self._upgrade: threading.Thread | None = None
        self._tokens: dict[str, tuple[float, float]] = {}
        self._warn = RateLimitedLog(log, 60.0)
        self.handled = 0
        self.refused = 0
        self.uplink = None                    # set by the uplink it serves (the live cycle is the uplink's)

    def handle(self, identity: str, body: bytes) -> dict:
        """One request → its answer (never raises)."""
        rid = None
        try:
            if len(body) > MAX_REQUEST:
                raise Refused(f"request larger than {MAX_REQUEST} bytes")
            try:
                req = json.loads(body)
            except (ValueError, RecursionError):
                raise Refused("not JSON") from None
            if not isinstance(req, dict):
                raise Refused("a JSON object is expected")
            rid = req.get("id")
            if not isinstance(rid, str) or not 1 <= len(rid) <= 64:
                rid = None
                raise Refused("id: a string of 1 … 64 characters, echoed in the reply")
            if _depth(req) > MAX_DEPTH:
                raise Refused(f"JSON nested deeper than {MAX_DEPTH} levels")
            role = self.roles.get(identity)
            if role is None:
                raise Refused(f"identity {identity!r} is not in [cloud] identities")
            if not self._rate_ok(identity):
                raise Refused(f"more than {RATE_PER_S:g} requests a second: wait")
            result = self._act(identity, role, req)
            self.handled += 1
            return {"id": rid, "ok": True, "result": result}
        except Refused as exc:
            self.refused += 1
            self._warn.warning(identity, "cloud: request from %s refused: %s", identity, exc)
            self._log(identity, "cloud_refused", str(exc)[:300])
            return {"id": rid, "ok": False, "error": str(exc), "reasons": exc.reasons}
        except Exception as exc:               # never let a request take the uplink down
            log.exception("cloud request from %s failed", identity)
            return {"id": rid, "ok": False, "error": f"internal error: {type(exc).__name__}", "reasons": []}

    def _rate_ok(self, identity: str) -> bool:
        now = time.monotonic()
        tokens, at = self._tokens.get(identity, (RATE_PER_S, now))
        tokens = min(RATE_PER_S, tokens + (now - at) * RATE_PER_S)
        if tokens < 1.0:
            self._tokens[identity] = (tokens, now)
            return False
        self._tokens[identity] = (tokens - 1.0, now)
        return True

    def _need(self, role: str, permission: str, what: str) -> None:
        if not allowed(role, permission):
            raise Refused(f"role {role} may not {what}")

    def _act(self, identity: str, role: str, req: dict):
        action, user = req.get("action"), f"cloud:{identity}"
        if action == "command":
            self._need(role, "command", "send commands")
            name = req.get("name")
            if name not in COMMANDS:
                raise Refused(f"no command {name!r}; known: {', '.join(COMMANDS)}")
            target, kind = COMMANDS[name]
            value = req.get("value", True)
            if kind is bool and not isinstance(value, bool):
                raise Refused(f"{name}: value must be true or false")
            return self._submit(target, value, user)
        if action == "dispatch":
            return self._dispatch(role, user, req)
        if action == "grid_operator":
            self._need(role, "command", "dispatch")
            limits = req.get("limits")
            if not isinstance(limits, dict):
                raise Refused('limits: an object, e.g. {"pcs_limit_w": 50000, "feed_in_limit_w": 0, '
                              '"ramp_w_per_s": 5000, "lease_s": 300}')
            return self._submit("grid_operator", limits, user)
        if action == "live":
            self._need(role, "read", "ask for the live cycle")
            cycle, lease = req.get("cycle_s", 5.0), req.get("lease_s", 600.0)
            longest = self.cfg.cloud.live_cycle_max_s
            for name, v, lo, hi in (("cycle_s", cycle, 1.0, 300.0), ("lease_s", lease, 1.0, longest)):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                    raise Refused(f"{name}: {lo:g} … {hi:g} s")
            if self.uplink is None:
                raise Refused("no uplink")
            return self.uplink.set_live(float(cycle), float(lease))
        if action in ("pcs_protection_get", "pcs_protection_set"):
            return self._protection(identity, role, action, req)
        if action == "upgrade":
            return self._start_upgrade(identity, role, req)
        if action == "restart":
            self._need(role, "maintenance", "restart the EMS")
            if self.maintenance is None:
                raise Refused("no controller is running")
            self._log(identity, "restart", "remote restart of the EMS")
            self.maintenance.restart(f"remote restart by cloud:{identity}")     # a clean stop in 0.5 s: answered first
            return {"restarting": True}
        if action in ("clock_get", "clock_set", "factory_reset"):
            return self._maintain(identity, role, action, req)
        if action == "parameters_get":
            self._need(role, "read", "read parameters")
            group = req.get("group")
            params = current(self.config_path)
            if group not in params:
                raise Refused(f"no parameter group {group!r}; groups are the site file's sections")
            return {"group": group, "parameters": params[group]}
        if action == "parameters_set":
            return self._set(role, user, req.get("changes"))
        raise Refused(f"action {action!r}: one of command, dispatch, grid_operator, live, parameters_get, "
                      "parameters_set, pcs_protection_get, pcs_protection_set, upgrade, restart, clock_get, "
                      "clock_set, factory_reset")

    def _dispatch(self, role: str, user: str, req: dict) -> dict:
        """The remote setpoints: active power `value_w` and/or reactive power `reactive_var`, each a lease
        (null ends it; a key not given leaves that setpoint as it is)."""
        self._need(role, "command", "dispatch")
        lease = req.get("lease_s", self.cfg.dispatch.lease_s)
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 1 <= lease <= 3600:
            raise Refused("lease_s: 1 … 3600 s")
        limits = {"value_w": ("dispatch_w", self.cfg.pcs.rated_power_w, "W (the PCS rating)"),
                  "reactive_var": ("reactive_var", self.cfg.pcs.apparent_va, "var (the PCS's apparent power)")}
        given = [k for k in limits if k in req]
        if not given:
            raise Refused("value_w and/or reactive_var: a number, or null to end that setpoint")
        reasons = []
        for key in given:
            v, (_, limit, what) = req[key], limits[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not -limit <= v <= limit):
                reasons.append(f"{key}: a number within ±{limit:g} {what}, or null to end it")
        if reasons:
            raise Refused(*reasons)
        out = {}
        for key in given:
            v = req[key]
            out[key] = self._submit(limits[key][0], {"value": None if v is None else float(v),
                                                     "lease_s": float(lease)}, user)
        return out["value_w"] if given == ["value_w"] else out

    def _maintain(self, identity: str, role: str, action: str, req: dict) -> dict:
        """The maintenance page's clock and factory settings (000_… 3.3.4.2): RemoteMaintenance's requests, as
        the API takes them."""
        from ems.board.maintenance import MaintenanceRefused
        m = self.maintenance
        if action == "clock_get":
            self._need(role, "read", "read the clock")
        else:
            self._need(role, "maintenance", "change the clock" if action == "clock_set" else "restore factory settings")
        if m is None:
            raise Refused("no controller is running")
        try:
            if action == "clock_get":
                return m.clock_info(bool(self.cfg.dispatch.clock_from_scada))
            if action == "clock_set":
                done = m.set_clock_request(req.get("time", ""))
                self._log(identity, "clock_set", f"{done['set']} ({done['step_s']:+.1f} s)")
                return done
            done = m.factory_reset_request(req, f"factory reset by cloud:{identity}")
        except MaintenanceRefused as exc:
            raise Refused(str(exc)) from None
        self._log(identity, "factory_reset", "; ".join(done))
        return {"done": done, "restarting": True}

    def _protection(self, identity: str, role: str, action: str, req: dict) -> dict:
        from ems.comm.pcs_protection import ProtectionError
        p = self.pcs_protection
        if p is None:
            raise Refused("this site's PCS has no grid-protection registers in its profile")
        if action == "pcs_protection_get":
            self._need(role, "read", "read the PCS's protection")
            return {"parameters": p.query()}
        self._need(role, "parameters_installation", "change the PCS's grid protection")
        before = p.query()
        try:
            done = p.set(req.get("changes"))
        except ProtectionError as exc:
            raise Refused(*exc.reasons) from None
        for k, v in done["written"].items():
            self._log(identity, "pcs_protection_write", f"{k}: {before.get(k)!r} → {v!r} (read back "
                      f"{done['read_back'][k]!r})")
        return done

    def _start_upgrade(self, identity: str, role: str, req: dict) -> dict:
        """The cloud's upgrade task (002_… Upgrade Management): download the bundle, verify it and reserve it
        as an upload through the API does. Answered at once ("downloading"), then again when it is reserved
        or refused; one task at a time."""
        from datetime import datetime, timezone
        self._need(role, "upgrade", "start upgrades")
        if self.maintenance is None or getattr(self.maintenance, "paths", None) is None:
            raise Refused("not running as the board's service (ems run --board-root): no upgrades here")
        if self._upgrade is not None and self._upgrade.is_alive():
            raise Refused("an upgrade task is being downloaded already")
        url, sha, at = req.get("url"), req.get("sha256"), req.get("at")
        if not isinstance(url, str) or not 8 <= len(url) <= 2048:
            raise Refused("url: the bundle's http(s) URL")
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
            raise Refused("sha256: 64 hex digits, or absent")
        try:
            when = datetime.fromisoformat(at) if at is not None else datetime.now(timezone.utc)
        except (TypeError, ValueError):
            raise Refused("at: an ISO 8601 time with its zone, e.g. 2026-12-02T02:00:00+01:00") from None
        if when.tzinfo is None:
            raise Refused("at needs a time zone")
        deadline = req.get("deadline_s", 300)
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 30 <= deadline <= 3600:
            raise Refused("deadline_s: 30 … 3600")
        rid = req.get("id")
        self._upgrade = threading.Thread(target=self._run_upgrade, args=(identity, rid, url, sha, when,
                                                                            float(deadline)),
                                         name="ems-cloud-upgrade", daemon=True)
        self._upgrade.start()
        self._log(identity, "upgrade_requested", f"{url[:200]} at {when.isoformat()}")
        return {"state": "downloading", "url": url}

    def _run_upgrade(self, identity, rid, url, sha, when, deadline_s) -> None:
        from ems.board.bundle import BundleError
        from ems.board.migrate import MigrationError
        from ems.board.slots import UpdateError
        from ems.cloud.download import DownloadError, download
        answer = {"id": rid, "ok": False, "reasons": []}
        target = None
        try:
            folder = self.maintenance.upload_dir()
            target = download_target(folder, url)
            for stale in folder.glob("cloud-*.bundle.part"):    # one task at a time: another URL's is dead
                if stale != target.with_name(target.name + ".part"):
                    stale.unlink(missing_ok=True)
            download(url, target, MAX_BUNDLE_BYTES, sha, progress=self._progress(identity, rid))
            task = self.maintenance.reserve_update(target, when, deadline_s, f"cloud:{identity}")
            answer.update(ok=True, result={"state": "reserved", **task})
            self._log(identity, "update_reserved", f"{task['version']} at {task['at']} (task {task['id']})")
        except (DownloadError, BundleError, UpdateError, MigrationError, OSError) as exc:
            answer.update(error=f"upgrade refused, nothing reserved: {exc}", reasons=[str(exc)])
            self._log(identity, "cloud_refused", f"upgrade {url[:200]}: {exc}")
        except Exception as exc:              # the thread must report, not die silently
            log.exception("cloud upgrade task failed")
            answer.update(error=f"internal error: {type(exc).__name__}")
        finally:
            if target is not None:
                target.unlink(missing_ok=True)
        if self.reply is not None:
            self.reply(identity, answer)

    def _progress(self, identity: str, rid):
        """The download's progress as answers to the task's request: every 10 % (or every 5 s when the size
        is not known), state "downloading" with bytes, total and pct."""
        last = {"pct": -100.0, "at": -1e18}

        def report(got: int, total: int | None) -> None:
            now = time.monotonic()
            pct = 100.0 * got / total if total else None
            too_soon = (pct - last["pct"] < 10.0 and pct < 100.0) if pct is not None else now - last["at"] < 5.0
            if too_soon:
                return
            last.update(pct=pct if pct is not None else last["pct"], at=now)
            if self.reply is not None:
                self.reply(identity, {"id": rid, "ok": True, "result": {
                    "state": "downloading", "bytes": got, "total": total,
                    "pct": None if pct is None else round(pct, 1)}})
        return report

    def _submit(self, name: str, value, user: str) -> str:
        if self.commands is None:
            raise Refused("no controller is running")
        result = self.commands.submit(name, value, user)
        if result not in ("done", NOT_CONFIRMED):
            raise Refused(str(result))
        return result

    def _set(self, role: str, user: str, changes) -> dict:
        if self.config_path is None:
            raise Refused("this controller runs without a site file: parameters cannot be changed here")
        if not isinstance(changes, dict) or not changes:
            raise Refused('changes: an object, e.g. {"self_use.reserve_soc_pct": 15}')
        for key in flatten(changes):
            section = section_of(key)
            need = "parameters_operational" if section in OPERATIONAL_SECTIONS else "parameters_installation"
            if not allowed(role, need):
                raise Refused(f"role {role} may not change [{section}] parameters")
        try:
            cfg, done = apply_changes(self.config_path, changes)
        except ConfigError as exc:
            raise Refused(*[str(p) for p in exc.problems]) from None
        for key, old, new in done:
            self._log(user.split(":", 1)[1], "parameter_write", f"{key}: {old!r} → {new!r}", user)
        live = self.commands.submit("reconfigure", cfg, user) if self.commands is not None else None
        applied = [k for k, _, _ in done if isinstance(live, tuple) and section_of(k) in live[0]]
        return {"saved": [k for k, _, _ in done], "applied_live": applied,
                "after_restart": [k for k, _, _ in done if k not in applied]}

    def _log(self, identity: str, action: str, detail: str, user: str | None = None) -> None:
        if self.db_path is None:
            return
        try:
            con = DB.connect(self.db_path)
            try:
                with con:
                    con.execute("INSERT INTO log (t, kind, action, user, device_id, detail) VALUES (?, 'operation', "
                                "?, ?, NULL, ?)", (time.time(), action, user or f"cloud:{identity}", detail))
            finally:
                con.close()
        except Exception as exc:               # the history is the recorder's: a busy file is logged, not raised
            self._warn.warning("log", "cloud: could not log %s: %s", action, exc)
