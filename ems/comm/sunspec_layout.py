"""Where SunSpec points sit: a chain of models laid out from 40000 ('SunS', then each model's ID and
length, then its points, then the end marker 0xFFFF) using pysunspec2's official model definitions.

One home for this layout: the dispatch server serves it (`dispatch.SunSpecMap`) and device profiles name
points as "model.Point" (`profiles.load_profile`) instead of hand-computed addresses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
         "C": "degC", "VNomPct": "%", "": ""}


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
    counts: dict[int, dict[str, int]] = field(default_factory=dict)

    def headers(self) -> dict[str, tuple[int, int, int]]:
        """Register name → (address, words, expected value) of what identifies the chain on a device: its
        models' IDs and lengths, and the points that count their repeating groups (they set every address
        behind them)."""
        out = {"sunspec_marker": (self.base, 2, MARKER)}
        for mid, m in self.models.items():
            out[f"model_{mid}_id"] = (self.model_addr[mid], 1, mid)
            out[f"model_{mid}_length"] = (self.model_addr[mid] + 1, 1, m.len - 2)
            for name, n in sorted(self.counts.get(mid, {}).items()):
                out[f"model_{mid}_{name.lower()}"] = (self.points[(mid, name)].address, 1, n)
        out["sunspec_end"] = (self.end - 2, 1, END_ID)
        return out


def chain(models, base: int = SUNSPEC_BASE, counts: dict[int, dict[str, int]] | None = None) -> Chain:
    """Lay out `models` (IDs, in order) from `base`; KeyError for a model pysunspec2 does not define.

    counts: for a model with repeating groups counted by one of its points (the DER trip models 707–710:
    `NCrvSet` stored curves of `NPt` points each), those points' values as the device reports them, e.g.
    {707: {"NCrvSet": 2, "NPt": 2}}. Points inside groups are named by their path, curves and points counted
    from 1 as pysunspec2 and the specification count them: "Crv[2].MustTrip.Pt[1].V"."""
    counts = counts or {}
    out_models, model_addr, points = {}, {}, {}
    addr = base + 2
    for mid in models:
        try:
            mdef = ssd.get_model_def(mid)
        except Exception as exc:            # pysunspec2's ModelDefinitionError and friends
            raise KeyError(f"SunSpec model {mid}: {exc}") from None
        m = _model(mid, mdef, addr, counts.get(mid, {}))
        out_models[mid], model_addr[mid] = m, addr
        for name, p in _walk(m):
            pdef = p.pdef
            points[(mid, name)] = Point(mid, name, addr + p.offset, int(pdef.get("size", 1)), pdef["type"],
                                        pdef.get("sf"), pdef.get("access", "R"), pdef.get("units", ""),
                                        pdef.get("label", name))
        addr += m.len
    stray = sorted(set(counts) - set(out_models))
    if stray:
        raise KeyError(f"counts given for models {stray} that are not in the chain")
    return Chain(out_models, model_addr, points, base, addr + 2, {m: dict(c) for m, c in counts.items()})


def _count_points(gdef: dict) -> set[str]:
    """The points that count a model's repeating groups (a number in `count` is a fixed count)."""
    out = set()
    for g in gdef.get("groups", []):
        if isinstance(g.get("count"), str) and not g["count"].isdigit():
            out.add(g["count"])
        out |= _count_points(g)
    return out


def _model(mid: int, mdef: dict, addr: int, counts: dict[str, int]) -> ssd.Model:
    need = _count_points(mdef["group"])
    if not need:
        return ssd.Model(model_id=mid, model_addr=addr, model_len=0, model_def=mdef)
    missing, unknown = need - set(counts), set(counts) - need
    if missing or unknown:
        raise KeyError(f"SunSpec model {mid}: its repeating groups are counted by {', '.join(sorted(need))}; "
                       f"give their values as the device reports them (sunspec_counts)"
                       + (f", not {', '.join(sorted(unknown))}" if unknown else ""))
    # the model's fixed points as the device would serve them, its counts set: pysunspec2 lays out the rest
    offset, offsets = 0, {}
    for p in mdef["group"]["points"]:
        offsets[p["name"]] = offset
        offset += int(p.get("size", 1))
    words = [0] * offset
    words[0] = mid
    for name, n in counts.items():
        if name not in offsets:
            raise KeyError(f"SunSpec model {mid}: {name} is not one of its fixed points")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100:
            raise ValueError(f"SunSpec model {mid}: {name} = {n!r} must be a whole number 0 … 100")
        words[offsets[name]] = n
    data = b"".join(w.to_bytes(2, "big") for w in words) + bytes(2 * 10_000)
    m = ssd.Model(model_id=mid, model_addr=addr, model_len=0, model_def=mdef, data=data)
    if m.error_info:
        raise KeyError(f"SunSpec model {mid}: {m.error_info.strip()}")
    return m


def _walk(g, prefix: str = ""):
    """(path, point) of a group's points, then of its groups' (repeating ones indexed from 1)."""
    for name, p in g.points.items():
        yield prefix + name, p
    for name, sub in g.groups.items():
        if isinstance(sub, list):
            for i, s in enumerate(sub, start=1):
                yield from _walk(s, f"{prefix}{name}[{i}].")
        else:
            yield from _walk(sub, f"{prefix}{name}.")
