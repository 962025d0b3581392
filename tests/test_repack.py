"""`camhost image repack` on synthetic OpenIPC releases built here with the real tools.

A release is a kernel blob wrapped by mkimage and a small rootfs squashed with
`mksquashfs -comp xz`, packed as OpenIPC packs it (uImage.<soc>, rootfs.squashfs.<soc>
and their .md5sum files in a .tgz). The MicroPython "binary" is a small ARM ELF
crafted here with the program headers the checks read.
"""
import hashlib
import io
import json
import os
import random
import re
import shutil
import struct
import subprocess
import tarfile

import pytest

from camhost import backups, cli, layout, repack, slim
from camhost.errors import CamhostError
from camhost.formats import parse_squashfs, parse_uimage
from test_ubootenv import BACKUP_VARS

BOARD = "imou-ranger-rc-4mp"
SOC = "ssc337"
CAP = layout.partition("rootfs").size
MUSL = "/lib/ld-musl-armhf.so.1"
# mksquashfs options of the synthetic rootfs: not mksquashfs's defaults, so that
# keeping them is visible.
SQUASH_OPTS = ["-comp", "xz", "-b", "65536", "-Xbcj", "arm"]


def noise(n, seed):
    return random.Random(seed).randbytes(n)


def arm_elf(path, size=60000, interp=MUSL, needed=("libc.so",), machine=40, elf_class=1,
            banner=b"MicroPython v1.22.0 on 2024-01-01; linux [GCC 13.2.0] version"):
    """A position-independent 32-bit ELF executable: header, PT_LOAD, PT_INTERP,
    PT_DYNAMIC (DT_NEEDED + DT_STRTAB), the MicroPython banner, incompressible filler."""
    phoff, phnum = 52, 3
    at = phoff + 32 * phnum
    interp_b = interp.encode() + b"\0"
    interp_at, at = at, at + len(interp_b)
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in needed)
    strtab_at, at = at, at + len(strtab)
    names, pos = [], 1
    for n in needed:
        names.append(pos)
        pos += len(n) + 1
    dyn = b"".join(struct.pack("<iI", 1, off) for off in names)
    dyn += struct.pack("<iI", 5, strtab_at) + struct.pack("<iI", 0, 0)
    dyn_at, at = at, at + len(dyn)
    body = interp_b + strtab + dyn + banner
    total = max(size, at + len(banner))
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIIIIIHHHHHH", 3, machine, 1, 0, phoff, 0, 0x05000400,
                                 52, 32, phnum, 40, 0, 0)
    phdrs = struct.pack("<8I", 1, 0, 0, 0, total, total, 5, 0x1000)
    phdrs += struct.pack("<8I", 3, interp_at, interp_at, interp_at, len(interp_b),
                         len(interp_b), 4, 1)
    phdrs += struct.pack("<8I", 2, dyn_at, dyn_at, dyn_at, len(dyn), len(dyn), 6, 4)
    blob = header + phdrs + body
    blob += noise(total - len(blob), len(blob))
    with open(path, "wb") as f:
        f.write(blob)
    return path


VERMAGIC = "4.9.84 SMP mod_unload ARMv7 p2v8 "


def kernel_module(path, name, vermagic=VERMAGIC, depends="", size=2000, seed=1, machine=40):
    """A 32-bit ARM relocatable ELF as kbuild writes a .ko: .text (incompressible
    filler), .modinfo (key=value strings: depends, name, vermagic) and .shstrtab."""
    text = noise(size, seed)
    modinfo = b"".join(s.encode() + b"\0" for s in (
        "license=GPL", "description=%s for the tests" % name, "depends=" + depends,
        "name=" + name, "vermagic=" + vermagic))
    names = b"\0.text\0.modinfo\0.shstrtab\0"
    text_at, modinfo_at = 52, 52 + len(text)
    names_at = modinfo_at + len(modinfo)
    shoff = (names_at + len(names) + 3) & ~3

    def section(name, kind, flags, offset, size):
        return struct.pack("<10I", name, kind, flags, 0, offset, size, 0, 0, 1, 0)
    headers = (section(0, 0, 0, 0, 0) + section(1, 1, 6, text_at, len(text))
               + section(7, 1, 2, modinfo_at, len(modinfo))
               + section(16, 3, 0, names_at, len(names)))
    header = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9) + struct.pack(
        "<HHIIIIIHHHHHH", 1, machine, 1, 0, 0, shoff, 0x05000000, 52, 0, 0, 40, 4, 3)
    blob = header + text + modinfo + names
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(blob + b"\0" * (shoff - len(blob)) + headers)
    return path


