"""Fixtures for the flashing tests: real firmware images, an emulated 8 MB chip, and
flashrom wrappers that misbehave on purpose.

Images are built with the real tools (mkimage for the uImage, mksquashfs for the
rootfs) in the OpenIPC layout. The chip is a file that flashrom's dummy programmer
emulates as an MX25L6436 (it must be exactly 8 MiB or flashrom silently ignores it).
The wrappers sit first on PATH and run the real flashrom, changing one thing.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

from camhost import layout, tools

CHIP_NAME = "MX25L6436E/MX25L6445E/MX25L6465E/MX25L6473E/MX25L6473F"
REAL_FLASHROM = tools.which("flashrom")
# mkimage and mksquashfs stamp the build time into their output; a fixed epoch keeps two
# builds of the same kernel identical even when they straddle a second boundary
REPRODUCIBLE = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")


def dummy_programmer(chip_file):
    return "dummy:emulate=MX25L6436,image=%s" % chip_file


def flash_args(chip_file, backup_dir):
    """The CLI options that point camhost at the emulated chip."""
    return ["--programmer", dummy_programmer(chip_file), "--chip", CHIP_NAME,
            "--backup-dir", str(backup_dir)]


def build_image(workdir, seed, uboot_tag="OpenIPC", kernel_name="Linux-4.9.84",
                agent_version="1.0", env_text="bootdelay=1", data_seed=None):
    """A full 8 MiB image in the OpenIPC layout; parts vary with the arguments."""
    rnd = random.Random(seed)
    image = bytearray(b"\xff" * layout.FLASH_SIZE)

    boot = bytearray(rnd.randbytes(0x20000))
    banner = b"U-Boot 2015.01 (Jun 20 2023 - 10:00:00 +0800) " + uboot_tag.encode() + b"\0"
    boot[0x8000:0x8000 + len(banner)] = banner
    _put(image, "boot", bytes(boot))

    env = ("%s\0ipaddr=192.168.1.10\0serverip=192.168.1.254\0\0" % env_text).encode()
    env = env.ljust(layout.partition("env").size - 4, b"\0")
    _put(image, "env", struct.pack("<I", zlib.crc32(env)) + env)

    os.makedirs(workdir, exist_ok=True)
    payload = os.path.join(workdir, "zImage")
    with open(payload, "wb") as f:
        f.write(random.Random(kernel_name).randbytes(300 * 1024))
    uimage = os.path.join(workdir, "uImage")
    subprocess.run(["mkimage", "-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none",
                    "-a", "0x20008000", "-e", "0x20008000", "-n", kernel_name, "-d", payload,
                    uimage], check=True, stdout=subprocess.DEVNULL, env=REPRODUCIBLE)
    with open(uimage, "rb") as f:
        _put(image, "kernel", f.read())

    root = os.path.join(workdir, "root")
    os.makedirs(os.path.join(root, "usr/lib/camagent"), exist_ok=True)
    os.makedirs(os.path.join(root, "etc"), exist_ok=True)
    with open(os.path.join(root, "etc/os-release"), "w") as f:
        f.write("NAME=OpenIPC\n")
    with open(os.path.join(root, "usr/lib/camagent/agent.py"), "w") as f:
        f.write("VERSION = %r\n" % agent_version)
    with open(os.path.join(root, "usr/lib/libbig.so"), "wb") as f:
        f.write(random.Random(seed).randbytes(150 * 1024))
    squashfs = os.path.join(workdir, "rootfs.squashfs")
    subprocess.run(["mksquashfs", root, squashfs, "-comp", "xz", "-noappend", "-all-root",
                    "-quiet"], check=True, stdout=subprocess.DEVNULL, env=REPRODUCIBLE)
    with open(squashfs, "rb") as f:
        _put(image, "rootfs", f.read())

    if data_seed is not None:  # a jffs2 overlay with some files in it
        _put(image, "rootfs_data", b"\x85\x19\x03\x20" + random.Random(data_seed).randbytes(8192))
    return bytes(image)


def _put(image, name, data):
    p = layout.partition(name)
    assert len(data) <= p.size, name
    image[p.offset:p.offset + len(data)] = data


class Firmware:
    """Paths of the test images; `base` is what the emulated chip starts with."""

    def __init__(self, directory):
        def make(name, **kw):
            data = build_image(os.path.join(directory, name + ".d"), **kw)
            path = os.path.join(directory, name + ".bin")
            with open(path, "wb") as f:
                f.write(data)
            return path
        self.base = make("base", seed=1, data_seed=1)
        # the agent changed: only the rootfs differs
        self.agent_change = make("agent", seed=1, data_seed=1, agent_version="1.1")
        # a new release: kernel, rootfs, env and overlay differ; same U-Boot
        self.release = make("release", seed=1, kernel_name="Linux-4.9.99", agent_version="2.0",
                            env_text="bootdelay=2", data_seed=2)
        # everything differs, U-Boot included
        self.full = make("full", seed=7, uboot_tag="other", kernel_name="Linux-4.9.1",
                         agent_version="3.0", env_text="bootdelay=3", data_seed=3)


@pytest.fixture(scope="session")
def firmware(tmp_path_factory):
    return Firmware(str(tmp_path_factory.mktemp("firmware")))


@pytest.fixture
def chip(tmp_path, firmware):
    """The emulated chip's backing file, holding the base image."""
    path = tmp_path / "chip.bin"
    shutil.copyfile(firmware.base, path)
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


