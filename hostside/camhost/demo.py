"""`camhost demo`: the agent on a simulated camera, driven over MQTT, no hardware needed.

It starts a private mosquitto on a free loopback port unless --broker
is given, lays out a simulated camera (camhost.simcam: the kernel's GPIO and
/proc files in a temp dir), runs the real agent against it as a subprocess, and
drives a short tour through the same code as `camhost ctl` while a live panel
shows positions, LEDs and IR state. Ctrl-C stops everything; nothing is left
running and the temp dir is removed.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from . import ctl, tools
from .errors import CamhostError
from .mqttclient import BrokerURL, Link
from .simcam import SimCamera

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT_DIR = os.path.join(ROOT, "agent")
VENDOR_DIR = os.path.join(ROOT, "build", "vendor")
START_TIMEOUT_S = 20

# (what the step shows, `camhost ctl` arguments, whether the agent should reject it)
TOUR = (
    ("find the mechanical zero of both axes", ["home"], False),
    ("pan to 120 degrees", ["pan", "120"], False),
    ("tilt to 70 degrees", ["tilt", "70"], False),
    ("save this view as preset 'door'", ["preset", "save", "door"], False),
    ("pan and tilt together, slowly", ["ptz", "--pan", "300", "--tilt", "15", "--speed", "{slow}"],
     False),
    ("one step left", ["move", "left"], False),
    ("back to preset 'door'", ["preset", "goto", "door"], False),
    ("night mode: IR-cut filter out, IR LED on", ["night", "night"], False),
    ("green LED blinking", ["led", "green", "blink"], False),
    ("red LED on", ["led", "red", "on"], False),
    ("a command the agent must refuse", ["pan", "999"], True),
    ("day mode again", ["night", "day"], False),
    ("LEDs off", ["led", "green", "off"], False),
    ("", ["led", "red", "off"], False),
)


def register(subparsers):
    p = subparsers.add_parser("demo", help="simulated camera on a private mosquitto, driven over MQTT",
                              description=__doc__.splitlines()[0])
    p.add_argument("--broker", metavar="URL",
                   help="use this broker instead of starting one (mqtt://host:port)")
    p.add_argument("--device", default="demo", help="device id of the simulated camera")
    p.add_argument("--speedup", type=float, default=3.0, metavar="X",
                   help="run the motors X times faster than the real camera (1-20, default 3)")
    p.add_argument("--pause", type=float, default=1.0, metavar="S",
                   help="seconds between tour steps (default 1)")
    p.add_argument("--no-tour", action="store_true", help="skip the tour: just the live view")
    p.add_argument("--keep-running", action="store_true",
                   help="after the tour keep everything running until Ctrl-C "
                        "(use `camhost ctl --broker URL ...` from another terminal)")
    p.set_defaults(func=main)


def main(args):
    if not 1 <= args.speedup <= 20:
        raise CamhostError("--speedup must be from 1 to 20", exit_code=2)
    if args.pause < 0:
        raise CamhostError("--pause must not be negative", exit_code=2)
    for path, fix in ((os.path.join(AGENT_DIR, "camagent", "__main__.py"),
                       "run the demo from a camagent checkout (make demo)"),
                      (os.path.join(VENDOR_DIR, "umqtt", "simple.py"),
                       "run `make venv` to fetch umqtt.simple")):
        if not os.path.exists(path):
            raise CamhostError("%s is missing: %s" % (path, fix))
    out = sys.stdout
    work = tempfile.mkdtemp(prefix="camhost-demo-")
    broker = sim = agent = link = view = None
    try:
        if args.broker:
            url = BrokerURL(args.broker)
        else:
            broker = PrivateBroker(work).start()
            url = BrokerURL(broker.url)
        _say(out, "broker: %s%s" % (url, "" if args.broker else " (private mosquitto)"))
        # no SD card: a simulated card would be a folder on this computer's disk, and
        # the panel would show the host's free space as the camera's
        sim = SimCamera(os.path.join(work, "camera"), sd_card=False, majestic=True)
        config = sim.write_config(device_id=args.device, mqtt=_agent_mqtt(url),
                                  speedup=args.speedup, night=PICTURE_NIGHT)
        agent = AgentProcess(config, os.path.join(work, "agent.log")).start()
        _say(out, "agent: python -m camagent -c %s (pid %d)" % (config, agent.proc.pid))
        link = Link(url, "camhost-demo")
        _wait_online(link, args.device, agent)
        view = LiveView(link, args.device, out, sim).start()
        failures = [] if args.no_tour else tour(link, args.device, view, args.pause,
                                                args.speedup) + \
            picture_tour(link, args.device, view, sim.majestic, args.pause)
        if args.keep_running or args.no_tour:
            try:
                view.note("running; Ctrl-C stops the agent and the broker. From another "
                          "terminal: %s ctl --broker %s %s home"
                          % (_camhost_command(), url, args.device))
                while agent.alive():
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
            if not agent.alive():
                failures.append("the agent exited: %s" % agent.tail())
        view.stop()
        if not args.no_tour:
            view.summary()
        view = None
        if failures:
            raise CamhostError("demo failed: %s" % "; ".join(failures))
        _say(out, "demo finished: every step did what it should")
        return 0
    finally:
        # a second Ctrl-C must not cut the clean-up short
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        # the agent goes first, while the broker can still carry its "offline"
        forgetter = _Forget(link, args.device) if args.broker and link else None
        for part, stop in ((view, "stop"), (agent, "stop"), (forgetter, "run"),
                           (link, "close"), (broker, "stop"), (sim, "close")):
            if part is not None:
                try:
                    getattr(part, stop)()
                except Exception as e:  # keep cleaning up the rest
                    print("camhost: demo cleanup: %s" % e, file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGINT, previous)


class _Forget:
    """On someone's own broker the demo leaves nothing retained behind: Home Assistant
    would otherwise keep a dead "demo" device."""

    def __init__(self, link, device):
        self.link, self.device = link, device

    def run(self):
        ctl.forget(self.link, ctl.DEFAULT_PREFIX, self.device)


def tour(link, device, view, pause, speedup):
    failures = []
    for text, argv, refused in TOUR:
        # "slowly" is 30 deg/s on the real camera: as much faster as the motors are
        argv = [a.replace("{slow}", "%d" % (30 * speedup)) for a in argv]
        view.note("camhost ctl %s%s" % (" ".join(argv), "   # " + text if text else ""))
        try:
            state, summary = ctl.execute(link, argv, device=device)
            if refused:
                failures.append("ctl %s was accepted, but should have been refused"
                                % " ".join(argv))
            view.result("ok: " + summary)
        except CamhostError as e:
            view.result(("refused, as it should be: %s" if refused else "FAILED: %s") % e,
                        "refused" if refused else "failed")
            if not refused:
                failures.append("ctl %s: %s" % (" ".join(argv), e))
        time.sleep(pause)
    return failures


# AUTO on the simulated majestic's ISP gain, polled every second, switching at most every 2 s
PICTURE_NIGHT = {"gain_poll_s": 1, "min_dwell_s": 2}


def picture_tour(link, device, view, majestic, pause):
    """A snapshot through MQTT, then AUTO following the simulated light as it falls
    and rises (the ISP gain majestic reports goes up in the dark)."""
    base = "%s/%s" % (ctl.DEFAULT_PREFIX, device)
    link.subscribe(base + "/snapshot")
    failures = []

    def step(text, action, done, outcome):
        view.note(text)
        start = link.mark()
        try:
            action()
            link.wait(lambda: any(done(t, p) for t, p in link.messages[start:]), 20, text)
            view.result("ok: " + outcome())
        except CamhostError as e:
            view.result("FAILED: %s" % e)
            failures.append("%s: %s" % (text, e))
        time.sleep(pause)

    def cut(want, colour=None):   # the filter as the state says, and majestic's last /night
        return lambda t, p: t == base + "/state" and \
            (ctl._json(p) or {}).get("ir_cut") == want and \
            (colour is None or majestic.night_calls[-1:] == [colour])

    def gain(value):
        def set_gain():
            majestic.gain = value
        return set_gain
    picture = majestic.image()
    step("camhost demo: %s/snapshot/get   # a JPEG from the simulated majestic" % base,
         lambda: link.publish(base + "/snapshot/get", b""),
         lambda t, p: t == base + "/snapshot" and p == picture,
         lambda: "%d-byte JPEG on %s/snapshot, the bytes majestic served" % (len(picture), base))
    step("camhost ctl night auto   # AUTO follows majestic's ISP gain",
         lambda: ctl.execute(link, ["night", "auto"], device=device), cut("DAY"),
         lambda: "night mode AUTO, daylight (gain %d)" % majestic.gain)
    step("dusk: the simulated sensor's gain rises to 20000", gain(20000), cut("NIGHT", "on"),
         lambda: "AUTO switched to NIGHT; majestic asked for greyscale (/night/%s)"
         % majestic.night_calls[-1])
    step("dawn: the gain falls to 1000", gain(1000), cut("DAY", "off"),
         lambda: "AUTO switched to DAY; majestic back to colour (/night/%s)"
         % majestic.night_calls[-1])
    return failures


def _agent_mqtt(url):
    cfg = {"host": url.host, "port": url.port, "keepalive": 30, "state_interval": 60}
    if url.username:
        cfg["username"], cfg["password"] = url.username, url.password or ""
    if url.tls:
        cfg["tls"] = {"enabled": True, "ca_file": url.ca or "", "cert_file": url.cert or "",
                      "key_file": url.key or ""}
    return cfg


def _wait_online(link, device, agent):
    topic = "%s/%s/availability" % (ctl.DEFAULT_PREFIX, device)
    link.subscribe(topic)
    end = time.monotonic() + START_TIMEOUT_S
    while link.last.get(topic) != b"online":
        if not agent.alive():
            raise CamhostError("the agent exited: %s" % agent.tail())
        if time.monotonic() > end:
            raise CamhostError("the agent did not come online within %d s: %s"
                               % (START_TIMEOUT_S, agent.tail()))
        time.sleep(0.05)


def _camhost_command():
    """How to run camhost from another terminal: the console script beside this Python."""
    script = os.path.join(os.path.dirname(sys.executable), "camhost")
    if os.path.exists(script):
        return os.path.relpath(script) if not os.path.relpath(script).startswith("..") else script
    return "%s -m camhost" % sys.executable


def _say(out, text):
    out.write("camhost demo: %s\n" % text)
    out.flush()


class PrivateBroker:
    """Debian's mosquitto on a free loopback port, with a config of its own (no persistence,
    anonymous, loopback only): a real broker, so what a watching `mosquitto_sub` sees is
    what MQTT says it should (amqtt, the earlier choice, delivered to non-matching
    subscriptions, duplicated and dropped)."""

    def __init__(self, workdir, host="127.0.0.1"):
        self.host = host
        self.port = None
        self.workdir = workdir
        self.proc = None

    @property
    def url(self):
        return "mqtt://%s:%d" % (self.host, self.port)

    def start(self):
        exe = tools.which("mosquitto")
        if not exe:
            raise CamhostError("mosquitto is not installed: run `make deps` (Debian package "
                               "mosquitto), or give --broker URL")
        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
        conf = os.path.join(self.workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d %s\nallow_anonymous true\npersistence false\n"
                    "log_dest none\n" % (self.port, self.host))
            if os.geteuid() == 0:
                f.write("user root\n")
        log = open(os.path.join(self.workdir, "mosquitto.log"), "wb")
        self.proc = subprocess.Popen([exe, "-c", conf], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(os.path.join(self.workdir, "mosquitto.log"), errors="replace") as f:
                    raise CamhostError("mosquitto did not start: %s" % f.read().strip()[-300:])
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise CamhostError("mosquitto did not start listening on %s:%d" % (self.host, self.port))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class AgentProcess:
    """`python -m camagent -c CONFIG` in its own session: Ctrl-C reaches only the demo,
    which then stops the agent with SIGTERM (the agent's clean shutdown path)."""

    def __init__(self, config, log_path):
        self.config = config
        self.log_path = log_path
        self.proc = None
        self._log = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([AGENT_DIR, VENDOR_DIR]))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "camagent", "-c", self.config],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        return self

    def alive(self):
        return self.proc.poll() is None

    def tail(self, lines=5):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " / ".join(text[-lines:]) or "(no output)"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None


