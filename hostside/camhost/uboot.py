"""Drive a U-Boot console over a serial port: reach the prompt, run commands, check replies.

Works with anything pyserial opens (a device such as /dev/ttyUSB0, a pseudo-terminal,
or a URL such as rfc2217://host:port). U-Boot echoes what it is sent, so a command's
output is everything between the echoed command line and the next prompt. Every
checked operation raises UBootError with U-Boot's own output when it reports a failure
or never returns to the prompt.
"""
import re
import time

import serial

from .errors import CamhostError

BAUDRATE = 115200
LOAD_ADDR = 0x21000000  # free RAM on SSC33x U-Boot (OpenIPC's documented load address)
CTRL_C = b"\x03"

# A prompt is a short last line ending in "# ", "=> " or "> " (SigmaStar: "SigmaStar # ").
PROMPT_RE = re.compile(r"(?:^|\n)([^\n]{0,40}?(?:#|>) )$")
# Words U-Boot uses when a command fails (sf, tftp, env, the command parser).
FAILURE_RE = re.compile(r"(?i)(error|fail|unknown command|usage:|not defined|invalid|abort|"
                        r"no spi flash|not initialized)")
LINUX_RE = re.compile(r"(Starting kernel|Linux version|login:|Kernel panic)")


class UBootError(CamhostError):
    pass


