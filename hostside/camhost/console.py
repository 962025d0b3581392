"""`camhost console` and `camhost flash-uboot`: the camera's own U-Boot over a serial cable.

flash-uboot serves the partitions of a full image over TFTP, has U-Boot load each one
into RAM (at LOAD_ADDR + its flash offset, so RAM mirrors the flash layout) and check its
CRC32, and only then erases and writes the partitions and reads them back to check again.
The boot loader is written only with --bootloader and a typed confirmation.
"""
import os
import sys
import tempfile
import time
import zlib

from serial.tools import miniterm

from . import layout
from .backups import require_firmware
from .errors import CamhostError
from .tftpserve import TFTP_PORT, TftpServer
from .uboot import LOAD_ADDR, UBoot, UBootError

EXIT_PARTLY_WRITTEN = 4  # U-Boot failed after it began erasing
DEFAULT_PARTITIONS = ("kernel", "rootfs")
UBOOT_WRITABLE = ("env", "kernel", "rootfs", "rootfs_data")  # boot needs --bootloader
CONFIRMATION = "overwrite u-boot"
BREAK_KEYS = {"ENTER": "\r", "SPACE": " ", "CTRL-C": "\x03"}


def register(subparsers):
    p = subparsers.add_parser(
        "console", help="reach the U-Boot prompt over serial; interactive or --run",
        description="Open the serial port (115200 8N1), send the break key until U-Boot's "
                    "prompt appears (power-cycle the camera meanwhile), then run the --run "
                    "commands or hand over an interactive console (leave with Ctrl-]).")
    _common(p)
    p.add_argument("--run", action="append", metavar="CMD", default=[],
                   help="run this U-Boot command and print its output (repeatable)")
    p.set_defaults(func=cmd_console)

    p = subparsers.add_parser(
        "flash-uboot", help="write an image through the camera's U-Boot (serial + TFTP)",
        description="Serve the image's partitions over TFTP and have U-Boot load, check, "
                    "erase, write and read back each one. Kernel and rootfs by default.")
    p.add_argument("image", metavar="IMAGE", help="full 8 MiB firmware image")
    _common(p)
    p.add_argument("--server-ip", required=True,
                   help="this computer's address on the camera's network (the TFTP server)")
    p.add_argument("--camera-ip", required=True, help="address U-Boot uses on that network")
    p.add_argument("--tftp-port", type=int, default=TFTP_PORT,
                   help="TFTP server port (default 69, which needs root); U-Boot is told it "
                        "through `tftpdstp`")
    p.add_argument("--partitions", metavar="LIST", default=",".join(DEFAULT_PARTITIONS),
                   help="partitions to write, comma-separated (default %(default)s; "
                        "allowed: " + ", ".join(UBOOT_WRITABLE) + ")")
    p.add_argument("--bootloader", action="store_true",
                   help="also write the boot partition (U-Boot); asks for typed confirmation")
    p.set_defaults(func=cmd_flash_uboot)


def _common(p):
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 (or a "
                                                 "pyserial URL)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the U-Boot prompt (default %(default)s)")
    p.add_argument("--break-key", default="*",
                   help="key that stops autoboot, sent repeatedly (default '*'; ENTER, "
                        "SPACE and CTRL-C name those keys)")


def _open(args):
    console = UBoot(args.port, break_key=BREAK_KEYS.get(args.break_key.upper(), args.break_key))
    try:
        print("sending %r to %s: power-cycle the camera now" % (console.break_key, args.port),
              file=sys.stderr)
        console.interrupt_autoboot(args.timeout)
    except BaseException:
        console.close()
        raise
    return console


def cmd_console(args):
    with _open(args) as console:
        print("U-Boot prompt reached (%r)" % console.prompt, file=sys.stderr)
        for command in args.run:
            output = console.run(command, timeout=60)
            print("%s%s" % (console.prompt, command))
            if output:
                print(output)
        if args.run:
            return 0
        # Enter sends CR alone (a stray LF would be an empty line, which U-Boot answers by
        # repeating the last command); U-Boot's CR LF shows as one line break
        term = miniterm.Miniterm(console.serial, echo=False, eol="cr")
        term.rx_transformations = [miniterm.CRLF()]
        term.set_rx_encoding("latin-1")
        term.set_tx_encoding("latin-1")
        term.exit_character = chr(0x1D)  # Ctrl-]
        print("interactive U-Boot console; Ctrl-] leaves", file=sys.stderr)
        term.start()
        try:
            term.join(True)
        except KeyboardInterrupt:
            pass
        term.join()
        term.close()
    return 0


