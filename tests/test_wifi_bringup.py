"""Wifi at boot: OpenIPC's S40network sequence and /etc/wireless/usb contract, run under
busybox sh with our usb-camagent and post-build hook, a fake sysfs GPIO tree
(camhost.simcam.GpioTree) and a modprobe that records each call and the level of the
wifi power GPIO at that moment. wlandev comes from an env partition our writer made,
read by the real fw_printenv.

The OpenIPC side below is a fixture written from OpenIPC's documented behaviour
(board-notes: S40network reads `fw_printenv -n wlandev`, runs /etc/wireless/usb "$dev"
then /etc/wireless/sdio "$dev", and on success `ifup wlan0`; usb has one
`if [ "$1" = NAME ]` case per camera that powers the module with `gpio set|clear N`
and runs modprobe, and ends with `exit 1`).
"""
import os
import shutil
import subprocess

import pytest

from camhost import boards, ubootenv
from camhost.simcam import GpioTree
from test_ubootenv import BACKUP_VARS, mkenvimage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USB_CAMAGENT = os.path.join(ROOT, "overlay", "etc", "wireless", "usb-camagent")
POST_BUILD = os.path.join(ROOT, "buildroot-package", "board", "imou-ranger-rc",
                          "post-build.sh")
BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(not BUSYBOX, reason="busybox is not installed")

OPENIPC_USB = """#!/bin/sh

set_gpio() {
	[ "$2" -eq 1 ] && gpio set $1 || gpio clear $1
	sleep 1
}

# Generic MT7601U
if [ "$1" = "mt7601u-generic" ]; then
	modprobe mt7601u
	exit 0
fi

# Another camera with a power GPIO
if [ "$1" = "rtl8188fu-some-camera" ]; then
	set_gpio 14 1
	modprobe 8188fu
	exit 0
fi

exit 1
"""

OPENIPC_SDIO = """#!/bin/sh
exit 1
"""

# S40network's start, with $ETC for /etc so it runs in a test directory.
OPENIPC_S40NETWORK = """#!/bin/sh
ETC="${ETC:-/etc}"
dev=$(fw_printenv -n wlandev)

set_wireless() {
	path=$ETC/wireless
	if $path/usb "$dev" || $path/sdio "$dev"; then
		ifup wlan0
	fi
}

case "$1" in
	start)
		ifup lo
		if [ -n "$dev" ]; then
			set_wireless
		else
			ifup eth0
		fi
		;;
esac
"""

# Fake commands: each appends one line to $CALLS.
FAKES = {
    # the power pin's direction: "high" is the kernel's "output, driven high"
    "modprobe": 'echo "modprobe $* gpio46=$(cat "$GPIO_ROOT/gpio46/direction" 2>/dev/null)"'
                ' >> "$CALLS"\n'
                'for m in $FAIL_MODULES; do [ "$m" = "$1" ] && exit 1; done\nexit 0\n',
    "ifup": 'echo "ifup $*" >> "$CALLS"\n',
    "gpio": 'echo "gpio $*" >> "$CALLS"\n',
    "logger": 'echo "logger $*" >> "$CALLS"\n',
    "sleep": 'exit 0\n',       # the module's settle time is the camera's business
    "fw_printenv": 'exec /usr/bin/fw_printenv -c "$FW_ENV_CONFIG" "$@"\n',
}


def write(path, text, mode=0o755):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


@pytest.fixture
def camera(tmp_path):
    """An OpenIPC-like rootfs after our post-build step, tools, a GPIO tree."""
    etc = tmp_path / "rootfs" / "etc"
    write(str(etc / "wireless" / "usb"), OPENIPC_USB)
    write(str(etc / "wireless" / "sdio"), OPENIPC_SDIO)
    write(str(etc / "init.d" / "S40network"), OPENIPC_S40NETWORK)
    shutil.copy(USB_CAMAGENT, str(etc / "wireless" / "usb-camagent"))
    subprocess.run([BUSYBOX, "sh", POST_BUILD, str(tmp_path / "rootfs")], check=True)
    bindir = tmp_path / "bin"
    for name, body in FAKES.items():
        write(str(bindir / name), "#!/bin/sh\n" + body)
    # busybox's applets for everything else, as on the camera
    for applet in ("cat", "echo", "head", "tail", "grep", "mv", "chmod", "sh", "["):
        os.symlink(BUSYBOX, str(bindir / applet))
    gpio = GpioTree(tmp_path / "gpio")
    yield Camera(tmp_path, str(etc), str(bindir), gpio)
    gpio.close()


