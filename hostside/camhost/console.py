"""`camhost console`, `backup-uboot` and `flash-uboot`: the camera's own U-Boot over serial.

backup-uboot dumps the whole flash with nothing but the serial cable: `sf read` copies it
to RAM and `md.l` prints it in chunks, each checked against U-Boot's own `crc32` and read
again if it arrived damaged. At 115200 baud that takes about 50 minutes.

flash-uboot writes only when a stored backup equals the chip (CRC32 of all 8 MiB). It
serves the partitions of a full image over TFTP, has U-Boot load each one into RAM (at
LOAD_ADDR + its flash offset, so RAM mirrors the flash layout) and check its CRC32, and
only then erases and writes the partitions and reads them back to check again. The boot
loader is written only with --bootloader and a typed confirmation.
"""
import hashlib
import os
import sys
import tempfile
import time
import zlib

from serial.tools import miniterm

from . import layout
from .backups import (UBOOT_DUMP, BackupStore, check_intact, contents_lines, describe_file,
                      require_firmware)
from .errors import EXIT_STATE_UNKNOWN, CamhostError, camhost_command
from .flashrom import clock
from .tftpserve import TFTP_PORT, TftpServer
from .uboot import LOAD_ADDR, MD_LINE_CHARS, UBoot, UBootError

DUMP_CHUNK = 0x10000  # about 24 s of md.l at 115200 baud: a re-read costs little
DUMP_TOOL = "n/a (U-Boot serial dump)"  # the sidecar's flashrom_version
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
        "backup-uboot", help="dump the whole flash through U-Boot over serial (about 50 min)",
        description="Back up the whole 8 MiB flash with only the serial cable: U-Boot "
                    "copies it to RAM (`sf read`) and prints it with `md.l` in 64 KiB "
                    "chunks, each checked against U-Boot's `crc32` and read again if it "
                    "arrived damaged; a second `sf read` must give the same CRC32. At "
                    "115200 baud this takes about 50 minutes. Stored in --backup-dir like "
                    "the dumps of `camhost backup`.")
    _common(p)
    _backup_dir(p)
    p.set_defaults(func=cmd_backup_uboot)

    p = subparsers.add_parser(
        "flash-uboot", help="write an image through the camera's U-Boot (serial + TFTP)",
        description="Check that a stored backup equals the chip, then serve the image's "
                    "partitions over TFTP and have U-Boot load, check, erase, write and "
                    "read back each one. Kernel and rootfs by default.")
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
                        "allowed: " + ", ".join(UBOOT_WRITABLE) + ", and boot with "
                        "--bootloader)")
    p.add_argument("--bootloader", action="store_true",
                   help="also write the boot partition (U-Boot); asks for typed confirmation")
    p.add_argument("--backup", metavar="FILE",
                   help="backup to rely on instead of any in --backup-dir (it must equal "
                        "the chip now)")
    _backup_dir(p)
    p.set_defaults(func=cmd_flash_uboot)


def _common(p):
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 (or a "
                                                 "pyserial URL)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the U-Boot prompt (default %(default)s)")
    p.add_argument("--break-key", default="*",
                   help="key that stops autoboot, sent repeatedly (default '*'; ENTER, "
                        "SPACE and CTRL-C name those keys)")


def _backup_dir(p):
    p.add_argument("--backup-dir", default="backups", metavar="DIR",
                   help="where backups are stored (default ./%(default)s)")


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


def cmd_backup_uboot(args):
    store = BackupStore(args.backup_dir)
    try:
        os.makedirs(args.backup_dir, exist_ok=True)
    except OSError as e:
        raise CamhostError("cannot create the backup directory %s: %s"
                           % (args.backup_dir, e.strerror))
    with _open(args) as console:
        chip = _probe(console)
        data = dump_flash(console)
    # in the store's directory: it files the dump by hard link
    with tempfile.TemporaryDirectory(prefix=".camhost-", dir=args.backup_dir) as tmp:
        dump = os.path.join(tmp, "chip.bin")
        with open(dump, "wb") as f:
            f.write(data)
        record, created = store.add(dump, chip, DUMP_TOOL, UBOOT_DUMP + args.port)
    if created:
        print("backup saved: %s" % record.path)
    else:
        print("the chip is already backed up, unchanged: %s (nothing overwritten)"
              % record.path)
    print("sha256 %s, chip %s, %d bytes" % (record.meta["sha256"], chip, len(data)))
    print("\n".join(contents_lines(describe_file(record.path))))
    return 0


