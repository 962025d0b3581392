"""Kernel modules (.ko) for the wifi: read offline, checked against the firmware, installed.

A module loads only into the kernel it was built for; the kernel compares the module's
`vermagic` (in its ELF `.modinfo` section, `key=value\\0` strings) with its own. Repack
checks the same string before the camera does, against the firmware's kernel release
(the uImage name, `Linux-<release>` as the kernel's build writes it, and the rootfs's
/lib/modules/<release>) and, when the firmware has modules, their whole vermagic.
A matching vermagic is necessary, not sufficient: modules must come from a build of the
same kernel (`make image`), since symbol versions are not checked here.

busybox modprobe finds modules and their dependencies through modules.dep; installing
appends the new modules' lines (dependencies resolved from `depends=`).
"""
import os
import re
import struct
from collections import namedtuple

from .errors import CamhostError

EM_ARM = 40
SHT_NOBITS = 8
MODULES_DIR = "lib/modules"
MAX_MODULE = 16 * 1024 * 1024

Module = namedtuple("Module", "name path info")     # info: {key: value} of .modinfo


def module_name(filename):
    """The name modprobe knows a module by: file name without .ko, '-' read as '_'."""
    return os.path.basename(filename)[:-3].replace("-", "_")


def modinfo(path):
    """{key: value} of the .modinfo section of the ELF module at `path`."""
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_MODULE)
    except OSError as e:
        raise CamhostError("module %s: %s" % (path, e.strerror)) from None
    section = _section(blob, ".modinfo", path)
    info = {}
    for entry in section.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            info.setdefault(key.decode("latin-1"), value.decode("latin-1"))
    if "vermagic" not in info:
        raise CamhostError("module %s has no vermagic in its .modinfo: not a kernel module "
                           "built by kbuild" % path)
    return info


