"""Parallel operation in one process: the site file's checks, the slave's command rules and lease, its
fallback, and the master's plan over the group."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pymodbus.constants import ExcCodes

from ems.comm.modbus_server import WriteRefused
from ems.config import site_from_dict
from ems.config.load import ConfigError
from ems.parallel.block import AVAILABLE, ROLE_SLAVE, STATE_NAMES, command_block, status_block
from ems.parallel.group import Outcome, ParallelGroup
from ems.parallel.slave import CommandCheck, Follower, FollowView, IdConflict
from ems.parallel.units import slave_units, unit_device_id
from ems.strategies.base import TARGET
from ems.strategies.parallel import ParallelFollow
from tests.strategies.harness import snap, wants

MASTER = {"enabled": True, "role": "master", "unit_id": 1, "units": 3,
          "slaves": [{"id": 2, "address": "10.0.0.2:1502"}, {"id": 3, "address": "10.0.0.3:1502"}]}
SLAVE = {"enabled": True, "role": "slave", "unit_id": 2, "units": 3, "master_id": 1, "master_address": "10.0.0.1"}


def problems(parallel: dict, **other) -> dict:
    try:
        site_from_dict({"parallel": parallel, **other})
    except ConfigError as exc:
        return {p.key: p.message for p in exc.problems}
    return {}


# ---------------------------------------------------------------------- the site file
def test_a_consistent_group_passes_and_a_range_expands_to_consecutive_addresses():
    assert problems(MASTER) == {}
    cfg = site_from_dict({"parallel": {**MASTER, "units": 1000, "slaves": [],
                                       "slave_ranges": [{"first_id": 2, "last_id": 1000,
                                                         "first_address": "10.0.0.250:1502", "step": "host"}]}})
    units = slave_units(cfg.parallel)
    assert len(units) == 999 and units[0].host == "10.0.0.250" and units[6].host == "10.0.1.0"
    assert units[-1].id == 1000 and {u.port for u in units} == {1502}


@pytest.mark.parametrize("change, key, words", [
    ({"units": 4}, "parallel.units", "2 unit(s) listed"),
    ({"slaves": [{"id": 2, "address": "10.0.0.2:1502"}, {"id": 2, "address": "10.0.0.3:1502"}]}, "parallel.slaves",
     "given twice"),
    ({"slaves": [{"id": 1, "address": "10.0.0.2:1502"}, {"id": 3, "address": "10.0.0.3:1502"}]}, "parallel.slaves",
     "the master is listed once"),
    ({"slaves": [{"id": 2, "address": "10.0.0.2:1502"}, {"id": 9, "address": "10.0.0.3:1502"}]}, "parallel.slaves",
     "outside the group"),
    ({"slaves": [{"id": 2, "address": "10.0.0.2:1502"}, {"id": 3, "address": "10.0.0.2:1502"}]}, "parallel.slaves",
     "address given twice"),
    ({"slaves": [{"id": 2, "address": "cabinet-2"}, {"id": 3, "address": "10.0.0.3:1502"}]},
     "parallel.slaves[0].address", "HOST:PORT"),
    ({"timeout_ms": 1500}, "parallel.timeout_ms", "below loops.slow_period_ms"),
])
def test_an_inconsistent_master_file_is_refused_with_the_key_and_the_reason(change, key, words):
    got = problems({**MASTER, **change})
    assert key in got and words in got[key], got


def test_a_slave_needs_its_dispatch_server_an_ip_for_its_master_and_a_meter_for_self_use_fallback():
    assert problems(SLAVE) == {}
    assert "parallel.master_id" in problems({**SLAVE, "master_id": 2})
    assert "parallel.master_address" in problems({**SLAVE, "master_address": "master.local"})
    assert "dispatch.server_enabled" in problems(SLAVE, dispatch={"server_enabled": False})
    assert "parallel.fallback" in problems({**SLAVE, "fallback": "self_use"})
    assert "parallel.unit_id" in problems({**SLAVE, "unit_id": 5})


# ---------------------------------------------------------------------- the slave's rules
def command(**over) -> dict:
    v = {"parallel_cmd_master_id": 1, "parallel_cmd_unit_id": 2, "parallel_cmd_units": 3, "parallel_cmd_seq": 7,
         "parallel_cmd_setpoint_w": 40_000, "parallel_cmd_lease_s": 3, "parallel_cmd_share_ppm": 250_000,
         "parallel_cmd_fallback_charge_w": 25_000, "parallel_cmd_fallback_discharge_w": 20_000,
         "parallel_cmd_release": 0}
    v.update(over)
    return v


def test_the_slave_takes_a_whole_command_from_its_master_only():
    check = CommandCheck(site_from_dict({"parallel": SLAVE}), rated_w=100_000)
    cb = command_block()
    cmd = check.check(cb.address, cb.encode(command()), "10.0.0.1")
    assert (cmd.setpoint_w, cmd.lease_s, cmd.share, cmd.fallback_charge_w, cmd.seq) == (40_000, 3, 0.25, 25_000, 7)
    for address, words, client, code in [
            (cb.address, cb.encode(command()), "10.0.0.9", ExcCodes.ILLEGAL_FUNCTION),
            (cb.address, cb.encode(command())[:6], "10.0.0.1", ExcCodes.ILLEGAL_ADDRESS),
            (cb.address + 4, cb.encode(command())[4:6], "10.0.0.1", ExcCodes.ILLEGAL_ADDRESS),
            (cb.address, cb.encode(command(parallel_cmd_setpoint_w=150_000)), "10.0.0.1", ExcCodes.ILLEGAL_VALUE)]:
        with pytest.raises(WriteRefused) as exc:
            check.check(address, words, client)
        assert exc.value.code == code and not isinstance(exc.value, IdConflict)


@pytest.mark.parametrize("over", [{"parallel_cmd_unit_id": 3}, {"parallel_cmd_master_id": 2},
                                  {"parallel_cmd_units": 4}])
def test_a_command_for_another_unit_master_or_group_size_is_an_id_conflict(over):
    check = CommandCheck(site_from_dict({"parallel": SLAVE}), rated_w=100_000)
    with pytest.raises(IdConflict) as exc:
        check.check(command_block().address, command_block().encode(command(**over)), "10.0.0.1")
    assert exc.value.code == ExcCodes.ILLEGAL_VALUE


def test_the_master_and_a_single_machine_take_no_parallel_command():
    for par in (MASTER, {"enabled": False}):
        with pytest.raises(WriteRefused) as exc:
            CommandCheck(site_from_dict({"parallel": par}), 100_000).check(
                command_block().address, command_block().encode(command()), "10.0.0.1")
        assert exc.value.code == ExcCodes.ILLEGAL_FUNCTION


def test_the_lease_lapses_into_fallback_and_the_next_command_resumes_without_a_reset():
    par = site_from_dict({"parallel": {**SLAVE, "lease_s": 2.0}}).parallel
    f = Follower(par, now_s=0.0)
    assert f.state(1.0) == "waiting" and f.state(2.5) == "fallback"        # one lease to hear from the master
    cmd = CommandCheck(site_from_dict({"parallel": SLAVE}), 1e5).check(
        command_block().address, command_block().encode(command()), "10.0.0.1")
    f.take(cmd, 3.0)
    assert f.state(5.9) == "following" and f.view(5.9).setpoint_w == 40_000
    assert f.state(6.1) == "fallback" and f.view(6.1).setpoint_w is None
    f.conflict("for unit 3", 6.2)
    assert f.state(6.3) == "id_fault"
    f.take(cmd, 7.0)
    assert f.state(7.1) == "following" and not f.conflicted(7.1)


def view(state="fallback", fallback="self_use", share=0.25, chg=25_000.0, dchg=20_000.0, setpoint=None):
    return FollowView(state, setpoint, fallback, share, chg, dchg, "parallel: test")


def test_fallback_self_use_takes_its_share_of_the_grid_error_within_its_share_of_the_site_limits():
    s = ParallelFollow()
    # importing 40 kW, this unit at 10 kW: its quarter of the error is 10 kW more
    assert wants(s, dataclasses.replace(snap(grid_w=40_000, pcs_w=10_000), parallel=view())) == [(TARGET, 20_000)]
    # a big import: no more than its share of the site's last discharge limit
    assert wants(s, dataclasses.replace(snap(grid_w=400_000, pcs_w=10_000), parallel=view())) == [(TARGET, 20_000)]
    assert wants(s, dataclasses.replace(snap(grid_w=-400_000, pcs_w=0), parallel=view())) == [(TARGET, -25_000)]
    # no grid reading, or standby: 0 W; following: the master's setpoint
    assert wants(s, dataclasses.replace(snap(grid_w=None), parallel=view())) == [(TARGET, 0.0)]
    assert wants(s, dataclasses.replace(snap(grid_w=40_000), parallel=view(fallback="standby"))) == [(TARGET, 0.0)]
    assert wants(s, dataclasses.replace(snap(), parallel=view("following", setpoint=33_000))) == [(TARGET, 33_000)]


def test_a_slave_runs_no_site_strategy():
    from ems.strategies import build
    names = [s.name for s in build(site_from_dict({"parallel": SLAVE}))]
    assert names == ["one_click_shutdown", "parallel", "air_conditioner"]


# ---------------------------------------------------------------------- the master's group
class FakeCtrl:
    """What the group needs of the master's controller: its own state and the alarm hook."""

    def __init__(self, cfg):
        from ems.control.controller import Status
        self.cfg, self.status, self.alarms = cfg, Status(), []

    def external_alarm(self, code, active, detail, device_id, holder):
        self.alarms.append((code, active, device_id, detail))
        if active:
            self.status.active_alarms[(code, device_id)] = str(code)
        else:
            self.status.active_alarms.pop((code, device_id), None)


