"""What each device role means to the controller: which registers it reads and writes, which profile kind serves
it, its device ID in the manual's scheme, and which comm-loss alarm it raises. One home for these facts: the
config check, the device layer (`site_io`) and the simulated site all read them here.

| role            | profile kind    | reads (→ controller)                       | writes (held, refreshed)                    |
|-----------------|-----------------|--------------------------------------------|---------------------------------------------|
| grid_meter      | meter           | active_power_w → grid_w                    |                                             |
| pv_meter        | meter           | active_power_w → pv_w                      |                                             |
| dg_meter        | meter           | active_power_w → dg_w                      |                                             |
| pcs             | pcs             | active_power_w → pcs_w                     | active_power_setpoint_w, run_command (+ reactive_power_setpoint_var when writable; setpoint_timeout_s once) |
| pv_inverter     | pv_inverter     | active_power_w → pv_w (when no pv_meter)   | active_power_limit_w (+ limit_timeout_s once) |
| air_conditioner | air_conditioner | cabinet_temperature_degc → cabinet_t_degc  |                                             |
| bms             | bms             | the arrays of BMS_ARRAYS (clusters, cells) | open_contactors_mask (when the profile has it) |
| io_module       | io_module       | di_bits → the dry-contact inputs           | do_bits ← the dry-contact outputs           |

Any device's status word may carry `flags` (the PCS's `grid_forming` gives the grid state when no
`grid_present` contact is wired) and any fault word `alarm_bits` (the manual's codes, raised and cleared as
the bits change).
"""
from __future__ import annotations

from ems.comm.profiles import Profile
from ems.control.events import AIRCON_ID, DG_METER_ID, GRID_METER_ID, PCS_ID, PV_ID, PV_METER_ID, STACK_ID

ROLE_READS = {
    "grid_meter": {"active_power_w": "grid_w"},
    "pv_meter": {"active_power_w": "pv_w"},
    "dg_meter": {"active_power_w": "dg_w"},
    "pcs": {"active_power_w": "pcs_w"},
    "pv_inverter": {"active_power_w": "pv_w"},
    "air_conditioner": {"cabinet_temperature_degc": "cabinet_t_degc"},
    "io_module": {"di_bits": None},
}
ROLE_WRITES = {
    "pcs": ("active_power_setpoint_w", "run_command", "setpoint_timeout_s"),
    "pv_inverter": ("active_power_limit_w", "limit_timeout_s"),
    "io_module": ("do_bits",),
}
ROLE_KINDS = {"grid_meter": "meter", "pv_meter": "meter", "dg_meter": "meter", "pcs": "pcs",
              "pv_inverter": "pv_inverter", "air_conditioner": "air_conditioner", "bms": "bms",
              "io_module": "io_module"}
IO_MODULE_ID = 0x01010000          # our choice: the manual's scheme has no ID for the EMS's I/O module
ROLE_DEVICE_IDS = {"grid_meter": GRID_METER_ID, "pv_meter": PV_METER_ID, "dg_meter": DG_METER_ID, "pcs": PCS_ID,
                   "pv_inverter": PV_ID, "air_conditioner": AIRCON_ID, "bms": STACK_ID, "io_module": IO_MODULE_ID}
# role → the controller's comm supervision key (ems.control.io_map.COMM_ALARMS)
ROLE_COMM = {"grid_meter": "grid_meter", "pv_meter": "pv", "pv_inverter": "pv", "dg_meter": "dg_meter", "pcs": "pcs",
             "air_conditioner": "air_conditioner", "bms": "bms", "io_module": "io_module"}
# a Modbus BMS (BCU / BAU): per-cluster arrays (count 1) and cell arrays (count "cells"); None: optional
BMS_ARRAYS = {"cluster_voltage_v": True, "cluster_current_a": True, "cluster_charge_limit_a": True,
              "cluster_discharge_limit_a": True, "cluster_connected": True, "cluster_charge_prohibited": True,
              "cluster_discharge_prohibited": True, "cluster_insulation_kohm": False, "cell_voltage_v": True,
              "cell_temperature_degc": True}


def role_reads(role: str) -> list[str]:
    """Registers (or arrays) a role needs to read."""
    if role == "bms":
        return [a for a, needed in BMS_ARRAYS.items() if needed]
    return list(ROLE_READS.get(role, {}))


def check_role(profile: Profile, role: str) -> None:
    """ValueError naming what is missing when `profile` cannot serve as `role`."""
    if role == "bms":
        missing = sorted(a for a in role_reads("bms") if a not in profile.arrays)
        if missing:
            raise ValueError(f"profile {profile.model} ({profile.path}) cannot serve as bms: missing array(s) "
                             f"{', '.join(missing)}")
        counts = {a: profile.arrays[a].count for a in BMS_ARRAYS if a in profile.arrays}
        wrong = sorted(a for a, n in counts.items() if (n != "cells") == a.startswith("cell_"))
        if wrong:
            raise ValueError(f"profile {profile.model}: cluster_* arrays count 1, cell_* arrays count \"cells\" "
                             f"({', '.join(wrong)})")
        r = profile.registers.get("open_contactors_mask")
        if r is not None and not r.writable:
            raise ValueError(f"profile {profile.model}: open_contactors_mask must be writable")
        return
    need = set(ROLE_READS.get(role, {})) | set(ROLE_WRITES.get(role, ()))
    missing = sorted(n for n in need if n not in profile.registers)
    if missing:
        raise ValueError(f"profile {profile.model} ({profile.path}) cannot serve as {role}: missing register(s) "
                         f"{', '.join(missing)}")
    for n in ROLE_WRITES.get(role, ()):
        if not profile.registers[n].writable:
            raise ValueError(f"profile {profile.model}: {n} must be writable to serve as {role}")


def poll_interval_s(profile: Profile, role: str) -> float:
    """The slowest poll of what the role's comm supervision watches (its comm-loss age must allow for it): for
    a BMS its cluster values; its cells go stale on their own, each after twice its poll interval."""
    watched = [n for n in role_reads(role) if not (role == "bms" and n.startswith("cell_"))]
    return max((profile.interval_s(n) for n in watched), default=0.0)

