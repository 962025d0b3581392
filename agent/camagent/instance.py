"""Telling whether another agent publishes under this agent's device_id.

Each start draws a random instance id, and every state document carries it with
a count of the states published. A retained state with another id may be this
camera's own from before a restart, so it proves nothing by itself; a second,
different state from that same id does: some other agent is alive and
publishing on our <base>/state (a cloned SD card, a copied config). That works
whether the two share a client id (they take turns on the broker, each finding
the other's newer state retained on connecting) or not (each sees the other's
states live).
"""
import json
import os


class Instance:
    def __init__(self, device_id, base):
        self.id = _random_id()
        self.states = 0          # state documents stamped so far
        self.problem = None      # the sentence, once another agent is seen
        self._device_id = device_id
        self._base = base
        # our own states echo back through <base>/#: found without parsing them
        self._own = ('"instance": "%s"' % self.id).encode()
        self._others = {}        # other instance id -> its last "states" count seen

    def stamp(self, doc):
        """Put the instance id and the count into a state document to publish."""
        self.states += 1
        doc["instance"] = self.id
        doc["states"] = self.states

    def seen(self, payload):
        """A message on our own <base>/state; True the first time it shows another agent."""
        if self.problem is not None or self._own in payload:
            return False     # already reported, or our own state back
        try:
            doc = json.loads(payload)
            other, count = doc["instance"], doc["states"]
        except (ValueError, TypeError, KeyError):
            return False     # not a state of an agent with instance ids
        if not isinstance(other, str) or other == self.id:
            return False
        last = self._others.get(other)
        if len(self._others) >= 8:
            # a few clones are remembered; someone flooding us with ids: start over
            self._others = {}
        self._others[other] = count
        if last is None or last == count:
            return False
        self.problem = "another agent with device_id %s is publishing on %s (instance %s)" % (
            self._device_id, self._base, other[:16])
        return True


def _random_id():
    """This start's instance id: 8 hex digits."""
    try:
        n = int.from_bytes(os.urandom(4), "big")
    except (AttributeError, OSError):   # no entropy source: time is unique enough per boot
        from .compat import ticks_us
        n = ticks_us()
    return "%08x" % n
