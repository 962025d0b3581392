"""`camhost backup|flash|verify|restore`: safe flashing over flashrom.

The rules these commands enforce: never write without a verified backup of this chip;
write only full 8 MiB images whose partitions look right; write only the partitions
that differ, and verify them; after a failed write, print the exact restore command.
"""
import contextlib
import os
import shlex
import shutil
import tempfile

from . import layout
from .backups import (BackupStore, check_intact, contents_lines, describe, describe_file,
                      differing_partitions, require_firmware, sha256_file)
from .errors import CamhostError
from .flashrom import (DEFAULT_PROGRAMMER, EXIT_DIFFERS, EXIT_STATE_UNKNOWN, Flashrom, Progress,
                       WriteReport, clock)


def register(subparsers):
    p = subparsers.add_parser(
        "backup", help="read the flash twice and store a verified backup",
        description="Read the whole chip twice, compare, and store backups/<date>-<chip>-"
                    "<sha256>.bin with a JSON sidecar. Never overwrites a backup.")
    _common(p)
    p.set_defaults(func=cmd_backup)

    p = subparsers.add_parser(
        "flash", help="write an 8 MiB image after a verified backup",
        description="Write the partitions of IMAGE that differ from the chip, then verify "
                    "them. Refuses without a backup that matches the chip now.")
    p.add_argument("image", metavar="IMAGE", help="full 8 MiB firmware image")
    p.add_argument("--backup", metavar="FILE",
                   help="backup to rely on instead of the newest one of this chip in "
                        "--backup-dir (it must equal the chip now)")
    p.add_argument("--partitions", metavar="LIST",
                   help="write only these partitions, comma-separated (e.g. kernel,rootfs)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and print what would be written; write nothing")
    _common(p)
    p.set_defaults(func=cmd_flash)

    p = subparsers.add_parser(
        "verify", help="compare the chip with an image file",
        description="Read the chip and name the partitions that differ from IMAGE "
                    "(exit 0 identical, 3 different).")
    p.add_argument("image", metavar="IMAGE")
    _common(p)
    p.set_defaults(func=cmd_verify)

    p = subparsers.add_parser(
        "restore", help="write a backup back to the chip",
        description="Write BACKUP to the chip (only the partitions that differ) and verify. "
                    "If the chip's current content is not backed up yet, it is saved first.")
    p.add_argument("backup", metavar="BACKUP")
    _common(p)
    p.set_defaults(func=cmd_restore)


def _common(p):
    p.add_argument("--programmer", default=DEFAULT_PROGRAMMER,
                   help="flashrom programmer (default %(default)s)")
    p.add_argument("--chip", help="flashrom chip name, when several definitions match")
    p.add_argument("--backup-dir", default="backups", metavar="DIR",
                   help="where backups are stored (default ./%(default)s)")


# --- commands ------------------------------------------------------------------------
def cmd_backup(args):
    store = BackupStore(args.backup_dir)
    with _session(args, steps=3) as fr:
        chip = fr.preflight()
        record, created = read_backup(fr, store, chip)
    if created:
        print("backup saved: %s" % record.path)
    else:
        print("the chip is already backed up, unchanged: %s (nothing overwritten)" % record.path)
    print("sha256 %s, chip %s, %d bytes" % (record.meta["sha256"], chip.name, chip.size))
    print("\n".join(contents_lines(describe_file(record.path))))
    return 0


def cmd_flash(args):
    blob = _load(args.image, "image")
    contents = require_firmware(blob, args.image)
    names = _partition_names(args.partitions)
    store = BackupStore(args.backup_dir)
    with _session(args, steps=4) as fr:
        chip = fr.preflight()
        backup = verified_backup(fr, store, chip, args.backup)
        print("image %s:" % args.image)
        print("\n".join(contents_lines(contents)))
        flash_image(fr, args.image, backup, names, args.dry_run,
                    restore_command(args, backup))
    return 0


def cmd_verify(args):
    blob = _load(args.image, "image")
    if len(blob) != layout.FLASH_SIZE:
        raise CamhostError("%s is %d bytes; the chip holds %d bytes, so they cannot be equal."
                           % (args.image, len(blob), layout.FLASH_SIZE))
    with _session(args, steps=2) as fr:
        fr.preflight()
        with tempfile.TemporaryDirectory(prefix="camhost-") as tmp:
            dump = os.path.join(tmp, "chip.bin")
            fr.read(dump)
            with open(dump, "rb") as f:
                current = f.read()
    diffs = differing_partitions(current, blob)
    if not diffs:
        print("the chip matches %s" % args.image)
        return 0
    print("the chip differs from %s in:" % args.image)
    for p, count in diffs:
        print("  %-12s 0x%06x-0x%06x  %d bytes differ" % (p.name, p.offset, p.offset + p.size - 1,
                                                          count))
    return EXIT_DIFFERS


