"""The MicroPython VM harness (tests/mpvm.py): the VM, host calls, HostGpio, FakeClock."""
import json
import os

import pytest

import mpvm

pytestmark = pytest.mark.micropython

vm = mpvm.vm_fixture()


@pytest.fixture(scope="module")
def shared_vm():
    # for checks that only read: one VM start instead of one per test
    with mpvm.MicroVM() as machine:
        yield machine


def test_guest_is_micropython_with_mpy_format_6(shared_vm):
    assert shared_vm.eval("_mpvm_sys.implementation.name") == "micropython"
    assert shared_vm.eval("_mpvm_sys.implementation._mpy & 0xff") == 6


def test_agent_is_imported_from_mpy_files_compiled_by_mpy_cross_1_22(shared_vm):
    shared_vm.run("import camagent.compat, camagent.gpio")
    assert shared_vm.eval("camagent.compat.__file__") == "/input/camagent/compat.mpy"
    assert shared_vm.eval("camagent.gpio.__file__") == "/input/camagent/gpio.mpy"
    assert shared_vm.eval("camagent.compat.IS_MICROPYTHON") is True
    with open(os.path.join(shared_vm.input_dir, "camagent", "compat.mpy"), "rb") as f:
        header = f.read(4)
    # format 6, no native code: the feature byte carries no arch and no sub-version
    assert header[:3] == b"M\x06\x00"
    assert not any(n.endswith(".py") for n in os.listdir(os.path.join(shared_vm.input_dir, "camagent")))


def test_every_agent_module_is_staged(shared_vm):
    sources = {n[:-3] for n in os.listdir(mpvm.AGENT_PACKAGE) if n.endswith(".py")}
    staged = {n[:-4] for n in os.listdir(os.path.join(shared_vm.input_dir, "camagent"))}
    assert sources and staged == sources


def test_source_mode_imports_the_py_files():
    with mpvm.MicroVM(agent="source") as machine:
        machine.run("import camagent.compat")
        assert machine.eval("camagent.compat.__file__") == "/input/camagent/compat.py"


def test_without_agent_camagent_is_not_importable():
    with mpvm.MicroVM(agent=None) as machine:
        with pytest.raises(mpvm.GuestError) as exc:
            machine.run("import camagent")
        assert exc.value.type_name == "ImportError"


def test_host_function_round_trip():
    calls = []

    def lookup(key, table, scale=1):
        calls.append((key, table, scale))
        return {"value": table[key] * scale, "echo": [key, None, True]}

    with mpvm.MicroVM(host_functions={"lookup": lookup}) as machine:
        out = machine.run("""
            r = lookup("b", {"a": 1, "b": 20}, scale=3)
            print(r["value"] + 1, r["echo"])
        """)
    assert out == "61 ['b', None, True]\n"
    assert calls == [("b", {"a": 1, "b": 20}, 3)]


def test_host_function_exception_reaches_the_guest():
    def refuse(what):
        raise PermissionError("no %s today" % what)

    with mpvm.MicroVM(host_functions={"refuse": refuse}) as machine:
        with pytest.raises(mpvm.GuestError, match="PermissionError: no tea today") as exc:
            machine.run("refuse('tea')")
    assert exc.value.type_name == "RuntimeError"


def test_guest_exception_surfaces_with_message_traceback_and_output(vm):
    with pytest.raises(mpvm.GuestError) as exc:
        vm.run("""
            def check(n):
                if n > 2:
                    raise ValueError("n is %d, want at most 2" % n)
            print("checking")
            check(5)
        """)
    e = exc.value
    assert (e.type_name, e.message) == ("ValueError", "n is 5, want at most 2")
    assert e.stdout == "checking\n"
    assert 'File "<test>", line 4, in check' in e.traceback
    assert 'File "<test>", line 6, in <module>' in e.traceback
    assert "ValueError: n is 5, want at most 2" in str(e)
    # the VM survives a guest exception
    assert vm.run("print('still here')") == "still here\n"


def test_syntax_error_is_a_guest_error(vm):
    with pytest.raises(mpvm.GuestError) as exc:
        vm.run("def broken(:\n    pass")
    assert exc.value.type_name == "SyntaxError"


def test_globals_persist_between_runs(vm):
    vm.run("counter = [1]")
    vm.run("counter.append(2)")
    assert vm.eval("counter") == [1, 2]


def test_put_and_eval_round_trip_json_values(vm):
    cfg = {"board": "imou-ranger-rc-4mp", "night": {"dark_below": 20}, "list": [1, 2.5, None]}
    vm.put("cfg", cfg)
    assert vm.eval("cfg") == cfg
    assert vm.eval("cfg['night']['dark_below'] * 2") == 40
    with pytest.raises(ValueError):
        vm.put("not a name", 1)


def test_files_are_staged_under_input():
    with mpvm.MicroVM(files={"conf/agent.json": json.dumps({"board": "x"}), "blob.bin": b"\x00\x01"}) as m:
        assert m.eval("_mpvm_json.load(open('/input/conf/agent.json'))") == {"board": "x"}
        assert m.eval("list(open('/input/blob.bin', 'rb').read())") == [0, 1]


