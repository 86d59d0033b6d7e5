"""`ems run` without a site file (the demo) and `ems run --with-sim`: the simulated site started as a child
process (`ems sim-site`, which serves the devices on loopback), then the controller against it — through the
board's code path, byte for byte — and both stopped cleanly. This module only starts a command: the
controller's process never imports the simulator."""
from __future__ import annotations

import ctypes
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

READY_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGTERM when the controller's process dies, however it dies (no orphaned simulator)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class SimSiteChild:
    """`ems sim-site` as a child: started in a session of its own (a terminal's Ctrl-C reaches the controller,
    which stops the simulator after its own clean stop)."""

    def __init__(self, config: Path | None, write_site: Path | None, control_port: int = 0, extra: tuple = ()):
        cmd = [sys.executable, "-m", "ems", "sim-site", "--control-port", str(control_port), *extra]
        if config is not None:
            cmd += ["--config", str(config)]
        if write_site is not None:
            cmd += ["--write-site", str(write_site)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self.site_file: Path | None = None
        self.control: str | None = None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """Until the child says it serves (True), ends, or the timeout passes. Its output is read by a thread of
        its own, which goes on draining it afterwards (a full pipe would stall the child)."""
        lines: queue.Queue = queue.Queue()

        def drain():
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)
        threading.Thread(target=drain, name="ems-sim-site-out", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                return False
            if line.startswith("sim-site ready:"):
                words = line.split()
                self.control = words[words.index("control") + 1]
                if "site" in words:
                    self.site_file = Path(words[words.index("site") + 1])
                return True
        return False

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def run_with_sim(config: Path | None, state_dir: Path, **run_args) -> int:
    """Start the simulated site for `config` (None: the demo site), run the controller on the site file it
    serves, stop both. The site file is the user's own when it names its devices; otherwise the simulator
    writes one with its devices on free loopback ports into `state_dir`."""
    from ems.config.load import ConfigError, load_site
    from ems.site.runtime import run_site
    write_site = None
    if config is None:
        write_site = state_dir / "demo-site.toml"
    else:
        try:
            if not load_site(config).devices.modbus:
                write_site = state_dir / "sim-site.toml"
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    child = SimSiteChild(config, write_site)
    try:
        if not child.wait_ready():
            print("ems run: the simulated site did not start (its errors are above)", file=sys.stderr)
            return 1
        site_file = child.site_file or config
        try:
            cfg = load_site(site_file)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        out = run_args.pop("out", None) or sys.stdout
        out.write(f"simulated site: ems sim-site (pid {child.proc.pid}), scenario events: ems sim-event --control "
                  f"{child.control} '{{\"kind\": \"grid_outage\"}}'\n")
        return run_site(cfg, config_path=site_file, simulated=True, out=out, **run_args)
    finally:
        code = child.stop()
        if code not in (0, None, -signal.SIGTERM):
            print(f"ems run: the simulated site ended with {code}", file=sys.stderr)

