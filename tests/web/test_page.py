"""The local page in headless Chromium against a running controller (issue 19's browser tests)."""
from __future__ import annotations

import json
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.procs import control
from tests.web.conftest import CELLS, CLUSTERS, PW, console_errors, shot

FETCH = """const [path, method, csrf, done] = arguments;
const headers = {"Content-Type": "application/json"};
if (csrf) headers["X-CSRF-Token"] = csrf;
fetch(path, {method, headers, body: method === "GET" ? undefined : "{}", credentials: "same-origin"})
  .then(async (r) => done({status: r.status, text: await r.text()}), (e) => done({status: 0, text: String(e)}));"""


def wait(browser, fn, timeout_s: float = 10.0, what: str = ""):
    return WebDriverWait(browser, timeout_s, 0.05).until(lambda d: fn(d), what)


def text_of(browser, key: str) -> str:
    els = browser.find_elements(By.CSS_SELECTOR, f'[data-k="{key}"]')
    return els[0].text if els else ""


def in_page(browser, path: str, method: str = "GET", csrf: str | None = None) -> dict:
    """A request made by the page's own context: its cookie, its origin."""
    return browser.execute_async_script(FETCH, path, method, csrf)


def login(browser, site, user: str, pw: str = PW) -> None:
    browser.delete_all_cookies()
    browser.get(site["url"] + "/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#login-form") and "Log in" in d.page_source)
    browser.find_element(By.NAME, "username").send_keys(user)
    browser.find_element(By.NAME, "password").send_keys(pw)
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "header.top nav"), what="the page after login")


@pytest.fixture(scope="session")
def admin(site, browser):
    """The first run, through the page: the admin is created on the setup form, then logs in."""
    browser.get(site["url"] + "/")
    wait(browser, lambda d: "First run" in d.page_source, what="the first-run form")
    shot(browser, "first-run")
    for name, value in (("username", "admin"), ("password", PW), ("password2", PW)):
        browser.find_element(By.NAME, name).send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait(browser, lambda d: "Log in" in d.page_source and "First run" not in d.page_source, what="the login form")
    login(browser, site, "admin")
    api = site["api"]
    status, body = api.call("POST", "/login", {"username": "admin", "password": PW})
    assert status == 200, body
    api.token = body["token"]
    return "admin"