def cmd_restore(args):
    blob = _load(args.backup, "backup")
    if len(blob) != layout.FLASH_SIZE:
        raise CamhostError("%s is %d bytes, not a full backup of the %d-byte chip."
                           % (args.backup, len(blob), layout.FLASH_SIZE))
    store = BackupStore(args.backup_dir)
    record = store.sidecar_of(args.backup)
    if record:
        check_intact(record)
    contents = describe(blob)
    if contents.kind == "unrecognised":
        raise CamhostError("%s holds no U-Boot: restoring it would leave the camera unable to "
                           "boot. Refusing.\n%s"
                           % (args.backup, "\n".join(contents_lines(contents))))
    with _session(args, steps=0) as fr:
        chip = fr.preflight()
        if record and record.meta.get("chip") != chip.name:
            raise CamhostError("%s is a backup of a %s chip, but this camera has %s; refusing."
                               % (args.backup, record.meta.get("chip"), chip.name))
        if not record:
            fr.progress.note("note: %s has no sidecar; it is not a camhost backup, so its "
                             "integrity cannot be checked." % args.backup)
        with tempfile.TemporaryDirectory(prefix=".camhost-", dir=_ensure_dir(store)) as tmp:
            dump = os.path.join(tmp, "chip.bin")
            fr.read(dump, "read chip")
            with open(dump, "rb") as f:
                current = f.read()
            if current == blob:
                if record:
                    store.seen_on_chip(record)
                print("the chip already holds %s; nothing written" % args.backup)
                return 0
            if _is_blank(current):
                fr.progress.note("the chip reads as all 0x%02x: nothing on it to save"
                                 % current[0])
            elif store.by_sha256(sha256_file(dump)) is None:
                # the content we are about to replace must be recoverable too
                fr.progress.note("the chip's current content is not backed up yet: saving it")
                saved, _ = read_backup(fr, store, chip, first_read=dump)
                print("current content saved as %s" % saved.path)
            regions = [p for p, _ in differing_partitions(current, blob)]
            report = fr.write(args.backup, regions, dump, restore_command(args, args.backup))
            if record:
                # verified on the chip: the next flash can rely on it without a new backup
                store.seen_on_chip(record)
    print(summary(report))
    return 0


# --- building blocks (also used by the benchmarks) ------------------------------------
def read_backup(fr, store, chip, first_read=None):
    """Read the chip twice (or once more after `first_read`), compare, store the dump."""
    with tempfile.TemporaryDirectory(prefix=".camhost-", dir=_ensure_dir(store)) as tmp:
        first = os.path.join(tmp, "read1.bin")
        if first_read:
            shutil.copyfile(first_read, first)
        else:
            fr.read(first, "read chip (1 of 2)")
        _refuse_blank(first)
        second = os.path.join(tmp, "read2.bin")
        fr.read(second, "read chip again (2 of 2)")
        _refuse_unstable(first, second)
        return store.add(first, chip.name, fr.version, fr.programmer)


def verified_backup(fr, store, chip, explicit=None):
    """The path of a backup whose content flashrom confirms equals the chip now."""
    if explicit:
        data = _load(explicit, "backup")
        if len(data) != chip.size:
            raise CamhostError("--backup %s is %d bytes; the chip has %d." % (explicit, len(data),
                                                                            chip.size))
        record = store.sidecar_of(explicit)
        if record:
            check_intact(record)
        if not fr.verify(explicit, "check the backup matches the chip"):
            raise CamhostError(
                "--backup %s does not match the chip now, so it could not restore it. "
                "Run `camhost backup` to save the current content, then flash again." % explicit)
        return explicit
    records = store.for_chip(chip.name, chip.size)
    if not records:
        raise CamhostError(
            "no backup of this chip (%s) in %s: refusing to write without one. Run `camhost "
            "backup` first (or give --backup FILE with a dump of this chip)."
            % (chip.name, store.directory))
    newest = records[0]
    check_intact(newest)
    if not fr.verify(newest.path, "check the newest backup matches the chip"):
        raise CamhostError(
            "the newest backup of this chip, %s (%s), does not match the chip now: it was "
            "written since, or this is another camera. Run `camhost backup` to save the "
            "current content, then flash again." % (newest.path, newest.meta.get("time", "?")))
    return newest.path


