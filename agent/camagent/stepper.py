"""One 4-wire unipolar stepper axis: 8-phase half-stepping with an accel/decel ramp.

Each half-step changes exactly one coil line, so a step is one sysfs write. The
step path does integer arithmetic and table look-ups only (no allocation): the
per-phase line changes and the ramp's step intervals are computed once.

Position is counted in half-steps; there are no end-stop switches, so homing
drives past the whole range onto the hard stop and calls that zero.
"""
import math
from array import array

from .compat import ticks_add, ticks_diff
from .gpio import GpioError

# Coil patterns A, AB, B, BC, C, CD, D, DA (bit n = line n); neighbours differ in one line.
PHASES = (0b0001, 0b0011, 0b0010, 0b0110, 0b0100, 0b1100, 0b1000, 0b1001)


def _changes(direction):
    """For each phase, the (line, level) written to reach the next phase in `direction`."""
    table = []
    for p in range(8):
        old, new = PHASES[p], PHASES[(p + direction) & 7]
        line = 0
        while not (old ^ new) & (1 << line):
            line += 1
        table.append((line, (new >> line) & 1))
    return tuple(table)


_FORWARD = _changes(1)
_BACKWARD = _changes(-1)


def ramp_levels(start_speed, speed, accel):
    """Accelerating steps from `start_speed` until `speed` is reached: v = sqrt(v0^2 + 2ak)."""
    start_speed = min(start_speed, speed)
    k = 0
    while math.sqrt(start_speed * start_speed + 2 * accel * k) < speed:
        k += 1
    return k


def ramp_table(start_speed, speed, accel):
    """Step intervals (us) from `start_speed` up to `speed` at `accel`.

    Index k is the speed level after k accelerating steps; the last entry is the
    cruise interval. The same table read backwards is the deceleration.
    """
    start_speed = min(start_speed, speed)
    # 32-bit entries, not a list: one table per axis lives as long as the agent, and a
    # list would spend a pointer per entry (8 bytes on a 64-bit host)
    table = array("I")
    for k in range(ramp_levels(start_speed, speed, accel)):
        table.append(int(1000000 / math.sqrt(start_speed * start_speed + 2 * accel * k)))
    table.append(int(1000000 / speed))
    return table


