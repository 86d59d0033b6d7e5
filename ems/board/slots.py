"""A/B program slots on the board, the update transaction, and its rollback.

Layout (under `root`, "/" on a board; tests use a temporary folder):

    opt/ems/slots/a, opt/ems/slots/b   one installed version each: site-packages/, VERSION, manifest.json
    opt/ems/current -> slots/a         what the service runs (PYTHONPATH=/opt/ems/current/site-packages)
    etc/ems/site.toml                  the site file (outside the slots: survives updates)
    etc/ems/update-keys/*.pub          trusted update keys
    var/lib/ems/                       data and history (outside the slots)
    var/lib/ems/update/state.json      the update transaction's state

The transaction, in an order where a power cut at any point leaves a working version:

1. state: trial {slot, from, phase "installing"}         (written atomically: temp file, fsync, rename)
2. the bundle's wheels into slots/<inactive>.new, then renamed to slots/<inactive>
3. site file migrated (its old copy kept as site.toml.before-<version>)
4. `current` switched (a new symlink renamed over the old: atomic), state phase "switched", service restarted
5. the new version confirms itself after running healthy for [board] health_confirm_s; if it has not by
   the deadline, or the service has started more than MAX_TRIAL_BOOTS times in trial (it crashes, or
   the watchdog kills it), the previous slot and the old site file come back.

The boot guard (`ems-slot-guard`, ExecStartPre= of the service) runs before every start: an interrupted
install (phase "installing") is undone, a trial past its deadline or boot budget is rolled back. It uses
the standard library only and lives outside the slots, so a broken new version cannot break it. It is
refreshed from the running version (this file in its slot) only once that version has confirmed itself
and no update is in progress: by `ems update apply` after the confirmation, and by the guard itself at a
start; a copy that does not compile is never installed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MAX_TRIAL_BOOTS = 3
SLOTS = ("a", "b")


@dataclass(frozen=True)
class BoardPaths:
    root: Path = Path("/")

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def opt(self) -> Path:
        return self.root / "opt/ems"

    @property
    def slots(self) -> Path:
        return self.opt / "slots"

    @property
    def guard(self) -> Path:
        return self.opt / "bin" / "ems-slot-guard"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def etc(self) -> Path:
        return self.root / "etc/ems"

    @property
    def config(self) -> Path:
        return self.etc / "site.toml"

    @property
    def keys(self) -> Path:
        return self.etc / "update-keys"

    @property
    def data(self) -> Path:
        return self.root / "var/lib/ems"

    @property
    def update(self) -> Path:
        return self.data / "update"

    @property
    def state_file(self) -> Path:
        return self.update / "state.json"

    @property
    def scheduled(self) -> Path:
        return self.update / "scheduled"

    def slot(self, name: str) -> Path:
        return self.slots / name


class UpdateError(Exception):
    pass


# ---------------------------------------------------------------- small atomic helpers
def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def switch_link(link: Path, target: str) -> None:
    """Point `link` at `target` atomically (a new symlink renamed over the old one)."""
    tmp = link.with_name(link.name + ".new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


# ---------------------------------------------------------------- state
def read_state(paths: BoardPaths) -> dict:
    try:
        st = json.loads(paths.state_file.read_text())
        if isinstance(st, dict):
            st.setdefault("history", [])
            return st
    except (OSError, ValueError):
        pass
    return {"trial": None, "history": []}


def active_slot(paths: BoardPaths) -> str | None:
    try:
        name = Path(os.readlink(paths.current)).name
    except OSError:
        return None
    return name if name in SLOTS else None


def slot_version(paths: BoardPaths, slot: str) -> str | None:
    try:
        return (paths.slot(slot) / "VERSION").read_text().strip()
    except OSError:
        return None


def status(paths: BoardPaths) -> dict:
    st = read_state(paths)
    act = active_slot(paths)
    return {"active_slot": act, "active_version": slot_version(paths, act) if act else None,
            "slots": {s: slot_version(paths, s) for s in SLOTS}, "trial": st.get("trial"),
            "last": st["history"][-1] if st["history"] else None}


def _log(st: dict, event: str, **kw) -> None:
    st["history"] = (st.get("history", []) + [{"time": time.time(), "event": event, **kw}])[-50:]


# ---------------------------------------------------------------- install into a slot
def pip_installer(wheels: list[Path], target: Path) -> None:
    """Install wheels (the program and every dependency, from the bundle only) into target."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--target", str(target), *map(str, wheels)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise UpdateError(f"installing the wheels failed: {r.stderr.strip()[-500:]}")