# The fixture firmware's modules.dep, as depmod writes it
FIRMWARE_DEP = (b"kernel/fs/nfs/nfs.ko: kernel/net/sunrpc/sunrpc.ko\n"
                b"kernel/net/sunrpc/sunrpc.ko:\n"
                b"kernel/fs/fat/vfat.ko:\n"
                b"sigmastar/sensor_sc3336_mipi.ko:\n"
                b"sigmastar/sensor_imx335_mipi.ko:\n")

# What /etc/wireless/usb looks like in OpenIPC: a case per wlandev name.
WIRELESS_USB = b"""#!/bin/sh
if [ "$1" = "ssv6158-ssc335-ipc" ]; then
\tset_gpio 61 0
\tmodprobe ssv6158 stacfgpath=/usr/share/wifi/ssv6158-wifi.cfg
\texit 0
fi
exit 1
"""


def wifi_modules(directory, driver="ssv6155", vermagic=VERMAGIC, driver_size=3000,
                 mac80211_size=2500):
    """A --wifi-modules directory as `make image` leaves it: the driver, mac80211 (cfg80211
    is built into OpenIPC's kernel), ccm, and a module the wifi does not need."""
    top = os.path.join(str(directory), "lib", "modules", "4.9.84")
    kernel_module(os.path.join(top, "extra", driver + ".ko"), driver, vermagic,
                  depends="mac80211", size=driver_size, seed=21)
    kernel_module(os.path.join(top, "kernel/net/mac80211/mac80211.ko"), "mac80211", vermagic,
                  size=mac80211_size, seed=22)
    kernel_module(os.path.join(top, "kernel/crypto/ccm.ko"), "ccm", vermagic, seed=23)
    kernel_module(os.path.join(top, "kernel/drivers/usb/storage/usb-storage.ko"),
                  "usb_storage", vermagic, seed=24)
    return directory


def build_rootfs(tmp, out, filler=200000, seed=1, opts=SQUASH_OPTS, extra=None, modules=None):
    """A small OpenIPC-like rootfs with the things slimming removes, a setuid binary, a
    non-root owner and a device node, squashed with `opts`."""
    root = tmp / ("tree-%d" % seed)
    if root.exists():
        shutil.rmtree(root)
    files = {
        "bin/busybox": noise(60000, seed),
        "lib/ld-musl-armhf.so.1": noise(30000, seed + 1),
        "etc/init.d/S40network": b"#!/bin/sh\necho network\n",
        "etc/wireless/usb": WIRELESS_USB,
        "etc/sensors/sc3336.bin": noise(9000, seed + 11),
        "etc/sensors/imx335.bin": noise(8000, seed + 12),
        "lib/modules/4.9.84/modules.dep": FIRMWARE_DEP,
        "etc/shadow": b"root::0:0:99999:7:::\n",
        "usr/bin/majestic": noise(filler, seed + 2),
        "var/www/index.html": noise(90000, seed + 3),
        "var/www/cgi-bin/status.cgi": noise(60000, seed + 4),
        "usr/bin/haserl": noise(20000, seed + 5),
        "lib/modules/4.9.84/sigmastar/sensor_sc3336_mipi.ko": noise(5000, seed + 13),
        "lib/modules/4.9.84/sigmastar/sensor_imx335_mipi.ko": noise(5000, seed + 14),
        "usr/sbin/vtund": noise(25000, seed + 9),
        "home/user/notes.txt": b"hello\n",
        # sorts after usr/lib/micropython, where the agent goes
        "usr/share/fonts/osd.bin": noise(40000, seed + 10),
    }
    files.update(extra or {})
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    extra_modules, modules = modules, root / "lib/modules/4.9.84/kernel"
    kernel_module(modules / "fs/nfs/nfs.ko", "nfs", depends="sunrpc", size=70000, seed=seed + 6)
    kernel_module(modules / "net/sunrpc/sunrpc.ko", "sunrpc", size=50000, seed=seed + 7)
    kernel_module(modules / "fs/fat/vfat.ko", "vfat", size=10000, seed=seed + 8)
    for rel, (name, depends) in (extra_modules or {}).items():
        kernel_module(root / rel, name, depends=depends)
    os.chmod(root / "etc/wireless/usb", 0o755)
    (root / "dev").mkdir()
    for link, target in (("bin/sh", "busybox"), ("bin/su", "busybox"),
                         ("sbin/start-stop-daemon", "../bin/busybox"),
                         ("usr/bin/logger", "../../bin/busybox"),
                         ("lib/libc.so", "ld-musl-armhf.so.1")):
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / link)
    # Owners and modes as a Buildroot rootfs has them, whoever runs the test.
    pseudo = {}
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            rel = os.path.relpath(os.path.join(d, n), root)
            mode = os.lstat(os.path.join(d, n)).st_mode & 0o7777
            pseudo[rel] = "%s m %o 0 0" % (rel, mode)
    pseudo.update({"etc/shadow": "etc/shadow m 600 0 0",
                   "bin/busybox": "bin/busybox m 4755 0 0",
                   "home/user": "home/user m 700 1000 1000",
                   "home/user/notes.txt": "home/user/notes.txt m 640 1000 1000",
                   "dev/console": "dev/console c 600 0 0 5 1"})
    pf = tmp / ("pseudo-%d" % seed)
    pf.write_text("\n".join(pseudo.values()) + "\n")
    argv = ["mksquashfs", str(root), str(out), "-noappend", "-quiet", "-no-progress",
            "-root-uid", "0", "-root-gid", "0", "-pf", str(pf)] + opts
    subprocess.run(argv, check=True)
    return out


