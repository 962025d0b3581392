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

# per_sensor: the globs match every sensor's files; the camera's own sensor is kept
Item = namedtuple("Item", "name globs kconfig linux_config loses per_sensor")
Item.__new__.__defaults__ = (False,)

ITEMS = (
    Item("other-sensors",
         ("etc/sensors/*.bin", "lib/modules/*/sigmastar/sensor_*_mipi.ko"),
         (), (),
         "nothing: the ISP tuning files and drivers of image sensors this camera does not "
         "have (its own, from the backup's U-Boot `sensor=`, stay)", True),
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

# What the user never sees; the web UI is an opt-in lever (--drop-webui), not a default.
PROFILES = {"unseen": ("other-sensors", "nfs", "vtun")}
DEFAULT_PROFILE = "unseen"
OPT_IN = "webui"
# not a sensor: the MIPI receiver every sensor driver uses
SENSOR_KEEP = ("sensor_rx_mipi.ko",)


def profile(name, drop_webui=False):
    """The Items of profile `name` (None: no slimming), and the web UI if `drop_webui`."""
    try:
        names = PROFILES[name] if name is not None else ()
    except KeyError:
        raise CamhostError("unknown slimming profile %r: choose one of %s, or --no-slim"
                           % (name, ", ".join(sorted(PROFILES)))) from None
    return tuple(BY_NAME[n] for n in names + ((OPT_IN,) if drop_webui else ()))


def matches(root, item, sensor=None):
    """Rootfs-relative paths the item removes that exist under `root` (top level only).

    A per-sensor item removes nothing without `sensor`: which files are the camera's own
    is not known then."""
    if item.per_sensor and not sensor:
        return []
    keep = set(SENSOR_KEEP) | {"%s.bin" % sensor, "sensor_%s_mipi.ko" % sensor}
    found = set()
    for pattern in item.globs:
        for path in glob.glob(os.path.join(root, pattern)):
            if not (item.per_sensor and os.path.basename(path) in keep):
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
