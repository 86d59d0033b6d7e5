"""A SunSpec PCS (profile SUNSPEC-PCS, points named "model.Point"): the simulated device is checked with a
real SunSpec client (pysunspec2), then read and driven by our engine, scale factors included; a device
whose model chain differs is neither read nor written."""
import dataclasses

import pytest
import sunspec2.modbus.client as ss_client

from ems.comm.modbus_client import Device, Link, ModbusEngine
from ems.comm.modbus_server import ProfileImage
from ems.comm.profiles import ProfileError, load_profile, shipped_profiles
from ems.comm.site_io import check_role
from ems.comm.net import free_port
from tests.comm.test_modbus_engine import wait_for


def serve(io, profile, **published):
    writes = []
    img = ProfileImage(profile, lambda name, value, client: writes.append((name, value)))
    img.publish_many(published)
    port = free_port()
    io.serve_tcp({1: img}, "127.0.0.1", port)
    return img, writes, port


def engine(io, profile, port, **init):
    eng = ModbusEngine(io)
    eng.add(Link(port=port, timeout_s=0.3), [Device("pcs", profile, 1, 0x06000000, "pcs", init)])
    eng.start()
    return eng


def test_the_profile_serves_as_pcs_and_resolves_points_from_the_sunspec_models():
    p = shipped_profiles()["SUNSPEC-PCS"]
    check_role(p, "pcs")
    w = p.registers["active_power_w"]
    assert (w.type, w.unit, w.scale_factor, w.invalid) == ("s16", "W", "m701_w_sf", -0x8000)
    assert p.registers["active_power_setpoint_w"].type == "s32"
    assert p.expected["sunspec_marker"] == 0x53756E53 and p.expected["model_704_id"] == 704
    assert p.init_writes == {"wset_mod": 1.0, "wset_ena": 1.0}


def test_a_real_sunspec_client_finds_the_simulated_pcs_and_its_scaled_power(io):
    p = shipped_profiles()["SUNSPEC-PCS"]
    _, _, port = serve(io, p, m701_w_sf=1, active_power_w=31_230)
    d = ss_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    d.scan()
    assert [k for k in d.models if isinstance(k, int)] == [1, 701, 702, 704, 707, 708, 709, 710, 713, 715]
    d.DERMeasureAC[0].read()
    assert d.DERMeasureAC[0].W.cvalue == pytest.approx(31_230, abs=10)      # raw 3123 × 10^1
    d.close()


def test_engine_reads_with_scale_factors_enables_wset_and_writes_it_in_the_device_scale(io):
    p = shipped_profiles()["SUNSPEC-PCS"]
    img, writes, port = serve(io, p, m701_w_sf=1, active_power_w=-20_000, m704_wset_sf=1)
    eng = engine(io, p, port, setpoint_timeout_s=10)
    try:
        assert wait_for(lambda: eng.value("pcs", "active_power_w") == -20_000)
        assert wait_for(lambda: {("wset_mod", 1.0), ("wset_ena", 1.0), ("setpoint_timeout_s", 10.0)} <= set(writes))
        eng.hold("pcs", "active_power_setpoint_w", 25_000)
        eng.hold("pcs", "run_command", 1)
        assert wait_for(lambda: ("active_power_setpoint_w", 25_000.0) in writes and ("run_command", 1.0) in writes)
        r = p.registers["active_power_setpoint_w"]
        assert img.get_words(3, r.address, 2) == [0, 2_500], "written as raw 2500 × 10^1"
    finally:
        eng.stop()


def test_a_device_with_another_model_chain_is_neither_read_nor_written(io):
    shipped = shipped_profiles()["SUNSPEC-PCS"]
    p = dataclasses.replace(shipped, groups={**shipped.groups, "sunspec": 200.0})   # re-identify every 0.2 s
    img, writes, port = serve(io, p, m701_w_sf=0, active_power_w=5_000, m704_wset_sf=0)
    img.publish("model_704_id", 703)                # e.g. 703 where the profile expects 704
    eng = engine(io, p, port)
    try:
        eng.hold("pcs", "active_power_setpoint_w", 10_000)
        # the request count moves before its answer is stored: wait for both (a slow board showed the gap)
        assert wait_for(lambda: eng.device("pcs").requests >= 3 and eng.sample("pcs", "model_704_id") is not None, 10.0)
        assert eng.sample("pcs", "model_704_id")[0] == 703
        assert eng.sample("pcs", "active_power_w") is None and writes == [], "nothing read or written"
        img.publish("model_704_id", 704)            # the mapped device answers: it is used from then on
        assert wait_for(lambda: eng.value("pcs", "active_power_w") == 5_000)
        assert wait_for(lambda: ("active_power_setpoint_w", 10_000.0) in writes)
    finally:
        eng.stop()


