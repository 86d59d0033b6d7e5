"""A parallel site on a desk: one master and N slaves, each an `ems run --config` process with its own
simulated cabinet (`ems sim-site`); the master's sim-site serves the site's grid meter with the slaves'
PCS on its AC bus (`--ac-bus`)."""
from __future__ import annotations

from pathlib import Path

import tomli_w

from ems.comm.net import free_port
from tests.procs import EmsRun, sim_site

SLAVE_SIM = ("--pv-profile", "none", "--load-profile", "flat", "--load-peak-w", "0")


def unit_config(path: Path, name: str, dispatch_port: int, parallel: dict, soc_pct: float = 50.0,
                api_port: int | None = None) -> Path:
    cfg = {"site": {"name": name}, "battery": {"initial_soc_pct": soc_pct},
           "dispatch": {"port": dispatch_port}, "parallel": {"enabled": True, **parallel},
           "api": {"enabled": api_port is not None, "port": api_port or 8080}}
    path.write_bytes(tomli_w.dumps(cfg).encode())
    return path


class ParallelSite:
    """Start with `start()`; `master`, `slaves` are EmsRun; `sims[0]` the master's sim-site."""

    def __init__(self, tmp: Path, slaves: int = 3, lease_s: float = 2.0, socs=None, ids=None, units=None,
                 fallback: str = "standby", master_api: bool = False, backup: bool = False,
                 takeover_s: float = 2.0):
        self.tmp = tmp
        self.n = slaves
        self.lease_s = lease_s
        self.socs = socs or [50.0] * (slaves + 1)
        self.ids = ids or list(range(2, slaves + 2))        # each slave's own configured ID
        self.units = units or [slaves + 1] * slaves
        self.fallback = fallback
        self.ports = [free_port() for _ in range(slaves + 1)]
        self.sims, self.slaves, self.master = [], [], None
        self.api_port = free_port() if master_api else None     # the master's HTTP API and page (with history)
        self.backup = backup             # slave 0 (ID 2) is the backup master; the others know it
        self.takeover_s = takeover_s

    def slave_file(self, k: int) -> Path:
        par = {"role": "slave", "unit_id": self.ids[k], "units": self.units[k], "master_id": 1,
               "master_address": "127.0.0.1", "lease_s": self.lease_s, "fallback": self.fallback}
        if self.backup:
            par.update(backup_id=2, backup_address="127.0.0.1")
            if k == 0:
                par.update(backup_master=True, takeover_s=self.takeover_s, master_dispatch=f"127.0.0.1:{self.ports[0]}",
                           timeout_ms=300, unit_lost_s=1.5,
                           slaves=[{"id": j + 2, "address": f"127.0.0.1:{self.ports[j + 1]}"} for j in range(1, self.n)])
        return unit_config(self.tmp / f"slave{k}.toml", f"slave {k}", self.ports[k + 1], par, self.socs[k + 1])

    def master_file(self) -> Path:
        slaves = [{"id": k + 2, "address": f"127.0.0.1:{self.ports[k + 1]}"} for k in range(self.n)]
        return unit_config(self.tmp / "master.toml", "master", self.ports[0],
                           {"role": "master", "unit_id": 1, "units": self.n + 1, "slaves": slaves,
                            "lease_s": self.lease_s, "timeout_ms": 300, "unit_lost_s": 1.5}, self.socs[0],
                           api_port=self.api_port)

    def start_slave(self, k: int, sim: bool = True) -> EmsRun:
        if sim:
            self.sims.append(sim_site(self.tmp, self.slave_file(k), extra=SLAVE_SIM, name=f"slave{k}-site.toml"))
        run = EmsRun("--config", str(self.tmp / f"slave{k}-site.toml"), "--no-history",
                     "--state", str(self.tmp / f"slave{k}-state.json"))
        return run

    def start(self) -> ParallelSite:
        for k in range(self.n):
            self.sims.append(sim_site(self.tmp, self.slave_file(k), extra=SLAVE_SIM, name=f"slave{k}-site.toml"))
        bus = ",".join(str(self.tmp / f"slave{k}-site.toml") for k in range(self.n))
        self.sims.insert(0, sim_site(self.tmp, self.master_file(), extra=("--ac-bus", bus, "--pv-profile", "none",
                                                                           "--load-profile", "flat"),
                                     name="master-site.toml"))
        if self.backup:                  # the backup reads the site's own grid meter (the master's cabinet serves it)
            self._share_site_meter(self.tmp / "slave0-site.toml")
        for k in range(self.n):
            self.slaves.append(self.start_slave(k, sim=False))
        self.master = self.start_master()
        return self

    def _share_site_meter(self, path: Path) -> None:
        import tomllib
        site = tomllib.loads((self.tmp / "master-site.toml").read_text())
        meter = next(d for d in site["devices"]["modbus"] if d["role"] == "grid_meter")
        mine = tomllib.loads(path.read_text())
        for d in mine["devices"]["modbus"]:
            if d["role"] == "grid_meter":
                d.update(host=meter["host"], port=meter["port"], unit_id=meter["unit_id"])
        path.write_bytes(tomli_w.dumps(mine).encode())

    def start_master(self) -> EmsRun:
        records = ["--db", str(self.tmp / "master.sqlite")] if self.api_port else ["--no-history"]
        return EmsRun("--config", str(self.tmp / "master-site.toml"), *records,
                      "--state", str(self.tmp / "master-state.json"))

    def stop(self) -> None:
        for r in [self.master, *self.slaves]:
            if r is not None:
                r.stop()
        for s in self.sims:
            s.stop()
