"""Section: step timing while the local channel is flooded, against the same agent unflooded.

The driver steps both axes through the agent's Camera and Loop (as in the steps
section) with the local channel open on a free loopback port, while threads here
send `is_moving` requests back to back, each on its own connection, as fast as
the agent answers. The baseline is the same driver run, in the same bench run,
without the channel. Figures are the medians of the repeats (see steps.py).
"""
import socket
import threading

from common import ShmSysfs, runtimes
from steps import ACCEL, analyse, combine
from table import figure, section

RATE = 1000
DURATION_S = 1.0
REPEATS = 3
CLIENTS = 4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Flood:
    """CLIENTS threads sending one request per connection until stopped."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.replies = 0
        self.threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]

    def _client(self):
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(b"is_moving\n")
                    if s.recv(64):
                        self.replies += 1
            except OSError:
                self.stop.wait(0.001)   # not listening (the floor's turn): look again soon

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def run(duration_s=DURATION_S, repeats=REPEATS):
    figures, notes, raw = [], [], {}
    for rt, why in runtimes():
        if rt is None:
            notes.append("MicroPython: skipped: %s" % why)
            raw["MicroPython"] = {"skipped": why}
            continue
        params = {"rates": [RATE], "duration_s": duration_s, "accel": ACCEL, "repeats": repeats}
        with ShmSysfs() as fs:
            quiet = rt.driver("steps", dict(params, gpio_root=fs.gpio_root,
                                            state_dir=fs.state_dir + "/quiet"))
        port = _free_port()
        with ShmSysfs() as fs, Flood(port) as flood:
            flooded = rt.driver("steps", dict(params, gpio_root=fs.gpio_root,
                                              state_dir=fs.state_dir + "/flood", local_port=port))
        q = combine([analyse(r["agent"], RATE) for r in quiet["runs"]])
        f = combine([analyse(r["agent"], RATE) for r in flooded["runs"]])
        served = sum(r["agent"]["served"] or 0 for r in flooded["runs"])
        raw[rt.name] = {"quiet": q, "flooded": f, "served": served, "replies": flood.replies}
        label = "%s %d/s" % (rt.name, RATE)
        figures.append(figure(label + " achieved/commanded, channel flooded", f["achieved"], "",
                              q["achieved"], "no channel", (">=", 0.99)))
        figures.append(figure(label + " jitter p99, channel flooded", f["p99"], "us",
                              q["p99"], "no channel", ("<=", 200)))
        figures.append(figure(label + " requests answered while stepping",
                              served / (duration_s * repeats), "/s"))
    notes.append("%d clients, one is_moving request per connection, back to back; both axes "
                 "step at %d/s, %d x %.1f s; baseline: the same agent without the channel in "
                 "the same run" % (CLIENTS, RATE, repeats, duration_s))
    return section("Local channel (flooded while stepping)", figures, notes), raw
