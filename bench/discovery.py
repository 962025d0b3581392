"""Section: the heap cost of one full Home Assistant discovery publication.

Under MicroPython (the agent's .mpy files, as shipped), with the collector off:
the bytes allocated while the agent builds every discovery document and topic
as it publishes them (the payload goes out piece by piece, the MQTT header
through a reused buffer), beside the same payloads built the way they were before
the table (topic text, a dict per document, json.dumps, encode), in the same run.
"""
import json
import os
import subprocess
import tempfile

from common import Skip, compile_agent, micropython
from table import figure, section

PROBE = """
import gc, json
from camagent.discovery import Discovery


class Axis:
    def __init__(self, low, high):
        self.min_deg, self.max_deg = low, high


axes = {"pan": Axis(0.0, 355.1), "tilt": Axis(0.0, 90.0)}
d = Discovery("homeassistant", "camagent/bench", "bench", "IMOU Ranger RC (4 MP)", "0.1.0",
              "aa:bb:cc:00:11:22", "192.0.2.10")
presets = ["door", "gate", "porch"]


def table():
    n = size = 0
    for topic, pieces in d.documents(axes, presets):   # what the session does with them
        length = 0
        for piece in pieces:
            length += len(piece)
        n += 1
        size += length
    return n, size


dicts = [(t.decode(), json.loads(b"".join(p))) for t, p in d.documents(axes, presets) if p]


def as_dicts():
    # the way before the table: the topic formatted as text, a dict per document
    # (sharing the device dict), json.dumps, then both encoded for umqtt
    for topic, doc in dicts:
        parts = topic.split("/")
        ("%s/%s/%s/%s/config" % (parts[0], parts[1], parts[2], parts[3])).encode()
        json.dumps(dict(doc)).encode()


def garbage(f):
    f()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    result = f()
    used = gc.mem_alloc() - before
    gc.enable()
    return used, result


used, (n, size) = garbage(table)
baseline, _ = garbage(as_dicts)
print(json.dumps({"documents": n, "payload_bytes": size, "garbage": used, "baseline": baseline}))
"""


def run():
    try:
        mp = micropython()
    except Skip as e:
        return section("Discovery heap", skipped=str(e)), {}
    with tempfile.TemporaryDirectory(prefix="camagent-bench-discovery-") as tmp:
        compile_agent(tmp)
        probe = os.path.join(tmp, "probe.py")
        with open(probe, "w") as f:
            f.write(PROBE)
        proc = subprocess.run(mp.command([probe]), env=mp.env([tmp]), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("discovery probe failed: %s"
                           % proc.stderr.decode(errors="replace").strip().splitlines()[-1:])
    raw = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    figures = [figure("garbage of one discovery publication", raw["garbage"], "B",
                      raw["baseline"], "same payloads as dicts + json.dumps",
                      target=("ratio", "<=", 0.75)),
               figure("discovery documents", raw["documents"]),
               figure("discovery payload bytes", raw["payload_bytes"], "B")]
    notes = ["%s, agent .mpy; the collector is off while measuring (gc.mem_alloc before and "
             "after)" % mp.name]
    return section("Discovery heap (%s)" % mp.name, figures, notes), raw
