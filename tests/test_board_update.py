"""Signed bundles, A/B slots, config migrations, rollback and reserved upgrades, on a board root in a
temporary folder: real wheels installed by pip, real Ed25519 keys, a real process as the "new version"."""
import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ems.board import bundle, slots, update
from ems.board.bundle import BundleError
from ems.board.migrate import MigrationError, migrate_file
from ems.board.slots import BoardPaths, UpdateError
from tests.wheels import write_wheel


def make_wheel(folder: Path, version: str, healthy: bool = True) -> Path:
    """A real (tiny) wheel: module emsfake_app with its version and whether it comes up healthy."""
    return write_wheel(folder, "emsfake_app", version,
                       {"emsfake_app.py": f"VERSION = {version!r}\nHEALTHY = {healthy!r}\n".encode()})


MIGRATION_2 = '''MIGRATION_FROM = 1
MIGRATION_TO = 2

def migrate(doc):
    # v2 renamed [site] name to [site] site_name
    site = doc.setdefault("site", {})
    if "name" in site:
        site["site_name"] = site.pop("name")
    return doc
'''
MIGRATION_3 = '''MIGRATION_FROM = 2
MIGRATION_TO = 3

def migrate(doc):
    doc.setdefault("loops", {})["fast_period_ms"] = doc.get("loops", {}).get("fast_period_ms", 10.0)
    return doc
'''


@pytest.fixture
def board(tmp_path):
    """A board at version 0.1.0 in slot a, a signing key the board trusts, a site file and some history."""
    root = tmp_path / "root"
    paths = BoardPaths(root)
    work = tmp_path / "work"
    work.mkdir()
    key = work / "signing.pem"
    pub = bundle.generate_key(key)
    paths.keys.mkdir(parents=True)
    (paths.keys / "oem.pub").write_text(pub.read_text())
    paths.slots.mkdir(parents=True)
    slots.install_slot(paths, "a", [make_wheel(work, "0.1.0")], {"version": "0.1.0"})
    slots.switch_link(paths.current, "slots/a")
    paths.config.write_text('[site]\nname = "Plant 7"\n')
    paths.data.mkdir(parents=True, exist_ok=True)
    (paths.data / "history.sqlite").write_bytes(b"history")
    return paths, key, work


def service(paths: BoardPaths):
    """The service's start as systemd does it: the boot guard, then the version in `current`, which
    confirms itself when it is healthy (a real process importing the installed slot)."""
    def restart():
        slots.boot_guard(paths)
        code = ("import sys, emsfake_app; from ems.board import slots; "
                f"sys.exit(0 if emsfake_app.HEALTHY and slots.confirm(slots.BoardPaths({str(paths.root)!r})) else 3)")
        env = dict(os.environ, PYTHONPATH=f"{paths.current}/site-packages{os.pathsep}{Path.cwd()}")
        subprocess.run([sys.executable, "-c", code], env=env, check=False)
    return restart


def running_version(paths: BoardPaths) -> str:
    out = subprocess.run([sys.executable, "-c", "import emsfake_app; print(emsfake_app.VERSION)"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=f"{paths.current}/site-packages"), check=True)
    return out.stdout.strip()


def build(work, key, version, healthy=True, migrations=(), config_version=1, name=None):
    mig = []
    for i, text in enumerate(migrations, start=2):
        p = work / f"v{i:04d}.py"
        p.write_text(text)
        mig.append(p)
    out = work / (name or f"ems-{version}.bundle")
    (work / version).mkdir(exist_ok=True)
    bundle.build(out, key, [make_wheel(work / version, version, healthy)], mig, "ems-controller", version,
                 config_version)
    return out


def test_a_healthy_update_switches_slot_migrates_the_config_and_keeps_history(board):
    paths, key, work = board
    b = build(work, key, "0.2.0", migrations=[MIGRATION_2, MIGRATION_3], config_version=3)
    result = update.apply(paths, b, deadline_s=60, restart=service(paths), poll_s=0.01)
    assert "confirmed" in result and "v0002.py, v0003.py" in result
    assert slots.active_slot(paths) == "b" and running_version(paths) == "0.2.0"
    site = paths.config.read_text()
    assert 'site_name = "Plant 7"' in site and "config_version = 3" in site
    assert (paths.data / "history.sqlite").read_bytes() == b"history"
    assert slots.read_state(paths)["trial"] is None
    # and the next update goes to the other slot again
    b3 = build(work, key, "0.3.0", migrations=[MIGRATION_2, MIGRATION_3], config_version=3)
    assert "confirmed" in update.apply(paths, b3, deadline_s=60, restart=service(paths), poll_s=0.01)
    assert slots.active_slot(paths) == "a" and running_version(paths) == "0.3.0"


