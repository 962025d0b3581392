"""The local channel end to end: the hook scripts as busybox runs them, a real agent
process on the simulated camera, real mosquitto.

The scripts run with PATH holding nothing but busybox applets, so a command the
camera's busybox lacks fails here too. OpenIPC's busybox config (NC, NC_SERVER,
NC_EXTRA; no NC_110_COMPAT, no FEATURE_UNIX_LOCAL) gives the same small nc as
Debian's busybox: TCP only.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from broker_fixtures import (Agent, Watcher, free_port, latest_state, mosquitto,  # noqa: F401
                             stop_leftovers, wait_until)
from camagent.localchan import MAX_LINE, LineError, parse_line
from camagent.onvif import preset_number

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBIN = os.path.join(ROOT, "overlay", "usr", "sbin")
BUSYBOX = shutil.which("busybox")
APPLETS = ("sh", "nc", "sed", "head", "timeout", "cat")

needs_busybox = pytest.mark.skipif(not BUSYBOX, reason="busybox is not installed")


# --- the scripts ---------------------------------------------------------------------------

SCRIPTS = [os.path.join(SBIN, name) for name in ("camagent-local", "motion.sh")]


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_pass_shellcheck_and_busybox_ash(script):
    result = subprocess.run(["shellcheck", "-s", "sh", script], stdout=subprocess.PIPE)
    assert result.returncode == 0, result.stdout.decode()
    if BUSYBOX:
        subprocess.run([BUSYBOX, "sh", "-n", script], check=True)
    assert os.stat(script).st_mode & 0o111          # installed as commands


def test_usage_without_a_verb(busybox_path, tmp_path):
    r = subprocess.run([os.path.join(busybox_path, "sh"), SCRIPTS[0]],
                       env={"PATH": busybox_path}, stderr=subprocess.PIPE)
    assert r.returncode == 2 and b"usage: camagent-local VERB" in r.stderr


# --- the line parser ---------------------------------------------------------------------

def test_good_lines():
    assert parse_line(b"motion\n") == ("motion", [])
    assert parse_line(b"jump_to_abs 0.5 -0.2 0\n") == ("jump_to_abs", ["0.5", "-0.2", "0"])
    assert parse_line(b"jump_to_abs 10.000000 20.000000\n") == ("jump_to_abs",
                                                                 ["10.000000", "20.000000"])
    assert parse_line(b"set_preset 2 door") == ("set_preset", ["2", "door"])
    assert parse_line(b"set_preset door\r\n") == ("set_preset", ["door"])
    assert parse_line(b"move_left 0.500000") == ("move_left", ["0.500000"])


@pytest.mark.parametrize("line,why", [
    (b"", "empty"), (b"  \n", "empty"), (b"rm -rf /\n", "unknown command rm"),
    (b"move_left 1 2\n", "takes 0 to 1"), (b"jump_to_abs 1\n", "takes 2 to 3"),
    (b"motion now\n", "takes 0"), (b"\xff\xfe\n", "not text"), (b"motion\x00\n", "not text"),
    (b"motion" * 40, "too long"),
])
def test_refused(line, why):
    with pytest.raises(LineError, match=why):
        parse_line(line)


@pytest.mark.parametrize("doc,why", [
    ({"local_port": 70000}, "local_port: must be from 0 to 65535"),
    ({"local_port": "4223"}, "local_port: must be a whole number"),
    ({"motion": {"quiet_s": 0}}, "motion.quiet_s: must be from 1 to 500"),
    ({"motion": {"quiet_s": 600}}, "~537 s"),
    ({"motion": {"snapshot": "yes"}}, "motion.snapshot: must be true or false"),
    ({"motion": {"quiet": 5}}, "motion.quiet: unknown key"),
])
def test_config_keys_are_checked(doc, why):
    from camagent import config
    with pytest.raises(config.ConfigError, match=re.escape(why)):
        config.parse(json.dumps(doc))


def test_config_defaults():
    from camagent import config
    cfg = config.parse("{}")
    assert cfg["local_port"] == 4223
    assert cfg["motion"] == {"quiet_s": 30, "snapshot": False}


# --- a real agent and the scripts --------------------------------------------------------

@pytest.fixture
def busybox_path(tmp_path):
    if not BUSYBOX:
        pytest.skip("busybox is not installed")
    d = tmp_path / "busybox-bin"
    d.mkdir()
    for applet in APPLETS:
        os.symlink(BUSYBOX, str(d / applet))
    return str(d)


class Camera:
    """An agent with the local channel on a free port, a watcher, and the scripts."""

    def __init__(self, tmp_path, broker, path, micropython=None, **cfg):
        self.port = free_port()
        self.watcher = Watcher(broker, ["camagent/#"])
        self.agent = Agent(tmp_path, broker, local_port=self.port, micropython=micropython,
                           sd_reset_on_start=False, **cfg).start()
        self.path = path
        self.watcher.wait_for(lambda t, p: t == self.agent.base + "/state", "the first state")

    def script(self, name, *args):
        """Run overlay/usr/sbin/NAME with busybox sh, as majestic or the ONVIF server does."""
        env = {"PATH": self.path, "CAMAGENT_CONFIG": self.agent.config}
        return subprocess.run(["sh", os.path.join(SBIN, name)] + list(args), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20,
                              executable=os.path.join(self.path, "sh"))

    def local(self, *args):
        r = self.script("camagent-local", *args)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def ok(self, *args):
        code, out, err = self.local(*args)
        assert code == 0, "%s: exit %d, %s" % (args, code, err)
        return out

    def state(self):
        return latest_state(self.watcher, self.agent.base)

    def close(self):
        self.watcher.close()


@pytest.fixture
def cam(tmp_path, mosquitto, busybox_path):  # noqa: F811
    c = Camera(tmp_path, mosquitto, busybox_path, motion={"quiet_s": 1})
    yield c
    c.close()


def request(port, data, timeout=10):
    """One raw request over TCP, the reply as bytes (for what the scripts cannot send)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out
            out += chunk