# --- flashrom wrappers ----------------------------------------------------------------
WRAPPER = r'''#!%(python)s
"""flashrom, changed for a test: see tests/flash_fixtures.py."""
import json, os, re, signal, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "wrapper.json")) as f:
    config = json.load(f)
real = config["real"]
args = sys.argv[1:]
with open(config["log"], "a") as f:
    f.write(json.dumps(args) + "\n")


def chip_file():
    programmer = args[args.index("-p") + 1]
    return re.search(r"image=([^,]+)", programmer).group(1)


if "--help" in args:
    out = subprocess.run([real] + args, stdout=subprocess.PIPE).stdout.decode()
    for name in config.get("help_hide", []):
        out = re.sub(r"\b%%s\b,?\s*" %% name, "", out)
    for name in config.get("help_add", []):
        out = out.replace("dummy,", "dummy, %%s," %% name)
    sys.stdout.write(out)
    sys.exit(0)

if config.get("mstarddc_chip") and "-p" in args:
    # the camera's i2c programmer, played by the dummy one on the same chip file
    i = args.index("-p") + 1
    if args[i].startswith("mstarddc_spi:"):
        args[i] = "dummy:emulate=MX25L6436,image=" + config["mstarddc_chip"]

marker = config.get("kill_write_marker")
if "-w" in args and marker and os.path.exists(marker):
    os.unlink(marker)
    proc = subprocess.Popen([real] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    while b"Erasing and writing" not in seen:
        data = proc.stdout.read1(4096)
        if not data:
            break
        seen += data
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    proc.kill()
    proc.wait()
    # what an interrupted write leaves behind: the first kernel block erased
    with open(chip_file(), "r+b") as f:
        f.seek(0x50000)
        f.write(b"\xff" * 0x10000)
    os.kill(os.getpid(), signal.SIGKILL)

if "-r" in args and config.get("interrupt_read"):
    # the user presses Ctrl-C while the chip is read
    os.kill(os.getppid(), signal.SIGINT)

marker = config.get("blank_read_marker")
if "-r" in args and marker and os.path.exists(marker):
    os.unlink(marker)
    rc = subprocess.call([real] + args)
    # one read that comes back all 0xff, as a bad i2c link makes it look
    dump = args[args.index("-r") + 1]
    size = os.path.getsize(dump)
    with open(dump, "wb") as f:
        f.write(b"\xff" * size)
    sys.exit(rc)

if ("-r" in args or "-v" in args) and config.get("replace_during_read"):
    # a file is replaced while camhost works, as `make image` would replace the image
    rc = subprocess.call([real] + args)
    target, source = config["replace_during_read"]
    with open(source, "rb") as f:
        data = f.read()
    with open(target, "wb") as f:
        f.write(data)
    sys.exit(rc)

if "-r" in args and config.get("change_after_read"):
    rc = subprocess.call([real] + args)
    # the chip changes between reads, as a bad i2c link makes it look
    with open(chip_file(), "r+b") as f:
        f.seek(0x760000)
        old = f.read(1)
        f.seek(0x760000)
        f.write(bytes([old[0] ^ 0xff]))
    sys.exit(rc)

os.execv(real, [real] + args)
'''


class FlashromWrapper:
    """A `flashrom` first on PATH that logs its calls and changes what `config` says."""

    def __init__(self, directory, monkeypatch, **config):
        self.bin = os.path.join(directory, "bin")
        os.makedirs(self.bin, exist_ok=True)
        self.log = os.path.join(directory, "flashrom-calls.log")
        config.update(real=REAL_FLASHROM, log=self.log)
        with open(os.path.join(self.bin, "wrapper.json"), "w") as f:
            json.dump(config, f)
        script = os.path.join(self.bin, "flashrom")
        with open(script, "w") as f:
            f.write(WRAPPER % {"python": sys.executable})
        os.chmod(script, 0o755)
        monkeypatch.setenv("PATH", self.bin + os.pathsep + os.environ["PATH"])

    def calls(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]


@pytest.fixture
def flashrom_wrapper(tmp_path, monkeypatch):
    """Call with the behaviour wanted: help_hide=[...], help_add=[...], mstarddc_chip=FILE,
    kill_write_marker=FILE, change_after_read=True, interrupt_read=True,
    blank_read_marker=FILE, replace_during_read=[TARGET, SOURCE]."""
    def install(**config):
        return FlashromWrapper(str(tmp_path / "wrapper"), monkeypatch, **config)
    return install
