"""Drive the flashrom binary: preflight, read, verify and region writes, with progress.

flashrom does the chip work; this module runs it as a subprocess, reads its output as it
arrives (flashrom flushes every message), and turns what it says into progress and into
errors that say what to do. A write that fails or is cut short after flashrom started
erasing leaves the chip in an unknown state: the error then carries the exact restore
command.
"""
import contextlib
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import namedtuple

from . import layout, tools
from .errors import EXIT_STATE_UNKNOWN, CamhostError

DEFAULT_PROGRAMMER = "mstarddc_spi:dev=/dev/i2c-1:0x49"

BUILD_FLASHROM = """\
sudo apt-get install -y git build-essential meson ninja-build pkg-config \\
    libpci-dev libusb-1.0-0-dev libftdi1-dev
git clone --branch v1.3.0 https://github.com/flashrom/flashrom.git
cd flashrom
meson setup build -Dprogrammer=auto,mstarddc_spi
meson compile -C build
sudo meson install -C build      # installs /usr/local/sbin/flashrom"""

Chip = namedtuple("Chip", "name size")
WriteReport = namedtuple(
    "WriteReport",
    "regions blocks_erased blocks_written blocks_skipped bytes_erased bytes_written seconds")

# flashrom output we act on
FOUND_RE = re.compile(r'^Found .*? flash chip "(?P<name>[^"]+)" \((?P<kb>\d+) kB', re.M)
MULTIPLE_RE = re.compile(r"^Multiple flash chip definitions match.*$", re.M)
SIZE_RE = re.compile(r"^(\d+)\s*$", re.M)
VERSION_RE = re.compile(r"^flashrom (\S+) on ", re.M)
BLOCK_RE = re.compile(r"0x([0-9a-f]+)-0x([0-9a-f]+):([EWS]+)")
# flashrom's boilerplate, dropped when its output is shown to the user
NOISE = ("flashrom is free software", "Using clock_gettime", "===", "This flash part has status",
         "The test status of this chip", "version of flashrom", "please email a report",
         "work correctly for you", "file for all operations", "which mainboard or programmer",
         "Thanks for your help", "Chip status register", "one-time programmable",
         "may never be able to write it", "clone the contents of this chip")
BLOCK_RUN_RE = re.compile(r"(?:0x[0-9a-f]+-0x[0-9a-f]+:[EWS]+(?:, )?)+")


class FlashromError(CamhostError):
    """flashrom failed; the chip was not written (or the operation never writes)."""


