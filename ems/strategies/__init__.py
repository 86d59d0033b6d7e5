"""The strategies, in the priority order of DESIGN.md (highest first).

Protection and BMS limits come before all of these (in the native core). Peak shaving sits below the
forced-charging functions and above dispatch and time-based plans: it is a site connection limit that
must hold under any plan; a remote dispatch may not break it either (our choice, documented in
docs/strategies.md).
"""
from ems.strategies.air_conditioner import AirConditioner
from ems.strategies.base import Decision, Request, Strategy
from ems.strategies.dispatch import Dispatch
from ems.strategies.feed_in_limit import FeedInLimit
from ems.strategies.forced_charge import ForcedCharge
from ems.strategies.generator import Generator
from ems.strategies.grid_operator import GridOperator
from ems.strategies.off_grid import OffGrid
from ems.strategies.one_click_shutdown import OneClickShutdown
from ems.strategies.parallel import ParallelFollow
from ems.strategies.operating_mode import OperatingMode
from ems.strategies.peak_shaving import PeakShaving
from ems.strategies.pmeteroffset import Pmeteroffset
from ems.strategies.sec14a import Sec14a
from ems.strategies.sg_ready import SgReady
from ems.strategies.soc_calibration import SocCalibration
from ems.strategies.time_period_feed_in import TimePeriodFeedIn
from ems.strategies.self_use import SelfUse
from ems.strategies.time_based import TimeBased
from ems.strategies.ups_reserve import UpsReserve


def build(cfg) -> list[Strategy]:
    if cfg.parallel.enabled and cfg.parallel.role == "slave":
        # a slave runs no site strategy: the master runs them on the site meters and sends each unit its share
        # (a slave doing self-use or peak shaving on the same meter would act on the site a second time)
        return [OneClickShutdown(), ParallelFollow(), AirConditioner(cfg)]
    return [
        OneClickShutdown(),
        Generator(cfg),        # off-grid and generator control rank above grid-operator limits
        OffGrid(cfg),          # off-grid: loads, ATS pre-alarm, PV setpoint (no power request: the PCS forms the grid)
        Sec14a(cfg),
        FeedInLimit(cfg),
        GridOperator(),        # the grid company's dispatch (001_… South Australia): with the grid-operator limits
        ForcedCharge(cfg),
        UpsReserve(cfg),
        SocCalibration(cfg),
        PeakShaving(cfg),
        Dispatch(),
        TimePeriodFeedIn(cfg),
        TimeBased(cfg),
        OperatingMode(cfg),    # Chint modes: full feed-in, emergency charging, TOU with seasons and holidays
        Pmeteroffset(cfg),
        SelfUse(cfg),
        SgReady(cfg),          # drives dry contacts only, no power request
        AirConditioner(cfg),   # cabinet climate, no power request
    ]


__all__ = ["Decision", "Request", "Strategy", "build"]
