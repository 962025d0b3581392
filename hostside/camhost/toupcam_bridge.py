"""`camhost toupcam bridge`: a ToupCam microscope camera on MQTT and in Home Assistant.

The MQTT side is camhost.bridge; this module is the camera side. A thread reads the
camera's register reports (UDP 12000) into the state; the camera counts as `online`
while it has reported, or answered a snap, within --stale seconds. Commands:

  snap/take       TAKE (or PRESS)   a full-resolution still, published retained on
                                    snap/image (HA's camera entity shows it)
  <name>/set      a number          write a named register (exposure/set 180)
  register/set    REG=VALUE         write any register by number or name (0x0B=5)

A write is in the state's `unconfirmed` until the camera reports that value back.
"""
import datetime
import threading
import time

from . import toupcam
from . import toupcam_wire as wire
from .bridge import Bridge, BridgeError, node_id
from .errors import CamhostError
from .mqttclient import BROKER_ENV, default_broker

MODEL = "ToupCam wifi microscope camera"


def add_arguments(b):
    b.add_argument("--broker", default=default_broker(), metavar="URL",
                   help="mqtt[s]://[user[:password]@]host[:port] (default $%s or "
                        "%%(default)s)" % BROKER_ENV)
    b.add_argument("--device-id", metavar="ID", help="device id in the topics "
                   "(default toupcam-<host>)")
    b.add_argument("--prefix", default="camagent")
    b.add_argument("--discovery-prefix", default="homeassistant", metavar="PREFIX")
    b.add_argument("--poll", type=float, default=2.0, metavar="S",
                   help="seconds between availability checks (default %(default)s)")
    b.add_argument("--stale", type=float, default=15.0, metavar="S",
                   help="offline after S seconds without a report (default %(default)s)")
    b.add_argument("--request", metavar="FILE", help="the snap request as captured")
    b.add_argument("--out", metavar="DIR", help="also save every still here")
    b.add_argument("--no-decode", action="store_true", help="check SOI/EOI only")


def _label(reg, table):
    names = [n for n, r in sorted(table.items()) if r == reg]
    return names[0] if names else "0x%02X" % reg