def test_endless_loop_stops_the_vm_with_a_fuel_error():
    with mpvm.MicroVM(agent=None, fuel=50_000_000) as machine:
        with pytest.raises(mpvm.VMError, match="out of fuel"):
            machine.run("while True:\n    pass")
        with pytest.raises(mpvm.VMError, match="stopped earlier"):
            machine.run("print(1)")


def test_gc_is_off_and_heap_exhaustion_is_reported(vm):
    # the wasm build's collector frees objects still in use; see tests/mpvm.py
    assert vm.eval("gc.isenabled()") is False
    free = vm.heap_free()
    assert 100_000 < free < 2_000_000
    with pytest.raises(mpvm.GuestError) as exc:
        vm.run("big = bytearray(%d)" % (2 * free))
    assert exc.value.type_name == "MemoryError"  # a failed big allocation leaves the VM usable
    with pytest.raises(mpvm.VMError, match="heap exhausted") as exc:
        vm.run("""
            def hoard():
                keep = []
                while True:
                    keep.append([1, 2, 3])
            hoard()
        """)
    assert "MemoryError" in str(exc.value)


def test_mpy_cross_rejection_names_the_file(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "good.py").write_text("X = 1\n")
    (pkg / "bad.py").write_text("def broken(:\n    pass\n")
    with pytest.raises(mpvm.MpyCompileError, match="bad.py"):
        mpvm.stage_package(str(pkg), str(tmp_path / "out"))


def test_host_gpio_records_levels_in_write_order(vm):
    out = vm.run("""
        gpio = HostGpio()
        ir = gpio.output(44)
        wifi = gpio.output(46, 1, keep=True)
        ir.set(1)
        ir.set(0)
        ir.set(1)
        print(ir.value, wifi.value, ir.pin)
    """)
    assert out == "1 1 44\n"
    assert vm.gpio.writes == [(44, 0), (46, 1), (44, 1), (44, 0), (44, 1)]
    assert vm.gpio.levels == {44: 1, 46: 1}
    assert vm.gpio.claimed == {44: False, 46: True}
    assert vm.gpio.history(44) == [0, 1, 0, 1]
    vm.run("gpio.release_all()")
    assert vm.gpio.released == [44, 46]
    assert vm.gpio.claimed == {}


def test_host_gpio_failure_raises_the_agents_gpio_error(vm):
    vm.run("gpio = HostGpio()\nled = gpio.output(61)")
    vm.gpio.fail(61, "EIO")
    out = vm.run("""
        from camagent.gpio import GpioError
        try:
            led.set(1)
        except GpioError as e:
            print(e.pin, e.path, e)
        print(led.value)
    """)
    assert out == "61 host:gpio61 GPIO 61: host:gpio61: EIO\n0\n"
    assert vm.gpio.history(61) == [0]
    vm.gpio.heal(61)
    vm.run("led.set(1)")
    assert vm.gpio.history(61) == [0, 1]


def test_host_gpio_refuses_a_pin_claimed_twice(vm):
    with pytest.raises(mpvm.GuestError, match="GPIO 14: host: pin claimed twice") as exc:
        vm.run("gpio = HostGpio()\ngpio.output(14)\ngpio.output(14)")
    assert exc.value.type_name == "GpioError"


def test_fake_clock_drives_the_agent_loop_deterministically(vm):
    vm.use_fake_clock(start_us=5_000)
    out = vm.run("""
        from camagent.compat import ticks_add, ticks_us
        from camagent.loop import Loop

        class Blinker:
            def __init__(self, line):
                self.line = line
                self.due = ticks_us()
                self.times = []

            def tick(self, now):
                self.times.append(now)
                self.line.set(1 - self.line.value)
                self.due = ticks_add(now, 250_000)

        blink = Blinker(HostGpio().output(79))
        loop = Loop()
        loop.add(blink)
        clock.run_loop(loop, 1_000_000)
        print(blink.times, clock.now_us)
    """)
    assert out == "[5000, 255000, 505000, 755000] 1005000\n"
    assert vm.gpio.history(79) == [0, 1, 0, 1, 0]


def test_fake_clock_sleeps_advance_time_and_ticks_wrap_like_the_vm(vm):
    vm.run("import time")
    period = vm.eval("time.ticks_add(0, -1) + 1")  # 2**30 on this 32-bit build, as on the camera
    vm.use_fake_clock(start_us=period - 500)
    out = vm.run("""
        from camagent import compat
        before = compat.ticks_us()
        compat.sleep_ms(2)
        after = compat.ticks_us()
        print(before, after, compat.ticks_diff(after, before))
    """)
    assert out == "%d 1500 2000\n" % (period - 500)


def test_fake_clock_must_be_installed_before_agent_modules(vm):
    vm.run("import camagent.loop")
    with pytest.raises(mpvm.GuestError, match="before importing camagent.loop"):
        vm.use_fake_clock()


def test_idle_loop_outside_run_loop_is_an_error_not_a_hang(vm):
    vm.use_fake_clock()
    with pytest.raises(mpvm.GuestError, match="wait forever"):
        vm.run("from camagent.loop import Loop\nLoop().run_once()")
