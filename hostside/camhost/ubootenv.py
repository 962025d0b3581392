"""The U-Boot environment partition: read a backup's, write a changed one.

Layout (single copy, as on OpenIPC's SigmaStar NOR): a little-endian CRC32 of the
rest, then `key=value\\0` pairs, an empty string (`\\0\\0`) at the end, padded with
0xFF. Images are written by u-boot-tools' `mkenvimage` and read back by
libubootenv's `fw_printenv -c` (the tool the camera itself uses), so what we flash is
what OpenIPC will read; our own parser only reads the backup.

Values can hold secrets (wlanpass): they go to the tools through files in a private
directory and pipes, never on a command line, and no error message repeats a value.
"""
import os
import struct
import subprocess
import tempfile
import zlib
from collections import OrderedDict

from .errors import CamhostError

TOOLS = {"mkenvimage": "u-boot-tools", "fw_printenv": "libubootenv-tool"}


def parse(blob, what="env partition"):
    """The variables in an environment image, in stored order; refuses a bad CRC."""
    if len(blob) < 8:
        raise CamhostError("%s is %d bytes, too short for a U-Boot environment"
                           % (what, len(blob)))
    if blob.count(b"\xff") == len(blob):
        raise CamhostError("%s is erased (all 0xFF): U-Boot runs on its built-in defaults, "
                           "which a backup does not hold. Boot the camera once, run "
                           "`fw_printenv` on it to check it has an environment (saveenv in "
                           "U-Boot writes one), and take the backup again." % what)
    crc, = struct.unpack_from("<I", blob)
    if zlib.crc32(blob[4:]) != crc:
        raise CamhostError("%s has a bad CRC (stored 0x%08x, computed 0x%08x): the backup "
                           "is misread or the environment is corrupt; take the backup again"
                           % (what, crc, zlib.crc32(blob[4:])))
    variables = OrderedDict()
    for pair in blob[4:].split(b"\0"):
        if not pair:
            break       # the empty string that ends the list
        key, sep, value = pair.partition(b"=")
        if not sep:
            raise CamhostError("%s: entry %r has no '=': not a U-Boot environment"
                               % (what, key[:40]))
        variables[key.decode("latin-1")] = value.decode("latin-1")
    return variables


def check_setting(key, value):
    """Refuse what mkenvimage's text input cannot carry or U-Boot cannot parse."""
    if not key or "=" in key or any(c in key for c in "\0\n\r \t") or key.startswith("#"):
        raise CamhostError("U-Boot variable name %r is not valid" % key)
    if any(c in value for c in "\0\n\r"):
        raise CamhostError("the value for U-Boot variable %s has a line break or NUL byte, "
                           "which the environment cannot hold" % key)
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise CamhostError("the value for U-Boot variable %s has characters outside "
                           "Latin-1; the environment stores bytes: use UTF-8 only if the "
                           "camera's tools expect it" % key) from None


def build(variables, size, workdir=None):
    """An environment image of `size` bytes holding `variables`, by mkenvimage."""
    for key, value in variables.items():
        check_setting(key, value)
    with tempfile.TemporaryDirectory(prefix="camhost-env-", dir=workdir) as tmp:
        os.chmod(tmp, 0o700)
        text = os.path.join(tmp, "env.txt")
        with open(text, "w", encoding="latin-1") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write("".join("%s=%s\n" % kv for kv in variables.items()))
        out = os.path.join(tmp, "env.bin")
        _run(["mkenvimage", "-s", str(size), "-o", out, text], "mkenvimage")
        with open(out, "rb") as f:
            blob = f.read()
    if len(blob) != size:
        raise CamhostError("mkenvimage wrote %d bytes, not %d" % (len(blob), size))
    return blob


def read_back(blob, workdir=None):
    """The variables of `blob` as libubootenv's fw_printenv reads them (CRC checked)."""
    with tempfile.TemporaryDirectory(prefix="camhost-env-", dir=workdir) as tmp:
        os.chmod(tmp, 0o700)
        image = os.path.join(tmp, "env.bin")
        with open(image, "wb") as f:
            f.write(blob)
        config = os.path.join(tmp, "fw_env.config")
        with open(config, "w") as f:
            f.write("%s 0x0 0x%x 0x%x\n" % (image, len(blob), len(blob)))
        out = _run(["fw_printenv", "-c", config], "fw_printenv (reading the new "
                                                     "environment back)")
    variables = OrderedDict()
    for line in out.decode("latin-1").splitlines():
        key, _, value = line.partition("=")
        variables[key] = value
    return variables


def update(blob, changes, what="env partition", workdir=None):
    """The environment `blob` with `changes` {key: value} applied, everything else kept;
    written by mkenvimage and verified by reading it back with fw_printenv."""
    variables = parse(blob, what)
    variables.update(changes)
    new = build(variables, len(blob), workdir)
    got = read_back(new, workdir)
    if dict(got) != dict(variables):    # fw_printenv lists them sorted
        wrong = sorted(k for k in set(got) | set(variables) if got.get(k) != variables.get(k))
        raise CamhostError("the new environment does not read back as written (variables "
                           "%s differ): not writing it" % ", ".join(wrong))
    return new


def _run(argv, what):
    try:
        return subprocess.run(argv, check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE).stdout
    except FileNotFoundError:
        raise CamhostError("%s not found: install it (Debian: apt-get install %s)"
                           % (argv[0], TOOLS[argv[0]])) from None
    except subprocess.CalledProcessError as e:
        # stderr only: stdout could hold the variables, passwords among them
        tail = e.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise CamhostError("%s failed (exit %d): %s" % (what, e.returncode,
                                                        " ".join(tail))) from None
