"""Refresh the page's vendored libraries (ems/web/static/vendor) from the npm registry.

    python tools/vendor_web.py            # the pinned versions below
    python tools/vendor_web.py --check    # the files on disk are exactly what the pinned tarballs hold

Downloads each package's tarball from registry.npmjs.org, checks it against the registry's sha512
integrity, and copies the release files the page uses, with their licence. No Node.js is needed, on the
board or here. The one change to a file: preact/hooks imports "preact" by its bare name, which a browser
cannot resolve without an import map (an inline script, which the page's CSP forbids), so it is pointed
at ./preact.mjs. VENDOR.md says what each library is for and why it was chosen.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "ems" / "web" / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org"
# package, version, {file in the tarball: file in vendor/}
PINS = [
    ("preact", "11.2.0", {"package/dist/preact.mjs": "preact.mjs", "package/hooks/dist/hooks.mjs": "hooks.mjs",
                          "package/LICENSE": "LICENSE.preact"}),
    ("htm", "3.1.1", {"package/dist/htm.mjs": "htm.mjs", "package/LICENSE": "LICENSE.htm"}),
    ("uplot", "1.6.32", {"package/dist/uPlot.esm.js": "uplot.mjs", "package/dist/uPlot.min.css": "uplot.css",
                         "package/LICENSE": "LICENSE.uplot"}),
]
REWRITES = {"hooks.mjs": [('from"preact"', 'from"./preact.mjs"')]}


def fetch(name: str, version: str) -> bytes:
    with urllib.request.urlopen(f"{REGISTRY}/{name}/{version}", timeout=30) as r:
        meta = json.load(r)
    dist = meta["dist"]
    with urllib.request.urlopen(dist["tarball"], timeout=60) as r:
        data = r.read()
    algo, _, want = dist["integrity"].partition("-")
    if algo != "sha512" or base64.b64encode(hashlib.sha512(data).digest()).decode() != want:
        sys.exit(f"{name}@{version}: the tarball does not match the registry's integrity {dist['integrity']}")
    return data


def files() -> dict[str, bytes]:
    out = {}
    for name, version, wanted in PINS:
        with tarfile.open(fileobj=io.BytesIO(fetch(name, version)), mode="r:gz") as tar:
            for member, target in wanted.items():
                data = tar.extractfile(member).read()
                for old, new in REWRITES.get(target, []):
                    if old.encode() not in data:
                        sys.exit(f"{name}@{version}: {member} no longer contains {old!r}: check the rewrite")
                    data = data.replace(old.encode(), new.encode())
                out[target] = data
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    new = files()
    if args.check:
        bad = [n for n, d in new.items() if not (VENDOR / n).is_file() or (VENDOR / n).read_bytes() != d]
        print("vendor files match the pinned releases" if not bad else f"differ from the pinned releases: {bad}")
        return 1 if bad else 0
    VENDOR.mkdir(parents=True, exist_ok=True)
    for n, d in new.items():
        (VENDOR / n).write_bytes(d)
        print(f"{n}: {len(d)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
