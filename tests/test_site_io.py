"""The device layer (SiteIo) on the simulated site, in-process on a virtual clock: comm supervision per device
with its own age, roles a site does not have, fault words, the grid state, the contacts' module, live
parameter changes."""
import dataclasses
from datetime import datetime

import pytest

from ems.config import site_from_dict
from ems.config.load import load_site
from ems.control.clock import VirtualClock
from ems.control.controller import Controller
from ems.records.catalogue import catalogue
from ems.sim.layout import sim_config
from ems.sim.runner import SimLink
from ems.sim.scenario import Event


class Site:
    def __init__(self, start="2026-06-22T22:00:00+02:00", **cfg):
        self.cfg = site_from_dict(cfg)
        self.clock = VirtualClock(datetime.fromisoformat(start))
        self.ctrl = Controller(self.cfg, self.clock)
        self.link = SimLink(self.cfg, self.ctrl, "clear", "flat", 30_000.0)
        self.cmd = None

    def event(self, kind, **args):
        self.link.apply(Event(self.clock.now(), kind, args))
        return self

    def run(self, seconds, step=0.5):
        for n in range(int(seconds / step)):
            self.link.read()
            if n % 2 == 0:
                self.ctrl.slow_tick()
            self.cmd = self.ctrl.fast_tick(step * 1000)
            self.ctrl.explain()
            self.link.actuate(self.cmd, self.clock.now().astimezone(self.ctrl.tz), step)
            self.clock.advance(step)
        return self

    def codes(self):
        return {code for code, _ in self.ctrl.status.active_alarms}


@pytest.mark.parametrize("device, code", [("grid_meter", 5), ("pcs", 4), ("pv", 21), ("air_conditioner", 22),
                                          ("bms", 7), ("io_module", 5015)])
def test_each_silent_device_raises_its_comm_alarm_within_its_age_and_recovers_by_itself(device, code):
    s = Site(air_conditioner={"enabled": True}).run(10)
    assert code not in s.codes()
    s.event("comm_loss", device=device)
    s.run(4.5)
    assert code not in s.codes(), "not before its comm-loss age (5 s)"
    s.run(1.5)
    assert code in s.codes()
    s.event("comm_restore", device=device).run(2)
    assert code not in s.codes() and not s.ctrl.status.active_alarms, "back without a reset"


def test_each_device_has_its_own_comm_loss_age():
    cfg = sim_config(site_from_dict({}))
    devices = [dataclasses.replace(d, comm_loss_s=2.0 if d.role == "grid_meter" else 20.0) for d in cfg.devices.modbus]
    s = Site()
    s.link = SimLink(dataclasses.replace(cfg, devices=dataclasses.replace(cfg.devices, modbus=devices)), s.ctrl)
    s.run(25)
    s.event("comm_loss", device="grid_meter").event("comm_loss", device="pcs").run(3)
    assert 5 in s.codes() and 4 not in s.codes()
    s.run(18)
    assert 4 in s.codes()


def test_the_io_module_carrying_the_epo_is_fail_safe_when_it_is_lost():
    s = Site().run(10)
    assert s.cmd.pcs_run
    s.event("comm_loss", device="io_module").run(6)
    assert 5015 in s.codes() and not s.cmd.pcs_run and s.ctrl.safety_stop() == "io_module"
    s.event("comm_restore", device="io_module").run(2)
    assert s.cmd.pcs_run and 5015 not in s.codes()


def test_a_pcs_fault_bit_raises_the_manuals_code_with_its_remedy_and_clears_with_it():
    s = Site().run(5)
    s.event("pcs_fault", code=100470).run(6)             # Inverter Over Temperature, bit 7 of fault_word_1
    assert (100470, 0x06000000) in s.ctrl.status.active_alarms
    raised = [e for e in s.ctrl.events.recent if e["kind"] == "alarm_raised" and e["code"] == 100470]
    assert raised and raised[0]["device_id"] == "0x06000000" and "fault_word_1 bit 7" in raised[0]["detail"]
    assert catalogue().get(100470).remedy
    s.event("pcs_fault_clear", code=100470).run(6)
    assert (100470, 0x06000000) not in s.ctrl.status.active_alarms


