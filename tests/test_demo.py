"""`camhost demo` (what `make demo` runs): the tour, Ctrl-C, an external broker, and
that nothing is left behind."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

from broker_fixtures import WAIT_S, Mosquitto, Watcher, stop_leftovers, wait_until  # noqa: F401
from camagent import boards
from camhost.demo import TOUR
from camhost.simcam import SimCamera

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo(*args, tmp):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "hostside"), TMPDIR=str(tmp))
    return subprocess.Popen([sys.executable, "-m", "camhost", "demo"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie of ours would still answer; the demo reaps its agent, so this means alive
    return False


def agent_pid(output):
    return int(re.search(r"\(pid (\d+)\)", output).group(1))


def port_closed(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def test_the_tour_runs_and_cleans_up(tmp_path):
    proc = demo("--speedup", "10", "--pause", "0", tmp=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    lines = out.splitlines()
    steps = [l for l in lines if l.startswith("> camhost ctl ")]
    assert [s.split("#")[0].split()[3] for s in steps][:4] == ["home", "pan", "tilt", "preset"]
    assert "  ok: homed; parked at pan 177.5°, tilt 45.0°" in lines
    assert "  ok: at preset door: pan 120.0°, tilt 70.0°" in lines
    assert "  ok: night mode NIGHT (IR LED ON, IR-cut NIGHT)" in lines
    assert "  ok: green LED BLINK" in lines
    assert "  refused, as it should be: demo: pan position 999.0 is out of range; 0.0 to " \
           "355.1 degrees accepted" in lines
    # the simulated majestic: a snapshot over MQTT, AUTO following the gain both ways
    assert any(re.fullmatch(r"  ok: \d+-byte JPEG on camagent/demo/snapshot, the bytes "
                            r"majestic served", l) for l in lines)
    assert "  ok: AUTO switched to NIGHT; majestic asked for greyscale (/night/on)" in lines
    assert "  ok: AUTO switched to DAY; majestic back to colour (/night/off)" in lines
    assert lines[-1] == "camhost demo: demo finished: every step did what it should"
    port = int(re.search(r"broker: mqtt://127.0.0.1:(\d+) \(private mosquitto\)", out).group(1))
    assert gone(agent_pid(out)) and port_closed(port)
    assert not os.listdir(tmp_path)            # the temp dir went too


def test_ctrl_c_stops_everything(tmp_path):
    proc = demo("--no-tour", tmp=tmp_path)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("> running; Ctrl-C"):
                break
        pid = agent_pid("".join(seen))
        assert not gone(pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, err
        assert "demo finished" in out
        wait_until(lambda: gone(pid), what="the agent to exit")
        assert not os.listdir(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_against_an_external_broker(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    work = tmp_path / "tmp"
    work.mkdir()
    try:
        proc = demo("--broker", broker.url, "--speedup", "10", "--pause", "0", tmp=work)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        assert "broker: %s\n" % broker.url in out and "embedded" not in out
        # nothing retained is left behind: no discovery, state or availability of "demo"
        w = Watcher(broker, ["homeassistant/+/camagent_demo/+/config", "camagent/demo/#"])
        try:
            time.sleep(1)
            assert [m for m in w.messages if m[2]] == [], "left behind: %s" % w.messages[:3]
        finally:
            w.close()
    finally:
        broker.kill()


def test_speedup_scales_each_axis_from_its_own_board_defaults(tmp_path):
    sim = SimCamera(tmp_path / "camera")
    try:
        overrides = sim.config(speedup=3)["overrides"]
    finally:
        sim.close()
    profile = boards.profile("imou-ranger-rc-4mp")
    for axis in ("pan", "tilt"):
        for key in ("speed", "max_speed", "start_speed", "home_speed"):
            assert overrides[axis][key] == 3 * profile[axis][key], (axis, key)
        assert overrides[axis]["accel"] == 9 * profile[axis]["accel"]   # same ramp, 3x faster


def test_bad_options_are_refused(tmp_path):
    proc = demo("--speedup", "100", tmp=tmp_path)
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 2 and "--speedup must be from 1 to 20" in err


def test_keep_running_prints_the_command_and_its_broker_delivers_exactly_what_mqtt_says(tmp_path):
    """The demo's own broker, watched with mosquitto_sub and paho: nothing on an unrelated
    subscription, each retained message once on '#', and 20 of 20 error replies."""
    proc = demo("--no-tour", tmp=tmp_path)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("> running; Ctrl-C"):
                break
        text = "".join(seen)
        url = re.search(r"broker: (mqtt://127.0.0.1:\d+) \(private mosquitto\)", text).group(1)
        assert re.search(r"ctl --broker %s demo home" % re.escape(url), text), text
        port = url.rsplit(":", 1)[1]
        sub = ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-v"]
        unrelated = subprocess.run(sub + ["-t", "nothing/here", "-W", "2"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert unrelated.stdout.strip() == "" or "Timed out" in unrelated.stdout, unrelated.stdout
        assert "camagent/" not in unrelated.stdout
        everything = subprocess.run(sub + ["-t", "#", "-W", "2", "--retained-only"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        topics = [l.split(" ", 1)[0] for l in everything.stdout.splitlines() if l.strip()]
        assert "camagent/demo/availability" in topics
        assert len(topics) == len(set(topics)), "a retained message came twice: %s" % topics
        errors = subprocess.Popen(sub + ["-t", "camagent/demo/error", "-C", "20", "-W", str(WAIT_S)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)  # mosquitto_sub subscribed
        for i in range(20):
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", port,
                            "-t", "camagent/demo/nonsense%d/set" % i, "-m", "x"], check=True)
        out, _ = errors.communicate(timeout=WAIT_S + 5)
        assert len([l for l in out.splitlines() if l.startswith("camagent/demo/error ")]) == 20, out
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=WAIT_S)


def demo_on_a_terminal(tmp, extra_env):
    """The demo with its output on a real pseudo-terminal, as `make demo` in a shell; what
    the terminal received, escape codes and all."""
    import pty
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "hostside"), TMPDIR=str(tmp),
               TERM="xterm", COLUMNS="120")
    env.pop("NO_COLOR", None)
    env.update(extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "camhost", "demo", "--speedup", "10",
                             "--pause", "0"], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
                            env=env)
    os.close(slave)
    received = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:          # EIO: the demo closed the terminal's last writer
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, received.decode(errors="replace")[-2000:]
    return received.decode(errors="replace")


PICTURE_STEPS = 4


def test_on_a_terminal_the_refused_step_stands_out_and_a_summary_stays(tmp_path):
    text = demo_on_a_terminal(tmp_path, {})
    tail = text[text.rindex("tour summary:"):]
    summary = [l for l in tail.replace("\r", "").splitlines() if l.strip()]
    steps = len(TOUR) + PICTURE_STEPS   # the snapshot and day/night steps follow the tour
    assert summary[0] == "tour summary: %d steps: %d ok, 1 refused as they should be, 0 failed" \
        % (steps, steps - 1)
    assert "\x1b[1;33mrefused\x1b[0m  camhost ctl pan 999   # a command the agent must refuse" in tail
    assert "\x1b[32mok     \x1b[0m  camhost ctl home   # find the mechanical zero" in tail
    # the simulated camera has no SD card rather than the computer's disk as one
    assert "SD free -" in text


def test_no_color_turns_the_colour_off(tmp_path):
    text = demo_on_a_terminal(tmp_path, {"NO_COLOR": "1"})
    assert "\x1b[1;33m" not in text and "\x1b[32m" not in text
    assert "refused  camhost ctl pan 999   # a command the agent must refuse" in text


def test_the_uptime_moves_between_state_publications():
    from camhost import ctl
    first = ctl.panel_lines("d", {"uptime": 100}, "online")[0]
    later = ctl.panel_lines("d", {"uptime": 100}, "online", age_s=7.9)[0]
    assert first.endswith("up 100 s") and later.endswith("up 107 s")


def test_the_panel_paints_a_line_that_must_stand_out_after_cutting_it_to_the_width(monkeypatch):
    import pty
    from camhost import ctl
    master, slave = pty.openpty()
    out = os.fdopen(slave, "w")
    try:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("TERM", "xterm")
        panel = ctl.Panel(out, True)
        panel.draw(["plain", ("refused: " + "x" * 500, "refused")])
        drawn = os.read(master, 65536).decode()
    finally:
        out.close()
        os.close(master)
    assert "plain\r\n" in drawn
    assert re.search(r"\x1b\[1;33mrefused: x+\x1b\[0m", drawn)   # the reset survived the cut