class LiveView:
    """The agent's state as a panel redrawn in place (10 times a second), with the
    simulated camera's pin levels and the tour's current step under it. Without a
    terminal it prints the tour's steps and results as plain lines instead."""

    def __init__(self, link, device, out, sim=None):
        self.link = link
        self.base = "%s/%s" % (ctl.DEFAULT_PREFIX, device)
        self.device = device
        self.sim = sim
        self.out = out
        self.tty = out.isatty()
        self.panel = ctl.Panel(out, self.tty)
        self.step = ""
        self.outcome = ""
        self.outcome_style = None
        self.steps = []          # (step, outcome, style) of every finished step
        self.error = None
        self._state_at = time.monotonic()   # when the last state arrived
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self.link.subscribe(self.base + "/state", self.base + "/error")
        self.link.listeners.append(self._on_message)
        if self.tty:
            self._thread = threading.Thread(target=self._render, name="live-view", daemon=True)
            self._thread.start()
            self._dirty.set()
        return self

    def _on_message(self, topic, payload):
        if topic == self.base + "/error":
            doc = ctl._json(payload) or {}
            self.error = doc.get("error")
        elif topic == self.base + "/state":
            self._state_at = time.monotonic()
        self._dirty.set()

    def note(self, step):
        self.step, self.outcome, self.outcome_style = step, "", None
        if not self.tty:
            self.out.write("> %s\n" % step)
            self.out.flush()
        self._dirty.set()

    def result(self, text, style="ok"):
        """The step's outcome; style "refused" or "failed" makes it stand out."""
        self.outcome, self.outcome_style = text, style
        self.steps.append((self.step, text, style))
        if not self.tty:
            self.out.write("  %s\n" % text)
            self.out.flush()
        self._dirty.set()

    def _lines(self):
        state = ctl._json(self.link.last.get(self.base + "/state", b"")) or {}
        avail = self.link.last.get(self.base + "/availability", b"?").decode(errors="replace")
        lines = ctl.panel_lines(self.device, state, avail, self.error,
                                age_s=time.monotonic() - self._state_at)
        if self.sim is not None:
            lines.append(self._pins())
        return lines + ["", "tour: " + self.step, ("      " + self.outcome, self.outcome_style)]

    def summary(self):
        """What the tour did, one line a step: left on screen when the demo ends."""
        ok = sum(1 for _, _, style in self.steps if style == "ok")
        refused = sum(1 for _, _, style in self.steps if style == "refused")
        failed = len(self.steps) - ok - refused
        colour = self.panel.colour
        lines = ["", "tour summary: %d steps: %d ok, %d refused as they should be, %d failed"
                 % (len(self.steps), ok, refused, failed)]
        for step, outcome, style in self.steps:
            mark = {"ok": "ok     ", "refused": "refused", "failed": "FAILED "}[style]
            lines.append("  %s  %s" % (ctl.paint(mark, style, colour), step))
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def _pins(self):
        """What the agent wrote to the simulated GPIO files, as a row of levels."""
        def bits(name):
            levels = self.sim.levels(name)
            levels = levels if isinstance(levels, tuple) else (levels,)
            return "".join("-" if v is None else str(v) for v in levels)
        return "GPIO  pan %s  tilt %s  IR LED %s  IR-cut open/close %s/%s  green %s  red %s" % (
            bits("pan"), bits("tilt"), bits("ir_led"), bits("ircut_open"), bits("ircut_close"),
            bits("led_green"), bits("led_red"))

    def _render(self):
        # redrawn on every message, and anyway 10 times a second for the pin levels
        while not self._stop.is_set():
            self._dirty.wait(0.1)
            self._dirty.clear()
            self.panel.draw(self._lines())
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(2)
            self.panel.draw(self._lines())   # the final picture stays on screen
            self._thread = None
        if self._on_message in self.link.listeners:
            self.link.listeners.remove(self._on_message)
