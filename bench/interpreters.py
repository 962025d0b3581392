"""MicroPython 1.22.0 unix ports built here, for each way the agent can ship.

The camera runs the lean interpreter (patches/common then patches/lean, as
`make image` builds it) on 32-bit ARM. This builds that interpreter from a
pristine 1.22.0 source tree (MICROPYTHON_SRC, default /opt/mp122src; nothing
is downloaded), static, for x86-64 and, when Debian's gcc-arm-linux-gnueabihf
and qemu-user are installed, for ARM run under qemu-arm; each twice: plain
(the agent loaded from .mpy files) and with the agent and umqtt.simple frozen
in (FROZEN_MANIFEST). The builds live in build/interp/ and are incremental.
"""
import glob
import hashlib
import os
import shutil
import subprocess

from common import ROOT, VENDOR, Runtime, Skip

BUILD_DIR = os.path.join(ROOT, "build", "interp")
PATCH_DIRS = ("common", "lean")   # the order `make image` applies them in
ARM_CROSS = "arm-linux-gnueabihf-"
BUILD_TIMEOUT_S = 1200
FROZEN = "frozen"
MPY = "mpy"

EXTERNAL = os.path.join(ROOT, "buildroot-package")
EXTERNAL_MK = os.path.join(EXTERNAL, "external.mk")


def source():
    """The pristine MicroPython 1.22.0 tree, or Skip saying why not."""
    src = os.environ.get("MICROPYTHON_SRC") or "/opt/mp122src"
    if not os.path.isfile(os.path.join(src, "ports", "unix", "Makefile")):
        raise Skip("no MicroPython 1.22.0 source at %s (set MICROPYTHON_SRC)" % src)
    return src


def patches():
    return [p for d in PATCH_DIRS for p in sorted(glob.glob(os.path.join(
        ROOT, "buildroot-package", "patches", d, "micropython", "*.patch")))]


def targets():
    """[(name, cross prefix or "", runner argv prefix, Skip reason or None)]."""
    found = [("x86-64", "", [], None)]
    missing = [tool for tool in (ARM_CROSS + "gcc", "qemu-arm") if not shutil.which(tool)]
    why = None
    if missing:
        why = ("no %s (Debian: apt-get install gcc-arm-linux-gnueabihf qemu-user)"
               % " or ".join(missing))
    found.append(("ARM", ARM_CROSS, ["qemu-arm"], why))
    return found


def _run(argv, cwd, log):
    with open(log, "wb") as out:
        proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              timeout=BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        with open(log, "rb") as f:
            tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
        raise Skip("building MicroPython failed (%s): %s" % (log, " / ".join(tail)))


def patched_tree():
    """A scratch copy of the source with our patch set applied; remade when it changes."""
    src, series = source(), patches()
    digest = hashlib.sha256(src.encode())
    for p in series:
        with open(p, "rb") as f:
            digest.update(f.read())
    tree = os.path.join(BUILD_DIR, "src")
    stamp = os.path.join(BUILD_DIR, "src.stamp")
    want = digest.hexdigest()
    if os.path.isfile(stamp) and open(stamp).read() == want:
        return tree
    shutil.rmtree(BUILD_DIR, ignore_errors=True)   # objects of other patches are stale
    os.makedirs(BUILD_DIR)
    shutil.copytree(src, tree, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "build", "build-*"))
    for p in series:
        _run(["patch", "-p1", "-F0", "-N", "-i", p], tree, os.path.join(BUILD_DIR, "patch.log"))
    _run(["make", "-C", "mpy-cross", "-j2"], tree, os.path.join(BUILD_DIR, "mpy-cross.log"))
    with open(stamp, "w") as f:
        f.write(want)
    return tree


def build(target, way):
    """The path of the interpreter for target ("x86-64", "ARM") and way (MPY, FROZEN)."""
    name, cross, _, why = [t for t in targets() if t[0] == target][0]
    if why:
        raise Skip(why)
    tree = patched_tree()
    out = os.path.join(BUILD_DIR, "%s-%s" % (name.lower(), way))
    argv = ["make", "-j2", "VARIANT=standard", "BUILD=" + out, "MICROPY_PY_FFI=0",
            "LDFLAGS_EXTRA=-static"]
    if cross:
        argv.append("CROSS_COMPILE=" + cross)
    if way == FROZEN:
        argv += frozen_make_opts() + ["MPY_LIB_DIR=" + umqtt_only_lib()]
    # objects built with other options (a frozen build without its manifest) do not link
    opts = out + ".opts"
    if not os.path.isfile(opts) or open(opts).read() != " ".join(argv):
        shutil.rmtree(out, ignore_errors=True)
        with open(opts, "w") as f:
            f.write(" ".join(argv))
    _run(argv, os.path.join(tree, "ports", "unix"), out + ".log")
    return os.path.join(out, "micropython")


def frozen_make_opts():
    """What our tree adds to Buildroot's micropython make options when
    BR2_PACKAGE_CAMAGENT_FROZEN=y, read by make itself: the bench builds that."""
    with open(os.path.join(BUILD_DIR, "show-opts.mk"), "w") as f:
        f.write("generic-package =\ninclude %s\nshow:\n\t@echo $(MICROPYTHON_MAKE_OPTS)\n"
                % EXTERNAL_MK)
    proc = subprocess.run(["make", "-s", "-f", f.name, "show",
                           "BR2_EXTERNAL_CAMAGENT_PATH=" + EXTERNAL,
                           "BR2_PACKAGE_CAMAGENT_FROZEN=y"],
                          stdout=subprocess.PIPE, check=True, timeout=60)
    opts = proc.stdout.decode().split()
    if not any(o.startswith("FROZEN_MANIFEST=") for o in opts):
        raise Skip("%s sets no FROZEN_MANIFEST for BR2_PACKAGE_CAMAGENT_FROZEN" % EXTERNAL_MK)
    return opts


def umqtt_only_lib():
    """A micropython-lib holding only umqtt.simple (this checkout's copy), for the
    manifest's require("umqtt.simple"): a source tree may come without the submodule."""
    lib = os.path.join(BUILD_DIR, "micropython-lib")
    pkg = os.path.join(lib, "micropython", "umqtt.simple")
    os.makedirs(os.path.join(pkg, "umqtt"), exist_ok=True)
    with open(os.path.join(lib, "README.md"), "w") as f:
        f.write("umqtt.simple only, for bench/interpreters.py\n")
    with open(os.path.join(pkg, "manifest.py"), "w") as f:
        f.write('package("umqtt")\n')
    shutil.copyfile(os.path.join(VENDOR, "umqtt", "simple.py"),
                    os.path.join(pkg, "umqtt", "simple.py"))
    return lib


def runtime(target, way):
    """A Runtime for that interpreter; its module path is .frozen for the frozen build."""
    runner = [t for t in targets() if t[0] == target][0][2]
    binary = build(target, way)
    return Runtime("MicroPython 1.22.0 lean %s (%s)" % (target, way), runner + [binary],
                   "MICROPYPATH")


def stripped_xz(binary, cross):
    """Bytes of the stripped interpreter compressed with xz: what it costs in squashfs."""
    import lzma
    tmp = binary + ".stripped"
    subprocess.run([cross + "strip", "-o", tmp, binary], check=True, timeout=60)
    try:
        with open(tmp, "rb") as f:
            return len(lzma.compress(f.read(), preset=6))
    finally:
        os.unlink(tmp)
