import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ems.comm.registers import Register


def reg(type_, **kw):
    base = dict(name="x", address=0, function=3, type=type_, unit="W", writable=True, min=-1e12, max=1e12)
    base.update(kw)
    return Register(**base)


def test_s32_big_word_order_is_high_word_first():
    assert reg("s32").decode([0xFFFF, 0xFFFE]) == -2
    assert reg("s32", word_order="little").decode([0xFFFE, 0xFFFF]) == -2


def test_float32_decodes_ieee754():
    words = struct.unpack(">HH", struct.pack(">f", 3.3))
    assert reg("float32").decode(list(words)) == pytest.approx(3.3)


def test_scale_and_offset_apply():
    assert reg("u16", scale=0.1, unit="V").decode([2305]) == pytest.approx(230.5)
    assert reg("s16", scale=0.1, offset=-40.0).decode([500]) == pytest.approx(10.0)


def test_the_invalid_marker_and_non_finite_floats_decode_to_none():
    assert reg("s16", invalid=-32768).decode([0x8000]) is None
    assert reg("float32").decode(list(struct.unpack(">HH", struct.pack(">f", math.nan)))) is None


def test_a_wrong_number_of_registers_or_out_of_range_words_is_refused():
    with pytest.raises(ValueError, match="expected 2"):
        reg("u32").decode([1])
    with pytest.raises(ValueError, match="0…65535"):
        reg("u16").decode([70000])


def test_writes_outside_the_range_or_to_read_only_registers_are_refused():
    r = reg("s32", min=-100e3, max=100e3)
    with pytest.raises(ValueError, match="outside"):
        r.encode(150e3)
    with pytest.raises(ValueError, match="finite"):
        r.encode(math.nan)
    with pytest.raises(ValueError, match="read-only"):
        reg("u16", writable=False).encode(1)
    with pytest.raises(ValueError, match="does not fit"):
        reg("u16", min=-1e9, max=1e9).encode(70000)


@given(st.sampled_from(["u16", "s16", "u32", "s32", "float32"]), st.sampled_from(["big", "little"]),
       st.sampled_from([1.0, 0.1, 0.01, 10.0]), st.floats(-30000, 30000))
def test_encode_then_decode_returns_the_value_to_the_register_resolution(type_, order, scale, value):
    r = reg(type_, word_order=order, scale=scale)
    if type_.startswith("u"):
        value = abs(value)
    try:
        words = r.encode(value)
    except ValueError:
        return          # does not fit this type at this scale: refused, never wrapped
    back = r.decode(words)
    tol = scale / 2 + 1e-9 if type_ != "float32" else abs(value) * 1e-6 + 1e-6
    assert back == pytest.approx(value, abs=tol)