def slave_state(uid: int, soc: float, rated: float = 100e3, energy: float = 200e3, available=True, units=3) -> dict:
    return {"parallel_id": uid, "parallel_units": units, "parallel_role": ROLE_SLAVE,
            "parallel_state": STATE_NAMES.index("following"), "unit_flags": int(available) << AVAILABLE,
            "unit_charge_max_w": rated, "unit_discharge_max_w": rated, "unit_soc_pct": soc,
            "unit_charge_energy_wh": (100 - soc) / 100 * energy, "unit_discharge_energy_wh": soc / 100 * energy,
            "unit_pcs_power_w": 0.0, "unit_setpoint_w": 0.0, "parallel_seq_echo": 0, "unit_rated_power_w": rated,
            "unit_first_alarm": 0, "unit_heartbeat": 1, "parallel_following_id": 1}


@pytest.fixture
def group(monkeypatch):
    cfg = site_from_dict({"parallel": MASTER})
    g = ParallelGroup(cfg, slave_units(cfg.parallel), now_s=0.0)
    own = slave_state(1, 50.0)
    monkeypatch.setattr("ems.parallel.group.unit_state", lambda ctrl: dict(own, parallel_role=1))
    return g, FakeCtrl(cfg)


def plan(g, target_w: float) -> float:
    g.req_active[:] = 0
    g.req_kind[0], g.req_value[0], g.req_active[0] = TARGET, target_w, 1
    return g.plan()


