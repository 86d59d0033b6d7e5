"""`ems run` on a simulated site reporting to a real Mosquitto over TLS: the retained state and the status at
its cycle, and an alarm the controller raises out on the broker within a second of being raised."""
from __future__ import annotations


import time

from ems.comm.net import free_port
from tests.cloud.broker import USERS, Operator, Subscriber
from tests.comm.test_modbus_engine import wait_for
from tests.procs import EmsRun, control, sim_site


IDENTITIES = ('identities = [{ name = "operator", role = "operator" }, { name = "viewer", role = "end_user" }, '
              '{ name = "installer", role = "installer" }]\n')


def cloud_site(broker, tmp_path, name: str, extra: str = ""):
    """A simulated site whose `ems run` reports to the broker as site-1: (sim-site, ems run)."""
    pw = tmp_path / "cloud.password"
    pw.write_text(USERS["ems"] + "\n")
    base = tmp_path / "base.toml"
    base.write_text(f'[site]\nname = "{name}"\n[dispatch]\nport = {free_port()}\n[api]\nport = {free_port()}\n'
                    f'[cloud]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\nsite_id = "site-1"\n'
                    f'ca_file = "{broker.ca}"\nusername = "ems"\npassword_file = "{pw}"\n{extra}')
    sim = sim_site(tmp_path, base)
    return sim, EmsRun("--config", str(sim.site_file), "--db", str(tmp_path / "history.sqlite"),
                       "--state", str(tmp_path / "state.json"))


def test_a_running_site_reports_to_the_broker_and_an_alarm_is_out_within_a_second(broker, tmp_path):
    sub = Subscriber(broker)
    sim, run = cloud_site(broker, tmp_path, "Cloud test", "upload_cycle_s = 2.0\nremote = true\n" + IDENTITIES)
    try:
        assert run.wait_for(lambda s: s.startswith("cloud: MQTTS"), 30), run.text() + "".join(run.err)
        assert sub.wait(lambda: [m for m in sub.of("/v1/online") if m["state"] == "online"], 20), sub.messages
        devices = sub.wait(lambda: [m for m in sub.of("/v1/devices") if m["devices"]], 20)
        assert {"grid_meter", "pcs"} <= {d["name"] for d in devices[-1]["devices"]}, devices[-1]
        status = sub.wait(lambda: [m for m in sub.of("/v1/status") if m.get("soc_pct") is not None], 20)
        assert status[-1]["strategy"] and status[-1]["soc_bound_pct"] is not None, status[-1]
        n = len(sub.of("/v1/status"))
        assert sub.wait(lambda: len(sub.of("/v1/status")) >= n + 2, 8)      # again at its 2 s cycle
        # the fire input closes: the controller raises 54 at once; the cloud has it within a second
        assert control(sim, kind="di", name="fire_action", closed=True)["ok"]
        got = sub.wait(lambda: [m for m in sub.of("/v1/alarms/history") if m["name"] == "YX_fire_action"], 10)
        assert got, [m for m in sub.of("/v1/alarms/history")]
        arrived = next(at for at, t, m, _ in sub.messages if t.endswith("alarms/history")
                       and m["name"] == "YX_fire_action")
        print(f"alarm raised → on the broker: {(arrived - got[0]['t']) * 1e3:.0f} ms")
        assert arrived - got[0]["t"] < 1.0, arrived - got[0]["t"]
        active = sub.wait(lambda: [m for m in sub.of("/v1/alarms/active")
                                   if any(a["name"] == "YX_fire_action" for a in m["alarms"])], 5)
        assert active
    finally:
        run.stop()
        sim.stop()
        sub.close()


