"""Two pseudo-terminals bridged back to back: a null-modem cable on the desk. The dispatch server opens
one end as its serial port and a real pymodbus RTU client the other (no socat, no kernel module)."""
import os
import select
import threading
import tty


class SerialPair:
    def __init__(self):
        self._fds = []
        self.ports = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self._fds.append((master, slave))
            self.ports.append(os.ttyname(slave))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._bridge, daemon=True)
        self._thread.start()

    def _bridge(self) -> None:
        (a, _), (b, _) = self._fds
        other = {a: b, b: a}
        while not self._stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.05)
            for fd in ready:
                try:
                    os.write(other[fd], os.read(fd, 4096))
                except OSError:         # an end closed meanwhile: stop quietly
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        for master, slave in self._fds:
            os.close(master)
            os.close(slave)
