"""The controller on the virtual clock against the simulated plant: loops, faults, leases, combinations."""
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ems._core import layout as L
from ems.config import site_from_dict
from ems.control.clock import VirtualClock
from ems.control.controller import Controller
from ems.sim.runner import SimLink
from ems.sim.scenario import Event

TZ = ZoneInfo("Europe/Berlin")


class Site:
    """A controller and the simulated site (through the device layer, SiteIo) stepped on a virtual clock, one
    fast tick per step."""

    def __init__(self, start="2026-06-22T10:00:00+02:00", pv="clear", load="commercial", load_peak_w=80e3, **cfg):
        self.cfg = site_from_dict(cfg)
        self.clock = VirtualClock(datetime.fromisoformat(start))
        self.ctrl = Controller(self.cfg, self.clock)
        self.link = SimLink(self.cfg, self.ctrl, pv, load, load_peak_w)
        self.plant = self.link.plant
        self.cmd = None
        self.n = 0

    def event(self, kind, **args):
        self.link.apply(Event(self.clock.now(), kind, args))
        return self

    def run(self, seconds, step=1.0):
        for _ in range(int(seconds / step)):
            self.link.read()
            if self.n % max(1, int(self.cfg.loops.slow_period_ms / 1000 / step)) == 0:
                self.ctrl.slow_tick()
            self.cmd = self.ctrl.fast_tick(step * 1000)
            self.ctrl.explain()
            self.link.actuate(self.cmd, self.clock.now().astimezone(TZ), step)
            self.clock.advance(step)
            self.n += 1
        return self

    @property
    def flows(self):
        return self.plant.flows

    @property
    def alarms(self):
        return set(self.ctrl.status.active_alarms.values())


def test_self_use_brings_the_grid_to_zero():
    s = Site(start="2026-06-22T22:00:00+02:00").run(60)
    assert abs(s.flows.grid_w) < 0.05 * s.flows.load_w
    assert s.ctrl.status.strategy == "self_use"


def test_a_protection_trip_reaches_the_pcs_command_in_the_same_tick():
    s = Site(start="2026-06-22T22:00:00+02:00").run(30)
    assert s.cmd.pcs_setpoint_w > 1e3
    s.event("cell_fault", cluster=0, cell=5, voltage_v=3.80)     # beyond the shutdown limit (3.75 V)
    prot = s.ctrl.fast.buffers.cluster_prot
    for _ in range(5):
        s.link.read()
        cmd = s.ctrl.fast_tick(1000.0)
        if prot[0, L.CLP_TRIP_PENDING] or prot[0, L.CLP_TRIPPED]:
            assert cmd.pcs_setpoint_w == 0.0, "the tick that latches the fault already commands zero power"
            break
        assert cmd.pcs_setpoint_w > 0.0, "before the debounce elapses the power is unchanged"
    else:
        pytest.fail("no trip")
    assert {"cell_over_voltage", "overvoltage_shutdown"} <= s.alarms
    trips = [e for e in s.ctrl.events.recent if e["kind"] == "trip"]
    assert trips and trips[0]["code"] == 40006 and "overvoltage_shutdown" in trips[0]["name"]


def test_grid_meter_loss_raises_meter_lost_and_stops_discharge_then_recovers():
    s = Site(start="2026-06-22T22:00:00+02:00").run(30)
    s.event("comm_loss", device="grid_meter").run(10)
    assert "meter_lost" in s.alarms
    assert s.cmd.pcs_setpoint_w <= 0.0
    s.event("comm_restore", device="grid_meter").run(10)
    assert "meter_lost" not in s.alarms
    assert s.cmd.pcs_setpoint_w > 0.0


def test_bms_loss_means_battery_lost_and_zero_power():
    s = Site(start="2026-06-22T22:00:00+02:00").run(30)
    s.event("comm_loss", device="bms").run(10)
    assert "battery_lost" in s.alarms
    assert s.cmd.pcs_setpoint_w == 0.0 and s.flows.pcs_w == 0.0


def test_a_strategy_that_raises_is_disabled_and_alarmed_and_the_rest_runs_on():
    s = Site(start="2026-06-22T22:00:00+02:00")

    class Broken:
        name = "broken"

        def decide(self, snap):
            raise RuntimeError("boom")

    s.ctrl.strategies.insert(0, Broken())
    s.run(30)
    assert "broken" in s.ctrl.disabled
    assert "strategy_fault:broken" in s.alarms
    assert s.ctrl.status.strategy == "self_use" and s.cmd.pcs_setpoint_w > 0


