"""Turn pytest-benchmark's raw JSON into benchmarks/results.json and print the kernel-vs-reference table.

results.json: a list of {"case", "clusters", "cells_per_cluster", "kernel_us", "reference_us"} (medians, µs),
with "speedup" = reference / kernel and, for the tick, "ns_per_cell".
"""
import json
import platform
import sys
from datetime import date


def main(raw_path: str, out_path: str) -> int:
    raw = json.load(open(raw_path))
    rows: dict = {}
    for bench in raw["benchmarks"]:
        info = bench["extra_info"]
        key = (info["case"], info["clusters"], info["cells_per_cluster"])
        row = rows.setdefault(key, {"case": key[0], "clusters": key[1], "cells_per_cluster": key[2]})
        if "units" in info:
            row["units"] = info["units"]
        row[f"{info['impl']}_us"] = bench["stats"]["median"] * 1e6
    results = []
    for row in rows.values():
        if "kernel_us" in row and "reference_us" in row:
            row["speedup"] = row["reference_us"] / row["kernel_us"]
            cells = row["clusters"] * row["cells_per_cluster"]
            if row["case"] == "tick" and cells:
                row["ns_per_cell"] = row["kernel_us"] * 1e3 / cells
            results.append(row)
    results.sort(key=lambda r: (r["case"], r["clusters"]))
    json.dump(results, open(out_path, "w"), indent=1)
    machine = raw.get("machine_info", {})
    print(f"\n{date.today()}  {machine.get('cpu', {}).get('brand_raw', platform.processor())}  "
          f"Python {platform.python_version()}  (medians)")
    print(f"{'case':<22}{'clusters×cells':>16}{'kernel µs':>12}{'NumPy µs':>12}{'speedup':>10}")
    for r in results:
        size = f"{r['clusters']}×{r['cells_per_cluster']}" if r["clusters"] else f"{r.get('units')} units"
        print(f"{r['case']:<22}{size:>16}{r['kernel_us']:>12.2f}{r['reference_us']:>12.1f}{r['speedup']:>9.1f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
