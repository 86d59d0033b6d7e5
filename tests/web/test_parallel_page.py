"""The parallel group on the page and in the API: a master with two slaves (each `ems run` on its own
`ems sim-site`), its Devices view listing every unit with its share and state, in headless Chromium."""
from __future__ import annotations

import time

from selenium.webdriver.common.by import By

from tests.parallel.group import ParallelSite
from tests.records.test_api import Client
from tests.web.conftest import PW, browser, shot  # noqa: F401 - the fixture
from tests.web.test_page import login, text_of, wait


def test_the_devices_view_shows_each_unit_of_the_group_its_share_and_state(tmp_path, browser):  # noqa: F811
    ps = ParallelSite(tmp_path, slaves=2, lease_s=2.0, socs=[50.0, 25.0, 75.0], master_api=True)
    try:
        ps.start()
        assert ps.master.wait_for(lambda s: "parallel 3/3 units" in s, 40), ps.master.text()[-2000:]
        api = Client(ps.api_port)
        deadline = time.monotonic() + 20
        while api.call("GET", "/health")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.call("POST", "/setup", {"username": "admin", "password": PW})[0] == 201
        api.login("admin", PW)
        deadline = time.monotonic() + 15             # until every unit has reported its energy and taken a share
        while time.monotonic() < deadline:
            status, group = api.call("GET", "/parallel")
            shares = {u["id"]: u["share_pct"] for u in group.get("members", [])}
            if status == 200 and group["online"] == 3 and min(shares.values()) > 0:
                break
            time.sleep(0.3)
        assert status == 200 and group["role"] == "master" and group["online"] == 3, group
        assert shares[3] > shares[1] > shares[2] > 0, group            # by the energy each can give
        deadline = time.monotonic() + 10                               # the recorder's next live status
        while api.call("GET", "/status")[1]["live"]["parallel"].get("online") != 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert api.call("GET", "/status")[1]["live"]["parallel"]["online"] == 3
        login(browser, {"url": f"http://127.0.0.1:{ps.api_port}"}, "admin")
        browser.get(f"http://127.0.0.1:{ps.api_port}/#devices")
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#parallel-units tbody tr")) == 3,
             15, "the group's table")
        assert text_of(browser, "parallel-online") == "3"
        row = browser.find_element(By.CSS_SELECTOR, '#parallel-units tr[data-unit="3"]').text
        assert " in " in f" {row} " and "following" in row
        shot(browser, "parallel")
        ps.slaves[0].stop()                                            # unit 2 goes: the page says so
        wait(browser, lambda d: "out" in d.find_element(By.CSS_SELECTOR, '#parallel-units tr[data-unit="2"]').text,
             15, "unit 2 out")
        assert text_of(browser, "parallel-online") == "2"
    finally:
        ps.stop()
