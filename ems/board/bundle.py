"""Signed update bundles: build, verify, extract.

A bundle is a tar file:

    manifest.json   what is in it: name, version, config_version, and every other file with its size and
                    SHA-256
    manifest.sig    Ed25519 signature of manifest.json's exact bytes (64 bytes)
    wheels/*.whl    the program and every dependency, built for the board (installed offline)
    migrations/*.py config migrations (MIGRATION_FROM → MIGRATION_TO, a function migrate(doc) -> doc)

Verification trusts nothing before the signature: member names are checked (regular files, no absolute
paths, no '..', nothing but the manifest, its signature and the files it lists), the signature is checked
against the board's trusted public keys, then every listed file's size and hash. Ed25519 comes from the
`cryptography` package (maintained, aarch64 wheels); we write no cryptography of our own.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:                   # for the annotations only: the module itself imports cryptography lazily
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def _crypto():
    """cryptography's Ed25519 and key serialisation, imported when a key or a signature is handled — not by a
    running controller, which only confirms its own health (it saves ~6 MB of resident memory)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    return InvalidSignature, serialization, Ed25519PrivateKey, Ed25519PublicKey

FORMAT = 1
MAX_MEMBERS = 2000
MAX_TOTAL_BYTES = 1 << 30          # everything a bundle may extract (the program and its wheels: ~60 MB today)
ALLOWED = re.compile(r"^(wheels/[A-Za-z0-9_.+-]+\.whl|migrations/v\d{4}\.py)$")


class BundleError(Exception):
    """A bundle that must not be installed; the message says why."""


# ---------------------------------------------------------------- keys
def generate_key(private_path: Path) -> Path:
    """A new signing key: PEM private key (mode 0600) and PRIVATE.pub (hex of the 32-byte public key)."""
    _, serialization, Ed25519PrivateKey, _ = _crypto()
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = Path(str(private_path) + ".pub")
    pub.write_text(public_hex(key.public_key()) + "\n")
    return pub


def public_hex(key: Ed25519PublicKey) -> str:
    serialization = _crypto()[1]
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_private(path: Path) -> Ed25519PrivateKey:
    _, serialization, Ed25519PrivateKey, _ = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not a usable signing key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 key")
    return key


def load_trusted(keys_dir: Path) -> list[Ed25519PublicKey]:
    """The board's trusted keys: every *.pub file in keys_dir (hex of a 32-byte Ed25519 public key)."""
    Ed25519PublicKey = _crypto()[3]
    keys = []
    for p in sorted(Path(keys_dir).glob("*.pub")):
        try:
            keys.append(Ed25519PublicKey.from_public_bytes(bytes.fromhex(p.read_text().strip())))
        except (ValueError, OSError):
            continue                  # a broken key file trusts nothing; the others still count
    return keys