def test_without_a_grid_present_contact_the_grid_state_is_the_pcss_grid_forming_flag():
    cfg = sim_config(site_from_dict({}))
    channels = [c for c in cfg.dry_contacts.channels if c.name != "grid_present"]
    cfg = dataclasses.replace(cfg, dry_contacts=dataclasses.replace(cfg.dry_contacts, channels=channels))
    s = Site(start="2026-06-22T12:00:00+02:00")
    s.link = SimLink(cfg, s.ctrl, "clear", "flat", 30_000.0)
    assert s.link.io.grid_source == "pcs"
    s.run(5)
    assert s.ctrl.on_grid
    s.event("grid_outage").run(3)
    assert not s.ctrl.on_grid and s.ctrl.status.strategy == "off_grid"
    s.event("grid_return").run(3)
    assert s.ctrl.on_grid


def test_a_site_without_pv_or_grid_meter_says_so_and_raises_no_alarm_for_them():
    cfg = sim_config(site_from_dict({"pv": {"installed_ac_w": 0.0}}))
    devices = [d for d in cfg.devices.modbus if d.role not in ("grid_meter", "pv_meter", "pv_inverter")]
    cfg = dataclasses.replace(cfg, devices=dataclasses.replace(cfg.devices, modbus=devices))
    s = Site(pv={"installed_ac_w": 0.0})
    s.link = SimLink(cfg, s.ctrl, "none", "flat", 30_000.0)
    s.run(20)
    notes = " ".join(s.link.io.notes())
    assert "no grid meter" in notes and "the battery never discharges" in notes and "has no PV" in notes
    assert not s.codes() & {5, 21}
    assert s.ctrl.snapshot.pv_w == 0.0, "no PV on the site: known to be zero"
    assert s.ctrl.snapshot.grid_w is None and s.cmd.pcs_setpoint_w <= 0.0


def test_a_strategy_parameter_change_applies_within_one_slow_tick_keeping_the_strategys_state(tmp_path):
    s = Site(start="2026-06-22T22:00:00+02:00", generator={"enabled": True, "start_stop_mode": "manual"}).run(5)
    gen = s.ctrl._by_name["generator"]
    gen.want = True                              # a running generator: state the strategy built up
    new = site_from_dict({"generator": {"enabled": True, "start_stop_mode": "manual", "rated_power_w": 60_000.0},
                          "self_use": {"reserve_soc_pct": 60.0}, "pcs": {"rated_power_w": 90_000.0}})
    live, later = s.ctrl.reconfigure(new)
    assert set(live) == {"generator", "self_use"} and later == ["pcs"]
    assert s.ctrl._by_name["generator"].want is True and s.ctrl._by_name["generator"].cfg.rated_power_w == 60_000.0
    assert s.ctrl.cfg.pcs.rated_power_w == 100_000.0, "a restart section is not half-applied"
    s.run(1)
    assert s.ctrl.status.reason.startswith("self-use: at reserve 60"), s.ctrl.status.reason
    assert any(e["kind"] == "parameters_applied" for e in s.ctrl.events.recent)


def test_the_simulated_site_serves_a_site_files_own_devices_as_it_names_them(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text('[[devices.modbus]]\nname = "meter"\nrole = "grid_meter"\nmodel = "DTSU666-H"\nunit_id = 101\n'
                 '[[devices.modbus]]\nname = "inverter"\nrole = "pcs"\nmodel = "SUNSPEC-PCS"\n')
    cfg = sim_config(load_site(f))
    assert [d.name for d in cfg.devices.modbus] == ["meter", "inverter", "dio"]
    s = Site()
    s.link = SimLink(cfg, s.ctrl, "none", "flat", 30_000.0)
    s.run(10)
    assert s.ctrl.snapshot.pcs_w is not None and s.ctrl.snapshot.grid_w is not None
    assert not s.codes() & {4, 5}