def test_a_remote_dispatch_expires_with_its_lease_and_self_use_resumes():
    s = Site(start="2026-06-22T22:00:00+02:00", dispatch={"lease_s": 30.0}).run(5)
    s.ctrl.command("dispatch_w", -20e3)
    s.run(10)
    assert s.ctrl.status.strategy == "dispatch" and s.flows.pcs_w == pytest.approx(-20e3)
    s.run(30)
    assert s.ctrl.status.strategy == "self_use"
    assert any(e["kind"] == "lease_expired" for e in s.ctrl.events.recent)


def test_feed_in_limit_holds_over_a_remote_dispatch():
    s = Site(start="2026-06-22T22:00:00+02:00", load="flat", load_peak_w=10e3,
             grid={"feed_in_limit_mode": "fixed_w", "max_feed_in_w": 5e3}).run(5)
    s.ctrl.command("dispatch_w", 60e3)
    s.run(20)
    assert s.flows.grid_w >= -5e3 - 500          # export held at the limit (±deadband/noise)
    assert s.ctrl.status.strategy == "dispatch" and "feed_in_limit" in s.ctrl.status.held_by


def test_peak_shaving_holds_while_a_time_of_use_plan_charges():
    s = Site(start="2026-06-22T10:00:00+02:00", pv="none", load="flat", load_peak_w=60e3,
             time_based={"groups": [{"days": "all", "start": "09:00", "end": "12:00", "mode": "charge",
                                     "power_w": 50e3, "cutoff_soc_pct": 100}]},
             peak_shaving={"windows": [{"days": "all", "start": "08:00", "end": "20:00", "peak_w": 80e3}]}).run(60)
    assert s.flows.grid_w <= 80e3 * 1.05                        # charging limited to the peak headroom
    assert s.flows.pcs_w < -5e3                                  # but still charging what it can (less the margin)
    assert s.ctrl.status.strategy == "time_based"


def test_nothing_ever_leaves_the_bms_limits():
    s = Site(start="2026-06-22T22:00:00+02:00", battery={"rated_discharge_a": 20.0}).run(5)
    s.ctrl.command("dispatch_w", 100e3)
    s.run(20)
    b = s.ctrl.fast.buffers
    assert s.cmd.pcs_setpoint_w <= b.results[L.TO_DCHG_LIMIT_W] + 1e-6
    assert b.results[L.TO_DCHG_LIMIT_W] <= 20.0 * b.results[L.TO_DC_V] + 1e-6


def test_epo_stops_the_pcs_in_the_same_tick_and_raises_52():
    s = Site(start="2026-06-22T22:00:00+02:00").run(20)
    s.event("di", name="epo", closed=True)
    s.link.read()                                   # first sample of the closed contact …
    s.clock.advance(0.05)                           # … it holds for the debounce (50 ms) …
    s.link.read()
    cmd = s.ctrl.fast_tick(50.0)                    # … and the tick that sees it stops the PCS
    assert cmd.pcs_setpoint_w == 0.0 and not cmd.pcs_run
    assert "YX_system_epo_signal" in s.alarms


def test_a_contact_bounce_shorter_than_the_debounce_is_ignored():
    s = Site(start="2026-06-22T22:00:00+02:00", dry_contacts={"debounce_ms": 200.0}).run(5)
    s.event("di", name="epo", closed=True)
    s.clock.advance(0.1)
    s.link.read()
    s.event("di", name="epo", closed=False)
    s.clock.advance(0.3)
    s.link.read()
    assert not s.ctrl.di.get("epo") and "YX_system_epo_signal" not in s.alarms


def test_a_normally_closed_epo_loop_that_opens_is_an_emergency_stop():
    s = Site(start="2026-06-22T22:00:00+02:00", dry_contacts={"inverted_inputs": ["epo"]}).run(5)
    assert not s.ctrl.di.get("epo"), "a healthy NC loop (closed) is not active"
    s.event("di", name="epo", closed=True)           # the wire is cut: the NC loop opens, EPO is active
    s.run(2)
    assert s.ctrl.di.get("epo") and not s.cmd.pcs_run


def test_sec14a_limits_charging_from_the_grid():
    s = Site(start="2026-06-22T02:00:00+02:00", pv="none", sec14a={"enabled": True},
             time_based={"groups": [{"days": "all", "start": "01:00", "end": "05:00", "mode": "charge",
                                     "power_w": 50e3, "cutoff_soc_pct": 100}]}).run(20)
    assert s.flows.pcs_w < -40e3
    s.event("di", name="sec14a", closed=True).run(20)
    assert s.flows.pcs_w >= -4200.0 - 1.0