def dump_flash(console):
    """All 8 MiB of the flash as U-Boot reads it, each chunk checked by CRC32."""
    console.sf_read(LOAD_ADDR, 0, layout.FLASH_SIZE)
    minutes = layout.FLASH_SIZE // 16 * MD_LINE_CHARS * 10 / console.serial.baudrate / 60
    print("dumping 8 MiB over the serial console in %d KiB chunks; at %d baud that takes "
          "about %d minutes" % (DUMP_CHUNK // 1024, console.serial.baudrate, minutes),
          file=sys.stderr)
    chunks = []
    started = time.monotonic()
    for offset in range(0, layout.FLASH_SIZE, DUMP_CHUNK):
        chunks.append(console.read_ram(LOAD_ADDR + offset, DUMP_CHUNK))
        _progress(offset + DUMP_CHUNK, started)
    data = b"".join(chunks)
    # a second read of the chip must agree, as `camhost backup` reads it twice
    console.sf_read(LOAD_ADDR, 0, layout.FLASH_SIZE)
    if console.crc32(LOAD_ADDR, layout.FLASH_SIZE) != zlib.crc32(data):
        raise CamhostError("reading the flash a second time gave another CRC32: the chip "
                           "does not read back reliably, so nothing was stored.")
    if data.count(data[:1]) == len(data):
        raise CamhostError("the flash reads as all 0x%02x through `sf read`: no data came "
                           "back, so nothing was stored." % data[0])
    return data


def _progress(done, started):
    elapsed = time.monotonic() - started
    line = ("dumped %d of %d KiB (%d%%), %s elapsed, about %s left"
            % (done // 1024, layout.FLASH_SIZE // 1024, done * 100 // layout.FLASH_SIZE,
               clock(elapsed), clock(elapsed * (layout.FLASH_SIZE - done) / done)))
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K" + line + ("\n" if done == layout.FLASH_SIZE else ""))
        sys.stderr.flush()
    elif done % 0x100000 == 0:  # a log gets a line per MiB
        print(line, file=sys.stderr)


def cmd_flash_uboot(args):
    blob = layout.read_image(args.image, "image")
    names = _partitions(args)
    require_firmware(blob, args.image)
    backups = _backups(args)
    if args.bootloader:
        _confirm_bootloader()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="camhost-tftp-") as root:
        parts = _partition_files(blob, names, root)
        with TftpServer(root, args.server_ip, args.tftp_port) as server, _open(args) as console:
            backup = chip_backup(console, backups, args)
            print("the chip holds backup %s" % backup)
            flash_partitions(console, parts, args.camera_ip, args.server_ip, server.port,
                             backup, args.backup_dir)
    print("wrote and verified %s through U-Boot in %s. The camera waits at the U-Boot "
          "prompt: power-cycle it (or type `reset` in `camhost console`) to boot."
          % (", ".join("%s (%d bytes)" % (p.name, len(data)) for p, data, _ in parts),
             clock(time.monotonic() - started)))
    return 0


def _backups(args):
    """The backups a write may rely on: --backup, or every 8 MiB one in --backup-dir.

    [(path, sidecar Record or None, CRC32, sha256)]
    """
    store = BackupStore(args.backup_dir)
    if args.backup:
        record = store.sidecar_of(args.backup)
        if not record:
            print("note: %s has no sidecar; it is not a camhost backup, so its integrity "
                  "cannot be checked." % args.backup, file=sys.stderr)
        files = [(args.backup, record)]
    else:
        files = [(r.path, r) for r in store.records()]
    found = []
    for path, record in files:
        if record and record.meta.get("size") != layout.FLASH_SIZE:
            continue  # a backup of some other chip
        data = layout.read_image(path, "backup")
        found.append((path, record, zlib.crc32(data), hashlib.sha256(data).hexdigest()))
    if not found:
        raise CamhostError("no backup of an 8 MiB chip in %s: refusing to write without one. "
                           "%s" % (args.backup_dir, _how_to_back_up(args)))
    return found


