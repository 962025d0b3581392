"""Section 2: command latency, publish -> first GPIO value write, agent against shell pipelines.

One loopback mosquitto; each contender listens on its own topic and drives its own
value file:
  agent     `python -m camagent -c CONFIG` (and `micropython -m camagent` when
            $MICROPYTHON is set) on a fake sysfs on tmpfs: led_green/set ON|OFF
  builtins  mosquitto_sub | while read v; do echo "$v" > value; done   (sh builtins only)
  fork      the same loop running /bin/echo: one external process per message
The clock starts just before the PUBLISH leaves this process (paho, no network
thread) and stops when inotify reports IN_MODIFY on the contender's value file.
Commands go round-robin over the contenders, so all of them see the same load.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import paho.mqtt.client as paho

from broker import Mosquitto
from common import AGENT, ROOT, VENDOR, ShmSysfs, Skip, cpython, micropython, percentile
from inotify import Watcher
from table import figure, section
from camagent import boards

COMMANDS = 300          # per contender: p99 is then the 3rd-worst
GAP_S = 0.01             # between two commands, so each contender is idle when its turns come
TIMEOUT_S = 2.0          # a command whose write does not show up by then counts as lost
READY_S = 20.0

PIPELINE = 'mosquitto_sub -h 127.0.0.1 -p "$1" -t "$2" | while read -r v; do %s "$v" > "$3"; done'


class Contender:
    """Something that turns an MQTT message into a write of one value file."""

    def __init__(self, name, topic, payloads, value_path, argv, env=None, cwd=None, log=None):
        self.name = name
        self.topic = topic
        self.payloads = payloads
        self.value_path = value_path
        self.latencies = []
        self.lost = 0
        self.log = log
        self._log = open(log, "wb") if log else subprocess.DEVNULL
        try:
            # its own session, so stopping it reaches the whole pipeline
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                         stderr=self._log, start_new_session=True)
        except OSError:
            if log:
                self._log.close()
            raise

    def payload(self, i):
        return self.payloads[i % 2]

    def level(self, i):
        """What the value file holds once message `i` is carried out."""
        return b"1" if i % 2 == 0 else b"0"

    def failed(self):
        if self.proc.poll() is None:
            return None
        text = ""
        if self.log:
            with open(self.log, "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
            text = lines[-1] if lines else ""
        return "%s exited %s%s" % (self.name, self.proc.returncode, ": " + text if text else "")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def agent_contender(rt, fs, port, device_id):
    """`-m camagent` under the Runtime `rt`."""
    cfg_path = os.path.join(fs.dir, device_id + ".json")
    with open(cfg_path, "w") as f:
        json.dump({"gpio_root": fs.gpio_root, "state_dir": os.path.join(fs.state_dir, device_id),
                   "device_id": device_id, "sd_reset_on_start": False,
                   "mqtt": {"host": "127.0.0.1", "port": port}}, f)
    pin = boards.profile("imou-ranger-rc-4mp")["pins"]["led_green"]
    return Contender("agent (%s)" % rt.name, "camagent/%s/led_green/set" % device_id,
                     (b"ON", b"OFF"), fs.value_path(pin),
                     rt.command(["-m", "camagent", "-c", cfg_path]), env=rt.env([AGENT, VENDOR]),
                     cwd=ROOT, log=os.path.join(fs.dir, device_id + ".log"))


def shell_contender(name, writer, port, directory):
    value = os.path.join(directory, name + "-value")
    with open(value, "w") as f:
        f.write("0\n")
    topic = "bench/%s/set" % name
    return Contender(name, topic, (b"1", b"0"), value,
                     ["sh", "-c", PIPELINE % writer, "sh", str(port), topic, value])


class Publisher:
    """paho without its network thread: publish() writes to the socket at once."""

    def __init__(self, port):
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop(0.1)

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=0)

    def service(self):
        self.client.loop(0)

    def close(self):
        self.client.disconnect()


def wait_ready(pub, watcher, c):
    """Publish until the contender's file changes: it is subscribed and running."""
    deadline = time.monotonic() + READY_S
    i = 0
    while time.monotonic() < deadline:
        why = c.failed()
        if why:
            raise Skip(why)
        watcher.drain()
        pub.publish(c.topic, c.payload(i))
        if watcher.wait_for(c.value_path, c.level(i), 0.2):
            time.sleep(0.05)
            watcher.drain()
            return i + 1
        i += 1
    raise Skip("%s never wrote its value file within %d s" % (c.name, READY_S))


