"""`camhost image build`: the exact commands and environment, the merged defconfig, and
the errors, up to the boundary reachable offline.

An OpenIPC tree is laid out here with the files camhost reads. Its Makefile's
`prepare` target puts a stand-in Buildroot Makefile in place that records what it
was asked and, for `all`, produces a uImage and a squashfs with the real tools, so
the steps after the build (budget, image, manifest) run for real.
"""
import json
import os
import subprocess
import sys

import pytest

from camhost import boards, cli, layout, openipc, slim
from camhost.errors import CamhostError
from camhost.formats import parse_squashfs

BOARD = boards.BOARDS["imou-ranger-rc-4mp"]
EXTERNAL = openipc.EXTERNAL

BOARD_DEFCONFIG = """\
# Architecture
BR2_arm=y
BR2_cortex_a7=y
BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE="$(EXTERNAL_VENDOR)/board/$(OPENIPC_SOC_FAMILY)/infinity6b0-ssc009a.config"
BR2_PACKAGE_BUSYBOX_CONFIG="$(BR2_EXTERNAL)/package/busybox/busybox.config"
BR2_TARGET_ROOTFS_SQUASHFS4_XZ=y
BR2_PACKAGE_MAJESTIC_WEBUI=y
BR2_PACKAGE_VTUND_OPENIPC=y
BR2_OPENIPC_SOC_MODEL="ssc337"
"""
OPENIPC_FRAGMENT = """\
BR2_ROOTFS_OVERLAY="$(BR2_EXTERNAL)/overlay"
BR2_ROOTFS_POST_BUILD_SCRIPT="$(BR2_EXTERNAL)/scripts/rootfs_script.sh"
BR2_GLOBAL_PATCH_DIR="$(BR2_EXTERNAL)/package/all-patches"
BR2_OPTIMIZE_S=y
"""
OPENIPC_MAKEFILE = """\
BR_VER = 2024.02.10
TARGET ?= $(PWD)/output

prepare:
\t@echo "prepare BOARD=$(BOARD) TARGET=$(TARGET) LEAK=$(LEAK)"
\t@mkdir -p $(TARGET)/buildroot-$(BR_VER)
\t@cp $(CURDIR)/stand-in-buildroot.mk $(TARGET)/buildroot-$(BR_VER)/Makefile
"""
# What Buildroot would do, reduced to what camhost reads afterwards.
STAND_IN_BUILDROOT = """\
defconfig:
\t@echo "defconfig O=$(O) BR2_EXTERNAL=$(BR2_EXTERNAL) CMAKE=$$CMAKE_POLICY_VERSION_MINIMUM"
\t@cp $(BR2_DEFCONFIG) $(O)/.config

all:
\t@echo "all O=$(O) BR2_EXTERNAL=$(BR2_EXTERNAL)"
\t@mkdir -p $(O)/images $(O)/build $(O)/target/usr/bin $(O)/target/etc/init.d
\t@head -c 150000 /dev/urandom > $(O)/target/usr/bin/micropython
\t@printf '#!/bin/sh\\n' > $(O)/target/etc/init.d/S96camagent
\t@cp $(firstword $(subst :, ,$(BR2_EXTERNAL)))/../overlay/etc/camagent.json \\
\t\t$(O)/target/etc/camagent.json
\t@printf 'micropython,./usr/bin/micropython\\ncamagent,./etc/init.d/S96camagent\\n' \\
\t\t> $(O)/build/packages-file-list.txt
\t@printf 'ssv615x-openipc,./lib/modules/4.9.84/extra/ssv6155.ko\\n' \\
\t\t>> $(O)/build/packages-file-list.txt
\t@printf 'ssv635x-openipc,./lib/modules/4.9.84/extra/ssv6x5x.ko\\n' \\
\t\t>> $(O)/build/packages-file-list.txt
\t@mkdir -p $(O)/target/lib/modules/4.9.84/extra $(O)/target/lib/modules/4.9.84/kernel/net/mac80211
\t@head -c 40000 /dev/urandom > $(O)/target/lib/modules/4.9.84/extra/ssv6155.ko
\t@head -c 40000 /dev/urandom > $(O)/target/lib/modules/4.9.84/extra/ssv6x5x.ko
\t@head -c 30000 /dev/urandom > $(O)/target/lib/modules/4.9.84/kernel/net/mac80211/mac80211.ko
\t@mkdir -p $(O)/target/etc/sensors
\t@head -c 9000 /dev/urandom > $(O)/target/etc/sensors/sc3336.bin
\t@head -c 8000 /dev/urandom > $(O)/target/etc/sensors/imx335.bin
\t@head -c 1000000 /dev/urandom > $(O)/kernel.bin
\t@mkimage -A arm -O linux -T kernel -C none -a 0x21000000 -e 0x21000000 \\
\t\t-n Linux-4.9.84 -d $(O)/kernel.bin $(O)/images/uImage > /dev/null
\t@mksquashfs $(O)/target $(O)/images/rootfs.squashfs -comp xz -noappend -quiet \\
\t\t-no-progress -all-root
"""


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "firmware"
    for rel, text in (("Makefile", OPENIPC_MAKEFILE),
                      ("stand-in-buildroot.mk", STAND_IN_BUILDROOT),
                      ("general/external.desc", "name: GENERAL\ndesc: general\n"),
                      ("general/openipc.fragment", OPENIPC_FRAGMENT),
                      ("br-ext-chip-sigmastar/configs/ssc337_lite_defconfig", BOARD_DEFCONFIG),
                      ("br-ext-chip-sigmastar/configs/ssc333_lite_defconfig", BOARD_DEFCONFIG)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_plan_runs_prepare_defconfig_and_all_with_our_tree_first(tree, tmp_path):
    out = tmp_path / "out"
    p = openipc.plan(str(tree), BOARD, output=str(out), jobs=3,
                     environ={"PATH": "/usr/bin", "MAKEFLAGS": "-j9 --jobserver-auth=3,4",
                              "MAKELEVEL": "1", "BR2_EXTERNAL": "/elsewhere", "HOME": "/h"})
    br = ["make", "-C", "%s/buildroot-2024.02.10" % out, "O=%s" % out,
          "BR2_EXTERNAL=%s:%s/general" % (EXTERNAL, tree)]
    assert [s.argv for s in p.steps] == [
        ["make", "-C", str(tree), "BOARD=ssc337_lite", "TARGET=%s" % out, "prepare"],
        br + ["BR2_DEFCONFIG=%s/camagent_defconfig" % out, "defconfig"],
        br + ["-j3", "all"],
    ]
    assert all(s.cwd == str(tree) for s in p.steps)
    assert p.env == {"PATH": "/usr/bin", "HOME": "/h", "CMAKE_POLICY_VERSION_MINIMUM": "3.5"}
    assert p.images == {"kernel": "%s/images/uImage" % out,
                        "rootfs": "%s/images/rootfs.squashfs" % out}


def options(defconfig):
    found = {}
    for symbol, line in openipc.read_options(defconfig):
        if symbol:
            assert symbol not in found, "%s set twice" % symbol
            found[symbol] = line
    return found


def test_merged_defconfig(tree, tmp_path):
    p = openipc.plan(str(tree), BOARD, output=str(tmp_path / "out"))
    opts = options(p.defconfig)
    # OpenIPC's own lines, unchanged ($(BR2_EXTERNAL) is general: our external.mk sees to it)
    assert opts["BR2_PACKAGE_BUSYBOX_CONFIG"] == \
        'BR2_PACKAGE_BUSYBOX_CONFIG="$(BR2_EXTERNAL)/package/busybox/busybox.config"'
    assert opts["BR2_OPTIMIZE_S"] == "BR2_OPTIMIZE_S=y"
    # ours
    assert opts["BR2_PACKAGE_CAMAGENT"] == "BR2_PACKAGE_CAMAGENT=y"
    assert opts["BR2_PACKAGE_CAMAGENT_BOARD_IMOU_RANGER_RC_4MP"].endswith("=y")
    # list options extend OpenIPC's values instead of replacing them
    assert opts["BR2_GLOBAL_PATCH_DIR"] == ('BR2_GLOBAL_PATCH_DIR="$(BR2_EXTERNAL)/package/'
                                            'all-patches $(BR2_EXTERNAL_CAMAGENT_PATH)/'
                                            'patches/common $(BR2_EXTERNAL_CAMAGENT_PATH)/'
                                            'patches/lean"')
    assert opts["BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES"] == (
        'BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES="$(BR2_EXTERNAL_CAMAGENT_PATH)/board/'
        'imou-ranger-rc/linux.fragment %s"' % p.linux_slim_path)
    # the slimming profile: later settings replace the board's; the web UI stays
    assert opts["BR2_PACKAGE_MAJESTIC_WEBUI"] == "BR2_PACKAGE_MAJESTIC_WEBUI=y"
    assert opts["BR2_PACKAGE_VTUND_OPENIPC"] == "# BR2_PACKAGE_VTUND_OPENIPC is not set"
    assert p.linux_slim == "# CONFIG_NFS_FS is not set\n"
    assert "# --- general/openipc.fragment" in p.defconfig
    assert "# --- camagent: buildroot-package/configs/imou_ranger_rc_4mp.fragment" in p.defconfig


def test_merged_defconfig_runs_our_post_build_after_openipcs(tree, tmp_path):
    """OpenIPC's rootfs_script.sh stays; ours (the /etc/wireless/usb hook) follows it."""
    opts = options(openipc.plan(str(tree), BOARD, output=str(tmp_path / "out")).defconfig)
    assert opts["BR2_ROOTFS_POST_BUILD_SCRIPT"] == (
        'BR2_ROOTFS_POST_BUILD_SCRIPT="$(BR2_EXTERNAL)/scripts/rootfs_script.sh '
        '$(BR2_EXTERNAL_CAMAGENT_PATH)/board/imou-ranger-rc/post-build.sh"')


def test_kernel_fragment_has_mac80211_and_the_wifi_crypto():
    with open(os.path.join(EXTERNAL, "board", "imou-ranger-rc", "linux.fragment")) as f:
        lines = set(line.strip() for line in f if not line.startswith("#"))
    assert "CONFIG_MAC80211=m" in lines
    for symbol in ("CCM", "GCM", "GHASH", "AES", "ARC4", "CMAC", "CTR"):
        assert "CONFIG_CRYPTO_%s=y" % symbol in lines
    assert "CONFIG_CFG80211_WEXT=y" in lines


def test_no_slim_and_tls(tree, tmp_path):
    p = openipc.plan(str(tree), BOARD, output=str(tmp_path / "out"), slim_profile=None,
                     tls=True)
    opts = options(p.defconfig)
    assert opts["BR2_PACKAGE_MAJESTIC_WEBUI"] == "BR2_PACKAGE_MAJESTIC_WEBUI=y"
    assert p.linux_slim == ""
    assert opts["BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES"].count(".fragment") == 1
    assert opts["BR2_GLOBAL_PATCH_DIR"].endswith(
        'patches/common $(BR2_EXTERNAL_CAMAGENT_PATH)/patches/lean '
        '$(BR2_EXTERNAL_CAMAGENT_PATH)/patches/tls"')


def test_board_patch_dir_is_reapplied_as_openipc_does(tree, tmp_path):
    defconfig = tree / "br-ext-chip-sigmastar/configs/ssc337_lite_defconfig"
    defconfig.write_text(BOARD_DEFCONFIG + 'BR2_GLOBAL_PATCH_DIR="$(BR2_EXTERNAL)/board-patches"\n')
    opts = options(openipc.plan(str(tree), BOARD, output=str(tmp_path / "o")).defconfig)
    assert opts["BR2_GLOBAL_PATCH_DIR"] == ('BR2_GLOBAL_PATCH_DIR="$(BR2_EXTERNAL)/board-patches'
                                            ' $(BR2_EXTERNAL_CAMAGENT_PATH)/patches/common'
                                            ' $(BR2_EXTERNAL_CAMAGENT_PATH)/patches/lean"')


def test_drop_webui_leaves_the_web_ui_out_of_the_build(tree, tmp_path):
    p = openipc.plan(str(tree), BOARD, output=str(tmp_path / "out"), drop_webui=True)
    assert options(p.defconfig)["BR2_PACKAGE_MAJESTIC_WEBUI"] == \
        "# BR2_PACKAGE_MAJESTIC_WEBUI is not set"


def test_every_slim_item_has_a_build_equivalent():
    # other-sensors depends on the camera's sensor= (from its backup): a build removes
    # those files from its squashfs afterwards (test_first_boot)
    for item in slim.ITEMS:
        assert item.kconfig or item.linux_config or item.per_sensor, item.name


def test_dry_run_prints_and_runs_nothing(tree, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["image", "build", "--board", BOARD.name, "--openipc", str(tree),
                     "--output", str(out), "--dry-run"])
    text = capsys.readouterr().out
    assert code == 0
    assert "cd %s && make -C %s BOARD=ssc337_lite TARGET=%s prepare" % (tree, tree, out) in text
    assert "BR2_EXTERNAL=%s:%s/general" % (EXTERNAL, tree) in text
    assert "    BR2_PACKAGE_CAMAGENT=y" in text
    assert "CMAKE_POLICY_VERSION_MINIMUM=3.5" in text
    assert not out.exists()


@pytest.mark.parametrize("damage, message", [
    ("missing", "OpenIPC firmware tree not found at"),
    ("makefile", "is not OpenIPC's firmware tree (no Makefile with BR_VER)"),
    ("fragment", "has no general/openipc.fragment"),
    ("board", "has no br-ext-chip-*/configs/ssc337_lite_defconfig"),
])
def test_broken_trees_are_refused(tree, tmp_path, capsys, damage, message):
    if damage == "missing":
        path = tmp_path / "nowhere"
    else:
        path = tree
        victim = {"makefile": "Makefile", "fragment": "general/openipc.fragment",
                  "board": "br-ext-chip-sigmastar/configs/ssc337_lite_defconfig"}[damage]
        os.remove(tree / victim)
    code = cli.main(["image", "build", "--board", BOARD.name, "--openipc", str(path),
                     "--dry-run"])
    err = capsys.readouterr().err
    assert code == 1 and message in err
    if damage == "missing":
        assert "git clone https://github.com/OpenIPC/firmware %s`" % path in err
    elif damage != "board":   # the directory is not empty: cloning into it would fail
        assert "git clone https://github.com/OpenIPC/firmware %s`" % (path / "openipc-firmware") \
            in err


def test_failed_build_reports_the_log_tail(tree, tmp_path):
    (tree / "Makefile").write_text("BR_VER = 2024.02.10\nprepare:\n"
                                   "\t@for i in $$(seq 1 100); do echo line $$i; done\n"
                                   "\t@echo 'wget: unable to resolve host' >&2; exit 3\n")
    p = openipc.plan(str(tree), BOARD, output=str(tmp_path / "out"))
    with pytest.raises(CamhostError) as e:
        openipc.run(p, echo=lambda line: None)
    text = str(e.value)
    assert "step 'fetch Buildroot 2024.02.10 (OpenIPC's prepare)' failed (make exited with 2)" \
        in text
    assert "line 100\nwget: unable to resolve host" in text and "line 60\n" not in text
    assert "Full log: %s" % p.log in text
    assert "line 1\n" in open(p.log).read()


def test_build_composes_the_image_from_the_build_outputs(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAKEFLAGS", "LEAK=from-the-parent-make")
    out = tmp_path / "camagent.bin"
    code = cli.main(["image", "build", "--board", BOARD.name, "--openipc", str(tree),
                     "--output", str(tmp_path / "br"), "--jobs", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "prepare BOARD=ssc337_lite TARGET=%s LEAK=\n" % (tmp_path / "br") in text
    assert "BR2_EXTERNAL=%s:%s/general CMAKE=3.5" % (EXTERNAL, tree) in text
    assert (tmp_path / "br" / ".config").read_text() == \
        (tmp_path / "br" / "camagent_defconfig").read_text()
    image = out.read_bytes()
    assert len(image) == layout.FLASH_SIZE
    rootfs = (tmp_path / "br" / "images" / "rootfs.squashfs").read_bytes()
    assert layout.slice_of(image, "rootfs")[:len(rootfs)] == rootfs
    parse_squashfs(layout.slice_of(image, "rootfs"))
    manifest = json.loads((tmp_path / "camagent.manifest.json").read_text())
    added = {c["what"]: c for c in manifest["changes"] if c["change"] == "added"}
    assert added["package micropython"]["bytes"] == 150000
    assert added["package micropython"]["squashed_bytes"] > 140000
    assert "package camagent" in added
    assert added["wifi: package ssv615x-openipc"]["bytes"] == 40000       # the 4 MP's driver
    assert added["wifi: mac80211.ko"]["squashed_bytes"] > 28000
    assert "- slim: nfs (not built)" in text and "webui" not in text
    assert "config: # CONFIG_NFS_FS is not set; you lose" in text
    assert manifest["complete"] is False


def test_build_refuses_a_bad_boot_source_before_building(tree, tmp_path, capsys):
    junk = tmp_path / "u-boot.bin"
    junk.write_bytes(b"\0" * 1000)
    code = cli.main(["image", "build", "--board", BOARD.name, "--openipc", str(tree),
                     "--output", str(tmp_path / "br"), "--bootloader", str(junk)])
    assert code == 1 and "no U-Boot version string" in capsys.readouterr().err
    assert not (tmp_path / "br").exists()


def test_build_refuses_to_write_over_its_backup(tree, tmp_path, capsys):
    backup = tmp_path / "backup.bin"
    backup.write_bytes(b"U-Boot 2015.01".ljust(layout.FLASH_SIZE, b"\xff"))
    code = cli.main(["image", "build", "--board", BOARD.name, "--openipc", str(tree),
                     "--output", str(tmp_path / "br"), "--backup", str(backup),
                     "--out", str(backup)])
    assert code == 1 and "is also an input" in capsys.readouterr().err
    assert backup.read_bytes() == b"U-Boot 2015.01".ljust(layout.FLASH_SIZE, b"\xff")
    assert not (tmp_path / "br").exists()


def test_merge_rejects_garbage():
    with pytest.raises(CamhostError, match="not a defconfig line"):
        openipc.merge([("x", "BR2_A=y\nthis is not kconfig\n", False)])


def make_n(*argv):
    out = subprocess.run(["make", "-n", "-C", os.path.dirname(EXTERNAL)] + list(argv),
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    return " ".join(out.replace("\\\n", " ").split())


def test_make_image_runs_this_command():
    assert ("-m camhost image build --board imou-ranger-rc-4mp --openipc /src/openipc "
            "--out build/camagent-imou-ranger-rc-4mp.bin"
            in make_n("image", "OPENIPC=/src/openipc"))


def test_make_repack_and_flash_agree_on_the_board_and_the_image():
    # no FIRMWARE=: camhost picks the board's release (ssc333 for the 3MP)
    assert ("-m camhost image repack --board imou-ranger-rc-3mp --micropython /mp "
            "--out x.bin" in make_n("repack", "BOARD=imou-ranger-rc-3mp", "MICROPYTHON=/mp",
                                    "IMAGE=x.bin"))
    assert "--firmware" not in make_n("repack", "BOARD=imou-ranger-rc-3mp", "MICROPYTHON=/mp")
    assert "-m camhost flash x.bin" in make_n("flash", "IMAGE=x.bin")


def test_make_says_when_umqtt_cannot_be_downloaded(tmp_path):
    # real pip, pointed at an index that does not answer
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS="",
               PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0", PIP_TIMEOUT="2")
    build = tmp_path / "build"
    result = subprocess.run(["make", "-s", "-C", os.path.dirname(EXTERNAL),
                             "-o", ".venv/.stamp", "BUILD=%s" % build,
                             "PIP=%s -m pip" % sys.executable,
                             "%s/vendor/umqtt/simple.py" % build],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "cannot download micropython-umqtt.simple==1.3.4 from PyPI:" in err
    assert "No matching distribution found" in err
    assert not (build / "vendor" / "umqtt" / "simple.py").exists()


def test_build_without_the_wifi_driver_is_refused(tree, tmp_path, capsys):
    mk = tree / "stand-in-buildroot.mk"
    mk.write_text("".join(line + "\n" for line in mk.read_text().splitlines()
                          if "ssv615x-openipc" not in line))
    out = tmp_path / "camagent.bin"
    code = cli.main(["image", "build", "--board", BOARD.name, "--openipc", str(tree),
                     "--output", str(tmp_path / "br"), "--jobs", "1", "--out", str(out)])
    assert code == 1 and not out.exists()
    assert "the build installed no ssv6155.ko (package ssv615x-openipc): the camera would " \
           "have no wifi" in capsys.readouterr().err
