"""The controller and the simulated site as the processes they are on a desk: `ems sim-site` and `ems run`
started with the console script's module, their output read line by line, the site's control channel and the
controller's dispatch server spoken to over loopback."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ems.site.with_sim import SimSiteChild


def sim_site(tmp_path: Path, config: Path | None = None, write_site: bool = True, extra: tuple = (),
             name: str = "sim-site.toml") -> SimSiteChild:
    """`ems sim-site` for `config` (None: the demo), ready to serve; its site file in `.site_file`."""
    child = SimSiteChild(config, tmp_path / name if write_site else None, extra=extra)
    assert child.wait_ready(), "ems sim-site did not start"
    if child.site_file is None:
        child.site_file = config
    return child


def control(child: SimSiteChild, **request) -> dict:
    host, port = child.control.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5.0) as s:
        s.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(s.makefile().readline())


class EmsRun:
    """`ems run …` as a process; every line it prints is kept with the time it arrived."""

    def __init__(self, *args: str, cwd: Path | None = None, env: dict | None = None, python: list | None = None):
        cmd = (python or [sys.executable, "-m", "ems"]) + ["run", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                     env={**os.environ, **(env or {})})
        self.lines: list[tuple[float, str]] = []
        self.err: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, predicate, timeout_s: float = 20.0, since: float = 0.0) -> str | None:
        """The first line printed after `since` that satisfies predicate(line), None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if t >= since and predicate(line):
                    return line
            if self.proc.poll() is not None and not any(t >= since and predicate(line) for t, line in self.lines):
                return None
            time.sleep(0.05)
        return None

    def stop(self, sig=signal.SIGINT, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def status_lines(run: EmsRun, since: float = 0.0) -> list[str]:
    return [line for t, line in run.lines if t >= since and " grid " in line and " soc " in line]