def test_the_site_is_operated_from_the_cloud_by_identity_and_role(broker, tmp_path):
    sim, run = cloud_site(broker, tmp_path, "Cloud ops", "remote = true\n" + IDENTITIES)
    op = viewer = None
    try:
        assert run.wait_for(lambda s: s.startswith("cloud: MQTTS") and "requests from operator, viewer, installer"
                            in s, 30), \
            run.text() + "".join(run.err)
        op, viewer = Operator(broker, "operator"), Operator(broker, "viewer")
        r = op.ask(action="command", name="forced_charge", value=True)
        assert r and r["ok"] and r["result"] == "done", r
        assert run.wait_for(lambda s: "forced" in s, 10)                     # the strategy took it
        r = viewer.ask(action="command", name="forced_charge", value=False)
        assert r and not r["ok"] and "role end_user may not send commands" in r["error"], r
        r = op.ask(action="dispatch", value_w=20_000, lease_s=30)
        assert r and r["ok"], r
        # the grid operator's PCS limit holds over every customer strategy, then lapses with its lease
        assert wait_for(lambda: abs(control(sim, kind="truth")["truth"]["pcs_w"]) > 8_000, 15)
        r = op.ask(action="grid_operator", limits={"pcs_limit_w": 5_000, "lease_s": 6})
        assert r and r["ok"], r
        assert wait_for(lambda: abs(control(sim, kind="truth")["truth"]["pcs_w"]) <= 5_100, 8)
        held = [abs(control(sim, kind="truth")["truth"]["pcs_w"]) for _ in range(5) if time.sleep(0.3) is None]
        assert max(held) <= 5_100, held
        assert wait_for(lambda: abs(control(sim, kind="truth")["truth"]["pcs_w"]) > 8_000, 15)   # lapsed
        r = op.ask(action="grid_operator", limits={"pcs_limit_w": -5})
        assert not r["ok"] and "grid_operator pcs_limit_w" in r["error"], r
        # parameters by group: read; a strategy's taken live; an installation one refused for the operator;
        # a value out of range refused with the reason, nothing changed
        # an operator asks for the live cycle for a while: the status every second, then back to the cycle
        sub = Subscriber(broker)
        r = op.ask(action="live", cycle_s=1, lease_s=4)
        assert r and r["ok"], r
        assert sub.wait(lambda: len(sub.of("/v1/status")) >= 3, 5), len(sub.of("/v1/status"))
        time.sleep(4.5)
        n = len(sub.of("/v1/status"))
        time.sleep(3)
        assert len(sub.of("/v1/status")) == n                      # the lease is over: the 300 s cycle again
        sub.close()
        assert not op.ask(action="live", cycle_s=1, lease_s=1e6)["ok"]
        r = op.ask(action="parameters_get", group="self_use")
        assert r["ok"] and r["result"]["parameters"]["reserve_soc_pct"] == 10.0, r
        r = op.ask(action="parameters_set", changes={"self_use.reserve_soc_pct": 20})
        assert r["ok"] and r["result"]["applied_live"] == ["self_use.reserve_soc_pct"], r
        assert op.ask(action="parameters_get", group="self_use")["result"]["parameters"]["reserve_soc_pct"] == 20
        r = op.ask(action="parameters_set", changes={"pcs.rated_power_w": 50_000})
        assert not r["ok"] and "may not change [pcs]" in r["error"], r
        r = op.ask(action="parameters_set", changes={"self_use.reserve_soc_pct": 150})
        assert not r["ok"] and any("reserve_soc_pct" in x for x in r["reasons"]), r
        assert op.ask(action="parameters_get", group="self_use")["result"]["parameters"]["reserve_soc_pct"] == 20
        assert not op.ask(action="reboot_everything")["ok"]
        # the PCS's grid protection (001_… PCS Remote Maintenance): queried, set by an installer, read back
        inst = Operator(broker, "installer")
        try:
            assert wait_for(lambda: op.ask(action="pcs_protection_get")["result"]["parameters"]["ov1_ratio_pct"]
                            is not None, 15)
            now = op.ask(action="pcs_protection_get")["result"]["parameters"]
            assert now["ov1_ratio_pct"] == 110.0 and now["uf2_hz"] == 47.0, now
            r = op.ask(action="pcs_protection_set", changes={"ov1_ratio_pct": 112.0})
            assert not r["ok"] and "role operator may not change the PCS's grid protection" in r["error"], r
            r = inst.ask(timeout_s=25, action="pcs_protection_set", changes={"ov1_ratio_pct": 112.0, "ov1_time_s": 2.5})
            assert r and r["ok"] and r["result"]["read_back"] == {"ov1_ratio_pct": 112.0, "ov1_time_s": 2.5}, r
            assert op.ask(action="pcs_protection_get")["result"]["parameters"]["ov1_ratio_pct"] == 112.0
            r = inst.ask(action="pcs_protection_set", changes={"ov1_ratio_pct": 150.0})
            assert not r["ok"] and "outside 100" in r["error"], r
            r = inst.ask(action="pcs_protection_set", changes={"ov2_ratio_pct": 111.0})    # below stage 1's 112
            assert not r["ok"] and "beyond stage 1" in r["error"], r
        finally:
            inst.close()
        # the broker's ACL: an identity cannot speak as another (its request never reaches the EMS)
        assert op.ask(timeout_s=2, topic_user="viewer", action="command", name="fault_reset") is None
        # every remote action is in the log with the identity it came from
        from ems.records import db as DB
        time.sleep(1.0)
        con = DB.connect(tmp_path / "history.sqlite", readonly=True)
        users = {u for (u,) in con.execute("SELECT user FROM log WHERE user LIKE 'cloud:%'")}
        actions = {a for (a,) in con.execute("SELECT action FROM log WHERE user = 'cloud:operator'")}
        con.close()
        assert {"cloud:operator", "cloud:viewer", "cloud:installer"} <= users, users
        assert {"parameter_write", "cloud_refused"} <= actions and any("forced_charge" in a for a in actions), actions
        # a remote restart by an installer: answered, then the clean stop (systemd starts the service again)
        inst = Operator(broker, "installer")
        try:
            assert not op.ask(action="restart")["ok"]                          # an operator may not
            r = inst.ask(action="restart")
            assert r and r["ok"] and r["result"] == {"restarting": True}, r
            assert run.proc.wait(20) == 0 and "remote restart by cloud:installer: stopping" in run.text()
        finally:
            inst.close()
    finally:
        for o in (op, viewer):
            if o is not None:
                o.close()
        run.stop()
        sim.stop()



