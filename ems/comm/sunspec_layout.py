"""Where SunSpec points sit: a chain of models laid out from 40000 ('SunS', then each model's ID and
length, then its points, then the end marker 0xFFFF) using pysunspec2's official model definitions.

One home for this layout: the dispatch server serves it (`dispatch.SunSpecMap`) and device profiles name
points as "model.Point" (`profiles.load_profile`) instead of hand-computed addresses.
"""
from __future__ import annotations

from dataclasses import dataclass

import sunspec2.device as ssd

SUNSPEC_BASE = 40000
MARKER = 0x53756E53                      # 'SunS'
END_ID = 0xFFFF
# SunSpec type → (profile register type, the raw value that means "not implemented")
REGISTER_TYPES = {"int16": ("s16", -0x8000), "sunssf": ("s16", -0x8000), "uint16": ("u16", 0xFFFF),
                  "enum16": ("u16", 0xFFFF), "bitfield16": ("u16", 0xFFFF), "int32": ("s32", -0x80000000),
                  "uint32": ("u32", 0xFFFFFFFF), "enum32": ("u32", 0xFFFFFFFF), "bitfield32": ("u32", 0xFFFFFFFF),
                  "acc32": ("u32", None)}
UNITS = {"W": "W", "Var": "var", "VA": "VA", "V": "V", "A": "A", "Hz": "Hz", "Secs": "s", "Pct": "%", "WH": "Wh",
         "C": "degC", "": ""}


@dataclass(frozen=True)
class Point:
    model: int
    name: str
    address: int
    size: int
    type: str
    sf: str | None
    access: str
    units: str
    label: str


@dataclass
class Chain:
    """Models in the order a device serves them; `points[(model, name)]`, `model_addr[model]` (its ID
    register), `end` (the address after the end marker)."""
    models: dict[int, ssd.Model]
    model_addr: dict[int, int]
    points: dict[tuple[int, str], Point]
    base: int
    end: int

    def headers(self) -> dict[str, tuple[int, int, int]]:
        """Register name → (address, words, expected value) of what identifies the chain on a device."""
        out = {"sunspec_marker": (self.base, 2, MARKER)}
        for mid, m in self.models.items():
            out[f"model_{mid}_id"] = (self.model_addr[mid], 1, mid)
            out[f"model_{mid}_length"] = (self.model_addr[mid] + 1, 1, m.len - 2)
        out["sunspec_end"] = (self.end - 2, 1, END_ID)
        return out


def chain(models, base: int = SUNSPEC_BASE) -> Chain:
    """Lay out `models` (IDs, in order) from `base`; KeyError for a model pysunspec2 does not define."""
    out_models, model_addr, points = {}, {}, {}
    addr = base + 2
    for mid in models:
        try:
            mdef = ssd.get_model_def(mid)
        except Exception as exc:            # pysunspec2's ModelDefinitionError and friends
            raise KeyError(f"SunSpec model {mid}: {exc}") from None
        m = ssd.Model(model_id=mid, model_addr=addr, model_len=0, model_def=mdef)
        out_models[mid], model_addr[mid] = m, addr
        for name, p in m.points.items():
            pdef = p.pdef
            points[(mid, name)] = Point(mid, name, addr + p.offset, int(pdef.get("size", 1)), pdef["type"],
                                        pdef.get("sf"), pdef.get("access", "R"), pdef.get("units", ""),
                                        pdef.get("label", name))
        addr += m.len
    return Chain(out_models, model_addr, points, base, addr + 2)