def motion_payloads(cam, start=0):
    return [p for p, r in cam.watcher.all(cam.agent.base + "/motion", start)]


@needs_busybox
def test_motion_sh_publishes_on_then_off(cam):
    base = cam.agent.base
    # the agent's first word on the topic is OFF (it clears an ON left by a crash)
    cam.watcher.wait_for(lambda t, p: t == base + "/motion" and p == b"OFF", "the initial OFF")
    mark = cam.watcher.mark()
    r = cam.script("motion.sh", "1", "2")   # majestic passes arguments; they are ignored
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""
    cam.watcher.wait_for(lambda t, p: t == base + "/motion" and p == b"ON", "motion ON",
                         start=mark)
    cam.watcher.wait_for(lambda t, p: t == base + "/motion" and p == b"OFF",
                         "motion OFF after quiet_s", start=mark)
    assert motion_payloads(cam, mark) == [b"ON", b"OFF"]
    # both are retained: a client that subscribes later (HA after a restart) sees OFF
    late = Watcher(cam.agent.broker, [base + "/motion"])
    try:
        late.wait_for(lambda t, p: p == b"OFF", "the retained state")
        assert late.messages[0][2] is True
    finally:
        late.close()


@needs_busybox
def test_motion_while_on_extends_it(tmp_path, mosquitto, busybox_path):  # noqa: F811
    c = Camera(tmp_path, mosquitto, busybox_path, motion={"quiet_s": 3})
    try:
        base = c.agent.base
        c.watcher.wait_for(lambda t, p: t == base + "/motion", "the initial OFF")
        mark = c.watcher.mark()
        for _ in range(3):
            assert c.script("motion.sh").returncode == 0
        c.watcher.wait_for(lambda t, p: t == base + "/motion" and p == b"OFF", "OFF",
                           start=mark)
        assert motion_payloads(c, mark) == [b"ON", b"OFF"]   # one ON for the burst
    finally:
        c.close()


