"""Finding the system tools camhost runs.

Debian puts some of them (mosquitto, flashrom) in /usr/sbin, which is on root's PATH
but not on a normal user's: looking only at PATH would call an installed tool missing.
"""
import os
import shutil

SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def which(name):
    """The tool's path from PATH, then the sbin directories; None when it is not there."""
    found = shutil.which(name)
    if found or os.sep in name:
        return found
    for d in SBIN_DIRS:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None
