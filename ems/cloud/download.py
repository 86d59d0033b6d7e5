"""Downloads for the cloud's upgrade tasks: HTTP(S) only, bounded in size, resumable (a `.part` file beside
the target, continued with a Range request after a dropped connection or a restart of the download),
optionally checked against a SHA-256 the task names. The bundle's own signature is verified afterwards by
the update path (ems.board.bundle), as for an upload through the API."""
from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

CHUNK = 1 << 16


class DownloadError(RuntimeError):
    pass


def download(url: str, dest: Path, max_bytes: int, sha256: str | None = None, timeout_s: float = 30.0,
             attempts: int = 5, progress=None) -> Path:
    """`url` into `dest` (its `.part` continued where a former attempt stopped); DownloadError with the
    reason when it cannot be had. progress(bytes_so_far, total_or_None) is called as it goes."""
    scheme = urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url[:80]!r}: only http and https URLs")
    part = dest.with_name(dest.name + ".part")
    last = None
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                if have and r.status != 206:          # the server ignores ranges: from the start
                    have = 0
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                if total is not None and total > max_bytes:
                    raise DownloadError(f"{total} bytes: larger than the limit of {max_bytes}")
                with open(part, "ab" if have else "wb") as fh:
                    got = have
                    while True:
                        chunk = r.read(CHUNK)
                        if not chunk:
                            break
                        got += len(chunk)
                        if got > max_bytes:
                            raise DownloadError(f"more than the limit of {max_bytes} bytes")
                        fh.write(chunk)
                        if progress is not None:
                            progress(got, total)
                    fh.flush()
                    os.fsync(fh.fileno())
                if total is not None and got < total:
                    raise urllib.error.URLError(f"connection ended at {got} of {total} bytes")
            break
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        except urllib.error.HTTPError as exc:
            if exc.code == 416:                       # the range is past the end: what we have is all of it
                break
            last = f"HTTP {exc.code} {exc.reason}"
            if 400 <= exc.code < 500:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url[:80]}: {last}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(min(2.0 ** attempt * 0.2, 5.0))
    else:
        raise DownloadError(f"{url[:80]}: {attempts} attempts failed (last: {last})")
    if sha256:
        h = hashlib.sha256()
        with open(part, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != sha256.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(f"SHA-256 {h.hexdigest()} is not the task's {sha256}")
    part.replace(dest)
    return dest