def test_one_click_shutdown_and_forced_charge_commands():
    s = Site(start="2026-06-22T22:00:00+02:00").run(10)
    s.ctrl.command("forced_charge", True)
    s.run(30)
    assert s.flows.pcs_w == pytest.approx(-50e3) and s.ctrl.status.strategy == "forced_charge"
    s.ctrl.command("one_click_shutdown", True)
    s.run(5)
    assert s.flows.pcs_w == 0.0 and s.ctrl.status.strategy == "one_click_shutdown"


def test_unknown_commands_and_inputs_are_refused():
    s = Site()
    with pytest.raises(ValueError, match="unknown command"):
        s.ctrl.command("self_destruct", True)
    with pytest.raises(ValueError, match="unknown dry-contact"):
        s.ctrl.set_di("k9", True)


def test_a_soc_calibration_cycle_anchors_the_counting_at_full_and_returns():
    s = Site(start="2026-06-22T22:00:00+02:00", pv="none", battery={"initial_soc_pct": 80.0},
             soc_calibration={"charge_power_w": 100e3, "discharge_power_w": 60e3}).run(5)
    s.ctrl.fast.buffers.cell_soc[:] *= 0.9          # the estimate has drifted 8 points low
    s.run(2)
    drift = s.plant.stack.true_soc_pct() - s.ctrl.fast.buffers.stack_soc[L.SOC_MEAN]
    assert drift > 7.0
    s.ctrl.command("soc_calibration", True)
    cal = s.ctrl._by_name["soc_calibration"]
    phases = set()
    for _ in range(3 * 360):                        # at most 3 h in 10 s steps
        s.run(10)
        phases.add(cal.phase)
        if phases >= {"charging", "discharging"} and cal.phase == "idle":
            break
    assert phases >= {"charging", "discharging"} and cal.phase == "idle"
    assert any(e["kind"] == "strategy_finished" and e["name"] == "soc_calibration" for e in s.ctrl.events.recent)
    est, true = s.ctrl.fast.buffers.stack_soc[L.SOC_MEAN], s.plant.stack.true_soc_pct()
    assert est <= cal.start_soc + 0.5, "the calibration discharge returned below the SOC it started at"
    assert abs(est - true) < 2.5, f"full charge re-anchored the estimate ({est:.1f} %) near the truth ({true:.1f} %)"


def test_sg_ready_relay_is_driven_and_reported():
    s = Site(start="2026-06-22T10:30:00+02:00", sg_ready={"channel_1": {"enabled": True, "mode": "on",
                                                                           "start": "10:00", "end": "11:00"}}).run(5)
    assert s.cmd.outputs["sg_ready_1"] is True
    assert any(e["kind"] == "do_changed" and e["name"] == "do_sg_ready_1" for e in s.ctrl.events.recent)


def test_bypass_enables_from_the_site_config_reach_the_core():
    s = Site(bypass={"enabled": True, "consistency_on_grid_charge": True, "consistency_off_grid_discharge": True,
                     "pcs_dc_min_v": 600.0})
    bp = s.ctrl.fast.buffers.bypass_params
    assert bp[L.BP_ENABLED] == 1.0 and bp[L.BP_CONSISTENCY_MODES] == 1 + 8 and bp[L.BP_DC_MIN_V] == 600.0
    s.event("grid_outage").run(2)
    assert bp[L.BP_ON_GRID] == 0.0


def test_grid_outage_with_generator_and_graded_loads():
    s = Site(start="2026-06-22T20:00:00+02:00", pv="none", load="flat", load_peak_w=40e3,
             battery={"initial_soc_pct": 45.0}, dual_power={"enabled": True},
             generator={"enabled": True, "start_soc_pct": 25.0, "stop_soc_pct": 60.0, "rated_power_w": 80e3},
             off_grid={"graded_load_enabled": True}).run(5)
    s.event("grid_outage").run(60)
    assert s.flows.grid_w == 0.0 and s.flows.pcs_w > 30e3 and s.ctrl.status.strategy == "off_grid"
    general_shed = generator_started = False
    for _ in range(6 * 60):                                 # up to 6 h in 1-minute chunks
        s.run(60)
        general_shed |= s.cmd.outputs["shed_general_load"]
        if s.flows.dg_w > 0:
            generator_started = True
            break
    assert general_shed, "general loads were shed at 30 % before the generator started at 25 %"
    assert generator_started and s.ctrl.di.get("generator_feedback")
    assert not s.cmd.outputs["shed_general_load"], "the generator restores every load"
    s.run(120)
    assert s.flows.pcs_w < -10e3, "the battery charges from the generator (80 % of rating − load)"
    assert s.flows.dg_w <= 0.8 * 80e3 + 2e3
    s.event("grid_return").run(60)
    assert not s.cmd.outputs["generator_start"] and s.flows.dg_w == 0.0


