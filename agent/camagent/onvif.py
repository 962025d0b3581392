"""ONVIF PTZ verbs, as onvif-simple-server's ptz commands send them, on the command table.

Positions are degrees, the same space onvif.conf's min_step/max_step announce:
jump_to_abs takes them, get_position prints "pan,tilt,0". A move_* velocity is
a fraction (0-1] of the axis's top speed; the move runs to the soft limit until
move_stop. Presets are the agent's named presets; the ONVIF number of a preset
is derived from its name alone, so a client's token stays valid while other
presets come and go. "home" is the preset named home, or homing without one.
"""
import json

from .commands import CommandError
from .stepper import finite

HOME = "home"


def preset_number(name):
    """The ONVIF preset number (1-99991) of preset `name`, matched case-insensitively."""
    h = 0
    for b in name.lower().encode():
        h = (h * 31 + b) % 99991
    return h + 1


class OnvifPtz:
    def __init__(self, camera, commands):
        self.cam = camera
        self.commands = commands
        self.presets = commands.presets
        self.changed = False   # the last verb ran a command: the state must go out

    def run(self, verb, args):
        """Data lines for `verb` (already checked against the channel's table), "" for none."""
        self.changed = False
        return getattr(self, verb)(args) or ""

    def _do(self, suffix, payload):
        self.commands.handle(suffix, payload.encode())
        self.changed = True

    # --- moves ----------------------------------------------------------------------
    def move_left(self, args):
        self._drive("pan", False, args)

    def move_right(self, args):
        self._drive("pan", True, args)

    def move_down(self, args):
        self._drive("tilt", False, args)

    def move_up(self, args):
        self._drive("tilt", True, args)

    def _drive(self, name, up, args):
        axis = self.cam.axes[name]
        doc = {name: axis.max_deg if up else axis.min_deg}
        if args:
            v = _float(args[0], "velocity")
            if not 0 < v <= 1:
                raise CommandError("velocity %s is out of range; more than 0, at most 1 "
                                   "(a fraction of the top speed) accepted" % args[0])
            doc["speed"] = max(0.1, int(v * axis.max_speed_dps() * 10) / 10)
        self._do("ptz/set", json.dumps(doc))

    def move_stop(self, args):
        if not args or args[0] != "zoom":   # "all", "pantilt"; there is no zoom
            self._do("ptz/stop", "")

    def jump_to_abs(self, args):
        self._do("ptz/set", json.dumps({"pan": _float(args[0], "pan"),
                                        "tilt": _float(args[1], "tilt")}))

    def jump_to_rel(self, args):
        # one ptz/set to the clamped targets: both axes are checked before either moves
        doc = {}
        for name, word in (("pan", args[0]), ("tilt", args[1])):
            delta = _float(word, name)
            if delta:
                axis = self.cam.axes[name]
                doc[name] = min(max(axis.steps_to_deg(axis.target) + delta, axis.min_deg),
                                axis.max_deg)
        if doc:
            self._do("ptz/set", json.dumps(doc))

    def goto_home_position(self, args):
        if self.presets.find(HOME):
            self._do("preset/goto", HOME)
        else:
            self._do("ptz/home", "")

    def set_home_position(self, args):
        self._do("preset/save", HOME)

    # --- status ---------------------------------------------------------------------
    def get_position(self, args):
        return "%.1f,%.1f,0.0" % (self.cam.pan.position_deg(), self.cam.tilt.position_deg())

    def is_moving(self, args):
        return "1" if self.cam.moving else "0"

    # --- presets --------------------------------------------------------------------
    def get_presets(self, args):
        lines = []
        for name in self.presets.names():
            pan, tilt = self.presets.items[name]
            # the server reads "N=name,pan,tilt" with %s: a space would end the name
            lines.append("%d=%s,%.1f,%.1f" % (preset_number(name), name.replace(" ", "_"),
                                              self.cam.pan.steps_to_deg(pan),
                                              self.cam.tilt.steps_to_deg(tilt)))
        return "\n".join(lines)

    def move_preset(self, args):
        self._do("preset/goto", self._name(args[0]))

    def remove_preset(self, args):
        self._do("preset/delete", self._name(args[0]))

    def set_preset(self, args):
        """set_preset NAME or set_preset -1 NAME saves NAME here; set_preset N NAME moves
        preset N here (renamed to NAME). OpenIPC's onvif-simple-server sends the first
        form, newer releases the other two."""
        old = None if len(args) == 1 or args[0] == "-1" else self._name(args[0])
        name = args[-1]
        clash = self._holder(preset_number(name))
        if clash and clash.lower() != name.lower() and clash != old:
            raise CommandError("preset %r would share ONVIF number %d with %r; choose "
                               "another name" % (name, preset_number(name), clash))
        self._do("preset/save", name)
        if old is not None and old.lower() != name.lower():
            self._do("preset/delete", old)

    def _holder(self, number):
        found = None
        for name in self.presets.names():
            if preset_number(name) == number:
                if found:
                    raise CommandError("presets %r and %r share ONVIF number %d; rename one"
                                       % (found, name, number))
                found = name
        return found

    def _name(self, word):
        try:
            number = int(word)
        except ValueError:
            raise CommandError("preset number %r is not a whole number" % word[:16])
        name = self._holder(number)
        if name is None:
            raise CommandError("no preset has ONVIF number %d (get_presets lists them)"
                               % number)
        return name


def _float(word, what):
    try:
        value = float(word)
        if finite(value):
            return value
    except ValueError:
        pass
    raise CommandError("%s %r is not a finite number" % (what, word[:16]))
