"""`camhost ctl`: control camagent cameras over MQTT.

Each command publishes to the agent's command topic, then waits for the state
that results, or for the agent's error reply, whose sentence becomes the error
message. Values are passed to the agent as typed, so the agent is the one judge
of what is valid. Exit codes: 0 done, 1 the agent rejected the command,
2 usage, 3 no answer in time or agent offline, 4 broker unreachable or refused.
"""
import argparse
import json
import os
import re
import shutil
import sys

from .errors import CamhostError
from .mqttclient import Link, default_broker

DEFAULT_PREFIX = "camagent"
DEFAULT_TIMEOUT_S = 60


def register(subparsers):
    p = subparsers.add_parser("ctl", help="control camagent cameras over MQTT",
                              description=__doc__.splitlines()[0],
                              epilog="Broker URL: mqtt://[user[:password]@]host[:port], "
                                     "mqtts://...?ca=FILE[&cert=FILE&key=FILE]; default "
                                     "$CAMHOST_BROKER or mqtt://127.0.0.1:1883.")
    p.add_argument("--broker", metavar="URL", default=None, help="MQTT broker URL")
    p.add_argument("--device", metavar="ID", help="agent device id (default: the only one online)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix (default %(default)s)")
    p.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds to wait for the result (default %(default)s)")
    add_commands(p)
    p.set_defaults(func=main)


# The agent's vocabulary (agent/camagent/commands.py): checked here, before anything is
# sent, so every wrong word gets the same kind of answer in the words the user typed.
DIRECTIONS = ("LEFT", "RIGHT", "UP", "DOWN")
NIGHT_MODES = ("DAY", "NIGHT", "AUTO")
LEDS = ("green", "red")
LED_MODES = ("ON", "OFF", "BLINK")
IR_VALUES = {"led": ("ON", "OFF"), "cut": ("DAY", "NIGHT")}


def _word(what, accepted, upper=True):
    def parse(text):
        word = text.upper() if upper else text.lower()
        if word not in accepted:
            raise argparse.ArgumentTypeError("%s %r is not one of %s"
                                             % (what, text, ", ".join(accepted)))
        return word
    parse.__name__ = what
    return parse


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("%s: give a timeout from 0 to 3600 s (more than 0)"
                                         % text)
    return value


def add_commands(parser):
    sub = parser.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)
    sub.add_parser("list", help="agents on the broker, online or not")
    f = sub.add_parser("forget", help="remove a retired camera's retained discovery, state "
                                      "and availability from the broker (Home Assistant "
                                      "then drops the device)")
    f.add_argument("forget_device", metavar="DEVICE")
    f.add_argument("--discovery-prefix", default="homeassistant",
                   help="Home Assistant's discovery prefix (default %(default)s)")
    s = sub.add_parser("status", help="the agent's current state")
    s.add_argument("--json", action="store_true", help="print the state document as JSON")
    w = sub.add_parser("watch", help="live state panel, updated in place (Ctrl-C ends)")
    w.add_argument("--count", type=int, metavar="N", help="stop after N state updates")
    for axis in ("pan", "tilt"):
        a = sub.add_parser(axis, help="move %s to DEGREES (or --by DEGREES)" % axis)
        a.add_argument("degrees", metavar="DEGREES")
        a.add_argument("--by", action="store_true", help="relative move (signed degrees)")
    z = sub.add_parser("ptz", help="absolute pan and/or tilt, with optional speed")
    z.add_argument("--pan", metavar="DEG")
    z.add_argument("--tilt", metavar="DEG")
    z.add_argument("--speed", metavar="DEG_PER_S")
    m = sub.add_parser("move", help="one increment LEFT, RIGHT, UP or DOWN")
    m.add_argument("direction", type=_word("DIRECTION", DIRECTIONS), metavar="DIRECTION",
                   help="one of %s (any case)" % ", ".join(DIRECTIONS))
    sub.add_parser("stop", help="stop both motors now")
    sub.add_parser("home", help="find the mechanical zero of both axes, then park")
    r = sub.add_parser("preset", help="save, goto or delete a named position; list them")
    r.add_argument("action", choices=("save", "goto", "delete", "list"))
    r.add_argument("name", nargs="?", default="", help="the preset's name (not for list)")
    i = sub.add_parser("ir", help="IR illuminator (led ON|OFF) or IR-cut filter (cut DAY|NIGHT)")
    i.add_argument("part", choices=("led", "cut"))
    i.add_argument("value", metavar="VALUE", help="led: ON or OFF; cut: DAY or NIGHT (any case)")
    n = sub.add_parser("night", help="night mode DAY, NIGHT or AUTO")
    n.add_argument("mode", type=_word("MODE", NIGHT_MODES), metavar="MODE",
                   help="one of %s (any case)" % ", ".join(NIGHT_MODES))
    e = sub.add_parser("led", help="front LED green|red ON, OFF or BLINK")
    e.add_argument("color", type=_word("LED", LEDS, upper=False), metavar="LED",
                   help="one of %s" % ", ".join(LEDS))
    e.add_argument("mode", type=_word("MODE", LED_MODES), metavar="MODE",
                   help="one of %s (any case)" % ", ".join(LED_MODES))
    return sub