def test_a_generator_that_does_not_start_raises_gc_fault():
    s = Site(start="2026-06-22T20:00:00+02:00", pv="none", battery={"initial_soc_pct": 20.0},
             generator={"enabled": True, "start_soc_pct": 25.0, "startup_timeout_min": 2.0}).run(5)
    s.event("generator_fail").event("grid_outage").run(200)
    assert "GC_Fault" in s.alarms and not s.cmd.outputs["generator_start"]
    s.event("generator_repair")
    s.ctrl.command("fault_reset")
    s.run(60)
    assert "GC_Fault" not in s.alarms and s.ctrl.di.get("generator_feedback")


def test_full_feed_in_exports_up_to_the_feed_in_limit():
    s = Site(start="2026-06-22T13:00:00+02:00", pv="clear", load="flat", load_peak_w=20e3,
             operating_mode={"mode": "full_feed_in"}, grid={"grid_connection_coefficient_pct": 50.0}).run(120)
    assert s.flows.grid_w == pytest.approx(-50e3, abs=1.5e3), "export held at 50 % of installed PV"
    assert s.ctrl.status.strategy == "operating_mode" and "feed_in_limit" in s.ctrl.status.held_by


def test_air_conditioner_holds_the_cabinet_between_its_points_and_raises_22_on_comm_loss():
    s = Site(start="2026-06-22T12:00:00+02:00",
             air_conditioner={"enabled": True, "cooling_stop_degc": 25.0, "cooling_return_diff_degc": 3.0})
    s.plant.cabinet.t_degc = 31.0
    temps = []
    for _ in range(120):
        s.run(60)
        temps.append(s.plant.cabinet.t_degc)
    assert max(temps[30:]) <= 28.0 + 0.3 and min(temps[30:]) >= 25.0 - 0.5, "cycling between 25 and 28 °C"
    assert any(e["name"] == "do_ac_cooling" and e["detail"] == "on" for e in s.ctrl.events.recent)
    s.event("comm_loss", device="air_conditioner").run(10)
    assert "AirConFault" in s.alarms


def test_off_grid_night_ends_dark_at_the_stop_ess_soc_and_restarts_with_the_sun():
    s = Site(start="2026-06-22T23:00:00+02:00", pv="clear", load="flat", load_peak_w=40e3,
             battery={"initial_soc_pct": 20.0},
             off_grid={"stop_ess_soc_pct": 15.0, "load_cutoff_soc_pct": 15.0}).run(5)
    s.event("grid_outage")
    dark = False
    for _ in range(9 * 60):
        s.run(60)
        if not s.cmd.pcs_run:
            dark = True
            assert s.flows.pcs_w == 0.0 and s.flows.load_w == 0.0 and s.flows.pv_w == 0.0, "the site is dark"
        if dark and s.cmd.pcs_run:
            break
    assert dark, "the ESS stopped at the stop-ESS SOC"
    assert s.cmd.pcs_run and s.plant.irradiance_w_m2 >= 50.0, "started again when the sun came up"
    s.run(1800)
    assert s.flows.pcs_w < 0, "PV recharges the battery while loads stay shed"


def test_forced_off_grid_islands_the_site_and_returns_at_the_return_soc():
    s = Site(start="2026-06-22T22:00:00+02:00", pv="none", load="flat", load_peak_w=20e3,
             battery={"initial_soc_pct": 40.0},
             operating_mode={"mode": "forced_off_grid", "forced_off_grid_min_soc_pct": 38.0,
                             "forced_off_grid_return_soc_pct": 33.0}).run(10)
    assert s.plant.grid_relay_open and not s.ctrl.on_grid and s.flows.grid_w == 0.0
    assert s.flows.pcs_w == pytest.approx(s.flows.load_w), "the battery carries the island"
    for _ in range(240):
        s.run(60)
        if not s.plant.grid_relay_open:
            break
    assert not s.plant.grid_relay_open and s.ctrl.on_grid
    assert s.ctrl.fast.buffers.stack_soc[L.SOC_MEAN] <= 33.5


