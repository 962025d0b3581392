"""A simulated SigmaStar U-Boot on a real pseudo-terminal, for the U-Boot path's tests.

It prints a boot banner and an autoboot countdown that the break key interrupts, then
serves a prompt with the commands flashing and backing up need: setenv, printenv,
version, tftpboot (a real TFTP client, tftpy's, fetching from the host over loopback),
crc32, mw.b, md/md.b/md.l and sf probe|erase|write|read against a file-backed 8 MB NOR
flash (erase sets 0xff, write can only clear bits, as on the real chip). Output uses
U-Boot 2015's wording and formats.

Modes: "normal"; "silent" (prints nothing: wrong port or TX/RX swapped); "no-break"
(ignores the break key and boots Linux to a login prompt); "linux-shell" (boots Linux
to a root shell). `fail` names a command ("sf probe", "sf erase", "sf write") that
reports an error, as a flash problem would make it. `corrupt_md` is how many md outputs
arrive with one hex digit changed, as line noise does. `unplug` names a command during
which the USB-serial adapter is pulled: the pseudo-terminal's master side closes, so the
port fails under camhost. The `uboot` fixture starts them over the `chip` file and
closes them after the test.
"""
import array
import io
import os
import re
import select
import socket
import threading
import time
import tty
import zlib

import pytest
import tftpy

PROMPT = "SigmaStar # "
# md's ASCII column: printable ASCII as is, anything else as '.'
MD_ASCII = bytes(b if 0x20 <= b < 0x7f else 0x2e for b in range(256))
RAM_BASE = 0x21000000
RAM_SIZE = 0x2000000
ERASE_SIZE = 0x1000
BANNER = ("\r\nIPL g5f1a4b8\r\nD-15\r\nHW Reset\r\nSPI 54M\r\n\r\n"
          "U-Boot 2015.01 (Jun 20 2023 - 10:00:00 +0800)\r\n\r\nVersion: I6B0#######\r\n"
          "I2C:   ready\r\nDRAM:  64 MiB\r\nMMC:   MStar SD/MMC: 0\r\n"
          "SF: Detected MX25L6433F with page size 256 Bytes, erase size 4 KiB, total 8 MiB\r\n"
          "In:    serial\r\nOut:   serial\r\nErr:   serial\r\nNet:   sstar_emac\r\n")
LINUX_BOOT = ("\r\n## Booting kernel from Legacy Image at 21000000 ...\r\n"
              "Starting kernel ...\r\n\r\n"
              "Linux version 4.9.84 (builder@openipc) (gcc version 8.4.0) #1 PREEMPT\r\n"
              "CPU: ARMv7 Processor [410fc075] revision 5 (ARMv7), cr=50c5387d\r\n"
              "VFS: Mounted root (squashfs filesystem) readonly on device 31:3.\r\n"
              "\r\nWelcome to OpenIPC\r\n")


