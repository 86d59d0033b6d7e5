"""The alarm catalogue: every code of the manual's tables, nothing about a code written elsewhere."""
import pytest

from ems.control.io_map import COMM_ALARMS, SAFETY_INPUTS
from ems.control.protection_table import default_rows
from ems.records.catalogue import CatalogueError, catalogue, parse
from ems.strategies.generator import GC_FAULT

# the codes of the installer manual's troubleshooting tables (shared/seeds/000_…, §8)
MANUAL_EMS = {5008, 5009, 56, 57, 58, 28, 29, 52, 5010, 53, 54, 5011, 55, 5013, 25, 21, 22, 5, 7, 4}
MANUAL_PCS = {100117, 100136, 100137, 100038, 100007, 100008, 100468, 100469, 100470, 100183, 100122, 100471,
              100472, 100473, 100128, 100138, 100474, 100475, 100476, 100477, 100101, 100478, 100043, 100479,
              100480, 100481, 100066, 100177, 100178}
MANUAL_BMS = {20006, 30000, 40002, 40003, 40004, 40005, 40008, 40006, 40007, 40000, 40001, 40009, 40010, 40011,
              40015, 40063, 40014, 40018, 40019, 40020, 40021, 55005, 40062, 40023, 50000, 50003, 50004, 50008,
              40060, 40065, 40074, 40067, 40068, 30005, 30006, 30007}


def test_every_code_of_the_manual_is_in_the_catalogue_with_its_table():
    cat = catalogue()
    for codes, source in ((MANUAL_EMS, "EMS"), (MANUAL_PCS, "PCS"), (MANUAL_BMS, "BMS")):
        for code in codes:
            assert code in cat, code
            assert cat.get(code).source == source
    own = {c for c, e in cat.entries.items() if e.source == "ems-own"}
    assert set(cat.entries) == MANUAL_EMS | MANUAL_PCS | MANUAL_BMS | own
    assert all(5012 <= c <= 5099 for c in own)


def test_entries_carry_the_manuals_text_and_levels_from_status():
    cat = catalogue()
    epo = cat.get(52)
    assert (epo.name, epo.status, epo.level, epo.cloud) == ("YX_system_epo_signal", "fault", "severe", "urgent")
    assert "emergency stop button" in epo.remedy
    assert cat.get(5008).level == "moderate" and cat.get(5008).cloud == "important"
    assert cat.get(55005).status == "event" and cat.get(55005).cloud == "prompt"
    assert cat.get(30007).level == "mild" and cat.get(30007).cloud == "common"     # our documented choice
    # a merged remedy cell in the manual is carried by every row under it
    assert cat.get(40003).remedy == cat.get(40002).remedy


def test_every_code_the_controller_raises_is_catalogued():
    cat = catalogue()
    used = {code for code, _ in COMM_ALARMS.values()} | {code for code, _ in SAFETY_INPUTS.values()}
    used |= {c for r in default_rows() for c in (r.warn_code, r.fault_code) if c}
    used |= {GC_FAULT, 5012, 5014}
    assert not {c for c in used if c not in cat}


def test_an_unknown_code_is_shown_not_hidden():
    e = catalogue().get(123456)
    assert e.status == "fault" and "unknown" in e.description


@pytest.mark.parametrize("body, message", [
    ('[[code]]\ncode = 1\nsource = "EMS"\nname = "a"\ndescription = "d"\nstatus = "bad"\nremedy = "r"\n', "status"),
    ('[[code]]\ncode = 1\nsource = "EMS"\nname = "a"\ndescription = "d"\nstatus = "fault"\nremedy = "r"\n' * 2,
     "appears twice"),
    ('[[code]]\ncode = 1\nsource = "EMS"\nname = "a"\ndescription = ""\nstatus = "fault"\nremedy = "r"\n',
     "description"),
    ("[[code]\n", "alarm_codes.toml"),
])
def test_a_broken_catalogue_is_refused_with_the_reason(body, message):
    head = '[levels]\nevent = "mild"\nwarning = "moderate"\nfault = "severe"\n[cloud]\nsevere = "urgent"\n' \
           'moderate = "important"\nmild = "common"\nevent = "prompt"\n'
    with pytest.raises(CatalogueError, match=message):
        parse(head + body)
