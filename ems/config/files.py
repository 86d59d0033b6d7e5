"""Reading the files a site file names (the site file itself, OCV tables, device profiles): each must be a
regular file under a size limit, so `ocv_table = "/dev/zero"` or a FIFO is an error naming the key, not a
read until memory runs out; and what it holds is decoded with the error a person can act on. Writing the
controller's own files (the site file after a change, the SOC state) atomically and durably.

(`ems/board/slots.py` keeps its own copy of the atomic write: it is also the boot guard, which may use the
standard library only.)
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_TABLE_BYTES = 1 << 20          # a CSV table or a profile: 1 MiB is hundreds of times what one needs
MAX_SITE_BYTES = 1 << 20


class FileRefused(ValueError):
    """The file cannot be used; the message names it and says why."""


def read_bounded(path: str | Path, max_bytes: int = MAX_TABLE_BYTES, what: str = "file") -> bytes:
    """The bytes of a regular file of at most max_bytes; FileRefused otherwise (missing, a directory, a
    device, a FIFO, unreadable, too large). The checks are on the opened descriptor: nothing is read from
    a file that changed into something else between a check and the read."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileRefused(f"{p}: no such {what}") from None
    except IsADirectoryError:
        raise FileRefused(f"{p}: is a directory, not a regular file") from None
    except OSError as exc:
        raise FileRefused(f"{p}: cannot open the {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{p}: not a regular file (a device, FIFO or directory cannot be a {what})")
        if st.st_size > max_bytes:
            raise FileRefused(f"{p}: {st.st_size} bytes, larger than the {max_bytes} bytes a {what} may have")
        chunks, total = [], 0
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                raise FileRefused(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:          # grew while being read
                raise FileRefused(f"{p}: larger than the {max_bytes} bytes a {what} may have")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text_bounded(path: str | Path, max_bytes: int = MAX_TABLE_BYTES, what: str = "file") -> str:
    """read_bounded, decoded as UTF-8 (a UTF-8 byte-order mark is allowed; UTF-16 and binary are refused
    with the reason)."""
    data = read_bounded(path, max_bytes, what)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FileRefused(f"{path}: UTF-16 text; save the {what} as UTF-8")
    if b"\0" in data:
        raise FileRefused(f"{path}: binary data (a NUL byte), not a text {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"{path}: not UTF-8 text (byte {exc.start}): save the {what} as UTF-8") from None


def write_atomic(path: str | Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename, fsync the folder: after a power loss the file is the
    old one or the new one, never a mix or empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
