"""The installer manual's basic maintenance (000_… 3.3.4.2): remote restart of the EMS, restoration of
factory settings, clock synchronisation."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from ems.board.slots import BoardPaths

CLOCK_MIN = datetime(2024, 1, 1, tzinfo=timezone.utc)       # a clock set before this is a wrong clock
CLOCK_MAX = datetime(2100, 1, 1, tzinfo=timezone.utc)


def factory_reset(paths: BoardPaths, wipe_history: bool = False) -> list[str]:
    """The site file back to the cabinet's factory file (etc/ems/factory-site.toml, laid down by the
    installer; the old file kept as site.toml.before-reset). History, alarms and logs stay unless
    wipe_history. The battery's learned state (SOC, SOH) always stays: it is knowledge of the cells, not a
    setting. Returns what was done; the service must be restarted for it to take effect."""
    factory = paths.etc / "factory-site.toml"
    if not factory.exists():
        raise FileNotFoundError(f"{factory}: no factory site file on this board (firmware/install.sh lays it down)")
    done = []
    if paths.config.exists():
        shutil.copy2(paths.config, paths.etc / "site.toml.before-reset")
        done.append(f"kept the old site file as {paths.etc / 'site.toml.before-reset'}")
    tmp = paths.config.with_suffix(".resetting")
    shutil.copy2(factory, tmp)
    os.replace(tmp, paths.config)
    done.append(f"site file restored from {factory}")
    if wipe_history:
        for p in sorted(paths.data.glob("history.sqlite*")):
            p.unlink()
            done.append(f"removed {p}")
        faults = paths.data / "faults"
        if faults.exists():
            shutil.rmtree(faults)
            done.append(f"removed {faults}")
    else:
        done.append("history kept")
    return done


def check_clock(when: datetime) -> None:
    """ValueError unless `when` is a time with a zone between 2024 and 2100."""
    if when.tzinfo is None:
        raise ValueError("the time needs a time zone")
    if not CLOCK_MIN <= when <= CLOCK_MAX:
        raise ValueError(f"refusing to set the clock to {when.isoformat()}: outside {CLOCK_MIN:%Y}–{CLOCK_MAX:%Y}")


def set_clock(when: datetime, wait_rtc: bool = True) -> None:
    """Set the system clock (CLOCK_REALTIME): the SCADA → EMS timing of the manual. Needs CAP_SYS_TIME
    (firmware/ems.service grants it). Refuses times outside 2024–2100: a wrong master clock must not take
    the schedules with it. The control loops run on the monotonic clock and do not jump.
    wait_rtc=False (the controller's own threads): the hardware clock is written in the background, so
    the caller does not wait on hwclock."""
    check_clock(when)
    time.clock_settime(time.CLOCK_REALTIME, when.timestamp())
    if wait_rtc:
        _sync_rtc()
    else:
        threading.Thread(target=_sync_rtc, name="ems-rtc", daemon=True).start()


def ntp_synchronized() -> bool | None:
    """Is the system clock synchronised by NTP (systemd's timedatectl)? None where that cannot be asked
    (no systemd, a desk): the page says "unknown" rather than guessing."""
    if not shutil.which("timedatectl"):
        return None
    try:
        r = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                           text=True, timeout=2.0)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = r.stdout.strip()
    return {"yes": True, "no": False}.get(value) if r.returncode == 0 else None


def _sync_rtc() -> None:
    """Keep the hardware clock in step where there is one (the board keeps time across power cuts)."""
    if shutil.which("hwclock") and Path("/dev/rtc0").exists():
        subprocess.run(["hwclock", "--systohc", "--utc"], check=False, capture_output=True)


def restart_service(unit: str = "ems.service") -> str:
    """The manual's remote restart: systemd restarts the unit (stop: PCS to zero, state saved; start)."""
    r = subprocess.run(["systemctl", "restart", "--no-block", unit], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(r.stderr.strip() or f"systemctl exited {r.returncode}")
    return f"{unit} restarting"


class MaintenanceRefused(ValueError):
    """A maintenance request refused, with the reason. conflict: the request was fine, the board said no
    (the API's 409; else its 400)."""

    def __init__(self, message: str, conflict: bool = False):
        super().__init__(message)
        self.conflict = conflict


class RemoteMaintenance:
    """The manual's maintenance page for the running service, behind the HTTP API: remote restart,
    restoration of factory settings, the clock.

    clock: the controller's (now(), set_wall(when)); request_stop(reason): asks the run loop for its clean
    stop (PCS to zero, state saved), after which systemd starts the service again (Restart=always); on a
    desk the run simply ends. paths: the board layout, None off a board (factory reset refused)."""

    def __init__(self, clock, request_stop, paths: BoardPaths | None):
        self.clock, self.request_stop, self.paths = clock, request_stop, paths

    # ---- the maintenance page's requests, as the API and the cloud take them (one set of rules and words)
    def clock_info(self, scada_sets_clock: bool) -> dict:
        """The EMS clock and what sets it: NTP (where systemd says; blocks on timedatectl), SCADA, manual."""
        now = self.now()
        return {"utc": now.isoformat(), "unix_s": now.timestamp(),
                "sync": {"ntp_synchronized": ntp_synchronized(), "scada_sets_clock": scada_sets_clock, "manual": True}}

    def set_clock_request(self, text) -> dict:
        """`text`: an ISO 8601 time with its zone. MaintenanceRefused (bad input, or the board refused)."""
        try:
            when = datetime.fromisoformat(str(text))
            step_s = self.set_clock(when)
        except ValueError as exc:
            raise MaintenanceRefused(f"time: {exc}; give ISO 8601 with a zone, e.g. 2026-11-21T10:00:00+01:00") \
                from None
        except OSError as exc:
            raise MaintenanceRefused(f"the board refused to set the clock: {exc}", conflict=True) from None
        return {"set": when.isoformat(), "step_s": round(step_s, 3)}

    def factory_reset_request(self, body: dict, reason: str) -> list[str]:
        """`body`: {"confirm": true} (a history wipe is refused: the board's command line only)."""
        if body.get("confirm") is not True:
            raise MaintenanceRefused('factory reset: send {"confirm": true}')
        if body.get("wipe_history"):
            raise MaintenanceRefused("history is wiped only on the board: `ems factory-reset --wipe-history --yes` "
                                     "with the service stopped")
        try:
            return self.factory_reset(reason)
        except OSError as exc:
            raise MaintenanceRefused(f"factory reset: {exc}", conflict=True) from None

    def now(self) -> datetime:
        return self.clock.now()

    def set_clock(self, when: datetime) -> float:
        """Step the wall clock; returns the step in s. ValueError for a bad time, OSError when refused."""
        check_clock(when)
        step_s = (when - self.clock.now()).total_seconds()
        self.clock.set_wall(when)
        return step_s

    def restart(self, reason: str) -> None:
        self.request_stop(reason)

    def _board(self) -> BoardPaths:
        if self.paths is None:
            raise FileNotFoundError("not running as the board's service (ems run --board-root)")
        return self.paths

    def reserve_update(self, bundle: Path, at: datetime, deadline_s: float, creator: str,
                       allow_downgrade: bool = False) -> dict:
        """The cloud manual's upgrade task (Reservation yes: at a time; no: now). The bundle is verified now
        and kept; ems-update.timer (root: the service's user cannot write the slots) applies it when due and
        verifies it again. Raises BundleError / UpdateError / MigrationError for a bundle it refuses."""
        from ems.board import update
        paths = self._board()
        task_id = update.schedule(paths, bundle, at, deadline_s, creator, allow_downgrade)
        return next(t for t in update.scheduled(paths) if t["id"] == task_id)

    def updates(self) -> dict:
        from ems.board import update
        from ems.board.slots import status
        paths = self._board()
        return {"board": status(paths), "reserved": update.scheduled(paths)}

    def cancel_update(self, task_id: str) -> bool:
        from ems.board import update
        return update.cancel(self._board(), task_id)

    def upload_dir(self) -> Path:
        d = self._board().update
        d.mkdir(parents=True, exist_ok=True)
        return d

    def factory_reset(self, reason: str) -> list[str]:
        """factory_reset() keeping the history (a wipe is only offered on the board's command line, with
        the service stopped: the recorder holds the database open), then the restart that applies it."""
        done = factory_reset(self._board(), wipe_history=False)
        self.request_stop(reason)
        return done
