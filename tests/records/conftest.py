import json
from pathlib import Path

import pytest

from ems.sim.runner import simulate
from ems.sim.scenario import load_scenario

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def week(tmp_path_factory):
    """One simulated week recorded into OUT/history.sqlite (shared by the records tests; read-only)."""
    out = tmp_path_factory.mktemp("week")
    cfg, sim = load_scenario(HERE / "week.toml")
    simulate(cfg, sim, out)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return out, events