def check(args):
    """What argparse cannot say about one argument alone, before anything connects."""
    c = args.ctl_command
    if c == "preset" and args.action != "list" and not args.name:
        raise CamhostError("preset %s needs a NAME: camhost ctl preset %s NAME"
                           % (args.action, args.action), 2)
    if c == "ir" and args.value.upper() not in IR_VALUES[args.part]:
        raise CamhostError("ir %s: %r is not one of %s" % (args.part, args.value,
                           ", ".join(IR_VALUES[args.part])), 2)


def main(args):
    check(args)
    link = Link(args.broker or default_broker())
    try:
        return run(link, args, sys.stdout)
    finally:
        link.close()


def run(link, args, out):
    """Run one parsed ctl command over an open Link; returns the exit code."""
    if args.ctl_command == "list":
        return list_agents(link, args.prefix, out)
    if args.ctl_command == "forget":
        if find_agents(link, args.prefix).get(args.forget_device, (None,))[0] == "online":
            raise CamhostError("%s is online: stop its agent first, or it publishes its "
                               "discovery again" % args.forget_device, exit_code=2)
        cleared = forget(link, args.prefix, args.forget_device, args.discovery_prefix)
        out.write("%s: removed %d retained message%s\n"
                  % (args.forget_device, len(cleared), "" if len(cleared) == 1 else "s"))
        return 0 if cleared else 3
    agent = Agent(link, args.prefix, args.device, args.timeout)
    if args.ctl_command == "status":
        if args.json:
            out.write(json.dumps(agent.state, indent=2, sort_keys=True) + "\n")
        else:
            out.write("\n".join(t if isinstance(t, str) else t[0] for t in
                                 panel_lines(agent.id, agent.state, agent.availability)) + "\n")
        return 0
    if args.ctl_command == "watch":
        return watch(agent, out, args.count)
    state, summary = command(agent, args)
    out.write("%s: %s\n" % (agent.id, summary))
    return 0


def execute(link, argv, prefix=DEFAULT_PREFIX, device=None, timeout=DEFAULT_TIMEOUT_S):
    """Run `camhost ctl ARGV...` on an open Link and return (state, summary line).

    The demo's tour uses this: the same parsing and waiting as the command line.
    """
    parser = argparse.ArgumentParser(prog="camhost ctl", add_help=False)
    add_commands(parser)
    args = parser.parse_args(argv)
    check(args)
    return command(Agent(link, prefix, device, timeout), args)


