"""The backup store, and what a full-chip dump contains.

A backup is `<dir>/<date>-<chip>-<sha256[:12]>.bin` with a JSON sidecar beside it
(`.json`: sha256, chip, size, flashrom version, time). Files are created exclusively and
never replaced. `describe()` says whether a dump holds the OpenIPC layout (U-Boot, a
valid uImage at 0x50000, squashfs at 0x250000) or something else, such as stock firmware.
"""
import datetime
import json
import os
import re
from collections import namedtuple

from . import layout
from .errors import CamhostError
from .formats import FormatError, parse_squashfs, parse_uimage, sha256_file

Record = namedtuple("Record", "path meta")
Contents = namedtuple("Contents", "kind uboot kernel rootfs problems")

UBOOT_RE = re.compile(rb"U-Boot \d{4}\.\d{2}[^\x00\r\n]{0,60}")


def chip_tag(chip):
    """A file-name-safe short chip name: "MX25L6436E/MX25L6445E/..." -> "MX25L6436E"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", chip.split("/")[0]).strip("_") or "chip"


# the sidecar `programmer` of a dump made through U-Boot (`camhost backup-uboot`)
UBOOT_DUMP = "u-boot-serial:"


def of_chip(record, chip):
    """Whether `record` backs up a chip that flashrom names `chip`.

    U-Boot names chips its own way (MX25L6433F where flashrom says MX25L6436E/...), so a
    dump made through U-Boot counts for any chip of its size.
    """
    if record.meta.get("programmer", "").startswith(UBOOT_DUMP):
        return record.meta.get("size") == layout.FLASH_SIZE
    return record.meta.get("chip") == chip


class BackupStore:
    def __init__(self, directory):
        self.directory = directory

    def add(self, dump_path, chip, flashrom_version, programmer):
        """File `dump_path` (moved in) as a backup; return (Record, created).

        An identical backup already stored is reused (created False) and `dump_path` is
        removed. A different file under the same name is never replaced: that refuses.
        """
        size = os.path.getsize(dump_path)
        digest = sha256_file(dump_path)
        existing = self.by_sha256(digest, chip)
        if existing:
            os.unlink(dump_path)
            return existing, False
        now = datetime.datetime.now(datetime.timezone.utc)
        name = "%s-%s-%s.bin" % (now.strftime("%Y-%m-%d"), chip_tag(chip), digest[:12])
        path = os.path.join(self.directory, name)
        sidecar = path[:-4] + ".json"
        for taken in (path, sidecar):
            if os.path.exists(taken):
                raise CamhostError(
                    "%s already exists but is not a backup of this content; it was left "
                    "untouched. Move it away and run the backup again." % taken)
        meta = {"file": name, "sha256": digest, "chip": chip, "size": size,
                "flashrom_version": flashrom_version, "programmer": programmer,
                "time": now.isoformat(timespec="seconds"),
                "contents": describe_file(dump_path).kind}
        try:
            os.link(dump_path, path)  # unlike rename, never replaces an existing file
            with open(sidecar, "x") as f:
                json.dump(meta, f, indent=2, sort_keys=True)
                f.write("\n")
        except FileExistsError as e:
            raise CamhostError("%s appeared while saving the backup; it was left untouched. "
                               "Run the backup again." % e.filename)
        os.unlink(dump_path)
        return Record(path, meta), True

    def records(self):
        """All backups with a readable sidecar."""
        found = []
        if not os.path.isdir(self.directory):
            return found
        for name in os.listdir(self.directory):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.directory, name[:-5] + ".bin")
            try:
                with open(os.path.join(self.directory, name)) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and "sha256" in meta and os.path.exists(path):
                found.append(Record(path, meta))
        return found

    def by_sha256(self, digest, chip):
        """The backup of `chip` (flashrom's chip name) whose content has this sha256, or None."""
        for r in self.records():
            if r.meta["sha256"] == digest and of_chip(r, chip):
                return r
        return None

    def sidecar_of(self, path):
        """The Record for a backup file given by path, or None if it has no sidecar."""
        sidecar = os.path.splitext(path)[0] + ".json"
        try:
            with open(sidecar) as f:
                return Record(path, json.load(f))
        except (OSError, ValueError):
            return None


def check_intact(record, digest):
    """Refuse a backup whose content, as read (sha256 `digest`), no longer matches its sidecar."""
    if digest != record.meta.get("sha256"):
        raise CamhostError(
            "backup %s is damaged: its sha256 is %s, its sidecar recorded %s. Do not use it; "
            "pick another backup."
            % (record.path, digest[:12], record.meta.get("sha256", "?")[:12]))


# --- what a dump contains ---------------------------------------------------------------
def describe(blob):
    """Inspect a full-chip dump; Contents.kind is "OpenIPC", "stock" or "unrecognised"."""
    problems = []
    uboot = UBOOT_RE.search(layout.slice_of(blob, "boot"))
    uboot = uboot.group(0).decode("latin-1").strip() if uboot else None
    if not uboot:
        problems.append("no U-Boot version string in boot (0x000000-0x03ffff)")
    kernel = rootfs = None
    p = layout.partition("kernel")
    try:
        kernel = parse_uimage(layout.slice_of(blob, "kernel"), "kernel at 0x%06x" % p.offset)
    except FormatError as e:
        problems.append(str(e))
    p = layout.partition("rootfs")
    try:
        rootfs = parse_squashfs(layout.slice_of(blob, "rootfs"), "rootfs at 0x%06x" % p.offset)
    except FormatError as e:
        problems.append(str(e))
    if kernel and rootfs and uboot:
        kind = "OpenIPC"
    elif uboot:
        kind = "stock"
    else:
        kind = "unrecognised"
    return Contents(kind, uboot, kernel, rootfs, problems)


def describe_file(path):
    with open(path, "rb") as f:
        return describe(f.read())


def contents_lines(contents):
    """Human-readable lines for a Contents."""
    kinds = {"OpenIPC": "OpenIPC layout (U-Boot, uImage at 0x50000, squashfs at 0x250000)",
             "stock": "not the OpenIPC layout: probably the stock firmware",
             "unrecognised": "unrecognised: no U-Boot found (blank, scrambled or misread?)"}
    lines = ["contents: " + kinds[contents.kind]]
    if contents.uboot:
        lines.append("  boot:   %s" % contents.uboot)
    k = contents.kernel
    if k:
        lines.append("  kernel: uImage %r, %d bytes, %s compression, load 0x%08x"
                     % (k.name, k.size, k.comp, k.load))
    s = contents.rootfs
    if s:
        lines.append("  rootfs: squashfs %s, %s, %d bytes used" % (s.version, s.compression,
                                                                  s.bytes_used))
    lines.extend("  note:   " + p for p in contents.problems)
    return lines


def require_firmware(blob, what):
    """Refuse an image whose partitions do not hold U-Boot, a uImage and a squashfs."""
    if len(blob) != layout.FLASH_SIZE:
        raise CamhostError("%s is %d bytes; a full image for this camera's flash is exactly "
                           "%d bytes (8 MiB)." % (what, len(blob), layout.FLASH_SIZE))
    contents = describe(blob)
    if contents.problems:
        raise CamhostError("%s does not look like firmware for this camera; refusing to "
                           "write it:\n%s"
                           % (what, "\n".join("  - " + p for p in contents.problems)))
    return contents


def differing_partitions(old, new):
    """[(Partition, differing byte count)] for the partitions that differ."""
    found = []
    for p in layout.PARTITIONS:
        a, b = layout.slice_of(old, p.name), layout.slice_of(new, p.name)
        if a != b:
            found.append((p, count_differences(a, b)))
    return found


def count_differences(a, b):
    """Bytes that differ between two equal-length byte strings (fast for large blobs)."""
    if a == b:
        return 0
    # XOR as big integers, then count the non-zero bytes of the result
    x = (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")
    return len(x) - x.count(0)
