"""`ems bundle …`, `ems update …`, `ems factory-reset`, `ems clock …`, `ems restart`: the board's commands."""
from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

BOARD_HELP = "board root (default /; tests and image builds use a folder)"


def add_parsers(sub) -> None:
    b = sub.add_parser("bundle", help="signed update bundles: make a signing key, build, verify")
    bs = b.add_subparsers(dest="bundle_command", metavar="ACTION")
    k = bs.add_parser("keygen", help="new Ed25519 signing key (PEM, 0600) and KEY.pub for the boards")
    k.add_argument("key", type=Path)
    bb = bs.add_parser("build", help="build a bundle from wheels (the program and every dependency) and migrations")
    bb.add_argument("--key", type=Path, required=True, help="signing key (PEM)")
    bb.add_argument("--out", type=Path, required=True)
    bb.add_argument("--wheel", type=Path, action="append", default=[], help="a wheel (repeat)")
    bb.add_argument("--wheel-dir", type=Path, help="every *.whl in this folder")
    bb.add_argument("--migrations", type=Path, default=None,
                    help="folder of vNNNN.py config migrations (default: firmware/migrations of this program)")
    bb.add_argument("--version", dest="bundle_version", help="version (default: the program's)")
    bb.add_argument("--config-version", type=int, help="site file schema version (default: the program's)")
    bv = bs.add_parser("verify", help="check a bundle's signature and hashes against trusted keys")
    bv.add_argument("bundle", type=Path)
    bv.add_argument("--keys", type=Path, default=Path("/etc/ems/update-keys"), help="folder of trusted *.pub")

    u = sub.add_parser("update", help="apply a signed bundle (A/B slots, automatic rollback), reserved-time upgrades")
    us = u.add_subparsers(dest="update_command", metavar="ACTION")
    ua = us.add_parser("apply", help="verify, install into the inactive slot, switch, wait for health or roll back")
    ua.add_argument("bundle", type=Path)
    ua.add_argument("--at", help="reserve: apply at this time (ISO 8601 with zone) instead of now")
    ua.add_argument("--deadline", type=float, default=300.0, help="seconds the new version has to confirm (30 … 3600)")
    ua.add_argument("--no-wait", action="store_true", help="return after the switch (the boot guard and the "
                    "service still roll back an unhealthy version)")
    ua.add_argument("--allow-downgrade", action="store_true", help="install a version older than the running one "
                    "(refused without this; logged)")
    for name, text in (("status", "slots, versions, the update in progress, the last outcome"),
                       ("confirm", "mark the running trial version good (normally the service does this)"),
                       ("rollback", "go back to the previous version now"),
                       ("list", "reserved-time upgrades"),
                       ("run-due", "apply the reserved upgrades whose time has come (ems-update.timer)")):
        us.add_parser(name, help=text)
    uc = us.add_parser("cancel", help="cancel a reserved upgrade")
    uc.add_argument("task")
    for p in [ua, uc] + [us.choices[n] for n in ("status", "confirm", "rollback", "list", "run-due")]:
        p.add_argument("--root", type=Path, default=Path("/"), help=BOARD_HELP)

    f = sub.add_parser("factory-reset", help="site file back to the cabinet's factory file; history kept unless "
                                             "--wipe-history")
    f.add_argument("--wipe-history", action="store_true")
    f.add_argument("--yes", action="store_true", help="do it (without: say what would happen)")
    f.add_argument("--root", type=Path, default=Path("/"), help=BOARD_HELP)
    c = sub.add_parser("clock", help="show or set the system clock (SCADA → EMS timing)")
    cs = c.add_subparsers(dest="clock_command", metavar="ACTION")
    cs.add_parser("show")
    cset = cs.add_parser("set")
    cset.add_argument("time", help="ISO 8601 with zone, e.g. 2026-11-21T10:00:00+01:00")
    sub.add_parser("restart", help="restart the controller service (stop: PCS to zero, state saved)")


def _iso(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add +01:00 or Z)")
    return t


