"""Drive a U-Boot console over a serial port: reach the prompt, run commands, check replies.

Works with anything pyserial opens (a device such as /dev/ttyUSB0, a pseudo-terminal,
or a URL such as rfc2217://host:port). U-Boot echoes what it is sent, so a command's
output is everything between the echoed command line and the next prompt. Every
checked operation raises UBootError with U-Boot's own output when it reports a failure
or never returns to the prompt, and PortLost when the serial port goes away.
"""
import array
import re
import time
import zlib

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
# One line of `md.l`: address, four 32-bit words, the same 16 bytes as ASCII ('.' when not
# printable), as U-Boot's print_buffer() formats it
MD_LINE_RE = re.compile(r"([0-9a-f]{8}):((?: [0-9a-f]{8}){4})    [ -~]{16}")
MD_LINE_CHARS = 67  # with its CR LF: what 16 bytes cost on the wire


class UBootError(CamhostError):
    pass


class PortLost(UBootError):
    """The serial port went away (USB adapter unplugged): nothing more can be sent."""


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
            self._write(key)
            seen += self._read_for(0.05)
            # at the prompt every further key is echoed: "SigmaStar # ***"
            tail = normalise(seen[-300:]).rstrip(self.break_key.strip() or "\n")
            if PROMPT_RE.search(tail):
                break
            if len(seen) >= 5 and not seen.strip(self.break_key):
                # only our keys come back: U-Boot already sat at its prompt before we
                # started; Ctrl-C makes it print the prompt again
                self._write(CTRL_C)
        else:
            raise UBootError(self._no_prompt(seen, timeout))
        # discard the typed keys: Ctrl-C makes U-Boot print "<INTERRUPT>" and a fresh prompt
        self._write(CTRL_C)
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
            if i:
                # U-Boot echoes each character; pacing keeps the SoC's small UART FIFO
                # from overflowing while it does
                time.sleep(0.005)
            self._write(data[i:i + 16])
        # collected as received and normalised once: a CR LF can straddle two reads, and
        # an md dump is hundreds of kB
        chunks = []
        tail = ""
        end = "\n" + self.prompt
        deadline = time.monotonic() + timeout
        while not normalise(tail).endswith(end):
            if time.monotonic() > deadline:
                self._write(CTRL_C)
                text = normalise("".join(chunks) + self._read_quiet())
                raise UBootError("U-Boot did not finish `%s` within %g s; sent Ctrl-C. "
                                 "Output:\n%s" % (command, timeout, indented(text)))
            chunk = self._read(block=True).decode("latin-1")
            if chunk:
                chunks.append(chunk)
                tail = (tail + chunk)[-200:]
        output = normalise("".join(chunks))[:-len(end)]
        first, _, rest = output.partition("\n")
        return rest if first.strip().endswith(command.strip()) else output

    def run_checked(self, command, timeout=10.0, expect=None):
        """run(), refusing output with a failure word or without the `expect` pattern."""
        output = self.run(command, timeout)
        if FAILURE_RE.search(output) or (expect and not re.search(expect, output)):
            raise UBootError("U-Boot command `%s` failed:\n%s" % (command, indented(output)))
        return output

    def _write(self, data):
        try:
            self.serial.write(data)
        except OSError as e:  # pyserial's SerialException is one too
            raise self._lost(e)

    def _read(self, block):
        """What has arrived; if nothing has and `block`, wait up to the port timeout."""
        try:
            waiting = self.serial.in_waiting
            if waiting or block:
                return self.serial.read(waiting or 1)
            return b""
        except OSError as e:
            raise self._lost(e)

    def _lost(self, error):
        return PortLost("lost the serial port %s (%s): was the USB-serial adapter unplugged "
                        "or the cable pulled?" % (self.port, error))

    def _read_for(self, seconds):
        chunks = []
        end = time.monotonic() + seconds
        while True:
            chunk = self._read(block=time.monotonic() < end)
            if chunk:
                chunks.append(chunk)
            elif time.monotonic() >= end:
                break
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
        except PortLost:
            raise
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
        """Select the SPI flash; return (chip name, size in bytes) as U-Boot reports them.

        Either is None when this U-Boot words its report differently.
        """
        output = self.run_checked("sf probe 0")
        # "SF: Detected MX25L6433F with page size 256 Bytes, erase size 4 KiB, total 8 MiB"
        name = re.search(r"SF: Detected (\S+)", output)
        mib = re.search(r"total (\d+) MiB", output)
        return (name.group(1) if name else None, int(mib.group(1)) << 20 if mib else None)

    def sf_erase(self, offset, size):
        self._sf("sf erase 0x%x 0x%x" % (offset, size), "Erased", 60 + size / 20e3)

    def sf_write(self, addr, offset, size):
        self._sf("sf write 0x%08x 0x%x 0x%x" % (addr, offset, size), "Written", 60 + size / 20e3)

    def sf_read(self, addr, offset, size):
        self._sf("sf read 0x%08x 0x%x 0x%x" % (addr, offset, size), "Read", 30 + size / 200e3)

    def read_ram(self, addr, length, attempts=3):
        """`length` bytes (a multiple of 16) of RAM at `addr`, printed by `md.l`.

        Each try is checked against U-Boot's own `crc32` of the range; a garbled or
        damaged transfer is read again, up to `attempts` times.
        """
        problem = None
        for _ in range(attempts):
            try:
                data = self._md_l(addr, length)
                if zlib.crc32(data) == self.crc32(addr, length):
                    return data
                problem = "its CRC32 differs from U-Boot's"
            except PortLost:
                raise
            except UBootError as e:
                problem = str(e)
        raise UBootError("%d bytes at 0x%08x arrived damaged %d times; last time: %s\nThe "
                         "serial line is unreliable: check the GND wire and keep the cable "
                         "short." % (length, addr, attempts, problem))

    def _md_l(self, addr, length):
        command = "md.l 0x%08x 0x%x" % (addr, length // 4)
        # the text's time on the wire at ten bits a character (8N1); allow twice that
        seconds = length // 16 * MD_LINE_CHARS * 10 / self.serial.baudrate
        lines = self.run(command, timeout=10 + 2 * seconds).split("\n")
        if len(lines) != length // 16:
            raise UBootError("`%s` printed %d lines, not %d" % (command, len(lines),
                                                                length // 16))
        words = []
        for i, line in enumerate(lines):
            m = MD_LINE_RE.fullmatch(line)
            if not m or int(m.group(1), 16) != addr + 16 * i:
                raise UBootError("`%s` printed a damaged line: %r" % (command, line[:80]))
            words.append(m.group(2))
        # md.l prints each word as a number; the SoC is little-endian ARM, so in memory a
        # word's bytes come in the reverse order
        data = array.array("I", bytes.fromhex("".join(words)))
        data.byteswap()
        return data.tobytes()

    def _sf(self, command, verb, timeout):
        output = self.run_checked(command, timeout)
        # mainline prints "SF: 2097152 bytes @ 0x50000 Erased: OK"; others may print less
        if verb + ":" in output and not re.search(verb + r":\s*OK", output):
            raise UBootError("U-Boot command `%s` failed:\n%s" % (command, indented(output)))


TFTP_HINT = ("Check the ethernet link, that --server-ip is this computer's address on the "
             "camera's network, that no firewall drops UDP to the TFTP port, and, with "
             "--tftp-port other than 69, that this U-Boot honours `tftpdstp` (if not, use "
             "port 69 as root).")
