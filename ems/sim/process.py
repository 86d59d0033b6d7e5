"""`ems sim-site`: the simulated site as a process of its own, serving the site file's devices on the addresses
it names — Modbus TCP servers on loopback ports (the meters behind one "gateway", PCS, PV inverter, air
conditioner, I/O module, a BAU), the BMS's CAN through a socketcand server — so a controller in another
process reaches it exactly as it reaches a cabinet. Loopback addresses only.

A site file that names no devices gets the simulated site's own (ems.sim.layout) on free ports, written with
the rest of the file to `--write-site`, which is what the controller then runs on (`ems run` does this for
the demo). A control channel (JSON lines on a loopback port) takes scenario events — grid outage, faults,
contacts, comm loss — and answers with the plant's truth for tests; the controller never sees that truth.
"""
from __future__ import annotations

import asyncio
import collections
import json
from importlib import resources
import logging
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import tomli_w

from ems.comm.modbus_server import IoThread
from ems.comm.net import free_port, is_loopback
from ems.config.load import ConfigError, Problem, load_site, read_toml, site_from_dict
from ems.sim.layout import device_table
from ems.sim.scenario import parse_event
from ems.sim.site import SimSite
from ems.sim.socketcand import SocketcandServer

log = logging.getLogger("ems.sim")
MAX_CONTROL_CLIENTS = 8
MAX_CONTROL_LINE = 4096
WRITE_LOG = 2000          # the last writes the devices received, for tests and benchmarks


class SimSiteError(ValueError):
    pass


def prepare(config: Path | None, write_site: Path | None) -> tuple[object, Path | None]:
    """The site to simulate: the file's (or the demo's), with the simulated site's devices on free loopback
    ports where it names none; written to `write_site` when given. Returns (SiteConfig, the file to run on)."""
    demo = Path(str(resources.files("ems.sim").joinpath("demo_site.toml")))
    raw = read_toml(config if config is not None else demo)
    raw = {k: v for k, v in raw.items() if k != "simulation"}
    if config is not None and write_site is not None:      # the written file's relative paths must still work
        here = config.parent.resolve()
        battery, devices = raw.get("battery", {}), raw.setdefault("devices", {})
        if battery.get("ocv_table") and not Path(battery["ocv_table"]).is_absolute():
            battery["ocv_table"] = str(here / battery["ocv_table"])
        devices["profiles_dir"] = str(here / (devices.get("profiles_dir") or "drivers"))
    source = str(config) if config else "demo site"
    base = config.parent if config is not None else (write_site.parent if write_site else Path.cwd())
    dev = raw.get("devices", {}) if isinstance(raw.get("devices"), dict) else {}
    if not dev.get("modbus"):
        if write_site is None:
            raise SimSiteError(f"{source} names no devices: give --write-site FILE for the site file the simulated "
                               "devices are written into (the controller runs on that file)")
        ports: dict[str, int] = {}
        flag = lambda section: bool((raw.get(section) or {}).get("enabled", False))     # noqa: E731
        table = device_table(flag("generator"), flag("air_conditioner"), dev.get("bms", "can"),
                             dev.get("can_profile", "EMS-CAN-CELLS"), "127.0.0.1",
                             lambda name: ports.setdefault(name, free_port()))
        for section, values in table.items():
            raw.setdefault(section, {}).update(values)
    cfg = site_from_dict(raw, source, base_dir=base)
    if write_site is not None:
        write_site.parent.mkdir(parents=True, exist_ok=True)
        tmp = write_site.with_name(f".{write_site.name}.tmp")
        with open(tmp, "wb") as fh:
            tomli_w.dump(raw, fh)
        tmp.replace(write_site)
        cfg = load_site(write_site)
    problems = []
    for i, d in enumerate(cfg.devices.modbus):
        if d.transport != "tcp":
            problems.append(f"devices.modbus[{i}] ({d.name}): the simulated site serves Modbus TCP only")
        elif not is_loopback(d.host):
            problems.append(f"devices.modbus[{i}].host = {d.host!r}: the simulated site serves loopback addresses only")
    dv = cfg.devices
    if dv.bms == "can" and (dv.can_interface != "socketcand" or not is_loopback(dv.can_host)):
        problems.append("devices.can_interface: the simulated BMS is served over socketcand on loopback: set "
                        "can_interface = \"socketcand\" and a loopback can_host")
    if problems:
        raise SimSiteError("\n".join(problems))
    return cfg, write_site or config


