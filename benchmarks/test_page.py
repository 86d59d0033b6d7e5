"""The local page's speed (issue 19), in headless Chromium against a running controller: what the overview
weighs and how soon it shows numbers, what a live stream costs the server per client, how long the
heat-map of 32 × 396 cells and a month of 5-minute data take to draw. Browser-side times are measured by
the page itself (performance.now around the draw); reported by benchmarks/report.py, never asserted."""
from __future__ import annotations

import json
import math
import sqlite3
import statistics
import time
from pathlib import Path

import pytest

from tests.web.conftest import PW, browser, site  # noqa: F401 - the fixtures
from tests.web.test_page import login, wait

from selenium.webdriver.common.by import By


@pytest.fixture(scope="module")
def admin_site(site, browser):  # noqa: F811
    api = site["api"]
    if api.call("GET", "/health")[1]["setup_required"]:
        assert api.call("POST", "/setup", {"username": "admin", "password": PW})[0] == 201
    api.token = api.call("POST", "/login", {"username": "admin", "password": PW})[1]["token"]
    login(browser, site, "admin")
    return site


def test_bench_overview_weight_and_first_render(benchmark, admin_site, browser):  # noqa: F811
    def load():
        browser.get("about:blank")
        browser.execute_cdp_cmd("Network.clearBrowserCache", {})       # a cold load: every file comes over the wire
        browser.get(admin_site["url"] + "/#/overview")
        wait(browser, lambda d: d.execute_script("return performance.getEntriesByName('ems-first-status').length"), 15.0)
        return browser.execute_script("""
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            const stat = res.filter((r) => r.name.includes('/static/'));
            return {first_status_ms: performance.getEntriesByName('ems-first-status')[0].startTime,
                    dom_ms: nav.domContentLoadedEventEnd,
                    static_bytes: stat.reduce((a, r) => a + r.transferSize, 0) + nav.transferSize,
                    all_bytes: res.reduce((a, r) => a + r.transferSize, 0) + nav.transferSize,
                    static_files: stat.length + 1, uplot_loaded: res.some((r) => r.name.includes('uplot'))};""")
    runs = [load() for _ in range(5)]
    benchmark.pedantic(load, rounds=1, iterations=1)
    benchmark.extra_info.update(
        case="page_overview", kind="page", first_status_ms=statistics.median(r["first_status_ms"] for r in runs),
        dom_ms=statistics.median(r["dom_ms"] for r in runs), static_bytes=runs[0]["static_bytes"],
        all_bytes=runs[0]["all_bytes"], static_files=runs[0]["static_files"], uplot_loaded=runs[0]["uplot_loaded"])


def test_bench_heatmap_of_32_by_396_cells(benchmark, admin_site, browser):  # noqa: F811
    browser.get(admin_site["url"] + "/#/battery")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap[data-cells='12672']"), 20.0)
    times = []

    def toggle():
        for label in ("Temperature", "Voltage"):
            before = browser.find_element(By.ID, "heatmap").get_attribute("data-renders")
            browser.find_element(By.XPATH, f"//button[text()='{label}']").click()
            wait(browser, lambda d: d.find_element(By.ID, "heatmap").get_attribute("data-renders") != before, 5.0)
            times.append(float(browser.find_element(By.ID, "heatmap").get_attribute("data-rendered-ms")))
    fetch_ms = browser.execute_script(
        "return performance.getEntriesByType('resource').filter((r) => r.name.includes('/api/cells')).map((r) => r.duration)")
    for _ in range(10):
        toggle()
    benchmark.pedantic(toggle, rounds=1, iterations=1)
    benchmark.extra_info.update(case="page_heatmap_32x396", kind="page", render_p50_ms=statistics.median(times),
                                render_max_ms=max(times), renders=len(times),
                                cells_fetch_p50_ms=statistics.median(fetch_ms) if fetch_ms else None)


