"""The `ems` command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ems import __version__
from ems.board import cli as board_cli
from ems.records import cli as records_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ems", description="Open EMS main controller for battery energy storage.")
    p.add_argument("--version", action="version", version=f"ems {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the controller on the devices a site file names (without one: the demo, "
                                      "against a simulated site in a process of its own)")
    run.add_argument("--config", type=Path, help="site file (TOML): the devices it names are the only ones the "
                     "controller talks to; default: the built-in demo site, simulated")
    run.add_argument("--with-sim", action="store_true", help="start `ems sim-site` for the site file first and run "
                     "against it (a desk test of a site file; the view says SIMULATED)")
    run.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    run.add_argument("--state", type=Path, default=Path(".ems-state/state.json"),
                     help="where SOC counters are saved on stop and restored on start")
    run.add_argument("--db", type=Path, default=Path(".ems-state/history.sqlite"),
                     help="history database (alarms, logs, samples; fault recordings in faults/ beside it)")
    run.add_argument("--no-history", action="store_true", help="record nothing (and no HTTP API)")
    run.add_argument("--board-root", type=Path, help="the board layout whose pending update this run confirms once "
                     "healthy (the service passes /; docs/board.md)")

    ss = sub.add_parser("sim-site", help="serve a simulated site's devices on loopback (Modbus TCP, CAN over "
                                         "socketcand) for a controller in another process")
    ss.add_argument("--config", type=Path, help="site file whose devices to simulate (default: the demo site)")
    ss.add_argument("--write-site", type=Path, help="write the site file with the simulated devices' addresses here "
                    "(needed when the file names no devices: they are added on free loopback ports)")
    ss.add_argument("--control-port", type=_port, default=0, help="control channel port on 127.0.0.1 (0: any free)")
    ss.add_argument("--step-ms", type=_number(1.0, 1000.0), default=20.0, help="plant step, ms (1 … 1000)")
    ss.add_argument("--duration", type=_number(0.0, 1e9, lo_open=True), help="stop after this many seconds")
    ss.add_argument("--pv-profile", default="cloudy", choices=("clear", "cloudy", "none"))
    ss.add_argument("--load-profile", default="commercial", choices=("commercial", "residential", "flat"))
    ss.add_argument("--load-peak-w", type=_number(0.0, 1e8), default=80_000.0, help="load profile peak, W")
    ss.add_argument("--ac-bus", default="", help="parallel site: the other cabinets' site files (comma-separated) "
                    "whose simulated PCS share this site's AC bus behind its grid meter")
    se = sub.add_parser("sim-event", help="send a scenario event to a running `ems sim-site` (its control channel)")
    se.add_argument("--control", required=True, help="HOST:PORT the sim-site printed at start")
    se.add_argument("event", help='JSON, e.g. \'{"kind": "grid_outage"}\' or \'{"kind": "di", "name": "epo", '
                    '"closed": true}\' (the [[simulation.events]] kinds; "truth" answers the plant\'s state)')

    simp = sub.add_parser("simulate", help="run a scenario on a virtual clock, as fast as possible")
    simp.add_argument("scenario", type=Path, help="site file with a [simulation] section")
    simp.add_argument("--out", type=Path, required=True, help="output folder (timeseries.csv, events.jsonl, "
                      "history.sqlite, faults/)")

    cfg = sub.add_parser("config", help="site configuration: check a file, print a template")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    chk = cfg_sub.add_parser("check", help="validate a site file; every error with key, value and allowed range")
    chk.add_argument("file", type=Path)
    cfg_sub.add_parser("template", help="print a commented template with every default and range")

    core = sub.add_parser("core", help="native core: build information and a self-check")
    core.add_argument("--clusters", type=int, default=1, help="clusters in the self-check stack (1..32)")
    sub.add_parser("dispatch-map", help="print the dispatch server's register map (Markdown, as in docs/dispatch.md)")
    dev = sub.add_parser("devices", help="equipment list: device ID, name, protocol, model, address, poll cycle, "
                                         "status, last seen (Modbus devices are probed once)")
    dev.add_argument("--config", help="site configuration (TOML)")
    dev.add_argument("--profiles", action="store_true", help="list the device profiles instead (shipped, and with "
                     "--config the site's own)")
    dev.add_argument("--timeout", type=float, default=1.0, help="probe time per device, s (0.1 … 30)")
    dev.add_argument("--db", type=Path, help="list the devices a running site (or a simulation) recorded, with "
                     "their live status, instead of probing")
    dev.add_argument("--csv", action="store_true", help="CSV export (with --db)")
    rep = sub.add_parser("replay-soc", help="run the controller's SOC estimator over a recorded single-cell trace "
                                            "(CSV t_s,current_a,voltage_v,temp_degc; current > 0 discharging) and "
                                            "write t_s,soc_pct,soc_bound_pct to stdout")
    rep.add_argument("input", help="trace CSV ('-' for stdin)")
    rep.add_argument("--capacity-ah", type=_number(0.0, 1e9, lo_open=True), required=True, help="the cell's capacity, Ah")
    rep.add_argument("--ocv", help="OCV table CSV soc_pct,ocv_v (default: the shipped LFP table)")
    rep.add_argument("--initial-soc", type=_number(0.0, 100.0), help="SOC at the first row, %% (default: from the first "
                     "row's voltage through the OCV table)")
    # the datasheet's current sensor and the capacity's uncertainty: [soc_estimation]'s keys of these names
    rep.add_argument("--current-offset-a", type=_number(0.0, 100.0), help="current sensor offset bound, A "
                     "([soc_estimation] current_offset_a; default 0.1 %% of 1 C)")
    rep.add_argument("--current-gain-pct", type=_number(0.0, 10.0), help="current sensor gain error bound, %% "
                     "([soc_estimation] current_gain_error_pct; default 1)")
    rep.add_argument("--capacity-error-pct", type=_number(0.0, 50.0), help="uncertainty of --capacity-ah, %% "
                     "([soc_estimation] capacity_error_pct; default 2)")
    records_cli.add_parsers(sub)
    board_cli.add_parsers(sub)
    return p


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 … 65535, got {n}")
    return n


def _number(lo: float, hi: float, lo_open: bool = False):
    """An argparse type: a number in [lo, hi] ((lo, hi] with lo_open), with a clear message otherwise."""
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not ((x > lo if lo_open else x >= lo) and x <= hi):
            raise argparse.ArgumentTypeError(f"must be {'above' if lo_open else 'at least'} {lo:g}"
                                             + (f" and at most {hi:g}" if hi < float("inf") else "") + f", got {text}")
        return x
    return parse


def _core_info(clusters: int) -> int:
    from ems._core import layout as L
    from ems.control.fastpath import FastPath, StackShape

    fp = FastPath(StackShape(clusters=clusters))
    b = fp.buffers
    b.cell_v[:] = 3.30
    b.cell_t[:] = 25.0
    b.fresh[:] = 1
    b.cluster_in[:, L.CL_V] = 3.30 * fp.shape.cells_per_cluster
    b.cluster_in[:, L.CL_I] = 0.0
    b.cluster_in[:, L.CL_INSULATION] = 5000.0
    b.cluster_in[:, [L.CL_POLE_T, L.CL_HVBOX_T]] = 25.0
    b.cluster_in[:, [L.CL_BMS_CHG_A, L.CL_BMS_DCHG_A, L.CL_RATED_CHG_A, L.CL_RATED_DCHG_A]] = 140.0
    b.cluster_flags[:, L.CLF_CONNECTED] = 1
    fp.tick(10.0)
    import ems._core.tick as t
    print(f"ems {__version__}: native core compiled ({t.__file__})")
    print(f"self-check: {clusters} cluster(s) x {fp.shape.cells_per_cluster} cells, "
          f"charge limit {b.results[L.TO_CHG_LIMIT_W] / 1000:.1f} kW, discharge limit {b.results[L.TO_DCHG_LIMIT_W] / 1000:.1f} kW")
    return 0


def _config(args) -> int:
    from ems.config.load import ConfigError, load_site
    from ems.config.template import template

    if args.config_command == "template":
        print(template())
        return 0
    if args.config_command == "check":
        try:
            load_site(args.file)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{args.file}: OK")
        return 0
    print("ems config: choose 'check FILE' or 'template'", file=sys.stderr)
    return 2


def _simulate(args) -> int:
    from ems.config.load import ConfigError
    from ems.sim.runner import simulate
    from ems.sim.scenario import load_scenario

    try:
        cfg, sim = load_scenario(args.scenario)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if cfg.parallel.enabled:
        print(f"{args.scenario}: [parallel] is enabled: a parallel site is several controllers, each `ems run` on its "
              "own `ems sim-site` (docs/parallel.md); `ems simulate` runs one controller", file=sys.stderr)
        return 1
    s = simulate(cfg, sim, args.out)
    print(f"{args.scenario}: {s.steps} steps of {sim.step_s:g} s in {s.wall_s:.1f} s wall; "
          f"power balance error ≤ {s.max_balance_error_w:.2g} W; final SOC {s.final_soc_pct:.1f} %; "
          f"wrote {args.out}/timeseries.csv, events.jsonl and history.sqlite")
    return 0


def _site_or_none(path):
    """The site configuration at `path` (defaults without one); None after printing every problem."""
    from ems.config.load import ConfigError, load_site
    from ems.config.schema import SiteConfig
    try:
        return load_site(path) if path else SiteConfig()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _run(args) -> int:
    """`ems run --config FILE`: the board's program, on the file's devices (never the simulator). Without a
    file (the demo) or with --with-sim: the simulated site in a child process, the same program against it."""
    if args.duration is not None and not args.duration > 0:
        print(f"ems run: --duration must be > 0 s, got {args.duration}", file=sys.stderr)
        return 2
    run_args = dict(duration_s=args.duration, state_path=args.state, db_path=None if args.no_history else args.db,
                    board_root=args.board_root)
    if args.config is None or args.with_sim:
        from ems.site.with_sim import run_with_sim
        return run_with_sim(args.config, args.state.parent, **run_args)
    from ems.site.runtime import run_site
    cfg = _site_or_none(args.config)
    if cfg is None:
        return 1
    return run_site(cfg, config_path=args.config, **run_args)


def _sim_event(args) -> int:
    import json
    import socket
    host, _, port = args.control.rpartition(":")
    try:
        json.loads(args.event)
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5.0) as s:
            s.sendall(args.event.encode() + b"\n")
            answer = s.makefile().readline()
    except (ValueError, OSError) as exc:
        print(f"ems sim-event: {exc}", file=sys.stderr)
        return 2
    print(answer.strip())
    return 0 if json.loads(answer or "{}").get("ok") else 1


def _devices(args) -> int:
    from ems.site.equipment import equipment_rows, format_rows, profile_rows

    if args.profiles:          # with --config: the site's own profiles too
        cfg = _site_or_none(args.config)
        if cfg is None:
            return 1
        print(format_rows(profile_rows(cfg.devices.profiles_dir)))
        return 0
    if args.db is not None:
        return records_cli.run(args)
    if not 0.1 <= args.timeout <= 30.0:
        print(f"ems devices: --timeout must be 0.1 … 30 s, got {args.timeout}", file=sys.stderr)
        return 2
    cfg = _site_or_none(args.config)
    if cfg is None:
        return 1
    print(format_rows(equipment_rows(cfg, args.timeout)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `ems` command. Output cut short by its reader (`ems report … | head`) ends quietly with exit
    code 141 (the shell's code for SIGPIPE), not a BrokenPipeError traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail too
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "core":
        if not 1 <= args.clusters <= 32:
            print(f"ems core: --clusters must be 1..32, got {args.clusters}", file=sys.stderr)
            return 2
        return _core_info(args.clusters)
    if args.command == "config":
        return _config(args)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "run":
        return _run(args)
    if args.command == "sim-site":
        from ems.sim.process import main as sim_site
        return sim_site(args)
    if args.command == "sim-event":
        return _sim_event(args)
    if args.command == "dispatch-map":
        from ems.comm.dispatch import register_map_markdown
        sys.stdout.write(register_map_markdown())
        return 0
    if args.command == "devices":
        return _devices(args)
    if args.command == "replay-soc":
        from ems.estimation.replay import main as replay_main
        return replay_main(args)
    if args.command in ("status", "alarms", "log", "report", "stats", "reset-faults"):
        return records_cli.run(args)
    if args.command in ("bundle", "update", "factory-reset", "clock", "restart"):
        return board_cli.run(args)
    build_parser().print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
