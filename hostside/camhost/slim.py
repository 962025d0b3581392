"""Slimming profiles: what an OpenIPC "lite" image can drop to make room for the agent.

Each item says which rootfs paths it removes (globs relative to the rootfs root, used
by `camhost image repack`), the config lines that leave the same files out of a build
(used by `camhost image build`), and what the user loses. Its size is measured on the
firmware at hand: the budget report shows it.
"""
import glob
import os
import shutil
from collections import namedtuple

from .errors import CamhostError

Item = namedtuple("Item", "name globs kconfig linux_config loses")

ITEMS = (
    Item("webui",
         ("var/www", "usr/bin/haserl", "usr/sbin/updatewebui"),
         ("# BR2_PACKAGE_MAJESTIC_WEBUI is not set",), (),
         "the browser UI (settings pages, preview, firmware upload); majestic's streams, "
         "/image.jpg and its HTTP API keep working; configure over SSH (`cli`) or MQTT"),
    Item("nfs",
         ("lib/modules/*/kernel/fs/nfs", "lib/modules/*/kernel/fs/lockd",
          "lib/modules/*/kernel/fs/nfs_common", "lib/modules/*/kernel/net/sunrpc"),
         (), ("# CONFIG_NFS_FS is not set",),
         "mounting NFS shares (recording to a NAS over NFS); SD card recording is unaffected"),
    Item("vtun",
         ("usr/sbin/vtund", "usr/sbin/tapip", "usr/sbin/tunnel", "etc/init.d/S98vtun"),
         ("# BR2_PACKAGE_VTUND_OPENIPC is not set",), (),
         "the vtun tunnel (OpenIPC's `tunnel` command, fw_setenv vtun); WireGuard stays"),
)
BY_NAME = {item.name: item for item in ITEMS}

# A camera driven over MQTT / Home Assistant needs none of these.
PROFILES = {"mqtt": ("webui", "nfs", "vtun")}
DEFAULT_PROFILE = "mqtt"


def profile(name):
    """The Items of profile `name`; None means no slimming."""
    if name is None:
        return ()
    try:
        return tuple(BY_NAME[n] for n in PROFILES[name])
    except KeyError:
        raise CamhostError("unknown slimming profile %r: choose one of %s, or --no-slim"
                           % (name, ", ".join(sorted(PROFILES)))) from None


def matches(root, item):
    """Rootfs-relative paths the item removes that exist under `root` (top level only)."""
    found = set()
    for pattern in item.globs:
        for path in glob.glob(os.path.join(root, pattern)):
            found.add(os.path.relpath(path, root))
    return sorted(found)


def walk_files(root, relpaths):
    """(files, bytes) of the regular files at or below `relpaths`; hardlinks count once."""
    seen = set()
    files = size = 0
    for rel in relpaths:
        top = os.path.join(root, rel)
        paths = [top]
        if os.path.isdir(top) and not os.path.islink(top):
            paths = [os.path.join(d, n) for d, dirs, names in os.walk(top)
                     for n in dirs + names]
        for path in paths:
            st = os.lstat(path)
            if not os.path.isdir(path) or os.path.islink(path):
                files += 1
            if os.path.isfile(path) and not os.path.islink(path) \
                    and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
    return files, size


def move_out(root, relpaths, dest):
    """Move `relpaths` from `root` to the same relative places under `dest`."""
    for rel in relpaths:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(os.path.join(root, rel), target)


def copy_out(root, relpaths, dest):
    """Copy `relpaths` from `root` to the same relative places under `dest` (to measure)."""
    for rel in relpaths:
        src, target = os.path.join(root, rel), os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, target, symlinks=True)
        else:
            shutil.copy2(src, target, follow_symlinks=False)


def kconfig_lines(items):
    return [line for item in items for line in item.kconfig]


def linux_config_lines(items):
    return [line for item in items for line in item.linux_config]
