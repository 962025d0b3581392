"""First boot without SSH: `camhost image repack|build` with the wifi driver and the
first-boot settings, on the synthetic releases of test_repack, checked with the real
tools (unsquashfs, fw_printenv, busybox depmod) and the agent's own config parser."""
import contextlib
import io
import json
import os
import shutil
import subprocess
from argparse import Namespace

import pytest

from camagent import config as agent_config
from camhost import backups, boards, firstboot, flashcmds, kmod, layout, ubootenv
from camhost.errors import CamhostError
from camhost.simcam import GpioTree
from test_image_build import make_n, tree  # noqa: F401 (tree: a fixture)
from test_repack import (BOARD, FIRMWARE_DEP, VERMAGIC, arm_elf, backup_image, build_rootfs,
                        build_uimage, camhost, kernel_module, pack_release, wifi_modules)
from test_ubootenv import BACKUP_VARS, fw_printenv
from test_wifi_bringup import BUSYBOX, FAKES, OPENIPC_S40NETWORK, OPENIPC_SDIO, write

WIFI_PASSWORD = "correct horse battery"
MQTT_PASSWORD = "broker-secret-42"
HOOK = '"${0%/*}/usb-camagent" "$1" && exit 0    # camagent: IMOU Ranger RC wifi'


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("first-boot")
    rootfs = build_rootfs(tmp, tmp / "rootfs.squashfs")
    kernel = build_uimage(tmp, tmp / "uImage")
    (tmp / "wifi.pass").write_text(WIFI_PASSWORD + "\n")
    (tmp / "mqtt.pass").write_text(MQTT_PASSWORD + "\n")
    return {"tmp": tmp, "rootfs": rootfs, "kernel": kernel,
            "tgz": pack_release(tmp / "openipc.ssc337-nor-lite.tgz", kernel, rootfs),
            "micropython": arm_elf(tmp / "micropython"),
            "backup": backup_image(tmp / "backup.bin"),
            "wifi": wifi_modules(tmp / "wifi-modules")}


def repack_argv(inputs, out, *extra):
    return ["image", "repack", "--board", BOARD, "--firmware", inputs["tgz"],
            "--micropython", inputs["micropython"], "--out", out] + list(extra)


