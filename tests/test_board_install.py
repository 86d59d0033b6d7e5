"""firmware/install.sh into a folder: the layout an update and the service rely on."""
import os
import subprocess
import sys
from pathlib import Path

import ems
from tests.wheels import write_wheel

REPO = Path(__file__).resolve().parents[1]


def source_wheel(folder: Path) -> Path:
    """A wheel of the package's Python files (no native core: the layout does not need it)."""
    files = {}
    for p in sorted((REPO / "ems").rglob("*")):
        if p.is_file() and p.suffix in (".py", ".toml", ".csv") and "__pycache__" not in p.parts:
            files[str(p.relative_to(REPO))] = p.read_bytes()
    return write_wheel(folder, "ems-controller", ems.__version__, files)


def test_install_lays_out_slots_config_data_and_units_and_is_idempotent(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    source_wheel(wheels)
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    key = tmp_path / "oem.pub"
    key.write_text("00" * 32 + "\n")
    cmd = ["bash", str(REPO / "firmware/install.sh"), "--root", str(root), "--wheels", str(wheels), "--key", str(key),
           "--no-user"]
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert os.readlink(root / "opt/ems/current") == "slots/a"
    assert (root / "opt/ems/slots/a/VERSION").read_text().strip() == ems.__version__
    assert (root / "opt/ems/slots/a/site-packages/ems/board/slots.py").exists()
    assert (root / "etc/ems/update-keys/oem.pub").exists() and (root / "var/lib/ems/update").is_dir()
    for unit in ("ems.service", "ems-update.service", "ems-update.timer"):
        assert (root / "etc/systemd/system" / unit).exists()
    site = root / "etc/ems/site.toml"
    from ems.config import load_site
    load_site(site)                                             # the factory file is a valid site file
    # the boot guard runs from outside the slots, with the standard library only
    g = subprocess.run([sys.executable, "-I", str(root / "opt/ems/bin/ems-slot-guard"), str(root)],
                       capture_output=True, text=True)
    assert g.returncode == 0 and "no update in progress" in g.stdout
    # a second run keeps the operator's site file and the installed slot
    site.write_text(site.read_text().replace('name = "demo"', 'name = "Plant 7"'))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert 'name = "Plant 7"' in site.read_text() and os.readlink(root / "opt/ems/current") == "slots/a"
    bad = subprocess.run(["bash", str(REPO / "firmware/install.sh"), "--root", str(root)], capture_output=True, text=True)
    assert bad.returncode == 2 and "--wheels" in bad.stderr
