"""What the operator sees of a running site: a full-screen panel on a terminal, one plain status line per
second otherwise. Every figure is the controller's own measurement (its snapshot): a reading it does not
have is shown as "—", never filled in. SIMULATED heads both when the devices are a simulated site."""
from __future__ import annotations

from datetime import datetime

from ems._core import layout as L


def _kw(w: float | None, width: int = 7) -> str:
    return f"{'—':>{width}}" if w is None else f"{w / 1000:{width}.1f}"


def _soc(ctrl) -> str:
    snap = ctrl.snapshot
    if snap is None or snap.soc_pct is None:
        return "  — %"
    bound = f" ±{snap.soc_bound_pct:.1f}" if snap.soc_bound_pct is not None else ""
    return f"{snap.soc_pct:5.1f}{bound} %"


def _alarms(ctrl) -> str:
    s = ctrl.status
    return ",".join(f"{name}({code})" for (code, _), name in sorted(s.active_alarms.items())) or "none"


def _mode(remote: bool | None) -> str:
    return "no dispatch server" if remote is None else "remote" if remote else "local"


def _parallel(ctrl) -> str:
    """The parallel group in a few words: a master's units online, a slave's state; "" on a single machine."""
    if ctrl.group is not None:
        return f"parallel {int(ctrl.group.online.sum())}/{ctrl.group.M} units  "
    if ctrl.follower is not None:
        return f"parallel unit {ctrl.cfg.parallel.unit_id} {ctrl.follower.state(ctrl.clock.monotonic_s())}  "
    return ""


def _parallel_rows(ctrl, most: int = 16) -> list[str]:
    if ctrl.group is None:
        return []
    rows = ctrl.group.rows()
    out = ["", f"  parallel group ({int(ctrl.group.online.sum())} of {len(rows)} units in the distribution):"]
    for r in rows[:most]:
        soc = "—" if r["soc_pct"] is None else f"{r['soc_pct']:.1f} %"
        out.append(f"    unit {r['id']:<4} {r['address']:<22} {'in ' if r['online'] else 'out'} {r['state']:<10} "
                   f"share {r['share_pct']:5.1f} %  setpoint {_kw(r['setpoint_w'])} kW  soc {soc}"
                   + (f"  {r['id_fault'] or r['error']}" if not r["online"] else ""))
    if len(rows) > most:
        out.append(f"    … and {len(rows) - most} more (GET /api/parallel lists them all)")
    return out


def _device_state(rows: list[dict]) -> str:
    return "  ".join(f"{r['name']} {r['status']}" + (f" {r['last_seen_s_ago']:.1f}s" if r.get("last_seen_s_ago")
                                                      is not None else "") for r in rows)


def status_line(ctrl, local: datetime, rows: list[dict], remote: bool | None, simulated: bool) -> str:
    snap, s = ctrl.snapshot, ctrl.status
    g = (lambda name: None if snap is None else getattr(snap, name))     # noqa: E731 - local shorthand
    return ((("SIMULATED ") if simulated else "") +
            f"{local:%Y-%m-%d %H:%M:%S} grid {_kw(g('grid_w'))} kW  pv {_kw(g('pv_w'), 6)} kW  "
            f"load {_kw(g('load_w'), 6)} kW  pcs {_kw(g('pcs_w'))} kW  soc {_soc(ctrl)}  "
            f"mode {_mode(remote)}  {_parallel(ctrl)}strategy {s.strategy}: {s.reason}  alarms {_alarms(ctrl)}  "
            f"devices {_device_state(rows)}")


def _limit(snap, b, which: str) -> float:
    """The snapshot's limit (a master's: the site's), the fast path's before the first slow tick."""
    if snap is not None:
        return getattr(snap, f"{which}_limit_w")
    return float(b.results[L.TO_CHG_LIMIT_W if which == "charge" else L.TO_DCHG_LIMIT_W])


def panel(ctrl, local: datetime, site: str, rows: list[dict], remote: bool | None, simulated: bool,
          header: list[str]) -> str:
    """The whole screen: the start-up lines (addresses, devices, what missing roles mean) stay on top."""
    snap, b, s = ctrl.snapshot, ctrl.fast.buffers, ctrl.status
    g = (lambda name: None if snap is None else getattr(snap, name))     # noqa: E731 - local shorthand
    grid, pcs = g("grid_w"), g("pcs_w")
    title = ("SIMULATED  " if simulated else "") + f"ems — {site}    {local:%Y-%m-%d %H:%M:%S %Z}    (Ctrl-C stops)"
    lines = ["\x1b[H\x1b[2J " + title, ""] + [f"  {h}" for h in header] + [""] + [
        f"  grid   {_kw(grid, 8)} kW   " + ("" if grid is None else "(importing)" if grid > 0 else "(exporting)"),
        f"  PV     {_kw(g('pv_w'), 8)} kW",
        f"  load   {_kw(g('load_w'), 8)} kW",
        f"  PCS    {_kw(pcs, 8)} kW   " + ("" if pcs is None else "(discharging)" if pcs > 0 else
                                          "(charging)" if pcs < 0 else "(idle)"),
        f"  SOC    {_soc(ctrl)}    limits: charge {_limit(snap, b, 'charge') / 1000:.1f} kW, "
        f"discharge {_limit(snap, b, 'discharge') / 1000:.1f} kW" + ("  (the site's)" if ctrl.group else ""),
        f"  mode   {_mode(remote)}{'  (grid: off)' if not ctrl.on_grid else ''}",
        "",
        f"  strategy: {s.strategy}",
        f"  why:      {s.reason}" + (f"  (held by {', '.join(s.held_by)})" if s.held_by else ""),
        "",
        "  devices:",
    ]
    lines += [f"    {r['name']:<16} {r['status']:<11} " + ("" if r.get("last_seen_s_ago") is None else
                                                           f"last seen {r['last_seen_s_ago']:.1f} s ago  ")
              + f"{r['address']}" for r in rows] or ["    none"]
    lines += _parallel_rows(ctrl)
    lines += ["", "  active alarms:"]
    lines += [f"    {code:>6}  {name}  (0x{dev:08X})" for (code, dev), name in sorted(s.active_alarms.items())] or \
        ["    none"]
    return "\n".join(lines) + "\n"