class Camera:
    def __init__(self, base, etc, bindir, gpio):
        self.base, self.etc, self.bindir, self.gpio = base, etc, bindir, gpio
        self.calls = str(base / "calls.log")

    def set_env(self, changes):
        blob = ubootenv.update(mkenvimage(self.base, BACKUP_VARS), changes)
        image = self.base / "env.bin"
        image.write_bytes(blob)
        config = self.base / "fw_env.config"
        config.write_text("%s 0x0 0x%x\n" % (image, len(blob)))
        self.fw_env_config = str(config)

    def boot_network(self, fail_modules=""):
        env = {"PATH": self.bindir, "ETC": self.etc, "GPIO_ROOT": self.gpio.root,
               "CALLS": self.calls, "FW_ENV_CONFIG": self.fw_env_config,
               "FAIL_MODULES": fail_modules}
        result = subprocess.run([BUSYBOX, "sh", os.path.join(self.etc, "init.d", "S40network"),
                                 "start"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=30)
        with open(self.calls) as f:
            return [line.rstrip("\n") for line in f], result.stdout.decode()


@pytest.mark.parametrize("board, driver", [("imou-ranger-rc-4mp", "ssv6155"),
                                           ("imou-ranger-rc-3mp", "ssv6x5x")])
def test_s40network_powers_the_module_loads_mac80211_then_the_driver(camera, board, driver):
    b = boards.board(board)
    assert b.wifi_driver == driver
    camera.set_env({"wlandev": b.wlandev})
    calls, out = camera.boot_network()
    modprobes = [c for c in calls if c.startswith("modprobe")]
    # power is on before the first module loads; mac80211 before the driver
    assert modprobes == ["modprobe %s gpio46=high" % m
                         for m in ("ccm", "gcm", "ghash_generic", "mac80211", driver)], out
    assert calls[-1] == "ifup wlan0"
    assert camera.gpio.direction(46) == "high"


def test_other_wlandev_names_still_reach_openipcs_cases(camera):
    camera.set_env({"wlandev": "rtl8188fu-some-camera"})
    calls, out = camera.boot_network()
    assert calls == ["ifup lo", "gpio set 14", "modprobe 8188fu gpio46=", "ifup wlan0"], out
    assert not camera.gpio.exported(46)


def test_a_driver_that_fails_to_load_leaves_wlan0_down_and_says_why(camera):
    camera.set_env({"wlandev": boards.board("imou-ranger-rc-4mp").wlandev})
    calls, out = camera.boot_network(fail_modules="ssv6155")
    assert "ifup wlan0" not in calls
    assert "modprobe ssv6155 failed" in out
    assert any(c.startswith("logger") and "modprobe ssv6155 failed" in c for c in calls)


def test_crypto_modules_are_optional_mac80211_is_not(camera):
    camera.set_env({"wlandev": boards.board("imou-ranger-rc-3mp").wlandev})
    calls, _ = camera.boot_network(fail_modules="ccm gcm ghash_generic")
    assert calls[-1] == "ifup wlan0"        # built in: modprobe of a builtin may fail
    open(camera.calls, "w").close()
    calls, out = camera.boot_network(fail_modules="mac80211")
    assert "ifup wlan0" not in calls and "modprobe mac80211 failed" in out


def test_no_wlandev_brings_up_ethernet(camera):
    camera.set_env({})
    calls, _ = camera.boot_network()
    assert calls == ["ifup lo", "ifup eth0"]


def test_post_build_hook_is_added_once_at_the_top(camera):
    usb = os.path.join(camera.etc, "wireless", "usb")
    before = open(usb).read()
    subprocess.run([BUSYBOX, "sh", POST_BUILD, os.path.dirname(camera.etc)], check=True)
    after = open(usb).read()
    assert after == before
    lines = after.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1].startswith('"${0%/*}/usb-camagent" "$1" && exit 0')
    assert after.count("usb-camagent") == 1
    assert os.access(usb, os.X_OK)


def test_post_build_refuses_a_rootfs_without_openipcs_usb_script(tmp_path):
    (tmp_path / "etc").mkdir()
    result = subprocess.run([BUSYBOX, "sh", POST_BUILD, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert result.returncode == 1
    assert b"not an OpenIPC rootfs" in result.stdout


@pytest.mark.parametrize("script", [USB_CAMAGENT, POST_BUILD], ids=os.path.basename)
def test_scripts_pass_shellcheck_and_parse_in_busybox(script):
    subprocess.run([BUSYBOX, "sh", "-n", script], check=True)
    result = subprocess.run(["shellcheck", "-s", "sh", script], stdout=subprocess.PIPE)
    assert result.returncode == 0, result.stdout.decode()
