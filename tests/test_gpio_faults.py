"""One failing GPIO line takes out only its own device (issue 9, item 11).

In-process on the camera rig, a line's writes start failing (EIO) at a chosen
moment: mid-move, during an IR-cut pulse, at start. Then the real agent on the
simulated camera and a real mosquitto, with a line broken in the simulator
(camhost.simcam.GpioTree.break_line: its value file fails every write), on
CPython and, with MICROPYTHON set, on MicroPython.
"""
import json
import os

import pytest

from agent_rig import Rig
from broker_fixtures import (Agent, Watcher, mosquitto, send, still,  # noqa: F401
                             stop_leftovers, wait_until)
from camagent.camera import NoDeviceLeft
from camagent.commands import CommandError, Commands
from camagent.gpio import GpioError
from camagent.presets import Presets

PAN = (14, 15, 16, 17)
TILT = (31, 36, 37, 38)
IRCUT_OPEN, IRCUT_CLOSE, IR_LED, SD_RESET, LED_GREEN, LED_RED = 76, 77, 44, 45, 61, 79
DAY_NIGHT = {"initial_mode": "DAY", "dark_below": 20, "light_above": 40, "min_dwell_s": 0}


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False, night=dict(DAY_NIGHT))
    r.loop.run_until_idle()
    yield r
    r.rec.fail_pins.clear()
    r.close()


def commands(rig):
    return Commands(rig.cam, Presets(str(rig.tmp / "state" / "presets.json")), 10.0)


def refused(cmd, suffix, payload):
    with pytest.raises(CommandError) as e:
        cmd.handle(suffix, payload)
    return str(e.value)


def run_until(rig, condition):
    """The loop as the agent runs it: Camera.run() survives a device's fault."""
    rig.cam.run(lambda: rig.loop.run_until(condition))


# --- in-process: which device goes, what stays --------------------------------------------
def test_a_pan_coil_failing_mid_move_takes_out_pan_only(rig):
    cam, cmd = rig.cam, commands(rig)
    cmd.handle("preset/save", b"door")
    cmd.handle("pan/set", b"120")
    rig.loop.run_until(lambda: abs(cam.pan.steps - cam.pan.park) > 20)   # well under way
    rig.rec.fail_pins.add(PAN[2])
    run_until(rig, lambda: not cam.pan.moving)
    why = "pan is out of service: GPIO 16 (coil C): write failed (EIO)"
    assert cam.failed == {"pan": why}
    assert cam.unreported == [("pan", why)]                 # for <base>/error, once
    assert why in cam.hardware_state()["problems"]
    for pin in (14, 15, 17):                                 # released, the dead line aside
        assert rig.fs.value(pin) == 0, pin
    assert not cam.pan.moving and cam.pan.due is None and not cam.busy
    assert not cam.pan.homed                                 # a broken-off move: not trusted
    rig.loop.run_until_idle()
    assert json.load(open(str(rig.tmp / "state" / "position.json")))["at_rest"] is True
    # its commands are refused, naming the fault, and nothing is written for them
    writes = len(rig.rec.writes)
    for suffix, payload in (("pan/set", b"90"), ("pan/step", b"5"), ("ptz/move", b"LEFT"),
                            ("ptz/set", b'{"pan": 10}'), ("preset/goto", b"door")):
        assert refused(cmd, suffix, payload) == why, suffix
    assert len(rig.rec.writes) == writes
    # everything else works: tilt, IR, LEDs, SD reset; stop and home use what is left
    cmd.handle("tilt/set", b"30")
    cmd.handle("ir_cut/set", b"NIGHT")
    cmd.handle("led_green/set", b"BLINK")
    cmd.handle("sd/reset", b"")
    run_until(rig, lambda: not cam.busy)
    assert cam.tilt.position_deg() == 30.0 and cam.ir.cut == "NIGHT"
    cmd.handle("ptz/stop", b"")
    cmd.handle("ptz/home", b"")
    assert cam.tilt.homing and not cam.pan.homing
    run_until(rig, lambda: not cam.moving)
    assert cam.tilt.homed and cam.failed == {"pan": why}
    assert [rig.fs.value(p) for p in TILT] == [0, 0, 0, 0]


