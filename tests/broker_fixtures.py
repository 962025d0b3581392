"""Real brokers and real agents for the MQTT tests.

Mosquitto (Debian's) runs on a free loopback port from a generated config, with
variants for a password file and for a TLS listener whose certificates openssl
makes in the test. An agent runs as `python -m camagent -c CONFIG` against the
simulated camera from camhost.simcam, exactly as `make demo` runs it.
"""
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from camhost.ctl import preview  # the agent's quoting: the tests (fuzz too) check ctl's copy
from camhost import tools
from camhost.simcam import SimCamera

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT_PATH = os.pathsep.join([os.path.join(ROOT, "agent"), os.path.join(ROOT, "build", "vendor")])
WAIT_S = 20   # upper bound for anything the tests wait on (a failure, not a timing)

_started = []  # brokers and agents, in start order (see stop_leftovers)


@pytest.fixture(autouse=True)
def stop_leftovers():
    """Stops every broker and agent a test started, even when it failed half-way.

    Autouse once imported into a test module. Those started by module-scoped
    fixtures come earlier in the list and are left to their own fixtures.
    """
    mark = len(_started)
    yield
    while len(_started) > mark:
        _started.pop().close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout=WAIT_S, what="condition"):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


class Mosquitto:
    """One mosquitto process; stop()/start() keep the port, kill() is SIGKILL."""

    def __init__(self, workdir, extra=(), port=None, tls=None, users=None):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.tls = tls
        self.users = users or {}
        self.proc = None
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self.log = os.path.join(self.dir, "mosquitto.log")
        # as root, mosquitto would switch to the "mosquitto" user, who cannot read tmp_path
        lines = ["user %s" % pwd.getpwuid(os.getuid()).pw_name,
                 "listener %d 127.0.0.1" % self.port, "persistence false",
                 "log_dest file %s" % self.log, "log_type all"]
        if self.users:
            pwfile = os.path.join(self.dir, "passwd")
            open(pwfile, "w").close()
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", pwfile, user, password], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.chmod(pwfile, 0o600)
            lines += ["allow_anonymous false", "password_file %s" % pwfile]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += ["cafile %s" % tls.ca, "certfile %s" % tls.server_cert,
                      "keyfile %s" % tls.server_key]
            if tls.require_client_cert:
                lines.append("require_certificate true")
        lines.extend(extra)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("mqtts" if self.tls else "mqtt", self.port)

    def start(self):
        self.proc = subprocess.Popen([tools.which("mosquitto") or "mosquitto", "-c", self.conf],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        _started.append(self)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError("mosquitto exited: %s" % self.proc.stderr.read().decode())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(listening, what="mosquitto to listen on %d" % self.port)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    close = kill

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)


class Certificates:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""

    def __init__(self, workdir, require_client_cert=False):
        d = str(workdir)
        os.makedirs(d, exist_ok=True)
        self.require_client_cert = require_client_cert
        self.ca, self.ca_key = os.path.join(d, "ca.crt"), os.path.join(d, "ca.key")
        self.server_cert = os.path.join(d, "server.crt")
        self.server_key = os.path.join(d, "server.key")
        self.client_cert = os.path.join(d, "client.crt")
        self.client_key = os.path.join(d, "client.key")

        def ssl(*args):
            subprocess.run(["openssl"] + list(args), check=True, cwd=d,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", self.ca_key, "-out", self.ca)
        ext = os.path.join(d, "san.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for name, cert, key, extra in (("127.0.0.1", self.server_cert, self.server_key,
                                        ["-extfile", ext]),
                                       ("camagent-test", self.client_cert, self.client_key, [])):
            csr = key + ".csr"
            ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name,
                "-keyout", key, "-out", csr)
            ssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                "-CAcreateserial", "-days", "2", "-out", cert, *extra)


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.kill()


