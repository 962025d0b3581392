"""`camhost backup|flash|verify|restore`: safe flashing over flashrom.

The rules these commands enforce: never write without a verified backup of this chip;
write only full 8 MiB images whose partitions look right; write only the partitions
that differ, and verify them; after a failed write, print the exact restore command.
"""
import contextlib
import hashlib
import os
import shlex
import shutil
import tempfile

from . import layout
from .backups import (BackupStore, check_intact, contents_lines, describe, describe_file,
                      differing_partitions, of_chip, require_firmware, sha256_file)
from .errors import EXIT_STATE_UNKNOWN, CamhostError, camhost_command
from .flashrom import DEFAULT_PROGRAMMER, Flashrom, Progress, WriteReport, clock

EXIT_DIFFERS = 3  # `camhost verify`: chip and file differ


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
                   help="backup to rely on, checked with flashrom's verify (by default the "
                        "chip is read and its content looked up in --backup-dir)")
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
    blob = layout.read_image(args.image, "image")
    contents = require_firmware(blob, args.image)
    names = layout.parse_partition_names(args.partitions) if args.partitions else None
    store = BackupStore(args.backup_dir)
    with _session(args, steps=4) as fr, tempfile.TemporaryDirectory(prefix="camhost-") as tmp:
        chip = fr.preflight()
        current = os.path.join(tmp, "chip.bin")
        backup = verified_backup(fr, store, chip, current, args.backup)
        print("image %s:" % args.image)
        print("\n".join(contents_lines(contents)))
        if args.dry_run:
            regions = plan(_read(current), blob, names)
            if regions:
                argv = fr.command(fr.write_args("LAYOUT", regions, backup, args.image))
                print("flashrom command: %s" % " ".join(shlex.quote(a) for a in argv))
                print("LAYOUT:\n" + layout.flashrom_layout().rstrip())
                print("dry run: nothing was written")
            return 0
        # flashrom gets the bytes checked above, even if IMAGE is replaced meanwhile
        image = _write_new(os.path.join(tmp, "image.bin"), blob)
        flash_image(fr, image, current, restore_command(args, backup), names)
    return 0


def cmd_verify(args):
    blob = layout.read_image(args.image, "image")
    with _session(args, steps=2) as fr, tempfile.TemporaryDirectory(prefix="camhost-") as tmp:
        fr.preflight()
        dump = os.path.join(tmp, "chip.bin")
        fr.read(dump)
        current = _read(dump)
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
    blob = layout.read_image(args.backup, "backup")
    store = BackupStore(args.backup_dir)
    record = store.sidecar_of(args.backup)
    if record:
        check_intact(record, hashlib.sha256(blob).hexdigest())
    contents = describe(blob)
    if contents.kind == "unrecognised":
        raise CamhostError("%s holds no U-Boot: restoring it would leave the camera unable to "
                           "boot. Refusing.\n%s"
                           % (args.backup, "\n".join(contents_lines(contents))))
    with _session(args, steps=0) as fr:
        chip = fr.preflight()
        if record and not of_chip(record, chip.name):
            raise CamhostError("%s is a backup of a %s chip, but this camera has %s; refusing."
                               % (args.backup, record.meta.get("chip"), chip.name))
        if not record:
            fr.progress.note("note: %s has no sidecar; it is not a camhost backup, so its "
                             "integrity cannot be checked." % args.backup)
        with tempfile.TemporaryDirectory(prefix=".camhost-", dir=_ensure_dir(store)) as tmp:
            dump = os.path.join(tmp, "chip.bin")
            fr.read(dump, "read chip")
            current = _read(dump)
            if current == blob:
                print("the chip already holds %s; nothing written" % args.backup)
                return 0
            if _is_blank(current):
                # a flaky link can return one blank read: only two that agree mean erased
                again = os.path.join(tmp, "chip-again.bin")
                fr.read(again, "read chip again (it read blank)")
                _refuse_unstable(dump, again, "nothing was written")
                fr.progress.note("the chip reads as all 0x%02x: nothing on it to save"
                                 % current[0])
            elif store.by_sha256(sha256_file(dump), chip.name) is None:
                # the content we are about to replace must be recoverable too
                fr.progress.note("the chip's current content is not backed up yet: saving it")
                saved, _ = read_backup(fr, store, chip, first_read=dump)
                print("current content saved as %s" % saved.path)
            regions = [p for p, _ in differing_partitions(current, blob)]
            # flashrom gets the bytes checked above, even if BACKUP is replaced meanwhile
            source = _write_new(os.path.join(tmp, "backup.bin"), blob)
            report = fr.write(source, regions, dump, restore_command(args, args.backup))
    print(summary(report))
    return 0


# --- building blocks ------------------------------------------------------------------
def read_backup(fr, store, chip, first_read=None):
    """Read the chip twice (or once more after `first_read`), compare, store the dump."""
    created = not os.path.isdir(store.directory)
    try:
        return _read_backup(fr, store, chip, first_read)
    finally:
        # a failed first backup leaves no empty backups/ behind to puzzle over
        if created and os.path.isdir(store.directory) and not os.listdir(store.directory):
            os.rmdir(store.directory)