# --- agents -------------------------------------------------------------------------
def find_agents(link, prefix):
    """{device id: (availability, state dict or None)} from the retained topics."""
    link.subscribe(prefix + "/+/availability", prefix + "/+/state")
    agents = {}
    with link.cond:
        last = dict(link.last)
    for topic, payload in last.items():
        parts = topic.split("/")
        if len(parts) != len(prefix.split("/")) + 2 or not topic.startswith(prefix + "/"):
            continue
        device, kind = parts[-2], parts[-1]
        avail, state = agents.get(device, (None, None))
        if kind == "availability":
            avail = payload.decode(errors="replace")
        elif kind == "state":
            state = _json(payload)
        agents[device] = (avail, state)
    return agents


def forget(link, prefix, device, discovery_prefix="homeassistant"):
    """Clear every retained message of one device: its discovery configs (whatever
    entities it announced) and everything under its base topic. Returns the topics."""
    mine = (discovery_prefix + "/+/camagent_%s/+/config" % device, "%s/%s/#" % (prefix, device))
    start = link.mark()
    link.subscribe(*mine)
    with link.cond:
        retained = sorted({t for t, p in link.messages[start:] if p and not
                           t.startswith("camhost/probe/")})
    for topic in retained:
        link.publish(topic, b"", retain=True)   # an empty retained message deletes it
    return retained


def list_agents(link, prefix, out):
    agents = find_agents(link, prefix)
    if not agents:
        print("no agents under %s/ on %s" % (prefix, link.broker), file=sys.stderr)
        return 0
    out.write("%-20s %-8s %8s %8s  %s\n" % ("DEVICE", "STATUS", "PAN", "TILT", "VERSION"))
    for device in sorted(agents):
        avail, state = agents[device]
        state = state or {}
        out.write("%-20s %-8s %8s %8s  %s\n" % (
            device, avail or "?", _deg(state.get("pan", {}).get("position")),
            _deg(state.get("tilt", {}).get("position")), state.get("version", "?")))
    return 0


class Agent:
    """One agent's topics on a Link, with its retained state as the starting point."""

    def __init__(self, link, prefix, device, timeout):
        self.link = link
        self.timeout = timeout
        agents = find_agents(link, prefix)
        if device is None:
            online = sorted(d for d, (avail, state) in agents.items() if avail == "online")
            if not online:
                raise CamhostError("no camagent is online under %s/ on %s; is the agent running "
                                   "and pointed at this broker?" % (prefix, link.broker), 3)
            if len(online) > 1:
                raise CamhostError("several agents are online (%s); choose one with --device"
                                   % ", ".join(online), 2)
            device = online[0]
        if device not in agents:
            raise CamhostError("no agent %r under %s/ on %s (camhost ctl list shows the known "
                               "ones)" % (device, prefix, link.broker), 3)
        self.id = device
        self.base = "%s/%s" % (prefix, device)
        self.availability, self.state = agents[device]
        self.state = self.state or {}
        link.subscribe(self.base + "/error")

    def counted(self, state):
        return (state.get("commands") or {}).get("accepted", 0)

    def send(self, suffix, payload, done=None):
        """Publish one command; return the first state showing it done, or raise the
        agent's error reply.

        The agent counts the commands it accepts in its state document and publishes
        the state after each one (a rejection is answered on the error topic only),
        so the answer to ours is the first later state, counted after ours, that shows
        what the command must produce (`done`).
        """
        if self.availability != "online":
            raise CamhostError("agent %s is %s; nothing sent" % (self.id, self.availability or
                                                                  "not online"), 3)
        topic = "%s/%s" % (self.base, suffix)
        raw = payload.encode()
        before = self.counted(self.state)
        start = self.link.mark()
        self.link.publish(topic, raw)
        quoted = preview(raw)
        result = {}
        cursor = [start]

        def answered():
            # Each message is judged once, in order: `done` may keep state (homing seen
            # to run), so an earlier state must not be looked at again after a later one.
            while cursor[0] < len(self.link.messages):
                t, p = self.link.messages[cursor[0]]
                cursor[0] += 1
                if t == self.base + "/error":
                    doc = _json(p) or {}
                    if doc.get("topic") == topic and doc.get("payload") == quoted:
                        result["error"] = doc.get("error", "rejected")
                        return True
                elif t == self.base + "/availability" and p == b"offline":
                    result["offline"] = True
                    return True
                elif t == self.base + "/state":
                    state = _json(p)
                    if state and self.counted(state) > before and (done is None or done(state)):
                        result["state"] = state
                        return True
            return False
        self.link.wait(answered, self.timeout, "%s to answer on %s" % (self.id, topic))
        if "error" in result:
            raise CamhostError("%s: %s" % (self.id, result["error"]), 1)
        if "offline" in result:
            raise CamhostError("agent %s went offline before answering" % self.id, 3)
        self.state = result["state"]
        return self.state


