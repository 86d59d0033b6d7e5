"""A fluent way to state a site's situation and ask a strategy what it wants."""
from datetime import datetime
from types import MappingProxyType
from zoneinfo import ZoneInfo

from ems.config import site_from_dict
from ems.control.snapshot import Operator, Snapshot

TZ = ZoneInfo("Europe/Berlin")


def cfg(**sections):
    return site_from_dict(sections)


def snap(at="2026-06-22 12:00", grid_w=0.0, pv_w=0.0, pcs_w=0.0, soc=50.0, dg_w=0.0, charge_limit_w=100e3,
         discharge_limit_w=100e3, on_grid=True, di=None, charge_prohibited=False, discharge_prohibited=False,
         undervoltage=False, **operator):
    return Snapshot(time=datetime.fromisoformat(at).replace(tzinfo=TZ), grid_w=grid_w, pv_w=pv_w, pcs_w=pcs_w,
                    dg_w=dg_w, soc_pct=soc, charge_limit_w=charge_limit_w, discharge_limit_w=discharge_limit_w,
                    charge_prohibited=charge_prohibited, discharge_prohibited=discharge_prohibited,
                    undervoltage=undervoltage, on_grid=on_grid, di=MappingProxyType(di or {}),
                    operator=Operator(**operator))


def wants(strategy, s):
    """[(kind, value_w)] the strategy asks for, or None."""
    d = strategy.decide(s)
    return None if d is None else [(r.kind, round(r.value_w, 3)) for r in d.requests]