def test_a_fault_code_is_cleared_when_the_level_falls_back_to_a_warning_with_another_code():
    from ems.control.fastpath import ProtectionEvent
    s = Site()
    now = s.clock.now()
    s.ctrl._protection_event(now, ProtectionEvent("discharge_over_current", 0, 2, 30006))
    s.ctrl._protection_event(now, ProtectionEvent("discharge_over_current", 0, 3, 40001))
    assert {30006, 40001} <= {code for code, _ in s.ctrl.status.active_alarms}
    s.ctrl._protection_event(now, ProtectionEvent("discharge_over_current", 0, 2, 30006))
    codes = {code for code, _ in s.ctrl.status.active_alarms}
    assert 40001 not in codes and 30006 in codes
    raised = [e["code"] for e in s.ctrl.events.recent if e["kind"] == "alarm_raised"]
    assert raised.count(30006) == 1, "a code still active is not raised again"


def test_bad_readings_and_dispatch_values_are_refused_or_ignored():
    s = Site()
    with pytest.raises(ValueError, match="unknown reading"):
        s.ctrl.update_meter("grid_kw", 5.0)
    with pytest.raises(ValueError, match="finite"):
        s.ctrl.command("dispatch_w", float("nan"))
    with pytest.raises(ValueError, match="finite"):
        s.ctrl.command("dispatch_w", "fast")
    s.ctrl.update_meter("grid_w", 1000.0)
    s.ctrl.update_meter("grid_w", float("nan"))        # a NaN reading does not replace the last good one
    assert s.ctrl.fresh("grid_w") == 1000.0


def test_devices_silent_from_start_count_as_lost_only_after_one_max_age():
    s = Site(start="2026-06-22T22:00:00+02:00")
    s.event("comm_loss", device="pcs").run(3)
    assert "pcs_lost/sts_lost" not in s.alarms                   # start-up grace: devices may answer late
    s.run(5)
    assert "pcs_lost/sts_lost" in s.alarms


def test_remote_pcs_off_stops_the_pcs_and_on_restarts_it():
    s = Site(start="2026-06-22T22:00:00+02:00").run(10)
    s.ctrl.command("pcs_off", True, source="remote")
    s.run(5)
    assert not s.cmd.pcs_run and s.flows.pcs_w == 0.0
    s.ctrl.command("pcs_off", False, source="remote")
    s.run(5)
    assert s.cmd.pcs_run and s.flows.pcs_w > 0.0


def test_a_remote_reactive_setpoint_is_a_lease_of_its_own_length():
    s = Site(start="2026-06-22T22:00:00+02:00").run(3)
    s.ctrl.command("reactive_var", 5000.0, lease_s=4.0, source="remote")
    s.run(2)
    assert s.cmd.pcs_reactive_var == 5000.0
    s.run(4)
    assert s.cmd.pcs_reactive_var == 0.0
    with pytest.raises(ValueError, match="finite"):
        s.ctrl.command("reactive_var", float("nan"))


def _trip_at_10_ms(pcs_obeys_stop: bool, **cfg):
    """A cell fault while discharging ~30 kW, stepped at 10 ms: (the PCS power when the contactors open,
    the time from the fault to that moment, whether the PCS was commanded to zero and stopped at once)."""
    s = Site(start="2026-06-22T22:00:00+02:00", load="flat", load_peak_w=30e3, **cfg).run(30)
    assert s.flows.pcs_w > 15e3
    if not pcs_obeys_stop:                        # a PCS that ignores its stop and ramps at 50 kW/s
        follow = s.plant.pcs.follow
        s.plant.pcs.follow = lambda sp, dt, run, avail: follow(sp, dt, True, avail)
    s.event("cell_fault", cluster=0, cell=5, voltage_v=3.80)
    commanded_at_once = None
    for k in range(1000):                         # 10 s at 10 ms
        s.link.read()
        if k % 100 == 0:
            s.ctrl.slow_tick()
        cmd = s.ctrl.fast_tick(10.0)
        pending = s.ctrl.fast.buffers.results[L.TO_ANY_TRIP_PENDING]
        if pending and commanded_at_once is None:
            commanded_at_once = cmd.pcs_setpoint_w == 0.0 and not cmd.pcs_run
        if cmd.open_contactors:
            return s.plant.pcs.p_w, k * 0.01, commanded_at_once
        s.link.actuate(cmd, s.clock.now().astimezone(TZ), 0.01)
        s.clock.advance(0.01)
    pytest.fail("no trip")