def test_first_run_creates_the_admin_and_the_session_lives_in_an_httponly_strict_cookie(site, browser, admin):
    login(browser, site, "admin")
    assert "admin (admin)" in browser.find_element(By.CSS_SELECTOR, "header.top .who").text
    cookie = next(c for c in browser.get_cookies() if c["name"] == "ems_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert "ems_session" not in browser.execute_script("return document.cookie")      # the script never sees it
    assert site["api"].call("GET", "/health")[1]["setup_required"] is False
    assert site["api"].call("POST", "/setup", {"username": "second", "password": PW})[0] == 409


def test_a_change_from_the_cookie_without_the_csrf_token_is_refused(site, browser, admin):
    login(browser, site, "admin")
    r = in_page(browser, "/api/commands/fault_reset", "POST")
    assert r["status"] == 403 and "CSRF" in r["text"]
    csrf = in_page(browser, "/api/session")
    token = json.loads(csrf["text"])["csrf"]
    assert in_page(browser, "/api/commands/fault_reset", "POST", token)["status"] == 200


def test_the_overview_shows_the_numbers_the_controller_published(site, browser, admin):
    login(browser, site, "admin")
    wait(browser, lambda d: text_of(d, "pcs_w") not in ("", "—"), what="live numbers")
    for _ in range(30):           # the page and the API read at the same publish (the controller's time stamp)
        live = site["api"].call("GET", "/live")[1]
        shown = {k: text_of(browser, k) for k in ("pcs_w", "soc_pct", "strategy")}
        shown_time = browser.find_element(By.CSS_SELECTOR, '[data-k="time"]').get_attribute("data-time")
        if shown_time == live["time"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the page never showed the API's publish: {shown} vs {live['time']}")
    assert shown["pcs_w"] == f"{live['pcs_w'] / 1000:.1f}"
    assert shown["soc_pct"] == f"{live['soc_pct']:.1f}"
    assert shown["strategy"] == live["strategy"]
    # /api/status is what `ems status` reads: the same controller's status, written every 5 s
    status = site["api"].call("GET", "/status")[1]["live"]
    from datetime import datetime
    age_s = (datetime.fromisoformat(shown_time) - datetime.fromisoformat(status["time"])).total_seconds()
    assert status["site"] == "Page test" and -1.0 <= age_s <= 6.0
    assert browser.find_element(By.CSS_SELECTOR, f'[data-device="pcs"]').text.split()[1] == "online"
    shot(browser, "overview")


def test_a_live_value_changes_on_screen_within_2_s_of_changing_in_the_controller(site, browser, admin):
    login(browser, site, "admin")
    wait(browser, lambda d: text_of(d, "pcs_w") not in ("", "—"))
    pv = lambda: browser.find_element(By.CSS_SELECTOR, '[data-flow-value="pv_w"]').text    # noqa: E731
    try:
        assert control(site["sim"], kind="pv_scale", value=0.0)["ok"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and abs(site["api"].call("GET", "/live")[1]["pv_w"] or 0.0) > 50.0:
            time.sleep(0.05)
        in_controller = time.monotonic()
        assert in_controller < deadline, "the controller never saw the PV go to 0"
        wait(browser, lambda d: pv() == "0.0 kW", 5.0, "PV 0.0 kW on the page")
        assert time.monotonic() - in_controller <= 2.0
    finally:
        control(site["sim"], kind="pv_scale", value=1.0)


def test_an_alarm_raised_in_the_controller_appears_on_the_page(site, browser, admin):
    login(browser, site, "admin")
    try:
        assert control(site["sim"], kind="pcs_fault", code=100470)["ok"]      # inverter over-temperature
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '.alarm-list [data-code="100470"]'), 20.0,
             "alarm 100470 on the overview")
        assert int(text_of(browser, "alarms_severe")) + int(text_of(browser, "alarms_moderate")) >= 1
        browser.get(site["url"] + "/#/alarms")
        row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#active-alarms tr[data-code="100470"]'), 10.0)
        assert "active" in row[0].text and len(row[0].find_elements(By.TAG_NAME, "td")[-1].text) > 10   # the remedy
        shot(browser, "alarms")
    finally:
        control(site["sim"], kind="pcs_fault_clear", code=100470)


def test_a_role_without_permission_sees_no_control_and_is_refused_if_it_tries(site, browser, admin):
    assert site["api"].call("POST", "/users", {"username": "viewer", "role": "end_user", "password": PW})[0] == 201
    login(browser, site, "viewer")
    browser.get(site["url"] + "/#/alarms")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#alarm-filters"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#fault-reset")
    token = json.loads(in_page(browser, "/api/session")["text"])["csrf"]
    r = in_page(browser, "/api/commands/fault_reset", "POST", token)
    assert r["status"] == 403 and "may not" in r["text"]


def test_the_heat_map_draws_every_cell_of_32_clusters_of_396(site, browser, admin):
    login(browser, site, "admin")
    browser.get(site["url"] + "/#/battery")
    canvas = wait(browser, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, "#heatmap")
                                      if c.get_attribute("data-cells") == str(CLUSTERS * CELLS)], 20.0)[0]
    assert int(canvas.get_attribute("width")) == CELLS
    rows = browser.find_elements(By.CSS_SELECTOR, "#clusters tbody tr")
    assert len(rows) == CLUSTERS
    # a pixel of the first and of the last cluster is coloured (not the grey of a missing reading)
    px = browser.execute_script("""const c = document.getElementById('heatmap'), x = c.getContext('2d');
        return [Array.from(x.getImageData(0, 0, 1, 1).data), Array.from(x.getImageData(c.width - 1, c.height - 2, 1, 1).data)];""")
    assert all(p[3] == 255 and p[:3] != [128, 128, 128] for p in px), px
    shot(browser, "battery")


def test_csv_downloads_open_with_their_header(site, browser, admin):
    login(browser, site, "admin")
    browser.get(site["url"] + "/#/alarms")
    href = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#alarms-csv"))[0].get_attribute("href")
    r = in_page(browser, href)
    assert r["status"] == 200 and r["text"].splitlines()[0].startswith("id,raised_at,cleared_at,code")
    r = in_page(browser, "/api/devices?format=csv")
    assert r["status"] == 200 and r["text"].startswith("device_id,name,protocol")


def test_every_page_renders_without_a_console_error(site, browser, admin):
    login(browser, site, "admin")
    console_errors(browser)
    for page, ready in (("overview", "svg"), ("curves", ".u-wrap"), ("battery", "#heatmap"), ("alarms", "#alarm-filters"),
                        ("history", "#report-table"), ("settings", "#settings-form"), ("devices", "#devices"),
                        ("maintenance", "#log"), ("users", "#users"), ("account", "#password-form")):
        browser.get(site["url"] + f"/#/{page}")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ready), 15.0, page)
        time.sleep(0.3)
        shot(browser, page)
        errors = console_errors(browser)
        assert not errors, (page, errors)