class ToupCamBridge:
    def __init__(self, bridge, controls, table, snap_port=wire.SNAP_PORT,
                 request=wire.DEFAULT_REQUEST, stale_s=15.0, timeout=5.0, out_dir=None,
                 decode=True):
        self.bridge, self.controls, self.table = bridge, controls, table
        self.host = controls.camera[0]
        self.snap_port, self.request = snap_port, request
        self.stale_s, self.timeout = stale_s, timeout
        self.out_dir, self.decode = out_dir, decode
        self.registers = {}          # label -> last reported value
        self.unconfirmed = {}        # label -> value written, not yet reported back
        self.snaps = 0
        self.last_snap = None
        self.last_snap_bytes = None
        self.last_snap_size = None
        self.last_heard = None       # monotonic time of the last report or snap
        self.snap_problem = None
        self._stop = threading.Event()
        self._reader = None
        self._lock = threading.Lock()  # the report reader and the command thread
        bridge.add_command("snap/take", self.take_snap)
        bridge.add_command("register/set", self.set_any)
        for name, reg in sorted(table.items()):
            bridge.add_command(name + "/set", lambda payload, reg=reg: self.write(reg, payload))
        self._entities()

    def _entities(self):
        add = self.bridge.add_entity
        add("camera", "snap", {"name": "Last still", "topic": "~/snap/image"})
        add("button", "snap", {"name": "Snap", "command_topic": "~/snap/take",
                               "payload_press": "TAKE", "icon": "mdi:camera-iris"})
        add("sensor", "last_snap", {"name": "Last still taken", "state_topic": "~/state",
                                    "value_template": "{{ value_json.last_snap }}",
                                    "device_class": "timestamp"})
        for name in sorted(self.table):
            add("number", node_id(name), {
                "name": name.replace("_", " ").capitalize(), "command_topic": "~/%s/set" % name,
                "state_topic": "~/state",
                "value_template": "{{ value_json.registers.get('%s') }}" % name,
                "min": 0, "max": 0xFFFFFFFF, "step": 1, "mode": "box"})

    # --- the camera side --------------------------------------------------------------
    def start(self):
        self._reader = threading.Thread(target=self._read_reports, daemon=True)
        self._reader.start()

    def stop(self):
        self._stop.set()
        if self._reader:
            self._reader.join(5)

    def _read_reports(self):
        while not self._stop.is_set():
            try:
                got = self.controls.receive(0.5)
            except OSError as e:
                if not self._stop.is_set():
                    self.bridge.log("reading the camera's reports stopped: %s" % e)
                return
            if got is None:
                continue
            reg, value = got
            label = _label(reg, self.table)
            with self._lock:
                self.last_heard = time.monotonic()
                self.registers[label] = value
                if self.unconfirmed.get(label) == value:
                    del self.unconfirmed[label]
            if not self.bridge.available:
                self.bridge.set_available(True)
            self.publish()

    def poll(self):
        heard = self.last_heard
        self.bridge.set_available(heard is not None and
                                  time.monotonic() - heard <= self.stale_s)
        self.publish()

    def problems(self):
        out = []
        if not self.bridge.available:
            out.append("no report from the camera at %s (UDP %d) within %g s"
                       % (self.host, self.controls.camera[1], self.stale_s)
                       if self.last_heard is not None else
                       "no report from the camera at %s (UDP %d) yet" % (self.host,
                                                                          self.controls.camera[1]))
        if self.controls.last_error:
            out.append("skipped a bad register packet %s" % self.controls.last_error)
        if self.snap_problem:
            out.append(self.snap_problem)
        return out

    def state(self):
        with self._lock:
            registers, unconfirmed = dict(self.registers), dict(self.unconfirmed)
        return {"registers": registers, "unconfirmed": unconfirmed,
                "snaps": self.snaps, "last_snap": self.last_snap,
                "last_snap_bytes": self.last_snap_bytes, "last_snap_size": self.last_snap_size,
                "camera": self.host, "problems": self.problems(),
                "commands": self.bridge.command_counts()}

    def publish(self):
        self.bridge.publish_state(self.state())

    # --- commands -------------------------------------------------------------------
    def take_snap(self, payload):
        word = payload.strip().upper()
        if word not in (b"TAKE", b"PRESS"):
            raise BridgeError("snap/take takes TAKE or PRESS")
        try:
            got = toupcam.snap(self.host, self.snap_port, self.request, self.timeout)
            size = toupcam.decode_check(got.jpeg) if self.decode else None
        except CamhostError as e:
            self.snap_problem = "the last snap failed: %s" % e
            raise
        self.snap_problem = None
        self.last_heard = time.monotonic()
        self.snaps += 1
        self.last_snap = got.when.isoformat(timespec="seconds")
        self.last_snap_bytes = len(got.jpeg)
        self.last_snap_size = list(size) if size else None
        self.bridge.publish("snap/image", got.jpeg, retain=True)
        if self.out_dir:
            toupcam.save(got.jpeg, self.out_dir + "/", got.when)

    def write(self, reg, payload):
        try:
            value = toupcam.parse_value(payload.strip().decode("ascii"))
        except (CamhostError, UnicodeError) as e:
            raise BridgeError(str(e) if isinstance(e, CamhostError) else
                              "the value must be a whole number, e.g. 180")
        with self._lock:
            self.unconfirmed[_label(reg, self.table)] = value
        self.controls.write(reg, value)

    def set_any(self, payload):
        text = payload.decode("ascii", "replace").strip()
        reg_text, sep, value_text = text.partition("=")
        if not sep:
            raise BridgeError("register/set takes REG=VALUE, e.g. 0x03=180 or exposure=180")
        try:
            reg = toupcam.register_number(reg_text.strip(), self.table)
        except CamhostError as e:
            raise BridgeError(str(e))
        self.write(reg, value_text.encode())


def run(args, table):
    """The CLI's `bridge`: until SIGINT/SIGTERM."""
    import signal
    controls = toupcam.Controls(args.host, args.control_port, args.listen_port)
    try:
        device_id = args.device_id or "toupcam-" + args.host.replace(".", "-").replace(":", "-")
        bridge = Bridge(args.broker, device_id, {"model": MODEL, "manufacturer": "ToupTek"},
                        prefix=args.prefix, discovery_prefix=args.discovery_prefix)
        tb = ToupCamBridge(bridge, controls, table, args.snap_port,
                           toupcam.read_request(args.request), args.stale, args.timeout,
                           args.out, not args.no_decode)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *a: bridge.stop())
        bridge.connect()
        print("bridging the ToupCam at %s as %s on %s" % (args.host, bridge.base, bridge.broker),
              flush=True)
        tb.start()
        try:
            bridge.run_forever(tb.poll, args.poll, after_command=tb.publish)
        except KeyboardInterrupt:
            pass
        finally:
            bridge.close()
            tb.stop()
    finally:
        controls.close()
    return 0
