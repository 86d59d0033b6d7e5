"""Cabinet air conditioner (000_… basic parameters: refrigeration / heating stop points and return
differences). Cooling runs until the cabinet air falls to the cooling stop point and starts again at stop
point + return difference; heating runs until the air rises to the heating stop point and starts again at
stop point − return difference. With no temperature reading the commands are withdrawn (the unit's own
thermostat takes over) and AirConFault (22) is raised by the controller's comm supervision."""
from ems.strategies.base import Strategy, decision


class AirConditioner(Strategy):
    name = "air_conditioner"

    def __init__(self, cfg):
        self.cfg = cfg.air_conditioner
        self.cooling = self.heating = False

    def decide(self, snap):
        c = self.cfg
        if not c.enabled:
            return None
        t = snap.cabinet_t_degc
        if t is None:
            self.cooling = self.heating = False
            return decision("air conditioner: no cabinet temperature, unit on its own thermostat",
                            outputs={"ac_cooling": False, "ac_heating": False})
        if t >= c.cooling_stop_degc + c.cooling_return_diff_degc:
            self.cooling = True
        elif t <= c.cooling_stop_degc:
            self.cooling = False
        if t <= c.heating_stop_degc - c.heating_return_diff_degc:
            self.heating = True
        elif t >= c.heating_stop_degc:
            self.heating = False
        state = "cooling" if self.cooling else "heating" if self.heating else "idle"
        return decision(f"air conditioner {state} at {t:.1f} °C", outputs={"ac_cooling": self.cooling,
                                                                           "ac_heating": self.heating})