def test_the_protection_of_a_sunspec_pcs_is_set_from_the_cloud_on_its_trip_curves_and_read_back(broker, tmp_path):
    """001_… PCS Remote Maintenance on the SunSpec PCS (models 707–710): an installer sets stage 1 under-voltage
    over MQTT; the EMS writes curve 2, has the PCS adopt it and reads the active curve back; a real SunSpec
    client (pysunspec2) then reads the new stage on the simulated device itself."""
    import sunspec2.modbus.client as ss_client

    from ems.config.load import load_site
    pcs = (f'[devices]\ncan_interface = "socketcand"\ncan_host = "127.0.0.1"\ncan_port = {free_port()}\n'
           f'[[devices.modbus]]\nname = "inverter"\nrole = "pcs"\nmodel = "SUNSPEC-PCS"\nport = {free_port()}\n')
    sim, run = cloud_site(broker, tmp_path, "SunSpec PCS", "remote = true\n" + IDENTITIES + pcs)
    inst = d = None
    try:
        assert run.wait_for(lambda s: s.startswith("cloud: MQTTS"), 30), run.text() + "".join(run.err)
        inst = Operator(broker, "installer")
        assert wait_for(lambda: (inst.ask(action="pcs_protection_get") or {}).get("result", {}).get(
            "parameters", {}).get("uv1_ratio_pct") is not None, 20)
        assert inst.ask(action="pcs_protection_get")["result"]["parameters"]["uv2_time_s"] == 0.3
        r = inst.ask(timeout_s=25, action="pcs_protection_set", changes={"uv1_ratio_pct": 80.0, "uv1_time_s": 2.5})
        assert r and r["ok"] and r["result"]["read_back"] == {"uv1_ratio_pct": 80.0, "uv1_time_s": 2.5}, r
        r = inst.ask(action="pcs_protection_set", changes={"uv2_ratio_pct": 82.0})        # above stage 1's 80
        assert not r["ok"] and "beyond stage 1" in r["error"], r
        dev = next(m for m in load_site(sim.site_file).devices.modbus if m.role == "pcs")
        d = ss_client.SunSpecModbusClientDeviceTCP(slave_id=dev.unit_id, ipaddr=dev.host, ipport=dev.port)
        d.scan()
        lv = d.DERTripLV[0]
        lv.read()
        assert lv.AdptCrvRslt.value == 1
        assert (lv.Crv[0].MustTrip.Pt[1].V.cvalue, lv.Crv[0].MustTrip.Pt[1].Tms.cvalue) == (80.0, 2.5)
        assert lv.Crv[0].MustTrip.Pt[0].V.cvalue == 45.0, "stage 2 as it was"
    finally:
        if d is not None:
            d.close()
        if inst is not None:
            inst.close()
        run.stop()
        sim.stop()