class Stepper:
    def __init__(self, name, lines, axis, camera):
        self.name = name
        self._lines = lines
        self._cam = camera
        self.min_steps = axis["min_steps"]
        self.max_steps = axis["max_steps"]
        self.steps_per_degree = axis["steps_per_degree"]
        self.park = axis["park"]
        self.default_speed = axis["speed"]
        self.max_speed = axis["max_speed"]
        self.start_speed = axis["start_speed"]
        self.accel = axis["accel"]
        self.home_speed = axis["home_speed"]
        self.home_margin = axis["home_margin"]
        self.steps = self.park   # unknown until homed or restored
        self.target = self.steps
        self.phase = 0           # index into PHASES; kept apart from `steps` for homing
        self.homed = False
        self.homing = False
        self.clamped = False     # the last target was outside the soft limits
        self.moving = False
        self.due = None          # loop deadline of the next step
        self._dir = 0
        # One ramp for every move, up to the fastest speed this axis is driven at. A
        # move only sets its top level and cruise interval, and the speed level moves
        # one table entry per step, also when a new target or speed lowers the top.
        self._fastest = max(self.max_speed, self.home_speed)
        self._ramp = ramp_table(self.start_speed, self._fastest, self.accel)
        self._level = 0          # current speed level: index into the ramp
        self._top = 0            # this move's cruise level
        self._cruise = self._ramp[0]  # this move's cruise interval (us)

    # --- conversions --------------------------------------------------------------
    @property
    def min_deg(self):
        return self.steps_to_deg(self.min_steps)

    @property
    def max_deg(self):
        return self.steps_to_deg(self.max_steps)

    def steps_to_deg(self, steps):
        return round(steps / self.steps_per_degree, 1)

    def deg_to_steps(self, deg):
        return int(round(deg * self.steps_per_degree))

    def position_deg(self):
        # Homing runs past the range on purpose; what is reported stays within the range
        # that discovery announces (Home Assistant drops a number outside it).
        return self.steps_to_deg(min(max(self.steps, self.min_steps), self.max_steps))

    def max_speed_dps(self):
        return self.max_speed / self.steps_per_degree

    # --- commands -----------------------------------------------------------------
    def move_to(self, target, speed=None):
        """Move to half-step `target` (clamped to the soft limits); True if clamped."""
        clamped = target < self.min_steps or target > self.max_steps
        target = min(max(target, self.min_steps), self.max_steps)
        self.clamped = clamped     # reported in the state until the next move
        self._start(target, speed)
        return clamped

    def move_to_deg(self, deg, speed_dps=None):
        _check_number(deg, "position")
        return self.move_to(self.deg_to_steps(deg), self._speed_from_dps(speed_dps))

    def move_by_deg(self, delta_deg, speed_dps=None):
        _check_number(delta_deg, "step")
        return self.move_to(self.target + self.deg_to_steps(delta_deg),
                            self._speed_from_dps(speed_dps))

    def stop(self):
        """Stop at once: no further step, coils released."""
        if self.homing:
            self.homing = False  # an interrupted homing leaves the position unknown
            self.homed = False
            self.steps = self.park
        self.target = self.steps
        self._finish()

    def home(self):
        """Drive past the full range onto the minimum hard stop, call it zero, then park."""
        # Pretend to stand range+margin above the minimum: driving "down to the minimum"
        # then covers more than the whole travel and ends pressed on the hard stop.
        self.homing = True
        self.homed = False
        self.steps = self.min_steps + (self.max_steps - self.min_steps) + self.home_margin
        self._start(self.min_steps, self.home_speed)

    def _speed_from_dps(self, dps):
        if dps is None:
            return None
        _check_number(dps, "speed")
        # the range ptz/set checks for both axes before either moves
        if not 0.1 <= dps <= self.max_speed_dps():
            raise ValueError("%s speed %.1f deg/s is out of range: 0.1 to %.1f deg/s accepted"
                             % (self.name, dps, self.max_speed_dps()))
        return dps * self.steps_per_degree

    def _use_speed(self, speed):
        speed = min(speed, self._fastest)
        self._top = ramp_levels(self.start_speed, speed, self.accel)
        self._cruise = int(1000000 / speed)

    def _start(self, target, speed):
        self._use_speed(speed or self.default_speed)
        self.target = target
        if target == self.steps and not self.moving:
            self._cam.changed()
            return
        if not self.moving:
            self._level = 0
            self._dir = 0
            try:
                self._energise()
            except BaseException:
                self.stop()      # a coil write failed: nothing moves, every coil released
                raise
            self.moving = True
            # the first phase is held one start interval before the first step
            self.due = ticks_add(self._cam.now(), self._cruise if self._top == 0
                                 else self._ramp[0])
            self._cam.motion_started()
        self._cam.changed()

    # --- the step path (hot) ------------------------------------------------------
    def tick(self, now):
        # Few locals on purpose: a MicroPython frame over 11 words is heap-allocated,
        # and this runs once per half-step.
        dist = self.target - self.steps
        level = self._level
        if dist == 0 and level == 0:
            self._finish()                  # the last phase has been held: release
            return
        d = self._dir
        if d and dist * d <= 0 and level > 0:
            level -= 1                      # at or past the target at speed: brake first
        else:
            d = 1 if dist > 0 else -1
            self._dir = d
            dist = dist * d - 2             # the highest level that can still stop on target
            # one level per step either way, never a jump: speed up while below the top
            # with room to slow down again, so the last step comes at the start speed;
            # slow down when above the top (a new speed) or the room (a nearer target)
            if level < self._top and level < dist:
                level += 1
            elif level and (level > self._top or level > dist):
                level -= 1
        dist = self.steps + d               # now the position after this step
        if not self.homing and (dist < self.min_steps or dist > self.max_steps):
            self.target = self.steps        # never drive past a soft limit
            self._finish()
            return
        change = (_FORWARD if d > 0 else _BACKWARD)[self.phase]
        self._lines[change[0]].set(change[1])
        self.phase = (self.phase + d) & 7
        self.steps = dist
        # the interval to the next step (after the last one, how long it is held): the
        # cruise interval while holding the top level, else the ramp's, so slowing down
        # onto the top also passes through the top's own ramp interval
        d = self._cruise if level == self._top and self._level <= level else self._ramp[level]
        self._level = level
        change = ticks_add(self.due, d)
        # late by more than a step (a slow wakeup): restart timing, don't burst
        self.due = change if ticks_diff(change, now) > 0 else ticks_add(now, d)

    # --- coils --------------------------------------------------------------------
    def _energise(self):
        pattern = PHASES[self.phase]
        for i in range(4):
            bit = (pattern >> i) & 1
            if bit or self._lines[i].value:   # a released line is known low
                self._lines[i].set(bit)

    def release(self):
        """All four coil lines low, each written whatever its last known level.

        An interrupted or failed write can leave a line's cached level wrong, so
        none is trusted here; every line is tried, the first failure raised after.
        """
        failed = None
        for line in self._lines:
            try:
                line.set(0)
            except GpioError as e:
                failed = failed or e
        if failed:
            raise failed

    def out_of_service(self, device):
        """A coil line failed: no further step, and a position reached by a move that
        broke off is no longer trusted. The camera writes the lines low."""
        if self.homing:
            self.homing = False
            self.steps = self.park
        self.target = self.steps
        if self._halt():
            self.homed = False
            self._cam.motion_finished()

    def _halt(self):
        """No further step; True if the axis was moving."""
        was_moving = self.moving
        self.due = None
        self.moving = False
        self._level = 0
        self._dir = 0
        return was_moving

    def _finish(self):
        was_moving = self._halt()
        try:
            self.release()
        finally:
            if self.homing and self.steps == self.min_steps:
                self.homing = False
                self.homed = True
                self._cam.changed()
                self.move_to(self.park)
            elif was_moving:
                self._cam.motion_finished()
                self._cam.changed()

    # --- persistence --------------------------------------------------------------
    def saved(self):
        return {"steps": self.steps, "phase": self.phase, "homed": self.homed}

    def restore(self, saved):
        """Take a saved position, as PositionStore.load() returns it: checked there to
        be whole steps within the soft limits, a phase 0 to 7 and a bool homed."""
        self.steps = self.target = saved["steps"]
        self.phase = saved["phase"]
        self.homed = saved["homed"]


def finite(value):
    """False for NaN and the infinities; ints are always finite (and may not fit a float)."""
    return not isinstance(value, float) or math.isfinite(value)


def _check_number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s must be a number of degrees" % what)
    if not finite(value):
        raise ValueError("%s must be a finite number, not %s" % (what, value))
