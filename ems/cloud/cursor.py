"""Where the uplink stands in each stream of the history database: a small JSON file replaced atomically
(written beside, fsynced, renamed, the folder fsynced), so a power cut leaves the old position or the new,
never a torn one. Moved only past what the broker acknowledged; a restart resends from there."""
from __future__ import annotations

import json
import os
from pathlib import Path


class Cursors:
    def __init__(self, path: Path, streams: tuple[str, ...]):
        self.path = Path(path)
        self.values = {s: None for s in streams}
        try:
            stored = json.loads(self.path.read_text())
            for s in streams:
                if isinstance(stored.get(s), list) and len(stored[s]) == 2:
                    self.values[s] = tuple(stored[s])
        except (OSError, ValueError):
            pass                            # none yet (or unreadable: start from the oldest the history holds)

    def get(self, stream: str):
        return self.values[stream]

    def set(self, stream: str, position) -> None:
        self.values[stream] = tuple(position)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as fh:
            json.dump({k: list(v) if v is not None else None for k, v in self.values.items()}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