def _still(state):
    return not state["pan"]["moving"] and not state["tilt"]["moving"]


# What a command's own result looks like. Any client's accepted command raises the
# agent's count and brings a state, so the count alone does not say whose it was: an
# automation toggling a LED would otherwise answer for `ctl home` (issue 9, item 14).
def _homing_done():
    seen = {}

    def done(state):
        axes = (state["pan"], state["tilt"])
        if any(a["moving"] or not a["homed"] for a in axes):
            seen["run"] = True      # the homing run itself
            return False
        return bool(seen) and all(a["homed"] for a in axes)
    return done


def _at(requested):
    """Still, and every requested axis where the (clamped) request puts it."""
    def done(state):
        if not _still(state):
            return False
        for axis, deg in requested.items():
            if deg is None:
                continue
            try:
                want = float(deg)
            except ValueError:
                return True         # the agent refuses it: its error answers
            a = state[axis]
            if abs(a["position"] - min(max(want, a["min"]), a["max"])) > 0.11:
                return False
        return True
    return done


def _shows(key, value):
    return lambda state: state.get(key) == value


def command(agent, args):
    """Send the command `args` describes; return (state, summary line)."""
    c = args.ctl_command
    if c in ("pan", "tilt"):
        done = _still if args.by else _at({c: args.degrees})
        st = agent.send("%s/%s" % (c, "step" if args.by else "set"), args.degrees, done)
        return st, "%s at %s" % (c, _deg(st[c]["position"]))
    if c == "ptz":
        fields = ", ".join('"%s": %s' % (key, _json_value(getattr(args, key)))
                           for key in ("pan", "tilt", "speed") if getattr(args, key) is not None)
        st = agent.send("ptz/set", "{%s}" % fields,
                        _at({k: getattr(args, k) for k in ("pan", "tilt")}))
        return st, "pan at %s, tilt at %s" % (_deg(st["pan"]["position"]),
                                              _deg(st["tilt"]["position"]))
    if c == "move":
        st = agent.send("ptz/move", args.direction.upper(), _still)
        return st, "pan at %s, tilt at %s" % (_deg(st["pan"]["position"]),
                                              _deg(st["tilt"]["position"]))
    if c == "stop":
        st = agent.send("ptz/stop", "STOP", _still)
        return st, "stopped at pan %s, tilt %s" % (_deg(st["pan"]["position"]),
                                                   _deg(st["tilt"]["position"]))
    if c == "home":
        st = agent.send("ptz/home", "HOME", _homing_done())
        if not (st["pan"]["homed"] and st["tilt"]["homed"]):
            raise CamhostError("%s: homing was interrupted before both axes were homed"
                               % agent.id, 1)
        return st, "homed; parked at pan %s, tilt %s" % (_deg(st["pan"]["position"]),
                                                         _deg(st["tilt"]["position"]))
    if c == "preset":
        return _preset(agent, args)
    if c == "ir":
        key = "ir_led" if args.part == "led" else "ir_cut"
        st = agent.send(key + "/set", args.value.upper(), _shows(key, args.value.upper()))
        return st, "IR LED %s, IR-cut %s" % (st["ir_led"], st["ir_cut"])
    if c == "night":
        st = agent.send("night_mode/set", args.mode.upper(),
                        _shows("night_mode", args.mode.upper()))
        return st, "night mode %s (IR LED %s, IR-cut %s)" % (st["night_mode"], st["ir_led"],
                                                             st["ir_cut"])
    if c == "led":
        st = agent.send("led_%s/set" % args.color, args.mode.upper(),
                        _shows("led_" + args.color, args.mode.upper()))
        return st, "%s LED %s" % (args.color, st["led_" + args.color])
    raise CamhostError("unknown ctl command %r" % c, 2)