GUARD = b"import sys\n# the boot guard of %s\ndef main():\n    return 0\n"


def guard_wheel(folder: Path, version: str, guard: bytes) -> Path:
    (folder / version).mkdir(exist_ok=True)
    return write_wheel(folder / version, "emsfake_app", version, {
        "emsfake_app.py": f"VERSION = {version!r}\nHEALTHY = True\n".encode(), "ems/board/slots.py": guard})


def test_the_boot_guard_is_refreshed_only_from_a_confirmed_version_and_only_when_it_compiles(board):
    paths, key, work = board
    paths.guard.parent.mkdir(parents=True)
    paths.guard.write_bytes(GUARD % b"0.1.0")
    for version, guard in (("0.2.0", GUARD % b"0.2.0"), ("0.3.0", b"def broken(:\n")):
        out = work / f"ems-{version}.bundle"
        bundle.build(out, key, [guard_wheel(work, version, guard)], [], "ems-controller", version, 1)
        assert not slots.refresh_guard(paths) or version == "0.2.0"
        result = update.apply(paths, out, deadline_s=60, restart=service(paths), poll_s=0.01)
        assert running_version(paths) == version
        if version == "0.2.0":               # confirmed: the new guard replaces the old
            assert "boot guard refreshed" in result and paths.guard.read_bytes() == GUARD % b"0.2.0"
            assert os.access(paths.guard, os.X_OK)
        else:                                # a guard that does not compile never replaces a working one
            assert "boot guard refreshed" not in result and paths.guard.read_bytes() == GUARD % b"0.2.0"
    # during a trial the guard stays what it was, even at a start
    slots.begin(paths, {"version": "0.4.0", "config_version": 1}, 60)
    (paths.current / "site-packages/ems/board/slots.py").write_bytes(GUARD % b"0.4.0")
    assert not slots.refresh_guard(paths) and paths.guard.read_bytes() == GUARD % b"0.2.0"
    slots.rollback(paths, "test")
    assert "refreshed" in slots.boot_guard(paths) and paths.guard.read_bytes() == GUARD % b"0.4.0"


def test_a_version_that_never_reports_healthy_is_rolled_back_with_its_config(board):
    paths, key, work = board
    before = paths.config.read_text()
    b = build(work, key, "0.2.0", healthy=False, migrations=[MIGRATION_2], config_version=2)
    t = [1000.0]

    def clock():
        t[0] += 5.0                       # each poll: 5 s of board time
        return t[0]
    result = update.apply(paths, b, deadline_s=30, restart=service(paths), poll_s=0, clock=clock, sleep=lambda s: None)
    assert "rolled back" in result
    assert slots.active_slot(paths) == "a" and running_version(paths) == "0.1.0"
    assert paths.config.read_text() == before                 # the old version gets its own config back
    assert slots.read_state(paths)["history"][-1]["event"] == "rolled_back"


def test_the_boot_guard_rolls_back_a_version_that_keeps_crashing(board):
    paths, key, work = board
    b = build(work, key, "0.2.0", healthy=False)
    update.apply(paths, b, deadline_s=3600, restart=None, wait=False)
    assert slots.active_slot(paths) == "b"
    for _ in range(slots.MAX_TRIAL_BOOTS):                    # systemd restarts it; it never confirms
        assert "trial" in slots.boot_guard(paths)
    assert "rolled back" in slots.boot_guard(paths)
    assert slots.active_slot(paths) == "a"


def test_the_boot_guard_rolls_back_after_the_deadline_even_without_the_updater(board):
    paths, key, work = board
    update.apply(paths, build(work, key, "0.2.0"), deadline_s=60, wait=False)
    assert "missed its health deadline" in slots.boot_guard(paths, now=slots.read_state(paths)["trial"]["deadline"] + 1)
    assert slots.active_slot(paths) == "a"


@pytest.mark.parametrize("damage", ["signature", "other_key", "corrupt_wheel", "truncated", "extra_file",
                                    "path_traversal", "not_a_tar"])