def measure(contenders, pub, watcher, commands):
    """Latencies into each contender; returns {name: why} for those that never got ready."""
    failed, ready, warmups = {}, [], {}
    for c in contenders:
        watcher.add(c.value_path)
    for c in contenders:
        try:
            warmups[c.name] = wait_ready(pub, watcher, c)
            ready.append(c)
        except Skip as e:
            failed[c.name] = str(e)
    for i in range(commands):
        for c in ready:
            watcher.drain()
            k = warmups[c.name] + i
            t0 = time.perf_counter_ns()
            pub.publish(c.topic, c.payload(k))
            woke = watcher.wait_for(c.value_path, c.level(k), TIMEOUT_S)
            if woke:
                c.latencies.append((woke - t0) / 1000.0)
            else:
                c.lost += 1
            time.sleep(GAP_S)
            watcher.drain()
        pub.service()
    for c in ready:
        why = c.failed()
        if why:
            failed[c.name] = why
    return failed


def session(commands, mp, broker_conf=()):
    """All contenders against one broker: ({name: stats}, {name: why it failed})."""
    with Mosquitto(broker_conf) as broker, ShmSysfs() as fs, ShmSysfs() as fs_mp:
        contenders = []
        try:
            contenders.append(agent_contender(cpython(), fs, broker.port, "bench"))
            if mp:   # its own tree: both agents claim the same pins
                contenders.append(agent_contender(mp, fs_mp, broker.port, "benchmp"))
            contenders.append(shell_contender("builtins", "echo", broker.port, fs.dir))
            contenders.append(shell_contender("fork", "/bin/echo", broker.port, fs.dir))
            watcher = Watcher()
            try:
                pub = Publisher(broker.port)
                try:
                    failed = measure(contenders, pub, watcher, commands)
                finally:
                    pub.close()
            finally:
                watcher.close()
        finally:
            for c in contenders:
                c.stop()
    stats = {}
    for c in contenders:
        if c.name not in failed:
            lat = c.latencies
            stats[c.name] = {"n": len(lat), "lost": c.lost,
                             "p50": percentile(lat, 50) if lat else None,
                             "p99": percentile(lat, 99) if lat else None,
                             "max": max(lat) if lat else None}
    return stats, failed


def run(commands=COMMANDS, nodelay_pass=True):
    for tool in ("mosquitto_sub", "sh"):
        if not shutil.which(tool):
            return section("Command latency", skipped="%s is not installed" % tool), {}
    notes = []
    try:
        mp = micropython()
    except Skip as e:
        mp = None
        notes.append("MicroPython agent: skipped: %s" % e)
    stats, failed = session(commands, mp)
    raw = {"default broker": dict(stats)}
    for name, why in failed.items():
        notes.append("%s: failed: %s" % (name, why))
        raw["default broker"][name] = {"failed": why}
    empty = {"p50": None, "p99": None}
    builtins, fork = stats.get("builtins", empty), stats.get("fork", empty)
    agents = sorted(name for name in stats if name.startswith("agent"))
    figures = []
    for name in agents:
        s = stats[name]
        figures.append(figure("%s p50" % name, s["p50"], "us", builtins["p50"], "builtins"))
        figures.append(figure("%s p99" % name, s["p99"], "us", builtins["p99"], "builtins",
                              ("ratio", "<=", 1.0)))
        figures.append(figure("%s p50" % name, s["p50"], "us", fork["p50"], "fork"))
        figures.append(figure("%s p99" % name, s["p99"], "us", fork["p99"], "fork",
                              ("ratio", "<=", 0.5)))
    notes.append("%d commands per contender, round-robin, %d ms apart; lost (no write "
                 "within %.0f s): %s" % (commands, GAP_S * 1000, TIMEOUT_S, ", ".join(
                     "%s %d" % (name, s["lost"]) for name, s in sorted(stats.items()))))
    notes.append("pipelines run under /bin/sh (%s); fork = one /bin/echo process per message"
                 % os.path.basename(os.path.realpath(shutil.which("sh"))))
    if nodelay_pass:
        # diagnosis: the same again with Nagle off on the broker's side of each connection
        nd_stats, nd_failed = session(commands, mp, ["set_tcp_nodelay true"])
        raw["broker set_tcp_nodelay true"] = dict(nd_stats)
        nd_builtins = nd_stats.get("builtins", empty)
        for name in sorted(n for n in nd_stats if n.startswith("agent")):
            figures.append(figure("%s p99, broker set_tcp_nodelay true" % name,
                                  nd_stats[name]["p99"], "us", nd_builtins["p99"], "builtins"))
        for name, why in nd_failed.items():
            notes.append("set_tcp_nodelay pass: %s: failed: %s" % (name, why))
    notes.append("mosquitto's default is set_tcp_nodelay false (Nagle on)")
    return section("Command latency (publish -> first value write, inotify)", figures,
                   notes), raw