@needs_busybox
def test_ptz_status_in_onvif_formats(cam):
    pan, tilt = cam.state()["pan"]["position"], cam.state()["tilt"]["position"]
    # onvif-simple-server: sscanf("%lf,%lf,%lf") needs at least two; is_moving "%d"
    assert cam.ok("get_position") == "%.1f,%.1f,0.0\n" % (pan, tilt)
    assert cam.ok("is_moving") == "0\n"
    assert cam.ok("get_presets") == ""


@needs_busybox
def test_move_left_moves_the_simulated_pan(cam):
    start = cam.agent.sim.levels("pan")
    before = cam.state()["pan"]["position"]
    assert cam.ok("move_left") == ""
    wait_until(lambda: cam.state()["pan"]["moving"], what="pan to move")
    assert cam.ok("is_moving") == "1\n"
    assert cam.state()["pan"]["target_steps"] == 0       # toward the soft limit
    assert cam.ok("move_stop") == ""
    wait_until(lambda: not cam.state()["pan"]["moving"], what="pan to stop")
    after = cam.state()["pan"]["position"]
    assert after < before
    assert cam.agent.sim.levels("pan") == (0, 0, 0, 0)   # coils released at the stop
    assert start == (0, 0, 0, 0)
    assert cam.ok("get_position").startswith("%.1f," % after)


@needs_busybox
def test_jump_and_presets_through_the_hook(cam):
    def settled(pan, tilt):
        s = cam.state()
        return (not s["pan"]["moving"] and not s["tilt"]["moving"]
                and s["pan"]["position"] == pan and s["tilt"]["position"] == tilt)

    # the onvif.conf line: jump_to_abs %f %f (OpenIPC's release sends two numbers)
    cam.ok("jump_to_abs", "100.000000", "30.000000")
    wait_until(lambda: settled(100.0, 30.0), what="the absolute move")
    cam.ok("set_preset", "door")                       # OpenIPC's release: the name only
    cam.ok("jump_to_rel", "-20.000000", "10.000000")
    wait_until(lambda: settled(80.0, 40.0), what="the relative move")
    lines = cam.ok("get_presets").splitlines()
    assert len(lines) == 1
    number, _, rest = lines[0].partition("=")
    assert rest == "door,100.0,30.0"
    cam.ok("move_preset", number)
    wait_until(lambda: settled(100.0, 30.0), what="the preset")
    # the same preset over MQTT: the state lists it, so both sides share one store
    wait_until(lambda: "door" in cam.state()["presets"], what="the preset in the state")
    cam.ok("remove_preset", number)
    assert cam.ok("get_presets") == ""
    code, out, err = cam.local("move_preset", number)
    assert code == 1 and "no preset has ONVIF number %s" % number in err


@needs_busybox
def test_bad_requests_get_an_error_and_the_agent_keeps_working(cam):
    for args, why in ((("reboot",), "unknown command reboot"),
                      (("jump_to_abs", "nan", "1"), "not a finite number"),
                      (("jump_to_abs", "999", "1"), "out of range"),
                      (("move_left", "7"), "velocity 7 is out of range"),
                      (("move_preset", "x;reboot"), "not a whole number"),
                      (("set_preset", "a/b"), "not accepted")):
        code, out, err = cam.local(*args)
        assert code == 1, args
        assert why in err, (args, err)
        assert out == ""
    # what the script cannot send: raw bytes and an endless line
    assert request(cam.port, b"\xff\xfe\n") == b"error line is not text\n"
    assert request(cam.port, b"x" * (MAX_LINE + 50)) == b"error line too long\n"
    # a silent client is dropped with a reason, not waited for
    with socket.create_connection(("127.0.0.1", cam.port), timeout=10) as s:
        assert s.recv(100).startswith(b"error no complete line")
    assert cam.agent.alive()
    assert cam.ok("is_moving") == "0\n"
    assert cam.state()["problems"] == []


