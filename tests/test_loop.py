"""The event loop's waits, on a virtual clock with the loop's own wait().

The rig's VirtualLoop replaces wait() (it jumps straight to the next deadline), so
it cannot show how the real loop waits. Here wait() is the agent's: only sleep_us
and ipoll, the two ways it has to pass time, are swapped for ones that move a
virtual clock, so each test sees every wait the loop chooses and every wakeup.
"""
import socket

import pytest

from camagent import loop as loop_module
from camagent.loop import Loop

PERIOD = 1 << 30          # ticks_us period of a 32-bit MicroPython build (the camera's)


class Clock:
    """Virtual ticks_us, and the loop's two ways of waiting, recorded."""

    def __init__(self, start=0):
        self.t = start
        self.elapsed = 0          # unwrapped, for the tests' arithmetic
        self.waits = []           # ("sleep", us) / ("poll", timeout_ms), in order
        self.idle_us = 0          # how long a poll without timeout lasts

    def now(self):
        return self.t

    def advance(self, us):
        self.t = (self.t + us) % PERIOD
        self.elapsed += us

    def sleep_us(self, us):
        self.waits.append(("sleep", us))
        self.advance(us)

    def ipoll(self, poller, timeout_ms):
        self.waits.append(("poll", timeout_ms))
        ready = poller.poll(0)
        if ready:
            return ready          # data already there: no waiting
        if timeout_ms < 0:
            self.advance(self.idle_us)
        else:
            self.advance(timeout_ms * 1000)
        return poller.poll(0)


WORK_US = 30              # the time a tick takes


class Periodic:
    """A device ticking every `interval` us, `count` times, noting when."""

    def __init__(self, clock, interval, count, first=0):
        self.clock = clock
        self.interval = interval
        self.count = count
        self.due = (clock.t + first) % PERIOD
        self.times = []           # clock.elapsed at each tick

    def tick(self, now):
        self.times.append(self.clock.elapsed)
        self.clock.advance(WORK_US)
        self.due = None if len(self.times) == self.count else \
            (self.due + self.interval) % PERIOD


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(loop_module, "sleep_us", c.sleep_us)
    monkeypatch.setattr(loop_module, "ipoll", c.ipoll)
    return c


def make_loop(clock):
    loop = Loop()
    loop.clock = clock.now
    return loop


def run_until_done(loop, *devices, limit=100000):
    """Run until the devices are done; the last wakeup ends in an idle poll."""
    while any(d.due is not None for d in devices):
        loop.run_once()
        assert loop.wakeups < limit
    assert loop.clock.__self__.waits[-1] == ("poll", -1)
    del loop.clock.__self__.waits[-1]


@pytest.mark.parametrize("interval", [1000, 1999, 2000, 2500, 5000, 12000, 19999])
def test_a_short_interval_costs_one_wakeup_per_tick(clock, interval):
    """Step intervals are slept precisely: one wakeup per step, each on time (a poll with
    its ms timeout rounded down woke early and needed a second wakeup for the rest)."""
    loop = make_loop(clock)
    dev = Periodic(clock, interval, 40)
    loop.add(dev)
    run_until_done(loop, dev)
    assert loop.wakeups == 40
    assert dev.times == [k * interval for k in range(40)]
    assert clock.waits == [("sleep", interval - WORK_US)] * 39


def test_long_waits_are_polls_rounded_up_and_idle_blocks(clock):
    """A wait of 20 ms or more watches the sockets in poll(), whose timeout is whole ms:
    rounded up, so it takes one wakeup (rounded down it woke early, and again)."""
    loop = make_loop(clock)
    dev = Periodic(clock, 150000, 3)      # e.g. an IR-cut pulse, an LED blink
    loop.add(dev)
    run_until_done(loop, dev)
    assert loop.wakeups == 3
    assert all(0 <= t - k * 150000 < 1000 for k, t in enumerate(dev.times))
    assert clock.waits == [("poll", 150), ("poll", 150)]   # then, idle, ("poll", -1)


def test_two_axes_share_wakeups(clock):
    loop = make_loop(clock)
    pan, tilt = Periodic(clock, 2500, 40), Periodic(clock, 5000, 20)
    loop.add(pan)
    loop.add(tilt)
    run_until_done(loop, pan, tilt)
    assert loop.wakeups == 40                # tilt's ticks fall on pan's wakeups


class Inbox:
    """A watched socket pair: `send` on one end, the loop reads the other."""

    def __init__(self, loop, clock):
        self.a, self.b = socket.socketpair()
        self.a.setblocking(False)
        self.clock = clock
        self.received = []                   # clock.elapsed when the loop read it
        loop.watch(self.a, self.readable)

    def readable(self):
        self.a.recv(100)
        self.received.append(self.clock.elapsed)

    def send(self):
        self.b.send(b"x")

    def close(self):
        self.a.close()
        self.b.close()


def test_sockets_are_checked_every_20_ms_while_ticks_keep_waits_short(clock):
    loop = make_loop(clock)
    inbox = Inbox(loop, clock)
    try:
        dev = Periodic(clock, 1000, 400)
        sent = []

        def tick(now, original=dev.tick):
            original(now)
            if len(dev.times) in (50, 123, 301):
                inbox.send()
                sent.append(clock.elapsed)
        dev.tick = tick
        loop.add(dev)
        run_until_done(loop, dev)
        assert len(inbox.received) == 3
        for s, r in zip(sent, inbox.received):
            assert 0 <= r - s <= 20000 + 1000   # within one socket-check period (+ a step)
        checks = [i for i, w in enumerate(clock.waits) if w == ("poll", 0)]
        assert 18 <= len(checks) <= 400000 // 20000 + 1
        # a check that finds nothing costs no wakeup; one that hands data to a callback
        # returns to the devices (it may have changed their deadlines)
        assert loop.wakeups == 400 + 3
        assert dev.times == [k * 1000 for k in range(400)]
    finally:
        inbox.close()


def test_socket_checks_stay_due_when_the_last_one_is_older_than_half_the_ticks_period(clock):
    """10 minutes of short waits with no socket watched, across the 2**30 us wrap; then
    a socket is watched. Its first check is due at once: an age beyond half the tick
    period reads as negative, and must not count as 'checked just now'."""
    clock.t = PERIOD - 1000
    loop = make_loop(clock)
    loop.run_once()                                  # a check, with nothing to watch
    dev = Periodic(clock, 19000, 600 * 1000000 // 19000 + 2000)
    loop.add(dev)
    while clock.elapsed < 600 * 1000000:
        loop.run_once()
    assert set(clock.waits[1:]) == {("sleep", 19000 - WORK_US)}
    inbox = Inbox(loop, clock)
    try:
        inbox.send()
        sent = clock.elapsed
        for _ in range(5):
            loop.run_once()
        assert inbox.received and inbox.received[0] - sent <= 20000
    finally:
        inbox.close()


def test_a_device_not_due_costs_one_ticks_diff(clock, monkeypatch):
    calls = []
    real = loop_module.ticks_diff

    def counting(a, b):
        calls.append(a)
        return real(a, b)
    monkeypatch.setattr(loop_module, "ticks_diff", counting)
    loop = make_loop(clock)
    waiting = [Periodic(clock, 1000, 5, first=f) for f in (3000, 7000, 9000)]
    for dev in waiting:
        loop.add(dev)
    loop.run_once()
    for dev in waiting:
        assert calls.count(dev.due) == 1