class UBootSim:
    def __init__(self, flash_path, mode="normal", break_key=b"*", bootdelay=1.0,
                 honour_tftpdstp=True, fail=None, corrupt_md=0, unplug=None):
        self.flash_path = flash_path
        with open(flash_path, "rb") as f:
            self.flash = bytearray(f.read())
        self.mode = mode
        self.break_key = break_key
        self.bootdelay = bootdelay
        self.honour_tftpdstp = honour_tftpdstp
        self.fail = fail
        self.corrupt_md = corrupt_md
        self.unplug = unplug
        self.ram = bytearray(RAM_SIZE)
        self.env = {"bootdelay": "1", "baudrate": "115200", "ipaddr": "192.168.1.10",
                    "serverip": "192.168.1.254", "bootcmd": "bootm 0x21000000"}
        self.commands = []  # every command line U-Boot executed, for assertions
        self.probed = False
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo or line editing on the pty itself
        self.port = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._pending = b""
        self._thread = threading.Thread(target=self._run, name="uboot-sim", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._stop.set()
        self._thread.join(10)
        if self.master is not None:
            os.close(self.master)
        os.close(self.slave)

    # --- terminal I/O ---------------------------------------------------------------
    def out(self, text):
        os.write(self.master, text.replace("\r\n", "\n").replace("\n", "\r\n").encode("latin-1"))

    def _input(self, wait):
        """Bytes typed within `wait` seconds (or those already waiting)."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        ready, _, _ = select.select([self.master], [], [], wait)
        return os.read(self.master, 4096) if ready else b""

    # --- the boot ----------------------------------------------------------------------
    def _run(self):
        time.sleep(0.1)
        if self.mode == "silent":
            while not self._stop.is_set():
                self._input(0.05)
            return
        self.out(BANNER)
        while self._input(0):  # keys sent before the console came up are lost
            pass
        self.out("Hit any key to stop autoboot:  1 ")
        end = time.monotonic() + self.bootdelay
        while time.monotonic() < end and not self._stop.is_set():
            data = self._input(0.02)
            if self.mode == "normal" and self.break_key in data:
                # the key that stopped autoboot is consumed; the rest is typed at the prompt
                self._pending = data[data.index(self.break_key) + 1:]
                self.out("\b\b\b 0 \n" + PROMPT)
                return self._command_loop(PROMPT, self._execute)
        self.out("\b\b\b 0 \n" + LINUX_BOOT)
        if self.mode == "linux-shell":
            shell = "root@openipc-ssc337:~# "
            self.out(shell)
            return self._command_loop(shell, self._linux_shell)
        self.out("openipc-ssc337 login: ")
        while not self._stop.is_set():
            self._input(0.05)

    def _command_loop(self, prompt, execute):
        line = ""
        while not self._stop.is_set():
            for byte in self._input(0.05):
                c = chr(byte)
                if c in "\r\n":
                    self.out("\n")
                    if line.strip():
                        if self.unplug and line.strip().startswith(self.unplug):
                            self.commands.append(line.strip())
                            os.close(self.master)  # the adapter is gone, and the sim with it
                            self.master = None
                            return
                        execute(line.strip())
                    line = ""
                    self.out(prompt)
                elif c == "\x03":
                    line = ""
                    self.out("<INTERRUPT>\n" + prompt)
                elif c in "\x08\x7f":
                    if line:
                        line = line[:-1]
                        self.out("\b \b")
                elif c.isprintable():
                    line += c
                    self.out(c)

    def _linux_shell(self, line):
        self.out("-sh: %s: not found\n" % line.split()[0])

    # --- U-Boot commands -----------------------------------------------------------------
    def _execute(self, line):
        line = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.env.get(m.group(1) or m.group(2),
                                                                       ""), line)
        self.commands.append(line)
        argv = line.split()
        name = argv[0]
        handler = {"version": self._version, "setenv": self._setenv, "printenv": self._printenv,
                   "tftpboot": self._tftpboot, "tftp": self._tftpboot, "crc32": self._crc32,
                   "mw.b": self._mw_b, "md.b": lambda a: self._md(a, 1),
                   "md": lambda a: self._md(a, 4), "md.l": lambda a: self._md(a, 4),
                   "sf": self._sf}.get(name)
        if handler is None:
            self.out("Unknown command '%s' - try 'help'\n" % name)
            return
        try:
            handler(argv[1:])
        except (IndexError, ValueError):
            self.out("Usage:\n%s - see 'help %s'\n" % (name, name))

    def _version(self, args):
        self.out("\nU-Boot 2015.01 (Jun 20 2023 - 10:00:00 +0800)\n"
                 "arm-linux-gnueabihf-gcc (Linaro GCC 4.8-2014.04) 4.8.3\n")

    def _setenv(self, args):
        if len(args) > 1:
            self.env[args[0]] = " ".join(args[1:])
        else:
            self.env.pop(args[0], None)

    def _printenv(self, args):
        for name in args or sorted(self.env):
            if name in self.env:
                self.out("%s=%s\n" % (name, self.env[name]))
            else:
                self.out('## Error: "%s" not defined\n' % name)

    def _ram(self, addr, length):
        if not (RAM_BASE <= addr and addr + length <= RAM_BASE + RAM_SIZE):
            raise ValueError("address out of simulated RAM")
        return addr - RAM_BASE

    def _mw_b(self, args):
        addr, value, count = int(args[0], 16), int(args[1], 16), int(args[2], 16)
        at = self._ram(addr, count)
        self.ram[at:at + count] = bytes([value]) * count

    def _md(self, args, width):
        """U-Boot's print_buffer(): 16 bytes a line; md.l shows little-endian words."""
        addr = int(args[0], 16)
        count = int(args[1], 16) if len(args) > 1 else 0x40
        at = self._ram(addr, count * width)
        data = bytes(self.ram[at:at + count * width])
        if width == 4:
            words = array.array("I", data)
            words.byteswap()  # a word is shown as a number: its bytes in reverse
            shown = words.tobytes()
        else:
            shown = data
        lines = []
        for i in range(0, len(data), 16):
            numbers = shown[i:i + 16].hex(" ", width).ljust(16 // width * (2 * width + 1) - 1)
            lines.append("%08x: %s    %s\n" % (addr + i, numbers,
                                                 data[i:i + 16].translate(MD_ASCII).decode()))
        text = "".join(lines)
        if self.corrupt_md:
            self.corrupt_md -= 1
            digit = text.index(": ") + 2
            text = text[:digit] + "0123456789abcdef"[int(text[digit], 16) ^ 1] + text[digit + 1:]
        self.out(text)

    def _crc32(self, args):
        addr, length = int(args[0], 16), int(args[1], 16)
        at = self._ram(addr, length)
        crc = zlib.crc32(self.ram[at:at + length])
        # as U-Boot 2015 without hash algorithms prints it; with them: "crc32 for ..."
        self.out("CRC32 for %08x ... %08x ==> %08x\n" % (addr, addr + length - 1, crc))

    def _tftpboot(self, args):
        addr, filename = int(args[0], 16), args[1]
        server = self.env.get("serverip", "")
        port = int(self.env.get("tftpdstp", 69)) if self.honour_tftpdstp else 69
        self.out("Using sstar_emac device\nTFTP from server %s; our IP address is %s\n"
                 "Filename '%s'.\nLoad address: 0x%x\nLoading: "
                 % (server, self.env.get("ipaddr"), filename, addr))
        data = io.BytesIO()
        try:
            client = tftpy.TftpClient(server, port, options={"blksize": 1468})
            client.download(filename, data, timeout=0.3, retries=2)
        except tftpy.TftpTimeout:
            self.out("T T T T T \nRetry count exceeded; starting again\n")
            return
        except tftpy.TftpException as e:
            if "File not found" in str(e):
                self.out("\nTFTP error: 'File not found' (1)\nNot retrying...\n")
            else:
                self.out("\nTFTP error: '%s' (0)\nStarting again\n\n" % e)
            return
        blob = data.getvalue()
        at = self._ram(addr, len(blob))
        self.ram[at:at + len(blob)] = blob
        self.env["filesize"] = "%x" % len(blob)
        self.env["fileaddr"] = "%x" % addr
        self.out("#" * max(1, len(blob) // 65536) + "\n\t 1.2 MiB/s\ndone\n"
                 "Bytes transferred = %d (%x hex)\n" % (len(blob), len(blob)))

    def _sf(self, args):
        sub = args[0]
        if sub == "probe":
            if self.fail == "sf probe":
                self.out("Failed to initialize SPI flash at 0:0\n")
                return
            self.probed = True
            self.out("SF: Detected MX25L6433F with page size 256 Bytes, erase size 4 KiB, "
                     "total 8 MiB\n")
            return
        if not self.probed:
            self.out("No SPI flash selected. Please run `sf probe'\n")
            return
        if sub == "erase":
            offset, length = int(args[1], 16), int(args[2], 16)
            if offset % ERASE_SIZE or length % ERASE_SIZE:
                self.out("SF: Erase offset/length not multiple of erase size\n")
                return
            if offset + length > len(self.flash):
                self.out("ERROR: attempting erase past flash size (%#x)\n" % len(self.flash))
                return
            if self.fail == "sf erase":
                self._store(offset, b"\xff" * ERASE_SIZE)  # it got one block done
                self.out("SF: %d bytes @ %#x Erased: ERROR\n" % (length, offset))
                return
            self._store(offset, b"\xff" * length)
            self.out("SF: %d bytes @ %#x Erased: OK\n" % (length, offset))
        elif sub in ("write", "read"):
            addr, offset, length = int(args[1], 16), int(args[2], 16), int(args[3], 16)
            at = self._ram(addr, length)
            if offset + length > len(self.flash):
                self.out("ERROR: attempting %s past flash size (%#x)\n" % (sub, len(self.flash)))
                return
            if sub == "read":
                self.ram[at:at + length] = self.flash[offset:offset + length]
                self.out("SF: %d bytes @ %#x Read: OK\n" % (length, offset))
                return
            if self.fail == "sf write":
                self.out("SF: %d bytes @ %#x Written: ERROR\n" % (length, offset))
                return
            # NOR programming only clears bits
            old = int.from_bytes(self.flash[offset:offset + length], "little")
            data = int.from_bytes(self.ram[at:at + length], "little")
            self._store(offset, (old & data).to_bytes(length, "little"))
            self.out("SF: %d bytes @ %#x Written: OK\n" % (length, offset))
        else:
            raise ValueError(sub)

    def _store(self, offset, data):
        self.flash[offset:offset + len(data)] = data
        with open(self.flash_path, "r+b") as f:
            f.seek(offset)
            f.write(data)


@pytest.fixture
def uboot(chip):
    """Start simulated U-Boots over the chip file: uboot(mode=..., fail=...)."""
    sims = []

    def start(**options):
        sim = UBootSim(str(chip), **options).start()
        sims.append(sim)
        return sim
    yield start
    for sim in sims:
        sim.close()


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