@pytest.mark.parametrize("device, registers, why", [
    ("", '[[register]]\nname = "w"\npoint = "701.W"\n', "needs [device] sunspec_chain"),
    ("sunspec_chain = [1, 701]\n", '[[register]]\nname = "w"\npoint = "701.Watts"\n', "not a point of the chain"),
    ("sunspec_chain = [1, 701]\n", '[[register]]\nname = "w"\npoint = "701.W"\n', "scale_factor 'm701_w_sf'"),
    ("sunspec_chain = [1, 99999]\n", "", "not a list of SunSpec model IDs"),
    ("sunspec_chain = [1, 704]\n[device.init_writes]\nwset_ena = 1\n", "", "'wset_ena' is not a register"),
    ("sunspec_chain = [1, 707]\n", "", "counted by NCrvSet, NPt"),
    ("sunspec_chain = [1, 707]\nsunspec_counts = { 707 = { NPt = 2 } }\n", "", "counted by NCrvSet, NPt"),
    ("sunspec_chain = [1, 701]\nsunspec_counts = { 707 = { NPt = 2, NCrvSet = 2 } }\n", "", "not in the chain"),
    ("sunspec_chain = [1, 707, 708, 709, 710]\nsunspec_counts = { 707 = { NPt = 1, NCrvSet = 2 }, 708 = { NPt = 2, "
     "NCrvSet = 2 }, 709 = { NPt = 2, NCrvSet = 2 }, 710 = { NPt = 2, NCrvSet = 2 } }\n",
     "[sunspec_trip]\nratio_pct = { ov = [100, 135], uv = [10, 100] }\nhz = { of = [50, 66], uf = [40, 60] }\n"
     "time_s = [0.02, 600]\n", "model 707 needs NPt >= 2"),
    ("sunspec_chain = [1, 707, 708, 709, 710]\nsunspec_counts = { 707 = { NPt = 2, NCrvSet = 2 }, 708 = { NPt = 2, "
     "NCrvSet = 2 }, 709 = { NPt = 2, NCrvSet = 2 }, 710 = { NPt = 2, NCrvSet = 2 } }\n",
     "[sunspec_trip]\nratio_pct = { ov = [135, 100], uv = [10, 100] }\nhz = { of = [50, 66], uf = [40, 60] }\n",
     "ratio_pct.ov: the device's range [low, high] is required"),
])
def test_bad_sunspec_profiles_are_refused_with_the_reason(tmp_path, device, registers, why):
    f = tmp_path / "p.toml"
    f.write_text('[device]\nkind = "pcs"\n' + device + '[groups]\nslow = { interval_ms = 1000 }\n' + registers)
    with pytest.raises(ProfileError) as e:
        load_profile(f)
    assert why in str(e.value)


# ---------------------------------------------------------------------------------------------- trip curves
def trip_pcs(io):
    """The simulated SunSpec PCS's image with its trip curves as delivered, adopting curves as a device does."""
    from ems.sim import trip_curves
    from ems.sim.site import PCS_PROTECTION_DEFAULTS
    p = shipped_profiles()["SUNSPEC-PCS"]
    box = {}
    img = ProfileImage(p, lambda name, value, client: trip_curves.adopt(box["img"], p, name, value))
    box["img"] = img
    trip_curves.publish_defaults(img, p, PCS_PROTECTION_DEFAULTS)
    port = free_port()
    io.serve_tcp({1: img}, "127.0.0.1", port)
    return p, img, port


@pytest.fixture
def trip_client(io):
    """A real SunSpec client (pysunspec2) that has scanned the simulated PCS with trip curves: (image, client)."""
    _, img, port = trip_pcs(io)
    d = ss_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    d.scan()
    yield img, d
    d.close()


def test_the_trip_curves_lay_out_as_a_real_sunspec_client_reads_them(trip_client):
    """pysunspec2 scans the simulated PCS, finds 707–710 with 2 curves of 2 points, and reads the stages where
    the profile put them (LV must-trip point 1 = stage 2, 45 % in 0.3 s; point 2 = stage 1, 85 % in 3 s)."""
    _, d = trip_client
    lv = d.DERTripLV[0]
    lv.read()
    assert (lv.NCrvSet.value, lv.NPt.value) == (2, 2)
    must = lv.Crv[0].MustTrip
    assert must.ActPt.value == 2
    assert (must.Pt[0].V.cvalue, must.Pt[0].Tms.cvalue) == (pytest.approx(45.0), pytest.approx(0.3))
    assert (must.Pt[1].V.cvalue, must.Pt[1].Tms.cvalue) == (pytest.approx(85.0), pytest.approx(3.0))
    hf = d.DERTripHF[0]
    hf.read()
    assert hf.Crv[0].MustTrip.Pt[0].Hz.cvalue == pytest.approx(52.0)


