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
    extra = []
    for bench in raw["benchmarks"]:
        info = bench["extra_info"]
        if info.get("kind") in ("simulation", "jitter", "latency", "throughput", "records", "footprint", "page",
                                "parallel", "cloud_fleet"):
            extra.append({**info, "wall_s": bench["stats"]["median"]})
            continue
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
    if extra:
        json.dump(extra, open(out_path.replace("results.json", "loops.json"), "w"), indent=1)
    machine = raw.get("machine_info", {})
    print(f"\n{date.today()}  {machine.get('cpu', {}).get('brand_raw', platform.processor())}  "
          f"Python {platform.python_version()}  (medians)")
    print(f"{'case':<22}{'clusters×cells':>16}{'kernel µs':>12}{'NumPy µs':>12}{'speedup':>10}")
    for r in results:
        size = f"{r['clusters']}×{r['cells_per_cluster']}" if r["clusters"] else f"{r.get('units')} units"
        print(f"{r['case']:<22}{size:>16}{r['kernel_us']:>12.2f}{r['reference_us']:>12.1f}{r['speedup']:>9.1f}×")
    for e in extra:
        if e["kind"] == "simulation":
            print(f"{e['case']:<28} one simulated day at 1 s steps: {e['wall_s']:.1f} s wall")
        elif e["kind"] == "latency":
            what = ("with the default 200 ms over-voltage filter" if e["case"].endswith("default_filter")
                    else "comm + control path, filter 0 ms")
            print(f"CAN cell over-voltage frame (simulated BMS, another process) → PCS zero-power write at its Modbus "
                  f"server, {what} ({e['trials']} trials, {e.get('lost', 0)} lost): p50 {e['p50_ms']:.2f} ms, "
                  f"p99 {e['p99_ms']:.2f} ms, max {e['max_ms']:.2f} ms; of it, until the fast tick that sees the "
                  f"frame p50 {e['seen_p50_ms']:.2f} / p99 {e['seen_p99_ms']:.2f} ms")
        elif e["kind"] == "parallel" and e["case"] == "master_cycle_1000_units":
            print(f"parallel master cycle over {e['units']} units (read all, distribute, write all): p50 "
                  f"{e['p50_s'] * 1e3:.0f} ms, p99 {e['p99_s'] * 1e3:.0f} ms (goal ≤ 1000 ms)")
        elif e["kind"] == "cloud_fleet":
            print(f"cloud: {e['sites']} sites on one broker at a {e['cycle_s']:g} s cycle: {e['published']} messages, "
                  f"{e['lost']} lost; broker CPU {e['broker_cpu_pct']:.1f} %, publishers {e['publisher_cpu_pct']:.1f} %; "
                  f"alarm latency p50 {e['alarm_p50_ms']:.1f} ms, p99 {e['alarm_p99_ms']:.1f} ms")
        elif e["kind"] == "parallel" and e["case"] == "control_thread_1000_units":
            print(f"parallel master's control thread per slow tick over {e['units']} units: p50 "
                  f"{e['p50_s'] * 1e3:.2f} ms, p99 {e['p99_s'] * 1e3:.2f} ms")
        elif e["kind"] == "parallel":
            print(f"parallel: a silent unit's share moved to the others after {e['wall_s']:.2f} s (median)")
        elif e["kind"] == "records":
            size = f" (database {e['db_mb_per_year']} MB per year of 5-min data)" if "db_mb_per_year" in e else ""
            print(f"history {e['case']:<26} {e['wall_s'] * 1e3:8.2f} ms{size}")
        elif e["kind"] == "footprint":
            print(f"ems run (controller process), {e['case'][10:]:<16} start-up to the first tick "
                  f"{e['startup_s']:.2f} s, CPU {e['cpu_pct']:.1f} % of one core (fast loop {e['fast_loop_thread_pct']:.1f}"
                  f" %, I/O {e['io_thread_pct']:.1f} %, rest {e['other_threads_pct']:.1f} %; the simulated site's process "
                  f"{e['sim_cpu_pct']:.1f} %), RSS {e['rss_mb']:.0f} MB (peak {e['rss_peak_mb']:.0f} MB)")
        elif e["kind"] == "page":
            if e["case"] == "page_overview":
                print(f"page: the overview loads {e['static_bytes'] / 1024:.0f} kB compressed in {e['static_files']} files "
                      f"({e['all_bytes'] / 1024:.0f} kB with its API answers; uPlot loaded: {e['uplot_loaded']}), "
                      f"first numbers on screen after {e['first_status_ms']:.0f} ms (loopback, median of 5)")
            elif e["case"] == "page_stream_per_client":
                print(f"page: a live stream costs the server {e['wall_s'] * 1e6:.1f} µs per client per second "
                      f"({e['event_bytes']} bytes an event)")
            else:
                fetch = f"; its /api/cells answer took {e['cells_fetch_p50_ms']:.0f} ms" if e.get("cells_fetch_p50_ms") else ""
                print(f"page: {e['case'][5:]} drawn in {e['render_p50_ms']:.1f} ms (median, max {e['render_max_ms']:.1f} ms)"
                      f"{fetch}")
        elif e["kind"] == "throughput":
            print(f"Modbus engine poll throughput (loopback, 22-register reads): {e['requests_per_s']:.0f} requests/s")
        else:
            print(f"real-time fast loop{' ' + e['rt'] if e.get('rt') else ''} (10 ms, {e['ticks']} ticks): period error p50 {e['jitter_p50_ms']:.3f} ms, "
                  f"p99 {e['jitter_p99_ms']:.3f} ms, p99.9 {e['jitter_p999_ms']:.3f} ms, max {e['jitter_max_ms']:.2f} ms; "
                  f"slow loop p50 {e['slow_loop_p50_ms']:.2f} ms, p99 {e['slow_loop_p99_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