def install_slot(paths: BoardPaths, slot: str, wheels: list[Path], manifest: dict, installer=pip_installer) -> None:
    new = paths.slots / f"{slot}.new"
    if new.exists():
        shutil.rmtree(new)
    new.mkdir(parents=True)
    installer(wheels, new / "site-packages")
    (new / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (new / "VERSION").write_text(str(manifest["version"]) + "\n")
    _fsync_dir(new)
    old = paths.slot(slot)
    if old.exists():
        trash = paths.slots / f"{slot}.old"
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(old, trash)
        shutil.rmtree(trash)
    os.replace(new, old)
    _fsync_dir(paths.slots)


# ---------------------------------------------------------------- the transaction
def begin(paths: BoardPaths, manifest: dict, deadline_s: float, now: float | None = None) -> dict:
    """Steps 1: the trial record (phase installing). Returns it."""
    now = time.time() if now is None else now
    act = active_slot(paths)
    if act is None:
        raise UpdateError(f"{paths.current} does not point at a slot: is the program installed (firmware/install.sh)?")
    st = read_state(paths)
    if st.get("trial"):
        raise UpdateError(f"an update is already in progress ({st['trial']['version']}); confirm or roll it back first")
    target = "b" if act == "a" else "a"
    trial = {"slot": target, "from": act, "version": str(manifest["version"]),
             "from_version": slot_version(paths, act), "phase": "installing", "started": now,
             "deadline": now + deadline_s, "deadline_s": deadline_s, "boots": 0, "config_backup": None}
    st["trial"] = trial
    _log(st, "install", version=trial["version"], slot=target)
    write_json(paths.state_file, st)
    return trial


def migrate_config(paths: BoardPaths, migrations: list[Path], target_version: int) -> list[str]:
    """Step 3: keep a copy of the site file for the rollback, then migrate it forward."""
    from ems.board.migrate import migrate_file      # here, not at the top: the boot guard stays stdlib-only
    st = read_state(paths)
    if not paths.config.exists():
        return []
    backup = paths.etc / f"site.toml.before-{st['trial']['version']}"
    shutil.copy2(paths.config, backup)
    st["trial"]["config_backup"] = str(backup)
    write_json(paths.state_file, st)
    return migrate_file(paths.config, migrations, target_version)


def switch(paths: BoardPaths, restart=None, now: float | None = None) -> None:
    """Step 4: the new slot becomes current; the deadline runs from now."""
    now = time.time() if now is None else now
    st = read_state(paths)
    trial = st["trial"]
    trial["phase"] = "switched"
    trial["switched"] = now
    trial["deadline"] = now + trial["deadline_s"]
    write_json(paths.state_file, st)
    switch_link(paths.current, f"slots/{trial['slot']}")
    if restart:
        restart()


def confirm(paths: BoardPaths) -> bool:
    """Step 5, called by the running version once healthy: the trial becomes the active version. False when
    there is no trial of the slot that is running."""
    st = read_state(paths)
    trial = st.get("trial")
    if not trial or trial.get("phase") != "switched" or active_slot(paths) != trial["slot"]:
        return False
    st["trial"] = None
    _log(st, "confirmed", version=trial["version"], slot=trial["slot"])
    write_json(paths.state_file, st)
    return True


def rollback(paths: BoardPaths, reason: str, restart=None) -> bool:
    """Back to the previous slot and the site file as it was before the update. False if nothing to undo."""
    st = read_state(paths)
    trial = st.get("trial")
    if not trial:
        return False
    if active_slot(paths) != trial["from"]:
        switch_link(paths.current, f"slots/{trial['from']}")
    backup = trial.get("config_backup")
    if backup and Path(backup).exists():
        tmp = paths.config.with_suffix(".restoring")
        shutil.copy2(backup, tmp)
        os.replace(tmp, paths.config)
    st["trial"] = None
    _log(st, "rolled_back", version=trial["version"], to=trial.get("from_version"), reason=reason)
    write_json(paths.state_file, st)
    if restart:
        restart()
    return True


def refresh_guard(paths: BoardPaths) -> bool:
    """Install the confirmed version's boot guard (its ems/board/slots.py) as opt/ems/bin/ems-slot-guard
    when it differs; True when it was replaced. Only between updates: a version in trial has not earned
    it. A copy that does not compile is refused (the old guard stays). Root's job: the service's user
    cannot write /opt."""
    if read_state(paths).get("trial") or not paths.guard.parent.is_dir():
        return False
    src = paths.current / "site-packages" / "ems" / "board" / "slots.py"
    try:
        new = src.read_bytes()
        if paths.guard.exists() and paths.guard.read_bytes() == new:
            return False
        compile(new, str(src), "exec")
    except (OSError, SyntaxError, ValueError):
        return False
    tmp = paths.guard.with_name(paths.guard.name + ".new")
    with open(tmp, "wb") as fh:
        fh.write(new)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o755)
    os.replace(tmp, paths.guard)
    _fsync_dir(paths.guard.parent)
    return True


def boot_guard(paths: BoardPaths, now: float | None = None) -> str:
    """Before every service start. Returns what it did (for the journal)."""
    now = time.time() if now is None else now
    st = read_state(paths)
    trial = st.get("trial")
    if not trial:
        return "no update in progress" + ("; boot guard refreshed from the running version"
                                          if refresh_guard(paths) else "")
    if trial.get("phase") != "switched":
        rollback(paths, "install interrupted before the switch")
        return f"install of {trial['version']} was interrupted: undone, running {trial.get('from_version')}"
    trial["boots"] = int(trial.get("boots", 0)) + 1
    write_json(paths.state_file, st)
    if trial["boots"] > MAX_TRIAL_BOOTS:
        rollback(paths, f"started {trial['boots'] - 1} times without confirming")
        return f"{trial['version']} did not come up healthy: rolled back to {trial.get('from_version')}"
    if now > trial["deadline"]:
        rollback(paths, "health deadline passed")
        return f"{trial['version']} missed its health deadline: rolled back to {trial.get('from_version')}"
    return f"trial of {trial['version']}, start {trial['boots']} of {MAX_TRIAL_BOOTS}"


def systemctl_restart(unit: str = "ems.service"):
    def restart():
        subprocess.run(["systemctl", "restart", "--no-block", unit], check=False)
    return restart


def main(argv=None) -> int:
    """ems-slot-guard [ROOT]: the boot guard (stdlib only; see the module doc)."""
    argv = sys.argv[1:] if argv is None else argv
    paths = BoardPaths(Path(argv[0]) if argv else Path("/"))
    try:
        print(f"ems-slot-guard: {boot_guard(paths)}")
    except Exception as exc:      # never keep the service from starting: the current slot still runs
        print(f"ems-slot-guard: {exc!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