def test_a_coil_failing_as_a_command_starts_a_move_is_that_commands_answer(rig):
    cam, cmd = rig.cam, commands(rig)
    rig.rec.fail_pins.add(TILT[cam.tilt.phase])         # the line energising writes first
    why = "tilt is out of service: GPIO 31 (coil A): write failed (EIO)"
    assert refused(cmd, "tilt/set", b"20") == why
    assert cam.failed == {"tilt": why} and cam.unreported == []   # answered: not twice
    assert refused(cmd, "tilt/step", b"1") == why
    assert cmd.rejected == 2
    cmd.handle("pan/set", b"100")
    run_until(rig, lambda: not cam.moving)
    assert cam.pan.position_deg() == 100.0


def test_an_ir_cut_coil_failing_mid_pulse_releases_both_coils(rig):
    cam, cmd = rig.cam, commands(rig)
    cmd.handle("ir_cut/set", b"NIGHT")                    # the open coil is driven now
    assert rig.fs.value(IRCUT_OPEN) == 1
    rig.rec.fail_pins.add(IRCUT_OPEN)                     # ...and cannot be written low
    run_until(rig, lambda: not cam.ir.pulsing)
    assert cam.failed["ir_cut"] == \
        "ir_cut is out of service: GPIO 76 (open coil): write failed (EIO)"
    assert rig.fs.value(IRCUT_CLOSE) == 0                 # the other coil is never raised
    assert refused(cmd, "ir_cut/set", b"DAY") == cam.failed["ir_cut"]
    cmd.handle("ir_led/set", b"ON")
    assert cam.ir.led and rig.fs.value(IR_LED) == 1
    assert not cam.busy and cam.ir.due is None
    cmd.handle("night_mode/set", b"DAY")                  # what is left: the LED
    assert cam.ir.mode == "DAY" and not cam.ir.led and rig.fs.value(IR_LED) == 0
    assert rig.fs.value(IRCUT_CLOSE) == 0
    rig.rec.fail_pins.add(IR_LED)
    refused(cmd, "ir_led/set", b"ON")
    assert refused(cmd, "night_mode/set", b"NIGHT") == cam.failed["ir_cut"]   # nothing left


def test_ir_cut_failing_at_start_in_auto_does_not_stop_the_start(tmp_path):
    night = dict(DAY_NIGHT, initial_mode="AUTO")
    r = Rig(tmp_path, start=False, home_on_boot=True, night=night)
    try:
        cam = r.cam
        r.rec.fail_pins.add(IRCUT_CLOSE)                   # AUTO with no light: DAY, this coil
        cam.start()
        assert cam.failed == {"ir_cut": "ir_cut is out of service: GPIO 77 (close coil): "
                                        "write failed (EIO)"}
        assert cam.ir.mode == "AUTO" and cam.pan.homing and cam.tilt.homing
        assert cam.power.sd_resetting
        ir_writes = len(r.writes_to([IRCUT_OPEN, IRCUT_CLOSE]))
        # AUTO carries on with the IR LED alone: dark, then bright again
        cam.ir.set_light(5)
        assert cam.ir.led and r.fs.value(IR_LED) == 1
        run_until(r, lambda: not cam.busy)
        cam.ir.set_light(90)
        run_until(r, lambda: not cam.busy)
        assert not cam.ir.led and r.fs.value(IR_LED) == 0
        assert len(r.writes_to([IRCUT_OPEN, IRCUT_CLOSE])) == ir_writes   # the filter is left be
        assert cam.pan.homed and cam.tilt.homed
    finally:
        r.rec.fail_pins.clear()
        r.close()


