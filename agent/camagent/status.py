"""What the camera can tell about itself cheaply: free memory, wifi signal, SD space, MAC.

Each figure is one small read of a kernel file, and None when the file or the
device is absent (no wifi up, no card mounted). The roots are arguments so tests
and the demo can point them at a fake tree.
"""
import os

from .compat import read_text


class Status:
    def __init__(self, proc_root="/proc", net_root="/sys/class/net", wifi="wlan0"):
        self.proc_root = proc_root
        self.net_root = net_root
        self.wifi = wifi

    def read(self):
        return {"memory_free": self.memory_free(), "wifi_rssi": self.wifi_rssi(),
                "sd_free": self.sd_free()}

    def memory_free(self):
        """Bytes available to new programs (MemAvailable; MemFree on old kernels)."""
        free = None
        for line in _lines(self.proc_root + "/meminfo"):
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("MemAvailable:", "MemFree:"):
                try:
                    value = int(parts[1]) * 1024
                except ValueError:
                    continue
                if parts[0] == "MemAvailable:":
                    return value
                free = value
        return free

    def wifi_rssi(self):
        """Signal level in dBm of the wifi interface, from /proc/net/wireless."""
        for line in _lines(self.proc_root + "/net/wireless")[2:]:
            name, sep, rest = line.partition(":")
            if sep and name.strip() == self.wifi:
                try:
                    return int(float(rest.split()[2]))   # status, link, level, noise, ...
                except (IndexError, ValueError):
                    return None
        return None

    def sd_free(self):
        """Bytes free on the mounted SD card, or None when no card is mounted."""
        for line in _lines(self.proc_root + "/mounts"):
            fields = line.split()
            if len(fields) >= 2 and fields[0].startswith("/dev/mmcblk"):   # the SD reader
                try:
                    st = os.statvfs(_unescape(fields[1]))
                except (OSError, ValueError):   # ValueError: an escape not in octal
                    return None
                return st[1] * st[4]   # f_frsize * f_bavail
        return None

    def uptime(self):
        """Whole seconds since boot (/proc/uptime: monotonic, unlike the wall clock)."""
        lines = _lines(self.proc_root + "/uptime")
        try:
            return int(float(lines[0].split()[0]))
        except (IndexError, ValueError):
            return None

    def mac(self):
        """The wifi interface's MAC address ("aa:bb:..."), or None."""
        lines = _lines("%s/%s/address" % (self.net_root, self.wifi))
        mac = lines[0].strip().lower() if lines else ""
        return mac if len(mac) == 17 and mac.count(":") == 5 else None


def _lines(path):
    try:
        # /proc/mounts can be long on a desktop; on the camera each file is ~1.5 KB
        return (read_text(path, 32768) or "").split("\n")
    except (OSError, ValueError):    # UnicodeError is a ValueError
        return []


def _unescape(field):
    """/proc/mounts writes space, tab, newline and backslash in octal (\\040): every
    backslash starts three octal digits."""
    parts = field.split("\\")
    for i in range(1, len(parts)):
        parts[i] = chr(int(parts[i][:3], 8)) + parts[i][3:]
    return "".join(parts)