def test_a_refused_login_is_shown_as_text_and_logout_ends_the_session(site, browser, admin):
    browser.delete_all_cookies()
    browser.get(site["url"] + "/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#login-form"))
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("not the password")
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    alert = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"))[0]
    assert alert.text.strip() and "{" not in alert.text          # a sentence, not a JSON dump or a blank page
    login(browser, site, "admin")
    browser.find_element(By.CSS_SELECTOR, "header.top button").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#login-form"))
    assert in_page(browser, "/api/session")["status"] == 401


def _set_input(browser, element_id: str, value: str) -> None:
    """Type over a field as a user does (select all, type): every keystroke is an input event. Selenium's
    clear() empties the field without one, so the page's next render (the live stream re-renders it once
    a second) put the old value back under the new keys: "10" + "23" was sent as 1023."""
    from selenium.webdriver.common.keys import Keys
    el = browser.find_element(By.ID, element_id)
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(value)
    wait(browser, lambda d: d.find_element(By.ID, element_id).get_attribute("value") == value, 5.0, element_id)


def test_a_settings_change_with_an_invalid_value_shows_the_error_and_changes_nothing(site, browser, admin):
    login(browser, site, "admin")
    site_file = site["sim"].site_file
    before = site_file.read_bytes()
    browser.get(site["url"] + "/#/settings?s=self_use")
    wait(browser, lambda d: d.find_elements(By.ID, "self_use.reserve_soc_pct"), 10.0)
    _set_input(browser, "self_use.reserve_soc_pct", "150")
    browser.find_element(By.ID, "save").click()
    err = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-error-for="reserve_soc_pct"]'), 10.0)[0]
    assert "100" in err.text                                          # the range, next to its field
    shot(browser, "settings-error")
    assert site_file.read_bytes() == before
    assert site["api"].call("GET", "/parameters")[1]["parameters"]["self_use"]["reserve_soc_pct"] != 150


def test_a_valid_settings_change_is_saved_and_applied_live(site, browser, admin):
    login(browser, site, "admin")
    browser.get(site["url"] + "/#/settings?s=self_use")
    wait(browser, lambda d: d.find_elements(By.ID, "self_use.reserve_soc_pct"), 10.0)
    _set_input(browser, "self_use.reserve_soc_pct", "23")
    browser.find_element(By.ID, "save").click()
    done = wait(browser, lambda d: d.find_elements(By.ID, "save-result"), 10.0)[0]
    # applied within the answer, or (a loaded desk: the loop later than 3 s) queued and taken at its next cycle
    assert ("applied live: self_use.reserve_soc_pct" in done.text
            or "taken by the controller at its next cycle" in done.text), done.text
    assert site["api"].call("GET", "/parameters")[1]["parameters"]["self_use"]["reserve_soc_pct"] == 23
    assert "reserve_soc_pct = 23" in site["sim"].site_file.read_text()
    shot(browser, "settings")


def test_the_time_based_plan_is_an_editable_weekly_table(site, browser, admin):
    login(browser, site, "admin")
    browser.get(site["url"] + "/#/settings?s=time_based")
    table = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'table[data-list="groups"]'), 10.0)[0]
    n = len(table.find_elements(By.CSS_SELECTOR, "tbody tr"))
    browser.find_element(By.XPATH, "//table[@data-list='groups']/following-sibling::button").click()
    _set_input(browser, f"time_based.groups.{n}.start", "01:00")
    _set_input(browser, f"time_based.groups.{n}.end", "05:00")
    browser.find_element(By.ID, "save").click()
    wait(browser, lambda d: d.find_elements(By.ID, "save-result"), 10.0)
    groups = site["api"].call("GET", "/parameters")[1]["parameters"]["time_based"]["groups"]
    assert len(groups) == n + 1 and groups[-1]["start"] == "01:00" and groups[-1]["end"] == "05:00"
    # the week shows the new group: every day (the default), 01:00–05:00, charging
    browser.get(site["url"] + "/#/settings?s=time_based")
    cell = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#week-grid td[data-slot="wed-02:30"]'), 10.0)[0]
    assert "charge" in cell.get_attribute("class")
    assert browser.find_element(By.CSS_SELECTOR, '#week-grid td[data-slot="wed-05:00"]').get_attribute("class") != "charge"
    shot(browser, "settings-week")