def test_the_site_power_is_shared_by_the_energy_each_unit_can_give(group):
    g, ctrl = group
    g.take_cycle([Outcome(True, slave_state(2, 20.0), at_s=1.0), Outcome(True, slave_state(3, 80.0), at_s=1.0)])
    g.update(ctrl, 1.0)
    assert g.site()["charge_limit_w"] == 300e3 and g.site()["soc_pct"] == pytest.approx(50.0)
    own = plan(g, 150e3)
    assert own == pytest.approx(50e3) and g.out_w.tolist() == pytest.approx([50e3, 20e3, 80e3])
    cmds = g.commands()
    assert [c["parallel_cmd_unit_id"] for c in cmds] == [2, 3]
    assert cmds[1]["parallel_cmd_setpoint_w"] == 80_000 and cmds[1]["parallel_cmd_share_ppm"] == pytest.approx(533_333, abs=1)
    command_block().encode(cmds[0])             # what the link sends is within the map's ranges


def test_a_unit_that_fails_is_out_of_the_next_plan_and_alarmed_once_it_is_silent_long_enough(group):
    g, ctrl = group
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=1.0), Outcome(True, slave_state(3, 50.0), at_s=1.0)])
    g.update(ctrl, 1.0)
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=2.0), Outcome(False, error="no connection", at_s=2.0)])
    assert g.changed.is_set()                   # the runtime re-plans at once, not at the next slow tick
    g.update(ctrl, 2.0)
    assert plan(g, 150e3) == pytest.approx(75e3) and g.out_w[2] == 0.0
    assert not ctrl.alarms
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=5.0), Outcome(False, error="no connection", at_s=5.0)])
    g.update(ctrl, 5.0)                          # silent since 1.0 s, unit_lost_s is 3 s
    assert ctrl.alarms == [(56, True, unit_device_id(3), "unit 3 (10.0.0.3:1502): no answer for 3 s: no connection")]
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=6.0), Outcome(True, slave_state(3, 50.0), at_s=6.0)])
    g.update(ctrl, 6.0)
    assert ctrl.alarms[-1][:3] == (56, False, unit_device_id(3)) and g.online.tolist() == [1, 1, 1]