@needs_busybox
def test_a_line_in_pieces_or_without_newline_is_one_request(cam):
    with socket.create_connection(("127.0.0.1", cam.port), timeout=10) as s:
        s.sendall(b"is_mov")
        time.sleep(0.3)              # the agent must wait for the rest, not answer "is_mov"
        s.sendall(b"ing\nget_position\n")   # a second line on the connection is ignored
        assert s.recv(100) == b"ok\n0\n"
    assert request(cam.port, b"is_moving") == b"ok\n0\n"    # `echo -n`: EOF ends the line


@needs_busybox
def test_the_channel_listens_on_loopback_only(cam):
    out = subprocess.run(["ss", "-ltnH", "sport = :%d" % cam.port], stdout=subprocess.PIPE)
    if out.returncode != 0:
        pytest.skip("ss is not available")
    local = [line.split()[3] for line in out.stdout.decode().splitlines()]
    assert local == ["127.0.0.1:%d" % cam.port]


@needs_busybox
def test_a_flood_of_requests_does_not_stall_a_move(cam):
    cam.ok("jump_to_abs", "300", "80")
    stop = threading.Event()
    answers = []

    def flood():
        while not stop.is_set():
            try:
                answers.append(request(cam.port, b"is_moving\n"))
            except OSError:
                answers.append(b"")

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: (not cam.state()["pan"]["moving"]
                            and cam.state()["pan"]["position"] == 300.0
                            and cam.state()["tilt"]["position"] == 80.0),
                   what="the move to finish during the flood")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(answers) > 20
    # every request got its answer: more than MAX_CLIENTS at once wait, none is dropped
    assert all(a in (b"ok\n1\n", b"ok\n0\n") for a in answers), set(answers)
    assert cam.agent.sim.levels("pan") == (0, 0, 0, 0)


@needs_busybox
def test_silent_clients_holding_every_slot_only_delay_the_next_request(cam):
    from camagent.localchan import MAX_CLIENTS
    silent = [socket.create_connection(("127.0.0.1", cam.port), timeout=10)
              for _ in range(MAX_CLIENTS)]
    try:
        # the channel is full: this request waits in the backlog until a slot frees
        assert cam.ok("is_moving") == "0\n"
        for s in silent:
            assert s.recv(100).startswith(b"error no complete line")
    finally:
        for s in silent:
            s.close()
    assert cam.ok("is_moving") == "0\n"    # and the listener is watched again


@needs_busybox
def test_port_in_use_is_a_problem_not_a_crash(tmp_path, mosquitto, busybox_path):  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        w = Watcher(mosquitto, ["camagent/#"])
        agent = Agent(tmp_path, mosquitto, local_port=port).start()
        try:
            w.wait_for(lambda t, p: t == agent.base + "/state"
                       and any("local channel" in x for x in json.loads(p)["problems"]),
                       "the problem in the state")
            problem = [x for x in latest_state(w, agent.base)["problems"]
                       if "local channel" in x][0]
            assert "127.0.0.1:%d" % port in problem and "address in use" in problem
            assert agent.alive()
        finally:
            w.close()


