"""A BMS's per-cluster arrays on Modbus (a BCU / BAU): planned as block reads across the stack, decoded with
NumPy straight into (clusters, elements) arrays. The engine (ems.comm.modbus_client) reads the blocks; the
profile (ems.comm.profiles.ArraySpec) says where each array sits."""
from __future__ import annotations

import numpy as np

from ems.comm.profiles import ArraySpec, Profile


def plan_array_blocks(profile: Profile, clusters: int, cells: int) -> list[tuple]:
    """Merged reads of a profile's per-cluster arrays for a stack of `clusters` × `cells`: per group and
    function, every cluster's spans in address order, joined while the gap is at most merge_gap (across
    clusters too: a cluster-major or quantity-major map both read in few requests) and cut into requests of at
    most max_block registers at element boundaries. Flags that are bits of one word share it; any other
    overlap for this stack (a stride too small for its cells) raises ValueError. Each block is (function,
    first address, registers, group, interval s, parts: (word offset, array, cluster, first element, count))."""
    blocks: list[tuple] = []
    gap, most = profile.merge_gap, profile.max_block
    for group, interval_ms in profile.groups.items():
        for function in (3, 4):
            specs = [a for a in profile.arrays.values() if a.group == group and a.function == function]
            spans = sorted(((a.address + c * a.cluster_stride, a, c) for c in range(clusters if specs else 0)
                            for a in specs), key=lambda sp: sp[0])
            reach = None                  # (end address, array) of the span reaching furthest so far
            for addr, a, c in spans:
                if reach is not None and addr < reach[0]:
                    other = reach[1]
                    if not (a.bit is not None and other.bit is not None and addr == reach[0] - other.words):
                        raise ValueError(f"profile {profile.model}: arrays {other.name} and {a.name} overlap "
                                         f"(cluster {c}, {cells} cells per cluster): check cluster_stride")
                end = addr + a.words * a.elements(cells)
                if reach is None or end > reach[0]:
                    reach = (end, a)
            start, parts, top = None, [], 0
            for addr, a, c in spans:
                w, n, e = a.words, a.elements(cells), 0
                while e < n:
                    pos = addr + e * w
                    if parts and (pos - top > gap or pos + w - start > most):
                        blocks.append((function, start, top - start, group, interval_ms / 1000.0, parts))
                        parts = []
                    if not parts:
                        start, top = pos, pos
                    k = min(n - e, (start + most - pos) // w)
                    parts.append((pos - start, a, c, e, k))
                    top = max(top, pos + k * w)
                    e += k
            if parts:
                blocks.append((function, start, top - start, group, interval_ms / 1000.0, parts))
    return blocks


def decode_array(a: ArraySpec, words: np.ndarray) -> np.ndarray:
    """An array's raw words → engineering values (NaN for the invalid marker); a flag array → 0 / 1."""
    if a.words == 2:
        pair = words.reshape(-1, 2).astype(np.uint32)
        raw = (pair[:, 0] << 16) | pair[:, 1]
        raw = raw.view(np.int32) if a.type == "s32" else raw
    else:
        raw = words.view(np.int16) if a.type == "s16" else words
    out = raw.astype(np.float64)
    if a.bit is not None:
        out = ((raw.astype(np.int64) >> a.bit) & 1).astype(np.float64)
    else:
        out = out * a.scale + a.offset
    if a.invalid is not None:
        out[raw == a.invalid] = np.nan
    return out


