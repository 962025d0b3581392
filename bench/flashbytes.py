"""Section 5: what `camhost flash` writes to the chip for an update.

A chip (flashrom's dummy programmer emulating the 8 MiB MX25L6436 over a file)
holds image A: U-Boot, env, a uImage and an xz squashfs rootfs laid out like an
OpenIPC lite root with the real agent .mpy files in /usr/lib/micropython. Then,
each time on a fresh copy of that chip, `camhost flash` writes
  unchanged    A itself
  agent only   A with the agent rebuilt at a new VERSION (nothing else changed)
  full image   B: every partition's content new (U-Boot, env, kernel, rootfs)
The erase/program figures are camhost's own summary (flashrom's block log); the
chip file before and after is compared too, as a check on them.
"""
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

from common import ROOT, Skip, compile_agent
from table import figure, section

from camhost import layout, repack, tools

CHIP = "MX25L6436E/MX25L6445E/MX25L6465E/MX25L6473E/MX25L6473F"
SECTOR = 4096
SUMMARY_RE = re.compile(r"erased (\d+) block\(s\) \((\d+) bytes\), programmed (\d+) block\(s\) "
                        r"\((\d+) bytes\), skipped (\d+)")
NOTHING = "nothing to write"
# (path in the root, KiB) of incompressible stand-ins for an OpenIPC lite root's big files
ROOT_FILES = (("bin/busybox", 420), ("lib/libc.so", 560), ("lib/libgcc_s.so.1", 90),
              ("usr/bin/majestic", 1150), ("usr/bin/micropython", 330),
              ("usr/lib/libmpi.so", 780), ("usr/lib/sensors/imx335.bin", 150),
              ("usr/sbin/ssv6x5x-wifi.cfg", 4), ("usr/share/fonts/font.bin", 120),
              ("etc/majestic.yaml", 6), ("etc/init.d/S96camagent", 2))


def _put(image, name, data):
    p = layout.partition(name)
    if len(data) > p.size:
        raise Skip("bench image: %s is %d bytes, partition %s holds %d"
                   % (name, len(data), name, p.size))
    image[p.offset:p.offset + len(data)] = data


def build_image(work, seed, agent_version=None, scale=1.0):
    """A full 8 MiB image; `seed` picks the non-agent content, `scale` the filler sizes."""
    rnd = random.Random(seed)
    image = bytearray(b"\xff" * layout.FLASH_SIZE)
    boot = bytearray(rnd.randbytes(200 * 1024))
    banner = b"U-Boot 2015.01 (bench %d) OpenIPC\0" % seed
    boot[0x8000:0x8000 + len(banner)] = banner
    _put(image, "boot", bytes(boot))
    env = ("bootdelay=1\0seed=%d\0\0" % seed).encode().ljust(layout.partition("env").size - 4,
                                                              b"\0")
    _put(image, "env", struct.pack("<I", zlib.crc32(env)) + env)

    os.makedirs(work, exist_ok=True)
    payload = os.path.join(work, "zImage")
    with open(payload, "wb") as f:
        f.write(rnd.randbytes(int(1800 * 1024 * scale)))
    uimage = os.path.join(work, "uImage")
    subprocess.run(["mkimage", "-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none",
                    "-a", "0x20008000", "-e", "0x20008000", "-n", "Linux-4.9.84-bench%d" % seed,
                    "-d", payload, uimage], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, SOURCE_DATE_EPOCH="0"))  # no build-time stamp
    with open(uimage, "rb") as f:
        _put(image, "kernel", f.read())

    root = os.path.join(work, "root")
    shutil.rmtree(root, ignore_errors=True)
    for path, kib in ROOT_FILES:
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(random.Random("%s:%d" % (path, seed)).randbytes(int(kib * 1024 * scale)))
    compile_agent(os.path.join(root, "usr", "lib", "micropython"), version=agent_version)
    config = os.path.join(ROOT, "overlay", "etc", "camagent.json")
    if os.path.exists(config):
        shutil.copy(config, os.path.join(root, "etc", "camagent.json"))
    squashfs = os.path.join(work, "rootfs.squashfs")
    # as `camhost image repack` squashes it: the agent stored last
    _put(image, "rootfs", repack.squash(root, squashfs, ["-comp", "xz", "-mkfs-time", "0",
                                                         "-all-time", "0"],
                                        last=(repack.MPY_TARGET,)))
    path = os.path.join(work, "image.bin")
    with open(path, "wb") as f:
        f.write(image)
    return path