def chip_backup(console, backups, args):
    """The path of the backup in `backups` that holds what the chip holds now; or refuse.

    The chip and the backups are compared by CRC32 of all 8 MiB, which U-Boot computes.
    CRC32 cannot stand up to a forged file, but an accidental mismatch (another camera, a
    chip written since) it tells as surely as a hash; and the backup file itself is
    checked against the sha256 in its sidecar.
    """
    _probe(console)
    console.sf_read(LOAD_ADDR, 0, layout.FLASH_SIZE)
    crc = console.crc32(LOAD_ADDR, layout.FLASH_SIZE)
    for path, record, backup_crc, digest in backups:
        if backup_crc == crc:
            if record:
                check_intact(record, digest)
            return path
    if args.backup:
        problem = ("--backup %s (CRC32 %08x) is not what the chip holds now (CRC32 %08x), so "
                   "it could not restore it." % (args.backup, backups[0][2], crc))
    else:
        problem = ("none of the %d backup(s) in %s holds what the chip holds now (CRC32 "
                   "%08x): it was written since, or this is another camera."
                   % (len(backups), args.backup_dir, crc))
    raise CamhostError("%s Nothing was written. %s" % (problem, _how_to_back_up(args)))


def _how_to_back_up(args):
    return ("Back up the chip first: %s (about 50 minutes over the serial cable), or "
            "`camhost backup` over i2c; then run this command again."
            % _backup_uboot_command(args.port, args.backup_dir))


def _backup_uboot_command(port, backup_dir):
    return "`%s`" % camhost_command("backup-uboot", "--port", port, "--backup-dir",
                                    os.path.abspath(backup_dir))


def _probe(console):
    """`sf probe`; the chip's name as U-Boot reports it. Refuses a chip that is not 8 MiB."""
    name, size = console.sf_probe()
    if size not in (None, layout.FLASH_SIZE):
        raise CamhostError("U-Boot reports a %d MiB flash chip; this camera's layout is for "
                           "8 MiB. Refusing." % (size >> 20))
    return name or "unknown-spi-flash"


def flash_partitions(console, parts, camera_ip, server_ip, tftp_port, backup, backup_dir):
    """Load and check every file, then erase, write and read back each partition.

    `backup` holds what the chip held before (see chip_backup()); a failure names it.
    """
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
        # the chip no longer equals the backup, so a new attempt needs a new one first
        again = ("Before this write the chip held the backup %s; it may not any more, so "
                 "to try again through U-Boot back up the chip as it is now (%s), then run "
                 "this command again." % (backup, _backup_uboot_command(console.port,
                                                                       backup_dir)))
        restore = "`%s`" % camhost_command("restore", os.path.abspath(backup), "--backup-dir",
                                           os.path.abspath(backup_dir))
        if writing.name == "boot":  # boot comes last, so this means it was erased
            advice = ("U-BOOT ITSELF MAY BE DAMAGED: do not power the camera off, U-Boot "
                      "still runs from RAM. %s Over i2c, %s puts the backup back even if the "
                      "camera no longer starts." % (again, restore))
        else:
            advice = ("U-Boot itself was not touched, so the camera still reaches this "
                      "prompt: fix the cause. %s Or put the backup back over i2c: %s."
                      % (again, restore))
        raise CamhostError("%s\nFlash was being written: %s may be erased or partly written. "
                           "%s" % (cause, ", ".join(p.name for p, _, _ in parts), advice),
                           exit_code=EXIT_STATE_UNKNOWN)


def _partitions(args):
    names = layout.parse_partition_names(args.partitions)  # in flash order
    if "boot" in names and not args.bootloader:
        raise CamhostError("the boot partition (U-Boot) is written only with --bootloader.")
    # U-Boot last, so a failure before it leaves the boot loader intact
    names = [n for n in names if n != "boot"]
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
