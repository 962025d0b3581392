"""sysfs GPIO handling, LEDs and the power sequence."""
import os

import pytest

from agent_rig import Rig
from camagent.gpio import Gpio, GpioError
from sysfs_fake import FakeSysfs, WriteRecorder


@pytest.fixture
def fs(tmp_path):
    f = FakeSysfs(tmp_path / "gpio")
    yield f
    f.close()


def test_export_waits_for_a_late_directory(tmp_path):
    fs = FakeSysfs(tmp_path / "gpio", export_delay=0.05)
    try:
        line = Gpio(fs.root, opener=WriteRecorder()).output(44, 1)
        assert fs.exported(44) and fs.direction(44) == "high" and fs.value(44) == 1
        assert line.value == 1
    finally:
        fs.close()


def test_direction_sets_level_in_one_write(fs):
    gpio = Gpio(fs.root)
    gpio.output(14, 0)
    gpio.output(46, 1)
    # "low"/"high", never "out" followed by a value write: no glitch
    assert fs.direction(14) == "low" and fs.direction(46) == "high"


def test_already_exported_pin_is_used_and_left_exported(fs):
    fs.pre_export(61)
    gpio = Gpio(fs.root)
    gpio.output(61, 1)
    gpio.output(79, 0)
    assert 61 not in fs.exports
    gpio.release_all()
    fs.sync()
    assert fs.exported(61) and not fs.exported(79)
    assert fs.unexports == [79]


def test_keep_pins_stay_exported(fs):
    gpio = Gpio(fs.root, opener=WriteRecorder())
    gpio.output(46, 1, keep=True)
    gpio.release_all()
    fs.sync()
    assert fs.exported(46) and fs.value(46) == 1


def test_missing_gpio_root_names_pin_and_file(tmp_path):
    with pytest.raises(GpioError) as e:
        Gpio(str(tmp_path / "nope")).output(44)
    assert e.value.pin == 44 and "GPIO 44" in str(e.value)
    assert str(tmp_path / "nope" / "export") in str(e.value)


def test_directory_that_never_appears(tmp_path):
    root = tmp_path / "gpio"
    root.mkdir()
    (root / "export").write_text("")  # a plain file: nothing creates gpioN/
    with pytest.raises(GpioError, match="did not appear"):
        Gpio(str(root)).output(45)


def test_value_write_failure_names_pin_and_file(fs):
    rec = WriteRecorder()
    line = Gpio(fs.root, opener=rec).output(79)
    rec.fail_pins.add(79)
    with pytest.raises(GpioError) as e:
        line.set(1)
    assert "GPIO 79" in str(e.value) and e.value.path.endswith("gpio79/value")
    assert "EIO" in str(e.value)


class _FailsAfter:
    """A value file whose writes fail (EIO), or whose next write lands and is then
    interrupted (Ctrl-C: MicroPython raises it as the try block around the write ends)."""

    def __init__(self, f, error):
        self._f = f
        self.error = error

    def seek(self, pos):
        return self._f.seek(pos)

    def write(self, data):
        if self.error is OSError:
            raise OSError(5, "Input/output error")
        n = self._f.write(data)
        if self.error is KeyboardInterrupt:
            self.error = None
            raise KeyboardInterrupt
        return n

    def close(self):
        self._f.close()


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_a_line_that_may_be_high_is_never_counted_low(fs, error):
    line = Gpio(fs.root, opener=WriteRecorder()).output(79)
    line._f = _FailsAfter(line._f, error)
    with pytest.raises((GpioError, KeyboardInterrupt)):
        line.set(1)
    assert line.value == 1            # possibly high: whatever releases it writes it
    line._f.error = error
    with pytest.raises((GpioError, KeyboardInterrupt)):
        line.set(0)
    assert line.value == 1            # not known to be low yet
    line._f.error = None
    line.set(0)
    assert line.value == 0 and fs.value(79) == 0


def test_same_pin_twice_is_refused(fs):
    gpio = Gpio(fs.root)
    gpio.output(44)
    with pytest.raises(GpioError, match="claimed twice"):
        gpio.output(44)


def test_led_blink_and_modes(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False, led_blink_ms=400)
    try:
        r.loop.run_for(500000)
        led = r.cam.leds["green"]
        start = len(r.rec.writes)
        led.set("BLINK")
        r.loop.run_for(2000000)
        writes = r.writes_to([61], start)
        assert [v for _, v, _ in writes[:4]] == [1, 0, 1, 0]
        assert all(b[2] - a[2] == 200000 for a, b in zip(writes, writes[1:]))
        assert len(writes) == 10
        led.set("ON")
        r.loop.run_for(2000000)
        assert r.fs.value(61) == 1 and led.due is None
        led.set("OFF")
        assert r.fs.value(61) == 0
        with pytest.raises(ValueError):
            led.set("blink")  # callers normalise case; the device takes the canonical word
    finally:
        r.close()