def build_uimage(tmp, out, size=1500000, arch="arm", seed=5):
    blob = tmp / ("kernel-%d-%s.bin" % (size, arch))
    blob.write_bytes(noise(size, seed))
    subprocess.run(["mkimage", "-A", arch, "-O", "linux", "-T", "kernel", "-C", "none",
                    "-a", "0x21000000", "-e", "0x21000000", "-n", "Linux-4.9.84",
                    "-d", str(blob), str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def pack_release(out, kernel, rootfs, soc=SOC, md5=True):
    with tarfile.open(out, "w:gz") as tar:
        for name, path in (("uImage." + soc, kernel), ("rootfs.squashfs." + soc, rootfs)):
            tar.add(str(path), arcname=name)
            if md5:
                digest = hashlib.md5(open(path, "rb").read()).hexdigest()
                data = ("%s  %s\n" % (digest, name)).encode()
                info = tarfile.TarInfo(name + ".md5sum")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out


def backup_image(path):
    """A camera backup: U-Boot in boot, its environment (made by mkenvimage, naming the
    camera's sensor), old firmware elsewhere."""
    image = bytearray(noise(layout.FLASH_SIZE, 99))
    boot = b"\x00U-Boot 2015.01 (OpenIPC)\x00" + noise(150000, 98)
    image[0:len(boot)] = boot
    image[len(boot):layout.partition("env").offset] = b"\xff" * (
        layout.partition("env").offset - len(boot))
    env = layout.partition("env")
    text = path.parent / (path.name + ".env.txt")
    text.write_text("".join("%s=%s\n" % kv for kv in BACKUP_VARS))
    subprocess.run(["mkenvimage", "-s", str(env.size), "-o", str(text) + ".bin", str(text)],
                   check=True)
    image[env.offset:env.offset + env.size] = open(str(text) + ".bin", "rb").read()
    path.write_bytes(bytes(image))
    return path


def ls(image_path):
    """{path: (kind+perms, owner, size or device)} from `unsquashfs -lln`."""
    out = subprocess.run(["unsquashfs", "-lln", str(image_path)], check=True,
                         stdout=subprocess.PIPE).stdout.decode()
    entries = {}
    for line in out.splitlines():
        parts = re.sub(r",\s+", ",", line).split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("squashfs-root"):
            continue
        path = parts[5][len("squashfs-root"):].split(" -> ")[0].lstrip("/")
        entries[path] = (parts[0], parts[1], parts[2].replace(" ", ""))
    return entries


def camhost(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("release")
    rootfs = build_rootfs(tmp, tmp / "rootfs.squashfs")
    kernel = build_uimage(tmp, tmp / "uImage")
    return {"tmp": tmp, "rootfs": rootfs, "kernel": kernel,
            "tgz": pack_release(tmp / "openipc.ssc337-nor-lite.tgz", kernel, rootfs),
            "micropython": arm_elf(tmp / "micropython"),
            "backup": backup_image(tmp / "backup.bin"),
            "wifi": wifi_modules(tmp / "wifi-modules")}


@pytest.fixture(scope="module")
def repacked(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "camagent.bin"
    code = camhost("image", "repack", "--board", BOARD, "--firmware", release["tgz"],
                   "--micropython", release["micropython"], "--backup", release["backup"],
                   "--wifi-modules", release["wifi"], "--out", out)
    assert code == 0
    image = out.read_bytes()
    rootfs = out.parent / "new.squashfs"
    rootfs.write_bytes(layout.slice_of(image, "rootfs"))
    extracted = out.parent / "x"
    unsquash_as_this_user(rootfs, extracted)
    manifest = json.loads((out.parent / "camagent.manifest.json").read_text())
    return {"out": out, "image": image, "rootfs": rootfs, "x": extracted,
            "manifest": manifest}


def unsquash_as_this_user(rootfs, dest):
    """unsquashfs, where a normal user cannot make the device nodes (/dev/console): those
    failures, and only those, are expected without root."""
    proc = subprocess.run(["unsquashfs", "-n", "-d", str(dest), str(rootfs)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode:
        other = [l for l in proc.stdout.splitlines() if "could not create" in l
                 and "because you're not superuser" not in l]
        assert os.geteuid() != 0 and not other, proc.stdout


def test_partitions_sit_at_the_documented_offsets(release, repacked):
    image = repacked["image"]
    assert len(image) == 8 * 1024 * 1024
    backup = release["backup"].read_bytes()
    assert layout.slice_of(image, "boot") == layout.slice_of(backup, "boot")
    assert layout.slice_of(image, "env") == layout.slice_of(backup, "env")
    uimage = release["kernel"].read_bytes()
    kernel = image[0x050000:0x250000]
    assert kernel[:len(uimage)] == uimage
    assert set(kernel[len(uimage):]) == {0xFF}
    assert parse_uimage(kernel).total_size == len(uimage)
    sq = parse_squashfs(image[0x250000:0x750000])
    assert set(image[0x250000 + sq.bytes_used + 4096:0x750000]) == {0xFF}
    assert set(image[0x750000:]) == {0xFF}          # rootfs_data: erased, jffs2 formats it


def test_rootfs_gets_the_agent_scripts_config_and_interpreter(release, repacked, tmp_path):
    x = repacked["x"]
    compiled = repack.compile_mpy(str(tmp_path / "mpy"))
    modules = {c.target for c in compiled}
    assert "camagent/__main__.mpy" in modules and "umqtt/simple.mpy" in modules
    for c in compiled:
        shipped = x / "usr/lib/micropython" / c.target
        assert shipped.read_bytes() == (tmp_path / "mpy" / c.target).read_bytes()
        assert shipped.read_bytes()[:2] == b"M\x06"         # .mpy version 6 (1.22)
    assert (x / "usr/bin/micropython").read_bytes() == release["micropython"].read_bytes()
    config = json.loads((x / "etc/camagent.json").read_text())
    assert config["board"] == BOARD and config["mqtt"]["host"] == "edit-me.invalid"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for rel, src in (("etc/init.d/S96camagent", "buildroot-package/package/camagent/S96camagent"),
                     ("etc/init.d/S34boardpower", "overlay/etc/init.d/S34boardpower")):
        assert (x / rel).read_bytes() == open(os.path.join(repo, src), "rb").read()
    listing = ls(repacked["rootfs"])
    assert listing["etc/init.d/S96camagent"][:2] == ("-rwxr-xr-x", "0/0")
    assert listing["etc/init.d/S34boardpower"][:2] == ("-rwxr-xr-x", "0/0")
    assert listing["usr/bin/micropython"][:2] == ("-rwxr-xr-x", "0/0")
    assert listing["etc/camagent.json"][:2] == ("-rw-r--r--", "0/0")
    assert listing["usr/lib/micropython/camagent/stepper.mpy"][:2] == ("-rw-r--r--", "0/0")


def test_compression_block_size_owners_and_devices_are_kept(release, repacked):
    old = release["rootfs"].read_bytes()
    new = repacked["rootfs"].read_bytes()
    new = new[:parse_squashfs(new).bytes_used]
    assert (parse_squashfs(new).compression, parse_squashfs(new).block_size) == ("xz", 65536)
    assert repack.squashfs_args(old) == repack.squashfs_args(new + b"\0" * (-len(new) % 4096))
    assert "-Xbcj" in repack.squashfs_args(old) and "arm" in repack.squashfs_args(old)
    before, after = ls(release["rootfs"]), ls(repacked["rootfs"])
    assert after["dev/console"][0].startswith("crw-------") and after["dev/console"][2] == "5,1"
    assert after["bin/busybox"][:2] == ("-rwsr-xr-x", "0/0")
    assert after["home/user"][:2] == ("drwx------", "1000/1000")
    assert after["etc/shadow"][:2] == ("-rw-------", "0/0")
    kept = {p: v for p, v in before.items() if not any(
        p == g or p.startswith(g + "/") for g in ("lib/modules/4.9.84/kernel/fs/nfs",
                                                  "lib/modules/4.9.84/kernel/net/sunrpc",
                                                  "usr/sbin/vtund", "etc/sensors/imx335.bin",
                                                  "lib/modules/4.9.84/sigmastar/"
                                                  "sensor_imx335_mipi.ko"))}
    changed = {p for p in kept if p and after.get(p, (None,))[:2] != kept[p][:2]}
    # only directories that gained or lost entries may differ, and only in size
    assert {p for p in changed if not kept[p][0].startswith("d")} == set()


def test_slimming_profile_removes_its_items_and_reports_them(repacked):
    x = repacked["x"]
    for gone in ("lib/modules/4.9.84/kernel/fs/nfs", "lib/modules/4.9.84/kernel/net/sunrpc",
                 "usr/sbin/vtund", "etc/sensors/imx335.bin",
                 "lib/modules/4.9.84/sigmastar/sensor_imx335_mipi.ko"):
        assert not os.path.lexists(x / gone), gone
    # the web UI is kept by default, and so are this camera's own sensor's files
    # (sensor=sc3336 in the backup's environment)
    for kept in ("var/www/index.html", "usr/bin/haserl", "etc/sensors/sc3336.bin",
                 "lib/modules/4.9.84/sigmastar/sensor_sc3336_mipi.ko",
                 "lib/modules/4.9.84/kernel/fs/fat/vfat.ko"):
        assert os.path.exists(x / kept), kept
    changes = {c["what"].replace("slim: ", ""): c for c in repacked["manifest"]["changes"]}
    assert "webui" not in changes
    assert changes["other-sensors"]["change"] == "removed"
    assert changes["other-sensors"]["bytes"] == 8000 + 5000
    assert changes["other-sensors"]["squashed_bytes"] > 12000   # incompressible: ~raw size
    assert changes["nfs"]["files"] == 2
    assert repacked["manifest"]["sensor"] == "sc3336"
    added = [c for c in repacked["manifest"]["changes"] if c["change"] == "added"]
    assert added[0]["what"].startswith("wifi: ssv6155.ko")
    assert [c["bytes"] for c in added if c["what"].startswith("interpreter")] == [60000]


def test_manifest_describes_every_partition(repacked):
    m = repacked["manifest"]
    image = repacked["image"]
    assert m["board"] == BOARD and m["complete"] is True
    assert backups.describe(image).problems == []       # what `camhost flash` checks
    assert m["image"]["sha256"] == hashlib.sha256(image).hexdigest()
    assert [p["name"] for p in m["partitions"]] == [p.name for p in layout.PARTITIONS]
    for p in m["partitions"]:
        part = layout.partition(p["name"])
        assert (p["offset"], p["size"]) == (part.offset, part.size)
        assert p["used"] + p["free"] == p["size"]
        assert p["sha256"] == hashlib.sha256(layout.slice_of(image, p["name"])).hexdigest()
    rootfs = next(p for p in m["partitions"] if p["name"] == "rootfs")
    assert rootfs["used"] == len(repacked["rootfs"].read_bytes().rstrip(b"\xff")) + \
        (-len(repacked["rootfs"].read_bytes().rstrip(b"\xff")) % 4096)
    assert m["rootfs_format"]["compression"] == "xz"


def test_an_agent_update_rewrites_only_the_tail_of_the_rootfs(release, repacked, tmp_path,
                                                             monkeypatch):
    # the same release repacked with the agent at another VERSION
    agent = tmp_path / "camagent"
    shutil.copytree(repack.AGENT_DIR, agent, ignore=shutil.ignore_patterns("__pycache__"))
    init = agent / "__init__.py"
    init.write_text(re.sub(r'VERSION = "[^"]*"', 'VERSION = "9.9.9-update"', init.read_text()))
    monkeypatch.setattr(repack, "AGENT_DIR", str(agent))
    out = tmp_path / "update.bin"
    assert camhost("image", "repack", "--board", BOARD, "--firmware", release["tgz"],
                   "--micropython", release["micropython"], "--backup", release["backup"],
                   "--wifi-modules", release["wifi"], "--out", out) == 0
    old = repacked["rootfs"].read_bytes()
    new = layout.slice_of(out.read_bytes(), "rootfs")
    # past the superblock and compressor options (sizes, table offsets, build time)
    first = next(i for i, (a, b) in enumerate(zip(old, new)) if i >= 0x80 and a != b)
    # the font sorts after usr/lib/micropython, yet its data (stored verbatim: noise does
    # not compress) is ahead of the change, at the same place in both images
    font = (repacked["x"] / "usr/share/fonts/osd.bin").read_bytes()[-4096:]
    assert old.find(font) == new.find(font) != -1
    assert old.find(font) + len(font) <= first


def test_budget_command_reads_the_repacked_image(repacked, capsys):
    assert camhost("image", "budget", repacked["out"]) == 0
    out = capsys.readouterr().out
    assert "rootfs" in out and "squashfs, xz, 65536-byte blocks" in out


def test_budget_command_reads_a_stock_backup(release, capsys):
    # U-Boot, then no uImage at 0x50000 and no squashfs at 0x250000
    assert camhost("image", "budget", release["backup"]) == 0
    out = capsys.readouterr().out
    assert "contents: not the OpenIPC layout" in out and "boot:   U-Boot 2015.01" in out
    assert re.search(r"note: +kernel at 0x050000 has no uImage magic", out)
    assert re.search(r"kernel +0x050000 +2,097,152 +2,097,152 +0 +content up to", out)


# --- bad inputs: refused, with what is wrong, and nothing written --------------------------

def repack_error(release, tmp_path, capsys, **kw):
    argv = {"--board": BOARD, "--firmware": release["tgz"],
            "--micropython": release["micropython"], "--out": tmp_path / "o.bin"}
    argv.update(kw)
    code = camhost("image", "repack", *[x for kv in argv.items() for x in kv])
    assert code == 1
    assert not (tmp_path / "o.bin").exists()
    return capsys.readouterr().err


def test_oversize_kernel_refused_with_the_overflow(release, tmp_path, capsys):
    kernel = build_uimage(tmp_path, tmp_path / "big.uImage", size=2 * 1024 * 1024)
    tgz = pack_release(tmp_path / "r.tgz", kernel, release["rootfs"])
    err = repack_error(release, tmp_path, capsys, **{"--firmware": tgz})
    over = os.path.getsize(kernel) - 2 * 1024 * 1024
    assert "kernel does not fit" in err and "{:,} bytes over".format(over) in err


def corrupt(path, offset, out):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("damage, message", [
    ("header", "header CRC mismatch"),
    ("data", "data CRC mismatch"),
    ("truncated", "is truncated"),
    ("mips", "built for MIPS, not ARM"),
])
def test_bad_kernels_refused(release, tmp_path, capsys, damage, message):
    kernel = release["kernel"]
    if damage == "header":
        bad = corrupt(kernel, 40, tmp_path / "k")
    elif damage == "data":
        bad = corrupt(kernel, 5000, tmp_path / "k")
    elif damage == "truncated":
        bad = tmp_path / "k"
        bad.write_bytes(kernel.read_bytes()[:100000])
    else:
        bad = build_uimage(tmp_path, tmp_path / "k", arch="mips")
    tgz = pack_release(tmp_path / "r.tgz", bad, release["rootfs"])
    assert message in repack_error(release, tmp_path, capsys, **{"--firmware": tgz})


def test_non_squashfs_rootfs_refused(release, tmp_path, capsys):
    bad = tmp_path / "rootfs"
    bad.write_bytes(noise(200000, 3))
    tgz = pack_release(tmp_path / "r.tgz", release["kernel"], bad)
    assert "not a squashfs filesystem" in repack_error(release, tmp_path, capsys,
                                                       **{"--firmware": tgz})


def test_truncated_squashfs_refused(release, tmp_path, capsys):
    bad = tmp_path / "rootfs"
    bad.write_bytes(release["rootfs"].read_bytes()[:50000])
    tgz = pack_release(tmp_path / "r.tgz", release["kernel"], bad)
    assert "is truncated" in repack_error(release, tmp_path, capsys, **{"--firmware": tgz})


def test_release_for_another_soc_refused(release, tmp_path, capsys):
    tgz = pack_release(tmp_path / "r.tgz", release["kernel"], release["rootfs"], soc="ssc335")
    err = repack_error(release, tmp_path, capsys, **{"--firmware": tgz})
    assert "is for ssc335" in err and "needs the ssc337 release" in err


def test_md5_mismatch_refused(release, tmp_path, capsys):
    tgz = tmp_path / "r.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(str(release["kernel"]), arcname="uImage.ssc337")
        tar.add(str(release["rootfs"]), arcname="rootfs.squashfs.ssc337")
        data = b"0" * 32 + b"  uImage.ssc337\n"
        info = tarfile.TarInfo("uImage.ssc337.md5sum")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert "does not match its .md5sum" in repack_error(release, tmp_path, capsys,
                                                        **{"--firmware": tgz})


def test_firmware_defaults_to_the_boards_release(release, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = camhost("image", "repack", "--board", "imou-ranger-rc-3mp",
                   "--micropython", release["micropython"], "--out", tmp_path / "o.bin")
    assert code == 1
    assert "--firmware openipc.ssc333-nor-lite.tgz not found" in capsys.readouterr().err


def test_not_an_archive_refused(release, tmp_path, capsys):
    bad = tmp_path / "r.tgz"
    bad.write_bytes(noise(5000, 4))
    assert "not a readable OpenIPC release archive" in repack_error(
        release, tmp_path, capsys, **{"--firmware": bad})


@pytest.mark.parametrize("make, message", [
    (lambda p: shutil.copyfile(os.path.realpath("/bin/sh"), p),
     "is built for x86-64 (ELF e_machine 62), not ARM (40)"),
    (lambda p: p.write_text("#!/bin/sh\necho hi\n"), "is a script"),
    (lambda p: p.write_bytes(noise(1000, 1)), "is not an ELF executable"),
    (lambda p: arm_elf(p, elf_class=2), "is a 64-bit program"),
    (lambda p: arm_elf(p, interp="/lib/ld-linux-armhf.so.3"),
     "needs the loader /lib/ld-linux-armhf.so.3, which this firmware does not have "
     "(it has /lib/ld-musl-armhf.so.1)"),
    (lambda p: arm_elf(p, needed=("libc.so", "libffi.so.8")),
     "needs libffi.so.8, missing from this firmware"),
    (lambda p: arm_elf(p, banner=b"MicroPython v1.20.0 on 2023-04-26"),
     "is MicroPython 1.20.0; the agent is compiled for MicroPython 1.22"),
    (lambda p: arm_elf(p, banner=b"Lua 5.4"), "does not look like MicroPython"),
])
def test_bad_micropython_refused(release, tmp_path, capsys, make, message):
    path = tmp_path / "mp"
    make(path)
    assert message in repack_error(release, tmp_path, capsys, **{"--micropython": path})


def test_bootloader_must_be_u_boot_and_fit(release, tmp_path, capsys):
    junk = tmp_path / "u-boot.bin"
    junk.write_bytes(noise(100000, 8))
    assert "no U-Boot version string" in repack_error(release, tmp_path, capsys,
                                                      **{"--bootloader": junk})
    # what `camhost flash` looks for is "U-Boot YYYY.MM", not any mention of U-Boot
    spl = tmp_path / "spl.bin"
    spl.write_bytes(b"\0U-Boot SPL loaded\0" + noise(100000, 8))
    assert "no U-Boot version string" in repack_error(release, tmp_path, capsys,
                                                      **{"--bootloader": spl})
    big = tmp_path / "big-u-boot.bin"
    big.write_bytes(b"U-Boot 2015.01" + noise(300000, 9))
    err = repack_error(release, tmp_path, capsys, **{"--bootloader": big})
    assert "{:,} over the 262,144-byte boot partition".format(300014 - 262144) in err


def test_backup_must_have_the_u_boot_version_flash_looks_for(release, tmp_path, capsys):
    image = bytearray(release["backup"].read_bytes())
    boot = layout.partition("boot")
    image[:boot.size] = b"\0U-Boot SPL loaded\0".ljust(boot.size, b"\xff")
    bad = tmp_path / "spl-backup.bin"
    bad.write_bytes(bytes(image))
    err = repack_error(release, tmp_path, capsys, **{"--backup": bad})
    assert "--backup %s has no U-Boot version string (U-Boot YYYY.MM)" % bad in err


@pytest.mark.parametrize("through", ["same path", "linked directory"])
def test_output_must_not_be_an_input(release, tmp_path, capsys, through):
    copy = tmp_path / "fw.tgz"
    shutil.copyfile(release["tgz"], copy)
    out = copy
    if through == "linked directory":       # another path to the same file
        os.symlink(tmp_path, tmp_path / "link")
        out = tmp_path / "link" / "fw.tgz"
    code = camhost("image", "repack", "--board", BOARD, "--firmware", copy,
                   "--micropython", release["micropython"], "--out", out)
    assert code == 1 and "is also an input" in capsys.readouterr().err
    assert copy.read_bytes() == release["tgz"].read_bytes()


def test_gzip_rootfs_keeps_its_level_and_window(tmp_path):
    sq = build_rootfs(tmp_path, tmp_path / "gz.sq", filler=1000, opts=[
        "-comp", "gzip", "-Xcompression-level", "5", "-Xwindow-size", "12", "-b", "262144"])
    args = repack.squashfs_args(sq.read_bytes())
    assert args[:4] == ["-comp", "gzip", "-b", "262144"]
    assert args[4:8] == ["-Xcompression-level", "5", "-Xwindow-size", "12"]


def test_mpy_command_compiles_every_agent_module(tmp_path, capsys):
    out = tmp_path / "mpy"
    out.mkdir()
    (out / "unrelated.bin").write_bytes(noise(200000, 6))   # not measured with the agent
    assert camhost("image", "mpy", "--out", out) == 0
    text = capsys.readouterr().out
    sources = [n for n in os.listdir(repack.AGENT_DIR) if n.endswith(".py")]
    for name in sources:
        mpy = out / "camagent" / (name[:-3] + ".mpy")
        assert mpy.read_bytes()[:2] == b"M\x06", name
        assert "camagent/%s" % (name[:-3] + ".mpy") in text
    assert (out / "umqtt" / "simple.mpy").exists()
    xz = int(re.search(r"in a squashfs \(xz\): ([\d,]+) bytes", text).group(1).replace(",", ""))
    assert 10000 < xz < 60000


def test_slim_profiles_name_only_known_items():
    for name, items in slim.PROFILES.items():
        assert set(items) <= set(slim.BY_NAME), name
    with pytest.raises(CamhostError, match="unknown slimming profile 'web'"):
        slim.profile("web")


def test_the_camera_gets_bytecode_without_line_numbers_unless_asked(tmp_path):
    """`camhost image mpy` (and repack) compile with repack.MPY_OPTS: no line-number
    tables, which are a tenth of the bytes; --line-numbers keeps them. Under a MicroPython
    port (MICROPYTHON) the traceback shows the difference."""
    shipped, debug = tmp_path / "shipped", tmp_path / "debug"
    assert cli.main(["image", "mpy", "--out", str(shipped)]) == 0
    assert cli.main(["image", "mpy", "--line-numbers", "--out", str(debug)]) == 0
    files = sorted(p.relative_to(shipped) for p in shipped.rglob("*.mpy"))
    assert files == sorted(p.relative_to(debug) for p in debug.rglob("*.mpy"))
    size = {d: sum((d / f).stat().st_size for f in files) for d in (shipped, debug)}
    assert size[shipped] < 0.95 * size[debug], size
    for f in files:
        assert (shipped / f).stat().st_size <= (debug / f).stat().st_size, f
    mp = os.environ.get("MICROPYTHON")
    if not mp:
        return
    lines = {}
    for d in (shipped, debug):
        proc = subprocess.run([mp, "-c", "from camagent import config; config.parse('[')"],
                              env=dict(os.environ, MICROPYPATH=str(d)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert "ConfigError" in proc.stdout, proc.stdout
        lines[d] = set(re.findall(r'File "camagent/config.py", line (\d+)', proc.stdout))
    assert lines[shipped] == {"1"} and lines[debug] and "1" not in lines[debug], lines