def _month_of_samples(db: Path, days: int = 31, step_s: float = 300.0) -> tuple[float, float]:
    """A history database with `days` of 5-minute samples for grid, PV, load, PCS and the stack (a smooth
    day-night pattern): the chart's input, not a claim about any site."""
    from ems.records import db as DB
    con = DB.connect(db)
    end = math.floor(time.time() / 86400.0) * 86400.0
    start = end - days * 86400.0
    rows = []
    e = {d: 0.0 for d in (0x05000000, 0x03000000, 0x01000000, 0x06000000, 0x02000000)}
    t = start
    while t < end:
        h = (t % 86400.0) / 3600.0
        pv = max(0.0, math.sin((h - 6.0) / 12.0 * math.pi)) * 60e3
        load = 30e3 + 10e3 * math.sin(h / 24.0 * 2 * math.pi)
        pcs = max(min(load - pv, 50e3), -50e3)
        p = {0x05000000: load - pv - pcs, 0x03000000: pv, 0x01000000: load, 0x06000000: pcs, 0x02000000: pcs}
        for d, w in p.items():
            e[d] += abs(w) * step_s / 3600.0
            rows.append((d, t, w, e[d], 0.0, 50.0 + 30.0 * math.sin(h / 24.0 * 2 * math.pi) if d == 0x02000000 else None))
        t += step_s
    with con:
        con.executemany("INSERT INTO samples (device_id, t, p_w, e_in_wh, e_out_wh, soc_pct) VALUES (?,?,?,?,?,?)", rows)
    con.close()
    return start, end


def test_bench_a_month_of_5_minute_data_charted(benchmark, browser, tmp_path):  # noqa: F811
    from ems.records.api import Api, ApiServer
    from ems.records.auth import Users
    from ems.records import db as DB
    db = tmp_path / "history.sqlite"
    DB.connect(db).close()
    start, end = _month_of_samples(db)
    users = Users(tmp_path / "auth.sqlite", 3600.0)
    users.setup("admin", PW)
    server = ApiServer(Api(db, None, users), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}"
    site = {"url": url}
    try:
        login(browser, site, "admin")
        since = time.strftime("%Y-%m-%d", time.gmtime(start))
        until = time.strftime("%Y-%m-%d", time.gmtime(end - 1))
        times, points = [], 0

        def chart():
            nonlocal points
            browser.get(url + "/#/history")
            form = wait(browser, lambda d: d.find_elements(By.ID, "power-range"), 10.0)[0]
            for name, value in (("since", since), ("until", until)):
                browser.execute_script("arguments[0].value = arguments[1]", form.find_element(By.NAME, name), value)
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            el = wait(browser, lambda d: [c for c in d.find_elements(By.ID, "power-chart")
                                          if int(c.get_attribute("data-points") or 0) > 8000], 20.0)[0]
            points = int(el.get_attribute("data-points"))
            times.append(float(el.get_attribute("data-rendered-ms")))
        for _ in range(4):
            chart()
        benchmark.pedantic(chart, rounds=1, iterations=1)
    finally:
        server.stop()
    benchmark.extra_info.update(case="page_month_of_5_min", kind="page", render_p50_ms=statistics.median(times),
                                render_max_ms=max(times), points=points, series=5)


def test_bench_live_stream_cost_per_client(benchmark, admin_site):
    """The server's work per stream per second: one status to JSON and out, and five polls of the feed."""
    status = admin_site["api"].call("GET", "/live")[1]
    from ems.records.live import LiveFeed
    feed = LiveFeed()
    feed._status, feed.seq = status, 1

    def one_second():
        for _ in range(5):                    # STREAM_POLL_S = 0.2
            feed.status()
        return b"event: status\ndata: " + json.dumps(status, ensure_ascii=False).encode() + b"\n\n"
    benchmark(one_second)
    benchmark.extra_info.update(case="page_stream_per_client", kind="page", event_bytes=len(one_second()))