def test_power_sequence_at_start(tmp_path):
    r = Rig(tmp_path, start=False)
    try:
        assert r.fs.direction(46) == "high"             # wifi on from the first write
        start = len(r.rec.writes)
        r.cam.start()
        r.loop.run_for(500000)
        sd = r.writes_to([45], start)
        assert [v for _, v, _ in sd] == [1, 0]
        assert sd[1][2] - sd[0][2] == r.cam.board["sd_reset_ms"] * 1000
    finally:
        r.close()


def test_wifi_power_off_when_configured(tmp_path):
    r = Rig(tmp_path, wifi_power=False, sd_reset_on_start=False)
    try:
        assert r.fs.direction(46) == "low"
        assert r.cam.hardware_state()["wifi_power"] == "OFF"
    finally:
        r.close()


def test_sd_reset_on_command(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False)
    try:
        r.loop.run_for(500000)
        start = len(r.rec.writes)
        r.cam.power.sd_reset()
        assert r.cam.power.sd_resetting
        r.loop.run_for(500000)
        assert [v for _, v, _ in r.writes_to([45], start)] == [1, 0]
        assert not r.cam.power.sd_resetting
    finally:
        r.close()


def test_close_leaves_everything_safe(tmp_path):
    r = Rig(tmp_path)
    cam = r.cam
    cam.pan.move_to(cam.pan.max_steps)
    cam.ir.set_cut("NIGHT")
    r.loop.run_for(30000)
    assert any(r.fs.value(p) for p in r.pins("pan"))     # coils energised mid-move
    cam.close()
    r.fs.sync()
    for pin in r.pins("pan") + r.pins("ircut_open") + r.pins("ircut_close"):
        assert not r.fs.exported(pin) or r.fs.value(pin) == 0
    coil_writes = [v for p, v in r.rec.writes if p in r.pins("pan")]
    assert coil_writes[-1] == 0
    assert os.path.exists(os.path.join(cam.state_dir, "position.json"))
    r.fs.close()


def test_close_ends_an_sd_reset_pulse(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False)
    try:
        r.loop.run_for(500000)
        start = len(r.rec.writes)
        r.cam.power.sd_reset()
        r.loop.run_for(10000)                  # stopped 10 ms into the 100 ms pulse
        r.cam.close()
        assert [v for _, v, _ in r.writes_to([45], start)] == [1, 0]
        assert not r.cam.power.sd_resetting and not r.cam.busy
    finally:
        r.fs.close()


def test_close_twice_is_harmless(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False)
    r.cam.close()
    writes = len(r.rec.writes)
    r.cam.close()
    assert len(r.rec.writes) == writes
    r.fs.close()


def test_ircut_coil_raised_as_ctrl_c_arrives_is_low_after_close(tmp_path):
    r = Rig(tmp_path, sd_reset_on_start=False, night={"initial_mode": "DAY"})
    try:
        r.loop.run_until_idle()
        coil = r.cam.ir._coil["NIGHT"]
        coil._f = _FailsAfter(coil._f, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            r.cam.ir.set_cut("NIGHT")
        assert r.fs.value(coil.pin) == 1       # the pulse started, then Ctrl-C
        r.cam.close()
        assert [v for p, v in r.rec.writes if p == coil.pin][-1] == 0
    finally:
        r.fs.close()


def test_problems_are_reported_in_the_state(tmp_path):
    light = tmp_path / "light"
    r = Rig(tmp_path, sd_reset_on_start=False, light_file=str(light))
    try:
        r.loop.run_for(1000000)
        problems = r.cam.hardware_state()["problems"]
        assert len(problems) == 1 and "light file %s" % light in problems[0]
        light.write_text("50\n")
        # a full or read-only flash: the position file cannot be replaced
        blocker = tmp_path / "state" / "position.json.tmp"
        blocker.mkdir()
        r.cam.pan.move_to(r.cam.pan.steps + 10)
        r.loop.run_for(20000000)
        problems = r.cam.hardware_state()["problems"]
        assert len(problems) == 1 and "position.json" in problems[0], problems
        blocker.rmdir()
        r.cam.pan.move_to(r.cam.pan.steps + 10)
        r.loop.run_for(60000000)
        assert r.cam.hardware_state()["problems"] == []
    finally:
        r.close()
