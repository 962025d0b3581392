"""<base>/motion from majestic's motion hook: ON at once, OFF after a quiet time.

Both payloads are retained, so Home Assistant shows the right state after it
restarts. The first thing published is OFF: it clears an ON left retained by an
agent that stopped mid-motion. A publication that fails (no broker) is retried
just after the session's next connection attempt.
"""
from .compat import ticks_add, ticks_diff


class Motion:
    def __init__(self, session, cfg):
        self.session = session
        self.topic = (session.base + "/motion").encode()
        self.quiet_us = cfg["quiet_s"] * 1000000
        self.snapshot = cfg["snapshot"]
        self.active = False
        self.events = 0            # motion lines received, for tests and the state
        self._sent = None          # what the broker holds: None until first published
        self._quiet_until = None
        self.due = session.cam.now()
        session.cam.loop.add(self)

    def detected(self):
        """majestic saw motion: ON now (once), OFF quiet_s after the last detection."""
        now = self.session.cam.now()
        self.events += 1
        self._quiet_until = ticks_add(now, self.quiet_us)
        if not self.active:
            self.active = True
            if self.snapshot:
                relay = self.session.cam.snapshot   # the snapshot relay: None without majestic
                if relay is not None:
                    relay.request_snapshot("motion")   # a picture of the motion
        self._sync(now)

    def tick(self, now):
        if self.active and ticks_diff(now, self._quiet_until) >= 0:
            self.active = False
        self._sync(now)

    def _sync(self, now):
        want = self.active
        payload = b"ON" if want else b"OFF"
        if self._sent != want and self.session.publish(self.topic, payload, True):
            self._sent = want
        due = None
        if self._sent != want:
            # not connected: look again just after the session's next attempt (or in 1 s
            # when it has none scheduled)
            due = self.session.due
            due = ticks_add(now, 1000000) if due is None or ticks_diff(due, now) < 0 \
                else ticks_add(due, 1000)
        if want and (due is None or ticks_diff(self._quiet_until, due) < 0):
            due = self._quiet_until
        self.due = due