@needs_busybox
def test_no_agent_is_a_clear_error(tmp_path, busybox_path):
    cfg = tmp_path / "camagent.json"
    cfg.write_text(json.dumps({"local_port": free_port()}))
    env = {"PATH": busybox_path, "CAMAGENT_CONFIG": str(cfg)}
    r = subprocess.run([os.path.join(busybox_path, "sh"), os.path.join(SBIN, "motion.sh")],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert r.returncode == 1
    assert b"no answer from camagent on 127.0.0.1:" in r.stderr


@needs_busybox
@pytest.mark.micropython
def test_channel_on_micropython(tmp_path, mosquitto, busybox_path):  # noqa: F811
    """The socket calls as MicroPython 1.22's unix port has them (set MICROPYTHON)."""
    binary = os.environ.get("MICROPYTHON")
    if not binary:
        pytest.skip("set MICROPYTHON to a MicroPython 1.22 unix binary")
    c = Camera(tmp_path, mosquitto, busybox_path, micropython=binary, motion={"quiet_s": 1})
    try:
        base = c.agent.base
        c.watcher.wait_for(lambda t, p: t == base + "/motion", "the initial OFF")
        mark = c.watcher.mark()
        assert c.script("motion.sh").returncode == 0
        c.watcher.wait_for(lambda t, p: t == base + "/motion" and p == b"OFF", "OFF",
                           start=mark)
        assert b"ON" in motion_payloads(c, mark)
        c.ok("move_right")
        assert c.ok("is_moving") == "1\n"
        c.ok("move_stop")
        assert request(c.port, b"bogus\n") == b"error unknown command bogus\n"
        with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
            assert s.recv(100).startswith(b"error no complete line")
        assert c.ok("get_position").count(",") == 2
    finally:
        c.close()


# --- /etc/onvif.conf, as onvif-simple-server runs it ---------------------------------------

ONVIF_CONF = os.path.join(ROOT, "overlay", "etc", "onvif.conf")
PTZ_KEYS = ("get_position", "is_moving", "move_left", "move_right", "move_up", "move_down",
            "move_stop", "move_preset", "goto_home_position", "set_preset",
            "set_home_position", "remove_preset", "jump_to_abs", "jump_to_rel", "get_presets")


def onvif_conf():
    with open(ONVIF_CONF) as f:
        return dict(line.split("=", 1) for line in f.read().splitlines()
                    if "=" in line and not line.startswith("#"))


def test_onvif_conf_ptz_section_names_every_command_and_the_board_ranges():
    from camagent import boards
    conf = onvif_conf()
    assert conf["ptz"] == "1"
    for key in PTZ_KEYS:
        assert conf[key].split()[:2] == ["/usr/sbin/camagent-local", key], key
    prof = boards.profile("imou-ranger-rc-4mp")
    for axis, key in (("pan", "max_step_x"), ("tilt", "max_step_y")):
        top = round(prof[axis]["max_steps"] / prof[axis]["steps_per_degree"], 1)  # max_deg
        assert 0 <= top - float(conf[key]) < 1, (key, top)   # within the reachable range


@needs_busybox
def test_onvif_conf_commands_run_as_the_server_runs_them(cam):
    """Each PTZ command of onvif.conf, formatted as onvif-simple-server's sprintf does and
    run through sh as its system()/popen() do, against the agent."""
    conf = onvif_conf()

    def run(key, *values):
        command = conf[key] % values if values else conf[key]   # C's %d %f %s, as sprintf
        assert command.startswith("/usr/sbin/camagent-local ")
        argv = command.split()[1:]
        r = cam.script("camagent-local", *argv)
        assert r.returncode == 0, (command, r.stderr)
        return r.stdout.decode()

    run("jump_to_abs", 200.0, 45.0)
    wait_until(lambda: cam.ok("is_moving") == "0\n", what="the move")
    assert run("get_position") == "200.0,45.0,0.0\n"
    run("set_preset", "Gate")
    number = int(run("get_presets").split("=")[0])
    run("jump_to_rel", -50.0, -5.0)
    wait_until(lambda: cam.ok("is_moving") == "0\n", what="the move")
    assert run("get_position") == "150.0,40.0,0.0\n"
    run("move_preset", number)
    wait_until(lambda: cam.ok("is_moving") == "0\n", what="the move")
    assert run("get_position") == "200.0,45.0,0.0\n"
    for key in ("move_left", "move_right", "move_up", "move_down"):
        assert run(key) == ""        # system(): nothing may reach the SOAP answer
        assert run("move_stop") == ""
    run("set_home_position")
    run("goto_home_position")
    run("remove_preset", preset_number("home"))
    run("remove_preset", number)
    assert run("get_presets") == ""
    assert run("is_moving") in ("0\n", "1\n")