def test_a_bad_bundle_is_refused_and_changes_nothing(board, damage):
    paths, key, work = board
    good = build(work, key, "0.2.0")
    bad = work / "bad.bundle"
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    whl = next(n for n in members if n.endswith(".whl"))
    if damage == "signature":
        members["manifest.json"] = members["manifest.json"].replace(b'"0.2.0"', b'"0.2.1"')
    elif damage == "other_key":
        other = work / "other.pem"
        bundle.generate_key(other)
        build(work, other, "0.2.0", name="other.bundle")
        bad = work / "other.bundle"
    elif damage == "corrupt_wheel":
        members[whl] = members[whl][:-10] + b"0123456789"
    elif damage == "extra_file":
        members["wheels/evil-1.0-py3-none-any.whl"] = b"x"
    elif damage == "path_traversal":
        members["../../etc/ems/site.toml"] = b"owned"
    if damage not in ("other_key",):
        with tarfile.open(bad, "w") as tar:
            for n, d in members.items():
                info = tarfile.TarInfo(n)
                info.size = len(d)
                tar.addfile(info, io.BytesIO(d))
    if damage == "truncated":                       # cut in the middle of the wheel (a download cut short)
        with tarfile.open(good) as tar:
            m = tar.getmember(whl)
        bad.write_bytes(good.read_bytes()[:m.offset_data + m.size // 2])
    if damage == "not_a_tar":
        bad.write_bytes(b"not a bundle at all")
    config, state = paths.config.read_text(), slots.read_state(paths)
    with pytest.raises(BundleError):
        update.apply(paths, bad, deadline_s=60, restart=service(paths))
    assert slots.active_slot(paths) == "a" and running_version(paths) == "0.1.0"
    assert paths.config.read_text() == config and slots.read_state(paths) == state
    assert not (paths.root / "etc/ems/site.toml.owned").exists()
    assert list(paths.update.glob("staging-*")) == []


def test_an_install_that_fails_midway_leaves_the_running_version(board):
    paths, key, work = board

    def failing(wheels, target):
        target.mkdir(parents=True)
        (target / "half.py").write_text("")
        raise UpdateError("disk full")
    with pytest.raises(UpdateError, match="nothing changed"):
        update.apply(paths, build(work, key, "0.2.0"), installer=failing)
    assert slots.active_slot(paths) == "a" and slots.read_state(paths)["trial"] is None
    assert "confirmed" in update.apply(paths, build(work, key, "0.2.1"), restart=service(paths), poll_s=0.01)


def test_an_install_killed_by_a_power_cut_is_undone_at_the_next_boot(board):
    paths, key, work = board
    b = build(work, key, "0.2.0", migrations=[MIGRATION_2], config_version=2)
    before = paths.config.read_text()
    # the updater in its own process, killed during the install (after the config was migrated)
    script = (f"import sys, os, signal; sys.path.insert(0, {str(Path.cwd())!r})\n"
              "from pathlib import Path\nfrom ems.board import slots, update\n"
              f"paths = slots.BoardPaths(Path({str(paths.root)!r}))\n"
              "orig = slots.migrate_config\n"
              "def then_die(*a, **k):\n    orig(*a, **k)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              "slots.migrate_config = then_die\n"
              f"update.apply(paths, Path({str(b)!r}))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    assert slots.active_slot(paths) == "a" and slots.read_state(paths)["trial"]["phase"] == "installing"
    assert "interrupted" in slots.boot_guard(paths)
    assert slots.active_slot(paths) == "a" and running_version(paths) == "0.1.0"
    assert paths.config.read_text() == before and slots.read_state(paths)["trial"] is None


def test_config_migrations_run_forward_in_order_and_refuse_what_they_cannot_do(tmp_path):
    (tmp_path / "v0002.py").write_text(MIGRATION_2)
    (tmp_path / "v0003.py").write_text(MIGRATION_3)
    steps = sorted(tmp_path.glob("v*.py"))
    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nname = "x"\nconfig_version = 2\n')
    assert migrate_file(cfg, steps, 3) == ["v0003.py"]         # only what is missing
    assert "fast_period_ms = 10.0" in cfg.read_text() and 'name = "x"' in cfg.read_text()
    cfg.write_text('[site]\nconfig_version = 4\n')
    with pytest.raises(MigrationError, match="newer"):
        migrate_file(cfg, steps, 3)
    cfg.write_text('[site]\nname = "x"\n')
    with pytest.raises(MigrationError, match="no migration from config version 1"):
        migrate_file(cfg, steps[1:], 3)
    assert cfg.read_text() == '[site]\nname = "x"\n'           # nothing written on error
    (tmp_path / "v0009.py").write_text("MIGRATION_FROM = 3\nMIGRATION_TO = 5\ndef migrate(d): return d\n")
    with pytest.raises(MigrationError, match="one version forward"):
        migrate_file(cfg, steps + [tmp_path / "v0009.py"], 3)


def test_the_program_reads_the_site_file_version_it_knows_and_refuses_a_newer_one(tmp_path):
    from ems.config import CONFIG_VERSION, ConfigError, site_from_dict
    assert site_from_dict({"site": {"config_version": CONFIG_VERSION}}).site.config_version == CONFIG_VERSION
    with pytest.raises(ConfigError, match="config_version"):
        site_from_dict({"site": {"config_version": CONFIG_VERSION + 1}})


def test_reserved_upgrades_wait_for_their_time_and_bad_bundles_are_refused_when_reserved(board):
    paths, key, work = board
    now = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    task = update.schedule(paths, build(work, key, "0.2.0"), now + timedelta(hours=14), 120, creator="api:inst")
    assert [(t["id"], t["deadline_s"], t["creator"]) for t in update.scheduled(paths)] == [(task, 120, "api:inst")]
    assert update.run_due(paths, now=now, restart=service(paths), poll_s=0.01) == []
    assert slots.active_slot(paths) == "a"
    out = update.run_due(paths, now=now + timedelta(hours=14, minutes=1), restart=service(paths), poll_s=0.01)
    assert "confirmed" in out[0] and slots.active_slot(paths) == "b" and update.scheduled(paths) == []
    bad = work / "bad.bundle"
    bad.write_bytes(b"junk")
    with pytest.raises(BundleError):
        update.schedule(paths, bad, now)
    t2 = update.schedule(paths, build(work, key, "0.3.0"), now)
    assert update.cancel(paths, t2) and update.scheduled(paths) == []
    assert not update.cancel(paths, "../../etc")


def test_the_cli_builds_verifies_and_refuses(tmp_path, board, capsys):
    from ems.cli import main
    paths, key, work = board
    whl = make_wheel(work, "0.2.0")
    out = tmp_path / "b.bundle"
    assert main(["bundle", "build", "--key", str(key), "--out", str(out), "--wheel", str(whl),
                 "--version", "0.2.0", "--migrations", str(tmp_path / "none")]) == 0
    assert main(["bundle", "verify", str(out), "--keys", str(paths.keys)]) == 0
    assert "good signature" in capsys.readouterr().out
    with tarfile.open(out) as tar:
        m = next(m for m in tar.getmembers() if m.name.endswith(".whl"))
    out.write_bytes(out.read_bytes()[:m.offset_data + 10])
    assert main(["bundle", "verify", str(out), "--keys", str(paths.keys)]) == 1
    assert "ems bundle:" in capsys.readouterr().err
    assert main(["update", "apply", str(out), "--root", str(paths.root), "--deadline", "5"]) == 1
    assert "--deadline" in capsys.readouterr().err
    assert main(["update", "status", "--root", str(paths.root)]) == 0
    assert json.loads(capsys.readouterr().out)["active_version"] == "0.1.0"
    assert main(["update", "apply", str(out), "--root", str(paths.root), "--at", "tomorrow"]) == 1


def test_upgrade_tasks_over_the_api_are_verified_at_once_and_applied_by_the_timer(board):
    """The cloud manual's upgrade task (002_… 7.2): a bundle uploaded with or without a reservation time,
    listed, deleted; ems-update.timer (run_due, as root) applies it when due."""
    from ems.board.maintenance import RemoteMaintenance
    from ems.control.clock import VirtualClock
    from tests.records.test_api import maintenance_api
    paths, key, work = board
    m = RemoteMaintenance(VirtualClock(datetime(2026, 11, 21, tzinfo=timezone.utc)), lambda reason: None, paths)
    server, c = maintenance_api(paths.data / "records.sqlite", paths.config, work / "auth.sqlite", m,
                                ops="operator", owner="end_user")
    admin, ops, owner = c["admin"], c["ops"], c["owner"]
    try:
        good = build(work, key, "0.2.0").read_bytes()
        assert owner.call("POST", "/maintenance/updates", good)[0] == 403
        status, body = ops.call("POST", "/maintenance/updates", b"junk")
        assert status == 400 and "nothing reserved" in body["error"]
        assert ops.call("POST", "/maintenance/updates?at=2026-11-22T02:00:00", good)[0] == 400       # no zone
        assert ops.call("POST", "/maintenance/updates?deadline_s=5", good)[0] == 400
        assert update.scheduled(paths) == [] and not list(paths.update.glob("upload-*"))
        at = datetime.now(timezone.utc) + timedelta(hours=1)
        status, task = ops.call("POST", f"/maintenance/updates?at={at.isoformat().replace('+', '%2B')}", good)
        assert status == 201 and task["version"] == "0.2.0" and task["creator"] == "api:ops"
        listed = owner.call("GET", "/maintenance/updates")[1]
        assert [t["id"] for t in listed["reserved"]] == [task["id"]] and listed["board"]["active_slot"] == "a"
        assert update.run_due(paths, now=at - timedelta(minutes=1), restart=service(paths), poll_s=0.01) == []
        out = update.run_due(paths, now=at + timedelta(minutes=1), restart=service(paths), poll_s=0.01)
        assert "confirmed" in out[0] and running_version(paths) == "0.2.0"
        status, again = ops.call("POST", "/maintenance/updates", build(work, key, "0.3.0").read_bytes())
        assert status == 201 and ops.call("DELETE", f"/maintenance/updates/{again['id']}")[0] == 200
        assert ops.call("DELETE", "/maintenance/updates/nope")[0] == 404 and update.scheduled(paths) == []
        actions = {e["action"] for e in admin.call("GET", "/log?kind=operation")[1] if e["user"] == "ops"}
        assert {"update_reserved", "update_cancelled"} <= actions
    finally:
        server.stop()


def test_a_bundle_cannot_fill_the_disk_before_its_hash_is_checked(board):
    """Issue 17 item 11: a genuine, signed manifest, but the wheel in the tar is 64 MiB of zeros in a small
    gzip; the extraction stops before writing a byte of it (the manifest's size is the limit)."""
    import gzip
    paths, key, work = board
    good = build(work, key, "0.2.0")
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    whl = next(n for n in members if n.endswith(".whl"))
    bomb = work / "bomb.bundle"
    with gzip.open(bomb, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for n, d in members.items():
            info = tarfile.TarInfo(n)
            if n == whl:
                info.size = 64 << 20
                tar.addfile(info, io.BytesIO(b"\0" * info.size))
            else:
                info.size = len(d)
                tar.addfile(info, io.BytesIO(d))
    assert bomb.stat().st_size < 1 << 20
    staging = work / "staging"
    with pytest.raises(BundleError, match="the manifest says"):
        bundle.verify(bomb, bundle.load_trusted(paths.keys), staging)
    written = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()) if staging.exists() else 0
    assert written == 0
    with pytest.raises(BundleError):
        update.apply(paths, bomb, deadline_s=60, restart=service(paths))
    assert running_version(paths) == "0.1.0"


def test_a_copy_stops_at_the_first_byte_past_the_manifest_size():
    src, dst = io.BytesIO(b"x" * 1000), io.BytesIO()
    with pytest.raises(BundleError, match="more data"):
        bundle._copy_at_most(src, dst, 999, "w.whl")
    assert len(dst.getvalue()) <= 999


def test_an_older_signed_version_is_refused_unless_a_downgrade_is_asked_for(board):
    """Issue 17 item 12: downgrade protection."""
    paths, key, work = board
    b2 = build(work, key, "0.2.0")
    assert "confirmed" in update.apply(paths, b2, deadline_s=60, restart=service(paths), poll_s=0.01)
    old = build(work, key, "0.1.5", name="old.bundle")
    with pytest.raises(UpdateError, match="older than the running 0.2.0"):
        update.apply(paths, old, deadline_s=60, restart=service(paths))
    with pytest.raises(UpdateError, match="older"):
        update.schedule(paths, old, datetime.now(timezone.utc) + timedelta(hours=1))
    assert running_version(paths) == "0.2.0" and update.scheduled(paths) == []
    result = update.apply(paths, old, deadline_s=60, restart=service(paths), poll_s=0.01, allow_downgrade=True,
                          who="admin")
    assert "confirmed" in result and running_version(paths) == "0.1.5"
