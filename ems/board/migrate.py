"""Config migrations: the site file moves forward one schema version at a time.

A migration is a file `vNNNN.py` (NNNN = the version it produces) with MIGRATION_FROM, MIGRATION_TO and
`migrate(doc: dict) -> dict` on the parsed TOML. Migrations ship in the update bundle (signed with it),
so a new version brings the steps from any older file to its own schema. The file's version is
`[site] config_version` (absent: 1, the first schema). The result is written atomically, after a copy of
the old file is kept for the rollback.
"""
from __future__ import annotations

import runpy
import tomllib
from pathlib import Path

import tomli_w

from ems.config.files import write_atomic

FIRST_VERSION = 1


class MigrationError(Exception):
    pass


def file_version(doc: dict) -> int:
    v = doc.get("site", {}).get("config_version", FIRST_VERSION)
    if not isinstance(v, int) or v < FIRST_VERSION:
        raise MigrationError(f"[site] config_version must be an integer >= {FIRST_VERSION}, got {v!r}")
    return v


def load_steps(paths: list[Path]) -> dict[int, tuple[Path, callable]]:
    """{from_version: (file, migrate)}; every step must go exactly one version forward."""
    steps = {}
    for p in paths:
        try:
            ns = runpy.run_path(str(p))
            a, b, fn = int(ns["MIGRATION_FROM"]), int(ns["MIGRATION_TO"]), ns["migrate"]
        except Exception as exc:            # a broken migration file: refuse the whole update
            raise MigrationError(f"{p.name}: not a migration ({exc})") from None
        if b != a + 1 or not callable(fn):
            raise MigrationError(f"{p.name}: a migration goes one version forward (got {a} → {b})")
        if a in steps:
            raise MigrationError(f"{p.name}: a second migration from version {a}")
        steps[a] = (p, fn)
    return steps


def migrate_doc(doc: dict, steps: dict, target: int) -> tuple[dict, list[str]]:
    v = file_version(doc)
    if v > target:
        raise MigrationError(f"the site file is version {v}, newer than this program's {target}: "
                             "refusing to run it backwards")
    done = []
    while v < target:
        if v not in steps:
            raise MigrationError(f"no migration from config version {v} (to {target})")
        path, fn = steps[v]
        try:
            doc = fn(doc)
        except Exception as exc:
            raise MigrationError(f"{path.name} failed: {exc!r}") from None
        if not isinstance(doc, dict):
            raise MigrationError(f"{path.name} returned no table")
        v += 1
        doc.setdefault("site", {})["config_version"] = v
        done.append(path.name)
    return doc, done


def migrate_file(config: Path, migrations: list[Path], target: int) -> list[str]:
    """Migrate the site file in place (atomically); returns the migrations applied. Nothing is written on
    error."""
    try:
        doc = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MigrationError(f"{config}: cannot read the site file ({exc})") from None
    doc, done = migrate_doc(doc, load_steps(migrations), target)
    if done:
        write_atomic(config, tomli_w.dumps(doc).encode())
    return done
