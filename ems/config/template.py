"""`ems config template`: the schema as a commented TOML file with every default and range."""
from __future__ import annotations

import dataclasses

from ems.config.schema import SiteConfig


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, float):
        return repr(v) if abs(v) < 1e15 else f"{v:.6g}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _comment(meta) -> str:
    parts = []
    if meta.get("doc"):
        parts.append(meta["doc"])
    if meta.get("lo") is not None:
        parts.append(f"range {meta['lo']:g} … {meta['hi']:g} {meta.get('unit') or ''}".rstrip())
    if meta.get("choices"):
        parts.append("one of " + ", ".join(meta["choices"]))
    return "  # " + "; ".join(parts) if parts else ""


def _fields(cls, instance, lines: list[str], prefix: str) -> None:
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            continue
        item = f.metadata.get("item")
        if item is not None:
            lines.append(f"# {f.name}: {f.metadata.get('doc', '')}. Example entry:")
            lines.append(f"# [[{prefix}{f.name}]]")
            example = item()
            for g in dataclasses.fields(item):
                lines.append(f"# {g.name} = {_toml_value(getattr(example, g.name))}{_comment(g.metadata)}")
            continue
        lines.append(f"{f.name} = {_toml_value(getattr(instance, f.name))}{_comment(f.metadata)}")


def template() -> str:
    cfg = SiteConfig()
    lines = ["# ems site configuration — every key with its default; delete what you do not change.", ""]
    def emit(name: str, sub) -> None:
        lines.append(f"[{name}]")
        _fields(type(sub), sub, lines, name + ".")
        lines.append("")
        for g in dataclasses.fields(type(sub)):
            if g.metadata.get("section"):
                emit(f"{name}.{g.name}", getattr(sub, g.name))

    for f in dataclasses.fields(SiteConfig):
        emit(f.name, getattr(cfg, f.name))
    return "\n".join(lines)
