"""Real-time settings for the fast-loop thread: memory locking, SCHED_FIFO, CPU affinity, and sleeping to
absolute deadlines.

Python's standard library has sched_setscheduler and sched_setaffinity (os.*), but not mlockall(2) nor
clock_nanosleep(2) with TIMER_ABSTIME; those two go through cffi in ABI mode (libc opened at run time: no
compiler on the board, the same code on x86_64 and aarch64). Absolute deadlines keep the period exact: a
relative sleep adds the loop's own duration and every wake-up's lateness to the next period, an absolute
one does not, and an interrupted sleep (EINTR) is simply resumed to the same deadline.

Every setting is optional and reported: a board without CAP_SYS_NICE / CAP_IPC_LOCK (or a desk) runs
without it, with a warning, never a crash. Linux only; 64-bit (the timespec layout below is LP64's).
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field

MCL_CURRENT, MCL_FUTURE = 1, 2          # asm-generic values: x86_64 and aarch64
CLOCK_MONOTONIC = 1                     # the clock of time.monotonic() on Linux
TIMER_ABSTIME = 1

_libc = _ffi = None


def _c():
    """libc through cffi, opened once; None where it cannot be (not Linux, not LP64)."""
    global _libc, _ffi
    if _ffi is None:
        try:
            from cffi import FFI
            ffi = FFI()
            ffi.cdef("""
                struct timespec { long tv_sec; long tv_nsec; };
                int mlockall(int flags);
                int munlockall(void);
                int clock_nanosleep(int clockid, int flags, const struct timespec *request,
                                    struct timespec *remain);
            """)
            if ffi.sizeof("long") != 8:
                raise OSError("not an LP64 platform")
            _libc, _ffi = ffi.dlopen(None), ffi
        except (ImportError, OSError, AttributeError):
            _ffi = False
    return (_libc, _ffi) if _ffi else (None, None)


def lock_memory() -> None:
    """mlockall(MCL_CURRENT | MCL_FUTURE): no page of the controller is ever swapped or faulted out."""
    libc, ffi = _c()
    if libc is None:
        raise OSError("mlockall is not available here")
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        e = ffi.errno
        raise OSError(e, f"mlockall: {os.strerror(e)} (needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK)")


def unlock_memory() -> None:
    libc, _ = _c()
    if libc is not None:
        libc.munlockall()


class DeadlineSleeper:
    """Sleep until an absolute time.monotonic() deadline: clock_nanosleep(TIMER_ABSTIME) through cffi, or
    time.sleep(deadline − now) where that is not available."""

    def __init__(self, absolute: bool = True):
        libc, ffi = _c() if absolute else (None, None)
        self._libc, self._ffi = libc, ffi
        self.absolute = libc is not None
        if self.absolute:
            self._ts = ffi.new("struct timespec *")

    def sleep_until(self, deadline_s: float) -> None:
        if not self.absolute:
            delay = deadline_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            return
        sec = int(deadline_s)
        self._ts.tv_sec = sec
        self._ts.tv_nsec = min(int((deadline_s - sec) * 1e9), 999_999_999)
        while True:
            rc = self._libc.clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, self._ts, self._ffi.NULL)
            if rc != errno.EINTR:      # 0, or an error (returned, not in errno) that retrying cannot fix
                return


@dataclass
class RtReport:
    applied: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _undo: list = field(default_factory=list)

    def restore(self) -> None:
        """Undo what was applied (the thread goes back to how it ran before): tests and benchmarks that
        run the loop in their own process."""
        for fn in reversed(self._undo):
            try:
                fn()
            except OSError:
                pass
        self._undo.clear()

    def text(self) -> str:
        parts = []
        if self.applied:
            parts.append("real-time: " + ", ".join(self.applied))
        if self.refused:
            parts.append("not applied: " + "; ".join(self.refused))
        return " — ".join(parts) if parts else "real-time: off"


def apply_realtime(lock: bool, priority: int, cpu: int | None) -> RtReport:
    """Apply to the calling thread (the fast loop): memory locking (whole process), SCHED_FIFO at priority
    (1..99; 0 leaves the normal scheduler), affinity to one CPU (None: any). Each refusal is reported."""
    rep = RtReport()
    if lock:
        try:
            lock_memory()
            rep.applied.append("memory locked")
            rep._undo.append(unlock_memory)
        except OSError as exc:
            rep.refused.append(str(exc))
    if priority:
        try:
            policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            rep._undo.append(lambda: os.sched_setscheduler(0, policy, param))
            rep.applied.append(f"SCHED_FIFO priority {priority}")
        except (OSError, AttributeError) as exc:
            rep.refused.append(f"SCHED_FIFO {priority}: {exc} (needs CAP_SYS_NICE or an RLIMIT_RTPRIO)")
    if cpu is not None:
        try:
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {cpu})
            rep._undo.append(lambda: os.sched_setaffinity(0, before))
            rep.applied.append(f"CPU {cpu}")
        except (OSError, AttributeError) as exc:
            rep.refused.append(f"affinity to CPU {cpu}: {exc}")
    return rep
