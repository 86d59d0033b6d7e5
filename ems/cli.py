"""The `ems` command line."""
from __future__ import annotations

import argparse
import sys

from ems import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ems", description="Open EMS main controller for battery energy storage.")
    p.add_argument("--version", action="version", version=f"ems {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    core = sub.add_parser("core", help="native core: build information and a self-check")
    core.add_argument("--clusters", type=int, default=1, help="clusters in the self-check stack (1..32)")
    return p


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "core":
        if not 1 <= args.clusters <= 32:
            print(f"ems core: --clusters must be 1..32, got {args.clusters}", file=sys.stderr)
            return 2
        return _core_info(args.clusters)
    build_parser().print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
