"""The init scripts: syntax, shellcheck, S34boardpower against a fake sysfs GPIO tree,
S96camagent's supervisor with an agent stand-in that crashes, runs or ignores SIGINT.

The scripts run with the real start-stop-daemon and logger: Debian's (dpkg, util-linux)
and, when busybox is installed, busybox's applets as on the camera. A `logger` on PATH
records its arguments and then runs the real logger, so the tests can read the log.
"""
import ctypes
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S34 = os.path.join(ROOT, "overlay", "etc", "init.d", "S34boardpower")
S96 = os.path.join(ROOT, "buildroot-package", "package", "camagent", "S96camagent")
SCRIPTS = (S34, S96)
BUSYBOX = shutil.which("busybox")


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


# --- syntax --------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_parse_in_dash(script):
    subprocess.run(["sh", "-n", script], check=True)


@pytest.mark.skipif(not BUSYBOX, reason="busybox is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_parse_in_busybox_ash(script):
    subprocess.run([BUSYBOX, "sh", "-n", script], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_pass_shellcheck(script):
    result = subprocess.run(["shellcheck", "-s", "sh", script], stdout=subprocess.PIPE)
    assert result.returncode == 0, result.stdout.decode()


# --- S34boardpower against a fake sysfs ----------------------------------------------------

IN_CLOSE_WRITE = 0x00000008
EVENT = struct.Struct("iIII")


class FakeGpio:
    """A directory laid out like /sys/class/gpio. Writing N to `export` makes gpioN/
    appear (shortly after, as on a real kernel); every write to export, direction and
    value is recorded in order, through inotify (one queue, so the order is exact)."""

    def __init__(self, root, exported=()):
        self.root = str(root)
        self.events = []
        os.makedirs(self.root)
        for name in ("export", "unexport"):
            open(os.path.join(self.root, name), "w").close()
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        assert self.fd >= 0
        self.watches = {}
        self._watch(self.root, "")
        for n in exported:
            self._create(n)
        self.stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _watch(self, path, prefix):
        wd = self.libc.inotify_add_watch(self.fd, path.encode(), IN_CLOSE_WRITE)
        assert wd >= 0
        self.watches[wd] = prefix

    def _create(self, n):
        # Build gpioN/ under another name, watch it, then rename: no write is missed.
        tmp = os.path.join(self.root, ".gpio%d" % n)
        os.mkdir(tmp)
        for name, content in (("direction", "in\n"), ("value", "0\n"), ("active_low", "0\n")):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(content)
        self._watch(tmp, "gpio%d/" % n)
        os.rename(tmp, os.path.join(self.root, "gpio%d" % n))

    def _serve(self):
        while True:
            ready, _, _ = select.select([self.fd, self.stop_r], [], [])
            if self.stop_r in ready:
                return
            data = os.read(self.fd, 65536)
            at = 0
            while at < len(data):
                wd, mask, _cookie, length = EVENT.unpack_from(data, at)
                name = data[at + EVENT.size:at + EVENT.size + length].rstrip(b"\0").decode()
                at += EVENT.size + length
                self._written(self.watches.get(wd, "?") + name)

    def _written(self, rel):
        with open(os.path.join(self.root, rel)) as f:
            value = f.read().strip()
        if not value:
            return
        self.events.append((rel, value))
        if rel == "export":
            if os.path.exists(os.path.join(self.root, "gpio" + value)):
                self.events.append(("EBUSY", value))     # the kernel refuses a re-export
            else:
                self._create(int(value))

    def level(self, n):
        """The line's level after the recorded writes, as the kernel would drive it."""
        level = None
        for rel, value in self.events:
            if rel == "gpio%d/direction" % n:
                level = {"high": 1, "low": 0, "out": 0}.get(value, level)
            elif rel == "gpio%d/value" % n:
                level = int(value)
        return level

    def close(self):
        os.write(self.stop_w, b"x")
        self.thread.join()
        for fd in (self.fd, self.stop_r, self.stop_w):
            os.close(fd)


SHELLS = [["sh"]] + ([[BUSYBOX, "sh"]] if BUSYBOX else [])
SHELL_IDS = ["dash"] + (["busybox"] if BUSYBOX else [])


@pytest.fixture
def fake_gpio(tmp_path):
    gpios = []

    def make(exported=()):
        g = FakeGpio(tmp_path / ("gpio%d" % len(gpios)), exported)
        gpios.append(g)
        return g
    yield make
    for g in gpios:
        g.close()


def run_s34(shell, root, tmp_path):
    env = dict(os.environ, GPIO_ROOT=str(root), PATH=spy_path(tmp_path, None))
    return subprocess.run(shell + [S34, "start"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=30)


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_boardpower_powers_wifi_then_pulses_sd_reset(shell, fake_gpio, tmp_path):
    gpio = fake_gpio()
    result = run_s34(shell, gpio.root, tmp_path)
    assert result.stdout.decode() == "Starting boardpower: OK\n"
    assert result.returncode == 0
    wait_for(lambda: len(gpio.events) >= 5, 5, "the writes to be seen")
    assert gpio.events == [("export", "46"), ("gpio46/direction", "high"),
                           ("export", "45"), ("gpio45/direction", "high"),
                           ("gpio45/value", "0")]
    assert gpio.level(46) == 1 and gpio.level(45) == 0


@pytest.mark.parametrize("shell", SHELLS, ids=SHELL_IDS)
def test_boardpower_does_not_re_export_pins(shell, fake_gpio, tmp_path):
    gpio = fake_gpio(exported=(45, 46))
    result = run_s34(shell, gpio.root, tmp_path)
    assert result.returncode == 0
    wait_for(lambda: len(gpio.events) >= 3, 5, "the writes to be seen")
    assert gpio.events == [("gpio46/direction", "high"), ("gpio45/direction", "high"),
                           ("gpio45/value", "0")]


def test_boardpower_reports_a_missing_gpio_tree(tmp_path):
    log = tmp_path / "logger.log"
    env = dict(os.environ, GPIO_ROOT=str(tmp_path / "nothing"), LOGGER_SPY=str(log),
               PATH=spy_path(tmp_path, None))
    result = subprocess.run(["sh", S34, "start"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, timeout=30)
    assert result.returncode == 1
    assert result.stdout.decode().endswith("FAIL\n")
    assert "could not set GPIO 46/45 under %s" % (tmp_path / "nothing") in log.read_text()


def test_boardpower_stop_leaves_power_on(fake_gpio, tmp_path):
    gpio = fake_gpio()
    env = dict(os.environ, GPIO_ROOT=gpio.root)
    assert subprocess.run(["sh", S34, "stop"], env=env).returncode == 0
    time.sleep(0.2)
    assert gpio.events == []


# --- S96camagent ---------------------------------------------------------------------------

STAND_IN = r'''
import json, os, signal, sys, time
cfg = json.load(open(sys.argv[sys.argv.index("-c") + 1]))
runs = cfg["state"]
n = int(open(runs).read()) if os.path.exists(runs) else 0
with open(runs, "w") as f:
    f.write(str(n + 1))
mode = cfg["modes"][min(n, len(cfg["modes"]) - 1)]

def note(what):
    with open(cfg["log"], "a") as f:
        f.write("%s %d %.3f\n" % (what, os.getpid(), time.time()))

if mode == "stubborn":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    note("start")       # the tests stop the agent once they see this
    if mode == "crash":
        sys.stderr.write("stand-in: hardware failure\n")
        sys.exit(3)
    end = time.time() + float(mode.split(":")[1]) if ":" in mode else None
    while end is None or time.time() < end:
        time.sleep(0.05)
    note("crash")
    sys.exit(4)
except KeyboardInterrupt:
    note("cleanup")      # the real agent releases the motor coils here
    sys.exit(0)
'''


def spy_path(tmp_path, flavour):
    """PATH with a recording `logger` (and busybox's applets for the busybox flavour, each a
    link named as the applet: busybox runs the applet its name says)."""
    bindir = tmp_path / ("bin-%s" % flavour)
    if not bindir.exists():
        bindir.mkdir()
        real_logger = shutil.which("logger")
        if flavour == "busybox":
            for applet in ("start-stop-daemon", "sleep", "date", "cat", "sh"):
                os.symlink(BUSYBOX, bindir / applet)
            real_logger = "%s logger" % BUSYBOX
        spy = bindir / "logger"
        # a message after "--" is recorded as given; without one, logger logs its stdin
        # line by line, and so does the spy
        spy.write_text('#!/bin/sh\n'
                       'case "$*" in *" -- "*)\n'
                       '  printf "%%s\\n" "$*" >> "${LOGGER_SPY:-/dev/null}"\n'
                       '  exec %s "$@";;\n'
                       'esac\n'
                       'while IFS= read -r line; do\n'
                       '  printf "%%s -- %%s\\n" "$*" "$line" >> "${LOGGER_SPY:-/dev/null}"\n'
                       '  printf "%%s\\n" "$line"\n'
                       'done | %s "$@"\n' % (real_logger, real_logger))
        spy.chmod(0o755)
    # init scripts run as root, whose PATH has the sbin directories (start-stop-daemon)
    return "%s:%s:/usr/sbin:/sbin" % (bindir, os.environ["PATH"])


FLAVOURS = ["debian"] + (["busybox"] if BUSYBOX else [])


class Service:
    """S96camagent pointed (through CAMAGENT_DEFAULTS) at files under tmp_path."""

    def __init__(self, tmp_path, flavour, modes, **settings):
        self.tmp = tmp_path
        self.shell = [BUSYBOX, "sh"] if flavour == "busybox" else ["sh"]
        pkg = tmp_path / "py" / "camagent"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "__main__.py").write_text(STAND_IN)
        bindir = tmp_path / "usr-bin"
        bindir.mkdir()
        self.micropython = bindir / "micropython"
        os.symlink(os.path.realpath(sys.executable), self.micropython)
        self.agent_log = tmp_path / "agent.log"
        self.logger_log = tmp_path / "logger.log"
        config = tmp_path / "camagent.json"
        config.write_text(json.dumps({"modes": modes, "log": str(self.agent_log),
                                      "state": str(tmp_path / "runs")}))
        self.pidfile = tmp_path / "camagent.pid"
        self.supervisor_pidfile = tmp_path / "camagent-supervisor.pid"
        values = {"PIDFILE": self.pidfile, "SUPERVISOR_PIDFILE": self.supervisor_pidfile,
                  "STATUSFILE": tmp_path / "camagent.status",
                  "MICROPYTHON": self.micropython, "CAMAGENT_ARGS": "-c %s" % config,
                  "RESTART_DELAY_MIN": 1, "RESTART_DELAY_MAX": 2, "STABLE_TIME": 60,
                  "STOP_TIMEOUT": 5}
        if flavour == "busybox":
            values["SUPERVISOR_SHELL"] = tmp_path / "bin-busybox" / "sh"   # from spy_path
        values.update(settings)
        defaults = tmp_path / "defaults"
        defaults.write_text("".join('%s="%s"\n' % kv for kv in values.items()))
        self.env = dict(os.environ, CAMAGENT_DEFAULTS=str(defaults),
                        PYTHONPATH=str(tmp_path / "py"), PYTHONDONTWRITEBYTECODE="1",
                        LOGGER_SPY=str(self.logger_log), PATH=spy_path(tmp_path, flavour))

    def run(self, action, cwd=None):
        return subprocess.run(self.shell + [S96, action], env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60, cwd=cwd)

    def agent_events(self):
        if not self.agent_log.exists():
            return []
        return [line.split() for line in self.agent_log.read_text().splitlines()]

    def log_lines(self):
        """The messages logged (the spy records logger's whole argument list)."""
        if not self.logger_log.exists():
            return []
        return [line.split(" -- ", 1)[-1] for line in self.logger_log.read_text().splitlines()]

    def restarts(self):
        """The delays the supervisor announced, in order."""
        return [int(line.split("restarting in ")[1].split()[0]) for line in self.log_lines()
                if "restarting in" in line]

    def pids(self):
        pids = set()
        for path in (self.pidfile, self.supervisor_pidfile):
            if path.exists() and path.read_text().strip():
                pids.add(int(path.read_text()))
        return pids | {int(e[1]) for e in self.agent_events()}

    def cleanup(self):
        if self.supervisor_pidfile.exists():
            self.run("stop")
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def service(tmp_path):
    made = []

    def make(flavour, modes, **settings):
        home = tmp_path / flavour
        home.mkdir()
        s = Service(home, flavour, modes, **settings)
        made.append(s)
        return s
    yield make
    for s in made:
        s.cleanup()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_crashing_agent_is_restarted_with_back_off(service, flavour):
    # three crashes in a row, then a run longer than STABLE_TIME, then a crash
    s = service(flavour, ["crash", "crash", "crash", "run:3.5", "crash"], STABLE_TIME=3)
    assert s.run("start").stdout.decode() == "Starting camagent: OK\n"
    wait_for(lambda: len(s.restarts()) >= 4, 30, "four restarts")
    assert s.run("stop").returncode == 0
    # doubling from 1 s, capped at RESTART_DELAY_MAX=2, back to 1 s after a stable run
    assert s.restarts()[:4] == [1, 2, 2, 1]
    starts = [float(e[2]) for e in s.agent_events() if e[0] == "start"]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) >= 4
    for gap, delay in zip(gaps[:3], [1, 2, 2]):
        assert gap >= delay            # never sooner than announced: no spinning
    exits = [line for line in s.log_lines() if line.startswith("exited")]
    assert re.match(r"^exited with status 3 after \d+ s; restarting in 1 s$", exits[0])
    # what the agent printed went to syslog too
    assert "stand-in: hardware failure" in s.log_lines()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stop_sends_sigint_so_the_agent_cleans_up(service, flavour):
    s = service(flavour, ["run"])
    assert s.run("start").returncode == 0
    wait_for(lambda: s.agent_events(), 10, "the agent to start")
    agent = int(s.agent_events()[0][1])
    wait_for(lambda: s.pidfile.exists() and s.pidfile.read_text().strip() == str(agent),
             10, "the pidfile")
    result = s.run("stop")
    assert result.stdout.decode() == "Stopping camagent: OK\n" and result.returncode == 0
    assert [e[0] for e in s.agent_events()] == ["start", "cleanup"]
    assert not alive(agent)
    assert not s.pidfile.exists() and not s.supervisor_pidfile.exists()
    time.sleep(1.5)                    # longer than the restart delay
    assert [e[0] for e in s.agent_events()] == ["start", "cleanup"]   # not restarted


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_camagent_folder_in_the_start_directory_does_not_shadow_the_package(
        service, flavour, tmp_path):
    # `python -m`, like MicroPython, looks in the current directory first
    s = service(flavour, ["run"])
    work = tmp_path / "checkout"
    (work / "camagent").mkdir(parents=True)
    (work / "camagent" / "__init__.py").write_text("")
    (work / "camagent" / "__main__.py").write_text(
        "open(%r, 'a').write('shadow 0 0\\n')\n" % str(s.agent_log))
    assert s.run("start", cwd=str(work)).returncode == 0
    wait_for(lambda: s.agent_events(), 10, "the agent to start")
    assert s.run("stop").returncode == 0
    assert [e[0] for e in s.agent_events()] == ["start", "cleanup"]


def test_camagent_starts_after_majestic():
    # rc runs /etc/init.d/S??* in glob (name) order
    names = sorted(["S95majestic", os.path.basename(S96), "S99local", "S40network"])
    assert names.index(os.path.basename(S96)) == names.index("S95majestic") + 1
    assert re.fullmatch(r"S(\d\d)camagent", os.path.basename(S96)).group(1) > "95"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stop_kills_an_agent_that_ignores_sigint(service, flavour):
    s = service(flavour, ["stubborn"], STOP_TIMEOUT=1)
    assert s.run("start").returncode == 0
    wait_for(lambda: s.agent_events(), 10, "the agent to start")
    agent = int(s.agent_events()[0][1])
    wait_for(lambda: s.pidfile.exists(), 10, "the pidfile")
    assert s.run("stop").returncode == 0
    assert not alive(agent)
    assert "still running 1 s after SIGINT; sending KILL" in s.log_lines()
    assert [e[0] for e in s.agent_events()] == ["start"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_supervisor_runs_in_the_flavours_shell(service, flavour):
    s = service(flavour, ["run"])
    assert s.run("start").returncode == 0
    wait_for(lambda: s.agent_events(), 10, "the agent to start")
    supervisor = int(s.supervisor_pidfile.read_text())
    shell = BUSYBOX if flavour == "busybox" else "/bin/sh"
    assert os.readlink("/proc/%d/exe" % supervisor) == os.path.realpath(shell)
    assert s.run("stop").returncode == 0
    assert not alive(supervisor)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_second_start_does_not_start_a_second_agent(service, flavour):
    s = service(flavour, ["run"])
    assert s.run("start").returncode == 0
    wait_for(lambda: s.agent_events(), 10, "the agent to start")
    second = s.run("start")
    assert second.returncode != 0 and second.stdout.decode().endswith("FAIL\n")
    time.sleep(0.5)
    assert [e[0] for e in s.agent_events()] == ["start"]
    assert s.run("stop").returncode == 0


def test_stop_during_back_off_does_not_restart(service):
    s = service("debian", ["crash"], RESTART_DELAY_MIN=2, RESTART_DELAY_MAX=2)
    assert s.run("start").returncode == 0
    wait_for(lambda: s.restarts(), 10, "the first crash")
    supervisor = int(s.supervisor_pidfile.read_text())
    assert s.run("stop").returncode == 0
    assert not alive(supervisor)
    time.sleep(2.5)
    assert [e[0] for e in s.agent_events()] == ["start"]


def test_stop_when_not_running_is_harmless(service):
    s = service("debian", ["run"])
    result = s.run("stop")
    assert result.returncode == 0


def test_unknown_action_prints_usage(service):
    s = service("debian", ["run"])
    result = s.run("frobnicate")
    assert result.returncode == 1 and b"Usage:" in result.stdout
