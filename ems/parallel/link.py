"""The master's link to its slaves (I/O thread): one Modbus TCP connection per unit, and per cycle one FC23
(read/write multiple registers) per unit — the command block written, the status block read in the same
transaction — all units at once (asyncio), each bounded by [parallel] timeout_ms.

A unit that refuses the command (an exception: e.g. its IDs disagree) is read once more with FC03 so the
master can say what it answers as. A dropped connection is reopened at the next cycle. Each cycle's
outcomes go to the group (ems.parallel.group), which takes a unit that failed out of the next plan.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from ems.parallel.block import command_block, status_block
from ems.parallel.group import CommandPlan, Outcome, ParallelGroup
from ems.parallel.units import UnitAddress

log = logging.getLogger("ems.parallel")
EXC_NAMES = {1: "illegal function", 2: "illegal address", 3: "illegal value", 4: "device failure", 6: "busy"}


class ParallelLink:
    def __init__(self, io, group: ParallelGroup, units: list[UnitAddress], timeout_s: float, modbus_unit: int = 1,
                 now=time.monotonic, watch: UnitAddress | None = None):
        """now: the controller's monotonic clock (what the group compares the outcomes' times with); watch: a
        backup master's master, whose status block is read in every cycle (never written)."""
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)   # the link reports each unit's state itself
        self.io, self.group, self.units = io, group, units
        self.timeout_s, self.modbus_unit, self.now = timeout_s, modbus_unit, now
        self.watch = watch
        self.clients: list[AsyncModbusTcpClient | None] = [None] * (len(units) + (watch is not None))
        self.cycle_s: collections.deque = collections.deque(maxlen=4096)   # durations of finished cycles
        self.cycles = 0
        self._running = False
        self._next: CommandPlan | None = None
        self._task = None

    # ------------------------------------------------------------------ control thread
    def submit(self, plan: CommandPlan) -> None:
        """Start a cycle with this plan (a command per unit); while one runs, the newest waits for its end."""
        self.io.loop.call_soon_threadsafe(self._start, plan)

    # ------------------------------------------------------------------ I/O thread
    def _start(self, plan: CommandPlan) -> None:
        if self._running:
            self._next = plan
            return
        self._running = True
        self._task = asyncio.ensure_future(self._cycle(plan))

    async def _cycle(self, plan: CommandPlan | None) -> None:
        try:
            while plan is not None:
                t0 = time.perf_counter()
                jobs = [self._one(i, plan.command(i)) for i in range(len(plan))]
                if self.watch is not None:
                    jobs.append(self._read_watch())
                outcomes = list(await asyncio.gather(*jobs))
                watch = outcomes.pop() if self.watch is not None else None
                self.group.take_cycle(outcomes, watch)
                self.cycle_s.append(time.perf_counter() - t0)
                self.cycles += 1
                plan, self._next = self._next, None
        except Exception:                    # never let one cycle end the link: the next submit starts anew
            log.exception("parallel cycle failed")
        finally:
            self._running = False

    async def _client(self, i: int) -> AsyncModbusTcpClient | None:
        c = self.clients[i]
        if c is not None and c.connected:
            return c
        if c is not None:
            c.close()
        u = self.units[i] if i < len(self.units) else self.watch
        c = self.clients[i] = AsyncModbusTcpClient(u.host, port=u.port, timeout=self.timeout_s, retries=0,
                                                   reconnect_delay=0, reconnect_delay_max=0)
        try:
            ok = await asyncio.wait_for(c.connect(), self.timeout_s)
        except (asyncio.TimeoutError, OSError, ModbusException):
            ok = False
        return c if ok else None

    async def _one(self, i: int, command: dict) -> Outcome:
        cb, sb = command_block(), status_block()
        try:
            words = cb.encode(command)
        except ValueError as exc:            # a value the map cannot carry: nothing is sent, the unit sits out
            return Outcome(False, error=f"command not encodable: {exc}", at_s=self.now())
        c = await self._client(i)
        if c is None:
            return Outcome(False, error="no connection", at_s=self.now())
        try:
            rr = await asyncio.wait_for(c.readwrite_registers(read_address=sb.address, read_count=sb.count,
                                                              write_address=cb.address, values=words,
                                                              device_id=self.modbus_unit), self.timeout_s * 1.5)
        except (asyncio.TimeoutError, ModbusException, OSError) as exc:
            c.close()
            return Outcome(False, error=f"no answer ({type(exc).__name__})", at_s=self.now())
        at = self.now()
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            why = f"refused the command: {EXC_NAMES.get(int(code), code)}"
            values = None
            try:                             # what does it answer as? (IDs, role, count)
                st = await asyncio.wait_for(c.read_holding_registers(sb.address, count=sb.count,
                                                                     device_id=self.modbus_unit), self.timeout_s)
                if not st.isError():
                    values = sb.decode(st.registers)
            except (asyncio.TimeoutError, ModbusException, OSError):
                pass
            return Outcome(False, values=values, error=why, refused=True, at_s=at)
        try:
            return Outcome(True, values=sb.decode(rr.registers), at_s=at)
        except ValueError as exc:
            return Outcome(False, error=f"bad status block: {exc}", at_s=at)

    async def _read_watch(self) -> Outcome:
        sb = status_block()
        c = await self._client(len(self.units))
        if c is None:
            return Outcome(False, error="no connection", at_s=self.now())
        try:
            rr = await asyncio.wait_for(c.read_holding_registers(sb.address, count=sb.count, device_id=self.modbus_unit),
                                        self.timeout_s * 1.5)
        except (asyncio.TimeoutError, ModbusException, OSError) as exc:
            c.close()
            return Outcome(False, error=f"no answer ({type(exc).__name__})", at_s=self.now())
        if rr.isError():
            return Outcome(False, error=f"refused the read: {rr}", at_s=self.now())
        return Outcome(True, values=sb.decode(rr.registers), at_s=self.now())

    def stop(self) -> None:
        async def close():
            for c in self.clients:
                if c is not None:
                    c.close()
        try:
            self.io.call(close(), 5.0)
        except Exception:
            log.exception("parallel link close")
