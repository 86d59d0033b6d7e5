"""The schema as data, for the page's settings forms: every section's keys with type, default, range,
unit, choices and help text (the same metadata `ems config template` and the validation use)."""
from __future__ import annotations

import dataclasses

from ems.config.schema import SiteConfig


def _type(f, value) -> str:
    if f.metadata.get("item") is not None:
        return "list"
    if f.metadata.get("choices"):
        return "choice"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "strings" if f.metadata.get("str_ok") or all(isinstance(x, str) for x in value) else "numbers"
    return "str"


def _field(f, instance) -> dict:
    m, value = f.metadata, getattr(instance, f.name)
    out = {"key": f.name, "type": _type(f, value), "default": value, "unit": m.get("unit") or "",
           "doc": m.get("doc") or "", "lo": m.get("lo"), "hi": m.get("hi"),
           "choices": list(m["choices"]) if m.get("choices") else None, "max_items": m.get("max_items")}
    item = m.get("item")
    if item is not None:
        example = item()
        out["item"] = [_field(g, example) for g in dataclasses.fields(item)]
    return out


def describe(live_sections=(), operational_sections=()) -> list[dict]:
    """[{"section": "self_use", "doc": ..., "live": bool, "operational": bool, "fields": [...]}, ...];
    nested sections as "a.b"."""
    out = []

    def walk(name, cls, instance):
        fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("section")]
        top = name.split(".")[0]
        doc = (cls.__doc__ or "").strip()
        if doc.startswith(cls.__name__ + "("):       # the dataclass's generated signature, not a description
            doc = ""
        out.append({"section": name, "doc": doc.split("\n")[0],
                    "live": top in live_sections, "operational": top in operational_sections,
                    "fields": [_field(f, instance) for f in fields]})
        for f in dataclasses.fields(cls):
            if f.metadata.get("section"):
                walk(f"{name}.{f.name}", type(getattr(instance, f.name)), getattr(instance, f.name))

    cfg = SiteConfig()
    for f in dataclasses.fields(SiteConfig):
        if f.name != "simulation":
            walk(f.name, type(getattr(cfg, f.name)), getattr(cfg, f.name))
    return out