def run(args) -> int:
    from ems.board import maintenance, slots, update
    from ems.board.bundle import BundleError
    from ems.board.migrate import MigrationError
    try:
        if args.command == "bundle":
            return _bundle(args)
        if args.command == "update":
            paths = slots.BoardPaths(args.root)
            cmd = args.update_command
            if cmd == "apply":
                if not 30.0 <= args.deadline <= 3600.0:
                    raise ValueError(f"--deadline must be 30 … 3600 s, got {args.deadline:g}")
                if args.at:
                    task = update.schedule(paths, args.bundle, _iso(args.at), args.deadline,
                                           allow_downgrade=args.allow_downgrade)
                    print(f"reserved: task {task} at {args.at}")
                    return 0
                print(update.apply(paths, args.bundle, args.deadline, restart=slots.systemctl_restart(),
                                   wait=not args.no_wait, allow_downgrade=args.allow_downgrade))
                return 0
            if cmd == "status":
                print(json.dumps(slots.status(paths), indent=1))
                return 0
            if cmd == "confirm":
                ok = slots.confirm(paths)
                print("confirmed" if ok else "no trial of the running slot to confirm")
                return 0 if ok else 1
            if cmd == "rollback":
                ok = slots.rollback(paths, "operator", restart=slots.systemctl_restart())
                print("rolled back" if ok else "no update in progress to roll back")
                return 0 if ok else 1
            if cmd == "list":
                for t in update.scheduled(paths):
                    print(f"{t['id']}  {t['at']}  {t['version']}  deadline {t.get('deadline_s', 300):g} s  "
                          f"by {t.get('creator', '?')}")
                return 0
            if cmd == "cancel":
                ok = update.cancel(paths, args.task)
                print("cancelled" if ok else f"no reserved upgrade {args.task!r}")
                return 0 if ok else 1
            if cmd == "run-due":
                for line in update.run_due(paths, restart=slots.systemctl_restart()):
                    print(line)
                return 0
            print("ems update: choose apply, status, confirm, rollback, list, cancel or run-due", file=sys.stderr)
            return 2
        if args.command == "factory-reset":
            paths = slots.BoardPaths(args.root)
            if not args.yes:
                print(f"would restore {paths.config} from {paths.etc / 'factory-site.toml'}; history "
                      f"{'removed' if args.wipe_history else 'kept'}; SOC/SOH kept. Run again with --yes.")
                return 1
            for line in maintenance.factory_reset(paths, args.wipe_history):
                print(line)
            print("restart the controller for it to take effect (ems restart)")
            return 0
        if args.command == "clock":
            if args.clock_command == "set":
                maintenance.set_clock(_iso(args.time))
            print(datetime.now().astimezone().isoformat(timespec="seconds"))
            return 0
        if args.command == "restart":
            print(maintenance.restart_service())
            return 0
    except (ValueError, OSError, BundleError, MigrationError, slots.UpdateError) as exc:
        print(f"ems {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2


def _bundle(args) -> int:
    from ems import __version__
    from ems.board import bundle
    from ems.config import CONFIG_VERSION
    cmd = args.bundle_command
    if cmd == "keygen":
        pub = bundle.generate_key(args.key)
        print(f"signing key {args.key} (keep it off the boards); public key {pub}: copy it to "
              "/etc/ems/update-keys/ on every board")
        return 0
    if cmd == "build":
        wheels = list(args.wheel) + (sorted(args.wheel_dir.glob("*.whl")) if args.wheel_dir else [])
        mig_dir = args.migrations or Path(__file__).resolve().parents[2] / "firmware" / "migrations"
        migrations = sorted(mig_dir.glob("v*.py")) if mig_dir.exists() else []
        m = bundle.build(args.out, args.key, wheels, migrations, "ems-controller",
                         args.bundle_version or __version__, args.config_version or CONFIG_VERSION)
        print(f"{args.out}: ems-controller {m['version']}, config version {m['config_version']}, "
              f"{len(m['files'])} files, signed by {m['key'][:16]}…")
        return 0
    if cmd == "verify":
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            v = bundle.verify(args.bundle, bundle.load_trusted(args.keys), Path(d))
        print(f"{args.bundle}: good signature; ems-controller {v.manifest['version']}, {len(v.manifest['files'])} files")
        return 0
    print("ems bundle: choose keygen, build or verify", file=sys.stderr)
    return 2