# ---------------------------------------------------------------- build
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(out: Path, key_path: Path, wheels: list[Path], migrations: list[Path], name: str, version: str,
          config_version: int) -> dict:
    """Write a signed bundle to `out`; returns its manifest."""
    key = load_private(key_path)
    if not wheels:
        raise BundleError("a bundle needs at least one wheel")
    files: dict[str, Path] = {}
    for w in wheels:
        files[f"wheels/{Path(w).name}"] = Path(w)
    for m in migrations:
        files[f"migrations/{Path(m).name}"] = Path(m)
    for arc, src in files.items():
        if not ALLOWED.match(arc):
            raise BundleError(f"{src}: a bundle holds wheels/*.whl and migrations/vNNNN.py only")
        if not src.is_file():
            raise BundleError(f"{src}: no such file")
    manifest = {"format": FORMAT, "name": name, "version": version, "config_version": int(config_version),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "key": public_hex(key.public_key()),
                "files": {arc: {"size": src.stat().st_size, "sha256": _sha256(src)} for arc, src in sorted(files.items())}}
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    sig = key.sign(body)
    tmp = Path(str(out) + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for arc, data in (("manifest.json", body), ("manifest.sig", sig)):
            info = tarfile.TarInfo(arc)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
        for arc, src in sorted(files.items()):
            tar.add(src, arcname=arc, recursive=False)
    os.replace(tmp, out)
    return manifest


# ---------------------------------------------------------------- verify
@dataclass
class Verified:
    manifest: dict
    root: Path                # where the files were extracted

    @property
    def wheels(self) -> list[Path]:
        return sorted(self.root.glob("wheels/*.whl"))

    @property
    def migrations(self) -> list[Path]:
        return sorted(self.root.glob("migrations/v*.py"))


def verify(bundle: Path, trusted: list[Ed25519PublicKey], dest: Path) -> Verified:
    """Check the bundle and extract it into dest (an empty folder). Raises BundleError on anything wrong;
    nothing outside dest is touched."""
    if not trusted:
        raise BundleError("no trusted update key on this board (/etc/ems/update-keys/*.pub)")
    try:
        tar = tarfile.open(bundle, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"{bundle}: not a readable bundle ({exc})") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BundleError(f"{bundle}: corrupt archive ({exc})") from None
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"{bundle}: too many files ({len(members)})")
        names = set()
        for m in members:
            p = PurePosixPath(m.name)
            if not m.isfile() or p.is_absolute() or ".." in p.parts or m.name in names:
                raise BundleError(f"{bundle}: refused member {m.name!r} (only plain files with relative names)")
            if m.name not in ("manifest.json", "manifest.sig") and not ALLOWED.match(m.name):
                raise BundleError(f"{bundle}: unexpected file {m.name!r}")
            names.add(m.name)
        if "manifest.json" not in names or "manifest.sig" not in names:
            raise BundleError(f"{bundle}: no manifest or no signature")
        body = _read(tar, "manifest.json", 1 << 20)
        sig = _read(tar, "manifest.sig", 1024)
        if not any(_valid(k, sig, body) for k in trusted):
            raise BundleError(f"{bundle}: bad signature (not signed by a key this board trusts)")
        try:
            manifest = json.loads(body)
            files = manifest["files"]
            if manifest.get("format") != FORMAT or not isinstance(files, dict):
                raise ValueError("format")
            str(manifest["version"]), int(manifest["config_version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{bundle}: unreadable manifest ({exc})") from None
        listed = set(files)
        try:
            sizes = {arc: int(meta["size"]) for arc, meta in files.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{bundle}: unreadable manifest ({exc})") from None
        if any(n < 0 for n in sizes.values()) or sum(sizes.values()) > MAX_TOTAL_BYTES:
            raise BundleError(f"{bundle}: the manifest lists {sum(sizes.values())} bytes, more than the "
                              f"{MAX_TOTAL_BYTES} a bundle may extract")
        if listed != names - {"manifest.json", "manifest.sig"}:
            raise BundleError(f"{bundle}: the files do not match the manifest "
                              f"(missing {sorted(listed - names)}, extra {sorted(names - listed - {'manifest.json', 'manifest.sig'})})")
        dest.mkdir(parents=True, exist_ok=True)
        for m in members:
            if m.name in ("manifest.json", "manifest.sig"):
                continue
            # copied by hand, not tar.extract(filter="data"): that argument is 3.11.4+, and the board's
            # Debian bookworm has 3.11.2 (found by make test-aarch64). The member checks above already
            # admit only plain files under relative names, and the file is written with our own mode.
            # the signed manifest says how large each file is: a member of another size is refused before
            # a byte is written, and the copy stops at the manifest's size (a 1 GiB wheel of zeros in a
            # 1 MB gzip cannot fill the disk before its hash is checked)
            if m.size != sizes[m.name]:
                raise BundleError(f"{bundle}: {m.name} is {m.size} bytes, the manifest says {sizes[m.name]}")
            try:
                target = dest / m.name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                with open(target, "xb") as fh:
                    _copy_at_most(src, fh, sizes[m.name], m.name)
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BundleError(f"{bundle}: corrupt archive at {m.name} ({exc})") from None
    for arc, meta in files.items():
        p = dest / arc
        if p.stat().st_size != meta["size"] or _sha256(p) != meta["sha256"]:
            raise BundleError(f"{bundle}: {arc} does not match its hash (corrupt or altered)")
    (dest / "manifest.json").write_bytes(body)
    return Verified(manifest, dest)


def _copy_at_most(src, dst, size: int, name: str) -> None:
    left = size
    while True:
        block = src.read(min(1 << 20, left + 1))
        if not block:
            break
        if len(block) > left:
            raise BundleError(f"{name}: more data than the manifest's {size} bytes")
        dst.write(block)
        left -= len(block)
    if left:
        raise BundleError(f"{name}: truncated ({size - left} of {size} bytes)")


def _read(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    m = tar.getmember(name)
    if m.size > limit:
        raise BundleError(f"{name} is too large")
    try:
        fh = tar.extractfile(m)
        data = fh.read() if fh else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"corrupt archive at {name} ({exc})") from None
    if len(data) != m.size:
        raise BundleError(f"corrupt archive: {name} is truncated")
    return data


def _valid(key: Ed25519PublicKey, sig: bytes, body: bytes) -> bool:
    InvalidSignature = _crypto()[0]
    try:
        key.verify(sig, body)
        return True
    except InvalidSignature:
        return False