def flash_image(fr, image_path, verified_backup_path, names=None, dry_run=False,
                restore_cmd=None):
    """Write the partitions of `image_path` that differ from the verified backup.

    `verified_backup_path` must hold exactly what the chip holds now (see
    verified_backup()). Returns the WriteReport (all zero when nothing differs), or None
    for a dry run.
    """
    with open(image_path, "rb") as f:
        image = f.read()
    with open(verified_backup_path, "rb") as f:
        current = f.read()
    diffs = differing_partitions(current, image)
    chosen = [(p, n) for p, n in diffs if names is None or p.name in names]
    left = [p.name for p, _ in diffs if names is not None and p.name not in names]
    same = [p.name for p in layout.PARTITIONS if p not in [d for d, _ in diffs]]
    if not chosen:
        print("nothing to write: the chip already holds the image in %s"
              % (", ".join(names) if names else "every partition"))
        if left:
            print("(differing but not selected: %s)" % ", ".join(left))
        return WriteReport((), 0, 0, 0, 0, 0, 0.0)
    print("plan: write %d partition(s), verify them afterwards:" % len(chosen))
    for p, count in chosen:
        print("  %-12s 0x%06x-0x%06x  %5d KiB, %d bytes differ"
              % (p.name, p.offset, p.offset + p.size - 1, p.size // 1024, count))
    if same:
        print("unchanged, not written: %s" % ", ".join(same))
    if left:
        print("differ but not selected by --partitions, not written: %s" % ", ".join(left))
    regions = [p for p, _ in chosen]
    if dry_run:
        argv = fr.command(["-l", "LAYOUT"] + sum((["-i", p.name] for p in regions), [])
                          + ["-N", "--flash-contents", verified_backup_path, "-w", image_path])
        print("flashrom command: %s" % " ".join(shlex.quote(a) for a in argv))
        print("LAYOUT:\n" + layout.flashrom_layout().rstrip())
        print("dry run: nothing was written")
        return None
    report = fr.write(image_path, regions, verified_backup_path, restore_cmd or "camhost restore "
                      + shlex.quote(os.path.abspath(verified_backup_path)))
    print(summary(report))
    return report


def summary(report):
    names = ", ".join(r.name for r in report.regions)
    return ("wrote and verified %s (%d region(s), %d KiB): flashrom erased %d block(s) "
            "(%d bytes), programmed %d block(s) (%d bytes), skipped %d unchanged block(s); %s"
            % (names, len(report.regions), sum(r.size for r in report.regions) // 1024,
               report.blocks_erased, report.bytes_erased, report.blocks_written,
               report.bytes_written, report.blocks_skipped, clock(report.seconds)))


def restore_command(args, backup_path):
    argv = ["camhost", "restore", os.path.abspath(backup_path),
            "--programmer", args.programmer, "--backup-dir", os.path.abspath(args.backup_dir)]
    if args.chip:
        argv += ["--chip", args.chip]
    return " ".join(shlex.quote(a) for a in argv)


# --- helpers -------------------------------------------------------------------------
@contextlib.contextmanager
def _session(args, steps):
    """A Flashrom for the command; releases the camera at the end (see Flashrom.release)."""
    fr = Flashrom(args.programmer, args.chip, progress=Progress(steps=steps))
    try:
        yield fr
    except CamhostError as e:
        # after an unknown-state write the SoC stays halted, ready for the restore
        if e.exit_code != EXIT_STATE_UNKNOWN:
            fr.release()
        raise
    fr.release()


def _load(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CamhostError("cannot read %s %s: %s" % (what, path, e.strerror))


def _partition_names(text):
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in layout.BY_NAME]
    if unknown or not names:
        raise CamhostError("unknown partition(s) %s in --partitions; the partitions are: %s"
                           % (", ".join(unknown) or repr(text), ", ".join(layout.BY_NAME)))
    return names


def _ensure_dir(store):
    try:
        os.makedirs(store.directory, exist_ok=True)
    except OSError as e:
        raise CamhostError("cannot create the backup directory %s: %s"
                           % (store.directory, e.strerror))
    return store.directory


def _is_blank(data):
    return data.count(data[:1]) == len(data)


def _refuse_blank(path):
    with open(path, "rb") as f:
        data = f.read()
    if _is_blank(data):
        raise CamhostError(
            "the chip reads as all 0x%02x: no data came back. Check the wiring (J3 pins 1-2 "
            "to SDA/SCL, GND to pin 3) and that the camera is powered; nothing was stored."
            % data[0])


def _refuse_unstable(first, second):
    with open(first, "rb") as f:
        a = f.read()
    with open(second, "rb") as f:
        b = f.read()
    if a == b:
        return
    where = ", ".join("%s (%d bytes)" % (p.name, n) for p, n in differing_partitions(a, b))
    raise CamhostError(
        "the two reads of the chip differ, in %s: the link is unreliable, so no backup was "
        "stored. Use short wires and a common GND, lower the i2c clock (Raspberry Pi: "
        "`dtparam=i2c_arm_baudrate=20000` in config.txt, then reboot), power-cycle the "
        "camera and run the backup again." % where)
