"""Issue 17 items 20–21: bad input to the command line gets a one-line message and a non-zero exit, never a
traceback; allowlist entries are IP addresses, compared in canonical form."""
import os
import subprocess
import sys

import pytest

from ems.comm.net import normalise_address

EMS = [sys.executable, "-m", "ems"]


def ems(*args, cwd=None, stdin=None):
    return subprocess.run(EMS + list(args), capture_output=True, text=True, cwd=cwd, timeout=120)


GARBAGE = {
    "binary.toml": os.urandom(2000) + b"\0",
    "utf16.toml": '[site]\nname = "x"\n'.encode("utf-16"),
    "nested_arrays.toml": b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "nested_tables.toml": b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000 + b"\n",
    "big_int.toml": b"[battery]\nclusters = " + b"9" * 5000 + b"\n",
    "latin1.toml": '[site]\nname = "M\xfcnchen"\n'.encode("latin-1"),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_config_check_on_garbage_says_what_is_wrong(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(GARBAGE[name])
    r = ems("config", "check", str(f))
    assert r.returncode != 0 and "Traceback" not in r.stderr + r.stdout, r.stderr
    assert str(f) in r.stderr + r.stdout


def test_config_check_on_a_directory_or_a_device_refuses_it(tmp_path):
    for path in (str(tmp_path), "/dev/zero"):
        r = ems("config", "check", path)
        assert r.returncode != 0 and "Traceback" not in r.stderr and "not a regular file" in r.stderr + r.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_config_check_on_an_unreadable_file(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text("[site]\n")
    f.chmod(0)
    r = ems("config", "check", str(f))
    assert r.returncode != 0 and "Traceback" not in r.stderr


SIM = '[simulation]\nstart = "2026-06-21T00:00:00+02:00"\nduration_h = 0.02\n'


@pytest.mark.parametrize("body, says", [
    ("events = 5\n", "must be a list"),
    ('[[simulation.events]]\nkind = "load_step"\nafter_h = 1e300\nvalue_w = 1000\n', "after_h"),
    ('[[simulation.events]]\nkind = "load_step"\nafter_h = 0.01\nvalue_w = "big"\n', "must be a finite number"),
    ('[[simulation.events]]\nkind = "pv_scale"\nafter_h = 0.01\nvalue = "half"\n', "must be a finite number"),
    ('[[simulation.events]]\nkind = "dispatch"\nafter_h = 0.01\nvalue_w = nan\n', "must be a finite number"),
    ('[[simulation.events]]\nkind = "command"\nname = "forced_charge"\nafter_h = 0.01\nvalue = "no"\n', "true or false"),
])
def test_simulate_validates_the_whole_scenario_before_it_starts(tmp_path, body, says):
    f = tmp_path / "s.toml"
    f.write_text(SIM + body)
    r = ems("simulate", str(f), "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and says in r.stderr, r.stderr
    assert not (tmp_path / "out" / "timeseries.csv").exists()      # refused before the first step


def test_report_and_stats_into_a_closed_pipe_end_quietly(tmp_path):
    from ems.records.recorder import Recorder
    db = tmp_path / "h.sqlite"
    Recorder(db, timezone="UTC").stop()
    for args in (["report", "daily", "2026-01-01", "--interval", "5m"], ["stats", "month", "2026-01"],
                 ["report", "annual", "2026"]):
        cmd = " ".join(EMS + args + ["--db", str(db)]) + " | head -c 10 > /dev/null; echo ${PIPESTATUS[0]}"
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
        assert r.stdout.strip() in ("0", "141")


def test_allowlist_entries_are_normalised_or_refused():
    assert normalise_address("0:0:0:0:0:0:0:1") == "::1"
    assert normalise_address("::FFFF:127.0.0.1") == "127.0.0.1"
    assert normalise_address(" 10.0.0.5 ") == "10.0.0.5"
    assert normalise_address(1) is None and normalise_address("scada.local") is None
    from ems.config import site_from_dict
    from ems.config.load import ConfigError
    with pytest.raises(ConfigError, match="not an IP address"):
        site_from_dict({"dispatch": {"allowed_clients": [2130706433]}})


def test_a_non_canonical_allowlist_entry_matches_its_client():
    import dataclasses

    from ems.comm.dispatch import DispatchServer
    from ems.comm.modbus_server import IoThread
    from ems.comm.net import free_port
    from ems.config.schema import SiteConfig
    from pymodbus.client import ModbusTcpClient

    cfg = SiteConfig()
    cfg = dataclasses.replace(cfg, dispatch=dataclasses.replace(cfg.dispatch, allowed_clients=["::ffff:127.0.0.1"]))
    srv, io, port = DispatchServer(cfg), IoThread(), free_port()
    io.serve_tcp({1: srv.image}, "127.0.0.1", port)
    try:
        c = ModbusTcpClient("127.0.0.1", port=port)
        assert c.connect()
        assert not c.write_register(0, 1, device_id=1).isError() and srv.remote
        c.close()
    finally:
        io.stop()
