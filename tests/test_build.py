import importlib
import importlib.machinery
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import ems
import ems._core

ROOT = Path(__file__).resolve().parents[1]


def test_every_core_module_is_a_compiled_extension():
    names = [m.name for m in pkgutil.iter_modules(ems._core.__path__)]
    pyx = sorted(p.stem for p in (ROOT / "ems" / "_core").glob("*.pyx"))
    assert sorted(names) == pyx, "every module in ems._core comes from a .pyx"
    for name in names:
        mod = importlib.import_module(f"ems._core.{name}")
        assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), mod.__file__
    assert sorted(ems._core._KERNELS) == pyx, "the import check covers every kernel"


def test_an_uncompiled_checkout_fails_with_a_message_saying_how_to_build(tmp_path):
    # copy the package without its compiled extensions and import it in a fresh interpreter
    shutil.copytree(ROOT / "ems", tmp_path / "ems",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"))
    proc = subprocess.run([sys.executable, "-c", "import ems._core"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "not compiled" in proc.stderr and "make install" in proc.stderr


def test_ems_version_from_the_console_script():
    script = Path(sys.executable).parent / "ems"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"ems {ems.__version__}"


def test_ems_core_self_check_runs_a_tick():
    proc = subprocess.run([sys.executable, "-m", "ems", "core", "--clusters", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "native core compiled" in proc.stdout and "2 cluster(s)" in proc.stdout


def test_ems_core_refuses_a_bad_cluster_count():
    proc = subprocess.run([sys.executable, "-m", "ems", "core", "--clusters", "40"], capture_output=True, text=True)
    assert proc.returncode == 2 and "1..32" in proc.stderr


def test_every_folder_of_drivers_and_ems_is_a_package_the_wheel_ships():
    import tomllib
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    folders = {"ems.drivers." + ".".join(d.relative_to(ROOT / "drivers").parts)
               for d in (ROOT / "drivers").rglob("*") if d.is_dir() and "__pycache__" not in d.parts}
    folders |= {".".join(d.relative_to(ROOT).parts) for d in (ROOT / "ems").rglob("*")
                if d.is_dir() and "__pycache__" not in d.parts and any(d.glob("*.py"))}
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    data = tool["package-data"]
    for pkg in folders:
        if pkg.startswith("ems.drivers.") and any((ROOT / "drivers" / pkg[12:].replace(".", "/")).glob("*.*")):
            assert pkg in data, f"{pkg}: its profiles are not in [tool.setuptools.package-data]"


def test_every_file_of_the_page_is_in_git_and_in_the_package_data():
    """The page is served from the package: a file the package data's globs miss, or that .gitignore hides
    (as `*.html` once hid index.html), is a page that works in this checkout and 404s on the board."""
    import fnmatch
    import subprocess
    import tomllib
    static = ROOT / "ems" / "web" / "static"
    files = {p.relative_to(ROOT / "ems" / "web").as_posix() for p in static.rglob("*") if p.is_file()}
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ems.web"]
    missed = {f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)}
    assert not missed, f"add to [tool.setuptools.package-data] ems.web: {sorted(missed)}"
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *sorted(files)], cwd=ROOT / "ems" / "web", capture_output=True,
                             text=True).stdout.split()
    assert not ignored, f".gitignore hides page files: {ignored}"
    assert "static/index.html" in files
