"""The camera: every device built from the config's board profile, on one loop."""
from . import boards
from .gpio import Gpio
from .ir import Ir
from .led import Led
from .light import FileLight
from .loop import Loop
from .persist import PositionStore, ensure_dir
from .power import Power
from .stepper import Stepper

ON_OFF = ("OFF", "ON")


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
        pins = self.board["pins"]
        try:
            out = self.gpio.output
            # wifi power first (the driver may already be loading) and kept at exit
            wifi = out(pins["wifi_power"], 1 if cfg["wifi_power"] else 0, keep=True)
            self.power = Power(self, wifi, out(pins["sd_reset"], 0), self.board["sd_reset_ms"])
            self.pan = Stepper("pan", [out(p, 0) for p in pins["pan"]], self.board["pan"], self)
            self.tilt = Stepper("tilt", [out(p, 0) for p in pins["tilt"]], self.board["tilt"], self)
            self.ir = Ir(self, out(pins["ir_led"], 0), out(pins["ircut_open"], 0),
                         out(pins["ircut_close"], 0), self.board, cfg["night"])
            self.leds = {"green": Led(self, out(pins["led_green"], 0), cfg["led_blink_ms"]),
                         "red": Led(self, out(pins["led_red"], 0), cfg["led_blink_ms"])}
        except Exception:
            self.gpio.release_all()
            raise
        self.axes = {"pan": self.pan, "tilt": self.tilt}
        ensure_dir(self.state_dir)
        self.positions = PositionStore(self, self.state_dir + "/position.json",
                                       cfg["persist_min_interval_s"])
        saved = self.positions.load()
        for name, axis in self.axes.items():
            if saved and isinstance(saved.get(name), dict):
                axis.restore(saved[name])
        for dev in (self.pan, self.tilt, self.ir, self.leds["green"], self.leds["red"],
                    self.power, self.positions):
            self.loop.add(dev)
        self.light_source = None
        self.channel = None    # the local channel (main.py), when it is on
        if cfg["light_file"]:
            self.light_source = FileLight(self, cfg["light_file"], cfg["light_poll_s"])
            self.loop.add(self.light_source)

    def start(self):
        """Power-on actions: SD reader reset, known IR state, optional homing."""
        if self.cfg["sd_reset_on_start"]:
            self.power.sd_reset()
        self.ir.set_mode(self.cfg["night"]["initial_mode"])
        if self.cfg["home_on_boot"]:
            self.pan.home()
            self.tilt.home()

    # --- notifications from the devices -------------------------------------------
    def changed(self):
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
        return self.pan.moving or self.tilt.moving or self.ir.pulsing or \
            self.power.sd_resetting

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
        found = []
        for source in (self.positions, self.light_source, self.channel):
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
        for step in (self.pan.stop, self.tilt.stop, self.ir.release, self.power.release,
                     self.positions.flush, self.gpio.release_all):
            try:
                step()
            except Exception as e:  # keep going: every later step is also a safety step
                errors.append(e)
        if errors:
            raise errors[0]