class Progress:
    """Shows which phase runs, how far a write is through its regions, and elapsed time.

    On a terminal it redraws one status line; in a log it prints a line per phase and
    per region, so a slow i2c read never looks like a hang and never floods the log.
    """

    def __init__(self, stream=None, steps=0):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.steps = steps
        self.number = 0
        self.label = ""
        self.detail = ""
        self.fraction = None
        self.step_started = time.monotonic()
        self._drawn = 0.0

    def step(self, label):
        """Start the next phase."""
        self._end_line()
        self.number += 1
        self.label, self.detail, self.fraction = label, "", None
        self.step_started = time.monotonic()
        if self.tty:
            self._draw()
        else:
            self._print("%s %s ..." % (self._counter(), label))

    def update(self, fraction=None, detail=None):
        """Report progress within the phase; `detail` names the region being written."""
        if detail is not None and detail != self.detail:
            self.detail = detail
            if not self.tty:
                self._print("      %s" % detail)
        if fraction is not None:
            self.fraction = fraction
        self.tick()

    def tick(self):
        """Redraw the elapsed time (terminal only, at most ten times a second)."""
        if self.tty and self.label and time.monotonic() - self._drawn >= 0.1:
            self._draw()

    def step_done(self, result="done"):
        took = clock(time.monotonic() - self.step_started)
        if self.tty:
            self._draw(final="%s, %s" % (result, took))
            self.stream.write("\n")
            self._drawn = 0.0
        else:
            self._print("%s %s: %s, %s" % (self._counter(), self.label, result, took))
        self.label = ""

    def note(self, text):
        self._end_line()
        self._print(text)

    def _counter(self):
        return "[%d/%d]" % (self.number, self.steps) if self.steps else "[%d]" % self.number

    def _draw(self, final=None):
        parts = [self._counter(), self.label]
        if self.detail:
            parts.append(self.detail)
        if self.fraction is not None:
            filled = int(self.fraction * 20)
            parts.append("[%s%s] %3d%%" % ("#" * filled, "." * (20 - filled), self.fraction * 100))
        parts.append(final or clock(time.monotonic() - self.step_started))
        self.stream.write("\r\x1b[K" + "  ".join(parts))
        self.stream.flush()
        self._drawn = time.monotonic()

    def _end_line(self):
        if self.tty and self.label:
            self.stream.write("\n")
            self._drawn = 0.0

    def _print(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()


def clock(seconds):
    """m:ss"""
    return "%d:%02d" % divmod(int(seconds), 60)


class BlockTally:
    """Counts the erase blocks flashrom -V reports while writing ("0x050000-0x050fff:EW").

    E = erased, W = written, S = skipped because it already held the right bytes. The
    counts come from flashrom itself, so they are what touched the chip. flashrom walks
    the included regions in its own order (1.3.0: last region first), so progress is the
    share of included bytes reported so far.
    """

    def __init__(self, regions):
        self.regions = regions
        self.total = sum(r.size for r in regions) or 1
        self.erased = self.written = self.skipped = 0
        self.bytes_erased = self.bytes_written = 0
        self.done_bytes = 0
        self.current = None
        self._seen = set()
        self._pending = ""

    def feed(self, text):
        text = self._pending + text
        cut = max(text.rfind(","), text.rfind("\n")) + 1
        self._pending = text[cut:]
        for m in BLOCK_RE.finditer(text, 0, cut):
            self._count(int(m.group(1), 16), int(m.group(2), 16) + 1, m.group(3))

    def finish(self):
        self.feed(",")

    def _count(self, start, end, status):
        size = end - start
        if "E" in status:
            self.erased += 1
            self.bytes_erased += size
        if "W" in status:
            self.written += 1
            self.bytes_written += size
        if status == "S":
            self.skipped += 1
        if start not in self._seen:  # a retried erase reports its blocks again
            self._seen.add(start)
            self.done_bytes += size
        for r in self.regions:
            if r.offset <= start < r.offset + r.size:
                self.current = r

    @property
    def fraction(self):
        return min(1.0, self.done_bytes / self.total)


def programmer_name(programmer):
    return programmer.split(":", 1)[0]


def programmer_params(programmer):
    """`dummy:emulate=X,image=F` -> {"emulate": "X", "image": "F"}."""
    rest = programmer.split(":", 1)[1] if ":" in programmer else ""
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = value
    return params


def programmers_in_help(text):
    """The programmer names a `flashrom --help` lists (those compiled into that binary)."""
    m = re.search(r"specify the programmer device\.(.*?)(?:\n\s*\n|\Z)", text, re.S)
    section = (m.group(1) if m else text).replace("One of", "")
    return set(re.findall(r"[a-z0-9_]+", section))


def shown(output, lines=12):
    """The last meaningful lines of flashrom's output, indented for an error message."""
    output = BLOCK_RUN_RE.sub(lambda m: "[%d erase blocks] " % m.group(0).count(":"), output)
    kept = [l.rstrip() for l in output.splitlines()
            if l.strip() and not l.startswith("flashrom ") and not any(n in l for n in NOISE)]
    kept = [l if len(l) < 300 else l[:300] + " ..." for l in kept[-lines:]]
    return "\n".join("    | " + l for l in kept)


class Flashrom:
    """One flashrom programmer (and optionally chip) used for a sequence of operations.

    With mstarddc_spi each flashrom run resets the SoC at its end unless `noreset=1` is
    given; a reset camera boots its firmware between our runs, and a running firmware
    may write its overlay between the two backup reads. So every run gets `noreset=1`
    and `release()` does the one reset when the session is over.
    """

    def __init__(self, programmer=DEFAULT_PROGRAMMER, chip=None, binary="flashrom", progress=None):
        self.programmer = programmer
        self.chip = chip
        self.binary = binary
        self.progress = progress or Progress()
        self.version = None
        self.touched = False  # a run reached the programmer: release() has work to do
        self.halting = (programmer_name(programmer) == "mstarddc_spi"
                        and "noreset" not in programmer_params(programmer))

    # --- preflight -------------------------------------------------------------------
    def preflight(self):
        """Check the tool, the programmer and the chip; return the Chip (8 MiB)."""
        path = tools.which(self.binary)
        if not path:
            raise FlashromError(
                "flashrom is not installed (no %r on PATH or in /usr/sbin). Install it (Debian: `sudo apt-get "
                "install flashrom`); for the camera's i2c link you need a build with "
                "mstarddc_spi:\n%s" % (self.binary, BUILD_FLASHROM))
        self.binary = path
        help_text = self._plain([path, "--help"])
        m = VERSION_RE.search(help_text)
        self.version = m.group(1) if m else "unknown"
        name = programmer_name(self.programmer)
        if name not in programmers_in_help(help_text):
            hint = ""
            if name == "mstarddc_spi":
                hint = (" Debian's flashrom is built without it. Build one that has it:\n%s\n"
                        "then check with `flashrom --help | grep mstarddc_spi`." % BUILD_FLASHROM)
            raise FlashromError("%s (%s) was built without the %s programmer.%s"
                                % (path, self.version, name, hint))
        self._check_device()
        return self.probe()

    def _check_device(self):
        dev = programmer_params(self.programmer).get("dev")
        if dev is None:
            return
        node = dev.split(":", 1)[0]
        if not os.path.exists(node):
            raise FlashromError(
                "device node %s does not exist. Enable the i2c bus and its /dev nodes "
                "(Raspberry Pi: `sudo raspi-config nonint do_i2c 0`, or `dtparam=i2c_arm=on` "
                "in config.txt, then `sudo modprobe i2c-dev`); `ls /dev/i2c-*` shows the "
                "buses; pass the right one with --programmer." % node)
        if not os.access(node, os.R_OK | os.W_OK):
            raise FlashromError(
                "no read/write permission on %s. Add yourself to its group (`ls -l %s`; "
                "usually `sudo usermod -aG i2c $USER`, then log in again) or run as root."
                % (node, node))

    def probe(self):
        """Detect the chip; refuse anything but one 8 MiB chip."""
        self.progress.step("detect flash chip")
        rc, out = self._run(["--flash-size"])
        names = [m.group("name") for m in FOUND_RE.finditer(out)]
        if MULTIPLE_RE.search(out):
            raise FlashromError(
                "several chip definitions match the flash on %s:\n%s\nRun again with "
                "--chip NAME, choosing the one that matches the marking on the flash chip."
                % (self.programmer, "\n".join("    --chip %s" % shlex.quote(n) for n in names)))
        if rc != 0 or not names:
            if "No EEPROM/flash device found" in out:
                raise FlashromError(
                    "no flash chip answered on %s. Check that the camera is powered, the "
                    "wiring (J3 pins 1-2 to SDA/SCL, pin 3 to GND; swap the two data wires "
                    "if unsure) and the i2c address.\n%s" % (self.programmer, shown(out)))
            if "Unknown chip" in out:
                raise FlashromError("flashrom does not know chip %r; `flashrom -L` lists the "
                                    "names.\n%s" % (self.chip, shown(out)))
            raise FlashromError("flashrom could not detect the chip on %s (exit %d):\n%s"
                                % (self.programmer, rc, shown(out)))
        sizes = SIZE_RE.findall(out)
        size = int(sizes[-1]) if sizes else int(FOUND_RE.search(out).group("kb")) * 1024
        chip = Chip(names[-1], size)
        if size != layout.FLASH_SIZE:
            raise FlashromError(
                "the detected chip %s is %d KiB, but this camera has an 8 MiB (8192 KiB) "
                "flash: wrong device or wrong --chip definition." % (chip.name, size // 1024))
        self.chip = chip.name
        self.progress.step_done(chip.name)
        return chip

    # --- operations ------------------------------------------------------------------
    def read(self, path, label="read chip"):
        self.progress.step(label)
        rc, out = self._run(["-r", path])
        if rc != 0 or not os.path.exists(path):
            raise FlashromError("reading the chip failed (flashrom exit %d):\n%s"
                                % (rc, shown(out)))
        self.progress.step_done()

    def verify(self, path, label="compare chip with file"):
        """True when the whole chip equals the file; False when it differs."""
        self.progress.step(label)
        rc, out = self._run(["-v", path])
        if rc == 0 and "VERIFIED" in out:
            self.progress.step_done("identical")
            return True
        if "FAILED at" in out or "VERIFY FAILED" in out:
            self.progress.step_done("differs")
            return False
        raise FlashromError("flashrom could not compare the chip with %s (exit %d):\n%s"
                            % (path, rc, shown(out)))

    def write(self, image_path, regions, flash_contents, restore_command):
        """Write `regions` of the full-chip image and verify them; return a WriteReport.

        `flash_contents` is a file known to equal the chip now (a verified backup), so
        flashrom skips its initial read. On failure after erasing began the raised error
        says the chip state is unknown and prints `restore_command`.
        """
        names = ", ".join(r.name for r in regions)
        self.progress.step("write %s" % names)
        tally = BlockTally(regions)
        state = {"verifying": False, "tail": ""}

        def watch(text):
            tally.feed(text)
            if state["verifying"]:
                return
            if tally.current is not None:
                self.progress.update(tally.fraction, tally.current.name)
            seen = state["tail"] + text  # the phase message may arrive split in two reads
            state["tail"] = seen[-32:]
            if "Verifying flash" in seen:
                state["verifying"] = True
                self.progress.step_done()
                self.progress.step("verify %s" % names)

        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="camhost-") as tmp:
            layout_file = os.path.join(tmp, "layout.txt")
            with open(layout_file, "w") as f:
                f.write(layout.flashrom_layout())
            rc, out = self._run(self.write_args(layout_file, regions, flash_contents, image_path),
                                watch=watch, writes=True)
        tally.finish()
        if rc == 0 and "VERIFIED" in out:
            self.progress.step_done("verified")
            return WriteReport(tuple(regions), tally.erased, tally.written, tally.skipped,
                               tally.bytes_erased, tally.bytes_written,
                               time.monotonic() - started)
        if rc < 0:
            how = "flashrom was killed by signal %d" % -rc
        elif "Verifying flash" in out:
            how = "the written data did not verify (flashrom exit %d)" % rc
        else:
            how = "flashrom failed (exit %d)" % rc
        if rc < 0 or "Erasing and writing" in out:
            raise CamhostError(
                "%s while writing %s:\n%s\nTHE CHIP STATE IS UNKNOWN: the camera may not "
                "boot. Do not power it off; restore the verified backup now with:\n    %s"
                % (how, names, shown(out), restore_command), exit_code=EXIT_STATE_UNKNOWN)
        raise FlashromError("%s before it began erasing; the chip was not changed:\n%s"
                            % (how, shown(out)))

    @staticmethod
    def write_args(layout_file, regions, flash_contents, image_path):
        """flashrom's arguments for write(); -V makes it log every erase block."""
        args = ["-V", "-l", layout_file]
        for r in regions:
            args += ["-i", r.name]
        return args + ["-N", "--flash-contents", flash_contents, "-w", image_path]

    def release(self):
        """End the session: with mstarddc_spi, one run without noreset resets the SoC."""
        if not (self.halting and self.touched):
            return
        rc, out = self._run([], halt=False)
        if rc != 0:
            self.progress.note("note: could not reset the camera over i2c; power-cycle it.")

    # --- running flashrom ------------------------------------------------------------
    def command(self, args, halt=True):
        """The flashrom argv for `args` with our programmer and chip."""
        programmer = self.programmer + (",noreset=1" if self.halting and halt else "")
        cmd = [self.binary, "-p", programmer]
        if self.chip:
            cmd += ["-c", self.chip]
        return cmd + list(args)

    def _plain(self, cmd):
        try:
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  check=False).stdout.decode("utf-8", "replace")
        except OSError as e:
            raise FlashromError("cannot run %s: %s" % (cmd[0], e))

    def _run(self, args, watch=None, writes=False, halt=True):
        """Run flashrom, feeding its output to `watch` as it arrives; (returncode, output).

        A write runs in its own session, so a Ctrl-C on the terminal reaches only us, and
        under a WriteGuard: the first Ctrl-C warns, the second kills flashrom (the chip
        state is then unknown, which the caller reports).
        """
        cmd = self.command(args, halt)
        self.touched = True
        with (WriteGuard(self.progress) if writes else contextlib.nullcontext()) as guard:
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=writes)
            except OSError as e:
                raise FlashromError("cannot run %s: %s" % (cmd[0], e))
            if guard:
                guard.watch(proc)
            try:
                output = self._collect(proc, watch)
            except KeyboardInterrupt:  # only outside writes: nothing is lost
                proc.kill()
                proc.wait()
                raise
            return proc.wait(), output

    def _collect(self, proc, watch):
        chunks = []
        fd = proc.stdout.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    break
                text = data.decode("utf-8", "replace")
                chunks.append(text)
                if watch:
                    watch(text)
            self.progress.tick()
        proc.stdout.close()
        return "".join(chunks)


class WriteGuard:
    """While flashrom writes, Ctrl-C warns once and kills flashrom the second time.

    A KeyboardInterrupt could land anywhere, even between starting flashrom and
    watching it, and leave it writing unobserved; a SIGINT handler cannot.
    """

    def __init__(self, progress):
        self.progress = progress
        self.presses = 0
        self.proc = None
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._pressed)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def watch(self, proc):
        self.proc = proc
        if self.presses >= 2:
            proc.kill()

    def _pressed(self, signum, frame):
        self.presses += 1
        if self.presses == 1:
            self.progress.note("\nflashrom is writing the chip: stopping now leaves it "
                               "unbootable. Press Ctrl-C again to stop anyway.")
        elif self.proc is not None:
            self.proc.kill()