def _read_backup(fr, store, chip, first_read):
    with tempfile.TemporaryDirectory(prefix=".camhost-", dir=_ensure_dir(store)) as tmp:
        first = os.path.join(tmp, "read1.bin")
        if first_read:
            shutil.copyfile(first_read, first)
        else:
            fr.read(first, "read chip (1 of 2)")
        _refuse_blank(first)
        second = os.path.join(tmp, "read2.bin")
        fr.read(second, "read chip again (2 of 2)")
        _refuse_unstable(first, second, "no backup was stored")
        return store.add(first, chip.name, fr.version, fr.programmer)


def verified_backup(fr, store, chip, dump, explicit=None):
    """Leave the chip's content in the private file `dump`; return a backup equal to it.

    `explicit` (--backup) is checked with flashrom's verify. Otherwise the chip is read
    (as long as a verify takes) and its sha256 looked up in the store, so the backup
    found is this chip's content even when several cameras share the store.
    """
    if explicit:
        data = layout.read_image(explicit, "--backup")
        record = store.sidecar_of(explicit)
        if record:
            check_intact(record, hashlib.sha256(data).hexdigest())
        _write_new(dump, data)
        if not fr.verify(dump, "check the backup matches the chip"):
            raise CamhostError(
                "--backup %s does not match the chip now, so it could not restore it. "
                "Run `camhost backup` to save the current content, then flash again." % explicit)
        return explicit
    fr.read(dump, "read chip")
    digest = sha256_file(dump)
    record = store.by_sha256(digest, chip.name)
    if record is None:
        raise CamhostError(
            "no backup in %s matches the chip now (%s, sha256 %s): refusing to write without "
            "one. Run `camhost backup` first, then flash again (or give --backup FILE with a "
            "dump of this chip)." % (store.directory, chip.name, digest[:12]))
    # the restore command printed after a failed write will rely on this file
    check_intact(record, sha256_file(record.path))
    return record.path


def plan(current, image, names=None):
    """Print which partitions differ and will be written; return those (chosen) partitions."""
    diffs = differing_partitions(current, image)
    chosen = [(p, n) for p, n in diffs if names is None or p.name in names]
    left = [p.name for p, _ in diffs if names is not None and p.name not in names]
    same = [p.name for p in layout.PARTITIONS if p not in [d for d, _ in diffs]]
    if not chosen:
        print("nothing to write: the chip already holds the image in %s"
              % (", ".join(names) if names else "every partition"))
        if left:
            print("(differing but not selected: %s)" % ", ".join(left))
        return []
    print("plan: write %d partition(s), verify them afterwards:" % len(chosen))
    for p, count in chosen:
        print("  %-12s 0x%06x-0x%06x  %5d KiB, %d bytes differ"
              % (p.name, p.offset, p.offset + p.size - 1, p.size // 1024, count))
    if same:
        print("unchanged, not written: %s" % ", ".join(same))
    if left:
        print("differ but not selected by --partitions, not written: %s" % ", ".join(left))
    return [p for p, _ in chosen]


def flash_image(fr, image_path, current_path, restore_cmd, names=None):
    """Write the partitions of `image_path` that differ from the chip, and verify them.

    `current_path` must hold exactly what the chip holds now (see verified_backup());
    both files must be private, so nothing changes them during the write. Returns the
    WriteReport (all zero when nothing differs).
    """
    regions = plan(_read(current_path), _read(image_path), names)
    if not regions:
        return WriteReport((), 0, 0, 0, 0, 0, 0.0)
    report = fr.write(image_path, regions, current_path, restore_cmd)
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
    argv = ["restore", os.path.abspath(backup_path), "--programmer", args.programmer,
            "--backup-dir", os.path.abspath(args.backup_dir)]
    if args.chip:
        argv += ["--chip", args.chip]
    return camhost_command(*argv)


# --- helpers -------------------------------------------------------------------------
@contextlib.contextmanager
def _session(args, steps):
    """A Flashrom for the command; releases the camera at the end (see Flashrom.release)."""
    fr = Flashrom(args.programmer, args.chip, progress=Progress(steps=steps))
    halted = False
    try:
        yield fr
    except CamhostError as e:
        # after an unknown-state write the SoC stays halted, ready for the restore
        halted = e.exit_code == EXIT_STATE_UNKNOWN
        raise
    finally:
        # also after Ctrl-C or a crash: a halted SoC would not boot until power-cycled
        if not halted:
            fr.release()


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write_new(path, data):
    """Create `path` (in a private temporary directory) holding `data`; return the path."""
    with open(path, "xb") as f:
        f.write(data)
    return path


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
    data = _read(path)
    if _is_blank(data):
        raise CamhostError(
            "the chip reads as all 0x%02x: no data came back. Check the wiring (J3 pins 1-2 "
            "to SDA/SCL, GND to pin 3) and that the camera is powered; nothing was stored."
            % data[0])


def _refuse_unstable(first, second, outcome):
    a, b = _read(first), _read(second)
    if a == b:
        return
    where = ", ".join("%s (%d bytes)" % (p.name, n) for p, n in differing_partitions(a, b))
    raise CamhostError(
        "the two reads of the chip differ, in %s: the link is unreliable, so %s. Use short "
        "wires and a common GND, lower the i2c clock (Raspberry Pi: "
        "`dtparam=i2c_arm_baudrate=20000` in config.txt, then reboot), power-cycle the "
        "camera and run the command again." % (where, outcome))