@pytest.mark.parametrize("state, why", [
    (slave_state(2, 50.0), "answers as unit 2, configured as unit 3"),
    (slave_state(3, 50.0, units=4), "counts 4 units, the master 3"),
    (dict(slave_state(3, 50.0), parallel_role=1), "is not configured as a slave"),
])
def test_a_unit_whose_ids_disagree_gets_no_share_and_57(group, state, why):
    g, ctrl = group
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=1.0), Outcome(True, state, at_s=1.0)])
    g.update(ctrl, 1.0)
    g.alarms(ctrl)
    plan(g, 100e3)
    assert g.out_w[2] == 0.0 and g.online[2] == 0
    assert ctrl.alarms[-1][:3] == (57, True, unit_device_id(3)) and why in ctrl.alarms[-1][3]


def test_a_refused_command_is_explained_by_what_the_unit_answers_as(group):
    g, ctrl = group
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=1.0),
                  Outcome(False, slave_state(2, 50.0), "refused the command: illegal value", refused=True, at_s=1.0)])
    g.update(ctrl, 1.0)
    g.alarms(ctrl)
    assert "answers as unit 2" in ctrl.alarms[-1][3]


def test_the_status_block_carries_every_value_a_unit_reports():
    sb = status_block()
    values = slave_state(7, 42.5)
    back = sb.decode(sb.encode(values))
    assert back["unit_soc_pct"] == pytest.approx(42.5) and back["parallel_id"] == 7
    assert sb.decode(sb.encode({**values, "unit_soc_pct": None, "unit_pcs_power_w": None}))["unit_soc_pct"] is None
    assert np.isclose(back["unit_discharge_energy_wh"], 85_000)