class SimSiteProcess:
    """Servers, plant loop and control channel of one simulated site."""

    def __init__(self, cfg, step_s: float = 0.02, pv_profile: str = "cloudy", load_profile: str = "commercial",
                 load_peak_w: float = 80_000.0, ac_bus: list[Path] | None = None):
        self.cfg, self.step_s = cfg, step_s
        # pymodbus logs a client's every disconnect at ERROR with its last frames: a controller stopping or
        # restarting is normal life for a simulated device
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.io = IoThread("ems-sim-io")
        self.writes: collections.deque = collections.deque(maxlen=WRITE_LOG)
        self.events: collections.deque = collections.deque()      # from the control channel, for the loop
        self.can = None
        self.can_rx: collections.deque = collections.deque(maxlen=10_000)
        dv = cfg.devices
        if dv.bms == "can":
            self.can = SocketcandServer(self.io.loop, dv.can_channel, self.can_rx.append)
            self.io.call(self.can.start(dv.can_host, dv.can_port))
        self.site = SimSite(cfg, time.monotonic, served=True, can_bus=self.can, pv_profile=pv_profile,
                            load_profile=load_profile, load_peak_w=load_peak_w)
        for name, store in self.site.stores.items():            # every write the devices take is logged
            store.on_write = self._logged(name, store.on_write)
        groups: dict[tuple[str, int], dict[int, object]] = {}
        owner: dict[tuple[str, int, int], str] = {}
        for d in cfg.devices.modbus:
            key = (d.host, d.port, d.unit_id)
            if key in owner:
                raise SimSiteError(f"{d.name}: unit {d.unit_id} at {d.host}:{d.port} is {owner[key]!r}'s already")
            owner[key] = d.name
            groups.setdefault((d.host, d.port), {})[d.unit_id] = self.site.stores[d.name]
        for (host, port), units in groups.items():
            self.io.serve_tcp(units, host, port)
        self.control_port: int | None = None
        self._control = None
        self.bus = None
        if ac_bus:
            from ems.sim.ac_bus import AcBus
            self.bus = AcBus(self.io, ac_bus)

    def _logged(self, device: str, on_write):
        def write(name, value, client):
            self.writes.append((time.monotonic(), device, name, value))
            on_write(name, value, client)
        return write

    # ------------------------------------------------------------------ control channel
    def start_control(self, host: str, port: int) -> int:
        async def start():
            return await asyncio.start_server(self._control_client, host, port)
        self._control = self.io.call(start())
        self.control_port = self._control.sockets[0].getsockname()[1]
        self._clients = 0
        return self.control_port

    async def _control_client(self, reader, writer) -> None:
        if self._clients >= MAX_CONTROL_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    writer.write(b'{"ok": false, "error": "line too long"}\n')
                    break
                except asyncio.IncompleteReadError:
                    break
                if len(line) > MAX_CONTROL_LINE:
                    writer.write(b'{"ok": false, "error": "line too long"}\n')
                    break
                writer.write((json.dumps(await self.request(line)) + "\n").encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients -= 1
            writer.close()

    async def request(self, line: bytes) -> dict:
        """One control request: an event for the site, or a question ("truth", "writes")."""
        try:
            req = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        if not isinstance(req, dict):
            return {"ok": False, "error": "a JSON object is expected"}
        kind = req.get("kind")
        if kind == "truth":
            return {"ok": True, "truth": self.site.truth(), "monotonic_s": time.monotonic()}
        if kind == "writes":
            since = req.get("since", 0.0)
            return {"ok": True, "writes": [w for w in list(self.writes) if w[0] >= since]}
        if kind in ("dispatch", "command"):
            return {"ok": False, "error": f"{kind} is the operator's: use the dispatch server or the API"}
        problems: list[Problem] = []
        ev = parse_event(req, self.cfg, "request", problems, datetime.now(timezone.utc), timed=False)
        if ev is None:
            return {"ok": False, "error": "; ".join(str(p) for p in problems)}
        sent = None
        if ev.kind == "cell_fault" and req.get("now") and self.site.bms is not None:
            sent = self._cell_frame_now(ev.args["cluster"], ev.args["cell"], float(ev.args["voltage_v"]))
        done = {"at": None, "error": None}
        self.events.append((ev, done))
        deadline = time.monotonic() + 2.0
        while done["at"] is None and done["error"] is None and time.monotonic() < deadline:
            await asyncio.sleep(0.002)   # the plant loop takes it at its next step
        if done["error"]:
            return {"ok": False, "error": done["error"]}
        return {"ok": done["at"] is not None, "applied_at_s": done["at"], **({"sent_at_s": sent} if sent else {})}

    def _cell_frame_now(self, cluster: int, cell: int, voltage_v: float) -> float:
        """`cell_fault` with `"now": true`: the BMS reports the faulty cell at once, in a frame of its own (as a
        real one does between its cyclic frames), not at the plant's next step; the plant keeps reporting it."""
        import can
        m = self.site.bms.db.get_message_by_name("ClusterCellVoltages")
        names = [s.name for s in m.signals if s.name.startswith("cell_")]      # the frame's cells, in order
        group = cell // len(names)
        volts = self.site.plant.stack.cell_v[cluster, group * len(names):(group + 1) * len(names)].tolist()
        volts[cell - group * len(names)] = voltage_v
        signals = {"cluster": cluster, "group": group, **dict.fromkeys(names, 0.0), **dict(zip(names, volts))}
        return self.can.send_now([can.Message(arbitration_id=m.frame_id, is_extended_id=False, data=m.encode(signals))])

    # ------------------------------------------------------------------ the plant loop
    def run(self, duration_s: float | None = None) -> int:
        stop = {"now": False}

        def _stop(signum, frame):
            stop["now"] = True
        old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        tz = ZoneInfo(self.cfg.site.timezone)
        site = self.site
        start = deadline = time.monotonic()
        try:
            while not stop["now"] and (duration_s is None or time.monotonic() - start < duration_s):
                now = time.monotonic()
                while self.events:
                    ev, done = self.events.popleft()
                    try:
                        site.apply(ev)
                        done["at"] = time.monotonic()
                    except ValueError as exc:
                        done["error"] = str(exc)
                while self.can_rx:
                    msg = self.can_rx.popleft()
                    if site.bms is not None:
                        site.bms.take(msg)
                if self.bus is not None:
                    site.plant.bus_pcs_w = self.bus.pcs_w()
                site.publish()
                site.publish_bms(now)
                if self.can is not None:
                    self.can.flush()
                site.step(datetime.now(timezone.utc).astimezone(tz), self.step_s)
                deadline += self.step_s
                delay = deadline - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1.0:
                    deadline = time.monotonic()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.stop()
        return 0

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.stop()
        if self.can is not None:
            try:
                self.io.call(self.can.stop(), 3.0)
            except Exception:
                log.exception("socketcand server stop")
        self.io.stop()


def main(args) -> int:
    """`ems sim-site` (ems.cli)."""
    try:
        cfg, site_file = prepare(args.config, args.write_site)
        bus = [Path(p) for p in args.ac_bus.split(",") if p] if args.ac_bus else None
        proc = SimSiteProcess(cfg, args.step_ms / 1000.0, args.pv_profile, args.load_profile, args.load_peak_w, bus)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (SimSiteError, OSError, ValueError) as exc:
        print(f"ems sim-site: {exc}", file=sys.stderr)
        return 1
    control = proc.start_control("127.0.0.1", args.control_port)
    lines = [f"{d.name}: {d.role} {d.model} at {d.host}:{d.port} unit {d.unit_id}" for d in cfg.devices.modbus]
    if proc.can is not None:
        lines.append(f"bms: socketcand {cfg.devices.can_host}:{cfg.devices.can_port} bus {cfg.devices.can_channel}")
    for line in lines:
        print(f"sim-site: {line}")
    print(f"sim-site ready: control 127.0.0.1:{control}" + (f" site {site_file}" if site_file else ""), flush=True)
    return proc.run(args.duration)