def cmd_flash_uboot(args):
    blob = _load(args.image)
    names = _partitions(args)
    require_firmware(blob, args.image)
    if args.bootloader:
        _confirm_bootloader()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="camhost-tftp-") as root:
        parts = _partition_files(blob, names, root)
        with TftpServer(root, args.server_ip, args.tftp_port) as server, _open(args) as console:
            flash_partitions(console, parts, args.camera_ip, args.server_ip, server.port)
    print("wrote and verified %s through U-Boot in %s. The camera waits at the U-Boot "
          "prompt: power-cycle it (or type `reset` in `camhost console`) to boot."
          % (", ".join("%s (%d bytes)" % (p.name, len(data)) for p, data, _ in parts),
             "%d:%02d" % divmod(int(time.monotonic() - started), 60)))
    return 0


def flash_partitions(console, parts, camera_ip, server_ip, tftp_port):
    """Load and check every file, then erase, write and read back each partition."""
    def say(text):
        print(text, file=sys.stderr)

    server = "%s:%d" % (server_ip, tftp_port)
    console.setenv("ipaddr", camera_ip)
    console.setenv("serverip", server_ip)
    console.setenv("netretry", "no")  # fail instead of retrying forever
    console.setenv("tftpdstp", str(tftp_port))  # honoured when built with CONFIG_TFTP_PORT
    for p, data, _ in parts:
        if not data:
            continue
        say("loading %s (%d bytes) over TFTP" % (p.name, len(data)))
        addr = LOAD_ADDR + p.offset
        console.tftp(addr, p.name + ".bin", len(data), server)
        if console.crc32(addr, len(data)) != zlib.crc32(data):
            raise UBootError("%s arrived corrupted (CRC32 differs); nothing was erased. "
                             "Run the command again." % p.name)
    console.sf_probe()
    writing = None
    try:
        for p, data, _ in parts:
            writing = p
            say("erasing %s (0x%06x, %d KiB)" % (p.name, p.offset, p.size // 1024))
            console.sf_erase(p.offset, p.size)
            if data:
                say("writing %s" % p.name)
                console.sf_write(LOAD_ADDR + p.offset, p.offset, len(data))
        for p, _, crc in parts:
            say("reading back %s" % p.name)
            console.sf_read(LOAD_ADDR + p.offset, p.offset, p.size)
            if console.crc32(LOAD_ADDR + p.offset, p.size) != crc:
                raise UBootError("%s reads back different from the image (CRC32)" % p.name)
    except (UBootError, KeyboardInterrupt) as e:
        cause = e if isinstance(e, UBootError) else "interrupted."
        if writing.name == "boot":  # boot comes last, so this means it was erased
            advice = ("U-BOOT ITSELF MAY BE DAMAGED: do not power off; run the command again "
                      "now. If it keeps failing, restore over i2c with `camhost restore`.")
        else:
            advice = ("U-Boot itself was not touched, so the camera still reaches this "
                      "prompt: fix the cause and run the same command again.")
        raise CamhostError("%s\nFlash was being written: %s may be erased or partly written. "
                           "%s" % (cause, ", ".join(p.name for p, _, _ in parts), advice),
                           exit_code=EXIT_PARTLY_WRITTEN)


def _load(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CamhostError("cannot read image %s: %s" % (path, e.strerror))


def _partitions(args):
    names = [n.strip() for n in args.partitions.split(",") if n.strip()]
    bad = [n for n in names if n not in UBOOT_WRITABLE]
    if "boot" in bad:
        raise CamhostError("the boot partition (U-Boot) is written only with --bootloader.")
    if bad or not names:
        raise CamhostError("cannot write partition(s) %s through U-Boot; choose from: %s"
                           % (", ".join(bad) or repr(args.partitions), ", ".join(UBOOT_WRITABLE)))
    # flash order; U-Boot last, so a failure before it leaves the boot loader intact
    names = [p.name for p in layout.PARTITIONS if p.name in names]
    return names + ["boot"] if args.bootloader else names


def _partition_files(blob, names, root):
    """[(Partition, bytes to send, CRC32 of the whole partition)], files written to root.

    Trailing 0xff is not sent: the erase leaves it that way, and it saves transfer time.
    """
    parts = []
    for name in names:
        p = layout.partition(name)
        whole = layout.slice_of(blob, name)
        data = whole.rstrip(b"\xff")
        with open(os.path.join(root, name + ".bin"), "wb") as f:
            f.write(data)
        parts.append((p, data, zlib.crc32(whole)))
    return parts


def _confirm_bootloader():
    print("--bootloader rewrites U-Boot itself. If that write fails, or the image's U-Boot "
          "does not suit this camera, the camera will not start again and only flashrom "
          "over i2c (`camhost restore`) can bring it back.", file=sys.stderr)
    try:
        answer = input("Type '%s' to continue: " % CONFIRMATION)
    except EOFError:
        answer = ""
    if answer.strip() != CONFIRMATION:
        raise CamhostError("not confirmed; nothing was written.")