def camhost(args, cwd):
    proc = subprocess.run([sys.executable, "-m", "camhost"] + args, cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc.returncode, proc.stdout.decode(errors="replace")


def chip_diff(before, after):
    """(bytes, 4 KiB sectors, 64 KiB erase blocks) that differ between two chip files."""
    with open(before, "rb") as f:
        a = f.read()
    with open(after, "rb") as f:
        b = f.read()
    sectors = [i for i in range(0, len(a), SECTOR) if a[i:i + SECTOR] != b[i:i + SECTOR]]
    blocks = set(i // layout.ERASE_BLOCK for i in sectors)
    changed = sum(x != y for i in sectors for x, y in zip(a[i:i + SECTOR], b[i:i + SECTOR]))
    return changed, len(sectors), len(blocks)


def flash(work, base_image, image, backup_dir, label):
    chip = os.path.join(work, "chip-%s.bin" % label)
    shutil.copy(base_image, chip)
    opts = ["--programmer", "dummy:emulate=MX25L6436,image=%s" % chip, "--chip", CHIP,
            "--backup-dir", backup_dir]
    code, out = camhost(["flash", image] + opts, work)
    if code != 0:
        raise Skip("camhost flash (%s) exited %d: %s" % (label, code,
                                                         out.strip().splitlines()[-1]))
    m = SUMMARY_RE.search(out)
    if m:
        erased_blocks, erased, written_blocks, written, skipped = map(int, m.groups())
    elif NOTHING in out:
        erased_blocks = erased = written_blocks = written = skipped = 0
    else:
        raise Skip("camhost flash (%s) printed no summary that the bench understands: %s"
                   % (label, out.strip().splitlines()[-1]))
    changed, sectors, blocks = chip_diff(base_image, chip)
    return {"erased_blocks": erased_blocks, "erased_bytes": erased,
            "programmed_blocks": written_blocks, "programmed_bytes": written,
            "skipped_blocks": skipped, "chip_bytes_changed": changed,
            "chip_sectors_changed": sectors, "chip_64k_blocks_changed": blocks}


def run(scale=1.0):
    """`scale` < 1 shrinks the stand-in kernel and root files (for the smoke test)."""
    for tool in ("flashrom", "mkimage", "mksquashfs"):
        if not tools.which(tool):
            return section("Flash", skipped="%s is not installed" % tool), {}
    work = tempfile.mkdtemp(prefix="camagent-bench-flash-")
    try:
        base = build_image(os.path.join(work, "a"), 1, scale=scale)
        agent = build_image(os.path.join(work, "a2"), 1, "0.0-bench", scale)
        full = build_image(os.path.join(work, "b"), 2, "0.0-bench", scale)
        backups = os.path.join(work, "backups")
        chip = os.path.join(work, "chip-backup.bin")
        shutil.copy(base, chip)
        code, out = camhost(["backup", "--programmer", "dummy:emulate=MX25L6436,image=%s" % chip,
                             "--chip", CHIP, "--backup-dir", backups], work)
        if code != 0:
            raise Skip("camhost backup exited %d: %s" % (code, out.strip().splitlines()[-1]))
        cases = (("unchanged image", base), ("agent-only change", agent), ("full image", full))
        raw = {}
        for label, image in cases:
            raw[label] = flash(work, base, image, backups, label.split()[0])
    except Skip as e:
        return section("Flash (camhost flash, emulated chip)", skipped=str(e)), {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    full = raw["full image"]
    figures = []
    for label, r in raw.items():
        is_full = label == "full image"
        figures.append(figure("%s: bytes programmed" % label, r["programmed_bytes"], "B",
                              None if is_full else full["programmed_bytes"],
                              None if is_full else "full image"))
        figures.append(figure("%s: erase blocks erased" % label, r["erased_blocks"], "",
                              None if is_full else full["erased_blocks"],
                              None if is_full else "full image"))
    notes = ["%s: flashrom erased %d and programmed %d block(s) (%d bytes), skipped %d; chip "
             "file check: %d bytes in %d 4 KiB sectors (%d 64 KiB blocks) changed"
             % (label, r["erased_blocks"], r["programmed_blocks"], r["programmed_bytes"],
                r["skipped_blocks"], r["chip_bytes_changed"], r["chip_sectors_changed"],
                r["chip_64k_blocks_changed"]) for label, r in raw.items()]
    if full["erased_blocks"]:
        notes.append("flashrom's erase blocks here are %d bytes (the chip's smallest erase)"
                     % (full["erased_bytes"] // full["erased_blocks"]))
    notes.append("OpenIPC's U-Boot install procedure erases and writes kernel + rootfs "
                 "whole: %d bytes" % (layout.partition("kernel").size
                                      + layout.partition("rootfs").size))
    return section("Flash (camhost flash, emulated chip)", figures, notes), raw