def test_a_slave_refuses_a_direct_dispatch_setpoint_and_points_to_its_master():
    from ems.comm.dispatch import DispatchServer
    srv = DispatchServer(site_from_dict({"parallel": SLAVE, "dispatch": {"start_remote": True}}))
    reg = srv.native.registers["active_power_setpoint_w"]
    with pytest.raises(WriteRefused) as exc:
        srv._validate(3, reg.address, reg.encode(10_000), "127.0.0.1")
    assert exc.value.code == ExcCodes.ILLEGAL_FUNCTION and "through its master (unit 1)" in str(exc.value)
    fc = srv.native.registers["fault_clear"]
    srv._validate(3, fc.address, fc.encode(1), "127.0.0.1")          # a unit's own faults it still clears


def test_simulate_refuses_a_parallel_site_with_the_reason(tmp_path, capsys):
    from ems.cli import main
    scen = tmp_path / "s.toml"
    scen.write_text('[simulation]\nstart = "2026-06-20T00:00:00+02:00"\nduration_h = 1\n'
                    '[parallel]\nenabled = true\nrole = "slave"\nunit_id = 2\nunits = 2\n')
    assert main(["simulate", str(scen), "--out", str(tmp_path / "out")]) == 1
    assert "a parallel site is several controllers" in capsys.readouterr().err


# ---------------------------------------------------------------------- a backup master
BACKED = {**SLAVE, "unit_id": 3, "backup_id": 2, "backup_address": "10.0.0.2"}
BACKUP = {**SLAVE, "backup_master": True, "backup_id": 2, "master_dispatch": "10.0.0.1:1502",
          "slaves": [{"id": 3, "address": "10.0.0.3:1502"}]}


METER = {"modbus": [{"name": "grid_meter", "role": "grid_meter", "model": "DTSU666-H"}]}


def test_a_backup_master_needs_the_units_it_commands_the_master_to_watch_and_the_site_meter():
    meter = METER
    assert problems(BACKED) == {}
    assert problems(BACKUP, devices=meter) == {}
    assert "parallel.backup_master" in problems(BACKUP)                          # no grid meter
    assert "parallel.units" in problems({**BACKUP, "slaves": []}, devices=meter)
    assert "parallel.master_dispatch" in problems({**BACKUP, "master_dispatch": ""}, devices=meter)
    assert "parallel.backup_id" in problems({**BACKED, "backup_id": 1})           # the master is no backup
    assert "parallel.slaves" in problems({**BACKED, "slaves": [{"id": 2, "address": "10.0.0.2:1502"}]})


def backed_check(clock):
    return CommandCheck(site_from_dict({"parallel": BACKED}), 1e5, now=lambda: clock[0])


def cmd_words(master_id: int, release: int = 0) -> list[int]:
    return command_block().encode(command(parallel_cmd_master_id=master_id, parallel_cmd_unit_id=3,
                                          parallel_cmd_release=release))


def test_never_two_masters_a_unit_takes_the_backup_only_once_the_masters_lease_has_run_out():
    clock = [0.0]
    check, a = backed_check(clock), command_block().address
    assert check.check(a, cmd_words(1), "10.0.0.1").master_id == 1              # the master holds it for 3 s
    clock[0] = 2.9
    with pytest.raises(WriteRefused) as exc:
        check.check(a, cmd_words(2), "10.0.0.2")
    assert exc.value.code == ExcCodes.ILLEGAL_FUNCTION and not isinstance(exc.value, IdConflict)
    assert "follows master 1" in str(exc.value)
    clock[0] = 3.1                                                               # the lease ran out: the backup
    assert check.check(a, cmd_words(2), "10.0.0.2").master_id == 2
    with pytest.raises(WriteRefused):                                            # ... and the master must wait
        check.check(a, cmd_words(1), "10.0.0.1")
    assert check.check(a, cmd_words(2, release=1), "10.0.0.2").release          # the backup hands back:
    assert check.check(a, cmd_words(1), "10.0.0.1").master_id == 1              # the master at once
    with pytest.raises(IdConflict):                                              # the backup's ID from the master's
        check.check(a, cmd_words(2), "10.0.0.1")                                # address is a conflict


