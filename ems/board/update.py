"""`ems update`: apply a signed bundle now or at a reserved time, and wait for the new version's health.

The slot mechanics and the boot guard are in slots.py; this module puts them in order:
verify (signature, hashes) → trial record → install into the inactive slot → migrate the site file →
switch and restart → wait for the new version to confirm itself → roll back if it does not in time.
Reserved-time upgrades (the cloud manual's "Reservation: Yes, Time: …") are verified when scheduled, kept
under var/lib/ems/update/scheduled/, and applied by `ems update run-due` (firmware/ems-update.timer, every
minute) once their time has come.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ems.board import slots
from ems.board.bundle import BundleError, load_trusted, verify
from ems.board.migrate import MigrationError, load_steps
from ems.board.slots import BoardPaths, UpdateError

log = logging.getLogger("ems.update")


def check_downgrade(paths: BoardPaths, manifest: dict, allow_downgrade: bool, who: str | None = None) -> str | None:
    """UpdateError when the bundle is older than the running version, unless allow_downgrade (an admin's
    explicit choice, logged); a signed old bundle with a fixed vulnerability must not simply install.
    Returns a note when a downgrade is allowed."""
    from packaging.version import InvalidVersion, Version

    running = slots.status(paths)["active_version"]
    if running is None:
        return None                          # first install: nothing to go back from
    try:
        new, old = Version(str(manifest["version"])), Version(running)
    except InvalidVersion as exc:
        raise UpdateError(f"cannot compare versions ({exc}): refused") from None
    if new >= old:
        return None
    if not allow_downgrade:
        raise UpdateError(f"{new} is older than the running {old}: a downgrade needs --allow-downgrade "
                          "(API: allow_downgrade = true, admin only)")
    note = f"downgrade {old} → {new} allowed explicitly by {who or _os_user()}"
    log.warning(note)
    return note


def apply(paths: BoardPaths, bundle: Path, deadline_s: float = 300.0, restart=None, wait: bool = True,
          poll_s: float = 1.0, installer=slots.pip_installer, clock=time.time, sleep=time.sleep,
          allow_downgrade: bool = False, who: str | None = None) -> str:
    """Install and switch; with wait, block until confirmed or rolled back. Returns the outcome in words."""
    paths.update.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=paths.update))
    try:
        v = verify(bundle, load_trusted(paths.keys), staging)
        check_downgrade(paths, v.manifest, allow_downgrade, who)
        load_steps(v.migrations)                  # a broken migration refuses the update before anything changes
        trial = slots.begin(paths, v.manifest, deadline_s, now=clock())
        try:
            slots.install_slot(paths, trial["slot"], v.wheels, v.manifest, installer)
            done = slots.migrate_config(paths, v.migrations, int(v.manifest["config_version"]))
        except (UpdateError, MigrationError, OSError) as exc:
            slots.rollback(paths, f"install failed: {exc}")
            raise UpdateError(f"update to {trial['version']} failed, nothing changed: {exc}") from None
        slots.switch(paths, restart, now=clock())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    migrated = f" (site file migrated: {', '.join(done)})" if done else ""
    if not wait:
        return f"{trial['version']} installed in slot {trial['slot']} and started{migrated}; it must confirm " \
               f"within {deadline_s:g} s"
    while True:
        st = slots.read_state(paths)
        t = st.get("trial")
        if t is None:
            last = st["history"][-1] if st["history"] else {}
            if last.get("event") == "confirmed" and last.get("version") == trial["version"]:
                guard = "; boot guard refreshed" if slots.refresh_guard(paths) else ""
                return f"{trial['version']} is running and confirmed healthy{migrated}{guard}"
            return f"{trial['version']} was rolled back: {last.get('reason', 'unknown')}"
        if clock() > t["deadline"]:
            slots.rollback(paths, "health deadline passed", restart)
            return f"{trial['version']} did not confirm within {deadline_s:g} s: rolled back to {t.get('from_version')}"
        sleep(poll_s)


# ---------------------------------------------------------------- reserved-time upgrades
def schedule(paths: BoardPaths, bundle: Path, at: datetime, deadline_s: float = 300.0, creator: str | None = None,
             allow_downgrade: bool = False) -> str:
    """Verify the bundle now (a bad one is refused at once, not at night) and keep it for `at`, with its
    health deadline and who reserved it (the cloud manual's task list: number, creator, firmware, time)."""
    if at.tzinfo is None:
        raise UpdateError("the reservation time needs a time zone (e.g. 2026-11-22T02:00+01:00)")
    probe = Path(tempfile.mkdtemp(prefix="check-", dir=_mk(paths.update)))
    try:
        v = verify(bundle, load_trusted(paths.keys), probe)
        check_downgrade(paths, v.manifest, allow_downgrade, creator)
        load_steps(v.migrations)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    task_id = uuid.uuid4().hex[:8]
    d = _mk(paths.scheduled / task_id)
    shutil.copy2(bundle, d / "bundle.tar")
    slots.write_json(d / "task.json", {"id": task_id, "at": at.isoformat(), "version": v.manifest["version"],
                                       "deadline_s": deadline_s, "creator": creator or _os_user(),
                                       "allow_downgrade": bool(allow_downgrade),
                                       "created": datetime.now(timezone.utc).isoformat()})
    return task_id


def scheduled(paths: BoardPaths) -> list[dict]:
    out = []
    for f in sorted(paths.scheduled.glob("*/task.json")) if paths.scheduled.exists() else []:
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda t: t["at"])


def cancel(paths: BoardPaths, task_id: str) -> bool:
    d = paths.scheduled / task_id
    if not (d / "task.json").exists() or "/" in task_id or task_id.startswith("."):
        return False
    shutil.rmtree(d)
    return True


def run_due(paths: BoardPaths, now: datetime | None = None, **apply_kw) -> list[str]:
    """Apply every task whose time has come (oldest first; one at a time: the next waits for the previous
    to confirm or roll back)."""
    now = now or datetime.now(timezone.utc)
    results = []
    for task in scheduled(paths):
        if datetime.fromisoformat(task["at"]) > now:
            continue
        d = paths.scheduled / task["id"]
        try:
            kw = {"deadline_s": float(task.get("deadline_s", 300.0)), "allow_downgrade":
                  bool(task.get("allow_downgrade", False)), "who": task.get("creator"), **apply_kw}
            results.append(f"{task['id']}: " + apply(paths, d / "bundle.tar", **kw))
        except (UpdateError, BundleError, MigrationError) as exc:
            results.append(f"{task['id']}: refused: {exc}")
        shutil.rmtree(d, ignore_errors=True)
    return results


def _os_user() -> str:
    """Who ran the command: the sudo caller when there is one, else the OS user."""
    import getpass
    return "cli:" + (os.environ.get("SUDO_USER") or getpass.getuser())


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


class HealthConfirm:
    """In the running service: confirm an update trial once the fast loop has been healthy for confirm_s
    without a break. Does nothing outside a board layout or when no trial is pending."""

    def __init__(self, paths: BoardPaths | None, confirm_s: float, clock=time.monotonic):
        self.paths, self.confirm_s, self.clock = paths, confirm_s, clock
        self.since: float | None = None
        self.done = paths is None or not paths.state_file.exists()
        self.result: str | None = None

    def observe(self, healthy: bool) -> None:
        if self.done:
            return
        now = self.clock()
        if not healthy:
            self.since = None
            return
        if self.since is None:
            self.since = now
        elif now - self.since >= self.confirm_s:
            self.done = True
            self.result = "confirmed" if slots.confirm(self.paths) else "no trial pending"
