"""The agent's one event loop: device timers plus readable sockets, no threads.

A device is any object with an attribute `due` (a ticks_us deadline, or None when
it has nothing scheduled) and a method `tick(now)`. The loop wakes for the nearest
deadline or a readable socket; with nothing scheduled it blocks in poll() until a
socket has data, so an idle agent costs no CPU.
"""
import select

from .compat import ticks_us, ticks_diff, sleep_us, ipoll, poll_key

# Waits shorter than this are slept precisely with sleep_us (a step interval is
# ~1 ms); longer ones go to poll(), whose timeout has only ms resolution.
_PRECISE_US = 2000
# While steps keep the loop in short sleeps, still look at sockets this often.
_SOCKET_CHECK_US = 20000


class Loop:
    def __init__(self, spin_below_us=0):
        self.clock = ticks_us  # the loop's time source; tests substitute a virtual clock
        self.devices = []
        self._poller = select.poll()
        self._watched = {}
        self._last_socket_check = ticks_us()
        # kernels without high-resolution timers round sleeps up to a 10 ms tick:
        # there, waits shorter than `spin_below_us` spin on ticks_us instead
        self.spin_below_us = spin_below_us
        self.running = False
        self.wakeups = 0  # loop iterations, for the idle-cost benchmark

    def add(self, device):
        self.devices.append(device)

    def remove(self, device):
        if device in self.devices:
            self.devices.remove(device)

    def watch(self, obj, on_readable):
        self._poller.register(obj, select.POLLIN)
        self._watched[poll_key(obj)] = on_readable

    def unwatch(self, obj):
        try:
            self._poller.unregister(obj)
        except (OSError, KeyError, ValueError):
            pass  # already closed: nothing left to watch
        self._watched.pop(poll_key(obj), None)

    def stop(self):
        self.running = False

    def run(self):
        self.running = True
        while self.running:
            self.run_once()

    def run_once(self):
        """Run every due device, then wait for the next deadline or a socket."""
        # An index loop, not `for dev in ...`: the iterator's 4 stack words would push
        # this frame past MicroPython's 11-word limit and onto the heap at every wakeup.
        self.wakeups += 1
        now = self.clock()
        nearest = None
        devices = self.devices
        i = 0
        while i < len(devices):
            dev = devices[i]
            i += 1
            if dev.due is None:
                continue
            if ticks_diff(dev.due, now) <= 0:
                dev.tick(now)
                if dev.due is None:
                    continue
            wait = ticks_diff(dev.due, now)
            if nearest is None or wait < nearest:
                nearest = wait
        self.wait(now, nearest)

    def wait(self, now, nearest):
        """Sleep until `nearest` us from `now` (None: no deadline) or a socket is readable."""
        if nearest is not None and nearest < _PRECISE_US:
            if self._watched and ticks_diff(now, self._last_socket_check) >= _SOCKET_CHECK_US:
                self._poll(0)
            elif nearest > 0:
                if nearest < self.spin_below_us:
                    while ticks_diff(ticks_us(), now) < nearest:
                        pass
                else:
                    late = ticks_diff(ticks_us(), now)  # time spent ticking devices
                    if nearest > late:
                        sleep_us(nearest - late)
            return
        self._poll(-1 if nearest is None else nearest // 1000)

    def _poll(self, timeout_ms):
        self._last_socket_check = ticks_us()
        for obj, event in ipoll(self._poller, timeout_ms):
            callback = self._watched.get(poll_key(obj))
            if callback:
                callback()