def test_the_backup_in_control_takes_no_command_and_the_master_yields_to_it(group):
    g, ctrl = group
    held = dict(slave_state(3, 50.0), parallel_following_id=7)
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=1.0),
                  Outcome(False, held, "refused the command: illegal function", refused=True, at_s=1.0)])
    g.update(ctrl, 1.0)
    g.alarms(ctrl)
    assert g.yielding_to == 7 and plan(g, 100e3) == 0.0 and not g.out_w.any()
    assert not ctrl.alarms and g.rows()[2]["held_by"] == 7                       # no 57, no 56: it is alive
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=2.0), Outcome(True, slave_state(3, 50.0), at_s=2.0)])
    g.update(ctrl, 2.0)
    assert g.yielding_to == 0 and plan(g, 90e3) == pytest.approx(30e3)
    check = CommandCheck(site_from_dict({"parallel": BACKUP, "devices": METER}), 1e5)
    check.acting = True
    with pytest.raises(WriteRefused) as exc:
        check.check(command_block().address, command_block().encode(command()), "10.0.0.1")
    assert "backup master in control" in str(exc.value)


def test_a_unit_that_has_not_published_its_status_yet_is_out_but_no_id_fault(group):
    g, ctrl = group
    blank = {name: 0 for name in status_block().names}
    g.take_cycle([Outcome(True, blank, at_s=1.0), Outcome(True, slave_state(3, 50.0), at_s=1.0)])
    g.update(ctrl, 1.0)
    g.alarms(ctrl)
    assert g.online.tolist() == [1, 0, 1] and not ctrl.alarms


def test_the_block_codec_is_the_profiles_register_codec_word_for_word():
    """One struct for the block (speed at 1000 units) against each register's own codec (the reference)."""
    from hypothesis import given, settings, strategies as st

    sb, cb = status_block(), command_block()

    def values(block, draw_int):
        out = {}
        for r in block.registers:
            lo, hi = (r.min, r.max) if r.writable else ({"u16": (0, 65534), "s16": (-32767, 32767),
                                                          "u32": (0, 2**32 - 2), "s32": (-2**31 + 1, 2**31 - 1)}[r.type])
            out[r.name] = draw_int(int(lo), int(hi)) * r.scale
        return out

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def check(data):
        for block in (sb, cb):
            v = values(block, lambda lo, hi: data.draw(st.integers(lo, hi)))
            words = block.encode(v)
            want = [w for r in block.registers for w in (r.encode(v[r.name]) if r.writable else r.to_words(v[r.name]))]
            assert words == want
            back = block.decode(words)
            assert back == {r.name: r.decode(words[r.address - block.address:r.address - block.address + r.count])
                            for r in block.registers}
    check()


def test_the_site_runs_on_when_the_masters_own_pcs_is_unknown(group, monkeypatch):
    g, ctrl = group
    own = dict(slave_state(1, 50.0, available=False), parallel_role=1, unit_pcs_power_w=None)
    monkeypatch.setattr("ems.parallel.group.unit_state", lambda c: own)
    g.take_cycle([Outcome(True, slave_state(2, 50.0), at_s=1.0), Outcome(True, slave_state(3, 50.0), at_s=1.0)])
    g.update(ctrl, 1.0)
    assert plan(g, 100e3) == 0.0 and g.out_w.tolist() == pytest.approx([0.0, 50e3, 50e3])
    g.update(ctrl, 1.5)
    assert g.site()["pcs_w"] == pytest.approx(100e3)          # the slaves' commanded shares: the site is known


def test_the_installers_example_files_pass_the_check():
    from pathlib import Path

    from ems.config.load import load_site
    sites = Path(__file__).parents[2] / "examples" / "sites"
    master = load_site(sites / "parallel_master.toml")
    slave = load_site(sites / "parallel_slave.toml")
    assert [u.id for u in slave_units(master.parallel)] == [2, 3, 4] and master.parallel.units == 4
    assert slave.parallel.role == "slave" and slave.parallel.backup_id == 2