def test_a_real_sunspec_client_adopts_a_curve_on_the_simulated_pcs(trip_client):
    """The adoption protocol against the simulated device, driven by pysunspec2: write curve 2, AdptCrvReq = 2,
    then curve 1 holds it and AdptCrvRslt is COMPLETED; a curve with the stages swapped is FAILED."""
    _, d = trip_client
    hv = d.DERTripHV[0]
    hv.read()
    hv.Crv[1].MustTrip.Pt[1].V.cvalue = 112.0          # stage 1 over-voltage 110 → 112 %
    hv.Crv[1].MustTrip.Pt[1].write()
    hv.AdptCrvReq.value = 2
    hv.AdptCrvReq.write()
    hv.read()
    assert hv.AdptCrvRslt.value == 1
    assert hv.Crv[0].MustTrip.Pt[1].V.cvalue == pytest.approx(112.0)
    hv.Crv[1].MustTrip.Pt[0].V.cvalue = 105.0          # stage 2 below stage 1: the device refuses it
    hv.Crv[1].MustTrip.Pt[0].write()
    hv.AdptCrvReq.write()
    hv.read()
    assert hv.AdptCrvRslt.value == 2 and hv.Crv[0].MustTrip.Pt[0].V.cvalue == pytest.approx(115.0)


def test_protection_is_set_on_the_sunspec_pcs_through_an_adopted_curve_and_read_back(io):
    from ems.comm.pcs_protection import PcsProtection, ProtectionError
    p, img, port = trip_pcs(io)
    eng = ModbusEngine(io)
    eng.add(Link(port=port, timeout_s=0.5), [Device("pcs", dataclasses.replace(
        p, groups={**p.groups, "slow": 300.0}), 1, 0x06000000, "pcs")])
    eng.start()
    try:
        prot = PcsProtection(eng, "pcs")
        assert prot.sunspec and len(prot.registers) == 16
        assert wait_for(lambda: prot.query()["uv2_ratio_pct"] is not None, 10.0)
        assert prot.query()["uv1_time_s"] == pytest.approx(3.0)
        may_before = img.value("m707_crv1_maytrip_pt2_tms")
        out = prot.set({"uv1_ratio_pct": 80.0, "uv1_time_s": 2.5, "of2_hz": 51.8}, timeout_s=10.0)
        assert out["read_back"] == {"uv1_ratio_pct": pytest.approx(80.0), "uv1_time_s": pytest.approx(2.5),
                                    "of2_hz": pytest.approx(51.8)}
        # on the device: the active curves hold the new stages, the rest of each curve as it was
        assert img.value("m707_crv1_musttrip_pt2_v") == pytest.approx(80.0)
        assert img.value("m707_crv1_musttrip_pt1_v") == pytest.approx(45.0), "stage 2 unchanged"
        assert img.value("m710_crv1_musttrip_pt1_hz") == pytest.approx(51.8)
        assert img.value("m707_crv1_maytrip_pt2_tms") == pytest.approx(may_before), "may-trip copied unchanged"
        assert img.value("m708_adptcrvreq") == 0, "a model not touched is not adopted"
        # refused before anything is written: out of the device's range, and stage order
        with pytest.raises(ProtectionError) as e:
            prot.set({"ov1_ratio_pct": 140.0, "uf2_hz": 48.0})
        assert "ov1_ratio_pct" in str(e.value) and "135" in str(e.value)
        assert "uf2_hz 48 must be beyond stage 1's 47.5" in str(e.value)
        # the device refuses an adoption (its own check): reported, the active curve unchanged
        img.publish("model_710_ncrvset", 2)
        from ems.sim import trip_curves
        img.on_write = lambda name, value, client: (trip_curves.adopt(img, p, name, 9.0) if name.endswith(
            "_adptcrvreq") else None)                      # a device that adopts the wrong index: FAILED
        with pytest.raises(ProtectionError) as e:
            prot.set({"of1_time_s": 0.2, "of2_time_s": 0.15}, timeout_s=5.0)
        assert "refused the new curve of model 710" in str(e.value)
        assert img.value("m710_crv1_musttrip_pt2_tms") == pytest.approx(0.1)
    finally:
        eng.stop()