def test_a_pin_that_will_not_export_takes_out_its_device_and_only_that(tmp_path):
    r = Rig(tmp_path, start=False, night=dict(DAY_NIGHT))
    try:
        r.cam.close()
        with open(os.path.join(r.fs.root, "unexport"), "w") as f:
            f.write("46\n")                              # wifi power stays exported at exit
        r.fs.sync()
        for pin in (IR_LED, 46):                          # the IR LED, and wifi power
            r.fs.refuse_export(pin)
        cam = r.build()                                   # waits 0.5 s for each, in vain
        assert sorted(cam.failed) == ["ir_led", "wifi_power"]
        assert cam.failed["ir_led"].startswith("ir_led is out of service: GPIO 44: ") and \
            "did not appear 500 ms after export" in cam.failed["ir_led"]
        assert cam.hardware_state()["wifi_power"] == "OFF"
        assert cam.hardware_state()["problems"] == [cam.failed["ir_led"],
                                                    cam.failed["wifi_power"]]
        cmd = commands(r)
        assert refused(cmd, "ir_led/set", b"ON") == cam.failed["ir_led"]
        cmd.handle("night_mode/set", b"NIGHT")            # the filter alone
        run_until(r, lambda: not cam.busy)
        assert cam.ir.cut == "NIGHT" and not cam.ir.led
        assert not r.fs.exported(IR_LED)
    finally:
        r.close()


def test_a_line_that_cannot_be_claimed_at_start_takes_out_its_device(tmp_path):
    r = Rig(tmp_path, start=False, night=dict(DAY_NIGHT))
    try:
        r.cam.close()
        r.fs.sync()
        r.fs.pre_export(TILT[1])
        direction = os.path.join(r.fs.pin_dir(TILT[1]), "direction")
        os.remove(direction)
        os.mkdir(direction)                               # writing "low" to it: EISDIR
        cam = r.build()
        why = cam.failed["tilt"]
        assert why.startswith("tilt is out of service: GPIO 36 (coil B): ") and "EISDIR" in why
        assert list(cam.failed) == ["tilt"] and cam.unreported == [("tilt", why)]
        cmd = commands(r)
        assert refused(cmd, "tilt/set", b"10") == why
        cmd.handle("pan/set", b"10")
        run_until(r, lambda: not cam.moving)
        assert cam.pan.position_deg() == 10.0
    finally:
        r.close()


def test_a_restarted_agent_tries_a_known_bad_line_again_at_its_first_use(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False, night=dict(DAY_NIGHT))
    try:
        r.rec.fail_pins.add(PAN[1])
        commands(r).handle("ptz/move", b"RIGHT")
        run_until(r, lambda: not r.cam.moving)
        assert "pan" in r.cam.failed
        fails = r.rec.fail_pins
        cam = r.restart()                                 # as the supervisor would
        r.rec.fail_pins = fails
        assert cam.failed == {} and cam.hardware_state()["problems"] == []
        cmd = commands(r)
        cmd.handle("pan/step", b"5")                      # its first use finds it again
        run_until(r, lambda: not cam.moving)
        assert list(cam.failed) == ["pan"]
        cmd.handle("tilt/step", b"5")
        run_until(r, lambda: not cam.moving)
        assert cam.tilt.position_deg() == 50.0           # from the park position, 45.0
    finally:
        r.rec.fail_pins.clear()
        r.close()


def test_the_agent_ends_when_no_device_is_left(rig):
    cam, cmd = rig.cam, commands(rig)
    rig.rec.fail_pins.update(PAN + TILT + (IRCUT_OPEN, IRCUT_CLOSE, IR_LED, SD_RESET,
                                           LED_GREEN, LED_RED))
    for suffix, payload in (("pan/set", b"1"), ("tilt/set", b"1"), ("ir_cut/set", b"NIGHT"),
                            ("ir_led/set", b"ON"), ("sd/reset", b""), ("led_green/set", b"ON")):
        refused(cmd, suffix, payload)
    assert len(cam.failed) == 6
    with pytest.raises(NoDeviceLeft, match="every device is out of service, the last: "
                                           "led_red is out of service: GPIO 79"):
        cmd.handle("led_red/set", b"ON")


def test_an_unknown_pin_is_not_taken_for_a_device(rig):
    with pytest.raises(GpioError):
        rig.cam.fault(GpioError(99, "x", "write failed (EIO)"))
    assert rig.cam.failed == {}


def test_close_with_a_device_out_of_service_still_releases_the_rest(rig):
    cam = rig.cam
    commands(rig).handle("ptz/set", b'{"pan": 150, "tilt": 40}')
    rig.loop.run_until(lambda: abs(cam.tilt.steps - cam.tilt.park) > 20)
    rig.rec.fail_pins.add(PAN[3])
    run_until(rig, lambda: "pan" in cam.failed)
    assert cam.tilt.moving
    cam.close()                                           # no error: pan's fault is known
    rig.fs.sync()
    for pin in TILT + PAN + (IRCUT_OPEN, IRCUT_CLOSE):
        assert not rig.fs.exported(pin), pin