def _preset(agent, args):
    if args.action == "list":
        presets = agent.state.get("presets") or {}
        lines = ["%s (pan %s, tilt %s)" % (n, _deg(p["pan"]), _deg(p["tilt"]))
                 for n, p in sorted(presets.items())]
        return agent.state, "presets: " + ("; ".join(lines) if lines else "none")
    if args.action == "goto":
        st = agent.send("preset/goto", args.name, _still)
        return st, "at preset %s: pan %s, tilt %s" % (args.name, _deg(st["pan"]["position"]),
                                                      _deg(st["tilt"]["position"]))
    st = agent.send("preset/" + args.action, args.name)
    names = sorted(st.get("presets") or {})
    return st, "preset %s %s; presets: %s" % (args.name, "saved" if args.action == "save"
                                              else "deleted", ", ".join(names) or "none")


# --- watch ----------------------------------------------------------------------------
def watch(agent, out, count=None):
    tty = out.isatty()
    view = Panel(out, tty)
    link, updates = agent.link, 0
    errors = []
    start = link.mark()
    view.draw(panel_lines(agent.id, agent.state, agent.availability))
    try:
        while count is None or updates < count:
            # no deadline: an agent may stay quiet for a day (state_interval up to 86400 s)
            link.wait(lambda: link.mark() > start)
            with link.cond:
                new, start = link.messages[start:], len(link.messages)
            for topic, payload in new:
                if topic == agent.base + "/state":
                    agent.state = _json(payload) or agent.state
                    updates += 1
                elif topic == agent.base + "/availability":
                    agent.availability = payload.decode(errors="replace")
                elif topic == agent.base + "/error":
                    doc = _json(payload) or {}
                    errors.append("%s: %s" % (doc.get("topic", "?").rsplit("/", 2)[-2:][0],
                                              doc.get("error", "?")))
            lines = panel_lines(agent.id, agent.state, agent.availability,
                                errors[-1] if errors else None)
            view.draw(lines)
    except KeyboardInterrupt:
        pass
    return 0


class Panel:
    """Redraws a block of lines in place on a terminal (ANSI), or prints a line per
    update when the output is not a terminal."""

    def __init__(self, out, tty):
        self.out = out
        self.tty = tty
        self.colour = tty and use_colour(out)
        self.height = 0

    def draw(self, lines):
        """`lines`: strings, or (text, style) pairs for a line to stand out (see paint)."""
        lines = [line if isinstance(line, tuple) else (line, None) for line in lines]
        if self.tty:
            width = shutil.get_terminal_size((80, 24)).columns
            text = ""
            if self.height:
                text = "\x1b[%dF" % self.height   # back to the panel's first line
            # cut to the width before painting, so no colour code is cut off
            text += "\x1b[J" + "\n".join(paint(t[:width - 1], style, self.colour)
                                         for t, style in lines) + "\n"
            self.out.write(text)
            self.height = len(lines)
        else:
            self.out.write(" | ".join(t for t, _ in lines[1:4]) + "\n")
        self.out.flush()