def test_a_pending_trip_stops_the_pcs_at_once_and_the_contactors_open_without_load():
    """Issue 17 item 14: the PCS is commanded to zero and stopped in the tick the trip latches; the
    contactors open once the measured current is below [protection] trip_open_current_a."""
    p_w, _, at_once = _trip_at_10_ms(pcs_obeys_stop=True)
    assert at_once
    assert abs(p_w) < 1e3                          # not ~20 kW as with the old fixed delay


def test_contactors_wait_for_the_current_then_open_after_the_maximum_wait():
    p_w, t_s, at_once = _trip_at_10_ms(pcs_obeys_stop=False,
                                       protection={"trip_open_current_a": 5.0, "trip_max_wait_ms": 300.0})
    assert at_once
    # the PCS ramps 30 kW down at 50 kW/s (0.6 s): the current is not below 5 A before the 300 ms wait ends
    assert abs(p_w) > 5e3
    fault_to_latch_s = 1.0                         # the shutdown row's debounce (200 ms) + cell frame period
    assert t_s <= fault_to_latch_s + 0.3 + 0.05
    p_w, t_s, _ = _trip_at_10_ms(pcs_obeys_stop=False,
                                 protection={"trip_open_current_a": 5.0, "trip_max_wait_ms": 3000.0})
    assert abs(p_w) < 5.0 * 800                    # waited until the current was down (≤ 5 A at ~770 V)


@pytest.mark.parametrize("outage_s", [5.0, 7.0, 10.0, 30.0])
def test_a_bms_outage_is_battery_lost_and_recovers_without_a_latched_trip(outage_s):
    """Issue 17 item 17: lost communication is the comm-loss alarm's business (battery_lost 7, safe state,
    automatic recovery); nothing a real measurement did not violate is latched."""
    s = Site(start="2026-06-22T22:00:00+02:00").run(30, step=0.1)
    s.event("comm_loss", device="bms").run(outage_s, step=0.1)
    assert s.cmd.pcs_setpoint_w == 0.0 or outage_s < 5.0
    s.event("comm_restore", device="bms").run(15, step=0.1)
    assert s.alarms == set(), s.alarms
    assert not s.ctrl.fast.buffers.results[L.TO_ANY_TRIPPED]
    assert not [e for e in s.ctrl.events.recent if e["kind"] == "trip"]
    assert s.cmd.pcs_setpoint_w > 1e3                     # back to self-use without a fault reset


def test_peak_shaving_aims_below_the_limit_and_counts_what_exceeds_it(tmp_path):
    """Issue 17 item 16: with the simulator's 3 %/s load noise, import stays within 2 kW of the peak in
    all but a few percent of window steps (7 % here, 32 % when aiming at the limit); every exceedance is an
    event the records sum up in the statistics and the report."""
    from ems.records.recorder import Recorder
    from ems.records import reports as R
    import sqlite3

    s = Site(start="2026-06-22T22:00:00+02:00", load="flat", load_peak_w=100e3, battery={"initial_soc_pct": 90.0},
             self_use={"reserve_soc_pct": 95.0}, peak_shaving={"windows": [
                 {"days": "all", "start": "00:00", "end": "24:00", "peak_w": 80e3}]})
    over, steps = 0, 0
    for _ in range(1200):
        s.run(1)
        if s.n > 60:                     # after the variability estimate has seen a minute
            steps += 1
            over += s.flows.grid_w > 82e3
    assert over / steps < 0.10, over / steps          # 32 % when aiming at the limit itself
    assert s.ctrl.peak_totals["count"] >= 1           # the first seconds, before the battery answered
    events = [e for e in s.ctrl.events.recent if e["kind"] == "peak_exceeded"]
    assert len(events) == min(s.ctrl.peak_totals["count"], 200)
    db = tmp_path / "h.sqlite"
    rec = Recorder(db, timezone="Europe/Berlin")
    for e in events:
        rec.event(e)
    rec.stop()
    con = sqlite3.connect(db)
    day = R.stats(con, "day", "2026-06-22")
    assert day["peak"]["peak_exceedances"] == len([e for e in events if e["data"]["start"] < "2026-06-23"])
    rows = R.report(con, "daily", "2026-06-22")
    assert sum(r["peak_exceedances"] for r in rows) == day["peak"]["peak_exceedances"]
    con.close()
