"""The page in a real browser: Debian's Chromium and chromedriver driven by Selenium, against a running
`ems run` controlling a simulated site in another process (`ems sim-site`), over loopback.

`make test` installs the browser where it is missing (tools/browser.sh); a machine without it fails these
tests with that instruction: a browser test that skips would be a test that cannot fail.
Screenshots of every page go to build/page/ (EMS_SCREENSHOTS=docs/page writes the README's copies).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ems.comm.net import free_port
from tests.procs import EmsRun, sim_site
from tests.records.test_api import Client

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PW = "correct horse 9"
CLUSTERS, CELLS = 32, 396                  # the heat-map's size in the issue: the whole stack of a container
SHOTS = Path(os.environ.get("EMS_SCREENSHOTS", "build/page"))


def _need_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"no browser for the page tests ({', '.join(missing)} missing): run `make test` (it installs "
                    "Debian's chromium and chromium-driver) or `bash tools/browser.sh` as root")


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """One controller and its simulated site for every page test: 32 clusters of 396 cells."""
    tmp = tmp_path_factory.mktemp("page")
    dport, aport = free_port(), free_port()
    base = tmp / "base.toml"
    base.write_text(f'[site]\nname = "Page test"\n[dispatch]\nport = {dport}\n[api]\nport = {aport}\n'
                    f'[battery]\nclusters = {CLUSTERS}\ncells_per_cluster = {CELLS}\npacks_per_cluster = 9\n'
                    f'rated_charge_a = 140.0\nrated_discharge_a = 140.0\n')
    sim = sim_site(tmp, base)
    run = EmsRun("--config", str(sim.site_file), "--db", str(tmp / "history.sqlite"), "--state", str(tmp / "state.json"))
    try:
        assert run.wait_for(lambda s: "local page" in s, 60) is not None, run.text() + "".join(run.err)
        url = f"http://127.0.0.1:{aport}"
        api = Client(aport)                           # the JSON API as a script uses it (bearer token)
        deadline = time.monotonic() + 30              # the controller's first published status
        while time.monotonic() < deadline:
            if api.call("GET", "/health")[0] == 200:
                break
            time.sleep(0.2)
        yield {"url": url, "api": api, "sim": sim, "run": run, "tmp": tmp}
    finally:
        run.stop()
        sim.stop()


@pytest.fixture(scope="session")
def browser():
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
              "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    d.set_script_timeout(20)
    yield d
    d.quit()


def shot(browser, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def console_errors(browser) -> list[str]:
    """The browser console's errors since the last call: script exceptions, CSP refusals, files that did
    not load. An API call the server refused (4xx) is logged by Chromium too, but the page shows it as
    text (that is tested where it matters), so those are left out."""
    import re
    refused = re.compile(r"/api/\S* - Failed to load resource: the server responded with a status of 4\d\d")
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE" and not refused.search(e["message"])]
