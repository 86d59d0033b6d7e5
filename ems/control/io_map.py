"""The site's signals as the controller sees them: which device's silence raises which alarm, which dry-contact
inputs exist (and which stop the PCS), which outputs the strategies drive. Codes are the manual's EMS table
(shared/seeds/000_…). The device layer (issue 4) maps these names to real channels."""
from ems.control.events import AIRCON_ID, GRID_METER_ID, PCS_ID, PV_ID, STACK_ID

COMM_ALARMS = {                  # device → (code, name, device id) from the manual's EMS table
    "pcs": (4, "pcs_lost", PCS_ID),
    "grid_meter": (5, "meter_lost", GRID_METER_ID),
    "bms": (7, "battery_lost", STACK_ID),
    "pv": (21, "PV_INV_Fault", PV_ID),
    "air_conditioner": (22, "AirConFault", AIRCON_ID),
}
# dry-contact inputs with the manual's EMS codes: (code, name, stops the PCS)
SAFETY_INPUTS = {
    "epo": (52, "YX_system_epo_signal", True),
    "fire_warning": (53, "YX_fire_warning", True),
    "fire_action": (54, "YX_fire_action", True),
    "water": (55, "YX_water_signal", True),
    "fire_system_fault": (5010, "YX_fire_system_fault", False),
    "spd": (5011, "YX_spd_signal", False),
    "env_over_temp": (5013, "YX_temp_over_signal", False),
}
# dry-contact outputs, in the order of the `do_<name>` columns
DO_NAMES = ("trip", "sg_ready_1", "sg_ready_2", "generator_start", "shed_general_load", "shed_important_load",
            "ats_prealarm", "ac_cooling", "ac_heating", "shed_chargers", "grid_relay_open")
OTHER_INPUTS = ("grid_present", "rrcr_k1", "rrcr_k2", "rrcr_k3", "rrcr_k4", "sec14a", "ats_grid", "generator_feedback")
KNOWN_INPUTS = tuple(SAFETY_INPUTS) + OTHER_INPUTS
