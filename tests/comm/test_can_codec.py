import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import can

from ems.comm.can_codec import FrameDecoder, load_database
from ems.comm.can_link import BmsCanLink
from ems.sim.bms_can import encode_cells


def test_the_limits_frame_matches_the_known_byte_layout():
    # the frame a common battery sends for 53.2 V / 370 A / 370 A / 46.0 V
    db = load_database()
    data = bytes.fromhex("1402740e740ecc01")
    sig = db.get_message_by_frame_id(0x351).decode(data)
    assert sig == pytest.approx({"charge_voltage_limit_v": 53.2, "charge_current_limit_a": 370.0,
                                 "discharge_current_limit_a": 370.0, "discharge_voltage_limit_v": 46.0})


def test_protection_and_request_flags_decode_by_bit():
    d = FrameDecoder()
    name, sig = d.decode(0x359, bytes([0x02, 0x01, 0x04, 0x00, 3, 0x50, 0x4E]))
    assert sig["protection_cell_over_voltage"] == 1 and sig["protection_charge_over_current"] == 1
    assert sig["alarm_cell_low_voltage"] == 1 and sig["module_count"] == 3
    name, sig = d.decode(0x35C, bytes([0xC0, 0x00]))
    assert sig["charge_enable"] == 1 and sig["discharge_enable"] == 1 and sig["full_charge_request"] == 0


def test_unknown_ids_and_wrong_lengths_are_dropped_and_counted_not_raised():
    d = FrameDecoder()
    assert d.decode(0x123, b"\x00" * 8) is None
    assert d.decode(0x351, b"\x00" * 5) is None
    assert d.counters["unknown_id"] == 1 and d.counters["wrong_length"] == 1


def arrays(clusters, cells):
    return (np.full((clusters, cells), np.nan), np.full((clusters, cells), np.nan),
            np.zeros((clusters, cells), np.uint8))


class ListBus:
    """Frames handed to the link in order, and what it sends kept (python-can's recv / send)."""

    def __init__(self, frames=()):
        self.rx = [can.Message(arbitration_id=f, data=d, is_extended_id=False) for f, d in frames]
        self.sent = []

    def recv(self, timeout=0.0):
        return self.rx.pop(0) if self.rx else None

    def send(self, msg, timeout=None):
        self.sent.append(msg)


def feed(frames, cv, ct, fresh, now_s):
    link = BmsCanLink(ListBus(frames), cv, ct, fresh, cell_max_age_s=2.0)
    link.poll(now_s)
    return link


@given(st.integers(1, 3), st.integers(1, 20), st.data())
def test_cell_frames_round_trip_into_the_core_arrays(clusters, cells, data):
    v = np.array(data.draw(st.lists(st.floats(2.0, 3.8), min_size=clusters * cells, max_size=clusters * cells)))
    t = np.array(data.draw(st.lists(st.one_of(st.floats(-30, 80), st.just(np.nan)), min_size=clusters * cells,
                                    max_size=clusters * cells)))
    v, t = v.reshape(clusters, cells), t.reshape(clusters, cells)
    cv, ct, fresh = arrays(clusters, cells)
    link = feed(encode_cells(v, t), cv, ct, fresh, now_s=1.0)
    assert link.counters["ok"] == len(encode_cells(v, t))
    assert np.allclose(cv, v, atol=0.0005 + 1e-9)
    assert np.array_equal(np.isnan(ct), np.isnan(t))
    assert np.allclose(ct[~np.isnan(t)], t[~np.isnan(t)], atol=0.25 + 1e-9)
    assert fresh.all()


def test_cells_go_stale_when_their_frames_stop():
    cv, ct, fresh = arrays(1, 6)
    link = feed(encode_cells(np.full((1, 6), 3.3), np.full((1, 6), 25.0)), cv, ct, fresh, now_s=0.0)
    link.poll(now_s=1.0)
    assert fresh.all()
    link.poll(now_s=3.0)
    assert not fresh.any()


def test_a_frame_for_a_cluster_outside_the_stack_is_counted_not_written():
    cv, ct, fresh = arrays(1, 6)
    link = feed(encode_cells(np.full((2, 6), 3.3), np.full((2, 6), 25.0)), cv, ct, fresh, now_s=0.0)
    assert link.counters["out_of_stack"] == 3      # cluster 1: 2 voltage frames + 1 temperature frame
    assert np.isfinite(cv).all()


def test_both_variants_of_0x355_decode_and_other_lengths_are_refused():
    d = FrameDecoder()
    name, old = d.decode(0x355, bytes([61, 0, 98, 0]))                    # older: SOC, SOH only
    assert name == "BatterySocSoh" and old == {"soc_pct": 61, "soh_pct": 98}
    _, new = d.decode(0x355, bytes([61, 0, 98, 0]) + (6123).to_bytes(2, "little"))   # newer: + 61.23 %
    assert new["soc_hires_pct"] == pytest.approx(61.23)
    _, padded = d.decode(0x355, bytes([61, 0, 98, 0]) + (6123).to_bytes(2, "little") + b"\x00\x00")
    assert padded["soc_hires_pct"] == pytest.approx(61.23)
    assert d.decode(0x355, bytes([61, 0, 98])) is None and d.decode(0x355, bytes(5)) is None
    assert d.counters["wrong_length"] == 2


def test_0x35a_carries_two_bits_per_flag_in_the_published_order():
    # alarms: general raised (01), high voltage cleared (10), cell imbalance raised (bits 24-25);
    # warnings: low charge temperature raised (index 6: bits 32 + 12)
    alarms = 0b01 | 0b10 << 2 | 0b01 << 24
    warnings = 0b01 << 12
    _, sig = FrameDecoder().decode(0x35A, alarms.to_bytes(4, "little") + warnings.to_bytes(4, "little"))
    assert sig["alarm_general"] == 1 and sig["alarm_high_voltage"] == 2 and sig["alarm_cell_imbalance"] == 1
    assert sig["warning_low_charge_temperature"] == 1 and sig["warning_general"] == 0
