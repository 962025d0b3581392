"""The agent's one event loop: device timers plus readable sockets, no threads.

A device is any object with an attribute `due` (a ticks_us deadline, or None when
it has nothing scheduled) and a method `tick(now)`. The loop wakes for the nearest
deadline or a readable socket; with nothing scheduled it blocks in poll() until a
socket has data, so an idle agent costs no CPU.
"""
import select

from .compat import const, ticks_us, ticks_diff, sleep_us, ipoll, poll_key

# While deadlines stay closer than this, the loop sleeps precisely with sleep_us and
# looks at the sockets (a poll that does not wait) at least this often; longer waits
# are spent in poll(), whose timeout has only ms resolution, watching the sockets.
_SOCKET_CHECK_US = const(20000)


class Loop:
    def __init__(self, spin_below_us=0):
        self.clock = ticks_us  # the loop's time source; tests substitute a virtual clock
        self.devices = []
        self._poller = select.poll()
        self._watched = {}
        self._last_socket_check = self.clock()
        # kernels without high-resolution timers round sleeps up to a 10 ms tick:
        # there, waits shorter than `spin_below_us` spin on the clock instead
        self.spin_below_us = spin_below_us
        self._handled = False  # a socket callback ran in the last _poll()
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

    def run(self):
        """Run until an exception ends it (KeyboardInterrupt: the agent is stopped)."""
        while True:
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
            wait = dev.due
            if wait is None:
                continue
            wait = ticks_diff(wait, now)   # `wait` holds the deadline, then the time to it
            if wait <= 0:
                dev.tick(now)
                wait = dev.due
                if wait is None:
                    continue
                wait = ticks_diff(wait, now)
            if nearest is None or wait < nearest:
                nearest = wait
        self.wait(now, nearest)

    def wait(self, now, nearest):
        """Sleep until `nearest` us from `now` (None: no deadline) or a socket is readable."""
        if nearest is None:
            self._poll(-1)
            return
        if nearest < _SOCKET_CHECK_US and self._watched:
            # a negative age is a check so long ago that the ticks wrapped: due too
            age = ticks_diff(now, self._last_socket_check)
            if (age < 0 or age >= _SOCKET_CHECK_US) and self._poll(0):
                return   # a callback ran: deadlines may have moved
        late = ticks_diff(self.clock(), now)   # time spent ticking devices (and polling)
        if nearest <= late:
            return
        if nearest - late >= _SOCKET_CHECK_US:
            # poll's timeout is whole ms: rounded up it wakes once, under 1 ms late
            # (rounded down it would wake early, and then once more for the rest)
            self._poll((nearest - late + 999) // 1000)
        elif nearest < self.spin_below_us:
            while ticks_diff(self.clock(), now) < nearest:
                pass
        else:
            sleep_us(nearest - late)

    def _poll(self, timeout_ms):
        """Wait up to timeout_ms (-1: forever) for readable sockets and handle them;
        True if a callback ran."""
        # few locals: a frame over MicroPython's 11 words would be heap-allocated per call
        self._handled = False
        for ready in ipoll(self._poller, timeout_ms):
            self._dispatch(ready[0])
        self._last_socket_check = self.clock()   # what was readable has been read
        return self._handled

    def _dispatch(self, obj):
        callback = self._watched.get(poll_key(obj))
        if callback:
            self._handled = True
            callback()
