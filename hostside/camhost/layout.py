"""OpenIPC's 8 MB NOR partition layout for SigmaStar boards (board-notes).

mtdparts=NOR_FLASH:256k(boot),64k(env),2048k(kernel),5120k(rootfs),-(rootfs_data)
"""
from collections import namedtuple

from .errors import CamhostError

Partition = namedtuple("Partition", "name offset size")

FLASH_SIZE = 8 * 1024 * 1024
ERASE_BLOCK = 64 * 1024

PARTITIONS = (
    Partition("boot", 0x000000, 0x040000),
    Partition("env", 0x040000, 0x010000),
    Partition("kernel", 0x050000, 0x200000),
    Partition("rootfs", 0x250000, 0x500000),
    Partition("rootfs_data", 0x750000, 0x0B0000),
)
BY_NAME = {p.name: p for p in PARTITIONS}


def partition(name):
    """The partition called `name`; KeyError names the valid ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError("unknown partition %r (known: %s)" % (name, ", ".join(BY_NAME)))


def parse_partition_names(text):
    """The partition names in a comma-separated list, in flash order; refuses unknown ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise CamhostError("unknown partition(s) %s in --partitions; the partitions are: %s"
                           % (", ".join(unknown) or repr(text), ", ".join(BY_NAME)))
    return [p.name for p in PARTITIONS if p.name in names]


def read_image(path, what):
    """The bytes of a full-chip image file (`what` names it in errors): exactly FLASH_SIZE."""
    try:
        with open(path, "rb") as f:
            blob = f.read(FLASH_SIZE + 1)  # enough to tell a too-big file
    except OSError as e:
        raise CamhostError("cannot read %s %s: %s" % (what, path, e.strerror)) from None
    if len(blob) != FLASH_SIZE:
        size = "%d" % len(blob) if len(blob) < FLASH_SIZE else "more than %d" % FLASH_SIZE
        raise CamhostError("%s %s is %s bytes; a full image of this camera's flash is exactly "
                           "%d bytes (8 MiB)." % (what, path, size, FLASH_SIZE))
    return blob


def flashrom_layout():
    """The layout file text flashrom's -l takes (inclusive end addresses)."""
    return "".join("0x%08x:0x%08x %s\n" % (p.offset, p.offset + p.size - 1, p.name)
                   for p in PARTITIONS)


def slice_of(image, name):
    """The bytes of partition `name` within a full-chip image."""
    p = partition(name)
    return image[p.offset:p.offset + p.size]