def use_colour(out):
    """ANSI colour only on a terminal that has it, and never when NO_COLOR is set
    (https://no-color.org)."""
    return (out.isatty() and "NO_COLOR" not in os.environ
            and os.environ.get("TERM", "dumb") != "dumb")


def paint(text, style, colour):
    """`text` in one of a few ANSI styles (ok, refused, failed, error), or as it is."""
    code = {"ok": "32", "refused": "1;33", "failed": "1;31", "error": "31"}.get(style)
    return "\x1b[%sm%s\x1b[0m" % (code, text) if colour and code else text


def panel_lines(device, state, availability, last_error=None, age_s=0):
    """The live view: a few lines that fit in 80 columns. `age_s`: how long ago the
    state arrived, so the uptime moves between the agent's state publications."""
    st = state or {}
    pan, tilt = st.get("pan") or {}, st.get("tilt") or {}
    up = st.get("uptime")
    if up is not None:
        up += int(age_s)
    lines = ["%s  [%s]  camagent %s  up %s" % (device, availability or "?", st.get("version", "?"),
                                               "%d s" % up if up is not None else "?"),
             _axis_line("pan ", pan), _axis_line("tilt", tilt),
             "IR LED %-3s  IR-cut %-5s  night mode %-5s  light %s" % (
                 st.get("ir_led", "?"), st.get("ir_cut", "?"), st.get("night_mode", "?"),
                 "-" if st.get("light") is None else st.get("light")),
             "LEDs  green %s %-5s  red %s %-5s  wifi power %s" % (
                 _dot(st.get("led_green")), st.get("led_green", "?"), _dot(st.get("led_red")),
                 st.get("led_red", "?"), st.get("wifi_power", "?"))]
    presets = st.get("presets") or {}
    lines.append("presets: " + (", ".join("%s (%s, %s)" % (n, _deg(p.get("pan")),
                                                           _deg(p.get("tilt")))
                                          for n, p in sorted(presets.items())) or "none"))
    counts = st.get("commands") or {}
    lines.append("wifi %s  free memory %s  SD free %s  commands %s ok / %s rejected" % (
        "%s dBm" % st["wifi_rssi"] if st.get("wifi_rssi") is not None else "-",
        _size(st.get("memory_free")), _size(st.get("sd_free")), counts.get("accepted", 0),
        counts.get("rejected", 0)))
    if last_error:
        lines.append(("last error: " + last_error, "error"))
    return lines


def _axis_line(name, axis, width=30):
    lo, hi, pos = axis.get("min"), axis.get("max"), axis.get("position")
    bar = "?" * width
    if None not in (lo, hi, pos) and hi > lo:
        at = int(round((pos - lo) / (hi - lo) * (width - 1)))
        at = min(max(at, 0), width - 1)
        bar = "-" * at + "o" + "-" * (width - 1 - at)
    flags = []
    if axis.get("moving"):
        flags.append("moving")
    if axis.get("homed") is False:
        flags.append("not homed")
    return "%s [%s] %7s  %s" % (name, bar, _deg(pos), " ".join(flags))


def _dot(mode):
    return {"ON": "*", "BLINK": "~", "OFF": "."}.get(mode, "?")


def _size(n):
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0


# --- helpers --------------------------------------------------------------------------
def preview(data, limit=64):
    """The agent's rendering of a payload in its error documents (camagent.commands)."""
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else "\\x%02x" % b for b in data[:limit])


def _deg(value):
    return "%.1f°" % value if isinstance(value, (int, float)) else "?"


def _json(payload):
    try:
        return json.loads(payload)
    except ValueError:
        return None


# JSON's number grammar, ASCII digits only (float() would also take "1_000", " 90", "٩٠")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _json_value(text):
    """`text` as a JSON value: a number as typed when it is one, else a string, which
    the agent refuses with its own sentence (as it refuses `pan ٩٠`)."""
    return text if _NUMBER.fullmatch(text) else json.dumps(text)