def test_history_shows_the_days_report_as_a_chart_and_a_table_with_csv(site, browser, admin):
    login(browser, site, "admin")
    browser.get(site["url"] + "/#/history")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#report-table tbody tr"), 15.0)
    rows = browser.find_elements(By.CSS_SELECTOR, "#report-table tbody tr")
    assert len(rows) == 24                                            # a day at the default 60-minute interval
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#report-chart canvas"), 10.0)
    r = in_page(browser, browser.find_element(By.ID, "report-csv").get_attribute("href"))
    assert r["status"] == 200 and r["text"].startswith("period,pv_kwh")
    shot(browser, "history")


def test_users_and_maintenance_follow_the_role(site, browser, admin):
    login(browser, site, "admin")
    browser.get(site["url"] + "/#/users")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#users tr[data-user="admin"]'), 10.0)
    shot(browser, "users")
    browser.get(site["url"] + "/#/maintenance")
    wait(browser, lambda d: d.find_elements(By.ID, "ems-clock"), 10.0)
    assert browser.find_elements(By.XPATH, "//button[text()='Restart the EMS']")
    shot(browser, "maintenance")
    # an upload goes through with the session's CSRF token; on this desk (no board) the refusal is shown as text
    bundle = site["tmp"] / "not-a-bundle.bundle"
    bundle.write_bytes(b"not a bundle")
    refusals = lambda d: [a for a in d.find_elements(By.CSS_SELECTOR, "[role=alert]")     # noqa: E731
                          if "board's service" in a.text]
    before = len(refusals(browser))                  # the upgrade list says it too (GET, 409)
    browser.find_element(By.NAME, "bundle").send_keys(str(bundle))
    browser.find_element(By.XPATH, "//button[text()='Upload and reserve']").click()
    wait(browser, lambda d: len(refusals(d)) == before + 1, 10.0, "the upload's own refusal")
    status, _ = site["api"].call("POST", "/users", {"username": "ops", "role": "operator", "password": PW})
    assert status in (201, 409)
    login(browser, site, "ops")
    nav = browser.find_element(By.CSS_SELECTOR, "header.top nav").text
    assert "Users" not in nav and "Maintenance" in nav
    browser.get(site["url"] + "/#/maintenance")
    wait(browser, lambda d: d.find_elements(By.ID, "ems-clock"), 10.0)
    assert not browser.find_elements(By.XPATH, "//button[text()='Restart the EMS']")
    token = json.loads(in_page(browser, "/api/session")["text"])["csrf"]
    assert in_page(browser, "/api/maintenance/restart", "POST", token)["status"] == 403


def test_a_simulated_site_says_so_on_every_page(browser, tmp_path):
    """`ems run --with-sim`: the devices are a simulated site, and the page's header says SIMULATED."""
    from ems.comm.net import free_port
    from tests.procs import EmsRun
    from tests.records.test_api import Client
    aport = free_port()
    base = tmp_path / "base.toml"
    base.write_text(f'[site]\nname = "Sim"\n[dispatch]\nport = {free_port()}\n[api]\nport = {aport}\n')
    run = EmsRun("--config", str(base), "--with-sim", "--db", str(tmp_path / "h.sqlite"), "--state",
                 str(tmp_path / "s.json"))
    try:
        assert run.wait_for(lambda s: "local page" in s, 60) is not None, run.text() + "".join(run.err)
        site = {"url": f"http://127.0.0.1:{aport}"}
        assert Client(aport).call("POST", "/setup", {"username": "admin", "password": PW})[0] == 201
        login(browser, site, "admin")
        badge = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "header.top .sim"), 15.0)[0]
        assert badge.text == "SIMULATED"
        browser.get(site["url"] + "/#/battery")
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap"), 15.0)
        assert browser.find_element(By.CSS_SELECTOR, "header.top .sim").text == "SIMULATED"
    finally:
        run.stop()


def test_every_page_fits_a_phone(site, browser, admin):
    """390 px wide (a phone): no page is wider than the screen; wide tables scroll inside their panel."""
    login(browser, site, "admin")
    browser.set_window_size(390, 844)
    try:
        for page, ready in (("overview", "svg"), ("battery", "#heatmap"), ("alarms", "#alarm-filters"),
                            ("history", "#report-table"), ("settings", "#settings-form"), ("devices", "#devices"),
                            ("maintenance", "#log"), ("users", "#users")):
            browser.get(site["url"] + f"/#/{page}")
            wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ready), 15.0, page)
            time.sleep(0.2)
            wide = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert wide[0] <= wide[1], (page, wide)
            if page == "overview":
                shot(browser, "overview-phone")
    finally:
        browser.set_window_size(1280, 900)
