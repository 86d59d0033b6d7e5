"""The site's signals as the controller sees them: which device's silence raises which alarm, which dry-contact
inputs exist (and which stop the PCS), which outputs the strategies drive. Codes are the manual's EMS table
(shared/seeds/000_…); their names, levels and remedies are in the alarm catalogue (ems/records/alarm_codes.toml).
The device layer maps these names to real channels."""
from ems.control.events import AIRCON_ID, DG_METER_ID, EMS_ID, GRID_METER_ID, PCS_ID, PV_ID, STACK_ID

COMM_ALARMS = {                  # device → (code, device id) from the manual's EMS table (5015: our own)
    "pcs": (4, PCS_ID),
    "grid_meter": (5, GRID_METER_ID),
    "dg_meter": (5, DG_METER_ID),
    "bms": (7, STACK_ID),
    "pv": (21, PV_ID),
    "air_conditioner": (22, AIRCON_ID),
    "io_module": (5015, EMS_ID),
}
# dry-contact inputs with the manual's EMS codes: (code, stops the PCS)
SAFETY_INPUTS = {
    "epo": (52, True),
    "fire_warning": (53, True),
    "fire_action": (54, True),
    "water": (55, True),
    "fire_system_fault": (5010, False),
    "spd": (5011, False),
    "env_over_temp": (5013, False),
}
# dry-contact outputs, in the order of the `do_<name>` columns
DO_NAMES = ("trip", "sg_ready_1", "sg_ready_2", "generator_start", "shed_general_load", "shed_important_load",
            "ats_prealarm", "ac_cooling", "ac_heating", "shed_chargers", "grid_relay_open")
OTHER_INPUTS = ("grid_present", "rrcr_k1", "rrcr_k2", "rrcr_k3", "rrcr_k4", "sec14a", "ats_grid", "generator_feedback")
KNOWN_INPUTS = tuple(SAFETY_INPUTS) + OTHER_INPUTS