class Watcher:
    """A paho client that records every message under the topics it subscribes to."""

    def __init__(self, broker, topics=("#",), username=None, password=None, tls=None):
        self.messages = []          # (topic, payload bytes, retain)
        self.cond = threading.Condition()
        # a unique id: a second client with the same id would throw this one off the broker
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="watcher-" + uuid.uuid4().hex[:12])
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=tls.ca)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        if not subscribed.wait(WAIT_S):
            raise AssertionError("watcher could not subscribe")

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload, msg.retain))
            self.cond.notify_all()

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT_S)

    def wait_for(self, predicate, what="message", timeout=WAIT_S, start=0):
        """The first recorded message from index `start` satisfying predicate(topic, payload)."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.messages)):
                    topic, payload, retain = self.messages[i]
                    if predicate(topic, payload):
                        return i, topic, payload
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %s; last messages: %r"
                                         % (what, self.messages[-5:]))
                self.cond.wait(left)

    def mark(self):
        with self.cond:
            return len(self.messages)

    def all(self, topic, start=0):
        with self.cond:
            return [(p, r) for t, p, r in self.messages[start:] if t == topic]

    def close(self):
        self.client.disconnect()   # first: it wakes paho's network thread at once
        self.client.loop_stop()


class Agent:
    """The real agent (`python -m camagent`) on a simulated camera."""

    def __init__(self, workdir, broker, device_id="testcam", mqtt=None, micropython=None,
                 sim_majestic=False, **cfg):
        self.micropython = micropython    # a MicroPython unix binary, instead of CPython
        self.sim = SimCamera(os.path.join(str(workdir), "camera"), majestic=sim_majestic)
        self.device_id = device_id
        self.base = "camagent/" + device_id
        self.broker = broker
        self.stderr_path = os.path.join(str(workdir), "agent.log")
        mqtt_cfg = {"host": "127.0.0.1", "port": broker.port, "keepalive": 5,
                    "state_interval": 30}
        mqtt_cfg.update(mqtt or {})
        self.config = self.sim.write_config(device_id=device_id, mqtt=mqtt_cfg, fast=True, **cfg)
        self.proc = None
        self._log = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=AGENT_PATH, MICROPYPATH=AGENT_PATH + ":.frozen")
        self._log = open(self.stderr_path, "ab")
        python = self.micropython or sys.executable
        self.proc = subprocess.Popen([python, "-m", "camagent", "-c", self.config],
                                     env=env, stdout=self._log, stderr=self._log)
        _started.append(self)
        return self

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
        if self.proc:
            self.proc.wait()

    def stop(self):
        """A clean stop: SIGINT, as the init script does (MicroPython has no SIGTERM
        handling; on CPython either works)."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self):
        self.kill()
        if self._log:
            self._log.close()
        self.sim.close()


def latest_state(watcher, base):
    states = watcher.all(base + "/state")
    return json.loads(states[-1][0]) if states else None


def accepted(state):
    return ((state or {}).get("commands") or {}).get("accepted", 0)


def send(watcher, base, suffix, payload, done=None):
    """Publish a command; return ("state", doc) for the first state that counts it as
    accepted and satisfies done(doc), or ("error", doc) for the agent's error reply."""
    before = accepted(latest_state(watcher, base))
    start = watcher.mark()
    raw = payload if isinstance(payload, bytes) else payload.encode()
    topic = "%s/%s" % (base, suffix)
    watcher.publish(topic, raw)

    def answer(t, p):
        if t == base + "/error":
            doc = json.loads(p)
            return doc["topic"] == topic and doc["payload"] == preview(raw)
        if t == base + "/state":
            doc = json.loads(p)
            return accepted(doc) > before and (done is None or done(doc))
        return False
    i, t, p = watcher.wait_for(answer, "an answer to %s %r" % (topic, raw[:40]), start=start)
    if t.endswith("/error"):
        return "error", json.loads(p)
    return "state", json.loads(p)


def still(state):
    return not state["pan"]["moving"] and not state["tilt"]["moving"]


def availability(watcher, base):
    """The last availability `base` published, or None."""
    got = watcher.all(base + "/availability")
    return got[-1][0] if got else None


def wait_state(watcher, base, done, what):
    """The first state document on `base` that satisfies done(doc)."""
    i, t, p = watcher.wait_for(lambda t, p: t == base + "/state" and done(json.loads(p)), what)
    return json.loads(p)
