"""A bounded fuzzer for the dispatch server of a running `ems run` (raw Modbus TCP frames on loopback).

The fuzzer connects from a source address outside [dispatch] allowed_clients (127.0.0.2 by default), so
every write it gets answered without an exception is a write accepted against the rules. It mixes
well-formed requests of every function code with random fields, malformed frames, pipelined bursts, slow
byte-by-byte senders and connection floods; twice a second an allowed SCADA (127.0.0.1) must read the
SunSpec marker within 2 s. The report: frames, connections, probe failures, violations, the process's
RSS growth and open file descriptors, and whether it is still alive.

`make test` runs a few seconds of it (tests/test_fuzz.py); `make fuzz` runs it for minutes:
    python -m tests.fuzz_dispatch --seconds 300 --seed 1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import struct
import sys
import time

WRITE_FCS = {5, 6, 15, 16, 22, 23}
SUNSPEC_BASE = 40000


def proc_stats(pid: int | None) -> dict:
    if pid is None:
        return {}
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        return {"rss_kb": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    except (OSError, StopIteration):
        return {"rss_kb": None, "fds": None}


def _pdu(rng: random.Random) -> bytes:
    fc = rng.choice([1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 3, 4, 6, 16, 43, 8, 17, rng.randrange(256)])
    addr = rng.choice([rng.randrange(40), SUNSPEC_BASE + rng.randrange(420), rng.randrange(65536)])
    count = rng.choice([1, 2, rng.randrange(130), 0, 125, 126])
    words = [rng.randrange(65536) for _ in range(rng.choice([1, 2, 4, rng.randrange(1, 124)]))]
    if fc in (1, 2, 3, 4):
        return struct.pack(">BHH", fc, addr, count)
    if fc in (5, 6):
        return struct.pack(">BHH", fc, addr, rng.choice([0xFF00, 0, words[0]]))
    if fc == 15:
        n = rng.randrange(1, 40)
        data = bytes(rng.randrange(256) for _ in range((n + 7) // 8))
        return struct.pack(">BHHB", fc, addr, n, len(data)) + data
    if fc == 16:
        return struct.pack(">BHHB", fc, addr, len(words), 2 * len(words)) + b"".join(struct.pack(">H", w) for w in words)
    if fc == 22:
        return struct.pack(">BHHH", fc, addr, words[0], rng.randrange(65536))
    if fc == 23:
        return struct.pack(">BHHHHB", fc, rng.choice([addr, 0, SUNSPEC_BASE]), count, addr, len(words),
                           2 * len(words)) + b"".join(struct.pack(">H", w) for w in words)
    return bytes([fc]) + bytes(rng.randrange(256) for _ in range(rng.randrange(12)))


def frame(rng: random.Random, tid: int) -> tuple[bytes, int]:
    pdu = _pdu(rng)
    unit = rng.choice([1, 1, 1, 0, 255, rng.randrange(256)])
    length = len(pdu) + 1
    if rng.random() < 0.05:
        length = rng.randrange(65536)               # a lie about the length
    return struct.pack(">HHHB", tid & 0xFFFF, 0, length & 0xFFFF, unit) + pdu, pdu[0]


def _connect(host: str, port: int, source: str, timeout_s: float = 1.0) -> socket.socket | None:
    s = socket.socket()
    s.settimeout(timeout_s)
    try:
        s.bind((source, 0))
        s.connect((host, port))
        return s
    except OSError:
        s.close()
        return None


def _answers(s: socket.socket, wait_s: float, closed: list | None = None, expect: int = 0) -> list[bytes]:
    """The response frames that arrive within wait_s, or as soon as `expect` have (`closed` gets True when
    the server closed)."""
    s.settimeout(wait_s)
    buf, out = b"", []
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        except OSError:
            chunk = b""
        if not chunk:
            if closed is not None:
                closed.append(True)
            break
        buf += chunk
        while len(buf) >= 8 and len(buf) >= 6 + struct.unpack(">H", buf[4:6])[0]:
            n = 6 + struct.unpack(">H", buf[4:6])[0]
            out.append(buf[:n])
            buf = buf[n:]
        if expect and len(out) >= expect:
            break
        if not buf:
            s.settimeout(0.02)                      # more may follow a burst; do not wait long
    return out


def probe(host: str, port: int, source: str = "127.0.0.1") -> bool:
    """An allowed SCADA reads the SunSpec marker within 2 s."""
    s = _connect(host, port, source, 2.0)
    if s is None:
        return False
    try:
        s.sendall(struct.pack(">HHHBBHH", 7, 0, 6, 1, 3, SUNSPEC_BASE, 2))
        got = _answers(s, 2.0)
        return bool(got) and got[0][7] == 3 and got[0][9:13] == b"SunS"
    finally:
        s.close()


def fuzz(host: str, port: int, seconds: float, seed: int = 1, pid: int | None = None,
         source: str = "127.0.0.2", flood: int = 60) -> dict:
    rng = random.Random(seed)
    start = proc_stats(pid)
    report = {"seconds": seconds, "seed": seed, "frames": 0, "garbage": 0, "connections": 0, "answers": 0,
              "closed_by_server": 0,
              "probes": 0, "probe_failures": 0, "writes_accepted_against_rules": 0, "violations": []}
    end = time.monotonic() + seconds
    next_probe = time.monotonic()
    s, tid, silent = None, 0, 0
    while time.monotonic() < end:
        if time.monotonic() >= next_probe:
            report["probes"] += 1
            if not probe(host, port):
                report["probe_failures"] += 1
            next_probe = time.monotonic() + 0.5
        if s is None:
            s = _connect(host, port, source)
            report["connections"] += 1
            if s is None:
                time.sleep(0.05)
                continue
        mode = rng.random()
        sent: dict[int, int] = {}
        try:
            if mode < 0.70:                          # one request, or a pipelined burst
                burst = b""
                for _ in range(1 if rng.random() < 0.6 else rng.randrange(2, 6)):
                    tid += 1
                    data, fc = frame(rng, tid)
                    sent[tid & 0xFFFF] = fc
                    burst += data
                    report["frames"] += 1
                s.sendall(burst)
            elif mode < 0.85:                        # garbage: the server may close a stream that is not Modbus
                s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
                report["frames"] += 1
                report["garbage"] += 1
            elif mode < 0.95:                        # slow: a frame a byte at a time
                tid += 1
                data, fc = frame(rng, tid)
                sent[tid & 0xFFFF] = fc
                for b in data:
                    s.sendall(bytes([b]))
                    time.sleep(0.002)
                report["frames"] += 1
            else:                                    # a flood of connections, held briefly
                held = [c for c in (_connect(host, port, source, 0.5) for _ in range(flood)) if c]
                report["connections"] += len(held)
                time.sleep(0.05)
                for c in held:
                    c.close()
                time.sleep(0.2)                      # the server releases their slots
                continue
            closed: list = []
            got = _answers(s, 0.3 if sent else 0.05, closed, expect=len(sent))
            # a lie about a length leaves the server waiting for the rest: a client gives up and reconnects
            silent = silent + 1 if (sent and not got) else 0
            for a in got:
                report["answers"] += 1
                t, fc = struct.unpack(">H", a[:2])[0], a[7]
                if fc in WRITE_FCS and t in sent:
                    report["writes_accepted_against_rules"] += 1
                    if len(report["violations"]) < 10:
                        report["violations"].append(a.hex())
        except OSError:
            report["closed_by_server"] += 1
            s.close()
            s = None
            continue
        if closed:
            report["closed_by_server"] += 1
        if closed or rng.random() < 0.1 or silent >= 2:
            s.close()
            s, silent = None, 0
    if s is not None:
        s.close()
    time.sleep(0.5)
    stop = proc_stats(pid)
    report["rss_kb_start"], report["rss_kb_end"] = start.get("rss_kb"), stop.get("rss_kb")
    report["fds_start"], report["fds_end"] = start.get("fds"), stop.get("fds")
    report["alive"] = pid is None or os.path.exists(f"/proc/{pid}")
    report["final_probe"] = probe(host, port)
    return report


@contextlib.contextmanager
def fuzz_target(tmp):
    """`ems run` on a simulated site (`ems sim-site`), its dispatch server on a free port with only
    127.0.0.1 allowed to write, ready to answer: yields (port, the EmsRun); both stopped after."""
    from ems.comm.net import free_port
    from tests.procs import EmsRun, sim_site

    port = free_port()
    base = tmp / "base.toml"
    base.write_text(f'[site]\nname = "fuzz"\n[dispatch]\nport = {port}\nallowed_clients = ["127.0.0.1"]\n')
    sim = sim_site(tmp, base)
    run = EmsRun("--config", str(sim.site_file), "--no-history", "--state", str(tmp / "state.json"))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not probe("127.0.0.1", port):
            time.sleep(0.2)
        yield port, run
    finally:
        run.stop()
        sim.stop()


def main(argv=None) -> int:
    """`make fuzz`: an `ems run` of the demo site (two processes), fuzzed for --seconds; the report as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=str, default="build/fuzz/dispatch.json")
    args = ap.parse_args(argv)
    import tempfile
    from pathlib import Path

    with fuzz_target(Path(tempfile.mkdtemp(prefix="ems-fuzz-"))) as (port, run):
        report = fuzz("127.0.0.1", port, args.seconds, args.seed, run.proc.pid)
        report["log_lines"] = len(run.err)
        report["tracebacks"] = sum(1 for line in run.err if line.startswith("Traceback"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    ok = (report["alive"] and report["final_probe"] and report["writes_accepted_against_rules"] == 0
          and report["probe_failures"] == 0 and report["tracebacks"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