# --- the real agent, real mosquitto ----------------------------------------------------------
def interpreters():
    found = [None]
    if os.environ.get("MICROPYTHON"):
        found.append(os.environ["MICROPYTHON"])
    return found


IDS = ["cpython", "micropython"][:len(interpreters())]


def errors(w, base, start=0):
    return [json.loads(p) for p, r in w.all(base + "/error", start)]


@pytest.mark.parametrize("micropython", interpreters(), ids=IDS)
def test_agent_keeps_working_when_a_pan_coil_fails_mid_move(tmp_path, mosquitto, micropython):
    agent = Agent(tmp_path, mosquitto, micropython=micropython, sd_reset_on_start=False)
    agent.sim.break_line(PAN[2])        # coil C: written on the third step of a move
    w = Watcher(mosquitto, [agent.base + "/#"])
    try:
        agent.start()
        w.wait_for(lambda t, p: t == agent.base + "/availability" and p == b"online", "online")
        why = "pan is out of service: GPIO 16 (coil C): write failed (ENOSPC)"
        kind, st = send(w, agent.base, "pan/set", "120",
                        lambda d: why in d["problems"] and not d["pan"]["moving"])
        assert kind == "state"
        assert agent.sim.levels("pan") == (0, 0, None, 0)
        wait_until(lambda: errors(w, agent.base), what="the fault on <base>/error")
        assert errors(w, agent.base) == [{"topic": agent.base + "/pan", "payload": "",
                                          "error": why}]
        kind, err = send(w, agent.base, "pan/step", "5")
        assert kind == "error" and err["error"] == why
        kind, st = send(w, agent.base, "ptz/set", '{"tilt": 30}', still)
        assert kind == "state" and st["tilt"]["position"] == 30.0
        kind, st = send(w, agent.base, "led_green/set", "ON")
        assert kind == "state" and st["led_green"] == "ON" and agent.sim.levels("led_green")
        assert agent.alive() and "Traceback" not in agent.log()
        assert agent.log().count(why) == 1
        assert agent.stop() == 0
        # restarted: the start is clean, the fault is found again at the first pan move
        mark = w.mark()
        agent.start()
        i, t, p = w.wait_for(lambda t, p: t == agent.base + "/state" and
                             json.loads(p)["problems"] == [], "a clean start", start=mark)
        kind, st = send(w, agent.base, "pan/step", "-10",
                        lambda d: why in d["problems"] and not d["pan"]["moving"])
        assert kind == "state" and agent.alive()
        kind, st = send(w, agent.base, "tilt/step", "-10", still)
        assert kind == "state" and st["tilt"]["position"] == 20.0
    finally:
        w.close()


@pytest.mark.parametrize("micropython", interpreters(), ids=IDS)
def test_ir_cut_coil_dead_in_auto_leaves_the_motors_usable(tmp_path, mosquitto, micropython):
    agent = Agent(tmp_path, mosquitto, micropython=micropython, sd_reset_on_start=False,
                  night=dict(DAY_NIGHT, initial_mode="AUTO"))
    agent.sim.break_line(IRCUT_CLOSE)   # AUTO starts in DAY: the close coil, at once
    w = Watcher(mosquitto, [agent.base + "/#"])
    why = "ir_cut is out of service: GPIO 77 (close coil): write failed (ENOSPC)"
    try:
        for attempt in range(2):        # and again after a restart: never a crash loop
            mark = w.mark()
            agent.start()
            i, t, p = w.wait_for(lambda t, p: t == agent.base + "/error", "the fault",
                                 start=mark)
            assert json.loads(p) == {"topic": agent.base + "/ir_cut", "payload": "",
                                     "error": why}
            w.wait_for(lambda t, p: t == agent.base + "/state", "its state", start=i)
            kind, st = send(w, agent.base, "ptz/set", '{"pan": %d}' % (90 + attempt), still)
            assert kind == "state" and st["pan"]["position"] == 90 + attempt
            assert st["night_mode"] == "AUTO" and st["problems"] == [why]
            kind, err = send(w, agent.base, "ir_cut/set", "NIGHT")
            assert kind == "error" and err["error"] == why
            kind, st = send(w, agent.base, "light/set", "3", lambda d: d["ir_led"] == "ON")
            assert kind == "state" and agent.sim.value(IR_LED) == 1   # AUTO drives the LED
            assert agent.sim.value(IRCUT_OPEN) == 0
            assert len(errors(w, agent.base, mark)) == 2     # the fault once, the refusal
            assert agent.stop() == 0
        assert "Traceback" not in agent.log()
    finally:
        w.close()


