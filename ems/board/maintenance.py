"""The installer manual's basic maintenance (000_… 3.3.4.2): remote restart of the EMS, restoration of
factory settings, clock synchronisation."""
from __future__ import annotations

import os
import shutil
import subprocess
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


def set_clock(when: datetime) -> None:
    """Set the system clock (CLOCK_REALTIME): the SCADA → EMS timing of the manual. Needs CAP_SYS_TIME
    (firmware/ems.service grants it). Refuses times outside 2024–2100: a wrong master clock must not take
    the schedules with it. The control loops run on the monotonic clock and do not jump."""
    if when.tzinfo is None:
        raise ValueError("the time needs a time zone")
    if not CLOCK_MIN <= when <= CLOCK_MAX:
        raise ValueError(f"refusing to set the clock to {when.isoformat()}: outside {CLOCK_MIN:%Y}–{CLOCK_MAX:%Y}")
    time.clock_settime(time.CLOCK_REALTIME, when.timestamp())
    # keep the hardware clock in step where there is one (the board keeps time across power cuts)
    if shutil.which("hwclock") and Path("/dev/rtc0").exists():
        subprocess.run(["hwclock", "--systohc", "--utc"], check=False, capture_output=True)


def restart_service(unit: str = "ems.service") -> str:
    """The manual's remote restart: systemd restarts the unit (stop: PCS to zero, state saved; start)."""
    r = subprocess.run(["systemctl", "restart", "--no-block", unit], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(r.stderr.strip() or f"systemctl exited {r.returncode}")
    return f"{unit} restarting"
