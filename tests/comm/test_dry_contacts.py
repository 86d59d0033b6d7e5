import pytest

from ems.comm.dry_contacts import Debouncer, MemoryContacts


def test_an_input_changes_only_after_holding_for_the_debounce_time():
    d = Debouncer(100.0)
    d.update({"epo": False}, -1.0)
    assert d.update({"epo": True}, 0.00) == {}
    assert d.update({"epo": True}, 0.05) == {}
    assert d.update({"epo": True}, 0.10) == {"epo": True}
    assert d.update({"epo": True}, 0.20) == {}, "reported once"


def test_the_first_reading_is_taken_as_it_is_so_an_epo_pressed_at_start_acts_at_once():
    d = Debouncer(100.0)
    assert d.update({"epo": True, "grid_present": True}, 0.0) == {"epo": True, "grid_present": True}
    assert d.update({"epo": True, "grid_present": True}, 0.01) == {}


def test_a_bounce_restarts_the_debounce():
    d = Debouncer(100.0)
    d.update({"spd": False}, -1.0)
    d.update({"spd": True}, 0.00)
    d.update({"spd": False}, 0.05)
    d.update({"spd": True}, 0.08)
    assert d.update({"spd": True}, 0.15) == {}
    assert d.update({"spd": True}, 0.18) == {"spd": True}


def test_zero_debounce_passes_changes_at_once():
    assert Debouncer(0.0).update({"water": True}, 5.0) == {"water": True}


def test_inverted_inputs_are_active_when_open():
    d = Debouncer(0.0, inverted=("epo",))
    assert d.update({"epo": True}, 0.0) == {"epo": False}, "a healthy NC loop (closed) reads inactive"
    assert d.update({"epo": False}, 1.0) == {"epo": True}
    assert d.update({}, 2.0) == {}, "a missing reading of an NC loop stays active (open = active)"


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown"):
        MemoryContacts().set_input("doorbell", True)
    with pytest.raises(ValueError, match="unknown"):
        MemoryContacts().write_outputs({"coffee_machine": True})
    with pytest.raises(ValueError, match="invert"):
        Debouncer(10.0, inverted=("doorbell",))
    with pytest.raises(ValueError, match="debounce_ms"):
        Debouncer(-1.0)
