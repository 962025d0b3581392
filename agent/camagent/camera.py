"""The camera: every device built from the config's board profile, on one loop.

A GPIO line that fails takes out only the device it belongs to: that device is
released and refuses its commands, naming the fault; the others carry on.
"""
import sys

from . import boards
from .gpio import DeadLine, Gpio, GpioError
from .ir import Ir
from .led import Led
from .light import FileLight
from .loop import Loop
from .persist import PositionStore, ensure_dir
from .power import Power
from .settings import Settings
from .stepper import Stepper

ON_OFF = ("OFF", "ON")


# Devices a failing GPIO line can take out of service, named as in the state document.
# wifi_power is written once at start and is not counted: the agent works without it.
DEVICES = ("pan", "tilt", "ir_cut", "ir_led", "led_green", "led_red", "sd_reset")


class NoDeviceLeft(BaseException):
    """Every device is out of service: the agent cannot work at all and ends.
    BaseException, like KeyboardInterrupt, so no handler meant for a broken
    socket or a bad command (`except Exception`) swallows it."""


class Camera:
    def __init__(self, cfg, gpio=None, loop=None):
        self.cfg = cfg
        self.board = boards.profile(cfg["board"], cfg["overrides"])
        self.gpio = gpio or Gpio(cfg["gpio_root"])
        self.loop = loop or Loop(cfg["timer_spin_us"])
        self.now = self.loop.clock
        self.on_change = None  # called by changed() (not per half-step)
        self.closed = False
        self.state_dir = cfg["state_dir"]
        self.failed = {}       # device -> the sentence saying why it is out of service
        self.unreported = []   # (device, sentence) not yet published on <base>/error
        self._owner = {}       # pin -> (device, line label): a GpioError names its pin
        self._lines = {}       # device -> its lines, all written low when it fails
        early = []             # GpioErrors of lines that could not be claimed
        # first: every change notifies it, also a fault while claiming the lines
        self.settings = Settings(self, self.state_dir + "/settings.json",
                                 cfg["persist_min_interval_s"])
        pins = self.board["pins"]
        try:
            out = self._claim
            # wifi power first (the driver may already be loading) and kept at exit
            wifi = out(early, "wifi_power", pins["wifi_power"], 1 if cfg["wifi_power"] else 0,
                       keep=True)
            self.power = Power(self, wifi, out(early, "sd_reset", pins["sd_reset"]),
                               self.board["sd_reset_ms"])
            for name in ("pan", "tilt"):
                coils = []
                for i, pin in enumerate(pins[name]):
                    coils.append(out(early, name, pin, label="coil " + "ABCD"[i]))
                setattr(self, name, Stepper(name, coils, self.board[name], self))
            self.ir = Ir(self, out(early, "ir_led", pins["ir_led"]),
                         out(early, "ir_cut", pins["ircut_open"], label="open coil"),
                         out(early, "ir_cut", pins["ircut_close"], label="close coil"),
                         self.board, cfg["night"])
            self.leds = {}
            for colour in ("green", "red"):
                self.leds[colour] = Led(self, out(early, "led_" + colour, pins["led_" + colour]),
                                        cfg["led_blink_ms"])
            self.axes = {"pan": self.pan, "tilt": self.tilt}
            # what takes each device out of service (wifi_power: written once, left be)
            self._devices = {"pan": self.pan, "tilt": self.tilt, "ir_cut": self.ir,
                             "ir_led": self.ir, "led_green": self.leds["green"],
                             "led_red": self.leds["red"], "sd_reset": self.power}
            for e in early:   # the devices exist now: those lines' devices go out of service
                self.fault(e)
        except BaseException:
            self.gpio.release_all()
            raise
        ensure_dir(self.state_dir)
        self.positions = PositionStore(self, self.state_dir + "/position.json",
                                       cfg["persist_min_interval_s"])
        saved = self.positions.load()   # None, or a checked position for every axis
        if saved:
            for name, axis in self.axes.items():
                axis.restore(saved[name])
        for dev in (self.pan, self.tilt, self.ir, self.leds["green"], self.leds["red"],
                    self.power, self.positions, self.settings):
            self.loop.add(dev)
        self.light_source = None
        self.channel = None    # the local channel (main.py), when it is on
        if cfg["light_file"]:
            self.light_source = FileLight(self, cfg["light_file"], cfg["light_poll_s"])
            self.loop.add(self.light_source)
        self.snapshot = None       # the MQTT session's snapshot.Relay, when majestic is there
        self.night_colour = None
        self.majestic = None
        if cfg["majestic"]["port"]:
            from . import daynight   # majestic's parts (and their heap) only with majestic
            self.majestic = daynight.attach(self, cfg)

    def _claim(self, early, device, pin, level=0, keep=False, label=None):
        """One output line of `device`; a DeadLine if it cannot be claimed (the error
        goes to `early`), so one bad line takes out only its own device."""
        self._owner[pin] = (device, label)
        try:
            line = self.gpio.output(pin, level, keep)
        except GpioError as e:
            early.append(e)
            line = DeadLine(e)
        self._lines.setdefault(device, []).append(line)
        return line

    def start(self):
        """Power-on actions: SD reader reset, known IR state (the saved settings, or
        the defaults), optional homing. A line failing here takes out its device; the
        start goes on with the others."""
        if self.cfg["sd_reset_on_start"] and "sd_reset" not in self.failed:
            self._attempt(self.power.sd_reset)
        # the mode is set whatever failed: AUTO with a dead IR-cut coil still drives the LED
        self._attempt(self.settings.restore, self.cfg["night"]["initial_mode"])
        if self.cfg["home_on_boot"]:
            for axis in (self.pan, self.tilt):
                if axis.name not in self.failed:
                    self._attempt(axis.home)

    def run(self, run=None):
        """Run the loop (or `run`, a bounded run in tests); a line that fails in a
        device's timer takes out that device and the loop goes on."""
        run = run or self.loop.run
        while True:
            try:
                return run()
            except GpioError as e:
                self.fault(e)

    def _attempt(self, action, arg=None):
        """action(arg); after a fault that took out one of the devices it uses, once
        more, for the parts still working."""
        while True:
            before = len(self.failed)
            try:
                return action() if arg is None else action(arg)
            except GpioError as e:
                self.fault(e)
            if len(self.failed) == before:
                return

    # --- hardware faults ----------------------------------------------------------
    def fault(self, e, answered=False):
        """GpioError `e` from a line: release its device (every line low, as far as
        they can be written), keep it out of service with a sentence in `problems`
        and on stderr, and queue the sentence for <base>/error unless `answered` (a
        command's own error reply carries it). Returns the sentence. Raises
        NoDeviceLeft once every device is out of service."""
        owner = self._owner.get(e.pin)
        if owner is None:
            raise e       # not a line of ours: nothing to take out of service
        device, label = owner
        why = self.failed.get(device)
        if why is None:
            why = "%s is out of service: GPIO %d%s: %s" % (
                device, e.pin, " (%s)" % label if label else "", e.reason)
            self.failed[device] = why
            if not answered:
                self.unreported.append((device, why))
            print("camagent: " + why, file=sys.stderr)
            if device in self._devices:
                self._devices[device].out_of_service(device)
                self._release_lines(device)
            self.changed()
            if all(name in self.failed for name in DEVICES):
                if answered:     # no command reply goes out now: report it with the rest
                    self.unreported.append((device, why))
                raise NoDeviceLeft("every device is out of service, the last: " + why)
        return why

    def _release_lines(self, device):
        for line in self._lines.get(device, ()):
            try:
                line.set(0)
            except GpioError:
                pass   # the failing line itself: the others still go low

    # --- notifications from the devices -------------------------------------------
    def changed(self):
        self.settings.note()
        if self.on_change is not None:   # the MQTT session: publish the new state
            self.on_change()

    def motion_started(self):
        self.positions.moving()

    def motion_finished(self):
        if not self.moving:
            self.positions.resting(self.now())

    @property
    def moving(self):
        return self.pan.moving or self.tilt.moving

    @property
    def busy(self):
        """Something is timed right now: a move, an IR-cut pulse or an SD reset pulse.
        A blocking call (an MQTT connect) now would stretch it."""
        return self.moving or self.ir.pulsing or self.power.sd_resetting

    # --- state --------------------------------------------------------------------
    def hardware_state(self):
        doc = {}
        for name, axis in self.axes.items():
            doc[name] = {"position": axis.position_deg(), "steps": axis.steps,
                         "target_steps": axis.target, "moving": axis.moving,
                         "homed": axis.homed, "clamped": axis.clamped,
                         "min": axis.min_deg, "max": axis.max_deg}
        doc["ir_led"] = ON_OFF[self.ir.led]
        doc["ir_cut"] = self.ir.cut
        doc["night_mode"] = self.ir.mode
        doc["led_green"] = self.leds["green"].mode
        doc["led_red"] = self.leds["red"].mode
        doc["wifi_power"] = ON_OFF[self.power.wifi]
        doc["problems"] = self.problems()
        return doc

    def problems(self):
        """Trouble the agent works around but the user should fix (a full flash, a bad
        light file), as sentences; empty when all is well."""
        found = [self.failed[name] for name in DEVICES + ("wifi_power",)
                 if name in self.failed]
        for source in (self.positions, self.settings, self.light_source, self.channel,
                       self.night_colour):
            if source is not None and source.error:
                found.append(source.error)
        return found

    def close(self):
        """Leave the hardware safe: motors stopped with coils released, IR-cut coils low,
        the SD reader out of reset. A second call does nothing."""
        if self.closed:
            return
        self.closed = True
        errors = []
        for device, step in (("pan", self.pan.stop), ("tilt", self.tilt.stop),
                             ("ir_cut", self.ir.release), ("sd_reset", self.power.release),
                             (None, self.positions.flush), (None, self.settings.flush),
                             (None, self.gpio.release_all)):
            try:
                if device in self.failed:
                    self._release_lines(device)   # once more, quietly: its fault is known
                else:
                    step()
            except Exception as e:  # keep going: every later step is also a safety step
                errors.append(e)
        if errors:
            raise errors[0]