@pytest.mark.parametrize("micropython", interpreters(), ids=IDS)
def test_the_agent_exits_once_every_device_is_out_of_service(tmp_path, mosquitto, micropython):
    agent = Agent(tmp_path, mosquitto, micropython=micropython, home_on_boot=True)
    for pin in PAN + TILT + (IRCUT_OPEN, IRCUT_CLOSE, IR_LED, SD_RESET, LED_GREEN, LED_RED):
        agent.sim.break_line(pin)
    w = Watcher(mosquitto, [agent.base + "/#"])
    try:
        agent.start()
        # at start: SD reset, IR-cut (AUTO), both axes (homing); still running
        wait_until(lambda: len(errors(w, agent.base)) == 4, what="four faults")
        assert agent.alive()
        for device in ("ir_led", "led_green"):
            kind, err = send(w, agent.base, device + "/set", "ON")
            assert kind == "error" and err["error"].startswith(device + " is out of service")
        w.publish(agent.base + "/led_red/set", b"ON")
        agent.proc.wait(20)
        assert agent.proc.returncode == 1
        log = agent.log()
        assert "hardware failure, stopping: every device is out of service, the last: " \
               "led_red is out of service: GPIO 79: write failed (ENOSPC)" in log
        assert "Traceback" not in log
        wait_until(lambda: w.all(agent.base + "/availability")[-1][0] == b"offline",
                   what="offline")
        last = json.loads(w.all(agent.base + "/state")[-1][0])
        assert len(last["problems"]) == 7
        assert [e["topic"].rsplit("/", 1)[1] for e in errors(w, agent.base)][-1] == "led_red"
    finally:
        w.close()


# --- the same logic in the MicroPython VM, on the shipped .mpy --------------------------------
VM_SETUP = """
import json
from camagent import config
from camagent.camera import Camera
from camagent.commands import Commands, CommandError
from camagent.loop import Loop
from camagent.presets import Presets
loop = Loop()
cam = Camera(config.parse(json.dumps(doc)), gpio=HostGpio(), loop=loop)
cmd = Commands(cam, Presets("/input/state/presets.json"), 10.0)
cam.start()
clock.run_loop(loop, 1000000)

def refused(suffix, payload):
    try:
        cmd.handle(suffix, payload)
    except CommandError as e:
        return str(e)
"""


def test_a_coil_failing_mid_move_in_the_micropython_vm():
    from mpvm import MicroVM
    with MicroVM() as vm:
        vm.use_fake_clock()
        vm.put("doc", {"gpio_root": "host", "state_dir": "/input/state", "device_id": "vmcam",
                       "sd_reset_on_start": False, "night": dict(DAY_NIGHT)})
        vm.run(VM_SETUP)
        vm.run("cmd.handle('pan/set', b'120')\nclock.run_loop(loop, 50000)")
        assert vm.eval("cam.pan.moving")
        vm.gpio.fail(PAN[2], "EIO")
        vm.run("cam.run(lambda: clock.run_loop(loop, 2000000))")
        why = vm.eval("cam.failed['pan']")
        assert why.startswith("pan is out of service: GPIO 16 (coil C): ") and "EIO" in why
        assert vm.eval("[cam.pan.moving, cam.pan.due, cam.busy]") == [False, None, False]
        assert [vm.gpio.levels[p] for p in (14, 15, 17)] == [0, 0, 0]
        assert vm.eval("refused('pan/step', b'5')") == why
        vm.run("cmd.handle('tilt/set', b'30')\ncam.run(lambda: clock.run_loop(loop, 3000000))")
        assert vm.eval("cam.tilt.position_deg()") == 30.0
        assert vm.eval("cam.hardware_state()['problems']") == [why]
