"""`ems run` on a simulated site reporting to a real Mosquitto over TLS: the retained state and the status at
its cycle, and an alarm the controller raises out on the broker within a second of being raised."""
from __future__ import annotations


from ems.comm.net import free_port
from tests.cloud.broker import USERS, Subscriber
from tests.procs import EmsRun, control, sim_site


def test_a_running_site_reports_to_the_broker_and_an_alarm_is_out_within_a_second(broker, tmp_path):
    pw = tmp_path / "cloud.password"
    pw.write_text(USERS["ems"] + "\n")
    base = tmp_path / "base.toml"
    base.write_text(f'[site]\nname = "Cloud test"\n[dispatch]\nport = {free_port()}\n[api]\nport = {free_port()}\n'
                    f'[cloud]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\nsite_id = "site-1"\n'
                    f'ca_file = "{broker.ca}"\nusername = "ems"\npassword_file = "{pw}"\nupload_cycle_s = 2.0\n')
    sub = Subscriber(broker)
    sim = sim_site(tmp_path, base)
    run = EmsRun("--config", str(sim.site_file), "--db", str(tmp_path / "history.sqlite"),
                 "--state", str(tmp_path / "state.json"))
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