def normalise(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


def indented(text, lines=20):
    kept = [l for l in normalise(text).split("\n") if l.strip()][-lines:]
    return "\n".join("    | " + l for l in kept) if kept else "    (nothing)"


class UBoot:
    """A U-Boot console on `port`; use interrupt_autoboot() before anything else."""

    def __init__(self, port, baudrate=BAUDRATE, break_key="*"):
        self.port = port
        self.break_key = break_key
        self.prompt = None
        try:
            self.serial = serial.serial_for_url(port, baudrate=baudrate, bytesize=8, parity="N",
                                                stopbits=1, timeout=0.05)
        except (serial.SerialException, ValueError) as e:
            raise UBootError(
                "cannot open %s: %s. Check the name (`ls /dev/ttyUSB*`) and that you may use "
                "it (member of group dialout, then log in again)." % (port, e))

    def close(self):
        self.serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- reaching the prompt ---------------------------------------------------------
    def interrupt_autoboot(self, timeout=30.0):
        """Send the break key until a prompt shows, then check that it is U-Boot's."""
        seen = ""
        key = self.break_key.encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.serial.write(key)
            seen += self._read_for(0.05)
            # at the prompt every further key is echoed: "SigmaStar # ***"
            tail = normalise(seen[-300:]).rstrip(self.break_key.strip() or "\n")
            if PROMPT_RE.search(tail):
                break
            if len(seen) >= 5 and not seen.strip(self.break_key):
                # only our keys come back: U-Boot already sat at its prompt before we
                # started; Ctrl-C makes it print the prompt again
                self.serial.write(CTRL_C)
        else:
            raise UBootError(self._no_prompt(seen, timeout))
        # discard the typed keys: Ctrl-C makes U-Boot print "<INTERRUPT>" and a fresh prompt
        self.serial.write(CTRL_C)
        after = normalise(self._read_quiet())
        found = PROMPT_RE.search(after) or PROMPT_RE.search(tail)
        self.prompt = found.group(1)
        version = self.run("version", timeout=5)
        if "U-Boot" not in version:
            raise UBootError(
                "the prompt %r on %s is not U-Boot's (`version` printed: %s): the camera "
                "has booted past U-Boot. Run the command again and power-cycle the camera "
                "while it waits." % (self.prompt, self.port, version.strip()[:200] or "nothing"))
        return self.prompt

    def _no_prompt(self, seen, timeout):
        if not seen.strip():
            return (
                "no U-Boot prompt on %s within %g s: nothing was received at all. Run the "
                "command again and power-cycle the camera while it waits; check the port "
                "name, that TX and RX are not swapped (J3 pins 1-2; GND on pin 3) and the "
                "speed (115200 8N1)." % (self.port, timeout))
        if LINUX_RE.search(seen):
            return (
                "no U-Boot prompt on %s within %g s: the camera booted Linux instead. Start "
                "this command first, then power-cycle the camera: it sends %r until the "
                "prompt appears. If it still boots, its U-Boot waits for another key (try "
                "--break-key ENTER). Last output:\n%s" % (self.port, timeout, self.break_key,
                                                         indented(seen, 8)))
        printable = sum(c.isprintable() or c in "\r\n\t" for c in seen) / len(seen)
        if printable < 0.8:
            return ("no U-Boot prompt on %s within %g s, and what arrived is garbled: wrong "
                    "speed (U-Boot talks 115200 8N1) or a loose GND." % (self.port, timeout))
        return ("no U-Boot prompt on %s within %g s. Run the command again and power-cycle "
                "the camera while it waits. Last output:\n%s" % (self.port, timeout,
                                                                indented(seen, 8)))

    # --- running commands ------------------------------------------------------------
    def run(self, command, timeout=10.0):
        """Send one command line; return what it printed before the next prompt."""
        if self.prompt is None:
            raise UBootError("not at the U-Boot prompt yet (interrupt_autoboot first)")
        self._read_for(0)  # drop anything stale
        data = command.encode() + b"\r"
        for i in range(0, len(data), 16):
            # U-Boot echoes each character; pacing keeps the SoC's small UART FIFO from
            # overflowing while it does
            self.serial.write(data[i:i + 16])
            time.sleep(0.005)
        text = ""
        end = "\n" + self.prompt
        deadline = time.monotonic() + timeout
        while not text.endswith(end):
            if time.monotonic() > deadline:
                self.serial.write(CTRL_C)
                text = normalise(text + self._read_quiet())
                raise UBootError("U-Boot did not finish `%s` within %g s; sent Ctrl-C. "
                                 "Output:\n%s" % (command, timeout, indented(text)))
            text = normalise(text + self._read_some())
        output = text[:-len(end)]
        first, _, rest = output.partition("\n")
        return rest if first.strip().endswith(command.strip()) else output

    def run_checked(self, command, timeout=10.0, expect=None):
        """run(), refusing output with a failure word or without the `expect` pattern."""
        output = self.run(command, timeout)
        if FAILURE_RE.search(output) or (expect and not re.search(expect, output)):
            raise UBootError("U-Boot command `%s` failed:\n%s" % (command, indented(output)))
        return output

    def _read_some(self):
        """What has arrived, waiting up to the port timeout for the first byte."""
        data = self.serial.read(1)
        if data and self.serial.in_waiting:
            data += self.serial.read(self.serial.in_waiting)
        return data.decode("latin-1")

    def _read_for(self, seconds):
        chunks = []
        end = time.monotonic() + seconds
        while True:
            waiting = self.serial.in_waiting
            if waiting:
                chunks.append(self.serial.read(waiting))
            elif time.monotonic() >= end:
                break
            else:
                chunk = self.serial.read(1)  # blocks up to the port timeout
                if chunk:
                    chunks.append(chunk)
        return b"".join(chunks).decode("latin-1")

    def _read_quiet(self, quiet=0.3, limit=3.0):
        """Read until nothing arrives for `quiet` seconds."""
        text = ""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            chunk = self._read_for(quiet)
            if not chunk:
                break
            text += chunk
        return text

    # --- checked operations ----------------------------------------------------------
    def setenv(self, name, value):
        self.run_checked("setenv %s %s" % (name, value))

    def tftp(self, addr, filename, size, server):
        """Load `filename` (expected `size` bytes) from the TFTP server `server` to `addr`."""
        command = "tftpboot 0x%08x %s" % (addr, filename)
        timeout = 30 + size / 100e3  # even a slow link moves 100 kB/s
        try:
            output = self.run(command, timeout)
        except UBootError as e:
            raise UBootError("TFTP transfer of %s from %s never finished. %s\n%s"
                             % (filename, server, TFTP_HINT, e))
        m = re.search(r"Bytes transferred = (\d+)", output)
        if m and int(m.group(1)) == size:
            return
        if m:
            problem = "transferred %s bytes, expected %d." % (m.group(1), size)
        elif "TFTP error" in output:
            problem = "the TFTP server %s refused it." % server
        elif "ARP Retry count exceeded" in output:
            problem = "nothing answered at %s (ARP): check the cable and the addresses." % server
        elif "Retry count exceeded" in output or re.search(r"\bT T\b", output):
            problem = "it timed out. " + TFTP_HINT
        else:
            problem = "U-Boot did not report the bytes transferred."
        raise UBootError("`%s` failed: %s U-Boot said:\n%s" % (command, problem, indented(output)))

    def crc32(self, addr, length):
        output = self.run_checked("crc32 0x%08x 0x%x" % (addr, length), expect=r"==>")
        return int(re.search(r"==>\s*([0-9a-fA-F]{8})", output).group(1), 16)

    def sf_probe(self):
        return self.run_checked("sf probe 0")

    def sf_erase(self, offset, size):
        self._sf("sf erase 0x%x 0x%x" % (offset, size), "Erased", 60 + size / 20e3)

    def sf_write(self, addr, offset, size):
        self._sf("sf write 0x%08x 0x%x 0x%x" % (addr, offset, size), "Written", 60 + size / 20e3)

    def sf_read(self, addr, offset, size):
        self._sf("sf read 0x%08x 0x%x 0x%x" % (addr, offset, size), "Read", 30 + size / 200e3)

    def _sf(self, command, verb, timeout):
        output = self.run_checked(command, timeout)
        # mainline prints "SF: 2097152 bytes @ 0x50000 Erased: OK"; others may print less
        if verb + ":" in output and not re.search(verb + r":\s*OK", output):
            raise UBootError("U-Boot command `%s` failed:\n%s" % (command, indented(output)))


TFTP_HINT = ("Check the ethernet link, that --server-ip is this computer's address on the "
             "camera's network, that no firewall drops UDP to the TFTP port, and, with "
             "--tftp-port other than 69, that this U-Boot honours `tftpdstp` (if not, use "
             "port 69 as root).")
