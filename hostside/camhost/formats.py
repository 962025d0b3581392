"""Image formats we inspect: U-Boot legacy uImage headers and squashfs superblocks.

Pure parsing with clear refusals, no external tools. Every check raises FormatError
with a sentence saying what is wrong with the input.
"""
import hashlib
import struct
import zlib
from collections import namedtuple

from .errors import CamhostError


class FormatError(CamhostError):
    pass


# --- U-Boot legacy image (include/image.h) -------------------------------------------
IH_MAGIC = 0x27051956
UIMAGE_HEADER = struct.Struct(">7I4B32s")  # 64 bytes, big-endian
IH_OS_LINUX = 5
IH_ARCH_ARM = 2
IH_TYPE_KERNEL = 2
ARCH_NAMES = {1: "Alpha", 2: "ARM", 3: "x86", 5: "MIPS", 6: "MIPS64", 7: "PowerPC",
              22: "ARM64", 24: "x86_64", 25: "Xtensa", 26: "RISC-V"}
COMP_NAMES = {0: "none", 1: "gzip", 2: "bzip2", 3: "lzma", 4: "lzo", 5: "lz4", 6: "zstd"}

UImage = namedtuple("UImage", "name size load entry data_crc arch os type comp total_size")


def parse_uimage(blob, what="uImage"):
    """Validate a legacy uImage (magic, header CRC, data CRC, ARM Linux kernel).

    `blob` may be longer than the image (a whole partition): trailing bytes are ignored.
    """
    if len(blob) < UIMAGE_HEADER.size:
        raise FormatError("%s is %d bytes, shorter than a 64-byte uImage header" % (what, len(blob)))
    (magic, hcrc, _time, size, load, entry, dcrc,
     os_, arch, type_, comp, name) = UIMAGE_HEADER.unpack_from(blob)
    if magic != IH_MAGIC:
        raise FormatError("%s has no uImage magic (found 0x%08x, expected 0x%08x): "
                          "not a U-Boot kernel image" % (what, magic, IH_MAGIC))
    header = bytearray(blob[:UIMAGE_HEADER.size])
    header[4:8] = b"\0\0\0\0"
    if zlib.crc32(header) != hcrc:
        raise FormatError("%s uImage header CRC mismatch: the header is corrupt" % what)
    end = UIMAGE_HEADER.size + size
    if len(blob) < end:
        raise FormatError("%s is truncated: header says %d data bytes, only %d present"
                          % (what, size, len(blob) - UIMAGE_HEADER.size))
    if zlib.crc32(blob[UIMAGE_HEADER.size:end]) != dcrc:
        raise FormatError("%s uImage data CRC mismatch: the kernel data is corrupt" % what)
    if arch != IH_ARCH_ARM:
        raise FormatError("%s is built for %s, not ARM: wrong firmware for this camera"
                          % (what, ARCH_NAMES.get(arch, "architecture %d" % arch)))
    if os_ != IH_OS_LINUX or type_ != IH_TYPE_KERNEL:
        raise FormatError("%s is not a Linux kernel image (os %d, type %d)" % (what, os_, type_))
    return UImage(name.rstrip(b"\0").decode("latin-1"), size, load, entry, dcrc,
                  arch, os_, type_, COMP_NAMES.get(comp, str(comp)), end)


# --- squashfs 4.0 superblock (little-endian, 96 bytes) --------------------------------
SQUASHFS_MAGIC = 0x73717368  # "hsqs"
SQUASHFS_SUPER = struct.Struct("<5I6H4Q")  # the fields up to bytes_used
SQUASHFS_COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}

Squashfs = namedtuple("Squashfs", "inodes block_size compression version bytes_used")


def parse_squashfs(blob, what="rootfs"):
    """Validate a squashfs 4.0 superblock; return its compression and block size."""
    need = SQUASHFS_SUPER.size + 16
    if len(blob) < need:
        raise FormatError("%s is %d bytes, too short for a squashfs superblock" % (what, len(blob)))
    (magic, inodes, _mtime, block_size, _frags, comp, block_log, _flags, _ids,
     major, minor, _root, bytes_used, _id_tab, _xattr) = SQUASHFS_SUPER.unpack_from(blob)
    if magic != SQUASHFS_MAGIC:
        raise FormatError("%s is not a squashfs filesystem (magic 0x%08x, expected 'hsqs')"
                          % (what, magic))
    if (major, minor) != (4, 0):
        raise FormatError("%s is squashfs %d.%d; only 4.0 is supported" % (what, major, minor))
    if block_size != 1 << block_log:
        raise FormatError("%s squashfs superblock is corrupt (block size %d, log %d)"
                          % (what, block_size, block_log))
    if comp not in SQUASHFS_COMPRESSORS:
        raise FormatError("%s uses unknown squashfs compression id %d" % (what, comp))
    if bytes_used > len(blob):
        raise FormatError("%s is truncated: superblock says %d bytes, file has %d"
                          % (what, bytes_used, len(blob)))
    return Squashfs(inodes, block_size, SQUASHFS_COMPRESSORS[comp], "%d.%d" % (major, minor),
                    bytes_used)


def sha256_file(path):
    """Hex sha256 of a file, read in 1 MiB blocks (images are 8 MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