def _section(blob, wanted, path):
    if blob[:4] != b"\x7fELF" or len(blob) < 52:
        raise CamhostError("module %s is not an ELF file" % path)
    if blob[4] != 1 or blob[5] != 1:
        raise CamhostError("module %s is not 32-bit little-endian; the camera's kernel is "
                           "32-bit ARM" % path)
    e_type, machine = struct.unpack_from("<HH", blob, 16)
    if e_type != 1:
        raise CamhostError("module %s is not a relocatable object (ELF type %d): not a "
                           ".ko" % (path, e_type))
    if machine != EM_ARM:
        raise CamhostError("module %s is built for ELF machine %d, not ARM (40)"
                           % (path, machine))
    shoff, = struct.unpack_from("<I", blob, 32)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 46)
    if shentsize < 40 or shoff + shnum * shentsize > len(blob) or shstrndx >= shnum:
        raise CamhostError("module %s is truncated (section headers cut off)" % path)
    headers = [struct.unpack_from("<10I", blob, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for h in headers:
        name_end = blob.find(b"\0", names_at + h[0])
        if blob[names_at + h[0]:name_end] == wanted.encode() and h[1] != SHT_NOBITS:
            if h[4] + h[5] > len(blob):
                raise CamhostError("module %s is truncated (%s cut off)" % (path, wanted))
            return blob[h[4]:h[4] + h[5]]
    raise CamhostError("module %s has no %s section: not a kernel module" % (path, wanted))


def kernel_release(uimage_name, rootfs):
    """The firmware's kernel release: from the uImage name, else its /lib/modules."""
    m = re.match(r"Linux-(\S+)$", uimage_name.strip())
    releases = installed_releases(rootfs)
    if m:
        if releases and m.group(1) not in releases:
            raise CamhostError("the firmware's kernel is %s (uImage name %r) but its "
                               "rootfs has modules for %s: a mixed release"
                               % (m.group(1), uimage_name, ", ".join(releases)))
        return m.group(1)
    if len(releases) == 1:
        return releases[0]
    raise CamhostError("cannot tell the firmware's kernel release (uImage name %r, "
                       "/lib/modules has %s), so the wifi modules' vermagic cannot be "
                       "checked" % (uimage_name, ", ".join(releases) or "nothing"))


def installed_releases(rootfs):
    top = os.path.join(rootfs, MODULES_DIR)
    return sorted(os.listdir(top)) if os.path.isdir(top) else []


def find(top):
    """[path] of the .ko files under `top`, sorted."""
    return sorted(os.path.join(d, n) for d, _, names in os.walk(top)
                  for n in names if n.endswith(".ko"))


def firmware_modules(rootfs, release):
    """{name: path relative to lib/modules/<release>} of the firmware's own modules."""
    top = os.path.join(rootfs, MODULES_DIR, release)
    return {module_name(p): os.path.relpath(p, top) for p in find(top)}


def reference_vermagic(rootfs, release, firmware):
    """The vermagic of the firmware's first readable module, or None."""
    for rel in sorted(firmware.values()):
        try:
            return modinfo(os.path.join(rootfs, MODULES_DIR, release, rel))["vermagic"]
        except CamhostError:
            continue
    return None


def check_vermagic(module, release, reference=None):
    """Refuse a module built for another kernel. `reference`: a firmware module's
    vermagic (same kernel, same SMP/preempt/CPU flags)."""
    magic = module.info["vermagic"].strip()
    built_for = magic.split()[0] if magic else ""
    if built_for != release:
        raise CamhostError("wifi module %s was built for kernel %s (vermagic %r); this "
                           "firmware's kernel is %s: the camera would refuse to load it. "
                           "Use modules from a build of this firmware's kernel (make image), "
                           "or the release that matches them"
                           % (module.path, built_for or "?", magic, release))
    if reference is not None and magic != reference.strip():
        raise CamhostError("wifi module %s has vermagic %r; the firmware's own modules have "
                           "%r: built with another kernel configuration, the camera would "
                           "refuse to load it" % (module.path, magic, reference.strip()))


def dependencies(name, available, chain=()):
    """Names `name` needs first, deepest last (depmod's order), from `available`
    {name: Module or path}; missing ones raise."""
    if name in chain:
        raise CamhostError("wifi modules depend on each other in a loop: %s"
                           % " -> ".join(chain + (name,)))
    module = available[name]
    depends = module.info.get("depends", "") if isinstance(module, Module) else ""
    order = []
    for dep in filter(None, (d.strip().replace("-", "_") for d in depends.split(","))):
        if dep not in available:
            raise CamhostError("wifi module %s needs %s, which neither --wifi-modules nor "
                               "the firmware has" % (name, dep))
        for d in [dep] + dependencies(dep, available, chain + (name,)):
            if d not in order:
                order.append(d)
    return order


def dependencies_of_all(names, available):
    """{name: its dependencies} for `names`; refuses a dependency `available` lacks."""
    return {name: dependencies(name, available) for name in names}


def read_dep(path):
    """{module path: [dependency paths]} of a modules.dep file ({} if there is none)."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {module.strip(): deps.split() for module, _, deps in
                (line.partition(":") for line in f.read().splitlines()) if module.strip()}


def dep_lines(names, modules, firmware, rel_of, firmware_dep):
    """modules.dep lines for the new `names`: `path: dep paths`, with the firmware's own
    modules' dependencies taken from its modules.dep (`firmware_dep`), as depmod lists
    every module a module needs, however deep."""
    available = dict(firmware, **modules)
    lines = []
    for name in names:
        paths = []
        for dep in dependencies(name, available):
            path = rel_of.get(dep) or firmware[dep]
            for p in [path] + (firmware_dep.get(path, []) if dep not in rel_of else []):
                if p not in paths:
                    paths.append(p)
        lines.append("%s:%s" % (rel_of[name], "".join(" " + p for p in paths)))
    return lines


def prune_dep(rootfs):
    """Drop the modules.dep lines of modules no longer in the rootfs (slimming removed
    them), so modprobe reports them missing instead of failing on a stale path."""
    for release in installed_releases(rootfs):
        top = os.path.join(rootfs, MODULES_DIR, release)
        dep = os.path.join(top, "modules.dep")
        if not os.path.isfile(dep) or os.path.islink(dep):
            continue
        with open(dep) as f:
            lines = f.read().splitlines()
        kept = [line for line in lines
                if os.path.exists(os.path.join(top, line.split(":", 1)[0]))]
        if kept != lines:
            with open(dep, "w") as f:
                f.write("".join(line + "\n" for line in kept))