def unsquash(image, where):
    """The image's rootfs extracted to `where`; without root, unsquashfs cannot make the
    device nodes (/dev/console), and only those failures are accepted."""
    rootfs = where.parent / (where.name + ".sq")
    rootfs.write_bytes(layout.slice_of(image, "rootfs"))
    proc = subprocess.run(["unsquashfs", "-n", "-d", str(where), str(rootfs)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode:
        other = [line for line in proc.stdout.splitlines() if "could not create" in line
                 and "because you're not superuser" not in line]
        assert os.geteuid() != 0 and not other, proc.stdout
    return where


@pytest.fixture(scope="module")
def first_boot(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("fb-out") / "camagent.bin"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = camhost(*repack_argv(
            inputs, out, "--backup", inputs["backup"], "--wifi-modules", inputs["wifi"],
            "--wifi-ssid", "Home net", "--wifi-password-file", inputs["tmp"] / "wifi.pass",
            "--mqtt-host", "ha.lan", "--mqtt-port", "1884", "--mqtt-user", "cam",
            "--mqtt-password-file", inputs["tmp"] / "mqtt.pass", "--device-id", "porch"))
    assert code == 0, stdout.getvalue()
    image = out.read_bytes()
    return {"out": out, "image": image, "text": stdout.getvalue(),
            "manifest_text": (out.parent / "camagent.manifest.json").read_text(),
            "x": unsquash(image, out.parent / "x")}


# --- what the image carries ---------------------------------------------------------------

def test_env_partition_holds_the_wifi_and_keeps_the_backups_variables(first_boot, tmp_path):
    env = layout.slice_of(first_boot["image"], "env")
    out = fw_printenv(tmp_path, env)            # libubootenv: CRC checked, else it fails
    assert out.returncode == 0, out.stderr
    got = dict(line.split("=", 1) for line in out.stdout.decode().splitlines())
    assert got == dict(BACKUP_VARS, wlandev="ssv6155-ssc337-imou-ranger-rc",
                       wlanssid="Home net", wlanpass=WIFI_PASSWORD)


def test_agent_config_carries_the_broker_and_the_agent_accepts_it(first_boot):
    text = (first_boot["x"] / "etc/camagent.json").read_text()
    config = json.loads(text)
    assert config["board"] == BOARD and config["device_id"] == "porch"
    assert config["mqtt"]["host"] == "ha.lan" and config["mqtt"]["port"] == 1884
    assert config["mqtt"]["username"] == "cam" and config["mqtt"]["password"] == MQTT_PASSWORD
    parsed = agent_config.parse(text, "/etc/camagent.json")
    assert parsed["mqtt"]["host"] == "ha.lan" and parsed["device_id"] == "porch"


def test_wifi_modules_are_installed_where_modprobe_finds_them(first_boot, inputs, tmp_path):
    x = first_boot["x"]
    top = x / "lib/modules/4.9.84"
    source = inputs["wifi"] / "lib/modules/4.9.84"
    for rel in ("extra/ssv6155.ko", "kernel/net/mac80211/mac80211.ko", "kernel/crypto/ccm.ko"):
        assert (top / rel).read_bytes() == (source / rel).read_bytes(), rel
    assert not (top / "kernel/drivers/usb/storage/usb-storage.ko").exists()  # not wifi
    ours = (top / "modules.dep").read_text().splitlines()
    # busybox depmod (the camera's own) computes the same lines from the modules
    copy = tmp_path / "root"
    shutil.copytree(str(x / "lib"), str(copy / "lib"), symlinks=True)
    os.remove(copy / "lib/modules/4.9.84/modules.dep")
    subprocess.run(["busybox", "depmod", "-b", str(copy), "4.9.84"], check=True)
    theirs = (copy / "lib/modules/4.9.84/modules.dep").read_text().splitlines()
    assert sorted(ours) == sorted(theirs)
    assert "extra/ssv6155.ko: kernel/net/mac80211/mac80211.ko" in ours


def test_wlandev_hook_is_added_to_openipcs_wireless_usb(first_boot):
    lines = (first_boot["x"] / "etc/wireless/usb").read_text().splitlines()
    assert lines[0] == "#!/bin/sh" and lines[1] == HOOK
    assert 'if [ "$1" = "ssv6158-ssc335-ipc" ]; then' in lines     # OpenIPC's cases stay
    assert os.access(first_boot["x"] / "etc/wireless/usb-camagent", os.X_OK)


def test_report_names_the_changed_partitions_and_never_a_password(first_boot):
    m = json.loads(first_boot["manifest_text"])
    assert m["differs_from_backup"] == ["env", "kernel", "rootfs", "rootfs_data"]
    assert "partitions that differ from the backup (what `camhost flash` writes): env, " \
           "kernel, rootfs, rootfs_data" in first_boot["text"]
    assert m["first_boot"]["env"]["wlanpass"] == "(set, not shown)"
    assert m["first_boot"]["/etc/camagent.json"]["mqtt.password"] == "(set, not shown)"
    assert m["wifi"]["modules_added"] == ["4.9.84/extra/ssv6155.ko",
                                          "4.9.84/kernel/net/mac80211/mac80211.ko",
                                          "4.9.84/kernel/crypto/ccm.ko"]
    for secret in (WIFI_PASSWORD, MQTT_PASSWORD):
        assert secret not in first_boot["text"] and secret not in first_boot["manifest_text"]
    assert "wifi: ssv6155.ko (4.9.84)" in first_boot["text"]
    # boot (U-Boot) is kept from the backup, so flash leaves it alone; the image is one
    # `camhost flash` accepts
    assert backups.describe(first_boot["image"]).problems == []


# --- refusals: nothing written, and the reason in words -----------------------------------

def refused(inputs, tmp_path, capsys, *extra, code=1):
    out = tmp_path / "o.bin"
    assert camhost(*repack_argv(inputs, out, *extra)) == code
    assert not out.exists()
    captured = capsys.readouterr()
    return captured.err + captured.out


def test_no_driver_is_refused_with_the_consequence(inputs, tmp_path, capsys):
    err = refused(inputs, tmp_path, capsys)
    assert "this firmware has no wifi driver (ssv6155.ko, mac80211.ko missing)" in err
    assert "reachable only over the Ethernet pins of its power connector or the serial " \
           "console" in err and "--wifi-modules DIR" in err and "--no-wifi" in err


def test_no_wifi_repacks_without_the_hook(inputs, tmp_path, capsys):
    out = tmp_path / "nowifi.bin"
    assert camhost(*repack_argv(inputs, out, "--no-wifi")) == 0
    m = json.loads((tmp_path / "nowifi.manifest.json").read_text())
    assert m["wifi"].startswith("none (--no-wifi): the camera will be reachable only")
    x = unsquash(out.read_bytes(), tmp_path / "x")
    assert HOOK not in (x / "etc/wireless/usb").read_text()
    assert not (x / "lib/modules/4.9.84/extra").exists()


@pytest.mark.parametrize("vermagic, message", [
    ("4.9.227 SMP mod_unload ARMv7 p2v8 ", "was built for kernel 4.9.227 (vermagic "
                                           "'4.9.227 SMP mod_unload ARMv7 p2v8'); this "
                                           "firmware's kernel is 4.9.84"),
    ("4.9.84 mod_unload ARMv7 p2v8 ", "the firmware's own modules have '4.9.84 SMP "
                                      "mod_unload ARMv7 p2v8': built with another kernel "
                                      "configuration"),
])
def test_modules_for_another_kernel_are_refused(inputs, tmp_path, capsys, vermagic, message):
    wifi = wifi_modules(tmp_path / "wifi", vermagic=vermagic)
    assert message in refused(inputs, tmp_path, capsys, "--wifi-modules", wifi)


def test_modules_without_the_boards_driver_or_not_arm_are_refused(inputs, tmp_path, capsys):
    wifi = wifi_modules(tmp_path / "wifi", driver="ssv6x5x")     # the 3 MP's driver
    err = refused(inputs, tmp_path, capsys, "--wifi-modules", wifi)
    assert "has no ssv6155.ko (board imou-ranger-rc-4mp needs ssv6155.ko and mac80211.ko)" \
        in err
    x86 = wifi_modules(tmp_path / "x86")
    kernel_module(x86 / "lib/modules/4.9.84/extra/ssv6155.ko", "ssv6155", machine=62)
    err = refused(inputs, tmp_path, capsys, "--wifi-modules", x86)
    assert "is built for ELF machine 62, not ARM (40)" in err


def test_only_the_wifi_modules_of_a_target_tree_are_read(inputs, tmp_path, capsys):
    wifi = wifi_modules(tmp_path / "wifi")
    junk = wifi / "lib/modules/4.9.84/sigmastar/mi_venc.ko"
    junk.parent.mkdir()
    junk.write_bytes(b"not an ELF: a vendor blob repack must not need to read")
    out = tmp_path / "t.bin"
    assert camhost(*repack_argv(inputs, out, "--wifi-modules", wifi)) == 0
    assert not (unsquash(out.read_bytes(), tmp_path / "x") /
                "lib/modules/4.9.84/sigmastar/mi_venc.ko").exists()


def test_a_dependency_nobody_has_is_refused(inputs, tmp_path, capsys):
    wifi = wifi_modules(tmp_path / "wifi")
    kernel_module(tmp_path / "wifi/lib/modules/4.9.84/extra/ssv6155.ko", "ssv6155",
                  depends="mac80211,ssv_firmware")
    assert "wifi module ssv6155 needs ssv_firmware, which neither --wifi-modules nor the " \
           "firmware has" in refused(inputs, tmp_path, capsys, "--wifi-modules", wifi)


@pytest.mark.parametrize("flag", ["--wifi-password", "--mqtt-password"])
def test_passwords_on_the_command_line_are_refused_unrepeated(inputs, tmp_path, capsys, flag):
    err = refused(inputs, tmp_path, capsys, "--no-wifi", flag, "hunter2-on-argv")
    assert "%s is refused: a password on the command line shows in the process list" % flag \
        in err and "%s-file FILE (or %s-file - to type it on stdin)" % (flag, flag) in err
    assert "hunter2-on-argv" not in err


def test_wifi_settings_need_the_backup_and_a_valid_password(inputs, tmp_path, capsys):
    short = tmp_path / "short.pass"
    short.write_text("tiny\n")
    wifi = ["--wifi-modules", inputs["wifi"], "--wifi-ssid", "Home"]
    err = refused(inputs, tmp_path, capsys, *wifi, "--wifi-password-file",
                  inputs["tmp"] / "wifi.pass")
    assert "--wifi-ssid needs --backup: the wifi settings go into this camera's own U-Boot " \
           "environment" in err
    err = refused(inputs, tmp_path, capsys, *wifi, "--backup", inputs["backup"],
                  "--wifi-password-file", short)
    assert "is 4 characters; WPA2 (wpa_passphrase) takes 8 to 63" in err and "tiny" not in err
    err = refused(inputs, tmp_path, capsys, "--no-wifi", "--wifi-ssid", "Home",
                  "--wifi-password-file", inputs["tmp"] / "wifi.pass", "--backup",
                  inputs["backup"])
    assert "--no-wifi and --wifi-ssid contradict each other" in err


def settings_args(**kw):
    base = dict(wifi_ssid=None, wifi_password_file=None, mqtt_host=None, mqtt_port=None,
                mqtt_user=None, mqtt_password_file=None, device_id=None)
    base.update(kw)
    return Namespace(**base)


def test_a_password_can_come_from_stdin():
    s = firstboot.from_args(settings_args(wifi_ssid="Home", wifi_password_file="-"),
                            stdin=io.StringIO(WIFI_PASSWORD + "\r\n"))
    assert s.wifi_password == WIFI_PASSWORD
    with pytest.raises(CamhostError, match="both read stdin"):
        firstboot.from_args(settings_args(wifi_ssid="Home", wifi_password_file="-",
                                          mqtt_host="h", mqtt_user="u",
                                          mqtt_password_file="-"), stdin=io.StringIO(""))
    with pytest.raises(CamhostError, match=r"--mqtt-password-file \(stdin\) is empty"):
        firstboot.from_args(settings_args(mqtt_host="h", mqtt_user="u",
                                          mqtt_password_file="-"), stdin=io.StringIO("\n"))


@pytest.mark.parametrize("kw, message", [
    (dict(mqtt_host="edit-me.invalid"), "is not a host name or address"),
    (dict(mqtt_host="ha lan"), "is not a host name or address"),
    (dict(mqtt_host="h", mqtt_port=70000), "is not a TCP port"),
    (dict(mqtt_host="h", device_id="porch cam"), "only ASCII letters, digits, - and _"),
    (dict(mqtt_user="u"), "--mqtt-port and --mqtt-user need --mqtt-host"),
    (dict(wifi_ssid="Home"), "--wifi-ssid and --wifi-password-file go together"),
    (dict(wifi_ssid="x" * 33, wifi_password_file="-"), "is 33 bytes; a wifi network name"),
])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(CamhostError, match=message):
        firstboot.from_args(settings_args(**kw), stdin=io.StringIO(WIFI_PASSWORD))


def test_vermagic_is_read_from_the_modinfo_section(tmp_path):
    path = kernel_module(tmp_path / "m.ko", "mac80211", depends="cfg80211")
    info = kmod.modinfo(path)
    assert info["vermagic"] == VERMAGIC and info["depends"] == "cfg80211"
    if shutil.which("readelf"):     # binutils reads the test module as a valid ELF too
        out = subprocess.run(["readelf", "-p", ".modinfo", path], stdout=subprocess.PIPE,
                             check=True).stdout.decode()
        assert "vermagic=" + VERMAGIC.strip() in out
    data = bytearray(open(path, "rb").read())
    cut = tmp_path / "cut.ko"
    cut.write_bytes(bytes(data[:len(data) - 50]))
    with pytest.raises(CamhostError, match="truncated"):
        kmod.modinfo(str(cut))


# --- image build: the same settings -------------------------------------------------------

def test_build_bakes_in_the_same_settings(tree, inputs, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "built.bin"
    code = camhost("image", "build", "--board", BOARD, "--openipc", tree, "--output",
                   tmp_path / "br", "--jobs", "1", "--out", out, "--backup", inputs["backup"],
                   "--wifi-ssid", "Home net", "--wifi-password-file", inputs["tmp"] / "wifi.pass",
                   "--mqtt-host", "10.0.0.5")
    text = capsys.readouterr().out
    assert code == 0, text
    image = out.read_bytes()
    out_env = fw_printenv(tmp_path, layout.slice_of(image, "env"), "-n", "wlanssid")
    assert out_env.stdout.decode().strip() == "Home net"
    x = unsquash(image, tmp_path / "x")
    config = json.loads((x / "etc/camagent.json").read_text())
    assert config["mqtt"]["host"] == "10.0.0.5"
    # the backup's sensor=sc3336: the other sensor's ISP file is dropped, measured
    assert sorted(os.listdir(x / "etc/sensors")) == ["sc3336.bin"]
    assert "- slim: other-sensors" in text and "removes /etc/sensors/imx335.bin" in text
    assert config["board"] == boards.BOARDS[BOARD].name
    assert WIFI_PASSWORD not in text


def test_flash_plans_to_write_the_env_partition(first_boot, inputs, capsys):
    chosen = flashcmds.plan(inputs["backup"].read_bytes(), first_boot["image"])
    assert [p.name for p in chosen] == ["env", "kernel", "rootfs", "rootfs_data"]
    assert "unchanged, not written: boot" in capsys.readouterr().out


def test_make_passes_the_first_boot_settings():
    cmd = make_n("repack", "MICROPYTHON=/mp", "BACKUP=b.bin", "WIFI_MODULES=/w",
                 "WIFI_SSID=Home net", "WIFI_PASSWORD_FILE=wifi.pass", "MQTT_HOST=ha.lan",
                 "MQTT_USER=cam", "MQTT_PASSWORD_FILE=mqtt.pass", "DEVICE_ID=porch")
    for part in ("--backup b.bin", "--wifi-modules /w", "--wifi-ssid 'Home net'",
                 "--wifi-password-file wifi.pass", "--mqtt-host ha.lan", "--mqtt-user 'cam'",
                 "--mqtt-password-file mqtt.pass", "--device-id porch"):
        assert part in cmd, part
    assert "--wifi-ssid 'Home net'" in make_n("image", "WIFI_SSID=Home net")


def test_dependencies_on_the_firmwares_own_modules_are_listed_in_full(tmp_path, capsys):
    # a kernel with cfg80211 as a module (needing rfkill), as other OpenIPC kernels have
    top = "lib/modules/4.9.84/kernel/net/"
    rootfs = build_rootfs(tmp_path, tmp_path / "rootfs.sq", extra={
        "lib/modules/4.9.84/modules.dep": FIRMWARE_DEP + b"kernel/net/wireless/cfg80211.ko: "
                                          b"kernel/net/rfkill/rfkill.ko\n"
                                          b"kernel/net/rfkill/rfkill.ko:\n"},
        modules={top + "wireless/cfg80211.ko": ("cfg80211", "rfkill"),
                 top + "rfkill/rfkill.ko": ("rfkill", "")})
    tgz = pack_release(tmp_path / "r.tgz", build_uimage(tmp_path, tmp_path / "uImage"), rootfs)
    wifi = wifi_modules(tmp_path / "wifi")
    kernel_module(wifi / "lib/modules/4.9.84/kernel/net/mac80211/mac80211.ko", "mac80211",
                  depends="cfg80211")
    out = tmp_path / "o.bin"
    assert camhost("image", "repack", "--board", BOARD, "--firmware", tgz, "--micropython",
                   arm_elf(tmp_path / "mp"), "--wifi-modules", wifi, "--out", out) == 0
    dep = (unsquash(out.read_bytes(), tmp_path / "x") / "lib/modules/4.9.84/modules.dep")
    lines = dep.read_text().splitlines()
    assert "extra/ssv6155.ko: kernel/net/mac80211/mac80211.ko kernel/net/wireless/" \
           "cfg80211.ko kernel/net/rfkill/rfkill.ko" in lines
    assert "kernel/net/mac80211/mac80211.ko: kernel/net/wireless/cfg80211.ko " \
           "kernel/net/rfkill/rfkill.ko" in lines
    # and busybox depmod agrees on the whole file
    copy = tmp_path / "copy"
    shutil.copytree(str(tmp_path / "x" / "lib"), str(copy / "lib"), symlinks=True)
    os.remove(copy / "lib/modules/4.9.84/modules.dep")
    subprocess.run(["busybox", "depmod", "-b", str(copy), "4.9.84"], check=True)
    theirs = (copy / "lib/modules/4.9.84/modules.dep").read_text().splitlines()
    assert sorted(lines) == sorted(theirs)


def test_a_firmware_with_the_driver_needs_no_modules_dir(tmp_path, capsys):
    # e.g. an OpenIPC build of this board: the driver and mac80211 are already in it
    top = "lib/modules/4.9.84/"
    rootfs = build_rootfs(tmp_path, tmp_path / "rootfs.sq", modules={
        top + "extra/ssv6155.ko": ("ssv6155", "mac80211"),
        top + "kernel/net/mac80211/mac80211.ko": ("mac80211", "")})
    tgz = pack_release(tmp_path / "r.tgz", build_uimage(tmp_path, tmp_path / "uImage"), rootfs)
    out = tmp_path / "o.bin"
    assert camhost("image", "repack", "--board", BOARD, "--firmware", tgz, "--micropython",
                   arm_elf(tmp_path / "mp"), "--out", out) == 0
    m = json.loads((tmp_path / "o.manifest.json").read_text())
    assert m["wifi"]["modules_added"] == []
    x = unsquash(out.read_bytes(), tmp_path / "x")
    assert (x / "etc/wireless/usb").read_text().splitlines()[1] == HOOK


@pytest.mark.parametrize("board, wlandev", [
    ("imou-ranger-rc-4mp", "ssv6155-ssc337-imou-ranger-rc"),
    ("imou-ranger-rc-3mp", "ssv6x5x-ssc333-imou-ranger-rc"),
])
def test_each_board_gets_its_own_wlandev(board, wlandev):
    s = firstboot.from_args(settings_args(wifi_ssid="Home", wifi_password_file="-"),
                            stdin=io.StringIO(WIFI_PASSWORD))
    assert firstboot.env_changes(s, boards.BOARDS[board]) == {
        "wlandev": wlandev, "wlanssid": "Home", "wlanpass": WIFI_PASSWORD}
    # the name usb-camagent answers to
    script = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "overlay/etc/wireless/usb-camagent")).read()
    assert "\t%s)\n" % wlandev in script


def test_no_tool_camhost_runs_gets_a_password_on_its_command_line(inputs, tmp_path,
                                                                  monkeypatch):
    seen = []
    real_run = subprocess.run

    def recording_run(argv, *args, **kwargs):
        seen.append(" ".join(str(a) for a in argv))
        return real_run(argv, *args, **kwargs)
    monkeypatch.setattr(subprocess, "run", recording_run)
    out = tmp_path / "o.bin"
    assert camhost(*repack_argv(
        inputs, out, "--backup", inputs["backup"], "--wifi-modules", inputs["wifi"],
        "--wifi-ssid", "Home net", "--wifi-password-file", inputs["tmp"] / "wifi.pass",
        "--mqtt-host", "ha.lan", "--mqtt-user", "cam",
        "--mqtt-password-file", inputs["tmp"] / "mqtt.pass")) == 0
    tools = {line.split()[0].rsplit("/", 1)[-1] for line in seen}
    assert {"mkenvimage", "fw_printenv", "mksquashfs", "unsquashfs"} <= tools
    for line in seen:
        assert WIFI_PASSWORD not in line and MQTT_PASSWORD not in line, line


def test_a_non_ascii_ssid_is_stored_as_its_utf8_bytes(inputs, tmp_path):
    s = firstboot.from_args(settings_args(wifi_ssid="Café ☕", wifi_password_file="-"),
                            stdin=io.StringIO(WIFI_PASSWORD))
    env = layout.slice_of(inputs["backup"].read_bytes(), "env")
    new = ubootenv.update(env, firstboot.env_changes(s, boards.BOARDS[BOARD]),
                          workdir=str(tmp_path))
    out = fw_printenv(tmp_path, new, "-n", "wlanssid")
    assert out.returncode == 0 and out.stdout.rstrip(b"\n") == "Café ☕".encode("utf-8")


def test_the_repacked_image_brings_wlan0_up_under_s40network(first_boot, tmp_path):
    """OpenIPC's boot sequence (test_wifi_bringup's S40network) on the image's own
    /etc/wireless and env partition, with a modprobe that loads only what the image's
    modules.dep lists."""
    x = first_boot["x"]
    etc = tmp_path / "etc"
    shutil.copytree(str(x / "etc/wireless"), str(etc / "wireless"))
    write(str(etc / "wireless/sdio"), OPENIPC_SDIO)
    write(str(etc / "init.d/S40network"), OPENIPC_S40NETWORK)
    env = tmp_path / "env.bin"
    env.write_bytes(layout.slice_of(first_boot["image"], "env"))
    (tmp_path / "fw_env.config").write_text("%s 0x0 0x%x\n" % (env, env.stat().st_size))
    bindir = tmp_path / "bin"
    fakes = dict(FAKES, modprobe=(
        'grep -qE "(^|/)$1\\.ko:" "$MODDIR/modules.dep" || '
        '{ echo "modprobe $1 not in modules.dep" >> "$CALLS"; exit 1; }\n'
        'echo "modprobe $1 gpio46=$(cat "$GPIO_ROOT/gpio46/direction")" >> "$CALLS"\n'))
    for name, body in fakes.items():
        write(str(bindir / name), "#!/bin/sh\n" + body)
    for applet in ("cat", "echo", "head", "tail", "grep", "mv", "chmod", "sh", "["):
        os.symlink(BUSYBOX, str(bindir / applet))
    gpio = GpioTree(tmp_path / "gpio")
    calls = tmp_path / "calls.log"
    try:
        subprocess.run([BUSYBOX, "sh", str(etc / "init.d/S40network"), "start"], env={
            "PATH": str(bindir), "ETC": str(etc), "GPIO_ROOT": gpio.root, "CALLS": str(calls),
            "FW_ENV_CONFIG": str(tmp_path / "fw_env.config"), "FAIL_MODULES": "",
            "MODDIR": str(x / "lib/modules/4.9.84")}, check=True, timeout=30)
        assert gpio.direction(46) == "high"
    finally:
        gpio.close()
    assert calls.read_text().splitlines() == [
        "ifup lo", "modprobe ccm gpio46=high",
        "modprobe gcm not in modules.dep", "modprobe ghash_generic not in modules.dep",
        "modprobe mac80211 gpio46=high", "modprobe ssv6155 gpio46=high", "ifup wlan0"]
